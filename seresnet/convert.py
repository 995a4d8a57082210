"""Weight interoperability with torchvision and timm ResNets / SE-ResNets, both directions.

Our layer names follow torchvision except for the stem and the SE block (ours -> torchvision / timm ``seresnetN``
and ``resnetN`` / timm ``legacy_seresnetN``):

* ``stem.conv.`` -> ``conv1.`` / ``conv1.`` / ``layer0.conv1.``
* ``stem.bn.`` -> ``bn1.`` / ``bn1.`` / ``layer0.bn1.``
* ``layerI.J.se.excitation.fcK.`` -> (torchvision has no SE) / ``layerI.J.se.fcK.`` / ``layerI.J.se_module.fcK.``
* ``fc.`` -> ``fc.`` / ``fc.`` / ``last_linear.``

Everything else (``layerI.J.conv1`` ... ``downsample.0/1``) has the same name everywhere. timm's SE layers are 1x1
convolutions with bias, weights (out, in, 1, 1); ours are ``nn.Linear``, weights (out, in). The converters reshape in
both directions (the two compute the same thing on a pooled (B, C, 1, 1) / (B, C) descriptor); a non-1x1 conv weight
cannot be an SE FC layer and raises a ``ValueError``.

The architectures differ in details that the weights alone do not show, so the model built for a timm name gets the
matching config (``timm_overrides``):

* timm ``seresnetN`` (``timm/models/resnet.py``): stride on the 3x3 conv, padded stem max pool, SE hidden width
  ``make_divisible(C / 16, 8)``, which is ``max(C // 16, 8)`` for these widths (8 instead of 4 for C = 64) ->
  ``se_min_hidden=8``.
* timm ``legacy_seresnetN`` (``timm/models/senet.py``, the Caffe release): stride on the first 1x1 conv of a
  bottleneck (``stride_on="1x1"``), stem max pool with ``ceil_mode=True`` and no padding (``stem_pool="ceil"``),
  hidden width ``C // 16``; its basic block (18/34) has a ReLU after bn2, before SE (``basic_branch_relu=True``).

Attention modules other than SE (``SEResNetConfig.attention``): timm's ``resnet.py`` builds ResNets with other
attention layers in the SE position through ``block_args=dict(attn_layer=...)``. Two of them compute exactly what
ours do, and convert both ways (``timm_spec_for_config``, ``to_timm``, ``from_timm`` of such a timm model):

* ``"eca"``: timm's ``EcaModule`` (``layerI.J.se.conv.weight``, the same (1, 1, k) 1-D kernel as our
  ``se.excitation.conv``). timm's kernel size is the paper's formula with a floor of 3, the same for every ImageNet
  ResNet width (64..2048).
* ``"cbam"``: timm's ``CbamModule``: channel MLP without biases (``se.channel.fcK``, 1x1 convs, our
  ``se.excitation.fcK``, linear), hidden ``round(C / 16)`` (= ``C // 16`` for these widths), [mean; max] -> 7x7 conv
  -> BN -> sigmoid (``se.spatial.conv.conv`` / ``.bn``, our ``se.spatial_gate.conv`` / ``.bn``).

The others have no exact counterpart in timm and are refused (see ``_NO_TIMM``): timm's ``"gc"`` multiplies by a
sigmoid gate (``fuse_scale``) where GCNet adds, and its adding variant ``"gca"`` normalises with LayerNorm eps 1e-6
(GCNet's ``nn.LayerNorm``: 1e-5) and C/8 hidden units; timm's ``"ge"`` has an MLP (the parameter-free GE-theta-minus
is not among its layers); timm has no FcaNet, SE-Var or NoSqueeze layer.

Loading goes through ``load_state_dict_strict``, which checks every key and shape first and raises a
``StateDictMismatchError`` (a ``ValueError``) naming the missing, unexpected and mis-shaped keys with their shapes.
timm is optional: only the functions that build timm models import it.

Weight files are never unpickled with full pickle (a pickle can run any code when loaded): ``.pth`` / ``.pt`` /
``.bin`` files go through ``torch.load(weights_only=True)``, ``.safetensors`` through safetensors. Named torchvision
weights are fetched by ``from_torchvision`` itself rather than by torchvision, so that the cached file's SHA-256 is
checked against the prefix in its name before it is read. Both ``from_torchvision`` and ``from_timm`` also take a
local weights file, for machines without internet access.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import pickle
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from .attention import ATTENTION_OPTIONS
from .model import IMAGENET_LAYERS, SEResNet, SEResNetConfig
from .se import se_hidden_width

__all__ = [
    "StateDictMismatchError",
    "TIMM_ATTENTIONS",
    "TIMM_NAMES",
    "TORCHVISION_NAMES",
    "check_state_dict",
    "from_timm",
    "from_timm_state_dict",
    "from_torchvision",
    "from_torchvision_state_dict",
    "load_state_dict_strict",
    "load_torchvision",
    "timm_config",
    "timm_name_for_config",
    "timm_overrides",
    "timm_spec_for_config",
    "to_timm",
    "to_timm_state_dict",
    "to_torchvision",
    "to_torchvision_state_dict",
]

StateDict = Mapping[str, torch.Tensor]
DEPTHS: tuple[int, ...] = tuple(IMAGENET_LAYERS)
TORCHVISION_NAMES: tuple[str, ...] = tuple(f"resnet{d}" for d in DEPTHS)
TIMM_NAMES: tuple[str, ...] = tuple(f"{p}resnet{d}" for p in ("se", "legacy_se", "") for d in DEPTHS)
_MAX_LISTED = 20  # keys listed per category in an error message; a wrong model can mismatch hundreds
#: Attention modules besides SE with an exact timm counterpart (``timm.create_model("resnetN", block_args=dict(
#: attn_layer=...))``), by our name -> timm's ``attn_layer``.
TIMM_ATTENTIONS: dict[str, str] = {"eca": "eca", "cbam": "cbam"}
# Why the other attention modules do not convert.
_NO_TIMM: dict[str, str] = {
    "gc": "timm's 'gc' layer multiplies the map by a sigmoid gate (fuse_scale) where GCNet adds the context, and its "
          "adding variant 'gca' uses LayerNorm eps 1e-6 (GCNet's nn.LayerNorm: 1e-5) and C/8 hidden units",
    "ge": "timm's 'ge' layer has an MLP; the parameter-free GE-theta-minus is not among its layers",
    "fca": "timm has no FcaNet layer",
    "se_var1": "timm has no SE-Var layers",
    "se_var2": "timm has no SE-Var layers",
    "se_var3": "timm has no SE-Var layers",
    "nosqueeze": "timm has no NoSqueeze layer",
}

# SE FC layers: ours "....se.excitation.fcK.{weight,bias}", timm "....se.fcK." / legacy "....se_module.fcK."
_OUR_SE = re.compile(r"^(?P<pre>.*)\.se\.excitation\.(?P<fc>fc[12])\.(?P<param>weight|bias)$")
_TIMM_SE = re.compile(r"^(?P<pre>.*)\.(?P<se>se|se_module)\.(?P<fc>fc[12])\.(?P<param>weight|bias)$")
# ECA and CBAM (ours <-> timm resnet.py with attn_layer='eca' / 'cbam')
_OUR_ECA = re.compile(r"^(?P<pre>.*)\.se\.excitation\.conv\.weight$")
_TIMM_ECA = re.compile(r"^(?P<pre>.*)\.se\.conv\.weight$")
_TIMM_CBAM_FC = re.compile(r"^(?P<pre>.*)\.se\.channel\.(?P<fc>fc[12])\.weight$")
_OUR_CBAM_SPATIAL = re.compile(r"^(?P<pre>.*)\.se\.spatial_gate\.(?P<layer>conv|bn)\.(?P<param>.+)$")
_TIMM_CBAM_SPATIAL = re.compile(r"^(?P<pre>.*)\.se\.spatial\.conv\.(?P<layer>conv|bn)\.(?P<param>.+)$")
# any key of an attention module of ours (what remains of them after the renaming has no place in timm)
_OUR_ATTENTION_KEY = re.compile(r"\.se\.(squeeze|excitation|scale|spatial_gate)\.")


# --- strict loading with readable errors --------------------------------------------------------------------------
class StateDictMismatchError(ValueError):
    """A state dict does not fit a model: lists missing, unexpected and mis-shaped keys with shapes."""


def _fmt_keys(title: str, items: list[str]) -> str:
    more = f"\n    ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"  {title} ({len(items)}):\n" + "\n".join(f"    {s}" for s in items[:_MAX_LISTED]) + more


def check_state_dict(model: nn.Module, state_dict: StateDict, *, allow_missing_batch_counters: bool = True) -> None:
    """Raise ``StateDictMismatchError`` unless ``state_dict`` has exactly ``model``'s keys with the same shapes.

    ``num_batches_tracked`` BN counters may be missing (older checkpoints lack them and they do not affect outputs)
    unless ``allow_missing_batch_counters`` is False.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"expected a state dict (a mapping of names to tensors), got {type(state_dict).__name__}")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict
               and not (allow_missing_batch_counters and k.endswith("num_batches_tracked"))]
    unexpected = [k for k in state_dict if k not in expected]
    not_tensor = [k for k in state_dict if k in expected and not isinstance(state_dict[k], torch.Tensor)]
    shaped = [k for k in state_dict if k in expected and k not in not_tensor
              and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or shaped or not_tensor):
        return

    def shape(t: Any) -> str:
        return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__

    parts = [f"state dict does not match {type(model).__name__}:"]
    if missing:
        parts.append(_fmt_keys("missing keys (expected shape)", [f"{k}: {shape(expected[k])}" for k in missing]))
    if unexpected:
        parts.append(_fmt_keys("unexpected keys (shape)", [f"{k}: {shape(state_dict[k])}" for k in unexpected]))
    if shaped:
        parts.append(_fmt_keys("mis-shaped keys", [f"{k}: got {shape(state_dict[k])}, expected {shape(expected[k])}"
                                                   for k in shaped]))
    if not_tensor:
        parts.append(_fmt_keys("values that are not tensors", [f"{k}: {shape(state_dict[k])}" for k in not_tensor]))
    raise StateDictMismatchError("\n".join(parts))


