"""Multi-seed studies: train (model, seed) runs once each, and compare models paired by seed.

Used by ``scripts/seeds_study.py`` (does SE help SE-ResNet-20?) and ``scripts/attention_study.py`` (the channel
attention family). A sweep is idempotent and resumable: a finished run (its ``metadata.json`` exists) is never
trained again, an interrupted one continues with ``--resume``, so a sweep can be split across sessions, and studies
with the same recipe share their runs.

The comparison of two models is paired by seed (same seed: same initialisation stream, data order and validation
split): the mean of the per-seed differences with a Student-t 95% interval over seeds, which captures the
seed-to-seed spread that one pair of runs cannot show. With fewer than two paired seeds the interval is undefined
(``None``), never zero.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any


def attention_family() -> dict[str, tuple[str, dict[str, Any]]]:
    """The channel-attention family as the study trains it and the benchmarks time it: name -> (registered
    model, config overrides). The plain and SE ResNet-20, every module of ``seresnet.attention`` in ResNet-20, and
    Gather-Excite a second time with a local gather (``ge_extent=2``): with its default global extent GE-theta-minus
    computes the same gate as SE-Var1, so only the local version, whose gate varies over positions, differs."""
    from .attention import ATTENTIONS

    family: dict[str, tuple[str, dict[str, Any]]] = {"resnet20": ("resnet20", {})}
    for a in ATTENTIONS:
        family[f"{a}_resnet20"] = (f"{a}_resnet20", {})
        if a == "ge":
            family[variant_name("ge_resnet20", {"ge_extent": 2})] = ("ge_resnet20", {"ge_extent": 2})
    return family


def _t_central_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with ``df`` degrees of freedom: the finite series of Abramowitz & Stegun 26.7.3
    (odd df) and 26.7.4 (even df), exact for integer df (torch has no t distribution quantile, and scipy is not a
    dependency)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    term = total = 1.0
    if df % 2:
        for k in range(1, (df - 3) // 2 + 1):
            term *= c2 * 2 * k / (2 * k + 1)
            total += term
        return 2 / math.pi * (theta + (math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0))
    for k in range(1, (df - 2) // 2 + 1):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return math.sin(theta) * total


def t_quantile(confidence: float, df: int) -> float:
    """The half-width multiplier of a two-sided Student-t interval: t with P(|T| <= t) = ``confidence`` for ``df``
    (a positive integer) degrees of freedom, e.g. ``t_quantile(0.95, 2)`` = 4.303."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")
    if not isinstance(df, int) or df < 1:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df!r}")
    lo, hi = 0.0, 1.0
    while _t_central_mass(hi, df) < confidence:
        lo, hi = hi, 2 * hi
    while hi - lo > 1e-12 * hi:  # bisection: the mass is increasing in t
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_central_mass(mid, df) < confidence else (lo, mid)
    return (lo + hi) / 2


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """The options every study shares: data, run folder, seeds and the one recipe all its runs use."""
    p.add_argument("--data", required=True, help="training data root (lossless CIFAR-10 batches)")
    p.add_argument("--runs", type=Path, required=True, help="folder for the run folders (outside the work tree)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--val-split", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--test-data", action="append", default=[], metavar="NAME=PATH")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--overwrite", action="store_true",
                   help="let --out lose finished runs it holds (another --runs, --seeds or --models); without it "
                        "such a write is refused")


