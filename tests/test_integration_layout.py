"""LR schedulers attached to a Freezer, and optimizer/scheduler states converted back to the
layout the user's code creates (what the HF and Lightning integrations resume from)."""

import copy

import pytest
import torch
from torch import nn

from frostline import Freezer, FreezeOut, NoFreezing
from frostline.integrations.layout import optimizer_state_in_original_layout, scheduler_state_in_original_layout

torch.set_num_threads(1)
TOTAL = 12
UNITS = ["0", "2", "4", "6"]  # three hidden layers and the head


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))


def _optimizer(model):
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias")]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=0.01)


def _lambda(step):
    return min(1.0, (step + 1) / 3) * (1.0 - step / (TOTAL + 1))


def _batch(step):
    g = torch.Generator().manual_seed(step)
    return torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)


def _run(model, optimizer, scheduler, freezer, start, stop):
    for step in range(start, stop):
        x, y = _batch(step)
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        scheduler.step()
        freezer.step()


def _build(model):
    optimizer = _optimizer(model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lambda)
    freezer = Freezer(model, optimizer, FreezeOut(t_0=0.3, schedule="linear"), TOTAL, units=UNITS)
    freezer.attach_scheduler(scheduler)
    return optimizer, scheduler, freezer


def test_scheduler_composes_with_per_unit_scales():
    model = _model()
    optimizer, scheduler, freezer = _build(model)
    assert len(optimizer.param_groups) == 8  # 2 original groups x 4 units
    assert len(scheduler.base_lrs) == len(scheduler.lr_lambdas) == 8  # expanded, no zip truncation
    for stop in range(1, TOTAL):
        _run(model, optimizer, scheduler, freezer, stop - 1, stop)
        scales = freezer.policy.lr_scales(freezer.progress)
        for g in optimizer.param_groups:
            want = 0.01 * _lambda(stop) * scales[g["frostline_unit"]]
            assert g["lr"] == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert freezer.frozen == {0, 1, 2}
    assert all(not g["params"] for g in optimizer.param_groups if g["frostline_unit"] != 3)


def test_chainable_scheduler_does_not_compound_the_scale():
    model = _model()
    optimizer = _optimizer(model)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)
    freezer = Freezer(model, optimizer, FreezeOut(t_0=0.5, schedule="linear"), TOTAL, units=UNITS)
    freezer.attach_scheduler(scheduler)
    for step in range(1, 6):  # here freezer.step() comes before scheduler.step(): either order works
        x, y = _batch(step)
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        freezer.step()
        scheduler.step()
        scales = freezer.policy.lr_scales(freezer.progress)
        for g in optimizer.param_groups:
            assert g["lr"] == pytest.approx(0.01 * 0.9 ** step * scales[g["frostline_unit"]], rel=1e-12)


def test_states_convert_to_the_original_layout_and_resume_exactly():
    model = _model()
    optimizer, scheduler, freezer = _build(model)
    _run(model, optimizer, scheduler, freezer, 0, 7)
    assert freezer.frozen  # the save comes after a freeze
    saved_model = copy.deepcopy(model.state_dict())
    saved_freezer = copy.deepcopy(freezer.state_dict())
    opt_state = copy.deepcopy(optimizer_state_in_original_layout(freezer, optimizer.state_dict()))
    sched_state = scheduler_state_in_original_layout(freezer, scheduler.state_dict())
    assert [len(g["params"]) for g in opt_state["param_groups"]] == [4, 4]
    assert len(sched_state["base_lrs"]) == len(sched_state["_last_lr"]) == 2
    assert all("frostline_unit" not in g for g in opt_state["param_groups"])
    _run(model, optimizer, scheduler, freezer, 7, TOTAL)

    fresh = _model()
    fresh.load_state_dict(saved_model)
    optimizer2 = _optimizer(fresh)
    scheduler2 = torch.optim.lr_scheduler.LambdaLR(optimizer2, _lambda)
    optimizer2.load_state_dict(opt_state)  # a fresh optimizer/scheduler load them as they are
    scheduler2.load_state_dict(sched_state)
    freezer2 = Freezer(fresh, optimizer2, FreezeOut(t_0=0.3, schedule="linear"), TOTAL, units=UNITS)
    freezer2.attach_scheduler(scheduler2)
    freezer2.load_state_dict(saved_freezer)
    assert freezer2.frozen == set(saved_freezer["frozen"])
    assert len(optimizer2.state) == sum(len(g["params"]) for g in optimizer2.param_groups)
    _run(fresh, optimizer2, scheduler2, freezer2, 7, TOTAL)
    for (name, a), b in zip(model.named_parameters(), fresh.parameters()):
        assert torch.equal(a, b), name
    assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in optimizer2.param_groups]


def test_without_scheduler_or_split_the_conversion_only_restores_frozen_params():
    model = _model()
    optimizer = _optimizer(model)
    freezer = Freezer(model, optimizer, NoFreezing(), TOTAL, units=UNITS)
    for step in range(2):
        x, y = _batch(step)
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        freezer.step()
    freezer.freeze(1)
    state = optimizer_state_in_original_layout(freezer, optimizer.state_dict())
    fresh = _optimizer(_model())
    fresh.load_state_dict(state)
    assert len(fresh.state) == 6  # all but unit 1's weight and bias
    assert [g["weight_decay"] for g in fresh.param_groups] == [0.1, 0.0]
