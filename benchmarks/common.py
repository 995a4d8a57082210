"""Shared pieces of the benchmarks: settings, step builders, interleaved timing, machine description and CPU peak.

Everything here times *calls*: a training step (forward + backward + SGD step with momentum) or an inference pass
(eval mode, ``torch.inference_mode``). Cases that are compared are run round-robin (A, B, C, A, B, C, ...) so that
load from other processes on this shared 2-core machine hits every side alike; results are medians.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

CL = torch.channels_last


# --- settings ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """How a model is run: number format, memory layout, compilation and intra-op threads."""

    bf16: bool = False  # torch.autocast(cpu, bfloat16): convs / linears in bfloat16 (AMX on this CPU)
    channels_last: bool = False  # NHWC activations and weights
    compile: bool = False  # torch.compile (inductor, default mode)
    threads: int = 2
    bf16_weights: bool = False  # inference only: model and input converted to bfloat16, no autocast

    @property
    def name(self) -> str:
        parts = ["bf16w" if self.bf16_weights else "bf16" if self.bf16 else "fp32"]
        if self.channels_last:
            parts.append("CL")
        if self.compile:
            parts.append("compile")
        parts.append(f"{self.threads}t")
        return "+".join(parts)

    def to_dict(self) -> dict:
        return {**asdict(self), "name": self.name}


FP32 = Setting()
BF16_CL = Setting(bf16=True, channels_last=True)
BF16W_CL = Setting(bf16=True, channels_last=True, bf16_weights=True)


def prepare(model: nn.Module, setting: Setting, train: bool) -> nn.Module:
    """Put ``model`` in train / eval mode and the memory layout of ``setting``; compile it if asked."""
    model.train(train)
    if setting.bf16_weights:
        if train:
            raise ValueError("bf16_weights is an inference setting; training uses bf16 autocast with fp32 weights")
        model = model.to(torch.bfloat16)
    if setting.channels_last:
        model = model.to(memory_format=CL)
    if setting.compile:
        model = torch.compile(model)
    return model


def _input(batch: int, size: int, setting: Setting, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=g)
    return x.to(memory_format=CL) if setting.channels_last else x


def train_step(model: nn.Module, batch: int, size: int, setting: Setting, num_classes: int) -> Callable[[], None]:
    """A closure doing one SGD training step (momentum 0.9, weight decay 5e-4) on a fixed random batch.

    Input (batch, 3, size, size), integer labels in [0, num_classes). Weights change every call, as in training.
    """
    m = prepare(model, setting, train=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = _input(batch, size, setting)
    y = torch.randint(0, num_classes, (batch,), generator=torch.Generator().manual_seed(1))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=setting.bf16):
            loss = nn.functional.cross_entropy(m(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def infer_step(model: nn.Module, batch: int, size: int, setting: Setting) -> Callable[[], None]:
    """A closure doing one inference pass (eval mode, ``inference_mode``) on a fixed random batch."""
    m = prepare(model, setting, train=False)
    x = _input(batch, size, setting)
    if setting.bf16_weights:
        x = x.to(torch.bfloat16)

    def step() -> None:
        autocast = setting.bf16 and not setting.bf16_weights
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            m(x)

    return step


# --- timing --------------------------------------------------------------------------------------------------
@dataclass
class Case:
    """One thing to time: ``fn`` does ``items`` images of work per call, under ``threads`` intra-op threads."""

    fn: Callable[[], None]
    items: int
    threads: int = 2


def interleaved(cases: dict[str, Case], repeats: int, warmup: int = 2, min_call_s: float = 0.0,
                log: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Time ``cases`` round-robin: ``warmup`` untimed calls each, then ``repeats`` rounds of one sample per case
    (the order rotates from round to round).

    A sample is the mean time of ``k`` back-to-back calls, with ``k`` chosen once from the warm-up so that a
    sample lasts at least ``min_call_s`` (short calls are otherwise dominated by timer and scheduler noise).
    Returns per case: ``times_s`` (all samples, seconds per call), ``median_s``, ``q25_s``, ``q75_s``,
    ``items_per_s`` (items / median) and ``calls_per_sample``.
    """
    reps: dict[str, int] = {}
    for name, c in cases.items():
        torch.set_num_threads(c.threads)
        t0 = time.perf_counter()
        for _ in range(warmup):
            c.fn()
        per_call = (time.perf_counter() - t0) / max(warmup, 1)
        reps[name] = max(1, int(min_call_s / max(per_call, 1e-6) + 0.999)) if min_call_s else 1
        if log:
            log(f"    warm-up {name}: {per_call * 1e3:.1f} ms/call")
    samples: dict[str, list[float]] = {n: [] for n in cases}
    names = list(cases)
    for r in range(repeats):
        # rotate the order every round so that no case always follows the same other case
        for name in names[r % len(names):] + names[:r % len(names)]:
            c = cases[name]
            torch.set_num_threads(c.threads)
            k = reps[name]
            t0 = time.perf_counter()
            for _ in range(k):
                c.fn()
            samples[name].append((time.perf_counter() - t0) / k)
    out = {}
    for name, ts in samples.items():
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
        med = statistics.median(ts)
        out[name] = {"times_s": ts, "median_s": med, "q25_s": q[0], "q75_s": q[2],
                     "items_per_s": cases[name].items / med, "calls_per_sample": reps[name]}
    return out


