import copy
import warnings

import frostline

import pytest
import torch
from torch import nn

from frostline import CheckpointError, ConfigError, Freezer, FreezeOut, FrostlineError, LinearFreezing, NoFreezing
from frostline.freezer.eval_mode import _run_in_eval
from frostline.lab.zoo import create_model
from frostline.policies import FreezePolicy


class FreezeList(FreezePolicy):
    """A policy that freezes the given units at the given step (for exact tests)."""

    name = "list"

    def __init__(self, at_step: int, units):
        super().__init__()
        self.at_step, self.units = at_step, set(units)

    def decide(self, progress):
        return set(self.units) if progress.step >= self.at_step else set()


def _train_step(model, optimizer, x, y):
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def _setup(policy, name="resnet", opt="sgd", total=10, **kw):
    torch.manual_seed(0)
    model = create_model(name)
    if opt == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return model, optimizer, Freezer(model, optimizer, policy, total, **kw)


def test_frozen_units_get_no_gradient_no_update_and_leave_the_optimizer(batch):
    x, y = batch
    model, optimizer, freezer = _setup(FreezeList(1, [0, 1]), opt="adamw")
    _train_step(model, optimizer, x, y)
    freezer.step()
    assert freezer.frozen == {0, 1}
    frozen_params = freezer.units[0].params + freezer.units[1].params
    before = [p.detach().clone() for p in frozen_params]
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in in_optimizer for p in frozen_params)
    assert not any(p in optimizer.state for p in frozen_params)  # their Adam moments are gone too
    optimizer.state_dict()  # Composer's version raises KeyError here
    for _ in range(2):
        _train_step(model, optimizer, x, y)
    assert all(p.grad is None and not p.requires_grad for p in frozen_params)
    assert all(torch.equal(a, b) for a, b in zip(before, frozen_params))
    trainable = [p for u in freezer.units[2:] for p in u.params]
    assert all(p.grad is not None for p in trainable)


def test_frozen_batchnorm_stays_in_eval_after_model_train(batch):
    x, y = batch
    model, optimizer, freezer = _setup(FreezeList(1, [0]))
    _train_step(model, optimizer, x, y)
    freezer.step()
    model.train()  # what every training loop does at the start of an epoch
    _check_frozen_bn_stays_put(model, optimizer, freezer.units[0], x, y)
    # an active unit's BN is still training
    assert model[2].training


def _check_frozen_bn_stays_put(model, optimizer, unit, x, y):
    """A training step leaves the BatchNorm statistics of a frozen ``unit`` as they were."""
    bns = [m for m in unit.modules[0].modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns
    stats = [(m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked)) for m in bns]
    _train_step(model, optimizer, x, y)
    for m, (mean, var, n) in zip(bns, stats):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
        assert int(m.num_batches_tracked) == n
        assert not m.training  # it ran in eval mode


def test_eval_pinning_is_reapplied_on_resume(batch):
    x, y = batch
    model, optimizer, freezer = _setup(FreezeList(1, [0]))
    _train_step(model, optimizer, x, y)
    freezer.step()
    state = freezer.state_dict()
    model2, optimizer2, freezer2 = _setup(FreezeList(1, [0]), units=freezer.unit_names)
    freezer2.load_state_dict(state)
    freezer2.load_state_dict(state)  # loading twice pins once: the hooks of the first load go
    pins = [h for m in freezer2.units[0].modules[0].modules() for h in m._forward_pre_hooks.values()
            if h is _run_in_eval]  # (the first forward's trace hooks every module too, until it runs)
    assert len(pins) == len(list(freezer2.units[0].modules[0].modules()))
    model2.train()
    _check_frozen_bn_stays_put(model2, optimizer2, freezer2.units[0], x, y)
    assert model2[2].training


