"""The paper's design-choice ablations (Tables 10-14) repeated on CIFAR-10, and SE knock-out experiments (section 7).

Two experiments live here so that notebooks only display them and tests can check them:

* ``run_ablations(ABLATIONS, epochs, train_limit, test_limit, seed, out_json)`` trains one CIFAR model per variant
  (reduction ratio, squeeze, gate, integration, which stages have SE, plain ResNet) with the same short recipe and
  stores one record per variant in a JSON file; ``load_ablation_results`` reads it back; ``plot_ablations`` puts
  the change in test error beside the paper's ImageNet top-1 error (``PAPER_ABLATIONS``).
* ``se_knockout_table(model, images, labels, stats)`` switches SE blocks off or replaces their excitations by the
  mean excitation (``hooks.steer``) and reports the test accuracy of every edit.

``run_ablations`` is the quick, one-seed version, for seeing the code run in class: at a few epochs the seed alone
moves a model by about 2 points, so it cannot rank the settings. The seeded, paired study that can (15 epochs, 3
seeds) is ``scripts/attention_study.py --ablations``; ``ablation_study_rows`` and ``plot_ablation_study`` show it.

Command line of the quick version::

    python -m seresnet.ablation --epochs 4 --train-limit 10000 --threads 1 --data DATA_ROOT --out ablations.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import hooks
from . import train as _train

__all__ = [
    "ABLATIONS",
    "DEFAULT_SETTING",
    "PAPER_ABLATIONS",
    "PUBLISHED_ATTENTION",
    "PUBLISHED_MISSING",
    "STUDIES",
    "STUDY_REFERENCE",
    "Variant",
    "ablation_study_rows",
    "ablation_table",
    "default_knockout_scopes",
    "format_table",
    "get_variants",
    "knockout_accuracy",
    "load_ablation_results",
    "paper_row",
    "plot_ablation_study",
    "plot_ablations",
    "plot_knockout",
    "plot_published_attention",
    "published_attention_table",
    "published_label",
    "run_ablations",
    "se_knockout_table",
]

RESULTS_FORMAT = "seresnet.ablations/1"

# --- the paper's numbers -----------------------------------------------------------------------------------------
# SE-ResNet-50 on ImageNet, single 224x224 crop, top-1 / top-5 error (%) and parameters (millions), copied from
# Hu et al., "Squeeze-and-Excitation Networks" (arXiv 1709.01507 v4), Tables 10-16. The default SE-ResNet-50
# (r = 16, average squeeze, sigmoid gate, standard integration, SE in all stages) is the same model in every table
# (22.28 / 6.03). "stages" settings use ImageNet stage numbers (2 = conv2_x ... 5 = conv5_x): SE_Stage_4 is the
# 6-block conv4_x stage, not the last stage; the paper did not train "SE in stage 5 only".
PAPER_ABLATIONS: list[dict[str, Any]] = [
    dict(table=10, study="reduction", setting="2", top1=22.29, top5=6.00, params_m=45.7),
    dict(table=10, study="reduction", setting="4", top1=22.25, top5=6.09, params_m=35.7),
    dict(table=10, study="reduction", setting="8", top1=22.26, top5=5.99, params_m=30.7),
    dict(table=10, study="reduction", setting="16", top1=22.28, top5=6.03, params_m=28.1),
    dict(table=10, study="reduction", setting="32", top1=22.72, top5=6.20, params_m=26.9),
    dict(table=10, study="reduction", setting="no SE", top1=23.30, top5=6.55, params_m=25.6),
    dict(table=11, study="squeeze", setting="max", top1=22.57, top5=6.09, params_m=None),
    dict(table=11, study="squeeze", setting="avg", top1=22.28, top5=6.03, params_m=None),
    dict(table=12, study="gate", setting="relu", top1=23.47, top5=6.98, params_m=None),
    dict(table=12, study="gate", setting="tanh", top1=23.00, top5=6.38, params_m=None),
    dict(table=12, study="gate", setting="sigmoid", top1=22.28, top5=6.03, params_m=None),
    dict(table=13, study="stages", setting="2", top1=23.03, top5=6.48, params_m=None),
    dict(table=13, study="stages", setting="3", top1=23.04, top5=6.32, params_m=None),
    dict(table=13, study="stages", setting="4", top1=22.68, top5=6.22, params_m=None),
    dict(table=13, study="stages", setting="all", top1=22.28, top5=6.03, params_m=None),
    dict(table=14, study="integration", setting="standard", top1=22.28, top5=6.03, params_m=None),
    dict(table=14, study="integration", setting="pre", top1=22.23, top5=6.00, params_m=None),
    dict(table=14, study="integration", setting="post", top1=22.78, top5=6.35, params_m=None),
    dict(table=14, study="integration", setting="identity", top1=22.20, top5=6.15, params_m=None),
    dict(table=15, study="placement", setting="3x3", top1=22.48, top5=6.02, params_m=26.5),
    dict(table=16, study="squeeze", setting="none (1x1 convs)", top1=22.93, top5=6.39, params_m=None),
]

# The studies we repeat (Table 15 needs bottleneck units, Table 16 a block without pooling: not on ResNet-20).
STUDIES: tuple[str, ...] = ("reduction", "squeeze", "gate", "integration", "stages")
# The setting of the default SE model in each study: its one run is the reference row of every study.
DEFAULT_SETTING: dict[str, str] = dict(reduction="16", squeeze="avg", gate="sigmoid", integration="standard",
                                       stages="all")


def paper_row(study: str, setting: str) -> dict[str, Any] | None:
    """The paper's record for (study, setting), e.g. ``paper_row("gate", "tanh")``; None if the paper has none."""
    for row in PAPER_ABLATIONS:
        if row["study"] == study and row["setting"] == setting:
            return row
    return None


# --- other papers' numbers: SE's successors on ImageNet ----------------------------------------------------------
def _acc(err: float) -> float:
    """Top-1 / top-5 accuracy (%) from an error (%) as the SE paper reports it."""
    return round(100.0 - err, 2)


_SE_T2 = "Hu et al., Squeeze-and-Excitation Networks, arXiv 1709.01507 v4, Table 2 (top-1/top-5 error %, GFLOPs)"
_SE_ABL = "Hu et al., arXiv 1709.01507 v4, Table 10 (ResNet-50 and SE-ResNet-50 under the ablation schedule)"
_SE_ISSUE = "https://github.com/hujie-frank/SENet/issues/65"
_R50, _SE50 = paper_row("reduction", "no SE"), paper_row("reduction", "16")  # the ablation schedule's pair
_NOSQ = paper_row("squeeze", "none (1x1 convs)")

