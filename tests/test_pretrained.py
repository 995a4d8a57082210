"""The shipped CIFAR-10 checkpoints load offline and score what their metadata says."""

from __future__ import annotations

import json
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
REPO = Path(__file__).resolve().parent.parent


def test_shipped_checkpoints_are_listed_and_describe_themselves() -> None:
    assert set(SHIPPED) <= set(available_pretrained())
    for name in SHIPPED:
        meta = pretrained_metadata(name)
        assert meta["model"] == name and meta["epochs"] == len(meta["history"])
        # trained on the lossless images less the validation split, with JPEG re-encoding as augmentation
        assert "exact official pixels" in meta["trained_on"] and "JPEG" in meta["trained_on"]
        assert meta["recipe"]["val_split"] == 5000 and meta["recipe"]["jpeg_p"] == 0.5
        assert meta["machine"] and meta["wall_time_s"] > 0
        assert {"val", "lossless-test-subset", "jpeg-test", "jpeg-test-subset"} <= set(meta["evaluations"])
        for ev in meta["evaluations"].values():
            assert ev["images"] > 0 and ev["description"] and ev["ci95"][0] <= ev["accuracy"] <= ev["ci95"][1]
        assert "/work/" not in json.dumps(meta)  # no folders of the machine it was trained on
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


def _tie_tolerance(logits: torch.Tensor, layers: int = 20, fan_in: int = 576) -> int:
    """How many predictions may legitimately differ between two CPUs: float32 logits computed with other summation
    orders differ by up to about layers x fan-in x eps x |logit| (worst case), so an image whose top two logits are
    closer than that may go either way (AMX, AVX-512 and other kernels accumulate in different orders)."""
    top2 = logits.topk(2, dim=1).values
    bound = layers * fan_in * torch.finfo(torch.float32).eps * logits.abs().amax(1)
    return int(((top2[:, 0] - top2[:, 1]) < bound).sum())


def _evaluation_sets(cifar_root: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The sets named in the shipped metadata that exist on this machine."""
    from conftest import load_script

    from seresnet.data import load_eval_set, stratified_split

    shared = REPO.parent / "shared" / "data"
    subset = shared / "cifar10-lossless" / "test-subset"
    sets = {}
    if (cifar_root / "test").is_dir() or (cifar_root / "cifar-10-batches-py" / "test_batch").is_file():
        sets["jpeg-test"] = load_eval_set(cifar_root)
    if subset.is_dir():
        sets["lossless-test-subset"] = load_eval_set(subset)
        if (cifar_root / "test").is_dir():
            sets["jpeg-test-subset"] = load_script("export_pretrained").same_images_as_jpeg(subset, cifar_root)
    val_split = pretrained_metadata("se_resnet20")["recipe"].get("val_split")
    if val_split and (shared / "cifar10-lossless" / "cifar-10-batches-py").is_dir():
        x, y = load_cifar10("train", shared / "cifar10-lossless")
        val = stratified_split(y, val_split)[1]
        sets["val"] = (x[val], y[val])
    return sets


def test_metadata_accuracy_is_what_evaluation_measures(cifar_root: Path) -> None:
    from seresnet.evaluate import predict_logits

    sets = _evaluation_sets(cifar_root)
    assert sets, "no evaluation set of the shipped metadata is on this machine"
    for name in SHIPPED:
        meta = pretrained_metadata(name)
        model = create_model(name, pretrained=True)
        for set_name, (x, y) in sets.items():
            stored = meta["evaluations"][set_name]
            logits = predict_logits(model, x)
            correct = int((logits.argmax(1) == y).sum())
            assert stored["images"] == len(y), (name, set_name)
            slack = _tie_tolerance(logits)
            assert abs(correct - round(stored["accuracy"] * len(y))) <= slack, (name, set_name, slack)
            assert stored["ci95"][0] <= stored["accuracy"] <= stored["ci95"][1]
        # "time to 90%" is the wall time of the first epoch whose validation accuracy reached 90% (None: never)
        key = "val_acc" if "val_acc" in meta["history"][0] else "test_acc"
        first = next((r for r in meta["history"] if r[key] >= 0.9), None)
        assert meta["time_to_90_percent_s"] == (first["wall_s"] if first else None)


def test_shipped_gate_history_loads_checked_and_matches_the_training(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The excitations' history recorded while the shipped se_resnet20 trained (notebook 03) loads, covers every
    epoch and SE block, stays small, and is refused when damaged; resnet20 has no SE blocks and says so."""
    from seresnet.pretrained import pretrained_gate_history

    meta = pretrained_metadata("se_resnet20")
    path = PRETRAINED_DIR / meta["gate_history"]["file"]
    assert path.stat().st_size < 5_000_000
    gates = pretrained_gate_history("se_resnet20")
    assert gates.epochs == list(range(1, meta["epochs"] + 1))
    assert gates.blocks == list(create_model("se_resnet20").se_blocks())
    with pytest.raises(ValueError, match="no recorded excitation history"):
        pretrained_gate_history("resnet20")
    # the 30-epoch lossless run's history, which notebook 03 compares with it, is stored and checked the same way
    from seresnet.gate_history import GateHistory

    folder = REPO / "notebooks" / "results" / "lossless_e30"
    e30 = json.loads((folder / "se_resnet20.json").read_text())
    e30_path = folder / e30["gate_history"]["file"]
    assert sha256_file(e30_path) == e30["gate_history"]["sha256"] and e30_path.stat().st_size < 5_000_000
    e30_gates = GateHistory.load(e30_path)
    assert e30_gates.epochs == list(range(1, e30["epochs"] + 1)) and len(e30_gates.blocks) == 9
    # a damaged copy of the history is refused, not loaded
    for f in PRETRAINED_DIR.iterdir():
        shutil.copy(f, tmp_path / f.name)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    (tmp_path / path.name).write_bytes(bytes(data))
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path)
    with pytest.raises(ValueError, match="does not match the SHA-256"):
        pretrained_gate_history("se_resnet20")


