"""Look inside the SE blocks of a model: record squeeze/excitation values, steer them, and collect statistics.

Three tools, all built on temporary forward hooks that are removed when they are done (a model with no active
capture or steering carries no hooks at all, so it runs at full speed):

* ``capture(model, blocks)``: record the squeeze output ``z`` (B, C) and the excitation ``s`` (B, C) of SE blocks
  for every forward pass, and optionally the feature map the block rescales (``U``, (B, C, H, W)) and its output.
* ``steer(model, {block: edit})``: override what ``se.excitation`` outputs (scale, set, replace or switch off ``s``).
* ``excitation_stats(model, batches, num_classes)``: per-class running mean / std of ``s`` for every block over a
  whole data set in constant memory (the paper's section 7 analysis), with saturation counts.

Blocks are named as in the paper: ``"SE_<stage>_<block>"`` (stage 2 = conv2_x, blocks counted from 1), see
``SEResNet.se_blocks()``. Wherever a block name is accepted, a glob (``"SE_4_*"``) or a list of names and globs
works too.

The same tools work on the attention modules that can take SE's place (``SEResNetConfig.attention``, see
``seresnet.attention``): each one's ``excitation`` outputs its gate ``s``, (B, C), or (B, C, H, W) where the gate
varies over positions (NoSqueeze, Gather-Excite with a local extent; channel edits then act on dimension 1, at every
position). ``Off()`` sets ``s`` to the module's ``neutral`` value (1 for the gates that multiply, 0 for GC's added
context), so it always switches the module off. CBAM's spatial gate (B, 1, H, W) is recorded with
``capture(..., spatial=True)`` and edited with ``steer(..., gate="spatial")``.

Example::

    model = create_model("se_resnet20").eval()
    with torch.no_grad(), capture(model, "SE_4_*") as cap:
        model(images)
    cap.excitation["SE_4_1"]                       # (N, 64)
    with steer(model, {"SE_4_3": Off()}):          # recalibration of the last block switched off
        logits = model(images)
"""

from __future__ import annotations

import fnmatch
import json
import math
import numbers
import os
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .attention import AttentionBlock, is_attention_block
from .data import check_class_labels
from .se import SEBlock

BlockSpec = str | Sequence[str] | None
AttentionModule = SEBlock | AttentionBlock
ChannelSpec = int | Sequence[int] | torch.Tensor | None

__all__ = [
    "Constant",
    "Edit",
    "ExcitationStats",
    "Off",
    "Replace",
    "ReplaceRows",
    "SECapture",
    "Scale",
    "SteerHandle",
    "capture",
    "excitation_stats",
    "resolve_blocks",
    "se_block_names",
    "steer",
]

_NAME_RE = re.compile(r"^SE_(\d+)_(\d+)$")


