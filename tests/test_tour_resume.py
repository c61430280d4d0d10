"""A user's tour of checkpoint and resume in a plain PyTorch loop: model, optimizer, scheduler and
Freezer states through torch.save, loaded in the documented order or not, into Freezers built
otherwise or that already stepped, and the activation cache's folder saved beside them, intact,
damaged or from another save."""

import copy
import io
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import frostline
from frostline import CheckpointError, ConfigError, Freezer
from frostline.exploit.cache import ActivationCache, CachedPrefixModel

pytestmark = pytest.mark.usefixtures("one_thread")

T = 24  # optimizer steps of a run


def _model(width=16):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width),
                         nn.ReLU(), nn.Linear(width, 2))


def _batch(i):
    g = torch.Generator().manual_seed(i)
    return torch.randn(16, 8, generator=g), torch.randint(0, 2, (16,), generator=g)


def _policy(name, **kw):
    if name == "linear":
        return frostline.create_policy("linear", **{"freeze_start": 0.1, **kw})
    if name == "smartfrz":  # eager enough to freeze in a run this short
        return frostline.SmartFRZ(steps_per_epoch=4, **{"threshold": 0.01, "window": 3, "snapshots_per_epoch": 4, **kw})
    return frostline.create_policy(name, **kw)


def _setup(name="linear", total=T, width=16, policy_kw=None, **freezer_kw):
    model = _model(width)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1 / (1 + 0.05 * t))
    freezer = Freezer(model, optimizer, _policy(name, **(policy_kw or {})), total, example_input=_batch(0)[0],
                      **freezer_kw)
    freezer.attach_scheduler(scheduler)
    return model, optimizer, scheduler, freezer


def _train(model, optimizer, scheduler, freezer, steps):
    for i in steps:
        x, y = _batch(i)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        freezer.step()


def _saved(model, optimizer, scheduler, freezer):
    """Everything through torch.save and back, as a checkpoint file would be."""
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "freezer": freezer.state_dict()}, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _load(run, saved):
    """The documented order: model, Freezer, optimizer, scheduler."""
    model, optimizer, scheduler, freezer = run
    model.load_state_dict(saved["model"])
    freezer.load_state_dict(saved["freezer"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])


def _same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("name, kw, cut", [
    ("linear", {}, 12), ("linear", {"cooldown": 3}, 12), ("linear", {"cooldown": 3, "head_units": 2}, 24),
    ("freezeout", {"head_units": 2}, 12), ("autofreeze", {"cooldown": 3}, 5), ("autofreeze", {"head_units": 2}, 0),
    ("smartfrz", {"cooldown": 3}, 6), ("smartfrz", {}, 13),
])
def test_a_resumed_run_ends_bitwise_where_the_uninterrupted_one_does(name, kw, cut):
    """At step 0, mid-cool-down (linear at 12, autofreeze at 5, smartfrz at 6 are cooling) and after
    training ended (24)."""
    reference = _setup(name, **kw)
    _train(*reference, range(T))
    assert reference[3].frozen
    run = _setup(name, **kw)
    _train(*run, range(cut))
    saved = _saved(*run)
    resumed = _setup(name, **kw)
    _load(resumed, saved)
    _train(*resumed, range(cut, T))
    assert _same(reference[0], resumed[0])
    assert resumed[3].timeline == reference[3].timeline and resumed[3].frozen == reference[3].frozen


def test_the_optimizer_loaded_before_the_freezer_is_one_error_that_says_the_order():
    run = _setup()
    _train(*run, range(12))
    saved = _saved(*run)
    model, optimizer, _, _ = _setup()
    model.load_state_dict(saved["model"])
    with pytest.raises(CheckpointError, match=r"freezer.load_state_dict\(saved_freezer_state\) before"):
        optimizer.load_state_dict(saved["optimizer"])


