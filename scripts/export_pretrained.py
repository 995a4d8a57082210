"""Export a finished training run as a checkpoint shipped with the package.

    python scripts/export_pretrained.py RUN --name se_resnet20 --data ../shared/data/cifar10-lossless \
        --test-data lossless-test-subset=../shared/data/cifar10-lossless/test-subset \
        --test-data jpeg-test=../shared/data/cifar10-jpeg

Writes ``seresnet/pretrained/<name>.safetensors`` and ``<name>.json``: the recipe, the per-epoch history, the wall
time and machine of the run, the minutes to 90% validation accuracy, and every accuracy measured here by
``seresnet.evaluate`` in float32 (with and without flip test-time augmentation), each with its set, its number of
images and its 95% interval. For an SE model trained with ``--keep-epoch-weights`` it also writes
``<name>.gates.safetensors``, the excitations' history (``seresnet.gate_history``) on a fixed probe of 1,000
validation images.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from seresnet.data import CIFAR10_CLASSES, load_cifar10, load_eval_set, stratified_split
from seresnet.evaluate import evaluate
from seresnet.gate_history import epoch_weights, record_gate_history
from seresnet.model import SEResNet, SEResNetConfig, list_models
from seresnet.pretrained import PRETRAINED_DIR, load_into
from seresnet.train import atomic_write_bytes, atomic_write_json, load_checkpoint, parse_test_data, sha256_file

# What each evaluation set is: the names the project's runs use, and what a reader must know about them.
SET_DESCRIPTIONS = {
    "val": "validation split: {n} CIFAR-10 training images (lossless) held out of training, stratified and fixed "
           "(seresnet.data.stratified_split); used to choose recipes and to time training",
    "lossless-test-subset": "the first {n} images of the official CIFAR-10 test set with their exact pixels: a "
                            "sample of the official test set, not the whole of it",
    "jpeg-test": "all {n} CIFAR-10 test images as a JPEG copy (quality 75, 4:2:0 chroma): about 5.8 grey levels from "
                 "the official pixels, so accuracies differ from the official test set",
    "jpeg-test-subset": "the JPEG copies (quality 75, 4:2:0) of the same {n} images as lossless-test-subset: the "
                        "same images, compressed",
}
PROBE_IMAGES = 1000


def same_images_as_jpeg(subset: Path, jpeg_root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The JPEG copy of every image of the lossless subset (``subset/<class>/NNNN.png`` <->
    ``jpeg_root/test/<class>/NNNN.jpg``: both name an image by its index among its class in official order)."""
    from PIL import Image

    images, labels = [], []
    for label, cls in enumerate(CIFAR10_CLASSES):
        for png in sorted((subset / cls).glob("*.png")):
            with Image.open(jpeg_root / "test" / cls / f"{png.stem}.jpg") as im:
                images.append(torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1))
            labels.append(label)
    return torch.stack(images), torch.tensor(labels)


def measure(model: torch.nn.Module, sets: dict[str, tuple[torch.Tensor, torch.Tensor]], name: str) -> dict:
    """Float32 accuracy (and flip TTA) of ``model`` on every set, each with its size, 95% interval and per-class
    accuracy; for the JPEG copies of the lossless subset also the paired JPEG-minus-lossless difference."""
    evaluations = {}
    for set_name, (images, labels) in sets.items():
        plain, tta = evaluate(model, images, labels), evaluate(model, images, labels, flip_tta=True)
        evaluations[set_name] = {
            "description": SET_DESCRIPTIONS.get(set_name, "").format(n=f"{len(labels):,}"),
            "images": plain.images, "accuracy": plain.accuracy, "ci95": list(plain.interval),
            "flip_tta_accuracy": tta.accuracy, "flip_tta_ci95": list(tta.interval), "loss": plain.loss,
            "per_class_accuracy": dict(zip(CIFAR10_CLASSES, plain.per_class_accuracy.tolist())),
        }
        print(f"{name} on {set_name} ({plain.images} images): {plain.accuracy:.4f} "
              f"[{plain.interval[0]:.4f}, {plain.interval[1]:.4f}], flip TTA {tta.accuracy:.4f}")

    if "jpeg-test-subset" in sets:
        from seresnet.evaluate import paired_difference

        right = {k: evaluate(model, *sets[k]).predictions == sets[k][1]
                 for k in ("lossless-test-subset", "jpeg-test-subset")}
        diff, interval = paired_difference(right["jpeg-test-subset"], right["lossless-test-subset"])
        evaluations["jpeg-test-subset"]["minus_lossless"] = {"difference": diff, "ci95": list(interval)}
        print(f"JPEG minus lossless on the same images: {diff:+.4f} [{interval[0]:+.4f}, {interval[1]:+.4f}]")
    return evaluations


