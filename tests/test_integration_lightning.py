"""FrostlineCallback inside a real Lightning Trainer: real Fashion-MNIST, a zoo ResNet, CPU."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

L = pytest.importorskip("lightning.pytorch")

from frostline import ConfigError, FreezeOut, LinearFreezing, Progress  # noqa: E402
from frostline.integrations.lightning import FrostlineCallback  # noqa: E402
from frostline.lab.zoo import create_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BATCH = 64  # fmnist fixture: 512 training images -> 8 batches an epoch


class Net(L.LightningModule):
    def __init__(self, scheduler: bool = False, lr: float = 0.05, via_forward: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.net = create_model("resnet", width=8, depth=1)  # units: stem, 3 blocks, head
        self.scheduler = scheduler
        self.lr = lr
        self.via_forward = via_forward  # training_step calls self(x) rather than self.net(x)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x) if self.via_forward else self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, weight_decay=5e-4)
        if not self.scheduler:
            return opt
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}


class Probe(L.Callback):
    """Runs after FrostlineCallback and checks what freezing must mean at every step."""

    def __init__(self, frostline: FrostlineCallback):
        self.fl = frostline
        self.snap: dict[str, torch.Tensor] = {}
        self.buffer_snap: dict[str, torch.Tensor] = {}
        self.optimizer_steps = 0
        self.bn_checked = 0

    def _frozen_units(self):
        f = self.fl.freezer
        return [] if f is None or not f.ready else [f.units[i] for i in sorted(f.frozen)]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        assert pl_module.training

    def on_before_backward(self, trainer, pl_module, loss):
        for unit in self._frozen_units():  # whatever mode Lightning set (epoch start, after val), they ran in eval
            for m in unit.modules:
                for sub in m.modules():
                    assert not sub.training, f"{unit.name} ran in train mode"
                    self.bn_checked += isinstance(sub, nn.BatchNorm2d)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.optimizer_steps += 1
        in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
        for unit in self._frozen_units():
            for p in unit.params:
                assert p.grad is None and not p.requires_grad
                assert id(p) not in in_optimizer and p not in optimizer.state

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        names = dict((id(p), n) for n, p in pl_module.named_parameters())
        buffer_names = dict((id(b), n) for n, b in pl_module.named_buffers())
        for unit in self._frozen_units():
            for p in unit.params:
                n = names[id(p)]
                if n in self.snap:
                    assert torch.equal(self.snap[n], p), f"frozen {n} changed"
                else:
                    self.snap[n] = p.detach().clone()
            for b in (b for m in unit.modules for b in m.buffers()):  # BatchNorm statistics stay put too
                n = buffer_names[id(b)]
                if n in self.buffer_snap:
                    assert torch.equal(self.buffer_snap[n], b), f"frozen buffer {n} changed"
                else:
                    self.buffer_snap[n] = b.detach().clone()


def trainer(callbacks, **kw):
    kw.setdefault("max_epochs", 2)
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=kw.pop("enable_checkpointing", False),
                     num_sanity_val_steps=0, callbacks=callbacks, deterministic=True, **kw)


def loaders(data, val=False):
    train = DataLoader(data.train, batch_size=BATCH, shuffle=False)
    return (train, DataLoader(data.val, batch_size=BATCH)) if val else (train,)


def expected_timeline(policy, unit_names, total):
    policy.bind(unit_names)
    frozen, events = set(), []
    for step in range(1, total + 1):
        new = sorted(i for i in policy.decide(Progress(step, total)) if i not in frozen and i != len(unit_names) - 1)
        frozen.update(new)
        events += [(i, step) for i in new]
    return events


@pytest.mark.integration
@pytest.mark.parametrize("via_forward", [False, True], ids=["net-called", "forward-called"])
def test_linear_freezing_acts_at_the_policy_steps(fmnist, via_forward):
    cb = FrostlineCallback(policy="linear", policy_kwargs={"freeze_start": 0.25})
    probe = Probe(cb)
    t = trainer([cb, probe], limit_val_batches=2)
    t.fit(Net(via_forward=via_forward), *loaders(fmnist, val=True))
    f = cb.freezer
    assert f.unit_names == ["net.stem", "net.block1_1", "net.block2_1", "net.block3_1", "net.head"]
    assert f.total_steps == t.global_step == f.step_count == probe.optimizer_steps == 16
    assert [(e.index, e.step) for e in f.timeline] == expected_timeline(LinearFreezing(0.25), f.unit_names, 16)
    assert cb.frozen_units == f.unit_names[:-1]  # everything but the head by the end
    assert all(p.requires_grad for p in f.units[-1].params)
    assert probe.bn_checked > 0 and len(probe.snap) == sum(len(u.params) for u in f.units[:-1])
    assert len(probe.buffer_snap) > 0


@pytest.mark.integration
def test_freezeout_with_a_scheduler_and_explicit_units(fmnist):
    units = ["net.stem", "net.block1_1", "net.block2_1", "net.block3_1", "net.head"]
    cb = FrostlineCallback(policy=FreezeOut(t_0=0.5), units=units)
    probe = Probe(cb)
    t = trainer([cb, probe])
    t.fit(Net(scheduler=True), *loaders(fmnist))
    f = cb.freezer
    assert [(e.index, e.step) for e in f.timeline] == expected_timeline(FreezeOut(t_0=0.5), units, 16)
    assert [e.step for e in f.timeline] == [2, 4, 7, 11]  # t_i = .125, .244, .42, .67 of 16 steps
    assert t.optimizers[0].param_groups[-1]["frostline_unit"] == 4  # per-unit groups, head last


@pytest.mark.integration
def test_a_cooldown_delays_each_freeze(fmnist):
    cb = FrostlineCallback(policy="linear", policy_kwargs={"freeze_start": 0.25}, cooldown=2)
    probe = Probe(cb)
    t = trainer([cb, probe])
    t.fit(Net(scheduler=True), *loaders(fmnist))
    f = cb.freezer
    decided = expected_timeline(LinearFreezing(0.25), f.unit_names, 16)
    assert [(e.index, e.decided_step, e.step) for e in f.timeline] == [(i, s, s + 2) for i, s in decided if s + 2 <= 16]
    assert t.optimizers[0].param_groups[-1]["frostline_unit"] == 4  # per-unit groups for the ramps


@pytest.mark.integration
def test_gradient_accumulation_steps_the_freezer_once_per_optimizer_step(fmnist):
    cb = FrostlineCallback(policy="linear", policy_kwargs={"freeze_start": 0.0})
    probe = Probe(cb)
    t = trainer([cb, probe], accumulate_grad_batches=3)  # 8 batches an epoch -> 3 optimizer steps
    t.fit(Net(), *loaders(fmnist))
    f = cb.freezer
    assert probe.optimizer_steps == t.global_step == f.step_count == f.total_steps == 6
    assert [(e.index, e.step) for e in f.timeline] == expected_timeline(LinearFreezing(0.0), f.unit_names, 6)


def _params(module):
    return {n: p.detach().clone() for n, p in module.state_dict().items()}


@pytest.mark.integration
def test_resume_from_a_lightning_checkpoint_after_a_freeze_matches_an_uninterrupted_run(fmnist, tmp_path):
    def run(ckpt_path=None, save=False):
        cb = FrostlineCallback(policy=FreezeOut(t_0=0.5))
        callbacks = [cb]
        if save:
            callbacks.append(L.callbacks.ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1))
        model = Net(scheduler=True)
        t = trainer(callbacks, max_epochs=3, enable_checkpointing=save)
        t.fit(model, *loaders(fmnist), ckpt_path=ckpt_path)
        return model, cb, t

    full, full_cb, _ = run(save=True)
    ckpt = tmp_path / "epoch=1-step=16.ckpt"
    saved = torch.load(ckpt, weights_only=False)
    (state,) = [v for k, v in saved["callbacks"].items() if k.startswith("FrostlineCallback")]
    assert state["freezer"]["frozen"] == [0, 1, 2]  # frozen at steps 3, 6 and 11 of 24
    # saved in the layout configure_optimizers makes: one group holding every parameter
    assert len(saved["optimizer_states"][0]["param_groups"]) == 1
    assert len(saved["optimizer_states"][0]["param_groups"][0]["params"]) == len(list(full.parameters()))

    resumed, cb, t = run(ckpt_path=str(ckpt))
    assert t.global_step == 24 and cb.freezer.step_count == 24
    assert [(e.unit, e.step) for e in cb.freezer.timeline] == [(e.unit, e.step) for e in full_cb.freezer.timeline]
    assert len(cb.freezer.timeline) == 4
    a, b = _params(full), _params(resumed)
    assert a.keys() == b.keys()
    for n in a:  # deterministic CPU run, same data order: bit-identical
        assert torch.equal(a[n], b[n]), n
    la = [g["lr"] for g in t.optimizers[0].param_groups]
    assert la == [g["lr"] for g in full_cb.freezer.optimizer.param_groups]


@pytest.mark.integration
def test_head_units_keep_the_top_block_training_and_resume(fmnist, tmp_path):
    """``head_units=2``: the block below the head trains to the end; a resumed run rebuilds the
    saved units as they are (the head merged once, not twice) and ends as the uninterrupted one."""
    def run(ckpt_path=None, save=False):
        cb = FrostlineCallback(policy="linear", policy_kwargs={"freeze_start": 0.0, "freeze_end": 0.25}, head_units=2)
        callbacks = [cb] + ([L.callbacks.ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1)]
                            if save else [])
        model = Net()
        t = trainer(callbacks, max_epochs=2, enable_checkpointing=save)
        t.fit(model, *loaders(fmnist), ckpt_path=ckpt_path)
        return model, cb

    full, full_cb = run(save=True)
    names = full_cb.freezer.unit_names
    assert names[-1] == "net.block3_1+net.head" and len(full_cb.freezer.frozen) == len(names) - 1
    assert all(p.requires_grad for p in full.net.block3_1.parameters())
    resumed, cb = run(ckpt_path=str(tmp_path / "epoch=0-step=8.ckpt"))
    assert cb.freezer.unit_names == names and cb.freezer.frozen == full_cb.freezer.frozen
    a, b = _params(full), _params(resumed)
    for n in a:
        assert torch.equal(a[n], b[n]), n


@pytest.mark.integration
def test_example_runs_shortened():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "lightning_fashion_mnist.py"), "--max-steps", "4",
         "--train-subset", "256", "--val-size", "64", "--test-subset", "128", "--width", "8", "--depth", "1",
         "--threads", "2", "--cache", "auto"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "test accuracy:" in out.stdout and "froze net.stem" in out.stdout
    assert "replayed from the cache" in out.stdout


DDP_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
import lightning.pytorch as L
from torch.utils.data import DataLoader
from frostline.lab.data import load_dataset
from frostline.integrations.lightning import FrostlineCallback
from test_integration_lightning import Net

out, resume = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
data = load_dataset("fashion-mnist", val_size=64, train_subset=256, test_subset=1, seed=0)
cb = FrostlineCallback(policy="linear", policy_kwargs={{"freeze_start": 0.0}}, cache="auto")  # refused: 2 ranks
model = Net()
seen = {{}}

class Reduced(L.Callback):
    def on_train_end(self, trainer, pl_module):  # before Lightning unwraps DDP
        seen.update(trainer.strategy.model._get_ddp_logging_data())

callbacks = [cb, Reduced()]
if not resume:
    callbacks.append(L.callbacks.ModelCheckpoint(dirpath=out, save_top_k=-1, every_n_epochs=1))
t = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=3, logger=False, enable_progress_bar=False,
              enable_model_summary=False, enable_checkpointing=not resume, num_sanity_val_steps=0,
              callbacks=callbacks)
t.fit(model, DataLoader(data.train, batch_size=32), ckpt_path=resume)
torch.save({{"state": {{k: v.detach().clone() for k, v in model.state_dict().items()}},
            "timeline": [(e.unit, e.step) for e in cb.freezer.timeline], "rebuilds": cb.ddp_rebuilds,
            "reduced": seen.get("total_parameter_size_bytes", 0) // 4,
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "steps": t.global_step}}, out + ("/resumed" if resume else "/full") + f"{{t.global_rank}}.pt")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
def test_lightning_ddp_two_processes_freeze_identically_and_resume(tmp_path):
    """Lightning's own strategy="ddp" (gloo, 2 CPU processes, find_unused_parameters=False): the DDP
    wrapper is rebuilt at each freeze, both ranks end bit-identical, and a resume from a checkpoint
    written after a freeze ends where the uninterrupted run did."""
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent)))

    def launch(*args):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
               "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        for var in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK"):
            env.pop(var, None)
        out = subprocess.run([sys.executable, str(script), str(tmp_path), *args], capture_output=True, text=True,
                             timeout=150, env=env, cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-4000:]
        return out.stderr

    said = launch()
    assert said.count("activation cache off: training runs in 2 processes") == 2, said[-3000:]  # once per rank
    r0, r1 = (torch.load(tmp_path / f"full{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["steps"] == r1["steps"] == 12  # 256 images, 2 ranks x 32 a batch, 3 epochs
    assert r0["timeline"] == r1["timeline"] and [s for _, s in r0["timeline"]] == [3, 6, 9, 12]
    assert r0["rebuilds"] == r1["rebuilds"] == 4
    # the last DDP wrapper reduces only the parameters still training (the head)
    assert r0["reduced"] == r0["trainable"] == 330
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k

    launch(str(tmp_path / "epoch=0-step=4.ckpt"))  # unit 0 was frozen at step 3
    q0, q1 = (torch.load(tmp_path / f"resumed{r}.pt", weights_only=False) for r in (0, 1))
    assert q0["timeline"] == q1["timeline"] == r0["timeline"]
    assert q0["rebuilds"] == 1 + 3  # once at the start (unit 0 already frozen), then at steps 6, 9, 12
    for k in r0["state"]:
        assert torch.equal(q0["state"][k], q1["state"][k]), k
        assert torch.equal(q0["state"][k], r0["state"][k]), k


EARLY_HALF = {"freeze_start": 0.0, "freeze_level": 0.5, "freeze_end": 0.25}  # two of five units by step 6 of 24


def _fit(cb, model, fmnist, epochs=3):
    """Shuffled batches, the same order for every run; the warnings frostline gave."""
    train = DataLoader(fmnist.train, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        trainer([cb, Probe(cb)], max_epochs=epochs).fit(model, train)
    return [str(w.message) for w in said if "frostline" in str(w.message)]


@pytest.mark.integration
@pytest.mark.parametrize("via_forward", [False, True], ids=["net-called", "forward-called"])
def test_the_cache_replays_the_frozen_prefix_and_trains_exactly_as_without_it(fmnist, via_forward):
    """Lightning never says which samples a batch holds: the cache keys them by their inputs, on the
    module holding every unit (``self.net``), whether training_step calls it or ``self(x)``.
    Replayed steps compute what the plain model computes, so the two runs end bit for bit alike."""
    cached, plain = (FrostlineCallback("linear", policy_kwargs=EARLY_HALF, cache=c) for c in ("memory", "off"))
    a, b = Net(via_forward=via_forward), Net(via_forward=via_forward)
    assert not _fit(cached, a, fmnist) and not _fit(plain, b, fmnist)
    assert [(e.index, e.step) for e in cached.freezer.timeline] == [(e.index, e.step) for e in plain.freezer.timeline]
    assert cached.freezer.frozen_prefix == 2
    stats = cached.cached.cache.stats
    assert stats["hits"] >= len(fmnist.train) and stats["computed"] > 0  # the last epoch is all replays
    assert plain.cached is None
    for (name, x), y in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(x, y), name
    assert "forward" not in a.net.__dict__  # the module's own forward is back after training


class StemFrozenByHand(Net):
    """The stem frozen before the callback sees the model: in no unit, its BatchNorm in training mode."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.net[0].requires_grad_(False)

    def configure_optimizers(self):
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=self.lr, momentum=0.9)


