"""SE's successors and rivals: channel (and spatial) attention modules that can take the SE block's place.

Every module maps a feature map ``U`` (B, C, H, W) to a recalibrated map of the same shape, and names its steps as
:class:`~seresnet.se.SEBlock` does, so that :func:`seresnet.hooks.capture` and :func:`seresnet.hooks.steer` work on
all of them unchanged:

* ``squeeze`` (where the module has one): what summarises ``U`` for the gate.
* ``excitation``: its forward output is the gate ``s``: (B, C) per channel, or (B, C, H, W) for gates that vary over
  positions (NoSqueeze, Gather-Excite with a local extent). A hook on it sees (and a steering edit replaces) ``s``.
* ``scale``: how ``s`` is applied to ``U`` (a product, or for GC a sum).

``neutral`` (a class attribute) is the value of ``s`` that leaves ``U`` unchanged: 1 for the gates that multiply,
0 for GC's context term, which is added. ``steer(..., Off())`` sets ``s`` to it.

Which module a model uses is ``SEResNetConfig.attention`` (:data:`ATTENTIONS` lists the names); :func:`build_attention`
builds one from the config's SE options, of which each module uses only some (:data:`ATTENTION_OPTIONS`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .se import (
    GATES,
    SQUEEZE_MODES,
    ChannelScale,
    Excitation,
    GateName,
    SEBlock,
    Squeeze,
    SqueezeMode,
    se_hidden_width,
)

__all__ = [
    "ATTENTIONS",
    "ATTENTION_OPTIONS",
    "AttentionBlock",
    "CBAMBlock",
    "ECABlock",
    "FCABlock",
    "GCBlock",
    "GEBlock",
    "NoSqueezeBlock",
    "SEVar1Block",
    "SEVar2Block",
    "SEVar3Block",
    "build_attention",
    "check_attention_options",
    "dct_frequencies",
    "eca_kernel_size",
    "is_attention_block",
]


def _check_channels(channels: Any) -> int:
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive integer, got {channels!r}")
    return channels


def _check_gate(gate: Any) -> nn.Module:
    if not isinstance(gate, str) or gate not in GATES:
        raise ValueError(f"gate must be one of {tuple(GATES)}, got {gate!r}")
    return GATES[gate]()


def _check_squeeze(mode: Any) -> None:
    if not isinstance(mode, str) or mode not in SQUEEZE_MODES:
        raise ValueError(f"squeeze must be one of {SQUEEZE_MODES}, got {mode!r}")


class GateScale(nn.Module):
    """Multiply a map by a gate: (B, C, H, W) x s -> (B, C, H, W), for ``s`` of shape (B, C) (one factor per channel),
    (B, C, H, W) (one per value) or (B, 1, H, W) (one per position, shared by the channels)."""

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if s.ndim == 2:
            return x * s[:, :, None, None].to(x.dtype)
        return x * s.to(x.dtype)


class ChannelAdd(nn.Module):
    """Add a vector to every position of a map: (B, C, H, W) + (B, C) -> (B, C, H, W) (GC's fusion)."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x + t[:, :, None, None].to(x.dtype)


class AttentionBlock(nn.Module):
    """What the modules of this file share: the channel count, the neutral gate value and the residual units' API.

    Subclasses set ``squeeze`` (optional), ``excitation`` and ``scale`` and may override :meth:`reset_parameters`
    (called by ``SEResNet`` after its generic initialisation, so that each module starts as its paper's code does).
    """

    neutral: ClassVar[float] = 1.0
    #: True when ``excitation`` outputs (B, C, H, W) rather than (B, C).
    spatial_excitation: bool = False

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = _check_channels(channels)

    def forward_after_batchnorm(self, x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
        """``self(bn(x))``: the residual units call this for SE's standard position; only SE has a fused path."""
        return self(bn(x))

    def reset_parameters(self) -> None:
        """Initialise the module's parameters as its paper's released code does (default: PyTorch's own)."""

    def empty_shape(self, kind: str) -> tuple[int, ...]:
        """Shape of an empty record of ``kind`` (``"squeeze"`` or ``"excitation"``), for a capture with no passes."""
        if kind == "excitation" and self.spatial_excitation:
            return (0, self.channels, 0, 0)
        return (0, self.channels)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


# --- ECA-Net -------------------------------------------------------------------------------------------------------
def eca_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """ECA's adaptive kernel size ``k = |log2(C) / gamma + b / gamma|_odd`` (ECA-Net, eq. 12).

    ``|t|_odd`` is the odd number nearest to ``t``; at a tie (``t`` even) the larger one, as the authors' code
    (``int(t)``, plus one if even) and timm compute it. C = 64 -> 3, 256 -> 5, 2048 -> 7.
    """
    _check_channels(channels)
    if not (isinstance(gamma, (int, float)) and gamma > 0) or isinstance(gamma, bool):
        raise ValueError(f"gamma must be a positive number, got {gamma!r}")
    if not isinstance(b, (int, float)) or isinstance(b, bool):
        raise ValueError(f"b must be a number, got {b!r}")
    t = abs(math.log2(channels) / gamma + b / gamma)
    return 2 * math.floor(t / 2) + 1


class ECAExcitation(nn.Module):
    """A 1-D convolution across the channel axis (no bias), then the gate: (B, C) -> (B, C)."""

    def __init__(self, kernel_size: int, gate: GateName = "sigmoid") -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.gate = _check_gate(gate)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.gate(self.conv(z[:, None, :])[:, 0, :])


class ECABlock(AttentionBlock):
    """Efficient Channel Attention (Wang et al., ECA-Net, arXiv 1910.03151, section 3.2).

    ``z = GAP(U)`` (B, C); ``s = sigmoid(conv1d_k(z))``: each channel's weight depends on its ``k`` neighbours along
    the channel axis, with one shared kernel of ``k`` weights (no dimensionality reduction);
    ``U~ = s * U``. ``k = |log2(C) / gamma + b / gamma|_odd`` with ``gamma = 2``, ``b = 1`` (:func:`eca_kernel_size`),
    or ``kernel_size`` (odd) to override it. Parameters: ``k``.
    """

    def __init__(self, channels: int, squeeze: SqueezeMode = "avg", gate: GateName = "sigmoid",
                 kernel_size: int | None = None, gamma: float = 2, b: float = 1) -> None:
        super().__init__(channels)
        _check_squeeze(squeeze)
        if kernel_size is None:
            kernel_size = eca_kernel_size(channels, gamma, b)
        elif isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 \
                or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer (None: adaptive), got {kernel_size!r}")
        self.kernel_size = kernel_size
        self.squeeze = Squeeze(squeeze)
        self.excitation = ECAExcitation(kernel_size, gate)
        self.scale = ChannelScale()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(x, self.excitation(self.squeeze(x)))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}"


# --- SE variants of ECA-Net Table 2 ---------------------------------------------------------------------------------
class GateExcitation(nn.Module):
    """The gate alone, no parameters: (B, C) -> (B, C) (SE-Var1)."""

    def __init__(self, gate: GateName = "sigmoid") -> None:
        super().__init__()
        self.gate = _check_gate(gate)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.gate(z)


class ChannelwiseExcitation(nn.Module):
    """One weight per channel, then the gate: ``s = gate(w * z)``, (B, C) -> (B, C) (SE-Var2, a depthwise FC).

    ``w`` starts at 1 (the block starts as SE-Var1): the paper gives no initialisation, and 1 keeps the gate's input
    at the squeeze's scale, as SE-Var1 has it.
    """

    def __init__(self, channels: int, gate: GateName = "sigmoid") -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.gate = _check_gate(gate)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.gate(z * self.weight.to(z.dtype))


class FullExcitation(nn.Module):
    """One full C x C FC without bias, then the gate: ``s = gate(W z)``, (B, C) -> (B, C) (SE-Var3)."""

    def __init__(self, channels: int, gate: GateName = "sigmoid") -> None:
        super().__init__()
        self.fc = nn.Linear(channels, channels, bias=False)
        self.gate = _check_gate(gate)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.gate(self.fc(z))


class _SqueezeGateBlock(AttentionBlock):
    """Squeeze, an excitation (B, C) -> (B, C), scale: the shape shared by the SE variants."""

    def __init__(self, channels: int, squeeze: SqueezeMode, excitation: nn.Module) -> None:
        super().__init__(channels)
        _check_squeeze(squeeze)
        self.squeeze = Squeeze(squeeze)
        self.excitation = excitation
        self.scale = ChannelScale()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(x, self.excitation(self.squeeze(x)))


class SEVar1Block(_SqueezeGateBlock):
    """SE-Var1 (Wang et al., ECA-Net, arXiv 1910.03151, Table 2): SE without parameters.

    ``z = GAP(U)``; ``s = sigmoid(z)``; ``U~ = s * U``. Parameters: 0.
    """

    def __init__(self, channels: int, squeeze: SqueezeMode = "avg", gate: GateName = "sigmoid") -> None:
        super().__init__(channels, squeeze, GateExcitation(gate))


class SEVar2Block(_SqueezeGateBlock):
    """SE-Var2 (Wang et al., ECA-Net, arXiv 1910.03151, Table 2): one weight per channel, no interaction.

    ``z = GAP(U)``; ``s = sigmoid(w * z)`` with ``w`` in R^C (a depthwise FC); ``U~ = s * U``. Parameters: C.
    """

    def __init__(self, channels: int, squeeze: SqueezeMode = "avg", gate: GateName = "sigmoid") -> None:
        super().__init__(channels, squeeze, ChannelwiseExcitation(_check_channels(channels), gate))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.excitation.weight)