# --- finding SE blocks ---------------------------------------------------------------------------------------
def _all_se_blocks(model: nn.Module) -> OrderedDict[str, AttentionModule]:
    """Every SE block of ``model`` by name: paper names for an ``SEResNet`` (also when wrapped in another module),
    module paths (``"layer1.0.se"``) for any other network that contains ``SEBlock`` modules (or the attention
    modules of ``seresnet.attention``)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if callable(getattr(model, "se_blocks", None)):
        return OrderedDict(model.se_blocks())
    for m in model.modules():  # e.g. nn.Sequential(normalizer, se_resnet)
        if m is not model and callable(getattr(m, "se_blocks", None)):
            return OrderedDict(m.se_blocks())
    return OrderedDict((n, m) for n, m in model.named_modules() if is_attention_block(m))


def se_block_names(model: nn.Module) -> list[str]:
    """Names of all SE blocks of ``model``, early to late (``[]`` for a plain ResNet)."""
    return list(_all_se_blocks(model))


def resolve_blocks(model: nn.Module, blocks: BlockSpec = None) -> OrderedDict[str, AttentionModule]:
    """Select SE blocks by name, glob or list of those; ``None`` selects all. Returned in network order.

    Raises ``ValueError`` (listing the names that exist) for a model without SE blocks or a name / glob that
    matches nothing.
    """
    available = _all_se_blocks(model)
    if not available:
        raise ValueError(f"{type(model).__name__} has no SE blocks (integration='none' or se_stages=()); "
                         "there is nothing to capture or steer")
    if blocks is None:
        return available
    patterns = [blocks] if isinstance(blocks, str) else blocks
    if not isinstance(patterns, Iterable) or isinstance(patterns, bytes):
        raise TypeError(f"blocks must be None, a block name / glob, or a list of them; got {type(blocks).__name__}")
    patterns = list(patterns)
    if not patterns or not all(isinstance(p, str) for p in patterns):
        raise ValueError(f"blocks must be a non-empty list of block names or globs, got {blocks!r}")
    chosen: set[str] = set()
    for p in patterns:
        hits = [n for n in available if fnmatch.fnmatchcase(n, p)]
        if not hits:
            raise ValueError(f"no SE block matches {p!r}; this model has blocks {', '.join(available)}")
        chosen.update(hits)
    return OrderedDict((n, m) for n, m in available.items() if n in chosen)


def _stage_of(name: str) -> int | None:
    m = _NAME_RE.match(name)
    return int(m.group(1)) if m else None


# Excitation modules currently being steered (id -> number of active edits), so that a capture can report that
# the values it recorded were edited.
_STEERED: dict[int, int] = {}


# --- capture -------------------------------------------------------------------------------------------------
class _Recorded(Mapping):
    """Read-only mapping block name -> tensor of everything recorded so far (concatenated on first access)."""

    def __init__(self, cap: SECapture, kind: str) -> None:
        self._cap, self._kind = cap, kind

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._cap._get(self._kind, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._cap.blocks)

    def __len__(self) -> int:
        return len(self._cap.blocks)

    def __repr__(self) -> str:
        return f"<captured {self._kind} of {len(self)} SE blocks>"


class SECapture:
    """Records what SE blocks compute during forward passes; made by :func:`capture`.

    ``squeeze[name]`` (N, C) and ``excitation[name]`` (N, C), and with ``features=True`` ``inputs[name]`` (the map
    ``U`` the block rescales, (N, C, H, W)) and ``outputs[name]`` (``s * U``), hold all forward passes since the
    capture started (or since ``clear()``), concatenated along the batch axis, detached, on the CPU, in ``dtype``.

    Steering: ``s`` is recorded at the output of ``se.excitation`` *after* any active :func:`steer` edit (steering
    hooks always run before capture hooks), i.e. the value the block really multiplied ``U`` by; ``steered``
    becomes True when a recorded pass had an edit active on one of the captured blocks. ``squeeze`` and ``inputs``
    are what the block received, which an edit at an *earlier* block may have changed.

    Other attention modules (``seresnet.attention``): ``excitation`` is their gate, (N, C), or (N, C, H, W) where it
    varies over positions (NoSqueeze, Gather-Excite with a local extent); for GC it is the context vector added to
    ``U``. ``squeeze`` is always the excitation's input: (N, 2, C) for CBAM (average and max pooled rows), the map
    ``U`` itself for NoSqueeze, which has no squeeze. With ``spatial=True``, ``spatial[name]`` (N, 1, H, W) is
    CBAM's spatial gate (after any ``steer(..., gate="spatial")`` edit).

    Use as a context manager, or call ``remove()`` yourself; the recorded tensors stay readable afterwards.
    """

    _KINDS = ("squeeze", "excitation", "inputs", "outputs", "spatial")

    def __init__(self, model: nn.Module, blocks: BlockSpec = None, *, features: bool = False,
                 spatial: bool = False, dtype: torch.dtype = torch.float32) -> None:
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point torch.dtype, got {dtype!r}")
        self._modules = resolve_blocks(model, blocks)
        self.blocks: list[str] = list(self._modules)
        self.features = bool(features)
        self.spatial_gates = bool(spatial)
        if self.spatial_gates:
            _check_spatial_gates(self._modules)
        self.dtype = dtype
        self.steered = False
        self._lists: dict[str, dict[str, list[torch.Tensor]]] = {}
        self.clear()
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        for name, se in self._modules.items():
            self._handles.append(se.excitation.register_forward_hook(self._excitation_hook(name)))
            if self.features:
                self._handles.append(se.register_forward_hook(self._feature_hook(name)))
            if self.spatial_gates:
                self._handles.append(se.spatial_gate.register_forward_hook(self._spatial_hook(name)))

    # Hooks do as little as possible per call (one copy per tensor, one list append): concatenation is lazy.
    def _store(self, x: torch.Tensor) -> torch.Tensor:
        # copy=True: the hook must not keep a view of a tensor that a later in-place op could change.
        return x.detach().to(device="cpu", dtype=self.dtype, copy=True)

    def _excitation_hook(self, name: str):
        lists = self._lists[name]

        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            lists["squeeze"].append(self._store(args[0]))
            lists["excitation"].append(self._store(output))
            if id(module) in _STEERED:
                self.steered = True

        return hook

    def _feature_hook(self, name: str):
        lists = self._lists[name]

        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            lists["inputs"].append(self._store(args[0]))
            lists["outputs"].append(self._store(output))

        return hook

    def _spatial_hook(self, name: str):
        lists = self._lists[name]

        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            lists["spatial"].append(self._store(output))
            if id(module) in _STEERED:
                self.steered = True

        return hook

    def _get(self, kind: str, name: str) -> torch.Tensor:
        if name not in self._lists:
            raise KeyError(f"block {name!r} was not captured; captured blocks: {', '.join(self.blocks)}")
        lst = self._lists[name][kind]
        if len(lst) > 1:
            lst[:] = [torch.cat(lst)]
        if lst:
            return lst[0]
        module = self._modules[name]
        c = module.channels
        if kind == "spatial":
            shape: tuple[int, ...] = (0, 1, 0, 0)
        elif kind in ("squeeze", "excitation"):
            shape = module.empty_shape(kind) if isinstance(module, AttentionBlock) else (0, c)
        else:
            shape = (0, c, 0, 0)
        return torch.empty(shape, dtype=self.dtype)

    @property
    def squeeze(self) -> Mapping[str, torch.Tensor]:
        """Block name -> squeeze output ``z`` (N, C) (the excitation's input; see the class docstring for the
        attention modules where it has another shape)."""
        return _Recorded(self, "squeeze")

    @property
    def excitation(self) -> Mapping[str, torch.Tensor]:
        """Block name -> excitation ``s`` (N, C) (after any active steering edit); (N, C, H, W) for gates that vary
        over positions."""
        return _Recorded(self, "excitation")

    @property
    def spatial(self) -> Mapping[str, torch.Tensor]:
        """Block name -> CBAM's spatial gate ``M_s`` (N, 1, H, W); needs ``spatial=True``."""
        if not self.spatial_gates:
            raise RuntimeError("spatial gates were not recorded; use capture(model, blocks, spatial=True) on a model "
                               "whose blocks have one (attention='cbam')")
        return _Recorded(self, "spatial")

    @property
    def inputs(self) -> Mapping[str, torch.Tensor]:
        """Block name -> the feature map ``U`` entering the SE block (N, C, H, W); needs ``features=True``."""
        self._need_features()
        return _Recorded(self, "inputs")

    @property
    def outputs(self) -> Mapping[str, torch.Tensor]:
        """Block name -> the rescaled map ``s * U`` leaving the SE block (N, C, H, W); needs ``features=True``."""
        self._need_features()
        return _Recorded(self, "outputs")

    def _need_features(self) -> None:
        if not self.features:
            raise RuntimeError("feature maps were not recorded; use capture(model, blocks, features=True)")

    @property
    def num_samples(self) -> int:
        """Number of images recorded so far (per block)."""
        return sum(t.shape[0] for t in self._lists[self.blocks[0]]["excitation"])

    @property
    def active(self) -> bool:
        """True while the hooks are registered."""
        return bool(self._handles)

    def clear(self) -> None:
        """Forget everything recorded so far (the hooks stay active)."""
        for name in self.blocks:
            self._lists.setdefault(name, {k: [] for k in self._KINDS})
            for lst in self._lists[name].values():
                lst.clear()
        self.steered = False

    def remove(self) -> None:
        """Remove all hooks (idempotent); recorded data stays readable."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> SECapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return (f"SECapture({len(self.blocks)} blocks, {self.num_samples} samples, features={self.features}, "
                f"{state})")


def _check_spatial_gates(modules: Mapping[str, nn.Module]) -> None:
    """Raise a ``ValueError`` naming the blocks without a spatial gate (only CBAM has one)."""
    missing = [n for n, m in modules.items() if not isinstance(getattr(m, "spatial_gate", None), nn.Module)]
    if missing:
        kinds = sorted({type(modules[n]).__name__ for n in missing})
        raise ValueError(f"blocks {', '.join(missing)} ({', '.join(kinds)}) have no spatial gate; only CBAM blocks "
                         "(attention='cbam') do")


def capture(model: nn.Module, blocks: BlockSpec = None, *, features: bool = False, spatial: bool = False,
            dtype: torch.dtype = torch.float32) -> SECapture:
    """Start recording SE blocks of ``model`` (all of them, or ``blocks``: a name, a glob or a list of those).

    Returns an :class:`SECapture`, usable as a context manager (hooks removed on exit, also after an exception)
    or as a plain object (call ``.remove()``). Works in train and eval mode and under ``torch.no_grad()``.
    ``features=True`` also records the maps entering and leaving each block, ``spatial=True`` CBAM's spatial gates.
    """
    return SECapture(model, blocks, features=features, spatial=spatial, dtype=dtype)


# --- steering ------------------------------------------------------------------------------------------------
def _channel_tuple(channels: ChannelSpec, what: str) -> tuple[int, ...] | None:
    if channels is None:
        return None
    if isinstance(channels, (torch.Tensor, np.ndarray, np.integer)):  # e.g. the index np.argmax or topk returns
        arr = np.asarray(channels.cpu() if isinstance(channels, torch.Tensor) else channels)
        if arr.dtype.kind not in "iu" or arr.ndim > 1:
            raise ValueError(f"{what}: channels must be integer indices, got a {arr.dtype} array of shape {arr.shape}")
        channels = arr.reshape(-1).tolist()
    if isinstance(channels, bool):
        raise ValueError(f"{what}: channels must be an int or a list of ints, got {channels!r}")
    if isinstance(channels, int):
        channels = (channels,)
    try:
        out = tuple(channels)
    except TypeError:
        raise ValueError(f"{what}: channels must be an int or a list of ints, got {channels!r}") from None
    if not out:
        raise ValueError(f"{what}: channels is empty; pass None to edit all channels")
    for c in out:
        if isinstance(c, bool) or not isinstance(c, int) or c < 0:
            raise ValueError(f"{what}: channel indices must be non-negative ints, got {c!r}")
    return out


# Largest magnitude an edit may put into s. The gates give s in [0, 1] (relu: usually a few units), and steering
# needs factors of a few units; 1e39 overflowed float32 / bfloat16 to inf and the logits became NaN. 1e4 leaves
# room for extreme experiments while a single edit stays far from the float32 limit (3.4e38). Large factors on many
# blocks at once multiply, though: Scale(1e4) on all nine blocks of se_resnet20 already gives logits near 1e33.
MAX_EDIT_MAGNITUDE = 1e4
_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)  # Replace: besides floats


def _finite(value: Any, what: str) -> float:
    """``value`` as a float, or a ``ValueError`` unless it is a real number with |value| <= MAX_EDIT_MAGNITUDE."""
    # numbers.Real: Python and numpy scalars; bools are Integral (so Real) but not numbers here. A one-element tensor
    # (what model outputs and statistics give) counts as its number.
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype == torch.bool:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a single real number, got {value!r}")
    if not math.isfinite(value) or abs(value) > MAX_EDIT_MAGNITUDE:
        raise ValueError(f"{what} must be a finite number with |{what.split()[-1]}| <= {MAX_EDIT_MAGNITUDE:g} "
                         f"(larger values overflow the network to inf / NaN), got {value!r}")
    return float(value)


def _per_channel(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """A (C,) tensor shaped to broadcast along dimension 1 of ``s``: (C,) for (B, C), (C, 1, 1) for (B, C, H, W)."""
    return t.view(-1, *([1] * (s.ndim - 2)))


class Edit:
    """Base class of the steering edits: a function ``s (B, C) -> s' (B, C)``.

    Gates that vary over positions, ``s`` (B, C, H, W), are edited along dimension 1 (the channels), the same way at
    every position.
    """

    channels: tuple[int, ...] | None = None

    def apply(self, s: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply_for(self, s: torch.Tensor, neutral: float) -> torch.Tensor:
        """The edit for a gate whose neutral value (the one that changes nothing) is ``neutral``; only :class:`Off`
        needs to know it, every other edit is :meth:`apply`."""
        return self.apply(s)

    def validate(self, block: str, num_channels: int) -> None:
        """Raise ``ValueError`` if this edit does not fit a block with ``num_channels`` channels."""
        if self.channels is not None:
            bad = [c for c in self.channels if c >= num_channels]
            if bad:
                raise ValueError(f"{type(self).__name__}: channel(s) {bad} out of range for {block}, which has "
                                 f"{num_channels} channels (valid indices 0..{num_channels - 1})")

    def _mask(self, s: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(s.shape[1], dtype=torch.bool, device=s.device)
        mask[list(self.channels)] = True
        return _per_channel(mask, s)


@dataclass(frozen=True)
class Scale(Edit):
    """Multiply ``s`` by ``factor`` for the given channel indices (all channels if ``None``).

    ``factor``: a finite number with ``|factor| <= MAX_EDIT_MAGNITUDE`` (1e4); larger ones overflow to NaN logits.
    """

    factor: float
    channels: ChannelSpec = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "factor", _finite(self.factor, "Scale factor"))
        object.__setattr__(self, "channels", _channel_tuple(self.channels, "Scale"))

    def apply(self, s: torch.Tensor) -> torch.Tensor:
        if self.channels is None:
            return s * self.factor
        f = torch.ones(s.shape[1], dtype=s.dtype, device=s.device)
        f[list(self.channels)] = self.factor
        return s * _per_channel(f, s)


@dataclass(frozen=True)
class Constant(Edit):
    """Set ``s`` to ``value`` for the given channel indices (all channels if ``None``).

    ``value``: a finite number with ``|value| <= MAX_EDIT_MAGNITUDE`` (1e4).
    """

    value: float
    channels: ChannelSpec = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _finite(self.value, "Constant value"))
        object.__setattr__(self, "channels", _channel_tuple(self.channels, "Constant"))

    def apply(self, s: torch.Tensor) -> torch.Tensor:
        if self.channels is None:
            return torch.full_like(s, self.value)
        return torch.where(self._mask(s), s.new_tensor(self.value), s)


@dataclass(frozen=True, eq=False)
class Replace(Edit):
    """Set ``s`` of every image to one vector of length C (e.g. a class mean from :class:`ExcitationStats`).

    ``vector``: C finite numbers with ``|x| <= MAX_EDIT_MAGNITUDE``, shape (C,), as a tensor, a numpy array or a
    list; the same vector is used for every image (per-image values are not supported).
    """

    vector: torch.Tensor = field(repr=False)

    def __post_init__(self) -> None:
        expected = "Replace needs a vector of C finite numbers (shape (C,), one value per channel of the block)"
        v = self.vector
        # torch.as_tensor would turn a str into a raw torch error and a dict into nonsense: only array-likes pass.
        if isinstance(v, (str, bytes)) or not (isinstance(v, (torch.Tensor, Sequence, range))
                                               or hasattr(v, "__array__")):
            raise TypeError(f"{expected}, got {type(v).__name__} {v!r}")
        try:
            v = torch.as_tensor(v).detach()
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"{expected}, got {type(self.vector).__name__} that is not a vector of numbers: "
                            f"{exc}") from None
        if not (v.dtype.is_floating_point or v.dtype in _INTEGER_DTYPES):  # bool and complex are not values of s
            raise TypeError(f"{expected}, got a {v.dtype} tensor")
        if v.ndim != 1:
            raise ValueError(f"{expected}; a 1-D vector, got shape {tuple(v.shape)}")
        if v.shape[0] == 0:
            raise ValueError(f"{expected}, got an empty vector")
        v64 = v.double()
        if not torch.isfinite(v64).all():
            raise ValueError("Replace vector contains NaN or inf (an empty class in the statistics?)")
        if v64.abs().max() > MAX_EDIT_MAGNITUDE:
            raise ValueError(f"{expected} with entries with |x| <= {MAX_EDIT_MAGNITUDE:g} (larger values overflow "
                             f"the network to inf / NaN), got a largest magnitude of {v64.abs().max().item():g}")
        object.__setattr__(self, "vector", v.cpu())

    def validate(self, block: str, num_channels: int) -> None:
        if self.vector.shape[0] != num_channels:
            raise ValueError(f"Replace: vector has length {self.vector.shape[0]} but {block} has {num_channels} "
                             "channels")

    def apply(self, s: torch.Tensor) -> torch.Tensor:
        return _per_channel(self.vector.to(device=s.device, dtype=s.dtype), s).expand(s.shape).contiguous()


class ReplaceRows(Edit):
    """Set ``s`` of image i of the batch to row i of ``rows`` (B, C): per-image excitations, such as those of other
    images (excitation patching) or each image's class mean. The batch must have exactly B images. For a gate
    (B, C, H, W) each image's row is used at every position."""

    def __init__(self, rows: torch.Tensor) -> None:
        if not isinstance(rows, torch.Tensor) or rows.ndim != 2 or not rows.dtype.is_floating_point:
            raise TypeError(f"ReplaceRows needs a float tensor of shape (B, C), got "
                            f"{getattr(rows, 'dtype', type(rows).__name__)} {tuple(getattr(rows, 'shape', ()))}")
        if not torch.isfinite(rows).all() or rows.abs().max() > MAX_EDIT_MAGNITUDE:
            raise ValueError(f"ReplaceRows needs finite values with |x| <= {MAX_EDIT_MAGNITUDE:g}")
        self.rows = rows.detach()

    def validate(self, block: str, num_channels: int) -> None:
        if self.rows.shape[1] != num_channels:
            raise ValueError(f"ReplaceRows: rows have {self.rows.shape[1]} columns but {block} has {num_channels} "
                             f"channels")

    def apply(self, s: torch.Tensor) -> torch.Tensor:
        if s.shape[:2] != self.rows.shape:
            raise ValueError(f"ReplaceRows holds rows for a batch of shape {tuple(self.rows.shape)}, got a batch "
                             f"of shape {tuple(s.shape)}")
        rows = self.rows.to(device=s.device, dtype=s.dtype)
        return rows.view(*rows.shape, *([1] * (s.ndim - 2))).expand(s.shape).contiguous()


