"""CIFAR-10 from wherever users keep it, held in memory as uint8 tensors and augmented a whole batch at a time.

Sources, tried in this order inside the data root (``root=`` argument > ``$SERESNET_DATA`` > the repository's
``data/``):

1. ``cifar-10-batches-py/``: the official Python batches (read with an unpickler that only admits numpy arrays;
   ``torchvision.datasets.CIFAR10`` is what downloads them when ``download=True`` and the machine has internet);
2. an image folder ``{train,test}/<class>/*.jpg|png`` at the root itself or in ``cifar10-jpeg/`` or ``cifar10/``.

Decoding once into a (N, 3, 32, 32) uint8 tensor and augmenting with tensor ops keeps a 2-core CPU busy training
instead of decoding: per-image PIL transforms in worker processes would cost more than the network itself.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
# Per-channel statistics of the CIFAR-10 training set (0..1 scale).
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
EIGHT_BIT_MODES = ("RGB", "RGBA", "L", "LA", "P", "CMYK", "YCbCr", "1")
FOLDER_NAMES = (".", "cifar10-jpeg", "cifar10")
SAMPLE_DIR = Path(__file__).resolve().parent / "sample" / "cifar10-test-sample"
SPLITS = ("train", "test")


class DataNotFoundError(FileNotFoundError):
    """CIFAR-10 was not found in any of the places and layouts ``seresnet.data`` knows."""


def default_data_root() -> Path:
    """``$SERESNET_DATA`` if set, else the repository's ``data/`` folder (or ``./data`` for an installed package)."""
    env = os.environ.get("SERESNET_DATA")
    if env:
        return Path(env).expanduser()
    repo_data = Path(__file__).resolve().parent.parent / "data"
    return repo_data if repo_data.is_dir() else Path.cwd() / "data"


@dataclass(frozen=True)
class CifarSource:
    """Where CIFAR-10 was found: ``kind`` is ``"batches"`` (official pickles) or ``"folder"`` (class folders)."""

    kind: str
    path: Path

    def __str__(self) -> str:
        return f"{self.kind} at {self.path}"


def find_cifar10(root: str | os.PathLike | None = None) -> CifarSource:
    """Locate CIFAR-10 under ``root`` (see the module docstring for the order), or raise ``DataNotFoundError``."""
    base = Path(root).expanduser() if root is not None else default_data_root()
    batches = base / "cifar-10-batches-py"
    # A batches folder without test_batch is still a source (the lossless copy on the project's machines has none);
    # asking it for the test split then says so.
    if (batches / "data_batch_1").is_file() or (batches / "test_batch").is_file():
        return CifarSource("batches", base)
    if base.name == "cifar-10-batches-py" and ((base / "data_batch_1").is_file() or (base / "test_batch").is_file()):
        return CifarSource("batches", base.parent)
    looked = [str(batches)]
    for name in FOLDER_NAMES:
        folder = (base / name).resolve()
        looked.append(f"{folder}/{{train,test}}/<class>/")
        if (folder / "train").is_dir() or (folder / "test").is_dir():
            return CifarSource("folder", folder)
    raise DataNotFoundError(
        "CIFAR-10 was not found. Looked in:\n  " + "\n  ".join(looked) + "\n"
        "Provide it in one of three ways:\n"
        "  1. with internet: seresnet.data.load_cifar10(download=True) (or `python -m seresnet.train --download`),\n"
        "     which uses torchvision to fetch the official archive into the data root;\n"
        "  2. copy an existing `cifar-10-batches-py` folder into the data root;\n"
        "  3. point at an image folder ROOT/{train,test}/<class>/*.png|jpg.\n"
        "Choose the data root with the `root=` argument / `--data` option or the SERESNET_DATA environment variable."
    )


def _download(base: Path) -> None:
    """Fetch the official archive with torchvision; remove a partial download so it is never taken for data."""
    from torchvision.datasets import CIFAR10

    base.mkdir(parents=True, exist_ok=True)
    archive = base / CIFAR10.filename
    try:
        CIFAR10(str(base), train=False, download=True)
    except Exception as exc:  # no internet, disk full, interrupted: leave nothing half-made behind
        archive.unlink(missing_ok=True)
        raise DataNotFoundError(f"downloading CIFAR-10 into {base} failed ({exc}). {_offline_hint()}") from exc


def _offline_hint() -> str:
    return ("Without internet, copy `cifar-10-batches-py` into the data root or point SERESNET_DATA at an image "
            "folder ROOT/{train,test}/<class>/*.jpg.")


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler for the official CIFAR batches that refuses everything but numpy arrays and plain containers,
    so a tampered file cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        with open(path, "rb") as f:
            d = _BatchUnpickler(f, encoding="latin1").load()
        if getattr(d["data"], "dtype", None) != np.uint8:  # a float or 16-bit array would be cast silently
            raise ValueError(f"'data' has dtype {getattr(d['data'], 'dtype', type(d['data']).__name__)}, not uint8")
        data = torch.as_tensor(d["data"]).reshape(-1, 3, 32, 32)
        labels = torch.as_tensor(d.get("labels", d.get("fine_labels")), dtype=torch.int64)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable CIFAR-10 batch (expected a dict with 'data' (N, 3072) uint8 "
                         f"and 'labels'): {exc}") from exc
    if labels.shape != (data.shape[0],) or labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES):
        raise ValueError(f"{path}: {data.shape[0]} images but labels of shape {tuple(labels.shape)} in "
                         f"[{int(labels.min())}, {int(labels.max())}]; expected one label 0..9 per image")
    return data, labels