class SEVar3Block(_SqueezeGateBlock):
    """SE-Var3 (Wang et al., ECA-Net, arXiv 1910.03151, Table 2): one full FC, no dimensionality reduction.

    ``z = GAP(U)``; ``s = sigmoid(W z)`` with ``W`` in R^{C x C}, no bias (Table 2 counts C^2 parameters);
    ``U~ = s * U``. Parameters: C^2.
    """

    def __init__(self, channels: int, squeeze: SqueezeMode = "avg", gate: GateName = "sigmoid") -> None:
        super().__init__(channels, squeeze, FullExcitation(_check_channels(channels), gate))


# --- Gather-Excite ---------------------------------------------------------------------------------------------------
class Gather(nn.Module):
    """GE's parameter-free gather: average pooling over the whole map (``extent=None``: (B, C, H, W) -> (B, C)) or
    over windows of an extent ``e`` (kernel ``2e - 1``, stride ``e``: (B, C, H, W) -> (B, C, ceil(H/e), ceil(W/e)))."""

    def __init__(self, extent: int | None = None) -> None:
        super().__init__()
        if extent is not None and (isinstance(extent, bool) or not isinstance(extent, int) or extent < 2):
            raise ValueError(f"extent must be None (global) or an integer >= 2, got {extent!r}")
        self.extent = extent
        self._global = Squeeze("avg")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.extent is None:
            return self._global(x)
        k = 2 * self.extent - 1
        return F.avg_pool2d(x, kernel_size=k, stride=self.extent, padding=k // 2, count_include_pad=False)

    def extra_repr(self) -> str:
        return f"extent={'global' if self.extent is None else self.extent}"


class GEExcite(nn.Module):
    """GE's excite: nearest-neighbour upsampling of the gathered map to H x W, then the gate.

    (B, C) -> (B, C) for a global gather (the upsampled map is constant, so it stays a vector);
    (B, C, h, w) -> (B, C, H, W) otherwise (``size`` = (H, W)).
    """

    def __init__(self, gate: GateName = "sigmoid") -> None:
        super().__init__()
        self.gate = _check_gate(gate)

    def forward(self, z: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if z.ndim == 4:
            if size is None:
                raise ValueError("a local gather (B, C, h, w) needs the map size (H, W) to upsample to")
            z = F.interpolate(z, size=size, mode="nearest")
        return self.gate(z)


class GEBlock(AttentionBlock):
    """Gather-Excite, parameter-free: GE-theta-minus (Hu et al., arXiv 1810.12348, section 3).

    ``U~ = U * sigmoid(interp(xi_G(U)))``: the gather ``xi_G`` averages ``U`` over a spatial extent (global by default,
    or windows of extent ``e``: kernel ``2e - 1``, stride ``e``, as timm's reading of the paper), ``interp`` is
    nearest-neighbour upsampling back to H x W. With the global extent the gate is one value per channel, (B, C):
    SE-Var1. With a local extent it varies over positions, (B, C, H, W). Parameters: 0.
    """

    def __init__(self, channels: int, gate: GateName = "sigmoid", extent: int | None = None) -> None:
        super().__init__(channels)
        self.squeeze = Gather(extent)
        self.excitation = GEExcite(gate)
        self.scale = GateScale()
        self.spatial_excitation = extent is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.squeeze(x)
        return self.scale(x, self.excitation(z, x.shape[-2:]))

    def empty_shape(self, kind: str) -> tuple[int, ...]:
        if kind == "squeeze" and self.spatial_excitation:
            return (0, self.channels, 0, 0)
        return super().empty_shape(kind)


# --- GCNet -----------------------------------------------------------------------------------------------------------
class AttentionPool(nn.Module):
    """GC's context modelling: ``z = sum_j softmax_j(W_k U_j) U_j``, attention pooling (B, C, H, W) -> (B, C).

    ``W_k`` is a 1x1 conv C -> 1 with bias (GCNet's ``conv_mask``); the weighted sum is a batched matrix product, so
    that FLOP counters see it.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.conv_mask(x).flatten(2), dim=-1)  # (B, 1, HW)
        return torch.bmm(x.flatten(2), weights.transpose(1, 2).to(x.dtype))[:, :, 0]


class GCTransform(nn.Module):
    """GC's transform: ``W_v2 ReLU(LN(W_v1 z))``, (B, C) -> (B, C) (the context added to every position)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.norm(self.fc1(z))))


class GCBlock(AttentionBlock):
    """Global Context block (Cao et al., GCNet, arXiv 1904.11492, section 4.2, eq. 3).

    ``z_i = x_i + W_v2 ReLU(LN(W_v1 sum_j [exp(W_k x_j) / sum_m exp(W_k x_m)] x_j))``: attention pooling over all
    positions (``squeeze``, (B, C)), a bottleneck transform C -> C/r -> C with LayerNorm (``excitation``, (B, C)),
    and fusion by *addition* (``scale``). The "excitation" here is the added context vector, so its neutral value
    is 0, not 1 (``steer(..., Off())`` sets it to 0; ``Scale(f)`` scales the added term).

    Hidden width ``max(C // r, min_hidden, 2)``: LayerNorm over a single unit always outputs its bias, which would make
    the transform a constant, so the bottleneck keeps at least 2 units (CIFAR's C = 16 with r = 16 would give 1).
    Initialised as GCNet's code: ``W_k`` Kaiming-normal (fan_in), the last layer zero (the block starts as the
    identity). Parameters: ``C + 1`` (W_k) + ``2 C h + h + C`` (FCs) + ``2 h`` (LN).
    """

    neutral: ClassVar[float] = 0.0

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 1) -> None:
        super().__init__(channels)
        self.hidden = max(se_hidden_width(channels, reduction, min_hidden), 2)
        self.squeeze = AttentionPool(channels)
        self.excitation = GCTransform(channels, self.hidden)
        self.scale = ChannelAdd()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.squeeze.conv_mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.squeeze.conv_mask.bias)
        nn.init.zeros_(self.excitation.fc2.weight)
        nn.init.zeros_(self.excitation.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(x, self.excitation(self.squeeze(x)))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, hidden={self.hidden}"


# --- CBAM ------------------------------------------------------------------------------------------------------------
class AvgMaxPool(nn.Module):
    """Global average and max pooling, stacked: (B, C, H, W) -> (B, 2, C) (row 0 average, row 1 max)."""

    def __init__(self) -> None:
        super().__init__()
        self._avg = Squeeze("avg")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self._avg(x), x.amax(dim=(2, 3))], dim=1)


