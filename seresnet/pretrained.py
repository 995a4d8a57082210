"""Trained weights: the CIFAR-10 checkpoints shipped with the package, and runs written by ``seresnet.train``.

Weights are stored as safetensors (no pickle, nothing executes on load) with a ``.json`` metadata file beside them
saying how they were trained and what the project's own evaluation measured. When that metadata has a
``weights_sha256`` field (the shipped checkpoints and runs written by ``seresnet.train`` do), the weights file is
checked against it before loading: a damaged or replaced file is refused instead of giving a quietly wrong model.
"""

from __future__ import annotations

import hashlib
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


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_weights(path: Path, meta: dict[str, Any], meta_path: Path | str) -> None:
    """Raise a ``ValueError`` if ``meta`` records a ``weights_sha256`` that the file at ``path`` does not have.

    Metadata without the field (older runs) is accepted unchecked.
    """
    expected = meta.get("weights_sha256")
    if expected is None:
        return
    if not isinstance(expected, str) or len(expected) != 64:
        raise ValueError(f"{meta_path}: weights_sha256 must be a 64-digit hex SHA-256, got {expected!r}")
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ValueError(f"{path} does not match the SHA-256 recorded in {meta_path}: the file was damaged or "
                         f"replaced (expected {expected}, got {actual}); restore the original weights file")


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

    The weights were trained for one configuration, so ``overrides`` may only repeat it (``gate="sigmoid"``); any
    other value is refused with a ``ValueError``, also where the weight shapes would still fit (``gate="tanh"``,
    ``squeeze="max"`` would give a different network, not these weights' accuracy). For a new head load the model
    and call ``reset_classifier``; for another architecture build it without ``pretrained=True`` and load weights
    yourself. The weights file is checked against the SHA-256 in the metadata.
    """
    meta = pretrained_metadata(name)
    shipped = SEResNetConfig.from_dict(meta["model_config"])
    # Compare normalised configs, so that equal spellings (se_stages=[3, 2] and (2, 3), block=None) are accepted.
    config = shipped.replace(**overrides)
    changed = {k: v for k, v in sorted(overrides.items()) if getattr(config, k) != getattr(shipped, k)}
    if changed:
        listed = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        was = ", ".join(f"{k}={getattr(shipped, k)!r}" for k in changed)
        hint = (f"; for a new head load it and call model.reset_classifier({changed['num_classes']!r})"
                if set(changed) == {"num_classes"} else "")
        raise ValueError(f"pretrained {name!r} cannot take overrides {listed} (shipped: {was}): its weights were "
                         f"trained for its own configuration and would give another network. Create the model "
                         f"without pretrained=True (create_model({name!r}, {listed})) and load weights trained for "
                         f"it yourself{hint}")
    weights = PRETRAINED_DIR / f"{name}.safetensors"
    verify_weights(weights, meta, PRETRAINED_DIR / f"{name}.json")
    model = SEResNet(config)
    load_into(model, _load_safetensors(weights), f"pretrained {name!r}")
    return model.eval()


def load_model(path: str | os.PathLike) -> SEResNet:
    """A model from a training run: a run directory, its ``model.safetensors`` (with ``metadata.json``) or
    ``checkpoint.pt`` (loaded with ``weights_only=True``), or any ``<name>.safetensors`` with ``<name>.json``.

    A ``.safetensors`` file is checked against the ``weights_sha256`` of the metadata that describes it
    (``metadata.json`` describes ``model.safetensors``, ``<name>.json`` describes ``<name>.safetensors``)."""
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
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{meta_path} is not valid JSON ({exc}); expected the metadata a training run or "
                             f"export_pretrained.py writes") from exc
        if not isinstance(meta, dict) or "model_config" not in meta:
            raise ValueError(f"{meta_path} has no 'model_config' (the architecture of {path.name}); expected the "
                             f"metadata a training run or export_pretrained.py writes")
        # metadata.json records the hash of model.safetensors; another file beside it only borrows its config.
        if meta_path.name != "metadata.json" or path.name == "model.safetensors":
            verify_weights(path, meta, meta_path)
        config = SEResNetConfig.from_dict(meta["model_config"])
        return load_into(SEResNet(config), _load_safetensors(path), str(path)).eval()
    ckpt = load_checkpoint(path)
    config = SEResNetConfig.from_dict(ckpt["model_config"])
    return load_into(SEResNet(config), ckpt["model"], str(path)).eval()


def pretrained_gate_history(name: str) -> Any:
    """The excitations' history recorded while the shipped checkpoint ``name`` trained (``seresnet.gate_history``:
    per epoch and SE block, class-mean excitations, spread, saturation, dead hidden units, class specificity),
    checked against the SHA-256 in its metadata."""
    from .gate_history import GateHistory

    meta = pretrained_metadata(name)
    info = meta.get("gate_history")
    if not info:
        raise ValueError(f"pretrained {name!r} has no recorded excitation history (a model without SE blocks, or "
                         f"trained without --keep-epoch-weights)")
    path = PRETRAINED_DIR / info["file"]
    actual = sha256_file(path)
    if actual != info["sha256"]:
        raise ValueError(f"{path} does not match the SHA-256 in {name}.json (expected {info['sha256']}, got "
                         f"{actual}): the file was damaged or replaced")
    return GateHistory.load(path)


def accuracy_lines(meta: dict[str, Any]) -> list[str]:
    """One line per evaluation set of a checkpoint's metadata: accuracy, 95% interval, number of images, and what
    the set is (``"lossless-test-subset: 90.95% (95% CI 89.0%-92.6%) on 1,017 images - the first 1,017 images of
    the official ..."``)."""
    lines = []
    for name, ev in meta.get("evaluations", {}).items():
        lo, hi = ev["ci95"]
        lines.append(f"{name}: {ev['accuracy']:.2%} (95% CI {lo:.1%}-{hi:.1%}) on {ev['images']:,} images"
                     + (f" - {ev['description']}" if ev.get("description") else ""))
    if not lines and meta.get("test_accuracy") is not None:  # metadata written before evaluation sets were named
        lines.append(f"test: {meta['test_accuracy']:.2%} ({meta.get('evaluated_on', 'test set')})")
    return lines
