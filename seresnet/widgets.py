"""Interactive explorers (ipywidgets) for the excitation of SE blocks and for steering it.

Each explorer is an ``ipywidgets.VBox`` holding its controls and one ``ipywidgets.Image`` into which one persistent
matplotlib figure is rendered as PNG whenever a control changes. This needs no interactive matplotlib backend
(works with JupyterLab's default inline backend, no ipympl), does not flicker, and keeps the figure and its data
reachable from Python (``.figure``, ``.state``) for tests. Model outputs are computed once and cached: moving only
the image slider never reruns the model.

* :func:`recalibration_explorer`: class-mean excitation profiles at a block, and one image's excitation against
  the mean of its class.
* :func:`steering_explorer`: scale or set one channel's excitation at one block and see the feature map before and
  after scaling, the class probabilities, and which images change their prediction.
* :func:`gate_history_explorer`: an epoch slider over the excitations recorded while a model trained.
* :func:`channel_explorer`: what one channel sees (top images, its map, class means, attribution per class).

Images are given as uint8 (N, 3, H, W) and shown as they are; the model sees ``normalize(images)`` (by default
``seresnet.data.normalize``, the CIFAR-10 mean and std).
"""

from __future__ import annotations

import html
import io
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from .attention import ChannelAdd
from .data import check_class_labels
from .hooks import Constant, ExcitationStats, Replace, Scale, capture, resolve_blocks, steer
from .plots import ALL_COLOR, plot_class_probabilities

__all__ = ["Explorer", "channel_explorer", "gate_history_explorer", "recalibration_explorer", "steering_explorer"]

Normalizer = Callable[[torch.Tensor], torch.Tensor]


def _default_normalize() -> Normalizer:
    try:
        from .data import normalize
    except ImportError as e:  # pragma: no cover - depends on the package build
        raise ImportError("seresnet.data.normalize is not available; pass normalize=<function uint8 -> float>") from e
    return normalize