@pytest.mark.integration
def test_a_stem_frozen_by_hand_joins_the_frozen_prefix_and_the_cache_serves_it(fmnist):
    """training_step calls ``self.net``, never the LightningModule's forward: the Freezer learns
    when each module ran from the first step's calls. Once the first unit freezes, the stem before
    it runs in eval mode in both runs, so the cache replays it and the runs end bit for bit alike."""
    cached, plain = (FrostlineCallback("linear", policy_kwargs=EARLY_HALF, cache=c) for c in ("memory", "off"))
    a, b = StemFrozenByHand(), StemFrozenByHand()
    assert not _fit(cached, a, fmnist) and not _fit(plain, b, fmnist)
    assert cached.freezer.unit_names[0] == "net.block1_1"
    assert "net.stem.bn" in cached.freezer.pinned_outside == plain.freezer.pinned_outside
    assert cached.cached.cache.stats["hits"] > 0
    for (name, x), y in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(x, y), name
    assert torch.equal(a.net[0].bn.running_mean, b.net[0].bn.running_mean)


class PartsNet(Net):
    """Runs the units one by one: the module holding them all is never called."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        for unit in self.net:
            x = unit(x)
        return F.cross_entropy(x, y)


@pytest.mark.integration
def test_the_cache_says_when_it_cannot_serve(fmnist):
    from frostline import ConfigError

    with pytest.raises(ConfigError, match="training_step did not call net"):
        _fit(FrostlineCallback("linear", policy_kwargs=EARLY_HALF, cache="memory"), PartsNet(), fmnist, epochs=1)
    cb = FrostlineCallback("linear", policy_kwargs=EARLY_HALF, cache="auto")
    said = _fit(cb, PartsNet(), fmnist, epochs=1)
    assert len(said) == 1 and "training_step did not call net" in said[0], said
    assert cb.freezer.frozen_prefix == 2  # freezing went on without the cache
    compiled = Net()
    compiled.net = torch.compile(compiled.net, backend="eager")  # a compiled forward cannot be routed through it
    cb = FrostlineCallback("linear", policy_kwargs=EARLY_HALF, cache="auto")
    said = _fit(cb, compiled, fmnist, epochs=1)
    assert len(said) == 1 and "the model is compiled" in said[0], said
    assert cb.freezer.frozen_prefix == 2 and cb.cached is None
    said = _fit(FrostlineCallback("none", cache="auto"), Net(), fmnist, epochs=1)
    assert said == ["frostline: the activation cache replayed no sample: no prefix of units froze, and only a "
                    "frozen prefix can be replayed"]
    with pytest.raises(ConfigError, match="unknown cache mode"):
        FrostlineCallback("linear", cache="disk")
    with pytest.raises(ConfigError, match="cache_memory_mb"):
        FrostlineCallback("linear", cache="auto", cache_memory_mb=-1)


@pytest.mark.integration
def test_lightning_is_imported_only_by_the_integration():
    code = ("import sys, frostline, frostline.integrations; "
            "assert not any(m.split('.')[0] in ('lightning', 'pytorch_lightning') for m in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]


def test_missing_lightning_says_how_to_install(monkeypatch):
    from frostline.integrations import lightning as integration

    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.setitem(sys.modules, "pytorch_lightning", None)
    with pytest.raises(ImportError, match=r"pip install 'frostline\[lightning\]'"):
        integration._import_lightning()


def test_bad_configuration_is_reported(synthetic):
    from frostline import ConfigError

    with pytest.raises(ConfigError):
        FrostlineCallback(policy="no-such-method")
    # a setting the method does not take, or a bad value, fails when the callback is made, not at fit
    with pytest.raises(ConfigError, match=r"'freezeout' does not take \['freeze_start'\]"):
        FrostlineCallback(policy="freezeout", policy_kwargs={"freeze_start": 0.3})
    with pytest.raises(ConfigError, match="t_0 must be in"):
        FrostlineCallback(policy="freezeout", policy_kwargs={"t_0": 3.0})
    with pytest.raises(ConfigError, match=r"'cka-oracle' does not take \['bogus'\]"):  # needs a reference: names only
        FrostlineCallback(policy="cka-oracle", policy_kwargs={"bogus": 1})
    with pytest.raises(ConfigError, match="known run length"):
        trainer([FrostlineCallback()], max_epochs=-1, max_steps=-1).fit(Net(), *loaders(synthetic))


@pytest.mark.integration
def test_a_method_by_name_gets_the_trainer_s_steps_per_epoch(synthetic):
    """"smartfrz" counts epochs: built at train start with the trainer's optimizer steps per
    epoch (8 batches of 64, two per step) rather than demanding steps_per_epoch."""
    cb = FrostlineCallback(policy="smartfrz", policy_kwargs={"threshold": 1e-6, "window": 4, "snapshots_per_epoch": 4})
    trainer([cb, Probe(cb)], accumulate_grad_batches=2).fit(Net(), *loaders(synthetic))
    f = cb.freezer
    assert f.policy.name == "smartfrz" and f.policy.clock.steps_per_epoch == 4 and f.step_count == 8
    assert f.frozen and len(f.units) - 1 not in f.frozen


@pytest.mark.integration
def test_training_data_without_a_length_needs_the_epoch_given_not_made_up(synthetic):
    """Over an iterable without a length the trainer's epochs cannot be counted: a method that
    counts them is told their length, or says it needs it (it used to count the whole run as one
    epoch and decide once, at the end)."""
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(DataLoader(synthetic.train, batch_size=BATCH, shuffle=False))

    def fit(cb):
        trainer([cb], max_epochs=-1, max_steps=16).fit(Net(), DataLoader(Stream(), batch_size=None))

    kwargs = {"threshold": 1e-6, "window": 4, "snapshots_per_epoch": 4}
    with pytest.raises(ConfigError, match="no length.*policy_kwargs"):
        fit(FrostlineCallback(policy="smartfrz", policy_kwargs=kwargs))
    cb = FrostlineCallback(policy="smartfrz", policy_kwargs={**kwargs, "steps_per_epoch": 8})
    fit(cb)
    assert cb.freezer.policy.clock.steps_per_epoch == 8 and cb.freezer.frozen
