"""Tests of seresnet.widgets: controls drive the figure, the shown data is right, and the model is not rerun
when only the view changes.

Reference values are computed without the hooks: steered predictions come from a copy of the model whose
excitation gate is replaced by one that edits the channel, feature maps from the network's own layers.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seresnet import create_model
from seresnet.data import CIFAR10_CLASSES, normalize
from seresnet.hooks import excitation_stats
from seresnet.widgets import recalibration_explorer, steering_explorer

NAMES = list(CIFAR10_CLASSES)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = create_model("se_resnet20")
    g = torch.Generator().manual_seed(0)
    for m in model.modules():  # non-trivial BN statistics and larger SE weights, so edits matter
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2)
        if isinstance(m, nn.Linear):
            m.weight.data.mul_(3)
    model.eval()
    images = torch.randint(0, 256, (14, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (14,), generator=g)
    return model, images, labels


class _EditChannel(nn.Module):
    """Gate followed by an edit of one channel: scale (s_c * f) or set (s_c = f)."""

    def __init__(self, gate: nn.Module, channel: int, factor: float, mode: str) -> None:
        super().__init__()
        self.gate, self.channel, self.factor, self.mode = gate, channel, factor, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.gate(x).clone()
        s[:, self.channel] = s[:, self.channel] * self.factor if self.mode == "scale" else self.factor
        return s


def reference_probs(model, images, block, channel, factor, mode):
    edited = copy.deepcopy(model)
    exc = edited.se_blocks()[block].excitation
    exc.gate = _EditChannel(exc.gate, channel, factor, mode)
    with torch.no_grad():
        return edited(normalize(images)).softmax(1).numpy()


def manual_u(model, x, block):
    """Input of the SE block of the second unit of a stage, through the network's layers (standard mode)."""
    stage = {"SE_2_2": 0, "SE_3_2": 1, "SE_4_2": 2}[block]
    with torch.no_grad():
        h = model.stem(x)
        for layer in model.stages[:stage]:
            h = layer(h)
        unit = model.stages[stage][1]
        h = model.stages[stage][0](h)
        return unit.bn2(unit.conv2(F.relu(unit.bn1(unit.conv1(h)))))


def bar_heights(ax):
    return {c.get_label(): np.array([b.get_height() for b in c]) for c in ax.containers}


