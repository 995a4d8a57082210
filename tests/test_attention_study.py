"""scripts/attention_study.py and seresnet.study: the family sweep reuses finished runs and pairs by seed."""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

import pytest
from conftest import load_script

from seresnet import count_params, create_model
from seresnet.study import median_half_widths, paired_over_seeds, paired_table, t_quantile, time_ratios

# Two-sided 95% quantiles of Student's t for 1..10 degrees of freedom as printed in statistics tables (3 decimals)
PRINTED_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


@pytest.fixture(scope="module")
def study():
    return load_script("attention_study")


def test_paired_difference_is_undefined_below_two_seeds() -> None:
    one = paired_over_seeds({0: 0.9}, {0: 0.8, 1: 0.7})
    assert one["paired_seeds"] == [0] and one["mean"] == pytest.approx(0.1) and one["ci95"] is None
    two = paired_over_seeds({0: 0.9, 1: 0.8}, {0: 0.8, 1: 0.8})
    assert two["ci95"][0] < two["mean"] < two["ci95"][1]


def test_sweep_shares_runs_and_never_retrains(study, tiny_folder: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    out, runs = tmp_path / "family.json", tmp_path / "runs"
    common = ["--data", str(tiny_folder), "--runs", str(runs), "--out", str(out), "--epochs", "1",
              "--val-split", "20", "--threads", "1", "--batch-size", "32", "--seeds", "0"]
    assert study.main([*common, "--models", "resnet20", "se_resnet20", "eca_resnet20"]) == 0
    first = json.loads(out.read_text())
    assert sorted(first["runs"]) == ["eca_resnet20-s0", "resnet20-s0", "se_resnet20-s0"]
    eca = first["summary"]["val"]["eca_resnet20"]
    assert eca["minus_resnet20"]["ci95"] is None  # one seed: no interval
    assert eca["minus_se_resnet20"]["mean"] == pytest.approx(
        first["runs"]["eca_resnet20-s0"]["evaluations"]["val"]["accuracy"]
        - first["runs"]["se_resnet20-s0"]["evaluations"]["val"]["accuracy"])
    assert first["costs"]["eca_resnet20"]["params"] == count_params(create_model("eca_resnet20"))
    # adding a variant trains only that variant: the three finished runs are loaded, not trained again
    trained = []
    from seresnet import train as train_module
    real_train = train_module.train
    monkeypatch.setattr(train_module, "train",
                        lambda cfg, **kw: (trained.append((cfg.model, cfg.overrides)), real_train(cfg, **kw)))
    assert study.main([*common, "--models", "resnet20", "se_resnet20", "eca_resnet20", "ge_resnet20+ge_extent=2"]) == 0
    assert trained == [("ge_resnet20", {"ge_extent": 2})]  # the family's named variant: GE with a local gather
    second = json.loads(out.read_text())
    assert second["runs"]["eca_resnet20-s0"] == first["runs"]["eca_resnet20-s0"]
    assert second["groups"] == {"family": ["resnet20", "se_resnet20", "eca_resnet20", "ge_resnet20+ge_extent=2"],
                                "ablations": []}
    assert (runs / "ge_resnet20+ge_extent=2-s0" / "metadata.json").is_file()


def test_models_must_include_the_references(study, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        study.main(["--data", "x", "--runs", str(tmp_path), "--models", "eca_resnet20", "se_resnet20"])
    with pytest.raises(SystemExit):
        study.main(["--data", "x", "--runs", str(tmp_path), "--models", "resnet20", "se_resnet20", "no_such_net"])


def test_paper_ablations_join_the_study_as_named_variants(study, tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "family.json"
    args = ["--data", str(tiny_folder), "--runs", str(tmp_path / "runs"), "--out", str(out), "--epochs", "1",
            "--val-split", "20", "--threads", "1", "--batch-size", "32", "--seeds", "0",
            "--models", "resnet20", "se_resnet20", "--ablations", "r=4", "SE in stage 2 only"]
    assert study.main(args) == 0
    stored = json.loads(out.read_text())
    assert stored["variants"]["se_resnet20+reduction=4"] == {"model": "se_resnet20", "overrides": {"reduction": 4}}
    assert "se_resnet20+se_stages=2-s0" in stored["runs"]
    assert (tmp_path / "runs" / "se_resnet20+reduction=4-s0" / "metadata.json").is_file()
    r4 = create_model("se_resnet20", reduction=4)
    assert stored["costs"]["se_resnet20+reduction=4"]["params"] == count_params(r4)
    assert "minus_se_resnet20" in stored["summary"]["val"]["se_resnet20+reduction=4"]
    assert stored["groups"]["ablations"] == ["se_resnet20+reduction=4", "se_resnet20+se_stages=2"]
    with pytest.raises(SystemExit):
        study.main([*args[:-2], "--ablations", "r=5"])


def test_paired_table_states_only_what_the_interval_allows() -> None:
    ref = {0: 0.80, 1: 0.82, 2: 0.81}
    acc = {"better": {0: 0.82, 1: 0.83, 2: 0.83}, "tie": {0: 0.81, 1: 0.81, 2: 0.82}, "one": {0: 0.85}}
    summary = {m: {"minus_resnet20": paired_over_seeds(a, ref)} for m, a in acc.items()}
    rows = paired_table({"summary": {"val": summary}}, [*acc, "untrained"], "resnet20")
    by = {r["model"]: r for r in rows}
    assert by["better"]["d_acc"] == pytest.approx(5 / 3) and by["better"]["ci95"][0] > 0
    assert by["better"]["verdict"] == "better than resnet20 beyond seed noise"
    assert by["tie"]["verdict"] == "the interval contains 0: no difference shown"
    lo, hi = by["tie"]["ci95"]
    assert by["tie"]["interval"] == f"{lo:+.2f} to {hi:+.2f}" and lo < 0 < hi
    assert by["one"]["seeds"] == 1 and by["one"]["ci95"] is None and "no verdict" in by["one"]["verdict"]
    assert by["untrained"] == {"model": "untrained", "seeds": 0, "d_acc": None, "per_seed": [], "ci95": None,
                               "verdict": "not trained yet", "interval": "undefined"}
    with pytest.raises(ValueError, match="no results on 'test'"):
        paired_table({"summary": {"val": summary}}, ["tie"], "resnet20", "test")


def test_t_quantile_matches_printed_tables() -> None:
    for df, t in PRINTED_T95.items():
        assert t_quantile(0.95, df) == pytest.approx(t, abs=6e-4)
    # printed 99% and 99.9% two-sided values for 2 degrees of freedom, 95% for 30, and the normal limit
    assert t_quantile(0.99, 2) == pytest.approx(9.925, abs=6e-4)
    assert t_quantile(0.999, 2) == pytest.approx(31.599, abs=6e-4)
    assert t_quantile(0.95, 30) == pytest.approx(2.042, abs=6e-4)
    assert t_quantile(0.95, 5000) == pytest.approx(1.960, abs=1e-3)
    assert t_quantile(0.5, 1) == pytest.approx(1.0)  # Cauchy: quartiles at -1 and +1
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            t_quantile(bad, 2)
    with pytest.raises(ValueError, match="positive integer"):
        t_quantile(0.95, 0)


def test_paired_table_all_at_once_intervals_are_bonferroni() -> None:
    ref = {0: 0.80, 1: 0.82, 2: 0.81}
    acc = {"clear": {0: 0.82, 1: 0.835, 2: 0.825}, "one": {0: 0.85}}  # +2, +1.5, +1.5 points
    summary = {m: {"minus_resnet20": paired_over_seeds(a, ref)} for m, a in acc.items()}
    study = {"summary": {"val": summary}}
    alone = {r["model"]: r for r in paired_table(study, [*acc, "untrained"], "resnet20")}
    assert "ci_all" not in alone["clear"]  # only when the number of comparisons is given
    rows = {r["model"]: r for r in paired_table(study, [*acc, "untrained"], "resnet20", comparisons=10)}
    clear = rows["clear"]
    assert clear["verdict"] == "better than resnet20 beyond seed noise"
    p = 1 - 0.05 / 20  # one-sided level of each of 10 two-sided tests at 0.05 / 10
    half = (2 * p - 1) / math.sqrt(2 * p * (1 - p)) * statistics.stdev([2.0, 1.5, 1.5]) / math.sqrt(3)
    assert clear["ci_all"] == pytest.approx([5 / 3 - half, 5 / 3 + half])
    assert clear["ci_all"][0] < clear["ci95"][0] < clear["ci95"][1] < clear["ci_all"][1]
    assert clear["verdict_all"] == "the interval contains 0: no difference shown"  # clear alone, not among 10
    assert rows["one"]["ci_all"] is None and rows["one"]["interval_all"] == "undefined"
    assert "no verdict" in rows["one"]["verdict_all"] and rows["untrained"]["verdict_all"] == "not trained yet"
    with pytest.raises(ValueError, match="comparisons must be a positive integer"):
        paired_table(study, ["clear"], "resnet20", comparisons=0)


def test_median_half_widths_say_what_a_table_resolves() -> None:
    rows = [{"ci95": [-1.0, 1.0], "ci_all": [-3.0, 3.0]}, {"ci95": [0.0, 4.0], "ci_all": [-4.0, 8.0]},
            {"ci95": [1.0, 4.0], "ci_all": [-2.0, 7.0]}, {"ci95": None, "ci_all": None}]
    assert median_half_widths(rows) == {"intervals": 3, "ci95": 1.5, "ci_all": 4.5}
    # one-at-a-time rows only (no comparisons given), or nothing with two seeds yet: undefined, not zero
    assert median_half_widths([{"ci95": [0.0, 1.0]}]) == {"intervals": 1, "ci95": 0.5, "ci_all": None}
    assert median_half_widths([{"ci95": None}]) == {"intervals": 0, "ci95": None, "ci_all": None}


def test_collect_writes_every_finished_run_and_refuses_another_recipe(study, tiny_folder: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """Runs finished by another process (here: seed 1 trained alone) all reach the stored file; --collect trains
    nothing and leaves unfinished runs out; a run folder of another recipe is refused, not mixed in."""
    out, runs = tmp_path / "family.json", tmp_path / "runs"
    common = ["--data", str(tiny_folder), "--runs", str(runs), "--out", str(out), "--epochs", "1",
              "--val-split", "20", "--threads", "1", "--batch-size", "32"]
    assert study.main([*common, "--models", "resnet20", "se_resnet20", "--seeds", "1"]) == 0
    # seed 0 alone would drop seed 1's finished runs from --out: refused before training anything
    assert study.main([*common, "--models", "resnet20", "se_resnet20", "--seeds", "0"]) == 2
    assert "would drop (resnet20-s1, se_resnet20-s1)" in capsys.readouterr().err
    assert not (runs / "resnet20-s0").exists()
    assert sorted(json.loads(out.read_text())["runs"]) == ["resnet20-s1", "se_resnet20-s1"]
    assert study.main([*common, "--models", "resnet20", "se_resnet20", "--seeds", "0", "--overwrite"]) == 0
    assert sorted(json.loads(out.read_text())["runs"]) == ["resnet20-s0", "se_resnet20-s0"]
    assert study.main([*common, "--models", "resnet20", "se_resnet20", "eca_resnet20", "--seeds", "0", "1",
                       "--collect"]) == 0
    stored = json.loads(out.read_text())
    assert sorted(stored["runs"]) == ["resnet20-s0", "resnet20-s1", "se_resnet20-s0", "se_resnet20-s1"]
    assert not (runs / "eca_resnet20-s0").exists()  # nothing trained
    assert stored["summary"]["val"]["se_resnet20"]["minus_resnet20"]["paired_seeds"] == [0, 1]
    assert study.main([*common[:-4], "--threads", "1", "--batch-size", "64", "--models", "resnet20",
                       "se_resnet20", "--seeds", "0", "--collect"]) == 2


def test_stored_study_matches_its_runs() -> None:
    """The committed study (notebook 06 reads it) is what its runs say: every paired difference recomputed from the
    stored per-run accuracies, with the t interval from a printed table (to its 3 decimals); the family is the
    package's."""
    from seresnet.study import attention_family

    stored = json.loads((Path(__file__).resolve().parent.parent / "notebooks/results/attention_study.json").read_text())
    assert stored["groups"]["family"] == list(attention_family())
    acc = {}
    for key, run in stored["runs"].items():
        name, _, seed = key.rpartition("-s")
        acc.setdefault(name, {})[int(seed)] = run["evaluations"]["val"]["accuracy"]
    assert {"resnet20", "se_resnet20"} <= set(acc)
    checked = 0
    for name, summary in stored["summary"]["val"].items():
        for ref in ("resnet20", "se_resnet20"):
            d = summary.get(f"minus_{ref}")
            if name == ref or d is None:
                continue
            seeds = sorted(set(acc.get(name, {})) & set(acc[ref]))
            diffs = [acc[name][s] - acc[ref][s] for s in seeds]
            assert d["paired_seeds"] == seeds and d["per_seed"] == pytest.approx(diffs)
            if len(diffs) > 1:
                mean = sum(diffs) / len(diffs)
                sd = (sum((x - mean) ** 2 for x in diffs) / (len(diffs) - 1)) ** 0.5
                se = sd / len(diffs) ** 0.5
                half = PRINTED_T95[len(diffs) - 1] * se
                assert d["mean"] == pytest.approx(mean)
                assert d["ci95"] == pytest.approx([mean - half, mean + half], abs=6e-4 * se)  # the table's rounding
                checked += 1
            else:
                assert d["ci95"] is None
    assert checked >= 2 * (len(stored["groups"]["family"]) - 2)  # every family member against both references


def test_time_ratios_divide_each_mode_by_the_reference() -> None:
    bench = {"groups": [
        {"mode": "train", "results": {"resnet20": {"median_s": 0.08}, "se_resnet20": {"median_s": 0.1}}},
        {"mode": "infer", "results": {"resnet20": {"median_s": 0.02}, "cbam": {"median_s": 0.05}}}]}
    ratios = time_ratios(bench)
    assert ratios["train"] == pytest.approx({"resnet20": 1.0, "se_resnet20": 1.25})
    assert ratios["infer"] == pytest.approx({"resnet20": 1.0, "cbam": 2.5})
    with pytest.raises(ValueError, match="no 'plain' to divide by"):
        time_ratios(bench, reference="plain")
    # the stored benchmark has both modes with the plain network in each
    stored = json.loads((Path(__file__).resolve().parent.parent / "benchmarks/results/attention.json").read_text())
    assert {"train", "infer"} <= set(time_ratios(stored))


# --- the prose quotes the stored study ---------------------------------------------------------------------------
_PAIR = re.compile(r"([+-]?\d+\.\d\d)\s+to\s+([+-]?\d+\.\d\d)")  # may break across lines
_NUMBER = re.compile(r"[+-]?\d+\.\d\d")


def _pairs(text: str) -> set[tuple[float, float]]:
    return {(float(a), float(b)) for a, b in _PAIR.findall(text.replace("\u2212", "-"))}


def _quotable(rows: list[dict]) -> set[tuple[float, float]]:
    """What prose may quote as "a to b": a row's 95% and all-at-once intervals, or the range of its seeds."""
    allowed = set()
    for r in rows:
        for interval in (r.get("ci95"), r.get("ci_all")):
            if interval is not None:
                allowed.add((round(interval[0], 2), round(interval[1], 2)))
        if len(r["per_seed"]) > 1:
            lo, hi = round(min(r["per_seed"]), 2), round(max(r["per_seed"]), 2)
            allowed |= {(lo, hi), (hi, lo)}
    return allowed


def test_notebook_06_and_readme_quote_the_stored_study() -> None:
    """The findings of notebook 06 and the README's study paragraph were written from an earlier collect: every
    interval they quote must be one the committed study gives, and the ablation findings must cover every setting
    (its interval once it has two seeds, else its one-seed mean)."""
    import nbformat

    from seresnet import ablation

    root = Path(__file__).resolve().parent.parent
    stored = json.loads((root / "notebooks/results/attention_study.json").read_text())
    rows = [r for r in ablation.ablation_study_rows(stored) if r["verdict"] != "the reference"]
    family = stored["groups"]["family"]
    family_rows = [r for ref in ("resnet20", "se_resnet20")
                   for r in paired_table(stored, [m for m in family if m != ref], ref, comparisons=len(family) - 1)]
    cells = {c.id: c.source for c in nbformat.read(root / "notebooks/06_ablations.ipynb", 4).cells}
    findings = cells["a6b1c004"].replace("\u2212", "-")
    # a setting may also be compared with the plain network (stage 4 only against no SE at all)
    against_plain = paired_table(stored, [m for m in stored["models"] if m.startswith("se_resnet20+")], "resnet20")
    quotable = _quotable(rows + against_plain)
    assert _pairs(findings) and _pairs(findings) <= quotable, _pairs(findings) - quotable
    numbers = {float(x) for x in _NUMBER.findall(findings)}
    for r in rows:
        if r["ci95"] is not None:
            assert (round(r["ci95"][0], 2), round(r["ci95"][1], 2)) in _pairs(findings), (r["study"], r["setting"])
        assert round(r["d_acc"], 2) in numbers or round(-r["d_acc"], 2) in numbers, (r["study"], r["setting"])
    readme = (root / "README.md").read_text()
    paragraph = readme[readme.index("**SE beside its successors.**"):].split("\n\n")[0]
    quoted = _pairs(paragraph)
    assert quoted and quoted <= _quotable(rows + family_rows), quoted - _quotable(rows + family_rows)


def test_notebook_06_family_findings_quote_the_stored_study() -> None:
    """The family findings of notebook 06: every "a to b" they give is an interval of the stored family tables (both
    references, validation; SE minus plain on each test set), a range of their median half-widths (printed under the
    tables), or the range of the paper's ablation effects they compare those with."""
    import nbformat

    from seresnet import ablation

    root = Path(__file__).resolve().parent.parent
    stored = json.loads((root / "notebooks/results/attention_study.json").read_text())
    family = stored["groups"]["family"]
    allowed, halves = set(), {"ci95": [], "ci_all": []}
    for ref in ("resnet20", "se_resnet20"):
        rows = paired_table(stored, [m for m in family if m != ref], ref, comparisons=len(family) - 1)
        allowed |= _quotable(rows)
        for key, value in median_half_widths(rows).items():
            if key in halves:
                halves[key].append(round(value, 2))
    allowed |= {(min(v), max(v)) for v in halves.values()}
    for set_name in stored["summary"]:
        if set_name != "val":
            allowed |= _quotable(paired_table(stored, ["se_resnet20"], "resnet20", set_name))
    paper = [abs(r["paper_d_acc"]) for r in ablation.ablation_study_rows(stored) if r.get("paper_d_acc")]
    allowed.add((round(min(paper), 2), round(max(paper), 2)))
    cell = next(c for c in nbformat.read(root / "notebooks/06_ablations.ipynb", 4).cells if c.id == "a6b1c006")
    quoted = _pairs(cell.source)
    assert len(quoted) >= 10 and quoted <= allowed, quoted - allowed


def test_verdict_counts_read_a_table_together() -> None:
    from seresnet.study import verdict_counts

    rows = [{"seeds": 3, "d_acc": -1.0, "ci95": [-1.5, -0.5], "ci_all": [-2.5, 0.5], "verdict": "worse"},
            {"seeds": 3, "d_acc": 0.2, "ci95": [-0.3, 0.7], "ci_all": [-1.0, 1.4], "verdict": "none"},
            {"seeds": 3, "d_acc": 2.0, "ci95": [1.0, 3.0], "ci_all": [0.1, 3.9], "verdict": "better"},
            {"seeds": 1, "d_acc": -0.4, "ci95": None, "ci_all": None, "verdict": "undefined"},
            {"seeds": 3, "d_acc": 0.0, "ci95": None, "ci_all": None, "verdict": "the reference"},
            {"seeds": 0, "d_acc": None, "ci95": None, "ci_all": None, "verdict": "not trained yet"}]
    n = verdict_counts(rows)
    assert n == {"tested": 3, "beyond": 2, "expected_by_chance": pytest.approx(0.15), "beyond_all": 1,
                 "below_zero": 2, "with_mean": 4}
    assert verdict_counts([{**r, "ci_all": None} for r in rows])["beyond_all"] is None  # no such intervals: undefined
    assert verdict_counts(rows, confidence=0.99)["expected_by_chance"] == pytest.approx(0.03)
