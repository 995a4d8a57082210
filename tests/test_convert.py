"""Weight conversion to and from torchvision and timm: equal outputs, exact round trips, clear errors.

Source models get random BN statistics / affine parameters and random SE biases first, so that a conversion that
dropped, swapped or mis-reshaped any of them would change the outputs.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import urllib.error
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from seresnet import SEResNet, SEResNetConfig, count_params, create_model
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
    timm_spec_for_config,
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


# --- torchvision weights: hub cache, hash check, safe loading, local files -----------------------------------------
class _RunsCodeWhenUnpickled:
    """Unpickling this calls ``os.mkdir(marker)``: a stand-in for a poisoned cache file that runs code on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.mkdir, (str(self.marker),)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary torch hub dir whose downloads fail the test; returns its ``checkpoints`` cache dir."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))

    def no_network(url: str, *args, **kwargs) -> None:
        raise AssertionError(f"the test tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    (hub / "checkpoints").mkdir(parents=True)
    return hub / "checkpoints"


def point_weights_at(monkeypatch: pytest.MonkeyPatch, filename: str) -> type:
    """Make torchvision's ``resnet18`` weights enum a fake one whose ``IMAGENET1K_V1`` URL ends in ``filename``."""
    import torchvision
    from torchvision.models._api import Weights, WeightsEnum

    fake = WeightsEnum("FakeResNet18_Weights", {"IMAGENET1K_V1": Weights(
        url=f"https://download.invalid/models/{filename}", transforms=None, meta={})})
    monkeypatch.setattr(torchvision.models, "get_model_weights", lambda name: fake)
    return fake


def random_torchvision(name: str = "resnet18", **kw) -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return randomise(torchvision.models.get_model(name, weights=None, **kw))


def test_poisoned_cache_file_is_refused_not_run(fake_hub: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "code-ran"
    staged = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "x": _RunsCodeWhenUnpickled(marker)}, staged)
    # the payload is real: full pickle runs it
    proof = tmp_path / "proof.pth"
    torch.save({"x": _RunsCodeWhenUnpickled(tmp_path / "proof-ran")}, proof)
    torch.load(proof, weights_only=False)
    assert (tmp_path / "proof-ran").exists()
    # a matching hash in the name, so only the safe load stands between the file and the interpreter
    filename = f"resnet18-{_sha256(staged)[:8]}.pth"
    staged.rename(fake_hub / filename)
    point_weights_at(monkeypatch, filename)
    with pytest.raises(ValueError, match=r"refused to load .*resnet18-[0-9a-f]{8}\.pth: it pickles [\w.]+, "
                                          r".*weights_only=True") as refused:
        from_torchvision("resnet18", weights="IMAGENET1K_V1")
    assert "\x1b" not in str(refused.value)  # torch's advice, with its terminal colour codes, stays out
    assert not marker.exists()