def test_sets(test_data: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    paths = parse_test_data(test_data)
    sets = {set_name: load_eval_set(path) for set_name, path in paths.items()}
    if {"lossless-test-subset", "jpeg-test"} <= set(paths):
        # The JPEG copies of exactly the lossless subset's images: the same 1,017 images in both forms, so the
        # difference between the two sets is the JPEG compression alone (a paired comparison).
        sets["jpeg-test-subset"] = same_images_as_jpeg(Path(paths["lossless-test-subset"]), Path(paths["jpeg-test"]))
    return sets


def reevaluate(name: str, test_data: list[str], out_dir: Path = PRETRAINED_DIR) -> None:
    """Measure a shipped checkpoint again on the given test sets and write its metadata with those evaluations
    replaced (the others, such as the validation split, kept) to ``out_dir/<name>.json``, with the weights beside it
    when ``out_dir`` is not the package's folder; the weights stay as they are."""
    import shutil

    from seresnet.pretrained import load_pretrained, pretrained_metadata
    from seresnet.train import describe_path

    meta = pretrained_metadata(name)
    model = load_pretrained(name)  # checks the weights' SHA-256
    meta["evaluations"] = {**meta.get("evaluations", {}), **measure(model, test_sets(test_data), name)}
    for key in ("test_accuracy", "test_loss", "test_accuracy_flip_tta", "per_class_accuracy", "evaluated_on"):
        meta.pop(key, None)  # superseded by the named evaluations
    meta["command"] = meta.get("command", "").replace(f"--out {meta['recipe'].get('out')}", "--out <run folder>")
    meta["recipe"]["data"] = describe_path(meta["recipe"].get("data"))
    meta["recipe"]["out"] = None
    meta["reevaluated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out_dir.mkdir(parents=True, exist_ok=True)
    if out_dir.resolve() != PRETRAINED_DIR.resolve():  # a loadable copy: load_model(out_dir / f"{name}.safetensors")
        for extra in (f"{name}.safetensors", meta.get("gate_history", {}).get("file")):
            if extra:
                shutil.copyfile(PRETRAINED_DIR / extra, out_dir / extra)
    atomic_write_json(out_dir / f"{name}.json", meta)
    print(f"wrote {out_dir / f'{name}.json'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, nargs="?", help="run directory with checkpoint.pt")
    p.add_argument("--name", required=True, help="name to ship it under, e.g. se_resnet20")
    p.add_argument("--data", default=None, help="data root of the training images (for the validation split)")
    p.add_argument("--test-data", action="append", default=[], metavar="NAME=PATH", help="a test set (repeatable)")
    p.add_argument("--reevaluate", action="store_true",
                   help="no run: measure the shipped checkpoint NAME again on the test sets, weights unchanged")
    p.add_argument("--out-dir", type=Path, default=PRETRAINED_DIR, help="where to write (default: the package)")
    p.add_argument("--note", default="", help="free text added to the metadata")
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint of this name in --out-dir")
    args = p.parse_args(argv)
    if args.reevaluate:
        if not args.test_data:
            p.error("--reevaluate needs at least one --test-data NAME=PATH to measure")
        try:
            reevaluate(args.name, args.test_data, args.out_dir)
        except (KeyError, ValueError, OSError) as exc:
            p.exit(2, f"error: {exc}\n")
        return 0
    if args.run is None or args.data is None:
        p.error("exporting a run needs RUN and --data")
    if not (args.run / "metadata.json").is_file():
        p.error(f"{args.run} is not a finished training run (no metadata.json); expected the --out folder of "
                f"python -m seresnet.train")
    out = args.out_dir / f"{args.name}.safetensors"
    if not args.overwrite and (out.exists() or out.with_suffix(".json").exists()):
        p.error(f"{out.with_suffix('.*')} exists (a shipped checkpoint?); pass --overwrite to replace it or choose "
                f"another --name or --out-dir")

    try:
        ckpt = load_checkpoint(args.run / "checkpoint.pt")
        run_meta = json.loads((args.run / "metadata.json").read_text())  # written by the run when it finished
    except (OSError, ValueError) as exc:
        p.exit(2, f"error: {exc}\n")
    recipe = run_meta["recipe"]
    if args.name in list_models() and args.name != recipe["model"]:
        p.error(f"--name {args.name!r} is a registered model, but this run trained {recipe['model']!r}: "
                f"create_model({args.name!r}, pretrained=True) would get the wrong network")
    if int(ckpt["epoch"]) != recipe["epochs"]:
        raise SystemExit(f"{args.run} stopped at epoch {ckpt['epoch']} of {recipe['epochs']}: not a finished run")
    config = SEResNetConfig.from_dict(ckpt["model_config"])
    model = load_into(SEResNet(config), ckpt["model"], str(args.run)).eval()

    sets: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    x_train, y_train = load_cifar10("train", args.data)
    probe = None
    if recipe["val_split"]:
        _, val_idx = stratified_split(y_train, recipe["val_split"])
        sets["val"] = (x_train[val_idx], y_train[val_idx])
        probe = stratified_split(sets["val"][1], PROBE_IMAGES)[1]
    sets.update(test_sets(args.test_data))

    evaluations = measure(model, sets, args.name)
    history = ckpt["history"]
    key = "val_acc" if recipe["val_split"] else "test_acc"
    first_90 = next((r for r in history if r.get(key, 0) >= 0.90), None)  # bf16 end-of-epoch evaluation
    flags = " --compile" if recipe.get("compile") else ""
    flags += f" --val-split {recipe['val_split']}" if recipe["val_split"] else ""
    args.out_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(out, lambda path: save_file(weights, str(path)))
    meta = {
        "model": recipe["model"],
        "model_config": config.to_dict(),
        "recipe": recipe,
        "command": (f"python -m seresnet.train --model {recipe['model']} --epochs {recipe['epochs']}{flags} "
                    f"--threads {recipe['threads']} --seed {recipe['seed']} --data <CIFAR-10 root> "
                    f"--keep-epoch-weights --out <run folder>"),
        "epochs": int(ckpt["epoch"]),
        "wall_time_s": history[-1]["wall_s"],
        "machine": run_meta["machine"] + f"; {recipe['threads'] or 'all'} thread(s) used by this run",
        "trained_on": run_meta["trained_on"],
        "evaluations": evaluations,
        "time_to_90_percent_s": first_90["wall_s"] if first_90 else None,
        "epoch_reaching_90_percent": first_90["epoch"] if first_90 else None,
        "time_to_90_percent_on": "val" if recipe["val_split"] else "test",
        "weights_sha256": sha256_file(out),
        "history": history,
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "note": args.note,
    }
    if probe is not None and config.integration != "none" and (args.run / "epochs").is_dir():
        x_val, y_val = sets["val"]
        gates = record_gate_history(SEResNet(config), epoch_weights(args.run), x_val[probe], y_val[probe],
                                    probe=f"{PROBE_IMAGES} validation images, 100 per class, fixed "
                                          f"(stratified_split of the {recipe['val_split']}-image validation split)")
        gates_path = args.out_dir / f"{args.name}.gates.safetensors"
        atomic_write_bytes(gates_path, gates.save)
        meta["gate_history"] = {"file": gates_path.name, "sha256": sha256_file(gates_path), "probe": gates.probe}
    atomic_write_json(out.with_suffix(".json"), meta)
    print(f"{args.name}: {meta['epochs']} epochs, 90% validation accuracy at epoch "
          f"{meta['epoch_reaching_90_percent']} -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
