"""Tests of seresnet.plots: every figure has titles and labels, and the plotted data equals the inputs.

Statistics are built from synthetic excitations whose per-class means are computed here with plain torch.
"""

from __future__ import annotations

import io
import math

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from seresnet.hooks import ExcitationStats  # noqa: E402
from seresnet.plots import (  # noqa: E402
    plot_block_trend,
    plot_class_channel_heatmap,
    plot_class_probabilities,
    plot_excitation_profiles,
    plot_feature_maps,
    plot_squeeze_vs_excitation,
)

NAMES = ["cat", "dog", "ship", "frog"]
BLOCKS = {"SE_2_1": 4, "SE_2_2": 4, "SE_3_1": 8, "SE_4_1": 12}


@pytest.fixture(scope="module")
def data():
    """Synthetic excitations (N, C) per block with class-dependent means, their labels, and the stats."""
    g = torch.Generator().manual_seed(0)
    n = 200
    labels = torch.randint(0, 4, (n,), generator=g)
    s = {}
    for depth, (name, c) in enumerate(BLOCKS.items()):
        class_offset = 0.1 * depth * torch.randn(4, c, generator=g)  # later blocks: more class-specific
        s[name] = (0.5 + class_offset[labels] + 0.05 * torch.randn(n, c, generator=g)).clamp(0, 1)
    stats = ExcitationStats(list(BLOCKS), list(BLOCKS.values()), 4, low=0.3, high=0.7)
    for i in range(0, n, 64):
        stats.update({k: v[i:i + 64] for k, v in s.items()}, labels[i:i + 64])
    return s, labels, stats