def load_state_dict_strict(model: nn.Module, state_dict: StateDict, *,
                           allow_missing_batch_counters: bool = True) -> nn.Module:
    """Check ``state_dict`` against ``model`` (see ``check_state_dict``), then load it; returns ``model``."""
    check_state_dict(model, state_dict, allow_missing_batch_counters=allow_missing_batch_counters)
    # strict=False only so that tolerated missing batch counters keep the model's values; all else was checked above
    model.load_state_dict(state_dict, strict=False)
    return model


# --- key renaming -------------------------------------------------------------------------------------------------
def _rename(state_dict: StateDict, rules: list[tuple[str, str]],
            transform: Callable[[str, torch.Tensor], tuple[str, torch.Tensor]] | None = None) -> OrderedDict:
    """Apply the first matching prefix rule (old -> new) to every key, keeping the order; then ``transform``."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"expected a state dict (a mapping of names to tensors), got {type(state_dict).__name__}")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state_dict.items():
        for old, new in rules:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        if transform is not None:
            key, value = transform(key, value)
        if key in out:
            raise ValueError(f"two keys of the input map to {key!r}; is the state dict a mix of naming schemes?")
        out[key] = value
    return out


def _se_conv_to_linear(key: str, w: torch.Tensor) -> torch.Tensor:
    """(out, in, 1, 1) conv weight -> (out, in) linear weight; a (out, in) weight is returned as is."""
    if w.ndim == 2:
        return w
    if w.ndim != 4 or tuple(w.shape[2:]) != (1, 1):
        raise ValueError(f"{key}: an SE FC layer must be a 1x1 conv weight (out, in, 1, 1) or a linear weight "
                         f"(out, in), got shape {tuple(w.shape)}")
    return w.reshape(w.shape[0], w.shape[1])


def _se_linear_to_conv(key: str, w: torch.Tensor) -> torch.Tensor:
    """(out, in) linear weight -> (out, in, 1, 1) conv weight; a 1x1 conv weight is returned as is."""
    if w.ndim == 4 and tuple(w.shape[2:]) == (1, 1):
        return w
    if w.ndim != 2:
        raise ValueError(f"{key}: an SE FC layer must be a linear weight (out, in) or a 1x1 conv weight "
                         f"(out, in, 1, 1), got shape {tuple(w.shape)}")
    return w.reshape(w.shape[0], w.shape[1], 1, 1)


def _is_legacy_timm(state_dict: StateDict) -> bool:
    return any(k.startswith(("layer0.", "last_linear.")) or ".se_module." in k for k in state_dict)


# --- torchvision --------------------------------------------------------------------------------------------------
_TV_TO_OURS = [("conv1.", "stem.conv."), ("bn1.", "stem.bn.")]


def from_torchvision_state_dict(state_dict: StateDict) -> OrderedDict:
    """torchvision ``resnet18..152`` state dict -> ours (``create_model("resnetN")``): renames the stem only."""
    return _rename(state_dict, _TV_TO_OURS)


def to_torchvision_state_dict(state_dict: StateDict) -> OrderedDict:
    """Our plain-ResNet state dict -> torchvision's. SE weights (or any attention module's) have no place there and
    raise a ``ValueError``."""
    se_keys = [k for k in state_dict if ".se." in k]
    if se_keys:
        raise ValueError(f"torchvision ResNets have no SE blocks, but this state dict has {len(se_keys)} SE keys "
                         f"(e.g. {se_keys[0]!r}); use to_timm_state_dict for SE-ResNets")
    return _rename(state_dict, [(new, old) for old, new in _TV_TO_OURS])


def _torchvision() -> Any:
    import torchvision

    return torchvision


# --- weight files -------------------------------------------------------------------------------------------------
_WEIGHT_SUFFIXES: tuple[str, ...] = (".pth", ".pt", ".bin", ".safetensors")
_HASH_IN_NAME = re.compile(r"-(?P<hash>[0-9a-f]{8,64})$")  # torch.hub's convention: "<name>-<sha256 prefix>.pth"


def _load_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a local file without running code from it: ``.safetensors`` via safetensors, ``.pth`` /
    ``.pt`` / ``.bin`` via ``torch.load(weights_only=True)``, which refuses pickles of anything but tensors and
    plain containers (a ``ValueError`` then says so)."""
    path = Path(path)
    if path.suffix not in _WEIGHT_SUFFIXES:
        raise ValueError(f"{path}: expected a weights file ending in {', '.join(_WEIGHT_SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types for truncated / foreign files
            raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupted?): {exc}") from exc
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own message is a page of advice (with terminal colour codes); the class it refused is the fact.
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = found.group(1) if found else "objects other than tensors and plain containers"
        raise ValueError(f"refused to load {path}: it pickles {what}, which torch.load(weights_only=True) does "
                         "not unpickle because unpickling it can run arbitrary code. It is not a plain state dict; "
                         "do not load it with full pickle unless you trust its origin.") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"{path} is not a readable PyTorch weights file (truncated or corrupted?): {exc}") from exc
    if not isinstance(state_dict, Mapping) or not all(isinstance(k, str) for k in state_dict):
        raise ValueError(f"{path} holds a {type(state_dict).__name__}, not a state dict (a mapping of names to "
                         "tensors)")
    return dict(state_dict)


