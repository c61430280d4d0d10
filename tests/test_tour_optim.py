"""A plain-PyTorch user's tour of the Freezer inside an existing training loop: param groups with
their own lr and weight decay, LR schedulers, optimizers beyond SGD, gradient accumulation and
clipping, mixed precision, tied weights and a second optimizer.

What must hold in each: frozen parameters get no gradient and stop moving (bitwise) and leave the
optimizer with their state, the rest train exactly as if the user had frozen those units by hand,
each group keeps its lr / weight decay / momentum, and a resume from ``freezer.state_dict()`` ends
where an uninterrupted run ends. Two set-ups once misbehaved: an LR scheduler the user forgot to
attach failed at its next step with torch's bare "zip() argument 2 is shorter than argument 1"
before the Freezer could say anything, and a unit trained by an optimizer of its own was warned
about as if its optimizer were a mistake.
"""

import copy
import math
import warnings

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler as L

import frostline
from frostline import Freezer
from frostline.freezer.cooldown import cooldown_scale
from test_freezer import FreezeList  # a decision known in advance, for exact comparisons

pytestmark = pytest.mark.usefixtures("one_thread")

T = 16  # optimizer steps of every run here


def _model(dtype=torch.float32):
    torch.manual_seed(0)
    block = lambda i: nn.Sequential(nn.Linear(i, 16), nn.LayerNorm(16), nn.ReLU())  # noqa: E731
    return nn.Sequential(block(8), block(16), block(16), nn.Linear(16, 2)).to(dtype)


def _decay_groups(model, lr=0.01, wd=0.05):
    """The usual recipe: weight decay on matrices only, biases and norms without it (at twice the lr)."""
    return [{"params": [p for p in model.parameters() if p.ndim >= 2], "weight_decay": wd, "lr": lr},
            {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0, "lr": 2 * lr}]


def _batch(i, dtype=torch.float32):
    g = torch.Generator().manual_seed(i)
    return torch.randn(16, 8, generator=g).to(dtype), torch.randint(0, 2, (16,), generator=g)


def _policy(method):
    return {"at": lambda: FreezeList(5, [0, 1]), "linear": lambda: frostline.LinearFreezing(freeze_start=0.1),
            "freezeout": lambda: frostline.FreezeOut(t_0=0.4),
            "autofreeze": lambda: frostline.create_policy("autofreeze")}[method]()


