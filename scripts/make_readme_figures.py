"""Write the figures the README shows to docs/figures/, from the same package functions the notebooks call.

    python scripts/make_readme_figures.py                 # all figures
    python scripts/make_readme_figures.py --only training_curves --out /tmp/figs

Every figure is a function below returning a matplotlib Figure, listed in ``FIGURES`` (file name -> function). To
add one, write the function and add a line to ``FIGURES``. Runs offline in well under a minute on a 2-core CPU: it
uses the checkpoints and the CIFAR-10 sample shipped with the package.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

from matplotlib.figure import Figure  # noqa: E402

from seresnet import architecture, channels, create_model, report  # noqa: E402
from seresnet.data import CIFAR10_CLASSES, load_sample  # noqa: E402
from seresnet.evaluate import evaluate  # noqa: E402
from seresnet.pretrained import pretrained_metadata  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHIPPED = ["se_resnet20", "resnet20"]


def se_integration_variants() -> Figure:
    """Notebook 02: where the SE block sits in a bottleneck unit, for every integration mode."""
    return architecture.draw_integration_variants(block="bottleneck")


def se_resnet50_stage_costs() -> Figure:
    """Notebook 02: parameters and multiply-adds per stage of SE-ResNet-50, with the SE share."""
    return architecture.plot_stage_costs(architecture.stage_table("se_resnet50"),
                                         title="SE-ResNet-50: where the parameters and the multiply-adds are")


def training_curves() -> Figure:
    """Notebook 03: training curves of the shipped CIFAR-10 checkpoints."""
    histories = {name: pretrained_metadata(name)["history"] for name in SHIPPED}
    held_out = "validation" if "val_acc" in next(iter(histories.values()))[0] else "test"
    return report.plot_history(histories, show_lr=True,
                               title=f"Shipped checkpoints on CIFAR-10 (dashed: train, solid: {held_out})")


def per_class_accuracy() -> Figure:
    """Notebook 03: per-class accuracy of the shipped checkpoints on the shipped 1,000-image test sample."""
    images, labels = load_sample()
    results = {name: evaluate(create_model(name, pretrained=True), images, labels) for name in SHIPPED}
    return report.plot_per_class_accuracy(results, CIFAR10_CLASSES,
                                          title="Per-class accuracy on the 1,000 CIFAR-10 test images shipped")


@functools.lru_cache(maxsize=1)
def _sample_excitation_stats():
    """The shipped se_resnet20, the shipped sample and its excitation statistics (computed once per run)."""
    from seresnet import hooks
    from seresnet.data import TensorBatches

    images, labels = load_sample()
    model = create_model("se_resnet20", pretrained=True)
    return model, images, labels, hooks.excitation_stats(model, TensorBatches(images, labels, 250), 10)


def excitation_profiles() -> Figure:
    """Notebook 04: mean excitation per channel by class at early and late blocks (the paper's Fig. 6 on CIFAR-10)."""
    from seresnet import plots

    stats = _sample_excitation_stats()[3]
    return plots.plot_excitation_profiles(stats, ["SE_2_1", "SE_2_3", "SE_3_3", "SE_4_1", "SE_4_2", "SE_4_3"],
                                          ["airplane", "automobile", "cat", "frog"], CIFAR10_CLASSES)


def se_knockout() -> Figure:
    """Notebook 05: accuracy when SE blocks are switched off or their excitations replaced by means."""
    from seresnet import ablation

    model, images, labels, stats = _sample_excitation_stats()
    return ablation.plot_knockout(ablation.se_knockout_table(model, images, labels, stats, bf16=True))


def _stored_study() -> dict:
    return json.loads((REPO / "notebooks" / "results" / "attention_study.json").read_text())


def ablation_study() -> Figure:
    """Notebook 06: the paper's ablations with three seeds each (the stored study) beside its Tables 10-14."""
    from seresnet import ablation

    return ablation.plot_ablation_study(_stored_study())


def attention_family() -> Figure:
    """Notebook 06: every module of the family minus the plain ResNet-20, paired by seed, beside its training time."""
    from seresnet.plots import plot_attention_study
    from seresnet.study import time_ratios

    study = _stored_study()
    bench = json.loads((REPO / "benchmarks" / "results" / "attention.json").read_text())
    return plot_attention_study(study, "val", train_ratio=time_ratios(bench)["train"],
                                models=study["groups"]["family"])


def what_a_channel_sees() -> Figure:
    """Notebook 07: the channel explorer's view of the last-stage channel that SE turns up most for one class."""
    from seresnet.widgets import channel_explorer

    model, images, labels, stats = _sample_excitation_stats()
    block, cls, channel = channels.largest_class_lift(stats)  # chosen as notebook 07 does
    return channel_explorer(model, images, labels, CIFAR10_CLASSES, block=block, channel=channel, cls=cls).figure


FIGURES: dict[str, Callable[[], Figure]] = {
    "se_integration_variants.png": se_integration_variants,
    "se_resnet50_stage_costs.png": se_resnet50_stage_costs,
    "training_curves.png": training_curves,
    "per_class_accuracy.png": per_class_accuracy,
    "excitation_profiles.png": excitation_profiles,
    "se_knockout.png": se_knockout,
    "ablation_study.png": ablation_study,
    "attention_family.png": attention_family,
    "what_a_channel_sees.png": what_a_channel_sees,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO / "docs" / "figures"), help="output folder")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help=f"make only this figure (file name with or without .png); one of {sorted(FIGURES)}")
    p.add_argument("--dpi", type=int, default=100)
    args = p.parse_args(argv)
    if args.dpi < 10:
        p.error(f"--dpi must be at least 10, got {args.dpi}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        p.error(f"--out {args.out} is a file; expected a folder for the PNG files")
    wanted = [n if n.endswith(".png") else f"{n}.png" for n in args.only] or list(FIGURES)
    unknown = [n for n in wanted if n not in FIGURES]
    if unknown:
        print(f"error: unknown figure(s) {unknown}; available: {sorted(FIGURES)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in wanted:
        t = time.perf_counter()
        fig = FIGURES[name]()
        fig.savefig(out / name, dpi=args.dpi)
        print(f"wrote {out / name} ({time.perf_counter() - t:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