# --- machine -------------------------------------------------------------------------------------------------
def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    k, v = line.split(":", 1)
                    info.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    return info


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (what ``uptime`` prints)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])(?:/[^\s/]+)+/([^\s/]+)")


def without_local_paths(text: str) -> str:
    """Absolute paths in ``text`` replaced by their last component: results travel to other machines, whose
    folders differ (``/x/y/.venv/bin/python3 -m ipykernel`` -> ``python3 -m ipykernel``)."""
    return _ABSOLUTE_PATH.sub(r"\1", text)


def _cpu_ticks() -> dict[int, tuple[int, str]]:
    """pid -> (user + system clock ticks so far, state letter) from /proc (Linux)."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            out[int(stat.parent.name)] = (int(fields[11]) + int(fields[12]), fields[0])
        except (OSError, ValueError, IndexError):
            continue
    return out


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def busy_processes(window_s: float = 0.5) -> list[str]:
    """Other processes using CPU now, to document the load: command lines with > 5% CPU over the last ``window_s``
    seconds (from /proc; a process paused with SIGSTOP uses none and is listed as stopped). Elsewhere, ``ps``'s
    %CPU, which is an average over each process's lifetime, labelled as such."""
    if not Path("/proc/self/stat").is_file():
        return _busy_from_ps()
    before = _cpu_ticks()
    time.sleep(window_s)
    after = _cpu_ticks()
    hz = os.sysconf("SC_CLK_TCK")
    rows = []
    for pid, (ticks, state) in after.items():
        if pid == os.getpid() or pid not in before:
            continue
        pct = 100 * (ticks - before[pid][0]) / hz / window_s
        cmd = without_local_paths(_command_line(pid))[:110]
        if state == "T" and cmd:
            rows.append((0.0, f"stopped (SIGSTOP, no CPU): {cmd}"))
        elif pct > 5 and cmd:
            rows.append((pct, f"{pct:.0f}% {cmd}"))
    return [text for _, text in sorted(rows, key=lambda r: -r[0])][:8]


def _busy_from_ps() -> list[str]:
    try:
        out = subprocess.run(["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"], capture_output=True, text=True,
                             timeout=10).stdout.splitlines()[1:]
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out:
        parts = line.split(None, 2)
        if len(parts) < 3 or parts[0] == str(os.getpid()) or parts[2].startswith("ps "):
            continue
        try:
            if float(parts[1]) > 5:
                rows.append(f"{float(parts[1]):.0f}% over its lifetime: {without_local_paths(parts[2].strip())[:90]}")
        except ValueError:
            continue
    return rows[:8]