def _train(model, optimizer, freezer, steps, scheduler=None, hand_frozen=None, metric=1.0):
    """Plain steps; ``hand_frozen`` (parameters) are frozen by hand after step 5 instead of by a Freezer."""
    for i in steps:
        x, y = _batch(i, next(model.parameters()).dtype)
        loss = nn.functional.cross_entropy(model(x).float(), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step(metric) if isinstance(scheduler, L.ReduceLROnPlateau) else scheduler.step()
        if freezer is not None:
            freezer.step()
            _assert_frozen_out(optimizer, freezer)
        elif i + 1 == 5:
            for p in hand_frozen:
                p.requires_grad_(False)
                p.grad = None


def _assert_frozen_out(optimizer, freezer):
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    for i in freezer.frozen:
        for p in freezer.units[i].params:
            assert not p.requires_grad and p.grad is None and id(p) not in held and p not in optimizer.state


def _same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def _resumed_equals_uninterrupted(setup, train, cut=7):
    """Train ``cut`` steps, save, rebuild with ``setup`` and load, train to T; compare with one run to T."""
    model, optimizer, freezer, scheduler = setup()
    train(model, optimizer, freezer, range(cut), scheduler)
    saved = copy.deepcopy({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                           "freezer": freezer.state_dict(),
                           "scheduler": scheduler.state_dict() if scheduler is not None else None})
    model, optimizer, freezer, scheduler = setup()
    model.load_state_dict(saved["model"])
    freezer.load_state_dict(saved["freezer"])
    optimizer.load_state_dict(saved["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(saved["scheduler"])
    train(model, optimizer, freezer, range(cut, T), scheduler)
    reference = setup()
    train(reference[0], reference[1], reference[2], range(T), reference[3])
    return _same(model, reference[0])


# -- param groups ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["linear", "freezeout", "autofreeze"])
def test_groups_with_their_own_lr_and_weight_decay_keep_them_and_resume_exactly(method):
    def setup():
        model = _model()
        optimizer = torch.optim.AdamW(_decay_groups(model), lr=0.01)
        return model, optimizer, Freezer(model, optimizer, _policy(method), T), None

    model, optimizer, freezer, _ = setup()
    moments = {}
    for i in range(T):
        _train(model, optimizer, freezer, [i])
        moments.update({u: [p.detach().clone() for p in freezer.units[u].params]
                        for u in freezer.frozen if u not in moments})
        scales = freezer.policy.lr_scales(freezer.progress)
        for index, g in enumerate(optimizer.param_groups):
            original = g.get("frostline_group", index)
            assert g["weight_decay"] == [0.05, 0.0][original]
            scale = scales[g["frostline_unit"]] if scales is not None else 1.0
            assert math.isclose(g["lr"], [0.01, 0.02][original] * scale, rel_tol=1e-12)
    assert freezer.frozen
    for u, frozen_values in moments.items():  # bitwise still since their freeze
        assert all(torch.equal(a, b) for a, b in zip(frozen_values, freezer.units[u].params))
    assert _resumed_equals_uninterrupted(setup, _train)


@pytest.mark.parametrize("method,cooldown", [("at", 0), ("freezeout", 0), ("linear", 3)])
def test_a_group_emptied_by_a_freeze_stays_with_its_scheduler_and_resumes_exactly(method, cooldown):
    """The first unit alone in a group at a lower lr: its freeze leaves the group empty, which stays
    (the scheduler's per-group lists keep their places)."""
    def setup():
        model = _model()
        first = {id(p) for p in model[0].parameters()}
        optimizer = torch.optim.Adam([{"params": list(model[0].parameters()), "lr": 0.001},
                                      {"params": [p for p in model.parameters() if id(p) not in first]}], lr=0.01)
        scheduler = L.LambdaLR(optimizer, [lambda k: 0.9 ** k, lambda k: 1 - k / 30])
        freezer = Freezer(model, optimizer, _policy(method), T, cooldown=cooldown)
        freezer.attach_scheduler(scheduler)
        return model, optimizer, freezer, scheduler

    model, optimizer, freezer, scheduler = setup()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _train(model, optimizer, freezer, range(T), scheduler)
    assert 0 in freezer.frozen
    assert any(not g["params"] for g in optimizer.param_groups)
    optimizer.state_dict()
    assert _resumed_equals_uninterrupted(setup, _train)


# -- LR schedulers --------------------------------------------------------------------------------
SCHEDULERS = {
    "onecycle": lambda o: L.OneCycleLR(o, max_lr=[0.1, 0.2], total_steps=T),
    "lambda": lambda o: L.LambdaLR(o, [lambda k: 1 - k / 20, lambda k: 0.5 ** (k // 5)]),
    "sequential": lambda o: L.SequentialLR(o, [L.LinearLR(o, 0.1, 1.0, total_iters=4), L.CosineAnnealingLR(o, T - 4)],
                                           milestones=[4]),
    "plateau": lambda o: L.ReduceLROnPlateau(o, factor=0.5, patience=1),
    "warm-restarts": lambda o: L.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2),
}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@pytest.mark.parametrize("method,cooldown", [("freezeout", 0), ("linear", 3)])
def test_an_attached_scheduler_gives_each_unit_its_groups_lr_times_the_units_scale(name, method, cooldown):
    def setup():
        model = _model()
        optimizer = torch.optim.SGD(_decay_groups(model, lr=0.1), lr=0.1, momentum=0.9)
        scheduler = SCHEDULERS[name](optimizer)  # before the Freezer, on the groups the user made
        freezer = Freezer(model, optimizer, _policy(method), T, cooldown=cooldown)
        freezer.attach_scheduler(scheduler)
        return model, optimizer, freezer, scheduler

    model, optimizer, freezer, scheduler = setup()
    twin = torch.optim.SGD([{**{k: v for k, v in g.items() if k != "params"}, "params": [torch.zeros(1)]}
                            for g in _decay_groups(_model(), lr=0.1)], lr=0.1, momentum=0.9)
    twin_scheduler = SCHEDULERS[name](twin)  # the same schedule on the unsplit groups
    for i in range(T - 1):
        _train(model, optimizer, freezer, [i], scheduler)
        twin.step()
        twin_scheduler.step(1.0) if name == "plateau" else twin_scheduler.step()
        if cooldown:
            scales = [0.0 if u in freezer.frozen else 1.0 for u in range(len(freezer.units))]
            for u, c in freezer.cooling.items():
                scales[u] = cooldown_scale(freezer.step_count - c.decided_step, cooldown)
        else:
            scales = freezer.policy.lr_scales(freezer.progress)
        for g in optimizer.param_groups:
            want = twin.param_groups[g["frostline_group"]]
            if g["params"]:
                assert math.isclose(g["lr"], want["lr"] * scales[g["frostline_unit"]], rel_tol=1e-9, abs_tol=1e-15)
            assert g["momentum"] == want["momentum"] and g["weight_decay"] == want["weight_decay"]
    assert freezer.frozen
    assert _resumed_equals_uninterrupted(setup, _train)


@pytest.mark.parametrize("name", ["lambda", "sequential", "warm-restarts"])
def test_a_scheduler_left_unattached_is_said_at_the_optimizer_step_before_it_fails(name):
    """Split groups and a scheduler with a list per original group: torch's strict zip fails at the
    scheduler's next step, before freezer.step() could notice the lrs changing. The optimizer step
    just before says what to do."""
    model = _model()
    optimizer = torch.optim.SGD(_decay_groups(model, lr=0.1), lr=0.1)
    scheduler = SCHEDULERS[name](optimizer)
    freezer = Freezer(model, optimizer, frostline.FreezeOut(t_0=0.4), T)
    x, y = _batch(0)
    nn.functional.cross_entropy(model(x), y).backward()  # the first forward splits the groups per unit
    assert len(optimizer.param_groups) == 2 * len(freezer.units)
    with pytest.warns(UserWarning, match=r"not attached.*freezer\.attach_scheduler\(scheduler\)") as record:
        optimizer.step()
    assert len(record) == 1
    with pytest.raises(ValueError, match="zip"):  # torch's own failure follows (SequentialLR's at its milestone)
        for _ in range(T):
            scheduler.step()


def test_a_scheduler_that_is_attached_or_needs_no_attaching_is_not_warned_about():
    for method, attach in [("freezeout", True), ("linear", False), ("autofreeze", False)]:
        model = _model()
        optimizer = torch.optim.SGD(_decay_groups(model, lr=0.1), lr=0.1)
        scheduler = SCHEDULERS["lambda"](optimizer)
        freezer = Freezer(model, optimizer, _policy(method), T)  # linear, autofreeze: the user's groups as made
        if attach:
            freezer.attach_scheduler(scheduler)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _train(model, optimizer, freezer, range(8), scheduler)


def test_a_step_scheduler_left_unattached_is_warned_about_once():
    model = _model()
    optimizer = torch.optim.SGD(_decay_groups(model, lr=0.1), lr=0.1)
    scheduler = L.StepLR(optimizer, 2, 0.5)  # no list per group: it would run, without the per-unit scales
    freezer = Freezer(model, optimizer, frostline.FreezeOut(t_0=0.4), T)
    with pytest.warns(UserWarning, match="attach_scheduler") as record:
        _train(model, optimizer, freezer, range(8), scheduler)
    assert len([w for w in record if "attach_scheduler" in str(w.message)]) == 1


# -- optimizers -----------------------------------------------------------------------------------
OPTIMIZERS = {
    "adamw-amsgrad": lambda g: torch.optim.AdamW(g, lr=0.01, amsgrad=True),
    "sgd-nesterov": lambda g: torch.optim.SGD(g, lr=0.05, momentum=0.9, nesterov=True),
    "adam-foreach": lambda g: torch.optim.Adam(g, lr=0.01, foreach=True),
    "adam-fused": lambda g: torch.optim.Adam(g, lr=0.01, fused=True),
    "adagrad": lambda g: torch.optim.Adagrad(g, lr=0.05, initial_accumulator_value=0.1),
    "rmsprop": lambda g: torch.optim.RMSprop(g, lr=0.01, momentum=0.9, centered=True),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_optimizer_trains_the_rest_as_if_the_units_were_frozen_by_hand(name):
    def setup(freezer=True):
        model = _model()
        optimizer = OPTIMIZERS[name](_decay_groups(model))
        return model, optimizer, Freezer(model, optimizer, FreezeList(5, [0, 1]), T) if freezer else None, None

    model, optimizer, freezer, _ = setup()
    _train(model, optimizer, freezer, range(T))
    assert freezer.frozen == {0, 1}
    optimizer.state_dict()
    by_hand, by_hand_optimizer, _, _ = setup(freezer=False)
    named = dict(by_hand.named_parameters())
    _train(by_hand, by_hand_optimizer, None, range(T),
           hand_frozen=[named[n] for u in (0, 1) for n in freezer.units[u].param_names])
    assert _same(model, by_hand)  # bitwise: the frozen ones still since step 5, the rest as trained by hand
    assert _resumed_equals_uninterrupted(setup, _train)


# -- accumulation, clipping, zero_grad(set_to_none=False), mixed precision --------------------------
def _loop(model, optimizer, freezer, steps, scheduler=None, hand_frozen=None, *, accumulate=1, clip=None,
          set_to_none=True, autocast=False, scaler=None, overflow_at=()):
    for i in steps:
        for k in range(accumulate):
            x, y = _batch(10 * i + k, next(model.parameters()).dtype)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                out = model(x)
            loss = nn.functional.cross_entropy(out.float(), y) / accumulate
            if i in overflow_at:
                loss = loss * float("inf")
            (scaler.scale(loss) if scaler is not None else loss).backward()
        if scaler is not None:
            scaler.unscale_(optimizer)
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=set_to_none)
        if freezer is not None:
            freezer.step()  # once per optimizer step, skipped ones too
            _assert_frozen_out(optimizer, freezer)
        elif i + 1 == 5:
            for p in hand_frozen:
                p.requires_grad_(False)
                p.grad = None


LOOPS = {
    "accumulate-clip-keep-grads": dict(accumulate=3, clip=0.5, set_to_none=False),
    "autocast-bf16": dict(autocast=True, clip=1.0),
    "bf16-model": dict(dtype=torch.bfloat16),
    "grad-scaler-overflows": dict(scaler=True, overflow_at=(2, 7)),
}


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_loops_with_accumulation_clipping_and_mixed_precision_train_the_rest_as_by_hand(name):
    options = dict(LOOPS[name])
    dtype = options.pop("dtype", torch.float32)
    use_scaler = options.pop("scaler", False)
    scalers = []

    def setup(freezer=True):
        model = _model(dtype)
        optimizer = torch.optim.AdamW(_decay_groups(model), lr=0.01)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8) if use_scaler else None
        scalers.append(scaler)
        return model, optimizer, Freezer(model, optimizer, FreezeList(5, [0, 1]), T) if freezer else None, None

    def loop(model, optimizer, freezer, steps, scheduler=None, hand_frozen=None):
        _loop(model, optimizer, freezer, steps, hand_frozen=hand_frozen, scaler=scalers[-1], **options)

    model, optimizer, freezer, _ = setup()
    loop(model, optimizer, freezer, range(T))
    assert freezer.frozen == {0, 1} and freezer.step_count == T
    if use_scaler:
        assert freezer.timeline[0].step == 5  # the two skipped steps counted like the others
    by_hand, by_hand_optimizer, _, _ = setup(freezer=False)
    named = dict(by_hand.named_parameters())
    loop(by_hand, by_hand_optimizer, None, range(T),
         hand_frozen=[named[n] for u in (0, 1) for n in freezer.units[u].param_names])
    assert _same(model, by_hand)
    if not use_scaler:  # (the scaler's own state is the user's to save; the rest resumes from the Freezer's)
        assert _resumed_equals_uninterrupted(setup, loop)


@pytest.mark.parametrize("method", ["freezeout", "autofreeze"])
def test_a_grad_scalers_skipped_steps_keep_the_clock_and_resume_exactly(method):
    def setup():
        model = _model()
        optimizer = torch.optim.AdamW(_decay_groups(model), lr=0.01)
        return model, optimizer, Freezer(model, optimizer, _policy(method), T), \
            torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)

    def loop(model, optimizer, freezer, steps, scaler):
        _loop(model, optimizer, freezer, steps, scaler=scaler, overflow_at=(2, 9))

    model, optimizer, freezer, scaler = setup()
    loop(model, optimizer, freezer, range(T), scaler)
    assert freezer.step_count == T and freezer.frozen
    assert _resumed_equals_uninterrupted(setup, loop)  # the scaler saved and loaded in the scheduler's place


# -- tied weights, a second optimizer --------------------------------------------------------------
class TinyDecoder(nn.Module):
    """Token embedding tied to the output layer, as GPT-2's."""

    def __init__(self):
        super().__init__()
        self.tok, self.pos = nn.Embedding(50, 16), nn.Embedding(8, 16)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(16, 16), nn.LayerNorm(16), nn.GELU()) for _ in range(3))
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, ids):
        h = self.tok(ids) + self.pos(torch.arange(ids.shape[1]))
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def _lm_train(model, optimizers, freezer, steps, scheduler=None, hand_frozen=None):
    optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
    for i in steps:
        ids = torch.randint(0, 50, (4, 8), generator=torch.Generator().manual_seed(i))
        loss = nn.functional.cross_entropy(model(ids)[:, :-1].reshape(-1, 50), ids[:, 1:].reshape(-1))
        for o in optimizers:
            o.zero_grad()
        loss.backward()
        for o in optimizers:
            o.step()
        if freezer is not None:
            freezer.step()
            _assert_frozen_out(optimizers[0], freezer)
        elif i + 1 == 5:
            for p in hand_frozen:
                p.requires_grad_(False)
                p.grad = None


