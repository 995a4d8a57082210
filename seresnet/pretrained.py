"""Trained weights: the CIFAR-10 checkpoints shipped with the package, and runs written by ``seresnet.train``.

Weights are stored as safetensors (no pickle, nothing executes on load) with a ``.json`` metadata file beside them
saying how they were trained and what the project's own evaluation measured.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .convert import StateDictMismatchError, load_state_dict_strict
from .model import SEResNet, SEResNetConfig

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


def available_pretrained() -> list[str]:
    """Names of the checkpoints shipped with the package (e.g. ``["resnet20", "se_resnet20"]``)."""
    return sorted(p.stem for p in PRETRAINED_DIR.glob("*.safetensors") if p.with_suffix(".json").is_file())


def pretrained_metadata(name: str) -> dict[str, Any]:
    """The metadata of a shipped checkpoint: recipe, epochs, history, wall time, machine, test accuracy."""
    path = PRETRAINED_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"no pretrained checkpoint named {name!r}; shipped: {available_pretrained() or 'none'}")
    return json.loads(path.read_text())


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupted?): {exc}") from exc


def load_into(model: SEResNet, state_dict: dict[str, torch.Tensor], source: str = "state dict") -> SEResNet:
    """Load weights strictly; a ``StateDictMismatchError`` (a ``ValueError``) names missing, unexpected and
    mis-shaped keys and says which architecture was expected."""
    try:
        return load_state_dict_strict(model, state_dict)
    except StateDictMismatchError as exc:
        c = model.config
        raise StateDictMismatchError(f"{source} does not fit a {c.style} depth-{c.depth} model with "
                                     f"integration={c.integration!r}, num_classes={c.num_classes}. {exc}") from None


def load_pretrained(name: str, **overrides: Any) -> SEResNet:
    """A shipped CIFAR-10 model in eval mode, e.g. ``load_pretrained("se_resnet20")``.

    Overrides that change the architecture (``num_classes=100``) are refused with a clear error; use
    ``reset_classifier`` after loading for a new head.
    """
    meta = pretrained_metadata(name)
    config = SEResNetConfig.from_dict(meta["model_config"]).replace(**overrides)
    model = SEResNet(config)
    load_into(model, _load_safetensors(PRETRAINED_DIR / f"{name}.safetensors"), f"pretrained {name!r}")
    return model.eval()


def load_model(path: str | os.PathLike) -> SEResNet:
    """A model from a training run: a run directory, its ``model.safetensors`` (with ``metadata.json``) or
    ``checkpoint.pt`` (loaded with ``weights_only=True``)."""
    from .train import load_checkpoint

    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors" if (path / "model.safetensors").is_file() else path / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no weights at {path}")
    if path.suffix == ".safetensors":
        meta_path = path.with_name("metadata.json")
        if not meta_path.is_file():
            meta_path = path.with_suffix(".json")
        if not meta_path.is_file():
            raise FileNotFoundError(f"{path} has no metadata.json beside it to say which architecture it is")
        config = SEResNetConfig.from_dict(json.loads(meta_path.read_text())["model_config"])
        return load_into(SEResNet(config), _load_safetensors(path), str(path)).eval()
    ckpt = load_checkpoint(path)
    config = SEResNetConfig.from_dict(ckpt["model_config"])
    return load_into(SEResNet(config), ckpt["model"], str(path)).eval()
