"""The channel-attention family on CIFAR-10: every variant, plain ResNet-20 and SE-ResNet-20, several seeds each
(and, with ``--ablations``, the paper's SE design choices with the same recipe and seeds). The family is
``seresnet.study.attention_family()``: every module of ``seresnet.attention`` in ResNet-20, and GE also with a local
gather (``ge_resnet20+ge_extent=2``), since GE's default global gather computes SE-Var1's gate.

    python scripts/attention_study.py --data ../shared/data/cifar10-lossless --runs ../runs/seeds --seeds 0 1 2 \
        --epochs 15 --compile --threads 2 \
        --test-data lossless-test-subset=../shared/data/cifar10-lossless/test-subset \
        --test-data jpeg-test=../shared/data/cifar10-jpeg --ablations

(the command behind ``notebooks/results/attention_study.json``: 78 runs, the family and the ablations with three
seeds each, about 18 hours of a 2-core CPU spread over several sessions; ``--collect`` gathered the runs at the end).

One recipe for all (the seeds study's: pass the same options and the same ``--runs`` folder and its se_resnet20 and
resnet20 runs are reused, not trained again). Runs go seed by seed, so an interrupted sweep has every variant at the
first seeds rather than a few variants at all seeds. Idempotent and resumable (``seresnet.study``). After every
finished run the results so far go to ``--out`` (default ``notebooks/results/attention_study.json``): every finished
run of the sweep in ``--runs``, whichever process or session trained it (``--collect`` only writes them and trains
nothing); per run the accuracy on every set with its 95% interval; per model its parameters, multiply-adds, mean and
spread over seeds; and each model's difference to resnet20 and to se_resnet20, paired by seed, with a t-interval
over seeds.

A call that would drop finished runs the ``--out`` file already holds (another ``--runs`` folder, fewer seeds or
models) is refused before it trains anything; ``--overwrite`` replaces the file anyway.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from seresnet import count_macs, count_params, create_model
from seresnet.ablation import ABLATIONS
from seresnet.study import (
    accuracies,
    add_recipe_arguments,
    attention_family,
    evaluation_sets,
    load_run,
    paired_over_seeds,
    recipe_from_args,
    run_key,
    run_or_load,
    spread,
    variant_name,
    write_study,
)

FAMILY = attention_family()  # name -> (registered model, overrides), e.g. "ge_resnet20+ge_extent=2"
MODELS = list(FAMILY)
REFERENCES = ("resnet20", "se_resnet20")
# The paper's ablations (notebook 06's studies) as SE-ResNet-20 variants: same recipe and seeds as the family.
ABLATION_VARIANTS = {v.name: (v.model, v.overrides) for v in ABLATIONS if v.overrides}


def summarise(runs: dict[str, dict], models: list[str]) -> dict[str, dict]:
    """Per evaluation set and model: mean and spread over seeds, and the paired differences to the references."""
    out: dict[str, dict] = {}
    for set_name in evaluation_sets(runs):
        acc = {m: accuracies(runs, m, set_name) for m in models}
        out[set_name] = {m: {**spread(acc[m]), **{f"minus_{ref}": paired_over_seeds(acc[m], acc[ref])
                                                  for ref in REFERENCES if ref in acc and ref != m}}
                         for m in models}
    return out


def costs(variants: dict[str, tuple[str, dict]]) -> dict[str, dict]:
    """Parameters and multiply-adds of one 32x32 image (``count_params``, ``count_macs``) per variant name."""
    out = {}
    for name, (model, overrides) in variants.items():
        net = create_model(model, **overrides)
        out[name] = {"params": count_params(net), "macs": count_macs(net)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("notebooks/results/attention_study.json"))
    p.add_argument("--models", nargs="+", default=MODELS,
                   help=f"registered model names or the family's named variants (default: {' '.join(MODELS)})")
    p.add_argument("--ablations", nargs="*", default=None, metavar="NAME",
                   help="also train the paper's ablations as SE-ResNet-20 variants: the names of "
                        f"seresnet.ablation.ABLATIONS ({', '.join(ABLATION_VARIANTS)}), or none for all of them")
    p.add_argument("--collect", action="store_true",
                   help="train nothing: write --out from the runs of the sweep that have finished in --runs")
    add_recipe_arguments(p)
    args = p.parse_args(argv)
    missing = [r for r in REFERENCES if r not in args.models]
    if missing:
        p.error(f"--models must include the references {missing} (the differences are taken to them)")
    variants = {m: FAMILY.get(m, (m, {})) for m in args.models}
    family = list(variants)
    if args.ablations is not None:
        unknown = [a for a in args.ablations if a not in ABLATION_VARIANTS]
        if unknown:
            p.error(f"unknown ablation(s) {unknown}; known: {list(ABLATION_VARIANTS)}")
        for a in args.ablations or list(ABLATION_VARIANTS):
            model, overrides = ABLATION_VARIANTS[a]
            variants[variant_name(model, overrides)] = (model, overrides)
    try:
        model_costs = costs(variants)
    except (KeyError, ValueError) as exc:
        p.error(str(exc))

    recipe = recipe_from_args(args)
    sweep = [(seed, name) for seed in args.seeds for name in variants]

    def write() -> int:
        runs = {}  # every finished run of the sweep, also those trained by another process or an earlier session
        for seed, name in sweep:
            model, overrides = variants[name]
            done = load_run(model, seed, args.runs, recipe, overrides)
            if done is not None:
                runs[run_key(name, seed)] = done
        recipes = [r.pop("recipe") for r in runs.values()]  # one recipe for all: load_run refuses others
        trained_with = recipes[0] if recipes else recipe
        state = {"format": "seresnet.attention_study/1", "recipe": trained_with, "models": list(variants),
                 "groups": {"family": family, "ablations": [n for n in variants if n not in family]},
                 "seeds": args.seeds, "costs": model_costs, "runs": runs,
                 "variants": {n: {"model": m, "overrides": o} for n, (m, o) in variants.items()},
                 "summary": summarise(runs, list(variants)),
                 "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_study(args.out, state, args.overwrite)
        return len(runs)

    try:
        found = write()  # first what has finished: a file this call would shrink is refused before any training
        if args.collect:
            print(f"wrote {args.out}: {found} finished runs")
            return 0
        for seed, name in sweep:
            model, overrides = variants[name]
            key = run_key(name, seed)
            run = run_or_load(model, seed, args.runs, recipe, overrides)
            write()
            print(f"{key}: " + ", ".join(f"{k} {v['accuracy']:.4f}" for k, v in run["evaluations"].items()),
                  flush=True)
    except (ValueError, OSError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