class _FrozenStem(nn.Module):
    """A stem frozen by hand before frostline sees the model (in no unit: nothing in it trains),
    three units, and a dropout the model uses twice: on the stem's output and before the head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Dropout(0.5))
        self.twice = nn.Dropout(0.5)
        self.a, self.b, self.head = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 2)
        self.stem.requires_grad_(False)

    def forward(self, x):
        h = torch.relu(self.b(torch.relu(self.a(self.twice(self.stem(x))))))
        return self.head(self.twice(h))


def test_modules_frozen_by_hand_join_the_frozen_prefix_in_eval_mode_and_resume_so():
    """Once the unit after it freezes, the stem is part of a frozen prefix: its BatchNorm statistics
    stop moving and its dropout stops drawing, as in a frozen unit (else no activation cache could
    replay the prefix). The dropout used again before the head keeps regularising what trains."""
    torch.manual_seed(0)
    model = _FrozenStem()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    freezer = Freezer(model, optimizer, NoFreezing(), 10)
    x, y = torch.randn(16, 8), torch.randint(0, 2, (16,))
    _train_step(model, optimizer, x, y)
    freezer.step()
    assert freezer.unit_names == ["a", "b", "head"] and freezer.pinned_outside == []
    assert model.stem[1].num_batches_tracked == 1  # before any freeze the stem is left as the user set it
    freezer.freeze(0)
    assert freezer.pinned_outside == ["stem", "stem.0", "stem.1", "stem.2"]

    def check_pinned(model, optimizer):
        bn = model.stem[1]
        stats = bn.running_mean.clone(), int(bn.num_batches_tracked)
        model.train()
        _train_step(model, optimizer, x, y)
        assert torch.equal(bn.running_mean, stats[0]) and int(bn.num_batches_tracked) == stats[1]
        assert not model.stem[2].training and model.twice.training
        assert torch.equal(model.stem(x), model.stem(x))  # no dropout draws in the frozen prefix

    check_pinned(model, optimizer)
    state = freezer.state_dict()
    torch.manual_seed(0)
    model2 = _FrozenStem()
    model2.load_state_dict(model.state_dict())
    optimizer2 = torch.optim.SGD([p for p in model2.parameters() if p.requires_grad], lr=0.1)
    freezer2 = Freezer(model2, optimizer2, NoFreezing(), 10, units=["a", "b", "head"])
    freezer2.load_state_dict(state)  # pinned before the first forward, as in the uninterrupted run
    assert freezer2.pinned_outside == freezer.pinned_outside
    check_pinned(model2, optimizer2)


def test_frozen_dropout_is_off(batch):
    x, _ = batch
    torch.manual_seed(0)
    model = create_model("vit", drop=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    freezer = Freezer(model, optimizer, NoFreezing(), 5, example_input=x)
    freezer.freeze(0)
    model.train()
    embed = model[0]
    with torch.no_grad():
        a, b = embed(x), embed(x)
    assert torch.equal(a, b)


def test_head_is_never_frozen_unless_asked(batch):
    x, y = batch
    model, optimizer, freezer = _setup(FreezeList(1, range(100)))
    _train_step(model, optimizer, x, y)
    freezer.step()
    last = len(freezer.units) - 1
    assert freezer.frozen == set(range(last))
    assert all(p.requires_grad for p in freezer.units[last].params)
    model2, optimizer2, freezer2 = _setup(FreezeList(1, range(100)), freeze_head=True)
    _train_step(model2, optimizer2, x, y)
    freezer2.step()
    assert last in freezer2.frozen


def test_units_are_found_lazily_from_the_first_forward(batch):
    x, y = batch
    model, optimizer, freezer = _setup(LinearFreezing(freeze_start=0.0), total=4)
    with pytest.raises(FrostlineError, match="forward pass"):
        freezer.step()
    _train_step(model, optimizer, x, y)
    assert freezer.unit_names == [n for n, _ in model.named_children()]


def test_finish_trace_ends_a_trace_whose_root_forward_never_ran(batch):
    """Frameworks may run a model's children without its own forward (Lightning's training_step
    calling self.net(x)): finish_trace() takes the units from what ran."""
    x, _ = batch
    model, optimizer, freezer = _setup(LinearFreezing(freeze_start=0.0), total=4)
    with pytest.raises(FrostlineError, match="saw no module run"):
        freezer.finish_trace()
    model, optimizer, freezer = _setup(LinearFreezing(freeze_start=0.0), total=4)
    out = x
    for child in model.children():  # the model's layers, called one by one
        out = child(out)
    assert not freezer.ready
    freezer.finish_trace()
    assert freezer.unit_names == [n for n, _ in model.named_children()]
    freezer.finish_trace()  # a second call changes nothing
    assert freezer.unit_names == [n for n, _ in model.named_children()]


@pytest.mark.integration  # 20 resnet steps
def test_freezeout_learning_rates_follow_the_per_unit_cosine(batch):
    x, y = batch
    total = 20
    policy = FreezeOut(t_0=0.5, schedule="linear", scale_lr=True)
    model, optimizer, freezer = _setup(policy, total=total, example_input=x)
    base = 0.05
    for step in range(total):
        t = step / total
        for g in optimizer.param_groups:
            t_i = policy.times[g["frostline_unit"]]
            expected = 0.0 if t >= t_i else 0.5 * base / t_i * (1 + torch.cos(torch.tensor(torch.pi * t / t_i)).item())
            assert g["lr"] == pytest.approx(expected, abs=1e-7)
        _train_step(model, optimizer, x, y)
        freezer.step()
    frozen_at = freezer.frozen_at()
    names = freezer.unit_names
    for i, name in enumerate(names[:-1]):
        assert frozen_at[name] == pytest.approx(next(s for s in range(1, total + 1) if s / total >= policy.times[i]) / total)
    assert frozen_at[names[-1]] is None


class EveryFifthStep(FreezeList):
    """Freezes unit 0 from step 8 on, but says it changes its answers only every fifth step."""

    def __init__(self):
        super().__init__(8, [0])
        self.asked = []

    def decide(self, progress):
        self.asked.append(progress.step)
        return super().decide(progress)

    def next_call(self, progress):
        return progress.step + 5


@pytest.mark.integration  # 12 resnet steps
def test_the_policy_is_asked_only_when_it_says_its_answers_can_change(batch):
    """Asking a policy costs time on every step; one that acts at stage ends is asked there alone,
    and a freeze it decides between two calls lands at the next call. A resumed Freezer asks at
    its first step."""
    x, y = batch
    model, optimizer, fz = _setup(EveryFifthStep(), total=20)
    for _ in range(12):
        _train_step(model, optimizer, x, y)
        fz.step()
    assert fz.policy.asked == [1, 6, 11] and fz.frozen == {0} and fz.timeline[0].step == 11
    state = fz.state_dict()
    model2, optimizer2, fz2 = _setup(EveryFifthStep(), total=20)
    fz2.load_state_dict(state)
    _train_step(model2, optimizer2, x, y)
    fz2.step()
    assert fz2.policy.asked == [13]


def test_state_dict_roundtrip_resumes_exactly(batch, tmp_path):
    """Train 6 steps; save at step 3 (after a freeze), restore into fresh objects, continue:
    parameters and optimizer state equal those of the uninterrupted run, bit for bit."""
    x, y = batch
    total = 6

    def fresh():
        return _setup(FreezeOut(t_0=0.3, schedule="linear"), opt="sgd", total=total, example_input=x)

    model, optimizer, freezer = fresh()
    for _ in range(total):
        _train_step(model, optimizer, x, y)
        freezer.step()

    model_a, opt_a, fz_a = fresh()
    for _ in range(3):
        _train_step(model_a, opt_a, x, y)
        fz_a.step()
    assert fz_a.frozen  # the checkpoint is taken after a freeze event
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model_a.state_dict(), "opt": opt_a.state_dict(), "freezer": fz_a.state_dict()}, path)

    model_b, opt_b, fz_b = fresh()
    ckpt = torch.load(path, weights_only=False)
    model_b.load_state_dict(ckpt["model"])
    fz_b.load_state_dict(ckpt["freezer"])  # before the optimizer: it restores the group layout
    opt_b.load_state_dict(ckpt["opt"])
    assert fz_b.frozen == fz_a.frozen and fz_b.timeline == fz_a.timeline
    for _ in range(3, total):
        _train_step(model_b, opt_b, x, y)
        fz_b.step()
    for (n, p), q in zip(model.named_parameters(), model_b.parameters()):
        assert torch.equal(p, q), n
    assert fz_b.frozen == freezer.frozen


def test_loading_state_of_another_method_or_length_fails_clearly(batch):
    x, _ = batch
    _, _, fz = _setup(FreezeOut(), total=10, example_input=x)
    state = fz.state_dict()
    _, _, other = _setup(LinearFreezing(), total=10, example_input=x)
    with pytest.raises(FrostlineError, match="method"):
        other.load_state_dict(state)
    _, _, longer = _setup(FreezeOut(), total=11, example_input=x)
    with pytest.raises(FrostlineError, match="total_steps"):
        longer.load_state_dict(state)


def test_bad_freezer_arguments():
    model = create_model("resnet")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError):
        Freezer(model, optimizer, NoFreezing(), 0)
    with pytest.raises(ConfigError, match="granularity"):
        Freezer(model, optimizer, NoFreezing(), 10, granularity="layers")
    with pytest.raises(FrostlineError, match="do not exist"):
        Freezer(model, optimizer, NoFreezing(), 10, units=["stem", "block9_9", "head"])
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(FrostlineError, match="no trainable parameters"):
        Freezer(model, optimizer, NoFreezing(), 10)


def test_a_policy_by_name_is_built_at_construction_and_a_bad_name_fails_there():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    freezer = Freezer(model, opt, "linear", total_steps=10, example_input=torch.randn(3, 4))
    assert isinstance(freezer.policy, frostline.LinearFreezing)
    for _ in range(10):
        model(torch.randn(3, 4)).sum().backward()
        opt.step()
        freezer.step()
    assert freezer.frozen  # the default linear schedule froze something by the end
    with pytest.raises(ConfigError, match="unknown method 'freezout'"):
        Freezer(model, opt, "freezout", total_steps=10)
    # a per-epoch method by name sees the run as EPOCHS_IF_UNKNOWN epochs; AutoFreeze counts its
    # intervals over the run: the run length is all either needs
    smart = Freezer(model, opt, "smartfrz", total_steps=40).policy
    assert isinstance(smart, frostline.SmartFRZ) and smart.clock.steps_per_epoch == 4
    assert isinstance(Freezer(model, opt, "autofreeze", total_steps=10).policy, frostline.AutoFreeze)


@pytest.mark.integration  # dynamo compiles (~10 s)
def test_a_compiled_model_freezes(batch, backend="aot_eager"):
    """``Freezer(torch.compile(model))`` finds the units of the model it wraps and freezing acts
    (guards on requires_grad recompile the graph after a freeze)."""
    x, y = batch[0][:8], batch[1][:8]
    torch.manual_seed(0)
    model = create_model("resnet")
    compiled = torch.compile(model, backend=backend)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    freezer = Freezer(compiled, optimizer, FreezeList(2, [0, 1]), 4)
    for _ in range(3):
        _train_step(compiled, optimizer, x, y)
        freezer.step()
    assert freezer.unit_names == [n for n, _ in model.named_children()]
    assert freezer.frozen == {0, 1}
    frozen = freezer.units[0].params + freezer.units[1].params
    assert all(p.grad is None and not p.requires_grad for p in frozen)
    assert all(p.grad is not None for p in freezer.units[-1].params)


def test_named_units_are_checked_at_the_first_forward(batch):
    x, y = batch[0][:8], batch[1][:8]
    names = [n for n, _ in create_model("resnet").named_children()]
    model, optimizer, freezer = _setup(NoFreezing(), units=names[::-1])  # reversed
    assert freezer.ready  # known at once (and so kept on resume), checked once the model runs
    with pytest.raises(frostline.ModelError, match="not listed in the order they run"):
        _train_step(model, optimizer, x, y)
    model, optimizer, freezer = _setup(NoFreezing(), units=names[:2] + names[3:])  # one block left out
    with pytest.raises(frostline.ModelError, match=f"{names[2]}.*belong to no unit"):
        _train_step(model, optimizer, x, y)
    with pytest.raises(frostline.ModelError, match="not listed in the order"):  # with example_input: at once
        _setup(NoFreezing(), units=names[::-1], example_input=x)
    model, optimizer, freezer = _setup(NoFreezing(), units=names)
    _train_step(model, optimizer, x, y)
    assert not freezer.tracing and freezer.unit_names == names


def test_an_lr_scheduler_that_is_not_attached_is_noticed(batch):
    x, y = batch[0][:8], batch[1][:8]
    model, optimizer, freezer = _setup(FreezeOut(t_0=0.5), total=6, example_input=x)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    with pytest.warns(UserWarning, match=r"freezer.attach_scheduler\(scheduler\)") as record:
        for _ in range(3):
            _train_step(model, optimizer, x, y)
            scheduler.step()
            freezer.step()
    assert len([w for w in record if "attach_scheduler" in str(w.message)]) == 1  # warned once
    model, optimizer, freezer = _setup(FreezeOut(t_0=0.5), total=6, example_input=x)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    freezer.attach_scheduler(scheduler)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            _train_step(model, optimizer, x, y)
            scheduler.step()
            freezer.step()


def test_loading_the_optimizer_before_the_freezer_says_which_comes_first(batch):
    x, y = batch
    model, optimizer, freezer = _setup(FreezeOut(t_0=0.3, schedule="linear"), total=6, example_input=x)
    for _ in range(3):
        _train_step(model, optimizer, x, y)
        freezer.step()
    assert freezer.frozen
    saved_opt, saved_freezer = optimizer.state_dict(), freezer.state_dict()
    _, optimizer2, freezer2 = _setup(FreezeOut(t_0=0.3, schedule="linear"), total=6, example_input=x)
    with pytest.raises(frostline.CheckpointError, match=r"freezer.load_state_dict\(.*\) before optimizer.load_state_dict"):
        optimizer2.load_state_dict(saved_opt)
    freezer2.load_state_dict(saved_freezer)
    optimizer2.load_state_dict(saved_opt)  # the right order works


def test_a_run_that_froze_nothing_says_so_once():
    """Never a silent no-op: a schedule that reaches no unit, an adaptive policy that found none
    ready, or a Freezer that was never stepped all end with a warning that says which; a run that
    froze something, or the ``none`` baseline, ends quietly."""
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    for policy, expected in ((LinearFreezing(0.5, 0.1), "its schedule reached no unit"),
                             (FreezeList(99, [0]), "after 3 of the 3 steps"),
                             (NoFreezing(), None), (FreezeList(2, [0]), None)):
        model, optimizer, freezer = _setup(policy, total=3)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                _train_step(model, optimizer, x, y)
                freezer.step()
            freezer.close()
        said = [str(w.message) for w in caught if "froze no unit" in str(w.message)]
        assert len(said) == (expected is not None), said
        assert expected is None or expected in said[0]
    model, optimizer, freezer = _setup(LinearFreezing(0.0, 1.0), total=3)
    with pytest.warns(UserWarning, match=r"linear froze no unit.*freezer.step\(\) was never called"):
        freezer.close()


def test_an_optimizer_that_holds_none_of_a_unit_is_said_once():
    """Freezing works by taking a unit out of its optimizer: an optimizer built from another model
    (or from parameters a later copy replaced) has nothing to give up and trains nothing here."""
    x = torch.randn(4, 1, 28, 28)
    torch.manual_seed(0)
    model, other = create_model("resnet"), create_model("resnet")

    def told(optimizer):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            Freezer(model, optimizer, LinearFreezing(0.0, 1.0), 3, example_input=x)
        return [str(w.message) for w in caught if "optimizer holds no trainable parameter" in str(w.message)]

    assert told(torch.optim.SGD(model.parameters(), lr=0.1)) == []
    other_model = told(torch.optim.SGD(other.parameters(), lr=0.1))
    assert len(other_model) == 1 and "of any unit" in other_model[0]
    head_only = told(torch.optim.SGD(list(model.parameters())[-2:], lr=0.1))  # the head's weight and bias
    assert len(head_only) == 1 and "'stem'" in head_only[0] and "'head'" not in head_only[0]


def test_stepping_past_total_steps_is_said_once():
    """A Freezer told too few steps (epochs passed for steps) ends its schedule early: say so."""
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    model, optimizer, freezer = _setup(LinearFreezing(0.5, 1.0), total=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(6):
            _train_step(model, optimizer, x, y)
            freezer.step()
    said = [str(w.message) for w in caught if "more than the total_steps=3" in str(w.message)]
    assert len(said) == 1


def _tiny_model_and_groups(n_groups):
    """A 3-unit chain whose parameters are dealt round-robin into ``n_groups`` param groups, so
    every group spans several units (weights / biases for 2 groups)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    params = list(model.parameters())
    return model, [{"params": params[i::n_groups], "weight_decay": 0.01 * i} for i in range(n_groups)]


