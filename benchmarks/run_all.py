"""Run every benchmark, write ``benchmarks/results/*.json``, the plot and ``BENCHMARKS.md``.

Usage (from the repository root)::

    python -m benchmarks                      # everything (about 15 minutes on 2 idle cores)
    python -m benchmarks --quick              # smoke run: few repeats, small sizes, writes to $TMPDIR
    python -m benchmarks --skip compile       # everything but the (slow to compile) torch.compile section
    python -m benchmarks --only cifar hooks   # some sections; the report uses the JSON already there for the rest
    python -m benchmarks.report               # rebuild BENCHMARKS.md and the plot from the JSON files only

A full run replaces the results (its own ``<section>.json`` files, nothing else in the folder) only when every section
ran; with a failed section it leaves them as they were, keeps its own in ``results/.incoming-*`` and exits with 1.

Sections (each writes ``results/<section>.json``):

* ``machine``:  CPU description, theoretical peak FLOP/s and the FLOP/s a large matrix product reaches.
* ``cifar``:    se_resnet20, resnet20 and a tutorial-style SE-ResNet-20 (same weights), training and inference,
                in several settings: peer ratio, SE overhead, achieved FLOP/s.
* ``imagenet``: se_resnet50 vs timm seresnet50 and resnet50 vs torchvision resnet50 (same weights), training step
                (batch 16, 128x128), inference throughput (batch 16, 128x128) and latency (batch 1, 224x224).
* ``settings``: channels_last, bfloat16, thread count and batch size for se_resnet20 training, and
                the SE forward of this package against the straightforward ``x.mean`` squeeze.
* ``attention``: the channel-attention family at ResNet-20 size (every ``<attention>_resnet20`` with plain and SE):
                parameters, multiply-adds, eager training (bf16 + channels_last, as ``seresnet.train``) and fp32
                inference, all interleaved in one group per mode so that the overheads are ratios from one run.
* ``hooks``:    inference with capture of every SE block against without (``bench_hooks.capture_overhead``).
* ``widgets``:  the notebooks' widgets: channel explorer precompute and view change, steering explorer new edit
                per SE block (``bench_widgets``).
* ``compile``:  eager vs ``torch.compile`` training of the CIFAR networks (last: compiling takes minutes).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python benchmarks/run_all.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "benchmarks"

import torch

from benchmarks import report
from benchmarks.common import (
    Case,
    Setting,
    busy_processes,
    cpu_peak,
    infer_step,
    interleaved,
    load_average,
    machine_info,
    machine_summary,
    matmul_ceiling,
    train_step,
)
from benchmarks.reference import ReferenceSEResNet20, copy_weights
from seresnet import count_macs, create_model

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = ("machine", "cifar", "attention", "hooks", "widgets", "imagenet", "settings", "compile")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def save(name: str, data: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = {"section": name, "finished_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "load_after": load_average(), **data}
    (out / f"{name}.json").write_text(json.dumps(data, indent=1))
    log(f"wrote {out / f'{name}.json'}")


def _strip(r: dict) -> dict:
    """Keep the per-sample times but round them (the JSON stays readable)."""
    return {**r, "times_s": [round(t, 6) for t in r["times_s"]]}


def run_group(models: dict[str, torch.nn.Module], mode: str, batch: int, size: int, setting: Setting,
              repeats: int, num_classes: int, min_call_s: float) -> dict[str, dict]:
    """Time ``models`` (fresh copies, so they do not share state) interleaved in one mode and setting."""
    cases = {}
    for name, m in models.items():
        m = copy.deepcopy(m)
        fn = (train_step(m, batch, size, setting, num_classes) if mode == "train"
              else infer_step(m, batch, size, setting))
        cases[name] = Case(fn, batch, setting.threads)
    warmup = 4 if setting.compile else 3
    res = interleaved(cases, repeats, warmup=warmup, min_call_s=min_call_s, log=log)
    return {n: _strip(r) for n, r in res.items()}


def group_record(models: dict[str, torch.nn.Module], mode: str, batch: int, size: int, setting: Setting,
                 repeats: int, num_classes: int, macs: dict[str, int], min_call_s: float = 0.0) -> dict:
    log(f"  {mode} batch {batch} @ {size}x{size}, {setting.name}: {', '.join(models)}")
    t0 = time.perf_counter()
    res = run_group(models, mode, batch, size, setting, repeats, num_classes, min_call_s)
    for n, r in res.items():
        # FLOP per image: 2 per multiply-add forward; a training step costs about 3 forwards (forward, gradient
        # w.r.t. activations, gradient w.r.t. weights).
        flop = 2 * macs[n] * (3 if mode == "train" else 1)
        r["flops"] = flop * r["items_per_s"]
        log(f"    {n:24s} {r['median_s'] * 1e3:9.2f} ms  {r['items_per_s']:9.1f} img/s  "
            f"{r['flops'] / 1e9:7.1f} GFLOP/s")
    return {"mode": mode, "batch": batch, "size": size, "setting": setting.to_dict(), "repeats": repeats,
            "seconds": time.perf_counter() - t0, "load": load_average(), "results": res}


def thread_counts(args: argparse.Namespace) -> list[int]:
    """1 thread, all cores, and the run's thread count."""
    return sorted({1, os.cpu_count() or 1, args.threads})


