"""seresnet.ablation: a tiny ablation sweep, its stored results, the SE knock-out table and the paper's numbers.

Training data comes from the shipped 1,000-image sample written out as a small CIFAR-style image folder, so these
tests never need the full data set.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from seresnet import ablation, hooks, report  # noqa: E402
from seresnet import train as train_mod  # noqa: E402
from seresnet.data import TensorBatches, load_sample  # noqa: E402
from seresnet.evaluate import evaluate, paired_difference, predict_logits  # noqa: E402
from seresnet.model import count_params, create_model  # noqa: E402


@pytest.fixture(scope="module")
def sample():
    return load_sample()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A CIFAR-10 image folder root/{train,test}/<class>/ copied from the shipped sample (15 train images per
    class, the other 85 test)."""
    return report.sample_split_folder(train_per_class=15, dest=tmp_path_factory.mktemp("cifar"))


def _tiny(variants, out, data_root, **kw):
    return ablation.run_ablations(variants, epochs=1, train_limit=128, test_limit=100, seed=0, out_json=out,
                                  data=data_root, threads=None, **kw)


# --- running and storing ---------------------------------------------------------------------------------------
def test_tiny_run_writes_well_formed_results(tmp_path, data_root):
    variant = ablation.get_variants(["SE in stage 3 only"])[0]
    out = tmp_path / "results.json"
    state = _tiny([variant], out, data_root)
    assert out.is_file() and not (tmp_path / "results.json.partial").exists()
    on_disk = json.loads(out.read_text())
    assert on_disk["format"] == "seresnet.ablations/1"
    assert on_disk["budget"]["epochs"] == 1 and on_disk["budget"]["train_limit"] == 128
    assert on_disk["budget"]["seed"] == 0 and on_disk["finished"]
    assert on_disk["budget"]["data"].endswith(Path(data_root).name)  # what it was trained on, without local folders
    loaded = ablation.load_ablation_results(out)
    assert len(loaded["results"]) == 1
    rec = loaded["results"][0]
    for key in ("name", "overrides", "params", "test_acc", "epochs", "train_images", "seconds", "machine", "date"):
        assert key in rec, key
    assert rec["name"] == "SE in stage 3 only" and rec["model"] == "se_resnet20"
    assert rec["overrides"] == {"se_stages": (3,)}  # the tuple survives the JSON round trip
    expected_params = count_params(create_model("se_resnet20", se_stages=(3,)))
    assert rec["params"] == expected_params
    assert expected_params < count_params(create_model("se_resnet20"))
    assert rec["epochs"] == 1 and len(rec["history"]) == 1
    assert rec["train_images"] == 128 and rec["test_images"] == 100
    # the accuracy is a fraction of 100 test images
    assert 0 <= rec["test_acc"] <= 1 and abs(rec["test_acc"] * 100 - round(rec["test_acc"] * 100)) < 1e-6
    assert rec["seconds"] > 0 and state["results"][0]["test_acc"] == rec["test_acc"]


def test_failed_sweep_keeps_previous_results_and_resumes(tmp_path, data_root, monkeypatch):
    out = tmp_path / "results.json"
    good = {"format": "seresnet.ablations/1", "budget": {}, "results": [{"name": "old", "study": "reference",
                                                                          "test_acc": 0.9, "overrides": {}}]}
    out.write_text(json.dumps(good))
    variants = ablation.get_variants(["no SE (resnet20)", "r=8"])
    real_train = train_mod.train
    calls = []

    def failing_second(cfg, **kw):
        calls.append(cfg.model)
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return real_train(cfg, **kw)

    monkeypatch.setattr(train_mod, "train", failing_second)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _tiny(variants, out, data_root, overwrite=True)
    assert json.loads(out.read_text()) == good  # the earlier complete results are untouched
    partial = json.loads((tmp_path / "results.json.partial").read_text())
    assert [r["name"] for r in partial["results"]] == ["no SE (resnet20)"]

    calls.clear()
    monkeypatch.setattr(train_mod, "train", lambda cfg, **kw: (calls.append(cfg.model), real_train(cfg, **kw))[1])
    state = _tiny(variants, out, data_root, overwrite=True)
    assert calls == ["se_resnet20"]  # the finished variant was picked up from the partial file, not retrained
    assert [r["name"] for r in state["results"]] == ["no SE (resnet20)", "r=8"]
    assert [r["name"] for r in ablation.load_ablation_results(out)["results"]] == ["no SE (resnet20)", "r=8"]
    assert not (tmp_path / "results.json.partial").exists()
    # a partial sweep on other data is not picked up
    (tmp_path / "results.json.partial").write_text(json.dumps({**partial, "budget": {**state["budget"],
                                                                                       "data": "elsewhere/cifar"}}))
    calls.clear()
    _tiny(variants[:1], out, data_root, overwrite=True)
    assert calls == ["resnet20"]


