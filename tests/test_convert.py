"""Weight conversion to and from torchvision and timm: equal outputs, exact round trips, clear errors.

Source models get random BN statistics / affine parameters and random SE biases first, so that a conversion that
dropped, swapped or mis-reshaped any of them would change the outputs.
"""

from __future__ import annotations

import functools
import sys
from collections import OrderedDict

import pytest
import torch
from torch import nn

from seresnet import SEResNet, count_params, create_model
from seresnet.convert import (
    StateDictMismatchError,
    from_timm,
    from_timm_state_dict,
    from_torchvision,
    from_torchvision_state_dict,
    load_state_dict_strict,
    load_torchvision,
    timm_config,
    timm_name_for_config,
    timm_overrides,
    to_timm,
    to_timm_state_dict,
    to_torchvision,
    to_torchvision_state_dict,
)

SIZE = 64  # small ImageNet-style input: enough for all strides (total 32), fast on CPU




def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN running stats and affine parameters, random SE / conv biases; returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)
    return model.eval()


@functools.cache
def timm_model(name: str) -> nn.Module:
    """A randomised timm model, built once per test session (the tests only read it)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return randomise(timm.create_model(name, pretrained=False))


def assert_same_outputs(a: nn.Module, b: nn.Module, size: int = SIZE) -> None:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert ya.shape == yb.shape
    scale = max(1.0, ya.abs().max().item())
    torch.testing.assert_close(yb, ya, rtol=0, atol=1e-5 * scale)


def assert_state_dicts_equal(a: dict, b: dict) -> None:
    assert set(a) == set(b), (sorted(set(a) ^ set(b)))[:5]
    for k in a:
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


# --- torchvision --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_to_ours_and_back(name: str) -> None:
    import torchvision

    torch.manual_seed(0)
    tv = randomise(torchvision.models.get_model(name, weights=None))
    ours = from_torchvision(tv)
    assert isinstance(ours, SEResNet) and not ours.training
    assert ours.config.depth == int(name[6:]) and not ours.se_blocks()
    assert count_params(ours) == count_params(tv)
    assert_same_outputs(tv, ours)
    # back to torchvision: the state dict and the outputs
    assert_state_dicts_equal(to_torchvision_state_dict(ours.state_dict()), tv.state_dict())
    tv2 = to_torchvision(ours)
    assert type(tv2) is type(tv)
    assert_same_outputs(tv, tv2)


def test_torchvision_state_dict_renames_only_the_stem() -> None:
    import torchvision

    sd = torchvision.models.resnet18(weights=None).state_dict()
    ours = from_torchvision_state_dict(sd)
    renamed = {k for k in sd if k not in ours}
    assert renamed == {k for k in sd if k.startswith(("conv1.", "bn1."))}
    assert "stem.conv.weight" in ours and "stem.bn.running_var" in ours
    assert "layer1.0.conv1.weight" in ours and "layer1.0.bn1.weight" in ours  # not touched: prefix rules only
    assert list(to_torchvision_state_dict(ours)) == list(sd)


def test_load_torchvision_by_name() -> None:
    model = load_torchvision("resnet18")  # weights=None: torchvision's random init, no download
    assert isinstance(model, SEResNet) and model.config.integration == "none" and model.config.depth == 18
    with pytest.raises(ValueError, match=r"unknown torchvision ResNet 'resnet19'; supported: resnet18, resnet34"):
        load_torchvision("resnet19")


def test_torchvision_refuses_se_weights() -> None:
    with pytest.raises(ValueError, match="torchvision ResNets have no SE blocks"):
        to_torchvision_state_dict(create_model("se_resnet18").state_dict())
    with pytest.raises(ValueError, match=r"torchvision's resnet18 cannot represent this model: has_se=True"):
        to_torchvision(create_model("se_resnet18"))


# --- timm ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["seresnet18", "seresnet50", "legacy_seresnet18", "legacy_seresnet50"])
def test_timm_to_ours_and_back(name: str) -> None:
    tm = timm_model(name)
    legacy = name.startswith("legacy")
    ours = from_timm(tm)
    assert ours.config == timm_config(name), "from_timm must pick the config of the timm name"
    assert count_params(ours) == count_params(tm)
    assert_same_outputs(tm, ours)

    timm_sd = tm.state_dict()
    # dict level: exact round trip, key order included
    there_and_back = to_timm_state_dict(from_timm_state_dict(timm_sd, legacy=legacy), legacy=legacy)
    assert list(there_and_back) == list(timm_sd)
    assert_state_dicts_equal(there_and_back, timm_sd)
    # through our model: same tensors, SE weights back to (out, in, 1, 1)
    assert_state_dicts_equal(to_timm_state_dict(ours.state_dict(), legacy=legacy), timm_sd)
    se_key = "layer1.0.se_module.fc1.weight" if legacy else "layer1.0.se.fc1.weight"
    assert ours.state_dict()["layer1.0.se.excitation.fc1.weight"].ndim == 2 and timm_sd[se_key].ndim == 4

    tm2 = to_timm(ours)
    assert type(tm2) is type(tm) and timm_name_for_config(ours) == name
    assert_same_outputs(tm, tm2)


@pytest.mark.parametrize(("name", "wrong"), [("legacy_seresnet50", {"stem_pool": "pad"}),
                                             ("legacy_seresnet50", {"stride_on": "3x3"}),
                                             ("legacy_seresnet18", {"basic_branch_relu": False})])
def test_timm_legacy_details_matter(name: str, wrong: dict) -> None:
    """Each legacy detail changes the outputs, so the equality above is not a coincidence."""
    tm = timm_model(name)
    model = load_state_dict_strict(SEResNet(timm_config(name, **wrong)), from_timm_state_dict(tm.state_dict())).eval()
    x = torch.randn(2, 3, SIZE + 2, SIZE + 2)
    with torch.no_grad():
        assert not torch.allclose(model(x), tm(x), atol=1e-3)


def test_timm_se_hidden_width_needs_min_hidden_8() -> None:
    """timm's make_divisible(C / 16, 8) gives 8 hidden units for C = 64; our paper-faithful default gives 4."""
    sd = from_timm_state_dict(timm_model("seresnet18").state_dict())
    assert tuple(sd["layer1.0.se.excitation.fc1.weight"].shape) == (8, 64)
    assert tuple(sd["layer2.0.se.excitation.fc1.weight"].shape) == (8, 128)
    with pytest.raises(StateDictMismatchError,
                       match=r"layer1\.0\.se\.excitation\.fc1\.weight: got \(8, 64\), expected \(4, 64\)"):
        load_state_dict_strict(create_model("se_resnet18"), sd)
    load_state_dict_strict(create_model("se_resnet18", se_min_hidden=8), sd)


