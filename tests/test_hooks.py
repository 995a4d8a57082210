"""Tests of seresnet.hooks: capture, steering and streaming excitation statistics.

Every expected value is computed here independently of the code under test: pooling and the excitation MLP by hand
from the block's weights, statistics with plain torch over all activations at once.
"""

from __future__ import annotations

import gc
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import GATE_FNS

from seresnet import create_model
from seresnet.hooks import (
    Constant,
    ExcitationStats,
    Off,
    Replace,
    Scale,
    capture,
    excitation_stats,
    resolve_blocks,
    se_block_names,
    steer,
)


def _randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give BN layers non-trivial statistics so that feature maps are not all standard normal."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def _model(name: str = "se_resnet20", seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return _randomize_bn(create_model(name, **kw), seed).eval()


def _assert_no_hooks(model: torch.nn.Module) -> None:
    for name, m in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_forward_hooks_with_kwargs"):
            assert not getattr(m, attr, {}), f"{name or 'model'}.{attr} not empty"


def _manual_excitation(se, z: torch.Tensor, gate: str) -> torch.Tensor:
    e = se.excitation
    h = F.relu(F.linear(z, e.fc1.weight, e.fc1.bias))
    return GATE_FNS[gate](F.linear(h, e.fc2.weight, e.fc2.bias))


