"""The activation cache on models that are not a chain (cut by hooks at the first trainable unit):
exact on models frostline did not write, refused where the prefix reaches the rest another way."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import frostline
from frostline import ConfigError
from frostline.exploit.cache import ActivationCache, CachedPrefixModel
from outside_models import BUILDERS, forward, loss_of

N, BATCH = 16, 8  # two steps per epoch
FREEZE_AFTER = {1: 2, 3: 4}  # after step 1 freeze units 0..1, after step 3 units 2..3 (stored entries are extended)


def _train(model, batch_of, cache: ActivationCache | None, steps=8, payoff=None, on_refuse="raise"):
    """Epoch-shuffled steps; units freeze at FREEZE_AFTER. Returns the losses."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    data = batch_of(N, 0)
    freezer = frostline.Freezer(model, optimizer, frostline.NoFreezing(), steps)
    cached = CachedPrefixModel(model, freezer, cache, payoff=payoff, on_refuse=on_refuse) if cache is not None else None
    torch.manual_seed(1)  # the same dropout draws with and without the cache
    np.random.seed(1)  # (and the same NumPy draws: wav2vec2's masking)
    model.train()
    losses = []
    for step in range(steps):
        epoch, j = divmod(step, N // BATCH)
        idx = torch.randperm(N, generator=torch.Generator().manual_seed(epoch))[j * BATCH:(j + 1) * BATCH]
        batch = {k: v[idx] for k, v in data.items()}
        if cached is None:
            out = forward(model, batch)
        elif "x" in batch:
            out = cached(idx, batch["x"])
        else:
            out = cached(idx, **batch)
        loss = loss_of(out, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        freezer.step()
        for i in range(FREEZE_AFTER.get(step, 0)):
            freezer.freeze(i)
        losses.append(loss.item())
    return losses


@pytest.mark.integration
@pytest.mark.parametrize("name", ["torchvision-resnet18", "timm-vit", "hf-bert", "hf-llama", "peft-lora-bert"])
def test_cache_on_outside_models_gives_the_same_training(name):
    """BERT keeps its dropout (0.1) in the trainable units: the cached forward draws the same
    random numbers as the plain one, so even then the runs agree. Llama's layers read the rotary
    encoding the model computes before the first of them: a replay computes it too. A LoRA BERT's
    embeddings (frozen by PEFT, in no unit, dropout 0.1) join the frozen prefix in eval mode."""
    ref_model, batch_of = BUILDERS[name]()
    ref = _train(ref_model, batch_of, None)
    model, batch_of = BUILDERS[name]()
    cache = ActivationCache(N)
    losses = _train(model, batch_of, cache)
    assert losses == pytest.approx(ref, abs=1e-6)
    assert cache.stats["hits"] > 0
    for (n, p), q in zip(ref_model.named_parameters(), model.parameters()):
        assert torch.allclose(p, q, atol=1e-6, rtol=0), n
    assert cache.stats["hits"] >= 2 * BATCH and cache.stats["extended"] > 0 and cache.stats["computed"] > 0


class _Mlp(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.enc, self.mid, self.dec = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(2 * width, 2)

    def forward(self, x):
        return self.dec(torch.cat([torch.relu(self.mid(torch.relu(self.enc(x)))), x], dim=1))


class _SkipAcross(_Mlp):
    """U-Net-like: ``enc``'s output also goes straight to ``dec``, past ``mid``."""

    def forward(self, x):
        e = torch.relu(self.enc(x))
        return self.dec(torch.cat([torch.relu(self.mid(e)), e], dim=1))


def _freeze_first_and_call(model, cache, **kwargs):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    freezer = frostline.Freezer(model, optimizer, frostline.NoFreezing(), 10, units=["enc", "mid", "dec"])
    freezer.freeze(0)
    cached = CachedPrefixModel(model, freezer, cache, **kwargs)
    x = torch.randn(4, 8)
    return cached, x, cached(torch.arange(4), x)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["hf-bert"])
def test_cache_payoff_measures_and_serves_cut_models(name):
    """``--cache auto``'s rule on a model cut by hooks (a BERT with its dropout on): each frozen
    prefix is timed through the cut without touching training's random numbers, and what it serves
    trains exactly like no cache."""
    from frostline.exploit.payoff import CachePayoff

    ref_model, batch_of = BUILDERS[name]()
    ref = _train(ref_model, batch_of, None)
    model, batch_of = BUILDERS[name]()
    payoff = CachePayoff(N, N // BATCH, 8, 2**30, planned=[None] * 20)  # nothing else will freeze
    cache = ActivationCache(N)
    losses = _train(model, batch_of, cache, payoff=payoff)
    assert losses == pytest.approx(ref, abs=1e-6)
    assert set(payoff.costs) == {2, 4} and all(c.compute_s > 0 and c.bytes > 0 for c in payoff.costs.values())
    assert payoff.served in (2, 4) and cache.stats["computed"] > 0  # it filled what it served


def test_a_skip_across_the_boundary_is_refused():
    torch.manual_seed(0)
    with pytest.raises(ConfigError, match="skip connection across the boundary"):
        _freeze_first_and_call(_SkipAcross(), ActivationCache(4))
    # raw inputs read again after the boundary are fine: the replay pass has them too
    cached, x, out = _freeze_first_and_call(_Mlp(), ActivationCache(4))
    assert torch.allclose(out, cached.model(x)) and cached.cache.stats["computed"] == 4
    cached(torch.arange(4), x)
    assert cached.cache.stats["hits"] == 4


def test_with_warn_a_model_that_cannot_replay_runs_without_the_cache_with_one_warning():
    torch.manual_seed(0)
    model = _SkipAcross()
    with pytest.warns(UserWarning, match="skip connection across the boundary"):
        cached, x, out = _freeze_first_and_call(model, ActivationCache(4), on_refuse="warn")
    assert cached.boundary() == 0 and 1 in cached.inexact
    assert torch.equal(out, model(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, not at every step
        assert torch.equal(cached(torch.arange(4), x), model(x))


def test_nested_sequential_is_cut_inside_its_children():
    """Units one level below the model's children: not a chain, so the cut path serves it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU()),
                          nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    freezer = frostline.Freezer(model, optimizer, frostline.NoFreezing(), 10, example_input=torch.randn(2, 8))
    assert len(freezer.units) == 4
    freezer.freeze(0)
    cached = CachedPrefixModel(model, freezer, ActivationCache(8))
    assert not cached.chain
    x = torch.randn(8, 8)
    for _ in range(2):
        assert torch.allclose(cached(torch.arange(8), x), model(x), atol=1e-6)
    assert cached._cutter.cut(1).name == "0.2" and cached.cache.stats["hits"] == 8


def test_no_hits_and_no_boundary_are_said_not_silent():
    torch.manual_seed(0)
    cached, x, _ = _freeze_first_and_call(_Mlp(), ActivationCache(4))
    with pytest.warns(UserWarning, match="no hit"):
        for _ in range(9):  # entries that never stay stored (as if every index were new): never a hit
            cached.cache.levels[:] = 0
            cached(torch.arange(4), x)

    class Unused(_Mlp):
        def __init__(self):
            super().__init__()
            self.spare = nn.Linear(8, 8)

    model = Unused()
    freezer = frostline.Freezer(model, torch.optim.SGD(model.parameters(), lr=0.1), frostline.NoFreezing(), 10,
                                units=["enc", "spare", "mid", "dec"])
    freezer.freeze(0)
    # the Freezer checks named units against the first forward, which the cache's first call runs
    with pytest.raises(frostline.ModelError, match=r"\['spare'\]\] never ran"):
        CachedPrefixModel(model, freezer, ActivationCache(4))(torch.arange(4), x)


@pytest.mark.integration
def test_cache_names_why_a_tied_language_model_cannot_be_replayed():
    """GPT-2's embedding is its head's weight, so it trains while the blocks after it are frozen, and
    its embedding dropout sits outside every unit: the cache refuses and says both, by name."""
    model, batch_of = BUILDERS["hf-gpt2"]()
    with pytest.raises(ConfigError) as refused:
        _train(model, batch_of, ActivationCache(N))
    message = str(refused.value)
    assert "transformer.wte" in message and "tied" in message and "transformer.drop" in message
    assert "--cache off" in message
    model, batch_of = BUILDERS["hf-gpt2"]()  # told once, then trained without the cache
    freezer = frostline.Freezer(model, torch.optim.SGD(model.parameters(), lr=0.1), frostline.NoFreezing(), 10)
    batch = batch_of(4, 0)
    model(**batch)
    freezer.freeze(0)
    freezer.freeze(1)
    cached = CachedPrefixModel(model, freezer, ActivationCache(4), on_refuse="warn")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        for _ in range(3):
            cached(torch.arange(4), **batch)
    assert len([w for w in said if "cannot serve" in str(w.message)]) == 1 and cached.refused


def test_a_batch_split_across_levels_is_served_in_parts():
    """A model that is not a chain, whose prefix grew since part of the batch was stored: the
    stored samples are read, the ones a level behind are extended, the new ones computed, each
    group by its own pass, and the whole batch's output is the plain model's. A sample twice in a
    batch moves once, so no level's array is released while samples still live there."""
    torch.manual_seed(0)
    model = _Mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    freezer = frostline.Freezer(model, optimizer, frostline.NoFreezing(), 10, units=["enc", "mid", "dec"])
    freezer.freeze(0)
    cache = ActivationCache(8)
    cached = CachedPrefixModel(model, freezer, cache)
    x = torch.randn(8, 8)
    cached(torch.arange(4), x[:4])  # samples 0-3 stored after unit 0
    freezer.freeze(1)
    cached(torch.tensor([2, 3]), x[2:4])  # samples 2-3 moved on to after unit 1 (learns that cut)
    assert cache.levels.tolist() == [1, 1, 2, 2, 0, 0, 0, 0]
    idx = torch.tensor([0, 2, 5, 1, 3, 4, 5])  # a level behind, stored, new (5 twice)
    before = dict(cache.stats)
    out = cached(idx, x[idx])
    assert torch.allclose(out, model(x[idx]), atol=1e-6)
    got = {k: cache.stats[k] - before[k] for k in before}
    assert got == {"hits": 2, "extended": 2, "computed": 3}
    assert cache.levels.tolist() == [2, 2, 2, 2, 2, 2, 0, 0] and set(cache.stores) == {2}
    assert cache.stores[2].count == 6  # sample 5 counted once
    again = cached(idx, x[idx])
    assert torch.allclose(again, out) and cache.stats["hits"] - before["hits"] == 2 + len(idx)


class _DropoutBeforeHead(_Mlp):
    """Dropout between units, outside every unit, as BertForSequenceClassification's before its classifier."""

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.dec = nn.Linear(8, 2)

    def forward(self, x):
        return self.dec(self.drop(torch.relu(self.mid(torch.relu(self.enc(x))))))


def test_a_boundary_right_after_dropout_outside_the_units_is_never_served():
    """Its stored inputs would hold one draw of the dropout mask, replayed at every step (and the
    first step's check cannot see it: the capture draws the very mask the plain pass draws). The
    cache serves the boundary before it, and trains exactly as without the cache."""
    def train(cache):
        torch.manual_seed(0)
        model = _DropoutBeforeHead()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        freezer = frostline.Freezer(model, optimizer, frostline.NoFreezing(), 10, units=["enc", "mid", "dec"])
        cached = CachedPrefixModel(model, freezer, cache) if cache else None
        x, y = torch.randn(8, 8), torch.randint(0, 2, (8,))
        losses = []
        for step in range(6):
            if step == 1:
                freezer.freeze(0)
                freezer.freeze(1)
            idx = torch.randperm(8)[:4]
            out = cached(idx, x[idx]) if cached else model(x[idx])
            loss = nn.functional.cross_entropy(out, y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses, cached

    plain, _ = train(None)
    losses, cached = train(ActivationCache(8))
    assert losses == plain
    assert set(cached.unservable) == {2} and "drop" in cached.unservable[2] and cached.boundary() == 1
    assert cached.cache.stats["hits"] > 0


class _Checkpointed(nn.Module):
    """Blocks run under ``torch.utils.checkpoint``, as models short of memory do: backward calls
    each block a second time, with the arguments its first call got."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(16, 16), nn.Tanh()) for _ in range(4)])
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        for block in self.blocks:
            x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
        return self.head(x)


def _train_small(make, cached: bool, freeze_at: dict[int, list[int]], steps: int, units: list[str],
                 on_refuse="raise", samples=16, width=16, classes=4):
    """A small model on random data, half the samples a step; ``freeze_at`` step -> units frozen
    after it. NumPy is seeded too (a model may draw from it). Returns (losses, model, wrapper, freezer)."""
    torch.manual_seed(0)
    np.random.seed(0)
    model = make()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    freezer = frostline.Freezer(model, optimizer, frostline.NoFreezing(), 20, units=units)
    wrapper = CachedPrefixModel(model, freezer, ActivationCache(samples), on_refuse=on_refuse) if cached else None
    x, y = torch.randn(samples, width), torch.randint(0, classes, (samples,))
    losses = []
    for step in range(steps):
        idx = torch.randperm(samples, generator=torch.Generator().manual_seed(step))[:samples // 2]
        loss = nn.functional.cross_entropy(wrapper(idx, x[idx]) if cached else model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for i in freeze_at.get(step, []):
            freezer.freeze(i)
        losses.append(loss.item())
    return losses, model, wrapper, freezer


BLOCKS = ["blocks.0", "blocks.1", "blocks.2", "blocks.3", "head"]
MLP = dict(units=["enc", "mid", "dec"], samples=8, width=8, classes=2)


def test_a_checkpointed_model_s_first_trainable_block_gets_the_stored_inputs_in_backward_too():
    """A replay hands the boundary block a placeholder and swaps the stored inputs in; backward
    recomputes the block from the placeholder it was called with, so without the swap there too
    its gradients would come from zeros and the runs would part."""
    plain, _, _, _ = _train_small(_Checkpointed, False, {1: [0, 1]}, 8, BLOCKS)
    losses, model, cached, _ = _train_small(_Checkpointed, True, {1: [0, 1]}, 8, BLOCKS)
    assert cached.cache.stats["hits"] > 0
    assert losses == pytest.approx(plain, abs=1e-6)
    assert not model.blocks[2]._forward_pre_hooks  # nothing left on the model once backward is done


@pytest.mark.integration
def test_a_timm_resnet_with_gradient_checkpointing_trains_as_without_the_cache():
    """timm checkpoints each block (``set_grad_checkpointing``); its BatchNorm statistics move at
    every recomputation, so the check's own backward must leave them as they were."""
    runs = []
    for cache in (None, ActivationCache(N)):
        model, batch_of = BUILDERS["timm-resnet18"]()
        model.set_grad_checkpointing(True)
        runs.append(_train(model, batch_of, cache))
    assert runs[1] == pytest.approx(runs[0], abs=1e-6)
    assert cache.stats["hits"] > 0


class _CheckpointedPairs(_Checkpointed):
    """Checkpointed two blocks at a time: backward recomputes block 1 from block 0's output."""

    def forward(self, x):
        for i in (0, 2):
            x = torch.utils.checkpoint.checkpoint(nn.Sequential(self.blocks[i], self.blocks[i + 1]), x,
                                                  use_reentrant=False)
        return self.head(x)


def test_a_checkpointed_segment_across_the_boundary_is_skipped_and_one_at_its_start_served():
    """Inside a segment the backward recomputes the frozen block from a placeholder: the check
    tries a backward, sees it and skips that boundary (strict: raises); the next segment's start
    replays exactly and is served, and training matches the uncached run."""
    def train(cached, on_refuse="warn"):
        losses, _, wrapper, _ = _train_small(_CheckpointedPairs, cached, {1: [0], 4: [1]}, 10, BLOCKS, on_refuse)
        return losses, wrapper

    plain, _ = train(False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses, cached = train(True)
    assert losses == pytest.approx(plain, abs=1e-6)
    assert [w for w in caught if "checkpoints a segment" in str(w.message)] and set(cached.inexact) == {1}
    assert cached.boundary() == 2 and cached.cache.stats["hits"] > 0
    with pytest.raises(ConfigError, match="checkpoints a segment"):
        train(True, on_refuse="raise")


class _NumpyMasked(_Mlp):
    """Random masking drawn from NumPy's global generator in the forward, outside every module,
    between ``enc`` and ``mid`` (as wav2vec2's SpecAugment masks its features)."""

    def forward(self, x):
        h = torch.relu(self.enc(x))
        if self.training:
            h = h * torch.from_numpy(np.random.rand(*h.shape) > 0.3).to(h.dtype)
        return self.dec(torch.cat([torch.relu(self.mid(h)), x], dim=1))


def test_randomness_before_the_boundary_outside_any_module_is_found_and_the_run_stays_exact():
    """The replay check alone cannot see it (the capture draws the very mask the plain pass
    draws): the prefix is captured again with every generator moved, and differs. The cache's own
    passes leave NumPy's generator where it was, so the run equals one without the cache."""
    def train(cached, on_refuse="warn"):
        losses, _, wrapper, _ = _train_small(_NumpyMasked, cached, {1: [0]}, 6, on_refuse=on_refuse, **MLP)
        return losses, wrapper

    plain, _ = train(False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses, cached = train(True)
    assert losses == plain
    assert [w for w in caught if "draws at random or mixes" in str(w.message)] and set(cached.inexact) == {1}
    with pytest.raises(ConfigError, match="draws at random or mixes"):
        train(True, on_refuse="raise")


@pytest.mark.integration
def test_a_wav2vec2_is_served_before_its_random_masking_and_trains_as_without_the_cache():
    """Its masking draws from NumPy in no module before the encoder: boundaries after it are
    skipped (one warning each), the one before it served, and the run is the uncached one."""
    ref_model, batch_of = BUILDERS["hf-wav2vec2"]()
    ref = _train(ref_model, batch_of, None)
    model, batch_of = BUILDERS["hf-wav2vec2"]()
    cache = ActivationCache(N)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses = _train(model, batch_of, cache, on_refuse="warn")
    assert losses == ref
    assert cache.stats["hits"] > 0 and [w for w in caught if "cannot serve" in str(w.message)]


class _BatchNormBetween(_Mlp):
    """A BatchNorm with nothing to train (in no unit) between ``enc`` and ``mid``, in training mode:
    each sample's output depends on the batch it came in."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(8, affine=False)

    def forward(self, x):
        return self.dec(torch.cat([torch.relu(self.mid(self.bn(torch.relu(self.enc(x))))), x], dim=1))


def test_a_prefix_that_mixes_the_samples_of_a_batch_is_not_served_until_it_stops():
    """Stored, the BatchNorm's output would keep the statistics of the batch a sample first came in:
    half the batch captured alone differs, so that boundary is skipped. Once ``mid`` freezes too the
    BatchNorm runs before a frozen unit, joins the frozen prefix in eval mode and is served, and the
    run stays the uncached one."""
    def train(cached):
        losses, _, wrapper, freezer = _train_small(_BatchNormBetween, cached, {1: [0], 3: [1]}, 8, on_refuse="warn", **MLP)
        return losses, wrapper, freezer

    plain, _, _ = train(False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses, cached, freezer = train(True)
    assert losses == pytest.approx(plain, abs=1e-6)
    assert [w for w in caught if "mixes the samples of a batch" in str(w.message)] and set(cached.inexact) == {1}
    assert freezer.pinned_outside == ["bn"] and cached.boundary() == 2 and cached.cache.stats["hits"] > 0


def _gpu_mlp_with_its_encoder_frozen():
    torch.manual_seed(0)
    model = _Mlp().cuda()
    freezer = frostline.Freezer(model, torch.optim.SGD(model.parameters(), lr=0.1), frostline.NoFreezing(), 10,
                                units=["enc", "mid", "dec"])
    freezer.freeze(0)
    return model, freezer, CachedPrefixModel(model, freezer, ActivationCache(4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_stores_live_on_it_and_replay_exactly(tmp_path):
    """A replay on a GPU is an on-device gather, not a host gather and a copy; what it serves (and
    what a saved cache serves after a reload) is what the prefix computes."""
    model, freezer, cached = _gpu_mlp_with_its_encoder_frozen()
    x = torch.randn(4, 8, device="cuda")
    first = cached(torch.arange(4), x)
    assert all(store.data.device.type == "cuda" for store in cached.cache.stores.values())
    again = cached(torch.arange(4), x)
    assert cached.cache.stats["hits"] == 4 and torch.equal(first, again) and torch.allclose(again, model(x))
    cached.cache.save(tmp_path)
    reloaded = ActivationCache.load(tmp_path, prefix_fingerprint=cached.prefix_fingerprint, num_samples=4)
    assert torch.equal(CachedPrefixModel(model, freezer, reloaded)(torch.arange(4), x), first)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_short_of_memory_the_stores_go_to_host_memory_and_it_says_so(monkeypatch):
    """An array that would fill the GPU past half its free memory is kept in host memory: slower
    replays (a copy each), so one warning says so, and the cache records it; it still replays
    exactly what the prefix computes."""
    cached = _gpu_mlp_with_its_encoder_frozen()[2]
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (64, 2**30))  # 64 bytes free
    x = torch.randn(4, 8, device="cuda")
    with pytest.warns(UserWarning, match="host memory"):
        first = cached(torch.arange(4), x)
    assert cached.cache.kept_on == {"host"}
    assert all(store.data.device.type == "cpu" for store in cached.cache.stores.values())
    again = cached(torch.arange(4), x)
    assert cached.cache.stats["hits"] == 4 and torch.equal(first, again) and again.device.type == "cuda"


@pytest.mark.parametrize("how", ["torch.compile(model)", "model.compile()"])
def test_a_model_compiled_whole_is_refused_with_the_way_that_works(how):
    """Dynamo would trace the cache's hooks into the model's graph (a deep error from inside it):
    said up front, with regional compilation (which the cache serves) as the way out."""
    model = _Mlp()
    if how == "model.compile()":
        model.compile(backend="aot_eager")
    else:
        model = torch.compile(model, backend="aot_eager")
    freezer = frostline.Freezer(model, torch.optim.SGD(model.parameters(), lr=0.1), frostline.NoFreezing(), 10,
                                units=["enc", "mid", "dec"])
    with pytest.raises(ConfigError, match="compiled as a whole.*compile_units"):
        CachedPrefixModel(model, freezer, ActivationCache(4))
    with pytest.warns(UserWarning, match="compiled as a whole"):
        cached = CachedPrefixModel(model, freezer, ActivationCache(4), on_refuse="warn")
    freezer.freeze(0)
    assert cached.refused and cached.boundary() == 0  # the plain (compiled) model runs, uncached


@pytest.mark.integration  # dynamo tracing: a few seconds
def test_a_model_compiled_unit_by_unit_is_served_as_the_eager_one():
    from frostline.exploit.compiling import compile_units

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 8, generator=g), torch.randint(0, 2, (8,), generator=g)
    losses, stats = {}, {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = _Mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        freezer = frostline.Freezer(model, optimizer, frostline.NoFreezing(), 10, units=["enc", "mid", "dec"])
        if compiled:
            assert compile_units(freezer.units, backend="aot_eager") == 3
        cached = CachedPrefixModel(model, freezer, ActivationCache(8))
        losses[compiled] = []
        for step in range(6):
            if step == 2:
                freezer.freeze(0)
            idx = torch.arange(4) + 4 * (step % 2)
            loss = nn.functional.cross_entropy(cached(idx, x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            freezer.step()
            losses[compiled].append(loss.item())
        stats[compiled] = cached.cache.stats
    assert losses[True] == pytest.approx(losses[False], abs=1e-6) and stats[True] == stats[False]
    assert stats[True]["hits"] > 0


class _SkipIntoTheNext(nn.Module):
    """``enc``'s output reaches ``mid2`` past ``mid`` (boundary 1 cannot replay it), but ``mid2``
    receives everything it reads as its one input (boundary 2 replays exactly)."""

    def __init__(self, width=8):
        super().__init__()
        self.enc, self.mid = nn.Linear(width, width), nn.Linear(width, width)
        self.mid2, self.dec = nn.Linear(2 * width, width), nn.Linear(width, 2)

    def forward(self, x):
        e = torch.relu(self.enc(x))
        return self.dec(torch.relu(self.mid2(torch.cat([torch.relu(self.mid(e)), e], dim=1))))


@pytest.mark.integration
def test_an_untied_opt_is_served_past_its_position_embedding_unit():
    """OPT's token embedding (unit 0) reaches the layers past the position-embedding unit (unit 1):
    best effort skips boundary 1 with one warning and serves from boundary 2, exactly."""
    model, batch_of = BUILDERS["hf-opt"]()
    assert [u.name for u in frostline.freeze_units(model, example_input=batch_of(2))[:2]] == [
        "model.decoder.embed_tokens", "model.decoder.embed_positions"]
    data, idx = batch_of(4), torch.arange(4)
    freezer = frostline.Freezer(model, torch.optim.SGD(model.parameters(), lr=0.1), frostline.NoFreezing(), 10)
    cached = CachedPrefixModel(model, freezer, ActivationCache(4), on_refuse="warn")
    model(**data)
    freezer.freeze(0)
    with pytest.warns(UserWarning, match="units 0..0 replayed, the output differs"):
        out = cached(idx, **data)
    assert torch.equal(out.loss, model(**data).loss) and cached.boundary() == 0 and not cached.refused
    freezer.freeze(1)
    cached(idx, **data)
    assert cached.boundary() == 2 and torch.allclose(cached(idx, **data).loss, model(**data).loss)
    assert cached.cache.stats["hits"] == 4


def test_with_warn_a_boundary_that_replays_inexactly_is_skipped_and_a_deeper_one_served():
    """Best effort (``--cache auto``): the cache says which boundary it cannot replay, trains
    exactly without it, and serves the frozen prefix once it reaches a boundary that replays."""
    torch.manual_seed(0)
    model = _SkipIntoTheNext()
    freezer = frostline.Freezer(model, torch.optim.SGD(model.parameters(), lr=0.1), frostline.NoFreezing(), 10,
                                units=["enc", "mid", "mid2", "dec"])
    cached = CachedPrefixModel(model, freezer, ActivationCache(4), on_refuse="warn")
    x, idx = torch.randn(4, 8), torch.arange(4)
    freezer.freeze(0)
    with pytest.warns(UserWarning, match="units 0..0 replayed, the output differs.*serves again once a deeper"):
        out = cached(idx, x)
    assert torch.equal(out, model(x)) and not cached.refused and cached.boundary() == 0
    assert not (cached.cache.levels > 0).any() and not cached.cache.stores  # nothing kept at the inexact boundary
    freezer.freeze(1)
    cached(idx, x)
    assert cached.boundary() == 2 and torch.allclose(cached(idx, x), model(x)) and cached.cache.stats["hits"] == 4
    with pytest.raises(ConfigError, match="units 0..0 replayed.*train without the cache"):  # strict: as before
        model2 = _SkipIntoTheNext()
        f2 = frostline.Freezer(model2, torch.optim.SGD(model2.parameters(), lr=0.1), frostline.NoFreezing(), 10,
                               units=["enc", "mid", "mid2", "dec"])
        f2.freeze(0)
        CachedPrefixModel(model2, f2, ActivationCache(4))(idx, x)


@pytest.mark.integration
def test_rounding_that_a_sensitive_suffix_grows_is_not_taken_for_a_skip_across_the_boundary():
    """MobileNetV3's trainable rest (BatchNorm over 8 samples of 1x1 maps) grew the cache's own pass's
    float rounding (~4e-9 in the stored inputs) past the replay check's tolerance, which then refused
    the boundary mid-training as if something crossed it. The check replays the model's own inputs."""
    from outside_models import torchvision

    torch.manual_seed(0)
    model = torchvision().models.mobilenet_v3_small(num_classes=10)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    freezer = frostline.Freezer(model, optimizer, frostline.LinearFreezing(freeze_start=0.1), total_steps=20)
    cached = CachedPrefixModel(model, freezer, ActivationCache(32))  # on_refuse="raise"
    for epoch in range(5):
        for idx in torch.randperm(32, generator=torch.Generator().manual_seed(epoch)).split(8):
            loss = nn.functional.cross_entropy(cached(idx, x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            freezer.step()
    assert freezer.frozen_prefix >= 8 and cached.cache.stats["hits"] > 0
