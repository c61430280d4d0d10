"""Shared fixtures.

Two kinds of data: ``synthetic`` (and ``batch``, its first 64 images) are seeded random images
shaped like Fashion-MNIST, built in memory, so unit tests run on a machine without any dataset;
``fmnist`` (and ``fmnist_batch``) are the real images, for tests about real-data behaviour. Tests
that need the real data, pretrained weights, subprocesses or more than ~2 s are marked
``integration``: ``pytest -m "not integration"`` is the fast unit suite.
"""

import pytest
import torch

from frostline.lab.data import DataSplits, TensorImageDataset, load_dataset

#: The synthetic splits' sizes: the same as the ``fmnist`` fixture's, so either fits any test.
SYNTHETIC_SIZES = {"train": 512, "val": 200, "test": 256}


@pytest.fixture(autouse=True)
def _small_threads():
    torch.set_num_threads(2)
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """One thread for a test (``pytestmark = pytest.mark.usefixtures("one_thread")``): on 2 shared
    cores, two contending threads made some of these small steps ~10x slower. The next test gets
    its two threads back from ``_small_threads``."""
    torch.set_num_threads(1)


def _synthetic_splits(seed: int = 0) -> DataSplits:
    """Images of 10 classes, each a fixed random pattern plus noise: learnable, so training steps
    see a falling loss and real gradients, yet nothing is read from disk."""
    g = torch.Generator().manual_seed(seed)
    n = sum(SYNTHETIC_SIZES.values())
    patterns = torch.rand(10, 28, 28, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    noise = torch.rand(n, 28, 28, generator=g)
    images = (255 * (0.6 * patterns[labels] + 0.4 * noise)).round().to(torch.uint8)
    scaled = images[: SYNTHETIC_SIZES["train"]].float() / 255
    mean, std = float(scaled.mean()), float(scaled.std())
    splits, start = {}, 0
    for name, size in SYNTHETIC_SIZES.items():
        part = slice(start, start + size)
        splits[name] = TensorImageDataset(images[part].numpy(), labels[part].numpy(), mean=mean, std=std)
        start += size
    return DataSplits(**splits, num_classes=10, in_channels=1, image_size=28, name="synthetic")


@pytest.fixture(scope="session")
def synthetic():
    """Train/val/test splits of seeded synthetic 1x28x28 images in 10 classes (no dataset needed)."""
    return _synthetic_splits()


@pytest.fixture(scope="session")
def batch(synthetic):
    """64 synthetic images and labels: (64, 1, 28, 28) float, (64,) long."""
    return synthetic.train.get_batch(torch.arange(64))


@pytest.fixture(scope="session")
def fmnist():
    """A small real Fashion-MNIST split (the Debian package must be installed)."""
    return load_dataset("fashion-mnist", val_size=200, train_subset=512, test_subset=256, seed=0)


@pytest.fixture(scope="session")
def fmnist_batch(fmnist):
    """64 real Fashion-MNIST images and labels, for tests about real-data behaviour."""
    return fmnist.train.get_batch(torch.arange(64))
