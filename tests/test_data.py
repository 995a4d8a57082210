"""CIFAR-10 sources (official batches, image folders, download path), the shipped sample, and batch augmentation."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_batches, write_image_folder

from seresnet import data


def test_image_folder_layout(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "c", per_class=3)
    x, y = data.load_cifar10("test", root)
    assert x.shape == (30, 3, 32, 32) and x.dtype == torch.uint8
    assert torch.equal(y, torch.arange(10).repeat_interleave(3))
    assert data.find_cifar10(root).kind == "folder"
    # a data root that holds the folder as cifar10-jpeg/ is found too
    (tmp_path / "c").rename(tmp_path / "cifar10-jpeg")
    assert data.find_cifar10(tmp_path).path == (tmp_path / "cifar10-jpeg").resolve()


def test_official_batches_format(tmp_path: Path) -> None:
    root = write_batches(tmp_path, per_batch=7)
    x_train, y_train = data.load_cifar10("train", root)
    x_test, y_test = data.load_cifar10("test", root)
    assert x_train.shape == (35, 3, 32, 32) and x_test.shape == (7, 3, 32, 32)
    with open(root / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f)
    # row-major 3072 bytes = R plane, G plane, B plane
    assert torch.equal(x_test[0, 1].flatten(), torch.as_tensor(raw["data"][0, 1024:2048]))
    assert y_test.tolist() == raw["labels"]


def test_batches_refuse_code_in_pickles(tmp_path: Path) -> None:
    root = write_batches(tmp_path)

    class Evil:
        def __reduce__(self):  # would run a command if unpickled carelessly
            return (print, ("pwned",))

    with open(root / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": Evil(), "labels": [0]}, f)
    with pytest.raises(ValueError, match="refusing to load"):
        data.load_cifar10("test", root)


def test_env_var_overrides_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_image_folder(tmp_path / "envdata", per_class=1, splits=("test",))
    monkeypatch.setenv("SERESNET_DATA", str(root))
    assert data.default_data_root() == root
    assert data.load_cifar10("test")[0].shape[0] == 10


def test_missing_data_message_lists_places_and_three_ways(tmp_path: Path) -> None:
    with pytest.raises(data.DataNotFoundError) as err:
        data.load_cifar10("train", tmp_path / "nothing-here")
    msg = str(err.value)
    assert "cifar-10-batches-py" in msg and "download=True" in msg and "SERESNET_DATA" in msg
    assert str(tmp_path / "nothing-here") in msg


def test_failed_download_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    class NoInternet(torchvision.datasets.CIFAR10):
        def __init__(self, root: str, **kw) -> None:
            (Path(root) / self.filename).write_bytes(b"partial archive")  # what an interrupted download leaves
            raise RuntimeError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", NoInternet)
    with pytest.raises(data.DataNotFoundError, match="downloading CIFAR-10"):
        data.load_cifar10("train", tmp_path, download=True)
    assert not (tmp_path / NoInternet.filename).exists()


def test_bad_folders_get_clear_errors(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "c", per_class=2, splits=("test",))
    with pytest.raises(data.DataNotFoundError, match="no 'train' folder"):
        data.load_cifar10("train", root)
    (root / "test" / "truck" / "0000.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot decode image"):
        data.load_cifar10("test", root)
    for f in (root / "test" / "truck").iterdir():
        f.unlink()
    (root / "test" / "truck").rmdir()
    with pytest.raises(data.DataNotFoundError, match="missing class folders \\['truck'\\]"):
        data.load_cifar10("test", root)
    with pytest.raises(ValueError, match="split must be"):
        data.load_cifar10("val", root)


def test_shipped_sample_is_real_cifar() -> None:
    x, y = data.load_sample()
    assert x.shape == (1000, 3, 32, 32)
    assert torch.equal(y.bincount(), torch.full((10,), 100))
    assert x.float().std() > 40  # real photographs, not a constant placeholder


def test_full_copy_has_all_images(cifar_root: Path) -> None:
    x, y = data.load_cifar10("test", cifar_root)
    assert x.shape == (10_000, 3, 32, 32) and torch.equal(y.bincount(), torch.full((10,), 1000))
    # the shipped sample is the first 100 test images of each class of this copy
    xs, _ = data.load_sample()
    assert torch.equal(xs[:100], x[:100]) and torch.equal(xs[900:], x[9000:9100])


def test_normalize_matches_torchvision() -> None:
    from torchvision.transforms import v2

    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    ref = v2.Normalize(data.CIFAR10_MEAN, data.CIFAR10_STD)(x.float() / 255)
    torch.testing.assert_close(data.normalize(x), ref)
    with pytest.raises(TypeError, match="uint8"):
        data.normalize(x.float())


def test_random_crop_flip_is_a_shifted_or_flipped_crop() -> None:
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = data.random_crop_flip(x, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    flips = 0
    for i in range(64):
        found = None
        for dy in range(9):
            for dx in range(9):
                crop = padded[i, :, dy:dy + 32, dx:dx + 32]
                if torch.equal(out[i], crop):
                    found = "plain"
                elif torch.equal(out[i], crop.flip(2)):
                    found = "flip"
        assert found is not None, f"sample {i} is not a crop of its padded image"
        flips += found == "flip"
    assert 10 < flips < 54  # about half are flipped


def test_batches_are_deterministic_per_epoch_and_sharded() -> None:
    x = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(100)
    a = data.TensorBatches(x, y, 10, shuffle=True, augment=True, drop_last=True, seed=3)
    b = data.TensorBatches(x, y, 10, shuffle=True, augment=True, drop_last=True, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    b.set_epoch(3)
    assert not torch.equal(next(iter(a))[1], next(iter(b))[1])
    r0 = data.TensorBatches(x, y, 10, shuffle=True, seed=1, rank=0, world_size=2)
    r1 = data.TensorBatches(x, y, 10, shuffle=True, seed=1, rank=1, world_size=2)
    s0 = torch.cat([yb for _, yb in r0])
    s1 = torch.cat([yb for _, yb in r1])
    assert len(s0) == len(s1) == 50 and not set(s0.tolist()) & set(s1.tolist())
    with pytest.raises(ValueError, match="larger than the 100 images"):
        data.TensorBatches(x, y, 128, drop_last=True)


# --- the lossless copy's layout: training batches without test_batch, test images elsewhere ----------------------
def test_batches_without_a_test_batch_serve_training_and_say_where_the_test_set_must_come_from(tmp_path: Path) -> None:
    root = write_batches(tmp_path, per_batch=7)
    (root / "cifar-10-batches-py" / "test_batch").unlink()
    assert data.find_cifar10(root).kind == "batches"
    assert data.load_cifar10("train", root)[0].shape == (35, 3, 32, 32)
    with pytest.raises(data.DataNotFoundError, match="no test_batch.*--test-data.*--val-split"):
        data.load_cifar10("test", root)


def test_evaluation_sets_from_class_folders_or_data_roots(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "c", per_class=2, splits=("test",))
    x_root, y_root = data.load_eval_set(root)  # a data root: its test split
    x_dir, y_dir = data.load_eval_set(root / "test")  # a class folder
    assert torch.equal(x_root, x_dir) and torch.equal(y_root, y_dir) and x_dir.shape[0] == 20
    with pytest.raises(data.DataNotFoundError, match="does not exist"):
        data.load_eval_set(tmp_path / "missing")


def test_an_extra_class_folder_is_an_error_not_ignored(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "c", per_class=1, splits=("test",))
    (root / "test" / "unicorn").mkdir()
    with pytest.raises(ValueError, match=r"\['unicorn'\] that are not classes"):
        data.load_cifar10("test", root)


def test_sixteen_bit_images_are_refused(tmp_path: Path) -> None:
    from PIL import Image

    root = write_image_folder(tmp_path / "c", per_class=1, splits=("test",))
    path = next((root / "test" / "cat").iterdir())
    Image.fromarray(np.full((32, 32), 40000, dtype=np.uint16)).save(path)  # would wrap to 64 as uint8
    with pytest.raises(ValueError, match="expected 8-bit RGB"):
        data.load_cifar10("test", root)


def test_stratified_validation_split() -> None:
    labels = torch.arange(10).repeat_interleave(50)[torch.randperm(500, generator=torch.Generator().manual_seed(1))]
    train_idx, val_idx = data.stratified_split(labels, 53)
    assert len(val_idx) == 53 and len(train_idx) == 447
    assert set(train_idx.tolist()).isdisjoint(val_idx.tolist())
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(500))
    counts = torch.bincount(labels[val_idx], minlength=10)
    assert counts.max() - counts.min() == 1 and counts.sum() == 53  # equal shares, the remainder spread
    again = data.stratified_split(labels, 53)[1]
    assert torch.equal(again, val_idx)  # fixed: every run validates on the same images
    with pytest.raises(ValueError, match="has only 50 training images"):
        data.stratified_split(labels, 500)
    with pytest.raises(ValueError, match="positive number of images"):
        data.stratified_split(labels, 0)


def test_random_jpeg_reencodes_the_chosen_share_deterministically() -> None:
    import io

    from PIL import Image

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=g)
    out = data.random_jpeg(images, torch.Generator().manual_seed(1), p=0.5, quality=(60, 60))
    changed = [i for i in range(40) if not torch.equal(out[i], images[i])]
    assert 8 <= len(changed) <= 32  # about half
    i = changed[0]
    buf = io.BytesIO()
    Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=60)
    with Image.open(buf) as im:
        expected = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(out[i], expected)  # exactly a JPEG round trip at the drawn quality
    again = data.random_jpeg(images, torch.Generator().manual_seed(1), p=0.5, quality=(60, 60))
    assert torch.equal(again, out)  # same generator, same images: resumable runs stay bit-identical
    assert torch.equal(data.random_jpeg(images, g, p=0.0), images)
    with pytest.raises(ValueError, match="quality"):
        data.random_jpeg(images, g, quality=(90, 40))
