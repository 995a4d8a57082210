"""seresnet.channels against direct computation: top-k vs a full sort, gradient x excitation vs autograd on a manual
graph, patching with an image's own excitations changes nothing, Grad-CAM vs a manual implementation, load_image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seresnet import channels, create_model, hooks
from seresnet.data import normalize


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = create_model("se_resnet20").eval()
    with torch.no_grad():
        for m in model.modules():  # non-trivial BN statistics, so that excitations differ between images
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (30, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(10).repeat(3)
    return model, images, labels


def test_channel_examples_equal_a_full_sort(setup) -> None:
    model, images, _ = setup
    ex = channels.channel_examples(model, images, ["SE_3_2", "SE_4_1"], k=5, batch_size=7)  # several batches
    with torch.no_grad(), hooks.capture(model, ["SE_3_2", "SE_4_1"]) as cap:
        model(normalize(images))
    for b in ("SE_3_2", "SE_4_1"):
        s, z = cap.excitation[b].T, cap.squeeze[b].T  # (C, N)
        torch.testing.assert_close(ex[b].top_s_values, s.sort(1, descending=True).values[:, :5])
        torch.testing.assert_close(ex[b].bottom_s_values, s.sort(1).values[:, :5])
        torch.testing.assert_close(ex[b].top_z_values, z.sort(1, descending=True).values[:, :5])
        # the indices point at those values (other batch sizes may round the last bits differently)
        torch.testing.assert_close(s.gather(1, ex[b].top_s), ex[b].top_s_values)
    with pytest.raises(ValueError, match="uint8"):
        channels.channel_examples(model, images.float())


def test_gradient_times_excitation_equals_autograd_on_a_manual_graph(setup) -> None:
    model, images, labels = setup
    block = "SE_4_2"
    attribution = channels.gate_attribution(model, images, labels, block, batch_size=8)
    # manual graph: run up to the block, take s as a leaf, finish the forward pass by hand
    se = model.se_blocks()[block]
    unit = model.layer3[1]
    with torch.no_grad(), hooks.capture(model, block, features=True) as cap:
        model(normalize(images))
    s = cap.excitation[block].clone().requires_grad_(True)
    u = cap.inputs[block]
    with torch.no_grad():
        h = model.stem(normalize(images))
        h = model.layer1(h)
        h = model.layer2(h)
        h_in = model.layer3[0](h)
    out = F.relu(u * s[:, :, None, None] + h_in)  # unit output: scaled branch + identity, then ReLU
    out = model.layer3[2](out)
    logits = model.forward_head(out)
    logits.gather(1, labels[:, None]).sum().backward()
    per_image = (s.grad * s).detach().double()
    expected = torch.stack([per_image[labels == k].mean(0) for k in range(10)])
    torch.testing.assert_close(attribution, expected, rtol=1e-4, atol=1e-6)
    assert se.channels == attribution.shape[1] and unit.se is se


def test_exact_edit_agrees_with_the_linear_estimate_for_a_small_edit(setup) -> None:
    model, images, labels = setup
    block, c = "SE_4_3", 3
    with torch.no_grad(), hooks.capture(model, block) as cap:
        model(normalize(images))
    s_c = cap.excitation[block][:, c]
    eps = 1e-3
    effect = channels.gate_edit_effect(model, images, labels, block, c, value=float(s_c.mean()) + eps)
    assert effect["logit_change"].shape == (10,) and 0 <= effect["accuracy_after"] <= 1
    mean_effect = channels.gate_edit_effect(model, images, labels, block, c, value="mean")
    assert mean_effect["value"] == pytest.approx(float(s_c.double().mean()))
    unchanged = channels.gate_edit_effect(model, images[:1], labels[:1], block, c, value=float(s_c[0]))
    assert abs(float(unchanged["logit_change"][labels[0]])) < 1e-5  # setting s_c to its own value changes nothing


def test_patching_with_own_excitations_changes_nothing_bit_exactly(setup) -> None:
    model, images, _ = setup
    with torch.no_grad(), hooks.capture(model) as cap:
        logits = model(normalize(images))
    own = {b: cap.excitation[b] for b in ("SE_3_1", "SE_4_2")}
    assert torch.equal(channels.patch_excitations(model, images, own, batch_size=30), logits)
    swapped = {b: v.flip(0) for b, v in own.items()}  # image i gets image N-1-i's excitations
    assert not torch.equal(channels.patch_excitations(model, images, swapped, batch_size=30), logits)
    with pytest.raises(ValueError, match="one row per image"):
        channels.patch_excitations(model, images, {"SE_3_1": own["SE_3_1"][:3]})


@pytest.mark.parametrize("after", [True, False])
def test_grad_cam_matches_a_manual_implementation(setup, after: bool) -> None:
    model, images, labels = setup
    block = "SE_3_3"
    cam = channels.grad_cam(model, images, block, labels, after_scaling=after)
    se = model.se_blocks()[block]
    store = {}

    def keep(t):
        t = t.clone()  # a tensor of its own: the unit adds its identity to the block's output in place
        t.retain_grad()
        store["a"] = t
        return t * 1.0

    handle = (se.register_forward_hook(lambda m, a, o: keep(o)) if after else
              se.register_forward_pre_hook(lambda m, a: (keep(a[0].detach().requires_grad_()),)))
    try:
        logits = model(normalize(images))
        logits.gather(1, labels[:, None]).sum().backward()
    finally:
        handle.remove()
    a = store["a"]
    expected = torch.relu((a.grad.mean((2, 3), keepdim=True) * a).sum(1)).detach()
    assert cam.shape == (30, 8 if block.startswith("SE_4") else 16, 8 if block.startswith("SE_4") else 16)
    torch.testing.assert_close(cam, expected, rtol=1e-4, atol=1e-6)


def test_load_image_any_photo(tmp_path: Path) -> None:
    from PIL import Image

    wide = np.zeros((60, 100, 3), dtype=np.uint8)
    wide[:, 20:80] = 200  # the centre square of a wide image is the bright part
    Image.fromarray(wide).save(tmp_path / "wide.png")
    img = channels.load_image(tmp_path / "wide.png")
    assert img.shape == (3, 32, 32) and img.dtype == torch.uint8 and img.float().mean() > 150
    assert torch.equal(channels.load_image(wide), img)
    assert torch.equal(channels.load_image(torch.from_numpy(wide).permute(2, 0, 1)), img)
    with pytest.raises(FileNotFoundError, match="no image at"):
        channels.load_image(tmp_path / "missing.png")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read"):
        channels.load_image(tmp_path / "notes.txt")
    with pytest.raises(TypeError, match="uint8"):
        channels.load_image(wide.astype(np.float32) / 255)
    with pytest.raises(ValueError, match="RGB array"):
        channels.load_image(np.zeros((32, 32), dtype=np.uint8))
    # 16-bit and float images: PIL's RGB conversion would clip them (a 16-bit ramp turns almost all white)
    ramp = Image.fromarray(np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16))
    ramp.save(tmp_path / "ramp16.png")
    with pytest.raises(ValueError, match="pixel mode 'I;16'; expected an 8-bit image"):
        channels.load_image(tmp_path / "ramp16.png")
    with pytest.raises(ValueError, match="pixel mode 'F'"):
        channels.load_image(Image.fromarray(np.zeros((8, 8), dtype=np.float32)))
    grey = Image.fromarray(np.full((8, 8), 100, dtype=np.uint8))  # 8-bit grey is fine: the same value in R, G, B
    assert torch.equal(channels.load_image(grey, size=8), torch.full((3, 8, 8), 100, dtype=torch.uint8))


def test_channel_plots_draw_the_given_data(setup) -> None:
    from seresnet import plots

    model, images, labels = setup
    ex = channels.channel_examples(model, images, ["SE_4_2"], k=4)["SE_4_2"]
    fig = plots.plot_channel_examples(images, ex, 5, k=4, class_names=[str(i) for i in range(10)], labels=labels)
    top_axes = fig.axes[:4]
    for ax, i in zip(top_axes, ex.top_s[5].tolist()):
        np.testing.assert_array_equal(ax.get_images()[0].get_array(), images[i].permute(1, 2, 0).numpy())
        assert ax.get_title().startswith(f"s={float(ex.top_s_values[5][top_axes.index(ax)]):.2f}")
    est, exact = torch.randn(10), torch.randn(10)
    bars = plots.plot_attribution_check(est, exact).axes[0].containers
    np.testing.assert_allclose([b.get_height() for b in bars[0]], est.numpy(), rtol=1e-6)
    np.testing.assert_allclose([b.get_height() for b in bars[1]], exact.numpy(), rtol=1e-6)
    u = torch.randn(8, 8)
    fig = plots.plot_channel_on_image(images[0], u, 0.5 * u, 0.5)
    before, after = (ax.get_images()[1].get_array() for ax in fig.axes[1:3])
    np.testing.assert_allclose(np.asarray(after), 0.5 * np.asarray(before), rtol=1e-5, atol=1e-6)
    assert "s_c = 0.50" in fig.axes[2].get_title()
    # a non-square image: the map is laid over it at its own height and width, not stretched to a square
    tall = torch.zeros(3, 32, 24, dtype=torch.uint8)
    fig = plots.plot_channel_on_image(tall, torch.rand(8, 6), torch.rand(8, 6))
    assert fig.axes[1].get_images()[1].get_array().shape == (32, 24)


def test_attribution_of_all_blocks_in_one_pass_equals_block_by_block(setup) -> None:
    model, images, labels = setup
    everything = channels.gate_attribution_all(model, images, labels, batch_size=16)
    for b in ("SE_2_1", "SE_4_3"):
        torch.testing.assert_close(everything[b], channels.gate_attribution(model, images, labels, b),
                                   rtol=1e-5, atol=1e-7)


def test_per_channel_views_of_every_gate_shape() -> None:
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float64).reshape(2, 3, 4, 5)
    torch.testing.assert_close(channels.per_channel(x), x.mean(dim=(2, 3)))  # spatial gate: mean over positions
    two = torch.stack([torch.ones(2, 3), torch.zeros(2, 3)], 1)  # CBAM's (B, 2, C) squeeze: average row first
    torch.testing.assert_close(channels.per_channel(two), torch.ones(2, 3))
    with pytest.raises(ValueError, match="expected \\(B, C\\)"):
        channels.per_channel(torch.zeros(3))


@pytest.mark.parametrize(("name", "options"), [("cbam_resnet20", {}), ("nosqueeze_resnet20", {}), ("gc_resnet20", {}),
                                               ("ge_resnet20", {"ge_extent": 2})])
def test_channel_views_accept_other_attention_modules(name: str, options: dict) -> None:
    torch.manual_seed(0)
    model = create_model(name, **options).eval()
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(10).repeat(2)
    block = "SE_3_2"
    ex = channels.channel_examples(model, images, [block], k=3)[block]
    with torch.no_grad(), hooks.capture(model, block) as cap:
        model(normalize(images))
    s = channels.per_channel(cap.excitation[block]).T
    torch.testing.assert_close(ex.top_s_values, s.sort(1, descending=True).values[:, :3])
    # attribution of a spatial gate: gradient x gate summed over positions, from autograd on the gate itself
    attribution = channels.gate_attribution(model, images, labels, block)
    kept = []

    def keep(module, args, out):
        out.requires_grad_(True)
        kept.append(out)
        return out

    handle = model.se_blocks()[block].excitation.register_forward_hook(keep)
    try:
        with torch.enable_grad():  # these modules have no fused path: the hook sees the gate in the graph
            logits = model(normalize(images))
            (grad,) = torch.autograd.grad(logits.gather(1, labels[:, None]).sum(), kept[0])
    finally:
        handle.remove()
    per_image = (grad * kept[0]).double()
    per_image = per_image.sum(dim=(2, 3)) if per_image.ndim == 4 else per_image
    expected = torch.stack([per_image[labels == k].mean(0) for k in range(10)])
    torch.testing.assert_close(attribution, expected, rtol=1e-4, atol=1e-6)


def test_largest_class_lift_is_the_maximum_over_every_class_and_channel(setup) -> None:
    """Notebook 07's choice of channel: the largest class mean minus overall mean, found by brute force."""
    model, images, labels = setup
    stats = hooks.excitation_stats(model, [(normalize(images), labels)], num_classes=10)
    for blocks in (None, ["SE_2_1", "SE_3_2"]):
        searched = blocks or ["SE_4_1", "SE_4_2", "SE_4_3"]  # default: the last stage
        best = max((float(stats.mean[b][k, c] - stats.overall_mean[b][c]), b, k, c) for b in searched
                    for k in range(10) for c in range(stats.channels[b]))
        assert channels.largest_class_lift(stats, blocks) == best[1:]
    with pytest.raises(ValueError, match="expected SE blocks"):
        channels.largest_class_lift(stats, ["SE_9_9"])
    with pytest.raises(ValueError, match="expected SE blocks"):
        channels.largest_class_lift(stats, [])
    # a class without images has no class mean (NaN): it is never chosen
    partial = hooks.excitation_stats(model, [(normalize(images[labels != 3]), labels[labels != 3])], num_classes=10)
    assert channels.largest_class_lift(partial)[1] != 3
    assert torch.isnan(partial.mean["SE_4_1"][3]).all()


def test_attribution_and_edit_refuse_labels_that_are_not_class_indices(setup) -> None:
    model, images, labels = setup
    for bad in (torch.full_like(labels, 10), torch.full_like(labels, -1)):
        with pytest.raises(ValueError, match=r"labels must be class indices 0\.\.9 \(integers\)"):
            channels.gate_attribution(model, images, bad, "SE_2_1")
        with pytest.raises(ValueError, match=r"labels must be class indices 0\.\.9 \(integers\)"):
            channels.gate_edit_effect(model, images, bad, "SE_2_1", 0)