def test_from_timm_by_name_with_kwargs() -> None:
    pytest.importorskip("timm")
    model = from_timm("legacy_seresnet18", num_classes=7, in_chans=1)
    assert model.num_classes == 7 and model.in_chans == 1
    assert model.config.stem_pool == "ceil" and model.config.basic_branch_relu
    assert model(torch.randn(2, 1, SIZE, SIZE)).shape == (2, 7)
    feats = from_timm("resnet18", num_classes=0)
    assert feats.config.integration == "none" and feats.num_classes == 0
    with pytest.raises(ValueError, match="only used with a model name"):
        from_timm(nn.Linear(2, 2), pretrained=True)


def test_timm_overrides() -> None:
    assert timm_overrides("seresnet50") == timm_overrides("timm/seresnet50.a1_in1k")
    se = timm_overrides("seresnet50")
    assert (se["depth"], se["stride_on"], se["stem_pool"], se["se_min_hidden"]) == (50, "3x3", "pad", 8)
    legacy = timm_overrides("legacy_seresnet101.in1k")
    assert (legacy["depth"], legacy["stride_on"], legacy["stem_pool"], legacy["se_min_hidden"]) == \
        (101, "1x1", "ceil", 1)
    assert not legacy["basic_branch_relu"] and timm_overrides("legacy_seresnet34")["basic_branch_relu"]
    assert timm_overrides("resnet152")["integration"] == "none"
    for bad in ["seresnet50t", "seresnext50_32x4d", "legacy_seresnet20", "efficientnet_b0"]:
        with pytest.raises(ValueError, match=r"unsupported timm model .*supported: seresnet18, seresnet34"):
            timm_overrides(bad)


def test_timm_name_for_config() -> None:
    assert timm_name_for_config(create_model("se_resnet50")) == "seresnet50"
    assert timm_name_for_config(create_model("se_resnet50", stride_on="1x1", stem_pool="ceil")) == "legacy_seresnet50"
    assert timm_name_for_config(create_model("resnet34")) == "resnet34"
    with pytest.raises(ValueError, match=r"seresnet18: se_hidden=\(4, 8, 16, 32\) \(needs \(8, 8, 16, 32\)\)"):
        timm_name_for_config(create_model("se_resnet18"))
    with pytest.raises(ValueError, match="integration='pre'"):
        timm_name_for_config(create_model("se_resnet18", integration="pre", se_min_hidden=8))
    with pytest.raises(ValueError, match="timm has no equivalent of a cifar-style depth-20 model"):
        timm_name_for_config(create_model("se_resnet20"))


def test_timm_missing_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    with pytest.raises(ImportError, match="pip install timm"):
        from_timm("seresnet18")
    with pytest.raises(ImportError, match="pip install timm"):
        to_timm(create_model("se_resnet18", se_min_hidden=8))


