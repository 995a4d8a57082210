"""A run folder never loses a good run: refused when it holds one, locked while a run writes, one run's files only,
a resume that cannot change the recipe, clear errors for settings that would fail later, nothing left half-written."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch
from test_train import Interrupt, tiny_cfg

import seresnet.train as tr
from seresnet.pretrained import load_model
from seresnet.train import RunFolder, load_checkpoint, main, train


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_finished_run_without_its_checkpoint_is_not_overwritten(tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny_cfg(tiny_folder, out, epochs=1), progress=False)
    (out / "checkpoint.pt").unlink()  # e.g. deleted to save space: the finished weights are still the run
    before = _snapshot(out)
    with pytest.raises(FileExistsError, match=r"already holds a run \(history.json, model.safetensors"):
        train(tiny_cfg(tiny_folder, out, epochs=1), progress=False)
    with pytest.raises(FileNotFoundError, match="cannot resume: no checkpoint"):
        train(tiny_cfg(tiny_folder, out, epochs=1), resume=True, progress=False)
    assert _snapshot(out) == before


def test_a_second_run_into_a_busy_folder_fails_at_once(tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with RunFolder(out):  # another run holds the folder
        with pytest.raises(FileExistsError, match="another run is writing into"):
            train(tiny_cfg(tiny_folder, out, epochs=1), progress=False)
        assert not (out / "checkpoint.pt").exists()
    train(tiny_cfg(tiny_folder, out, epochs=1), progress=False)  # free again once the first run is over
    assert (out / "model.safetensors").exists()


def test_an_interrupted_overwrite_leaves_no_files_of_the_old_run(tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny_cfg(tiny_folder, out, epochs=1, keep_epoch_weights=True), progress=False)

    def stop(history: list) -> None:
        raise Interrupt

    with pytest.raises(Interrupt):
        train(tiny_cfg(tiny_folder, out, epochs=2, seed=1), overwrite=True, progress=False, on_epoch_end=stop)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["checkpoint.pt", "history.json"]
    assert load_checkpoint(out / "checkpoint.pt")["train_config"]["seed"] == 1
    # evaluate --weights DIR now scores the new run's checkpoint, not the old run's final weights
    new_weights = load_checkpoint(out / "checkpoint.pt")["model"]
    assert all(torch.equal(v, new_weights[k]) for k, v in load_model(out).state_dict().items())


@pytest.mark.parametrize("change", [{"lr": 0.02}, {"batch_size": 16}, {"seed": 3}, {"epochs": 4},
                                    {"train_limit": 50}, {"bf16": False}, {"label_smoothing": 0.1}])
def test_resume_refuses_a_changed_recipe(tiny_folder: Path, tmp_path: Path, change: dict) -> None:
    out = tmp_path / "run"

    def stop(history: list) -> None:
        raise Interrupt

    with pytest.raises(Interrupt):
        train(tiny_cfg(tiny_folder, out), progress=False, on_epoch_end=stop)
    before = _snapshot(out)
    (key, value), = change.items()
    with pytest.raises(ValueError, match=f"different recipe: {key} was .*, now {value!r}"):
        train(tiny_cfg(tiny_folder, out, **change), resume=True, progress=False)
    assert _snapshot(out) == before
    # where it runs may change: threads, data location
    train(tiny_cfg(tiny_folder, out, threads=2), resume=True, progress=False)


def test_stale_temporary_files_of_a_killed_run_are_removed(tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"

    def stop(history: list) -> None:
        raise Interrupt

    with pytest.raises(Interrupt):
        train(tiny_cfg(tiny_folder, out), progress=False, on_epoch_end=stop)
    stale = out / ".checkpoint.pt.tmp99999"  # what a kill -9 during torch.save leaves
    stale.write_bytes(b"half a checkpoint")
    train(tiny_cfg(tiny_folder, out), resume=True, progress=False)
    assert not stale.exists() and not list(out.glob(".*.tmp*"))


@pytest.mark.parametrize("args,message", [
    (["--lr", "inf"], "lr must be a finite number > 0"),
    (["--lr", "nan"], "lr must be a finite number > 0"),
    (["--weight-decay", "nan"], "weight_decay must be a finite number >= 0"),
    (["--momentum", "nan"], "momentum must be a finite number in"),
    (["--momentum", "1.5"], "momentum must be a finite number in"),
    (["--warmup-epochs", "inf"], "warmup_epochs must be a finite number"),
    (["--warmup-epochs", "nan"], "warmup_epochs must be a finite number"),
    (["--warmup-epochs", "-3"], "warmup_epochs must be a finite number"),
    (["--threads", "0"], "threads must be None or a positive integer"),
    (["--threads", "-1"], "threads must be None or a positive integer"),
    (["--set", "num_classes=5"], "labels go up to 9 but the model has num_classes=5"),
    (["--val-split", "-2"], "val_split must be a number of images >= 0"),
    (["--jpeg-p", "2"], "jpeg_p must be a probability in [0, 1]"),
])
def test_settings_that_would_fail_later_are_refused_before_training(
    tiny_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str,
) -> None:
    out = tmp_path / "run"
    base = ["--epochs", "1", "--batch-size", "40", "--data", str(tiny_folder), "--out", str(out), "--no-progress"]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_out_pointing_at_a_file_is_refused(tiny_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert main(["--epochs", "1", "--data", str(tiny_folder), "--out", str(target), "--no-progress"]) == 2
    assert "is a file; expected a folder" in capsys.readouterr().err
    assert target.read_text() == "mine"


def test_a_full_disk_is_found_before_training(tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    epochs_run: list[int] = []
    out = tmp_path / "run"
    args = ["--epochs", "1", "--batch-size", "40", "--data", str(tiny_folder), "--out", str(out), "--no-progress"]
    monkeypatch.setattr(tr, "evaluate", lambda *a, **k: epochs_run.append(1))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "MB free; this run needs about" in err and "Traceback" not in err
    assert not epochs_run


def test_a_failed_write_is_one_clear_error_and_keeps_the_last_checkpoint(
    tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
) -> None:
    out = tmp_path / "run"
    real_save = torch.save
    saves: list[int] = []

    def failing_save(obj, path, *a, **k):  # the second checkpoint write hits a full disk
        saves.append(1)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(torch, "save", failing_save)
    args = ["--epochs", "3", "--batch-size", "40", "--data", str(tiny_folder), "--out", str(out), "--no-progress",
            "--threads", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "could not write" in err and "No space left on device" in err and "Traceback" not in err
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1  # the last good checkpoint is intact
    assert not list(out.glob(".*.tmp*"))


def test_divergence_in_the_first_epoch_does_not_claim_a_checkpoint(tiny_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(FloatingPointError, match="No checkpoint of this run was written"):
        train(tiny_cfg(tiny_folder, tmp_path / "run", lr=1e30), progress=False)


def test_metadata_records_sets_intervals_and_checksum_without_local_paths(tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = tiny_cfg(tiny_folder, out, epochs=1, val_split=20, test_data=(f"extra={tiny_folder / 'test'}",))
    result = train(cfg, progress=False)
    assert "val_acc" in result.history[0] and "test_acc" not in result.history[0]
    meta = json.loads((out / "metadata.json").read_text())
    assert set(meta["evaluations"]) == {"val", "extra"}
    assert meta["evaluations"]["val"]["images"] == 20 and meta["evaluations"]["extra"]["images"] == 120
    lo, hi = meta["evaluations"]["extra"]["ci95"]
    assert lo <= meta["evaluations"]["extra"]["accuracy"] <= hi
    assert str(tmp_path) not in (out / "metadata.json").read_text()  # no folders of this machine
    assert meta["weights_sha256"] == tr.sha256_file(out / "model.safetensors")
    assert "less a stratified validation split of 20" in meta["trained_on"]


def test_without_a_test_split_the_followed_set_keeps_its_own_name(tiny_folder: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    """Lossless CIFAR-10 here has no test_batch: a run follows its first --test-data set every epoch, and nothing
    is called "test" that is not the official test split, nor stored twice."""
    from seresnet.report import history_summary, plot_history

    root = tmp_path / "train-only"
    shutil.copytree(tiny_folder / "train", root / "train")
    out = tmp_path / "run"
    args = ["--epochs", "1", "--batch-size", "40", "--data", str(root), "--out", str(out), "--no-progress",
            "--threads", "1", "--test-data", f"subset={tiny_folder / 'test'}"]
    assert main(args) == 0
    assert "done: se_resnet20 subset accuracy" in capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())
    assert tr.held_out_sets(history) == ["subset"] and "test_acc" not in history[0]
    meta = json.loads((out / "metadata.json").read_text())
    assert set(meta["evaluations"]) == {"subset"} and meta["evaluations"]["subset"]["images"] == 120
    assert history_summary({"run": history}).records[0]["evaluated on"] == "subset"
    labels = plot_history({"run": history}).axes[1].get_legend_handles_labels()[1]
    assert labels == ["run train", "run subset"]


def test_an_output_folder_that_cannot_be_made_is_one_clear_error(tiny_folder: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")  # the folder would have to be created inside a file: mkdir fails as on a read-only disk
    assert main(["--epochs", "1", "--data", str(tiny_folder), "--out", str(blocker / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cannot write into the output folder" in err and "Traceback" not in err
