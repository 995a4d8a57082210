"""Plots and tables for training runs and evaluations, used by the notebooks and the README figure script.

* ``plot_history(histories)``: loss and accuracy per epoch (train dashed, test solid), one colour per model.
* ``LiveHistoryPlot``: pass it as ``on_epoch_end`` to ``seresnet.train.train``; it redraws one plot in place in a
  notebook after every epoch (outside IPython it only records).
* ``plot_per_class_accuracy(results, class_names)`` and ``plot_confusion(result, class_names)`` for
  ``seresnet.evaluate.EvalResult`` objects.
* ``Table``: a list of records shown as an HTML table in a notebook and as aligned text elsewhere.
* ``FigureImage``: a matplotlib figure shown as an ``ipywidgets.Image`` that widgets redraw in place.
* ``demo_data(full)`` / ``evaluation_set(full)``: CIFAR-10 when it is installed, else the 1,000-image sample shipped
  with the package, so that the notebooks run offline on a fresh machine.

Like ``seresnet.plots``, every function returns a ``matplotlib.figure.Figure`` made without pyplot, so nothing
accumulates in pyplot's figure list and a figure appears once: in a notebook (after ``%matplotlib inline``) end
the cell with the call or use ``display(fig)``; in a script use ``fig.savefig``. Pass ``fig`` / ``ax`` to draw into
an existing figure.
"""

from __future__ import annotations

import atexit
import html
import io
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .data import CIFAR10_CLASSES, SAMPLE_DIR, DataNotFoundError, find_cifar10, load_cifar10, load_sample
from .evaluate import EvalResult
from .train import held_out_sets

__all__ = [
    "DemoData",
    "FigureImage",
    "LiveHistoryPlot",
    "Table",
    "demo_data",
    "evaluation_set",
    "figure_png",
    "history_summary",
    "model_colors",
    "plot_confusion",
    "plot_confusions",
    "plot_history",
    "plot_per_class_accuracy",
    "recommended_threads",
    "sample_split_folder",
]

History = Sequence[Mapping[str, float]]
_METRIC_TITLES = {"loss": "Loss", "acc": "Accuracy"}


# --- tables --------------------------------------------------------------------------------------------------
def _format_value(value: Any, fmt: str | Callable[[Any], str] | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value != value:  # NaN: a quantity that is not defined here, not a number
        return "undefined"
    if callable(fmt):
        return fmt(value)
    if fmt:
        return format(value, fmt)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        # layer lists ("3x3, 16", "3x3, 16") need a separator that is not a comma
        sep = " | " if all(isinstance(v, str) for v in value) else ", "
        return sep.join(str(v) for v in value)
    return str(value)


class Table:
    """A list of records (dicts) shown as a table: HTML in a notebook, aligned text in ``str()``.

    Args:
        records: one dict per row.
        columns: keys to show, in order (default: the keys of the first record).
        headers: column key -> header text (default: the key).
        formats: column key -> format spec (``",d"``, ``".2f"``) or a function value -> str.
        title: a caption above the table.
    """

    def __init__(
        self, records: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None, formats: Mapping[str, str | Callable[[Any], str]] | None = None,
        title: str | None = None,
    ) -> None:
        self.records = [dict(r) for r in records]
        if columns is None:
            columns = list(self.records[0]) if self.records else []
        missing = [c for c in columns if self.records and all(c not in r for r in self.records)]
        if missing:
            raise KeyError(f"columns {missing} are in none of the records; record keys: {list(self.records[0])}")
        self.columns = list(columns)
        known = set(self.columns).union(*(r.keys() for r in self.records))
        for what, given in (("headers", headers), ("formats", formats)):
            unknown = sorted(set(given or {}) - known)  # a misspelt key would silently do nothing
            if unknown and self.records:
                raise KeyError(f"{what} {unknown} name no column; columns: {self.columns}")
        self.headers = {c: (headers or {}).get(c, c) for c in self.columns}
        self.formats = dict(formats or {})
        self.title = title

    def _cell(self, record: Mapping[str, Any], column: str) -> str:
        value, spec = record.get(column), self.formats.get(column)
        try:
            return _format_value(value, spec)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"column {column!r}: format {spec!r} does not apply to {value!r} ({exc})") from exc

    def cells(self) -> list[list[str]]:
        """The formatted cell texts, row by row (lists of strings joined with " | ", other lists with ", ")."""
        return [[self._cell(r, c) for c in self.columns] for r in self.records]

    # Inline styles (JupyterLab's colours where defined): the table looks the same as a cell output and inside a
    # widget's HTML, where the notebook's table CSS does not apply.
    _CELL = "text-align:left;padding:3px 10px;vertical-align:top"
    _HEAD = _CELL + ";font-weight:bold;border-bottom:1px solid var(--jp-border-color1, #888)"
    _STRIPE = "background:var(--jp-layout-color2, #f3f3f3)"

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='{self._HEAD}'>{html.escape(self.headers[c])}</th>" for c in self.columns)
        rows = []
        for k, r in enumerate(self.records):
            tds = []
            for c in self.columns:
                v = r.get(c)
                if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
                    text = "<br>".join(html.escape(x) for x in v)  # block specs: one layer per line
                else:
                    text = html.escape(self._cell(r, c))
                tds.append(f"<td style='{self._CELL}'>{text}</td>")
            stripe = f" style='{self._STRIPE}'" if k % 2 else ""
            rows.append(f"<tr{stripe}>" + "".join(tds) + "</tr>")
        caption = (f"<caption style='text-align:left;padding:4px 0'><b>{html.escape(self.title)}</b></caption>"
                   if self.title else "")
        return (f"<table style='border-collapse:collapse;border:none;font-size:12px;margin:4px 0'>{caption}"
                f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")

    def __str__(self) -> str:
        cells = self.cells()
        header = [self.headers[c] for c in self.columns]
        widths = [max(len(x) for x in col) for col in zip(header, *cells)] if header else []
        lines = [self.title] if self.title else []
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in cells]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)