def _unit_scales(freezer):
    """The scale the Freezer applies to each unit now: the cool-down ramp, or the policy's."""
    from frostline.freezer.cooldown import cooldown_scale
    if not freezer.cooldown:
        return freezer.policy.lr_scales(freezer.progress)
    scales = [0.0 if i in freezer.frozen else 1.0 for i in range(len(freezer.units))]
    for i, c in freezer.cooling.items():
        scales[i] = cooldown_scale(freezer.step_count - c.decided_step, freezer.cooldown)
    return scales


def _one_cycle(three_phase=False, chained=False):
    def make(optimizer):
        sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=12, three_phase=three_phase)
        return torch.optim.lr_scheduler.ChainedScheduler([sched], optimizer) if chained else sched
    return make


@pytest.mark.parametrize("n_groups, make_sched, policy, cooldown", [
    pytest.param(2, _one_cycle(), lambda: FreezeOut(t_0=0.5), 0, id="freezeout-2-groups-2-phases"),
    pytest.param(2, _one_cycle(), lambda: LinearFreezing(freeze_start=0.2), 2, id="cooldown-2-groups-2-phases"),
    pytest.param(3, _one_cycle(three_phase=True), lambda: FreezeOut(t_0=0.5), 0, id="freezeout-3-groups-3-phases"),
    pytest.param(2, _one_cycle(chained=True), lambda: FreezeOut(t_0=0.5), 0, id="chained-freezeout-2-groups"),
])
def test_one_cycle_with_as_many_param_groups_as_phases_runs_its_schedule_per_unit(n_groups, make_sched, policy, cooldown):
    """OneCycleLR's ``_schedule_phases`` is a list as long as the param-group count here, but not
    per group: expanding it to the per-unit layout made phases share end steps (ZeroDivisionError at
    the last step). Every unit's lr is OneCycle's lr for its original group times its unit's scale."""
    total = 12
    model, groups = _tiny_model_and_groups(n_groups)
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    sched = make_sched(optimizer)  # before the Freezer, as documented
    _, ref_groups = _tiny_model_and_groups(n_groups)
    ref = make_sched(torch.optim.AdamW(ref_groups, lr=1e-3))  # the same schedule without frostline
    freezer = Freezer(model, optimizer, policy(), total, cooldown=cooldown, example_input=torch.randn(1, 4))
    freezer.attach_scheduler(sched)
    assert len(optimizer.param_groups) > n_groups  # split per unit
    scaled = False
    for _ in range(total):
        loss = model(torch.randn(8, 4)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ref.optimizer.step()  # no gradients: only says it stepped
        sched.step()
        ref.step()
        freezer.step()
        ref_lrs, scales = ref.get_last_lr(), _unit_scales(freezer)
        for g in optimizer.param_groups:
            o = g["frostline_group"]
            assert g["frostline_base_lr"] == pytest.approx(ref_lrs[o], rel=1e-6)
            assert g["lr"] == pytest.approx(ref_lrs[o] * scales[g["frostline_unit"]], rel=1e-6, abs=1e-12)
            assert g["betas"][0] == pytest.approx(ref.optimizer.param_groups[o]["betas"][0], rel=1e-6)
        scaled = scaled or any(s not in (0.0, 1.0) for s in scales)
    assert scaled  # the units' scales were exercised, not only 1 and 0
    assert freezer.frozen


def test_a_one_cycle_state_folds_back_with_all_its_phases():
    """Folding a split scheduler state back to the original layout must keep OneCycleLR's phases,
    even when there are as many split groups as phases (1 group split into 3 units, 3 phases)."""
    from frostline.integrations.layout import scheduler_state_in_original_layout
    model, groups = _tiny_model_and_groups(1)
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=12, three_phase=True)
    freezer = Freezer(model, optimizer, FreezeOut(t_0=0.5), 12, example_input=torch.randn(1, 4))
    freezer.attach_scheduler(sched)
    assert len(optimizer.param_groups) == 3
    state = sched.state_dict()
    folded = scheduler_state_in_original_layout(freezer, state)
    assert folded["_schedule_phases"] == state["_schedule_phases"] and len(folded["_schedule_phases"]) == 3
    assert len(folded["base_lrs"]) == len(folded["_last_lr"]) == 1


