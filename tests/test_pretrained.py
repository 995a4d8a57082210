"""The shipped CIFAR-10 checkpoints load offline and score what their metadata says."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seresnet import create_model
from seresnet.data import load_cifar10, load_sample
from seresnet.evaluate import evaluate
from seresnet.pretrained import available_pretrained, load_pretrained, pretrained_metadata

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
    with pytest.raises(ValueError, match="mis-shaped"):
        create_model("se_resnet20", pretrained=True, num_classes=100)


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