# --- sections ------------------------------------------------------------------------------------------------
def section_machine(args: argparse.Namespace) -> dict:
    info = machine_info()
    log(f"machine: {info['cpu_model']}, {info['logical_cpus']} CPUs, {info['cpu_mhz']} MHz, {info['isa_flags']}")
    peak = cpu_peak(info)
    ceiling = {f"{t}t": matmul_ceiling(t, seconds=0.5 if args.quick else 1.5) for t in thread_counts(args)}
    for k, v in ceiling.items():
        log(f"  ceiling {k}: " + ", ".join(f"{n} {r['best_flops'] / 1e9:.0f} GFLOP/s" for n, r in v.items()))
    return {"info": info, "peak": peak, "matmul": ceiling, "busy_processes": busy_processes()}


def cifar_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    ours = create_model("se_resnet20")
    ref = ReferenceSEResNet20()
    copy_weights(ours, ref)
    return {"se_resnet20": ours, "reference_se_resnet20": ref, "resnet20": create_model("resnet20")}


def section_cifar(args: argparse.Namespace) -> dict:
    models = cifar_models()
    macs = {n: count_macs(m, 32) for n, m in models.items()}
    settings = [Setting(threads=args.threads), Setting(bf16=True, channels_last=True, threads=args.threads)]
    bf16w = Setting(bf16=True, channels_last=True, bf16_weights=True, threads=args.threads)
    groups = []
    for setting in settings:
        for mode, batch in (("train", args.cifar_train_batch), ("infer", args.cifar_infer_batch)):
            groups.append(group_record(models, mode, batch, 32, setting, args.repeats, 10, macs, args.min_call_s))
    groups.append(group_record(models, "infer", args.cifar_infer_batch, 32, bf16w, args.repeats, 10, macs,
                               args.min_call_s))
    return {"macs": macs, "groups": groups}


def imagenet_models() -> dict[str, torch.nn.Module]:
    import timm
    import torchvision

    from seresnet.convert import from_timm, from_torchvision

    torch.manual_seed(0)
    timm_se = timm.create_model("seresnet50", pretrained=False)
    tv = torchvision.models.resnet50()
    # Ours carry the peers' weights (the converters are exact), so both sides compute the same function.
    return {"se_resnet50": from_timm(timm_se), "timm_seresnet50": timm_se,
            "resnet50": from_torchvision(tv), "torchvision_resnet50": tv}


