"""How quickly the notebooks' widgets answer: what a learner waits for after moving a control.

1. Channel explorer (notebook 07): the one precompute pass over the shipped 1,000-image sample (target <= 20 s on
   2 cores) and the median time of a view change (block, channel or class; target <= 100 ms), which only redraws.
2. Steering explorer (notebook 05): the median time of a *new* edit (an uncached channel) per SE block over the
   notebook's 500 images (target <= 0.3 s): the explorer reruns only the residual units from the edited block on,
   so edits of early blocks cost the most.

Both use the shipped se_resnet20 and the shipped sample, as the notebooks do. Times are wall clock (what a user
waits), so run on an idle machine; the load average before and after is recorded beside them.

Usage: ``python benchmarks/bench_widgets.py [--threads 2] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from seresnet import create_model
from seresnet.data import CIFAR10_CLASSES, load_sample


def _median_ms(times: list[float]) -> float:
    return 1e3 * statistics.median(times)


def channel_explorer_times(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                           views: int = 12) -> dict:
    from seresnet.widgets import channel_explorer

    t0 = time.perf_counter()
    w = channel_explorer(model, images, labels, CIFAR10_CLASSES)
    precompute = time.perf_counter() - t0
    blocks = w.controls["block"].options
    changes: list[tuple[str, object]] = []
    for j in range(views):  # cycle through the three kinds of view change
        kind = ("channel", "class", "block")[j % 3]
        if kind == "channel":
            changes.append(("channel", (w.controls["channel"].value + 5) % (w.controls["channel"].max + 1)))
        elif kind == "class":
            changes.append(("class", (w.controls["class"].value + 3) % len(CIFAR10_CLASSES)))
        else:
            changes.append(("block", blocks[(blocks.index(w.controls["block"].value) + 4) % len(blocks)]))
        # apply now, so that the next channel change sees the block's width
        name, value = changes[-1]
        t0 = time.perf_counter()
        w.controls[name].value = value
        changes[-1] = (name, time.perf_counter() - t0)
    by_kind = {k: _median_ms([t for n, t in changes if n == k]) for k in ("channel", "class", "block")}
    return {"images": int(len(images)), "precompute_s": precompute,
            "view_change_ms": _median_ms([t for _, t in changes]), "view_change_ms_by_kind": by_kind,
            "views": views, "model_runs_after_views": w.model_runs}


def steering_edit_times(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, n_images: int = 500,
                        edits_per_block: int = 4) -> dict:
    from seresnet.widgets import steering_explorer

    pick = torch.arange(0, len(labels), max(1, len(labels) // n_images))[:n_images]
    w = steering_explorer(model, images[pick], labels[pick], CIFAR10_CLASSES)
    per_block = {}
    for block in w.controls["block"].options:
        times = []
        for c in range(1, edits_per_block + 1):  # new channels (the opening view is channel 0): never cached
            t0 = time.perf_counter()
            w.show_edit(block, c, 0.0)
            times.append(time.perf_counter() - t0)
        # the first edit of a block also records the input of its residual unit (once per block)
        per_block[block] = {"first_ms": 1e3 * times[0], "median_new_edit_ms": _median_ms(times[1:] or times)}
    return {"images": int(len(pick)), "edits_per_block": edits_per_block, "per_block": per_block,
            "worst_median_new_edit_ms": max(r["median_new_edit_ms"] for r in per_block.values())}


def widget_timings() -> dict:
    torch.manual_seed(0)
    model = create_model("se_resnet20", pretrained=True).eval()
    images, labels = load_sample()
    return {"model": "se_resnet20 (shipped)", "threads": torch.get_num_threads(),
            "channel_explorer": channel_explorer_times(model, images, labels),
            "steering_explorer": steering_edit_times(model, images, labels)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    r = widget_timings()
    print(json.dumps(r, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)


if __name__ == "__main__":
    main()
