"""SE-ResNet and ResNet models: the configuration, the network, and a registry of named models.

Two families share one network class:

* ``style="imagenet"``: 7x7 stride-2 stem + max pool, four stages of 64/128/256/512 planes (conv2_x .. conv5_x),
  depths 18, 34 (basic blocks), 50, 101, 152 (bottlenecks), total stride 32.
* ``style="cifar"``: 3x3 stem, three stages of 16/32/64 planes (named conv2_x .. conv4_x here), depth 6n+2 with basic
  blocks (20, 32, 44, 56, 110) or 9n+2 with bottlenecks (164), total stride 4; projection shortcuts on the two
  downsampling units.

Every stage ends with global average pooling (adaptive, so any input that survives the strides works), flatten and
one fully connected classifier.

The block in the SE position may be SE or one of its successors and rivals (``attention``: ECA, the SE variants of
ECA-Net, Gather-Excite, GC, CBAM, FcaNet, NoSqueeze; see ``seresnet.attention``). The registry names them
``<attention>_resnet<depth>`` (``eca_resnet20``, ``cbam_resnet50``, ...) next to ``se_resnet<depth>`` and
``resnet<depth>``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import numbers
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from .attention import ATTENTIONS, AttentionBlock, check_attention_options
from .blocks import INTEGRATIONS, BasicBlock, Bottleneck, Integration, projection_shortcut
from .se import GATES, SQUEEZE_MODES, GateName, SEBlock, SqueezeMode, se_hidden_width

Style = Literal["imagenet", "cifar"]
Attention = Literal["se", "eca", "se_var1", "se_var2", "se_var3", "ge", "gc", "cbam", "fca", "nosqueeze"]
IMAGENET_LAYERS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def _usual_cifar_block(depth: int) -> str:
    """The block He et al. use for a CIFAR depth: bottlenecks for the deep 9n+2 networks (164, 1001) and for depths
    only 9n+2 fits, basic blocks otherwise (20, 32, 44, 56, 110, 1202)."""
    fits_bottleneck = depth >= 11 and (depth - 2) % 9 == 0
    fits_basic = depth >= 8 and (depth - 2) % 6 == 0
    return "bottleneck" if fits_bottleneck and (depth >= 164 or not fits_basic) else "basic"


@dataclass(frozen=True)
class SEResNetConfig:
    """Everything that defines an (SE-)ResNet.

    Attributes:
        style: ``"imagenet"`` or ``"cifar"`` (stem, stage widths and depth rule, see the module docstring).
        depth: number of weighted layers; ImageNet 18/34/50/101/152, CIFAR 6n+2 (basic) or 9n+2 (bottleneck).
        block: ``"basic"`` or ``"bottleneck"``; ``None`` picks the usual one for the depth (CIFAR: He et al.'s
            choice, bottlenecks from depth 164 where the depth is 9n+2, such as 164 and 1001, else basic blocks
            where it is 6n+2, such as 20-110 and 1202).
        num_classes: classifier outputs (0 gives a feature extractor with ``nn.Identity`` as ``fc``).
        in_chans: input channels.
        input_size: the (square) input resolution the model is meant for; used for FLOP counts and defaults, the
            network itself accepts any size of at least ``min_input_size``.
        reduction: SE reduction ratio r (hidden width ``max(C // r, se_min_hidden)``).
        se_min_hidden: smallest SE hidden width.
        squeeze: ``"avg"`` or ``"max"``.
        gate: ``"sigmoid"``, ``"hard_sigmoid"``, ``"tanh"`` or ``"relu"``.
        integration: where SE sits in each unit (see ``seresnet.blocks``); ``"none"`` is a plain ResNet.
        se_stages: paper-numbered stages (2 = conv2_x) that get SE: a list of them or one number; ``None`` means
            all, ``()`` none. Stored as a sorted tuple.
        stride_on: ``"3x3"`` (torchvision / timm) or ``"1x1"`` (original Caffe release) in downsampling bottlenecks.
        stem_pool: ``"pad"`` (torchvision max pool, padding 1) or ``"ceil"`` (Caffe, no padding, ceil mode).
        zero_init_last: start the last BN of every residual branch at zero (helps short CIFAR schedules).
        basic_branch_relu: basic blocks only: a ReLU after bn2, before SE and the addition (timm's
            ``legacy_seresnet18/34`` do this; the paper's units do not).
        attention: the module in the SE position: ``"se"`` (default), ``"eca"``, ``"se_var1"``, ``"se_var2"``,
            ``"se_var3"``, ``"ge"``, ``"gc"``, ``"cbam"``, ``"fca"`` or ``"nosqueeze"`` (``seresnet.attention``).
            Each uses only some of ``reduction``, ``se_min_hidden``, ``squeeze`` and ``gate``
            (``seresnet.attention.ATTENTION_OPTIONS``); the others must keep their defaults.
        ge_extent: ``attention="ge"`` only: the spatial extent of Gather-Excite's gather. ``None`` (default) pools
            the whole map, which makes GE-theta-minus the same function as SE-Var1; an integer ``e >= 2`` pools
            windows of ``2e - 1`` with stride ``e``, so the gate varies over positions.

    Every field is type-checked: a wrong type or value raises a ``ValueError`` naming the field and what it
    accepts (e.g. ``basic_branch_relu="no"`` is refused rather than read as true).
    """

    style: Style = "imagenet"
    depth: int = 50
    block: Literal["basic", "bottleneck"] | None = None
    num_classes: int = 1000
    in_chans: int = 3
    input_size: int = 224
    reduction: int = 16
    se_min_hidden: int = 1
    squeeze: SqueezeMode = "avg"
    gate: GateName = "sigmoid"
    integration: Integration = "standard"
    se_stages: tuple[int, ...] | None = None
    stride_on: Literal["3x3", "1x1"] = "3x3"
    stem_pool: Literal["pad", "ceil"] = "pad"
    zero_init_last: bool = False
    basic_branch_relu: bool = False
    attention: Attention = "se"
    ge_extent: int | None = None
    layers: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        _check_choice("style", self.style, ("imagenet", "cifar"), either=True)
        block, layers = self._resolve_layers()
        object.__setattr__(self, "block", block)
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "se_stages", _normalise_stages(self.se_stages))
        self._validate()

    def _resolve_layers(self) -> tuple[str, tuple[int, ...]]:
        d = self.depth
        if isinstance(d, bool) or not isinstance(d, int):
            raise ValueError(f"depth must be an integer, got {d!r}")
        # Checked before use: ``self.block or "basic"`` would turn "" or 0 into basic blocks silently.
        if self.block is not None and not (isinstance(self.block, str) and self.block in BLOCKS):
            raise ValueError(f"block must be 'basic', 'bottleneck' or None (the usual one for the depth), "
                             f"got {self.block!r}")
        if self.style == "imagenet":
            if d not in IMAGENET_LAYERS:
                raise ValueError(f"ImageNet-style depth must be one of {sorted(IMAGENET_LAYERS)}, got {d}")
            block, layers = IMAGENET_LAYERS[d]
            if self.block not in (None, block):
                raise ValueError(f"ImageNet depth {d} uses {block} blocks, got block={self.block!r}")
            return block, layers
        block = self.block or _usual_cifar_block(d)
        per_block = 2 if block == "basic" else 3
        rule = "6n+2" if block == "basic" else "9n+2"
        if d < 3 * per_block + 2 or (d - 2) % (3 * per_block):
            if self.block is None:
                raise ValueError(f"CIFAR-style depth must be 6n+2 (basic blocks: 20, 32, 44, 56, 110) or 9n+2 "
                                 f"(bottleneck blocks: 164, 1001), n >= 1, got {d}")
            raise ValueError(f"CIFAR-style depth with {block} blocks must be {rule} (n >= 1), got {d}")
        n = (d - 2) // (3 * per_block)
        return block, (n, n, n)

    def _validate(self) -> None:
        def positive_int(name: str, value: Any, minimum: int = 1) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

        def boolean(name: str, value: Any) -> None:
            # Only real bools: "no", "false" or 0 read as truth values would silently mean the opposite or nothing.
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be True or False, got {value!r}")

        positive_int("num_classes", self.num_classes, 0)
        positive_int("in_chans", self.in_chans)
        positive_int("input_size", self.input_size)
        positive_int("se_min_hidden", self.se_min_hidden)
        se_hidden_width(1, self.reduction, self.se_min_hidden)  # validates the reduction ratio
        _check_choice("squeeze", self.squeeze, SQUEEZE_MODES)
        _check_choice("gate", self.gate, tuple(GATES))
        _check_choice("integration", self.integration, INTEGRATIONS)
        _check_choice("stride_on", self.stride_on, ("3x3", "1x1"), either=True)
        _check_choice("stem_pool", self.stem_pool, ("pad", "ceil"), either=True)
        boolean("zero_init_last", self.zero_init_last)
        boolean("basic_branch_relu", self.basic_branch_relu)
        _check_choice("attention", self.attention, tuple(ATTENTIONS))
        check_attention_options(self.attention, reduction=self.reduction, squeeze=self.squeeze, gate=self.gate,
                                min_hidden=self.se_min_hidden)
        if self.ge_extent is not None:
            if self.attention != "ge":
                raise ValueError(f"ge_extent is Gather-Excite's gather extent and needs attention='ge'; this config "
                                 f"has attention={self.attention!r}: leave ge_extent at None")
            positive_int("ge_extent", self.ge_extent, 2)
        if self.integration == "3x3" and self.block != "bottleneck":
            raise ValueError("integration '3x3' (SE after the 3x3 conv) needs bottleneck blocks; "
                             f"this {self.style} depth-{self.depth} model uses {self.block} blocks")
        if self.basic_branch_relu and self.block != "basic":
            raise ValueError(f"basic_branch_relu needs basic blocks; this model uses {self.block} blocks")
        if self.se_stages is not None:
            valid = self.stage_numbers
            bad = [s for s in self.se_stages if s not in valid]
            if bad:
                raise ValueError(f"se_stages {bad} do not exist; this model has stages {valid} (conv2_x is stage 2)")
        if self.input_size < self.min_input_size:
            raise ValueError(f"input_size {self.input_size} is smaller than the total stride {self.min_input_size}")

    @property
    def stage_numbers(self) -> tuple[int, ...]:
        """Paper-style stage numbers: conv2_x is stage 2."""
        return tuple(range(2, 2 + len(self.layers)))

    @property
    def widths(self) -> tuple[int, ...]:
        """Planes of each stage (before the bottleneck expansion)."""
        return (64, 128, 256, 512) if self.style == "imagenet" else (16, 32, 64)

    @property
    def min_input_size(self) -> int:
        """Total stride of the network: smaller inputs would vanish before the last stage."""
        return 32 if self.style == "imagenet" else 4

    @property
    def has_se(self) -> bool:
        return self.integration != "none" and self.se_stages != ()

    def replace(self, **overrides: Any) -> SEResNetConfig:
        """A copy with some fields changed; unknown names raise a ``TypeError`` listing the valid ones."""
        valid = [f.name for f in dataclasses.fields(self) if f.init]
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            raise TypeError(f"unknown config option(s) {unknown}; valid options are {valid}")
        return dataclasses.replace(self, **overrides)  # __post_init__ normalises and validates se_stages

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict of the init fields (for checkpoints and metadata).

        ``attention`` is left out when it is ``"se"`` (its default): the configs of SE models stay exactly what they
        were before the field existed, so their metadata files are unchanged and older code still reads them.
        ``from_dict`` restores the default.
        """
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        if d["se_stages"] is not None:
            d["se_stages"] = list(d["se_stages"])
        if d["attention"] == "se":
            del d["attention"]
        if d["ge_extent"] is None:  # likewise: configs without it read as before
            del d["ge_extent"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SEResNetConfig:
        return cls().replace(**d)


def _check_choice(name: str, value: Any, choices: tuple[str, ...], either: bool = False) -> None:
    """Raise a ``ValueError`` unless ``value`` is one of the strings ``choices`` (also for unhashable values).

    ``either`` words the message as "'a' or 'b'" rather than "one of ('a', 'b')".
    """
    if not isinstance(value, str) or value not in choices:
        options = " or ".join(map(repr, choices)) if either else f"one of {choices}"
        raise ValueError(f"{name} must be {options}, got {value!r}")


def _normalise_stages(stages: Any) -> tuple[int, ...] | None:
    """``se_stages`` as a sorted tuple of distinct ints: ``None`` stays, one number becomes a 1-tuple."""
    if stages is None:
        return None
    expected = "se_stages must be None, a stage number or a list of stage numbers (conv2_x is stage 2)"
    if isinstance(stages, numbers.Integral) and not isinstance(stages, bool):
        stages = (stages,)
    if isinstance(stages, (str, bytes)) or not isinstance(stages, (list, tuple, set, frozenset, range)):
        raise ValueError(f"{expected}, got {stages!r}")
    # Integers only: 2.0 would match stage 2 in ``in`` tests but is not a stage number, and True would be stage 1.
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in stages):
        raise ValueError(f"{expected}, got {list(stages)!r}")
    return tuple(sorted({int(s) for s in stages}))


class SEResNet(nn.Module):
    """A ResNet whose residual units may carry Squeeze-and-Excitation blocks.

    ``forward(x)``: (B, in_chans, H, W) -> logits (B, num_classes).
    ``forward_features(x)``: -> last stage feature map (B, num_features, H / stride, W / stride).
    ``forward_head(f)``: global average pool, flatten, FC.
    ``se_blocks()``: ordered mapping from paper-style names (``"SE_2_1"``, ...) to the SE modules (or the attention
    modules in their place, see ``config.attention``).
    """

    def __init__(self, config: SEResNetConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = (config or SEResNetConfig()).replace(**overrides) if overrides else (config or SEResNetConfig())
        self.config = cfg
        block_cls = BLOCKS[cfg.block]
        stem_width = cfg.widths[0]
        if cfg.style == "imagenet":
            pool = (nn.MaxPool2d(3, stride=2, padding=1) if cfg.stem_pool == "pad"
                    else nn.MaxPool2d(3, stride=2, ceil_mode=True))
            self.stem = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(cfg.in_chans, stem_width, 7, stride=2, padding=3, bias=False),
                bn=nn.BatchNorm2d(stem_width), relu=nn.ReLU(inplace=True), pool=pool))
        else:
            self.stem = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(cfg.in_chans, stem_width, 3, stride=1, padding=1, bias=False),
                bn=nn.BatchNorm2d(stem_width), relu=nn.ReLU(inplace=True)))

        se_kwargs = dict(reduction=cfg.reduction, squeeze=cfg.squeeze, gate=cfg.gate, min_hidden=cfg.se_min_hidden,
                         attention=cfg.attention)
        if cfg.attention == "ge":
            se_kwargs["extent"] = cfg.ge_extent
        in_ch = stem_width
        self.stage_names: list[str] = []
        for i, (planes, n_blocks, stage) in enumerate(zip(cfg.widths, cfg.layers, cfg.stage_numbers)):
            stride = 1 if i == 0 else 2
            with_se = cfg.se_stages is None or stage in cfg.se_stages
            integration = cfg.integration if with_se else "none"
            units = []
            for b in range(n_blocks):
                s = stride if b == 0 else 1
                out_ch = planes * block_cls.expansion
                down = projection_shortcut(in_ch, out_ch, s) if (s != 1 or in_ch != out_ch) else None
                extra = {"branch_relu": True} if cfg.basic_branch_relu else {}
                units.append(block_cls(in_ch, planes, s, down, integration, se_kwargs, cfg.stride_on, **extra))
                in_ch = out_ch
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*units))
            self.stage_names.append(name)
        self.num_features = in_ch
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc: nn.Module = nn.Linear(in_ch, cfg.num_classes) if cfg.num_classes else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            # the attention modules' own initialisation (their papers' code) replaces the generic one above
            if isinstance(m, AttentionBlock):
                m.reset_parameters()
        if self.config.zero_init_last:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn().weight)

    # --- timm-style API -------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def in_chans(self) -> int:
        return self.config.in_chans

    @property
    def stages(self) -> list[nn.Sequential]:
        """The residual stages in order (conv2_x first)."""
        return [getattr(self, n) for n in self.stage_names]

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ``TypeError`` (wrong type or dtype) or ``ValueError`` (wrong shape) saying what was expected if
        ``x`` cannot go through this network.

        ``x`` must be a floating point tensor (B, in_chans, H, W) of the parameters' dtype, or of any floating dtype
        under ``torch.autocast``. Everything checked is static under ``torch.compile`` (dtype, rank, sizes the
        graph is specialised on anyway), so the checks run once while tracing and add no graph breaks.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor of shape (B, {self.in_chans}, H, W), got {type(x).__name__}")
        if x.dtype == torch.uint8:
            raise TypeError(f"got a uint8 tensor {tuple(x.shape)}: the model expects normalised float images; "
                            "convert uint8 images (0..255) with seresnet.data.normalize(images) first")
        if not x.dtype.is_floating_point:
            raise TypeError(f"expected a floating point tensor (B, {self.in_chans}, H, W), got {x.dtype}")
        weight = self.stem.conv.weight
        # Without autocast, conv would fail with a bare "expected scalar type" message; under autocast the layers
        # cast their inputs themselves, so any floating dtype is fine. The meta device has no autocast to ask.
        if x.dtype != weight.dtype and (x.device.type == "meta" or not torch.is_autocast_enabled(x.device.type)):
            raise TypeError(f"input is {x.dtype} but the model's parameters are {weight.dtype}; convert the input "
                            f"with x.to({weight.dtype}) (or the model with model.to({x.dtype})), or run under "
                            "torch.autocast")
        if x.ndim != 4:
            raise ValueError(f"expected a 4-D input (B, {self.in_chans}, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"expected {self.in_chans} input channels (B, {self.in_chans}, H, W), "
                             f"got shape {tuple(x.shape)}")
        m = self.config.min_input_size
        if x.shape[2] < m or x.shape[3] < m:
            raise ValueError(f"input {tuple(x.shape[2:])} is too small: this {self.config.style}-style network has "
                             f"a total stride of {m}, so H and W must be at least {m}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.flatten(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one for ``num_classes`` outputs (0: identity)."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        self.config = self.config.replace(num_classes=num_classes)
        like = next(self.parameters())  # the new head lives where the model does, in its dtype (.double(), bf16)
        self.fc = (nn.Linear(self.num_features, num_classes, device=like.device, dtype=like.dtype) if num_classes
                   else nn.Identity())

    def get_classifier(self) -> nn.Module:
        return self.fc

    # --- SE blocks by their paper names ----------------------------------------------------------------------
    def se_blocks(self) -> OrderedDict[str, SEBlock | AttentionBlock]:
        """Paper-style names ``SE_<stage>_<block>`` (stage 2 = conv2_x, blocks from 1) -> SE module, in order.

        For a model with another ``attention``, its modules in the SE position, under the same names."""
        out: OrderedDict[str, SEBlock | AttentionBlock] = OrderedDict()
        for stage, name in zip(self.config.stage_numbers, self.stage_names):
            for b, unit in enumerate(getattr(self, name), start=1):
                if unit.se is not None:
                    out[f"SE_{stage}_{b}"] = unit.se
        return out

    def se_unit(self, block: str) -> tuple[int, int]:
        """(stage index in ``stage_names``, unit index in that stage) of the residual unit holding SE block
        ``block`` (e.g. ``"SE_3_2"`` -> ``(1, 1)``)."""
        blocks = self.se_blocks()
        if block not in blocks:
            raise ValueError(f"no SE block {block!r}; blocks: {', '.join(blocks) or 'none'}")
        for si, name in enumerate(self.stage_names):
            for ui, unit in enumerate(getattr(self, name)):
                if unit.se is blocks[block]:
                    return si, ui
        raise AssertionError(f"{block} is in no residual unit")  # se_blocks() walks the same units

    def forward_from_unit(self, x: torch.Tensor, stage_index: int, unit_index: int) -> torch.Tensor:
        """Logits from ``x``, the input of unit ``unit_index`` of stage ``stage_index``, on: what ``forward`` computes
        after that point. An edit of one SE block then reruns only the units from its own on (``se_unit``)."""
        stages = [getattr(self, name) for name in self.stage_names]
        for unit in list(stages[stage_index])[unit_index:]:
            x = unit(x)
        for stage in stages[stage_index + 1:]:
            x = stage(x)
        return self.forward_head(x)

    def se_block_paths(self) -> OrderedDict[str, str]:
        """Paper-style name -> module path in ``named_modules()`` (e.g. ``"SE_2_1" -> "layer1.0.se"``)."""
        ids = {id(m): n for n, m in self.named_modules()}
        return OrderedDict((k, ids[id(m)]) for k, m in self.se_blocks().items())


# --- registry ------------------------------------------------------------------------------------------------
_REGISTRY: dict[str, SEResNetConfig] = {}


def register_model(name: str, config: SEResNetConfig) -> None:
    """Add a named configuration to the registry used by ``create_model``."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = config


for _d in IMAGENET_LAYERS:
    register_model(f"se_resnet{_d}", SEResNetConfig(style="imagenet", depth=_d))
    register_model(f"resnet{_d}", SEResNetConfig(style="imagenet", depth=_d, integration="none"))
for _d in (20, 32, 44, 56, 110):
    register_model(f"se_resnet{_d}", SEResNetConfig(style="cifar", depth=_d, num_classes=10, input_size=32))
    register_model(f"resnet{_d}", SEResNetConfig(style="cifar", depth=_d, num_classes=10, input_size=32,
                                                  integration="none"))
register_model("se_resnet164", SEResNetConfig(style="cifar", depth=164, block="bottleneck", num_classes=10,
                                              input_size=32))
register_model("resnet164", SEResNetConfig(style="cifar", depth=164, block="bottleneck", num_classes=10,
                                           input_size=32, integration="none"))
# Every se_resnetN has a twin per attention module: "<attention>_resnetN" (eca_resnet20, gc_resnet56, ...).
for _a in ATTENTIONS:
    if _a == "se":
        continue
    for _d in IMAGENET_LAYERS:
        register_model(f"{_a}_resnet{_d}", SEResNetConfig(style="imagenet", depth=_d, attention=_a))
    for _d in (20, 32, 44, 56, 110):
        register_model(f"{_a}_resnet{_d}", SEResNetConfig(style="cifar", depth=_d, num_classes=10, input_size=32,
                                                          attention=_a))
    register_model(f"{_a}_resnet164", SEResNetConfig(style="cifar", depth=164, block="bottleneck", num_classes=10,
                                                     input_size=32, attention=_a))


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a glob pattern, sorted by family then depth."""
    def key(n: str) -> tuple[str, int]:
        stem = n.rstrip("0123456789")
        return stem, int(n[len(stem):] or 0)

    return sorted((n for n in _REGISTRY if fnmatch.fnmatch(n, pattern)), key=key)


# Options of the attention module: meaningless on a plain ResNet unless it also gets an integration.
_ATTENTION_OPTIONS = ("attention", "reduction", "se_min_hidden", "squeeze", "gate", "se_stages", "ge_extent")


def get_config(name: str, **overrides: Any) -> SEResNetConfig:
    """The registered configuration of ``name`` with overrides applied."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(list_models())}")
    base = _REGISTRY[name]
    if base.integration == "none" and overrides.get("integration", "none") == "none":
        # a plain ResNet has no attention module, so these options would be accepted and silently change nothing
        unused = [k for k in _ATTENTION_OPTIONS if k in overrides and overrides[k] != getattr(base, k)]
        if unused:
            twin = f"se_{name}" if f"se_{name}" in _REGISTRY else None
            raise ValueError(f"{name} is a plain ResNet (integration='none'): {', '.join(unused)} would change "
                             "nothing; " + (f"build its attention twin instead, e.g. create_model({twin!r}, "
                                            f"{', '.join(f'{k}={overrides[k]!r}' for k in unused)}), or "
                                            if twin else "") + "also pass integration='standard'")
    return base.replace(**overrides)


def create_model(name: str, pretrained: bool = False, **overrides: Any) -> SEResNet:
    """Build a registered model, e.g. ``create_model("se_resnet50", num_classes=10, reduction=8)``.

    ``pretrained=True`` loads the CIFAR-10 checkpoint shipped with the package (``seresnet.pretrained``); then
    ``overrides`` may only repeat the shipped configuration, anything else raises a ``ValueError`` (the weights
    would load into a different network).
    """
    if not isinstance(pretrained, bool):  # "no" is truthy and would load the shipped weights
        raise ValueError(f"pretrained must be True or False, got {pretrained!r}")
    if pretrained:
        from .pretrained import load_pretrained

        return load_pretrained(name, **overrides)
    return SEResNet(get_config(name, **overrides))


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; BN buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: int | tuple[int, int] | None = None, in_chans: int | None = None) -> int:
    """Multiply-adds of one forward pass of one image, counted by ``torch.utils.flop_counter.FlopCounterMode``.

    FlopCounterMode counts a multiply-add as 2 FLOPs; this returns its total divided by two (the unit the paper's
    "GFLOPs" column uses).
    """
    from torch.utils.flop_counter import FlopCounterMode

    cfg = getattr(model, "config", None)
    size = input_size or (cfg.input_size if cfg else 224)
    h, w = (size, size) if isinstance(size, int) else size
    c = in_chans or (cfg.in_chans if cfg else 3)
    p = next(model.parameters())
    x = torch.zeros(1, c, h, w, device=p.device, dtype=p.dtype)  # a float64 model needs a float64 input
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
