"""Build ``BENCHMARKS.md`` and ``benchmarks/results/benchmarks.png`` from the JSON files of ``run_all``.

``python -m benchmarks.report [--results benchmarks/results] [--md BENCHMARKS.md]`` rebuilds both without timing
anything. Every number in the report comes from the JSON files; the prose around them is in this file.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
PLOT_NAME = "benchmarks.png"

# SE overhead reported by the paper (Hu et al., section 4 / Table 2 discussion): CPU inference of one 224x224
# image 164 ms -> 167 ms; one forward+backward of a 256-image batch on 8 GPUs 190 ms -> 209 ms.
PAPER = {"infer_cpu": 167 / 164 - 1, "train_gpu": 209 / 190 - 1}
TARGETS = {"peer": 1.0, "reference": 1.2, "se_overhead_train": 0.10, "capture": 0.05}


def load(results: Path) -> dict[str, dict]:
    out = {}
    for f in sorted(results.glob("*.json")):
        try:
            out[f.stem] = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
    return out


# --- derived numbers -----------------------------------------------------------------------------------------
def paired_ratio(group: dict, a: str, b: str) -> float:
    """Median over the rounds of time(b) / time(a): each ratio compares two calls made seconds apart, under the
    same load, so bursts of load from other processes cancel out better than in a ratio of medians."""
    ra, rb = group["results"][a]["times_s"], group["results"][b]["times_s"]
    return statistics.median(y / x for x, y in zip(ra, rb))


def speedup(group: dict, ours: str, theirs: str) -> float:
    """How many times faster ``ours`` is than ``theirs`` in one interleaved group (median of per-round ratios)."""
    return paired_ratio(group, ours, theirs)


def overhead(group: dict, se: str, plain: str) -> float:
    """Extra time of the SE network: median over rounds of time(se) / time(plain), minus 1."""
    return paired_ratio(group, plain, se) - 1


def paired_spread(group: dict, a: str, b: str) -> tuple[float, float]:
    """25th / 75th percentile of the per-round ratios time(b) / time(a) (how stable the ratio was)."""
    ra, rb = group["results"][a]["times_s"], group["results"][b]["times_s"]
    ratios = sorted(y / x for x, y in zip(ra, rb))
    if len(ratios) < 2:
        return ratios[0], ratios[0]
    q = statistics.quantiles(ratios, n=4)
    return q[0], q[2]


def peak_for(setting: dict, machine: dict | None) -> tuple[float, str] | None:
    """Peak FLOP/s available to ``setting``: the AMX peak for bf16, AVX-512 for fp32, scaled to the cores used."""
    if not machine:
        return None
    peaks = machine["peak"]["peak_flops"]
    share = min(setting.get("threads", machine["peak"]["cores"]), machine["peak"]["cores"]) / machine["peak"]["cores"]
    if (setting["bf16"] or setting.get("bf16_weights")) and "bf16_amx" in peaks:
        return share * peaks["bf16_amx"], "bf16_amx"
    return share * peaks["fp32_avx512"], "fp32_avx512"


def best_group(groups: list[dict], mode: str, name: str, batch: int | None = None) -> dict | None:
    """The group of ``mode`` in which ``name`` ran fastest (its best setting)."""
    cand = [g for g in groups if g["mode"] == mode and name in g["results"] and (batch is None or g["batch"] == batch)]
    return min(cand, key=lambda g: g["results"][name]["median_s"]) if cand else None


# --- markdown ------------------------------------------------------------------------------------------------
def fmt_ratio(x: float) -> str:
    return f"{x:.2f}x"


def fmt_pct(x: float) -> str:
    return f"{100 * x:+.1f}%"


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def group_title(g: dict) -> str:
    mode = {"train": "training step", "infer": "inference", "latency": "latency"}[g["mode"]]
    return f"{mode}, batch {g['batch']} at {g['size']}x{g['size']}, {g['setting']['name']}"


def group_table(g: dict, machine: dict | None) -> str:
    pk = peak_for(g["setting"], machine)
    rows = []
    for n, r in g["results"].items():
        frac = f"{100 * r['flops'] / pk[0]:.1f}%" if pk else "n/a"
        rows.append([n, f"{1e3 * r['median_s']:.1f}", f"{1e3 * r['q25_s']:.1f} to {1e3 * r['q75_s']:.1f}",
                     f"{r['items_per_s']:.1f}", f"{r['flops'] / 1e9:.1f}", frac])
    head = ["network", "median ms per call", "quartiles ms", "images/s", "GFLOP/s",
            f"of peak ({pk[1]})" if pk else "of peak"]
    return table(head, rows)


def short(setting_name: str) -> str:
    """Setting name without the thread suffix of the main comparisons (``bf16+CL+2t`` -> ``bf16+CL``)."""
    return setting_name.rsplit("+", 1)[0] if setting_name.endswith("t") else setting_name


def peer_verdict(ratio: float, lo: float, hi: float, target: float) -> str:
    """``met`` when the ratio of medians reaches the target, ``parity`` when the per-round ratios straddle it."""
    if ratio >= target:
        return "met"
    return "parity within noise" if lo <= target <= hi else "**not met**"


def summary(data: dict) -> tuple[dict[str, list[list[str]]], dict]:
    """The headline tables (name -> rows) and the numbers the plot needs."""
    tabs: dict[str, list[list[str]]] = {"peers": [], "overhead": [], "best": [], "peak": [], "capture": []}
    plot: dict = {"peers": [], "overhead": [], "peak": [], "capture": []}
    im, ci, hk, mc, cp = (data.get(k) for k in ("imagenet", "cifar", "hooks", "machine", "compile"))
    pairs = []
    if im:
        pairs += [(g, o, t) for g in im["groups"] for o, t in (("se_resnet50", "timm_seresnet50"),
                                                               ("resnet50", "torchvision_resnet50"))]
    if ci:
        pairs += [(g, "se_resnet20", "reference_se_resnet20") for g in ci["groups"]]
    for g, ours, theirs in pairs:
        s = speedup(g, ours, theirs)
        lo, hi = paired_spread(g, ours, theirs)
        target = TARGETS["reference"] if theirs.startswith("reference") else TARGETS["peer"]
        tabs["peers"].append([ours, theirs.replace("reference_", "tutorial "), g["mode"], f"{g['batch']} x {g['size']}",
                              short(g["setting"]["name"]), fmt_ratio(s), f"{lo:.2f} to {hi:.2f}",
                              f">= {target:.1f}", peer_verdict(s, lo, hi, target)])
        plot["peers"].append((f"{ours} vs {theirs.split('_')[0]}, {g['mode']}, {short(g['setting']['name'])}", s,
                              peer_verdict(s, lo, hi, 1.0)))
    for sec, se, plain in ((ci, "se_resnet20", "resnet20"), (im, "se_resnet50", "resnet50")):
        if not sec:
            continue
        for g in sec["groups"]:
            o = overhead(g, se, plain)
            lo, hi = paired_spread(g, plain, se)
            target = "<= 10% (in the best setting)" if g["mode"] == "train" else "paper: +1.8% (CPU, 1 image)"
            tabs["overhead"].append([f"{se} / {plain}", g["mode"], f"{g['batch']} x {g['size']}",
                                     short(g["setting"]["name"]), fmt_pct(o), f"{fmt_pct(lo - 1)} to {fmt_pct(hi - 1)}",
                                     target])
            plot["overhead"].append((f"{se} / {plain}, {g['mode']}, {short(g['setting']['name'])}", o))
        g_se, g_pl = best_group(sec["groups"], "train", se), best_group(sec["groups"], "train", plain)
        if g_se and g_pl:
            o = (overhead(g_se, se, plain) if g_se is g_pl
                 else g_se["results"][se]["median_s"] / g_pl["results"][plain]["median_s"] - 1)
            tabs["best"].append([f"SE overhead in training, {se} ({short(g_se['setting']['name'])}) / {plain} "
                                 f"({short(g_pl['setting']['name'])}), each in its fastest eager setting",
                                 "<= 10%", fmt_pct(o), verdict(o <= TARGETS["se_overhead_train"])])
    if ci:
        for mode in ("train", "infer"):
            ours, ref = best_group(ci["groups"], mode, "se_resnet20"), best_group(ci["groups"], mode,
                                                                                  "reference_se_resnet20")
            if ours and ref:
                s = (speedup(ours, "se_resnet20", "reference_se_resnet20") if ours is ref else
                     ref["results"]["reference_se_resnet20"]["median_s"] / ours["results"]["se_resnet20"]["median_s"])
                tabs["best"].append([f"se_resnet20 ({short(ours['setting']['name'])}) vs tutorial SE-ResNet-20 "
                                     f"({short(ref['setting']['name'])}), {mode}, each in its fastest eager setting",
                                     ">= 1.20x", fmt_ratio(s), verdict(s >= TARGETS["reference"])])
    for g in cp["groups"] if cp else []:
        r = g["results"]

        def best(n: str, r: dict = r) -> str:
            """The faster of the eager and the compiled variant of network ``n`` ("" if absent)."""
            c = [(r[k]["median_s"], k) for k in (n, f"{n}+compile") if k in r]
            return min(c)[1] if c else ""

        se, plain = ("se_resnet20", "resnet20") if g["size"] <= 32 else ("se_resnet50", "resnet50")
        other = "reference_se_resnet20" if g["size"] <= 32 else "timm_seresnet50"
        other_label = "tutorial SE-ResNet-20" if g["size"] <= 32 else "timm seresnet50"
        goal = TARGETS["reference"] if g["size"] <= 32 else TARGETS["peer"]
        k_se, k_ref, k_pl = best(se), best(other), best(plain)
        if k_se and k_ref:
            s = paired_ratio(g, k_se, k_ref)
            lo, hi = paired_spread(g, k_se, k_ref)
            tabs["best"].append([f"{se} vs {other_label}, training, each in its best setting including "
                                 f"torch.compile (ours: {k_se}, other: {k_ref}; one group; rounds {lo:.2f} to "
                                 f"{hi:.2f})", f">= {goal:.2f}x", fmt_ratio(s), peer_verdict(s, lo, hi, goal)])
            if f"{se}+compile" in r and f"{other}+compile" in r:
                s2 = speedup(g, f"{se}+compile", f"{other}+compile")
                lo, hi = paired_spread(g, f"{se}+compile", f"{other}+compile")
                plot["peers"].append((f"{se} vs {other.split('_')[0]}, train, bf16+CL+compile", s2,
                                      peer_verdict(s2, lo, hi, 1.0)))
        if k_se and k_pl:
            o = paired_ratio(g, k_pl, k_se) - 1
            tabs["best"].append([f"SE overhead in training, {se} / {plain}, each in its best setting including "
                                 f"torch.compile (SE: {k_se}, plain: {k_pl}; one group)", "<= 10%", fmt_pct(o),
                                 verdict(o <= TARGETS["se_overhead_train"])])
            if f"{se}+compile" in r and f"{plain}+compile" in r:
                o2 = overhead(g, f"{se}+compile", f"{plain}+compile")
                plot["overhead"].append((f"{se} / {plain}, train, bf16+CL+compile", o2))
    if hk:
        for t, r in hk["by_threads"].items():
            c, cf = r["capture_ratio"] - 1, r["capture_features_ratio"] - 1
            tabs["capture"].append([t, f"{r['plain_ms']:.1f}", f"{r['capture_ms']:.1f}", fmt_pct(c), "<= 5%",
                                    verdict(c <= TARGETS["capture"]), f"{r['capture_features_ms']:.1f}", fmt_pct(cf)])
            plot["capture"].append((t, c, cf))
    if mc:
        for sec, names in ((ci, ("se_resnet20", "resnet20", "reference_se_resnet20")),
                           (im, ("se_resnet50", "resnet50", "timm_seresnet50", "torchvision_resnet50"))):
            if not sec:
                continue
            for n in names:
                for mode in ("train", "infer", "latency"):
                    cand = [g for g in sec["groups"] if g["mode"] == mode and n in g["results"]]
                    if not cand:
                        continue
                    for i, g in enumerate(sorted(cand, key=lambda g: -g["results"][n]["items_per_s"])):
                        r = g["results"][n]
                        pk, which = peak_for(g["setting"], mc)
                        fastest = i == 0
                        tabs["peak"].append([n, mode, f"{g['batch']} x {g['size']}", short(g["setting"]["name"]),
                                             f"{r['items_per_s']:.0f}", f"{r['flops'] / 1e9:.1f}",
                                             f"{100 * r['flops'] / pk:.1f}% of {pk / 1e9:.0f} ({which})"])
                        if fastest:
                            plot["peak"].append((f"{n}, {mode}, {short(g['setting']['name'])}", r["flops"] / pk))
    return tabs, plot


def make_plot(plot: dict, data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(15, 11))
    ax = axes[0, 0]
    if plot["peers"]:
        labels, vals, verdicts = zip(*plot["peers"])
        colors = ["tab:green" if v == "met" else "tab:gray" if v.startswith("parity") else "tab:red"
                  for v in verdicts]
        ax.barh(range(len(vals)), vals, color=colors)
        ax.set_yticks(range(len(vals)), labels, fontsize=7)
        ax.axvline(1.0, color="k", lw=1)
        ax.axvline(1.2, color="gray", ls="--", lw=1)
        for i, v in enumerate(vals):
            ax.text(v, i, f" {v:.2f}", va="center", fontsize=7)
        ax.invert_yaxis()
    ax.set_xlabel("speed-up of ours (median of per-round time peer / ours); green > 1, gray: parity within "
                  "noise, red < 1")
    ax.set_title("Ours vs timm / torchvision / tutorial SE-ResNet-20 (same run, same weights)")

    ax = axes[0, 1]
    if plot["overhead"]:
        labels, vals = zip(*plot["overhead"])
        ax.barh(range(len(vals)), [100 * v for v in vals], color="tab:blue")
        ax.set_yticks(range(len(vals)), labels, fontsize=7)
        ax.axvline(10, color="tab:red", ls="--", lw=1, label="target: training <= 10%")
        ax.axvline(100 * PAPER["infer_cpu"], color="tab:gray", ls=":", lw=1, label="paper, CPU inference +1.8%")
        for i, v in enumerate(vals):
            ax.text(100 * v, i, f" {100 * v:+.1f}%", va="center", fontsize=7)
        ax.invert_yaxis()
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    ax.set_xlabel("extra time of the SE network over the plain ResNet (%)")
    ax.set_title("SE overhead (same run, interleaved)")

    ax = axes[1, 0]
    st = data.get("settings")
    if st:
        names = list(st["layout"])
        vals = [st["layout"][n]["items_per_s"] for n in names]
        ax.barh(range(len(vals)), vals, color="tab:purple")
        ax.set_yticks(range(len(vals)), names, fontsize=8)
        for i, v in enumerate(vals):
            ax.text(v, i, f" {v:.0f}", va="center", fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(f"se_resnet20 training images/s (batch {st['batch_for_layout']}, 32x32)")
        title = "Settings explored (one interleaved run)"
        one = max((r["items_per_s"] for n, r in st["layout"].items() if n.endswith("+1t")), default=0)
        two = max((r["items_per_s"] for n, r in st["layout"].items() if n.endswith("+2t")), default=0)
        if two and two < one:
            title += "\n2-thread runs stalled: another process held the second core"
        ax.set_title(title)

    ax = axes[1, 1]
    if plot["peak"]:
        labels, vals = zip(*plot["peak"])
        ax.barh(range(len(vals)), [100 * v for v in vals], color="tab:orange")
        ax.set_yticks(range(len(vals)), labels, fontsize=7)
        for i, v in enumerate(vals):
            ax.text(100 * v, i, f" {100 * v:.1f}%", va="center", fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
    mc = data.get("machine")
    if mc:
        tkey = f"{data.get('run', {}).get('threads', 0)}t"
        tkey = tkey if tkey in mc["matmul"] else f"{max(int(t[:-1]) for t in mc['matmul'])}t"
        mms = mc["matmul"][tkey]
        for k, style in (("fp32", "--"), ("bf16", ":"), ("fp32_conv", "-."), ("bf16_conv", "-")):
            if k not in mms:
                continue
            mm = mms[k]
            pk = mc["peak"]["peak_flops"]["fp32_avx512" if k.startswith("fp32") else "bf16_amx"]
            pk *= min(int(tkey[:-1]), mc["peak"]["cores"]) / mc["peak"]["cores"]
            what = "3x3 conv" if k.endswith("conv") else "matrix product"
            ax.axvline(100 * mm["best_flops"] / pk, color="k", ls=style, lw=1,
                       label=f"{k.split('_')[0]} large {what}: {100 * mm['best_flops'] / pk:.0f}%")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    ax.set_xlim(0.1, 100)
    ax.set_xlabel("achieved FLOP/s, % of peak (fp32: AVX-512 FMA, bf16: AMX; log scale)")
    ax.set_title("How close to the machine's limit (best setting per network)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(data: dict, plot_rel: str) -> str:
    run, mc = data.get("run", {}), data.get("machine")
    tabs, _ = summary(data)
    out = ["# Benchmarks", "",
           "Generated by `python -m benchmarks` (the same as `python benchmarks/run_all.py`) from the JSON files in "
           "`benchmarks/results/`; `python -m benchmarks.report` rebuilds this file and the plot from them. "
           "Do not edit by hand: change `benchmarks/report.py`.", ""]
    out += ["## The run", ""]
    if run:
        out += [f"- Command: `{run.get('command', 'python -m benchmarks')}`",
                f"- Started {run.get('started_utc')}, finished {run.get('finished_utc')} "
                f"({run.get('seconds', 0) / 60:.1f} minutes); sections: {', '.join(run.get('sections', []))}.",
                f"- Load averages (1, 5, 15 min, as `uptime` prints them) before: {run.get('load_before')}, "
                f"after: {run.get('load_after')}. This machine is shared; see below for other processes.",
                ]
        if mc and run.get("threads", 0) < mc["info"]["logical_cpus"]:
            out.append(f"- The main comparisons used {run['threads']} thread(s) on this "
                       f"{mc['info']['logical_cpus']}-core machine on purpose: it is shared, and while another "
                       "process runs on one core, every OpenMP barrier of a 2-thread run waits for the descheduled "
                       "thread, so 2-thread timings swing by factors (see the 2-thread rows of the settings, capture "
                       "and ceiling tables, measured in the same run), while 1-thread timings stay stable. Peak "
                       "fractions are taken against the peak of the cores used.")
        for label, key in (("before", "busy_before"), ("after", "busy_after")):
            others = [p for p in run.get(key, []) if "-m benchmarks" not in p]  # older runs listed themselves
            if others:
                out.append(f"- Other processes using CPU {label} the run: " + "; ".join(f"`{p}`" for p in others))
        rerun_lines, later = [], set()
        for rr in reversed(run.get("reruns", [])):  # a section's numbers come from the last run that ran it
            sections = rr.get("sections", [])
            current = [sec for sec in sections if sec not in later]
            later |= set(sections)
            source = (f"the {', '.join(current)} numbers come from this rerun" if current
                      else "all of its sections were run again later")
            rerun_lines.append(f"- Rerun afterwards: `{rr.get('command')}` ({', '.join(sections)}), started "
                               f"{rr.get('started_utc')}" + (f" on {rr['machine']}" if rr.get("machine") else "")
                               + f", load before {rr.get('load_before')}, after "
                               f"{rr.get('load_after')}; {source}.")
        out += reversed(rerun_lines)
        if run.get("skipped"):
            out.append(f"- Sections skipped (time limit): {', '.join(run['skipped'])}.")
        if run.get("failed"):
            out.append("- Sections that failed: " + "; ".join(f"{k}: {v}" for k, v in run["failed"].items()))
        if run.get("quick"):
            out.append("- **This was a `--quick` smoke run: few repeats and small sizes; not for quoting.**")
    if mc:
        i = mc["info"]
        out += [f"- Machine: {i['cpu_model']} (family/model {i['cpu_family_model']}), {i['logical_cpus']} logical "
                f"CPUs (1 thread per core), {i['cpu_mhz']:.0f} MHz reported, KVM guest: {i['hypervisor']}; ISA "
                f"flags: {', '.join(i['isa_flags'])}; PyTorch CPU capability {i['torch_cpu_capability']}.",
                "- Software: " + ", ".join(f"{k} {v}" for k, v in i["versions"].items()) + ".",
                "- No GPU was available to this run, so there is no GPU table (the paper's +10% training overhead "
                "is a GPU figure; everything here is CPU)."]
    out += ["", "## Headline numbers against the targets", "",
            "Speed-ups are time of the other network / time of ours (> 1: ours faster), taken round by round inside "
            "one interleaved group in which the networks ran round-robin under the same load, and the median over "
            "the rounds is shown; *rounds* gives the 25th to 75th percentile of those per-round ratios, i.e. how "
            "stable the ratio was (the verdict says *parity within noise* when that range contains the target). SE "
            "overhead is the same median ratio SE network / plain one, minus 1. Comparisons of two different "
            "settings (\"each in its fastest setting\") divide the medians of two groups. Settings: `fp32` = "
            "float32 NCHW eager, `bf16+CL` = bfloat16 autocast + channels_last eager, `bf16w+CL` = (inference only) "
            "model and input converted to bfloat16, channels_last, no autocast; all with the run's thread count "
            f"({run.get('threads', '?')}).", "",
            table(["target", "goal", "measured", "verdict"], tabs["best"]), "",
            "### Ours against the implementations people use (same weights, same run)", "",
            table(["ours", "other", "mode", "batch x size", "setting", "speed-up", "rounds", "goal", "verdict"],
                  tabs["peers"]), "",
            "### SE overhead (SE network / plain ResNet, same run)", "",
            table(["networks", "mode", "batch x size", "setting", "overhead", "rounds", "reference"], tabs["overhead"]),
            "", "### Capture of every SE block during inference", "",
            table(["threads", "plain ms", "capture ms", "overhead", "goal", "verdict", "with feature maps ms",
                   "overhead"], tabs["capture"]), "",
            "### How close to the machine's limit", "",
            table(["network", "mode", "batch x size", "setting", "images/s", "GFLOP/s", "of peak GFLOP/s"],
                  tabs["peak"]), "", f"![benchmarks]({plot_rel})", ""]
    if mc:
        p = mc["peak"]
        out += ["## The machine's limit", "",
                "Peak FLOP/s = cores x clock x FLOP per cycle per core. FLOP per cycle per core on this "
                "Sapphire Rapids-class Xeon (flags amx_bf16, amx_tile, avx512_bf16, avx512_fp16):", "",
                "- fp32 with AVX-512: 16 fp32 lanes x 2 FLOP per fused multiply-add x 2 FMA units = 64;",
                "- bf16 with AVX512_BF16 (`vdpbf16ps`): 32 bf16 products summed in pairs into 16 fp32 lanes = 64 "
                "FLOP per instruction x 2 units = 128;",
                "- bf16 with AMX (`tdpbf16ps`, what oneDNN uses for bf16 convolutions here, checked with "
                "`ONEDNN_VERBOSE=1`: `brg_conv_fwd:avx10_1_512_amx`): a 16x32 by 32x16 tile product is "
                "16 x 16 x 32 = 8192 multiply-adds = 16384 FLOP every 16 cycles = 1024.", ""]
        out += [f"- {k}: {v}" for k, v in p["derivation"].items()]
        if p.get("measured_clock"):
            mcl = p["measured_clock"]
            clock = (f"the clock is {p['ghz']:.2f} GHz, measured during the run by timing chains of dependent "
                     f"instructions of known latency in a small C program (`benchmarks/common.py`, "
                     f"`measure_clock_ghz`: register adds {mcl['add_chain_ghz']:.2f} GHz, imul "
                     f"{mcl['imul_chain_ghz']:.2f} GHz; the larger is used); /proc/cpuinfo reports only the nominal "
                     f"{p.get('nominal_ghz', 0):.2f} GHz, which the 1-thread fp32 matrix product below beats, so the "
                     "core clearly runs in turbo. Both cores are assumed to run at that clock, and AVX-512 and AMX "
                     "code may run slower than scalar code, so the peaks are upper bounds")
        else:
            clock = (f"the clock is the {p['ghz']:.2f} GHz the kernel reports in /proc/cpuinfo (the guest cannot see "
                     "turbo; a higher real clock would raise every peak and lower every fraction below)")
        out += ["", f"Assumptions: {clock}; each of the 2 vCPUs is a whole core with two AVX-512 FMA units (the "
                "1-thread fp32 matrix product reaches more than the 32 FLOP per cycle one unit could do), and the "
                "host's other hyperthread on that core (if any) is idle. Achieved FLOP/s = 2 x multiply-adds per image "
                "(`seresnet.count_macs`, i.e. `FlopCounterMode`, at the benchmark's input size) x images/s, and x 3 "
                "for a training step (forward, gradient of the activations, gradient of the weights). bf16 "
                "settings are compared with the AMX peak, fp32 settings with the AVX-512 fp32 peak, both scaled to "
                "the cores the setting uses (a 1-thread run is compared with one core's peak).", ""]
        rows = []
        for t, mm in mc["matmul"].items():
            for k, v in mm.items():
                pk = p["peak_flops"]["fp32_avx512" if k.startswith("fp32") else "bf16_amx"]
                pk *= min(int(t[:-1]), p["cores"]) / p["cores"]
                rows.append([f"{k.split('_')[0]} {v.get('what', 'matrix product')}, {t}", f"{v['flops'] / 1e9:.0f}",
                             f"{100 * v['flops'] / pk:.0f}%", f"{v['best_flops'] / 1e9:.0f}",
                             f"{100 * v['best_flops'] / pk:.0f}%"])
        out += ["What the friendliest workloads (a large matrix product, a large 3x3 convolution) reach on this "
                "machine during the run, as a practical ceiling:", "",
                table(["workload", "GFLOP/s (median)", "of peak", "GFLOP/s (best call)", "of peak"], rows), ""]
    for sec, title, text in (
            ("imagenet", "ImageNet-size networks: ours vs timm and torchvision",
             "Ours carry the peers' weights (converted with `seresnet.convert.from_timm` / `from_torchvision`, "
             "which are exact), so each pair computes the same function. Training: forward + backward + SGD "
             "(momentum 0.9, weight decay) on a fixed random batch; inference: eval mode under "
             "`torch.inference_mode`; latency: one 224x224 image. The four networks of a table ran round-robin."),
            ("cifar", "CIFAR-size networks: se_resnet20, resnet20 and a tutorial-style SE-ResNet-20",
             "The reference (`benchmarks/reference.py`) is SE-ResNet-20 written as tutorials do: "
             "`AdaptiveAvgPool2d(1)`, `Linear`, `ReLU`, `Linear`, `Sigmoid`, `x * y.expand_as(x)`, `out += "
             "residual`; it has the same 274,847 weights and gets ours copied in (same outputs). Training batch "
             "and inference batch as in the headings, 32x32 inputs.")):
        if sec in data:
            out += [f"## {title}", "", text, ""]
            for g in data[sec]["groups"]:
                out += [f"**{group_title(g)}** ({g['repeats']} interleaved rounds, load {g.get('load')})", "",
                        group_table(g, mc), ""]
    st = data.get("settings")
    if st:
        out += ["## Settings explored", "",
                f"se_resnet20 training step, batch {st['batch_for_layout']} at 32x32, every setting in one "
                "interleaved group (threads are switched with `torch.set_num_threads` before each call). "
                "`compile` is `torch.compile` (inductor) of the model; the optimizer step stays eager.", ""]
        base_name = next(iter(st["layout"]))
        base = st["layout"][base_name]["items_per_s"]
        rows = [[n, f"{1e3 * r['median_s']:.1f}", f"{r['items_per_s']:.0f}", f"{r['items_per_s'] / base:.2f}x"]
                for n, r in st["layout"].items()]
        out += [table(["setting", "median ms per step", "images/s", f"vs {base_name}"], rows), ""]
        out += [f"Batch size ({st['batch_setting']['name']}), images/s per batch size, one interleaved group:", ""]
        out += [table(["batch", "median ms per step", "images/s"],
                      [[n, f"{1e3 * r['median_s']:.1f}", f"{r['items_per_s']:.0f}"]
                       for n, r in st["batch_size"].items()]), ""]
        out += ["The SE implementation of this package (`se_resnet20`: the fused training path `_FusedSE`) "
                "against the same block run module by module (`SEBlock(fused=False)`) and against the "
                "straightforward squeeze `x.mean((2, 3))` (what the first implementation here used), same weights, "
                "training step:", ""]
        for g in st["se_impl"]:
            parts = [f"{fmt_ratio(speedup(g, 'se_resnet20', other))} as fast as {label}"
                     for other, label in (("se_resnet20_module_by_module", "module by module"),
                                          ("se_resnet20_mean_squeeze", "with `x.mean`"))
                     if other in g["results"]]
            out += [f"**{group_title(g)}**: ours {', '.join(parts)}", "", group_table(g, mc), ""]
    cp = data.get("compile")
    if cp:
        threads = cp["groups"][0]["setting"]["threads"] if cp["groups"] else "?"
        out += ["## torch.compile", "",
                f"Training steps, bf16 + channels_last, {threads} thread(s), eager and `torch.compile(model)` "
                "(inductor, default mode; the SGD step stays eager), "
                "one interleaved group per network size. `se_resnet20_module_by_module` is se_resnet20 with "
                "`SEBlock(fused=False)`: compiled, it runs bn -> squeeze -> excitation -> scale as written, without "
                "the compiled path that takes the squeeze from the BN's statistics (`seresnet.se.batchnorm_then_se`)"
                ", so the two show what that path buys. Compile time (first two calls) on this machine: "
                + ", ".join(f"{n} {t:.0f} s" for n, t in cp["compile_s"].items())
                + (f"; not compiled for lack of time: {', '.join(cp['skipped'])}" if cp.get("skipped") else "")
                + ". Times of a few seconds mean inductor found the kernels in its on-disk cache from an earlier "
                "run on this machine. Compiling pays off only for runs much longer than that.", ""]
        for g in cp["groups"]:
            r = g["results"]
            extra = ""
            if "se_resnet20+compile" in r and "se_resnet20_module_by_module+compile" in r:
                extra = (": with the squeeze from the BN statistics, compiled se_resnet20 runs at "
                         f"{fmt_ratio(speedup(g, 'se_resnet20+compile', 'se_resnet20_module_by_module+compile'))} "
                         "the speed of the compiled module-by-module block")
            out += [f"**{group_title(g)}**{extra}", "", group_table(g, mc), ""]
    hk = data.get("hooks")
    if hk:
        rows = [[t, f"{r['plain_ms']:.1f}", f"{r['capture_ms']:.1f}", fmt_pct(r["capture_ratio"] - 1),
                 f"{r['capture_features_ms']:.1f}", fmt_pct(r["capture_features_ratio"] - 1)]
                for t, r in hk["by_threads"].items()]
        out += ["## Capture overhead", "",
                f"`seresnet.hooks.capture` of every SE block of {hk['model']} during inference (batch {hk['batch']}, "
                f"32x32, fp32, eval, `no_grad`), {hk['repeats']} interleaved rounds, medians "
                "(`benchmarks/bench_hooks.py`). The capture copies z and s (and with `features=True` the (N, C, H, W) "
                "maps before and after each block) to float32 CPU tensors.", "",
                table(["threads", "plain ms", "capture ms", "overhead", "with features ms", "overhead"], rows), ""]
    out += attention_section(data.get("attention"))
    out += widgets_section(data.get("widgets"))
    out += ["## Where the SE time goes (profiling notes)", "",
            "From `torch.profiler` runs of one se_resnet20 and one resnet20 training step (batch 128, bf16 + "
            "channels_last, 1 thread), compared op by op; these notes explain the numbers above, they are not "
            "produced by the run:", "",
            "- The straightforward squeeze `x.mean((2, 3))` was the biggest avoidable cost. On a bfloat16 map "
            "`mean` (and `sum(dtype=float32)`) first converts the whole map to float32, about 9x slower than "
            "`sum`, which accumulates in float32 internally anyway; and its backward returns a contiguous (NCHW) "
            "gradient that autograd adds to the channels_last gradient of the scale step through a strided path "
            "about 10x slower than a plain add. `seresnet/se.py` now pools with a small autograd Function "
            "(`_GlobalAvgPool`: `sum` forward, a backward in the input's memory format); the *settings* section "
            "measures it against `x.mean` with the same weights.",
            "- In the module-by-module graph the feature map U receives two gradients, through the scale and "
            "through the squeeze, which autograd materialises and adds: three passes over the largest tensor of "
            "the block. `_FusedSE` runs the block as one autograd node whose backward forms "
            "`dU = dY * s + dz / HW` in one `addcmul` (the excitation still runs as a module inside it, so "
            "capture and steering hooks work unchanged; tests check values and gradients against the module "
            "path). The *settings* section measures it against the module-by-module block.",
            "- What remains is memory traffic: per SE block and training step about ten passes over the feature "
            "map (forward: the sum and the scale; backward: the scale's input gradient, the product and sum for "
            "the gradient of s, and the input gradient), next to roughly thirty to forty for "
            "the convolutions, batch norms, ReLUs and the addition of the residual unit. The convolutions get "
            "much faster in bfloat16 (AMX); these element-wise passes hardly do, so the *relative* SE overhead is "
            "larger with bf16 + channels_last than in fp32, and larger at CIFAR sizes (16 to 64 channels, cheap "
            "convolutions) than for ResNet-50.",
            "- Tried and not kept (no gain beyond the noise here): fusing scale, residual addition and ReLU with "
            "`addcmul` in the forward, re-laying the channels_last maps so that the broadcasting multiply runs "
            "over rows of 256 values instead of C = 16 to 64 (faster only at C = 16), the gradient of s as a "
            "batched matrix product, and the jemalloc / tcmalloc allocators. The residual addition is done in place "
            "(`out += identity`, as torchvision does): no measurable change in training, but it brought se_resnet50's "
            "float32 inference from 0.97x to parity with timm's (which also adds in place).",
            "- `torch.compile` fuses element-wise passes, but compiled as written the SE block still costs a "
            "pass of its own: the squeeze must read the BN's output before the scale can use it. Under "
            "compilation the residual units therefore call `SEBlock.forward_after_batchnorm`, which runs "
            "`batchnorm_then_se`: in training BN is an affine map per channel, so the squeeze of its output is "
            "`(mean_hw(x) - mean) * scale + beta`, and the per-image channel means and variances of the BN's input "
            "`x` are what the batch statistics are made of (law of total variance). One `var_mean` over `x` gives "
            "both; BN and the scale by `s` collapse into one `(x - mean) * a + b`, and the backward that "
            "autograd derives has the same shape. The SE block then adds no pass over the feature map (tests "
            "check values, gradients and running statistics against the module path). In eager mode the "
            "separate ops and the float32 upcast cost more than they save (1.8x slower in a first measurement), "
            "so eager training keeps `_FusedSE`.", ""]
    out += time_to_accuracy()
    out += ["## What the numbers mean", "",
            "- *median ms per call*: median over the interleaved rounds of the time of one call (a training step "
            "or an inference pass over the batch); *quartiles*: 25th and 75th percentile of the same samples.",
            "- *images/s*: batch size / median time.",
            "- *GFLOP/s*: 2 x multiply-adds per image x images/s (x 3 for training); *of peak*: that over the "
            "theoretical peak derived above (AMX for bf16 settings, AVX-512 for fp32).",
            "- Ratios are always taken inside one interleaved group, never across groups: the load on this "
            "machine changes from minute to minute, so absolute numbers from different groups are not comparable, "
            "ratios inside a group are.",
            "- Settings: `fp32` = float32 NCHW eager; `bf16` = `torch.autocast('cpu', torch.bfloat16)`; `bf16w` = "
            "inference with `model.to(torch.bfloat16)` and a bfloat16 input instead of autocast (autocast casts "
            "every weight again on every call); `CL` = channels_last for the model and the input; `compile` = "
            "`torch.compile(model)`; `Nt` = `torch.set_num_threads(N)`.", ""]
    return "\n".join(out) + "\n"


def attention_section(a: dict | None) -> list[str]:
    """The channel-attention family's costs: parameters, multiply-adds, training and inference time."""
    if not a:
        return []
    groups = {g["mode"]: g for g in a["groups"]}
    rows = []
    for name in a["macs"]:
        row = [name, f"{a['params'][name]:,}", f"{a['macs'][name] / 1e6:.2f}"]
        for mode in ("train", "infer"):
            r = groups[mode]["results"]
            row += [f"{r[name]['median_s'] * 1e3:.1f}", fmt_ratio(r[name]["median_s"] / r["resnet20"]["median_s"])]
        rows.append(row)
    tr, inf = groups["train"], groups["infer"]
    below = sorted({name for mode in ("train", "infer") for name, r in groups[mode]["results"].items()
                    if name != "resnet20" and r["median_s"] < groups[mode]["results"]["resnet20"]["median_s"]})
    noise = (f" Every module adds work to the plain network, so a ratio below 1.00x ({', '.join(below)}) shows how "
             "large this run's timing noise is." if below else "")
    return ["## The channel-attention family: what each gate costs", "",
            "Every attention module of `seresnet.attention` in ResNet-20 (`<attention>_resnet20`), beside the plain "
            "and the SE network" + (", and Gather-Excite also with a local gather (`ge_extent=2`; with its default "
                                     "global extent GE computes SE-Var1's gate)" if any("+" in n for n in a["macs"])
                                     else "") + ". Parameters and multiply-adds per 32x32 image from `count_params` / "
            "`count_macs`; "
            f"time of one eager training step (batch {tr['batch']}, {tr['setting']['name']}, as `seresnet.train` "
            f"runs without `--compile`) and one inference pass (batch {inf['batch']}, {inf['setting']['name']}), "
            f"medians of {tr['repeats']} interleaved rounds; *x plain* is the ratio to resnet20 in the same group. "
            "These modules (all but SE) have no fused path: SE's numbers include its fused block "
            "(see *Where the SE time goes*)." + noise, "",
            table(["model", "params", "MMACs", "train ms", "x plain", "infer ms", "x plain"], rows), ""]


