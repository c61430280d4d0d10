import json
import warnings

import pytest
import torch
from torch import nn

from frostline import ConfigError, Freezer, FreezeOut, NoFreezing
from frostline.exploit.cache import ActivationCache, CachedPrefixModel, fingerprint, is_deterministic
from frostline.lab.cli import main
from frostline.lab.data import AugmentedDataset
from frostline.lab.zoo import create_model
from frostline.lab.loop import iterate_batches

TINY = ["--train-subset", "200", "--val-size", "100", "--test-subset", "100", "--batch-size", "32", "--no-progress"]


def _run(fmnist, *, cache: ActivationCache | None, epochs=3, batch=24):
    """FreezeOut on real data (200 samples: the last batch is partial), shuffled every epoch."""
    torch.manual_seed(0)
    model = create_model("resnet")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    steps = epochs * -(-len(fmnist.train) // batch)
    freezer = Freezer(model, optimizer, FreezeOut(t_0=0.2, schedule="linear"), steps, units=[[n] for n, _ in model.named_children()])
    cached = CachedPrefixModel(model, freezer, cache) if cache is not None else None
    losses = []
    model.train()
    for epoch in range(epochs):
        for idx, x, y in iterate_batches(fmnist.train, batch, shuffle=True, seed=epoch):
            out = cached(idx, x) if cached else model(x)
            loss = nn.functional.cross_entropy(out, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            freezer.step()
            losses.append(loss.item())
    return model, losses


@pytest.mark.integration
def test_cached_run_equals_uncached_run(fmnist, tmp_path):
    ref_model, ref_losses = _run(fmnist, cache=None)
    cache = ActivationCache(len(fmnist.train))
    model, losses = _run(fmnist, cache=cache)
    assert losses == pytest.approx(ref_losses, abs=1e-6)
    for (n, p), q in zip(ref_model.named_parameters(), model.parameters()):
        assert torch.allclose(p, q, atol=1e-6, rtol=0), n
    # every kind of serving happened: computed from raw input, extended to a deeper boundary, replayed
    assert cache.stats["computed"] > 0 and cache.stats["extended"] > 0 and cache.stats["hits"] > 0
    # each sample's newest entry is counted exactly once; boundaries nobody uses are freed
    assert sum(st.count for st in cache.stores.values()) == int((cache.levels > 0).sum())
    assert all(st.count > 0 for st in cache.stores.values())


@pytest.mark.integration
def test_disk_tier_gives_the_same_run(fmnist, tmp_path):
    _, ref_losses = _run(fmnist, cache=ActivationCache(len(fmnist.train)))
    disk = ActivationCache(len(fmnist.train), memory_budget_bytes=0, directory=tmp_path / "cache")
    _, losses = _run(fmnist, cache=disk)
    assert losses == pytest.approx(ref_losses, abs=1e-6)
    assert disk.memory_bytes == 0 and disk.peak_disk_bytes > 0 and disk.kept_on == {"disk"}
    assert list((tmp_path / "cache").glob("boundary*.bin"))


@pytest.mark.integration
def test_half_precision_storage_is_close_not_exact(fmnist):
    _, ref_losses = _run(fmnist, cache=None, epochs=2)
    _, losses = _run(fmnist, cache=ActivationCache(len(fmnist.train), dtype="bfloat16"), epochs=2)
    assert losses[-1] == pytest.approx(ref_losses[-1], rel=0.05)


def _filled_cache(data, directory):
    torch.manual_seed(0)
    model = create_model("resnet").eval()
    cache = ActivationCache(len(data.train), directory=directory)
    x, _ = data.train.get_batch(torch.arange(len(data.train)))
    run = lambda h, a, b: model[a:b](h)
    prefix = lambda k: fingerprint(list(model[:k]))
    out = cache.prefix_output(torch.arange(len(data.train)), x, 3, run, prefix)
    return model, cache, x, run, prefix, out


def test_saved_cache_reloads_and_serves(synthetic, tmp_path):
    model, cache, x, run, prefix, out = _filled_cache(synthetic, tmp_path / "c")
    cache.save(tmp_path / "c")
    again = ActivationCache.load(tmp_path / "c", prefix_fingerprint=prefix, num_samples=len(synthetic.train))
    assert set(again.stores) == {3}
    served = again.prefix_output(torch.arange(10), x[:10], 3, run, prefix)
    assert torch.equal(served, out[:10]) and again.stats["hits"] == 10


def test_corrupted_or_stale_cache_is_rebuilt_not_served(synthetic, tmp_path):
    model, cache, x, run, prefix, out = _filled_cache(synthetic, tmp_path / "c")
    cache.save(tmp_path / "c")
    data = tmp_path / "c" / "boundary3.bin"
    raw = bytearray(data.read_bytes())
    raw[1000] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="checksum"):
        again = ActivationCache.load(tmp_path / "c", prefix_fingerprint=prefix, num_samples=len(synthetic.train))
    assert not again.stores and not again.levels.any()
    served = again.prefix_output(torch.arange(10), x[:10], 3, run, prefix)
    assert again.stats["computed"] == 10 and torch.allclose(served, out[:10], atol=1e-6)

    cache.save(tmp_path / "c")  # a good copy again, then change the prefix's weights
    with torch.no_grad():
        model[0][0].weight.add_(0.01)
    with pytest.warns(UserWarning, match="weights differ"):
        stale = ActivationCache.load(tmp_path / "c", prefix_fingerprint=lambda k: fingerprint(list(model[:k])),
                                     num_samples=len(synthetic.train))
    assert not stale.stores


def test_cache_errors_are_clear(synthetic):
    with pytest.raises(ConfigError, match="dtype"):
        ActivationCache(10, dtype="int8")
    tiny = ActivationCache(len(synthetic.train), memory_budget_bytes=1000)
    model = create_model("resnet").eval()
    x, _ = synthetic.train.get_batch(torch.arange(4))
    with pytest.raises(ConfigError, match="budget"):
        tiny.prefix_output(torch.arange(4), x, 2, lambda h, a, b: model[a:b](h))
    with pytest.raises(ConfigError, match="out of range"):
        ActivationCache(3).prefix_output(torch.tensor([5]), x[:1], 1, lambda h, a, b: model[a:b](h))


def test_augmentation_is_detected_and_fixed_augmentation_is_cacheable(synthetic):
    assert is_deterministic(synthetic.train)
    assert not is_deterministic(AugmentedDataset(synthetic.train), probe=(0, 1, 2))
    assert is_deterministic(AugmentedDataset(synthetic.train, fixed=True))


def _train_cached(data, indices_of, on_refuse, use_cache=True, epochs=3, batch=16):
    """A chain (the zoo's resnet) frozen from its second step, through the cache (or not): the
    losses. ``indices_of(idx)`` gives the indices the loop passes for dataset indices ``idx``."""
    torch.manual_seed(0)
    model = create_model("resnet")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    freezer = Freezer(model, optimizer, FreezeOut(t_0=0.2, schedule="linear"), 1000,
                      units=[[n] for n, _ in model.named_children()])
    cached = CachedPrefixModel(model, freezer, ActivationCache(64), on_refuse=on_refuse) if use_cache else None
    losses = []
    for epoch in range(epochs):
        for idx in torch.randperm(64, generator=torch.Generator().manual_seed(epoch)).split(batch):
            x, y = data.get_batch(idx)
            loss = nn.functional.cross_entropy(cached(indices_of(idx), x) if cached else model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            freezer.step()
            if freezer.step_count == 1:
                freezer.freeze(0)
                freezer.freeze(1)
            losses.append(loss.item())
    return losses, cached


def test_inputs_that_change_between_visits_are_never_served_stale(synthetic):
    """The cache is keyed by the index the loop passes: a random augmentation, or indices that are
    not the samples' own, would replay another input's activations. Strict: a ConfigError that
    says so; warn: one warning, and the changed samples are computed afresh (the run then equals
    one without the cache). Fixed inputs pass the check once per sample and are not checked again."""
    augmented = AugmentedDataset(synthetic.train)
    with pytest.raises(ConfigError, match="came back with other inputs"):
        _train_cached(augmented, lambda idx: idx, "raise")
    with pytest.raises(ConfigError, match="not each sample's own index"):
        _train_cached(synthetic.train, lambda idx: torch.arange(len(idx)), "raise")  # positions in the batch
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses, _ = _train_cached(augmented, lambda idx: idx, "warn")
    assert len([w for w in caught if "came back with other inputs" in str(w.message)]) == 1
    plain, _ = _train_cached(augmented, lambda idx: idx, "warn", use_cache=False)
    assert losses == pytest.approx(plain, abs=1e-6)
    _, fixed = _train_cached(synthetic.train, lambda idx: idx, "raise")
    assert fixed.cache.verified.all() and fixed.cache.stats["hits"] > 0
    assert not fixed.cache.unverified(torch.arange(64))  # nothing more to check


@pytest.mark.integration
def test_trainer_refuses_cache_with_random_augmentation(tmp_path, capsys):
    args = ["train", "--method", "freezeout", "--t-0", "0.2", "--schedule", "linear", "--epochs", "2", *TINY]
    assert main([*args, "--augment", "--out", str(tmp_path / "aug")]) == 0
    err = capsys.readouterr().err
    assert "activation cache off" in err and "--fixed-augmentation" in err
    assert json.loads((tmp_path / "aug" / "summary.json").read_text())["cache"] is None
    assert main([*args, "--augment", "--fixed-augmentation", "--cache", "memory", "--out", str(tmp_path / "fixed")]) == 0
    cache = json.loads((tmp_path / "fixed" / "summary.json").read_text())["cache"]
    assert cache["computed"] > 0


@pytest.mark.integration
def test_trainer_cache_on_and_off_agree(tmp_path):
    args = ["train", "--method", "freezeout", "--t-0", "0.2", "--schedule", "linear", "--epochs", "3", *TINY]
    assert main([*args, "--cache", "off", "--out", str(tmp_path / "off")]) == 0
    assert main([*args, "--cache", "memory", "--out", str(tmp_path / "on")]) == 0
    off = json.loads((tmp_path / "off" / "summary.json").read_text())
    on = json.loads((tmp_path / "on" / "summary.json").read_text())
    assert on["test_accuracy"] == off["test_accuracy"]
    assert on["cache"]["extended"] > 0 and on["train_flops"] < off["train_flops"]
    assert on["cache"]["kept_on"] == ["cpu"]  # where its arrays lived: with the activations
    def loss(run):
        rows = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if r["kind"] == "step"]

    assert loss("on") == pytest.approx(loss("off"), abs=1e-6)


def test_sample_slots_name_each_sample_by_its_own_inputs():
    """For a loop that does not pass indices: a sample's slot follows its inputs, wherever it sits
    in whichever batch; another input (or a change in what the batch shares) is another sample."""
    from frostline.exploit.sample_keys import SampleSlots

    g = torch.Generator().manual_seed(0)
    ids, mask = torch.randint(0, 50, (6, 8), generator=g), torch.ones(6, 8, dtype=torch.long)
    slots = SampleSlots(capacity=6)
    first = slots((), {"input_ids": ids[:3], "attention_mask": mask[:3]})
    assert first.tolist() == [0, 1, 2]
    assert slots((), {"input_ids": ids[3:], "attention_mask": mask[3:]}).tolist() == [3, 4, 5]
    order = torch.tensor([4, 0, 2])
    assert slots((), {"input_ids": ids[order], "attention_mask": mask[order]}).tolist() == [4, 0, 2]
    # the same ids with another attention mask are other inputs: no slot left for them
    masked = mask[:1].clone()
    masked[0, -1] = 0
    assert slots((), {"input_ids": ids[:1], "attention_mask": masked}) is None and slots.overflowed
    assert slots((), {"input_ids": ids[:1], "attention_mask": mask[:1]}) is None  # once over, always off
    images = SampleSlots(capacity=4)
    x = torch.randn(2, 3, 4, 4, generator=g)
    assert images((x,), {}).tolist() == [0, 1]
    assert images((x, torch.tensor(1.0)), {}).tolist() == [2, 3]  # a shared argument changed: new samples
    assert SampleSlots(capacity=1)((), {"flag": torch.tensor(True)}) is None  # no batched tensor: no key
    with pytest.raises(ConfigError, match="positive number"):
        SampleSlots(0)
    last = SampleSlots(capacity=6)  # the short last batch of an epoch: the same samples, the same slots
    assert last((), {"input_ids": ids[4:]}).tolist() == [0, 1]
    assert last((), {"input_ids": ids[2:]}).tolist() == [2, 3, 0, 1]
    told = SampleSlots(capacity=2, ignore=("num_items_in_batch",))  # the loss's normaliser is not the sample
    assert told((), {"input_ids": ids[:2], "num_items_in_batch": torch.tensor(2.0)}).tolist() == [0, 1]
    assert told((), {"input_ids": ids[:2], "num_items_in_batch": torch.tensor(9.0)}).tolist() == [0, 1]


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_model_in_another_dtype_gets_its_replays_in_its_own_dtype(dtype):
    """The store keeps float32: a float64 chain crashed at its first replay (float rows into float64
    layers), a bfloat16 one likewise; a float64 model is told its replays are rounded."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2)).to(dtype)
    x, y = torch.randn(16, 8, dtype=dtype), torch.randint(0, 2, (16,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    freezer = Freezer(model, optimizer, NoFreezing(), 10, example_input=x[:2])
    cached = CachedPrefixModel(model, freezer, ActivationCache(16))
    freezer.freeze(0)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        for _ in range(3):
            loss = nn.functional.cross_entropy(cached(torch.arange(16), x).float(), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            freezer.step()
    assert cached.cache.stats["hits"] == 32
    rounded = [str(w.message) for w in said if "stores and replays them as float32" in str(w.message)]
    assert len(rounded) == (dtype == torch.float64)