def recipe_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`seresnet.train.TrainConfig` fields of the recipe given by :func:`add_recipe_arguments`."""
    return dict(epochs=args.epochs, val_split=args.val_split, batch_size=args.batch_size,
                test_data=tuple(args.test_data), data=args.data, threads=args.threads, compile=args.compile)


def write_study(path: Path, state: dict[str, Any], overwrite: bool = False) -> None:
    """Write a study JSON atomically, unless ``path`` already holds finished runs that ``state`` lacks: hours of
    training must not vanish because a call looked in another run folder or asked for fewer seeds or models. A
    ``ValueError`` names them; ``overwrite=True`` replaces the file anyway."""
    from .train import atomic_write_json

    path = Path(path)
    if path.is_file() and not overwrite:
        try:
            held = json.loads(path.read_text()).get("runs", {})
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
            raise ValueError(f"{path} exists and is not a study JSON ({exc}); pass --overwrite to replace it or "
                             f"choose another --out") from exc
        lost = sorted(set(held) - set(state.get("runs", {})))
        if lost:
            named = ", ".join(lost[:4]) + (", ..." if len(lost) > 4 else "")
            raise ValueError(f"{path} holds {len(lost)} finished run(s) that this call would drop ({named}): another "
                             f"--runs folder, fewer --seeds or --models, or another recipe? Pass --overwrite to "
                             f"replace the file, or choose another --out")
    atomic_write_json(path, state)


def run_key(model: str, seed: int) -> str:
    """Name of a (model, seed) run, also its folder name: ``"se_resnet20-s0"``; ``model`` may be a variant name
    (:func:`variant_name`)."""
    return f"{model}-s{seed}"


def variant_name(model: str, overrides: dict[str, Any] | None = None) -> str:
    """A folder-safe name for ``model`` with config ``overrides``: ``"se_resnet20+reduction=4"``,
    ``"se_resnet20+se_stages=2.3"``; just ``model`` without overrides."""
    parts = [model]
    for key, value in sorted((overrides or {}).items()):
        text = ".".join(str(v) for v in value) if isinstance(value, (tuple, list)) else str(value)
        parts.append(f"{key}={text}")
    return "+".join(parts)


def load_run(model: str, seed: int, runs_dir: Path, recipe: dict[str, Any] | None = None,
             overrides: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The summary (evaluations, wall time, machine, recipe) of the finished run of ``model`` (with config
    ``overrides``) and ``seed`` in ``runs_dir``, read from its ``metadata.json``; None if it has not finished.

    With ``recipe``, a finished run trained with other epochs, validation split or batch size is refused with a
    ``ValueError`` rather than mixed into a study of another recipe.
    """
    overrides = dict(overrides or {})
    folder = Path(runs_dir) / run_key(variant_name(model, overrides), seed)
    if not (folder / "metadata.json").is_file():
        return None
    meta = json.loads((folder / "metadata.json").read_text())
    for key in ("epochs", "val_split", "batch_size"):
        if recipe is not None and key in recipe and meta["recipe"].get(key) != recipe[key]:
            raise ValueError(f"{folder} was trained with {key}={meta['recipe'].get(key)!r}, this study asks for "
                             f"{key}={recipe[key]!r}: use another --runs folder or the same recipe")
    if recipe is not None and recipe.get("data") is not None and meta["recipe"].get("data") is not None:
        # the data folder's name (its location differs between machines): another data set is another study
        theirs, ours = Path(meta["recipe"]["data"]).name, Path(recipe["data"]).expanduser().resolve().name
        if theirs != ours:
            raise ValueError(f"{folder} was trained on {theirs!r}, this study asks for {ours!r}: use another "
                             f"--runs folder or the same data")
    if recipe is not None and recipe.get("test_data"):
        from .train import parse_test_data

        missing = sorted(set(parse_test_data(recipe["test_data"])) - set(meta["evaluations"]))
        if missing:
            raise ValueError(f"{folder} was not measured on {missing} (it has {sorted(meta['evaluations'])}): use "
                             f"another --runs folder or leave those --test-data out")
    return {"model": model, "overrides": overrides, "seed": seed, "evaluations": meta["evaluations"],
            "wall_time_s": meta["wall_time_s"], "machine": meta["machine"],
            "recipe": {k: v for k, v in meta["recipe"].items() if k not in ("model", "overrides", "seed", "out")}}