# --- capture ---------------------------------------------------------------------------------------------------
CONFIGS = [
    dict(),  # se_resnet20: basic blocks, standard integration, avg squeeze, sigmoid
    dict(integration="pre"),
    dict(integration="post", squeeze="max"),
    dict(integration="identity", gate="tanh"),
    dict(gate="hard_sigmoid"),
    dict(gate="relu", squeeze="max"),
    dict(depth=11, block="bottleneck"),
    dict(depth=11, block="bottleneck", integration="3x3"),
    dict(depth=11, block="bottleneck", integration="pre", gate="hard_sigmoid"),
    dict(depth=11, block="bottleneck", integration="post"),
    dict(depth=11, block="bottleneck", integration="identity", squeeze="max"),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_capture_matches_manual_computation(cfg):
    model = _model(**cfg)
    squeeze, gate = cfg.get("squeeze", "avg"), cfg.get("gate", "sigmoid")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad(), capture(model, features=True) as cap:
        logits = model(x)
    names = list(model.se_blocks())
    assert cap.blocks == names
    for name, se in model.se_blocks().items():
        u, z, s, out = cap.inputs[name], cap.squeeze[name], cap.excitation[name], cap.outputs[name]
        c = se.channels
        assert u.shape[:2] == (3, c) and z.shape == s.shape == (3, c) and out.shape == u.shape
        pooled = u.mean(dim=(2, 3)) if squeeze == "avg" else u.amax(dim=(2, 3))
        torch.testing.assert_close(z, pooled, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(s, _manual_excitation(se, z, gate), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out, u * s[:, :, None, None], rtol=1e-5, atol=1e-6)
        assert not (u.requires_grad or z.requires_grad or s.requires_grad)
        assert s.device.type == "cpu" and s.dtype == torch.float32
    # The capture did not change what the model computes.
    with torch.no_grad():
        assert torch.equal(model(x), logits)
    _assert_no_hooks(model)


def test_capture_sees_the_right_feature_maps():
    """U is what each integration mode says it is, computed here through the network's own layers."""
    x = torch.randn(2, 3, 32, 32)
    # standard: SE_2_1 acts on bn2(conv2(relu(bn1(conv1(stem(x)))))) of the first unit
    model = _model()
    unit = model.layer1[0]
    with torch.no_grad():
        expected = unit.bn2(unit.conv2(F.relu(unit.bn1(unit.conv1(model.stem(x))))))
        with capture(model, "SE_2_1", features=True) as cap:
            model(x)
    torch.testing.assert_close(cap.inputs["SE_2_1"], expected)
    # pre: SE_2_1 acts on the stem output
    model = _model(integration="pre")
    with torch.no_grad(), capture(model, "SE_2_1", features=True) as cap:
        model(x)
        torch.testing.assert_close(cap.inputs["SE_2_1"], model.stem(x))
    # post: the last SE output is the network's final feature map
    model = _model(integration="post")
    with torch.no_grad(), capture(model, "SE_4_3", features=True) as cap:
        feats = model.forward_features(x)
    torch.testing.assert_close(cap.outputs["SE_4_3"], feats)


def test_imagenet_bottleneck_model_names_and_shapes():
    model = _model("se_resnet50")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), capture(model, ["SE_2_3", "SE_5_*"]) as cap:
        model(x)
    assert cap.blocks == ["SE_2_3", "SE_5_1", "SE_5_2", "SE_5_3"]
    assert cap.excitation["SE_2_3"].shape == (1, 256)
    assert cap.excitation["SE_5_3"].shape == (1, 2048)
    se = model.se_blocks()["SE_5_2"]
    torch.testing.assert_close(cap.excitation["SE_5_2"], _manual_excitation(se, cap.squeeze["SE_5_2"], "sigmoid"))
    assert len(se_block_names(model)) == 3 + 4 + 6 + 3
    _assert_no_hooks(model)


def test_capture_accumulates_clears_and_converts_dtype():
    model = _model()
    xs = [torch.randn(b, 3, 32, 32) for b in (2, 5, 1)]
    with torch.no_grad(), capture(model, "SE_3_*", dtype=torch.float64) as cap:
        empty = cap.excitation["SE_3_1"]
        assert empty.shape == (0, 32)
        singles = []
        for x in xs:
            with capture(model, "SE_3_2") as one:  # a second, independent capture on the same block
                model(x)
            singles.append(one.excitation["SE_3_2"])
        assert cap.num_samples == 8
        s = cap.excitation["SE_3_2"]
        assert s.shape == (8, 32) and s.dtype == torch.float64
        torch.testing.assert_close(s, torch.cat(singles).double())
        assert cap.excitation["SE_3_2"] is cap.excitation["SE_3_2"]  # concatenated once, then cached
        model(xs[0])  # more data after a read is appended to the cached tensor
        assert cap.excitation["SE_3_2"].shape == (10, 32)
        cap.clear()
        assert cap.excitation["SE_3_1"].shape == (0, 32) and cap.num_samples == 0
        model(xs[1])
        assert cap.squeeze["SE_3_3"].shape == (5, 32)
    assert sorted(cap.squeeze) == ["SE_3_1", "SE_3_2", "SE_3_3"]
    with pytest.raises(KeyError, match="SE_3_1"):
        cap.excitation["SE_2_1"]
    with pytest.raises(RuntimeError, match="features=True"):
        cap.inputs  # noqa: B018
    _assert_no_hooks(model)


def test_capture_in_train_mode_with_gradients():
    model = _model().train()
    x = torch.randn(4, 3, 32, 32)
    with capture(model, "SE_2_1", features=True) as cap:
        loss = model(x).logsumexp(1).mean()
        loss.backward()  # hooks must not break autograd (inplace ReLUs, saved sigmoid output)
    assert model.layer1[0].se.excitation.fc1.weight.grad is not None
    s = cap.excitation["SE_2_1"]
    assert s.shape == (4, 16) and not s.requires_grad
    _assert_no_hooks(model)


def test_hooks_removed_on_exit_even_after_exception():
    model = _model()
    with pytest.raises(RuntimeError, match="boom"):
        with capture(model, features=True):
            model(torch.randn(1, 3, 32, 32))
            raise RuntimeError("boom")
    _assert_no_hooks(model)
    with pytest.raises(RuntimeError, match="boom"):
        with steer(model, {"SE_*": Off()}), capture(model):
            raise RuntimeError("boom")
    _assert_no_hooks(model)
    # Plain object use with remove(), twice is fine.
    cap = capture(model)
    assert cap.active
    cap.remove()
    cap.remove()
    assert not cap.active
    _assert_no_hooks(model)
    # A bad edit is rejected before any hook is registered.
    with pytest.raises(ValueError):
        steer(model, {"SE_2_1": Off(), "SE_4_1": Scale(2.0, channels=[64])})
    _assert_no_hooks(model)


def test_bad_names_and_models_without_se_raise():
    with pytest.raises(ValueError, match="no SE blocks"):
        capture(create_model("resnet20"))
    with pytest.raises(ValueError, match="no SE blocks"):
        steer(create_model("resnet20"), {"SE_2_1": Off()})
    model = _model()
    for bad in ("SE_9_1", "SE_5_*", ["SE_2_1", "se_2_1"]):
        with pytest.raises(ValueError, match=r"SE_2_1, SE_2_2, .*SE_4_3"):
            capture(model, bad)
    with pytest.raises(ValueError, match="SE_4_3"):
        steer(model, {"conv1": Off()})
    with pytest.raises(ValueError, match="non-empty"):
        capture(model, [])
    with pytest.raises(TypeError):
        capture(model, 3)
    with pytest.raises(ValueError, match="dtype"):
        capture(model, dtype=torch.int64)
    _assert_no_hooks(model)


def test_resolve_blocks_globs_lists_and_order():
    model = _model()
    assert list(resolve_blocks(model, ["SE_4_1", "SE_2_*"])) == ["SE_2_1", "SE_2_2", "SE_2_3", "SE_4_1"]
    assert list(resolve_blocks(model, "SE_?_2")) == ["SE_2_2", "SE_3_2", "SE_4_2"]
    assert resolve_blocks(model, "SE_3_3")["SE_3_3"] is model.layer2[2].se
    # A model that is not an SEResNet but contains one is searched too (e.g. a normaliser in front).
    wrapped = torch.nn.Sequential(torch.nn.Identity(), model)
    assert se_block_names(wrapped) == se_block_names(model)


def test_se_stages_subset():
    model = _model(se_stages=(4,))
    assert se_block_names(model) == ["SE_4_1", "SE_4_2", "SE_4_3"]
    with pytest.raises(ValueError, match="SE_4_1, SE_4_2, SE_4_3"):
        capture(model, "SE_2_1")


# --- steering --------------------------------------------------------------------------------------------------
def test_scale_zero_in_post_mode_zeroes_the_features():
    model = _model(integration="post")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        with steer(model, {"SE_4_3": Scale(0.0)}):
            feats = model.forward_features(x)
            logits = model(x)
        after = model(x)
    assert torch.count_nonzero(feats) == 0
    torch.testing.assert_close(logits, model.fc.bias.expand(3, -1))
    assert torch.equal(before, after)
    _assert_no_hooks(model)


def test_scale_zero_in_standard_mode_removes_the_residual_branch():
    model = _model()
    unit = model.layer1[1]  # SE_2_2: no downsample, so the unit computes relu(x + se(branch(x)))
    seen = {}
    h = unit.register_forward_hook(lambda m, a, o: seen.update(inp=a[0].clone(), out=o.clone()))
    try:
        with torch.no_grad(), steer(model, {"SE_2_2": Scale(0.0)}):
            model(torch.randn(2, 3, 32, 32))
    finally:
        h.remove()
    torch.testing.assert_close(seen["out"], F.relu(seen["inp"]))


def test_off_equals_plain_resnet_with_the_same_weights():
    model = _model()
    plain = create_model("resnet20").eval()
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(".se." in k for k in unexpected)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        with steer(model, {"SE_*": Off()}):
            off = model(x)
        ref = plain(x)
        after = model(x)
    torch.testing.assert_close(off, ref, rtol=0, atol=0)
    assert not torch.allclose(before, off)
    assert torch.equal(before, after)


def test_edits_on_captured_excitation():
    model = _model()
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        with capture(model) as plain:
            model(x)
        assert not plain.steered
        vec = torch.linspace(0.1, 0.9, 32)
        edits = {
            "SE_2_1": Scale(2.0, channels=[3, 7]),
            "SE_2_2": Constant(0.25, channels=5),
            "SE_2_3": Constant(0.75),
            "SE_3_2": Replace(vec),
            "SE_4_*": Off(),
        }
        # Capture entered first, steering second: the capture still records the edited values.
        with capture(model) as cap, steer(model, edits) as handle:
            model(x)
    assert handle.blocks == ["SE_2_1", "SE_2_2", "SE_2_3", "SE_3_2", "SE_4_1", "SE_4_2", "SE_4_3"]
    assert cap.steered
    s0, s = plain.excitation, cap.excitation
    expected = s0["SE_2_1"].clone()
    expected[:, [3, 7]] *= 2
    torch.testing.assert_close(s["SE_2_1"], expected)
    expected = s0["SE_2_2"].clone()
    expected[:, 5] = 0.25
    # SE_2_2's input changed because SE_2_1 was edited, so compare the untouched channels with a manual recompute.
    se = model.se_blocks()["SE_2_2"]
    manual = _manual_excitation(se, cap.squeeze["SE_2_2"], "sigmoid")
    manual[:, 5] = 0.25
    torch.testing.assert_close(s["SE_2_2"], manual)
    assert torch.all(s["SE_2_3"] == 0.75)
    torch.testing.assert_close(s["SE_3_2"], vec.expand(5, -1))
    for n in ("SE_4_1", "SE_4_2", "SE_4_3"):
        assert torch.all(s[n] == 1)
    # Unsteered blocks before the first edit are unchanged; SE_3_1 sees a different input, so its s changes.
    torch.testing.assert_close(s["SE_2_1"][:, :3], s0["SE_2_1"][:, :3])
    assert not torch.allclose(s["SE_3_1"], s0["SE_3_1"])
    _assert_no_hooks(model)


def test_overlapping_edits_apply_in_order_and_nested_steers_compose():
    model = _model()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        with capture(model, "SE_4_1") as cap, steer(model, {"SE_4_*": Off(), "SE_4_1": Scale(0.5, [0])}):
            model(x)
        assert torch.all(cap.excitation["SE_4_1"][:, 0] == 0.5) and torch.all(cap.excitation["SE_4_1"][:, 1:] == 1)
        with capture(model, "SE_4_1") as cap, steer(model, {"SE_4_1": Constant(0.2)}):
            with steer(model, {"SE_4_1": Scale(3.0)}):
                model(x)
        # The inner steer was registered last with prepend, so it runs first: 3 * s, then set to 0.2.
        assert torch.allclose(cap.excitation["SE_4_1"], torch.full((2, 64), 0.2))
    _assert_no_hooks(model)


def test_edit_validation_messages():
    model = _model()
    with pytest.raises(ValueError, match=r"channel\(s\) \[16\] out of range for SE_2_1, which has 16 channels"):
        steer(model, {"SE_2_1": Scale(0.0, channels=[0, 16])})
    with pytest.raises(ValueError, match="vector has length 16 but SE_4_1 has 64 channels"):
        steer(model, {"SE_4_*": Replace(torch.ones(16))})
    with pytest.raises(ValueError, match="non-negative"):
        Scale(1.0, channels=[-1])
    with pytest.raises(ValueError, match="finite"):
        Scale(float("nan"))
    with pytest.raises(ValueError, match="single real number, got '0.5'"):
        Constant("0.5")
    with pytest.raises(ValueError, match="1-D"):
        Replace(torch.ones(2, 16))
    with pytest.raises(ValueError, match="NaN"):
        Replace(torch.tensor([0.5, float("nan")]))
    with pytest.raises(ValueError, match="empty"):
        Constant(0.0, channels=[])
    with pytest.raises(TypeError, match="Scale, Constant, Replace or Off"):
        steer(model, {"SE_2_1": 0.5})
    with pytest.raises(ValueError, match="non-empty dict"):
        steer(model, {})
    assert Scale(2, channels=torch.tensor([1, 2])).channels == (1, 2)
    # numpy indices, as np.argmax / np.argsort return them, like torch's
    assert Scale(2, channels=np.argmax([1, 5, 2])).channels == (1,)
    assert Scale(2, channels=np.array([3, 0])).channels == (3, 0)
    with pytest.raises(ValueError, match="channels must be integer indices, got a float64 array"):
        Scale(2, channels=np.array([1.5]))
    _assert_no_hooks(model)


def test_edits_refuse_values_that_overflow_or_are_not_numbers():
    """Scale(1e39) used to pass and give NaN logits; Replace('abc') gave a raw torch error."""
    for make in (Scale, Constant):
        for bad in (1e39, -1e5, float("inf")):
            with pytest.raises(ValueError, match=r"finite number with \|.*\| <= 10000"):
                make(bad)
    assert Scale(1e4).factor == 1e4 and Constant(-1e4).value == -1e4
    assert Scale(np.float32(0.5)).factor == 0.5  # numpy scalars are numbers too
    with pytest.raises(ValueError, match="single real number, got True"):
        Scale(True)
    # what a model or a statistic hands over: a one-element tensor is its number, a longer one is not a factor
    assert Scale(torch.tensor(0.5)).factor == 0.5 and Constant(torch.tensor([2.0])).value == 2.0
    with pytest.raises(ValueError, match="single real number"):
        Scale(torch.tensor([0.5, 0.2]))
    for bad in ("abc", b"ab", None, {"a": 1}, [0.5, "x"], [[0.5], [0.5, 0.5]]):
        with pytest.raises(TypeError, match=r"Replace needs a vector of C finite numbers \(shape \(C,\)"):
            Replace(bad)
    with pytest.raises(TypeError, match="Replace needs .* got a torch.bool tensor"):
        Replace(torch.ones(16, dtype=torch.bool))
    with pytest.raises(TypeError, match="Replace needs .* got a torch.complex64 tensor"):
        Replace(torch.ones(16, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"shape \(C,\).*got shape \(\)"):
        Replace(torch.tensor(0.5))
    with pytest.raises(ValueError, match="empty"):
        Replace([])
    with pytest.raises(ValueError, match=r"entries with \|.*\| <= 10000.*1e\+39"):
        Replace(torch.full((16,), 1e39, dtype=torch.float64))
    # tensors, arrays and lists of numbers all work, and give finite logits
    model = _model().eval()
    x = torch.randn(2, 3, 32, 32)
    for vector in (torch.full((64,), 0.5), np.full(64, 0.5), [0.5] * 64, range(64)):
        with torch.no_grad(), steer(model, {"SE_4_1": Replace(vector), "SE_4_2": Scale(1e4)}):
            assert torch.isfinite(model(x)).all()
    _assert_no_hooks(model)


def test_steering_undone_exactly_in_train_mode_too():
    model = _model()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        for edit in (Scale(0.3), Constant(0.9, [1, 2]), Off(), Replace(torch.rand(64))):
            key = "SE_4_2" if isinstance(edit, Replace) else "SE_*"
            with steer(model, {key: edit}):
                assert not torch.equal(model(x), ref)
            assert torch.equal(model(x), ref)
    _assert_no_hooks(model)


# --- streaming statistics --------------------------------------------------------------------------------------
def _batches(sizes, num_present, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in sizes:
        out.append((torch.randn(b, 3, 32, 32, generator=g), torch.randint(0, num_present, (b,), generator=g)))
    return out


def test_streaming_stats_equal_all_at_once():
    model = _model()
    k = 5
    batches = _batches([7, 13, 1, 20, 9], num_present=4)  # class 4 never appears
    labels = torch.cat([b[1] for b in batches])
    # Same batches as the stream: float32 convolutions round differently for other batch sizes.
    with torch.no_grad(), capture(model, dtype=torch.float64) as cap:
        for images, _ in batches:
            model(images)
    all_s = {n: cap.excitation[n] for n in cap.blocks}
    lo_q, hi_q = 0.4, 0.6  # random weights keep s near 0.5, so pick thresholds that split the data
    flat = torch.cat([s.flatten() for s in all_s.values()])
    low, high = float(flat.quantile(lo_q)), float(flat.quantile(hi_q))

    model.train()  # excitation_stats must switch to eval and back
    stats = excitation_stats(model, iter(batches), k, low=low, high=high)
    assert model.training
    assert stats.block_names == cap.blocks and stats.num_classes == k
    assert stats.count.tolist() == torch.bincount(labels, minlength=k).tolist()
    assert stats.num_images == len(labels)
    for n, s in all_s.items():
        for c in range(4):
            sel = s[labels == c]
            torch.testing.assert_close(stats.mean[n][c], sel.mean(0), rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(stats.std[n][c], sel.std(0, correction=0), rtol=1e-8, atol=1e-12)
        assert torch.isnan(stats.mean[n][4]).all() and torch.isnan(stats.std[n][4]).all()
        torch.testing.assert_close(stats.overall_mean[n], s.mean(0), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(stats.overall_std[n], s.std(0, correction=0), rtol=1e-8, atol=1e-12)
        frac_low, frac_high = stats.saturation()[n]
        assert frac_low == pytest.approx(float((s < low).double().mean()))
        assert frac_high == pytest.approx(float((s > high).double().mean()))
        per_low, per_high = stats.saturation_per_channel()[n]
        torch.testing.assert_close(per_low, (s < low).double().mean(0))
        torch.testing.assert_close(per_high, (s > high).double().mean(0))
        # class specificity: std across (present) classes of the class means, averaged over channels
        means = torch.stack([s[labels == c].mean(0) for c in range(4)])
        assert stats.class_specificity()[n] == pytest.approx(float(means.std(0, correction=0).mean()))
        # normalised: between-class variance / total variance, per channel, averaged
        counts = torch.bincount(labels, minlength=4)[:4].double()
        between = (counts[:, None] * (means - s.mean(0)) ** 2).sum(0) / len(labels)
        var = s.var(0, correction=0)
        eta2 = (between / var)[var > 0]  # constant channels are 0/0: undefined, left out
        expected = float(eta2.mean()) if eta2.numel() else float("nan")
        assert stats.class_specificity(normalize=True)[n] == pytest.approx(expected, nan_ok=True)


def test_stats_with_a_dataloader_and_block_subset():
    model = _model()
    ds = torch.utils.data.TensorDataset(torch.randn(23, 3, 32, 32), torch.randint(0, 3, (23,)))
    loader = torch.utils.data.DataLoader(ds, batch_size=10)
    stats = excitation_stats(model, loader, 3, blocks="SE_4_*", device="cpu")
    assert stats.block_names == ["SE_4_1", "SE_4_2", "SE_4_3"]
    with torch.no_grad(), capture(model, "SE_4_2") as cap:
        model(ds.tensors[0])
    torch.testing.assert_close(stats.overall_mean["SE_4_2"], cap.excitation["SE_4_2"].double().mean(0))
    table = stats.summary_table()
    assert [r["block"] for r in table] == ["SE_4_1", "SE_4_2", "SE_4_3"]
    assert [r["stage"] for r in table] == [4, 4, 4] and [r["channels"] for r in table] == [64] * 3
    r = table[1]
    assert r["mean"] == pytest.approx(float(cap.excitation["SE_4_2"].double().mean()))
    assert r["class_specificity"] == stats.class_specificity()["SE_4_2"]
    assert (r["frac_low"], r["frac_high"]) == stats.saturation()["SE_4_2"]


def test_stats_save_load_roundtrip(tmp_path):
    model = _model()
    stats = excitation_stats(model, _batches([6, 4], 3), 4, blocks=["SE_2_1", "SE_4_3"], low=0.2, high=0.8)
    path = tmp_path / "stats.safetensors"
    stats.save(path)
    back = ExcitationStats.load(path)
    assert back.block_names == stats.block_names and back.num_classes == 4
    assert (back.low, back.high) == (0.2, 0.8) and back.channels == stats.channels
    assert torch.equal(back.count, stats.count)
    for n in stats.block_names:
        torch.testing.assert_close(back.mean[n], stats.mean[n], equal_nan=True, rtol=0, atol=0)
        torch.testing.assert_close(back.std[n], stats.std[n], equal_nan=True, rtol=0, atol=0)
    assert back.summary_table() == stats.summary_table()
    assert back.saturation() == stats.saturation()
    bad = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(bad))
    with pytest.raises(ValueError, match="not an ExcitationStats"):
        ExcitationStats.load(bad)
    bad.write_bytes(b"x")  # a damaged header: safetensors' own error type, now a ValueError naming the file
    with pytest.raises(ValueError, match="other.safetensors is not a readable ExcitationStats file"):
        ExcitationStats.load(bad)
    with pytest.raises(FileNotFoundError, match="no ExcitationStats file at"):
        ExcitationStats.load(tmp_path / "missing.safetensors")


def test_stats_input_errors():
    model = _model()
    with pytest.raises(ValueError, match="normalize"):
        excitation_stats(model, [(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(2, dtype=torch.long))],
                         10)
    with pytest.raises(ValueError, match=r"labels must be class indices 0\.\.2 \(integers\), got values from"):
        excitation_stats(model, [(torch.randn(2, 3, 32, 32), torch.tensor([0, 3]))], 3)
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        excitation_stats(model, [(torch.randn(2, 3, 32, 32), torch.tensor([0, 1, 2]))], 3)
    with pytest.raises(ValueError, match="expected \\(images, labels\\)"):
        excitation_stats(model, [torch.randn(2, 3, 32, 32)], 3)
    with pytest.raises(ValueError, match="num_classes"):
        excitation_stats(model, [], 0)
    with pytest.raises(ValueError, match="low < high"):
        excitation_stats(model, [], 3, low=0.9, high=0.1)
    with pytest.raises(ValueError, match="meta"):
        excitation_stats(model, [], 3, device="meta")
    _assert_no_hooks(model)


def test_to_dataframe_without_pandas_is_a_clear_error():
    stats = ExcitationStats(["SE_2_1"], [4], 2)
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="summary_table"):
            stats.to_dataframe()
    else:
        assert list(stats.to_dataframe()["block"]) == ["SE_2_1"]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_stats_memory_is_flat_over_10000_images():
    """10,000 images through excitation_stats: state size constant, process memory does not grow with N.

    Tiny 8x8 inputs keep this fast; the per-image excitations (what would leak) do not depend on the resolution:
    a leak of all s values of se_resnet20 would be 10,000 x 336 x 8 bytes = 27 MB.
    """
    model = _model()

    def stream(n_batches, size=500):
        g = torch.Generator().manual_seed(1)
        for _ in range(n_batches):
            yield torch.randn(size, 3, 8, 8, generator=g), torch.randint(0, 10, (size,), generator=g)

    def state_bytes(st):
        ts = [st.count, *st._mean.values(), *st._m2.values(), *st._n_low.values(), *st._n_high.values()]
        return sum(t.numel() * t.element_size() for t in ts)

    small = excitation_stats(model, stream(2), 10)  # warm up allocator and caches
    gc.collect()
    rss0 = _rss_bytes()
    big = excitation_stats(model, stream(20), 10)
    gc.collect()
    growth = _rss_bytes() - rss0
    assert big.num_images == 10_000
    assert state_bytes(big) == state_bytes(small)
    assert growth < 12e6, f"RSS grew by {growth / 1e6:.1f} MB over 10,000 images"


def test_stats_update_rejects_wrong_shapes():
    stats = ExcitationStats(["a", "b"], [3, 2], 2)
    with pytest.raises(ValueError, match="missing"):
        stats.update({"a": torch.zeros(1, 3)}, torch.tensor([0]))
    with pytest.raises(ValueError, match=r"shape \(1, 2\)"):
        stats.update({"a": torch.zeros(1, 3), "b": torch.zeros(1, 3)}, torch.tensor([0]))
    with pytest.raises(ValueError, match="integer"):
        stats.update({"a": torch.zeros(1, 3), "b": torch.zeros(1, 2)}, torch.tensor([0.0]))
    # Merging batch by batch equals a single update.
    g = torch.Generator().manual_seed(0)
    sa, sb, lab = torch.rand(9, 3, generator=g), torch.rand(9, 2, generator=g), torch.randint(0, 2, (9,), generator=g)
    one = ExcitationStats(["a", "b"], [3, 2], 2)
    one.update({"a": sa, "b": sb}, lab)
    for i, j in itertools.pairwise([0, 2, 3, 9]):
        stats.update({"a": sa[i:j], "b": sb[i:j]}, lab[i:j])
    for n in ("a", "b"):
        torch.testing.assert_close(stats.mean[n], one.mean[n], equal_nan=True)
        torch.testing.assert_close(stats.std[n], one.std[n], equal_nan=True)


def test_specificity_of_a_dead_block_is_undefined_not_zero() -> None:
    """A block whose hidden units never fire gives every image the same excitation: eta squared is 0/0 there."""
    import math

    from seresnet import create_model

    torch.manual_seed(0)
    model = create_model("se_resnet20").eval()
    with torch.no_grad():
        model.se_blocks()["SE_2_1"].excitation.fc1.bias.fill_(-1e6)
    x = torch.randn(40, 3, 32, 32)
    y = torch.arange(10).repeat(4)
    stats = excitation_stats(model, [(x, y)], 10)
    spec = stats.class_specificity(normalize=True)
    assert math.isnan(spec["SE_2_1"])
    varying = [b for b in stats.block_names if float(stats.overall_std[b].max()) > 1e-6]
    assert varying and "SE_2_1" not in varying
    assert all(0 <= spec[b] <= 1 for b in varying)
    table = {r["block"]: r for r in stats.summary_table()}
    assert math.isnan(table["SE_2_1"]["class_specificity_normalized"])