def _tiny_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))


@pytest.mark.parametrize("index", [3, 7, -1, "0", 1.0, True])
def test_freezing_a_unit_that_does_not_exist_is_a_config_error_that_freezes_nothing(index):
    model = _tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    freezer = Freezer(model, optimizer, NoFreezing(), 10, example_input=torch.randn(2, 8))
    with pytest.raises(ConfigError, match=r"3 units, numbered 0 to 2: \['0', '2', '4'\]"):
        freezer.freeze(index)
    assert freezer.frozen == set() and not freezer.timeline and all(p.requires_grad for p in model.parameters())
    freezer.freeze(2)  # the head, by its real index
    assert freezer.frozen == {2} and freezer.frozen_at()["4"] == 0.0


def test_a_missing_optimizer_or_no_units_is_a_config_error_at_construction():
    model = _tiny_mlp()
    with pytest.raises(ConfigError, match="needs the optimizer that trains the model, got None"):
        Freezer(model, None, "linear", 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="units=\\[\\] names no unit"):
        Freezer(model, optimizer, "linear", 10, units=[])
    assert len(optimizer.param_groups[0]["params"]) == 6  # nothing was split or hooked
    freezer = Freezer(model, optimizer, "linear", 10, units=iter(["0", "2", "4"]))  # any iterable of names
    assert freezer.unit_names == ["0", "2", "4"]


