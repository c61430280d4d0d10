import io
import json
import math
import statistics
import time

import numpy as np
import pytest
import torch
from torch import nn

from frostline import CheckpointError, ConfigError, Freezer, FrostlineError, NoFreezing, Progress, create_policy
from frostline.lab.zoo import create_model
from frostline.policies import POLICIES, AutoFreeze
from frostline.policies.autofreeze.autofreeze import autofreeze_depth, change_rates, percentile_linear

UNITS = ["stem", "b1", "b2", "b3", "head"]


@pytest.fixture(autouse=True)
def _one_thread():
    """The 2 CPU cores are shared with other jobs: with 2 threads a resnet step was measured
    10x slower than with 1 (threads contending), which would make timings meaningless."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _policy(**kw):
    kw.setdefault("interval_steps", 2)
    p = AutoFreeze(**kw)
    p.bind(UNITS)
    return p


def _feed(policy, step, norms):
    """One Freezer step, by hand: observe then decide (what Freezer.step does)."""
    policy.observe(Progress(step, 1000), {"grad_norm": norms})
    return policy.decide(Progress(step, 1000))


def _feed_interval(policy, first_step, per_step_norms):
    frozen = None
    for k, norms in enumerate(per_step_norms):
        frozen = _feed(policy, first_step + k, norms)
    return frozen


def test_registered_and_validated():
    assert POLICIES["autofreeze"] is AutoFreeze
    p = create_policy("autofreeze", percentile=40, intervals_per_epoch=2, steps_per_epoch=10)
    assert p.config() == {"percentile": 40.0, "intervals_per_epoch": 2, "steps_per_epoch": 10, "interval_steps": None}
    assert p.requires == {"grad_norm"}
    bad = [dict(steps_per_epoch=10, percentile=0), dict(steps_per_epoch=10, percentile=101),
           dict(steps_per_epoch=10, intervals_per_epoch=0), dict(steps_per_epoch=0), dict(steps_per_epoch=2.5),
           dict(), dict(steps_per_epoch=10, interval_steps=3), dict(interval_steps=0),
           dict(steps_per_epoch=3, intervals_per_epoch=4), dict(steps_per_epoch=10, percentile=True)]
    for kw in bad:
        with pytest.raises(ConfigError):
            AutoFreeze(**kw)
    AutoFreeze(percentile=100, interval_steps=1)  # (0, 100] is closed at 100


def test_intervals_split_each_epoch_into_m_parts():
    p = AutoFreeze(intervals_per_epoch=4, steps_per_epoch=10)
    ids = [p.clock.index(s) for s in range(1, 21)]
    assert ids == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 5, 6, 6, 7, 7, 7]
    assert [s for s in range(1, 21) if p.clock.is_stage_end(s)] == [2, 5, 7, 10, 12, 15, 17, 20]
    q = AutoFreeze(interval_steps=3)
    assert [q.clock.index(s) for s in range(1, 8)] == [0, 0, 0, 1, 1, 1, 2]
    assert [s for s in range(0, 8) if q.clock.is_stage_end(s)] == [3, 6]


def test_percentile_matches_numpy_and_rates():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 12):
        v = rng.random(n).tolist()
        for q in (1, 25, 50, 73.5, 100):
            assert percentile_linear(v, q) == pytest.approx(float(np.percentile(v, q)), rel=1e-12)
    assert change_rates([1.0, 2.0, 0.0, None, 1.0], [0.5, 3.0, 1.0, 1.0, None]) == [0.5, 0.5, None, None, None]


def test_change_rate_percentile_rule_freezes_the_exact_prefix():
    p = _policy()
    # interval 1 (steps 1-2): baseline, the mean of the two steps is 1.0 for every unit
    assert _feed_interval(p, 1, [[0.75, 1.25, 0.5, 1.5, 2.0], [1.25, 0.75, 1.5, 0.5, 0.0]]) == set()
    assert p.intervals_done == 1 and p.last_interval["threshold"] is None
    # interval 2: rates 0.125, 0, 0.5, 0.375 (head: 0, does not vote) -> P50 = 0.25 -> freeze {0, 1}
    mid = _feed(p, 3, [0.875, 1.25, 1.5, 0.625, 1.0])
    assert mid == set()  # nothing is decided mid-interval
    assert _feed(p, 4, [0.875, 0.75, 1.5, 0.625, 1.0]) == {0, 1}
    assert p.last_interval["change_rate"] == [0.125, 0.0, 0.5, 0.375, 0.0]  # unit 1's mean is 1.0 again
    assert p.last_interval["threshold"] == pytest.approx(percentile_linear([0.125, 0.0, 0.5, 0.375], 50))
    r0 = p.reason(0)
    assert r0["change_rate"] == 0.125 and r0["interval"] == 2 and r0["step"] == 4
    assert r0["threshold"] == pytest.approx(0.25) and r0["grad_norm"] == 0.875 and r0["prev_grad_norm"] == 1.0
    assert p.reason(2) is None
    # interval 3: frozen units report None. Active body units 2, 3: rates 0.5 / (1.5) -> 1/3 and 0.6
    frozen = _feed_interval(p, 5, [[None, None, 1.0, 0.25, 3.0]] * 2)
    assert p.last_interval["change_rate"][2] == pytest.approx(1 / 3)
    assert p.last_interval["change_rate"][3] == pytest.approx(0.6)
    assert frozen == {0, 1, 2}  # P = 0.4667: unit 2 is below it, unit 3 is not
    assert p.last_interval["change_rate"][:2] == [None, None]
    # only unit 3 is left below the head: it always stops the scan, and the head is never frozen
    for start in range(7, 40, 2):
        frozen = _feed_interval(p, start, [[None, None, None, 1.0 + start, 1e-9]] * 2)
    assert frozen == {0, 1, 2}


def test_head_does_not_vote_and_is_never_frozen():
    # the head's rate (0) would pull P down to 0.2 and freeze only unit 0 if it voted
    p = _policy()
    _feed_interval(p, 1, [[1.0] * 5] * 2)
    assert _feed_interval(p, 3, [[0.9, 1.2, 1.3, 1.4, 1.0]] * 2) == {0, 1}
    for start in range(5, 60, 2):  # rates of every body unit keep shrinking
        assert 4 not in _feed_interval(p, start, [[1.0 + 1e-3 * start] * 5] * 2)


def test_functional_core():
    assert autofreeze_depth([0.1, 0.2, 0.3, 0.4], [True] * 4, 0, 50) == (2, pytest.approx(0.25))
    assert autofreeze_depth([0.1, 0.2, 0.3, 0.4], [True] * 4, 0, 100) == (3, 0.4)
    assert autofreeze_depth([0.1, 0.2, 0.3, 0.4], [True] * 4, 3, 50) == (3, 0.4)  # a single candidate stays
    # an unobserved unit (no gradient all interval) neither votes nor blocks
    rates = [0.05, None, 0.06, 0.4, 0.5]  # P50 of the four rates = 0.23
    assert autofreeze_depth(rates, [True, False, True, True, True], 0, 50) == (3, pytest.approx(0.23))
    # a unit with no rate but with gradients blocks
    assert autofreeze_depth(rates, [True] * 5, 0, 50) == (1, pytest.approx(0.23))


def test_all_zero_norms_freeze_nothing():
    p = _policy()
    for start in range(1, 20, 2):
        assert _feed_interval(p, start, [[0.0] * 5] * 2) == set()
    assert p.last_interval["threshold"] is None
    assert all(r is None for r in p.last_interval["change_rate"])


def test_zero_percentile_value_decides_nothing_and_never_unfreezes():
    p = _policy()
    _feed_interval(p, 1, [[1.0] * 5] * 2)
    assert _feed_interval(p, 3, [[0.9, 1.2, 1.3, 1.4, 1.0]] * 2) == {0, 1}
    # now units 2, 3 have identical norms and the head is the only one moving: P = 0
    assert _feed_interval(p, 5, [[None, None, 1.3, 1.4, 5.0]] * 2) == {0, 1}
    assert p.last_interval["threshold"] == 0.0 and p.depth == 2
    # three units with rate 0 and one moving: P50 = 0, nothing decided (the original code would
    # have restarted from layer 0 here)
    q = _policy()
    _feed_interval(q, 1, [[1.0] * 5] * 2)
    assert _feed_interval(q, 3, [[1.0, 1.0, 1.0, 2.0, 1.0]] * 2) == set()
    assert q.last_interval["threshold"] == 0.0


def test_non_finite_and_missing_norms_are_guarded():
    p = _policy()
    # a NaN / inf step (an AMP overflow) is skipped, not averaged in
    _feed_interval(p, 1, [[1.0, 1.0, 1.0, 1.0, 1.0], [math.nan, math.inf, 1.0, 1.0, 1.0]])
    assert p.last_interval["grad_norm"] == [1.0] * 5
    # unit 1 had no baseline-worthy norm: prev 0 -> no rate -> it stops the prefix
    q = _policy()
    _feed_interval(q, 1, [[1.0, 0.0, 1.0, 1.0, 1.0]] * 2)
    assert _feed_interval(q, 3, [[0.99, 0.5, 0.5, 0.5, 1.0]] * 2) == {0}
    assert q.last_interval["change_rate"][1] is None
    # a unit that reports None all interval (frozen by someone else) is stepped over
    r = _policy()
    _feed_interval(r, 1, [[1.0] * 5] * 2)
    assert _feed_interval(r, 3, [[0.99, None, 0.98, 0.5, 1.0]] * 2) == {0, 1}  # P = 0.02: unit 2 stops it
    with pytest.raises(FrostlineError, match="gradient norms"):
        _feed(r, 5, [1.0, 1.0])


def test_a_missed_interval_end_is_closed_late():
    p = _policy(interval_steps=3)
    _feed(p, 1, [1.0] * 5)
    _feed(p, 2, [1.0] * 5)  # step 3 is never observed
    _feed(p, 4, [2.0] * 5)
    assert p.intervals_done == 1 and p.last_interval["step"] == 3 and p.last_interval["grad_norm"] == [1.0] * 5


def _norm_stream(step, n=5):
    g = torch.Generator().manual_seed(step)
    return (torch.rand(n, generator=g, dtype=torch.float64) + 1.0 / step).tolist()


def test_state_dict_roundtrip_mid_interval_decides_identically():
    a = AutoFreeze(intervals_per_epoch=3, steps_per_epoch=10)
    a.bind(UNITS)
    for s in range(1, 15):  # 14 steps: mid-interval (the 5th interval is steps 14-16)
        _feed(a, s, [None if i < a.depth else v for i, v in enumerate(_norm_stream(s))])
    assert a._interval is not None and sum(a._counts) > 0  # mid-interval: the sums matter
    saved = json.loads(json.dumps(a.state_dict()))  # plain data: JSON-safe as well as torch.save-able
    b = AutoFreeze(intervals_per_epoch=3, steps_per_epoch=10)
    b.bind(UNITS)
    b.load_state_dict(saved)
    for s in range(15, 80):
        norms = [None if i < a.depth else v for i, v in enumerate(_norm_stream(s))]
        assert _feed(a, s, norms) == _feed(b, s, norms)
        assert a.last_interval == b.last_interval
    assert a.depth > 0 and {i: a.reason(i) for i in range(5)} == {i: b.reason(i) for i in range(5)}
    other = AutoFreeze(percentile=60, intervals_per_epoch=3, steps_per_epoch=10)
    other.bind(UNITS)
    with pytest.raises(CheckpointError, match="hyperparameters"):
        other.load_state_dict(saved)
    shorter = AutoFreeze(intervals_per_epoch=3, steps_per_epoch=10)
    shorter.bind(UNITS[:3])
    with pytest.raises(CheckpointError, match="units"):
        shorter.load_state_dict(saved)


def _train_step(model, optimizer, x, y):
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss


def _fresh(policy, x, total):
    torch.manual_seed(0)
    model = create_model("resnet", width=4)  # 8 units, a few ms a step
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return model, optimizer, Freezer(model, optimizer, policy, total, example_input=x)


@pytest.mark.integration
def test_end_to_end_freezes_a_growing_prefix_and_resumes_exactly(fmnist_batch):
    x, y = fmnist_batch
    total = 30
    model, optimizer, freezer = _fresh(AutoFreeze(interval_steps=5), x, total)
    prefixes = []
    for s in range(total):
        _train_step(model, optimizer, x, y)
        freezer.step()
        assert freezer.frozen == set(range(freezer.frozen_prefix))  # always a prefix
        prefixes.append(freezer.frozen_prefix)
        if s == 12:  # mid-interval checkpoint (intervals end at steps 5, 10, 15, ...)
            buf = io.BytesIO()
            torch.save({"model": model.state_dict(), "opt": optimizer.state_dict(), "freezer": freezer.state_dict()}, buf)
    last = len(freezer.units) - 1
    assert 0 < freezer.frozen_prefix < last and last not in freezer.frozen
    assert prefixes == sorted(prefixes)  # never unfreezes
    for event in freezer.timeline:
        sig = event.signal
        assert event.step % 5 == 0 and sig["interval"] >= 2
        assert sig["change_rate"] < sig["threshold"]
    frozen_params = [p for i in freezer.frozen for p in freezer.units[i].params]
    assert all(not p.requires_grad and p.grad is None for p in frozen_params)

    buf.seek(0)
    ckpt = torch.load(buf, weights_only=False)
    model_b, opt_b, fz_b = _fresh(AutoFreeze(interval_steps=5), x, total)
    model_b.load_state_dict(ckpt["model"])
    fz_b.load_state_dict(ckpt["freezer"])
    opt_b.load_state_dict(ckpt["opt"])
    for _ in range(13, total):
        _train_step(model_b, opt_b, x, y)
        fz_b.step()
    assert fz_b.frozen == freezer.frozen and fz_b.timeline == freezer.timeline
    for (n, p), q in zip(model.named_parameters(), model_b.parameters()):
        assert torch.equal(p, q), n


@pytest.mark.integration
def test_overhead_of_gradient_norms_is_small(batch):
    """Time Freezer.step() with autofreeze against the `none` policy, both after the same real
    training steps (default resnet, batch 64), and compare the extra time with the step time.
    ``pytest tests/test_autofreeze.py -k overhead -s`` prints the figures."""
    x, y = batch
    assert torch.get_num_threads() == 1
    steps = 30
    torch.manual_seed(0)
    model = create_model("resnet")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    # intervals of 15 steps: one baseline (step 15), one decision (step 30), no freezing in between,
    # so every step pays for the norms of every unit (the worst case)
    auto = Freezer(model, optimizer, AutoFreeze(interval_steps=15), steps, example_input=x)
    none = Freezer(model, optimizer, NoFreezing(), steps, example_input=x)
    for _ in range(3):  # warm-up
        _train_step(model, optimizer, x, y)
    t_step, t_auto, t_none = [], [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        _train_step(model, optimizer, x, y)
        t1 = time.perf_counter()
        none.step()
        t2 = time.perf_counter()
        auto.step()
        t3 = time.perf_counter()
        t_step.append(t1 - t0)
        t_none.append(t2 - t1)
        t_auto.append(t3 - t2)
    extra = statistics.median(t_auto) - statistics.median(t_none)
    ratio = extra / statistics.median(t_step)
    print(f"\nautofreeze overhead: step {1e3 * statistics.median(t_step):.1f} ms, freezer.step none "
          f"{1e6 * statistics.median(t_none):.0f} us, autofreeze {1e6 * statistics.median(t_auto):.0f} us "
          f"-> extra {100 * ratio:.2f}% of the step")
    assert ratio < 0.05