def test_existing_results_are_refused_without_overwrite(tmp_path, data_root, monkeypatch, capsys):
    out = tmp_path / "results.json"
    stored = json.dumps({"format": "seresnet.ablations/1", "results": [{"name": f"v{i}"} for i in range(17)]})
    out.write_text(stored)
    monkeypatch.setattr(train_mod, "train", lambda *a, **k: pytest.fail("trained although --out holds results"))
    with pytest.raises(FileExistsError, match="already holds results.*--overwrite"):
        _tiny(ablation.get_variants(["r=8"]), out, data_root)
    assert ablation.main(["--variants", "r=8", "--data", str(data_root), "--out", str(out)]) == 2
    assert "already holds results" in capsys.readouterr().err
    assert out.read_text() == stored


def test_bad_input_fails_before_training(tmp_path, data_root, monkeypatch):
    monkeypatch.setattr(train_mod, "train", lambda *a, **k: pytest.fail("trained despite bad input"))
    with pytest.raises(ValueError, match="unknown ablation variant"):
        ablation.get_variants(["r=3"])
    with pytest.raises(ValueError):
        _tiny([ablation.Variant("bad", "gate", "x", overrides=dict(gate="softmax"))], tmp_path / "x.json", data_root)
    with pytest.raises(ValueError, match="unique"):
        _tiny([ablation.ABLATIONS[0], ablation.ABLATIONS[0]], None, data_root)
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a seresnet ablation results file"):
        ablation.load_ablation_results(bad)
    with pytest.raises(FileNotFoundError):
        ablation.load_ablation_results(tmp_path / "missing.json")


def test_ablations_cover_the_paper_studies():
    names = [v.name for v in ablation.ABLATIONS]
    assert len(set(names)) == len(names)
    for v in ablation.ABLATIONS:
        create_model(v.model, **v.overrides)  # every variant builds
    studies = {v.study for v in ablation.ABLATIONS}
    assert set(ablation.STUDIES) <= studies and "reference" in studies
    settings = {(v.study, v.setting) for v in ablation.ABLATIONS}
    for s in ("2", "4", "8", "32", "no SE"):
        assert ("reduction", s) in settings
    assert {("integration", m) for m in ("pre", "post", "identity")} <= settings
    assert {("stages", s) for s in ("2", "3", "4")} <= settings
    assert {("gate", g) for g in ("tanh", "relu", "hard_sigmoid")} <= settings


# --- the paper's numbers ---------------------------------------------------------------------------------------
def test_paper_numbers_present():
    rows = ablation.PAPER_ABLATIONS
    assert {r["table"] for r in rows} >= {10, 11, 12, 13, 14}
    # the default SE-ResNet-50 is the same model in every table: 22.28 / 6.03 (paper Tables 10-14)
    for study, setting in ablation.DEFAULT_SETTING.items():
        row = ablation.paper_row(study, setting)
        assert row is not None and (row["top1"], row["top5"]) == (22.28, 6.03)
    assert ablation.paper_row("reduction", "no SE")["top1"] == 23.30
    assert ablation.paper_row("reduction", "2")["params_m"] == 45.7
    assert (ablation.paper_row("gate", "relu")["top1"], ablation.paper_row("gate", "tanh")["top1"]) == (23.47, 23.00)
    assert ablation.paper_row("squeeze", "max")["top1"] == 22.57
    assert ablation.paper_row("integration", "identity")["top1"] == 22.20
    assert ablation.paper_row("stages", "4")["table"] == 13
    assert ablation.paper_row("gate", "hard_sigmoid") is None  # not in the paper
    for r in rows:
        assert 0 < r["top5"] < r["top1"] < 30


