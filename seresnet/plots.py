"""Matplotlib figures for the SE analysis: excitation profiles (paper Fig. 6), class x channel heat maps, squeeze vs
excitation, feature maps before/after scaling, per-block trends and class probabilities.

Every function returns a ``matplotlib.figure.Figure``. New figures are made with ``Figure()`` rather than pyplot, so
they are not registered with pyplot: nothing accumulates in pyplot's figure list when plotting in a loop, and a
notebook shows each figure once. In a notebook, end the cell with the call (or ``display(fig)``) to show the figure;
``plt.show()`` does not know these figures. (Inside IPython the first new figure registers a PNG formatter for
``Figure``, so this works even if pyplot was never imported.) Pass ``ax`` / ``fig`` to draw into an existing figure
(e.g. one made with ``plt.subplots``, or a widget's persistent figure); ``fig`` is cleared first.
"""

from __future__ import annotations

import fnmatch
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .hooks import ExcitationStats

__all__ = [
    "plot_attention_study",
    "plot_attribution_check",
    "plot_block_trend",
    "plot_channel_examples",
    "plot_channel_on_image",
    "plot_class_channel_heatmap",
    "plot_class_probabilities",
    "plot_excitation_profiles",
    "plot_feature_maps",
    "plot_gate_history",
    "plot_squeeze_vs_excitation",
]

ALL_COLOR = "black"


