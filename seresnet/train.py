"""Train an (SE-)ResNet on CIFAR-10: ``python -m seresnet.train --model se_resnet20 --epochs 30 --out runs/se20``.

The loop in ``train()`` is the whole story: SGD with Nesterov momentum, a one-cycle learning rate (linear warm-up,
cosine decay), optional label smoothing, bfloat16 autocast and channels_last on the CPU, an evaluation after every
epoch (on a held-out validation split with ``--val-split N``, else on the test set), a metrics history and an atomic
checkpoint written after every epoch.

Under ``python -m seresnet.launch --nproc_per_node N`` (torchrun with every socket on the loopback interface) the
same script trains with DistributedDataParallel (gloo on the CPU, nccl on GPUs); rank 0 evaluates and writes files.

Files in the output directory:
    checkpoint.pt      everything needed to resume (model, optimiser, schedule, epoch, config, history)
    history.json       one record per epoch: loss, accuracies, learning rate, images/s, seconds
    model.safetensors  the final weights, and metadata.json beside them (written when the run completes): recipe,
                       machine, every evaluation set with its size and 95% interval, the weights' SHA-256
    epochs/            epoch_NNN.safetensors, the weights after every epoch (only with --keep-epoch-weights)
    .lock              held while a run writes into the folder
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .data import DataNotFoundError, TensorBatches, load_cifar10, load_eval_set, stratified_split, subset
from .evaluate import evaluate
from .model import SEResNet, create_model, get_config
from .pretrained import sha256_file


@dataclass
class TrainConfig:
    """A training recipe. ``train_limit`` / ``test_limit`` use a fixed random subset of N images (quick demos).

    ``val_split`` holds out N training images (stratified, the same images for every seed) and evaluates on them
    after every epoch instead of the test split. ``test_data`` names further evaluation sets, ``"NAME=PATH"`` or
    ``"PATH"`` (a class folder or a data root with a test split), measured once at the end. ``keep_epoch_weights``
    also stores the weights after every epoch (``epochs/epoch_NNN.safetensors``, for histories of the excitations).
    """

    model: str = "se_resnet20"
    overrides: dict[str, Any] = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    warmup_epochs: float = 2.0
    seed: int = 0
    data: str | None = None
    out: str | None = "runs/se_resnet20"
    bf16: bool = True
    channels_last: bool = True
    compile: bool = False
    threads: int | None = None
    train_limit: int | None = None
    test_limit: int | None = None
    download: bool = False
    val_split: int = 0
    test_data: tuple[str, ...] = ()
    keep_epoch_weights: bool = False
    jpeg_p: float = 0.0

    def validate(self) -> None:
        get_config(self.model, **self.overrides)  # unknown model or override: clear error before any work
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        checks = {  # finite numbers only: inf or nan would pass a comparison and ruin the run later
            "lr": (self.lr, lambda v: v > 0, "a finite number > 0"),
            "weight_decay": (self.weight_decay, lambda v: v >= 0, "a finite number >= 0"),
            "momentum": (self.momentum, lambda v: 0 <= v < 1, "a finite number in [0, 1)"),
            "label_smoothing": (self.label_smoothing, lambda v: 0 <= v < 1, "a number in [0, 1)"),
            "jpeg_p": (self.jpeg_p, lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
            "warmup_epochs": (self.warmup_epochs, lambda v: v >= 0, "a finite number >= 0"),
        }
        for name, (v, ok, expected) in checks.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(v):
                raise ValueError(f"{name} must be {expected}, got {v!r}")
        for name in ("threads", "train_limit", "test_limit"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be None or a positive integer, got {v!r}")
        if isinstance(self.val_split, bool) or not isinstance(self.val_split, int) or self.val_split < 0:
            raise ValueError(f"val_split must be a number of images >= 0, got {self.val_split!r}")
        parse_test_data(self.test_data)


@dataclass
class TrainResult:
    """What ``train`` returns: the trained model, the per-epoch history, and the output directory (or None)."""

    model: SEResNet
    history: list[dict[str, float]]
    out: Path | None


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """One-cycle schedule: linear warm-up from 0 to ``peak``, then cosine decay to 0."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def atomic_write_bytes(path: Path, write: Callable[[Path], None]) -> None:
    """Write via a temporary file in the same folder and rename it: a kill never leaves a half-written file, and a
    failed write (full disk, no permission) leaves the previous file as it was and raises ``RunWriteError``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise RunWriteError(f"could not write {path}: {exc.strerror or exc}; the previous {path.name}, if any, is "
                            f"intact") from exc
    except RuntimeError as exc:  # torch.save reports a failed write as a RuntimeError from its C++ writer
        if "write" not in str(exc).lower() and "file" not in str(exc).lower():
            raise
        raise RunWriteError(f"could not write {path} ({str(exc).splitlines()[0]}); the previous {path.name}, if "
                            f"any, is intact") from exc
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, lambda p: p.write_text(json.dumps(obj, indent=1)))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a training checkpoint safely (``weights_only=True``), with a clear error if it is damaged."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # torch's message suggests weights_only=False, which would run whatever code the file holds: keep its cause
        reason = str(exc).split("WeightsUnpickler error:", 1)[-1].split("Check the documentation", 1)[0].strip()
        raise ValueError(f"{path} is not a readable seresnet checkpoint (truncated, corrupted, or not written by "
                         f"seresnet.train; it is loaded with weights_only=True only): {reason}") from exc
    expected = ("model", "train_config", "model_config")
    if not isinstance(ckpt, dict) or any(key not in ckpt for key in expected):
        raise ValueError(f"{path} is not a seresnet training checkpoint (expected keys {list(expected)})")
    return ckpt


def _dist_env() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def _cpp_compiler() -> str | None:
    """The C++ compiler inductor would find ($CXX, g++, clang++ or c++), or None."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else []
    return next((path for name in [*names, "g++", "clang++", "c++"] if (path := shutil.which(name))), None)