# --- other papers' published ImageNet numbers -------------------------------------------------------------------
def test_published_attention_rows_are_sourced_and_named():
    from seresnet.attention import ATTENTIONS

    rows = ablation.PUBLISHED_ATTENTION
    assert rows
    for r in rows:
        assert r["attention"] in ATTENTIONS, r["attention"]
        src = r["source"]
        assert isinstance(src, str) and len(src) > 30, r
        assert "github.com" in src or "arXiv" in src or "README" in src, src  # a repository file or a URL/paper
        assert "ImageNet" in r["setting"] and "ResNet-50" in r["setting"]
        assert r["top1"] is not None and 70 < r["top1"] < 85
        if r["baseline_top1"] is not None:
            assert 70 < r["baseline_top1"] < 80
    # every module of the family is either in the table or listed as not found
    assert set(ablation.PUBLISHED_MISSING) <= set(ATTENTIONS)
    assert set(ATTENTIONS) <= {r["attention"] for r in rows} | set(ablation.PUBLISHED_MISSING)
    # the SE paper's rows are its own numbers (errors in PAPER_ABLATIONS, accuracies here)
    abl = [r for r in rows if r["paper"].startswith("Hu et al.") and "ablation" in r["setting"]]
    no_se = ablation.paper_row("reduction", "no SE")
    assert abl and all(r["baseline_top1"] == pytest.approx(100 - no_se["top1"]) for r in abl)


def test_published_gains_are_module_minus_its_own_baseline():
    rows = ablation.published_attention_table()
    assert len(rows) == len(ablation.PUBLISHED_ATTENTION)
    for row, rec in zip(rows, ablation.PUBLISHED_ATTENTION):
        for key in ("top1", "top5"):
            if rec[key] is None or rec[f"baseline_{key}"] is None:
                assert row[f"gain_{key}"] is None
            else:
                assert row[f"gain_{key}"] == pytest.approx(rec[key] - rec[f"baseline_{key}"], abs=1e-9)
        assert row["source"] == rec["source"]
    se_ablation = next(r for r in rows if r["attention"] == "se" and "ablation" in r["setting"])
    err = {s: ablation.paper_row("reduction", s)["top1"] for s in ("no SE", "16")}
    assert se_ablation["gain_top1"] == pytest.approx(err["no SE"] - err["16"])  # fewer errors = more accuracy
    assert any(r["gain_top1"] is not None for r in rows)


def test_published_plot_bars_carry_the_gains():
    from matplotlib.figure import Figure
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    rows = ablation.published_attention_table()
    fig = ablation.plot_published_attention()
    assert isinstance(fig, Figure) and isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine)
    (ax,) = fig.axes
    bars = ax.containers[0]
    assert len(bars) == len(rows)
    for bar, r in zip(bars, rows):
        if r["gain_top1"] is None:
            assert not bar.get_visible()
        else:
            assert bar.get_visible() and bar.get_width() == pytest.approx(r["gain_top1"])
    assert [t.get_text() for t in ax.get_yticklabels()] == [ablation.published_label(r) for r in rows]
    assert "ImageNet" in ax.get_xlabel() and "ImageNet" in ax.get_title()
    assert "CIFAR" not in ax.get_xlabel()  # no CIFAR numbers on this axis
    other = Figure()
    target = other.add_subplot()
    assert ablation.plot_published_attention(ax=target) is other and len(target.containers[0]) == len(rows)