# --- figures that widgets redraw -----------------------------------------------------------------------------
def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """Render a figure to PNG bytes with the Agg renderer (works without any GUI or notebook backend)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


class FigureImage:
    """A matplotlib ``Figure`` (not managed by pyplot) shown as an ``ipywidgets.Image``.

    ``redraw()`` re-renders the figure into the same image widget, so a widget that changes the figure's artists
    updates the picture in place: no flicker and no new output below the cell. ``margins`` are
    ``Figure.subplots_adjust`` arguments.
    """

    def __init__(self, figsize: tuple[float, float] = (8.0, 3.2), dpi: int = 80, ncols: int = 1,
                 nrows: int = 1, margins: Mapping[str, float] | None = None) -> None:
        import ipywidgets as widgets

        self.dpi = dpi
        # Fixed margins instead of constrained layout: the layout solver would double the time of every redraw.
        self.figure = Figure(figsize=figsize)
        self.figure.subplots_adjust(**{"left": 0.08, "right": 0.98, "bottom": 0.16, "top": 0.88, "wspace": 0.3,
                                       "hspace": 0.4, **(margins or {})})
        axes = self.figure.subplots(nrows, ncols, squeeze=False)
        self.axes: list[Axes] = list(axes.ravel())
        self.widget = widgets.Image(format="png")

    def redraw(self) -> None:
        """Render the figure again into the image widget."""
        self.widget.value = figure_png(self.figure, self.dpi)


# --- training histories ---------------------------------------------------------------------------------------
def model_colors(names: Sequence[str]) -> dict[str, str]:
    """A fixed colour per model name (matplotlib's default cycle, in order), so every plot uses the same ones."""
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    return {n: cycle[i % len(cycle)] for i, n in enumerate(names)}


def _check_history(name: str, history: History) -> None:
    if not isinstance(history, Sequence) or isinstance(history, (str, bytes)):
        raise TypeError(f"history of {name!r} must be a list of per-epoch records (dicts), got {type(history)}")
    for i, rec in enumerate(history):
        if not isinstance(rec, Mapping) or "epoch" not in rec:
            raise ValueError(f"history of {name!r}: record {i} must be a dict with an 'epoch' key, got {rec!r}")


def plot_history(
    histories: Mapping[str, History], fig: Figure | None = None, epochs: int | None = None, show_lr: bool = False,
    title: str | None = None,
) -> Figure:
    """Loss and accuracy per epoch of several runs: train dashed, held-out images (validation or test) solid, one
    colour per model.

    Args:
        histories: model name -> list of per-epoch records with ``epoch`` and any of ``train_loss``, ``val_loss``,
            ``test_loss``, ``train_acc``, ``val_acc``, ``test_acc`` (and ``lr`` for ``show_lr``), as written by
            ``seresnet.train`` (``val_*`` with a validation split, else ``test_*`` or the named set's, see
            :func:`held_out_sets`).
        fig: draw into this figure (cleared first); default: a new figure.
        epochs: fix the x axis to 1..epochs (a live plot keeps its scale while a run is going).
        show_lr: add a third panel with the learning-rate schedule.
    Returns the figure; its axes are loss, accuracy (and learning rate).
    """
    if not isinstance(histories, Mapping):
        raise TypeError(f"histories must be a dict model name -> list of records, got {type(histories).__name__}")
    for name, hist in histories.items():
        _check_history(name, hist)
    n_axes = 3 if show_lr else 2
    if fig is None:
        fig = Figure(figsize=(4.2 * n_axes, 3.4), layout="constrained")
    else:
        fig.clear()
    axes = fig.subplots(1, n_axes)
    colors = model_colors(list(histories))
    # markers help to read a few epochs; the same choice for every run keeps the styles comparable
    marker = "o" if max((len(h) for h in histories.values()), default=0) < 12 else None
    panels = [("loss", "cross-entropy loss"), ("acc", "accuracy")]
    for ax, (metric, ylabel) in zip(axes, panels):
        for name, hist in histories.items():
            for split in ["train", *held_out_sets(hist)]:
                key, style = f"{split}_{metric}", "--" if split == "train" else "-"
                pts = [(r["epoch"], r[key]) for r in hist if r.get(key) is not None]
                if pts:
                    x, y = zip(*pts)
                    ax.plot(x, y, style, color=colors[name], marker=marker, markersize=3, label=f"{name} {split}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.set_title(f"{_METRIC_TITLES[metric]} per epoch")
        ax.grid(alpha=0.3)
        if epochs:
            ax.set_xlim(0.5, epochs + 0.5)
    # One legend for all panels, below them: inside an axis it covers the curves of a small live plot.
    handles, labels = axes[1].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize="small")
    if show_lr:
        ax = axes[2]
        for name, hist in histories.items():
            pts = [(r["epoch"], r["lr"]) for r in hist if r.get("lr") is not None]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, color=colors[name], label=name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("learning rate (end of epoch)")
        ax.set_title("learning-rate schedule")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def history_summary(histories: Mapping[str, History]) -> Table:
    """One row per run: epochs, final train and evaluation loss and accuracy, best evaluation accuracy, wall time.

    The evaluation set is the validation split where the run had one (``val_*`` records), else the test set or the
    named set the run followed (:func:`held_out_sets`)."""
    rows = []
    for name, hist in histories.items():
        _check_history(name, hist)
        if not hist:
            continue
        last = hist[-1]
        split = (held_out_sets(hist) or ["test"])[0]
        accs = [r[f"{split}_acc"] for r in hist if r.get(f"{split}_acc") is not None]
        rows.append({"model": name, "epochs": int(last["epoch"]), "evaluated on": split,
                     "train_loss": last.get("train_loss"), "train_acc": last.get("train_acc"),
                     f"{split}_loss": last.get(f"{split}_loss"), f"{split}_acc": last.get(f"{split}_acc"),
                     f"best_{split}_acc": max(accs) if accs else None,
                     "wall_min": last["wall_s"] / 60 if last.get("wall_s") is not None else None})
    columns = list(dict.fromkeys(k for r in rows for k in r))  # a test run and a validated run side by side
    formats = {k: ".4f" if "acc" in k else ".3f" for k in columns if "acc" in k or "loss" in k}
    return Table(rows, columns=columns, formats={**formats, "wall_min": ".1f"},
                 headers={"wall_min": "wall time (min)"})


class LiveHistoryPlot:
    """A training-curve plot that redraws in place after every epoch; pass it as ``on_epoch_end``.

    ``live.run(name)`` starts (or continues) the series of one model and returns the plot itself, so several
    models trained one after another share one figure::

        live = LiveHistoryPlot(epochs=cfg.epochs)
        for name in ("se_resnet20", "resnet20"):
            train(TrainConfig(model=name, ...), on_epoch_end=live.run(name))

    In IPython the plot is one display output updated through its display handle; elsewhere nothing is shown and
    the histories are only recorded (``live.histories``, ``live.figure``).
    """

    def __init__(self, name: str = "model", epochs: int | None = None, show_lr: bool = False, dpi: int = 80) -> None:
        self.name = name
        self.epochs = epochs
        self.show_lr = show_lr
        self.dpi = dpi
        self.histories: dict[str, list[dict[str, float]]] = {}
        self.figure = Figure(figsize=(4.2 * (3 if show_lr else 2), 3.4), layout="constrained")
        self.redraws = 0
        self._handle: Any = None

    def run(self, name: str) -> LiveHistoryPlot:
        """Make ``name`` the model whose history the next calls record; returns ``self``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"run name must be a non-empty string, got {name!r}")
        self.name = name
        return self

    def __call__(self, history: History) -> None:
        """Record the full history so far of the current run and redraw."""
        _check_history(self.name, history)
        self.histories[self.name] = [dict(r) for r in history]
        self.redraw()

    def redraw(self) -> None:
        plot_history(self.histories, fig=self.figure, epochs=self.epochs, show_lr=self.show_lr)
        self.redraws += 1
        self._show()

    def _show(self) -> None:
        try:
            from IPython import get_ipython
            from IPython.display import Image, display
        except ImportError:  # plain Python without IPython: record only
            return
        if get_ipython() is None:
            return
        image = Image(data=figure_png(self.figure, self.dpi), format="png")
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)


# --- evaluations ---------------------------------------------------------------------------------------------
def plot_per_class_accuracy(
    results: Mapping[str, EvalResult], class_names: Sequence[str] = CIFAR10_CLASSES, ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Grouped bars: the accuracy of every class (x) for every model (one colour each)."""
    if not results:
        raise ValueError("results is empty: expected a dict model name -> EvalResult")
    k = len(class_names)
    for name, res in results.items():
        if len(res.per_class_accuracy) != k:
            raise ValueError(f"{name}: {len(res.per_class_accuracy)} per-class accuracies but {k} class names")
    if ax is None:
        fig = Figure(figsize=(10, 3.6), layout="constrained")
        ax = fig.subplots()
    else:
        fig = ax.figure
    colors = model_colors(list(results))
    width = 0.8 / len(results)
    x = np.arange(k)
    for i, (name, res) in enumerate(results.items()):
        ax.bar(x + (i - (len(results) - 1) / 2) * width, res.per_class_accuracy.double().numpy(), width,
               color=colors[name], label=f"{name} (mean {res.accuracy:.3f})")
    ax.set_xticks(x, class_names, rotation=30, ha="right")
    ax.set_xlabel("class")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.2)  # headroom for the legend above the bars
    ax.set_title(title or "Per-class accuracy")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper center", ncols=min(len(results), 4))
    return fig