def test_export_script_never_replaces_a_checkpoint_by_accident(tiny_folder: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    """--reevaluate merges its new evaluations into the old ones and obeys --out-dir (the package's files stay as
    they are); an export refuses an existing name, a registered name of another network, and a folder that is not a
    finished run."""
    from conftest import load_script
    from test_train import tiny_cfg

    from seresnet.train import train

    script = load_script("export_pretrained")
    shipped = {p.name: p.read_bytes() for p in pretrained.PRETRAINED_DIR.glob("se_resnet20*")}
    with pytest.raises(SystemExit):
        script.main(["--reevaluate", "--name", "se_resnet20"])  # nothing to measure
    out_dir = tmp_path / "reevaluated"
    assert script.main(["--reevaluate", "--name", "se_resnet20", "--out-dir", str(out_dir),
                        "--test-data", f"tiny={tiny_folder / 'test'}"]) == 0
    meta = json.loads((out_dir / "se_resnet20.json").read_text())
    old = pretrained_metadata("se_resnet20")["evaluations"]
    assert set(meta["evaluations"]) == {*old, "tiny"} and meta["evaluations"]["val"] == old["val"]
    assert meta["evaluations"]["tiny"]["images"] == 120
    assert load_model(out_dir / "se_resnet20.safetensors").config == create_model("se_resnet20").config
    assert {p.name: p.read_bytes() for p in pretrained.PRETRAINED_DIR.glob("se_resnet20*")} == shipped

    run = tmp_path / "run"
    train(tiny_cfg(tiny_folder, run, epochs=1), progress=False)  # an se_resnet20 run
    common = [str(run), "--data", str(tiny_folder), "--out-dir", str(out_dir)]
    for argv, message in ((["--name", "se_resnet20"], "exists"),
                          (["--name", "resnet20"], "is a registered model, but this run trained 'se_resnet20'"),
                          ):
        with pytest.raises(SystemExit):
            script.main([*common, *argv])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main([str(tmp_path / "nope"), "--name", "x", "--data", str(tiny_folder), "--out-dir", str(out_dir)])
    assert "not a finished training run" in capsys.readouterr().err
    assert script.main([*common, "--name", "se_resnet20", "--overwrite"]) == 0
    assert json.loads((out_dir / "se_resnet20.json").read_text())["epochs"] == 1
