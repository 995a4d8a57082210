"""The shipped CIFAR-10 checkpoints load offline and score what their metadata says."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest
import torch

from seresnet import create_model, pretrained
from seresnet.data import load_cifar10, load_sample
from seresnet.evaluate import evaluate
from seresnet.pretrained import (
    PRETRAINED_DIR,
    available_pretrained,
    load_model,
    load_pretrained,
    pretrained_metadata,
    sha256_file,
)

SHIPPED = ("se_resnet20", "resnet20")


def test_shipped_checkpoints_are_listed_and_describe_themselves() -> None:
    assert set(SHIPPED) <= set(available_pretrained())
    for name in SHIPPED:
        meta = pretrained_metadata(name)
        assert meta["model"] == name and meta["epochs"] == len(meta["history"])
        assert "JPEG" in meta["trained_on"] and meta["machine"] and meta["wall_time_s"] > 0
    # same recipe and seed for both, so the comparison is fair
    a, b = (pretrained_metadata(n)["recipe"] for n in SHIPPED)
    assert {k: v for k, v in a.items() if k not in ("model", "out")} == {
        k: v for k, v in b.items() if k not in ("model", "out")}


def test_pretrained_models_classify_the_shipped_sample() -> None:
    x, y = load_sample()
    for name in SHIPPED:
        model = create_model(name, pretrained=True)
        assert not model.training
        assert evaluate(model, x, y).accuracy > 0.8, name


def test_unknown_or_incompatible_pretrained_requests_fail_clearly() -> None:
    with pytest.raises(ValueError, match="no pretrained checkpoint named 'se_resnet56'.*se_resnet20"):
        load_pretrained("se_resnet56")
    with pytest.raises(ValueError, match=r"num_classes=100 \(shipped: num_classes=10\).*reset_classifier\(100\)"):
        create_model("se_resnet20", pretrained=True, num_classes=100)


@pytest.mark.parametrize("overrides", [{"gate": "tanh"}, {"squeeze": "max"}, {"gate": "tanh", "reduction": 8}])
def test_pretrained_refuses_overrides_that_change_the_network(overrides: dict) -> None:
    """gate / squeeze change no weight shape, so the weights used to load into another network (87% -> 20%)."""
    listed = ", ".join(f"{k}={v!r}" for k, v in sorted(overrides.items()))
    with pytest.raises(ValueError, match=rf"pretrained 'se_resnet20' cannot take overrides {listed} .*"
                                         r"without pretrained=True"):
        create_model("se_resnet20", pretrained=True, **overrides)
    with pytest.raises(TypeError, match="unknown config option"):
        load_pretrained("se_resnet20", ratio=8)


def test_pretrained_flag_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="pretrained must be True or False, got 'no'"):
        create_model("se_resnet20", pretrained="no")


def test_pretrained_accepts_overrides_equal_to_the_shipped_config() -> None:
    plain = create_model("se_resnet20", pretrained=True)
    same = create_model("se_resnet20", pretrained=True, gate="sigmoid", squeeze="avg", num_classes=10,
                        se_stages=None, block="basic")
    assert same.config == plain.config
    for (k, a), (_, b) in zip(plain.state_dict().items(), same.state_dict().items()):
        assert torch.equal(a, b), k


# --- checksums --------------------------------------------------------------------------------------------------
def test_shipped_metadata_carries_the_weights_checksum() -> None:
    for name in SHIPPED:
        assert pretrained_metadata(name)["weights_sha256"] == sha256_file(PRETRAINED_DIR / f"{name}.safetensors")


def _flip_a_tensor_byte(path: Path) -> None:
    """Flip one bit in the tensor data (after safetensors' 8-byte header length and JSON header)."""
    data = bytearray(path.read_bytes())
    (header_len,) = struct.unpack("<Q", data[:8])
    i = 8 + header_len + (len(data) - 8 - header_len) // 2
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def test_damaged_weights_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = "se_resnet20"
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(PRETRAINED_DIR / f"{name}{suffix}", shipped / f"{name}{suffix}")
    run = tmp_path / "run"  # the layout seresnet.train writes
    run.mkdir()
    shutil.copy(PRETRAINED_DIR / f"{name}.safetensors", run / "model.safetensors")
    shutil.copy(PRETRAINED_DIR / f"{name}.json", run / "metadata.json")
    # untouched copies load
    assert load_model(shipped / f"{name}.safetensors").config == load_model(run).config
    _flip_a_tensor_byte(shipped / f"{name}.safetensors")
    _flip_a_tensor_byte(run / "model.safetensors")
    expected = pretrained_metadata(name)["weights_sha256"]
    message = rf"SHA-256 .* damaged or replaced.*expected {expected}, got [0-9a-f]{{64}}"
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", shipped)
    with pytest.raises(ValueError, match=message):
        load_pretrained(name)
    with pytest.raises(ValueError, match=message):
        load_model(shipped / f"{name}.safetensors")
    with pytest.raises(ValueError, match=message):
        load_model(run)


def test_metadata_accuracy_is_what_evaluation_measures(cifar_root: Path) -> None:
    x, y = load_cifar10("test", cifar_root)
    for name in SHIPPED:
        result = evaluate(create_model(name, pretrained=True), x, y)
        meta = pretrained_metadata(name)
        assert result.accuracy == pytest.approx(meta["test_accuracy"], abs=1e-9), name
        per_class = torch.tensor(list(meta["per_class_accuracy"].values()), dtype=torch.float64)
        torch.testing.assert_close(result.per_class_accuracy, per_class)
        tta = evaluate(create_model(name, pretrained=True), x, y, flip_tta=True)
        assert tta.accuracy == pytest.approx(meta["test_accuracy_flip_tta"], abs=1e-9), name
        # "time to 90%" is the wall time of the first epoch whose evaluation reached 90% (None: never)
        first = next((r for r in meta["history"] if r["test_acc"] >= 0.9), None)
        assert meta["time_to_90_percent_s"] == (first["wall_s"] if first else None)