def widgets_section(w: dict | None) -> list[str]:
    """What a learner waits for after moving a control (``benchmarks/bench_widgets.py``)."""
    if not w:
        return []
    ch, st = w["channel_explorer"], w["steering_explorer"]
    rows = [[b, f"{r['first_ms']:.0f}", f"{r['median_new_edit_ms']:.0f}"] for b, r in st["per_block"].items()]
    kinds = ", ".join(f"{k} {v:.0f} ms" for k, v in ch["view_change_ms_by_kind"].items())
    return ["## Widgets: what a learner waits for", "",
            f"The notebooks' explorers with the {w['model']} and the shipped sample, {w['threads']} threads, wall "
            "clock (`benchmarks/bench_widgets.py`).", "",
            f"- Channel explorer (notebook 07): one precompute pass over {ch['images']} images "
            f"**{ch['precompute_s']:.1f} s** (target <= 20 s); a view change (block, channel or class) "
            f"**{ch['view_change_ms']:.0f} ms** median of {ch['views']} (target <= 100 ms; by kind: {kinds}). "
            f"View changes never run the model ({ch['model_runs_after_views']} model runs, all in the precompute). "
            "Nearly all of a view change is matplotlib drawing the figure to PNG.",
            f"- Steering explorer (notebook 05), {st['images']} images: a new edit reruns the network from the "
            f"edited block's residual unit on. Median of {st['edits_per_block']} new edits (channels never "
            f"edited before) per block; the worst block takes **{st['worst_median_new_edit_ms']:.0f} ms** (target "
            "<= 300 ms). The first edit of a block also records the input of its residual unit and the block's "
            "feature maps (once per block).", "",
            table(["SE block", "first edit of the block, ms", "median new edit, ms"], rows), ""]


