"""How much accuracy does the JPEG copy of CIFAR-10 cost? Train the same short recipe on further-degraded copies.

    python scripts/jpeg_sensitivity.py --data ../shared/data/cifar10-jpeg --epochs 15 --compile --threads 2

(about 12 minutes a variant on the project's 2-core CPU; results in notebooks/results/jpeg_sensitivity.json). The
repeat with another seed in notebooks/results/jpeg_sensitivity_seed1.json was made with
``--seed 1 --qualities 50 --no-gray --out notebooks/results/jpeg_sensitivity_seed1.json``.

This script dates from when the shipped checkpoints were trained and tested on a JPEG (quality 75, 4:2:0 chroma)
copy of CIFAR-10 and no lossless copy was at hand; they are now trained on the lossless images (see the README), and
the JPEG copy serves as a test set. It needs a data root with both splits, such as that JPEG copy. What it measures
is the slope: the same recipe, same seed, on the copy
as it is and on copies whose train *and* test images are degraded further, each in one way that the lossless ->
copy step also contains:

* ``as_is``      the copy itself (reference);
* ``jpeg<q>``    every image re-encoded as JPEG at quality ``q`` (4:2:0, PIL's default), i.e. coarser quantisation;
* ``gray``       colour removed altogether (ITU-R 601 luma copied to the three channels): an upper bound on what
  losing colour detail can cost (4:2:0, one colour sample per 2x2 pixels, loses only part of it).

The data README puts the copy 5 to 7 grey levels (mean absolute difference) from the lossless originals;
re-encoding at quality 50 moves it about as far again (7 levels), so the drop from ``as_is`` to ``jpeg50`` shows
what a degradation of that size costs this recipe. It is an indication, not a measurement of the lossless
accuracy: the first compression also removed colour detail (4:2:0), which a second one hardly changes. Results
go to ``--out`` as JSON, one record a variant, written after each run so an interrupted sweep keeps what it finished.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from seresnet.data import load_cifar10
from seresnet.evaluate import evaluate
from seresnet.train import TrainConfig, atomic_write_json, train


def reencode_jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> the same images after one JPEG round trip at ``quality`` (4:2:0 chroma)."""
    out = torch.empty_like(images)
    for i, img in enumerate(images.permute(0, 2, 3, 1).numpy()):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as im:
            out[i] = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
    return out


def to_gray(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> luma (0.299 R + 0.587 G + 0.114 B, as JPEG's Y) copied to all three channels."""
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    y = (images.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    return y.expand_as(images).contiguous()


def variants(qualities: list[int], gray: bool) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    table: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"as_is": lambda x: x}
    for q in qualities:
        table[f"jpeg{q}"] = lambda x, q=q: reencode_jpeg(x, q)
    if gray:
        table["gray"] = to_gray
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="CIFAR-10 root (default: $SERESNET_DATA or data/)")
    p.add_argument("--model", default="se_resnet20")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--qualities", type=int, nargs="*", default=[50, 25], help="JPEG qualities to re-encode at")
    p.add_argument("--no-gray", dest="gray", action="store_false", help="skip the colour-removed variant")
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("notebooks/results/jpeg_sensitivity.json"))
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = p.parse_args()
    for q in args.qualities:
        if not 1 <= q <= 95:
            p.error(f"JPEG quality must be in 1..95 (PIL's useful range), got {q}")
    if args.out.exists() and not args.overwrite:  # the first finished variant would replace the stored sweep
        p.error(f"{args.out} already exists; pass --overwrite to replace it, or choose another --out")
    try:
        # a bad model, epochs or threads fails now, not after the data are decoded
        TrainConfig(model=args.model, epochs=args.epochs, seed=args.seed, threads=args.threads).validate()
        x_train, y_train = load_cifar10("train", args.data)
    except (FileNotFoundError, ValueError) as exc:
        p.error(str(exc))
    try:
        x_test, y_test = load_cifar10("test", args.data)
    except (FileNotFoundError, ValueError) as exc:
        p.error(f"this script trains and tests on degraded copies of one data root, so it needs a test split beside "
                f"the training images (the JPEG copy has both): {exc}")
    results: dict[str, object] = {
        "what": "same recipe and seed on the CIFAR-10 copy as it is and on further-degraded copies (train and test)",
        "data": str(args.data), "model": args.model, "epochs": args.epochs, "seed": args.seed, "variants": {},
    }
    for name, degrade in variants(args.qualities, args.gray).items():
        t0 = time.perf_counter()
        xtr, xte = degrade(x_train), degrade(x_test)
        diff = (xte.float() - x_test.float()).abs().mean().item()
        cfg = TrainConfig(model=args.model, epochs=args.epochs, seed=args.seed, out=None, compile=args.compile,
                          threads=args.threads)
        result = train(cfg, progress=False, arrays=(xtr, y_train, xte, y_test))
        ev = evaluate(result.model, xte, y_test, bf16=False)
        results["variants"][name] = {
            "test_accuracy": ev.accuracy, "mean_abs_pixel_change_vs_as_is": diff,
            "history_test_acc": [h["test_acc"] for h in result.history], "seconds": time.perf_counter() - t0,
        }
        atomic_write_json(args.out, results)
        print(f"{name}: test accuracy {ev.accuracy:.4f} (pixels changed by {diff:.2f} grey levels on average)")
    print(json.dumps({k: v["test_accuracy"] for k, v in results["variants"].items()}, indent=1))


if __name__ == "__main__":
    main()
