"""A Lightning user adds FrostlineCallback to an existing Trainer: the Trainer options people use
(accumulation, clipping, bf16, mid-epoch validation, limited batches, max_steps), schedulers from
``configure_optimizers`` with each policy, manual optimization, a loss module with parameters,
checkpoints and a second fit, and the cache over a dataset of (x, y) without indices. Tiny MLPs on
CPU; every fit checks that frozen units stop bit for bit and leave the optimizer."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

L = pytest.importorskip("lightning.pytorch")

from frostline import ConfigError, FrostlineError, ModelError  # noqa: E402
from frostline.errors import CheckpointError  # noqa: E402
from frostline.integrations.lightning import FrostlineCallback  # noqa: E402
from test_integration_lightning import trainer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def dataset(n=256, seed=1):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 16, generator=g), torch.randint(0, 4, (n,), generator=g))


class Temperature(nn.Module):
    """A loss with a parameter of its own (a learned temperature)."""

    def __init__(self):
        super().__init__()
        self.log_t = nn.Parameter(torch.zeros(()))

    def forward(self, logits, y):
        return F.cross_entropy(logits * self.log_t.exp(), y)


class MLP(L.LightningModule):
    """``self.net`` holds the network: blocks of Linear, BatchNorm, ReLU, Dropout, then a head.
    ``dropout=0`` for the runs that resume: Lightning does not checkpoint the RNG dropout draws from."""

    def __init__(self, sched=None, loss_params=False, dropout=0.1):
        super().__init__()
        torch.manual_seed(0)
        block = lambda i, o: nn.Sequential(nn.Linear(i, o), nn.BatchNorm1d(o), nn.ReLU(),  # noqa: E731
                                           nn.Dropout(dropout) if dropout else nn.Identity())
        self.net = nn.Sequential(block(16, 32), block(32, 32), block(32, 32), nn.Linear(32, 4))
        self.loss_fn = Temperature() if loss_params else None
        self.sched = sched

    def forward(self, x):
        return self.net(x)

    def loss(self, batch):
        x, y = batch
        out = self.net(x)
        return self.loss_fn(out, y) if self.loss_fn is not None else F.cross_entropy(out, y)

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.loss(batch))

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self.loss(batch))

    def predict_step(self, batch, batch_idx):
        return self.net(batch[0])

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)
        if self.sched == "step":
            cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(self.trainer.estimated_stepping_batches))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}
        if self.sched == "epoch":
            return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, 0.5),
                                                       "interval": "epoch"}}
        if self.sched == "plateau":
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": plateau, "monitor": "val_loss"}}
        return opt


class Manual(MLP):
    """Manual optimization: one optimizer step every ``every`` batches (with the user's own clipping)."""

    def __init__(self, every=1, backward="manual", **kw):
        super().__init__(**kw)
        self.automatic_optimization = False
        self.every, self.backward_with = every, backward

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        loss = self.loss(batch) / self.every
        self.manual_backward(loss) if self.backward_with == "manual" else loss.backward()
        if (batch_idx + 1) % self.every == 0:
            self.clip_gradients(opt, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
            opt.step()
            opt.zero_grad()
            if self.sched == "step":
                self.lr_schedulers().step()
        return loss


class Probe(L.Callback):
    """After FrostlineCallback: frozen units out of the optimizer, without gradients, unchanged bit
    for bit (parameters and BatchNorm statistics), and in eval mode whenever a batch trains."""

    def __init__(self, fl: FrostlineCallback):
        self.fl, self.snap, self.optimizer_steps, self.checked = fl, {}, 0, 0

    def _frozen(self):
        f = self.fl.freezer
        return [] if f is None or not f.ready else [f.units[i] for i in sorted(f.frozen)]

    def on_before_backward(self, trainer, pl_module, loss):
        for unit in self._frozen():
            assert not any(sub.training for m in unit.modules for sub in m.modules()), unit.name

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.optimizer_steps += 1
        in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
        for unit in self._frozen():
            for p in unit.params:
                assert p.grad is None and not p.requires_grad and id(p) not in in_optimizer, unit.name
                assert p not in optimizer.state, unit.name

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        names = {id(t): n for n, t in [*pl_module.named_parameters(), *pl_module.named_buffers()]}
        for unit in self._frozen():
            for t in [*unit.params, *(b for m in unit.modules for b in m.buffers())]:
                n = names[id(t)]
                if n in self.snap:
                    assert torch.equal(self.snap[n], t), f"frozen {n} changed"
                    self.checked += 1
                else:
                    self.snap[n] = t.detach().clone()


def make_trainer(callbacks, **kw):
    kw.setdefault("max_epochs", 3)
    return trainer(callbacks, **kw)


def fit(cb, model=None, val=False, ckpt_path=None, extra=(), shuffle=False, **kw):
    """One fit with a Probe after the callback; (model, trainer, probe, frostline's warnings)."""
    model = model if model is not None else MLP()
    probe = Probe(cb)
    t = make_trainer([cb, probe, *extra], **kw)
    train = DataLoader(dataset(), batch_size=32, shuffle=shuffle,
                       generator=torch.Generator().manual_seed(0) if shuffle else None)  # 8 batches an epoch
    loaders = (train, DataLoader(dataset(64, seed=2), batch_size=32)) if val else (train,)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        t.fit(model, *loaders, ckpt_path=ckpt_path)
    return model, t, probe, [str(w.message) for w in said if str(w.message).startswith("frostline")]


def timeline(cb):
    return [(e.index, e.step) for e in cb.freezer.timeline]


def assert_same_params(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for n in sa:
        assert torch.equal(sa[n], sb[n]), n


LINEAR = {"freeze_start": 0.1}


@pytest.mark.parametrize("options, steps", [
    ({"accumulate_grad_batches": 3}, 9),  # 8 batches an epoch -> 3 optimizer steps
    ({"gradient_clip_val": 0.1, "accumulate_grad_batches": 2}, 12),
    ({"precision": "bf16-mixed"}, 24),
    ({"val_check_interval": 3}, 24),  # validation inside the epoch, between freezes
    ({"val_check_interval": 0.5, "check_val_every_n_epoch": 1}, 24),
    ({"check_val_every_n_epoch": 2}, 24),
    ({"limit_train_batches": 5}, 15),
    ({"limit_train_batches": 0.5}, 12),
    ({"max_epochs": -1, "max_steps": 20}, 20),
    ({"max_epochs": 3, "max_steps": 10}, 10),
    ({"max_epochs": 2, "max_steps": 100}, 16),
], ids=lambda v: str(v) if isinstance(v, dict) else None)
def test_trainer_options_keep_frozen_units_frozen_and_count_optimizer_steps(options, steps):
    cb = FrostlineCallback("linear", policy_kwargs=LINEAR)
    _, t, probe, said = fit(cb, val=True, **options)
    f = cb.freezer
    assert t.global_step == f.step_count == f.total_steps == probe.optimizer_steps == steps
    assert sorted(f.frozen) == [0, 1, 2] and timeline(cb)[-1] == (2, steps) and probe.checked > 0
    assert all(p.requires_grad for p in f.units[-1].params) and not said


@pytest.mark.parametrize("policy, kwargs, cooldown", [
    ("linear", LINEAR, 0), ("linear", LINEAR, 3), ("freezeout", {"t_0": 0.5}, 0),
    ("autofreeze", {"percentile": 80, "interval_steps": 3}, 0),
    ("autofreeze", {"percentile": 80, "interval_steps": 3}, 3),
], ids=["linear", "linear-cooldown", "freezeout", "autofreeze", "autofreeze-cooldown"])
@pytest.mark.parametrize("sched", ["step", "epoch", "plateau"])
def test_schedulers_from_configure_optimizers_resume_exactly(tmp_path, policy, kwargs, cooldown, sched):
    """A checkpoint written at an epoch's end, after a freeze: the resumed run ends bit for bit where
    the uninterrupted one does, with the same freezes and the same per-group learning rates.
    ReduceLROnPlateau on val_loss trains with every policy, but is not resumed: Lightning writes the
    epoch's checkpoint before the plateau scheduler steps, so a resume misses that step with or
    without frostline."""
    def run(**kw):
        cb = FrostlineCallback(policy, policy_kwargs=kwargs, cooldown=cooldown)
        model, t, probe, said = fit(cb, MLP(sched=sched, dropout=0), val=True, max_epochs=4, **kw)
        assert probe.checked > 0
        return model, t, cb, said

    if sched == "plateau":
        _, t, cb, said = run()
        assert cb.freezer.frozen and not said
        assert max(g["lr"] for g in t.optimizers[0].param_groups) < 0.05  # the plateau lowered it
        return
    checkpoints = L.callbacks.ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1)
    full, t, cb, said = run(extra=[checkpoints], enable_checkpointing=True)
    assert cb.freezer.frozen and not said
    resumed, t2, cb2, said = run(ckpt_path=str(tmp_path / "epoch=1-step=16.ckpt"))
    assert 16 >= min(s for _, s in timeline(cb))  # something froze before the checkpoint
    assert timeline(cb2) == timeline(cb) and not said
    assert [g["lr"] for g in t2.optimizers[0].param_groups] == [g["lr"] for g in t.optimizers[0].param_groups]
    assert_same_params(full, resumed)


def test_smartfrz_counts_epochs_with_an_epoch_scheduler():
    cb = FrostlineCallback("smartfrz", policy_kwargs={"threshold": 1e-3, "window": 2, "snapshots_per_epoch": 4})
    _, t, probe, said = fit(cb, MLP(sched="epoch"), max_epochs=4, accumulate_grad_batches=2)
    assert cb.freezer.policy.clock.steps_per_epoch == 4 and cb.freezer.step_count == t.global_step == 16
    assert cb.freezer.frozen and not said


def test_manual_optimization_one_step_a_batch_freezes_and_resumes(tmp_path):
    """automatic_optimization=False with one optimizer step a batch: the trainer's global step is
    the optimizer's, so freezing follows the same timeline as automatic optimization, FreezeOut's
    per-unit learning rates apply, and a resume is exact."""
    auto = FrostlineCallback("freezeout")
    fit(auto, MLP(sched="step", dropout=0))
    checkpoints = L.callbacks.ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1)
    cb = FrostlineCallback("freezeout")
    full, t, probe, said = fit(cb, Manual(sched="step", dropout=0), extra=[checkpoints], enable_checkpointing=True)
    assert not said and probe.optimizer_steps == t.global_step == cb.freezer.step_count == 24
    assert timeline(cb) == timeline(auto) and len(timeline(cb)) == 3 and probe.checked > 0
    assert len(t.optimizers[0].param_groups) == 4  # per-unit groups
    cb2 = FrostlineCallback("freezeout")
    resumed, _, _, said = fit(cb2, Manual(sched="step", dropout=0), ckpt_path=str(tmp_path / "epoch=0-step=8.ckpt"))
    assert not said and timeline(cb2) == timeline(cb)
    assert_same_params(full, resumed)


def test_manual_optimization_stepping_every_other_batch_is_told_to_give_max_steps():
    """Lightning counts a manual run as one optimizer step a batch: a training_step that steps every
    other batch gets a policy planned for twice its steps (linear froze one unit, at the very end,
    silently). One warning says so; with max_steps the schedule fits the run and nothing is said."""
    cb = FrostlineCallback("linear", policy_kwargs=LINEAR)
    _, t, _, said = fit(cb, Manual(every=2))
    assert t.global_step == cb.freezer.step_count == 12 and cb.freezer.total_steps == 24
    assert len(said) == 1 and "manual optimization" in said[0] and "max_steps" in said[0], said
    cb = FrostlineCallback("linear", policy_kwargs=LINEAR)
    _, t, probe, said = fit(cb, Manual(every=2), max_epochs=-1, max_steps=12)
    assert not said and t.global_step == cb.freezer.total_steps == 12 and probe.checked > 0
    assert sorted(cb.freezer.frozen) == [0, 1, 2] and timeline(cb)[-1] == (2, 12)


def test_manual_optimization_with_loss_backward_says_to_call_manual_backward():
    """The units are taken when the first backward reaches the callback: loss.backward() never does.
    The error says what to do (it used to say that no training forward was traced); named units
    need no trace and train as usual."""
    with pytest.raises(FrostlineError, match=r"self\.manual_backward\(loss\)"):
        fit(FrostlineCallback("linear", policy_kwargs=LINEAR), Manual(backward="plain"))
    cb = FrostlineCallback("linear", policy_kwargs=LINEAR, units=["net.0", "net.1", "net.2", "net.3"])
    _, t, probe, said = fit(cb, Manual(backward="plain"))
    assert not said and sorted(cb.freezer.frozen) == [0, 1, 2] and probe.checked > 0


def test_a_loss_module_with_parameters():
    """A loss with a parameter runs after the network, so a traced run makes it the last unit, the
    head (the network's own head then freezes); head_units=2 or a named unit holding both keeps
    them training; named units that leave it out are refused clearly."""
    cb = FrostlineCallback("linear", policy_kwargs=LINEAR)
    model, _, _, _ = fit(cb, MLP(loss_params=True))
    assert cb.freezer.unit_names[-1] == "loss_fn" and not model.net[3].weight.requires_grad
    for kw in ({"head_units": 2}, {"units": ["net.0", "net.1", "net.2", ["net.3", "loss_fn"]]}):
        cb = FrostlineCallback("linear", policy_kwargs=LINEAR, **kw)
        model, _, probe, said = fit(cb, MLP(loss_params=True))
        assert sorted(cb.freezer.frozen) == [0, 1, 2] and not said and probe.checked > 0
        assert model.net[3].weight.requires_grad and model.loss_fn.log_t.requires_grad
        assert not torch.equal(model.loss_fn.log_t, torch.zeros(()))
    with pytest.raises(ModelError, match=r"\['loss_fn'\] ran with trainable parameters but belong to no unit"):
        fit(FrostlineCallback("linear", units=["net.0", "net.1", "net.2", "net.3"]), MLP(loss_params=True))


def test_checkpoints_a_second_fit_and_evaluation_after_fit(tmp_path):
    """save_last with every_n_train_steps; validate/test/predict after fit leave the frozen model as
    it is; a second fit on it says that the frozen units stay frozen; resuming into a longer run is
    refused with what to do."""
    checkpoints = L.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=5, save_top_k=-1)
    cb = FrostlineCallback("linear", policy_kwargs={"freeze_start": 0.0, "freeze_end": 0.5})
    model, t, _, said = fit(cb, val=True, extra=[checkpoints], enable_checkpointing=True)
    assert not said and sorted(cb.freezer.frozen) == [0, 1, 2]
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    (state,) = [v for k, v in saved["callbacks"].items() if k.startswith("FrostlineCallback")]
    assert state["freezer"]["step"] == saved["global_step"] == 20

    before = {n: v.clone() for n, v in model.state_dict().items()}
    loader = DataLoader(dataset(64, seed=2), batch_size=32)
    (val,) = t.validate(model, loader, verbose=False)
    (test,) = t.test(model, loader, verbose=False)
    assert val["val_loss"] == test["test_loss"] and len(t.predict(model, loader)) == 2
    for n, v in model.state_dict().items():
        assert torch.equal(before[n], v), n

    again = FrostlineCallback("linear", policy_kwargs=LINEAR)
    _, _, _, said = fit(again, model, max_epochs=1)
    assert any("were frozen by an earlier Freezer" in s for s in said), said
    assert again.freezer.unit_names == ["net.3"]
    for n in ("net.0.0.weight", "net.0.1.running_mean"):
        assert torch.equal(before[n], model.state_dict()[n]), n

    with pytest.raises(CheckpointError, match="total_steps=24, this one 40"):
        fit(FrostlineCallback("linear", policy_kwargs={"freeze_start": 0.0, "freeze_end": 0.5}),
            ckpt_path=str(tmp_path / "last.ckpt"), max_epochs=5)


