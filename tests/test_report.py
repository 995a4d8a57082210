"""seresnet.report: the plotted data equals the inputs, the live plot redraws, tables render, and the notebooks'
data choice falls back to the shipped sample when CIFAR-10 is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_image_folder

from seresnet import report
from seresnet.data import CIFAR10_CLASSES, load_cifar10
from seresnet.evaluate import EvalResult


def _history(n: int, offset: float = 0.0) -> list[dict[str, float]]:
    return [{"epoch": e, "train_loss": 2.0 - 0.1 * e + offset, "test_loss": 2.1 - 0.1 * e + offset,
             "train_acc": 0.1 * e + offset, "test_acc": 0.09 * e + offset, "lr": 0.1 / e, "wall_s": 10.0 * e}
            for e in range(1, n + 1)]


def _lines_by_label(ax) -> dict[str, tuple[list[float], list[float]]]:
    return {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.lines}


def _result(seed: int, k: int = 10, n: int = 200) -> EvalResult:
    """An EvalResult computed here from random labels and predictions (independent of seresnet.evaluate)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, k, (n,), generator=g)
    preds = torch.where(torch.rand(n, generator=g) < 0.6, labels, torch.randint(0, k, (n,), generator=g))
    cm = torch.zeros(k, k, dtype=torch.int64)
    for t, p in zip(labels.tolist(), preds.tolist()):
        cm[t, p] += 1
    per_class = torch.tensor([cm[i, i] / max(1, cm[i].sum()) for i in range(k)], dtype=torch.float64)
    return EvalResult(float((preds == labels).double().mean()), 1.0, per_class, cm, preds)


def test_plot_history_lines_equal_inputs() -> None:
    hists = {"se_resnet20": _history(5), "resnet20": _history(3, 0.05)}
    fig = report.plot_history(hists, show_lr=True)
    loss_ax, acc_ax, lr_ax = fig.axes
    for ax, metric in ((loss_ax, "loss"), (acc_ax, "acc")):
        lines = _lines_by_label(ax)
        for name, hist in hists.items():
            for split in ("train", "test"):
                x, y = lines[f"{name} {split}"]
                assert x == [r["epoch"] for r in hist]
                assert y == pytest.approx([r[f"{split}_{metric}"] for r in hist])
        assert ax.get_title() and ax.get_xlabel() == "epoch" and ax.get_ylabel()
        assert ax.get_legend() is None  # no legend over the curves
    (legend,) = fig.legends  # one legend for all panels, below them
    assert [t.get_text() for t in legend.get_texts()] == [f"{n} {s}" for n in hists for s in ("train", "test")]
    assert _lines_by_label(lr_ax)["resnet20"][1] == pytest.approx([r["lr"] for r in hists["resnet20"]])
    # one colour per model, the same for train and test
    lines = _lines_by_label(loss_ax)
    assert lines and {ln.get_color() for ln in loss_ax.lines if ln.get_label().startswith("resnet20")} == {
        next(ln.get_color() for ln in loss_ax.lines if ln.get_label() == "resnet20 test")}


def test_plot_history_skips_missing_metrics_and_validates() -> None:
    hist = [{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5}]  # no test metrics (e.g. a DDP worker's record)
    fig = report.plot_history({"m": hist})
    assert set(_lines_by_label(fig.axes[0])) == {"m train"}
    with pytest.raises(ValueError, match="'epoch'"):
        report.plot_history({"m": [{"loss": 1.0}]})
    with pytest.raises(TypeError, match="dict model name"):
        report.plot_history([_history(2)])  # type: ignore[arg-type]