def test_table_and_plot_from_results():
    fake = {"results": [
        dict(name="SE (default)", study="reference", setting="default", test_acc=0.80, params=10, test_images=1000),
        dict(name="r=8", study="reduction", setting="8", test_acc=0.81, params=11, test_images=1000),
        dict(name="gate=relu", study="gate", setting="relu", test_acc=0.75, params=10, test_images=1000),
        dict(name="seed", study="noise", setting="seed+1", test_acc=0.795, params=10, test_images=1000),
    ]}
    rows = ablation.ablation_table(fake)
    by = {(r["study"], r["setting"]): r for r in rows}
    assert math.isclose(by[("reduction", "8")]["d_err"], (19.0 - 20.0))
    assert math.isclose(by[("gate", "relu")]["d_err"], 25.0 - 20.0)
    assert math.isclose(by[("gate", "relu")]["paper_d_top1"], 23.47 - 22.28)
    assert by[("squeeze", "avg")]["d_err"] == 0  # the reference appears in every study
    assert math.isclose(by[("noise", "seed+1")]["d_err"], 20.5 - 20.0)
    md = ablation.format_table(rows)
    assert md.count("\n") == len(rows) + 1 and "23.47" in md
    fig = ablation.plot_ablations(fake)
    assert len(fig.axes) == len(ablation.STUDIES)
    # the plotted bars are the table's numbers: our d_err, then the paper's, per study panel
    gate_ax = fig.axes[list(ablation.STUDIES).index("gate")]
    from matplotlib.container import BarContainer

    ours, paper = [c for c in gate_ax.containers if isinstance(c, BarContainer)]
    assert [b.get_width() for b in ours] == pytest.approx([0.0, 5.0])
    assert [b.get_width() for b in paper] == pytest.approx([0.0, 23.47 - 22.28])


def _study(acc_by_model):
    """A study JSON's summary as scripts/attention_study.py writes it, from per-seed accuracies."""
    from seresnet.study import paired_over_seeds

    ref = acc_by_model["se_resnet20"]
    summary = {m: {"seeds": sorted(a), "minus_se_resnet20": paired_over_seeds(a, ref)} for m, a in acc_by_model.items()
               if m != "se_resnet20"}
    summary["se_resnet20"] = {"seeds": sorted(ref)}
    return {"models": list(acc_by_model), "summary": {"val": summary}}


