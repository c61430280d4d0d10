"""Anneal, then freeze: a unit a policy decided keeps training for ``cooldown`` steps while its
learning rate falls to zero along half a cosine, then freezes (a zoo ResNet on synthetic images)."""

import math

import pytest
import torch
from torch import nn

from frostline import AutoFreeze, CheckpointError, ConfigError, Freezer, FreezeOut, LinearFreezing
from frostline.freezer.cooldown import cooldown_scale
from frostline.lab.zoo import create_model
from frostline.policies import FreezePolicy

LR = 0.05


class DecideAt(FreezePolicy):
    """Decides ``units`` at step ``at`` (a stand-in for a signal-driven policy, for exact tests)."""

    name = "decide-at"

    def __init__(self, schedule):
        super().__init__()
        self.schedule = dict(schedule)  # step -> units decided then

    def decide(self, progress):
        return {u for s, units in self.schedule.items() if progress.step >= s for u in units}

    def reason(self, unit):
        return {"why": f"unit {unit}"}


def _schedule(step):
    return 1.0 - 0.5 * step / 20  # a linear decay the cool-down must compose with


def _setup(policy, total=20, cooldown=4, opt="sgd", scheduler=True, x=None):
    torch.manual_seed(0)
    model = create_model("resnet", width=8, depth=1)  # units: stem, block1_1, block2_1, block3_1, head
    if opt == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule) if scheduler else None  # before the split
    freezer = Freezer(model, optimizer, policy, total, example_input=x, cooldown=cooldown)
    if sched is not None:
        freezer.attach_scheduler(sched)
    return model, optimizer, sched, freezer


def _step(model, optimizer, sched, freezer, x, y):
    loss = nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if sched is not None:
        sched.step()
    return freezer.step()


def _in_optimizer(optimizer, params):
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    return [id(p) in held for p in params]


def test_the_ramp_is_half_a_cosine_strictly_between_1_and_0():
    assert [round(cooldown_scale(k, 3), 6) for k in range(3)] == [
        round(0.5 * (1 + math.cos(math.pi * j / 4)), 6) for j in (1, 2, 3)]
    assert cooldown_scale(0, 1) == pytest.approx(0.5)
    scales = [cooldown_scale(k, 50) for k in range(50)]
    assert all(1 > a > b > 0 for a, b in zip(scales, scales[1:]))


def test_a_cooling_unit_follows_the_ramp_keeps_training_then_leaves_the_optimizer(batch):
    x, y = batch
    cooldown, decided = 4, 3
    model, optimizer, sched, freezer = _setup(DecideAt({decided: [1], 6: [3]}), cooldown=cooldown, x=x)
    unit = freezer.units[1]
    before = [p.detach().clone() for p in unit.params]
    for step in range(12):  # ``step`` optimizer steps done so far
        for g in optimizer.param_groups:  # what the next optimizer step will use
            u, want = g["frostline_unit"], LR * _schedule(step)
            for d, cooled in ((decided, 1), (6, 3)):
                if u == cooled and 0 <= step - d < cooldown:
                    want *= cooldown_scale(step - d, cooldown)
            if g["params"]:
                assert g["lr"] == pytest.approx(want, rel=1e-12), (step, u)
        newly = _step(model, optimizer, sched, freezer, x, y)
        now = [p.detach().clone() for p in unit.params]
        moved = any(not torch.equal(a, b) for a, b in zip(before, now))
        done = step + 1
        if done <= decided + cooldown:  # it trained on every step up to its freeze, cooling ones included
            assert moved, done
        else:
            assert not moved, done
        before = now
        cooling = decided <= done < decided + cooldown
        assert (1 in freezer.cooling) == cooling
        assert all(_in_optimizer(optimizer, unit.params)) == (done < decided + cooldown)
        assert all(p.requires_grad for p in unit.params) == (done < decided + cooldown)
        assert newly == ([1] if done == decided + cooldown else [3] if done == 6 + cooldown else [])
    assert not any(p in optimizer.state for p in unit.params)
    assert not any(m.training for m in unit.modules[0].modules())  # pinned to eval mode
    events = [(e.index, e.decided_step, e.step, e.signal) for e in freezer.timeline]
    assert events == [(1, 3, 7, {"why": "unit 1"}), (3, 6, 10, {"why": "unit 3"})]
    assert freezer.frozen_at()[unit.name] == pytest.approx(7 / 20)


def test_without_a_cooldown_the_optimizer_layout_is_left_alone(batch):
    x, y = batch
    model, optimizer, sched, freezer = _setup(DecideAt({2: [1]}), cooldown=0, x=x)
    assert len(optimizer.param_groups) == 1 and "frostline_unit" not in optimizer.param_groups[0]
    for _ in range(3):
        _step(model, optimizer, sched, freezer, x, y)
    assert [(e.index, e.decided_step, e.step) for e in freezer.timeline] == [(1, 2, 2)]  # at once, as before
    assert len(optimizer.param_groups) == 1