def _dropout_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))


def _steps(freezer, model, optimizer, n):
    for _ in range(n):
        loss = model(torch.randn(4, 8)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        freezer.step()


def test_a_model_an_earlier_freezer_froze_is_said_and_unfreeze_gives_it_back():
    """A notebook cell run again on the same model (or after Ctrl-C): what the first Freezer froze
    looked like the user's own freezes, made no units, and the second run trained the head alone."""
    model = _dropout_mlp()
    model[2].bias.requires_grad_(False)  # the user's own freezes: frostline leaves them alone, in no unit
    model[0].bias.requires_grad_(False)  # or inside one it freezes
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    first = Freezer(model, optimizer, "linear", 4, example_input=torch.randn(2, 8))
    first.freeze(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _steps(first, model, optimizer, 2)  # its own freezes are no news
    assert not model[0].weight.requires_grad
    again = Freezer(model, torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1), "linear", 4,
                    example_input=torch.randn(2, 8))
    with pytest.warns(UserWarning, match=r"1 parameter\(s\) of this model \(\['0'\]\) were frozen by an earlier Freezer.*"
                                         r"frostline.unfreeze\(model\)"):
        again.step()
    assert frostline.unfreeze(model) == ["0.weight"]
    assert model[0].weight.requires_grad and not model[0].bias.requires_grad and not model[2].bias.requires_grad
    assert not any(h is _run_in_eval for m in model.modules() for h in m._forward_pre_hooks.values())
    model.train()
    x = torch.ones(2, 8)
    assert not torch.equal(model[1](x), model[1](x))  # the dropout draws again
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    fresh = Freezer(model, optimizer, "linear", 4, example_input=torch.randn(2, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh.step()
    assert fresh.unit_names == ["0", "2", "4"]


def test_a_resumed_freezer_does_not_take_its_own_freezes_for_an_earlier_run_s():
    model = _dropout_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    first = Freezer(model, optimizer, "linear", 4, example_input=torch.randn(2, 8))
    first.freeze(0)
    _steps(first, model, optimizer, 1)
    state = first.state_dict()
    resumed = Freezer(model, optimizer, "linear", 4, units=["0", "2", "4"])
    resumed.load_state_dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _steps(resumed, model, optimizer, 1)


def test_freezing_every_unit_before_the_end_says_that_nothing_trains_any_more():
    model = _tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    freezer = Freezer(model, optimizer, NoFreezing(), 10, freeze_head=True, example_input=torch.randn(2, 8))
    freezer.freeze(0)
    freezer.freeze(1)
    with pytest.warns(UserWarning, match="every unit is frozen now, at step 0 of 10.*nothing trains any more"):
        freezer.freeze(2)


# -- loading a Freezer state that does not fit: one CheckpointError, raised before anything changes --------


def _mlp(layers):
    torch.manual_seed(0)
    sizes = [8] + [16] * (layers - 1) + [2]
    mods = []
    for a, b in zip(sizes, sizes[1:]):
        mods += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*mods[:-1])


def _freezer(layers, traced=False):
    model = _mlp(layers)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    example = None if traced else torch.randn(4, 8)
    return model, opt, frostline.Freezer(model, opt, frostline.LinearFreezing(freeze_start=0.0), 10,
                                         example_input=example)


def _trained_state(layers=3, steps=7):
    model, opt, fr = _freezer(layers)
    x = torch.randn(4, 8)
    for _ in range(steps):
        model(x).sum().backward()
        opt.step()
        opt.zero_grad()
        fr.step()
    assert fr.frozen  # the state has something to apply
    return fr.state_dict()


def _untouched(model, opt, fr):
    return ([p.requires_grad for p in model.parameters()], [len(g["params"]) for g in opt.param_groups],
            set(fr.frozen), fr.step_count, len(fr.timeline), fr.unit_names if fr.ready else None)


@pytest.mark.parametrize("traced", [False, True], ids=["units known", "units traced later"])
def test_a_state_from_another_model_is_refused_before_anything_changes(traced):
    state = _trained_state(layers=3)
    model, opt, fr = _freezer(4, traced=traced)
    before = _untouched(model, opt, fr)
    with pytest.raises(CheckpointError, match=r"\['0', '2', '4'\]") as e:
        fr.load_state_dict(state)
    assert "another model" in str(e.value)
    if not traced:
        assert "['0', '2', '4', '6']" in str(e.value)
    assert _untouched(model, opt, fr) == before


def _spoil(state, how):
    key, value = how
    if value is KeyError:
        del state[key]
    else:
        state[key] = value
    return state


@pytest.mark.parametrize("how", [
    *[(k, KeyError) for k in ["units", "unit_names", "frozen", "step", "policy", "param_groups", "timeline"]],
    ("frozen", [0, 1, 99]), ("frozen", [-1]), ("frozen", "0,1"), ("step", "seven"), ("step", -1),
    ("units", []), ("units", [["0"], [2]]), ("unit_names", ["0"]), ("timeline", [{"bogus": 1}]),
    ("timeline", "none"), ("cooling", [{"index": 99, "decided_step": 1, "signal": None}]), ("policy", None),
    ("param_groups", [{"params": ["no.such.weight"]}]), ("param_groups", [{"lr": 0.1}]),
    ("pinned_outside", 3), ("decision_time_s", "x"),
], ids=lambda how: f"{how[0]}={'missing' if how[1] is KeyError else how[1]!r}")
def test_a_corrupted_state_is_one_checkpoint_error_and_changes_nothing(how):
    good = _trained_state()
    model, opt, fr = _freezer(3)
    before = _untouched(model, opt, fr)
    with pytest.raises(CheckpointError, match="same model and frostline version") as e:
        fr.load_state_dict(_spoil(copy.deepcopy(good), how))
    assert how[0] in str(e.value) or "no.such.weight" in str(e.value)  # it names what is wrong
    assert _untouched(model, opt, fr) == before
    fr.load_state_dict(good)  # the Freezer is still usable: the intact state loads
    assert fr.frozen == set(good["frozen"]) and fr.step_count == good["step"]


def test_a_compiled_model_without_an_example_input_is_told_to_give_one():
    """Units found by hooks inside the first compiled forward: an nn.Sequential compiled whole then ran
    eagerly for the rest of training (a graph break in its loop), which nothing said."""
    model = _tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(UserWarning, match="pass example_input="):
        Freezer(torch.compile(model, backend="eager"), optimizer, "linear", 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Freezer(torch.compile(model, backend="eager"), optimizer, "linear", 10, example_input=torch.randn(2, 8))