def test_ablation_study_rows_pair_by_seed_and_sit_beside_the_paper():
    study = _study({"se_resnet20": {0: 0.80, 1: 0.82, 2: 0.81},
                    "resnet20": {0: 0.79, 1: 0.81, 2: 0.80},  # 1 point worse on every seed
                    "se_resnet20+gate=tanh": {0: 0.78},
                    "se_resnet20+reduction=4": {0: 0.81, 1: 0.81, 2: 0.82}})  # +1, -1, +1
    rows = ablation.ablation_study_rows(study)
    by = {(r["study"], r["setting"]): r for r in rows}
    assert [r["setting"] for r in rows if r["study"] == "reduction"] == ["16", "no SE", "2", "4", "8", "32"]
    assert by[("gate", "sigmoid")]["verdict"] == "the reference" and by[("gate", "sigmoid")]["seeds"] == 3
    no_se = by[("reduction", "no SE")]
    assert no_se["d_acc"] == pytest.approx(-1.0) and no_se["ci95"] == pytest.approx([-1.0, -1.0])
    assert no_se["verdict"].startswith("worse")
    r4 = by[("reduction", "4")]
    assert r4["per_seed"] == pytest.approx([1.0, -1.0, 1.0]) and r4["verdict"].startswith("the interval contains 0")
    half = 4.303 * math.sqrt(4 / 3) / math.sqrt(3)  # t(2) * sd of (1, -1, 1) / sqrt(3)
    assert r4["ci95"] == pytest.approx([1 / 3 - half, 1 / 3 + half], abs=1e-3)
    # all at once: 15 settings besides the defaults (no SE included), each interval at 1 - 0.05/15; for 2 degrees
    # of freedom t has the closed form (2p - 1) / sqrt(2p(1 - p)) at one-sided level p = 1 - 0.05/30
    p = 1 - 0.05 / 30
    half_all = (2 * p - 1) / math.sqrt(2 * p * (1 - p)) * math.sqrt(4 / 3) / math.sqrt(3)
    assert r4["ci_all"] == pytest.approx([1 / 3 - half_all, 1 / 3 + half_all])
    assert no_se["verdict_all"].startswith("worse")  # no spread: the difference holds at any level
    assert by[("gate", "sigmoid")]["verdict_all"] == "the reference"
    tanh = by[("gate", "tanh")]
    assert tanh["seeds"] == 1 and tanh["ci95"] is None and "undefined" in tanh["verdict"]
    assert tanh["ci_all"] is None and "undefined" in tanh["verdict_all"]
    assert by[("squeeze", "max")]["d_acc"] is None and by[("squeeze", "max")]["verdict"] == "not trained yet"
    # the paper's side as an accuracy change, so > 0 means better on both sides: 22.28 - 23.00 (Table 12)
    assert tanh["paper_d_acc"] == pytest.approx(22.28 - 23.00)
    assert by[("gate", "hard_sigmoid")]["paper_d_acc"] is None
    with pytest.raises(ValueError, match="no results on 'test'"):
        ablation.ablation_study_rows(study, "test")

    fig = ablation.plot_ablation_study(study)
    ours = fig.axes[0::2]
    assert len(ours) == len(ablation.STUDIES)
    assert len(ours[0].containers) == 2  # error bars: no SE and r=4, the only ones with an interval
    # and behind each, in grey, its interval for all the settings at once
    grey = sorted(sorted(line.get_xdata()) for line in ours[0].lines if line.get_color() == "0.6")
    assert grey == sorted(by[("reduction", s)]["ci_all"] for s in ("no SE", "4"))
    texts = [t.get_text() for ax in ours for t in ax.texts]
    assert texts.count("not trained yet") == sum(r["verdict"] == "not trained yet" for r in rows)
    gate_paper = fig.axes[2 * list(ablation.STUDIES).index("gate") + 1]
    assert sorted(round(p.get_width(), 2) for p in gate_paper.patches) == [-1.19, -0.72, 0.0]
    assert "hollow = interval undefined" in fig.get_suptitle()  # tanh has one seed: its marker is hollow
    study_without_single_seeds = _study({"se_resnet20": {0: 0.80, 1: 0.82}, "resnet20": {0: 0.79, 1: 0.81}})
    assert "hollow" not in ablation.plot_ablation_study(study_without_single_seeds).get_suptitle()


# --- knock-out table -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def knockout_setup(sample):
    torch.manual_seed(0)
    model = create_model("se_resnet20").eval()
    # random BN statistics and SE biases: excitations that vary between images, as in a trained model
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.weight.uniform_(0.5, 1.5)
        for se in model.se_blocks().values():
            se.excitation.fc2.bias.normal_(0, 2)
    images, labels = sample
    idx = torch.arange(0, 1000, 12)  # 8 or 9 images per class
    images = images[idx]
    # labels := the unedited model's own predictions, so its accuracy is exactly 1 and any change is the edit's
    preds = predict_logits(model, images).argmax(1)
    true_labels = labels[idx]
    stats = hooks.excitation_stats(model, TensorBatches(images, true_labels, 84), 10)
    return model, images, preds, true_labels, stats


def test_knockout_table_matches_direct_evaluation(knockout_setup):
    model, images, preds, _, stats = knockout_setup
    scopes = [("SE_4_3", ["SE_4_3"]), ("all", hooks.se_block_names(model))]
    records = ablation.se_knockout_table(model, images, preds, stats, scopes=scopes, edits=("off", "overall_mean"))
    assert records[0]["edit"] == "none" and records[0]["accuracy"] == 1.0
    assert len(records) == 1 + 2 * len(scopes)
    for rec in records[1:]:
        if rec["edit"] == "off":
            edits = {b: hooks.Off() for b in rec["blocks"]}
        else:
            edits = {b: hooks.Replace(stats.overall_mean[b]) for b in rec["blocks"]}
        with hooks.steer(model, edits):
            result = evaluate(model, images, preds)
        direct = result.accuracy
        assert rec["accuracy"] == pytest.approx(direct, abs=1e-12), rec["scope"]
        assert rec["delta"] == pytest.approx(direct - 1.0, abs=1e-12)
        # the paired interval of the delta, from the per-image outcomes (the unedited model is right on all)
        right = result.predictions == preds
        assert rec["delta_ci95"] == pytest.approx(paired_difference(right, torch.ones_like(right))[1])
        assert rec["changed"] == int((~right).sum())
    assert any(r["delta"] < 0 for r in records[1:])  # the edits really change predictions
    assert evaluate(model, images, preds).accuracy == 1.0  # and nothing is left attached afterwards


