import pytest
import torch

from frostline.lab.data import load_dataset


@pytest.fixture(autouse=True)
def _small_threads():
    torch.set_num_threads(2)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def fmnist():
    """A small real Fashion-MNIST split (the Debian package must be installed)."""
    return load_dataset("fashion-mnist", val_size=200, train_subset=512, test_subset=256, seed=0)


@pytest.fixture(scope="session")
def batch(fmnist):
    x, y = fmnist.train.get_batch(torch.arange(64))
    return x, y