# ResNet-50 with each module on ImageNet (224x224 single crop), as each method's paper or official repository
# reports it, beside that paper's OWN ResNet-50 baseline. Every paper trained with its own recipe (epochs,
# augmentation, label smoothing, schedule; GCNet even fine-tunes from a trained ResNet-50), so only "module minus its
# own baseline" means anything, and even that is not comparable across papers, nor with our CIFAR-10 numbers.
# Accuracies are in %; the SE paper reports errors, stored here as 100 - error. None = not found in any source we
# could read (see PUBLISHED_MISSING); nothing here was filled in from memory. Parameters in millions.
PUBLISHED_ATTENTION: list[dict[str, Any]] = [
    dict(attention="se", module="SE", paper="Hu et al. 2018 (SENet)", setting="ImageNet, ResNet-50, main schedule",
         baseline_top1=_acc(24.80), top1=_acc(23.29), baseline_top5=_acc(7.48), top5=_acc(6.62),
         baseline_params_m=_R50["params_m"], params_m=_SE50["params_m"], baseline_gflops=3.86, gflops=3.87,
         source=f"{_SE_T2}; errors 24.80 / 23.29 also quoted in {_SE_ISSUE}; parameters from Table 10"),
    dict(attention="se", module="SE", paper="Hu et al. 2018 (SENet)",
         setting="ImageNet, ResNet-50, ablation schedule",
         baseline_top1=_acc(_R50["top1"]), top1=_acc(_SE50["top1"]),
         baseline_top5=_acc(_R50["top5"]), top5=_acc(_SE50["top5"]),
         baseline_params_m=_R50["params_m"], params_m=_SE50["params_m"], baseline_gflops=3.86, gflops=3.87,
         source=f"{_SE_ABL} (PAPER_ABLATIONS); GFLOPs from Table 2; the two schedules are explained in {_SE_ISSUE}"),
    dict(attention="nosqueeze", module="NoSqueeze", paper="Hu et al. 2018 (SENet)",
         setting="ImageNet, ResNet-50, ablation schedule",
         baseline_top1=_acc(_R50["top1"]), top1=_acc(_NOSQ["top1"]),
         baseline_top5=_acc(_R50["top5"]), top5=_acc(_NOSQ["top5"]),
         baseline_params_m=_R50["params_m"], params_m=None,
         baseline_gflops=3.86, gflops=4.27,
         source="Hu et al., arXiv 1709.01507 v4, Table 16 (NoSqueeze 22.93 / 6.39 error, 4.27 GFLOPs), against the "
                "ResNet-50 of the same ablation schedule (Table 10: 23.30 / 6.55; GFLOPs from Table 2)"),
    dict(attention="eca", module="ECA", paper="Wang et al. 2020 (ECA-Net)", setting="ImageNet, ResNet-50",
         baseline_top1=75.20, top1=77.48, baseline_top5=None, top5=None,
         baseline_params_m=24.37, params_m=24.37, baseline_gflops=3.86, gflops=3.86,
         source="ECA-Net paper (arXiv 1910.03151), its ResNet-50 comparison, as quoted in the official repository's "
                "issues: ResNet-50 75.2 in https://github.com/BangguWu/ECANet/issues/37, ECA-Net50 77.48 in "
                "https://github.com/BangguWu/ECANet/issues/21 (the README's later model: 77.42 / 93.62); parameters "
                "and GFLOPs from BangguWu/ECANet README.md (abstract: 80 parameters and 4.7e-4 GFLOPs on a ResNet-50 "
                "of 24.37M and 3.86 GFLOPs; ECA-Net50 row: 24.37M, 3.86G)"),
    dict(attention="cbam", module="CBAM", paper="Woo et al. 2018 (CBAM)", setting="ImageNet, ResNet-50, 100 epochs",
         baseline_top1=None, top1=77.622, baseline_top5=None, top5=93.948,
         baseline_params_m=None, params_m=None, baseline_gflops=None, gflops=None,
         source="Jongchan/attention-module README.md: released ResNet50+CBAM checkpoint, ACC@1=77.622 ACC@5=93.948; "
                "the README gives no ResNet-50 baseline"),
    dict(attention="fca", module="FcaNet", paper="Qin et al. 2021 (FcaNet)", setting="ImageNet, ResNet-50",
         baseline_top1=None, top1=78.52, baseline_top5=None, top5=None,
         baseline_params_m=None, params_m=None, baseline_gflops=None, gflops=None,
         source="cfzd/FcaNet README.md, FcaNet50 'Reported' 78.52 (its released model evaluates to 78.57); the "
                "README gives no ResNet-50 baseline"),
]

#: What we looked for and could not read in any source (paper tables are PDFs; their text was not reachable).
PUBLISHED_MISSING: dict[str, str] = {
    "se_var1": "ECA-Net paper Table 2 (SE-Var1/2/3 on ResNet-50): table not found in any readable source",
    "se_var2": "ECA-Net paper Table 2: not found",
    "se_var3": "ECA-Net paper Table 2: not found",
    "ge": "Gather-Excite paper (GE-theta-minus on ResNet-50): no numbers in hujie-frank/GENet README; paper table "
          "not found",
    "gc": "GCNet paper ImageNet table: xvjiarui/GCNet README has COCO numbers only; paper table not found",
    "cbam": "CBAM paper's ResNet-50 baseline, parameters and GFLOPs: not found (README has the CBAM model only)",
    "fca": "FcaNet paper's ResNet-50 baseline, parameters and GFLOPs: not found (README has the FcaNet model only)",
    "eca": "ECA-Net paper's ResNet-50 top-5: not found",
    "nosqueeze": "NoSqueeze parameter count: not in the SE paper's Table 16 as we have it",
}