def section_imagenet(args: argparse.Namespace) -> dict:
    models = imagenet_models()
    macs = {n: count_macs(m, 224) for n, m in models.items()}
    macs128 = {n: count_macs(m, args.imagenet_size) for n, m in models.items()}
    groups = []
    for setting in (Setting(threads=args.threads), Setting(bf16=True, channels_last=True, threads=args.threads)):
        groups.append(group_record(models, "train", args.imagenet_batch, args.imagenet_size, setting,
                                   args.imagenet_repeats, 1000, macs128, args.min_call_s))
        groups.append(group_record(models, "infer", args.imagenet_batch, args.imagenet_size, setting,
                                   args.imagenet_repeats, 1000, macs128, args.min_call_s))
        groups.append(group_record(models, "latency", 1, 224, setting, args.imagenet_repeats, 1000, macs,
                                   args.min_call_s))
    # Inference with the weights themselves in bfloat16: autocast re-casts every weight on every call, which at
    # batch 1 costs about a third of a ResNet-50 forward on this CPU.
    bf16w = Setting(bf16=True, channels_last=True, bf16_weights=True, threads=args.threads)
    groups.append(group_record(models, "infer", args.imagenet_batch, args.imagenet_size, bf16w,
                               args.imagenet_repeats, 1000, macs128, args.min_call_s))
    groups.append(group_record(models, "latency", 1, 224, bf16w, args.imagenet_repeats, 1000, macs, args.min_call_s))
    return {"macs_224": macs, f"macs_{args.imagenet_size}": macs128, "groups": groups}


def _naive_squeeze_model() -> torch.nn.Module:
    """se_resnet20 whose squeeze is the straightforward ``x.mean((2, 3))`` (the first implementation here)."""
    from seresnet.se import Squeeze

    class MeanSqueeze(Squeeze):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3)) if self.mode == "avg" else x.amax(dim=(2, 3))

    m = _module_by_module_model()
    for se in m.se_blocks().values():
        se.squeeze = MeanSqueeze(se.squeeze.mode)
    return m


def _module_by_module_model() -> torch.nn.Module:
    """se_resnet20 that always runs squeeze, excitation and scale one by one (no fused training path)."""
    torch.manual_seed(0)
    m = create_model("se_resnet20")
    for se in m.se_blocks().values():
        se.fused = False
    return m