def plot_confusion(
    result: EvalResult, class_names: Sequence[str] = CIFAR10_CLASSES, ax: Axes | None = None,
    title: str | None = None, normalize: bool = False,
) -> Figure:
    """The confusion matrix (rows: true class, columns: predicted) as an image with the counts written in.

    ``normalize=True`` shows each row as fractions of that class's images.
    """
    cm = result.confusion.double()
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"confusion matrix is {tuple(cm.shape)} but there are {k} class names")
    values = (cm / cm.sum(1, keepdim=True).clamp(min=1)).numpy() if normalize else cm.numpy()
    if ax is None:
        fig = Figure(figsize=(5.6, 5), layout="constrained")
        ax = fig.subplots()
    else:
        fig = ax.figure
    im = ax.imshow(values, cmap="Blues")
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the class" if normalize else "images")
    top = values.max() if values.size else 1
    for i in range(k):
        for j in range(k):
            v = values[i, j]
            text = f"{v:.2f}" if normalize else f"{int(v)}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if v > 0.6 * top else "black")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or f"Confusion matrix (accuracy {result.accuracy:.3f})")
    return fig


def plot_confusions(
    results: Mapping[str, EvalResult], class_names: Sequence[str] = CIFAR10_CLASSES, normalize: bool = False,
    title: str | None = None,
) -> Figure:
    """``plot_confusion`` for several models side by side (one panel per model, titled with its name)."""
    if not results:
        raise ValueError("results is empty: expected a dict model name -> EvalResult")
    fig = Figure(figsize=(5.8 * len(results), 5), layout="constrained")
    axes = fig.subplots(1, len(results), squeeze=False)[0]
    for ax, (name, res) in zip(axes, results.items()):
        plot_confusion(res, class_names, ax=ax, normalize=normalize,
                       title=f"{name}: accuracy {res.accuracy:.3f}")
    if title:
        fig.suptitle(title)
    return fig


