import copy
import io
import json
import math
import statistics
import time
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from frostline import CheckpointError, ConfigError, Freezer, FrostlineError, Progress, SummedGradients, create_policy
from frostline.lab.zoo import create_model
from frostline.policies import POLICIES, AutoFreeze, policy_spec
from frostline.policies.autofreeze.autofreeze import SIGNAL, autofreeze_depth, change_rates, percentile_linear

UNITS = ["stem", "b1", "b2", "b3", "head"]


@pytest.fixture(autouse=True)
def _one_thread():
    """The 2 CPU cores are shared with other jobs: with 2 threads a resnet step was measured
    10x slower than with 1 (threads contending), which would make timings meaningless."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- the rule, fed by hand --------------------------------------------------------------------------
def _policy(**kw):
    kw.setdefault("interval_steps", 2)
    p = AutoFreeze(**kw)
    p.bind(UNITS)
    return p


def _feed(policy, step, sums, total=1000):
    """One Freezer step, by hand: the signal only where the policy asks for it (as Freezer.step
    does), then the decision. Returns (asked, frozen)."""
    progress = Progress(step, total)
    asked = bool(policy.wants(progress))
    if asked:
        policy.observe(progress, {SIGNAL: sums})
    return asked, policy.decide(progress)


def _feed_interval(policy, first_step, sums, length=2):
    """An interval of ``length`` steps whose summed gradients have the L1 norms ``sums``."""
    for step in range(first_step, first_step + length - 1):
        assert _feed(policy, step, None) == (False, policy.decide(Progress(step, 1000)))
    asked, frozen = _feed(policy, first_step + length - 1, sums)
    assert asked
    return frozen


def test_registered_and_validated():
    assert POLICIES["autofreeze"] is AutoFreeze
    assert policy_spec("autofreeze").runtime == ()  # nothing to supply from the data: the run length is enough
    p = create_policy("autofreeze", percentile=40, intervals=5)
    assert p.config() == {"percentile": 40.0, "intervals": 5, "interval_steps": None}
    assert AutoFreeze().config() == {"percentile": 50.0, "intervals": 20, "interval_steps": None}  # the authors' N, M
    assert p.requires == {SIGNAL} == {"grad_sum_l1"}
    bad = [dict(percentile=0), dict(percentile=101), dict(percentile=True), dict(intervals=0), dict(intervals=2.5),
           dict(intervals=True), dict(interval_steps=0), dict(interval_steps=1.5)]
    for kw in bad:
        with pytest.raises(ConfigError):
            AutoFreeze(**kw)
    with pytest.raises(ConfigError):
        create_policy("autofreeze", steps_per_epoch=10)  # no longer an argument
    AutoFreeze(percentile=100, interval_steps=1)  # (0, 100] is closed at 100


def test_intervals_are_counted_over_the_whole_run():
    p = AutoFreeze(intervals=4)
    assert [p.interval_length(t) for t in (100, 103, 4, 3, 1)] == [25, 25, 1, 1, 1]
    assert AutoFreeze(intervals=4, interval_steps=7).interval_length(100) == 7
    assert AutoFreeze().interval_length(1000) == 50
    p.bind(UNITS)
    asked = [s for s in range(1, 104) if _feed(p, s, [1.0] * 5, total=103)[0]]
    assert asked == [25, 50, 75, 100]  # steps 101-103 never make a full interval, as in the original
    assert p.intervals_done == 4 and p.last_interval["steps"] == 25


def test_percentile_matches_numpy_and_rates():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 12):
        v = rng.random(n).tolist()
        for q in (1, 25, 50, 73.5, 100):
            assert percentile_linear(v, q) == pytest.approx(float(np.percentile(v, q)), rel=1e-12)
    assert change_rates([1.0, 2.0, 0.0, None, 1.0], [0.5, 3.0, 1.0, 1.0, None]) == [0.5, 0.5, None, None, None]


def test_change_rate_percentile_rule_freezes_the_exact_prefix():
    p = _policy()
    assert _feed_interval(p, 1, [1.0] * 5) == set()  # interval 1 (steps 1-2): the baseline
    assert p.intervals_done == 1 and p.last_interval["threshold"] is None
    # interval 2: rates 0.125, 0, 0.5, 0.375 (head: 0, does not vote) -> P50 = 0.25 -> freeze {0, 1}
    assert _feed(p, 3, None) == (False, set())  # nothing is read or decided mid-interval
    assert _feed(p, 4, [0.875, 1.0, 1.5, 0.625, 1.0]) == (True, {0, 1})
    assert p.last_interval["change_rate"] == [0.125, 0.0, 0.5, 0.375, 0.0]
    assert p.last_interval["threshold"] == pytest.approx(percentile_linear([0.125, 0.0, 0.5, 0.375], 50))
    r0 = p.reason(0)
    assert r0["change_rate"] == 0.125 and r0["interval"] == 2 and r0["step"] == 4
    assert r0["threshold"] == pytest.approx(0.25) and r0["grad_l1"] == 0.875 and r0["prev_grad_l1"] == 1.0
    assert p.reason(2) is None
    # interval 3: frozen units report None. Active body units 2, 3: rates 0.5 / 1.5 -> 1/3 and 0.6
    assert _feed_interval(p, 5, [None, None, 1.0, 0.25, 3.0]) == {0, 1, 2}  # P = 0.4667: unit 3 stops it
    assert p.last_interval["change_rate"][2] == pytest.approx(1 / 3)
    assert p.last_interval["change_rate"][3] == pytest.approx(0.6)
    assert p.last_interval["change_rate"][:2] == [None, None]
    # only unit 3 is left below the head: it always stops the scan, and the head is never frozen
    for start in range(7, 40, 2):
        frozen = _feed_interval(p, start, [None, None, None, 1.0 + start, 1e-9])
    assert frozen == {0, 1, 2}


def test_head_does_not_vote_and_is_never_frozen():
    # the head's rate (0) would pull P down to 0.2 and freeze only unit 0 if it voted
    p = _policy()
    _feed_interval(p, 1, [1.0] * 5)
    assert _feed_interval(p, 3, [0.9, 1.2, 1.3, 1.4, 1.0]) == {0, 1}
    for start in range(5, 60, 2):  # rates of every body unit keep shrinking
        assert 4 not in _feed_interval(p, start, [1.0 + 1e-3 * start] * 5)


def test_functional_core():
    assert autofreeze_depth([0.1, 0.2, 0.3, 0.4], [True] * 4, 0, 50) == (2, pytest.approx(0.25))
    assert autofreeze_depth([0.1, 0.2, 0.3, 0.4], [True] * 4, 0, 100) == (3, 0.4)
    assert autofreeze_depth([0.1, 0.2, 0.3, 0.4], [True] * 4, 3, 50) == (3, 0.4)  # a single candidate stays
    # an unobserved unit (no gradient all interval) neither votes nor blocks
    rates = [0.05, None, 0.06, 0.4, 0.5]  # P50 of the four rates = 0.23
    assert autofreeze_depth(rates, [True, False, True, True, True], 0, 50) == (3, pytest.approx(0.23))
    # a unit with no rate but with gradients blocks
    assert autofreeze_depth(rates, [True] * 5, 0, 50) == (1, pytest.approx(0.23))


def test_all_zero_sums_freeze_nothing():
    p = _policy()
    for start in range(1, 20, 2):
        assert _feed_interval(p, start, [0.0] * 5) == set()
    assert p.last_interval["threshold"] is None
    assert all(r is None for r in p.last_interval["change_rate"])


def test_zero_percentile_value_decides_nothing_and_never_unfreezes():
    p = _policy()
    _feed_interval(p, 1, [1.0] * 5)
    assert _feed_interval(p, 3, [0.9, 1.2, 1.3, 1.4, 1.0]) == {0, 1}
    # now units 2, 3 have identical sums and the head is the only one moving: P = 0
    assert _feed_interval(p, 5, [None, None, 1.3, 1.4, 5.0]) == {0, 1}
    assert p.last_interval["threshold"] == 0.0 and p.depth == 2
    # three units with rate 0 and one moving: P50 = 0, nothing decided (the original code would
    # have restarted from layer 0 here)
    q = _policy()
    _feed_interval(q, 1, [1.0] * 5)
    assert _feed_interval(q, 3, [1.0, 1.0, 1.0, 2.0, 1.0]) == set()
    assert q.last_interval["threshold"] == 0.0


def test_non_finite_and_missing_sums_are_guarded():
    # an interval whose sum overflowed (AMP) gives that unit no rate (it blocks) and keeps its baseline
    p = _policy()
    _feed_interval(p, 1, [1.0] * 5)
    assert _feed_interval(p, 3, [math.inf, 0.9, 0.95, 0.5, 1.0]) == set()
    assert p.last_interval["change_rate"][0] is None
    assert _feed_interval(p, 5, [0.99, 0.8, 0.5, 0.2, 1.0]) == {0, 1}  # unit 0 compared with its old 1.0
    assert p.reason(0)["prev_grad_l1"] == 1.0 and p.reason(0)["change_rate"] == pytest.approx(0.01)
    # unit 1 had no baseline-worthy sum: prev 0 -> no rate -> it stops the prefix
    q = _policy()
    _feed_interval(q, 1, [1.0, 0.0, 1.0, 1.0, 1.0])
    assert _feed_interval(q, 3, [0.99, 0.5, 0.5, 0.5, 1.0]) == {0}
    assert q.last_interval["change_rate"][1] is None
    # a unit that reports None (frozen by someone else, unused) is stepped over
    r = _policy()
    _feed_interval(r, 1, [1.0] * 5)
    assert _feed_interval(r, 3, [0.99, None, 0.98, 0.5, 1.0]) == {0, 1}  # P = 0.02: unit 2 stops it
    with pytest.raises(FrostlineError, match="gradient sums"):
        _feed_interval(r, 5, [1.0, 1.0])


def test_only_intervals_of_the_same_length_are_compared():
    # an interval end the Freezer never saw is closed late; that longer interval and the short one
    # after it only set baselines
    p = _policy(interval_steps=3)
    assert _feed(p, 1, None)[0] is False and _feed(p, 2, None)[0] is False  # step 3 is never observed
    assert _feed(p, 4, [4.0] * 5) == (True, set()) and p.last_interval["steps"] == 4
    assert _feed(p, 5, None)[0] is False
    assert _feed(p, 6, [0.5, 9.0, 9.0, 9.0, 1.0]) == (True, set()) and p.last_interval["steps"] == 2
    assert _feed_interval(p, 7, [1.0] * 5, length=3) == set()  # full, but its baseline was short
    assert p.last_interval["threshold"] is None
    assert _feed_interval(p, 10, [0.9, 1.2, 1.3, 1.4, 1.0], length=3) == {0, 1}
    # a policy first asked mid-run (a resume without saved state) starts its first interval there
    q = _policy(interval_steps=5)
    assert [s for s in range(12, 31) if _feed(q, s, [1.0] * 5)[0]] == [15, 20, 25, 30]
    assert q.last_interval["steps"] == 5 and q.intervals_done == 4
    assert q.last_interval["threshold"] is not None  # intervals 3 and 4 were full: compared


def test_no_signal_for_a_whole_interval_warns_once():
    p = _policy()
    with pytest.warns(UserWarning, match="no gradient in steps 1-2") as caught:
        for start in range(1, 12, 2):
            assert _feed_interval(p, start, [None] * 5) == set()
    assert len([w for w in caught if "AutoFreeze" in str(w.message)]) == 1
    q = _policy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for start in range(1, 12, 2):
            _feed_interval(q, start, [None, None, None, None, 1.0])  # only the head trains: still a signal


def _sum_stream(step, n=5):
    g = torch.Generator().manual_seed(step)
    return (torch.rand(n, generator=g, dtype=torch.float64) + 1.0 / step).tolist()


def test_state_dict_roundtrip_mid_interval_decides_identically():
    a = _policy(interval_steps=3)
    for s in range(1, 15):  # 14 steps: mid-interval (the 5th interval is steps 13-15)
        _feed(a, s, [None if i < a.depth else v for i, v in enumerate(_sum_stream(s))])
    saved = json.loads(json.dumps(a.state_dict()))  # plain data: JSON-safe as well as torch.save-able
    b = _policy(interval_steps=3)
    b.load_state_dict(saved)
    for s in range(15, 80):
        sums = [None if i < a.depth else v for i, v in enumerate(_sum_stream(s))]
        assert _feed(a, s, sums) == _feed(b, s, sums)
        assert a.last_interval == b.last_interval
    assert a.depth > 0 and {i: a.reason(i) for i in range(5)} == {i: b.reason(i) for i in range(5)}
    other = _policy(percentile=60, interval_steps=3)
    with pytest.raises(CheckpointError, match="hyperparameters"):
        other.load_state_dict(saved)
    shorter = AutoFreeze(interval_steps=3)
    shorter.bind(UNITS[:3])
    with pytest.raises(CheckpointError, match="units"):
        shorter.load_state_dict(saved)
    # a state written when intervals were counted per epoch cannot be continued: said plainly
    old = {"name": "autofreeze", "config": {"percentile": 50.0, "intervals_per_epoch": 4, "steps_per_epoch": 10,
                                            "interval_steps": None},
           "depth": 0, "intervals_done": 1, "interval": 1, "sums": [0.0] * 5, "counts": [0] * 5, "prev": [1.0] * 5,
           "reasons": [], "last_interval": None}
    with pytest.raises(CheckpointError, match="older version"):
        _policy().load_state_dict(old)


# -- the signal, from a real backward ----------------------------------------------------------------
def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                         nn.Linear(16, 3))


def _mlp_data(n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(6, 12, generator=g), torch.randint(0, 3, (6,), generator=g)) for _ in range(n)]


def test_signal_is_the_l1_norm_of_the_gradient_summed_over_the_interval():
    model, data = _mlp(), _mlp_data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    freezer = Freezer(model, optimizer, AutoFreeze(interval_steps=4), 8, example_input=data[0][0])
    hand = {id(p): torch.zeros_like(p) for p in model.parameters()}
    for step, (x, y) in enumerate(data[:4], start=1):
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        for p in model.parameters():
            hand[id(p)] += p.grad
        optimizer.step()
        freezer.step()
    expected = [sum(float(hand[id(p)].abs().sum()) for p in u.params) for u in freezer.units]
    got = freezer.policy.last_interval["grad_l1"]
    assert freezer.policy.last_interval["step"] == 4 and len(got) == 4
    assert got == pytest.approx(expected, rel=1e-5)
    # not the sum of per-step norms: the L1 of a sum is smaller where minibatch gradients disagree
    assert all(g > 0 for g in got)
    # the collector itself: one read returns the sums since the previous read, and starts over
    collector = SummedGradients()
    collector.bind(freezer)
    x, y = data[4]
    optimizer.zero_grad(set_to_none=True)
    for _ in range(2):
        nn.functional.cross_entropy(model(x), y).backward()
    values = collector(freezer)  # g + g, and p.grad holds the same sum
    assert values == pytest.approx([sum(float(p.grad.abs().sum()) for p in u.params) for u in freezer.units], rel=1e-5)
    assert collector(freezer) == [None] * 4  # nothing since the last read
    collector.close()


def test_gradient_accumulation_counts_every_micro_batch():
    model, data = _mlp(), _mlp_data(12)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    freezer = Freezer(model, optimizer, AutoFreeze(interval_steps=2), 4, example_input=data[0][0])
    hand = {id(p): torch.zeros_like(p) for p in model.parameters()}
    micro = iter(data)
    for _ in range(2):  # two optimizer steps of three micro-batches each
        optimizer.zero_grad(set_to_none=True)
        for _ in range(3):
            x, y = next(micro)
            (nn.functional.cross_entropy(model(x), y) / 3).backward()
        for p in model.parameters():  # .grad now holds the three micro-batches' sum
            hand[id(p)] += p.grad
        optimizer.step()
        freezer.step()
    expected = [sum(float(hand[id(p)].abs().sum()) for p in u.params) for u in freezer.units]
    assert freezer.policy.last_interval["grad_l1"] == pytest.approx(expected, rel=1e-5)


def test_an_overflowed_backward_costs_that_interval_not_the_run():
    """A backward with inf gradients (what an AMP overflow step looks like to the hooks) makes the
    interval's sums non-finite: that interval gives no rates and freezes nothing; the next
    interval compares with the last finite baseline."""
    model, data = _mlp(), _mlp_data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay put: only the gradients matter
    freezer = Freezer(model, optimizer, AutoFreeze(interval_steps=2), 8, example_input=data[0][0])
    for step in range(1, 9):
        x, y = data[step % 2]
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        (loss * math.inf if step == 3 else loss).backward()
        freezer.step()
        if step == 4:
            assert all(not math.isfinite(g) for g in freezer.policy.last_interval["grad_l1"])
            assert freezer.policy.last_interval["threshold"] is None and not freezer.frozen
            baseline = list(freezer.policy._prev)
    assert all(b is not None and math.isfinite(b) for b in baseline)  # interval 1's, kept
    assert all(math.isfinite(g) for g in freezer.policy.last_interval["grad_l1"])


def _train(order, steps, policy, data, accumulate=1):
    """Train the MLP with the optimizer's gradients zeroed ``before`` backward or right ``after``
    ``optimizer.step()`` (before ``freezer.step()``, like the Hugging Face Trainer)."""
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    freezer = Freezer(model, optimizer, policy, steps)  # units traced from the first forward
    grads_at_freezer_step = []
    for s in range(steps):
        if order == "before":
            optimizer.zero_grad()
        for k in range(accumulate):
            x, y = data[(s * accumulate + k) % len(data)]
            nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if order == "after":
            optimizer.zero_grad(set_to_none=True)
        grads_at_freezer_step.append(any(p.grad is not None for p in model.parameters()))
        freezer.step()
    return freezer, model, grads_at_freezer_step


def test_freezes_the_same_whichever_order_gradients_are_zeroed_in():
    data = _mlp_data(8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a signal arrives in both: no "saw no gradient" warning
        before, model_a, seen_a = _train("before", 120, "autofreeze", data)
        after, model_b, seen_b = _train("after", 120, "autofreeze", data)
    assert all(seen_a) and not any(seen_b)  # reading p.grad at freezer.step() would see nothing in the 2nd
    assert before.policy.interval_length(120) == 6  # 20 intervals over the run: the default
    assert before.timeline and before.timeline == after.timeline
    assert all(e.step % 6 == 0 for e in before.timeline)
    assert before.policy.last_interval == after.policy.last_interval
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(p, q)


def test_frozen_units_lose_their_hooks_and_close_removes_the_rest():
    freezer, model, _ = _train("before", 120, "autofreeze", _mlp_data(8))
    collector = freezer._collectors[SIGNAL]
    assert freezer.frozen

    def hooked(p):
        return bool(p._backward_hooks)

    for i, unit in enumerate(freezer.units):
        assert all(hooked(p) == (i not in freezer.frozen) for p in unit.params), i
    assert all(s is None for s in collector._sums)  # read at the last interval end, nothing since
    model(torch.randn(2, 12)).sum().backward()
    active = [p for i, u in enumerate(freezer.units) if i not in freezer.frozen for p in u.params]
    assert sum(s is not None for s in collector._sums) == len(active)  # only active units accumulate
    freezer.close()
    assert not any(hooked(p) for p in model.parameters())


def test_warns_when_no_gradient_reaches_the_policy():
    data = _mlp_data(4)
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    freezer = Freezer(model, optimizer, AutoFreeze(interval_steps=2), 12)
    with pytest.warns(UserWarning, match="AutoFreeze saw no gradient in steps 1-2") as caught:
        for s in range(12):
            with torch.no_grad():  # evaluation by mistake: backward never runs
                model(data[s % 4][0])
            optimizer.step()
            freezer.step()
    assert len([w for w in caught if "AutoFreeze" in str(w.message)]) == 1
    assert not freezer.frozen
    # the Freezer built on a copy of the model that trains: the copy's parameters get no gradient
    trained = _mlp()
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1)
    with pytest.warns(UserWarning, match="optimizer holds no trainable parameter of any unit"):  # said at once
        freezer = Freezer(copy.deepcopy(trained), optimizer, AutoFreeze(interval_steps=2), 4,
                          example_input=data[0][0])
    with pytest.warns(UserWarning, match="not a copy"):
        for s in range(4):
            nn.functional.cross_entropy(trained(data[s][0]), data[s][1]).backward()
            optimizer.step()
            freezer.step()


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
def test_end_to_end_freezes_a_growing_prefix_and_resumes_exactly(batch):
    x, y = batch
    total = 30
    model, optimizer, freezer = _fresh(AutoFreeze(intervals=6), x, total)  # intervals of 5 steps
    prefixes = []
    for s in range(1, total + 1):
        _train_step(model, optimizer, x, y)
        freezer.step()
        assert freezer.frozen == set(range(freezer.frozen_prefix))  # always a prefix
        prefixes.append(freezer.frozen_prefix)
        if s == 15:
            interval_3 = copy.deepcopy(freezer.policy.last_interval)
        if s == 13:  # mid-interval checkpoint (intervals end at steps 5, 10, 15, ...)
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

    def resume(drop_sums=False):
        buf.seek(0)
        ckpt = torch.load(buf, weights_only=True)
        sums = ckpt["freezer"]["signals"][SIGNAL]
        assert len(sums["names"]) > 0  # steps 11-13 were summed: the checkpoint carries them
        if drop_sums:
            del ckpt["freezer"]["signals"]
        model_b, opt_b, fz_b = _fresh(AutoFreeze(intervals=6), x, total)
        model_b.load_state_dict(ckpt["model"])
        fz_b.load_state_dict(ckpt["freezer"])
        opt_b.load_state_dict(ckpt["opt"])
        for s in range(14, total + 1):
            _train_step(model_b, opt_b, x, y)
            fz_b.step()
            if s == 15:
                resumed_interval_3 = copy.deepcopy(fz_b.policy.last_interval)
        return model_b, fz_b, resumed_interval_3

    model_b, fz_b, resumed_interval_3 = resume()
    assert resumed_interval_3 == interval_3
    assert fz_b.frozen == freezer.frozen and fz_b.timeline == freezer.timeline
    assert fz_b.policy.last_interval == freezer.policy.last_interval
    for (n, p), q in zip(model.named_parameters(), model_b.parameters()):
        assert torch.equal(p, q), n
    # without the saved sums the interval cut by the checkpoint would see only steps 14-15
    _, _, cut_interval_3 = resume(drop_sums=True)
    assert [g is not None and g < h for g, h in zip(cut_interval_3["grad_l1"], interval_3["grad_l1"])
            if h is not None] == [True] * sum(h is not None for h in interval_3["grad_l1"])


@pytest.mark.integration
def test_overhead_of_the_gradient_hooks_is_small(batch):
    """The work AutoFreeze adds to training: its hooks' adds on every backward, and one read of the
    sums per interval. Each is timed on its own, with real gradients of the default resnet (batch
    64), and compared with the median training step: timing whole steps with and without hooks on
    a shared 2-core machine measured noise (+-6%) rather than the hooks.
    ``pytest tests/test_autofreeze.py -k overhead -s`` prints the figures."""
    x, y = batch
    assert torch.get_num_threads() == 1
    torch.manual_seed(0)
    model = create_model("resnet")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    freezer = Freezer(model, optimizer, AutoFreeze(), 1000, example_input=x)
    collector = freezer._collectors[SIGNAL]
    collector.close()  # the step is timed without hooks; they are called by hand below
    t_step = []
    for _ in range(13):
        t0 = time.perf_counter()
        _train_step(model, optimizer, x, y)
        t_step.append(time.perf_counter() - t0)
    step = statistics.median(t_step[3:])
    collector.bind(freezer)
    hooks = [(h, p.grad) for p in model.parameters() for h in p._backward_hooks.values()]
    assert len(hooks) == len(list(model.parameters()))
    t_hooks, t_read = [], []
    for _ in range(20):
        t0 = time.perf_counter()
        for hook, grad in hooks:  # what backward runs for the signal
            hook(grad)
        t_hooks.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        values = collector(freezer)
        t_read.append(time.perf_counter() - t0)
    assert all(v > 0 for v in values)
    hooks_per_step, read = statistics.median(t_hooks), statistics.median(t_read)
    length = AutoFreeze().interval_length(1000)  # 20 intervals of a 1000-step run: one read per 50 steps
    ratio = (hooks_per_step + read / length) / step
    print(f"\nautofreeze overhead: step {1e3 * step:.1f} ms, hooks {1e3 * hooks_per_step:.3f} ms per backward, "
          f"read {1e3 * read:.3f} ms per interval -> {100 * ratio:.2f}% of the step")
    assert ratio < 0.01
    collector.close()