@dataclass(frozen=True)
class Off(Edit):
    """Switch the block's recalibration off: ``s`` = the block's neutral value for every channel, so that the block
    passes ``U`` unchanged: 1 for SE and every gate that multiplies, 0 for GC's context, which is added."""

    def apply(self, s: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(s)

    def apply_for(self, s: torch.Tensor, neutral: float) -> torch.Tensor:
        return torch.full_like(s, neutral)


_STEER_GATES = ("channel", "spatial")


class SteerHandle:
    """Active steering edits made by :func:`steer`; a context manager, or call ``remove()``."""

    def __init__(self, model: nn.Module, edits: Mapping[str, Edit | Sequence[Edit]], gate: str = "channel") -> None:
        if not isinstance(edits, Mapping) or not edits:
            raise ValueError("edits must be a non-empty dict {block name or glob: Edit}, e.g. {'SE_4_3': Off()}")
        if not isinstance(gate, str) or gate not in _STEER_GATES:
            raise ValueError(f"gate must be 'channel' (the excitation) or 'spatial' (CBAM's spatial gate), "
                             f"got {gate!r}")
        self.gate = gate
        per_block: OrderedDict[str, list[Edit]] = OrderedDict()
        modules: dict[str, AttentionModule] = {}
        # Validate everything before registering anything, so a bad edit leaves the model untouched.
        for key, value in edits.items():
            items = list(value) if isinstance(value, (list, tuple)) else [value]
            for e in items:
                if not isinstance(e, Edit):
                    raise TypeError(f"edit for {key!r} must be Scale, Constant, Replace or Off, "
                                    f"got {type(e).__name__}")
            selected = resolve_blocks(model, key)
            if gate == "spatial":
                _check_spatial_gates(selected)
            for name, se in selected.items():
                for e in items:
                    e.validate(name, 1 if gate == "spatial" else se.channels)
                per_block.setdefault(name, []).extend(items)
                modules[name] = se
        self.edits: OrderedDict[str, tuple[Edit, ...]] = OrderedDict((n, tuple(v)) for n, v in per_block.items())
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._steered_ids: list[int] = []
        for name, items in self.edits.items():
            block = modules[name]
            if gate == "spatial":
                target, neutral = block.spatial_gate, float(block.spatial_neutral)
            else:
                target, neutral = block.excitation, float(getattr(block, "neutral", 1.0))
            # prepend=True: the edit runs before any capture hook, so a capture records the edited s.
            self._handles.append(target.register_forward_hook(self._hook(items, neutral), prepend=True))
            _STEERED[id(target)] = _STEERED.get(id(target), 0) + 1
            self._steered_ids.append(id(target))

    @staticmethod
    def _hook(items: tuple[Edit, ...], neutral: float):
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
            for e in items:
                output = e.apply_for(output, neutral)
            return output

        return hook

    @property
    def blocks(self) -> list[str]:
        return list(self.edits)

    def remove(self) -> None:
        """Remove the edits (idempotent): the model computes exactly what it did before."""
        for h in self._handles:
            h.remove()
        self._handles = []
        for i in self._steered_ids:
            _STEERED[i] -= 1
            if not _STEERED[i]:
                del _STEERED[i]
        self._steered_ids = []

    def __enter__(self) -> SteerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"SteerHandle({dict(self.edits)!r}, active={bool(self._handles)})"


def steer(model: nn.Module, edits: Mapping[str, Edit | Sequence[Edit]], gate: str = "channel") -> SteerHandle:
    """Override the excitation ``s`` of SE blocks while the returned handle is active.

    ``edits`` maps block names or globs to an edit (or a list of edits): :class:`Scale`, :class:`Constant`,
    :class:`Replace` or :class:`Off`. When several keys match one block, their edits are applied in the dict's
    order. Channel indices and vector lengths are checked against each block's width before anything is changed.
    On exit the hooks are removed and the model's outputs are bit-identical to before. Nested ``steer`` contexts
    compose (the inner one's edit runs first).

    ``gate="spatial"`` edits CBAM's spatial gate (B, 1, H, W) instead (one "channel"; ``Off()`` sets it to 1);
    the channel gate is then left alone, and the other way round.
    """
    return SteerHandle(model, edits, gate)


# --- streaming statistics ------------------------------------------------------------------------------------
class _View(Mapping):
    """Lazy read-only mapping block name -> tensor computed by ``fn(name)``."""

    def __init__(self, names: list[str], fn) -> None:
        self._names, self._fn = names, fn

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._names:
            raise KeyError(f"no statistics for {name!r}; blocks: {', '.join(self._names)}")
        return self._fn(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class ExcitationStats:
    """Per-class running statistics of the excitation ``s`` of SE blocks (constant memory, float64).

    For every block it keeps, per class, the running mean and sum of squared deviations of ``s`` (merged batch by
    batch with Chan's parallel form of Welford's update), and per channel the number of values below ``low`` and
    above ``high``. Nothing grows with the number of images.

    * ``mean[name]``, ``std[name]``: (K, C) per-class mean and population std (ddof 0); NaN rows for classes
      with no images.
    * ``count``: (K,) images per class; ``overall_mean[name]``, ``overall_std[name]``: (C,) over all images.
    * ``class_specificity()``, ``saturation()``, ``summary_table()``, ``save()`` / ``load()``.

    Any attention module's (B, C) gate works the same way; (B, C, H, W) gates are averaged over positions first
    (see :meth:`update`). For GC the "excitation" is the added context vector, centred near 0 rather than in
    (0, 1), so the default saturation thresholds mean little there. CBAM's spatial gate is not included.
    """

    def __init__(self, block_names: Sequence[str], channels: Sequence[int], num_classes: int,
                 low: float = 0.1, high: float = 0.9) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if len(block_names) != len(channels) or not block_names:
            raise ValueError("block_names and channels must be non-empty and of equal length")
        if not low < high:
            raise ValueError(f"saturation thresholds need low < high, got low={low}, high={high}")
        self.block_names: list[str] = list(block_names)
        self.channels: dict[str, int] = dict(zip(self.block_names, (int(c) for c in channels)))
        self.num_classes = num_classes
        self.low, self.high = float(low), float(high)
        k = num_classes
        self.count = torch.zeros(k, dtype=torch.int64)
        self._mean = {n: torch.zeros(k, c, dtype=torch.float64) for n, c in self.channels.items()}
        self._m2 = {n: torch.zeros(k, c, dtype=torch.float64) for n, c in self.channels.items()}
        self._n_low = {n: torch.zeros(c, dtype=torch.int64) for n, c in self.channels.items()}
        self._n_high = {n: torch.zeros(c, dtype=torch.int64) for n, c in self.channels.items()}

    # --- accumulation ---
    def update(self, excitations: Mapping[str, torch.Tensor], labels: torch.Tensor) -> None:
        """Add one batch: ``excitations`` maps every block name to ``s`` (B, C); ``labels`` (B,) in 0..K-1.

        A gate that varies over positions, ``s`` (B, C, H, W) (NoSqueeze, Gather-Excite with a local extent), is
        first averaged over H and W per image: the statistics are about one value per image and channel, as for SE,
        and the spatial mean is the average factor the channel's values were multiplied by in that image (for a gate
        that is constant over positions it is the gate itself). The saturation counts then count images whose
        *mean* gate is below ``low`` / above ``high``, not positions.
        """
        labels = torch.as_tensor(labels).detach().cpu()
        if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"labels must be a 1-D integer tensor (B,), got {labels.dtype} {tuple(labels.shape)}")
        check_class_labels(labels, self.num_classes)
        labels = labels.long()
        missing = [n for n in self.block_names if n not in excitations]
        if missing:
            raise ValueError(f"update() needs s for every block; missing {missing}")
        b = labels.shape[0]
        n_a = self.count.double()
        n_b = torch.bincount(labels, minlength=self.num_classes).double()
        n = n_a + n_b
        w = torch.where(n > 0, n_b / n.clamp(min=1), torch.zeros_like(n))[:, None]
        cross = torch.where(n > 0, n_a * n_b / n.clamp(min=1), torch.zeros_like(n))[:, None]
        for name in self.block_names:
            s = excitations[name].detach().to("cpu", torch.float64)
            c = self.channels[name]
            if s.ndim == 4 and s.shape[:2] == (b, c):
                s = s.mean(dim=(2, 3))
            if s.shape != (b, c):
                raise ValueError(f"s of {name} must have shape ({b}, {c}), got {tuple(s.shape)}")
            sum_b = torch.zeros(self.num_classes, c, dtype=torch.float64).index_add_(0, labels, s)
            mean_b = sum_b / n_b.clamp(min=1)[:, None]
            dev = s - mean_b[labels]
            m2_b = torch.zeros_like(sum_b).index_add_(0, labels, dev * dev)
            delta = mean_b - self._mean[name]
            self._mean[name] += delta * w
            self._m2[name] += m2_b + delta * delta * cross
            self._n_low[name] += (s < self.low).sum(0)
            self._n_high[name] += (s > self.high).sum(0)
        self.count += n_b.long()

    # --- results ---
    @property
    def num_images(self) -> int:
        return int(self.count.sum())

    def _present(self) -> torch.Tensor:
        return self.count > 0

    def _class_mean(self, name: str) -> torch.Tensor:
        m = self._mean[name].clone()
        m[~self._present()] = float("nan")
        return m

    def _class_std(self, name: str) -> torch.Tensor:
        sd = (self._m2[name] / self.count.clamp(min=1)[:, None].double()).sqrt()
        sd[~self._present()] = float("nan")
        return sd

    def _overall_mean(self, name: str) -> torch.Tensor:
        n = self.num_images
        if n == 0:
            return torch.full((self.channels[name],), float("nan"), dtype=torch.float64)
        return (self.count.double()[:, None] * self._mean[name]).sum(0) / n

    def _overall_std(self, name: str) -> torch.Tensor:
        n = self.num_images
        if n == 0:
            return torch.full((self.channels[name],), float("nan"), dtype=torch.float64)
        between = (self.count.double()[:, None] * (self._mean[name] - self._overall_mean(name)) ** 2).sum(0)
        return ((self._m2[name].sum(0) + between) / n).sqrt()

    @property
    def mean(self) -> Mapping[str, torch.Tensor]:
        """Block name -> (K, C) mean excitation per class (NaN rows for classes with no images)."""
        return _View(self.block_names, self._class_mean)

    @property
    def std(self) -> Mapping[str, torch.Tensor]:
        """Block name -> (K, C) population std of the excitation per class."""
        return _View(self.block_names, self._class_std)

    @property
    def overall_mean(self) -> Mapping[str, torch.Tensor]:
        """Block name -> (C,) mean excitation over all images."""
        return _View(self.block_names, self._overall_mean)

    @property
    def overall_std(self) -> Mapping[str, torch.Tensor]:
        """Block name -> (C,) population std of the excitation over all images."""
        return _View(self.block_names, self._overall_std)

    def class_specificity(self, normalize: bool = False) -> dict[str, float]:
        """How much the mean excitation of a block depends on the class, per block.

        ``normalize=False``: the std across classes of the class-mean excitation, averaged over channels (in units
        of ``s``; 0 = every class gets the same mean profile, as the paper sees in early blocks).
        ``normalize=True``: the fraction of the variance of ``s`` explained by the class (between-class variance
        over total variance, eta squared, in 0..1), averaged over the channels whose excitation varies at all; a
        constant channel's ratio is 0/0, undefined, and left out (not counted as 0, which would drag a block with
        dead gates towards "not class-specific"). NaN (undefined) for a block with no varying channel.
        Only classes with images count; NaN with fewer than two such classes.
        """
        present = self._present()
        out: dict[str, float] = {}
        for name in self.block_names:
            if int(present.sum()) < 2:
                out[name] = float("nan")
                continue
            means = self._mean[name][present]
            if not normalize:
                out[name] = float(means.std(0, correction=0).mean())
                continue
            n = self.num_images
            between = (self.count[present].double()[:, None] * (means - self._overall_mean(name)) ** 2).sum(0) / n
            total = self._overall_std(name) ** 2
            # A constant channel (e.g. behind a dead hidden unit) may keep a float64 rounding residue ~1e-33 as its
            # variance; any real variation of float32 values is many orders of magnitude larger.
            varies = total > 1e-24 * self._overall_mean(name).abs().clamp(min=1) ** 2
            ratio = (between / total.clamp(min=1e-300)).clamp(0, 1)
            out[name] = float(ratio[varies].mean()) if bool(varies.any()) else float("nan")
        return out

    def saturation(self) -> dict[str, tuple[float, float]]:
        """Block name -> (fraction of ``s`` values < ``low``, fraction > ``high``) over all images and channels."""
        out = {}
        for name in self.block_names:
            total = self.num_images * self.channels[name]
            if total == 0:
                out[name] = (float("nan"), float("nan"))
            else:
                out[name] = (int(self._n_low[name].sum()) / total, int(self._n_high[name].sum()) / total)
        return out

    def saturation_per_channel(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Block name -> ((C,) fraction of images with ``s < low``, (C,) fraction with ``s > high``)."""
        n = max(self.num_images, 1)
        return {k: (self._n_low[k].double() / n, self._n_high[k].double() / n) for k in self.block_names}

    def summary_table(self) -> list[dict[str, Any]]:
        """One record per block, early to late: block, stage, channels, mean (of ``s``), std (over all images,
        averaged over channels), class_specificity, class_specificity_normalized, frac_low, frac_high."""
        spec, spec_n, sat = self.class_specificity(), self.class_specificity(normalize=True), self.saturation()
        return [
            dict(block=name, stage=_stage_of(name), channels=self.channels[name],
                 mean=float(self._overall_mean(name).mean()), std=float(self._overall_std(name).mean()),
                 class_specificity=spec[name], class_specificity_normalized=spec_n[name],
                 frac_low=sat[name][0], frac_high=sat[name][1])
            for name in self.block_names
        ]

    def to_dataframe(self):
        """``summary_table()`` as a pandas DataFrame (needs pandas, which seresnet does not depend on)."""
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("to_dataframe() needs pandas (pip install pandas); summary_table() gives the same "
                              "records as a list of dicts") from e
        return pd.DataFrame(self.summary_table())

    # --- persistence ---
    def save(self, path: str | os.PathLike) -> None:
        """Write the running sums to a ``.safetensors`` file (reload with ``ExcitationStats.load``)."""
        from safetensors.torch import save_file

        tensors = {"count": self.count.contiguous()}
        for i, name in enumerate(self.block_names):
            tensors[f"b{i}.mean"] = self._mean[name].contiguous()
            tensors[f"b{i}.m2"] = self._m2[name].contiguous()
            tensors[f"b{i}.n_low"] = self._n_low[name].contiguous()
            tensors[f"b{i}.n_high"] = self._n_high[name].contiguous()
        meta = dict(format="seresnet.ExcitationStats/1", blocks=json.dumps(self.block_names),
                    channels=json.dumps([self.channels[n] for n in self.block_names]),
                    num_classes=str(self.num_classes), low=repr(self.low), high=repr(self.high))
        save_file(tensors, os.fspath(path), metadata=meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ExcitationStats:
        """Read statistics written by ``save`` (safetensors: no code is executed on loading)."""
        from safetensors import safe_open

        if not os.path.isfile(path):
            raise FileNotFoundError(f"no ExcitationStats file at {path}")
        try:
            with safe_open(os.fspath(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != "seresnet.ExcitationStats/1":
                    raise ValueError(f"not an ExcitationStats file (metadata {meta!r})")
                stats = cls(json.loads(meta["blocks"]), json.loads(meta["channels"]), int(meta["num_classes"]),
                            float(meta["low"]), float(meta["high"]))
                stats.count = f.get_tensor("count")
                for i, name in enumerate(stats.block_names):
                    stats._mean[name] = f.get_tensor(f"b{i}.mean")
                    stats._m2[name] = f.get_tensor(f"b{i}.m2")
                    stats._n_low[name] = f.get_tensor(f"b{i}.n_low")
                    stats._n_high[name] = f.get_tensor(f"b{i}.n_high")
        except Exception as exc:  # safetensors raises its own error type for a damaged header
            raise ValueError(f"{path} is not a readable ExcitationStats file (written by ExcitationStats.save): "
                             f"{exc}") from exc
        return stats

    def __repr__(self) -> str:
        return (f"ExcitationStats({len(self.block_names)} blocks, {self.num_classes} classes, "
                f"{self.num_images} images)")


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def excitation_stats(model: nn.Module, batches: Iterable[Any], num_classes: int, blocks: BlockSpec = None,
                     device: str | torch.device | None = None, *, low: float = 0.1,
                     high: float = 0.9) -> ExcitationStats:
    """Stream a data set through ``model`` and collect per-class excitation statistics of its SE blocks.

    ``batches`` yields ``(images, labels)``: float normalised images (B, 3, H, W) and integer labels (B,) in
    0..num_classes-1, e.g. a DataLoader. The model runs in eval mode under ``torch.no_grad()`` (its mode is
    restored afterwards) on ``device`` (default: where its parameters are; it must already be there). Memory
    stays constant: each batch's excitations are folded into running sums and dropped. Gates that vary over
    positions are averaged over them per image (:meth:`ExcitationStats.update`).
    """
    mdev = _model_device(model)
    dev = mdev if device is None else torch.device(device)
    if dev.type != mdev.type or (dev.index is not None and mdev.index is not None and dev.index != mdev.index):
        raise ValueError(f"the model is on {mdev} but device={dev}; move it first with model.to({str(dev)!r})")
    selected = resolve_blocks(model, blocks)
    stats = ExcitationStats(list(selected), [m.channels for m in selected.values()], num_classes, low, high)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), capture(model, list(selected), dtype=torch.float64) as cap:
            for i, batch in enumerate(batches):
                if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                    raise ValueError(f"batch {i}: expected (images, labels), got {type(batch).__name__}")
                images, labels = batch[0], batch[1]
                if not isinstance(images, torch.Tensor) or not images.dtype.is_floating_point or images.ndim != 4:
                    desc = (f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor)
                            else type(images).__name__)
                    raise ValueError(f"batch {i}: images must be a float normalised tensor (B, 3, H, W), got {desc}"
                                     "; uint8 images need seresnet.data.normalize first")
                labels = torch.as_tensor(labels)
                if labels.shape != (images.shape[0],):
                    raise ValueError(f"batch {i}: labels must have shape ({images.shape[0]},), "
                                     f"got {tuple(labels.shape)}")
                cap.clear()
                model(images.to(dev))
                stats.update(cap.excitation, labels)
    finally:
        model.train(was_training)
    return stats