def test_a_tied_embedding_trains_with_the_head_while_the_blocks_before_it_freeze():
    def setup(freezer=True):
        torch.manual_seed(0)
        model = TinyDecoder()
        optimizer = torch.optim.AdamW(_decay_groups(model), lr=0.01)
        return model, optimizer, Freezer(model, optimizer, FreezeList(5, [0, 1, 2]), T) if freezer else None, None

    model, optimizer, freezer, _ = setup()
    tied = model.tok.weight.detach().clone()
    _lm_train(model, optimizer, freezer, range(T))
    assert [u.name for u in freezer.units] == ["pos", "blocks.0.0", "blocks.1.0", "blocks.2.0", "head"]
    assert freezer.frozen == {0, 1, 2}
    assert model.tok.weight.requires_grad and model.tok.weight in optimizer.state  # the head's: still trains
    assert not torch.equal(model.tok.weight, tied)
    by_hand, by_hand_optimizer, _, _ = setup(freezer=False)
    named = dict(by_hand.named_parameters())
    _lm_train(by_hand, by_hand_optimizer, None, range(T),
              hand_frozen=[named[n] for u in (0, 1, 2) for n in freezer.units[u].param_names])
    assert _same(model, by_hand)
    assert _resumed_equals_uninterrupted(setup, _lm_train)


