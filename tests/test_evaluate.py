"""evaluate(): clear errors for inputs it cannot score, and accuracy intervals that match their definition."""

from __future__ import annotations

import math

import pytest
import torch

from seresnet import create_model
from seresnet.evaluate import accuracy_interval, evaluate, paired_difference


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("resnet20").eval()


@pytest.mark.parametrize("labels,message", [
    (torch.full((4,), 10), r"class indices 0\.\.9 \(integers\), got values from 10 to 10"),
    (torch.full((4,), -1), r"class indices 0\.\.9 \(integers\), got values from -1 to -1"),
    (torch.zeros(4), "expected integer class labels"),
    (torch.zeros(4, 1, dtype=torch.int64), "expected integer class labels of shape"),
    (torch.zeros(3, dtype=torch.int64), "4 images but 3 labels"),
])
def test_bad_labels_are_refused(model: torch.nn.Module, labels: torch.Tensor, message: str) -> None:
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with pytest.raises((ValueError, TypeError), match=message):
        evaluate(model, images, labels)


@pytest.mark.parametrize("images,message", [
    (torch.rand(4, 3, 32, 32), "expected uint8 images"),  # floats in [0, 1] would become all zeros as uint8
    (torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.int32), "expected uint8 images"),
    (torch.zeros(0, 3, 32, 32, dtype=torch.uint8), "no images to evaluate"),
])
def test_bad_images_are_refused(model: torch.nn.Module, images: torch.Tensor, message: str) -> None:
    labels = torch.zeros(images.shape[0], dtype=torch.int64)
    with pytest.raises((ValueError, TypeError), match=message):
        evaluate(model, images, labels)


def test_wilson_interval() -> None:
    # from the formula: p = 0.9, n = 1000, z = 1.96
    n, p, z = 1000, 0.9, 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = accuracy_interval(900, 1000)
    assert (lo, hi) == pytest.approx((centre - half, centre + half))
    assert 0.018 < (hi - lo) / 2 < 0.0195  # about +-1.9 points at 90% on 1,000 images, as the data README says
    assert accuracy_interval(0, 10)[0] == 0.0 and accuracy_interval(10, 10)[1] == 1.0
    with pytest.raises(ValueError):
        accuracy_interval(5, 0)


def test_result_carries_its_sample_size_and_interval(model: torch.nn.Module) -> None:
    images = torch.randint(0, 256, (30, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (30,))
    result = evaluate(model, images, labels)
    record = result.as_dict()
    assert record["images"] == 30
    correct = int((result.predictions == labels).sum())
    assert tuple(record["ci95"]) == pytest.approx(accuracy_interval(correct, 30))


def test_paired_difference_uses_the_per_image_differences() -> None:
    a = torch.tensor([1, 1, 1, 0, 1, 0, 1, 1, 0, 1], dtype=torch.bool)
    b = torch.tensor([1, 0, 1, 0, 1, 1, 0, 1, 0, 1], dtype=torch.bool)
    diff, (lo, hi) = paired_difference(a, b)
    d = [1, 1, 1, 0, 1, 0, 1, 1, 0, 1]
    d = [x - y for x, y in zip(d, [1, 0, 1, 0, 1, 1, 0, 1, 0, 1])]
    mean = sum(d) / 10
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 9)
    assert diff == pytest.approx(mean) and (lo, hi) == pytest.approx((mean - 1.96 * sd / math.sqrt(10),
                                                                     mean + 1.96 * sd / math.sqrt(10)))
    same, (lo0, hi0) = paired_difference(a, a)
    assert same == 0 and lo0 == hi0 == 0  # identical predictions: no difference and no noise
    with pytest.raises(ValueError, match="same N"):
        paired_difference(a, b[:5])


def test_cli_evaluates_a_class_folder_and_says_where_a_missing_test_split_can_come_from(
        tmp_path, capsys: pytest.CaptureFixture) -> None:
    import json

    from seresnet.data import SAMPLE_DIR, load_sample
    from seresnet.evaluate import main
    from seresnet.pretrained import load_pretrained

    assert main(["--pretrained", "resnet20", "--data", str(SAMPLE_DIR), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    images, labels = load_sample()
    expected = evaluate(load_pretrained("resnet20"), images, labels)
    assert printed["images"] == 1000 and printed["accuracy"] == pytest.approx(expected.accuracy)
    # a data root with training batches but no test_batch, like the lossless copy here
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    for i in range(1, 6):
        (batches / f"data_batch_{i}").write_bytes(b"")
    assert main(["--pretrained", "resnet20", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no test_batch" in err and "seresnet.evaluate: --data PATH" in err and "Traceback" not in err