def run_or_load(model: str, seed: int, runs_dir: Path, recipe: dict[str, Any],
                overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``model`` (with config ``overrides``) with ``seed`` into ``runs_dir/<variant name>-s<seed>`` unless
    that run finished, then return its summary (:func:`load_run`).

    ``recipe``: :class:`seresnet.train.TrainConfig` fields other than model, overrides, seed and out. Errors of the
    run (bad data, a changed recipe on resume, divergence) propagate.
    """
    from .train import TrainConfig, train

    done = load_run(model, seed, runs_dir, recipe, overrides)
    if done is not None:
        return done
    folder = Path(runs_dir) / run_key(variant_name(model, overrides), seed)
    cfg = TrainConfig(model=model, overrides=dict(overrides or {}), seed=seed, out=str(folder), **recipe)
    train(cfg, resume=(folder / "checkpoint.pt").is_file(), progress=False)
    summary = load_run(model, seed, runs_dir, recipe, overrides)
    assert summary is not None, f"{folder}: training ended without metadata.json"
    return summary


def accuracies(runs: dict[str, dict], model: str, set_name: str) -> dict[int, float]:
    """Seed -> accuracy of ``model`` on ``set_name`` over the finished runs (keyed as :func:`run_key` names them)."""
    out = {}
    for key, r in runs.items():
        name, _, seed = key.rpartition("-s")
        if name == model and set_name in r["evaluations"]:
            out[int(seed)] = r["evaluations"][set_name]["accuracy"]
    return out


def spread(acc: dict[int, float]) -> dict[str, Any]:
    """Mean and standard deviation over seeds (``None`` where undefined)."""
    values = list(acc.values())
    return {"seeds": sorted(acc), "mean": statistics.fmean(values) if values else None,
            "sd": statistics.stdev(values) if len(values) > 1 else None}


def _t_interval(values: list[float], t: float) -> list[float]:
    """mean +- t * standard error of ``values`` (two or more)."""
    mean, half = statistics.fmean(values), t * statistics.stdev(values) / math.sqrt(len(values))
    return [mean - half, mean + half]


def paired_over_seeds(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    """``a - b`` paired by seed: per-seed differences, their mean and a t 95% interval (``None`` below 2 pairs)."""
    both = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in both]
    mean = statistics.fmean(diffs) if diffs else None
    interval = None
    if len(diffs) > 1:
        interval = _t_interval(diffs, t_quantile(0.95, len(diffs) - 1))
    return {"paired_seeds": both, "per_seed": diffs, "mean": mean, "ci95": interval}


def evaluation_sets(runs: dict[str, dict]) -> list[str]:
    return sorted({s for r in runs.values() for s in r["evaluations"]})


def verdict(difference: dict[str, Any] | None, reference: str, interval_key: str = "ci95") -> str:
    """What a paired difference (:func:`paired_over_seeds`) to ``reference`` allows one to say: better or worse
    beyond seed noise when its interval (``interval_key``) excludes 0, no difference shown when it contains 0, no
    verdict below two seeds, "not trained yet" without any finished pair."""
    if difference is None or difference.get("mean") is None:
        return "not trained yet"
    if difference.get(interval_key) is None:
        return "interval undefined (fewer than two seeds): no verdict"
    lo, hi = difference[interval_key]
    return (f"better than {reference} beyond seed noise" if lo > 0 else
            f"worse than {reference} beyond seed noise" if hi < 0 else "the interval contains 0: no difference shown")


def _interval_text(ci: list[float] | None) -> str:
    return "undefined" if ci is None else f"{ci[0]:+.2f} to {ci[1]:+.2f}"


def paired_table(study: dict[str, Any], models: list[str], reference: str, set_name: str = "val",
                 comparisons: int | None = None) -> list[dict[str, Any]]:
    """One row per model of a study JSON (``scripts/attention_study.py``): its accuracy on ``set_name`` minus
    ``reference``'s paired by seed, in points (``d_acc``, ``per_seed``, ``ci95``; None where undefined), the number
    of paired seeds, the :func:`verdict` and the interval as text (``interval``: "undefined" below two seeds).

    Each 95% interval misses the true difference one time in twenty, so among many comparisons some verdict can be
    luck. With ``comparisons`` (how many differences the table tests, decided before looking at the results), every
    row also gets intervals that hold for all of them *at once* with 95% confidence (Bonferroni: each at
    ``1 - 0.05 / comparisons``): ``ci_all``, ``interval_all`` and ``verdict_all``, wider and harder to clear.
    """
    summary = study.get("summary", {}).get(set_name)
    if summary is None:
        raise ValueError(f"the study has no results on {set_name!r}; it has {sorted(study.get('summary', {}))}")
    if comparisons is not None and (not isinstance(comparisons, int) or comparisons < 1):
        raise ValueError(f"comparisons must be a positive integer (the number of differences tested), "
                         f"got {comparisons!r}")
    rows = []
    for m in models:
        d = summary.get(m, {}).get(f"minus_{reference}")
        has = d is not None and d.get("mean") is not None
        row = {"model": m, "seeds": len(d["paired_seeds"]) if has else 0,
               "d_acc": 100 * d["mean"] if has else None,
               "per_seed": [100 * x for x in d["per_seed"]] if has else [],
               "ci95": [100 * x for x in d["ci95"]] if has and d["ci95"] is not None else None,
               "verdict": verdict(d, reference)}
        row["interval"] = _interval_text(row["ci95"])
        if comparisons is not None:
            n, ci_all = len(row["per_seed"]), None
            if n > 1:
                ci_all = _t_interval(row["per_seed"], t_quantile(1 - 0.05 / comparisons, n - 1))
            row.update(ci_all=ci_all, interval_all=_interval_text(ci_all),
                       verdict_all=verdict({"mean": row["d_acc"], "ci_all": ci_all} if has else None, reference,
                                           "ci_all"))
        rows.append(row)
    return rows


def median_half_widths(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How small a difference a :func:`paired_table` can resolve: the median half-width, in points, of its rows'
    intervals one at a time (``ci95``) and, where the table has them, all at once (``ci_all``); ``None`` where no row
    has that interval. ``intervals``: how many rows have a 95% interval."""
    out: dict[str, Any] = {"intervals": sum(r.get("ci95") is not None for r in rows)}
    for key in ("ci95", "ci_all"):
        halves = [(r[key][1] - r[key][0]) / 2 for r in rows if r.get(key) is not None]
        out[key] = statistics.median(halves) if halves else None
    return out


def verdict_counts(rows: list[dict[str, Any]], confidence: float = 0.95) -> dict[str, Any]:
    """How many rows of a :func:`paired_table` clear 0, read together. ``tested``: rows with an interval;
    ``beyond``: those whose ``ci95`` excludes 0; ``expected_by_chance``: how many would on average if no row had
    any effect (``(1 - confidence) * tested``); ``beyond_all``: those whose all-at-once ``ci_all`` excludes 0
    (None where the table has no such intervals); ``below_zero`` of ``with_mean``: rows whose mean is negative,
    which shows when every row leans one way (for example because all share one reference's runs)."""
    def clears(ci: list[float] | None) -> bool:
        return ci is not None and (ci[0] > 0 or ci[1] < 0)

    tested = [r for r in rows if r.get("ci95") is not None]
    has_all = any(r.get("ci_all") is not None for r in tested)
    means = [r["d_acc"] for r in rows if r.get("d_acc") is not None and r.get("seeds", 0) > 0
             and r.get("verdict") != "the reference"]
    return {"tested": len(tested), "beyond": sum(clears(r["ci95"]) for r in tested),
            "expected_by_chance": (1 - confidence) * len(tested),
            "beyond_all": sum(clears(r.get("ci_all")) for r in tested) if has_all else None,
            "below_zero": sum(m < 0 for m in means), "with_mean": len(means)}


def time_ratios(benchmark: dict[str, Any], reference: str = "resnet20") -> dict[str, dict[str, float]]:
    """What each model costs in time against ``reference``, from the attention benchmark's JSON
    (``benchmarks/results/attention.json``): ``{mode: {model: median time / reference's median time}}`` for each
    mode it timed ("train", "infer"). The ratios come from one interleaved run, so machine load cancels out of them."""
    out: dict[str, dict[str, float]] = {}
    for group in benchmark.get("groups", []):
        results = group["results"]
        if reference not in results:
            raise ValueError(f"the benchmark's {group['mode']!r} group has no {reference!r} to divide by; "
                             f"it timed {sorted(results)}")
        out[group["mode"]] = {m: r["median_s"] / results[reference]["median_s"] for m, r in results.items()}
    return out