def test_legacy_flag_checked_against_keys() -> None:
    legacy_sd = OrderedDict([("layer0.conv1.weight", torch.zeros(64, 3, 7, 7)),
                             ("layer1.0.se_module.fc1.weight", torch.zeros(4, 64, 1, 1))])
    with pytest.raises(ValueError, match="look like a timm legacy_seresnet .*pass legacy=True"):
        from_timm_state_dict(legacy_sd, legacy=False)
    auto = from_timm_state_dict(legacy_sd)
    assert list(auto) == ["stem.conv.weight", "layer1.0.se.excitation.fc1.weight"]
    assert auto["layer1.0.se.excitation.fc1.weight"].shape == (4, 64)


# --- SE weight reshaping and bad input ----------------------------------------------------------------------------
def test_se_weight_shapes_both_directions() -> None:
    w = torch.randn(16, 256, 1, 1)
    ours = from_timm_state_dict({"layer1.0.se.fc1.weight": w, "layer1.0.se.fc1.bias": torch.ones(16)})
    assert torch.equal(ours["layer1.0.se.excitation.fc1.weight"], w[:, :, 0, 0])
    back = to_timm_state_dict(ours)
    assert torch.equal(back["layer1.0.se.fc1.weight"], w)
    # linear and 1x1 conv compute the same thing on a pooled descriptor
    z = torch.randn(2, 256)
    lin = z @ ours["layer1.0.se.excitation.fc1.weight"].T
    conv = torch.nn.functional.conv2d(z[:, :, None, None], w)[:, :, 0, 0]
    torch.testing.assert_close(lin, conv)


def test_non_1x1_se_weight_raises() -> None:
    with pytest.raises(ValueError, match=r"layer1\.0\.se\.excitation\.fc1\.weight: an SE FC layer must be a 1x1 conv "
                                         r"weight .* got shape \(16, 256, 3, 3\)"):
        from_timm_state_dict({"layer1.0.se.fc1.weight": torch.zeros(16, 256, 3, 3)})
    with pytest.raises(ValueError, match=r"got shape \(16,\)"):
        to_timm_state_dict({"layer1.0.se.excitation.fc1.weight": torch.zeros(16)})


def test_missing_unexpected_and_misshaped_keys() -> None:
    model = create_model("se_resnet20")
    sd = dict(model.state_dict())
    del sd["layer1.0.conv1.weight"]
    sd["extra.weight"] = torch.zeros(3)
    sd["fc.weight"] = torch.zeros(5, 64)
    with pytest.raises(StateDictMismatchError) as info:
        load_state_dict_strict(model, sd)
    msg = str(info.value)
    assert "missing keys (expected shape) (1):\n    layer1.0.conv1.weight: (16, 16, 3, 3)" in msg
    assert "unexpected keys (shape) (1):\n    extra.weight: (3,)" in msg
    assert "mis-shaped keys (1):\n    fc.weight: got (5, 64), expected (10, 64)" in msg
    assert isinstance(info.value, ValueError)


def test_error_lists_are_truncated() -> None:
    model = create_model("se_resnet20")
    with pytest.raises(StateDictMismatchError) as info:
        load_state_dict_strict(model, {})
    n = len(model.state_dict()) - sum(k.endswith("num_batches_tracked") for k in model.state_dict())
    assert f"missing keys (expected shape) ({n}):" in str(info.value)
    assert f"... and {n - 20} more" in str(info.value)


def test_non_tensor_values_and_non_mapping() -> None:
    model = create_model("se_resnet20")
    sd = dict(model.state_dict())
    sd["fc.bias"] = [0.0] * 10
    with pytest.raises(StateDictMismatchError, match=r"values that are not tensors \(1\):\n    fc.bias: list"):
        load_state_dict_strict(model, sd)
    with pytest.raises(TypeError, match="expected a state dict"):
        load_state_dict_strict(model, [1, 2])
    with pytest.raises(TypeError, match="expected a state dict"):
        from_timm_state_dict("weights.pth")


def test_missing_batch_counters_are_tolerated() -> None:
    src = randomise(create_model("se_resnet20"))
    sd = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    dst = load_state_dict_strict(create_model("se_resnet20"), sd).eval()
    assert_same_outputs(src, dst, size=16)
    with pytest.raises(StateDictMismatchError, match="num_batches_tracked"):
        load_state_dict_strict(create_model("se_resnet20"), sd, allow_missing_batch_counters=False)


def test_wrong_architecture_is_reported_not_loaded() -> None:
    """Loading SE-ResNet-20 weights into ResNet-20 names every SE key as unexpected and changes nothing."""
    target = create_model("resnet20")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(StateDictMismatchError, match=r"unexpected keys \(shape\) \(36\):\n    layer1\.0\.se"):
        load_state_dict_strict(target, create_model("se_resnet20").state_dict())
    assert_state_dicts_equal(before, target.state_dict())