def test_cached_file_with_wrong_hash_is_refused(fake_hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = fake_hub / "resnet18-00000000.pth"
    torch.save(random_torchvision().state_dict(), path)
    point_weights_at(monkeypatch, path.name)
    with pytest.raises(ValueError, match=r"has SHA-256 [0-9a-f]{8}\.\.\., but its name says 00000000.*Delete it"):
        from_torchvision("resnet18", weights="IMAGENET1K_V1")
    assert path.exists()  # reported, not deleted: it may be evidence


def test_torchvision_weights_downloaded_once_then_cached(fake_hub: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    tv = random_torchvision()
    staged = tmp_path / "staged.pth"
    torch.save(tv.state_dict(), staged)
    filename = f"resnet18-{_sha256(staged)[:10]}.pth"
    fake = point_weights_at(monkeypatch, filename)
    calls = []

    def download(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        calls.append((url, dst, hash_prefix))
        Path(dst).write_bytes(staged.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    ours = from_torchvision("resnet18", weights="IMAGENET1K_V1")
    assert calls == [(f"https://download.invalid/models/{filename}", str(fake_hub / filename), filename[9:19])]
    assert_same_outputs(tv, ours.eval())
    ours2 = from_torchvision("resnet18", weights=fake.IMAGENET1K_V1)  # from the cache this time
    assert len(calls) == 1
    assert_same_outputs(tv, ours2.eval())


def test_torchvision_weights_offline_say_internet_and_local_file(fake_hub: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    point_weights_at(monkeypatch, "resnet18-f37072fd.pth")

    def offline(url: str, *args, **kwargs) -> None:
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ConnectionError, match=r"need internet access.*from_torchvision\('resnet18', "
                                              r"weights='/path/to/resnet18-f37072fd\.pth'\)") as info:
        from_torchvision("resnet18", weights="IMAGENET1K_V1")
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    assert not (fake_hub / "resnet18-f37072fd.pth").exists()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torchvision_weights_from_a_local_file(suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("no download expected"))
    tv = random_torchvision(num_classes=10)  # the classifier size comes from the file
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tv.state_dict(), str(path))
    else:
        torch.save(tv.state_dict(), path)
    for weights in (path, str(path)):
        ours = from_torchvision("resnet18", weights=weights)
        assert ours.num_classes == 10
        assert_same_outputs(tv, ours.eval())


def test_unknown_torchvision_weights_name() -> None:
    with pytest.raises(ValueError, match=r"unknown weights 'IMAGENET22K' for torchvision's resnet18: expected one "
                                         r"of DEFAULT, IMAGENET1K_V1, .* or the path of a local"):
        from_torchvision("resnet18", weights="IMAGENET22K")
    with pytest.raises(FileNotFoundError, match="no weights file at"):
        from_torchvision("resnet18", weights="missing.pth")


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


def _hub_errors() -> list[Exception]:
    errors: list[Exception] = [urllib.error.URLError("[Errno -2] Name or service not known"),
                               ConnectionError("Connection refused")]
    try:
        from huggingface_hub.errors import LocalEntryNotFoundError

        errors.append(LocalEntryNotFoundError("cannot find the requested files in the local cache"))
    except ImportError:
        pass
    return errors


@pytest.mark.parametrize("error", _hub_errors(), ids=lambda e: type(e).__name__)
def test_from_timm_pretrained_offline_says_internet_and_local_file(error: Exception,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    timm = pytest.importorskip("timm")
    create = timm.create_model

    def offline_create(name: str, pretrained: bool = False, **kw):
        if pretrained:
            raise error
        return create(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline_create)
    with pytest.raises(ConnectionError, match=r"Hugging Face hub, which needs internet access.*"
                                              r"from_timm\('seresnet50.a1_in1k', weights_file=") as info:
        from_timm("seresnet50.a1_in1k", pretrained=True)
    assert info.value.__cause__ is error


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_from_timm_weights_file(suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    timm = pytest.importorskip("timm")
    create = timm.create_model

    def no_pretrained(name: str, pretrained: bool = False, **kw):
        assert not pretrained, "a local weights file must not trigger a download"
        return create(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", no_pretrained)
    tm = timm_model("seresnet18")
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tm.state_dict(), str(path))
    else:
        torch.save(tm.state_dict(), path)
    ours = from_timm("seresnet18", weights_file=path)
    assert ours.config == timm_config("seresnet18")
    assert_same_outputs(tm, ours.eval())
    with pytest.raises(ValueError, match="not both"):
        from_timm("seresnet18", pretrained=True, weights_file=path)
    with pytest.raises(StateDictMismatchError, match=r"model\.(safetensors|pth) is not a timm legacy_seresnet18"):
        from_timm("legacy_seresnet18", weights_file=path)


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


# --- ECA and CBAM ResNets (timm's resnetN with block_args=dict(attn_layer=...)) ----------------------------------
def timm_attention_model(depth: int, attn_layer: str, **kw) -> nn.Module:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return randomise(timm.create_model(f"resnet{depth}", pretrained=False, block_args=dict(attn_layer=attn_layer),
                                       **kw))


@pytest.mark.parametrize(("depth", "attn_layer"), [(18, "eca"), (50, "eca"), (18, "cbam"), (50, "cbam")])
def test_timm_eca_and_cbam_resnets_to_ours_and_back(depth: int, attn_layer: str) -> None:
    t = timm_attention_model(depth, attn_layer, num_classes=7)
    ours = from_timm(t)
    assert ours.config.attention == attn_layer and ours.config.depth == depth and ours.config.num_classes == 7
    assert count_params(ours) == count_params(t)
    if attn_layer == "cbam":  # the spatial BN got random statistics too: a dropped or swapped BN would show
        assert ours.layer4[0].se.spatial_gate.bn.running_var.min() > 0.5
    assert_same_outputs(t, ours)
    # back: the same state dict, and a timm model with the same outputs
    assert_state_dicts_equal(to_timm_state_dict(ours.state_dict()), t.state_dict())
    assert timm_spec_for_config(ours) == (f"resnet{depth}", {"block_args": {"attn_layer": attn_layer}})
    t2 = to_timm(ours)
    assert type(t2.layer1[0].se) is type(t.layer1[0].se)
    assert_same_outputs(t, t2)
    # our registered model of that name has the same architecture
    assert SEResNetConfig(**timm_overrides(f"resnet{depth}", attn_layer=attn_layer)) == \
        create_model(f"{attn_layer}_resnet{depth}").config.replace(num_classes=1000)


def test_timm_eca_kernel_and_cbam_keys() -> None:
    t = timm_attention_model(18, "cbam")
    sd = from_timm_state_dict(t.state_dict())
    assert sd["layer2.0.se.excitation.fc1.weight"].shape == (8, 128)  # (out, in, 1, 1) -> (out, in)
    assert "layer2.0.se.spatial_gate.conv.weight" in sd and "layer2.0.se.spatial_gate.bn.running_mean" in sd
    eca = from_timm_state_dict(timm_attention_model(50, "eca").state_dict())
    # timm's kernel sizes are the paper's for these widths: 256 -> 5, 2048 -> 7
    assert eca["layer1.0.se.excitation.conv.weight"].shape == (1, 1, 5)
    assert eca["layer4.2.se.excitation.conv.weight"].shape == (1, 1, 7)


@pytest.mark.parametrize("attention", ["gc", "ge", "fca", "se_var2", "nosqueeze"])
def test_attention_without_a_timm_counterpart_is_refused(attention: str) -> None:
    model = create_model("se_resnet18", attention=attention)
    with pytest.raises(ValueError, match=f"timm has no exact counterpart of attention='{attention}'"):
        to_timm(model)
    if any(p.numel() for p in model.se_blocks()["SE_2_1"].parameters()):
        with pytest.raises(ValueError, match="this attention module has no counterpart in timm"):
            to_timm_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="torchvision ResNets have no SE blocks"):
        to_torchvision_state_dict(create_model("eca_resnet18").state_dict())


@pytest.mark.parametrize("attn_layer", ["gc", "gca", "ceca", "ecam"])
def test_timm_attention_layers_without_a_counterpart_are_refused(attn_layer: str) -> None:
    """timm's GC multiplies (or, as 'gca', uses another LayerNorm eps and width), its circular ECA pads differently,
    'ecam' has an MLP: none is the module of the same name here."""
    with pytest.raises(ValueError, match="no exact counterpart here|is not ECA"):
        from_timm(timm_attention_model(18, attn_layer))


def test_timm_spec_and_name_for_attention_configs() -> None:
    with pytest.raises(ValueError, match=r"it is timm.create_model\('resnet50', \*\*\{'block_args'"):
        timm_name_for_config(create_model("eca_resnet50"))
    with pytest.raises(ValueError, match=r"attn_layer='cbam': se_hidden=\(8, 16, 32, 64\) \(needs \(16, 32, 64, 128\)"):
        timm_spec_for_config(create_model("cbam_resnet50", reduction=32))
    with pytest.raises(ValueError, match="attn_layer goes with a plain timm 'resnetN'"):
        timm_overrides("seresnet50", attn_layer="eca")
    assert timm_spec_for_config(create_model("se_resnet50", se_min_hidden=8)) == ("seresnet50", {})
