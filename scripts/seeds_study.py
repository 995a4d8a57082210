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

A call that would drop finished runs the ``--out`` file already holds (another ``--runs`` folder, fewer seeds or
models) is refused before it trains anything; ``--overwrite`` replaces the file anyway.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from seresnet import get_config
from seresnet.study import (
    accuracies,
    add_recipe_arguments,
    evaluation_sets,
    load_run,
    paired_over_seeds,
    recipe_from_args,
    run_key,
    run_or_load,
    spread,
    write_study,
)


def summarise(runs: dict[str, dict], models: list[str], seeds: list[int]) -> dict[str, dict]:
    """Per evaluation set: each model's mean and spread over seeds, and the paired SE-minus-plain difference."""
    se, plain = models
    out = {}
    for set_name in evaluation_sets(runs):
        acc = {m: {s: a for s, a in accuracies(runs, m, set_name).items() if s in seeds} for m in models}
        entry: dict = {m: spread(acc[m]) for m in models}
        entry["difference"] = {"of": f"{se} - {plain}", **paired_over_seeds(acc[se], acc[plain])}
        out[set_name] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("notebooks/results/seeds_study.json"))
    p.add_argument("--models", nargs=2, default=["se_resnet20", "resnet20"], help="the SE model, then the plain one")
    add_recipe_arguments(p)
    args = p.parse_args(argv)

    for model in args.models:  # before any training: a typo in the second name used to surface after the first run
        try:
            get_config(model)
        except (KeyError, ValueError) as exc:
            p.error(str(exc))
    recipe = recipe_from_args(args)
    sweep = [(model, seed) for seed in args.seeds for model in args.models]

    def write() -> None:
        # every finished run of the sweep, also those trained by another process, so a rerun never drops any
        runs = {run_key(m, s): r for m, s in sweep if (r := load_run(m, s, args.runs, recipe)) is not None}
        recipes = [r.pop("recipe") for r in runs.values()]
        state = {"format": "seresnet.seeds_study/1", "recipe": recipes[0] if recipes else recipe,
                 "models": args.models, "seeds": args.seeds, "runs": runs,
                 "summary": summarise(runs, args.models, args.seeds),
                 "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_study(args.out, state, args.overwrite)

    try:
        write()  # first what has finished: a file this call would shrink is refused before any training
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for model, seed in sweep:
        key = run_key(model, seed)
        try:
            run = run_or_load(model, seed, args.runs, recipe)
            write()
        except (ValueError, OSError, FloatingPointError) as exc:
            print(f"error: {key}: {exc}", file=sys.stderr)
            return 2
        print(f"{key}: " + ", ".join(f"{k} {v['accuracy']:.4f}" for k, v in run["evaluations"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
