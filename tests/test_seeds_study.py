"""scripts/seeds_study.py: idempotent sweep (a finished run is never trained again), paired difference over seeds."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def study():
    return load_script("seeds_study")


def test_summary_pairs_runs_by_seed(study) -> None:
    def run(acc: float) -> dict:
        return {"evaluations": {"val": {"accuracy": acc}}}

    runs = {"a-s0": run(0.90), "b-s0": run(0.89), "a-s1": run(0.91), "b-s1": run(0.905), "a-s2": run(0.92)}
    diff = study.summarise(runs, ["a", "b"], [0, 1, 2])["val"]["difference"]
    assert diff["paired_seeds"] == [0, 1]  # seed 2 of b is missing: not paired
    per_seed = [0.90 - 0.89, 0.91 - 0.905]
    assert diff["per_seed"] == pytest.approx(per_seed)
    # t with one degree of freedom is Cauchy: P(|T| <= t) = 2 arctan(t) / pi, so the 95% t is tan(0.95 pi / 2)
    half = math.tan(0.95 * math.pi / 2) * statistics.stdev(per_seed) / math.sqrt(2)
    assert diff["ci95"] == pytest.approx([statistics.fmean(per_seed) - half, statistics.fmean(per_seed) + half])
    single = study.summarise({"a-s0": run(0.9), "b-s0": run(0.8)}, ["a", "b"], [0])["val"]["difference"]
    assert single["ci95"] is None  # undefined from one pair, not zero


def test_sweep_is_idempotent(study, tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "study.json"
    args = ["--data", str(tiny_folder), "--runs", str(tmp_path / "runs"), "--out", str(out), "--seeds", "0", "1",
            "--epochs", "1", "--val-split", "20", "--threads", "1", "--batch-size", "32"]
    assert study.main(args) == 0
    first = json.loads(out.read_text())
    assert sorted(first["runs"]) == ["resnet20-s0", "resnet20-s1", "se_resnet20-s0", "se_resnet20-s1"]
    assert first["summary"]["val"]["difference"]["paired_seeds"] == [0, 1]
    monkeypatch.setattr("seresnet.train.train", lambda *a, **k: pytest.fail("a finished run was trained again"))
    assert study.main(args) == 0
    assert json.loads(out.read_text())["runs"] == first["runs"]
    # fewer seeds would shrink the stored study: refused, the file kept; a misspelt model is refused before training
    common = ["--data", str(tiny_folder), "--runs", str(tmp_path / "runs"), "--out", str(out), "--epochs", "1",
              "--val-split", "20", "--threads", "1", "--batch-size", "32"]
    assert study.main([*common, "--seeds", "0"]) == 2
    assert json.loads(out.read_text())["runs"] == first["runs"]
    with pytest.raises(SystemExit):
        study.main([*common, "--seeds", "5", "--models", "se_resnet20", "resnet_20"])
    assert not (tmp_path / "runs" / "se_resnet20-s5").exists()
    # finished runs of another data set, or not measured on a test set asked for, are refused rather than reused
    other = tmp_path / "other-data"
    shutil.copytree(tiny_folder, other)
    elsewhere = [*common[:1], str(other), *common[2:5], str(tmp_path / "o.json"), *common[6:]]
    assert study.main([*elsewhere, "--seeds", "0", "1"]) == 2
    assert "was trained on 'cifar', this study asks for 'other-data'" in capsys.readouterr().err
    assert study.main([*common[:5], str(tmp_path / "o.json"), *common[6:], "--seeds", "0", "1",
                       "--test-data", f"extra={tiny_folder / 'test'}"]) == 2
    assert "was not measured on ['extra']" in capsys.readouterr().err