def time_to_accuracy() -> list[str]:
    """The section on the lossless training runs, read from the metadata they wrote
    (``notebooks/results/lossless_*/*.json``: one folder per recipe)."""
    metas = {}
    for folder in sorted((ROOT / "notebooks" / "results").glob("lossless_*")):
        for p in sorted(folder.glob("*.json")):
            m = json.loads(p.read_text())
            if "val" in m.get("evaluations", {}):
                metas[(folder.name, p.stem)] = m
    if not metas:
        return []
    from seresnet.pretrained import available_pretrained, pretrained_metadata

    shipped = {pretrained_metadata(n).get("weights_sha256") for n in available_pretrained()}
    rows = []
    for (folder, name), m in metas.items():
        hist = m["history"]
        if m.get("weights_sha256") in shipped:
            name += " (shipped)"
        t90 = m.get("time_to_90_percent_s")
        ev = m["evaluations"]
        jpeg_p = m.get("recipe", {}).get("jpeg_p") or 0
        rows.append([name, f"`{folder}`", str(m["epochs"]), f"{jpeg_p:g}", f"{m['wall_time_s'] / 60:.0f}",
                     f"{statistics.median(r['images_per_s'] for r in hist):,.0f}",
                     f"{t90 / 60:.0f} (epoch {m['epoch_reaching_90_percent']})" if t90 else "not reached",
                     *[f"{ev[k]['accuracy']:.2%} [{ev[k]['ci95'][0]:.1%}, {ev[k]['ci95'][1]:.1%}]" if k in ev else "-"
                       for k in ("val", "lossless-test-subset", "jpeg-test")]])
    machines = sorted({m["machine"] for m in metas.values()})
    return ["## Time to accuracy: the lossless training runs", "",
            "Read from the metadata of the runs on lossless CIFAR-10 (`notebooks/results/lossless_*/`, one folder per "
            "recipe), which `python -m seresnet.train` and `scripts/export_pretrained.py` wrote. Minutes to 90% are "
            "the wall time from the start of training (compilation included) to the end of the first epoch whose "
            "validation accuracy (bfloat16, 5,000 held-out lossless training images) reached 90%. Accuracies: "
            "float32, measured after training, with 95% Wilson intervals. *JPEG aug.*: the share of training images "
            "re-encoded as JPEG (quality 50-95) in every epoch (`--jpeg-p`). *(shipped)*: the weights shipped in "
            "`seresnet/pretrained/` (same SHA-256).", "",
            *[f"- Machine: {machine}." for machine in machines],
            "- The two runs of a recipe trained at the same time, one thread each, on the 2-core machine while other "
            "work (tests, notebooks) ran beside them: the minutes are those of a shared machine, not of one run "
            "owning both cores; images/s is the median over epochs. The load changed while they ran, so their "
            "images/s do not compare the two networks (the compile section above does).", "",
            table(["model", "recipe folder", "epochs", "JPEG aug.", "minutes", "images/s", "minutes to 90% (val)",
                   "val (5,000)", "lossless test subset (1,017)", "JPEG test (10,000)"], rows), ""]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--md", type=Path, default=None, help="where to write the report (default: BENCHMARKS.md at the "
                   "repository root for the default results folder, else <results>/BENCHMARKS.md)")
    args = p.parse_args(argv)
    data = load(args.results)
    if not data:
        raise SystemExit(f"no results in {args.results}; run python -m benchmarks first")
    md = args.md or (ROOT / "BENCHMARKS.md" if args.results.resolve() == RESULTS else args.results / "BENCHMARKS.md")
    plot_path = args.results / PLOT_NAME
    _, plot = summary(data)
    make_plot(plot, data, plot_path)
    try:
        rel = plot_path.resolve().relative_to(md.resolve().parent).as_posix()
    except ValueError:
        rel = str(plot_path.resolve())
    md.write_text(render(data, rel))
    print(f"wrote {md} and {plot_path}")


if __name__ == "__main__":
    main()