def test_live_history_plot_redraws_in_place() -> None:
    live = report.LiveHistoryPlot(epochs=4)
    fig = live.figure
    cb = live.run("se_resnet20")
    for e in range(1, 4):
        cb(_history(e))
    assert live.redraws == 3 and live.figure is fig
    live.run("resnet20")(_history(2, 0.1))
    acc = _lines_by_label(fig.axes[1])
    assert acc["se_resnet20 test"][1] == pytest.approx([r["test_acc"] for r in _history(3)])
    assert acc["resnet20 train"][1] == pytest.approx([r["train_acc"] for r in _history(2, 0.1)])
    assert fig.axes[0].get_xlim() == (0.5, 4.5)
    with pytest.raises(ValueError, match="non-empty string"):
        live.run("")


def test_live_history_plot_as_train_callback(tmp_path: Path) -> None:
    from seresnet.train import TrainConfig, train

    root = write_image_folder(tmp_path / "cifar", per_class=4)
    live = report.LiveHistoryPlot(epochs=2)
    res = train(TrainConfig(model="resnet20", epochs=2, batch_size=20, data=str(root), out=None, bf16=False,
                            channels_last=False), progress=False, on_epoch_end=live.run("resnet20"))
    assert live.redraws == 2
    assert _lines_by_label(live.figure.axes[1])["resnet20 test"][1] == pytest.approx(
        [r["test_acc"] for r in res.history])


def test_per_class_accuracy_bars_equal_inputs() -> None:
    results = {"a": _result(0), "b": _result(1)}
    fig = report.plot_per_class_accuracy(results)
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    expected = np.concatenate([results["a"].per_class_accuracy.numpy(), results["b"].per_class_accuracy.numpy()])
    assert heights == pytest.approx(list(expected))
    assert [t.get_text() for t in ax.get_xticklabels()] == list(CIFAR10_CLASSES)
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel() and ax.get_legend() is not None
    with pytest.raises(ValueError, match="class names"):
        report.plot_per_class_accuracy(results, class_names=("x", "y"))
    with pytest.raises(ValueError, match="empty"):
        report.plot_per_class_accuracy({})


def test_confusion_image_equals_matrix() -> None:
    res = _result(2)
    fig = report.plot_confusion(res)
    ax = fig.axes[0]
    img = ax.images[0].get_array()
    assert np.array_equal(np.asarray(img), res.confusion.numpy())
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert texts[(3, 5)] == str(int(res.confusion[3, 5]))
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    norm = report.plot_confusion(res, normalize=True).axes[0].images[0].get_array()
    assert np.asarray(norm).sum(1) == pytest.approx(np.ones(10))
    with pytest.raises(ValueError, match="class names"):
        report.plot_confusion(res, class_names=("a",))


def test_plot_confusions_one_panel_per_model() -> None:
    results = {"a": _result(3), "b": _result(4)}
    fig = report.plot_confusions(results, title="both")
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2
    for ax, res in zip(panels, results.values()):
        assert np.array_equal(np.asarray(ax.images[0].get_array()), res.confusion.numpy())
    assert panels[1].get_title().startswith("b:")


def test_table_renders_html_and_text() -> None:
    rows = [{"model": "se_resnet20", "params": 274847, "acc": 0.91234, "block": ["3x3, 16", "3x3, 16"]},
            {"model": "resnet20", "params": 272474, "acc": None, "block": ["3x3, 16"]}]
    t = report.Table(rows, formats={"acc": ".3f"}, headers={"acc": "accuracy"}, title="counts")
    html = t._repr_html_()
    assert ">accuracy</th>" in html and "274,847" in html and "0.912" in html
    # styled inline, so that it looks the same inside a widget's HTML, where the notebook's table CSS is absent
    assert "border-collapse:collapse" in html and "border-bottom:1px solid" in html and "padding:3px 10px" in html
    assert "3x3, 16<br>3x3, 16" in html and "counts" in html
    assert report.Table([{"eta": float("nan")}], formats={"eta": ".3f"}).cells() == [["undefined"]]
    text = str(t).splitlines()
    assert text[0] == "counts" and text[1].split() == ["model", "params", "accuracy", "block"]
    assert "3x3, 16 | 3x3, 16" in text[3] and text[4].split()[2] == "-"
    with pytest.raises(KeyError, match="columns"):
        report.Table(rows, columns=["nope"])
    # a misspelt format or header key used to be ignored; a format that does not fit a value names its column
    with pytest.raises(KeyError, match=r"formats \['acuracy'\] name no column"):
        report.Table(rows, formats={"acuracy": ".2%"})
    with pytest.raises(KeyError, match=r"headers \['accuracy'\] name no column"):
        report.Table(rows, headers={"accuracy": "Accuracy"})
    with pytest.raises(ValueError, match=r"column 'model': format '.2f' does not apply to 'se_resnet20'"):
        report.Table(rows, formats={"model": ".2f"}).cells()
    assert report.Table(rows, columns=["model"], formats={"acc": ".3f"}).cells()[0] == ["se_resnet20"]  # not shown