def _load_batches(base: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    folder = base / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing == ["test_batch"]:
        raise DataNotFoundError(f"{folder} has the training batches but no test_batch; evaluate on a test set from "
                                f"another place, such as a class folder <class>/*.png|jpg (training: --test-data "
                                f"NAME=PATH or cfg.test_data; python -m seresnet.evaluate: --data PATH), or hold out a "
                                f"validation split of the training images (--val-split N)")
    if missing:
        raise DataNotFoundError(f"{folder} is missing {missing}; expected data_batch_1..5 and test_batch")
    parts = [_read_batch(folder / n) for n in names]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def load_image_folder(
    folder: str | os.PathLike, classes: tuple[str, ...] = CIFAR10_CLASSES, size: int = 32,
    limit_per_class: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``folder/<class>/*.jpg|png`` into uint8 images (N, 3, size, size) and int64 labels (N,).

    Files are taken in sorted order within each class; ``limit_per_class`` keeps the first ones.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataNotFoundError(f"{folder} is not a folder; expected {folder}/<class>/*.png|jpg")
    missing = [c for c in classes if not (folder / c).is_dir()]
    if missing:
        raise DataNotFoundError(f"{folder} is missing class folders {missing}; expected one folder per class: "
                                f"{list(classes)}")
    extra = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in classes
                   and not p.name.startswith("."))
    if extra:  # a silently ignored class would make every accuracy wrong
        raise ValueError(f"{folder} has folders {extra} that are not classes; expected only {list(classes)}")
    images, labels = [], []
    for label, cls in enumerate(classes):
        files = sorted(p for p in (folder / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataNotFoundError(f"{folder / cls} has no .jpg or .png images")
        for path in files[:limit_per_class]:
            try:
                with Image.open(path) as im:
                    if im.mode not in EIGHT_BIT_MODES:  # 16-bit or float pixels would wrap or clip silently
                        raise ValueError(f"pixel mode {im.mode!r}; expected 8-bit RGB (or 8-bit grey/palette) images")
                    img = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
            except Exception as exc:
                raise ValueError(f"cannot decode image {path}: {exc}") from exc
            if img.shape[1:] != (size, size):
                raise ValueError(f"{path} is {tuple(img.shape[1:])}, expected {size}x{size} CIFAR images")
            images.append(img)
            labels.append(label)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def load_cifar10(
    split: str = "train", root: str | os.PathLike | None = None, download: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 ``split`` ("train" or "test") as uint8 images (N, 3, 32, 32) and int64 labels (N,)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    try:
        source = find_cifar10(root)
    except DataNotFoundError:
        if not download:
            raise
        _download(Path(root).expanduser() if root is not None else default_data_root())
        source = find_cifar10(root)
    if source.kind == "batches":
        return _load_batches(source.path, split)
    if not (source.path / split).is_dir():
        raise DataNotFoundError(f"{source.path} has no '{split}' folder; expected {source.path}/{split}/<class>/")
    return load_image_folder(source.path / split)


def check_class_labels(labels: Any, num_classes: int) -> None:
    """A ValueError unless ``labels`` are integer class indices in 0..num_classes-1: floats would be truncated, -1
    would silently name the last class and num_classes fail deep inside a plot or a one-hot."""
    t = torch.as_tensor(labels)
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise ValueError(f"labels must be class indices 0..{num_classes - 1} (integers), got {t.dtype}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"labels must be class indices 0..{num_classes - 1} (integers), got values from "
                         f"{int(t.min())} to {int(t.max())}")


def load_eval_set(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Test images from ``path``: a class folder ``path/<class>/*.png|jpg`` (such as the lossless
    ``test-subset/``), or a data root whose test split ``load_cifar10("test", path)`` finds."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataNotFoundError(f"evaluation set {path} does not exist; expected a folder <class>/*.png|jpg or a "
                                f"CIFAR-10 data root with a test split")
    if (path / CIFAR10_CLASSES[0]).is_dir():
        return load_image_folder(path)
    return load_cifar10("test", path)


def stratified_split(labels: torch.Tensor, n_val: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, validation) that hold out ``n_val`` images with the classes in equal shares (the first
    ``n_val % K`` classes get one more). The split depends only on ``labels``, ``n_val`` and ``seed``, not on the
    training seed, so runs with different seeds are validated on the same images."""
    if isinstance(n_val, bool) or not isinstance(n_val, int) or n_val < 1:
        raise ValueError(f"validation split must be a positive number of images, got {n_val!r}")
    classes = torch.unique(labels)
    per_class, extra = divmod(n_val, len(classes))
    g = torch.Generator().manual_seed(seed)
    val = []
    for i, c in enumerate(classes.tolist()):
        idx = (labels == c).nonzero().flatten()
        k = per_class + (i < extra)
        if k >= len(idx):
            raise ValueError(f"a validation split of {n_val} images needs {k} of class {c}, which has only "
                             f"{len(idx)} training images; use a smaller --val-split")
        val.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    val_idx = torch.cat(val).sort().values
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[val_idx] = False
    return keep.nonzero().flatten(), val_idx


def load_sample() -> tuple[torch.Tensor, torch.Tensor]:
    """The small real CIFAR-10 test sample shipped with the package: 100 images per class, uint8 (1000, 3, 32, 32).

    They are the first 100 test images of each class of the JPEG copy of CIFAR-10 used for development.
    """
    return load_image_folder(SAMPLE_DIR)


def subset(
    images: torch.Tensor, labels: torch.Tensor, n: int | None, seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random subset of ``n`` images (all if ``n`` is None): class folders are sorted by class, so the first
    ``n`` would all be airplanes."""
    if n is None or n >= images.shape[0]:
        return images, labels
    if n < 1:
        raise ValueError(f"subset size must be >= 1, got {n}")
    idx = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return images[idx], labels[idx]


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (..., 3, H, W) -> float32, scaled to 0..1 and standardised with the CIFAR-10 mean and std."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images (N, 3, H, W) with values 0..255, got dtype {images.dtype}")
    if images.ndim < 3 or images.shape[-3] != 3:
        raise ValueError(f"expected images of shape (..., 3, H, W), got {tuple(images.shape)}")
    mean = torch.tensor(CIFAR10_MEAN).view(3, 1, 1) * 255
    std = torch.tensor(CIFAR10_STD).view(3, 1, 1) * 255
    return (images.float() - mean) / std


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Batch augmentation on uint8 images (B, 3, H, W): random crop after zero padding, random horizontal flip."""
    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    rows = dy[:, None] + torch.arange(h)  # (B, H)
    cols = dx[:, None] + torch.arange(w)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    idx_b = torch.arange(b)[:, None, None]
    # Advanced indexing gathers every crop in one op: result (B, H, W, C) -> (B, C, H, W).
    return padded.permute(0, 2, 3, 1)[idx_b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def random_jpeg(images: torch.Tensor, generator: torch.Generator, p: float = 0.5,
                quality: tuple[int, int] = (50, 95)) -> torch.Tensor:
    """Re-encode each uint8 image (B, 3, H, W) as JPEG with probability ``p``, at a quality drawn uniformly from
    ``quality`` (inclusive), and decode it again: a network that sees compression artefacts in training is not
    thrown by them at test time (trained on lossless CIFAR-10 alone, SE-ResNet-20 loses 11 points on JPEG copies of
    the same test images)."""
    if not 0 <= p <= 1 or not 1 <= quality[0] <= quality[1] <= 100:
        raise ValueError(f"need 0 <= p <= 1 and 1 <= quality[0] <= quality[1] <= 100, got p={p}, quality={quality}")
    chosen = (torch.rand(images.shape[0], generator=generator) < p).nonzero().flatten().tolist()
    qualities = torch.randint(quality[0], quality[1] + 1, (images.shape[0],), generator=generator).tolist()
    if not chosen:
        return images
    out = images.clone()
    for i in chosen:
        buf = io.BytesIO()
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=qualities[i])
        with Image.open(buf) as im:
            out[i] = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
    return out


class TensorBatches:
    """Mini-batches of normalised float images and labels from in-memory uint8 tensors.

    ``augment`` applies random crop + flip (and, with ``jpeg_p`` > 0, JPEG re-encoding of that share of the images,
    ``random_jpeg``). With ``shuffle`` the order of epoch ``e`` depends only on
    ``(seed, e)``, so a resumed run sees exactly the batches an uninterrupted one would. ``rank``/``world_size``
    give each DistributedDataParallel process its own shard of every epoch.
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, shuffle: bool = False,
        augment: bool = False, drop_last: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1,
        channels_last: bool = False, jpeg_p: float = 0.0,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        per_rank = images.shape[0] // world_size
        if drop_last and batch_size > per_rank:
            raise ValueError(f"batch size {batch_size} is larger than the {per_rank} images available"
                             f"{' per process' if world_size > 1 else ''}; use a batch size <= {per_rank}")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.augment, self.drop_last = batch_size, shuffle, augment, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.channels_last = channels_last
        self.jpeg_p = jpeg_p
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = self.images.shape[0]
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        n_per_rank = n // self.world_size if self.world_size > 1 else n
        return order[self.rank::self.world_size][:n_per_rank]

    def __len__(self) -> int:
        n = len(self._indices())
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self._indices()
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch + 7 + 1_000_000 * self.rank)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = idx[start:start + self.batch_size]
            x = self.images[batch]
            if self.augment:
                if self.jpeg_p:  # drawn from the same generator: a resumed run sees the same images
                    x = random_jpeg(x, g, self.jpeg_p)
                x = random_crop_flip(x, g)
            x = normalize(x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[batch]
