"""scripts/recipe_table.py: validation-only numbers, the JPEG view of the same images, what each run was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script, write_batches
from test_train import tiny_cfg

from seresnet.data import load_cifar10, stratified_split
from seresnet.evaluate import evaluate
from seresnet.pretrained import load_model
from seresnet.train import train


@pytest.fixture(scope="module")
def table():
    return load_script("recipe_table")


def test_table_measures_validation_clean_and_as_jpeg(table, tmp_path: Path) -> None:
    root = write_batches(tmp_path / "data", per_batch=30)
    (root / "cifar-10-batches-py" / "test_batch").unlink()  # like the lossless copy: no test batch
    run = tmp_path / "run"
    train(tiny_cfg(root, run, epochs=1, val_split=20, jpeg_p=0.5), progress=False)
    out = tmp_path / "recipes.json"
    assert table.main([f"with-jpeg={run}", "--data", str(root), "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["runs"]
    x, y = load_cifar10("train", root)
    val = stratified_split(y, 20)[1]
    model = load_model(run)
    assert row["name"] == "with-jpeg" and row["jpeg_p"] == 0.5 and row["val_images"] == 20
    assert row["val_accuracy"] == pytest.approx(evaluate(model, x[val], y[val]).accuracy)
    assert row["val_jpeg_accuracy"] == pytest.approx(evaluate(model, table.as_jpeg(x[val]), y[val]).accuracy)
    assert row["val_ci95"][0] <= row["val_accuracy"] <= row["val_ci95"][1]