def _machine() -> str:
    """CPU model, core count, the bf16 matrix units that decide its speed (AMX or AVX-512 BF16), torch version."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    units = [name for flag, name in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512 BF16")) if flag in flags]
    return f"{model} ({', '.join(units) or 'no bf16 units'}), {os.cpu_count()} cores, torch {torch.__version__}"


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[list[dict[str, float]]], None] | None = None,
    device: str | torch.device | None = None,
    arrays: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    log_epochs: bool = True,
) -> TrainResult:
    """Train ``cfg.model`` on CIFAR-10 and return the model and its history.

    ``resume`` continues from ``cfg.out/checkpoint.pt`` (to the same result as an uninterrupted run) and refuses a
    recipe that differs from the checkpoint's. Without it, a folder that holds any file of a run is refused unless
    ``overwrite``, which removes the old run's files before the first epoch. The folder is locked for the whole run,
    and it is checked to be writable, with room for the checkpoints, before training. ``on_epoch_end(history)`` is
    called after each epoch (the notebooks use it for a live plot). ``arrays`` = (train images, train labels, test
    images, test labels) already in memory (uint8 / int64, as ``load_cifar10`` returns them) skips loading ``cfg.data``:
    a sweep of many short runs decodes the data set once. ``log_epochs=False`` drops the one-line summary printed
    after every epoch (a notebook's live plot already shows it).
    """
    cfg.validate()
    rank, world = _dist_env()
    distributed = world > 1
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() and distributed else "cpu"))
    if distributed and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend)
        if dev.type == "cuda":
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(dev)
    if cfg.compile and dev.type == "cpu" and not _cpp_compiler():
        raise ValueError("compile=True (--compile) needs a C++ compiler for torch.compile on the CPU (g++ or clang++, "
                         "or one named by $CXX); install one or train without --compile")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out) if cfg.out else None
    with RunFolder(out if rank == 0 else None):
        return _train(cfg, out, rank, world, dev, resume=resume, overwrite=overwrite, progress=progress,
                      on_epoch_end=on_epoch_end, arrays=arrays, log_epochs=log_epochs)


def _train(cfg: TrainConfig, out: Path | None, rank: int, world: int, dev: torch.device, *, resume: bool,
           overwrite: bool, progress: bool, on_epoch_end: Callable[[list[dict[str, float]]], None] | None,
           arrays: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None,
           log_epochs: bool) -> TrainResult:
    distributed = world > 1
    ckpt_path = out / "checkpoint.pt" if out else None
    start_state: dict[str, Any] | None = None
    artifacts = run_artifacts(out) if out is not None else []
    if resume:
        if ckpt_path is None or not ckpt_path.exists():
            raise FileNotFoundError(f"cannot resume: no checkpoint at {ckpt_path}"
                                    + (f" (the folder holds {artifacts})" if artifacts else ""))
        start_state = load_checkpoint(ckpt_path)
        diffs = recipe_differences(start_state["train_config"], cfg)
        if diffs:
            raise ValueError(f"cannot resume {ckpt_path} with a different recipe: "
                             + "; ".join(f"{k} was {a!r}, now {b!r}" for k, a, b in diffs)
                             + ". Resume with the same settings, or start a new run in another --out")
    elif artifacts and not overwrite:
        raise FileExistsError(f"{out} already holds a run ({', '.join(artifacts)}); pass resume=True (--resume) to "
                              f"continue it or overwrite=True (--overwrite) to replace it, or choose another --out")

    # Data first: a missing dataset or a bad batch size fails before anything is written.
    extra_sets = {name: load_eval_set(path) for name, path in parse_test_data(cfg.test_data).items()}
    if arrays is None:
        x_train, y_train = load_cifar10("train", cfg.data, download=cfg.download)
    else:
        x_train, y_train, *_ = arrays
    if cfg.val_split:
        train_idx, val_idx = stratified_split(y_train, cfg.val_split)
        (x_test, y_test), eval_name = (x_train[val_idx], y_train[val_idx]), "val"
        x_train, y_train = x_train[train_idx], y_train[train_idx]
    elif arrays is not None:
        (x_test, y_test), eval_name = arrays[2:], "test"
    else:
        try:
            (x_test, y_test), eval_name = load_cifar10("test", cfg.data), "test"
        except DataNotFoundError:
            if not extra_sets:
                raise
            # no test split beside the training data: follow the first named set every epoch, under its own name
            eval_name, (x_test, y_test) = next(iter(extra_sets.items()))
    x_train, y_train = subset(x_train, y_train, cfg.train_limit)
    x_test, y_test = subset(x_test, y_test, cfg.test_limit)
    num_classes = get_config(cfg.model, **cfg.overrides).num_classes
    for name, (_, y) in {"training": (x_train, y_train), eval_name: (x_test, y_test), **extra_sets}.items():
        if int(y.max()) >= num_classes:
            raise ValueError(f"the {name} labels go up to {int(y.max())} but the model has num_classes="
                             f"{num_classes}; CIFAR-10 needs num_classes >= 10")
    batches = TensorBatches(x_train, y_train, cfg.batch_size, shuffle=True, augment=True, drop_last=True,
                            seed=cfg.seed, rank=rank, world_size=world, channels_last=cfg.channels_last,
                            jpeg_p=cfg.jpeg_p)

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, **cfg.overrides).to(dev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net: nn.Module = nn.parallel.DistributedDataParallel(model) if distributed else model
    if cfg.compile:  # inductor fuses BN, ReLU and the SE passes: 1.24x on this CPU (2 threads); evaluation stays eager
        net = torch.compile(net)
    # No weight decay on BN and bias parameters: standard practice, it only shrinks scales that BN re-normalises.
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    steps_per_epoch = len(batches)
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)
    history: list[dict[str, float]] = []
    start_epoch = 0
    if start_state is not None:
        model.load_state_dict(start_state["model"])
        optimizer.load_state_dict(start_state["optimizer"])
        history = list(start_state["history"])
        start_epoch = int(start_state["epoch"])
        torch.set_rng_state(start_state["rng"])

    is_main = rank == 0
    if is_main and out is not None:
        if artifacts and not resume:  # --overwrite: the old run goes now, so the folder never mixes two runs
            remove_run_artifacts(out)
        check_free_space(out, model, cfg)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    from tqdm.auto import tqdm

    wall_start = time.perf_counter() - (history[-1]["wall_s"] if history else 0.0)
    for epoch in range(start_epoch, cfg.epochs):
        batches.set_epoch(epoch)
        net.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64)
        correct = torch.zeros((), dtype=torch.int64)
        seen = 0
        bar = tqdm(batches, desc=f"{cfg.model} epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not (progress and is_main))
        for i, (x, y) in enumerate(bar):
            step = epoch * steps_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, warmup_steps, cfg.lr)
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            with autocast:
                logits = net(x)
                loss = loss_fn(logits.float(), y)
            if not torch.isfinite(loss):
                kept = (f"The last good checkpoint {ckpt_path} (epoch {epoch}) is kept." if epoch > 0 and ckpt_path
                        and ckpt_path.exists() else "No checkpoint of this run was written.")
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}, step {i + 1}; stopping. "
                                         f"{kept} Try a lower learning rate (now {cfg.lr}).")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach().double() * y.shape[0]
            correct += (logits.argmax(1) == y).sum()
            seen += y.shape[0]
            if i % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.3f}")
        train_s = time.perf_counter() - t0
        if distributed:
            stats = torch.stack([loss_sum, correct.double(), torch.tensor(float(seen), dtype=torch.float64)])
            stats = stats.to(dev)
            dist.all_reduce(stats)
            stats = stats.cpu()
            loss_sum, correct, seen = stats[0], stats[1], int(stats[2])
        record: dict[str, float] = {
            "epoch": epoch + 1,
            "train_loss": float(loss_sum) / seen,
            "train_acc": float(correct) / seen,
            "lr": optimizer.param_groups[0]["lr"],
            "images_per_s": seen / train_s,
            "epoch_s": train_s,
        }
        if is_main:
            ev = evaluate(model, x_test, y_test, batch_size=500, bf16=cfg.bf16, channels_last=cfg.channels_last)
            record.update({f"{eval_name}_loss": ev.loss, f"{eval_name}_acc": ev.accuracy})
        record["wall_s"] = time.perf_counter() - wall_start
        history.append(record)
        if is_main and out is not None:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                     "train_config": dataclasses.asdict(cfg), "model_config": model.config.to_dict(),
                     "history": history, "rng": torch.get_rng_state()}
            if cfg.keep_epoch_weights:
                save_state_dict(model, out / "epochs" / f"epoch_{epoch + 1:03d}.safetensors")
            atomic_write_bytes(ckpt_path, lambda p, s=state: torch.save(s, p))
            atomic_write_json(out / "history.json", history)
        if is_main and log_epochs:  # one line per epoch even without progress bars (logs, --no-progress)
            msg = (f"epoch {epoch + 1}/{cfg.epochs} loss {record['train_loss']:.3f} "
                   f"train {record['train_acc']:.3f} {eval_name} {record.get(f'{eval_name}_acc', float('nan')):.4f} "
                   f"lr {record['lr']:.4f} {record['images_per_s']:.0f} img/s")
            tqdm.write(msg)
        if on_epoch_end is not None and is_main:
            on_epoch_end(history)

    if is_main and out is not None:
        final = {eval_name: (x_test, y_test), **extra_sets}
        evaluations = {name: {k: v for k, v in evaluate(model, x, y).as_dict().items() if k != "confusion"}
                       for name, (x, y) in final.items()}
        save_weights(model, out, cfg, history, evaluations)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(model, history, out)


def held_out_sets(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """The held-out sets a training history scores every epoch, from its ``<set>_acc`` keys: ``"val"`` with a
    validation split, ``"test"`` with a test split, else the first ``--test-data`` set's own name; validation first."""
    names = dict.fromkeys(k[:-4] for r in history for k, v in r.items()
                          if k.endswith("_acc") and k != "train_acc" and v is not None)
    return sorted(names, key=lambda n: (n != "val", n != "test"))


RUN_ARTIFACTS = ("checkpoint.pt", "history.json", "model.safetensors", "metadata.json", "epochs")
# A resumed run may change where it runs and what it writes, never what it computes.
RESUMABLE_CHANGES = frozenset({"out", "data", "download", "threads", "compile", "test_data", "keep_epoch_weights"})


def run_artifacts(out: Path) -> list[str]:
    """Names of the files a training run writes that ``out`` already holds."""
    return [name for name in RUN_ARTIFACTS if (out / name).exists()]


def remove_run_artifacts(out: Path) -> None:
    for name in RUN_ARTIFACTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def recipe_differences(saved: dict[str, Any], cfg: TrainConfig) -> list[tuple[str, Any, Any]]:
    """(field, saved value, new value) for every recipe field a resume would change (fields that only say where the
    run reads and writes may change). Fields missing from an older checkpoint count as their defaults."""
    defaults = dataclasses.asdict(TrainConfig())
    now = dataclasses.asdict(cfg)

    def norm(v: Any) -> Any:  # tuples and lists are the same recipe
        return [norm(x) for x in v] if isinstance(v, (list, tuple)) else v

    return [(k, saved.get(k, defaults[k]), v) for k, v in now.items()
            if k not in RESUMABLE_CHANGES and norm(saved.get(k, defaults[k])) != norm(v)]


class RunFolder:
    """The output folder of one run, held for the run's whole length.

    Entering checks that ``out`` is (or can be made) a writable folder, takes an exclusive lock on ``out/.lock``
    (a second run into the same folder fails at once instead of both writing there), and removes temporary files
    that a killed run left behind (``atomic_write_bytes`` writes ``.NAME.tmpPID`` and renames it). ``None``: no
    folder (no output, or a DDP rank other than 0).
    """

    def __init__(self, out: Path | None) -> None:
        self.out, self._file, self._created = out, None, False

    def __enter__(self) -> RunFolder:
        out = self.out
        if out is None:
            return self
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"output {out} is a file; expected a folder for the run (--out)")
        self._created = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
            self._file = open(out / ".lock", "a+")  # noqa: SIM115 - held open for the whole run
        except OSError as exc:
            raise RunWriteError(f"cannot write into the output folder {out}: {exc.strerror or exc}") from exc
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory locks, the artifact check still protects finished runs
            return self
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._file.close()
            raise FileExistsError(f"another run is writing into {out} right now (it holds {out / '.lock'}); wait "
                                  f"for it to finish or choose another --out") from exc
        for folder in (out, out / "epochs"):
            for stale in folder.glob(".*.tmp*"):
                stale.unlink(missing_ok=True)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if self._file is None:
            return
        self._file.close()  # closing releases the lock
        if exc_type is not None and self._created and self.out is not None and not run_artifacts(self.out):
            shutil.rmtree(self.out, ignore_errors=True)  # a run that failed before writing leaves no folder behind