class SharedMLPExcitation(nn.Module):
    """CBAM's channel gate: one MLP (no biases) on both pooled vectors, summed, then the gate: (B, 2, C) -> (B, C)."""

    def __init__(self, channels: int, hidden: int, gate: GateName = "sigmoid") -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels, bias=False)
        self.gate = _check_gate(gate)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.gate(self.fc2(self.relu(self.fc1(z))).sum(dim=1))


class SpatialGate(nn.Module):
    """CBAM's spatial gate: ``M_s = gate(BN(conv_kxk([mean_c(F); max_c(F)])))``, (B, C, H, W) -> (B, 1, H, W)."""

    def __init__(self, kernel_size: int = 7, gate: GateName = "sigmoid") -> None:
        super().__init__()
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"spatial kernel_size must be a positive odd integer, got {kernel_size!r}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)
        self.gate = _check_gate(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return self.gate(self.bn(self.conv(pooled)))


class CBAMBlock(AttentionBlock):
    """Convolutional Block Attention Module (Woo et al., arXiv 1807.06521, section 3, eqs. 1-3).

    Channel attention, then spatial attention:

    * ``M_c(F) = sigmoid(W1 ReLU(W0 AvgPool(F)) + W1 ReLU(W0 MaxPool(F)))`` (B, C), one MLP C -> C/r -> C shared by
      both descriptors, without biases as in eq. 3 (the authors' code has biases; timm has none);
      ``F' = M_c(F) * F``.
    * ``M_s(F') = sigmoid(f7x7([AvgPool_c(F'); MaxPool_c(F')]))`` (B, 1, H, W); ``F'' = M_s(F') * F'``.

    ``f7x7`` is a 7x7 conv 2 -> 1 followed by a BatchNorm, as in the authors' released code and timm (eq. 4 leaves the
    BN out; in eval mode it is an affine map of the conv's output). Module names: ``squeeze`` (B, 2, C: average and
    max), ``excitation`` (the channel gate, (B, C)), ``scale``, ``spatial_gate`` (its output is ``M_s``, (B, 1, H, W)),
    ``spatial_scale``. Initialised as the authors' code: the spatial BN's weight at 0, so ``M_s`` starts at 0.5.
    Parameters: ``2 C h`` (MLP) + ``2 k^2`` (conv) + 2 (BN).
    """

    #: The neutral value of the spatial gate (it multiplies, like the channel gate).
    spatial_neutral: ClassVar[float] = 1.0

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 1, gate: GateName = "sigmoid",
                 kernel_size: int = 7) -> None:
        super().__init__(channels)
        self.hidden = se_hidden_width(channels, reduction, min_hidden)
        self.squeeze = AvgMaxPool()
        self.excitation = SharedMLPExcitation(channels, self.hidden, gate)
        self.scale = ChannelScale()
        self.spatial_gate = SpatialGate(kernel_size, gate)
        self.spatial_scale = GateScale()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.spatial_gate.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.spatial_gate.bn.weight)
        nn.init.zeros_(self.spatial_gate.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        refined = self.scale(x, self.excitation(self.squeeze(x)))
        return self.spatial_scale(refined, self.spatial_gate(refined))

    def empty_shape(self, kind: str) -> tuple[int, ...]:
        return (0, 2, self.channels) if kind == "squeeze" else super().empty_shape(kind)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, hidden={self.hidden}"


# --- FcaNet ----------------------------------------------------------------------------------------------------------
# FcaNet's frequency selections on the 7x7 DCT grid (u along H, v along W), from the authors' code: "top" ranks the
# 49 components by the accuracy of a single-frequency FcaNet (paper Fig. 4), "low" goes by increasing frequency,
# "bot" is the reverse ranking.
_FCA_FREQUENCIES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "top": ((0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2, 4, 6, 3, 5, 5, 2, 6, 5, 5, 3, 3, 4, 2, 2, 6, 1),
            (0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2, 6, 3, 3, 3, 5, 1, 1, 2, 4, 2, 1, 1, 3, 0, 5, 3)),
    "low": ((0, 0, 1, 1, 0, 2, 2, 1, 2, 0, 3, 4, 0, 1, 3, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 6, 1, 2, 3, 4),
            (0, 1, 0, 1, 2, 0, 1, 2, 2, 3, 0, 0, 4, 3, 1, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3)),
    "bot": ((6, 1, 3, 3, 2, 4, 1, 2, 4, 4, 5, 1, 4, 6, 2, 5, 6, 1, 6, 2, 2, 4, 3, 3, 5, 5, 6, 2, 5, 5, 3, 6),
            (6, 4, 4, 6, 6, 3, 1, 4, 4, 5, 6, 5, 2, 2, 5, 1, 4, 3, 5, 0, 3, 1, 1, 2, 4, 2, 1, 1, 5, 3, 3, 3)),
}