def _check_hash_prefix(path: Path, hash_prefix: str) -> None:
    """Raise a ``ValueError`` unless ``path``'s SHA-256 starts with ``hash_prefix`` (torch.hub's ``check_hash``)."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    digest = sha.hexdigest()
    if not digest.startswith(hash_prefix):
        raise ValueError(f"{path} has SHA-256 {digest[:len(hash_prefix)]}..., but its name says {hash_prefix}...: "
                         "the file is corrupted or was replaced, so it was not loaded. Delete it to download it "
                         "again.")


def _download_error(what: str, url: str, exc: BaseException, hint: str) -> ConnectionError:
    return ConnectionError(f"could not download {what} from {url} ({type(exc).__name__}: {exc}). Pretrained weights "
                           f"need internet access; without it, {hint}")


def _torchvision_hub_state_dict(name: str, entry: Any) -> dict[str, torch.Tensor]:
    """The state dict of a torchvision ``WeightsEnum`` entry, from the torch hub cache (downloaded when absent),
    its SHA-256 checked against the prefix in its file name before it is read."""
    url = entry.url
    filename = os.path.basename(urlparse(url).path)
    m = _HASH_IN_NAME.search(Path(filename).stem)
    if m is None:  # every torchvision ResNet URL has one; without it the file could not be verified
        raise ValueError(f"the file name of {url} has no '-<sha256 prefix>' to verify it by; download it yourself "
                         f"and pass its path as weights=")
    path = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(path), hash_prefix=m["hash"], progress=True)
        except (OSError, http.client.HTTPException) as exc:  # URLError, ConnectionError, timeouts are OSErrors
            raise _download_error(f"the torchvision weights {entry}", url, exc,
                                  f"download {filename} on another machine and pass its path: "
                                  f"from_torchvision({name!r}, weights='/path/to/{filename}') (or put it at "
                                  f"{path}).") from exc
    _check_hash_prefix(path, m["hash"])
    return _load_weights_file(path)


def _is_weights_path(weights: Any) -> bool:
    if isinstance(weights, os.PathLike):
        return True
    return isinstance(weights, str) and (weights.endswith(_WEIGHT_SUFFIXES) or os.sep in weights
                                         or Path(weights).is_file())


def _torchvision_state_dict(name: str, weights: Any) -> dict[str, torch.Tensor]:
    """The state dict for ``from_torchvision(name, weights=...)``: a local file, or a torchvision weights entry."""
    if _is_weights_path(weights):
        return _load_weights_file(weights)
    enum_cls = _torchvision().models.get_model_weights(name)
    try:
        entry = enum_cls.verify(weights)  # "DEFAULT", "IMAGENET1K_V1", "ResNet50_Weights.IMAGENET1K_V2" or a member
    except (KeyError, TypeError) as exc:
        choices = ", ".join(dict.fromkeys(["DEFAULT", *enum_cls.__members__]))  # some enums list DEFAULT too
        raise ValueError(f"unknown weights {weights!r} for torchvision's {name}: expected one of {choices}, a "
                         f"{enum_cls.__name__} member, or the path of a local "
                         f"{'/'.join(_WEIGHT_SUFFIXES)} state dict file") from exc
    return _torchvision_hub_state_dict(name, entry)


def from_torchvision(model_or_name: nn.Module | str, weights: Any = None) -> SEResNet:
    """Our plain ResNet with the weights of a torchvision ResNet (a model, or a name like ``"resnet50"``).

    With a name, ``weights`` is ``None`` (torchvision's random initialisation), a torchvision weights entry
    (``"DEFAULT"``, ``"IMAGENET1K_V1"`` or a ``ResNet50_Weights`` member) or the path of a local state dict file
    (``.pth`` / ``.pt`` / ``.bin`` / ``.safetensors``; the classifier size is read from it). An entry's file is
    taken from the torch hub cache (``torch.hub.get_dir()/checkpoints``) or downloaded there, which needs internet
    access; its SHA-256 must match the prefix in its name. Files are read with ``torch.load(weights_only=True)``
    or safetensors, never with full pickle. The returned model is in the same train/eval mode as the torchvision
    model (train mode for a name).
    """
    if isinstance(model_or_name, str):
        if model_or_name not in TORCHVISION_NAMES:
            raise ValueError(f"unknown torchvision ResNet {model_or_name!r}; supported: {', '.join(TORCHVISION_NAMES)}")
        get_model = _torchvision().models.get_model
        if weights is None:
            tv_model = get_model(model_or_name, weights=None)
        else:
            # torchvision's own weights= loading unpickles the cached file with full pickle; build, then load safely
            state_dict = _torchvision_state_dict(model_or_name, weights)
            num_classes = state_dict["fc.weight"].shape[0] if "fc.weight" in state_dict else 1000
            tv_model = get_model(model_or_name, weights=None, num_classes=num_classes)
            load_state_dict_strict(tv_model, state_dict)
    elif isinstance(model_or_name, nn.Module):
        if weights is not None:
            raise ValueError("weights= is only used with a model name; the given model already has its weights")
        tv_model = model_or_name
    else:
        raise TypeError(f"expected a torchvision ResNet or its name, got {type(model_or_name).__name__}")
    sd = from_torchvision_state_dict(tv_model.state_dict())
    cfg = _infer_config(sd).replace(integration="none")
    model = load_state_dict_strict(SEResNet(cfg), sd)
    return model.train(tv_model.training)


load_torchvision = from_torchvision


def to_torchvision(model: SEResNet) -> nn.Module:
    """A torchvision ResNet with ``model``'s weights; ``model`` must be a plain ImageNet-style ResNet."""
    cfg = model.config
    name = f"resnet{cfg.depth}"
    expected = SEResNetConfig(style="imagenet", depth=cfg.depth, integration="none")
    diff = _structure_diff(cfg, expected)
    if diff:
        raise ValueError(f"torchvision's {name} cannot represent this model: {diff}")
    if cfg.in_chans != 3:
        raise ValueError(f"torchvision ResNets take 3 input channels, this model takes {cfg.in_chans}")
    tv_model = _torchvision().models.get_model(name, weights=None, num_classes=max(cfg.num_classes, 1))
    if cfg.num_classes == 0:
        tv_model.fc = nn.Identity()
    load_state_dict_strict(tv_model, to_torchvision_state_dict(model.state_dict()))
    return tv_model.train(model.training)


# --- timm ---------------------------------------------------------------------------------------------------------
_TIMM_TO_OURS = [("conv1.", "stem.conv."), ("bn1.", "stem.bn.")]
_LEGACY_TO_OURS = [("layer0.conv1.", "stem.conv."), ("layer0.bn1.", "stem.bn."), ("last_linear.", "fc.")]


def from_timm_state_dict(state_dict: StateDict, legacy: bool | None = None) -> OrderedDict:
    """timm ``seresnetN`` / ``resnetN`` (``legacy=False``) or ``legacy_seresnetN`` (``legacy=True``) -> ours.

    ``legacy=None`` detects the naming scheme from the keys. SE 1x1 conv weights (out, in, 1, 1) become linear
    weights (out, in). The ECA and CBAM layers of timm's ``resnetN`` with ``attn_layer='eca'`` / ``'cbam'`` become
    our ``attention="eca"`` / ``"cbam"`` modules' keys. Keys that match no rule are kept, so that a strict load
    reports them.
    """
    detected = _is_legacy_timm(state_dict)
    if legacy is None:
        legacy = detected
    elif bool(legacy) != detected:
        kind = "legacy_seresnet (senet.py)" if detected else "seresnet/resnet (resnet.py)"
        raise ValueError(f"legacy={legacy} but the keys look like a timm {kind} state dict; pass legacy={detected}")

    def transform(key: str, value: torch.Tensor) -> tuple[str, torch.Tensor]:
        m = _TIMM_SE.match(key)
        if m is not None and m["se"] == ("se_module" if legacy else "se"):
            key = f"{m['pre']}.se.excitation.{m['fc']}.{m['param']}"
            return key, (_se_conv_to_linear(key, value) if m["param"] == "weight" else value)
        if legacy:
            return key, value
        if m := _TIMM_ECA.match(key):
            return f"{m['pre']}.se.excitation.conv.weight", value
        if m := _TIMM_CBAM_FC.match(key):
            key = f"{m['pre']}.se.excitation.{m['fc']}.weight"
            return key, _se_conv_to_linear(key, value)
        if m := _TIMM_CBAM_SPATIAL.match(key):
            return f"{m['pre']}.se.spatial_gate.{m['layer']}.{m['param']}", value
        return key, value

    return _rename(state_dict, _LEGACY_TO_OURS if legacy else _TIMM_TO_OURS, transform)


def to_timm_state_dict(state_dict: StateDict, legacy: bool = False) -> OrderedDict:
    """Our state dict -> timm ``seresnetN`` / ``resnetN`` (``legacy=False``) or ``legacy_seresnetN`` (True).

    SE linear weights (out, in) become 1x1 conv weights (out, in, 1, 1); ECA and CBAM modules become the layers of
    timm's ``resnetN`` with ``attn_layer='eca'`` / ``'cbam'`` (a unit is CBAM when it has ``se.spatial_gate``
    keys). The model the weights come from must have the matching config (see ``timm_overrides``); ``to_timm``
    checks that. Weights of the attention modules without a timm counterpart raise a ``ValueError``.
    """
    rules = [(new, old) for old, new in (_LEGACY_TO_OURS if legacy else _TIMM_TO_OURS)]
    se_name = "se_module" if legacy else "se"
    cbam_units = {m["pre"] for k in state_dict if (m := _OUR_CBAM_SPATIAL.match(k))}
    if legacy and cbam_units:
        raise ValueError("timm's legacy_seresnet (senet.py) has SE blocks only; this state dict has CBAM blocks")

    def transform(key: str, value: torch.Tensor) -> tuple[str, torch.Tensor]:
        if m := _OUR_SE.match(key):
            if m["pre"] in cbam_units:  # CBAM's channel MLP: no biases, timm's "se.channel.fcK"
                key = f"{m['pre']}.se.channel.{m['fc']}.{m['param']}"
            else:
                key = f"{m['pre']}.{se_name}.{m['fc']}.{m['param']}"
            return key, (_se_linear_to_conv(key, value) if m["param"] == "weight" else value)
        if not legacy and (m := _OUR_ECA.match(key)):
            return f"{m['pre']}.se.conv.weight", value
        if m := _OUR_CBAM_SPATIAL.match(key):
            return f"{m['pre']}.se.spatial.conv.{m['layer']}.{m['param']}", value
        if _OUR_ATTENTION_KEY.search(key):
            raise ValueError(f"{key}: this attention module has no counterpart in timm (only SE, ECA and CBAM "
                             f"convert exactly; see seresnet.convert)")
        return key, value

    out = _rename(state_dict, rules, transform)
    # SE's FCs have biases; FCs without them (FcaNet's excitation) have the same names but no timm counterpart
    no_bias = sorted(k for k in state_dict if (m := _OUR_SE.match(k)) and m["param"] == "weight"
                     and m["pre"] not in cbam_units and f"{m['pre']}.se.excitation.{m['fc']}.bias" not in state_dict)
    if no_bias:
        raise ValueError(f"{no_bias[0]}: an excitation FC without bias (e.g. FcaNet's) is not an SE layer; this "
                         "attention module has no counterpart in timm (only SE, ECA and CBAM convert exactly)")
    return out


def _timm() -> Any:
    try:
        import timm
    except ImportError as e:  # optional dependency
        raise ImportError("converting timm models needs the optional dependency timm: pip install timm "
                          "(or pip install 'seresnet[timm]')") from e
    return timm


def _parse_timm_name(timm_name: str) -> tuple[str, int]:
    """``"timm/legacy_seresnet50.in1k"`` -> (``"legacy_se"``, 50)."""
    if not isinstance(timm_name, str):
        raise TypeError(f"expected a timm model name, got {type(timm_name).__name__}")
    base = timm_name.split("/")[-1].split(".")[0]  # drop the hub prefix and the pretrained tag
    m = re.fullmatch(r"(legacy_se|se|)resnet(\d+)", base)
    if m is None or int(m[2]) not in IMAGENET_LAYERS:
        raise ValueError(f"unsupported timm model {timm_name!r}; supported: {', '.join(TIMM_NAMES)} "
                         "(optionally with a pretrained tag such as '.in1k')")
    return m[1], int(m[2])


def timm_overrides(timm_name: str, attn_layer: str | None = None) -> dict[str, Any]:
    """Config fields that make ``SEResNetConfig(**timm_overrides(name))`` the architecture of a timm model.

    Supports ``seresnetN``, ``legacy_seresnetN`` and ``resnetN`` for N in 18, 34, 50, 101, 152; ``resnetN`` with
    ``attn_layer="eca"`` or ``"cbam"`` is timm's ``create_model("resnetN", block_args=dict(attn_layer=...))``.
    """
    kind, depth = _parse_timm_name(timm_name)
    if attn_layer is not None:
        if kind != "" or attn_layer not in TIMM_ATTENTIONS.values():
            raise ValueError(f"attn_layer goes with a plain timm 'resnetN' and must be one of "
                             f"{tuple(TIMM_ATTENTIONS.values())}, got {timm_name!r} with attn_layer={attn_layer!r}")
        kind = attn_layer
    return _overrides(kind, depth)


def _overrides(kind: str, depth: int) -> dict[str, Any]:
    """``timm_overrides`` for a kind of timm ResNet: "se", "legacy_se", "" (plain), "eca" or "cbam"."""
    base: dict[str, Any] = dict(style="imagenet", depth=depth, reduction=16, squeeze="avg", gate="sigmoid",
                                se_stages=None)
    if kind in TIMM_ATTENTIONS:
        # timm's EcaModule / CbamModule defaults: sigmoid gates, CBAM's hidden round(C / 16) = C // 16 here
        return {**base, "integration": "standard", "stride_on": "3x3", "stem_pool": "pad", "se_min_hidden": 1,
                "attention": kind}
    if kind == "legacy_se":
        # senet.py's basic block (SEResNetBlock) has a ReLU after bn2, before SE and the addition
        return {**base, "integration": "standard", "stride_on": "1x1", "stem_pool": "ceil", "se_min_hidden": 1,
                "basic_branch_relu": IMAGENET_LAYERS[depth][0] == "basic"}
    if kind == "se":
        # timm: rd_channels = make_divisible(C / 16, 8), i.e. max(C // 16, 8) for C in 64..2048
        return {**base, "integration": "standard", "stride_on": "3x3", "stem_pool": "pad", "se_min_hidden": 8}
    return {**base, "integration": "none", "stride_on": "3x3", "stem_pool": "pad", "se_min_hidden": 1}


def timm_config(timm_name: str, **overrides: Any) -> SEResNetConfig:
    """Our config for a timm model name, with further ``overrides`` (e.g. ``num_classes``)."""
    return SEResNetConfig(**timm_overrides(timm_name)).replace(**overrides)


def _structure(cfg: SEResNetConfig) -> dict[str, Any]:
    """What decides the computation and the weight shapes (ignores options that make no difference for ``cfg``)."""
    s: dict[str, Any] = dict(style=cfg.style, depth=cfg.depth, block=cfg.block, has_se=cfg.has_se,
                             basic_branch_relu=cfg.basic_branch_relu)
    if cfg.style == "imagenet":
        s["stem_pool"] = cfg.stem_pool
    if cfg.block == "bottleneck":
        s["stride_on"] = cfg.stride_on
    if cfg.has_se:
        used = ATTENTION_OPTIONS[cfg.attention]
        s.update(integration=cfg.integration, attention=cfg.attention, se_stages=cfg.se_stages or cfg.stage_numbers)
        s.update({k: getattr(cfg, k) for k in ("squeeze", "gate") if k in used})
        if "reduction" in used:
            s["se_hidden"] = tuple(se_hidden_width(w * (4 if cfg.block == "bottleneck" else 1), cfg.reduction,
                                                   cfg.se_min_hidden) for w in cfg.widths)
    return s


def _structure_diff(cfg: SEResNetConfig, target: SEResNetConfig) -> str:
    a, b = _structure(cfg), _structure(target)
    diffs = [f"{k}={a.get(k)!r} (needs {b.get(k)!r})" for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
    return ", ".join(diffs)


def timm_spec_for_config(cfg: SEResNetConfig | SEResNet) -> tuple[str, dict[str, Any]]:
    """``(name, kwargs)`` such that ``timm.create_model(name, **kwargs)`` has the architecture of ``cfg`` (a config
    or a model): ``("seresnet50", {})``, or ``("resnet50", {"block_args": {"attn_layer": "eca"}})`` for ECA and
    CBAM models. A ``ValueError`` says why there is none."""
    if isinstance(cfg, SEResNet):
        cfg = cfg.config
    if not isinstance(cfg, SEResNetConfig):
        raise TypeError(f"expected an SEResNetConfig or SEResNet, got {type(cfg).__name__}")
    if cfg.style != "imagenet" or cfg.depth not in IMAGENET_LAYERS:
        raise ValueError(f"timm has no equivalent of a {cfg.style}-style depth-{cfg.depth} model")
    if cfg.has_se and cfg.attention in _NO_TIMM:
        raise ValueError(f"timm has no exact counterpart of attention={cfg.attention!r}: {_NO_TIMM[cfg.attention]}")
    if cfg.has_se and cfg.attention in TIMM_ATTENTIONS:
        layer = TIMM_ATTENTIONS[cfg.attention]
        diff = _structure_diff(cfg, SEResNetConfig(**_overrides(cfg.attention, cfg.depth)))
        if diff:
            raise ValueError(f"no timm model has this architecture:\n  resnet{cfg.depth} with "
                             f"attn_layer={layer!r}: {diff}")
        return f"resnet{cfg.depth}", {"block_args": {"attn_layer": layer}}
    names = [f"{p}resnet{cfg.depth}" for p in ("se", "legacy_se", "")]
    reasons = []
    for name in names:
        diff = _structure_diff(cfg, timm_config(name))
        if not diff:
            return name, {}
        reasons.append(f"  {name}: {diff}")
    raise ValueError("no timm model has this architecture:\n" + "\n".join(reasons))


def timm_name_for_config(cfg: SEResNetConfig | SEResNet) -> str:
    """The timm model name with the same architecture as ``cfg`` (a config or a model); a ``ValueError`` says why
    there is none. ECA and CBAM models have no name of their own in timm (see ``timm_spec_for_config``)."""
    name, kwargs = timm_spec_for_config(cfg)
    if kwargs:
        raise ValueError(f"timm has no model name for this architecture: it is timm.create_model({name!r}, "
                         f"**{kwargs!r}) (timm_spec_for_config gives both)")
    return name


def _timm_attention_kind(timm_model: nn.Module) -> str:
    """The kind of a non-legacy timm ResNet by the class of its ``.se`` layers: "se", "eca", "cbam" or "" (none);
    a ``ValueError`` for attention layers without an exact counterpart here."""
    kinds = {type(m).__name__ for n, m in timm_model.named_modules() if n.rsplit(".", 1)[-1] == "se"}
    known = {"SEModule": "se", "EcaModule": "eca", "CbamModule": "cbam"}
    if not kinds:
        return ""
    if len(kinds) > 1 or not kinds <= set(known):
        raise ValueError(f"timm attention layers {sorted(kinds)} have no exact counterpart here; supported: "
                         f"SEModule (seresnetN), EcaModule (attn_layer='eca') and CbamModule (attn_layer='cbam')")
    kind = known[kinds.pop()]
    for n, m in timm_model.named_modules():
        if n.rsplit(".", 1)[-1] != "se":
            continue
        gates = [m.gate] if kind in ("se", "eca") else [m.channel.gate, m.spatial.gate]
        if kind == "eca" and getattr(m, "conv2", None) is not None:
            raise ValueError(f"{n}: timm's ECA with an MLP ('ecam') is not ECA; it has no counterpart here")
        if not all(type(g).__name__ == "Sigmoid" for g in gates):
            raise ValueError(f"{n}: gates {[type(g).__name__ for g in gates]} are not sigmoids; only timm's "
                             "default sigmoid gates have a counterpart here")
    return kind


def _infer_config(sd: StateDict) -> SEResNetConfig:
    """Depth, num_classes and in_chans of an ImageNet-style model from our-named state dict keys and shapes."""
    if "stem.conv.weight" not in sd:
        raise ValueError("cannot find the stem conv weight ('conv1.weight' / 'layer0.conv1.weight') in the state dict")
    bottleneck = any(re.fullmatch(r"layer\d+\.\d+\.conv3\.weight", k) for k in sd)
    layers = tuple(len({k.split(".")[1] for k in sd if k.startswith(f"layer{i}.")}) for i in range(1, 5))
    match = [d for d, (b, ls) in IMAGENET_LAYERS.items() if ls == layers and (b == "bottleneck") == bottleneck]
    if not match:
        raise ValueError(f"blocks per stage {layers} ({'bottleneck' if bottleneck else 'basic'}) match no ImageNet "
                         f"ResNet depth {sorted(IMAGENET_LAYERS)}")
    num_classes = sd["fc.weight"].shape[0] if "fc.weight" in sd else 0
    return SEResNetConfig(style="imagenet", depth=match[0], num_classes=num_classes,
                          in_chans=sd["stem.conv.weight"].shape[1])


def _hub_network_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the Hugging Face hub could not be reached" (URLError, ConnectionError, timeouts and
    huggingface_hub's LocalEntryNotFoundError are OSErrors; httpx's transport errors are not)."""
    errors: list[type[BaseException]] = [OSError, http.client.HTTPException]
    try:
        from huggingface_hub import errors as hf_errors

        errors += [getattr(hf_errors, n) for n in ("LocalEntryNotFoundError", "OfflineModeIsEnabled", "HfHubHTTPError")
                   if isinstance(getattr(hf_errors, n, None), type)]
    except ImportError:
        pass
    try:
        import httpx

        errors.append(httpx.TransportError)
    except ImportError:
        pass
    return tuple(errors)


def _timm_from_file(timm: Any, name: str, weights_file: str | os.PathLike, timm_kwargs: dict[str, Any]) -> nn.Module:
    """A timm model built without pretrained weights, then loaded strictly from a local timm state dict file;
    num_classes and in_chans come from the file unless given."""
    state_dict = _load_weights_file(weights_file)
    kwargs = dict(timm_kwargs)
    head = next((state_dict[k] for k in ("fc.weight", "last_linear.weight") if k in state_dict), None)
    stem = next((state_dict[k] for k in ("conv1.weight", "layer0.conv1.weight") if k in state_dict), None)
    kwargs.setdefault("num_classes", head.shape[0] if head is not None else 0)
    if stem is not None and stem.ndim == 4:
        kwargs.setdefault("in_chans", stem.shape[1])
    timm_model = timm.create_model(name, pretrained=False, **kwargs)
    try:
        return load_state_dict_strict(timm_model, state_dict)
    except StateDictMismatchError as exc:
        raise StateDictMismatchError(f"{weights_file} is not a timm {name} state dict. {exc}") from None


def from_timm(model_or_name: nn.Module | str, pretrained: bool = False,
              weights_file: str | os.PathLike | None = None, **timm_kwargs: Any) -> SEResNet:
    """Our model with the architecture and weights of a timm (SE-)ResNet.

    Args:
        model_or_name: a timm model (``seresnetN``, ``legacy_seresnetN``, ``resnetN``, also ``resnetN`` built with
            ``block_args=dict(attn_layer="eca" | "cbam")``, which gives our ``attention="eca"`` / ``"cbam"``) or its
            name, optionally with a pretrained tag (``"seresnet50.a1_in1k"``).
        pretrained: with a name, download timm's pretrained weights (needs internet access to the Hugging Face
            hub, or the files in its cache); a ``ConnectionError`` says so when the hub cannot be reached.
        weights_file: with a name, instead of ``pretrained``: a local timm state dict file for that model
            (``.safetensors``, or ``.pth`` / ``.pt`` / ``.bin`` read with ``torch.load(weights_only=True)``), e.g.
            the ``model.safetensors`` of ``timm/seresnet50.a1_in1k`` copied from a machine with internet access.
            num_classes and in_chans are read from it unless given in ``timm_kwargs``.
        timm_kwargs: with a name, passed to ``timm.create_model`` (e.g. ``num_classes=10``).

    The returned model has timm's num_classes and in_chans and is in the same train/eval mode as the timm model.
    """
    timm = _timm()
    if isinstance(model_or_name, str):
        overrides = timm_overrides(model_or_name)
        if weights_file is not None:
            if pretrained:
                raise ValueError("pass pretrained=True (download from the Hugging Face hub) or weights_file= "
                                 "(a local file), not both")
            timm_model = _timm_from_file(timm, model_or_name, weights_file, timm_kwargs)
        elif pretrained:
            try:
                timm_model = timm.create_model(model_or_name, pretrained=True, **timm_kwargs)
            except _hub_network_errors() as exc:
                raise ConnectionError(
                    f"could not get the pretrained weights of timm's {model_or_name} "
                    f"({type(exc).__name__}: {exc}). They are downloaded from the Hugging Face hub, which needs "
                    "internet access; without it, copy the model's weights file (e.g. model.safetensors from "
                    f"https://huggingface.co/timm/) here and pass it: from_timm({model_or_name!r}, "
                    "weights_file='/path/to/model.safetensors')") from exc
        else:
            timm_model = timm.create_model(model_or_name, pretrained=False, **timm_kwargs)
    elif isinstance(model_or_name, nn.Module):
        if pretrained or timm_kwargs or weights_file is not None:
            raise ValueError("pretrained=, weights_file= and timm keyword arguments are only used with a model name")
        timm_model = model_or_name
        overrides = None
    else:
        raise TypeError(f"expected a timm model or its name, got {type(model_or_name).__name__}")
    timm_sd = timm_model.state_dict()
    legacy = _is_legacy_timm(timm_sd)
    sd = from_timm_state_dict(timm_sd, legacy=legacy)
    shape = _infer_config(sd)
    if overrides is None or not legacy:
        # a model instance, or a resnet.py model built by name (block_args may add ECA or CBAM layers to "resnetN"):
        # the architecture from the layers themselves
        overrides = _overrides("legacy_se" if legacy else _timm_attention_kind(timm_model), shape.depth)
    cfg = SEResNetConfig(**overrides).replace(num_classes=shape.num_classes, in_chans=shape.in_chans)
    model = load_state_dict_strict(SEResNet(cfg), sd)
    return model.train(timm_model.training)


def to_timm(model: SEResNet) -> nn.Module:
    """A timm model with ``model``'s architecture (``timm_spec_for_config``), weights and train/eval mode."""
    timm = _timm()
    cfg = model.config
    name, kwargs = timm_spec_for_config(cfg)
    timm_model = timm.create_model(name, pretrained=False, num_classes=cfg.num_classes, in_chans=cfg.in_chans,
                                   **kwargs)
    load_state_dict_strict(timm_model, to_timm_state_dict(model.state_dict(), legacy=name.startswith("legacy")))
    return timm_model.train(model.training)