def class_means(s: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    return torch.stack([s[labels == k].double().mean(0) for k in range(4)]).numpy()


def render(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    return buf.getvalue()


def check_labels(ax) -> None:
    assert ax.get_title(), "panel without a title"
    assert ax.get_xlabel() and ax.get_ylabel(), "panel without axis labels"


def test_figures_are_not_registered_with_pyplot(data):
    _, _, stats = data
    before = plt.get_fignums()
    fig = plot_block_trend(stats)
    assert plt.get_fignums() == before
    assert render(fig).startswith(b"\x89PNG")


def test_excitation_profiles_lines_equal_class_means(data):
    s, labels, stats = data
    fig = plot_excitation_profiles(stats, ["SE_2_1", "SE_4_*"], [0, "ship"], class_names=NAMES)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["SE_2_1 (4 channels)", "SE_4_1 (12 channels)"]
    assert fig.get_suptitle()
    for ax, block in zip(axes, ["SE_2_1", "SE_4_1"]):
        check_labels(ax)
        lines = ax.get_lines()
        assert [ln.get_label() for ln in lines] == ["cat", "ship", "all classes"]
        means = class_means(s[block], labels)
        np.testing.assert_allclose(lines[0].get_ydata(), means[0], rtol=1e-10)
        np.testing.assert_allclose(lines[1].get_ydata(), means[2], rtol=1e-10)
        np.testing.assert_allclose(lines[2].get_ydata(), s[block].double().mean(0).numpy(), rtol=1e-10)
        np.testing.assert_array_equal(lines[0].get_xdata(), np.arange(BLOCKS[block]))
    legend = axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["cat", "ship", "all classes"]
    # Redraw into the same figure: old panels are replaced.
    fig2 = plot_excitation_profiles(stats, "SE_3_1", None, include_all=False, fig=fig)
    assert fig2 is fig and len(fig.axes) == 1
    assert [ln.get_label() for ln in fig.axes[0].get_lines()] == ["class 0", "class 1", "class 2", "class 3"]
    render(fig)


def test_excitation_profiles_grid_and_errors(data):
    _, _, stats = data
    fig = plot_excitation_profiles(stats, list(BLOCKS), [1], ncols=2)
    assert len(fig.axes) == 4
    with pytest.raises(ValueError, match="SE_2_1, SE_2_2"):
        plot_excitation_profiles(stats, "SE_5_*", [0])
    with pytest.raises(ValueError, match="unknown class 'bus'"):
        plot_excitation_profiles(stats, "SE_2_1", ["bus"], class_names=NAMES)
    with pytest.raises(ValueError, match="0..3"):
        plot_excitation_profiles(stats, "SE_2_1", [4])
    with pytest.raises(ValueError, match="class_names has 2 entries"):
        plot_excitation_profiles(stats, "SE_2_1", [0], class_names=["a", "b"])
    with pytest.raises(TypeError, match="ExcitationStats"):
        plot_excitation_profiles({"SE_2_1": 1}, "SE_2_1", [0])


def test_class_channel_heatmap(data):
    s, labels, stats = data
    fig = plot_class_channel_heatmap(stats, "SE_3_1", class_names=NAMES)
    ax = fig.axes[0]
    check_labels(ax)
    np.testing.assert_allclose(ax.get_images()[0].get_array(), class_means(s["SE_3_1"], labels), rtol=1e-10)
    assert [t.get_text() for t in ax.get_yticklabels()] == NAMES
    assert len(fig.axes) == 2  # the colour bar
    fig = plot_class_channel_heatmap(stats, "SE_3_1", sort_channels=True)
    order = np.argsort(s["SE_3_1"].double().mean(0).numpy())
    np.testing.assert_allclose(fig.axes[0].get_images()[0].get_array(), class_means(s["SE_3_1"], labels)[:, order])
    # Into a given axes.
    f, ax = plt.subplots()
    try:
        assert plot_class_channel_heatmap(stats, "SE_2_1", ax=ax) is f
    finally:
        plt.close(f)
    with pytest.raises(ValueError, match="SE_9_9"):
        plot_class_channel_heatmap(stats, "SE_9_9")
    render(fig)


def test_squeeze_vs_excitation(data):
    g = torch.Generator().manual_seed(1)
    z, s = torch.randn(6, 5, generator=g), torch.rand(6, 5, generator=g)
    fig = plot_squeeze_vs_excitation(z, s, block="SE_4_1")
    ax = fig.axes[0]
    check_labels(ax)
    assert "SE_4_1" in ax.get_title()
    pts = ax.collections[0].get_offsets()
    np.testing.assert_allclose(pts, np.stack([z.ravel().numpy(), s.ravel().numpy()], 1), rtol=1e-6)
    labels = torch.tensor([0, 2, 2, 0, 1, 2])
    fig = plot_squeeze_vs_excitation(z, s, labels=labels, class_names=["a", "b", "c"], channels=[1, 3])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c"]
    pts_c = ax.collections[2].get_offsets()  # class 2: images 1, 2, 5
    np.testing.assert_allclose(pts_c[:, 0], z[[1, 2, 5]][:, [1, 3]].ravel().numpy(), rtol=1e-6)
    np.testing.assert_allclose(pts_c[:, 1], s[[1, 2, 5]][:, [1, 3]].ravel().numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        plot_squeeze_vs_excitation(z, s[:, :3])
    with pytest.raises(ValueError, match=r"labels must be 6 class indices, got shape \(2,\)"):
        plot_squeeze_vs_excitation(z, s, labels=[0, 1])
    render(fig)


def test_feature_maps_before_after_and_s(data):
    g = torch.Generator().manual_seed(2)
    before = torch.randn(6, 5, 5, generator=g)
    s = torch.rand(6, generator=g)
    after = before * s[:, None, None]
    fig = plot_feature_maps(before, after, [1, 4], s=s)
    axes = np.array(fig.axes).reshape(2, 2)
    for j, c in enumerate([1, 4]):
        np.testing.assert_allclose(axes[0, j].get_images()[0].get_array(), before[c].numpy(), rtol=1e-6)
        np.testing.assert_allclose(axes[1, j].get_images()[0].get_array(), after[c].numpy(), rtol=1e-6)
        assert f"s = {s[c]:.2f}" in axes[0, j].get_title()
        # Same colour scale above and below, so the scaling is visible.
        assert axes[0, j].get_images()[0].get_clim() == axes[1, j].get_images()[0].get_clim()
    assert axes[0, 0].get_ylabel() and axes[1, 0].get_ylabel() and fig.get_suptitle()
    # Without s, the factor is recovered from the maps.
    fig = plot_feature_maps(before.numpy(), after.numpy(), [2], fig=fig)
    assert len(fig.axes) == 2
    assert f"s ~ {s[2]:.2f}" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match=r"0..5"):
        plot_feature_maps(before, after, [6])
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        plot_feature_maps(before, after[0], [0])
    render(fig)


def test_block_trend_shows_specificity_and_saturation(data):
    s, labels, stats = data
    fig = plot_block_trend(stats)
    ax1, ax2 = fig.axes
    for ax in (ax1, ax2):
        assert ax.get_title() and ax.get_ylabel()
    assert ax2.get_xlabel()
    assert [t.get_text() for t in ax2.get_xticklabels()] == list(BLOCKS)
    expected_spec = [float(class_means(s[b], labels).std(0).mean()) for b in BLOCKS]
    np.testing.assert_allclose(ax1.get_lines()[0].get_ydata(), expected_spec, rtol=1e-9)
    low, high = ax2.get_lines()[:2]
    np.testing.assert_allclose(low.get_ydata(), [float((s[b] < 0.3).double().mean()) for b in BLOCKS])
    np.testing.assert_allclose(high.get_ydata(), [float((s[b] > 0.7).double().mean()) for b in BLOCKS])
    assert [t.get_text() for t in ax2.get_legend().get_texts()] == ["s < 0.3", "s > 0.7"]
    assert expected_spec[-1] > expected_spec[0]  # the synthetic data gets more class-specific with depth
    fig = plot_block_trend(stats, fig=fig, normalize=True)
    assert len(fig.axes) == 2 and "variance" in fig.axes[0].get_ylabel()
    render(fig)


def test_class_probabilities_bars(data):
    probs = torch.softmax(torch.tensor([1.0, 2.0, 0.5, -1.0]), 0)
    ref = torch.softmax(torch.tensor([0.0, 0.0, 3.0, 0.0]), 0)
    fig = plot_class_probabilities(probs, NAMES)
    ax = fig.axes[0]
    check_labels(ax)
    np.testing.assert_allclose([b.get_height() for b in ax.containers[0]], probs.numpy(), rtol=1e-6)
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES
    fig = plot_class_probabilities(probs, NAMES, reference=ref, label="edited", reference_label="before")
    ax = fig.axes[0]
    by_label = {c.get_label(): [b.get_height() for b in c] for c in ax.containers}
    np.testing.assert_allclose(by_label["edited"], probs.numpy(), rtol=1e-6)
    np.testing.assert_allclose(by_label["before"], ref.numpy(), rtol=1e-6)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["before", "edited"]
    with pytest.raises(ValueError, match="class_names has 4 entries but there are 3"):
        plot_class_probabilities(probs[:3], NAMES)
    with pytest.raises(ValueError, match="reference"):
        plot_class_probabilities(probs, NAMES, reference=ref[:2])
    render(fig)


def test_figures_display_once_in_ipython_without_pyplot(data):
    """A returned Figure is shown as PNG by IPython even when no pyplot backend registered a formatter."""
    pytest.importorskip("IPython")
    import sys

    from IPython.core.interactiveshell import InteractiveShell

    _, _, stats = data
    hook = sys.displayhook
    shell = InteractiveShell.instance()
    try:
        before = plt.get_fignums()
        fig = plot_block_trend(stats)
        formats, _ = shell.display_formatter.format(fig)
        assert formats["image/png"].startswith(b"\x89PNG")
        assert plt.get_fignums() == before  # not managed by pyplot, so an inline backend will not show it again
    finally:
        InteractiveShell.clear_instance()
        sys.displayhook = hook


def test_attention_study_plot_shows_paired_differences_and_undefined_intervals() -> None:
    from seresnet.plots import plot_attention_study
    from seresnet.study import paired_over_seeds

    acc = {"resnet20": {0: 0.80, 1: 0.82}, "se_resnet20": {0: 0.81, 1: 0.84}, "eca_resnet20": {0: 0.79}}
    summary = {m: {"minus_resnet20": paired_over_seeds(a, acc["resnet20"])} for m, a in acc.items()
               if m != "resnet20"}
    study = {"models": list(acc), "summary": {"val": summary}}
    fig = plot_attention_study(study, train_ratio={"se_resnet20": 1.2, "eca_resnet20": 1.1})
    ax, ax_cost = fig.axes
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["eca_resnet20  (1 seed)", "se_resnet20  (2 seeds)"]  # sorted by mean difference
    seeds_se = next(c for c in ax.collections if c.get_offsets().shape[0] == 2).get_offsets()[:, 0]
    np.testing.assert_allclose(sorted(seeds_se), [1.0, 2.0])  # per-seed differences in points
    assert len(ax.containers) == 1  # one error bar: the model with one seed has no interval
    # the grey bar holds for both comparisons at once: each at 97.5% (Bonferroni). With one degree of freedom t is
    # Cauchy, P(|T| <= t) = 2 arctan(t) / pi, so t = tan(0.975 pi / 2); differences 1 and 2 points: mean 1.5, s.e. 0.5
    (grey,) = [line for line in ax.lines if line.get_color() == "0.6"]
    t = math.tan(0.975 * math.pi / 2)
    np.testing.assert_allclose(sorted(grey.get_xdata()), [1.5 - 0.5 * t, 1.5 + 0.5 * t], rtol=1e-6)
    assert [round(p.get_width(), 2) for p in ax_cost.patches] == [1.1, 1.2]
    assert "hollow = interval undefined" in ax.get_title()  # eca has one seed
    assert "hollow" not in plot_attention_study(study, models=["resnet20", "se_resnet20"]).axes[0].get_title()
    with pytest.raises(ValueError, match="no results on 'test'"):
        plot_attention_study(study, set_name="test")


def test_plots_refuse_inputs_they_would_draw_wrongly() -> None:
    """Labels outside the class names, logits passed as probabilities, a batch where one image's vector is expected,
    an empty block list and a channel out of range: each a clear error, not a wrong or clipped picture."""
    from seresnet.architecture import plot_se_steps
    from seresnet.plots import plot_class_probabilities, plot_squeeze_vs_excitation

    z, s = torch.rand(4, 8), torch.rand(4, 8)
    names = ["a", "b", "c"]
    for bad, message in (([0, 1, 2, 3], r"labels must be class indices 0\.\.2"),
                         ([0, 1, -1, 2], r"labels must be class indices 0\.\.2"),
                         ([0.0, 1.5, 2.0, 1.0], r"class indices 0\.\.2 \(integers\), got torch.float64")):
        with pytest.raises(ValueError, match=message):
            plot_squeeze_vs_excitation(z, s, labels=np.array(bad), class_names=names)
    fig = plot_squeeze_vs_excitation(z, s, labels=np.array([0, 1, 2, 1]), class_names=names)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == names
    with pytest.raises(ValueError, match="probabilities in 0..1.*softmax"):
        plot_class_probabilities(torch.tensor([10.9, 0.1, -0.6]), names)
    plot_class_probabilities(torch.tensor([10.9, 0.1, -0.6]).softmax(-1), names)
    with pytest.raises(ValueError, match=r"z must be one image's \(C,\) or \(1, C\) vector, got shape \(2, 64\)"):
        plot_se_steps(torch.rand(2, 64), torch.rand(2, 64))
    plot_se_steps(torch.rand(1, 64), torch.rand(64))