@pytest.mark.parametrize("options", [{"val_check_interval": 3}, {"precision": "bf16-mixed"},
                                     {"accumulate_grad_batches": 2}, {"limit_train_batches": 5}], ids=str)
def test_the_cache_keys_xy_samples_by_their_inputs(options):
    """A TensorDataset of (x, y), no indices, shuffled: the cache replays by the inputs' content,
    validation inside the epoch is not served by it, and the run ends as the run without it."""
    runs = {}
    for cache in ("off", "auto", "memory"):
        cb = FrostlineCallback("linear", policy_kwargs={"freeze_start": 0.0, "freeze_level": 0.5, "freeze_end": 0.25},
                               cache=cache)
        model, _, _, said = fit(cb, val=True, shuffle=True, **options)
        assert not said and cb.freezer.frozen_prefix == 1
        runs[cache] = model
        if cache != "off":
            assert cb.cached.cache.stats["hits"] > 0
    assert_same_params(runs["off"], runs["auto"])
    assert_same_params(runs["off"], runs["memory"])


def test_the_cache_says_when_the_training_data_is_several_loaders():
    class Two(MLP):
        def training_step(self, batch, batch_idx):
            return self.loss(batch["a"])

    loaders = {"a": DataLoader(dataset(), batch_size=32), "b": DataLoader(dataset(), batch_size=32)}
    with pytest.raises(ConfigError, match="not one DataLoader"):
        make_trainer([FrostlineCallback("linear", cache="memory")]).fit(Two(), loaders)
    cb = FrostlineCallback("linear", policy_kwargs=LINEAR, cache="auto")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        make_trainer([cb, Probe(cb)]).fit(Two(), loaders)
    said = [str(w.message) for w in said if str(w.message).startswith("frostline")]
    assert len(said) == 1 and "not one DataLoader" in said[0] and cb.freezer.frozen