class RunWriteError(OSError):
    """The run's output could not be written (permissions, full disk); the last good checkpoint is intact."""


def check_free_space(out: Path, model: nn.Module, cfg: TrainConfig) -> None:
    """Fail before training, not after the first epoch, when ``out`` cannot hold what the run will write."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    # checkpoint (weights + momentum, plus a temporary copy while it is replaced) and the final weights
    need = 5 * weights + 1_000_000 + (cfg.epochs * weights if cfg.keep_epoch_weights else 0)
    free = shutil.disk_usage(out).free
    if free < need:
        raise RunWriteError(f"{out} has {free / 1e6:.1f} MB free; this run needs about {need / 1e6:.1f} MB")


def save_state_dict(model: nn.Module, path: Path) -> str:
    """Write the model's weights as safetensors (atomically) and return the file's SHA-256."""
    from safetensors.torch import save_file

    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, lambda p: save_file(weights, str(p)))
    return sha256_file(path)


def describe_path(path: str | os.PathLike | None) -> str | None:
    """A data location without this machine's folders: its last two components (``cifar10-lossless/test-subset``)."""
    if path is None:
        return None
    parts = Path(path).expanduser().resolve().parts
    return "/".join(parts[-2:])


def parse_test_data(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``["lossless=DIR", "DIR2"]`` -> ``{"lossless": "DIR", "<name of DIR2>": "DIR2"}``; names must differ."""
    sets: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name or item, item
        name = name.strip()
        if not name or not path or name in sets or name in ("val", "test"):
            raise ValueError(f"--test-data expects NAME=PATH or PATH with distinct names other than 'val' and "
                             f"'test', got {item!r}")
        sets[name] = path
    return sets


def save_weights(model: SEResNet, out: Path, cfg: TrainConfig, history: list[dict[str, float]],
                 evaluations: dict[str, dict[str, Any]] | None = None) -> None:
    """Write ``model.safetensors`` and ``metadata.json`` (config, recipe, history, machine, evaluations, checksum).

    Paths are recorded without this machine's folders (``describe_path``): the metadata travels with the weights.
    """
    sha = save_state_dict(model, out / "model.safetensors")
    recipe = dataclasses.asdict(cfg)
    recipe["data"] = describe_path(cfg.data)
    recipe["out"] = None
    recipe["test_data"] = {name: describe_path(path) for name, path in parse_test_data(cfg.test_data).items()}
    last = history[-1] if history else {}
    meta = {
        "model": cfg.model,
        "model_config": model.config.to_dict(),
        "recipe": recipe,
        "epochs": len(history),
        "test_accuracy": last.get("test_acc"),  # measured by the end-of-epoch evaluation (None with --val-split)
        "evaluations": evaluations or {},
        "wall_time_s": last.get("wall_s"),
        "machine": _machine(),
        "trained_on": f"CIFAR-10 training images from {recipe['data'] or 'the default data root'}"
                      + (f" less a stratified validation split of {cfg.val_split}" if cfg.val_split else "")
                      + (f"; each epoch a share of {cfg.jpeg_p:g} of them re-encoded as JPEG (quality 50-95) as "
                         f"augmentation" if cfg.jpeg_p else ""),
        "weights_sha256": sha,
        "history": history,
    }
    atomic_write_json(out / "metadata.json", meta)


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m seresnet.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=d.model, help="registered model name (see seresnet.list_models())")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="model config override, e.g. --set reduction=8 --set gate=tanh --set se_stages=4")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--data", default=None, help="data root (default: $SERESNET_DATA or data/)")
    p.add_argument("--download", action="store_true", help="download CIFAR-10 with torchvision (needs internet)")
    p.add_argument("--out", default=None, help="output directory (default: runs/<model>)")
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="train in float32")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--compile", action="store_true", help="torch.compile the training step (inductor)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--train-limit", type=int, default=None, help="use a fixed random subset of N training images")
    p.add_argument("--test-limit", type=int, default=None, help="use a fixed random subset of N test images")
    p.add_argument("--val-split", type=int, default=0, metavar="N",
                   help="hold out N training images (stratified, fixed) and evaluate on them every epoch")
    p.add_argument("--test-data", action="append", default=[], metavar="[NAME=]PATH",
                   help="an evaluation set measured at the end: a class folder or a data root with a test split "
                        "(repeatable)")
    p.add_argument("--jpeg-p", type=float, default=d.jpeg_p,
                   help="share of training images re-encoded as JPEG (quality 50-95) each epoch")
    p.add_argument("--keep-epoch-weights", action="store_true",
                   help="also store the weights after every epoch in OUT/epochs/")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--overwrite", action="store_true", help="start again even if OUT has a checkpoint")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["reduction=8", "se_stages=2,3", "gate=tanh"]`` -> typed dict (ints, floats, bools, tuples, None)."""
    def convert(v: str) -> Any:
        if v.lower() in ("none", "null"):
            return None
        if v.lower() in ("true", "false"):
            return v.lower() == "true"
        if "," in v:
            return tuple(convert(x) for x in v.split(",") if x)
        for cast in (int, float):
            try:
                return cast(v)
            except ValueError:
                pass
        return v

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = convert(v.strip())
    if "se_stages" in out and isinstance(out["se_stages"], int):
        out["se_stages"] = (out["se_stages"],)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = TrainConfig(
            model=args.model, overrides=parse_overrides(args.set), epochs=args.epochs, batch_size=args.batch_size,
            lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
            label_smoothing=args.label_smoothing, warmup_epochs=args.warmup_epochs, seed=args.seed, data=args.data,
            out=args.out or f"runs/{args.model}", bf16=args.bf16, channels_last=args.channels_last,
            compile=args.compile, threads=args.threads, train_limit=args.train_limit, test_limit=args.test_limit,
            download=args.download, val_split=args.val_split, test_data=tuple(args.test_data),
            keep_epoch_weights=args.keep_epoch_weights, jpeg_p=args.jpeg_p)
        result = train(cfg, resume=args.resume, overwrite=args.overwrite, progress=args.progress)
    except (ValueError, TypeError, OSError, FloatingPointError) as exc:  # OSError: missing data, busy or
        print(f"error: {exc}", file=sys.stderr)                          # unwritable folder, full disk
        return 2
    if result.history and int(os.environ.get("RANK", "0")) == 0:
        last = result.history[-1]
        split = (held_out_sets(result.history) or ["test"])[0]
        print(f"done: {cfg.model} {split} accuracy {last.get(f'{split}_acc', float('nan')):.4f} "
              f"after {last['epoch']} epochs, {last['wall_s'] / 60:.1f} min; files in {result.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
