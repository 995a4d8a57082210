"""Does SE help SE-ResNet-20? Several seeds of se_resnet20 and resnet20 with one recipe, and the difference.

    python scripts/seeds_study.py --data ../shared/data/cifar10-lossless --runs ../runs/seeds --seeds 0 1 2 \
        --epochs 15 --compile --threads 2 \
        --test-data lossless-test-subset=../shared/data/cifar10-lossless/test-subset \
        --test-data jpeg-test=../shared/data/cifar10-jpeg

Each (model, seed) trains in its own run folder under ``--runs`` (keep it outside the work tree). The sweep is
idempotent and resumable: a finished run (its ``metadata.json`` exists) is never trained again, an interrupted one
continues with ``--resume``, so the sweep can be split across sessions. After every finished run the results so far
are written to ``--out`` (default ``notebooks/results/seeds_study.json``): per run the accuracy on every set with its
95% interval, and per set the mean SE-minus-plain difference over the seeds that both models finished, with a
t-interval over seeds (the seed-to-seed spread, which a single pair of runs cannot show).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

from seresnet.train import TrainConfig, atomic_write_json, train

# Two-sided 95% quantiles of Student's t for 1..10 degrees of freedom (a table: no scipy dependency).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def summarise(runs: dict[str, dict], models: list[str], seeds: list[int]) -> dict[str, dict]:
    """Per evaluation set: each model's mean and spread over seeds, and the paired SE-minus-plain difference."""
    se, plain = models
    sets = sorted({s for r in runs.values() for s in r["evaluations"]})
    out = {}
    for set_name in sets:
        acc = {m: {s: runs[f"{m}-s{s}"]["evaluations"][set_name]["accuracy"] for s in seeds
                   if f"{m}-s{s}" in runs and set_name in runs[f"{m}-s{s}"]["evaluations"]} for m in models}
        both = sorted(set(acc[se]) & set(acc[plain]))
        diffs = [acc[se][s] - acc[plain][s] for s in both]
        entry = {m: {"seeds": sorted(acc[m]), "mean": statistics.fmean(acc[m].values()) if acc[m] else None,
                     "sd": statistics.stdev(acc[m].values()) if len(acc[m]) > 1 else None} for m in models}
        mean = statistics.fmean(diffs) if diffs else None
        if len(diffs) > 1:
            half = T95.get(len(diffs) - 1, 1.96) * statistics.stdev(diffs) / math.sqrt(len(diffs))
            interval = [mean - half, mean + half]
        else:
            interval = None  # undefined with fewer than two paired seeds
        entry["difference"] = {"of": f"{se} - {plain}", "paired_seeds": both, "per_seed": diffs, "mean": mean,
                               "ci95": interval}
        out[set_name] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="training data root (lossless CIFAR-10 batches)")
    p.add_argument("--runs", type=Path, required=True, help="folder for the run folders (outside the work tree)")
    p.add_argument("--out", type=Path, default=Path("notebooks/results/seeds_study.json"))
    p.add_argument("--models", nargs=2, default=["se_resnet20", "resnet20"], help="the SE model, then the plain one")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--val-split", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--test-data", action="append", default=[], metavar="NAME=PATH")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--compile", action="store_true")
    args = p.parse_args(argv)

    recipe = dict(epochs=args.epochs, val_split=args.val_split, batch_size=args.batch_size,
                  test_data=tuple(args.test_data), data=args.data, threads=args.threads, compile=args.compile)
    runs: dict[str, dict] = {}
    for seed in args.seeds:
        for model in args.models:
            key, folder = f"{model}-s{seed}", args.runs / f"{model}-s{seed}"
            if not (folder / "metadata.json").is_file():
                cfg = TrainConfig(model=model, seed=seed, out=str(folder), **recipe)
                try:
                    train(cfg, resume=(folder / "checkpoint.pt").is_file(), progress=False)
                except (ValueError, OSError, FloatingPointError) as exc:
                    print(f"error: {key}: {exc}", file=sys.stderr)
                    return 2
            meta = json.loads((folder / "metadata.json").read_text())
            runs[key] = {"model": model, "seed": seed, "evaluations": meta["evaluations"],
                         "wall_time_s": meta["wall_time_s"], "machine": meta["machine"]}
            state = {"format": "seresnet.seeds_study/1", "recipe": {k: v for k, v in meta["recipe"].items()
                                                                   if k not in ("model", "seed", "out")},
                     "models": args.models, "seeds": args.seeds, "runs": runs,
                     "summary": summarise(runs, args.models, args.seeds),
                     "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            atomic_write_json(args.out, state)
            print(f"{key}: " + ", ".join(f"{k} {v['accuracy']:.4f}" for k, v in meta["evaluations"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