def test_figure_image_renders_png() -> None:
    fi = report.FigureImage(ncols=2)
    fi.axes[0].plot([1, 2], [3, 4])
    fi.redraw()
    assert fi.widget.value[:4] == b"\x89PNG" and len(fi.axes) == 2


def test_demo_data_falls_back_to_the_sample(tmp_path: Path) -> None:
    d = report.demo_data(root=tmp_path / "nothing-here")
    assert not d.full_dataset and "not found" in d.description
    assert (d.train_size, d.test_size) == (800, 200)
    x_train, y_train = load_cifar10("train", d.root)
    x_test, y_test = load_cifar10("test", d.root)
    assert x_train.shape == (800, 3, 32, 32) and x_test.shape == (200, 3, 32, 32)
    assert torch.bincount(y_train).tolist() == [80] * 10 and torch.bincount(y_test).tolist() == [20] * 10
    # the two splits are different images
    train_set = {hash(img.numpy().tobytes()) for img in x_train}
    assert not any(hash(img.numpy().tobytes()) in train_set for img in x_test)


def test_demo_data_uses_cifar_when_found(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "cifar", per_class=2)
    d = report.demo_data(root=root)
    assert d.full_dataset and d.root == str(root) and "found" in d.description


def test_evaluation_set(tmp_path: Path) -> None:
    images, labels, desc = report.evaluation_set(full=False)
    assert images.shape == (1000, 3, 32, 32) and torch.bincount(labels).tolist() == [100] * 10
    assert "sample" in desc
    images, labels, desc = report.evaluation_set(full=True, root=tmp_path / "none")
    assert images.shape[0] == 1000 and "not found" in desc
    root = write_image_folder(tmp_path / "cifar", per_class=3)
    images, labels, desc = report.evaluation_set(full=True, root=root)
    assert images.shape[0] == 30 and "full CIFAR-10 test set" in desc


def test_history_summary() -> None:
    t = report.history_summary({"a": _history(4), "b": _history(2)})
    a, b = t.records
    assert a["epochs"] == 4 and a["test_acc"] == pytest.approx(0.36) and a["best_test_acc"] == pytest.approx(0.36)
    assert b["wall_min"] == pytest.approx(20 / 60)


def test_recommended_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.7, 3.0, 2.0))
    assert report.recommended_threads() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.3, 0.2, 0.1))
    assert report.recommended_threads() is None

    def unavailable():
        raise OSError("no load average")

    monkeypatch.setattr(os, "getloadavg", unavailable)
    assert report.recommended_threads() is None


def test_readme_figure_script(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_readme_figures",
                                                  Path(__file__).resolve().parent.parent / "scripts" /
                                                  "make_readme_figures.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert all(name.endswith(".png") and callable(fn) for name, fn in script.FIGURES.items())
    assert script.main(["--out", str(tmp_path), "--only", "se_integration_variants", "--dpi", "40"]) == 0
    png = tmp_path / "se_integration_variants.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert script.main(["--out", str(tmp_path), "--only", "nope"]) == 2