def section_settings(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    se20 = create_model("se_resnet20")
    macs = {"se_resnet20": count_macs(se20, 32)}
    t = args.threads
    # 1. number format x memory layout x threads, training, one interleaved group (each case its own setting).
    variants = {}
    for threads in thread_counts(args):
        for bf16 in (False, True):
            for cl in (False, True):
                variants[Setting(bf16=bf16, channels_last=cl, threads=threads).name] = Setting(bf16, cl, False, threads)
    log(f"  se_resnet20 train batch {args.cifar_train_batch}: {', '.join(variants)}")
    cases = {n: Case(train_step(copy.deepcopy(se20), args.cifar_train_batch, 32, s, 10), args.cifar_train_batch,
                     s.threads) for n, s in variants.items()}
    layout = {n: _strip(r) for n, r in interleaved(cases, args.repeats, warmup=3, min_call_s=args.min_call_s,
                                                     log=log).items()}
    for n, r in layout.items():
        r["setting"] = variants[n].to_dict()
        r["flops"] = 6 * macs["se_resnet20"] * r["items_per_s"]
        log(f"    {n:24s} {r['median_s'] * 1e3:9.2f} ms  {r['items_per_s']:9.1f} img/s")

    # 2. batch size, in the eager bf16 + channels_last setting (per-image throughput).
    best = Setting(bf16=True, channels_last=True, threads=t)
    batches = (32, 64, 128, 256) if not args.quick else (32, 128)
    log(f"  se_resnet20 train, {best.name}, batch sizes {batches}")
    cases = {f"batch {b}": Case(train_step(copy.deepcopy(se20), b, 32, best, 10), b, t) for b in batches}
    batch = {n: _strip(r) for n, r in interleaved(cases, args.repeats, warmup=2, min_call_s=args.min_call_s,
                                                    log=log).items()}
    for n, r in batch.items():
        log(f"    {n:24s} {r['items_per_s']:9.1f} img/s")

    # 3. the SE implementation of this package (fused training path) vs module by module vs the straightforward
    # squeeze, same weights (all three are seeded identically), fp32 and bf16 + CL.
    se_impl = []
    impls = {"se_resnet20": se20, "se_resnet20_module_by_module": _module_by_module_model(),
             "se_resnet20_mean_squeeze": _naive_squeeze_model()}
    for s in (Setting(threads=t), best):
        se_impl.append(group_record(impls, "train", args.cifar_train_batch, 32, s, args.repeats, 10,
                                    {n: macs["se_resnet20"] for n in impls}, args.min_call_s))
    return {"macs": macs, "batch_for_layout": args.cifar_train_batch, "layout": layout, "batch_size": batch,
            "batch_setting": best.to_dict(), "se_impl": se_impl}


def _compile_group(models: dict[str, torch.nn.Module], batch: int, size: int, num_classes: int, macs: dict,
                   args: argparse.Namespace, t_start: float, compile_s: dict, skipped: list) -> dict | None:
    """One interleaved group: every model eager and compiled, training, bf16 + channels_last (None if none ran)."""
    eager = Setting(bf16=True, channels_last=True, threads=args.threads)
    comp = Setting(bf16=True, channels_last=True, compile=True, threads=args.threads)
    cases = {}
    for name, m in models.items():
        if time.perf_counter() - t_start > args.compile_budget_s:
            skipped.append(name)
            continue
        fn = train_step(copy.deepcopy(m), batch, size, comp, num_classes)
        torch.set_num_threads(args.threads)
        t0 = time.perf_counter()
        fn()
        fn()  # the second call may still compile (e.g. the optimizer state appears)
        compile_s[name] = time.perf_counter() - t0
        log(f"  compiled {name} training in {compile_s[name]:.0f} s")
        cases[f"{name}+compile"] = Case(fn, batch, args.threads)
        cases[name] = Case(train_step(copy.deepcopy(m), batch, size, eager, num_classes), batch, args.threads)
    if not cases:
        return None
    log(f"  train batch {batch} at {size}x{size}, eager vs compiled: {', '.join(cases)}")
    repeats = args.repeats if size <= 32 else args.imagenet_repeats
    res = {n: _strip(r) for n, r in interleaved(cases, repeats, warmup=1, min_call_s=args.min_call_s,
                                                  log=log).items()}
    for n, r in res.items():
        r["flops"] = 6 * macs[n.split("+")[0]] * r["items_per_s"]
        log(f"    {n:30s} {r['median_s'] * 1e3:9.2f} ms  {r['items_per_s']:9.1f} img/s")
    return {"mode": "train", "batch": batch, "size": size, "setting": eager.to_dict(),
            "compiled_setting": comp.to_dict(), "repeats": repeats, "load": load_average(), "results": res}


def section_compile(args: argparse.Namespace) -> dict:
    """Eager vs ``torch.compile``, training, bf16 + channels_last: the CIFAR networks in one group, the ImageNet
    ones in another.

    ``se_resnet20_module_by_module`` (``SEBlock(fused=False)``) is se_resnet20 without the compiled path's squeeze
    from the BN statistics, so that the group shows what that path buys. Compiling costs minutes on this CPU, so
    the models are compiled one after the other and the rest are skipped once ``--compile-budget-s`` is spent; the
    compile time is recorded.
    """
    cifar = cifar_models()
    cifar = {n: cifar[n] for n in ("se_resnet20", "resnet20", "reference_se_resnet20")}  # most important first
    cifar["se_resnet20_module_by_module"] = _module_by_module_model()
    imagenet = imagenet_models()
    imagenet = {n: imagenet[n] for n in ("se_resnet50", "resnet50", "timm_seresnet50")}
    macs = {n: count_macs(m, 32) for n, m in cifar.items()}
    macs |= {n: count_macs(m, args.imagenet_size) for n, m in imagenet.items()}
    compile_s: dict[str, float] = {}
    skipped: list[str] = []
    t_start = time.perf_counter()
    groups = [_compile_group(cifar, args.cifar_train_batch, 32, 10, macs, args, t_start, compile_s, skipped),
              _compile_group(imagenet, args.imagenet_batch, args.imagenet_size, 1000, macs, args, t_start,
                             compile_s, skipped)]
    return {"macs": macs, "compile_s": compile_s, "skipped": skipped, "groups": [g for g in groups if g]}


def section_hooks(args: argparse.Namespace) -> dict:
    from benchmarks.bench_hooks import capture_overhead

    out = {}
    torch.manual_seed(0)
    model = create_model("se_resnet20").eval()
    for threads in thread_counts(args):
        torch.set_num_threads(threads)
        log(f"  capture overhead, se_resnet20 inference batch {args.hooks_batch}, fp32, {threads} thread(s)")
        r = capture_overhead(model, args.hooks_batch, args.hooks_repeats)
        log(f"    plain {r['plain_ms']:.1f} ms, capture {r['capture_ms']:.1f} ms (x{r['capture_ratio']:.3f}), "
            f"with feature maps {r['capture_features_ms']:.1f} ms (x{r['capture_features_ratio']:.3f})")
        out[f"{threads}t"] = r
    return {"model": "se_resnet20", "batch": args.hooks_batch, "repeats": args.hooks_repeats, "by_threads": out}


def attention_models() -> dict[str, torch.nn.Module]:
    from seresnet.study import attention_family

    torch.manual_seed(0)
    return {name: create_model(model, **overrides) for name, (model, overrides) in attention_family().items()}


def section_attention(args: argparse.Namespace) -> dict:
    from seresnet import count_params

    models = attention_models()
    macs = {n: count_macs(m, 32) for n, m in models.items()}
    params = {n: count_params(m) for n, m in models.items()}
    train = Setting(bf16=True, channels_last=True, threads=args.threads)
    groups = [group_record(models, "train", args.cifar_train_batch, 32, train, args.repeats, 10, macs,
                           args.min_call_s),
              group_record(models, "infer", args.cifar_infer_batch, 32, Setting(threads=args.threads), args.repeats,
                           10, macs, args.min_call_s)]
    return {"macs": macs, "params": params, "groups": groups}


def section_widgets(args: argparse.Namespace) -> dict:
    from benchmarks.bench_widgets import widget_timings

    torch.set_num_threads(min(2, args.threads))  # what a laptop or the 2-core CI machine gives a notebook
    log("  widgets: channel explorer precompute and view changes, steering explorer new edits (shipped se_resnet20)")
    r = widget_timings()
    log(f"    channel explorer: precompute {r['channel_explorer']['precompute_s']:.1f} s, view change "
        f"{r['channel_explorer']['view_change_ms']:.0f} ms; steering: worst new edit "
        f"{r['steering_explorer']['worst_median_new_edit_ms']:.0f} ms")
    return r


RUNNERS = {"machine": section_machine, "widgets": section_widgets, "attention": section_attention,
           "cifar": section_cifar, "imagenet": section_imagenet,
           "settings": section_settings, "hooks": section_hooks, "compile": section_compile}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    p.add_argument("--skip", nargs="+", choices=SECTIONS, default=[], help="do not run these sections")
    p.add_argument("--quick", action="store_true", help="few repeats and small sizes: checks that everything runs")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="intra-op threads for the main comparisons (default: all cores)")
    p.add_argument("--repeats", type=int, default=11, help="interleaved rounds for the CIFAR groups")
    p.add_argument("--imagenet-repeats", type=int, default=7)
    p.add_argument("--max-minutes", type=float, default=25,
                   help="skip the sections not yet started once the run has taken this long")
    p.add_argument("--compile-budget-s", type=float, default=1200,
                   help="compile section: stop compiling further models once this many seconds are spent")
    p.add_argument("--cifar-train-batch", type=int, default=128)
    p.add_argument("--cifar-infer-batch", type=int, default=256)
    p.add_argument("--imagenet-batch", type=int, default=16)
    p.add_argument("--imagenet-size", type=int, default=128)
    p.add_argument("--hooks-batch", type=int, default=256)
    p.add_argument("--hooks-repeats", type=int, default=15)
    p.add_argument("--min-call-s", type=float, default=0.05, help="shortest timed sample (seconds)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON files and the plot")
    p.add_argument("--no-report", action="store_true", help="do not rewrite BENCHMARKS.md and the plot")
    args = p.parse_args(argv)
    # checked before anything runs or is written: a bad value used to fail a section after old results were removed
    for name in ("threads", "repeats", "imagenet_repeats", "cifar_train_batch", "cifar_infer_batch",
                 "imagenet_batch", "imagenet_size", "hooks_batch", "hooks_repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    for name in ("max_minutes", "compile_budget_s", "min_call_s"):
        if not getattr(args, name) >= 0:
            p.error(f"--{name.replace('_', '-')} must be a number >= 0, got {getattr(args, name)}")
    if args.out.exists() and not args.out.is_dir():
        p.error(f"--out {args.out} is a file; expected a folder for the JSON files")
    if args.quick:
        args.repeats, args.imagenet_repeats, args.hooks_repeats = 3, 2, 3
        args.imagenet_size, args.cifar_train_batch, args.cifar_infer_batch = 64, 32, 64
        args.hooks_batch, args.imagenet_batch, args.min_call_s = 64, 4, 0.0
        if args.out == RESULTS:  # a smoke run must not overwrite the real results
            args.out = Path(tempfile.gettempdir()) / "seresnet-benchmarks-quick"
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the sections; 0 when all of them ran, 1 when one failed (its old results are kept)."""
    args = parse_args(argv)
    sections = [s for s in (args.only or SECTIONS) if s not in args.skip]
    # A full run replaces the whole set of results, so that an earlier run's sections cannot mix into its report,
    # but only once it has finished without a failed section: until then it writes into a staging folder.
    args.out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".incoming-", dir=args.out)) if not args.only else args.out
    run = {"command": " ".join(["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]),
           "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "load_before": load_average(), "busy_before": busy_processes(), "sections": list(sections),
           "quick": args.quick, "threads": args.threads, "machine": machine_summary()}
    log(f"load before: {run['load_before']}")
    t0 = time.perf_counter()
    run["skipped"], run["failed"] = [], {}
    for name in sections:
        if time.perf_counter() - t0 > 60 * args.max_minutes:
            log(f"section {name} skipped: the run already took more than --max-minutes {args.max_minutes}")
            run["skipped"].append(name)
            continue
        log(f"section {name}")
        ts = time.perf_counter()
        try:
            data = RUNNERS[name](args)
        except Exception as e:  # keep the other sections' results
            log(f"section {name} failed: {type(e).__name__}: {e}")
            run["failed"][name] = f"{type(e).__name__}: {e}"
            continue
        data["seconds"] = time.perf_counter() - ts
        # folders as names only: the results are committed and read on other machines
        data["args"] = {k: (v.name if isinstance(v, Path) else v) for k, v in vars(args).items()}
        save(name, data, stage)
    run.update(finished_utc=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               seconds=time.perf_counter() - t0, load_after=load_average(), busy_after=busy_processes())
    log(f"load after: {run['load_after']}, {run['seconds']:.0f} s")
    failed = sorted(run["failed"])
    if failed and not args.only:
        save("run", run, stage)
        log(f"sections {failed} failed: the results in {args.out} are unchanged; this run's are in {stage}")
        return 1
    if not args.only:
        for name in (*SECTIONS, "run"):  # only this tool's own files: --out may be a folder that holds others
            (args.out / f"{name}.json").unlink(missing_ok=True)
        for f in stage.glob("*.json"):
            f.replace(args.out / f.name)
        stage.rmdir()
    elif (args.out / "run.json").exists():
        # a partial rerun: keep the description of the full run and note what was redone
        full = json.loads((args.out / "run.json").read_text())
        full.setdefault("reruns", []).append(run)
        run = full
    save("run", run, args.out)
    if not args.no_report:
        report.main(["--results", str(args.out)])
    if failed:
        log(f"sections {failed} failed; their earlier results in {args.out} are kept")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