@pytest.mark.parametrize("method", ["at", "freezeout"])
def test_a_unit_trained_by_a_second_optimizer_is_frozen_and_said_so(method):
    """The embeddings in an optimizer of their own: the Freezer gets the other one. It cannot take
    them out of theirs, but without gradients that one skips them; the warning says so (and that a
    per-unit learning rate cannot reach them), not only that the optimizer may be a mistake."""
    def setup():
        torch.manual_seed(0)
        model = TinyDecoder()
        embeddings = [model.tok.weight, model.pos.weight]
        optimizer = torch.optim.AdamW([p for p in model.parameters() if all(p is not e for e in embeddings)], lr=0.01)
        second = torch.optim.Adam(embeddings, lr=0.005)
        policy = FreezeList(5, [0, 1]) if method == "at" else frostline.FreezeOut(t_0=0.4)
        return model, [optimizer, second], Freezer(model, optimizer, policy, T), None

    with pytest.warns(UserWarning, match=r"unit\(s\) \['pos'\].*another optimizer trains them, freezing still stops "
                                         r"them") as record:
        model, optimizers, freezer, _ = setup()
        _lm_train(model, optimizers, freezer, range(3))
    said = next(str(w.message) for w in record if "another optimizer" in str(w.message))
    assert ("'freezeout' cannot lower their learning rate" in said) == (method == "freezeout")
    _lm_train(model, optimizers, freezer, range(3, T - 2))
    assert 0 in freezer.frozen
    pos = model.pos.weight.detach().clone()
    _lm_train(model, optimizers, freezer, range(T - 2, T))
    assert torch.equal(model.pos.weight, pos) and model.pos.weight.grad is None

    def resumable():  # both optimizers saved and loaded, the Freezer's one after the Freezer
        model, optimizers, freezer, _ = setup()
        return model, _Both(optimizers), freezer, None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _resumed_equals_uninterrupted(resumable, lambda m, o, f, s, sch=None: _lm_train(m, o.all, f, s))


class _Both:
    """Two optimizers saved and loaded as one (the Freezer's first)."""

    def __init__(self, optimizers):
        self.all = optimizers

    def state_dict(self):
        return [o.state_dict() for o in self.all]

    def load_state_dict(self, states):
        for o, s in zip(self.all, states):
            o.load_state_dict(s)


def test_a_second_freezer_on_the_same_optimizer_takes_over_the_check_for_an_unattached_scheduler():
    """A second fit on the same optimizer (a Trainer's train() run again) whose first Freezer was not
    closed: the scheduler moves to the new Freezer, and the old one must not call it unattached."""
    model = _model()
    optimizer = torch.optim.SGD(_decay_groups(model, lr=0.1), lr=0.1)
    scheduler = SCHEDULERS["lambda"](optimizer)
    first = Freezer(model, optimizer, frostline.FreezeOut(t_0=0.9), T)
    first.attach_scheduler(scheduler)
    _train(model, optimizer, first, range(2), scheduler)
    second = Freezer(model, optimizer, frostline.FreezeOut(t_0=0.9), T)
    second.attach_scheduler(scheduler)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _train(model, optimizer, second, range(2, 6), scheduler)