def dct_frequencies(selection: str | Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Frequency pairs (u, v) on the 7x7 DCT grid: ``"top16"`` (FcaNet's default), ``"low4"``, ``"bot8"``, ... (``top``,
    ``low`` or ``bot`` and a count up to 32), or an explicit list of pairs with 0 <= u, v <= 6."""
    if isinstance(selection, str):
        kind, count = selection[:3], selection[3:]
        if kind not in _FCA_FREQUENCIES or not count.isdigit() or not 1 <= int(count) <= 32:
            raise ValueError(f"frequencies must be 'top', 'low' or 'bot' followed by a count 1..32 (e.g. 'top16'), "
                             f"or a list of (u, v) pairs, got {selection!r}")
        us, vs = _FCA_FREQUENCIES[kind]
        return list(zip(us[:int(count)], vs[:int(count)]))
    try:
        pairs = [tuple(p) for p in selection]
    except TypeError:
        raise ValueError(f"frequencies must be a name such as 'top16' or a list of (u, v) pairs, "
                         f"got {selection!r}") from None
    ok = pairs and all(len(p) == 2 and all(isinstance(f, int) and not isinstance(f, bool) and 0 <= f <= 6 for f in p)
                       for p in pairs)
    if not ok:
        raise ValueError(f"frequencies must be a non-empty list of (u, v) pairs with 0 <= u, v <= 6 (the 7x7 grid), "
                         f"got {selection!r}")
    return [(int(u), int(v)) for u, v in pairs]


def _dct_1d(freq: int, size: int) -> torch.Tensor:
    """Orthonormal DCT-II basis vector ``sqrt((2 - [f = 0]) / N) cos(pi f (n + 1/2) / N)``, n = 0..N-1 (float64)."""
    n = torch.arange(size, dtype=torch.float64, device="cpu")
    scale = math.sqrt((1.0 if freq == 0 else 2.0) / size)
    return scale * torch.cos(math.pi * freq * (n + 0.5) / size)


class DCTSqueeze(nn.Module):
    """FcaNet's multi-spectral squeeze: (B, C, H, W) -> (B, C).

    The map is average-pooled to ``size x size`` (adaptive; FcaNet does this when the map is not the basis size),
    the channels are split into as many consecutive groups as frequencies, and group ``i`` is reduced with the 2-D
    DCT basis of frequency ``(u_i, v_i)``: ``z_c = sum_{h,w} U_c[h, w] B^{u_i, v_i}[h, w]``. The basis (C, size,
    size) is a non-persistent buffer, rebuilt from the options (not stored in checkpoints).
    """

    def __init__(self, channels: int, frequencies: list[tuple[int, int]], size: int = 7) -> None:
        super().__init__()
        if isinstance(size, bool) or not isinstance(size, int) or size < 7:
            raise ValueError(f"dct_size must be an integer >= 7 (the frequencies are chosen on a 7x7 grid), "
                             f"got {size!r}")
        if len(frequencies) > channels:
            raise ValueError(f"{len(frequencies)} DCT frequencies need at least as many channels, got {channels}")
        self.size = size
        self.frequencies = frequencies
        # FcaNet scales the 7x7 indices to a larger basis ("(2, 2) in 14x14 is identical to (1, 1) in 7x7")
        step = size // 7
        groups = torch.tensor_split(torch.arange(channels, device="cpu"), len(frequencies))
        # on the CPU even under a device context (e.g. "meta"), so that the values always exist
        basis = torch.zeros(channels, size, size, dtype=torch.float64, device="cpu")
        for (u, v), idx in zip(frequencies, groups):
            basis[idx] = torch.outer(_dct_1d(u * step, size), _dct_1d(v * step, size))
        self._basis64 = basis  # exact values, so that a conversion to float64 is exact (not rounded via float32)
        device = torch.empty(0).device  # where the module's parameters would be created (a device context's)
        self.register_buffer("basis", basis.to(device=device, dtype=torch.get_default_dtype()), persistent=False)

    def _apply(self, fn: Any, recurse: bool = True) -> DCTSqueeze:
        super()._apply(fn, recurse)
        # the converted buffer has the new device and dtype; take its values from the float64 original
        self.basis = self._basis64.to(device=self.basis.device, dtype=self.basis.dtype)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.size, self.size):
            x = F.adaptive_avg_pool2d(x, self.size)
        # (C, B, HW) @ (C, HW, 1): a batched product, which FLOP counters see (an elementwise product and sum is not)
        flat = x.flatten(2).transpose(0, 1)
        return torch.bmm(flat, self.basis.flatten(1).to(x.dtype)[:, :, None])[:, :, 0].transpose(0, 1)

    def extra_repr(self) -> str:
        return f"size={self.size}, frequencies={len(self.frequencies)}"


class FCABlock(AttentionBlock):
    """Frequency channel attention (Qin et al., FcaNet, arXiv 2012.11879, section 3.3, eq. 14).

    ``Freq_i = 2DDCT^{u_i, v_i}(U^i)`` for channel group ``i`` (C / n channels each, one DCT frequency per group);
    ``z = cat(Freq_0, ..., Freq_{n-1})`` (B, C); ``s = sigmoid(W2 ReLU(W1 z))`` (SE's excitation, C -> C/r -> C);
    ``U~ = s * U``. Frequencies: ``"top16"`` (the paper's default selection) or see :func:`dct_frequencies`.

    As FcaNet's code: orthonormal DCT basis (the paper's eq. 1 omits the normalisation), FCs without biases, and any
    map is pooled to ``dct_size`` x ``dct_size`` (7) before the DCT. FcaNet's ImageNet models instead size the basis
    to each stage's map (56, 28, 14, 7); ``dct_size`` picks another size (frequencies scaled by ``dct_size // 7``).
    Channels not divisible by the number of frequencies (FcaNet requires divisibility) are split as evenly as
    possible. Parameters: ``2 C h`` (+ ``h + C`` with ``bias=True``).
    """

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 1, gate: GateName = "sigmoid",
                 frequencies: str | Sequence[tuple[int, int]] = "top16", dct_size: int = 7, bias: bool = False) -> None:
        super().__init__(channels)
        _check_gate(gate)
        self.hidden = se_hidden_width(channels, reduction, min_hidden)
        self.squeeze = DCTSqueeze(channels, dct_frequencies(frequencies), dct_size)
        self.excitation = Excitation(channels, self.hidden, gate=gate, bias=bias)
        self.scale = ChannelScale()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(x, self.excitation(self.squeeze(x)))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, hidden={self.hidden}"


# --- NoSqueeze -------------------------------------------------------------------------------------------------------
class ConvExcitation(nn.Module):
    """SE's excitation with 1x1 convolutions on the whole map: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, hidden: int, gate: GateName = "sigmoid", bias: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=bias)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=bias)
        self.gate = _check_gate(gate)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.gate(self.conv2(self.relu(self.conv1(u))))


class NoSqueezeBlock(AttentionBlock):
    """NoSqueeze (Hu et al., SE paper, arXiv 1709.01507, section 6.3, Table 16): SE without the global pooling.

    ``s = sigmoid(W2 * ReLU(W1 * U))`` with ``W1``, ``W2`` 1x1 convolutions (C -> C/r -> C, with biases, the same
    widths as SE's FCs); ``s`` keeps the spatial dimensions, (B, C, H, W); ``U~ = s * U`` elementwise. There is no
    ``squeeze`` module: the excitation's input is ``U`` itself. The convs start from PyTorch's default initialisation,
    as SE's ``nn.Linear`` FCs do. Parameters: ``2 C h + h + C``, as SE.
    """

    spatial_excitation = True

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 1, gate: GateName = "sigmoid",
                 bias: bool = True) -> None:
        super().__init__(channels)
        self.hidden = se_hidden_width(channels, reduction, min_hidden)
        self.excitation = ConvExcitation(channels, self.hidden, gate, bias)
        self.scale = GateScale()

    def reset_parameters(self) -> None:
        # the model's generic init gives every Conv2d Kaiming-normal weights; SE's FCs keep PyTorch's default
        self.excitation.conv1.reset_parameters()
        self.excitation.conv2.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(x, self.excitation(x))

    def empty_shape(self, kind: str) -> tuple[int, ...]:
        return (0, self.channels, 0, 0)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, hidden={self.hidden}"


# --- registry --------------------------------------------------------------------------------------------------------
ATTENTIONS: dict[str, type[nn.Module]] = {
    "se": SEBlock,
    "eca": ECABlock,
    "se_var1": SEVar1Block,
    "se_var2": SEVar2Block,
    "se_var3": SEVar3Block,
    "ge": GEBlock,
    "gc": GCBlock,
    "cbam": CBAMBlock,
    "fca": FCABlock,
    "nosqueeze": NoSqueezeBlock,
}

#: The SE options of the model config (``reduction``, ``squeeze``, ``gate``, ``min_hidden``) each module uses.
ATTENTION_OPTIONS: dict[str, tuple[str, ...]] = {
    "se": ("reduction", "squeeze", "gate", "min_hidden"),
    "eca": ("squeeze", "gate"),
    "se_var1": ("squeeze", "gate"),
    "se_var2": ("squeeze", "gate"),
    "se_var3": ("squeeze", "gate"),
    "ge": ("gate",),
    "gc": ("reduction", "min_hidden"),
    "cbam": ("reduction", "gate", "min_hidden"),
    "fca": ("reduction", "gate", "min_hidden"),
    "nosqueeze": ("reduction", "gate", "min_hidden"),
}

# SE's defaults: an option a module does not use must keep them (a changed value would silently do nothing)
_OPTION_DEFAULTS: dict[str, Any] = {"reduction": 16, "squeeze": "avg", "gate": "sigmoid", "min_hidden": 1}
_CONFIG_NAMES = {"min_hidden": "se_min_hidden"}


def _check_attention_name(attention: Any) -> None:
    if not isinstance(attention, str) or attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {tuple(ATTENTIONS)}, got {attention!r}")


def check_attention_options(attention: str, **options: Any) -> None:
    """Raise a ``ValueError`` if an option that ``attention`` does not use is set to anything but SE's default
    (e.g. ``gate="tanh"`` for GC, which has no gate): it would otherwise be ignored without a word."""
    _check_attention_name(attention)
    used = ATTENTION_OPTIONS[attention]
    for key, value in options.items():
        if key not in _OPTION_DEFAULTS:
            raise TypeError(f"unknown attention option {key!r}; the config's options are {tuple(_OPTION_DEFAULTS)}")
        if key not in used and value != _OPTION_DEFAULTS[key]:
            name = _CONFIG_NAMES.get(key, key)
            raise ValueError(f"attention {attention!r} does not use {name} (it uses {', '.join(used)}); leave "
                             f"{name} at its default {_OPTION_DEFAULTS[key]!r}, got {value!r}")


def build_attention(channels: int, attention: str = "se", **options: Any) -> nn.Module:
    """The attention module ``attention`` for ``channels`` channels, from SE-style options (``reduction``,
    ``squeeze``, ``gate``, ``min_hidden``); ``"se"`` gets all of them as before. For the other modules, the options
    they do not use must be at SE's defaults (see :func:`check_attention_options`); module-specific options
    (``kernel_size``, ``extent``, ``frequencies``, ...) pass through when the module takes them."""
    _check_attention_name(attention)
    if attention == "se":
        return SEBlock(channels, **options)
    config_options = {k: v for k, v in options.items() if k in _OPTION_DEFAULTS}
    check_attention_options(attention, **config_options)
    used = ATTENTION_OPTIONS[attention]
    kwargs = {k: v for k, v in options.items() if k in used or k not in _OPTION_DEFAULTS}
    return ATTENTIONS[attention](channels, **kwargs)


def is_attention_block(module: nn.Module) -> bool:
    """True for an SE block or any module of this file that takes its place."""
    return isinstance(module, (SEBlock, AttentionBlock))
