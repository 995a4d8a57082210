"""The Squeeze-and-Excitation block (Hu et al., arXiv 1709.01507, section 3).

Given a feature map ``U`` of shape (B, C, H, W) the block computes

* squeeze:    ``z = pool(U)``                      -> (B, C)   (global average or max pooling)
* excitation: ``s = gate(W2 relu(W1 z + b1) + b2)``  -> (B, C)   (W1: C/r x C, W2: C x C/r)
* scale:      ``U~ = s[:, :, None, None] * U``     -> (B, C, H, W)

Each step is a named submodule (``squeeze``, ``excitation`` with ``excitation.gate``, ``scale``) so that a
forward hook on ``squeeze`` sees ``z`` and a hook on ``excitation`` (or ``excitation.gate``) sees ``s``.

Two faster paths give the same values in training: :class:`_FusedSE` in eager mode, and, under ``torch.compile``,
:func:`batchnorm_then_se`, which takes the squeeze from the statistics of the BatchNorm before the block.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import nn

SqueezeMode = Literal["avg", "max"]
GateName = Literal["sigmoid", "hard_sigmoid", "tanh", "relu"]

SQUEEZE_MODES: tuple[str, ...] = ("avg", "max")
GATES: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "hard_sigmoid": nn.Hardsigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
}


def se_hidden_width(channels: int, reduction: int = 16, min_hidden: int = 1) -> int:
    """Width of the excitation bottleneck: ``max(channels // reduction, min_hidden)``.

    ``channels // reduction`` is what the official release uses (SE-ResNet-20 on CIFAR gets 1, 2 and 4 hidden
    units); ``min_hidden`` keeps very small blocks from collapsing to zero units.
    """
    if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
        raise ValueError(f"reduction ratio must be a positive integer (the paper uses 16), got {reduction!r}")
    if isinstance(min_hidden, bool) or not isinstance(min_hidden, int) or min_hidden < 1:
        raise ValueError(f"min_hidden must be a positive integer, got {min_hidden!r}")
    if channels < 1:
        raise ValueError(f"channels must be positive, got {channels}")
    return max(channels // reduction, min_hidden)


def _spatial_mean(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C) mean via ``sum``: in bfloat16 ``mean`` first converts the whole map to float32."""
    return x.sum(dim=(2, 3)).mul_(1.0 / (x.shape[2] * x.shape[3]))


def _scale_channels(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) x (B, C) -> (B, C, H, W), in the dtype of ``x``."""
    return x * s[:, :, None, None].to(x.dtype)


class _GlobalAvgPool(torch.autograd.Function):
    """Global average pooling (B, C, H, W) -> (B, C) whose gradient keeps the input's memory format.

    Why not ``x.mean((2, 3))``: its backward returns a contiguous (NCHW) gradient, which autograd then adds to the
    channels_last gradient of the scale step through a slow strided path (about 10x a plain add for a
    (128, 16, 32, 32) bfloat16 map on this Xeon CPU); and in bfloat16 ``mean`` (and ``sum(dtype=float32)``) convert
    the whole map to float32 first, about 9x slower than ``sum``, which accumulates in float32 internally anyway.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.shape, ctx.dtype = x.shape, x.dtype
        ctx.channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        return _spatial_mean(x)

    @staticmethod
    def backward(ctx: Any, grad_z: torch.Tensor) -> torch.Tensor:
        hw = ctx.shape[2] * ctx.shape[3]
        g = (grad_z / hw).to(ctx.dtype)[:, :, None, None].expand(ctx.shape)
        fmt = torch.channels_last if ctx.channels_last else torch.contiguous_format
        return g.contiguous(memory_format=fmt)