def machine_summary(info: dict | None = None) -> str:
    """One line naming the CPU, as notes and reruns quote it: ``"AMD EPYC, 2 logical CPUs, no AMX"``."""
    i = info or machine_info()
    amx = "AMX" if "amx_bf16" in i.get("isa_flags", []) else "no AMX"
    return f"{i['cpu_model']}, {i['logical_cpus']} logical CPUs, {amx}"


def machine_info() -> dict:
    """CPU model, cores, clock, relevant ISA flags and library versions."""
    ci = _cpuinfo()
    flags = ci.get("flags", "").split()
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8"]
    versions = {"python": sys.version.split()[0], "torch": torch.__version__}
    for mod in ("torchvision", "timm", "numpy"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return {
        "cpu_model": ci.get("model name", platform.processor()),
        "cpu_family_model": f"{ci.get('cpu family', '?')}/{ci.get('model', '?')}",
        "logical_cpus": os.cpu_count(),
        "cpu_mhz": float(ci.get("cpu MHz", "nan")),
        "bogomips": float(ci.get("bogomips", "nan")),
        "hypervisor": "hypervisor" in flags,
        "isa_flags": [f for f in wanted if f in flags],
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "versions": versions,
        "platform": platform.platform(),
    }


_CLOCK_C = r"""
#include <stdio.h>
#include <time.h>
static double now(void) { struct timespec a; clock_gettime(CLOCK_MONOTONIC, &a); return a.tv_sec + a.tv_nsec * 1e-9; }
int main(void) {
    double best_add = 0, best_imul = 0;
    for (int r = 0; r < 7; r++) {
        unsigned long n = 50000000UL, x = 1, y = 3;
        double t0 = now();
        for (unsigned long i = 0; i < n; i++)  /* 8 dependent register adds: 8 cycles per iteration */
            __asm__ volatile("add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\t"
                             "add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0" : "+r"(x) : "r"(y));
        double g = 8.0 * n / (now() - t0) / 1e9;
        if (g > best_add) best_add = g;
        t0 = now();
        for (unsigned long i = 0; i < n / 2; i++)  /* 4 dependent imuls, 3 cycles latency each */
            __asm__ volatile("imul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0" : "+r"(x) : "r"(y));
        g = 12.0 * (n / 2) / (now() - t0) / 1e9;
        if (g > best_imul) best_imul = g;
    }
    printf("%.4f %.4f\n", best_add, best_imul);
    return 0;
}
"""


def measure_clock_ghz() -> dict | None:
    """The core clock actually running, in GHz, timed with chains of dependent instructions of known latency.

    A chain of ``add reg, reg`` runs at one instruction per cycle and a chain of ``imul`` at one per 3 cycles on
    Intel cores, so instructions x latency / seconds is the clock (the best of 7 short runs, so that a moment of
    preemption does not lower it). The guest's /proc/cpuinfo shows only the nominal clock, not turbo. Needs a C
    compiler (``cc``); returns None without one.
    """
    import shutil
    import tempfile

    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc or platform.machine() not in ("x86_64", "AMD64"):
        return None
    with tempfile.TemporaryDirectory() as d:
        src, exe = os.path.join(d, "clock.c"), os.path.join(d, "clock")
        with open(src, "w") as f:
            f.write(_CLOCK_C)
        try:
            subprocess.run([cc, "-O1", "-o", exe, src], check=True, capture_output=True, timeout=60)
            add, imul = map(float, subprocess.run([exe], check=True, capture_output=True, text=True,
                                                  timeout=60).stdout.split())
        except (OSError, subprocess.SubprocessError, ValueError):
            return None
    return {"add_chain_ghz": add, "imul_chain_ghz": imul}


def cpu_peak(info: dict | None = None) -> dict:
    """Theoretical peak FLOP/s of this CPU, derived from cores x clock x FLOP per cycle per core.

    FLOP per cycle per core (Intel Sapphire Rapids-class Xeon, which the flags amx_bf16 / avx512_fp16 identify):

    * fp32, AVX-512 FMA: 16 lanes x 2 FLOP (multiply + add) x 2 FMA units = 64.
    * bf16, AVX512_BF16 ``vdpbf16ps``: 32 bf16 products summed in pairs into 16 fp32 lanes = 64 FLOP per
      instruction x 2 units = 128.
    * bf16, AMX ``tdpbf16ps``: a 16x32 by 32x16 bf16 tile product = 16*16*32 = 8192 multiply-adds = 16384 FLOP,
      one every 16 cycles per core = 1024.

    Assumptions: every logical CPU is a full core (lscpu: 1 thread per core), all cores run at the clock measured
    by :func:`measure_clock_ghz` (the nominal ``cpu MHz`` of /proc/cpuinfo if it cannot be measured), two AVX-512
    FMA units. AVX-512 and AMX code may run at a lower clock than scalar code, so these peaks are upper bounds.
    """
    info = info or machine_info()
    cores = info["logical_cpus"] or 1
    measured = measure_clock_ghz()
    ghz = max(measured.values()) if measured else info["cpu_mhz"] / 1e3
    flags = set(info["isa_flags"])
    per_cycle = {"fp32_avx512": 64 if "avx512f" in flags else 32}
    if "avx512_bf16" in flags:
        per_cycle["bf16_avx512"] = 128
    if "amx_bf16" in flags:
        per_cycle["bf16_amx"] = 1024
    peaks = {k: cores * ghz * 1e9 * v for k, v in per_cycle.items()}
    derivation = {k: f"{cores} cores x {ghz:.2f} GHz x {v} FLOP/cycle = {peaks[k] / 1e9:.1f} GFLOP/s"
                  for k, v in per_cycle.items()}
    return {"cores": cores, "ghz": ghz, "clock_source": "measured" if measured else "/proc/cpuinfo",
            "measured_clock": measured, "nominal_ghz": info["cpu_mhz"] / 1e3, "flop_per_cycle_per_core": per_cycle,
            "peak_flops": peaks, "derivation": derivation}


def matmul_ceiling(threads: int, seconds: float = 1.5) -> dict:
    """Measured FLOP/s of the friendliest workloads (the practical ceiling of this CPU), fp32 and bfloat16.

    A large matrix product (``torch.mm``) and a large 3x3 convolution (256 -> 256 channels, batch 8 at 28x28; fp32
    NCHW and bf16 channels_last, oneDNN, AMX for bf16), each repeated for ``seconds``; ``flops`` uses the median
    time, ``best_flops`` the fastest call.
    """
    torch.set_num_threads(threads)
    out = {}

    def timed(fn: Callable[[], object], flop: float) -> dict:
        fn()
        ts: list[float] = []
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end or len(ts) < 3:
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return {"median_s": statistics.median(ts), "flops": flop / statistics.median(ts), "best_flops": flop / min(ts)}

    with torch.inference_mode():
        for dtype, key, n in ((torch.float32, "fp32", 2048), (torch.bfloat16, "bf16", 4096)):
            a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            out[key] = {"n": n, "what": f"{n}x{n} matrix product", **timed(lambda a=a, b=b: torch.mm(a, b), 2 * n**3)}
            conv = nn.Conv2d(256, 256, 3, padding=1, bias=False).to(dtype)
            x = torch.randn(8, 256, 28, 28).to(dtype)
            if dtype == torch.bfloat16:
                conv, x = conv.to(memory_format=CL), x.to(memory_format=CL)
            out[f"{key}_conv"] = {"n": 256, "what": "3x3 conv 256->256, batch 8, 28x28",
                                  **timed(lambda c=conv, x=x: c(x), 2 * 8 * 256 * 256 * 9 * 28 * 28)}
    return out


def sanitize_name(s: str) -> str:
    """A file-name-safe version of ``s``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)
