"""The architecture of SE-ResNets in numbers and pictures (notebooks 01 and 02).

* ``se_cost(channels, reduction, block)``: what an SE block costs in parameters next to the convolutions of the
  residual unit it sits in; ``se_cost_explorer()`` is the same as a widget with sliders.
* ``integration_layout`` / ``draw_integration_variants()``: where the SE block sits in a residual unit for every
  integration mode (paper Fig. 5, Tables 14 and 15), drawn as block diagrams side by side.
* ``stage_table(model)``: the paper's Table 1 regenerated from a model: one row per stage with its output size,
  layers, SE FC widths, number of units, parameters and multiply-adds.
* ``compare_with_paper()``: our parameter and multiply-add counts next to the paper's and published ones.
* ``architecture_explorer()``: a widget to browse ``stage_table`` over depths, integration modes and ratios.

Shapes and counts come from models built on PyTorch's ``meta`` device: layers have shapes but no storage, so even
SE-ResNet-152 is built and traced in a fraction of a second and a widget can redraw immediately.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from unittest import mock

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyBboxPatch, Patch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .blocks import INTEGRATIONS, BasicBlock, Bottleneck
from .model import SEResNet, SEResNetConfig, count_params, get_config, list_models
from .report import FigureImage, Table
from .se import SEBlock, se_hidden_width

__all__ = [
    "CHANNEL_CHOICES",
    "INTEGRATION_TITLES",
    "PAPER_GFLOPS",
    "REDUCTION_CHOICES",
    "REFERENCE_PARAMS",
    "ArchitectureExplorer",
    "SECost",
    "SECostExplorer",
    "architecture_explorer",
    "compare_with_paper",
    "draw_integration_variants",
    "integration_costs",
    "integration_layout",
    "meta_model",
    "plot_se_steps",
    "plot_stage_costs",
    "se_cost",
    "se_cost_explorer",
    "se_param_formula",
    "stage_table",
    "stage_table_view",
    "unit_conv_params",
]

CHANNEL_CHOICES: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024, 2048)
REDUCTION_CHOICES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)

# Paper Table 2 (single-crop ImageNet, 224 x 224): GFLOPs of the paper's ResNets and SE-ResNets. The paper's
# networks put the stride on the first 1x1 conv of a downsampling bottleneck (stride_on="1x1" here).
PAPER_GFLOPS: dict[str, float] = {
    "resnet50": 3.86, "se_resnet50": 3.87, "resnet101": 7.58, "se_resnet101": 7.60,
    "resnet152": 11.30, "se_resnet152": 11.32,
}
# Exact parameter counts of published implementations of the same architectures (see /work/shared/paper-notes.md):
# the paper rounds them (Table 10: ResNet-50 25.6M, SE-ResNet-50 28.1M).
REFERENCE_PARAMS: dict[str, tuple[int, str]] = {
    "resnet20": (272_474, "published CIFAR model collection"),
    "se_resnet20": (274_847, "published CIFAR model collection"),
    "resnet50": (25_557_032, "torchvision; paper Table 10: 25.6M"),
    "se_resnet50": (28_088_024, "timm seresnet50; paper Table 10: 28.1M"),
    "resnet101": (44_549_160, "torchvision resnet101"),
    "se_resnet101": (49_326_872, "timm seresnet101"),
    "resnet152": (60_192_808, "torchvision resnet152"),
    "se_resnet152": (66_821_848, "timm seresnet152"),
}

INTEGRATION_TITLES: dict[str, str] = {
    "none": "ResNet unit (no SE)",
    "standard": "Standard SE",
    "pre": "SE-PRE",
    "post": "SE-POST",
    "identity": "SE-Identity",
    "3x3": "SE_3x3",
}
# ImageNet top-1 / top-5 error (%) of SE-ResNet-50 with each integration (paper Tables 10, 14 and 15).
PAPER_INTEGRATION_RESULTS: dict[str, str] = {
    "none": "ResNet-50: 23.30 / 6.55\n(paper Table 10)",
    "standard": "22.28 / 6.03\n(paper Table 14)",
    "pre": "22.23 / 6.00\n(paper Table 14)",
    "post": "22.78 / 6.35\n(paper Table 14)",
    "identity": "22.20 / 6.15\n(paper Table 14)",
    "3x3": "22.48 / 6.02, 26.5M params\n(paper Table 15)",
}


# --- models without storage ----------------------------------------------------------------------------------
def _config_of(model: SEResNet | SEResNetConfig | str, **overrides: Any) -> SEResNetConfig:
    if isinstance(model, str):
        return get_config(model, **overrides)
    if isinstance(model, SEResNet):
        cfg = model.config
    elif isinstance(model, SEResNetConfig):
        cfg = model
    else:
        raise TypeError(f"expected a model name, an SEResNetConfig or an SEResNet, got {type(model).__name__}")
    return cfg.replace(**overrides) if overrides else cfg


@functools.lru_cache(maxsize=64)
def meta_model(config: SEResNetConfig) -> SEResNet:
    """An ``SEResNet`` on the ``meta`` device (shapes only, no memory, built in milliseconds); cached per config."""
    with torch.device("meta"):
        return SEResNet(config).eval()


@dataclass(frozen=True)
class _Profile:
    """Shapes and multiply-adds of one forward pass of one image, per top-level child of the network (``se_macs``:
    the part spent in SE blocks)."""

    stem_conv_size: tuple[int, int]
    output_sizes: dict[str, tuple[int, int]]
    macs: dict[str, int]
    se_macs: dict[str, int]


@functools.lru_cache(maxsize=64)
def _profile(config: SEResNetConfig) -> _Profile:
    model = meta_model(config)
    sizes: dict[str, tuple[int, int]] = {}
    macs: dict[str, int] = {}
    se_macs: dict[str, int] = {}
    handles = []

    def size_hook(name: str):
        def hook(module: nn.Module, args: Any, out: torch.Tensor) -> None:
            sizes[name] = (int(out.shape[-2]), int(out.shape[-1])) if out.ndim == 4 else (1, 1)
        return hook

    for name, child in model.named_children():
        handles.append(child.register_forward_hook(size_hook(name)))
    handles.append(model.stem.conv.register_forward_hook(size_hook("stem.conv")))
    try:
        # Batch norm changes no shape and no count, and on the meta device it runs through slow Python
        # decompositions (about two thirds of the time of this trace): skip it while tracing.
        # FlopCounterMode counts every matmul and convolution (1-d too) on the meta device, per module: pooling,
        # BN and the gate's scaling are not counted, as in the paper's FLOP counts.
        with torch.no_grad(), mock.patch.object(nn.BatchNorm2d, "forward", lambda self, x: x), \
                FlopCounterMode(display=False) as counter:
            model(torch.empty(1, config.in_chans, config.input_size, config.input_size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    root = type(model).__name__
    flops = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    for name, child in model.named_children():
        macs[name] = flops.get(f"{root}.{name}", 0) // 2
        # the attention module of every residual unit (SE or any module of seresnet.attention) sits at unit.se
        units = range(len(child)) if isinstance(child, nn.Sequential) else ()
        se_macs[name] = sum(flops.get(f"{root}.{name}.{i}.se", 0) for i in units) // 2
    return _Profile(sizes.pop("stem.conv"), sizes, macs, se_macs)


# --- the cost of an SE block ---------------------------------------------------------------------------------
def se_param_formula(channels: int, reduction: int = 16, bias: bool = True, min_hidden: int = 1) -> int:
    """Parameters of an SE block by the formula: two FC layers C -> h -> C with h = max(C // r, min_hidden),
    ``2 C h + h + C`` with biases (``2 C^2 / r + C / r + C`` when r divides C)."""
    h = se_hidden_width(channels, reduction, min_hidden)
    return 2 * channels * h + ((h + channels) if bias else 0)


def unit_conv_params(channels: int, block: str = "bottleneck") -> int:
    """Conv weights of a residual unit (no SE, no downsampling) whose output has ``channels`` channels.

    Basic unit: two 3x3 convs C -> C (``18 C^2``). Bottleneck: 1x1 C -> C/4, 3x3 C/4 -> C/4, 1x1 C/4 -> C
    (``17 C^2 / 16``). Counted on a unit built on the meta device.
    """
    if block not in ("basic", "bottleneck"):
        raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
    if block == "bottleneck" and channels % 4:
        raise ValueError(f"a bottleneck unit outputs 4 x planes channels; {channels} is not a multiple of 4")
    with torch.device("meta"):
        unit = (BasicBlock(channels, channels, integration="none") if block == "basic"
                else Bottleneck(channels, channels // 4, integration="none"))
    return sum(m.weight.numel() for m in unit.modules() if isinstance(m, nn.Conv2d))


@dataclass(frozen=True)
class SECost:
    """The parameter cost of one SE block next to the conv weights of its residual unit."""

    channels: int
    reduction: int
    block: str
    hidden: int
    se_params: int
    formula_params: int
    unit_conv_params: int

    @property
    def ratio(self) -> float:
        """SE parameters / conv weights of the unit."""
        return self.se_params / self.unit_conv_params

    def describe(self) -> str:
        """A short text with the formula and the numbers."""
        c, r, h = self.channels, self.reduction, self.hidden
        return (f"C = {c}, r = {r}: hidden width h = max(C // r, 1) = {h}; SE parameters 2·C·h + h + C = "
                f"{self.formula_params:,} (counted on an SEBlock: {self.se_params:,}); conv weights of the "
                f"{self.block} unit: {self.unit_conv_params:,}; SE adds {100 * self.ratio:.2f}%")


def se_cost(channels: int, reduction: int = 16, block: str = "bottleneck") -> SECost:
    """Build an ``SEBlock(channels, reduction)`` (on the meta device) and count its parameters."""
    with torch.device("meta"):
        se = SEBlock(channels, reduction)
    return SECost(channels, reduction, block, se.hidden, count_params(se), se_param_formula(channels, reduction),
                  unit_conv_params(channels, block))


class SECostExplorer:
    """Sliders for the channel count C and the reduction ratio r, and the SE block's parameter cost, live.

    Left: conv weights of the residual unit vs the SE block's parameters (bars). Right: the SE block's parameters
    as a percentage of the unit's conv weights for every r, at the current C and unit type. ``widget`` is the
    ipywidgets box to display (a notebook cell ending in the explorer shows it); ``channels``, ``reduction`` and
    ``block`` are the controls, ``cost`` the current ``SECost`` and ``figure`` the matplotlib figure.
    """

    def __init__(self, channels: int = 256, reduction: int = 16, block: str = "bottleneck") -> None:
        import ipywidgets as widgets

        if channels not in CHANNEL_CHOICES:
            raise ValueError(f"channels must be one of {CHANNEL_CHOICES}, got {channels!r}")
        if reduction not in REDUCTION_CHOICES:
            raise ValueError(f"reduction must be one of {REDUCTION_CHOICES}, got {reduction!r}")
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
        self.channels = widgets.SelectionSlider(options=CHANNEL_CHOICES, value=channels, description="channels C",
                                                continuous_update=True, style={"description_width": "initial"})
        self.reduction = widgets.SelectionSlider(options=REDUCTION_CHOICES, value=reduction,
                                                 description="reduction r", continuous_update=True,
                                                 style={"description_width": "initial"})
        self.block = widgets.ToggleButtons(options=["basic", "bottleneck"], value=block, description="unit")
        self.text = widgets.HTML()
        self.image = FigureImage(figsize=(9.0, 3.2), ncols=2, margins={"left": 0.1, "wspace": 0.32})
        self.figure = self.image.figure
        self.bar_ax, self.ratio_ax = self.image.axes
        self.cost: SECost = se_cost(channels, reduction, block)
        self.redraws = 0
        self.widget = widgets.VBox([widgets.HBox([self.channels, self.reduction]), self.block, self.text,
                                    self.image.widget])
        for w in (self.channels, self.reduction, self.block):
            w.observe(self.update, names="value")
        self.update()

    def update(self, change: Any = None) -> None:
        """Recompute the cost for the current controls and redraw the figure in place."""
        c, r, block = self.channels.value, self.reduction.value, self.block.value
        self.cost = cost = se_cost(c, r, block)
        self.text.value = f"<p>{cost.describe()}</p>"
        ax = self.bar_ax
        ax.clear()
        bars = ax.barh(["unit convs", "SE block"], [cost.unit_conv_params, cost.se_params],
                       color=["#7da7d9", "#f4a259"])
        # A log axis: at C = 2048 the SE block is under 1% of the unit and would vanish on a linear one.
        ax.set_xscale("log")
        ax.set_xlim(10, cost.unit_conv_params * 30)
        ax.bar_label(bars, labels=[f"{cost.unit_conv_params:,}", f"{cost.se_params:,}"], padding=3,
                     fontsize="small")
        ax.set_xlabel("parameters (log scale)")
        ax.set_title(f"{block} unit with C = {c}, r = {r}")
        ax = self.ratio_ax
        ax.clear()
        ratios = [100 * se_param_formula(c, rr) / cost.unit_conv_params for rr in REDUCTION_CHOICES]
        ax.plot(REDUCTION_CHOICES, ratios, "o-", color="#f4a259", label=f"C = {c}, {block} unit")
        ax.plot([r], [100 * cost.ratio], "s", color="black", markersize=8, label=f"current r = {r}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(REDUCTION_CHOICES, [str(x) for x in REDUCTION_CHOICES])
        ax.set_xlabel("reduction ratio r")
        ax.set_ylabel("SE params / unit conv weights (%)")
        ax.set_title("Cost of SE for every r")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        self.image.redraw()
        self.redraws += 1

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def se_cost_explorer(channels: int = 256, reduction: int = 16, block: str = "bottleneck") -> SECostExplorer:
    """The SE cost widget (see ``SECostExplorer``); display it by ending a notebook cell with it."""
    return SECostExplorer(channels, reduction, block)


def plot_se_steps(
    z: torch.Tensor, s: torch.Tensor, image: torch.Tensor | None = None, title: str | None = None,
    fig: Figure | None = None,
) -> Figure:
    """One image through an SE block: the image (optional), its squeeze ``z`` and its excitation ``s`` per channel.

    ``z`` and ``s`` are (C,) (or (1, C)); ``image`` is uint8 (3, H, W). Channels are in their natural order in both
    bar charts so a channel can be followed from ``z`` to ``s``.
    """
    z, s = torch.as_tensor(z).detach().float(), torch.as_tensor(s).detach().float()
    for name, t in (("z", z), ("s", s)):
        if not (t.ndim == 1 or (t.ndim == 2 and t.shape[0] == 1)):  # a batch would be drawn as one long "image"
            raise ValueError(f"{name} must be one image's (C,) or (1, C) vector, got shape {tuple(t.shape)}; pick "
                             f"one image, e.g. {name}[0]")
    z, s = z.reshape(-1), s.reshape(-1)
    if z.shape != s.shape:
        raise ValueError(f"z and s must have the same number of channels, got {tuple(z.shape)} and {tuple(s.shape)}")
    n = 3 if image is not None else 2
    if fig is None:
        fig = Figure(figsize=(4.2 * n, 3.2), layout="constrained")
    else:
        fig.clear()
    axes = list(fig.subplots(1, n, width_ratios=[0.6, 1, 1] if n == 3 else None))
    if image is not None:
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image must be (3, H, W), got {tuple(image.shape)}")
        ax = axes.pop(0)
        ax.imshow(image.permute(1, 2, 0).cpu().numpy())
        ax.set_title("input image")
        ax.set_xlabel(f"{image.shape[2]} px")
        ax.set_ylabel(f"{image.shape[1]} px")
        ax.set_xticks([])
        ax.set_yticks([])
    ch = np.arange(z.numel())
    axes[0].bar(ch, z.numpy(), color="#7da7d9", width=0.9)
    axes[0].set_xlabel("channel c")
    axes[0].set_ylabel("z_c (mean of u_c over H x W)")
    axes[0].set_title("Squeeze: one number per channel")
    axes[1].bar(ch, s.numpy(), color="#f4a259", width=0.9)
    axes[1].axhline(0.5, color="gray", lw=0.8, ls="--", label="s = 0.5 (gate half open)")
    axes[1].set_ylim(0, 1.05)
    axes[1].set_xlabel("channel c")
    axes[1].set_ylabel("s_c = gate output")
    axes[1].set_title("Excitation: a weight per channel")
    axes[1].legend(fontsize="small", loc="lower right")
    if title:
        fig.suptitle(title)
    return fig


# --- where the block sits: diagrams -----------------------------------------------------------------------------
_BRANCH = {
    "bottleneck": ["1x1 conv\nBN, ReLU", "3x3 conv\nBN, ReLU", "1x1 conv\nBN"],
    "basic": ["3x3 conv\nBN, ReLU", "3x3 conv\nBN"],
}


def integration_layout(integration: str, block: str = "bottleneck") -> dict[str, list[str]]:
    """The layers of a residual unit for one integration mode, as drawn by ``draw_integration_variants``.

    Returns ``{"branch": [...], "identity": [...], "after": [...]}``: the residual branch top to bottom, what sits
    on the identity path, and what follows the addition; the SE block is the entry ``"SE"``. The order follows
    ``seresnet.blocks`` (the tests check it against the modules a real unit runs).
    """
    if block not in _BRANCH:
        raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
    if integration not in INTEGRATIONS:
        raise ValueError(f"integration must be one of {INTEGRATIONS}, got {integration!r}")
    if integration == "3x3" and block != "bottleneck":
        raise ValueError("integration '3x3' (SE after the 3x3 conv) exists only for bottleneck units")
    branch = list(_BRANCH[block])
    identity: list[str] = []
    after = ["ReLU"]
    if integration == "standard":
        branch.append("SE")
    elif integration == "pre":
        branch.insert(0, "SE")
    elif integration == "post":
        after.append("SE")
    elif integration == "identity":
        identity.append("SE")
    elif integration == "3x3":
        branch.insert(2, "SE")
    return {"branch": branch, "identity": identity, "after": after}


_COLORS = {"conv": "#cfe0f3", "SE": "#f4a259", "ReLU": "#e6e6e6", "io": "#ffffff"}


def _box(ax, x: float, y: float, text: str, kind: str, w: float = 1.3, h: float = 0.7) -> None:
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.03,rounding_size=0.12",
                                fc=_COLORS[kind], ec="black", lw=1))
    ax.text(x, y, text, ha="center", va="center", fontsize=8, fontweight="bold" if kind == "SE" else "normal")


def _arrow(ax, x0: float, y0: float, x1: float, y1: float) -> None:
    ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=dict(arrowstyle="-|>", lw=1, color="black",
                                                                   shrinkA=0, shrinkB=0))


def _draw_unit(ax, integration: str, block: str, rows: int) -> None:
    lay = integration_layout(integration, block)
    xb, xi, h = 0.9, 2.2, 0.7
    y = 0.0
    _box(ax, xb, y, "input x", "io", w=1.1, h=0.5)
    top_y = y
    prev = y - 0.25
    for label in lay["branch"]:
        y -= 1
        _arrow(ax, xb, prev, xb, y + h / 2)
        _box(ax, xb, y, label, "SE" if label == "SE" else "conv")
        prev = y - h / 2
    # the addition sits at the same height in every panel so the panels line up
    y_sum = -(rows + 1)
    _arrow(ax, xb, prev, xb, y_sum + 0.22)
    ax.add_patch(Circle((xb, y_sum), 0.22, fc="white", ec="black", lw=1))
    ax.text(xb, y_sum, "+", ha="center", va="center", fontsize=12)
    # identity path: right from the input, down, and back into the addition
    ax.plot([xb + 0.55, xi], [top_y, top_y], color="black", lw=1)
    if lay["identity"]:
        y_se = (top_y + y_sum) / 2
        ax.plot([xi, xi], [top_y, y_se + h / 2], color="black", lw=1)
        _box(ax, xi, y_se, "SE", "SE", w=0.8)
        ax.plot([xi, xi], [y_se - h / 2, y_sum], color="black", lw=1)
    else:
        ax.plot([xi, xi], [top_y, y_sum], color="black", lw=1)
    ax.text(xi + 0.08, y_sum + 1.0, "identity path", rotation=90, ha="left", va="center", fontsize=7,
            color="dimgray")
    _arrow(ax, xi, y_sum, xb + 0.22, y_sum)
    prev = y_sum - 0.22
    y = y_sum
    for label in lay["after"]:
        y -= 1
        _arrow(ax, xb, prev, xb, y + h / 2)
        _box(ax, xb, y, label, "SE" if label == "SE" else "ReLU", w=1.1 if label == "ReLU" else 1.3)
        prev = y - h / 2
    y -= 0.9
    _arrow(ax, xb, prev, xb, y + 0.25)
    _box(ax, xb, y, "output", "io", w=1.1, h=0.5)


def draw_integration_variants(
    variants: Sequence[str] | None = None, block: str = "bottleneck", fig: Figure | None = None,
) -> Figure:
    """Block diagrams of a residual unit with the SE block in each integration mode, side by side.

    ``variants`` default: all modes the unit type supports, plain unit first (paper Fig. 5 and Table 15). Each
    panel's x label gives the paper's ImageNet top-1 / top-5 error of SE-ResNet-50 with that integration.
    Returns the figure (a new one unless ``fig`` is given).
    """
    if variants is None:
        variants = [v for v in ("none", "standard", "pre", "post", "identity", "3x3")
                    if block == "bottleneck" or v != "3x3"]
    variants = list(variants)
    if not variants:
        raise ValueError("variants is empty: give at least one integration mode")
    layouts = [integration_layout(v, block) for v in variants]  # validates every name first
    rows = max(len(lay["branch"]) for lay in layouts)
    after = max(len(lay["after"]) for lay in layouts)
    if fig is None:
        fig = Figure(figsize=(2.3 * len(variants), 1.2 + 0.62 * (rows + after + 3)), layout="constrained")
    else:
        fig.clear()
    axes = fig.subplots(1, len(variants), squeeze=False)[0]
    for ax, v in zip(axes, variants):
        _draw_unit(ax, v, block, rows)
        ax.set_xlim(0.1, 2.8)
        ax.set_ylim(-(rows + after + 2.3), 0.45)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_title(f"{INTEGRATION_TITLES[v]}\n(integration={v!r})", fontsize=10)
        ax.set_xlabel("top-1 / top-5 error (%):\n" + PAPER_INTEGRATION_RESULTS[v], fontsize=8)
    handles = [Patch(fc=_COLORS["conv"], ec="black", label="conv + BN (+ ReLU)"),
               Patch(fc=_COLORS["SE"], ec="black", label="SE block"),
               Patch(fc=_COLORS["ReLU"], ec="black", label="ReLU after the addition")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=9)
    fig.suptitle(f"Where the SE block sits in a {block} residual unit (paper Fig. 5, Tables 14-15)\n"
                 "below each unit: SE-ResNet-50 with that integration on ImageNet (the paper's ablation)",
                 fontsize=11)
    return fig


# --- Table 1 ---------------------------------------------------------------------------------------------------
def _conv_spec(conv: nn.Conv2d, with_stride: bool = False) -> str:
    k = conv.kernel_size
    s = f"{k[0]}x{k[1]}, {conv.out_channels}"
    if with_stride and conv.stride[0] > 1:
        s += f", stride {conv.stride[0]}"
    return s


def stage_table(model: SEResNet | SEResNetConfig | str, **overrides: Any) -> list[dict[str, Any]]:
    """The paper's Table 1 for ``model`` (a model, its config or a registered name with overrides).

    One record per row: ``stage`` (``conv1``, ``conv2_x``, ..., ``fc``), ``module`` (attribute path),
    ``output_size`` (``"56x56"``), ``block`` (list of layer specs of one unit, e.g. ``["1x1, 64", "3x3, 64",
    "1x1, 256"]``), ``se_fc`` (the SE FC widths ``[C/r, C]`` of the stage's units, or None), ``units``,
    ``params``, ``se_params``, ``macs`` (multiply-adds of one image at the config's ``input_size``) and
    ``se_macs`` (the part of ``macs`` spent in SE blocks).
    """
    cfg = _config_of(model, **overrides)
    net = meta_model(cfg)
    prof = _profile(cfg)
    stem = net.stem
    stem_block = [_conv_spec(stem.conv, with_stride=True)]
    records: list[dict[str, Any]] = [{
        "stage": "conv1", "module": "stem", "output_size": "x".join(map(str, prof.stem_conv_size)),
        "block": stem_block, "se_fc": None, "units": 1, "params": count_params(stem), "se_params": 0,
        "macs": prof.macs.get("stem", 0), "se_macs": 0,
    }]
    pool = getattr(stem, "pool", None)
    for i, (stage, name) in enumerate(zip(cfg.stage_numbers, net.stage_names)):
        units = getattr(net, name)
        last = units[-1]
        spec = [_conv_spec(m) for n, m in last.named_children() if n.startswith("conv")]
        if i == 0 and pool is not None:
            # the paper lists the stem's max pool under conv2_x, whose output size it sets
            spec.insert(0, f"{pool.kernel_size}x{pool.kernel_size} max pool, stride {pool.stride}")
        # the FC widths [C/r, C] where the gate's excitation has a reducing fc1 (SE, CBAM's shared MLP, GC, FcaNet);
        # None for gates without one (ECA's 1-d conv, SE-Var1-3, GE, NoSqueeze's 1x1 convs)
        fc1 = getattr(getattr(last.se, "excitation", None), "fc1", None)
        se_fc = [fc1.out_features, fc1.in_features] if isinstance(fc1, nn.Linear) else None
        h, w = prof.output_sizes[name]
        records.append({
            "stage": f"conv{stage}_x", "module": name, "output_size": f"{h}x{w}", "block": spec, "se_fc": se_fc,
            "units": len(units), "params": count_params(units),
            "se_params": sum(count_params(u.se) for u in units if u.se is not None),
            "macs": prof.macs.get(name, 0), "se_macs": prof.se_macs.get(name, 0),
        })
    records.append({
        "stage": "fc", "module": "fc", "output_size": "1x1",
        "block": ["global average pool", f"{cfg.num_classes}-d fc" if cfg.num_classes else "(no classifier)"],
        "se_fc": None, "units": 1, "params": count_params(net.fc), "se_params": 0, "macs": prof.macs.get("fc", 0),
        "se_macs": 0,
    })
    return records


def stage_table_view(records: list[dict[str, Any]], title: str | None = None) -> Table:
    """``stage_table`` records as a displayable ``Table`` (HTML in a notebook)."""
    return Table(records, columns=["stage", "output_size", "block", "se_fc", "units", "params", "se_params", "macs"],
                 headers={"output_size": "output size", "block": "layers of one unit", "se_fc": "SE FC widths",
                          "se_params": "SE params", "macs": "multiply-adds"},
                 formats={"se_fc": lambda v: f"fc, [{v[0]}, {v[1]}]"}, title=title)


def compare_with_paper(models: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Our parameter and multiply-add counts next to the paper's (Table 2 GFLOPs) and published parameter counts.

    ImageNet models appear twice: with the stride on the first 1x1 conv of a downsampling bottleneck (the
    original release, which the paper's GFLOPs count) and on the 3x3 conv (torchvision / timm, our default).
    Multiply-adds are ``count_macs`` (FlopCounterMode) of one 224x224 image (32x32 for CIFAR models).
    Records: ``model``, ``stride_on``, ``params``, ``reference_params``, ``params_source``, ``gmacs``,
    ``paper_gflops``, ``gflops_source``.
    """
    if models is None:
        models = ["resnet20", "se_resnet20", "resnet50", "se_resnet50", "resnet101", "se_resnet101",
                  "resnet152", "se_resnet152"]
    rows = []
    for name in models:
        base = get_config(name)
        placements = ["1x1", "3x3"] if base.block == "bottleneck" and base.style == "imagenet" else [None]
        for stride_on in placements:
            cfg = base if stride_on is None else base.replace(stride_on=stride_on)
            net = meta_model(cfg)
            ref = REFERENCE_PARAMS.get(name)
            paper = PAPER_GFLOPS.get(name) if stride_on in (None, "1x1") else None
            rows.append({
                "model": name, "stride_on": stride_on or "-", "params": count_params(net),
                "reference_params": ref[0] if ref else None, "params_source": ref[1] if ref else None,
                # the traced per-layer sum equals count_macs (FlopCounterMode; tested) and is cached per config
                "gmacs": sum(_profile(cfg).macs.values()) / 1e9, "paper_gflops": paper,
                "gflops_source": "paper Table 2" if paper is not None else None,
            })
    return rows


def compare_with_paper_view(records: list[dict[str, Any]]) -> Table:
    """``compare_with_paper`` records as a displayable ``Table``."""
    return Table(records, headers={"stride_on": "stride on", "reference_params": "reference params",
                                   "params_source": "params source", "gmacs": "our GMACs",
                                   "paper_gflops": "paper GFLOPs", "gflops_source": "GFLOPs source"},
                 formats={"gmacs": ".3f", "paper_gflops": ".2f"},
                 title="Parameters and multiply-adds: ours vs the paper and published implementations")


def integration_costs(model: str = "se_resnet50", **overrides: Any) -> list[dict[str, Any]]:
    """Parameters, SE parameters and multiply-adds of ``model`` with every integration mode its units support,
    and, for SE-ResNet-50, the paper's ImageNet top-1 / top-5 error (Tables 10, 14, 15).

    Records: ``integration``, ``params``, ``se_params``, ``gmacs``, ``paper_top1_top5``.
    """
    base = get_config(model, **overrides)
    rows = []
    for mode in ("none", "standard", "pre", "post", "identity", "3x3"):
        if mode == "3x3" and base.block != "bottleneck":
            continue
        recs = stage_table(base.replace(integration=mode))
        rows.append({"integration": mode, "params": sum(r["params"] for r in recs),
                     "se_params": sum(r["se_params"] for r in recs), "gmacs": sum(r["macs"] for r in recs) / 1e9,
                     # the paper's ablation used SE-ResNet-50 only
                     "paper_top1_top5": (PAPER_INTEGRATION_RESULTS[mode].replace("\n", " ")
                                         if model == "se_resnet50" and not overrides else None)})
    return rows


def plot_stage_costs(records: list[dict[str, Any]], title: str | None = None, fig: Figure | None = None) -> Figure:
    """Where a network's parameters and multiply-adds are, per ``stage_table`` row: SE parameters stacked on the
    rest (left) and multiply-adds (right)."""
    if not records:
        raise ValueError("records is empty: pass stage_table(model)")
    if fig is None:
        fig = Figure(figsize=(10, 3.4), layout="constrained")
    else:
        fig.clear()
    ax_p, ax_m = fig.subplots(1, 2)
    names = [r["stage"] for r in records]
    se = np.array([r["se_params"] for r in records], dtype=float)
    rest = np.array([r["params"] for r in records], dtype=float) - se
    ax_p.bar(names, rest / 1e6, color="#7da7d9", label="convs, BN, fc")
    ax_p.bar(names, se / 1e6, bottom=rest / 1e6, color="#f4a259", label="SE blocks")
    total_se = se.sum()
    for i, v in enumerate(se):
        if total_se and v:
            ax_p.text(i, (rest[i] + v) / 1e6, f"SE {100 * v / total_se:.0f}%", ha="center", va="bottom", fontsize=8)
    ax_p.margins(y=0.12)  # room for the labels above the bars
    ax_p.set_xlabel("stage")
    ax_p.set_ylabel("parameters (millions)")
    ax_p.set_title("Parameters per stage (labels: share of all SE params)")
    ax_p.legend(fontsize="small", loc="upper left")
    ax_m.bar(names, [r["macs"] / 1e9 for r in records], color="#9bc59d", label="multiply-adds")
    for i, r in enumerate(records):
        if r.get("se_macs"):
            ax_m.text(i, r["macs"] / 1e9, f"SE {100 * r['se_macs'] / r['macs']:.2f}%", ha="center", va="bottom",
                      fontsize=8)
    ax_m.margins(y=0.12)
    ax_m.set_xlabel("stage")
    ax_m.set_ylabel("multiply-adds (G) per image")
    ax_m.set_title("Multiply-adds per stage (labels: SE's share)")
    ax_m.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


class ArchitectureExplorer:
    """Dropdowns for the model, the SE integration mode, the reduction ratio and the stride placement, showing
    the model's ``stage_table`` and its totals (parameters, multiply-adds, cost of SE over the plain ResNet).

    ``widget`` is the box to display; ``model``, ``integration``, ``reduction``, ``stride_on`` the controls;
    ``records`` the current table, ``summary`` the current totals (empty and ``error`` set when a combination
    does not exist, such as SE_3x3 in a basic-block network).
    """

    def __init__(self, model: str = "se_resnet50", integration: str = "standard", reduction: int = 16) -> None:
        import ipywidgets as widgets

        names = list_models("se_resnet*")
        if model not in names:
            raise ValueError(f"model must be one of {names}, got {model!r}")
        if integration not in INTEGRATIONS:
            raise ValueError(f"integration must be one of {tuple(INTEGRATIONS)}, got {integration!r}")
        if reduction not in REDUCTION_CHOICES:
            raise ValueError(f"reduction must be one of {REDUCTION_CHOICES}, got {reduction!r}")
        style = {"description_width": "initial"}
        # CIFAR and ImageNet networks share one list: say which is which (depths alone do not).
        labels = [(f"{n} ({'CIFAR, 32x32' if get_config(n).style == 'cifar' else 'ImageNet, 224x224'})", n)
                  for n in names]
        self.model = widgets.Dropdown(options=labels, value=model, description="model", style=style)
        self.integration = widgets.Dropdown(options=list(INTEGRATIONS), value=integration,
                                            description="integration", style=style)
        self.reduction = widgets.Dropdown(options=list(REDUCTION_CHOICES), value=reduction,
                                          description="reduction r", style=style)
        self.stride_on = widgets.ToggleButtons(options=["3x3", "1x1"], value="3x3",
                                               description="stride on", style=style)
        self.html = widgets.HTML()
        self.records: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = {}
        self.error: str | None = None
        self.widget = widgets.VBox([widgets.HBox([self.model, self.integration, self.reduction]), self.stride_on,
                                    self.html])
        for w in (self.model, self.integration, self.reduction, self.stride_on):
            w.observe(self.update, names="value")
        self.update()

    def update(self, change: Any = None) -> None:
        """Rebuild the table for the current choices."""
        name = self.model.value
        base = get_config(name)
        self.stride_on.disabled = base.block != "bottleneck"
        kw: dict[str, Any] = {"integration": self.integration.value, "reduction": self.reduction.value}
        if base.block == "bottleneck":
            kw["stride_on"] = self.stride_on.value
        try:
            cfg = base.replace(**kw)
        except ValueError as exc:
            self.records, self.summary, self.error = [], {}, str(exc)
            self.html.value = f"<p style='color:#b00'>This combination does not exist: {exc}</p>"
            return
        self.error = None
        self.records = stage_table(cfg)
        params = sum(r["params"] for r in self.records)
        se_params = sum(r["se_params"] for r in self.records)
        macs = sum(r["macs"] for r in self.records)
        plain_params = params - se_params  # the same network without its SE blocks
        self.summary = {"params": params, "se_params": se_params, "macs": macs, "plain_params": plain_params,
                        "param_increase": params / plain_params - 1}
        title = (f"{name} (integration={cfg.integration}, r={cfg.reduction}"
                 + (f", stride on {cfg.stride_on}" if base.block == "bottleneck" else "") + f"), "
                 f"{cfg.input_size}x{cfg.input_size} input")
        totals = (f"<p>Total: <b>{params:,}</b> parameters ({se_params:,} in SE blocks: "
                  f"{100 * self.summary['param_increase']:+.2f}% over the plain ResNet's {plain_params:,}); "
                  f"<b>{macs / 1e9:.3f} G</b> multiply-adds per image.</p>")
        self.html.value = stage_table_view(self.records, title)._repr_html_() + totals

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def architecture_explorer(model: str = "se_resnet50", integration: str = "standard",
                          reduction: int = 16) -> ArchitectureExplorer:
    """The architecture widget (see ``ArchitectureExplorer``); display it by ending a notebook cell with it."""
    return ArchitectureExplorer(model, integration, reduction)
