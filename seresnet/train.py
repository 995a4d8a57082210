"""Train an (SE-)ResNet on CIFAR-10: ``python -m seresnet.train --model se_resnet20 --epochs 30 --out runs/se20``.

The loop in ``train()`` is the whole story: SGD with Nesterov momentum, a one-cycle learning rate (linear warm-up,
cosine decay), optional label smoothing, bfloat16 autocast and channels_last on the CPU, an evaluation on the test
set after every epoch, a metrics history and an atomic checkpoint written after every epoch.

Under ``torchrun --nproc_per_node N`` the same script trains with DistributedDataParallel (gloo on the CPU, nccl on
GPUs); rank 0 evaluates and writes files.

Files in the output directory:
    checkpoint.pt      everything needed to resume (model, optimiser, schedule, epoch, config, history)
    history.json       one record per epoch: loss, accuracies, learning rate, images/s, seconds
    model.safetensors  the final weights, and metadata.json beside them (written when the run completes)
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .data import TensorBatches, load_cifar10, subset
from .evaluate import evaluate
from .model import SEResNet, create_model, get_config


@dataclass
class TrainConfig:
    """A training recipe. ``train_limit`` / ``test_limit`` use a fixed random subset of N images (quick demos)."""

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

    def validate(self) -> None:
        get_config(self.model, **self.overrides)  # unknown model or override: clear error before any work
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.label_smoothing < 1:
            raise ValueError("need lr > 0, weight_decay >= 0 and 0 <= label_smoothing < 1")


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
    """Write via a temporary file in the same folder and rename it: a kill never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
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
        raise ValueError(f"{path} is not a readable seresnet checkpoint (truncated or corrupted?): {exc}") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "train_config" not in ckpt:
        raise ValueError(f"{path} is not a seresnet training checkpoint (expected keys 'model', 'train_config')")
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
    return f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, torch {torch.__version__}"


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[list[dict[str, float]]], None] | None = None,
    device: str | torch.device | None = None,
    arrays: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> TrainResult:
    """Train ``cfg.model`` on CIFAR-10 and return the model and its history.

    ``resume`` continues from ``cfg.out/checkpoint.pt`` (to the same result as an uninterrupted run); without it an
    existing checkpoint in ``cfg.out`` is never overwritten unless ``overwrite``. ``on_epoch_end(history)`` is called
    after each epoch (the notebooks use it for a live plot). ``arrays`` = (train images, train labels, test images,
    test labels) already in memory (uint8 / int64, as ``load_cifar10`` returns them) skips loading ``cfg.data``:
    a sweep of many short runs decodes the data set once.
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
    ckpt_path = out / "checkpoint.pt" if out else None
    start_state: dict[str, Any] | None = None
    if ckpt_path is not None and ckpt_path.exists():
        if resume:
            start_state = load_checkpoint(ckpt_path)
            saved = start_state["train_config"]
            if saved["model"] != cfg.model or saved["overrides"] != cfg.overrides:
                raise ValueError(f"{ckpt_path} was trained as {saved['model']} {saved['overrides']}, "
                                 f"not {cfg.model} {cfg.overrides}; use another --out")
        elif not overwrite:
            raise FileExistsError(f"{ckpt_path} already exists; pass resume=True (--resume) to continue it or "
                                  f"overwrite=True (--overwrite) to start again, or choose another output directory")
    elif resume:
        raise FileNotFoundError(f"cannot resume: no checkpoint at {ckpt_path}")

    # Data first: a missing dataset or a bad batch size fails before anything is written.
    if arrays is None:
        x_train, y_train = load_cifar10("train", cfg.data, download=cfg.download)
        x_test, y_test = load_cifar10("test", cfg.data)
    else:
        x_train, y_train, x_test, y_test = arrays
    x_train, y_train = subset(x_train, y_train, cfg.train_limit)
    x_test, y_test = subset(x_test, y_test, cfg.test_limit)
    batches = TensorBatches(x_train, y_train, cfg.batch_size, shuffle=True, augment=True, drop_last=True,
                            seed=cfg.seed, rank=rank, world_size=world, channels_last=cfg.channels_last)

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
                raise FloatingPointError(
                    f"loss became {loss.item()} at epoch {epoch + 1}, step {i + 1}; stopping. The last good "
                    f"checkpoint ({ckpt_path or 'none'}) was kept. Try a lower learning rate (now {cfg.lr}).")
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
            record.update(test_loss=ev.loss, test_acc=ev.accuracy)
        record["wall_s"] = time.perf_counter() - wall_start
        history.append(record)
        if is_main and out is not None:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                     "train_config": dataclasses.asdict(cfg), "model_config": model.config.to_dict(),
                     "history": history, "rng": torch.get_rng_state()}
            atomic_write_bytes(ckpt_path, lambda p, s=state: torch.save(s, p))
            atomic_write_json(out / "history.json", history)
        if is_main:  # one line per epoch even without progress bars (logs, --no-progress)
            msg = (f"epoch {epoch + 1}/{cfg.epochs} loss {record['train_loss']:.3f} "
                   f"train {record['train_acc']:.3f} test {record.get('test_acc', float('nan')):.4f} "
                   f"lr {record['lr']:.4f} {record['images_per_s']:.0f} img/s")
            tqdm.write(msg)
        if on_epoch_end is not None and is_main:
            on_epoch_end(history)

    if is_main and out is not None:
        save_weights(model, out, cfg, history)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(model, history, out)


def save_weights(model: SEResNet, out: Path, cfg: TrainConfig, history: list[dict[str, float]]) -> None:
    """Write ``model.safetensors`` and ``metadata.json`` (config, recipe, history summary, machine)."""
    from safetensors.torch import save_file

    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(out / "model.safetensors", lambda p: save_file(weights, str(p)))
    last = history[-1] if history else {}
    meta = {
        "model": cfg.model,
        "model_config": model.config.to_dict(),
        "recipe": dataclasses.asdict(cfg),
        "epochs": len(history),
        "test_accuracy": last.get("test_acc"),  # measured by the end-of-epoch evaluation
        "wall_time_s": last.get("wall_s"),
        "machine": _machine(),
        "trained_on": "CIFAR-10 from the data source given in recipe.data",
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
            download=args.download)
        result = train(cfg, resume=args.resume, overwrite=args.overwrite, progress=args.progress)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.history and int(os.environ.get("RANK", "0")) == 0:
        last = result.history[-1]
        print(f"done: {cfg.model} test accuracy {last.get('test_acc', float('nan')):.4f} "
              f"after {last['epoch']} epochs, {last['wall_s'] / 60:.1f} min; files in {result.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