def _check_images(images: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        # Never cast: float images in 0..1 would become all zeros, uint16 / int values would wrap around.
        hint = ("; convert float images in 0..1 with (images * 255).round().to(torch.uint8)"
                if images.dtype.is_floating_point else "")
        raise ValueError(f"images must be uint8 (values 0..255) of shape (N, 3, H, W) with N >= 1, got "
                         f"{images.dtype} {tuple(images.shape)}{hint}")
    labels = torch.as_tensor(labels)
    if labels.shape != (images.shape[0],) or labels.dtype.is_floating_point:
        raise ValueError(f"labels must be integers of shape ({images.shape[0]},), got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    return images, labels.long()


def _check_index(what: str, value: Any, size: int) -> int:
    """``value`` as an index into ``size`` things, or a ValueError naming the range (a slider would clamp it)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < size:
        raise ValueError(f"{what} must be an integer in 0..{size - 1}, got {value!r}")
    return int(value)


EDIT_MODES = ("scale", "set")
FACTOR_RANGE = (0.0, 3.0)  # the factor slider's range


def _check_edit(blocks: Any, block: Any, channel: Any, factor: Any, mode: Any) -> None:
    """An edit the steering explorer can show: a known block, one of its channels, a factor on the slider's range
    and a mode of ``EDIT_MODES`` (ipywidgets would clamp the numbers or fail with a TraitError)."""
    if block not in blocks:
        raise ValueError(f"unknown block {block!r}; blocks: {', '.join(blocks)}")
    _check_index(f"channel of {block}", channel, blocks[block].channels)
    if isinstance(factor, bool) or not isinstance(factor, (int, float, np.floating, np.integer)) \
            or not FACTOR_RANGE[0] <= factor <= FACTOR_RANGE[1]:
        raise ValueError(f"factor must be a number in {FACTOR_RANGE[0]:g}..{FACTOR_RANGE[1]:g} (the slider's range), "
                         f"got {factor!r}")
    if mode not in EDIT_MODES:
        raise ValueError(f"mode must be one of {EDIT_MODES}, got {mode!r}")


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _to_display(image: torch.Tensor) -> np.ndarray:
    """uint8 (3, H, W) -> (H, W, 3) for imshow."""
    return image.permute(1, 2, 0).numpy()


class Explorer(widgets.VBox):
    """A VBox of controls above a figure rendered to PNG.

    Attributes for programmatic use and tests:
        controls: name -> control widget (set ``.value`` to interact).
        figure: the persistent matplotlib figure.
        image: the ``ipywidgets.Image`` showing the figure.
        state: what is currently shown (the arrays behind the plots).
        render_times: seconds taken by each redraw (drawing + PNG encoding).
        model_runs: number of model forward sweeps over the images so far.
    """

    def __init__(self, controls: dict[str, widgets.Widget], figure: Figure, dpi: int, extra: Sequence[Any] = (),
                 css_class: str = "seresnet-explorer") -> None:
        # Subclasses may run the model (and count it in model_runs) before calling this.
        self.controls = controls
        self.figure = figure
        self.dpi = dpi
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%", height="auto"))
        self.image.add_class("seresnet-figure")
        self.state: dict[str, Any] = {}
        self.render_times: list[float] = []
        self._busy = False
        row = widgets.HBox(list(controls.values()), layout=widgets.Layout(flex_flow="row wrap", align_items="center"))
        super().__init__([row, *extra, self.image])
        self.add_class(css_class)

    model_runs: int = 0

    def _render(self) -> None:
        t0 = time.perf_counter()
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=self.dpi)
        self.image.value = buf.getvalue()
        self.render_times.append(time.perf_counter() - t0)

    def redraw(self) -> None:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def _on_change(self, change: dict[str, Any]) -> None:
        if not self._busy:  # a control adjusted by another control's handler triggers only one redraw
            self.redraw()


# --- recalibration explorer ------------------------------------------------------------------------------------
class RecalibrationExplorer(Explorer):
    """See :func:`recalibration_explorer`."""

    def __init__(self, stats: ExcitationStats, images: Any, labels: Any, model: nn.Module,
                 class_names: Sequence[str], normalize: Normalizer | None = None, batch_size: int = 256,
                 dpi: int = 72, classes: Sequence[int] | None = None, block: str | None = None) -> None:
        if not isinstance(stats, ExcitationStats):
            raise TypeError(f"stats must be ExcitationStats (seresnet.hooks.excitation_stats), got {type(stats)}")
        images, labels = _check_images(images, labels)
        names = [str(n) for n in class_names]
        if len(names) != stats.num_classes:
            raise ValueError(f"class_names has {len(names)} entries but the statistics have {stats.num_classes} "
                             "classes")
        check_class_labels(labels, stats.num_classes)
        blocks = list(resolve_blocks(model, stats.block_names))  # also checks the model has these blocks
        self.stats, self.images, self.labels, self.class_names = stats, images, labels, names
        normalize = normalize or _default_normalize()
        self._normalize = normalize

        # One sweep over the images: every block's excitation and the predictions are cached.
        was_training = model.training
        model.eval()
        pred_parts = []
        dev = _model_device(model)
        try:
            with torch.no_grad(), capture(model, blocks) as cap:
                for i in range(0, len(images), batch_size):
                    logits = model(normalize(images[i:i + batch_size]).to(dev))
                    pred_parts.append(logits.argmax(1).cpu())
        finally:
            model.train(was_training)
        if logits.shape[1] != len(names):  # a prediction beyond the names failed later, at some slider position
            raise ValueError(f"class_names has {len(names)} entries but the model has {logits.shape[1]} outputs")
        self.model_runs = 1
        from .channels import per_channel

        # per image and channel (a spatial gate's mean over positions)
        self.excitation: dict[str, np.ndarray] = {b: per_channel(cap.excitation[b]).numpy() for b in blocks}
        self.predictions = torch.cat(pred_parts)

        k = stats.num_classes
        default_classes = tuple(classes) if classes is not None else tuple(range(min(3, k)))
        self._model, self._normalize, self._batch_size, self._blocks = model, normalize, batch_size, blocks
        self._se_effect: np.ndarray | None = None  # computed when the "where SE matters most" filter is first chosen
        present = sorted(set(labels.tolist()))
        controls = {
            "block": widgets.Dropdown(options=blocks, value=block or blocks[-1], description="SE block"),
            "classes": widgets.SelectMultiple(options=[(n, i) for i, n in enumerate(names)], value=default_classes,
                                              rows=min(k, 6), description="classes"),
            "show": widgets.Dropdown(options=[("all images", "all"), ("misclassified", "wrong"),
                                              ("where SE matters most", "se"),
                                              *[(f"class: {names[c]}", f"class:{c}") for c in present]],
                                     value="all", description="images"),
            "image": widgets.SelectionSlider(options=list(range(len(images))), value=0, description="image"),
        }
        for name, w in controls.items():
            w.add_class(f"seresnet-{name}")
        # Fixed margins rather than constrained layout: the layout solver would double the redraw time.
        fig = Figure(figsize=(13.0, 3.6))
        ax_img, ax_prof, ax_img_s = fig.subplots(1, 3, gridspec_kw=dict(
            width_ratios=[1.0, 2.3, 2.3], left=0.01, right=0.99, bottom=0.14, top=0.86, wspace=0.18))
        self._img_artist = ax_img.imshow(_to_display(images[0]), interpolation="nearest")
        ax_img.set_xticks([])
        ax_img.set_yticks([])
        self._ax_img, self._ax_prof, self._ax_img_s = ax_img, ax_prof, ax_img_s
        super().__init__(controls, fig, dpi)
        for name, w in controls.items():
            w.observe(self._on_filter if name == "show" else self._on_change, names="value")
        self.redraw()

    def se_effect(self) -> np.ndarray:
        """Per image: how much the probability of its true class moves when every SE block's excitation is
        replaced by its mean over all images (the per-image part of SE removed). One extra model sweep, cached."""
        if self._se_effect is None:
            probs = []
            edits = {b: Replace(self.stats.overall_mean[b]) for b in self._blocks}
            was_training = self._model.training
            self._model.eval()
            dev = _model_device(self._model)
            try:
                def sweep() -> torch.Tensor:
                    return torch.cat([self._model(self._normalize(self.images[i:i + self._batch_size]).to(dev))
                                      .softmax(1).cpu() for i in range(0, len(self.images), self._batch_size)])

                with torch.no_grad():
                    probs.append(sweep())
                    with steer(self._model, edits):
                        probs.append(sweep())
            finally:
                self._model.train(was_training)
            self.model_runs += 1
            rows = torch.arange(len(self.labels))
            self._se_effect = (probs[0][rows, self.labels] - probs[1][rows, self.labels]).abs().numpy()
        return self._se_effect

    def filtered(self, show: str) -> list[int]:
        """Indices of the images a filter keeps: all, misclassified, one class, or the tenth (at least 10) where
        SE matters most (``se_effect``), largest first."""
        if show == "all":
            return list(range(len(self.images)))
        if show == "wrong":
            return (self.predictions != self.labels).nonzero().flatten().tolist()
        if show == "se":
            effect = self.se_effect()
            return np.argsort(-effect, kind="stable")[:max(10, len(effect) // 10)].tolist()
        return (self.labels == int(show.split(":")[1])).nonzero().flatten().tolist()

    def _on_filter(self, change: dict[str, Any]) -> None:
        keep = self.filtered(change["new"]) or [self.controls["image"].value]  # never an empty slider
        self._busy = True
        try:
            self.controls["image"].options = keep
            self.controls["image"].value = keep[0]
        finally:
            self._busy = False
        self.redraw()

    def redraw(self) -> None:
        block = self.controls["block"].value
        classes = list(self.controls["classes"].value)
        i = self.controls["image"].value
        means = self.stats.mean[block].numpy()
        overall = self.stats.overall_mean[block].numpy()
        c = means.shape[1]
        x = np.arange(c)
        label = int(self.labels[i])

        ax = self._ax_prof
        ax.clear()
        for k in classes:
            ax.plot(x, means[k], lw=1.0, color=f"C{k % 10}", label=self.class_names[k])
        ax.plot(x, overall, lw=1.6, ls="--", color=ALL_COLOR, label="all classes")
        ax.set_title(f"{block}: mean excitation per channel")
        ax.set_xlabel("channel index")
        ax.set_ylabel("mean excitation s")
        ax.set_xlim(-0.5, c - 0.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", ncols=2 if len(classes) > 5 else 1)

        s_img = self.excitation[block][i]
        ax = self._ax_img_s
        ax.clear()
        ax.plot(x, s_img, lw=1.2, color="black", label=f"image {i}")
        ax.plot(x, means[label], lw=1.2, ls="--", color=f"C{label % 10}", label=f"mean of {self.class_names[label]}")
        ax.set_title(f"image {i} vs its class mean at {block}")
        ax.set_xlabel("channel index")
        ax.set_ylabel("excitation s")
        ax.set_xlim(-0.5, c - 0.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        lo = min(0.0, float(np.nanmin([means[classes].min() if classes else 0, s_img.min(), overall.min()])))
        hi = max(1.0, float(np.nanmax([means[classes].max() if classes else 1, s_img.max(), overall.max()])))
        for a in (self._ax_prof, self._ax_img_s):
            a.set_ylim(lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo))

        self._img_artist.set_data(_to_display(self.images[i]))
        pred = int(self.predictions[i])
        self._ax_img.set_title(f"image {i}\ntrue: {self.class_names[label]}, predicted: {self.class_names[pred]}",
                               fontsize="medium")
        self.state = dict(block=block, classes=classes, index=i, label=label, prediction=pred,
                          profiles={k: means[k] for k in classes}, overall=overall, image_s=s_img,
                          class_mean=means[label])
        self._render()


def recalibration_explorer(stats: ExcitationStats, images: Any, labels: Any, model: nn.Module,
                           class_names: Sequence[str], *, normalize: Normalizer | None = None,
                           batch_size: int = 256, dpi: int = 72) -> RecalibrationExplorer:
    """Explore how SE blocks recalibrate channels, per class and per image.

    Controls: SE block (dropdown), classes to overlay (multi-select), which images the slider runs over (all, one
    class, the misclassified ones, or the tenth where SE matters most: where replacing every excitation by its mean
    moves the probability of the true class most), and the image (slider). The figure shows the image (true and
    predicted class), the mean excitation profile of the chosen classes and of all classes at the block (from
    ``stats``), and the chosen image's excitation against the mean of its class.

    ``images`` uint8 (N, 3, H, W), ``labels`` (N,). The excitations of all images at all blocks of ``stats`` are
    computed once, here; later interaction never reruns the model.
    """
    return RecalibrationExplorer(stats, images, labels, model, class_names, normalize=normalize,
                                 batch_size=batch_size, dpi=dpi)


# --- steering explorer -----------------------------------------------------------------------------------------
class SteeringExplorer(Explorer):
    """See :func:`steering_explorer`."""

    MAX_RUNS_CACHED = 64
    NO_JUMP = -1  # the "go to" list's title entry (a value, so that the list shows its title when nothing is chosen)
    MAX_BLOCKS_CACHED = 2  # U of one block for N images is N * C * H * W floats (13 MB for 200 CIFAR images)

    def __init__(self, model: nn.Module, images: Any, labels: Any, class_names: Sequence[str],
                 normalize: Normalizer | None = None, batch_size: int = 64, dpi: int = 72,
                 block: str | None = None, factor: float = 0.0, image_ids: Sequence[int] | None = None) -> None:
        images, labels = _check_images(images, labels)
        ids = list(range(len(images))) if image_ids is None else [int(i) for i in image_ids]
        if len(ids) != len(images) or len(set(ids)) != len(ids) or min(ids) < 0:
            raise ValueError(f"image_ids must give {len(images)} distinct numbers >= 0, one per image, got "
                             f"{len(ids)}")
        self.image_ids, self._position = ids, {j: k for k, j in enumerate(ids)}
        self.model = model
        self.images, self.labels = images, labels
        self.class_names = [str(n) for n in class_names]
        check_class_labels(labels, len(self.class_names))
        self.blocks = resolve_blocks(model, None)
        names = list(self.blocks)
        block = block or names[0]
        _check_edit(self.blocks, block, 0, factor, "scale")  # before the first sweep
        # channels_last input: the CPU convolutions of every sweep run about 20% faster (benchmarks/bench_widgets.py);
        # all sweeps, the unedited one included, use the same layout, so an edit is the only difference between them
        self._x = (normalize or _default_normalize())(images).contiguous(memory_format=torch.channels_last)
        self._batch_size = batch_size
        self._runs: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._features: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._unit_inputs: OrderedDict[str, tuple[torch.Tensor, tuple[int, int]]] = OrderedDict()
        self.original_probs = self._sweep(None)[0]
        if self.original_probs.shape[1] != len(self.class_names):
            raise ValueError(f"class_names has {len(self.class_names)} entries but the model has "
                             f"{self.original_probs.shape[1]} outputs")
        self.original_predictions = self.original_probs.argmax(1)

        controls = {
            "block": widgets.Dropdown(options=names, value=block, description="SE block"),
            "channel": widgets.IntSlider(min=0, max=self.blocks[block].channels - 1, value=0, description="channel",
                                         continuous_update=False),
            "factor": widgets.FloatSlider(min=FACTOR_RANGE[0], max=FACTOR_RANGE[1], step=0.05, value=factor,
                                          description="factor",
                                          continuous_update=False, readout_format=".2f"),
            "mode": widgets.ToggleButtons(options=list(EDIT_MODES), value="scale", description="mode",
                                          tooltips=["s_c <- factor * s_c", "s_c <- factor"]),
            # the images' own numbers (e.g. their index in the whole sample), so text and widget agree
            "image": widgets.SelectionSlider(options=ids, value=ids[0], description="image"),
            "jump": widgets.Dropdown(options=[("changed images ...", self.NO_JUMP)], value=self.NO_JUMP,
                                     description="go to", layout=widgets.Layout(width="28em")),
        }
        for name, w in controls.items():
            w.add_class(f"seresnet-{name}")
        self.changed_text = widgets.HTML()
        self.changed_text.add_class("seresnet-changed")
        # Fixed margins rather than constrained layout: the layout solver would double the redraw time.
        # Square image panels (2.3 in) on the left, the bar chart with room for rotated class names on the right.
        fig = Figure(figsize=(14.0, 3.7))
        ax_img, ax_before, ax_after = (fig.add_axes((left, 0.08, 0.164, 0.62)) for left in (0.01, 0.19, 0.37))
        ax_cbar = fig.add_axes((0.54, 0.08, 0.008, 0.62))
        ax_probs = fig.add_axes((0.625, 0.25, 0.365, 0.62))
        self._img_artist = ax_img.imshow(_to_display(images[0]), interpolation="nearest")
        dummy = np.zeros((2, 2))
        self._before_artist = ax_before.imshow(dummy, cmap="RdBu_r", interpolation="nearest")
        self._after_artist = ax_after.imshow(dummy, cmap="RdBu_r", interpolation="nearest")
        self._colorbar = fig.colorbar(self._after_artist, cax=ax_cbar)
        ax_cbar.set_title("U", fontsize="small")
        for ax in (ax_img, ax_before, ax_after):
            ax.set_xticks([])
            ax.set_yticks([])
        self._axes = dict(image=ax_img, before=ax_before, after=ax_after, probs=ax_probs)
        super().__init__(controls, fig, dpi, extra=[self.changed_text])
        controls["block"].observe(self._on_block, names="value")
        for key in ("channel", "factor", "mode", "image"):
            controls[key].observe(self._on_change, names="value")
        controls["jump"].observe(self._on_jump, names="value")
        self.redraw()

    def _on_jump(self, change: dict[str, Any]) -> None:
        if change["new"] != self.NO_JUMP and not self._busy:
            self.controls["image"].value = change["new"]  # redraws, which resets the jump list

    # --- cached model sweeps ---
    def _sweep(self, edit_key: tuple | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Softmax probabilities (N, K) and, for an edit, the edited block's s (N, C)."""
        model = self.model
        was_training = model.training
        model.eval()
        dev = _model_device(model)
        probs = []
        try:
            with torch.no_grad():
                if edit_key is None:
                    for i in range(0, len(self._x), self._batch_size):
                        probs.append(model(self._x[i:i + self._batch_size].to(dev)).softmax(1).cpu())
                    s = None
                else:
                    block, channel, factor, mode = edit_key
                    edit = Scale(factor, [channel]) if mode == "scale" else Constant(factor, [channel])
                    start = self._unit_input(block)  # None: not an SEResNet, run the whole model
                    with steer(model, {block: edit}), capture(model, block) as cap:
                        for i in range(0, len(self._x), self._batch_size):
                            if start is None:
                                logits = model(self._x[i:i + self._batch_size].to(dev))
                            else:
                                h, (si, ui) = start
                                logits = model.forward_from_unit(h[i:i + self._batch_size].to(dev), si, ui)
                            probs.append(logits.softmax(1).cpu())
                    s = cap.excitation[block].numpy()
        finally:
            model.train(was_training)
        self.model_runs += 1
        return torch.cat(probs).numpy(), s

    def _unit_input(self, block: str) -> tuple[torch.Tensor, tuple[int, int]] | None:
        """The input of the residual unit holding ``block`` for every image, and where that unit is: an edit of
        the block leaves everything before it unchanged, so a new edit reruns only the units from there on."""
        from .model import SEResNet

        if not isinstance(self.model, SEResNet):
            return None
        if block not in self._unit_inputs:
            si, ui = self.model.se_unit(block)
            unit = list(getattr(self.model, self.model.stage_names[si]))[ui]
            parts: list[torch.Tensor] = []
            handle = unit.register_forward_pre_hook(lambda m, args: parts.append(args[0].cpu()))
            try:
                with torch.no_grad():
                    for i in range(0, len(self._x), self._batch_size):
                        self.model(self._x[i:i + self._batch_size].to(_model_device(self.model)))
            finally:
                handle.remove()
            self.model_runs += 1
            self._unit_inputs[block] = (torch.cat(parts), (si, ui))
            if len(self._unit_inputs) > self.MAX_BLOCKS_CACHED:
                self._unit_inputs.popitem(last=False)
        self._unit_inputs.move_to_end(block)
        return self._unit_inputs[block]

    def _steered(self, key: tuple) -> tuple[np.ndarray, np.ndarray]:
        if key in self._runs:
            self._runs.move_to_end(key)
        else:
            self._runs[key] = self._sweep(key)
            if len(self._runs) > self.MAX_RUNS_CACHED:
                self._runs.popitem(last=False)
        return self._runs[key]

    def _block_features(self, block: str) -> tuple[np.ndarray, np.ndarray]:
        """The unedited input U (N, C, H, W) and excitation s (N, C) of ``block`` (a few blocks kept)."""
        if block in self._features:
            self._features.move_to_end(block)
            return self._features[block]
        model = self.model
        was_training = model.training
        model.eval()
        dev = _model_device(model)
        try:
            with torch.no_grad(), capture(model, block, features=True) as cap:
                for i in range(0, len(self._x), self._batch_size):
                    model(self._x[i:i + self._batch_size].to(dev))
        finally:
            model.train(was_training)
        self.model_runs += 1
        self._features[block] = (cap.inputs[block].numpy(), cap.excitation[block].numpy())
        if len(self._features) > self.MAX_BLOCKS_CACHED:
            self._features.popitem(last=False)
        return self._features[block]

    # --- interaction ---
    def _on_block(self, change: dict[str, Any]) -> None:
        ch = self.controls["channel"]
        self._busy = True
        try:
            ch.max = self.blocks[change["new"]].channels - 1  # clamps the value if needed
        finally:
            self._busy = False
        self.redraw()

    def rank_channels(self, block: str, factor: float = 0.0, mode: str = "scale",
                      channels: Sequence[int] | None = None) -> list[tuple[int, int]]:
        """(channel, number of images whose prediction changes) for the edit ``factor`` / ``mode`` of every channel
        of ``block`` (or of ``channels``), most changes first: a way to find an edit worth looking at. One sweep per
        channel, each from the block's residual unit on."""
        if block not in self.blocks:
            raise ValueError(f"unknown block {block!r}; blocks: {', '.join(self.blocks)}")
        if mode not in EDIT_MODES:  # anything but "scale" used to run "set"
            raise ValueError(f"mode must be one of {EDIT_MODES}, got {mode!r}")
        width = self.blocks[block].channels
        candidates = range(width) if channels is None else [int(c) for c in channels]
        if any(not 0 <= c < width for c in candidates):
            raise ValueError(f"{block} has channels 0..{width - 1}, got {list(candidates)}")
        counts = []
        for c in candidates:
            probs, _ = self._steered((block, c, round(float(factor), 6), mode))
            counts.append((c, int((probs.argmax(1) != self.original_predictions).sum())))
        return sorted(counts, key=lambda t: (-t[1], t[0]))

    def show_edit(self, block: str, channel: int, factor: float, mode: str = "scale") -> None:
        """Set the controls to an edit (one redraw)."""
        _check_edit(self.blocks, block, channel, factor, mode)
        self._busy = True
        try:
            self.controls["block"].value = block
            self.controls["channel"].max = self.blocks[block].channels - 1
            self.controls["channel"].value = channel
            self.controls["factor"].value = factor
            self.controls["mode"].value = mode
        finally:
            self._busy = False
        self.redraw()

    def edit_key(self) -> tuple[str, int, float, str]:
        """(block, channel, factor, mode) of the current edit."""
        c = self.controls
        return c["block"].value, int(c["channel"].value), round(float(c["factor"].value), 6), c["mode"].value

    def redraw(self) -> None:
        block, channel, factor, mode = key = self.edit_key()
        image_id = self.controls["image"].value
        i = self._position[image_id]
        probs, s_edit = self._steered(key)
        u, s_orig = self._block_features(block)
        before = u[i, channel]
        # how the module applies its gate: SE and most multiply U by s; GC adds its context vector to U
        additive = isinstance(self.model.se_blocks()[block].scale, ChannelAdd)
        after = before + s_edit[i, channel] if additive else before * s_edit[i, channel]
        preds = probs.argmax(1)
        changed = np.flatnonzero(preds != self.original_predictions)

        lim = max(float(np.abs(before).max()), float(np.abs(after).max()), 1e-12)
        nonneg = float(before.min()) >= 0
        for artist, img in ((self._before_artist, before), (self._after_artist, after)):
            artist.set_data(img)
            artist.set_cmap("magma" if nonneg else "RdBu_r")
            artist.set_clim(0.0 if nonneg else -lim, lim)
        ax = self._axes
        # a spatial gate (NoSqueeze) scales the map position by position; the titles give its mean
        s0, s1 = float(np.mean(s_orig[i, channel])), float(np.mean(s_edit[i, channel]))
        ax["before"].set_title(f"{block} channel {channel}\nbefore: U (s = {s0:.2f})",
                               fontsize="medium")
        op = "x" if mode == "scale" else "="
        ax["after"].set_title(f"after: {'U + s' if additive else 's * U'}\n(s {op} {factor:.2f} -> {s1:.2f})",
                              fontsize="medium")
        self._img_artist.set_data(_to_display(self.images[i]))
        label, p0, p1 = int(self.labels[i]), int(self.original_predictions[i]), int(preds[i])
        ax["image"].set_title(f"image #{image_id} ({self.class_names[label]})\noriginal: {self.class_names[p0]}\n"
                              f"steered: {self.class_names[p1]}", fontsize="medium")
        ax["probs"].clear()
        plot_class_probabilities(probs[i], self.class_names, ax=ax["probs"], reference=self.original_probs[i],
                                 label="steered", reference_label="original",
                                 title=f"image #{image_id}: class probabilities")
        self.changed_text.value = self._changed_html(changed, preds)
        self._update_jump(changed, preds)
        self.state = dict(block=block, channel=channel, factor=factor, mode=mode, index=i, image_id=image_id,
                          probs=probs[i],
                          original_probs=self.original_probs[i], before=before, after=after,
                          s_original=s0, s_steered=s1,
                          changed=changed.tolist(), predictions=preds)
        self._render()

    def _outcome(self, j: int, preds: np.ndarray) -> str:
        """What the edit did to image ``j``'s prediction: became right, became wrong, or wrong either way."""
        label = int(self.labels[j])
        if preds[j] == label:
            return "now right"
        return "now wrong" if self.original_predictions[j] == label else "still wrong"

    def _changed_html(self, changed: np.ndarray, preds: np.ndarray) -> str:
        from .evaluate import paired_difference

        n = len(self.images)
        labels = self.labels.numpy()
        right_before, right_after = self.original_predictions == labels, preds == labels
        diff, (lo, hi) = paired_difference(torch.from_numpy(right_after), torch.from_numpy(right_before))
        accuracy = (f"accuracy on these {n} images: {right_before.mean():.1%} &rarr; {right_after.mean():.1%} "
                    f"(change {diff:+.1%}, 95% interval {lo:+.1%} to {hi:+.1%})")
        if not len(changed):
            return f"<b>0 of {n} images</b> change their prediction under this edit; {accuracy}."
        outcomes = [self._outcome(j, preds) for j in changed]
        counts = ", ".join(f"{outcomes.count(o)} {o}" for o in ("now right", "now wrong", "still wrong")
                           if o in outcomes)
        shown = ", ".join(
            f"#{self.image_ids[j]} {html.escape(self.class_names[self.original_predictions[j]])} &rarr; "
            f"{html.escape(self.class_names[preds[j]])} ({self._outcome(j, preds)})" for j in changed[:8])
        more = f", ... ({len(changed) - 8} more in the 'go to' list)" if len(changed) > 8 else ""
        return (f"<b>{len(changed)} of {n} images</b> change their prediction ({counts}); {accuracy}.<br>"
                f"{shown}{more}")

    def _update_jump(self, changed: np.ndarray, preds: np.ndarray) -> None:
        options = [(f"#{self.image_ids[j]}: {self.class_names[self.original_predictions[j]]} -> "
                    f"{self.class_names[preds[j]]} ({self._outcome(j, preds)})", self.image_ids[j]) for j in changed]
        jump = self.controls["jump"]
        self._busy = True
        try:
            jump.options = [(f"{len(changed)} changed images ..." if options else "no image changes",
                             self.NO_JUMP), *options]
            jump.value = self.NO_JUMP
        finally:
            self._busy = False


def steering_explorer(model: nn.Module, images: Any, labels: Any, class_names: Sequence[str], *,
                      normalize: Normalizer | None = None, batch_size: int = 64, dpi: int = 72,
                      block: str | None = None, factor: float = 0.0,
                      image_ids: Sequence[int] | None = None) -> SteeringExplorer:
    """Steer one channel of one SE block and watch the effect.

    Controls: SE block (dropdown), channel (slider, bounded by the block's width), factor (0..3), mode (``scale``:
    ``s_c <- factor * s_c``; ``set``: ``s_c <- factor``), image (slider over ``image_ids``, the images' own numbers,
    by default 0..N-1), and "go to", a list of the images whose prediction the edit changes. The figure shows the
    image, the channel's feature map before and after scaling (``U`` and ``s_c U`` with the edited ``s_c``), and the
    class probabilities steered vs original; below, how many images change their prediction (which became right,
    which wrong), and the accuracy on these images before and after the edit with a paired 95% interval.

    The model runs once per distinct edit (results cached), and only from the edited block's residual unit on;
    changing the image only redraws. ``batch_size`` is small by default: on a 2-core CPU, batches of 64 CIFAR
    images run the network faster per image than 256 (the feature maps stay in cache; ``benchmarks/bench_widgets.py``).
    """
    return SteeringExplorer(model, images, labels, class_names, normalize=normalize, batch_size=batch_size,
                            dpi=dpi, block=block, factor=factor, image_ids=image_ids)


# --- the excitations' history ------------------------------------------------------------------------------------
class GateHistoryExplorer(Explorer):
    """See :func:`gate_history_explorer`."""

    def __init__(self, history: Any, class_names: Sequence[str], dpi: int = 72, block: str | None = None,
                 classes: Sequence[int] = (0, 3, 5)) -> None:
        from .gate_history import GateHistory

        if not isinstance(history, GateHistory):
            raise TypeError(f"history must be a seresnet.gate_history.GateHistory, got {type(history).__name__}")
        names = [str(n) for n in class_names]
        k = history[history.blocks[0]]["class_mean"].shape[1]
        if len(names) != k:
            raise ValueError(f"class_names has {len(names)} entries but the history has {k} classes")
        if block is not None and block not in history.blocks:
            raise ValueError(f"unknown block {block!r}; blocks: {', '.join(history.blocks)}")
        if not len(classes):
            raise ValueError(f"classes must name at least one class index 0..{k - 1}")
        classes = tuple(_check_index("each of classes", c, k) for c in classes)
        self.history, self.class_names = history, names
        controls = {
            "epoch": widgets.SelectionSlider(options=list(history.epochs), value=history.epochs[-1],
                                             description="epoch", continuous_update=False),
            "block": widgets.Dropdown(options=list(history.blocks), value=block or history.blocks[-1],
                                      description="SE block"),
            "classes": widgets.SelectMultiple(options=[(n, i) for i, n in enumerate(names)], value=classes,
                                              rows=min(k, 6), description="classes"),
        }
        for name, w in controls.items():
            w.add_class(f"seresnet-{name}")
        super().__init__(controls, Figure(figsize=(14.0, 4.0), layout="constrained"), dpi)
        for w in controls.values():
            w.observe(self._on_change, names="value")
        self.redraw()

    def redraw(self) -> None:
        from .plots import plot_gate_history

        epoch, block = self.controls["epoch"].value, self.controls["block"].value
        classes = list(self.controls["classes"].value)
        plot_gate_history(self.history, epoch, block, classes, self.class_names, fig=self.figure)
        e = self.history.epochs.index(epoch)
        self.state = dict(epoch=epoch, block=block, classes=classes,
                          profiles={c: self.history[block]["class_mean"][e, c].numpy() for c in classes},
                          specificity={b: float(self.history[b]["specificity"][e]) for b in self.history.blocks},
                          dead={b: int(self.history[b]["dead_hidden"][e]) for b in self.history.blocks})
        self._render()


def gate_history_explorer(history: Any, class_names: Sequence[str], *, dpi: int = 72, block: str | None = None,
                          classes: Sequence[int] = (0, 3, 5)) -> GateHistoryExplorer:
    """Watch the SE gates form during training: an epoch slider, an SE block and classes to show.

    The figure (``seresnet.plots.plot_gate_history``) shows the block's class-mean excitation profiles at the chosen
    epoch, and for every block over all epochs its class specificity and its share of dead hidden units. Everything
    comes from the recorded ``history`` (``seresnet.pretrained.pretrained_gate_history``): no model runs here.
    """
    return GateHistoryExplorer(history, class_names, dpi=dpi, block=block, classes=classes)


# --- what a channel sees ---------------------------------------------------------------------------------------------
class ChannelExplorer(Explorer):
    """See :func:`channel_explorer`."""

    def __init__(self, model: nn.Module, images: Any, labels: Any, class_names: Sequence[str], k: int = 8,
                 dpi: int = 72, block: str | None = None, channel: int = 0, cls: int = 0) -> None:
        images, labels = _check_images(images, labels)
        names = [str(n) for n in class_names]
        check_class_labels(labels, len(names))
        self.images, self.labels, self.class_names = images, labels, names
        # Checked before the four sweeps below: a slider or dropdown would clamp a bad value or fail with a TraitError
        se_blocks = resolve_blocks(model, None)
        block = block or list(se_blocks)[-2 if len(se_blocks) > 1 else 0]
        if block not in se_blocks:
            raise ValueError(f"unknown block {block!r}; blocks: {', '.join(se_blocks)}")
        _check_index(f"channel of {block}", channel, se_blocks[block].channels)
        _check_index("cls", cls, len(names))
        was_training = model.training
        model.eval()
        try:
            self._precompute(model, images, labels, len(names), k)
        finally:
            model.train(was_training)  # as the other explorers: the caller's model keeps its mode
        self.model_runs = 4
        blocks = list(self.examples)

        controls = {
            "block": widgets.Dropdown(options=blocks, value=block, description="SE block"),
            "channel": widgets.IntSlider(min=0, max=self.examples[block].top_s.shape[0] - 1, value=channel,
                                         description="channel", continuous_update=False),
            "class": widgets.Dropdown(options=[(n, i) for i, n in enumerate(names)], value=cls, description="class"),
        }
        for name, w in controls.items():
            w.add_class(f"seresnet-{name}")
        self.k = min(k, self.examples[block].top_s.shape[1])
        fig = Figure(figsize=(13.0, 5.2))
        grid = fig.add_gridspec(2, self.k, height_ratios=[1.0, 1.6], left=0.04, right=0.99, top=0.84, bottom=0.14,
                                hspace=0.45)
        self._strip = [fig.add_subplot(grid[0, j]) for j in range(self.k)]
        bottom = grid[1, :].subgridspec(1, 3, width_ratios=[1.0, 2.0, 2.0], wspace=0.3)
        self._ax_map, self._ax_mean, self._ax_attr = (fig.add_subplot(bottom[0, j]) for j in range(3))
        for ax in (*self._strip, self._ax_map):
            ax.set_xticks([])
            ax.set_yticks([])
        super().__init__(controls, fig, dpi)
        controls["block"].observe(self._on_block, names="value")
        for key in ("channel", "class"):
            controls[key].observe(self._on_change, names="value")
        self.redraw()

    def _on_block(self, change: dict[str, Any]) -> None:
        self._busy = True
        try:
            self.controls["channel"].max = self.examples[change["new"]].top_s.shape[0] - 1
        finally:
            self._busy = False
        self.redraw()

    def _build_artists(self) -> None:
        """Create every artist once; redraws only change their data (``ax.clear()`` and new artists cost most of
        a redraw: ticks and text are rebuilt each time)."""
        blank = np.zeros((self.images.shape[-2], self.images.shape[-1], 3))
        self._strip_images = [ax.imshow(blank, interpolation="nearest") for ax in self._strip]
        self._strip_titles = [ax.set_title("", fontsize="small") for ax in self._strip]
        self._map_image = self._ax_map.imshow(blank, interpolation="nearest")
        self._map_overlay = self._ax_map.imshow(blank[..., 0], cmap="RdBu_r", alpha=0.6)
        self._map_title = self._ax_map.set_title("", fontsize="small")
        x = np.arange(len(self.class_names))
        self._bars = {}
        for key, ax, ylabel in (("mean", self._ax_mean, "mean s_c"),
                                ("attr", self._ax_attr, "mean d logit_y / d s_c * s_c")):
            self._bars[key] = ax.bar(x, np.zeros(len(x)), color="#7da7d9")
            ax.set_xticks(x, self.class_names, rotation=30, ha="right", fontsize="small")
            ax.set_ylabel(ylabel, fontsize="small")
            ax.axhline(0, color="black", lw=0.8)
            ax.grid(alpha=0.3, axis="y")
        self._ax_attr.set_title("gradient x excitation on the true logit, per class", fontsize="medium")
        self._mean_title = self._ax_mean.set_title("", fontsize="medium")

    def _precompute(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                    k: int) -> None:
        """Everything the views need, computed once: top images, class means, attribution, each channel's map on
        its top image. A change of block, channel or class only redraws."""
        from . import channels
        from .data import TensorBatches
        from .hooks import excitation_stats

        self.examples = channels.channel_examples(model, images, None, k=k)
        self.stats = excitation_stats(model, TensorBatches(images, labels, 250), num_classes=num_classes)
        self.attribution = channels.gate_attribution_all(model, images, labels, num_classes=num_classes)
        self.maps: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        with torch.no_grad():
            for b in self.examples:
                top1 = self.examples[b].top_s[:, 0]
                uniq = top1.unique()
                with capture(model, b, features=True) as cap:
                    model(_default_normalize()(images[uniq]))
                row = {int(i): r for r, i in enumerate(uniq.tolist())}
                where = torch.tensor([row[int(i)] for i in top1])
                chans = torch.arange(len(top1))
                self.maps[b] = (cap.inputs[b][where, chans], channels.per_channel(cap.excitation[b])[where, chans])

    def redraw(self) -> None:
        block, c, cls = self.controls["block"].value, self.controls["channel"].value, self.controls["class"].value
        if not hasattr(self, "_bars"):
            self._build_artists()
        ex = self.examples[block]
        for j in range(self.k):
            i = int(ex.top_s[c, j])
            self._strip_images[j].set_data(_to_display(self.images[i]))
            self._strip_titles[j].set_text(
                f"s={float(ex.top_s_values[c, j]):.2f}\n{self.class_names[int(self.labels[i])]}")
        u, s = self.maps[block]
        top = int(ex.top_s[c, 0])
        size = tuple(self.images.shape[-2:])  # (H, W): a non-square image keeps its aspect
        up = nn.functional.interpolate(u[c][None, None].float(), size=size, mode="bilinear",
                                       align_corners=False)[0, 0].numpy()
        lim = float(np.abs(up).max()) or 1.0
        self._map_image.set_data(_to_display(self.images[top]))
        self._map_overlay.set_data(up)
        self._map_overlay.set_clim(-lim, lim)
        self._map_title.set_text(f"u_{c} on the top image\n(s = {float(s[c]):.2f})")
        means = self.stats.mean[block][:, c].numpy()
        attribution = self.attribution[block][:, c].numpy()
        for key, values in (("mean", means), ("attr", attribution)):
            for k, bar in enumerate(self._bars[key]):
                bar.set_height(float(values[k]))  # NaN (a class with no images) draws no bar
                bar.set_color("#d62728" if k == cls else "#7da7d9")
        self._mean_title.set_text(f"{block} channel {c}: mean excitation per class")
        # sigmoid gates live in [0, 1]; other gates (GC's added context, ReLU) may leave it, so the axis follows them
        low, high = float(np.nanmin(means)), float(np.nanmax(means))
        self._ax_mean.set_ylim(low - 0.05 if low < 0 else max(0.0, low - 0.05),
                               high + 0.05 if high > 1 else min(1.0, high + 0.05))
        lo, hi = float(np.nanmin(attribution)), float(np.nanmax(attribution))
        pad = 0.08 * max(hi - lo, abs(hi), abs(lo), 1e-6)
        self._ax_attr.set_ylim(min(lo, 0.0) - pad, max(hi, 0.0) + pad)
        self.figure.suptitle(f"{block} channel {c}: the {self.k} images with the highest excitation", fontsize="medium")
        self.state = dict(block=block, channel=c, cls=cls, top=ex.top_s[c, :self.k].tolist(), class_means=means,
                          attribution=attribution, map=up)
        self._render()


def channel_explorer(model: nn.Module, images: Any, labels: Any, class_names: Sequence[str], *, k: int = 8,
                     dpi: int = 72, block: str | None = None, channel: int = 0, cls: int = 0) -> ChannelExplorer:
    """What one channel sees: SE block and channel pickers and a class picker. The figure shows the ``k`` images
    that excite the channel most, its feature map over the top one, its class-mean excitation per class and its
    gradient x excitation attribution per class (the chosen class in red). Everything is computed once, here
    (``seresnet.channels``); changing the view never reruns the model."""
    return ChannelExplorer(model, images, labels, class_names, k=k, dpi=dpi, block=block, channel=channel, cls=cls)
