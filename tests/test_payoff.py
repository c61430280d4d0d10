"""The rule behind ``--cache auto``: serve a frozen prefix only once its replays repay the copies."""

import json

import pytest
import torch
from torch import nn

from frostline import Freezer, FreezeOut
from frostline.exploit.cache import ActivationCache, CachedPrefixModel
from frostline.exploit.payoff import RULE_VERSION, BoundaryCost, CachePayoff, expected_revisits, revisits
from frostline.lab.cli import main
from frostline.lab.loop import iterate_batches
from frostline.lab.zoo import create_model

US = 1e-6


def _payoff(planned=None, budget=2**30, samples=1000):
    return CachePayoff(samples, steps_per_epoch=100, total_steps=1000, memory_budget_bytes=budget, planned=planned)


def test_revisits_counts_a_shuffled_epochs_returns():
    """Each epoch visits every sample once in a fresh random order: simulated, the sample seen at a
    step comes back before a later step as often as the formula says (not at all within its epoch)."""
    g = torch.Generator().manual_seed(0)
    n, epochs, trials = 50, 6, 2000
    order = torch.stack([torch.stack([torch.randperm(n, generator=g) for _ in range(epochs)]) for _ in range(trials)])
    for step, until in ((60, 99), (60, 100), (60, 125), (60, 180), (10, 260)):
        sample = order[:, step // n, step % n]  # the sample seen at `step`, per trial
        place = (order == sample[:, None, None]).float().argmax(dim=2) + n * torch.arange(epochs)  # its visits
        back = ((place > step) & (place < until)).sum(dim=1).float().mean()
        assert float(back) == pytest.approx(revisits(step, until, n), abs=0.05), (step, until)
    assert revisits(60, 99, 50) == 0 and revisits(60, 125, 50) == 0.5 and revisits(10, 260, 50) == 4.2


def test_a_schedule_serves_a_prefix_only_when_it_holds_long_enough_to_repay_the_fill():
    # units 1, 2 freeze at 40% and 60% of training, unit 3 never; epochs of 100 steps
    p = _payoff(planned=[0.1, 0.4, 0.6, None, None])
    p.costs[1] = BoundaryCost(1, compute_s=10 * US, write_s=20 * US, read_s=5 * US, bytes=3136)
    p.costs[2] = BoundaryCost(2, compute_s=60 * US, write_s=5 * US, read_s=5 * US, bytes=3136)
    p.costs[3] = BoundaryCost(3, compute_s=90 * US, write_s=10 * US, read_s=2 * US, bytes=1568)
    # prefix 1 holds from step 100 to 400: a sample filled at 100 comes back twice (epochs 2 and 3),
    # 2 x 5 µs saved < 20 µs to write it; filled at 350 it never comes back before 400
    assert p.choose(1, 100) == 0 and p.visits(1, 100) == 2.0 and p.visits(1, 350) == 0
    assert p.choose(2, 400) == 2 and p.decisions[2]["served_from_step"] == 400  # once back: 55 µs >= 5 µs
    # prefix 3 holds to the end; it is worth it against what boundary 2 already saves (88 - 55 µs)
    assert p.choose(3, 600) == 3
    assert p.choose(2, 650) == 3  # never moves down


def test_expected_revisits_weighs_every_horizon_by_how_long_the_prefix_has_held():
    """Simulated: the prefix holds X more steps with P(X > x) = held / (held + x), and the sample
    comes back once per later epoch at a random place; the mean count of returns before the prefix
    grows or training ends matches the formula."""
    g = torch.Generator().manual_seed(0)
    spe, total, trials = 100, 1000, 200_000
    for step, held in ((250, 50), (250, 1), (420, 220), (950, 400), (120, 0)):
        hold = held * (1 / torch.rand(trials, generator=g) - 1)  # inverse of P(X > x) = held / (held + x)
        first = (step // spe + 1) * spe
        back = torch.zeros(trials)
        for start in range(first, total, spe):
            r = start + spe * torch.rand(trials, generator=g)
            back += ((r < total) & (r - step < hold)).float()
        assert float(back.mean()) == pytest.approx(expected_revisits(step, held, total, spe), abs=0.01), (step, held)
    assert expected_revisits(120, 0, 1000, 100) == 0  # it grew just now: nothing says it will hold
    assert expected_revisits(950, 400, 1000, 100) == 0  # training ends before the sample is back
    # the longer it has held, the nearer to every return until the end
    assert expected_revisits(250, 10, 1000, 100) < expected_revisits(250, 200, 1000, 100) < revisits(250, 1000, 100)


def test_an_adaptive_prefix_is_served_when_its_expected_returns_repay_the_fill():
    # a fill that costs twice what a replay saves waits until the prefix has held about an epoch
    costly = _payoff()
    costly.costs[2] = BoundaryCost(2, compute_s=30 * US, write_s=50 * US, read_s=5 * US, bytes=3136)
    assert costly.choose(2, 200) == 0  # just grew: nothing says it will hold
    assert costly.choose(2, 250) == 0  # held half an epoch: about one return expected, 25 µs < 50 µs
    assert [s for s in range(251, 1000) if costly.choose(2, s) == 2][0] == 297
    assert costly.decisions[2]["served_from_step"] == 297 and costly.decisions[2]["expected_visits"] >= 2
    # a fill that costs little beside a replay's saving is worth even a small chance of a return
    cheap = _payoff()
    cheap.costs[2] = BoundaryCost(2, compute_s=30 * US, write_s=1 * US, read_s=5 * US, bytes=3136)
    assert cheap.choose(2, 200) == 0 and cheap.choose(2, 201) == 0 and cheap.choose(2, 202) == 2
    late = _payoff()
    late.costs[2] = cheap.costs[2]
    late.choose(2, 500)
    assert late.choose(2, 990) == 0  # held long, but training ends before a sample comes back


def test_an_adaptive_prefix_that_cannot_grow_is_served_at_once():
    """Fine-tuning often freezes everything below the head at its first decision: that prefix holds
    to the end, so a fill that its three later returns repay is made at once, while the same prefix
    taken as one that might still grow never is (its expected returns stay below 2)."""
    cost = BoundaryCost(4, compute_s=30 * US, write_s=50 * US, read_s=5 * US, bytes=3136)
    capped = CachePayoff(1000, steps_per_epoch=100, total_steps=500, memory_budget_bytes=2**30, longest_prefix=4)
    capped.costs[4] = cost
    assert capped.visits(4, 100) == 3.0  # filled in epoch 2, back in epochs 3, 4 and 5
    assert capped.choose(4, 100) == 4 and capped.decisions[4]["served_from_step"] == 100
    assert capped.visits(3, 100) == 0  # a shorter prefix may still grow: weighed by what it has held
    guessed = CachePayoff(1000, steps_per_epoch=100, total_steps=500, memory_budget_bytes=2**30)
    guessed.costs[4] = cost
    assert all(guessed.choose(4, s) == 0 for s in range(100, 500))


def test_bad_settings_get_one_clear_error():
    from frostline import ConfigError

    for spe, total in ((0, 100), (10, 0)):
        with pytest.raises(ConfigError, match="positive steps per epoch and total steps"):
            CachePayoff(100, spe, total, 2**20)


def test_a_boundary_that_saves_nothing_or_does_not_fit_is_declined_with_the_reason():
    p = _payoff(budget=10 * 2**20)
    p.costs[1] = BoundaryCost(1, compute_s=3 * US, write_s=5 * US, read_s=4 * US, bytes=3136)
    p.costs[2] = BoundaryCost(2, compute_s=90 * US, write_s=5 * US, read_s=4 * US, bytes=12544 * 1000)
    assert p.choose(1, 500) == 0 and "save no time" in p.decisions[1]["why"]
    assert p.choose(2, 600) == 0 and "memory budget" in p.decisions[2]["why"]
    rows = {r["boundary"]: r for r in p.summary()}
    assert rows[1]["compute_us"] == 3.0 and rows[1]["read_us"] == 4.0 and "why" in rows[2]
    assert rows[2]["memory_mb"] == pytest.approx(12544 * 1000 * 1000 / 2**20, abs=0.1)


def _train(fmnist, payoff, epochs=3, batch=32):
    torch.manual_seed(0)
    model = create_model("vgg", width=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    steps = epochs * -(-len(fmnist.train) // batch)
    freezer = Freezer(model, optimizer, FreezeOut(t_0=0.3, schedule="linear"), steps,
                      units=[[n] for n, _ in model.named_children()])
    cache = ActivationCache(len(fmnist.train))
    cached = CachedPrefixModel(model, freezer, cache, payoff=payoff)
    losses = []
    for epoch in range(epochs):
        for idx, x, y in iterate_batches(fmnist.train, batch, shuffle=True, seed=epoch):
            loss = nn.functional.cross_entropy(cached(idx, x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            freezer.step()
            losses.append(loss.item())
    return losses, cache, freezer


@pytest.mark.integration
def test_the_payoff_measures_every_prefix_and_serves_only_what_repays(fmnist):
    steps_per_epoch = -(-len(fmnist.train) // 32)
    served = CachePayoff(len(fmnist.train), steps_per_epoch, 3 * steps_per_epoch, 2**30,
                         planned=[0.0] + [None] * 20)  # as if nothing would freeze after the first units
    losses, cache, freezer = _train(fmnist, served)
    assert freezer.frozen_prefix > 2 and served.served > 0
    # a prefix is measured at its first step, unless no fill made then could come back before the end
    # (a prefix reached in the last epoch): then measuring would only cost time
    reached = {e.index + 1: e.step for e in freezer.timeline if e.index + 1 < len(freezer.units)}
    assert set(served.costs) == {b for b, step in reached.items() if step < 2 * steps_per_epoch}
    assert len(served.costs) >= 2 and len(served.costs) < len(reached)
    for c in served.costs.values():  # measured on this machine: real, positive times
        assert c.compute_s > 0 and c.write_s > 0 and c.read_s > 0 and c.bytes > 0
    assert cache.stats["hits"] > 0
    ref, _, _ = _train(fmnist, None)  # the served run trains exactly like the always-cached one
    assert losses == pytest.approx(ref, abs=1e-5)

    none = CachePayoff(len(fmnist.train), steps_per_epoch, 3 * steps_per_epoch, 0)  # no memory to spend
    losses, cache, _ = _train(fmnist, none)
    assert none.served == 0 and not cache.stores and cache.stats == {"hits": 0, "extended": 0, "computed": 0}
    assert all("memory budget" in d["why"] for d in none.decisions.values()) and none.decisions
    assert losses == pytest.approx(ref, abs=1e-5)


@pytest.mark.integration
def test_cache_auto_reports_what_it_measured_and_decided(tmp_path, capsys):
    # 20 short epochs: each unit holds about three epochs, so filling can pay and is measured
    args = ["train", "--method", "freezeout", "--t-0", "0.2", "--schedule", "linear", "--epochs", "20",
            "--train-subset", "200", "--val-size", "100", "--test-subset", "100", "--batch-size", "32", "--no-progress"]
    assert main([*args, "--cache", "auto", "--out", str(tmp_path / "auto")]) == 0
    assert main([*args, "--cache", "off", "--out", str(tmp_path / "off")]) == 0
    auto = json.loads((tmp_path / "auto" / "summary.json").read_text())
    off = json.loads((tmp_path / "off" / "summary.json").read_text())
    rows = auto["cache"]["payoff"]
    assert auto["cache"]["payoff_rule"] == RULE_VERSION and off["cache"] is None  # a bench can tell an older rule's runs
    measured = [r for r in rows if "compute_us" in r]
    assert measured and all(r["compute_us"] > 0 and r["memory_mb"] > 0 for r in measured)
    assert all(("served_from_step" in r) + ("why" in r) + ("waited" in r) == 1 for r in rows)
    assert not any("could not be measured" in r.get("why", "") for r in rows)
    assert auto["test_accuracy"] == off["test_accuracy"]  # the cache never changes what is learned
    assert "activation cache (auto)" in capsys.readouterr().out  # one line, whatever it decided
    assert main(["report", str(tmp_path / "auto"), str(tmp_path / "off")]) == 0
    report = capsys.readouterr().out
    assert "fill µs/sample" in report and report.count("| freezeout | resnet |") >= len(rows) + 1
