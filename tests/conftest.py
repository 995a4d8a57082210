"""Shared fixtures: where the full CIFAR-10 copy is, and small CIFAR-format datasets written by the tests."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seresnet.data import CIFAR10_CLASSES

REPO = Path(__file__).resolve().parent.parent
SHARED_CIFAR = REPO.parent / "shared" / "data" / "cifar10-jpeg"

# One intra-op thread: the tests run small models, and on a busy 2-core machine two spinning OpenMP threads make
# convolutions 10-40x slower.
torch.set_num_threads(1)

# Reference gate functions written from their definitions, to check the SE block's gates against.
GATE_FNS = {
    "sigmoid": torch.sigmoid,
    "hard_sigmoid": lambda t: torch.clamp(t / 6 + 0.5, 0, 1),  # relu6(t + 3) / 6
    "tanh": torch.tanh,
    "relu": torch.relu,
}


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    """The full CIFAR-10 copy used for development and CI (``$SERESNET_DATA`` or ``../shared/data/cifar10-jpeg``).

    Skipped on a user's machine without it; under CI its absence is a failure.
    """
    env = os.environ.get("SERESNET_DATA")
    root = Path(env) if env else SHARED_CIFAR
    if not (root / "test").is_dir() and not (root / "cifar-10-batches-py").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the full CIFAR-10 copy at {root}")
        pytest.skip(f"full CIFAR-10 not found at {root} (set SERESNET_DATA)")
    return root


def write_image_folder(root: Path, per_class: int, seed: int = 0, splits: tuple[str, ...] = ("train", "test")) -> Path:
    """A tiny CIFAR-10 image folder ``root/{train,test}/<class>/NNNN.png`` of random 32x32 images.

    Each class gets a different mean colour so a network can learn something in a few steps.
    """
    g = torch.Generator().manual_seed(seed)
    for split in splits:
        for k, cls in enumerate(CIFAR10_CLASSES):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                base = torch.tensor([(k * 25) % 256, (k * 70) % 256, (255 - k * 25) % 256], dtype=torch.float32)
                img = (base.view(3, 1, 1) + 40 * torch.randn(3, 32, 32, generator=g)).clamp(0, 255).to(torch.uint8)
                Image.fromarray(img.permute(1, 2, 0).numpy()).save(d / f"{i:04d}.png")
    return root


def write_batches(root: Path, per_batch: int = 20, seed: int = 0) -> Path:
    """A tiny dataset in the official ``cifar-10-batches-py`` pickle format (data_batch_1..5, test_batch)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"batch_label": name, "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "labels": [int(v) for v in rng.integers(0, 10, per_batch)],
                 "filenames": [f"img_{i}.png" for i in range(per_batch)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CIFAR10_CLASSES)}, f)
    return root


@pytest.fixture()
def tiny_folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "cifar", per_class=12)


# --- tolerances for comparing two float64 computations of the same quantity ---------------------------------------
FLOAT64_EPS = torch.finfo(torch.float64).eps


def longest_reduction(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(number of layers that accumulate, longest sum any of them forms) for ``model(x)``, measured with hooks.

    A convolution's forward sums fan-in terms, its weight gradient sums over batch x output positions, a BN sums over
    batch x positions, a linear layer over its inputs (and its weight gradient over the batch).
    """
    import copy

    model = copy.deepcopy(model)  # a forward pass in training mode would move the caller's BN running statistics
    sizes: list[int] = []

    def hook(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        if isinstance(module, torch.nn.Conv2d):
            fan_in = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            sizes.append(max(fan_in, out.shape[0] * out.shape[2] * out.shape[3]))
        elif isinstance(module, torch.nn.BatchNorm2d):
            sizes.append(out.shape[0] * out.shape[2] * out.shape[3])
        elif isinstance(module, torch.nn.Linear):
            sizes.append(max(module.in_features, out.shape[0]))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.Linear))]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return len(sizes), max(sizes)


def assert_float64_close(actual: torch.Tensor, expected: torch.Tensor, layers: int, terms: int) -> None:
    """Two float64 evaluations of the same network that differ only in the order of their sums.

    A sum of n terms computed in any order is within n * eps * sum|terms| of the exact value (Higham, *Accuracy and
    Stability of Numerical Algorithms*, 2nd ed., section 4.2); errors add up over the ``layers`` a value passes
    through. The bound uses ``terms`` (the longest sum) for n and the tensor's largest magnitude for the size of the
    terms, times 4 for the magnitudes that cancel inside sums; it depends on the computation, not on which CPU
    (AVX-512 with or without AMX, different BLAS blockings) happened to run it.
    """
    scale = float(expected.abs().max())
    bound = 4 * layers * terms * FLOAT64_EPS * scale
    torch.testing.assert_close(actual, expected, rtol=0, atol=bound)


def load_script(name: str):
    """A script of ``scripts/`` (not a package) imported as a module, for tests of its functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