def test_knockout_table_same_for_a_wrapped_model(knockout_setup):
    """A model that is not an SEResNet (here wrapped in a Sequential) is evaluated edit by edit on the whole
    network; an SEResNet reuses the unedited early stages. Both must give the same table."""
    model, images, _, true_labels, stats = knockout_setup
    scopes = [("SE_4_2", ["SE_4_2"]), ("stage 3", ["SE_3_1", "SE_3_2", "SE_3_3"])]
    fast = ablation.se_knockout_table(model, images, true_labels, stats, scopes=scopes)
    slow = ablation.se_knockout_table(torch.nn.Sequential(model), images, true_labels, stats, scopes=scopes)
    assert [(r["edit"], r["scope"]) for r in fast] == [(r["edit"], r["scope"]) for r in slow]
    assert [r["accuracy"] for r in fast] == pytest.approx([r["accuracy"] for r in slow], abs=1e-12)
    assert len(fast) == 1 + 3 * len(scopes)


def test_class_mean_edit_uses_each_images_true_class(knockout_setup):
    model, images, _, true_labels, stats = knockout_setup
    blocks = ["SE_4_1", "SE_4_2"]
    acc = ablation.knockout_accuracy(model, images, true_labels, "class_mean", blocks, stats)
    table = ablation.se_knockout_table(model, images, true_labels, stats, scopes=[("late", blocks)],
                                       edits=("class_mean",))
    correct = 0
    for k in range(10):  # every image evaluated under each class's mean; keep the image's own class
        with hooks.steer(model, {b: hooks.Replace(stats.mean[b][k]) for b in blocks}):
            p = predict_logits(model, images).argmax(1)
        mine = true_labels == k
        correct += int((p[mine] == k).sum())
    assert acc == pytest.approx(correct / len(true_labels), abs=1e-12)
    assert table[1]["accuracy"] == pytest.approx(correct / len(true_labels), abs=1e-12)


def test_default_scopes_and_errors(knockout_setup):
    model, images, preds, _, stats = knockout_setup
    scopes = dict(ablation.default_knockout_scopes(model))
    assert scopes["SE_4_3"] == ["SE_4_3"]
    assert scopes["all blocks"] == hooks.se_block_names(model)
    assert scopes["stages 3+4"] == ["SE_3_1", "SE_3_2", "SE_3_3", "SE_4_1", "SE_4_2", "SE_4_3"]
    with pytest.raises(ValueError, match="unknown edit"):
        ablation.se_knockout_table(model, images, preds, stats, edits=("zero",))
    with pytest.raises(ValueError, match="needs ExcitationStats"):
        ablation.knockout_accuracy(model, images, preds, "overall_mean", ["SE_4_3"], None)
    with pytest.raises(ValueError, match="no SE block matches"):
        ablation.se_knockout_table(model, images, preds, stats, scopes=[("x", ["SE_9_9"])])
    with pytest.raises(ValueError, match="no SE blocks"):
        ablation.default_knockout_scopes(create_model("resnet20"))
    records = ablation.se_knockout_table(model, images[:20], preds[:20], stats, scopes=[("SE_4_3", ["SE_4_3"])])
    fig = ablation.plot_knockout(records)
    assert len(fig.axes) == 3  # one panel per edit
    for ax, rec in zip(fig.axes, records[1:]):
        assert ax.patches[0].get_width() == pytest.approx(100 * rec["delta"])
