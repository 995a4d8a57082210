"""Export a finished training run as a checkpoint shipped with the package.

    python scripts/export_pretrained.py runs/se_resnet20-cifar10 --name se_resnet20 --data ../shared/data/cifar10-jpeg

Writes ``seresnet/pretrained/<name>.safetensors`` and ``<name>.json``: the recipe, the per-epoch history, the wall
time and machine of the run, and the test accuracy measured here by ``seresnet.evaluate`` on the given data.
"""

from __future__ import annotations

import argparse
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors.torch import save_file

from seresnet.data import CIFAR10_CLASSES, find_cifar10, load_cifar10
from seresnet.evaluate import evaluate
from seresnet.model import SEResNet, SEResNetConfig
from seresnet.pretrained import PRETRAINED_DIR, load_into
from seresnet.train import atomic_write_bytes, atomic_write_json, load_checkpoint


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="run directory with checkpoint.pt")
    p.add_argument("--name", required=True, help="name to ship it under, e.g. se_resnet20")
    p.add_argument("--data", default=None, help="data root for the evaluation")
    p.add_argument("--note", default="", help="free text added to the metadata")
    args = p.parse_args()

    ckpt = load_checkpoint(args.run / "checkpoint.pt")
    config = SEResNetConfig.from_dict(ckpt["model_config"])
    model = load_into(SEResNet(config), ckpt["model"], str(args.run)).eval()
    images, labels = load_cifar10("test", args.data)
    result = evaluate(model, images, labels)
    tta = evaluate(model, images, labels, flip_tta=True)
    history = ckpt["history"]
    recipe = ckpt["train_config"]
    # the first epoch whose end-of-epoch evaluation (bfloat16, during training) reached 90%
    first_90 = next((r for r in history if r.get("test_acc", 0) >= 0.90), None)
    flags = " --compile" if recipe.get("compile") else ""
    source = find_cifar10(args.data)
    meta = {
        "model": recipe["model"],
        "model_config": config.to_dict(),
        "recipe": recipe,
        "command": (f"python -m seresnet.train --model {recipe['model']} --epochs {recipe['epochs']}{flags} "
                    f"--threads {recipe['threads']} --data <CIFAR-10 root> --out {recipe['out']}"),
        "epochs": int(ckpt["epoch"]),
        "epochs_planned": recipe["epochs"],
        "wall_time_s": history[-1]["wall_s"],
        "machine": f"{cpu_name()}, {torch.get_num_threads()} threads available, "
                   f"{recipe['threads'] or 'all'} used by this run; torch {torch.__version__}",
        "trained_on": ("CIFAR-10 training set (50,000 images) as re-encoded JPEG (quality 75), class-folder copy; "
                       "pixels differ from the official lossless release by about 5-7 grey levels, so accuracy on "
                       "the official test set can differ slightly"),
        "evaluated_on": f"CIFAR-10 test set, {len(labels)} images, {source}",
        "test_accuracy": result.accuracy,
        "test_loss": result.loss,
        "test_accuracy_flip_tta": tta.accuracy,
        "time_to_90_percent_s": first_90["wall_s"] if first_90 else None,
        "epoch_reaching_90_percent": first_90["epoch"] if first_90 else None,
        "per_class_accuracy": dict(zip(CIFAR10_CLASSES, result.per_class_accuracy.tolist())),
        "history": history,
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "note": args.note,
    }
    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    out = PRETRAINED_DIR / f"{args.name}.safetensors"
    atomic_write_bytes(out, lambda path: save_file(weights, str(path)))
    atomic_write_json(out.with_suffix(".json"), meta)
    print(f"{args.name}: epoch {meta['epochs']}/{meta['epochs_planned']}, test accuracy {result.accuracy:.4f} "
          f"(flip TTA {tta.accuracy:.4f}) -> {out}")


if __name__ == "__main__":
    main()