class _FusedSE(torch.autograd.Function):
    """The whole SE block as one autograd node, used for training in eager mode (same values as the modules).

    Why: in the module-by-module graph, ``U`` receives two gradients (through the scale and through the squeeze)
    that autograd materialises and adds, three extra passes over the largest tensor of the block. Here the
    backward computes ``dU = dY * s + dz / HW`` in one ``addcmul``. The excitation still runs as a module inside
    (its forward hooks fire, so capture and steering see and edit ``s`` as usual); its backward is a small
    autograd graph evaluated with ``torch.autograd.grad``.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, excitation: nn.Module, *params: torch.Tensor) -> torch.Tensor:
        z = _spatial_mean(x)
        with torch.enable_grad():
            z_leaf = z.detach().requires_grad_()
            s = excitation(z_leaf)
        ctx.save_for_backward(x, s.detach())
        ctx.z_leaf, ctx.s_graph, ctx.params = z_leaf, s, params
        return _scale_channels(x, s.detach())

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, s = ctx.saved_tensors
        s_map = s.to(grad_out.dtype)[:, :, None, None]
        grad_s = (grad_out * x).sum(dim=(2, 3)).to(s.dtype)
        trainable = [p for p in ctx.params if p.requires_grad]
        grad_z, param_grads = None, {}
        if ctx.s_graph.requires_grad:  # False when steering replaced s by a constant
            grads = torch.autograd.grad(ctx.s_graph, [ctx.z_leaf, *trainable], grad_s, allow_unused=True)
            grad_z, param_grads = grads[0], {id(p): g for p, g in zip(trainable, grads[1:])}
        ctx.s_graph = ctx.z_leaf = None  # free the small graph now
        grad_x = None
        if ctx.needs_input_grad[0]:
            if grad_z is None:
                grad_x = grad_out * s_map
            else:
                hw = x.shape[2] * x.shape[3]
                grad_x = torch.addcmul((grad_z / hw).to(grad_out.dtype)[:, :, None, None], grad_out, s_map)
        return (grad_x, None, *(param_grads.get(id(p)) for p in ctx.params))


def batchnorm_then_se(x: torch.Tensor, bn: nn.BatchNorm2d, excitation: nn.Module) -> torch.Tensor:
    """``SE(bn(x))`` for a BatchNorm2d in training mode, with the squeeze taken from the BN's own statistics pass.

    In training, BN is an affine map per channel, ``bn(x) = (x - mean) * scale + beta`` with the batch statistics,
    so the squeeze of its output is ``z = (mean_hw(x) - mean) * scale + beta``. The per-image channel means
    ``mean_hw(x)`` (and variances) are also what the batch statistics are made of (law of total variance), so one
    reduction over ``x`` gives both; the BN and the scale by ``s`` collapse into one elementwise
    ``(x - mean) * a + b`` with ``a = s * scale``, ``b = s * beta``. The SE block then adds no pass over the
    feature map of its own (BENCHMARKS.md measures it under inductor). In eager mode the upcast and the separate
    ops cost more than they save, so :class:`SEBlock` uses it only under ``torch.compile``.

    Same values as ``bn`` followed by the SE block (to rounding): output, gradients of ``x`` and of every
    parameter, and the running statistics (updated as ``nn.BatchNorm2d`` does; needs a numeric ``momentum``).
    """
    n, _, h, w = x.shape
    count = n * h * w
    # per image and channel, in float32 at least: the batch statistics must not be rounded to bfloat16
    var_i, mean_i = torch.var_mean(x.to(torch.promote_types(x.dtype, torch.float32)), dim=(2, 3), correction=0)
    mean = mean_i.mean(0)
    var = var_i.mean(0) + (mean_i - mean).square().mean(0)  # within-image + between-image variance
    if bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None:
        with torch.no_grad():
            if bn.num_batches_tracked is not None:
                bn.num_batches_tracked.add_(1)
            bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), bn.momentum)
            bn.running_var.lerp_((var * (count / (count - 1))).to(bn.running_var.dtype), bn.momentum)
    scale = torch.rsqrt(var + bn.eps)  # per channel: bn(x) = (x - mean) * scale + beta
    if bn.weight is not None:
        scale = scale * bn.weight
    beta = bn.bias if bn.bias is not None else torch.zeros_like(scale)
    s = excitation((mean_i - mean) * scale + beta)  # the squeeze z = mean_hw(bn(x)), without computing bn(x)
    # a and b stay in float32 and x is centred first: in bfloat16, a * x + b would cancel digits when |mean| >> std
    a, b = (s * scale)[:, :, None, None], (s * beta)[:, :, None, None]
    return ((x - mean[:, None, None]) * a + b).to(x.dtype)


def _compiling() -> bool:
    """True while torch.compile traces (a function of its own so that tests can run the compiled-only path)."""
    return torch.compiler.is_compiling()


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _global_hooks() -> bool:
    return bool(nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks)


class Squeeze(nn.Module):
    """Global spatial pooling to a channel descriptor: (B, C, H, W) -> (B, C)."""

    def __init__(self, mode: SqueezeMode = "avg") -> None:
        super().__init__()
        if mode not in SQUEEZE_MODES:
            raise ValueError(f"squeeze must be one of {SQUEEZE_MODES}, got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "avg":
            if _compiling():  # inductor fuses a plain mean better than the eager workaround
                return x.mean(dim=(2, 3))
            return _GlobalAvgPool.apply(x)
        return x.amax(dim=(2, 3))

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


class Excitation(nn.Module):
    """Two fully connected layers around a ReLU, then a gate: (B, C) -> (B, C) channel weights ``s``."""

    def __init__(self, channels: int, hidden: int, gate: GateName = "sigmoid", bias: bool = True) -> None:
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"gate must be one of {tuple(GATES)}, got {gate!r}")
        self.fc1 = nn.Linear(channels, hidden, bias=bias)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels, bias=bias)
        self.gate = GATES[gate]()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.gate(self.fc2(self.relu(self.fc1(z))))


class ChannelScale(nn.Module):
    """Multiply each channel of a feature map by its weight: (B, C, H, W) x (B, C) -> (B, C, H, W)."""

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return _scale_channels(x, s)


class SEBlock(nn.Module):
    """Squeeze-and-Excitation: recalibrate the channels of a (B, C, H, W) feature map.

    Args:
        channels: number of channels C of the feature map.
        reduction: reduction ratio r; the hidden width is ``max(C // r, min_hidden)``.
        squeeze: ``"avg"`` (the paper's choice) or ``"max"`` global pooling.
        gate: ``"sigmoid"`` (paper), ``"hard_sigmoid"``, ``"tanh"`` or ``"relu"`` (paper Table 12).
        min_hidden: smallest hidden width.
        bias: bias in both FC layers, as in the official release.
        fused: in eager training, run the block as one autograd node (:class:`_FusedSE`: same values, fewer
            passes over memory), and under ``torch.compile`` take the squeeze from the BN before the block
            (:meth:`forward_after_batchnorm`). Set to False to always run ``squeeze``, ``excitation`` and ``scale``
            one by one (needed for second derivatives, e.g. gradient penalties: the fused backward is not
            differentiable).

    ``neutral``: the value of ``s`` that leaves ``U`` unchanged (1: the block multiplies), what ``Off()`` sets.
    """

    neutral: ClassVar[float] = 1.0

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        squeeze: SqueezeMode = "avg",
        gate: GateName = "sigmoid",
        min_hidden: int = 1,
        bias: bool = True,
        fused: bool = True,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.fused = fused
        self.hidden = se_hidden_width(channels, reduction, min_hidden)
        self.squeeze = Squeeze(squeeze)
        self.excitation = Excitation(channels, self.hidden, gate=gate, bias=bias)
        self.scale = ChannelScale()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:  # else a matmul error deep in the excitation
            raise ValueError(f"SEBlock({self.channels}) expects a (B, {self.channels}, H, W) feature map, got shape "
                             f"{tuple(x.shape)}")
        if self._use_fused(x):
            return _FusedSE.apply(x, self.excitation, *self.excitation.parameters())
        z = self.squeeze(x)
        s = self.excitation(z)
        return self.scale(x, s)

    def forward_after_batchnorm(self, x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
        """``self(bn(x))``: the block applied to the output of ``bn``, given the BN's input ``x`` (B, C, H, W).

        The residual units call this for the standard integration (SE right after the branch's last BN). Under
        ``torch.compile`` in training it runs :func:`batchnorm_then_se`, which needs no pass of its own over the
        feature map; everywhere else, or when hooks on the bypassed modules (the block itself, ``squeeze``,
        ``scale``, ``bn``) must see their tensors, it is exactly ``self(bn(x))``.
        """
        if self._use_batchnorm_squeeze(x, bn):
            return batchnorm_then_se(x, bn, self.excitation)
        return self(bn(x))

    def _use_fused(self, x: torch.Tensor) -> bool:
        """Fused training path: eager, gradients wanted, average squeeze, no hooks on the modules it bypasses."""
        return (self.fused and x.requires_grad and torch.is_grad_enabled() and self.squeeze.mode == "avg"
                and x.dim() == 4 and not _compiling() and not _has_hooks(self.squeeze)
                and not _has_hooks(self.scale) and not _global_hooks())

    def _use_batchnorm_squeeze(self, x: torch.Tensor, bn: nn.BatchNorm2d) -> bool:
        """Compiled training path: a plain BatchNorm2d in training mode, average squeeze, nothing hooked that it
        bypasses, and more than one value per channel (else ``bn`` raises its own error)."""
        return (self.fused and _compiling() and bn.training and type(bn) is nn.BatchNorm2d
                and isinstance(bn.momentum, float) and self.squeeze.mode == "avg" and x.dim() == 4
                and x.shape[0] * x.shape[2] * x.shape[3] > 1
                and not any(_has_hooks(m) for m in (self, self.squeeze, self.scale, bn)) and not _global_hooks())

    def extra_repr(self) -> str:
        return f"channels={self.channels}, hidden={self.hidden}"