def test_resume_mid_cooldown_equals_an_uninterrupted_run(batch):
    x, y = batch
    total, stop = 12, 5  # unit 1 decided at 3, cools until 7: the checkpoint is two steps into it

    def fresh():
        return _setup(DecideAt({3: [1], 4: [2]}), total=total, cooldown=4, opt="adamw", x=x)

    reference = fresh()
    for _ in range(total):
        _step(*reference, x, y)

    model, optimizer, sched, freezer = fresh()
    for _ in range(stop):
        _step(model, optimizer, sched, freezer, x, y)
    assert set(freezer.cooling) == {1, 2} and not freezer.frozen
    saved = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": sched.state_dict(),
             "freezer": freezer.state_dict()}

    model, optimizer, sched, freezer = fresh()
    model.load_state_dict(saved["model"])
    freezer.load_state_dict(saved["freezer"])
    optimizer.load_state_dict(saved["optimizer"])
    sched.load_state_dict(saved["scheduler"])
    assert {i: c.decided_step for i, c in freezer.cooling.items()} == {1: 3, 2: 4}
    for _ in range(stop, total):
        _step(model, optimizer, sched, freezer, x, y)
    for (n, p), q in zip(reference[0].named_parameters(), model.parameters()):
        assert torch.equal(p, q), n
    assert freezer.timeline == reference[3].timeline and freezer.frozen == {1, 2}


def test_an_adaptive_policy_decides_and_the_unit_freezes_one_cooldown_later(batch):
    x, y = batch
    policy = AutoFreeze(interval_steps=2, percentile=80)
    model, optimizer, sched, freezer = _setup(policy, total=16, cooldown=3, x=x)
    for _ in range(16):
        _step(model, optimizer, sched, freezer, x, y)
    assert freezer.timeline, "AutoFreeze decided nothing: the test needs a decision"
    for e in freezer.timeline:
        assert e.step - e.decided_step == 3 and e.signal is not None
    assert policy.depth == len(freezer.frozen) + len(freezer.cooling)  # the policy counts cooling units as decided


def test_the_cooldown_starts_on_the_synchronised_decision(batch):
    """Under DDP the sync's answer (rank 0's decision) is what cools, and DDP is rebuilt only when
    the unit really freezes; the sync also checks cooling units agree across ranks."""
    x, y = batch

    class Rank0Says:
        def __init__(self):
            self.seen, self.rebuilt = [], []

        def agree(self, wanted, decided, num_units, step):
            self.seen.append(set(decided))
            return {2} if step >= 2 else set()

        def applied(self, newly):
            self.rebuilt.append((freezer.step_count, list(newly)))

    sync = Rank0Says()
    torch.manual_seed(0)
    model = create_model("resnet", width=8, depth=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    freezer = Freezer(model, optimizer, DecideAt({1: [1]}), 10, example_input=x, cooldown=3, sync=sync)
    for _ in range(6):
        _step(model, optimizer, None, freezer, x, y)
    assert [(e.index, e.decided_step, e.step) for e in freezer.timeline] == [(2, 2, 5)]
    assert sync.rebuilt == [(5, [2])]
    assert sync.seen[:3] == [set(), set(), {2}]  # the units it checks include the cooling one


def test_freezing_a_cooling_unit_by_hand_freezes_it_now(batch):
    x, y = batch
    model, optimizer, sched, freezer = _setup(DecideAt({1: [2]}), cooldown=5, x=x)
    _step(model, optimizer, sched, freezer, x, y)
    _step(model, optimizer, sched, freezer, x, y)
    freezer.freeze(2)
    assert freezer.frozen == {2} and not freezer.cooling
    assert [(e.index, e.decided_step, e.step, e.signal) for e in freezer.timeline] == [(2, 1, 2, {"why": "unit 2"})]


def test_states_without_a_cooldown_still_load_and_a_different_cooldown_is_refused(batch):
    x, y = batch
    model, optimizer, sched, freezer = _setup(LinearFreezing(freeze_start=0.0), cooldown=0, x=x, scheduler=False)
    for _ in range(6):
        _step(model, optimizer, sched, freezer, x, y)
    old = freezer.state_dict()
    old["version"] = 2  # as written before cool-downs existed
    del old["cooldown"], old["cooling"]
    for e in old["timeline"]:
        del e["decided_step"]
    _, _, _, fresh = _setup(LinearFreezing(freeze_start=0.0), cooldown=0, x=x, scheduler=False)
    fresh.load_state_dict(old)
    assert fresh.frozen == freezer.frozen and all(e.decided_step is None for e in fresh.timeline)
    _, _, _, cooling = _setup(LinearFreezing(freeze_start=0.0), cooldown=3, x=x, scheduler=False)
    with pytest.raises(CheckpointError, match="cooldown=0, this one 3"):
        cooling.load_state_dict(old)
    with pytest.raises(CheckpointError, match="cooldown=3, this one 0"):
        fresh.load_state_dict(cooling.state_dict())


@pytest.mark.parametrize("cooldown,needle", [
    (-1, "cooldown .* must be >= 0"),
    (2.5, "must be an integer"),
    (True, "must be an integer"),
    ("3", "must be an integer"),
    (20, "not shorter than the run"),
])
def test_bad_cooldowns_are_config_errors(cooldown, needle):
    model = create_model("resnet", width=8, depth=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    with pytest.raises(ConfigError, match=needle):
        Freezer(model, optimizer, LinearFreezing(), 20, cooldown=cooldown)


def test_a_policy_that_scales_learning_rates_itself_takes_no_cooldown():
    model = create_model("resnet", width=8, depth=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    with pytest.raises(ConfigError, match="anneals every unit to zero"):
        Freezer(model, optimizer, FreezeOut(), 20, cooldown=3)
    Freezer(model, optimizer, FreezeOut(), 20, cooldown=0)  # the default is fine
