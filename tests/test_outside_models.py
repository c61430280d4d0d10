"""frostline on models it did not write (tests/outside_models.py), the way a user runs it: a plain
training loop with either order of ``zero_grad`` and ``freezer.step()``, and the HF ``Trainer``.

Schedules are short so that something freezes within a dozen steps:
linear ``freeze_start=0.2``; FreezeOut ``t_0=0.3``, linear spacing; AutoFreeze an interval of 2
steps at the 100th percentile (every unit before the one whose gradient changed most freezes);
SmartFRZ a snapshot every step, a stage every 3, a window of 4 and ``threshold=1e-6`` (any unit
with two snapshots freezes at the next stage).
"""

import pytest
import torch

import frostline
from frostline import AutoFreeze, Freezer, FreezeOut, LinearFreezing, SmartFRZ
from frostline.policies import FreezePolicy

from outside_models import BUILDERS, forward, hf_bert, hf_gpt2, loss_of, peft_lora_bert

STEPS, BATCH = 12, 4

POLICIES = {
    "linear": lambda: LinearFreezing(freeze_start=0.2),
    "freezeout": lambda: FreezeOut(t_0=0.3, schedule="linear"),
    "autofreeze": lambda: AutoFreeze(percentile=100, interval_steps=2),
    "smartfrz": lambda: SmartFRZ(threshold=1e-6, window=4, snapshot_steps=1, stage_steps=3),
}
ORDERS = ("zero-then-step", "step-then-zero")
SLOW = pytest.mark.integration  # a ResNet-18's dozen steps take seconds on a loaded CPU
# every method on the two cheapest models (GPT-2 ties its head to its embedding), one each on the
# rest; the two loop orders alternate, so each model and each method meets both
CASES = [pytest.param(m, p, ORDERS[(i + j) % 2], id=f"{m}-{p}-{ORDERS[(i + j) % 2]}")
         for i, m in enumerate(("hf-bert", "hf-gpt2")) for j, p in enumerate(POLICIES)] + [
    pytest.param("torchvision-resnet18", "linear", ORDERS[0], marks=SLOW, id="torchvision-resnet18-linear"),
    pytest.param("timm-resnet18", "autofreeze", ORDERS[1], marks=SLOW, id="timm-resnet18-autofreeze"),
    pytest.param("timm-vit", "freezeout", ORDERS[0], id="timm-vit-freezeout"),
    pytest.param("peft-lora-bert", "smartfrz", ORDERS[1], id="peft-lora-bert-smartfrz"),
    pytest.param("hf-llama", "autofreeze", ORDERS[0], id="hf-llama-autofreeze")]

def _in_optimizer(optimizer):
    return {id(p) for g in optimizer.param_groups for p in g["params"]}


def _train(model, batch, freezer, optimizer, order: str, steps: int = STEPS):
    for step in range(steps):
        b = batch(BATCH, seed=step)
        loss_of(forward(model, b), b).backward()
        optimizer.step()
        if order == "zero-then-step":
            optimizer.zero_grad(set_to_none=True)
            freezer.step()
        else:
            freezer.step()
            optimizer.zero_grad()


@pytest.mark.parametrize("model_name,policy,order", CASES)
def test_freezing_acts_on_outside_models(model_name, policy, order):
    torch.manual_seed(0)
    model, batch = BUILDERS[model_name]()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    freezer = Freezer(model, optimizer, POLICIES[policy](), STEPS)
    _train(model, batch, freezer, optimizer, order, steps=1)
    head = [p for p in freezer.units[-1].params if p.requires_grad]
    before = [p.detach().clone() for p in head]
    _train(model, batch, freezer, optimizer, order, steps=STEPS - 1)
    assert freezer.frozen, f"{policy} froze nothing on {model_name}"
    assert len(freezer.units) - 1 not in freezer.frozen
    assert all(any(p.requires_grad for p in u.params) or i in freezer.frozen for i, u in enumerate(freezer.units))
    assert any(not torch.equal(a, p) for a, p in zip(before, head)), "the head stopped training"
    frozen = [p for i in freezer.frozen for p in freezer.units[i].params]
    b = batch(BATCH, seed=99)
    loss_of(forward(model, b), b).backward()
    assert all(p.grad is None and not p.requires_grad for p in frozen)
    assert not _in_optimizer(optimizer) & {id(p) for p in frozen}
    assert not any(p in optimizer.state for p in frozen)
    assert all(p.grad is not None for p in head)


class Wrapper(torch.nn.Module):
    """What a LightningModule (or a user's own module) does: holds the network as ``self.model``,
    beside modules with no parameters."""

    def __init__(self, model):
        super().__init__()
        self.model, self.dropout = model, torch.nn.Dropout(0.0)

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)


@pytest.mark.parametrize("model_name", list(BUILDERS))
def test_a_wrapped_model_splits_into_the_same_units_as_the_model(model_name):
    """torchvision and timm keep their stages in plain nn.Sequential: wrapped once or twice, the
    network must still split into its blocks, not become one unit that never freezes."""
    model, batch = BUILDERS[model_name]()
    b = batch(2)
    b = b["x"] if "x" in b else b  # what forward() passes
    alone = [u.module_names for u in frostline.freeze_units(model, example_input=b)]
    for wrapped, prefix in ((Wrapper(model), "model."), (Wrapper(Wrapper(model)), "model.model.")):
        units = frostline.freeze_units(wrapped, example_input=b)
        assert [u.module_names for u in units] == [[prefix + n for n in names] for names in alone]
    assert len(alone) >= 4