def _np(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a tensor or array of numbers, got {type(x).__name__}") from None


def _names(class_names: Sequence[str] | None, k: int) -> list[str]:
    if class_names is None:
        return [f"class {i}" for i in range(k)]
    names = list(class_names)
    if len(names) != k:
        raise ValueError(f"class_names has {len(names)} entries but there are {k} classes")
    return [str(n) for n in names]


def _check_stats(stats: Any) -> ExcitationStats:
    if not isinstance(stats, ExcitationStats):
        raise TypeError(f"expected ExcitationStats (from seresnet.hooks.excitation_stats), got {type(stats).__name__}")
    return stats


def _labels(labels: Any, n: int, k: int) -> np.ndarray:
    """``labels`` as n integer class indices in 0..k-1, or a ValueError (floats are not truncated, -1 does not name
    the last class)."""
    from .data import check_class_labels

    lab = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if lab.shape != (n,):
        raise ValueError(f"labels must be {n} class indices, got shape {lab.shape}")
    check_class_labels(lab, k)
    return lab.astype(int)


def _stat_blocks(stats: ExcitationStats, blocks: str | Sequence[str] | None) -> list[str]:
    if blocks is None:
        return list(stats.block_names)
    patterns = [blocks] if isinstance(blocks, str) else list(blocks)
    if not patterns:
        raise ValueError(f"no block chosen; blocks: {', '.join(stats.block_names)}")
    chosen = set()
    for p in patterns:
        hits = [n for n in stats.block_names if fnmatch.fnmatchcase(n, p)]
        if not hits:
            raise ValueError(f"no block in the statistics matches {p!r}; blocks: {', '.join(stats.block_names)}")
        chosen.update(hits)
    return [n for n in stats.block_names if n in chosen]


def _class_indices(classes: Sequence[int | str] | int | str | None, names: list[str], k: int) -> list[int]:
    if classes is None:
        return list(range(k))
    if isinstance(classes, (int, str)):
        classes = [classes]
    out = []
    for c in classes:
        if isinstance(c, str):
            if c not in names:
                raise ValueError(f"unknown class {c!r}; classes: {', '.join(names)}")
            out.append(names.index(c))
        elif isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c < k:
            out.append(int(c))
        else:
            raise ValueError(f"class {c!r} is not an index in 0..{k - 1} or a class name")
    return out


def _figure_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _enable_notebook_display() -> None:
    """Let IPython show a returned ``Figure`` as PNG even when no pyplot backend registered a formatter yet."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    png = shell.display_formatter.formatters["image/png"]
    try:
        png.lookup_by_type(Figure)  # the inline backend (or an earlier call) already handles figures
    except KeyError:
        png.for_type(Figure, _figure_png)


def _new_figure(figsize: tuple[float, float]) -> Figure:
    _enable_notebook_display()
    return Figure(figsize=figsize, layout="constrained")


def _fresh_figure(fig: Figure | None, figsize: tuple[float, float]) -> Figure:
    if fig is None:
        return _new_figure(figsize)
    fig.clear()
    return fig


def _ax_or_new(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = _new_figure(figsize)
    return fig, fig.add_subplot()


def _excitation_ylim(ax: Axes, values: np.ndarray) -> None:
    finite = values[np.isfinite(values)]
    lo = min(0.0, float(finite.min())) if finite.size else 0.0
    hi = max(1.0, float(finite.max())) if finite.size else 1.0
    pad = 0.03 * (hi - lo)
    ax.set_ylim(lo - pad, hi + pad)


def plot_excitation_profiles(
    stats: ExcitationStats,
    blocks: str | Sequence[str],
    classes: Sequence[int | str] | None,
    class_names: Sequence[str] | None = None,
    include_all: bool = True,
    fig: Figure | None = None,
    ncols: int | None = None,
) -> Figure:
    """The paper's Fig. 6: one panel per block, channel index on x, mean excitation on y.

    One line per class in ``classes`` (indices or names; ``None`` = all) and, with ``include_all``, a black dashed
    line for the mean over all images. ``blocks`` may be names or globs. Lines are in the order: classes, then all.
    """
    stats = _check_stats(stats)
    names = _names(class_names, stats.num_classes)
    block_list = _stat_blocks(stats, blocks)
    cls = _class_indices(classes, names, stats.num_classes)
    if not cls and not include_all:
        raise ValueError("nothing to plot: no classes chosen and include_all=False")
    n = len(block_list)
    ncols = ncols or min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = _fresh_figure(fig, (4.3 * ncols, 3.2 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colors = [f"C{i % 10}" for i in range(len(cls))]
    for ax, block in zip(axes, block_list):
        means = stats.mean[block].numpy()
        x = np.arange(means.shape[1])
        for color, k in zip(colors, cls):
            ax.plot(x, means[k], color=color, lw=1.0, label=names[k])
        shown = [means[k] for k in cls]
        if include_all:
            overall = stats.overall_mean[block].numpy()
            ax.plot(x, overall, color=ALL_COLOR, lw=1.6, ls="--", label="all classes")
            shown.append(overall)
        _excitation_ylim(ax, np.concatenate(shown))
        ax.set_xlim(-0.5, len(x) - 0.5)
        ax.set_title(f"{block} ({len(x)} channels)")
        ax.set_xlabel("channel index")
        ax.set_ylabel("mean excitation s")
        ax.grid(alpha=0.3)
    for ax in axes[n:]:
        ax.remove()
    axes[0].legend(fontsize="small", loc="best", ncols=1 if len(cls) < 6 else 2)
    fig.suptitle(f"Mean excitation per channel by class ({stats.num_images} images)")
    return fig


def plot_class_channel_heatmap(
    stats: ExcitationStats,
    block: str,
    class_names: Sequence[str] | None = None,
    ax: Axes | None = None,
    sort_channels: bool = False,
    cmap: str = "viridis",
) -> Figure:
    """Heat map of the mean excitation of ``block``: classes on y, channels on x (K x C image).

    ``sort_channels`` orders channels by their mean over all images (easier to see class differences).
    """
    stats = _check_stats(stats)
    if block not in stats.block_names:
        raise ValueError(f"no statistics for block {block!r}; blocks: {', '.join(stats.block_names)}")
    names = _names(class_names, stats.num_classes)
    means = stats.mean[block].numpy()
    if sort_channels:
        means = means[:, np.argsort(stats.overall_mean[block].numpy())]
    fig, ax = _ax_or_new(ax, (max(5.0, min(14.0, 0.09 * means.shape[1] + 3)), 0.3 * len(names) + 1.8))
    im = ax.imshow(means, aspect="auto", interpolation="nearest", cmap=cmap)
    fig.colorbar(im, ax=ax, label="mean excitation s")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("channel (sorted by overall mean excitation)" if sort_channels else "channel index")
    ax.set_ylabel("class")
    ax.set_title(f"{block}: mean excitation per class and channel")
    return fig


def plot_squeeze_vs_excitation(
    z: torch.Tensor | np.ndarray,
    s: torch.Tensor | np.ndarray,
    ax: Axes | None = None,
    labels: torch.Tensor | np.ndarray | Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    channels: Sequence[int] | None = None,
    block: str | None = None,
) -> Figure:
    """Scatter of squeeze ``z`` (N, C) against excitation ``s`` (N, C) of one block: one point per image and channel.

    ``labels`` (N,) colours the points by class (with a legend); ``channels`` restricts to some channels.
    Points are plotted image by image, channel by channel (row-major order of the (N, C) arrays).
    """
    z_np, s_np = _np(z, "z"), _np(s, "s")
    if z_np.ndim != 2 or z_np.shape != s_np.shape:
        raise ValueError(f"z and s must both have shape (N, C), got {z_np.shape} and {s_np.shape}")
    if channels is not None:
        idx = list(channels)
        if any(not 0 <= c < z_np.shape[1] for c in idx):
            raise ValueError(f"channels must lie in 0..{z_np.shape[1] - 1}, got {idx}")
        z_np, s_np = z_np[:, idx], s_np[:, idx]
    fig, ax = _ax_or_new(ax, (5.0, 4.0))
    kw = dict(s=6, alpha=0.5, linewidths=0, rasterized=True)
    if labels is None:
        ax.scatter(z_np.ravel(), s_np.ravel(), color="C0", **kw)
    else:
        raw = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
        k = (int(raw.max()) + 1 if raw.size and raw.dtype.kind in "iu" else 1) if class_names is None \
            else len(class_names)
        lab = _labels(raw, z_np.shape[0], k)
        names = _names(class_names, k)
        for c in np.unique(lab):
            sel = lab == c
            ax.scatter(z_np[sel].ravel(), s_np[sel].ravel(), color=f"C{c % 10}", label=names[c], **kw)
        ax.legend(fontsize="small", markerscale=2)
    ax.set_xlabel("squeeze z (global pooled channel response)")
    ax.set_ylabel("excitation s")
    ax.set_title(f"Squeeze vs excitation{f' at {block}' if block else ''}")
    ax.grid(alpha=0.3)
    return fig


def plot_feature_maps(
    before: torch.Tensor | np.ndarray,
    after: torch.Tensor | np.ndarray,
    channels: Sequence[int],
    s: torch.Tensor | np.ndarray | None = None,
    fig: Figure | None = None,
    title: str | None = None,
) -> Figure:
    """One image's feature maps before (``U``, top row) and after (``s * U``, bottom row) SE scaling.

    ``before`` and ``after`` are (C, H, W); ``channels`` picks the columns. Each column shares one colour scale
    so the scaling shows as a change in intensity, and is annotated with that channel's ``s``; without ``s`` the
    factor is estimated by least squares from the two maps (shown as ``s ~``).
    """
    u, v = _np(before, "before"), _np(after, "after")
    if u.ndim != 3 or u.shape != v.shape:
        raise ValueError(f"before and after must both have shape (C, H, W), got {u.shape} and {v.shape}")
    chans = [channels] if isinstance(channels, int) else list(channels)
    if not chans or any(isinstance(c, bool) or not 0 <= c < u.shape[0] for c in chans):
        raise ValueError(f"channels must be a non-empty list of indices in 0..{u.shape[0] - 1}, got {channels!r}")
    if s is not None:
        s_np = _np(s, "s").ravel()
        if s_np.shape != (u.shape[0],):
            raise ValueError(f"s must have shape ({u.shape[0]},), got {s_np.shape}")
        estimated = False
    else:
        denom = (u * u).sum(axis=(1, 2))
        s_np = np.where(denom > 0, (u * v).sum(axis=(1, 2)) / np.where(denom > 0, denom, 1), np.nan)
        estimated = True
    n = len(chans)
    fig = _fresh_figure(fig, (1.9 * n + 0.8, 4.2))
    axes = fig.subplots(2, n, squeeze=False)
    for j, c in enumerate(chans):
        lim = max(float(np.abs(u[c]).max()), float(np.abs(v[c]).max()), 1e-12)
        nonneg = float(u[c].min()) >= 0 and float(v[c].min()) >= 0
        cmap, vmin = ("magma", 0.0) if nonneg else ("RdBu_r", -lim)
        for i, img in enumerate((u[c], v[c])):
            ax = axes[i, j]
            ax.imshow(img, cmap=cmap, vmin=vmin, vmax=lim, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, j].set_title(f"channel {c}\ns {'~' if estimated else '='} {s_np[c]:.2f}", fontsize="medium")
    axes[0, 0].set_ylabel("before SE: U")
    axes[1, 0].set_ylabel("after SE: s * U")
    fig.suptitle(title or "Feature maps before and after SE scaling (colour scale shared per column)")
    return fig


def plot_block_trend(stats: ExcitationStats, fig: Figure | None = None, normalize: bool = False) -> Figure:
    """Class specificity (top) and saturation (bottom: fraction of ``s`` below ``low`` / above ``high``) per block,
    early to late, with the stage boundaries marked. ``normalize`` uses the variance-explained specificity."""
    stats = _check_stats(stats)
    blocks = stats.block_names
    spec = stats.class_specificity(normalize=normalize)
    sat = stats.saturation()
    x = np.arange(len(blocks))
    fig = _fresh_figure(fig, (max(6.0, 0.5 * len(blocks) + 2.5), 5.5))
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    ax1.plot(x, [spec[b] for b in blocks], "o-", color="C3", label="class specificity")
    ax1.set_ylabel("fraction of variance\nexplained by class" if normalize else "std across classes\nof mean s")
    ax1.set_ylim(bottom=0)
    ax1.set_title("Class specificity of the excitation, early to late blocks")
    ax2.plot(x, [sat[b][0] for b in blocks], "v-", color="C0", label=f"s < {stats.low:g}")
    ax2.plot(x, [sat[b][1] for b in blocks], "^-", color="C1", label=f"s > {stats.high:g}")
    ax2.set_ylabel("fraction of values")
    ax2.set_ylim(-0.03, 1.03)
    ax2.set_title("Saturation of the excitation")
    ax2.legend(fontsize="small")
    ax2.set_xticks(x, blocks, rotation=90)
    ax2.set_xlabel("SE block")
    # Mark where a new stage starts (paper names SE_<stage>_<block>).
    stages = [b.split("_")[1] if b.startswith("SE_") and b.count("_") == 2 else None for b in blocks]
    for i in range(1, len(blocks)):
        if stages[i] != stages[i - 1]:
            for ax in (ax1, ax2):
                ax.axvline(i - 0.5, color="0.6", lw=0.8, ls=":")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3, axis="y")
    return fig


def plot_class_probabilities(
    probs: torch.Tensor | np.ndarray | Sequence[float],
    class_names: Sequence[str],
    ax: Axes | None = None,
    reference: torch.Tensor | np.ndarray | Sequence[float] | None = None,
    label: str = "steered",
    reference_label: str = "original",
    title: str | None = None,
) -> Figure:
    """Bar chart of predicted class probabilities (K,); with ``reference`` (K,) the two sets of bars side by side.

    The bar containers carry their labels (``ax.containers``), so their heights can be read back.
    """
    p = _np(probs, "probs").ravel()
    names = _names(class_names, p.shape[0])
    for what, values in (("probs", p), ("reference", None if reference is None else _np(reference, "reference"))):
        if values is not None and values.size and not (values.min() >= -1e-6 and values.max() <= 1 + 1e-6):
            raise ValueError(f"{what} must be probabilities in 0..1, got values from {values.min():.3g} to "
                             f"{values.max():.3g}: logits? pass logits.softmax(-1)")
    fig, ax = _ax_or_new(ax, (max(4.5, 0.55 * len(names) + 1.5), 3.4))
    x = np.arange(len(names))
    if reference is None:
        ax.bar(x, p, width=0.7, color="C0", label=label)
    else:
        r = _np(reference, "reference").ravel()
        if r.shape != p.shape:
            raise ValueError(f"reference must have shape {p.shape} like probs, got {r.shape}")
        ax.bar(x - 0.2, r, width=0.4, color="0.65", label=reference_label)
        ax.bar(x + 0.2, p, width=0.4, color="C0", label=label)
        ax.legend(fontsize="small")
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("probability")
    ax.set_xlabel("class")
    ax.set_title(title or "Predicted class probabilities")
    ax.grid(alpha=0.3, axis="y")
    return fig


def plot_gate_history(history: Any, epoch: int | None = None, block: str | None = None,
                      classes: Sequence[int | str] = (0, 3, 5), class_names: Sequence[str] | None = None,
                      fig: Figure | None = None) -> Figure:
    """The excitations' history (``seresnet.gate_history.GateHistory``) at one epoch, and the gates' health over
    training.

    Left: the class-mean excitation per channel of ``block`` at ``epoch`` for ``classes``, and the mean over all
    classes (dashed). Middle: class specificity per block and epoch (the share of the excitation's variance between
    classes); grey cells are undefined (the excitation did not vary at all). Right: the share of each block's hidden
    ReLU units that no probe image activates. A vertical line marks ``epoch`` in both maps.
    """
    from matplotlib import colormaps

    epochs, blocks = list(history.epochs), list(history.blocks)
    epoch = epochs[-1] if epoch is None else int(epoch)
    if epoch not in epochs:
        raise ValueError(f"epoch {epoch} is not recorded; epochs: {epochs[0]}..{epochs[-1]}")
    block = blocks[-1] if block is None else block
    if block not in blocks:
        raise ValueError(f"no SE block {block!r}; blocks: {', '.join(blocks)}")
    e = epochs.index(epoch)
    means = _np(history[block]["class_mean"][e], "class_mean")  # (K, C)
    names = _names(class_names, means.shape[0])
    classes = _class_indices(classes, names, means.shape[0])  # indices or names
    fig = _fresh_figure(fig, (14.0, 4.0))
    ax_prof, ax_spec, ax_dead = fig.subplots(1, 3, gridspec_kw=dict(width_ratios=[2.2, 1.4, 1.4]))
    x = np.arange(means.shape[1])
    for k in classes:
        ax_prof.plot(x, means[k], lw=1.1, color=f"C{k % 10}", label=names[k])
    present = np.isfinite(means).all(1)  # classes with probe images (an absent class has NaN means)
    ax_prof.plot(x, means[present].mean(0), lw=1.6, ls="--", color=ALL_COLOR, label="all classes")
    ax_prof.set_title(f"{block} at epoch {epoch}: mean excitation per channel")
    ax_prof.set_xlabel("channel index")
    ax_prof.set_ylabel("mean excitation s")
    ax_prof.set_xlim(-0.5, means.shape[1] - 0.5)
    _excitation_ylim(ax_prof, means)
    ax_prof.grid(alpha=0.3)
    ax_prof.legend(fontsize="small", ncols=2 if len(classes) > 4 else 1)

    spec = np.stack([_np(history[b]["specificity"], "specificity") for b in blocks])  # (B, E)
    dead = np.stack([_np(history[b]["dead_hidden"], "dead_hidden") / history.hidden[b] for b in blocks])
    extent = (epochs[0] - 0.5, epochs[-1] + 0.5, len(blocks) - 0.5, -0.5)
    viridis = colormaps["viridis"].with_extremes(bad="lightgrey")  # a copy: the registered map stays as it is
    for ax, values, title, vmax in ((ax_spec, spec, "class specificity (grey: undefined)", None),
                                    (ax_dead, dead, "share of hidden units dead", 1.0)):
        im = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap=viridis, extent=extent, vmin=0,
                       vmax=vmax if vmax is not None else max(0.05, float(np.nanmax(values, initial=0.0))),
                       interpolation="nearest")
        ax.axvline(epoch, color="red", lw=1.2)
        ax.set_yticks(range(len(blocks)), blocks)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        fig.colorbar(im, ax=ax, shrink=0.85)
    return fig


def plot_channel_examples(images: torch.Tensor, examples: Any, channel: int, k: int = 8,
                          class_names: Sequence[str] | None = None, labels: torch.Tensor | None = None,
                          fig: Figure | None = None) -> Figure:
    """The ``k`` images that excite one channel most (top row) and least (bottom row), with their excitation
    ``s_c`` (``examples``: a ``seresnet.channels.ChannelExamples`` computed on ``images``)."""
    width = len(examples.top_s)
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or not 0 <= channel < width:
        raise ValueError(f"channel must be an integer in 0..{width - 1} ({examples.block}), got {channel!r}")
    rows = (("highest", examples.top_s[channel][:k], examples.top_s_values[channel][:k]),
            ("lowest", examples.bottom_s[channel][:k], examples.bottom_s_values[channel][:k]))
    k = min(k, len(rows[0][1]))
    fig = _fresh_figure(fig, (1.3 * k, 3.3))
    axes = fig.subplots(2, k, squeeze=False)
    for r, (what, idx, vals) in enumerate(rows):
        for j in range(k):
            ax = axes[r, j]
            i = int(idx[j])
            ax.imshow(images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
            name = f"\n{class_names[int(labels[i])]}" if class_names is not None and labels is not None else ""
            ax.set_title(f"s={float(vals[j]):.2f}{name}", fontsize="small")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(f"{what} s", fontsize="small")
    fig.suptitle(f"{examples.block} channel {channel}: the images with the highest and lowest excitation")
    return fig


def plot_channel_on_image(image: torch.Tensor, before: torch.Tensor, after: torch.Tensor, s: float | None = None,
                          title: str | None = None, fig: Figure | None = None,
                          panel_titles: tuple[str, str] | None = None) -> Figure:
    """One channel's feature map over the image it came from: before the SE scaling (``u_c``) and after
    (``s_c u_c``), upsampled to the image size, on one colour scale, so that the scaling shows as fading. Any
    pair of maps of one block (e.g. Grad-CAM before and after the scaling) can be drawn with ``panel_titles``."""
    img = image.permute(1, 2, 0).numpy()
    size = tuple(image.shape[-2:])  # (H, W): a non-square image keeps its aspect
    up = torch.nn.functional.interpolate(torch.stack([before, after])[:, None].float(), size=size,
                                         mode="bilinear", align_corners=False)[:, 0].numpy()
    lim = float(np.abs(up).max()) or 1.0
    fig = _fresh_figure(fig, (8.4, 3.0))
    axes = fig.subplots(1, 3)
    axes[0].imshow(img, interpolation="nearest")
    axes[0].set_title("image")
    titles = panel_titles or ("before: u_c", "after: s_c u_c" + (f" (s_c = {s:.2f})" if s is not None else ""))
    for ax, m, what in ((axes[1], up[0], titles[0]), (axes[2], up[1], titles[1])):
        ax.imshow(img, interpolation="nearest")
        im = ax.imshow(m, cmap="RdBu_r", alpha=0.6, vmin=-lim, vmax=lim)
        ax.set_title(what)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[1:], shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig


def plot_attribution_check(estimate: Any, exact: Any, class_names: Sequence[str] | None = None,
                           title: str | None = None, ax: Axes | None = None) -> Figure:
    """Per class: the linear estimate of a gate edit's effect on the true class's logit (gradient x change) next
    to the exact effect measured by making the edit."""
    est, ex = _np(estimate, "estimate"), _np(exact, "exact")
    names = _names(class_names, len(est))
    fig, ax = _ax_or_new(ax, (8.0, 3.2))
    x = np.arange(len(est))
    ax.bar(x - 0.2, est, width=0.4, label="gradient estimate", color="#7da7d9")
    ax.bar(x + 0.2, ex, width=0.4, label="exact edit", color="#f4a259")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("change of the true class's logit")
    ax.set_title(title or "Gate edit: linear estimate vs exact effect, mean per class")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize="small")
    return fig


def draw_paired_difference(ax: Axes, y: float, per_seed: Sequence[float], mean: float,
                           ci95: Sequence[float] | None, ci_all: Sequence[float] | None = None) -> None:
    """One row of a paired-by-seed comparison at height ``y``: each seed's difference (blue dots), the mean with
    its 95% interval (black), or a hollow marker where the interval is undefined (below two seeds); with
    ``ci_all``, the wider interval that holds for a whole table at once, as a thin grey bar behind."""
    if ci_all is not None:
        ax.plot(ci_all, [y, y], color="0.6", lw=1.0, marker="|", markersize=9, zorder=1)
    ax.scatter(per_seed, [y] * len(per_seed), s=14, color="#7da7d9", zorder=2)
    if ci95 is None:
        ax.scatter([mean], [y], s=55, facecolors="none", edgecolors="black", zorder=3)
    else:
        ax.errorbar(mean, y, xerr=[[mean - ci95[0]], [ci95[1] - mean]], fmt="o", color="black", capsize=3, zorder=3)


def plot_attention_study(study: dict[str, Any], set_name: str = "val", reference: str = "resnet20",
                         train_ratio: dict[str, float] | None = None, models: Sequence[str] | None = None,
                         fig: Figure | None = None) -> Figure:
    """The attention family against ``reference``: each model's accuracy on ``set_name`` minus the reference's,
    paired by seed (mean, a dot per seed and the t 95% interval over seeds; a hollow marker where the interval is
    undefined, below two seeds; in grey the interval that holds for all the models shown at once, as
    :func:`seresnet.study.paired_table` computes it), and, when ``train_ratio`` (model -> training time / plain) is
    given, what each costs in training time beside it. ``study``: the JSON that ``scripts/attention_study.py``
    writes; ``models``: which of its models to show (default all)."""
    from .study import paired_table

    if set_name not in study.get("summary", {}):
        raise ValueError(f"the study has no results on {set_name!r}; it has {sorted(study.get('summary', {}))}")
    requested = [m for m in (study["models"] if models is None else models) if m != reference]
    # the number of comparisons is fixed by what was asked for, not by which runs have finished
    rows = [r for r in paired_table(study, requested, reference, set_name, comparisons=len(requested))
            if r["d_acc"] is not None]
    if not rows:
        raise ValueError(f"no model has a finished run paired with {reference!r} on {set_name!r} yet")
    rows.sort(key=lambda r: r["d_acc"])
    models = [r["model"] for r in rows]
    fig = _fresh_figure(fig, (11.0, 0.45 * len(models) + 1.8))
    grid = fig.add_gridspec(1, 2 if train_ratio else 1, width_ratios=[2.2, 1.0] if train_ratio else [1.0])
    ax = fig.add_subplot(grid[0, 0])
    y = np.arange(len(models))
    for i, r in enumerate(rows):
        draw_paired_difference(ax, i, r["per_seed"], r["d_acc"], r["ci95"], r["ci_all"])
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(y, [f"{r['model']}  ({r['seeds']} seed{'' if r['seeds'] == 1 else 's'})" for r in rows])
    ax.set_xlabel(f"accuracy minus {reference} on {dict(val='validation').get(set_name, set_name)} (points)")
    ax.set_title(f"Paired by seed: mean (black) with its 95% t-interval, each seed (blue)\ngrey: the interval that "
                 f"holds for all {len(requested)} models at once"
                 + ("; hollow = interval undefined" if any(r["ci95"] is None for r in rows) else ""),
                 fontsize="medium")
    ax.grid(alpha=0.3, axis="x")
    if train_ratio:
        ax2 = fig.add_subplot(grid[0, 1], sharey=ax)
        ratios = [train_ratio.get(m, np.nan) for m in models]
        ax2.barh(y, ratios, color="#bbbbbb")
        ax2.axvline(1.0, color="grey", lw=0.8)
        ax2.set_xlabel(f"training time / {reference}")
        ax2.set_title("cost (benchmark)", fontsize="medium")
        ax2.tick_params(labelleft=False)
        for i, r in enumerate(ratios):
            if np.isfinite(r):
                ax2.text(r, i, f" {r:.2f}x", va="center", fontsize="small")
        ax2.set_xlim(0, max([r for r in ratios if np.isfinite(r)] + [1.0]) * 1.25)
    return fig
