"""The time-calibrated cost model: what it predicts from a profile, and that profiling measures
the real model's situations without touching it."""

import pytest
import torch
from torch import nn

from frostline import estimate_speedup, freeze_units
from frostline.exploit.timing import StepTimeModel, profile_step_times


def test_step_cost_reads_prefix_alone_and_forward_parts():
    m = StepTimeModel(["a", "b", "c", "head"], prefix=[1.0, 0.6, 0.4, 0.3], alone=[0.4, 0.1, 0.05],
                      forward=[0.2, 0.1, 0.05], full_step_s=0.5)
    assert m.step_cost(()) == 1.0
    assert m.step_cost({0, 1}) == pytest.approx(0.4)  # a measured prefix
    assert m.step_cost({0, 2}) == pytest.approx(0.6 - 0.05)  # prefix of one, c frozen out of order
    assert m.step_cost({1}) == pytest.approx(1.0 - 0.1)
    assert m.step_cost({0, 1}, cached_prefix=2) == pytest.approx(0.4 - 0.3)  # the cache drops the prefix's forward
    assert m.step_cost({0}, cached_prefix=2) == pytest.approx(0.6 - 0.2)  # never past the frozen prefix
    # a schedule's saving: b and a frozen at half-time -> half the run at 0.4
    assert estimate_speedup(m, [0.5, 0.5, None, None])["saving"] == pytest.approx(0.5 * 0.6)


def _lopsided():
    """A first unit that costs far more time than the rest (a wide layer on a big batch)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 1024), nn.BatchNorm1d(1024), nn.Linear(1024, 16), nn.Linear(16, 16), nn.Linear(16, 4))
    x, y = torch.randn(2048, 256), torch.randint(0, 4, (2048,))  # steps of tens of ms: above timer noise
    units = freeze_units(model, units=[["0", "1"], ["2"], ["3"], ["4"]], example_input=x)
    return model, units, x, y


def test_profile_finds_where_the_time_goes_and_leaves_the_model_alone():
    model, units, x, y = _lopsided()
    model[3].weight.requires_grad_(False)  # the user's own flags and statistics stay as they are
    before = {k: v.clone() for k, v in model.state_dict().items()}
    profile = profile_step_times(model, units, x, y, rounds=7)
    assert len(profile.prefix) == 4 and len(profile.alone) == 3 and len(profile.forward) == 3
    assert profile.full_step_s > 0 and profile.prefix[0] == 1.0
    # freezing the wide first unit (its weight gradients and its update) saves most of the step;
    # freezing the tiny third one out of order saves far less (millisecond steps: a loose bound)
    assert profile.step_cost({0}) < 0.75
    assert profile.alone[2] < 0.5 * (1 - profile.step_cost({0}))
    assert profile.forward[0] > 5 * profile.forward[2]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model[3].weight.requires_grad and model[0].weight.requires_grad and model.training


def test_a_runs_profile_leaves_its_random_stream_where_it_was(synthetic):
    """Profiled at the end of ``frostline train``: a dropout model's profile draws random numbers,
    which must not shift what a resumed or repeated run draws next."""
    from frostline.lab.config import TrainConfig
    from frostline.lab.recipe import profile_run

    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.Dropout(0.5), nn.Linear(64, 10))
    units = freeze_units(model, units=[["0", "1", "2"], ["3"]], example_input=synthetic.train.get_batch(torch.arange(4))[0])
    rng = torch.get_rng_state()
    profile = profile_run(TrainConfig(batch_size=32, optimizer="adamw", lr=1e-3), model, units, synthetic.train,
                          torch.device("cpu"), rounds=1)
    assert torch.equal(rng, torch.get_rng_state())
    # one round of a millisecond step: only that it timed both situations, not how they compare
    assert profile.full_step_s > 0 and profile.prefix[0] == 1.0 and profile.prefix[1] > 0


def test_profile_refuses_what_it_cannot_time():
    model, units, x, y = _lopsided()
    with pytest.raises(Exception, match="rounds"):
        profile_step_times(model, units, x, y, rounds=0)
    with pytest.raises(Exception, match="two freeze units"):
        profile_step_times(model, units[:1], x, y)
    prefix_only = profile_step_times(model, units, x, y, rounds=1, out_of_order=False)
    assert prefix_only.step_cost({0, 1}) > 0
    with pytest.raises(Exception, match="out-of-order"):
        prefix_only.step_cost({2})
    with pytest.raises(Exception, match="CostModel"):
        estimate_speedup(profile_step_times(model, units, x, y, rounds=1), [None] * 4, backward_equals_forward=True)


def test_a_cache_fills_for_an_epoch_before_it_replays_a_grown_prefix():
    m = StepTimeModel(["a", "b", "head"], prefix=[1.0, 0.7, 0.5], alone=[0.3, 0.1], forward=[0.2, 0.1], full_step_s=1.0)
    times = [0.5, 0.75, None]
    plain = estimate_speedup(m, times)["saving"]
    ideal = estimate_speedup(m, times, cached=True)["saving"]  # every sample replays from the moment it freezes
    filling = estimate_speedup(m, times, cached=True, epoch_fraction=0.25)["saving"]
    assert plain == pytest.approx(0.25 * 0.3 + 0.25 * 0.5)
    assert ideal == pytest.approx(plain + 0.25 * 0.2 + 0.25 * 0.3)
    assert plain < filling < ideal
    # a tiny epoch fills at once, an epoch as long as the run never replays
    assert estimate_speedup(m, times, cached=True, epoch_fraction=1e-4)["saving"] == pytest.approx(ideal, abs=1e-3)
    assert estimate_speedup(m, times, cached=True, epoch_fraction=1.0)["saving"] < ideal - 0.05


def test_a_tied_weight_decoder_is_profiled_through_its_dict_input():
    """A model we did not write: GPT-2 (tiny, random) whose output head shares the token embedding."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=3, n_embd=64, n_head=2, vocab_size=200,
                                                                 n_positions=32))
    assert model.lm_head.weight is model.transformer.wte.weight
    ids = torch.randint(0, 200, (4, 16))
    batch = {"input_ids": ids, "labels": ids}
    units = freeze_units(model, example_input=batch)
    # the default five rounds: a median of two let one stalled round on a loaded CI machine read 1.23
    profile = profile_step_times(model, units, batch)
    assert profile.unit_names == [u.name for u in units] and len(profile.prefix) == len(units)
    assert profile.step_cost(range(len(units) - 1)) < 1.0  # all but the head frozen: cheaper than a full step
    assert all(p.requires_grad for p in model.parameters()) and model.training
    with pytest.raises(Exception, match="epoch_fraction"):
        estimate_speedup(profile, [0.5] + [None] * (len(units) - 1), cached=True, epoch_fraction=0)