# --- data for the notebooks ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoData:
    """Where a notebook's training data comes from.

    ``root`` goes into ``TrainConfig(data=root)``; ``full_dataset`` says whether it is the real CIFAR-10 (else a
    split of the shipped sample); ``description`` says so in words; ``train_size`` / ``test_size`` count images.
    """

    root: str | None
    full_dataset: bool
    description: str
    train_size: int
    test_size: int


_TEMP_DIRS: list[Path] = []


def _cleanup_temp_dirs() -> None:
    for d in _TEMP_DIRS:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup_temp_dirs)


def sample_split_folder(train_per_class: int = 80, dest: str | Path | None = None) -> Path:
    """Copy the shipped sample into ``dest/{train,test}/<class>/`` (first ``train_per_class`` images of each class
    to train, the rest to test), the folder layout ``seresnet.data.load_cifar10`` reads. Default ``dest``: a
    temporary folder removed when Python exits."""
    if dest is None:
        dest = Path(tempfile.mkdtemp(prefix="seresnet-sample-"))
        _TEMP_DIRS.append(dest)
    dest = Path(dest)
    for cls in CIFAR10_CLASSES:
        files = sorted((SAMPLE_DIR / cls).iterdir())
        if not 0 < train_per_class < len(files):
            raise ValueError(f"train_per_class must be between 1 and {len(files) - 1}, got {train_per_class}")
        for split, part in (("train", files[:train_per_class]), ("test", files[train_per_class:])):
            (dest / split / cls).mkdir(parents=True, exist_ok=True)
            for f in part:
                shutil.copyfile(f, dest / split / cls / f.name)
    return dest


