"""A user's tour of the activation cache in a plain PyTorch loop: evaluation through the cached
model, indices that do not fit the batch, bad arguments, a small budget, float16 storage, a
damaged cache folder."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import frostline
from frostline import ConfigError
from frostline.exploit.cache import ActivationCache, CachedPrefixModel

N = 12


class _Net(nn.Module):
    """Not a chain: cut by hooks."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.relu(self.b(torch.relu(self.a(x)))))


def _frozen(chain: bool, cache: ActivationCache, scale: float = 1.0):
    """A model with its first unit frozen, called through the cache on every sample twice (stored,
    then replayed and its inputs verified)."""
    torch.manual_seed(0)
    if chain:
        model, units = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)), ["0", "1", "2"]
    else:
        model, units = _Net(), ["a", "b", "head"]
    with torch.no_grad():
        next(model.parameters()).mul_(scale)
    freezer = frostline.Freezer(model, torch.optim.SGD(model.parameters(), lr=0.1), frostline.NoFreezing(), 10,
                                units=units)
    freezer.freeze(0)
    cached = CachedPrefixModel(model, freezer, cache)
    x = torch.randn(N, 4)
    model.train()
    return model, cached, x


@pytest.mark.parametrize("chain", [True, False])
def test_evaluation_through_the_cached_model_computes_and_never_replays_training_rows(chain):
    model, cached, x = _frozen(chain, ActivationCache(N))
    for _ in range(2):
        cached(torch.arange(N), x).sum().backward()
    assert cached.cache.stats["hits"] == N
    stats = dict(cached.cache.stats)
    other = torch.randn(N, 4)  # validation samples, numbered 0..N-1 in their own dataset
    model.eval()
    with torch.no_grad():
        assert torch.equal(cached(torch.arange(N), other), model(other))
    model.train()
    with torch.no_grad():  # gradients off in training mode is no training step either
        assert torch.equal(cached(torch.arange(N), other), model(other))
    assert cached.cache.stats == stats


def test_indices_that_do_not_name_each_sample_of_the_batch_are_one_clear_error():
    _, cached, x = _frozen(True, ActivationCache(N))
    for bad in (torch.arange(3), torch.arange(5), torch.arange(4).float(), torch.ones(4, dtype=torch.bool),
                torch.arange(4).view(2, 2), torch.tensor(2)):
        with pytest.raises(ConfigError, match="indices"):
            cached(bad, x[:4])
    assert cached.cache.stats == {"hits": 0, "extended": 0, "computed": 0}  # nothing stored under a wrong key
    assert cached([0, 1, 2, 3], x[:4]).shape == (4, 2)  # a list or an array of indices is fine
    assert cached(np.arange(4), x[:4]).shape == (4, 2)
    with pytest.raises(ConfigError, match="one input"):
        cached(torch.arange(4), input=x[:4])


def test_bad_arguments_are_config_errors_that_say_what_to_pass():
    for n in (0, 10.5, "10", True):
        with pytest.raises(ConfigError, match="number of samples"):
            ActivationCache(n)
    with pytest.raises(ConfigError, match="budget"):
        ActivationCache(10, memory_budget_bytes="1G")
    model, cached, _ = _frozen(True, ActivationCache(N))
    with pytest.raises(ConfigError, match="ActivationCache"):
        CachedPrefixModel(model, cached.freezer, N)
    with pytest.raises(ConfigError, match="Freezer"):
        CachedPrefixModel(model, None, ActivationCache(N))


def test_a_small_budget_spills_to_disk_and_says_so_or_refuses_with_sizes(tmp_path):
    _, cached, x = _frozen(True, ActivationCache(N, memory_budget_bytes=100, directory=tmp_path))
    with pytest.warns(UserWarning, match="spill"):
        cached(torch.arange(N), x)
    assert cached.cache.kept_on == {"disk"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for disk (a budget of 0): nothing to say
        _, cached, x = _frozen(True, ActivationCache(N, memory_budget_bytes=0, directory=tmp_path / "d"))
        cached(torch.arange(N), x)
    _, cached, x = _frozen(True, ActivationCache(N, memory_budget_bytes=100))
    with pytest.raises(ConfigError, match=r"needs 384 bytes .* 100 bytes memory budget"):
        cached(torch.arange(N), x)


@pytest.mark.parametrize("chain", [True, False])
def test_a_prefix_output_beyond_float16_is_refused_not_replayed_as_inf(chain):
    _, cached, x = _frozen(chain, ActivationCache(N, dtype="float16"), scale=1e6)
    with pytest.raises(ConfigError, match="overflows float16.*bfloat16"):
        cached(torch.arange(N), x)


def test_an_unreadable_cache_folder_is_said_and_rebuilt(tmp_path):
    _, cached, x = _frozen(True, ActivationCache(N))
    cached(torch.arange(N), x)
    cached.cache.save(tmp_path)
    (tmp_path / "levels.npy").write_bytes(b"junk")
    with pytest.warns(UserWarning, match="levels.npy is unreadable"):
        cache = ActivationCache.load(tmp_path, prefix_fingerprint=cached.prefix_fingerprint, num_samples=N)
    assert not cache.stores and not cache.levels.any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a folder never saved to is a fresh start, not a problem
        ActivationCache.load(tmp_path / "new", prefix_fingerprint=cached.prefix_fingerprint, num_samples=N)


def test_a_cache_directory_that_is_a_file_is_refused_at_once(tmp_path):
    afile = tmp_path / "cache"
    afile.write_text("not a folder")
    with pytest.raises(ConfigError, match="is a file"):
        ActivationCache(8, memory_budget_bytes=0, directory=afile)