def published_attention_table() -> list[dict[str, Any]]:
    """One row per ``PUBLISHED_ATTENTION`` record: the module's published ImageNet numbers minus those of its own
    paper's ResNet-50 baseline (percentage points; None where the paper's baseline was not found).

    Keys: attention, module, paper, setting, baseline_top1, top1, gain_top1, baseline_top5, top5, gain_top5,
    params_m, d_params_m, gflops, d_gflops, source. Not comparable with our CIFAR-10 numbers, and only loosely with
    each other: every paper used its own recipe."""
    def diff(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(a - b, 3)

    return [dict(attention=r["attention"], module=r["module"], paper=r["paper"], setting=r["setting"],
                 baseline_top1=r["baseline_top1"], top1=r["top1"], gain_top1=diff(r["top1"], r["baseline_top1"]),
                 baseline_top5=r["baseline_top5"], top5=r["top5"], gain_top5=diff(r["top5"], r["baseline_top5"]),
                 params_m=r["params_m"], d_params_m=diff(r["params_m"], r["baseline_params_m"]),
                 gflops=r["gflops"], d_gflops=diff(r["gflops"], r["baseline_gflops"]), source=r["source"])
            for r in PUBLISHED_ATTENTION]


def published_label(row: Mapping[str, Any]) -> str:
    """A short name for a published record: module, paper and (where the paper has several) schedule."""
    extra = row["setting"].removeprefix("ImageNet, ResNet-50").strip(", ")
    return f"{row['module']} ({row['paper']}" + (f"; {extra})" if extra else ")")


def plot_published_attention(ax=None):
    """Horizontal bars: each module's published ImageNet top-1 accuracy minus its own paper's ResNet-50 baseline
    (one bar per ``PUBLISHED_ATTENTION`` record; a note where no baseline was found). Its own figure, never on an
    axis with CIFAR numbers. Returns the Figure (``ax``'s figure when an Axes is given)."""
    from .plots import _ax_or_new

    rows = published_attention_table()
    fig, ax = _ax_or_new(ax, (9.0, 1.6 + 0.42 * len(rows)))
    y = list(range(len(rows)))
    gains = [r["gain_top1"] if r["gain_top1"] is not None else 0.0 for r in rows]
    bars = ax.barh(y, gains, height=0.6, color="tab:orange")
    for yi, r in zip(y, rows):
        if r["gain_top1"] is None:
            bars[yi].set_visible(False)
            ax.text(0, yi, f" {r['top1']:g}% top-1 published; no ResNet-50 baseline found", va="center", fontsize=7,
                    color="0.4")
        else:
            ax.text(r["gain_top1"], yi, f" {r['gain_top1']:+.2f}", va="center", fontsize=8)
    ax.set_yticks(y, [published_label(r) for r in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.4, -0.6)
    ax.axvline(0, color="0.2", lw=0.8)
    right = max([*gains, 0.0])
    ax.set_xlim(min([*gains, 0.0]) - 0.2, right + max(0.6, 0.35 * right))
    ax.set_xlabel("ImageNet top-1 accuracy minus the paper's own ResNet-50 (points; > 0 = better)", fontsize=9)
    ax.set_title("Published ImageNet numbers (ResNet-50): each module minus its own paper's baseline\n"
                 "each paper has its own recipe: not comparable with our CIFAR-10 results", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return fig


# --- the variants ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One model to train: a registered ``model`` with config ``overrides``; ``study``/``setting`` say which paper
    table row it corresponds to (``study="reference"`` is the default SE model, shared by every study;
    ``study="noise"`` repeats it with the run's seed plus ``seed_offset``, to show how much a different seed alone
    changes the result)."""

    name: str
    study: str
    setting: str
    model: str = "se_resnet20"
    overrides: dict[str, Any] = field(default_factory=dict)
    seed_offset: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(name=self.name, study=self.study, setting=self.setting, model=self.model,
                    overrides=_jsonable(self.overrides), seed_offset=self.seed_offset)


def _jsonable(overrides: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}


def _overrides_from_json(overrides: Mapping[str, Any]) -> dict[str, Any]:
    # JSON has no tuples; SEResNetConfig wants se_stages as a tuple.
    return {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}


ABLATIONS: list[Variant] = [
    Variant("SE (default)", "reference", "default"),
    Variant("no SE (resnet20)", "reduction", "no SE", model="resnet20"),
    *[Variant(f"r={r}", "reduction", str(r), overrides=dict(reduction=r)) for r in (2, 4, 8, 32)],
    Variant("squeeze=max", "squeeze", "max", overrides=dict(squeeze="max")),
    *[Variant(f"gate={g}", "gate", g, overrides=dict(gate=g)) for g in ("tanh", "relu", "hard_sigmoid")],
    *[Variant(f"integration={m}", "integration", m, overrides=dict(integration=m))
      for m in ("pre", "post", "identity")],
    *[Variant(f"SE in stage {s} only", "stages", str(s), overrides=dict(se_stages=(s,))) for s in (2, 3, 4)],
    Variant("SE (default), seed+1", "noise", "seed+1", seed_offset=1),
]


def get_variants(names: Sequence[str] | None = None) -> list[Variant]:
    """The variants of ``ABLATIONS`` with the given names (all if None), with a clear error for unknown names."""
    if names is None:
        return list(ABLATIONS)
    known = {v.name: v for v in ABLATIONS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown ablation variant(s) {unknown}; known: {list(known)}")
    return [known[n] for n in names]


# --- running them ------------------------------------------------------------------------------------------------
def _machine() -> str:
    return f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, torch {torch.__version__}"


def _atomic_write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(obj, indent=1) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _budget(epochs: int, train_limit: int | None, test_limit: int | None, seed: int, batch_size: int, lr: float,
            warmup_epochs: float, monitor_limit: int) -> dict[str, Any]:
    return dict(epochs=epochs, train_limit=train_limit, test_limit=test_limit, seed=seed, batch_size=batch_size,
                lr=lr, warmup_epochs=warmup_epochs, monitor_test_images=monitor_limit)


def run_ablations(
    variants: Sequence[Variant] | None = None,
    epochs: int = 1,
    train_limit: int | None = 1000,
    test_limit: int | None = 1000,
    seed: int = 0,
    out_json: str | os.PathLike | None = None,
    *,
    data: str | os.PathLike | None = None,
    threads: int | None = None,
    batch_size: int = 128,
    lr: float = 0.1,
    warmup_epochs: float | None = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Train every variant with one short recipe and return (and optionally store) the results.

    The default budget is tiny (1 epoch on 1,000 training images, 1,000 test images: a smoke run of a few
    seconds per variant on a laptop CPU, once the data set is decoded). Every variant uses the same ``seed``, the
    same training subset and the same test subset, so differences come from the architecture and the
    seed-dependent noise of training only.
    ``warmup_epochs`` defaults to a quarter of the epochs (at most 2). ``data`` is a CIFAR-10 data root
    (``seresnet.data.load_cifar10``). Training reports a monitoring accuracy on at most 1,000 test images after
    every epoch; the final accuracy is measured once on ``test_limit`` test images (bf16 autocast, like training).

    With ``out_json`` the results are written after every finished variant to ``<out_json>.partial`` (atomically:
    a crash leaves the last good state) and moved to ``out_json`` only when every variant has finished, so an
    interrupted sweep never replaces earlier complete results. An existing ``out_json`` is refused before any
    training unless ``overwrite``. With ``resume`` a partial file with the same budget is picked up and its
    finished variants are not trained again.

    Returns ``{"format", "budget", "machine", "started", "finished", "results": [record, ...]}``; a record has
    name, study, setting, model, overrides, params, macs, test_acc, test_images, epochs, train_images, seconds,
    machine, date, history.
    """
    from .data import default_data_root, load_cifar10, subset
    from .evaluate import evaluate
    from .model import count_macs, count_params

    variants = list(ABLATIONS if variants is None else variants)
    if not variants or not all(isinstance(v, Variant) for v in variants):
        raise ValueError("variants must be a non-empty list of ablation.Variant (see ablation.ABLATIONS)")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique, got {names}")
    if warmup_epochs is None:
        warmup_epochs = min(2.0, epochs / 4)
    monitor_limit = min(1000, test_limit) if test_limit else 1000
    budget = _budget(epochs, train_limit, test_limit, seed, batch_size, lr, warmup_epochs, monitor_limit)
    # which data: a partial sweep on other data is not resumed, and the results say what they were trained on
    budget["data"] = _train.describe_path(data if data is not None else default_data_root())
    configs = {v.name: _train.TrainConfig(
        model=v.model, overrides=dict(v.overrides), epochs=epochs, batch_size=batch_size, lr=lr,
        warmup_epochs=warmup_epochs, seed=seed + v.seed_offset, data=None if data is None else str(data), out=None,
        threads=threads, train_limit=train_limit, test_limit=monitor_limit) for v in variants}
    for cfg in configs.values():  # bad overrides or budget: fail before training anything
        cfg.validate()

    out_path = Path(out_json) if out_json is not None else None
    if out_path is not None and out_path.exists() and not overwrite:
        raise FileExistsError(f"{out_path} already holds results; choose another --out or pass overwrite=True "
                              f"(--overwrite) to replace them when the new sweep finishes")
    partial = out_path.with_name(out_path.name + ".partial") if out_path is not None else None
    done: dict[str, dict[str, Any]] = {}
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if resume and partial is not None and partial.is_file():
        try:
            old = json.loads(partial.read_text())
        except (OSError, ValueError):
            old = None
        if old and old.get("format") == RESULTS_FORMAT and old.get("budget") == budget:
            done = {r["name"]: r for r in old.get("results", []) if r.get("name") in configs}
            started = old.get("started", started)
    state: dict[str, Any] = dict(format=RESULTS_FORMAT, budget=budget, machine=_machine(), started=started,
                                 finished=None, results=[])

    def save(final: bool) -> None:
        state["results"] = [done[n] for n in names if n in done]
        if out_path is None:
            return
        if final:
            state["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            _atomic_write_json(out_path, state)
            partial.unlink(missing_ok=True)
        else:
            _atomic_write_json(partial, state)

    # Decode the data set once for the whole sweep (50k JPEGs take longer than a short run on a subset).
    root = configs[names[0]].data
    full_test = load_cifar10("test", root)
    arrays = (*load_cifar10("train", root), *full_test)
    x_test, y_test = subset(*full_test, test_limit)
    for i, v in enumerate(variants):
        if v.name in done:
            continue
        cfg = configs[v.name]
        if progress:
            print(f"[{i + 1}/{len(variants)}] {v.name}: {v.model} {v.overrides}", flush=True)
        t0 = time.perf_counter()
        result = _train.train(cfg, progress=progress, arrays=arrays)
        ev = evaluate(result.model, x_test, y_test, bf16=cfg.bf16, channels_last=cfg.channels_last)
        seconds = time.perf_counter() - t0
        model = result.model
        done[v.name] = dict(
            **v.to_dict(), params=count_params(model), macs=count_macs(model), test_acc=ev.accuracy,
            test_loss=ev.loss, test_images=int(y_test.shape[0]), epochs=len(result.history),
            train_images=min(train_limit or 10**9, int(arrays[1].shape[0])), seed=cfg.seed, seconds=round(seconds, 1),
            machine=_machine(), date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            history=result.history)
        if progress:
            print(f"    test accuracy {ev.accuracy:.4f} on {y_test.shape[0]} images, {seconds:.0f} s", flush=True)
        save(final=False)
    save(final=True)
    return state


def load_ablation_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read results written by ``run_ablations``; raises ``ValueError`` for a file of another kind."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ablation results at {path}; run seresnet.ablation.run_ablations(..., "
                                f"out_json={str(path)!r}) or `python -m seresnet.ablation --out {path}`")
    try:
        obj = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("format") != RESULTS_FORMAT or not isinstance(obj.get("results"), list):
        raise ValueError(f"{path} is not a seresnet ablation results file (expected format {RESULTS_FORMAT!r})")
    for r in obj["results"]:
        r["overrides"] = _overrides_from_json(r.get("overrides", {}))
    return obj


# --- tables and plots --------------------------------------------------------------------------------------------
def _results_list(results: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if isinstance(results, Mapping):
        if "results" not in results:
            raise ValueError("expected the dict returned by run_ablations / load_ablation_results, or its 'results'")
        return list(results["results"])
    return list(results)


def ablation_table(results: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (study, setting) we ran, with the paper's number beside ours.

    Keys: study, setting, name, params, test_acc (0..1), test_err (%), d_err (our error minus the error of the
    default SE model, percentage points), paper_table, paper_top1 (%), paper_d_top1 (paper's top-1 error minus
    its default SE-ResNet-50's 22.28). The default SE model appears once in every study, as its reference row.
    """
    rows_in = _results_list(results)
    ref = next((r for r in rows_in if r["study"] == "reference"), None)
    ref_err = 100 * (1 - ref["test_acc"]) if ref else float("nan")
    paper_ref = paper_row("reduction", "16")["top1"]
    out: list[dict[str, Any]] = []
    for study in STUDIES:
        members = [r for r in rows_in if r["study"] == study]
        if ref is not None:
            members.insert(0, {**ref, "study": study, "setting": DEFAULT_SETTING[study]})
        for r in members:
            p = paper_row(study, r["setting"])
            err = 100 * (1 - r["test_acc"])
            out.append(dict(study=study, setting=r["setting"], name=r["name"], params=r.get("params"),
                            test_acc=r["test_acc"], test_err=err, d_err=err - ref_err,
                            paper_table=p["table"] if p else None, paper_top1=p["top1"] if p else None,
                            paper_d_top1=(p["top1"] - paper_ref) if p else None))
    for r in rows_in:
        if r["study"] == "noise":
            err = 100 * (1 - r["test_acc"])
            out.append(dict(study="noise", setting=r["setting"], name=r["name"], params=r.get("params"),
                            test_acc=r["test_acc"], test_err=err, d_err=err - ref_err, paper_table=None,
                            paper_top1=None, paper_d_top1=None))
    return out


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """``ablation_table`` rows as a Markdown table (display with ``IPython.display.Markdown``)."""
    def num(v: Any, fmt: str) -> str:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    lines = ["| study | setting | params | test acc (%) | Δ error (pp) | paper table | paper top-1 err (%) "
             "| paper Δ (pp) |", "|---|---|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['study']} | {r['setting']} | {num(r['params'], ',')} | {num(100 * r['test_acc'], '.2f')} "
                     f"| {num(r['d_err'], '+.2f')} | {num(r['paper_table'], 'd')} | {num(r['paper_top1'], '.2f')} "
                     f"| {num(r['paper_d_top1'], '+.2f')} |")
    return "\n".join(lines)


def plot_ablations(results: Mapping[str, Any] | Sequence[Mapping[str, Any]], studies: Sequence[str] = STUDIES,
                   figsize: tuple[float, float] | None = None):
    """Change in error versus the default SE model, ours (CIFAR-10 test error) beside the paper's (ImageNet top-1),
    one panel per study. Our bars carry +-1 binomial standard error of the difference (test-set sampling only: the
    seed-to-seed noise of training is not in it, and on a short budget it is usually larger); a grey band shows
    the difference between the default model and its repeat with another seed (``study="noise"``) when the
    results have one. Returns the Figure."""
    from .plots import _new_figure

    rows = ablation_table(results)
    res = _results_list(results)
    n_test = max((r.get("test_images", 0) for r in res), default=0)
    studies = [s for s in studies if any(r["study"] == s for r in rows)]
    if not studies:
        raise ValueError("no results for any of the studies " + ", ".join(STUDIES))
    noise = [abs(r["d_err"]) for r in rows if r["study"] == "noise"]
    band = max(noise) if noise else None
    heights = [sum(r["study"] == s for r in rows) for s in studies]
    # A figure not managed by pyplot (as in seresnet.plots): nothing accumulates, a notebook shows it once.
    fig = _new_figure(figsize or (7.5, 1.0 + 0.42 * sum(heights) + 0.5 * len(studies)))
    axes = fig.subplots(len(studies), 1, gridspec_kw=dict(height_ratios=heights), squeeze=False, sharex=True)
    for ax, study in zip(axes[:, 0], studies):
        sub = [r for r in rows if r["study"] == study]
        y = torch.arange(len(sub), dtype=torch.float64).tolist()
        ours = [r["d_err"] for r in sub]
        paper = [r["paper_d_top1"] if r["paper_d_top1"] is not None else float("nan") for r in sub]
        se = []
        for r in sub:
            p = r["test_acc"]
            se.append(100 * math.sqrt(2 * p * (1 - p) / n_test) if n_test and r["d_err"] != 0 else 0.0)
        if band:
            ax.axvspan(-band, band, color="0.88", zorder=0,
                       label=f"±{band:.2f} pp: same model, another seed (ours)")
        ax.barh([v - 0.2 for v in y], ours, height=0.38, xerr=se, color="tab:blue", ecolor="0.3", capsize=2,
                label="ours: CIFAR-10 test error, ResNet-20")
        ax.barh([v + 0.2 for v in y], paper, height=0.38, color="tab:orange",
                label="paper: ImageNet top-1 error, ResNet-50")
        for yi, pv in zip(y, paper):
            if math.isnan(pv):
                ax.text(0, yi + 0.2, " no paper number", va="center", fontsize=7, color="0.4")
        ax.set_yticks(y, [f"{r['setting']}" + (" (default)" if r["setting"] == DEFAULT_SETTING[study] else "")
                          for r in sub])
        ax.set_ylim(len(sub) - 0.4, -0.6)  # top to bottom, with room for the "no paper number" notes
        ax.axvline(0, color="0.2", lw=0.8)
        tables = sorted({r["paper_table"] for r in sub if r["paper_table"]})
        ax.set_title(f"{study}" + (f" (paper Table {', '.join(map(str, tables))})" if tables else ""),
                     fontsize=10, loc="left")
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("error minus the default SE model's error (percentage points; < 0 = better)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", fontsize=8, ncols=1)
    return fig


# --- the same ablations with the study's recipe and seeds (scripts/attention_study.py --ablations) ----------------
STUDY_REFERENCE = "se_resnet20"


def ablation_study_rows(study: Mapping[str, Any], set_name: str = "val") -> list[dict[str, Any]]:
    """The paper's ablations as trained by ``scripts/attention_study.py --ablations``: one row per (study, setting)
    of ``STUDIES``, ours beside the paper's, every study led by its default (SE-ResNet-20 itself, difference 0).

    Keys: study, setting, model (the study's variant name, e.g. ``"se_resnet20+reduction=4"``), seeds (paired seeds
    finished), d_acc (accuracy on ``set_name`` minus SE-ResNet-20's, paired by seed, in points; None before a run
    has finished), per_seed (points), ci95 (t 95% interval over seeds in points; None below two seeds) and interval
    (it as text), verdict, ci_all / interval_all / verdict_all (the same with intervals that hold for every setting
    of the table at once, Bonferroni over all of them: see ``seresnet.study.paired_table``), paper_table and
    paper_d_acc (the paper's ImageNet top-1 *accuracy* of the setting minus its default SE-ResNet-50's, in points,
    so that > 0 means better on both sides; None where the paper has no number).
    """
    from .study import paired_table, variant_name

    summary = study.get("summary", {}).get(set_name)
    if summary is None:
        raise ValueError(f"the study has no results on {set_name!r}; it has {sorted(study.get('summary', {}))}")
    paper_ref = paper_row("reduction", "16")["top1"]
    ref_seeds = summary.get(STUDY_REFERENCE, {}).get("seeds", [])
    settings = {name: [Variant("SE (default)", name, DEFAULT_SETTING[name]), *[v for v in ABLATIONS if v.study == name]]
                for name in STUDIES}
    comparisons = sum(v.study in STUDIES for v in ABLATIONS)  # every setting but the defaults, trained or not
    rows: list[dict[str, Any]] = []
    for name, variants in settings.items():
        default = variants[0]
        for v in variants:
            model = variant_name(v.model, v.overrides)
            p = paper_row(name, v.setting)
            row = dict(study=name, setting=v.setting, model=model, paper_table=p["table"] if p else None,
                       paper_d_acc=round(paper_ref - p["top1"], 2) if p else None)
            if v is default:
                rows.append({**row, "seeds": len(ref_seeds), "d_acc": 0.0 if ref_seeds else None,
                             "per_seed": [0.0] * len(ref_seeds), "ci95": None, "interval": "-", "ci_all": None,
                             "interval_all": "-", "verdict": "the reference" if ref_seeds else "not trained yet",
                             "verdict_all": "the reference" if ref_seeds else "not trained yet"})
            else:
                rows.append({**row, **paired_table(study, [model], STUDY_REFERENCE, set_name, comparisons)[0]})
    return rows


def plot_ablation_study(study: Mapping[str, Any], set_name: str = "val", figsize: tuple[float, float] | None = None):
    """``ablation_study_rows`` as a figure: one row of panels per study; on the left our CIFAR-10 accuracy minus
    SE-ResNet-20's (each seed a dot, the mean with its t 95% interval over seeds and, in grey, the interval that
    holds for every setting at once, a hollow marker where the interval is undefined, "not trained yet" where no
    run finished), on the right, on its own axis, the paper's ImageNet top-1 accuracy minus its default
    SE-ResNet-50's. Returns the Figure."""
    from .plots import _new_figure, draw_paired_difference

    rows = ablation_study_rows(study, set_name)
    heights = [sum(r["study"] == s for r in rows) for s in STUDIES]
    fig = _new_figure(figsize or (11.0, 1.2 + 0.36 * sum(heights) + 0.45 * len(STUDIES)))
    axes = fig.subplots(len(STUDIES), 2, gridspec_kw=dict(height_ratios=heights, width_ratios=[1.6, 1.0]),
                        squeeze=False, sharex="col")
    where = dict(val="validation").get(set_name, set_name)
    for (ax, ax_p), name in zip(axes, STUDIES):
        sub = [r for r in rows if r["study"] == name]
        for i, r in enumerate(sub):
            if r["verdict"] == "the reference":
                ax.scatter([0], [i], s=40, marker="D", color="0.5", zorder=3)
            elif r["d_acc"] is None:
                ax.text(0.02, i, "not trained yet", va="center", fontsize=8, color="0.4",
                        transform=ax.get_yaxis_transform())
            else:
                draw_paired_difference(ax, i, r["per_seed"], r["d_acc"], r["ci95"], r.get("ci_all"))
            if r["paper_d_acc"] is None:
                ax_p.text(0.02, i, "no paper number", va="center", fontsize=8, color="0.4",
                          transform=ax_p.get_yaxis_transform())
            else:
                ax_p.barh(i, r["paper_d_acc"], height=0.5, color="tab:orange")
        labels = [f"{r['setting']}" + (" (default)" if r["setting"] == DEFAULT_SETTING[name] else "")
                  + f"  ({r['seeds']} seed{'' if r['seeds'] == 1 else 's'})" for r in sub]
        ax.set_yticks(range(len(sub)), labels)
        ax_p.set_yticks(range(len(sub)), [""] * len(sub))
        for a in (ax, ax_p):
            a.set_ylim(len(sub) - 0.5, -0.5)
            a.axvline(0, color="0.2", lw=0.8)
            a.grid(axis="x", alpha=0.3)
        tables = sorted({r["paper_table"] for r in sub if r["paper_table"]})
        ax.set_title(name + (f" (paper Table {', '.join(map(str, tables))})" if tables else ""), fontsize=10,
                     loc="left")
    axes[0, 0].set_title("ours: SE-ResNet-20, CIFAR-10", fontsize=10, loc="right", color="0.3")
    axes[0, 1].set_title("paper: SE-ResNet-50, ImageNet", fontsize=10, loc="right", color="0.3")
    tested = sum(v.study in STUDIES for v in ABLATIONS)
    hollow = any(r["d_acc"] is not None and r["ci95"] is None and r["verdict"] != "the reference" for r in rows)
    fig.suptitle("The paper's ablations, each against the default SE model (> 0 means better)\nours: each seed "
                 "(blue), paired mean with its 95% t-interval (black)"
                 + (", hollow = interval undefined" if hollow else "") + "\n"
                 f"grey bar = the interval that holds for all {tested} settings at once, grey diamond = the default",
                 fontsize=10)
    axes[-1, 0].set_xlabel(f"CIFAR-10 {where} accuracy minus SE-ResNet-20 (points)")
    axes[-1, 1].set_xlabel("ImageNet top-1 accuracy minus SE-ResNet-50\n(points, the paper's own recipe)")
    return fig


# --- SE knock-out (paper section 7) ------------------------------------------------------------------------------
EDITS: tuple[str, ...] = ("off", "overall_mean", "class_mean")


def default_knockout_scopes(model: nn.Module) -> list[tuple[str, list[str]]]:
    """(label, block names) to edit: every single block of the last stage, every stage, every stage from the end
    (the last stage, the last two, ...), and all blocks."""
    names = hooks.se_block_names(model)
    if not names:
        raise ValueError("the model has no SE blocks to knock out")
    stages: dict[str, list[str]] = {}
    for n in names:
        stages.setdefault(n.rsplit("_", 1)[0], []).append(n)
    order = list(stages)
    scopes: list[tuple[str, list[str]]] = [(n, [n]) for n in stages[order[-1]]]
    scopes += [(f"{s}_* (stage {s.split('_')[1]})", stages[s]) for s in order]
    for k in range(2, len(order)):
        tail = order[-k:]
        scopes.append((f"stages {'+'.join(s.split('_')[1] for s in tail)}", [b for s in tail for b in stages[s]]))
    scopes.append(("all blocks", names))
    return scopes


def _edits_for(kind: str, blocks: Sequence[str], stats: hooks.ExcitationStats | None,
               cls: int | None = None) -> dict[str, hooks.Edit]:
    if kind == "off":
        return {b: hooks.Off() for b in blocks}
    if stats is None:
        raise ValueError(f"edit {kind!r} needs ExcitationStats (hooks.excitation_stats)")
    missing = [b for b in blocks if b not in stats.block_names]
    if missing:
        raise ValueError(f"the statistics have no block(s) {missing}; they cover {stats.block_names}")
    if kind == "overall_mean":
        return {b: hooks.Replace(stats.overall_mean[b]) for b in blocks}
    if kind == "class_mean":
        return {b: hooks.Replace(stats.mean[b][cls]) for b in blocks}
    raise ValueError(f"unknown edit {kind!r}; expected one of {EDITS}")


@torch.no_grad()
def knockout_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, kind: str,
                      blocks: Sequence[str], stats: hooks.ExcitationStats | None = None,
                      batch_size: int = 500, bf16: bool = False) -> float:
    """Accuracy (0..1) of ``model`` on uint8 ``images`` (N, 3, H, W) with ``labels`` (N,) while ``blocks`` are edited.

    ``kind``: ``"off"`` (``s = 1``, hooks.Off), ``"overall_mean"`` (every image gets the mean excitation over all
    images, hooks.Replace), or ``"class_mean"`` (every image gets the mean excitation of its *true* class: an oracle
    that tells how much of the excitation's effect is class information rather than per-image detail).
    """
    from .evaluate import predict_logits

    if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise ValueError(f"need as many labels as images (and at least one), got {images.shape[0]} images and "
                         f"{labels.shape[0]} labels")
    if kind != "class_mean":
        with hooks.steer(model, _edits_for(kind, blocks, stats)):
            preds = predict_logits(model, images, batch_size, bf16, channels_last=bf16).argmax(1)
        return float((preds == labels).double().mean())
    correct = 0
    for cls in labels.unique().tolist():
        idx = (labels == cls).nonzero().squeeze(1)
        with hooks.steer(model, _edits_for(kind, blocks, stats, cls)):
            preds = predict_logits(model, images[idx], batch_size, bf16, channels_last=bf16).argmax(1)
        correct += int((preds == cls).sum())
    return correct / labels.shape[0]


def se_knockout_table(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, stats: hooks.ExcitationStats | None = None,
    scopes: Sequence[tuple[str, Sequence[str]]] | None = None, edits: Sequence[str] = EDITS,
    batch_size: int = 500, bf16: bool = False, progress: bool = False,
) -> list[dict[str, Any]]:
    """Test accuracy when SE blocks are switched off or their excitations replaced, one record per (edit, scope).

    ``images`` uint8 (N, 3, H, W), ``labels`` (N,); ``stats`` from ``hooks.excitation_stats`` (needed for the
    mean edits; for a fair "overall mean" compute it on other images than the ones evaluated). ``scopes``: (label,
    block names) pairs, default ``default_knockout_scopes(model)``; ``edits``: some of ``"off"``,
    ``"overall_mean"``, ``"class_mean"`` (see ``knockout_accuracy``). ``bf16`` evaluates under bfloat16 autocast
    (channels_last), several times faster on recent CPUs. The first record is the unedited model (edit
    ``"none"``). Records: edit, scope, blocks (list of names), accuracy (0..1), delta (accuracy minus the unedited
    accuracy), delta_ci95 (a paired 95% interval of the delta over these images, ``evaluate.paired_difference``:
    the images are a sample), changed (images whose correctness the edit changes). ``progress`` shows a progress
    bar over the batches.

    For an ``SEResNet`` every batch goes through the stem and the stages once; each edit then reruns only the
    stages from the first edited one on (an edit cannot change what comes before it), which saves about half the
    work of evaluating every edit from scratch. Other models are evaluated edit by edit.
    """
    from .data import normalize

    unknown = [e for e in edits if e not in EDITS]
    if unknown:
        raise ValueError(f"unknown edit(s) {unknown}; expected some of {EDITS}")
    if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise ValueError(f"need as many labels as images (and at least one), got {images.shape[0]} images and "
                         f"{labels.shape[0]} labels")
    scopes = default_knockout_scopes(model) if scopes is None else [(str(a), list(b)) for a, b in scopes]
    for _, blocks in scopes:
        hooks.resolve_blocks(model, list(blocks))  # clear error for a name the model does not have
    jobs = [(kind, label, list(blocks)) for kind in edits for label, blocks in scopes]
    for kind, _, blocks in jobs:  # build every edit once up front: a missing statistic fails before any work
        for cls in labels.unique().tolist() if kind == "class_mean" and stats is not None else [None]:
            _edits_for(kind, blocks, stats, cls)

    stage_of_block = _stage_index(model)
    if stage_of_block is None:  # not an SEResNet: evaluate every edit on the whole network
        base = _plain_accuracy(model, images, labels, batch_size, bf16)
        records = [dict(edit="none", scope="unedited", blocks=[], accuracy=base, delta=0.0)]
        for kind, label, blocks in jobs:
            acc = knockout_accuracy(model, images, labels, kind, blocks, stats, batch_size, bf16)
            records.append(dict(edit=kind, scope=label, blocks=blocks, accuracy=acc, delta=acc - base))
        return records

    from tqdm.auto import tqdm

    from .evaluate import paired_difference

    starts = [min(stage_of_block[b] for b in blocks) for _, _, blocks in jobs]
    stages = model.stages
    dev = next(model.parameters()).device
    right = torch.zeros(len(jobs) + 1, images.shape[0], dtype=torch.bool)  # per edit and image: correct?
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            for lo in tqdm(range(0, images.shape[0], batch_size), desc=f"{len(jobs)} edits", unit="batch",
                           disable=not progress):
                x = normalize(images[lo:lo + batch_size]).to(dev)
                y = labels[lo:lo + batch_size].to(dev)
                if bf16:
                    x = x.contiguous(memory_format=torch.channels_last)
                inputs = []  # the input of every stage, unedited
                h = model.stem(x)
                for stage in stages:
                    inputs.append(h)
                    h = stage(h)
                hi = lo + y.shape[0]
                right[0, lo:hi] = (model.forward_head(h).argmax(1) == y).cpu()
                for j, ((kind, _, blocks), start) in enumerate(zip(jobs, starts), start=1):
                    if kind == "class_mean":  # every image its own class's mean, in one pass
                        edit = {b: hooks.ReplaceRows(stats.mean[b][y.cpu()]) for b in blocks}
                    else:
                        edit = _edits_for(kind, blocks, stats)
                    with hooks.steer(model, edit):
                        right[j, lo:hi] = (_run_from(model, inputs[start], start).argmax(1) == y).cpu()
    finally:
        model.train(was_training)
    acc = right.double().mean(1).tolist()
    records = [dict(edit="none", scope="unedited", blocks=[], accuracy=acc[0], delta=0.0, delta_ci95=(0.0, 0.0),
                    changed=0)]
    for j, ((kind, label, blocks), a) in enumerate(zip(jobs, acc[1:]), start=1):
        _, interval = paired_difference(right[j], right[0]) if images.shape[0] > 1 else (0.0, (a - acc[0],) * 2)
        records.append(dict(edit=kind, scope=label, blocks=blocks, accuracy=a, delta=a - acc[0],
                            delta_ci95=interval, changed=int((right[j] != right[0]).sum())))
    return records


def _stage_index(model: nn.Module) -> dict[str, int] | None:
    """SE block name -> index of its stage in ``model.stages``, or None if ``model`` is not an ``SEResNet``."""
    from .model import SEResNet

    if not isinstance(model, SEResNet):
        return None
    numbers = list(model.config.stage_numbers)
    return {name: numbers.index(int(name.split("_")[1])) for name in model.se_blocks()}


def _run_from(model: nn.Module, h: torch.Tensor, start: int) -> torch.Tensor:
    """Logits from the input ``h`` of stage ``start`` on (an ``SEResNet``)."""
    for stage in model.stages[start:]:
        h = stage(h)
    return model.forward_head(h)


def _plain_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                    bf16: bool) -> float:
    from .evaluate import predict_logits

    preds = predict_logits(model, images, batch_size, bf16, channels_last=bf16).argmax(1)
    return float((preds == labels).double().mean())


def plot_knockout(records: Sequence[Mapping[str, Any]], figsize: tuple[float, float] | None = None,
                  min_range: float = 2.0):
    """The accuracy change of every (edit, scope) record of ``se_knockout_table``: one panel per edit, each with
    its own scale (switching blocks off can cost tens of points while replacing excitations costs tenths), bars
    labelled with their values. Every panel spans at least +-``min_range`` points, so that changes at the
    resolution of a small test set do not fill a panel. Returns the Figure."""
    from .plots import _new_figure

    base = next((r for r in records if r["edit"] == "none"), None)
    rest = [r for r in records if r["edit"] != "none"]
    if not rest:
        raise ValueError("no edited records to plot (se_knockout_table output expected)")
    scopes = list(dict.fromkeys(r["scope"] for r in rest))
    kinds = list(dict.fromkeys(r["edit"] for r in rest))
    titles = {"off": "SE off (s = 1)", "overall_mean": "s = mean over all images",
              "class_mean": "s = mean of the true class\n(oracle)"}
    colors = {"off": "tab:red", "overall_mean": "tab:blue", "class_mean": "tab:green"}
    fig = _new_figure(figsize or (3.0 * len(kinds) + 1.6, 0.9 + 0.34 * len(scopes)))
    axes = fig.subplots(1, len(kinds), sharey=True, squeeze=False)[0]
    for ax, kind in zip(axes, kinds):
        vals = {r["scope"]: 100 * r["delta"] for r in rest if r["edit"] == kind}
        v = [vals.get(sc, float("nan")) for sc in scopes]
        bars = ax.barh(range(len(scopes)), v, height=0.7, color=colors.get(kind, "0.5"))
        ax.bar_label(bars, labels=[f"{x:+.1f}" if not math.isnan(x) else "" for x in v], fontsize=7, padding=2)
        finite = [abs(x) for x in v if not math.isnan(x)]
        lim = max(finite + [min_range / 1.35]) * 1.35  # room for the labels
        ax.set_xlim(-lim, lim)
        ax.axvline(0, color="0.2", lw=0.8)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(titles.get(kind, kind), fontsize=9)
        ax.set_xlabel("accuracy change (pp)", fontsize=8)
        ax.tick_params(labelsize=8)
    axes[0].set_yticks(range(len(scopes)), scopes)
    axes[0].invert_yaxis()
    if base is not None:
        fig.suptitle(f"Editing SE excitations without retraining (unedited accuracy {100 * base['accuracy']:.1f}%)",
                     fontsize=10)
    return fig


# --- command line ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m seresnet.ablation", description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="*", default=None, help="names from ABLATIONS (default: all)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--train-limit", type=int, default=1000, help="training images (0 = all 50,000)")
    p.add_argument("--test-limit", type=int, default=1000, help="test images (0 = all 10,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="CIFAR-10 data root (default: $SERESNET_DATA or data/)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="results JSON (written when all variants are done)")
    p.add_argument("--no-resume", dest="resume", action="store_false")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file when the sweep finishes")
    p.add_argument("--list", action="store_true", help="list the variants and exit")
    args = p.parse_args(argv)
    if args.list:
        for v in ABLATIONS:
            print(f"{v.name:<24} {v.model:<12} {v.overrides}")
        return 0
    if 0 < args.train_limit < 128:  # checked now, not after the data are decoded
        p.error(f"--train-limit must be 0 (all) or at least 128, the batch size of these runs; got {args.train_limit}")
    try:
        state = run_ablations(get_variants(args.variants), args.epochs, args.train_limit or None,
                              args.test_limit or None, args.seed, args.out, data=args.data, threads=args.threads,
                              resume=args.resume, overwrite=args.overwrite, progress=True)
    except (ValueError, OSError) as exc:  # OSError: missing data, an existing --out, an unwritable folder
        print(f"error: {exc}", file=sys.stderr)
        if "no test_batch" in str(exc):
            print("these quick runs test on the data root's test split: use one that has it (such as the JPEG copy), "
                  "or, for the lossless batches, scripts/attention_study.py --ablations, which validates on held-out "
                  "training images", file=sys.stderr)
        return 2
    print(format_table(ablation_table(state)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