@pytest.mark.parametrize("name, kw", [("linear", {}), ("freezeout", {}), ("linear", {"cooldown": 3})])
def test_a_state_loaded_into_a_freezer_that_stepped_past_it_trains_the_units_it_froze_since(name, kw):
    """A roll-back on the same objects: units frozen after the saved step stayed frozen (no
    gradients, in no unit the saved state froze), silently training the rest alone."""
    reference = _setup(name, **kw)
    _train(*reference, range(T))
    run = _setup(name, **kw)
    _train(*run, range(12))
    saved = copy.deepcopy(_saved(*run))  # (the optimizer keeps the loaded tensors: one copy per load)
    _train(*run, range(12, 20))
    assert len(run[3].frozen) > len(saved["freezer"]["frozen"])
    _load(run, saved)
    assert sorted(run[3].frozen) == saved["freezer"]["frozen"]
    assert all(p.requires_grad for i in range(len(run[3].units)) if i not in run[3].frozen
               for p in run[3].units[i].params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no word about parameters trainable again
        _train(*run, range(12, T))
    assert _same(reference[0], run[0])


def test_loading_the_same_state_twice_changes_nothing():
    reference = _setup("autofreeze", cooldown=3)
    _train(*reference, range(T))
    run = _setup("autofreeze", cooldown=3)
    _train(*run, range(5))
    saved = _saved(*run)
    resumed = _setup("autofreeze", cooldown=3)
    resumed[3].load_state_dict(copy.deepcopy(saved["freezer"]))
    _load(resumed, saved)
    _train(*resumed, range(5, T))
    assert _same(reference[0], resumed[0])


@pytest.mark.parametrize("other, match", [
    (dict(name="freezeout"), "method 'linear', not 'freezeout'"),
    (dict(name="autofreeze"), "method 'linear', not 'autofreeze'"),
    (dict(policy_kw={"freeze_start": 0.3}), "hyperparameters"),
    (dict(total=30), "total_steps=24, this one 30"),
    (dict(cooldown=2), "cooldown=0, this one 2"),
    (dict(head_units=2), "head_units"),
    (dict(freeze_head=True), "freeze_head=False, this one True"),
])
def test_a_state_into_a_freezer_built_otherwise_is_one_error_saying_what_differs(other, match):
    run = _setup()
    _train(*run, range(12))
    saved = _saved(*run)
    _, _, _, freezer = _setup(**other)
    with pytest.raises(CheckpointError, match=match):
        freezer.load_state_dict(saved["freezer"])


# -- the activation cache's folder -------------------------------------------------------------
N, B = 32, 8
_g = torch.Generator().manual_seed(1)
X, Y = torch.randn(N, 8, generator=_g), torch.randint(0, 2, (N,), generator=_g)


def _cached_setup():
    torch.manual_seed(0)
    block = lambda a, b: nn.Sequential(nn.Linear(a, b), nn.ReLU())  # noqa: E731
    model = nn.Sequential(block(8, 16), block(16, 16), block(16, 16), nn.Linear(16, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    freezer = Freezer(model, optimizer, _policy("linear"), T, units=["0", "1", "2", "3"], cooldown=2)
    return model, optimizer, freezer, CachedPrefixModel(model, freezer, ActivationCache(N))


def _cached_train(model, optimizer, freezer, cached, steps, x=X):
    model.train()
    for i in steps:
        idx = torch.randperm(N, generator=torch.Generator().manual_seed(i))[:B]
        loss = nn.functional.cross_entropy(cached(idx, x[idx]), Y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        freezer.step()


def _cached_run(directory, cut=16):
    run = _cached_setup()
    _cached_train(*run, range(cut))
    run[3].cache.save(directory)
    buf = io.BytesIO()
    torch.save({"model": run[0].state_dict(), "optimizer": run[1].state_dict(), "freezer": run[2].state_dict()}, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _cached_resume(saved, directory):
    model, optimizer, freezer, cached = _cached_setup()
    model.load_state_dict(saved["model"])
    freezer.load_state_dict(saved["freezer"])
    optimizer.load_state_dict(saved["optimizer"])
    cached.cache = ActivationCache.load(directory, prefix_fingerprint=cached.prefix_fingerprint, num_samples=N)
    return model, optimizer, freezer, cached


def test_a_run_with_the_cache_resumes_exactly_from_its_saved_folder(tmp_path):
    reference = _cached_setup()
    _cached_train(*reference, range(T))
    saved = _cached_run(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resumed = _cached_resume(saved, tmp_path)
    assert set(resumed[3].cache.stores) == {1}
    _cached_train(*resumed, range(16, T))
    assert resumed[3].cache.stats["hits"] > 0
    assert _same(reference[0], resumed[0])


def _header(directory, **change):
    path = directory / "boundary1.json"
    header = json.loads(path.read_text())
    for key, value in change.items():
        if value is None:
            del header[key]
        else:
            header[key] = value
    path.write_text(json.dumps(header))


@pytest.mark.parametrize("damage, match", [
    (lambda d: _header(d, shape=None), "unreadable header"),  # was a bare KeyError
    (lambda d: _header(d, shape="ab"), "unreadable header"),  # was numpy's UFuncTypeError
    (lambda d: np.save(d / "levels.npy", np.ones(N, np.int32)), "levels.npy does not match"),  # served zeros
    (lambda d: (d / "levels.npy").unlink(), "levels.npy is missing"),  # was rebuilt without a word
    (lambda d: np.save(d / "levels.npy", np.load(d / "levels.npy") + 0.5), "holds float64"),  # likewise
])
def test_a_damaged_cache_folder_is_rebuilt_with_a_warning_never_served(tmp_path, damage, match):
    saved = _cached_run(tmp_path)
    damage(tmp_path)
    with pytest.warns(UserWarning, match=match):
        resumed = _cached_resume(saved, tmp_path)
    assert not resumed[3].cache.stores and not resumed[3].cache.levels.any()
    _cached_train(*resumed, range(16, 18))
    assert resumed[3].cache.stats["hits"] == 0 or resumed[3].cache.stats["computed"] > 0


def test_a_reloaded_cache_checks_the_inputs_again_so_other_data_is_not_served(tmp_path):
    """Every sample had come back with its inputs before the save; after a resume on data in
    another order (a random split drawn again) the stored rows were replayed for other samples."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 2))
    freezer = Freezer(model, torch.optim.SGD(model.parameters(), lr=0.1), frostline.NoFreezing(), 10, units=["0", "1"])
    freezer.freeze(0)
    cached = CachedPrefixModel(model, freezer, ActivationCache(N))
    model.train()
    cached(torch.arange(N), X)
    cached(torch.arange(N), X)  # replayed and verified
    assert cached.cache.verified.all()
    cached.cache.save(tmp_path)
    reload = lambda: ActivationCache.load(tmp_path, prefix_fingerprint=cached.prefix_fingerprint,  # noqa: E731
                                          num_samples=N)
    again = CachedPrefixModel(model, freezer, reload())
    assert torch.equal(again(torch.arange(N), X), model(X))  # the same data is served as before
    assert again.cache.stats["hits"] == N
    again = CachedPrefixModel(model, freezer, reload())
    with pytest.raises(ConfigError, match="came back with other inputs"):
        again(torch.arange(N), X.flip(0))