def demo_data(root: str | Path | None = None, train_per_class: int = 80) -> DemoData:
    """CIFAR-10 if it is found under ``root`` (default data root: ``$SERESNET_DATA`` or the repository's
    ``data/``), else the shipped 1,000-image sample split into 800 training and 200 test images.

    Nothing is downloaded: the notebooks must run offline.
    """
    try:
        source = find_cifar10(root)
    except DataNotFoundError:
        folder = sample_split_folder(train_per_class)
        n_train = train_per_class * len(CIFAR10_CLASSES)
        n_test = sum(1 for _ in folder.glob("test/*/*"))
        return DemoData(str(folder), False,
                        f"CIFAR-10 was not found, so the demo trains on the sample shipped with the package: "
                        f"{n_train} training and {n_test} test images (real CIFAR-10 test images). Expect low "
                        f"accuracy: that is far too little data to learn CIFAR-10.", n_train, n_test)
    return DemoData(None if root is None else str(root), True, f"CIFAR-10 found ({source}).", 50_000, 10_000)


def recommended_threads() -> int | None:
    """CPU threads for training in a notebook: 1 when the machine is already busy, else None (PyTorch's default).

    "Busy" means a 1-minute load average of at least the number of cores minus a half. Then OpenMP threads spin
    waiting for cores that other processes hold, and two threads can be 10-20 times *slower* than one (measured on
    a 2-core machine running other trainings); on an idle machine more threads are faster.
    """
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on Windows
        return None
    cores = os.cpu_count() or 1
    return 1 if cores > 1 and load >= cores - 0.5 else None


def evaluation_set(full: bool = False, root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Images to evaluate trained models on: uint8 (N, 3, 32, 32), labels (N,) and a description.

    ``full=True`` gives the 10,000 CIFAR-10 test images when the data set is found; otherwise (or if it is not
    found) the 1,000 test images shipped with the package.
    """
    if full:
        try:
            images, labels = load_cifar10("test", root)
            return images, labels, f"the full CIFAR-10 test set ({len(labels):,} images)"
        except DataNotFoundError:
            pass
    images, labels = load_sample()
    note = " (CIFAR-10 was not found, so not the full test set)" if full else ""
    return images, labels, f"the shipped sample of {len(labels):,} CIFAR-10 test images{note}"
