"""Cost of looking inside SE blocks: capture overhead and memory of streaming excitation statistics.

0. Hook cost: CPU time the capture hooks add per forward, measured on the excitation modules alone (robust to load).
1. Capture overhead: median time of a forward pass of se_resnet20 (batch 256, 32x32, eval, no_grad) with and
   without ``capture`` of z and s of all 9 SE blocks (and, for information, with feature maps), interleaved so that
   load from other processes hits both alike. Reported as the ratio of medians (target <= 1.05).
2. Memory flatness: ``excitation_stats`` over 10,000 images (batch 500) versus over 1,000: process RSS after each
   run (a leak of the per-image excitations would add 10,000 x 336 x 8 bytes = 27 MB).

Usage: ``python benchmarks/bench_hooks.py [--threads 1] [--repeats 15] [--images 10000] [--json out.json]``
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time

import torch

from seresnet import create_model
from seresnet.hooks import capture, excitation_stats


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6


def capture_overhead(model: torch.nn.Module, batch: int, repeats: int) -> dict[str, float]:
    x = torch.randn(batch, 3, 32, 32)
    times: dict[str, list[float]] = {"plain": [], "capture": [], "capture_features": []}
    cpu: dict[str, list[float]] = {k: [] for k in times}

    def run(kind: str) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        if kind == "plain":
            model(x)
        else:
            with capture(model, features=kind == "capture_features") as cap:
                model(x)
            cap.excitation["SE_4_3"]  # include the (lazy) concatenation in the cost
        times[kind].append(time.perf_counter() - t0)
        cpu[kind].append(time.process_time() - c0)

    with torch.no_grad():
        for _ in range(3):
            model(x)
        for _ in range(repeats):
            for kind in times:
                run(kind)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    return {
        # CPU time of this process: less sensitive than wall time to other jobs on a busy machine.
        "capture_ratio_cpu": med_cpu["capture"] / med_cpu["plain"],
        "capture_features_ratio_cpu": med_cpu["capture_features"] / med_cpu["plain"],
        "plain_ms": 1e3 * med["plain"],
        "capture_ms": 1e3 * med["capture"],
        "capture_features_ms": 1e3 * med["capture_features"],
        "capture_ratio": med["capture"] / med["plain"],
        "capture_features_ratio": med["capture_features"] / med["plain"],
    }


def hook_cost(model: torch.nn.Module, batch: int, calls: int = 200) -> dict[str, float]:
    """CPU time the capture hooks add per forward pass (all blocks), measured on the excitation modules alone.

    Robust on a busy machine, unlike the end-to-end ratio: the difference of two tight loops of the same work.
    """
    def per_call(f) -> float:
        best = float("inf")
        for _ in range(5):
            t0 = time.process_time()
            for _ in range(calls):
                f()
            best = min(best, (time.process_time() - t0) / calls)
        return best

    plain = hooked = 0.0
    with torch.no_grad():
        for name, se in model.se_blocks().items():
            z = torch.randn(batch, se.channels)
            plain += per_call(lambda se=se, z=z: se.excitation(z))
            with capture(model, name) as cap:
                def call(se=se, z=z, cap=cap) -> None:
                    se.excitation(z)
                    cap.clear()  # keep memory flat; clearing is a few list operations

                hooked += per_call(call)
        x = torch.randn(batch, 3, 32, 32)
        t0 = time.process_time()
        model(x)
        forward = time.process_time() - t0
    return {"hook_us_per_forward": 1e6 * (hooked - plain), "forward_cpu_ms": 1e3 * forward,
            "hook_fraction": (hooked - plain) / forward}


def memory_flatness(model: torch.nn.Module, n_images: int, batch: int) -> dict[str, float]:
    def stream(n: int):
        g = torch.Generator().manual_seed(0)
        for start in range(0, n, batch):
            b = min(batch, n - start)
            yield torch.randn(b, 3, 32, 32, generator=g), torch.randint(0, 10, (b,), generator=g)

    excitation_stats(model, stream(2 * batch), 10)  # warm-up: allocator pools, lazy init
    gc.collect()
    base = rss_mb()
    t0 = time.perf_counter()
    small = excitation_stats(model, stream(n_images // 10), 10)
    t_small = time.perf_counter() - t0
    gc.collect()
    after_small = rss_mb()
    t0 = time.perf_counter()
    big = excitation_stats(model, stream(n_images), 10)
    t_big = time.perf_counter() - t0
    gc.collect()
    after_big = rss_mb()
    assert big.num_images == n_images and small.num_images == n_images // 10
    return {
        "images": n_images,
        "rss_before_mb": base,
        "rss_growth_small_mb": after_small - base,
        "rss_growth_big_mb": after_big - base,
        "seconds_big": t_big,
        "images_per_s": n_images / t_big,
        "seconds_small": t_small,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: stable on busy hosts)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--stats-batch", type=int, default=500)
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model("se_resnet20").eval()
    result = {
        "torch": torch.__version__, "python": sys.version.split()[0], "machine": platform.machine(),
        "threads": args.threads, "model": "se_resnet20", "batch": args.batch,
        "hook_cost": hook_cost(model, args.batch),
        "overhead": capture_overhead(model, args.batch, args.repeats),
        "memory": memory_flatness(model, args.images, args.stats_batch),
    }
    o, m, h = result["overhead"], result["memory"], result["hook_cost"]
    print(f"capture hooks: {h['hook_us_per_forward']:.0f} us CPU per forward of all 9 blocks at batch {args.batch} "
          f"= {100 * h['hook_fraction']:.2f}% of a {h['forward_cpu_ms']:.0f} ms forward")
    print(f"forward batch {args.batch}: plain {o['plain_ms']:.1f} ms, capture z+s {o['capture_ms']:.1f} ms "
          f"(ratio {o['capture_ratio']:.3f}), with feature maps {o['capture_features_ms']:.1f} ms "
          f"(ratio {o['capture_features_ratio']:.3f}); CPU-time ratios {o['capture_ratio_cpu']:.3f} and "
          f"{o['capture_features_ratio_cpu']:.3f}")
    print(f"excitation_stats: RSS growth {m['rss_growth_small_mb']:.1f} MB after {m['images'] // 10} images, "
          f"{m['rss_growth_big_mb']:.1f} MB after {m['images']} images ({m['images_per_s']:.0f} images/s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
