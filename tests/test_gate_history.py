"""The excitation history: per-epoch statistics equal a direct computation, dead gates are found, files round-trip."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from seresnet import create_model
from seresnet.data import normalize
from seresnet.gate_history import GateHistory, epoch_weights, record_gate_history
from seresnet.hooks import capture


@pytest.fixture(scope="module")
def probe() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(10).repeat(4)


def _two_epochs() -> list[tuple[int, dict[str, torch.Tensor]]]:
    torch.manual_seed(0)
    first = create_model("se_resnet20").state_dict()
    second = {k: v.clone() for k, v in first.items()}
    second["layer1.0.se.excitation.fc1.bias"].fill_(-1e6)  # SE_2_1's only hidden unit can never fire
    return [(1, first), (2, second)]


def test_statistics_equal_a_direct_computation(probe) -> None:
    images, labels = probe
    weights = _two_epochs()
    history = record_gate_history(create_model("se_resnet20"), weights, images, labels, batch_size=16)
    assert history.epochs == [1, 2] and len(history.blocks) == 9
    model = create_model("se_resnet20").eval()
    for i, (_, state) in enumerate(weights):
        model.load_state_dict(state)
        with torch.no_grad(), capture(model) as cap:
            model(normalize(images))
        for b in history.blocks:
            s, z = cap.excitation[b].double(), cap.squeeze[b].double()
            expected_mean = torch.stack([s[labels == k].mean(0) for k in range(10)])
            torch.testing.assert_close(history[b]["class_mean"][i].double(), expected_mean, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(history[b]["spread"][i].double(), s.std(0, correction=0), rtol=1e-4,
                                       atol=1e-6)
            fc1 = model.se_blocks()[b].excitation.fc1
            dead = int(((z @ fc1.weight.double().T + fc1.bias.double()).amax(0) <= 0).sum())
            assert int(history[b]["dead_hidden"][i]) == dead
            assert float(history[b]["saturated_high"][i]) == pytest.approx(float((s > 0.9).double().mean()))
            total = s.var(0, correction=0).sum()
            between = ((expected_mean - s.mean(0)) ** 2).mean(0).sum()  # equal class sizes
            spec = float(history[b]["specificity"][i])
            assert (math.isnan(spec) and total == 0) or spec == pytest.approx(float(between / total), rel=1e-4)


def test_a_dead_gate_is_image_independent_and_its_specificity_undefined(probe) -> None:
    images, labels = probe
    history = record_gate_history(create_model("se_resnet20"), _two_epochs(), images, labels)
    assert history.image_independent("SE_2_1").tolist() == [False, True]
    assert int(history["SE_2_1"]["dead_hidden"][1]) == 1
    assert math.isnan(float(history["SE_2_1"]["specificity"][1]))  # 0/0 is undefined, not zero
    row = next(r for r in history.health_table() if r["block"] == "SE_2_1")
    assert row["image-independent since epoch"] == 2 and row["dead at the end"] == 1


def test_save_load_round_trip_and_run_folders(probe, tmp_path: Path) -> None:
    images, labels = probe
    history = record_gate_history(create_model("se_resnet20"), _two_epochs(), images, labels, probe="random")
    history.save(tmp_path / "g.safetensors")
    back = GateHistory.load(tmp_path / "g.safetensors")
    assert back.epochs == history.epochs and back.blocks == history.blocks and back.probe == "random"
    for b in history.blocks:
        for k, v in history[b].items():
            torch.testing.assert_close(back[b][k], v, rtol=0, atol=0, equal_nan=True)
    with pytest.raises(FileNotFoundError, match="--keep-epoch-weights"):
        list(epoch_weights(tmp_path))
    (tmp_path / "bad.safetensors").write_bytes(b"nonsense")
    with pytest.raises(ValueError, match="not a readable gate history"):
        GateHistory.load(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="no SE blocks"):
        record_gate_history(create_model("resnet20"), [], images, labels)


def test_plot_and_explorer_show_the_recorded_numbers(probe) -> None:
    import numpy as np

    from seresnet.data import CIFAR10_CLASSES
    from seresnet.widgets import gate_history_explorer

    images, labels = probe
    history = record_gate_history(create_model("se_resnet20"), _two_epochs(), images, labels)
    w = gate_history_explorer(history, CIFAR10_CLASSES, classes=(1, 4))
    assert w.state["epoch"] == 2 and w.state["block"] == "SE_4_3"
    w.controls["epoch"].value = 1
    w.controls["block"].value = "SE_2_1"
    ax_prof, ax_spec, ax_dead = w.figure.axes[:3]
    for line, k in zip(ax_prof.get_lines(), (1, 4)):
        np.testing.assert_allclose(line.get_ydata(), history["SE_2_1"]["class_mean"][0, k].numpy(), rtol=1e-6)
    spec_map = ax_spec.get_images()[0].get_array()
    expected = np.stack([history[b]["specificity"].numpy() for b in history.blocks])
    np.testing.assert_allclose(spec_map.filled(np.nan), expected, rtol=1e-6, equal_nan=True)
    assert spec_map.mask[0, 1]  # SE_2_1 at epoch 2 is undefined: masked (grey), not drawn as 0
    dead_map = ax_dead.get_images()[0].get_array()
    assert dead_map[0, 1] == 1.0 and dead_map[0, 0] == 0.0
    assert w.state["dead"]["SE_2_1"] == 0 and w.image.value[:4] == b"\x89PNG"


def test_explorer_bad_start_values(probe) -> None:
    from seresnet.data import CIFAR10_CLASSES
    from seresnet.widgets import gate_history_explorer

    images, labels = probe
    history = record_gate_history(create_model("se_resnet20"), _two_epochs(), images, labels)
    with pytest.raises(ValueError, match="unknown block 'SE_9_9'; blocks: SE_2_1, SE_2_2"):
        gate_history_explorer(history, CIFAR10_CLASSES, block="SE_9_9")
    with pytest.raises(ValueError, match=r"classes must name at least one class index 0\.\.9"):
        gate_history_explorer(history, CIFAR10_CLASSES, classes=())
    for bad in ((10,), (-1,), (1.0,), (True,)):
        with pytest.raises(ValueError, match=r"each of classes must be an integer in 0\.\.9"):
            gate_history_explorer(history, CIFAR10_CLASSES, classes=bad)


def test_a_class_missing_from_the_probe_has_no_mean_and_the_all_classes_line_ignores_it(probe) -> None:
    import numpy as np

    from seresnet.plots import plot_gate_history

    images, labels = probe
    keep = labels < 3  # classes 0-2 only
    history = record_gate_history(create_model("se_resnet20"), _two_epochs(), images[keep], labels[keep])
    means = history["SE_4_3"]["class_mean"][1]
    assert torch.isnan(means[3:]).all() and torch.isfinite(means[:3]).all()  # undefined, not 0
    assert math.isfinite(float(history["SE_4_3"]["specificity"][1]))
    fig = plot_gate_history(history, block="SE_4_3", classes=[0, 1, 2])
    (everything,) = [line for line in fig.axes[0].get_lines() if line.get_label() == "all classes"]
    np.testing.assert_allclose(everything.get_ydata(), means[:3].mean(0).numpy(), rtol=1e-6)


def test_labels_must_be_class_indices(probe) -> None:
    images, labels = probe
    for bad in (labels.float(), torch.full_like(labels, 10), torch.full_like(labels, -1)):
        with pytest.raises(ValueError, match=r"labels must be class indices 0\.\.9 \(integers\)"):
            record_gate_history(create_model("se_resnet20"), _two_epochs(), images, bad)