class AllButHead(FreezePolicy):
    name = "all-but-head"

    def decide(self, progress):
        return set(range(self.num_units - 1)) if progress.step >= 2 else set()


def test_gpt2_tied_head_keeps_its_embedding_trainable():
    model, batch = hf_gpt2()
    tied = model.lm_head.weight
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    freezer = Freezer(model, optimizer, AllButHead(), 6)
    _train(model, batch, freezer, optimizer, "zero-then-step", steps=3)  # froze after step 2, one step after
    assert freezer.frozen == set(range(len(freezer.units) - 1))
    assert freezer.units[-1].params == [tied] and freezer.unit_names[-1] == "lm_head"
    before = tied.detach().clone()
    b = batch(BATCH, seed=7)
    loss_of(forward(model, b), b).backward()
    assert tied.requires_grad and tied.grad is not None
    assert id(tied) in _in_optimizer(optimizer)
    optimizer.step()
    assert not torch.equal(before, tied)


def test_a_lora_model_s_schedules_count_only_units_that_train():
    model, batch = peft_lora_bert()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    freezer = Freezer(model, optimizer, FreezeOut(t_0=0.3, schedule="linear"), 10)
    _train(model, batch, freezer, optimizer, "zero-then-step", steps=1)
    # embeddings and pooler hold nothing trainable: 4 encoder layers (their LoRA adapters) and the head
    assert len(freezer.units) == freezer.policy.num_units == 5
    assert all(any(p.requires_grad for p in u.params) for u in freezer.units)
    assert freezer.policy.times[0] == pytest.approx(0.3)  # the first unit that trains freezes at t_0


@pytest.mark.parametrize("name", ["autofreeze", "smartfrz"])
def test_signal_methods_by_name_run_with_their_defaults(name):
    model, batch = hf_bert()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    freezer = Freezer(model, optimizer, name, total_steps=STEPS)
    _train(model, batch, freezer, optimizer, "zero-then-step")
    assert freezer.step_count == STEPS and freezer.policy.name == name


# -- the Hugging Face Trainer ------------------------------------------------------------------

class _Batches(torch.utils.data.Dataset):
    def __init__(self, batch, n=32):
        b = batch(n, seed=0)
        self.items = [{k: v[i] for k, v in b.items()} for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.mark.integration  # two HF Trainer runs
@pytest.mark.parametrize("policy,kwargs", [("autofreeze", {"percentile": 100, "interval_steps": 2}),
                                           ("smartfrz", {"threshold": 1e-6, "window": 4, "snapshots_per_epoch": 4})])
def test_hf_trainer_freezes_bert_with_a_method_by_name(tmp_path, policy, kwargs):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from frostline.integrations.hf import FrostlineCallback

    model, batch = hf_bert()
    frost = FrostlineCallback(policy=policy, policy_kwargs=kwargs)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=3, learning_rate=1e-2,
        save_strategy="no", use_cpu=True, dataloader_num_workers=0, seed=0, report_to=[], disable_tqdm=True,
        logging_strategy="no")
    transformers.Trainer(model=model, args=args, train_dataset=_Batches(batch), callbacks=[frost]).train()
    freezer = frost.freezer
    assert freezer.step_count == 12 and freezer.policy.name == policy
    if policy == "smartfrz":
        assert freezer.policy.clock.steps_per_epoch == 4  # 32 samples / 8 per batch: from the Trainer
    assert freezer.frozen and len(freezer.units) - 1 not in freezer.frozen
    assert not _in_optimizer(freezer.optimizer) & {id(p) for i in freezer.frozen for p in freezer.units[i].params}


def test_an_unknown_method_fails_when_the_callback_is_made():
    pytest.importorskip("transformers")
    from frostline.integrations.hf import FrostlineCallback

    with pytest.raises(frostline.ConfigError, match="unknown method 'smartfreeze'"):
        FrostlineCallback(policy="smartfreeze")


class _RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_the_hf_callback_refuses_a_state_file_that_would_run_code(tmp_path):
    """Resuming reads frostline.pt with weights_only=True: a pickled callable is refused unrun."""
    pytest.importorskip("transformers")
    from types import SimpleNamespace

    from frostline.integrations.hf import STATE_FILE, FrostlineCallback

    marker = tmp_path / "code-ran"
    folder = tmp_path / "checkpoint-3"
    folder.mkdir()
    torch.save({"step": 3, "evil": _RunsCodeWhenUnpickled(marker)}, folder / STATE_FILE)
    callback = FrostlineCallback("linear")
    with pytest.raises(frostline.CheckpointError, match="could run code"):
        callback._resume(SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=3))
    assert not marker.exists()


def test_smartfrz_samples_only_the_weights_that_train_on_a_lora_model():
    model, batch = peft_lora_bert()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    freezer = Freezer(model, optimizer, POLICIES["smartfrz"](), STEPS)
    _train(model, batch, freezer, optimizer, "zero-then-step", steps=2)
    sampled = freezer._collectors["tailored_weights"]._params
    assert all(ps and all(p.requires_grad for p in ps) for ps in sampled)  # adapters, not the frozen base
