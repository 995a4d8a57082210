"""Cost of looking inside SE blocks: capture overhead and memory of streaming excitation statistics.

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

    def run(kind: str) -> None:
        t0 = time.perf_counter()
        if kind == "plain":
            model(x)
        else:
            with capture(model, features=kind == "capture_features") as cap:
                model(x)
            cap.excitation["SE_4_3"]  # include the (lazy) concatenation in the cost
        times[kind].append(time.perf_counter() - t0)

    with torch.no_grad():
        for _ in range(3):
            model(x)
        for _ in range(repeats):
            for kind in times:
                run(kind)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "plain_ms": 1e3 * med["plain"],
        "capture_ms": 1e3 * med["capture"],
        "capture_features_ms": 1e3 * med["capture_features"],
        "capture_ratio": med["capture"] / med["plain"],
        "capture_features_ratio": med["capture_features"] / med["plain"],
    }


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
        "overhead": capture_overhead(model, args.batch, args.repeats),
        "memory": memory_flatness(model, args.images, args.stats_batch),
    }
    o, m = result["overhead"], result["memory"]
    print(f"forward batch {args.batch}: plain {o['plain_ms']:.1f} ms, capture z+s {o['capture_ms']:.1f} ms "
          f"(ratio {o['capture_ratio']:.3f}), with feature maps {o['capture_features_ms']:.1f} ms "
          f"(ratio {o['capture_features_ratio']:.3f})")
    print(f"excitation_stats: RSS growth {m['rss_growth_small_mb']:.1f} MB after {m['images'] // 10} images, "
          f"{m['rss_growth_big_mb']:.1f} MB after {m['images']} images ({m['images_per_s']:.0f} images/s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
