"""What a channel sees: dataset examples per channel, attribution through the SE gates, excitation patching,
Grad-CAM before and after recalibration, and any image of your own.

* ``load_image(path_or_array)``: a photo as the uint8 (3, 32, 32) CIFAR input (shorter side resized, centre crop).
* ``channel_examples(model, images)``: per SE block and channel, the images with the highest and lowest excitation
  ``s_c`` and the highest squeeze ``z_c``, from one pass in constant memory per channel (a running top-k).
* ``gate_attribution(model, images, labels, block)``: per class and channel, the mean over the images of that class
  of ``d logit_y / d s_c * s_c`` (gradient x excitation), and ``gate_edit_effect`` the exact effect of setting
  ``s_c`` to 1 or to its mean, to check the linear estimate against.
* ``patch_excitations(model, images, excitations)``: run images with the excitations of other images (or of a class
  mean) at some blocks, the causal counterpart of comparing excitation statistics.
* ``grad_cam(model, images, block, classes)``: where the evidence for a class sits in a block's feature map, before
  (``U``) or after (``s * U``) the SE scaling.

Models run in eval mode (BN with running statistics: every image is independent of the others in its batch).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from . import hooks
from .data import EIGHT_BIT_MODES, check_class_labels, normalize
from .se import SEBlock

__all__ = ["ChannelExamples", "channel_examples", "gate_attribution", "gate_attribution_all", "gate_edit_effect",
           "grad_cam", "largest_class_lift", "load_image", "patch_excitations"]


def load_image(source: str | os.PathLike | np.ndarray | torch.Tensor | Any, size: int = 32) -> torch.Tensor:
    """An image as a uint8 tensor (3, ``size``, ``size``): a file path, a PIL image, or an (H, W, 3) / (3, H, W)
    uint8 array. The shorter side is resized to ``size`` (bilinear) and the centre cropped, as photos are rarely
    square; the model's own normalisation is applied later by ``seresnet.data.normalize``."""
    from PIL import Image

    def eight_bit_rgb(im: Image.Image, what: str) -> Image.Image:
        if im.mode not in EIGHT_BIT_MODES:  # PIL's convert("RGB") clips 16-bit and float pixels, mostly to white
            raise ValueError(f"{what} has pixel mode {im.mode!r}; expected an 8-bit image (RGB, grey or palette): "
                             f"scale it to 0..255 and save or convert it as 8-bit first")
        return im.convert("RGB")

    if isinstance(source, (str, os.PathLike)):
        try:
            with Image.open(source) as im:
                im.load()
                opened = im
        except FileNotFoundError:
            raise FileNotFoundError(f"no image at {source}") from None
        except Exception as exc:
            raise ValueError(f"cannot read {source} as an image (expected a PNG, JPEG or another format PIL "
                             f"reads): {exc}") from exc
        img = eight_bit_rgb(opened, str(source))
    elif isinstance(source, Image.Image):
        img = eight_bit_rgb(source, "the image")
    elif isinstance(source, (np.ndarray, torch.Tensor)):
        arr = source.numpy() if isinstance(source, torch.Tensor) else source
        if arr.dtype != np.uint8:
            raise TypeError(f"expected a uint8 array with values 0..255, got {arr.dtype}; convert floats in 0..1 "
                            f"with (a * 255).round().astype(np.uint8)")
        if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[2] != 3:
            arr = arr.transpose(1, 2, 0)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) or (3, H, W) RGB array, got shape {arr.shape}")
        img = Image.fromarray(np.ascontiguousarray(arr))
    else:
        raise TypeError(f"expected a path, a PIL image or a uint8 array, got {type(source).__name__}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()


@dataclass
class ChannelExamples:
    """For one SE block: per channel (rows), the ``k`` image indices (and values) with the highest excitation, the
    lowest excitation, and the highest squeeze, in decreasing order of the value (increasing for the lowest)."""

    block: str
    top_s: torch.Tensor
    top_s_values: torch.Tensor
    bottom_s: torch.Tensor
    bottom_s_values: torch.Tensor
    top_z: torch.Tensor
    top_z_values: torch.Tensor


def _merge_topk(best: tuple[torch.Tensor, torch.Tensor] | None, values: torch.Tensor, index: torch.Tensor, k: int,
                largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Running top-k per row: the kept (values, indices) (C, <=k) and a new batch (C, B) -> the new best k."""
    if best is not None:
        values = torch.cat([best[0], values], 1)
        index = torch.cat([best[1], index], 1)
    v, pos = values.topk(min(k, values.shape[1]), dim=1, largest=largest, sorted=True)
    return v, index.gather(1, pos)


def per_channel(values: torch.Tensor) -> torch.Tensor:
    """(B, C) per image and channel from a captured squeeze or excitation of any attention module.

    SE-like gates are (B, C) already. Spatial gates (B, C, H, W) (NoSqueeze) are averaged over positions: the
    channel's mean weight on that image. Several descriptors per channel (B, D, C) (CBAM squeezes by average and by
    max) give the first, the average-pooled one that SE uses.
    """
    if values.ndim == 2:
        return values
    if values.ndim == 4:
        return values.mean(dim=(2, 3))
    if values.ndim == 3:
        return values[:, 0]
    raise ValueError(f"expected (B, C), (B, D, C) or (B, C, H, W) values, got shape {tuple(values.shape)}")


def largest_class_lift(stats: hooks.ExcitationStats, blocks: Sequence[str] | None = None) -> tuple[str, int, int]:
    """``(block, class, channel)`` whose class-mean excitation lies furthest above the channel's mean over all
    images, searched over ``blocks`` (default: the blocks of the last stage): the channel the gate opens most for
    one class compared with the others (notebook 07's choice)."""
    names = list(blocks) if blocks is not None else [
        b for b in stats.block_names if b.rsplit("_", 1)[0] == stats.block_names[-1].rsplit("_", 1)[0]]
    unknown = [b for b in names if b not in stats.mean]
    if not names or unknown:
        raise ValueError(f"expected SE blocks of these statistics ({', '.join(stats.block_names)}), got {names!r}")
    # (classes, channels); a class without images has no mean (NaN) and cannot be chosen
    lifts = {b: (stats.mean[b] - stats.overall_mean[b]).nan_to_num(nan=-torch.inf) for b in names}
    block = max(names, key=lambda b: float(lifts[b].max()))
    if float(lifts[block].max()) == -torch.inf:
        raise ValueError("no class has any image in these statistics: there is no class mean to compare")
    cls, channel = divmod(int(lifts[block].argmax()), lifts[block].shape[1])
    return block, cls, channel


@torch.no_grad()
def channel_examples(model: nn.Module, images: torch.Tensor, blocks: hooks.BlockSpec = None, k: int = 8,
                     batch_size: int = 250) -> dict[str, ChannelExamples]:
    """The top and bottom ``k`` images of every channel of every SE block in ``blocks`` (default all), by
    excitation, and the top ``k`` by squeeze, in one pass over uint8 ``images`` (N, 3, H, W) and memory that does
    not grow with N."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"expected uint8 images (N, 3, H, W) with N >= 1, got {images.dtype} {tuple(images.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    names = list(hooks.resolve_blocks(model, blocks))
    model.eval()
    kept: dict[str, dict[str, Any]] = {b: {"top_s": None, "bottom_s": None, "top_z": None} for b in names}
    for start in range(0, images.shape[0], batch_size):
        with hooks.capture(model, names) as cap:
            model(normalize(images[start:start + batch_size]))
        for b in names:
            s, z = per_channel(cap.excitation[b]).float().T, per_channel(cap.squeeze[b]).float().T  # (C, B)
            index = torch.arange(start, start + s.shape[1]).expand_as(s)
            kept[b]["top_s"] = _merge_topk(kept[b]["top_s"], s, index, k, largest=True)
            kept[b]["bottom_s"] = _merge_topk(kept[b]["bottom_s"], s, index, k, largest=False)
            kept[b]["top_z"] = _merge_topk(kept[b]["top_z"], z, index, k, largest=True)
    return {b: ChannelExamples(b, kept[b]["top_s"][1], kept[b]["top_s"][0], kept[b]["bottom_s"][1],
                               kept[b]["bottom_s"][0], kept[b]["top_z"][1], kept[b]["top_z"][0]) for b in names}


@contextmanager
def _module_path(model: nn.Module) -> Iterator[None]:
    """Run every SE block module by module: the fused training path (one autograd node for the whole block) would
    hide the excitation from the outer graph, and gradients with respect to it are what is asked for here."""
    blocks = [m for m in model.modules() if isinstance(m, SEBlock)]
    saved = [b.fused for b in blocks]
    try:
        for b in blocks:
            b.fused = False
        yield
    finally:
        for b, f in zip(blocks, saved):
            b.fused = f


class _Keep(hooks.Edit):
    """Remember the excitation as it is, still in the graph: the gradient with respect to it then includes every
    path downstream, also through the later blocks' own excitations (a leaf per block would cut those)."""

    def __init__(self) -> None:
        self.kept: list[torch.Tensor] = []

    def apply(self, s: torch.Tensor) -> torch.Tensor:
        self.kept.append(s)
        return s


def _check_labelled(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"expected uint8 images (N, 3, H, W) with N >= 1, got {images.dtype} {tuple(images.shape)}")
    if labels.shape != (images.shape[0],) or labels.dtype.is_floating_point:
        raise ValueError(f"expected integer labels of shape ({images.shape[0]},), got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    check_class_labels(labels, num_classes)


def gate_attribution(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, block: str,
                     num_classes: int = 10, batch_size: int = 100) -> torch.Tensor:
    """(K, C): for each class and channel, the mean over that class's images of ``d logit_y / d s_c * s_c`` at
    ``block`` — how much the channel's gate moves the true class's logit, to first order (NaN for a class without
    images). For a spatial gate (B, C, H, W) the products are summed over positions: the first-order effect of
    scaling the channel's gate everywhere."""
    hooks.resolve_blocks(model, [block])
    return gate_attribution_all(model, images, labels, num_classes, batch_size, blocks=[block])[block]


def gate_attribution_all(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int = 10,
                         batch_size: int = 100, blocks: hooks.BlockSpec = None) -> dict[str, torch.Tensor]:
    """``gate_attribution`` for several blocks (default every SE block) at once: block -> (K, C), from one forward
    and one backward pass per batch (every block's excitation is a leaf of the same graph)."""
    _check_labelled(images, labels, num_classes)
    names = list(hooks.resolve_blocks(model, blocks))
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {b: [] for b in names}
    for start in range(0, images.shape[0], batch_size):
        y = labels[start:start + batch_size]
        kept = {b: _Keep() for b in names}
        with torch.enable_grad(), _module_path(model), hooks.steer(model, kept):
            logits = model(normalize(images[start:start + batch_size]))
            grads = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), [kept[b].kept[0] for b in names])
        for b, g in zip(names, grads):
            contribution = (g * kept[b].kept[0]).detach().double()
            parts[b].append(contribution.sum(dim=(2, 3)) if contribution.ndim == 4 else contribution)
    onehot = nn.functional.one_hot(labels.long(), num_classes).double()
    counts = onehot.sum(0)[:, None]
    return {b: torch.where(counts > 0, onehot.T @ torch.cat(parts[b]) / counts.clamp(min=1), torch.nan) for b in names}


@torch.no_grad()
def gate_edit_effect(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, block: str, channel: int,
                     value: str | float = 1.0, num_classes: int = 10, batch_size: int = 250) -> dict[str, Any]:
    """The exact effect of setting ``s_c`` of one channel to ``value`` (a number, or ``"mean"``: its mean over these
    images) on the true class's logit (mean change per class, (K,)) and on accuracy, to check ``gate_attribution``:
    for a small edit the change is about ``d logit / d s_c * (value - s_c)``."""
    _check_labelled(images, labels, num_classes)
    hooks.resolve_blocks(model, [block])
    model.eval()
    x = [normalize(images[i:i + batch_size]) for i in range(0, images.shape[0], batch_size)]
    with hooks.capture(model, block) as cap:
        base = torch.cat([model(xb) for xb in x])
    if value == "mean":
        value = float(per_channel(cap.excitation[block])[:, channel].double().mean())
    with hooks.steer(model, {block: hooks.Constant(float(value), channels=[channel])}):
        edited = torch.cat([model(xb) for xb in x])
    rows = torch.arange(len(labels))
    delta = (edited[rows, labels] - base[rows, labels]).double()
    onehot = nn.functional.one_hot(labels.long(), num_classes).double()
    counts = onehot.sum(0)
    return {"value": float(value), "logit_change": torch.where(counts > 0, onehot.T @ delta / counts.clamp(min=1),
                                                               torch.nan),
            "accuracy_before": float((base.argmax(1) == labels).double().mean()),
            "accuracy_after": float((edited.argmax(1) == labels).double().mean())}


@torch.no_grad()
def patch_excitations(model: nn.Module, images: torch.Tensor, excitations: dict[str, torch.Tensor],
                      batch_size: int = 250) -> torch.Tensor:
    """Logits (N, K) of ``images`` when each block ``b`` of ``excitations`` uses the given excitations instead of
    its own: row i of ``excitations[b]`` (N, C) for image i (e.g. the excitations of other images, recorded with
    ``hooks.capture``, or a class mean repeated). With an image's own excitations nothing changes."""
    n = images.shape[0]
    for b, rows in excitations.items():
        if rows.ndim != 2 or rows.shape[0] != n:
            raise ValueError(f"excitations[{b!r}] must have one row per image, shape ({n}, C), got "
                             f"{tuple(rows.shape)}")
    model.eval()
    out = []
    for start in range(0, n, batch_size):
        edits = {b: hooks.ReplaceRows(rows[start:start + batch_size]) for b, rows in excitations.items()}
        with hooks.steer(model, edits):
            out.append(model(normalize(images[start:start + batch_size])))
    return torch.cat(out)


def grad_cam(model: nn.Module, images: torch.Tensor, block: str, classes: torch.Tensor,
             after_scaling: bool = True) -> torch.Tensor:
    """Grad-CAM maps (N, H, W) of SE block ``block``'s feature map for the given class of each image: the ReLU of
    the channel sum of the map weighted by the spatial mean of the class logit's gradient. ``after_scaling``: the
    block's output ``s * U``; else its input ``U``, so that the two show what the recalibration moved."""
    if classes.shape != (images.shape[0],):
        raise ValueError(f"expected one class per image, shape ({images.shape[0]},), got {tuple(classes.shape)}")
    se = hooks.resolve_blocks(model, [block])[block]
    model.eval()
    kept: list[torch.Tensor] = []

    def as_leaf(t: torch.Tensor) -> torch.Tensor:
        leaf = t.detach().requires_grad_(True)
        kept.append(leaf)
        return leaf

    # A copy of the leaf goes on: the residual unit adds its identity to the block's output in place.
    handle = (se.register_forward_hook(lambda m, args, out: as_leaf(out).clone()) if after_scaling else
              se.register_forward_pre_hook(lambda m, args: (as_leaf(args[0]), *args[1:])))
    try:
        with torch.enable_grad(), _module_path(model):
            logits = model(normalize(images))
            (grad,) = torch.autograd.grad(logits.gather(1, classes[:, None].long()).sum(), kept[0])
    finally:
        handle.remove()
    weights = grad.mean((2, 3), keepdim=True)
    return torch.relu((weights * kept[0]).sum(1)).detach()
