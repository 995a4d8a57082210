"""The table of recipes tried, measured on the validation split only (never on a test set).

    python scripts/recipe_table.py --data ../shared/data/cifar10-lossless \
        baseline=../runs/seeds/se_resnet20-s0 jpeg-aug-0.5=../runs/recipes/se_resnet20-s0-jpeg50

For every finished run folder (``NAME=FOLDER``): its recipe, minutes, and two validation accuracies measured here in
float32 with 95% intervals: on the held-out lossless training images, and on the same images re-encoded as JPEG at
quality 75 (the compression of the JPEG copy of CIFAR-10, so a recipe can be chosen for robustness to it without
looking at a test set). Writes ``notebooks/results/recipes.json`` (``--out``); notebook 03 shows it.
"""

from __future__ import annotations

import argparse
import io
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from seresnet.data import load_cifar10, stratified_split
from seresnet.evaluate import evaluate
from seresnet.pretrained import load_model
from seresnet.train import atomic_write_json

JPEG_QUALITY = 75


def as_jpeg(images: torch.Tensor, quality: int = JPEG_QUALITY) -> torch.Tensor:
    """Every uint8 image (N, 3, H, W) re-encoded as JPEG at ``quality`` and decoded (deterministic)."""
    out = torch.empty_like(images)
    for i, img in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=quality)
        with Image.open(buf) as im:
            out[i] = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="NAME=FOLDER")
    p.add_argument("--data", required=True, help="training data root (the validation split is carved from it)")
    p.add_argument("--out", type=Path, default=Path("notebooks/results/recipes.json"))
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = p.parse_args(argv)
    runs = {}
    for item in args.runs:
        name, _, folder = item.rpartition("=")  # names may hold "=", folders rarely do
        if not name.strip():
            p.error(f"{item!r}: expected NAME=FOLDER, a name for the table's row and a finished run's folder")
        if not (Path(folder) / "metadata.json").is_file():
            p.error(f"{folder} is not a finished training run (no metadata.json)")
        runs[name] = folder
    if args.out.exists() and not args.overwrite:  # the table holds only the runs named in this call
        p.error(f"{args.out} already exists; pass --overwrite to replace it with these {len(runs)} runs, or choose "
                f"another --out")

    x, y = load_cifar10("train", args.data)
    cache: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    rows = []
    for name, folder in runs.items():
        meta = json.loads((Path(folder) / "metadata.json").read_text())
        recipe = meta["recipe"]
        n_val = recipe["val_split"]
        if not n_val:
            raise SystemExit(f"{folder} has no validation split: it cannot enter a table chosen on validation")
        if n_val not in cache:
            val = stratified_split(y, n_val)[1]
            cache[n_val] = (x[val], as_jpeg(x[val]), y[val])
        clean, jpeg, labels = cache[n_val]
        model = load_model(folder)  # checks the weights' SHA-256
        ev_clean, ev_jpeg = evaluate(model, clean, labels), evaluate(model, jpeg, labels)
        rows.append({"name": name, "model": recipe["model"], "epochs": recipe["epochs"], "seed": recipe["seed"],
                     "jpeg_p": recipe.get("jpeg_p", 0.0), "label_smoothing": recipe["label_smoothing"],
                     "batch_size": recipe["batch_size"], "lr": recipe["lr"], "minutes": meta["wall_time_s"] / 60,
                     "machine": meta["machine"], "val_images": ev_clean.images,
                     "val_accuracy": ev_clean.accuracy, "val_ci95": list(ev_clean.interval),
                     "val_jpeg_accuracy": ev_jpeg.accuracy, "val_jpeg_ci95": list(ev_jpeg.interval)})
        print(f"{name}: val {ev_clean.accuracy:.4f}, val as JPEG q{JPEG_QUALITY} {ev_jpeg.accuracy:.4f}, "
              f"{rows[-1]['minutes']:.0f} min")
    atomic_write_json(args.out, {"format": "seresnet.recipes/1", "jpeg_quality": JPEG_QUALITY, "runs": rows,
                                 "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