def test_steering_explorer_shows_steered_probabilities_and_feature_maps(setup):
    model, images, labels = setup
    w = steering_explorer(model, images, labels, NAMES, normalize=normalize, block="SE_3_2", factor=0.0)
    assert set(w.controls) == {"block", "channel", "factor", "mode", "image", "jump"}
    assert w.controls["channel"].max == 31 and w.controls["factor"].max == 3.0
    assert bytes(w.image.value).startswith(b"\x89PNG")
    u = manual_u(model, normalize(images), "SE_3_2")
    with torch.no_grad():
        orig = model(normalize(images)).softmax(1).numpy()
    ref = reference_probs(model, images, "SE_3_2", 0, 0.0, "scale")
    ax_img, ax_before, ax_after, _, ax_probs = w.figure.axes
    runs = w.model_runs
    for i in (0, 5, 13):
        w.controls["image"].value = i
        bars = bar_heights(ax_probs)
        np.testing.assert_allclose(bars["steered"], ref[i], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(bars["original"], orig[i], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(ax_before.get_images()[0].get_array(), u[i, 0].numpy(), rtol=1e-4, atol=1e-5)
        assert np.all(np.asarray(ax_after.get_images()[0].get_array()) == 0)  # s_0 scaled by 0
        np.testing.assert_array_equal(ax_img.get_images()[0].get_array(), images[i].permute(1, 2, 0).numpy())
        assert NAMES[int(labels[i])] in ax_img.get_title()
    assert w.model_runs == runs, "changing only the image must not rerun the model"

    # "set" mode: s_c = value; the after map is value * U.
    w.controls["channel"].value = 9
    w.controls["mode"].value = "set"
    w.controls["factor"].value = 0.7
    i = w.controls["image"].value
    np.testing.assert_allclose(ax_after.get_images()[0].get_array(), 0.7 * u[i, 9].numpy(), rtol=1e-4, atol=1e-5)
    ref = reference_probs(model, images, "SE_3_2", 9, 0.7, "set")
    np.testing.assert_allclose(bar_heights(ax_probs)["steered"], ref[i], rtol=1e-4, atol=1e-6)
    assert w.state["s_steered"] == pytest.approx(0.7)


def test_steering_explorer_changed_predictions_and_cache(setup):
    model, images, labels = setup
    w = steering_explorer(model, images, labels, NAMES, normalize=normalize, block="SE_4_3")
    with torch.no_grad():
        orig_pred = model(normalize(images)).argmax(1).numpy()
    # Edit the channels that separate the two most predicted classes most, so that some predictions flip.
    top2 = np.bincount(orig_pred, minlength=10).argsort()[-2:]
    w_fc = model.fc.weight.detach()
    strong = (w_fc[top2[0]] - w_fc[top2[1]]).abs().argsort(descending=True)[:2].tolist()
    found_change = False
    for channel, factor in [(strong[0], 3.0), (strong[1], 0.0), (strong[0], 0.0)]:
        w.controls["channel"].value = channel
        w.controls["factor"].value = factor
        ref_pred = reference_probs(model, images, "SE_4_3", channel, factor, "scale").argmax(1)
        expected = np.flatnonzero(ref_pred != orig_pred).tolist()
        assert w.state["changed"] == expected
        assert f"{len(expected)} of {len(images)} images" in w.changed_text.value
        found_change |= bool(expected)
    assert found_change, "no edit changed any prediction; the test would not check the list"
    # Revisiting an edit uses the cache; a new edit runs the model once; the image slider never does.
    runs = w.model_runs
    w.controls["channel"].value = strong[1]
    w.controls["factor"].value = 0.0
    assert w.model_runs == runs
    w.controls["factor"].value = 1.5
    assert w.model_runs == runs + 1
    w.controls["image"].value = 7
    assert w.model_runs == runs + 1
    w.controls["mode"].value = "set"
    assert w.model_runs == runs + 2


def test_steering_explorer_channel_slider_follows_block(setup):
    model, images, labels = setup
    w = steering_explorer(model, images, labels, NAMES, normalize=normalize)
    assert w.controls["block"].value == "SE_2_1" and w.controls["channel"].max == 15
    w.controls["block"].value = "SE_4_1"
    assert w.controls["channel"].max == 63
    w.controls["channel"].value = 40
    n_renders = len(w.render_times)
    w.controls["block"].value = "SE_2_3"
    assert w.controls["channel"].max == 15 and w.controls["channel"].value == 15
    assert len(w.render_times) == n_renders + 1, "one redraw per block change"
    assert w.state["block"] == "SE_2_3" and w.state["channel"] == 15
    assert "SE_2_3 channel 15" in w.figure.axes[1].get_title()
    # A generous bound; the report records the measured times.
    assert np.median(w.render_times) < 2.0


def test_recalibration_explorer_lines_follow_controls(setup):
    model, images, labels = setup
    x = normalize(images)
    stats = excitation_stats(model, [(x[:8], labels[:8]), (x[8:], labels[8:])], 10)
    w = recalibration_explorer(stats, images, labels, model, NAMES, normalize=normalize)
    assert set(w.controls) == {"block", "classes", "show", "image"}
    assert w.model_runs == 1
    ax_img, ax_prof, ax_img_s = w.figure.axes
    first_png = w.image.value

    w.controls["block"].value = "SE_3_2"
    present = sorted(set(labels.tolist()))[:3]
    w.controls["classes"].value = tuple(present)
    lines = ax_prof.get_lines()
    assert [ln.get_label() for ln in lines] == [NAMES[k] for k in present] + ["all classes"]
    for ln, k in zip(lines, present):
        np.testing.assert_allclose(ln.get_ydata(), stats.mean["SE_3_2"][k].numpy(), rtol=1e-6)
    np.testing.assert_allclose(lines[-1].get_ydata(), stats.overall_mean["SE_3_2"].numpy(), rtol=1e-6)
    assert w.image.value != first_png

    # The image's own excitation, computed by hand from the block's weights.
    u = manual_u(model, x, "SE_3_2")
    se = model.se_blocks()["SE_3_2"].excitation
    with torch.no_grad():
        s_manual = torch.sigmoid(se.fc2(F.relu(se.fc1(u.mean((2, 3))))))
    for i in (2, 11):
        w.controls["image"].value = i
        own, cls_mean = ax_img_s.get_lines()
        np.testing.assert_allclose(own.get_ydata(), s_manual[i].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(cls_mean.get_ydata(), stats.mean["SE_3_2"][int(labels[i])].numpy(), rtol=1e-6)
        np.testing.assert_array_equal(ax_img.get_images()[0].get_array(), images[i].permute(1, 2, 0).numpy())
        assert f"true: {NAMES[int(labels[i])]}" in ax_img.get_title()
    w.controls["classes"].value = ()
    assert [ln.get_label() for ln in ax_prof.get_lines()] == ["all classes"]
    assert w.model_runs == 1, "the view changes must not rerun the model"
    for ax in (ax_prof, ax_img_s):
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel() and ax.get_legend() is not None


def test_input_validation(setup):
    model, images, labels = setup
    with pytest.raises(ValueError, match="uint8"):
        steering_explorer(model, images.float(), labels, NAMES, normalize=normalize)
    with pytest.raises(ValueError, match=r"labels must be integers of shape \(14,\)"):
        steering_explorer(model, images, labels[:3], NAMES, normalize=normalize)
    with pytest.raises(ValueError, match="class_names has 3 entries but the model has 10 outputs"):
        steering_explorer(model, images, labels % 3, NAMES[:3], normalize=normalize)
    # labels outside the class names: -1 used to be titled with the last class, 10 failed deep in the drawing
    for bad in (-1, 10):
        with pytest.raises(ValueError, match=r"labels must be class indices 0\.\.9"):
            steering_explorer(model, images, torch.full_like(labels, bad), NAMES, normalize=normalize)
    # values a slider would clamp or a dropdown refuse with a TraitError: a clear error instead
    with pytest.raises(ValueError, match=r"factor must be a number in 0\.\.3"):
        steering_explorer(model, images, labels, NAMES, normalize=normalize, factor=5.0)
    w = steering_explorer(model, images, labels, NAMES, normalize=normalize, block="SE_4_3")
    for edit, message in ((("SE_4_3", 99, 0.0), r"channel of SE_4_3 must be an integer in 0\.\.63"),
                          (("SE_X", 0, 0.0), "unknown block 'SE_X'"),
                          (("SE_4_3", 1, 0.0, "foo"), r"mode must be one of \('scale', 'set'\)")):
        with pytest.raises(ValueError, match=message):
            w.show_edit(*edit)
    with pytest.raises(ValueError, match="mode must be one of"):
        w.rank_channels("SE_4_3", 3.0, mode="Scale")  # anything but "scale" used to run "set"
    with pytest.raises(ValueError, match="SE_2_1"):
        steering_explorer(model, images, labels, NAMES, normalize=normalize, block="SE_7_1")
    with pytest.raises(ValueError, match="no SE blocks"):
        steering_explorer(create_model("resnet20"), images, labels, NAMES, normalize=normalize)
    with pytest.raises(TypeError, match="ExcitationStats"):
        recalibration_explorer({}, images, labels, model, NAMES, normalize=normalize)
    three = excitation_stats(model, [(normalize(images), labels % 3)], num_classes=3)  # a 10-class model's
    with pytest.raises(ValueError, match="class_names has 3 entries but the model has 10 outputs"):
        recalibration_explorer(three, images, labels % 3, model, NAMES[:3], normalize=normalize)
    from seresnet.widgets import channel_explorer

    model.train()
    for kwargs, message in (({"block": "SE_9_9"}, "unknown block 'SE_9_9'"),
                            ({"block": "SE_2_1", "channel": 99}, r"channel of SE_2_1 must be an integer in 0\.\.15"),
                            ({"channel": -3}, "must be an integer in"),
                            ({"cls": 12}, r"cls must be an integer in 0\.\.9")):
        with pytest.raises(ValueError, match=message):
            channel_explorer(model, images, labels, NAMES, k=2, **kwargs)
    channel_explorer(model, images, labels, NAMES, k=2)
    assert model.training  # the caller's mode is kept, as the other explorers do
    model.eval()


def test_default_normalize_is_the_cifar_one(setup):
    pytest.importorskip("seresnet.data")
    model, images, labels = setup
    w = steering_explorer(model, images[:3], labels[:3], NAMES)
    with torch.no_grad():
        expected = model(normalize(images[:3])).softmax(1).numpy()
    np.testing.assert_allclose(w.original_probs, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("block", ["SE_2_1", "SE_3_2", "SE_4_3"])
def test_a_new_edit_reruns_only_the_units_after_the_block(setup, block):
    """The explorer caches the input of the edited block's residual unit: a new edit runs from there on, with the
    same probabilities as the whole edited network, and never reruns the stem."""
    model, images, labels = setup
    w = steering_explorer(model, images, labels, CIFAR10_CLASSES, batch_size=5)
    w.controls["block"].value = block
    w.controls["factor"].value = 0.3  # cache the unit input with a first edit
    expected = {c: reference_probs(model, images, block, c, 0.3, "scale") for c in (1, 2)}
    stem_calls = []
    handle = model.stem.register_forward_hook(lambda *a: stem_calls.append(1))
    try:
        for channel in (1, 2):
            w.controls["channel"].value = channel
            probs, _ = w._steered(w.edit_key())
            np.testing.assert_allclose(probs, expected[channel], rtol=1e-5, atol=1e-6)
    finally:
        handle.remove()
    assert not stem_calls


def test_steering_explorer_numbers_outcomes_accuracy_and_jump(setup):
    """Images keep their own numbers, each changed image says whether it became right or wrong, the accuracy under
    the edit comes with a paired interval, and the 'go to' list jumps to a changed image."""
    from seresnet.evaluate import paired_difference

    model, images, labels = setup
    ids = [100 + 7 * k for k in range(len(images))]  # e.g. positions in a larger sample
    w = steering_explorer(model, images, labels, NAMES, normalize=normalize, block="SE_4_3", image_ids=ids)
    w.controls["mode"].value = "set"
    w.controls["factor"].value = 3.0
    for block in ("SE_4_3", "SE_4_2", "SE_3_2", "SE_2_1"):  # find an edit of this random model that flips some
        w.controls["block"].value = block
        for channel in range(w.controls["channel"].max + 1):
            w.controls["channel"].value = channel
            if w.state["changed"]:
                break
        if w.state["changed"]:
            break
    changed = w.state["changed"]
    assert changed, "the test needs an edit that changes predictions"
    preds, orig, y = w.state["predictions"], w.original_predictions, labels.numpy()
    text = w.changed_text.value
    diff, (lo, hi) = paired_difference(torch.from_numpy(preds == y), torch.from_numpy(orig == y))
    assert f"{len(changed)} of {len(images)} images" in text and f"change {diff:+.1%}" in text
    assert f"95% interval {lo:+.1%} to {hi:+.1%}" in text
    options = w.controls["jump"].options[1:]
    assert [value for _, value in options] == [ids[j] for j in changed]
    for (label, _), j in zip(options, changed):
        expected = "now right" if preds[j] == y[j] else "now wrong" if orig[j] == y[j] else "still wrong"
        assert label.endswith(f"({expected})")
    target = options[-1][1]
    w.controls["jump"].value = target
    assert w.controls["image"].value == target and w.state["image_id"] == target
    assert w.state["index"] == ids.index(target) and f"#{target}" in w.figure.axes[0].get_title()
    assert w.controls["jump"].value == w.NO_JUMP  # the list shows its title again, ready for the next jump
    assert w.controls["jump"].label.endswith("changed images ...")
    with pytest.raises(ValueError, match="distinct numbers"):
        steering_explorer(model, images, labels, NAMES, image_ids=[0] * len(images))


def test_recalibration_explorer_filters_images(setup):
    """The image slider can be limited to one class, to misclassified images, or to the images where replacing
    every excitation by its mean moves the true class's probability most."""
    from seresnet.hooks import Replace, steer

    model, images, labels = setup
    x = normalize(images)
    stats = excitation_stats(model, [(x, labels)], 10)
    w = recalibration_explorer(stats, images, labels, model, NAMES, normalize=normalize)
    cls = int(labels[3])
    w.controls["show"].value = f"class:{cls}"
    assert list(w.controls["image"].options) == (labels == cls).nonzero().flatten().tolist()
    assert int(labels[w.state["index"]]) == cls
    w.controls["show"].value = "wrong"
    wrong = (w.predictions != labels).nonzero().flatten().tolist()
    assert list(w.controls["image"].options) == (wrong or [w.controls["image"].value])
    assert w.model_runs == 1
    w.controls["show"].value = "se"
    assert w.model_runs == 2  # one extra sweep, only now
    with torch.no_grad():
        p0 = model(x).softmax(1)
        with steer(model, {b: Replace(stats.overall_mean[b]) for b in stats.block_names}):
            p1 = model(x).softmax(1)
    effect = (p0 - p1)[torch.arange(len(labels)), labels].abs()
    expected = effect.argsort(descending=True, stable=True)[:10].tolist()
    assert list(w.controls["image"].options) == expected
    w.controls["show"].value = "all"
    w.controls["show"].value = "se"
    assert w.model_runs == 2  # cached


def test_rank_channels_finds_the_edits_that_change_predictions(setup):
    model, images, labels = setup
    w = steering_explorer(model, images, labels, NAMES, normalize=normalize, block="SE_3_2")
    ranking = w.rank_channels("SE_3_2", factor=3.0, mode="set")
    assert sorted(c for c, _ in ranking) == list(range(32))
    assert [n for _, n in ranking] == sorted((n for _, n in ranking), reverse=True)
    best, n_best = ranking[0]
    w.show_edit("SE_3_2", best, 3.0, "set")
    assert len(w.state["changed"]) == n_best and w.state["channel"] == best
    ref = reference_probs(model, images, "SE_3_2", best, 3.0, "set")
    assert int((ref.argmax(1) != w.original_predictions).sum()) == n_best


def test_channel_explorer_shows_precomputed_views(setup):
    from seresnet import channels
    from seresnet.widgets import channel_explorer

    model, images, labels = setup
    w = channel_explorer(model, images, labels, NAMES, k=4, block="SE_3_2")
    runs = w.model_runs
    w.controls["channel"].value = 7
    w.controls["class"].value = 2
    ex = channels.channel_examples(model, images, ["SE_3_2"], k=4)["SE_3_2"]
    assert w.state["top"] == ex.top_s[7].tolist()
    for ax, i in zip(w.figure.axes[:4], ex.top_s[7].tolist()):
        np.testing.assert_array_equal(ax.get_images()[0].get_array(), images[i].permute(1, 2, 0).numpy())
    attribution = channels.gate_attribution(model, images, labels, "SE_3_2")[:, 7].numpy()
    np.testing.assert_allclose(w.state["attribution"], attribution, rtol=1e-5, atol=1e-7, equal_nan=True)
    ax_attr = w.figure.axes[-1]
    heights = [b.get_height() for b in ax_attr.containers[0]]
    np.testing.assert_allclose(heights, attribution, rtol=1e-5, atol=1e-7, equal_nan=True)  # no bar: no images
    assert ax_attr.containers[0][2].get_facecolor()[:3] != ax_attr.containers[0][0].get_facecolor()[:3]
    w.controls["block"].value = "SE_4_3"
    assert w.controls["channel"].max == 63 and w.model_runs == runs  # view changes never rerun the model


def test_steering_explorer_draws_what_an_additive_gate_does(setup):
    """GC adds its context vector to U instead of scaling U: the "after" map is the block's real output under the
    edit, taken here from a forward hook on the GC block while steer() applies the same edit."""
    from seresnet.hooks import Scale, steer

    _, images, labels = setup
    torch.manual_seed(0)
    model = create_model("gc_resnet20").eval()
    with torch.no_grad():
        for block in model.se_blocks().values():  # the last layer starts at zero: give the context some size
            for p in block.parameters():
                p.add_(torch.randn_like(p) * 0.5)
    w = steering_explorer(model, images, labels, NAMES, normalize=normalize, block="SE_4_3", factor=0.5)
    seen = {}
    # a copy: the residual unit adds the shortcut and applies ReLU in place to the tensor the block returns
    hook = model.se_blocks()["SE_4_3"].register_forward_hook(lambda mod, inp, out: seen.update(out=out.clone()))
    try:
        with torch.no_grad(), steer(model, {"SE_4_3": Scale(0.5, channels=[0])}):
            model(normalize(images))
    finally:
        hook.remove()
    ax_after = w.figure.axes[2]
    i = w.controls["image"].value
    np.testing.assert_allclose(ax_after.get_images()[0].get_array(), seen["out"][i, 0].numpy(), rtol=1e-4, atol=1e-5)
    assert ax_after.get_title().startswith("after: U + s")
    # the channel explorer's class-mean axis follows GC's context values outside [0, 1] instead of clipping them
    from seresnet.widgets import channel_explorer

    c = channel_explorer(model, images, labels, NAMES, block="SE_4_3", channel=2, k=4)
    means = c.stats.mean["SE_4_3"][:, 2].numpy()
    low, high = c._ax_mean.get_ylim()
    finite = means[np.isfinite(means)]
    assert (finite.min() < 0 or finite.max() > 1) and low <= finite.min() and high >= finite.max()
