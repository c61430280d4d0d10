"""frostline.integrations.hf.FrostlineCallback inside a real Hugging Face Trainer (tiny BERT, CPU)."""

import copy
import math
import shutil
import warnings
import zlib

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from frostline import AutoFreeze, CheckpointError, ConfigError, FreezeOut, LinearFreezing  # noqa: E402
from frostline.integrations.hf import STATE_FILE, FrostlineCallback  # noqa: E402
from frostline.loading import load_plain  # noqa: E402
from frostline.policies.freezeout.freezeout import freezeout_times  # noqa: E402

# every test reads a module fixture that runs Hugging Face Trainers
pytestmark = pytest.mark.integration

torch.set_num_threads(1)
MAX_STEPS, SAVE_AT, WARMUP, LR, SEQ, VOCAB = 12, 6, 2, 1e-3, 16, 256
POLICY = dict(t_0=0.3, schedule="linear")
FALLBACK = [  # used when the fine-food reviews (r-cran-modeldata + rdata) are not installed
    "great coffee strong and smooth i buy it every month", "the cookies arrived broken and stale",
    "my dog loves these treats and they are healthy", "too sweet for my taste would not buy again",
    "excellent tea with a fresh clean flavor", "the package was damaged and half empty",
    "best pasta sauce i have tried in years", "tastes like cardboard save your money",
]


def _texts(n=32):
    try:
        from frostline.lab.finefoods import read_reviews

        texts, labels = read_reviews("train")
        return list(texts[:n]), [int(v) for v in labels[:n]]
    except Exception:  # noqa: BLE001 - data not installed: small real-text fallback
        texts = [FALLBACK[i % len(FALLBACK)] for i in range(n)]
        return texts, [i % 2 for i in range(n)]


class Reviews(torch.utils.data.Dataset):
    """Reviews as fixed-length token ids from a hashing word tokenizer (deterministic, no downloads)."""

    def __init__(self):
        texts, labels = _texts()
        self.items = []
        for text, label in zip(texts, labels):
            ids = [1] + [2 + zlib.crc32(w.encode()) % (VOCAB - 2) for w in text.lower().split()][: SEQ - 1]
            mask = [1] * len(ids) + [0] * (SEQ - len(ids))
            self.items.append({"input_ids": torch.tensor(ids + [0] * (SEQ - len(ids))),
                               "attention_mask": torch.tensor(mask), "labels": torch.tensor(label)})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _model():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=SEQ, num_labels=2)
    return transformers.BertForSequenceClassification(config)


def _trainer(out, callbacks, model=None):
    torch.set_num_threads(1)  # every run with the same threads (conftest sets 2 per test), so sums match bit for bit
    args = transformers.TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=8, max_steps=MAX_STEPS, learning_rate=LR,
        lr_scheduler_type="linear", warmup_steps=WARMUP, weight_decay=0.01, save_strategy="steps",
        save_steps=SAVE_AT, use_cpu=True, dataloader_num_workers=0, seed=0, report_to=[], disable_tqdm=True,
        logging_strategy="no")
    return transformers.Trainer(model=model or _model(), args=args, train_dataset=Reviews(), callbacks=callbacks)


def _hf_linear(step):
    return step / WARMUP if step < WARMUP else max(0.0, (MAX_STEPS - step) / (MAX_STEPS - WARMUP))


class Recorder(transformers.TrainerCallback):
    """Runs after FrostlineCallback: what the optimizer will use for the next step."""

    def __init__(self, frost):
        self.frost, self.rows, self.params_at = frost, [], {}

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        freezer = self.frost.freezer
        groups = [(g.get("frostline_unit"), g["lr"], len(g["params"])) for g in optimizer.param_groups]
        self.rows.append((state.global_step, set(freezer.frozen), groups, freezer.policy.lr_scales(freezer.progress)))
        for i in freezer.frozen:
            self.params_at.setdefault(i, [p.detach().clone() for p in freezer.units[i].params])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("hf_run")
    frost = FrostlineCallback(FreezeOut(**POLICY))
    recorder = Recorder(frost)
    trainer = _trainer(out, [frost, recorder])
    trainer.train()
    return out, trainer, frost, recorder


def test_freezes_at_the_right_steps_and_frozen_params_stay_put(uninterrupted):
    _, trainer, frost, recorder = uninterrupted
    freezer = frost.freezer
    assert freezer.step_count == MAX_STEPS
    times = freezeout_times(len(freezer.units), **POLICY)
    want = {i: math.ceil(t * MAX_STEPS - 1e-9) for i, t in enumerate(times[:-1]) if t * MAX_STEPS <= MAX_STEPS}
    assert {e.index: e.step for e in freezer.timeline} == want
    head = len(freezer.units) - 1
    assert head not in freezer.frozen and freezer.units[head].name == "classifier"
    assert all(p.requires_grad for p in freezer.units[head].params)
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    for i in freezer.frozen:
        for before, p in zip(recorder.params_at[i], freezer.units[i].params):
            assert not p.requires_grad and p.grad is None and id(p) not in in_optimizer
            assert id(p) not in {id(q) for q in trainer.optimizer.state}
            assert torch.equal(before, p)  # no update after the freeze
        assert all(not m.training for m in freezer.units[i].modules)  # Trainer's model.train() did not undo it
    assert frost.freezer.units[0].modules[0].training is False


def test_every_group_follows_hf_schedule_times_freezeout_scale(uninterrupted):
    _, _, frost, recorder = uninterrupted
    assert len({g[0] for g in recorder.rows[0][2]}) == len(frost.freezer.units)  # split per unit
    assert len(recorder.rows[0][2]) == 2 * len(frost.freezer.units)  # x (decay, no-decay) groups
    checked = 0
    for step, frozen, groups, scales in recorder.rows:
        for unit, lr, n in groups:
            want = LR * _hf_linear(step) * (1.0 if unit is None else scales[unit])
            assert lr == pytest.approx(want, rel=1e-9, abs=1e-15), (step, unit)
            checked += n > 0 and want > 0
    assert checked > 20  # the zip() pitfall would leave most groups unscheduled


def test_resume_matches_an_uninterrupted_run(uninterrupted):
    out, trainer, frost, _ = uninterrupted
    checkpoint = out / f"checkpoint-{SAVE_AT}"
    saved = torch.load(checkpoint / STATE_FILE, weights_only=False)
    assert saved["step"] == SAVE_AT and saved["frozen"]  # saved after a freeze
    assert len(torch.load(checkpoint / "optimizer.pt", weights_only=False)["param_groups"]) == 2  # original layout
    frost2 = FrostlineCallback(FreezeOut(**POLICY))
    resumed = _trainer(out, [frost2])
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert frost2.freezer.timeline == frost.freezer.timeline
    for (name, a), b in zip(trainer.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(a, b), name


def test_a_cooldown_reaches_the_freezer_and_resumes_mid_cooldown(tmp_path):
    def callback():
        return FrostlineCallback(LinearFreezing(freeze_start=0.2), cooldown=3)

    frost = callback()
    trainer = _trainer(tmp_path, [frost])
    trainer.train()
    freezer = frost.freezer
    assert freezer.cooldown == 3 and freezer.timeline
    assert all(e.step - e.decided_step == 3 for e in freezer.timeline)
    checkpoint = tmp_path / f"checkpoint-{SAVE_AT}"
    assert load_plain(checkpoint / STATE_FILE)["cooling"]  # saved while a unit cools
    frost2 = callback()
    resumed = _trainer(tmp_path, [frost2])
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert frost2.freezer.timeline == freezer.timeline
    for (name, a), b in zip(trainer.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(a, b), name
    with pytest.raises(ConfigError, match="cooldown does not apply"):
        FrostlineCallback(FreezeOut(), cooldown=3)


def test_head_units_keep_the_top_layer_training_and_resume(tmp_path):
    def callback():
        # BERT's units end with its pooler and classifier: the top encoder layer is the third from last
        return FrostlineCallback(LinearFreezing(freeze_start=0.0, freeze_end=0.3), head_units=3)

    frost = callback()
    trainer = _trainer(tmp_path, [frost])
    top = trainer.model.bert.encoder.layer[-1]
    before = [p.detach().clone() for p in top.parameters()]
    trainer.train()
    freezer = frost.freezer
    assert freezer.unit_names[-1] == "bert.encoder.layer.2+bert.pooler+classifier"
    assert freezer.frozen == set(range(len(freezer.units) - 1))
    assert all(p.requires_grad for p in top.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, top.parameters()))
    frost2 = callback()
    resumed = _trainer(tmp_path, [frost2])
    resumed.train(resume_from_checkpoint=str(tmp_path / f"checkpoint-{SAVE_AT}"))
    assert frost2.freezer.unit_names == freezer.unit_names and frost2.freezer.timeline == freezer.timeline
    for (name, a), b in zip(trainer.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(a, b), name


def test_resume_without_frostline_state_is_a_clear_error(uninterrupted, tmp_path):
    out, _, _, _ = uninterrupted
    checkpoint = tmp_path / f"checkpoint-{SAVE_AT}"
    shutil.copytree(out / f"checkpoint-{SAVE_AT}", checkpoint)
    (checkpoint / STATE_FILE).unlink()
    trainer = _trainer(tmp_path, [FrostlineCallback(FreezeOut(**POLICY))])
    with pytest.raises(CheckpointError, match="resume_from") as err:
        trainer.train(resume_from_checkpoint=str(checkpoint))
    assert str(checkpoint / STATE_FILE) in str(err.value)


class SignalRecorder(transformers.TrainerCallback):
    """Runs after FrostlineCallback: what AutoFreeze read at each step end, whether any ``.grad``
    was left for it to read there, and which units were frozen before the step."""

    def __init__(self, frost):
        self.frost, self.intervals, self.grads_left, self.frozen_before = frost, [], [], []

    def on_step_begin(self, args, state, control, **kwargs):
        self.frozen_before.append(set(self.frost.freezer.frozen))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.intervals.append(copy.deepcopy(self.frost.freezer.policy.last_interval))
        self.grads_left.append(any(p.grad is not None and bool(p.grad.any()) for p in model.parameters()))


@pytest.fixture(scope="module")
def autofreeze_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hf_autofreeze")
    frost = FrostlineCallback(policy="autofreeze")  # by name, defaults only: no epoch length to supply
    recorder = SignalRecorder(frost)
    trainer = _trainer(out, [frost, recorder])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    return trainer, frost, recorder, [str(w.message) for w in caught]


def test_autofreeze_gets_its_gradients_although_the_trainer_zeroes_them_before_step_end(autofreeze_run):
    trainer, frost, recorder, caught = autofreeze_run
    freezer = frost.freezer
    assert freezer.policy.interval_length(MAX_STEPS) == 1  # 12 steps, 20 intervals: one step each
    assert len(recorder.intervals) == MAX_STEPS
    assert not any(recorder.grads_left)  # .grad is empty at on_step_end: reading it would find nothing
    for step, (interval, frozen) in enumerate(zip(recorder.intervals, recorder.frozen_before), start=1):
        assert interval["step"] == step and interval["steps"] == 1
        for unit, value in enumerate(interval["grad_l1"]):
            if unit in frozen:
                assert value is None
            else:  # every trainable unit's gradient reached the policy, every step
                assert value is not None and math.isfinite(value) and value > 0, (step, unit)
    assert sum(i["threshold"] is not None for i in recorder.intervals) >= MAX_STEPS - 2  # rates were compared
    assert not [m for m in caught if "AutoFreeze saw no gradient" in m]
    for event in freezer.timeline:  # whatever froze, froze on a rate below the threshold
        assert event.signal["change_rate"] < event.signal["threshold"]
    assert not any(p._backward_hooks for p in trainer.model.parameters())  # on_train_end removed the hooks


def test_autofreeze_resumes_mid_interval_in_the_trainer(tmp_path):
    """Intervals of 4 steps: the checkpoint at step 6 falls inside the second, whose gradient sums
    travel in frostline.pt; the resumed run decides as the uninterrupted one."""
    full = FrostlineCallback(AutoFreeze(interval_steps=4))
    _trainer(tmp_path / "full", [full]).train()
    checkpoint = tmp_path / "full" / f"checkpoint-{SAVE_AT}"
    saved = torch.load(checkpoint / STATE_FILE, weights_only=True)
    assert saved["signals"]["grad_sum_l1"]["names"]  # steps 5-6 summed so far
    resumed = FrostlineCallback(AutoFreeze(interval_steps=4))
    _trainer(tmp_path / "full", [resumed]).train(resume_from_checkpoint=str(checkpoint))
    assert resumed.freezer.policy.intervals_done == full.freezer.policy.intervals_done == 3
    assert resumed.freezer.policy.last_interval == full.freezer.policy.last_interval
    assert resumed.freezer.timeline == full.freezer.timeline


# -- the activation cache through the Trainer ---------------------------------------------------
HALF_EARLY = dict(freeze_start=0.2, freeze_level=0.5, freeze_end=0.3)  # half the units frozen by step 4 of 12


def _train_quietly(trainer):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    return [str(w.message) for w in caught if "frostline" in str(w.message)]


def test_the_cache_replays_the_frozen_prefix_and_trains_exactly_as_without_it(tmp_path):
    """The Trainer never says which samples a batch holds: the cache keys them by their inputs.
    Replayed steps must compute what the plain model computes, so the two runs end bit for bit alike."""
    cached = FrostlineCallback(LinearFreezing(**HALF_EARLY), cache="memory")
    plain = FrostlineCallback(LinearFreezing(**HALF_EARLY))
    data = torch.utils.data.Subset(Reviews(), range(28))  # 3 full batches and a short one (4), whose
    a = _trainer(tmp_path / "a", [cached])  # num_items_in_batch differs: it is not part of a sample's key
    a.train_dataset = data
    assert not _train_quietly(a)
    b = _trainer(tmp_path / "b", [plain])  # made after a trained: each starts from the Trainer's seed
    b.train_dataset = data
    assert not _train_quietly(b)
    assert cached.freezer.timeline == plain.freezer.timeline and cached.freezer.frozen_prefix == 2
    stats = cached.cached.cache.stats
    assert stats["hits"] >= 8 and stats["computed"] > 0  # whole batches replayed in the later epochs
    assert plain.cached is None
    for (name, x), y in zip(a.model.named_parameters(), b.model.parameters()):
        assert torch.equal(x, y), name
    assert "forward" not in a.model.__dict__  # the model's own forward is back after training
    hits = stats["hits"]
    a.evaluate(Reviews())
    assert cached.cached.cache.stats["hits"] == hits  # evaluation never goes through the cache


class Continuations(Reviews):
    """The reviews as language-model data: each predicts its own next tokens (padding masked out)."""

    def __getitem__(self, i):
        item = self.items[i]
        return {"input_ids": item["input_ids"], "attention_mask": item["attention_mask"],
                "labels": item["input_ids"].masked_fill(item["attention_mask"] == 0, -100)}


def _with_and_without_cache(tmp_path, make_model, dataset):
    """The same model and 24 samples trained with ``cache="auto"`` and ``"off"``, each from a fresh
    ``make_model()``: ((callback, trainer) cached, (callback, trainer) uncached)."""
    runs = {}
    for cache in ("auto", "off"):
        frost = FrostlineCallback(LinearFreezing(**HALF_EARLY), cache=cache)
        trainer = _trainer(tmp_path / cache, [frost], model=make_model())
        trainer.train_dataset = torch.utils.data.Subset(dataset, range(24))
        assert not _train_quietly(trainer)
        runs[cache] = (frost, trainer)
    return runs["auto"], runs["off"]


def test_a_llama_style_decoder_is_served_and_trains_exactly_as_without_the_cache(tmp_path):
    """The model computes its rotary encoding once, before the first layer, and every layer reads it:
    a replay computes it too, so the frozen prefix is served and the runs end bit for bit alike."""
    def llama():
        torch.manual_seed(0)
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=SEQ, tie_word_embeddings=False))

    (cached, a), (plain, b) = _with_and_without_cache(tmp_path, llama, Continuations())
    assert cached.freezer.timeline == plain.freezer.timeline and cached.freezer.frozen_prefix >= 2
    assert cached.cached.cache.stats["hits"] > 0 and plain.cached is None
    for (name, x), y in zip(a.model.named_parameters(), b.model.parameters()):
        assert torch.equal(x, y), name


def test_a_lora_model_is_served_and_trains_exactly_as_without_the_cache(tmp_path):
    """PEFT freezes the embeddings (in no unit, dropout 0.1): once the first layer freezes they run
    in eval mode with it, in both runs, so the prefix is served and the runs end bit for bit alike."""
    peft = pytest.importorskip("peft")

    def lora():
        return peft.get_peft_model(_model(), peft.LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"]))

    (cached, a), (plain, b) = _with_and_without_cache(tmp_path, lora, Reviews())
    assert cached.freezer.timeline == plain.freezer.timeline and cached.freezer.frozen_prefix >= 1
    assert "base_model.model.bert.embeddings.dropout" in cached.freezer.pinned_outside
    assert cached.cached.cache.stats["hits"] > 0 and plain.cached is None
    for (name, x), y in zip(a.model.named_parameters(), b.model.parameters()):
        assert torch.equal(x, y), name


def test_the_cache_says_when_it_cannot_serve(tmp_path):
    # a head tied to the embedding (GPT-2): the prefix's input would change with every step
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=2, n_positions=SEQ)

    def gpt2():
        torch.manual_seed(0)
        return transformers.GPT2LMHeadModel(config)

    def trainer(out, frost, data):
        t = _trainer(out, [frost], model=gpt2())
        t.train_dataset = data
        return t

    with pytest.raises(ConfigError, match="tied"):
        trainer(tmp_path / "m", FrostlineCallback(LinearFreezing(**HALF_EARLY), cache="memory"), Continuations()).train()
    # inputs that change every epoch (random masking): no sample could ever come back
    class Masked(Reviews):
        def __getitem__(self, i):
            item = dict(self.items[i])
            item["input_ids"] = torch.where(torch.rand(SEQ) < 0.15, 3, item["input_ids"])
            return item

    frost = FrostlineCallback(LinearFreezing(**HALF_EARLY), cache="auto")
    masked = _trainer(tmp_path / "r", [frost])
    masked.train_dataset = Masked()
    said = _train_quietly(masked)
    assert any("more distinct samples than the 32 of the training set" in m for m in said), said
    # batches padded each to its own length: the prefix's output changes shape from batch to batch
    batches = iter(range(10**6))

    def pad_to_longest(items):
        n = SEQ - next(batches) % 3
        return {"input_ids": torch.stack([i["input_ids"][:n] for i in items]),
                "attention_mask": torch.stack([i["attention_mask"][:n] for i in items]),
                "labels": torch.stack([i["labels"] for i in items])}

    ragged = _trainer(tmp_path / "p", [FrostlineCallback(LinearFreezing(**HALF_EARLY), cache="memory")])
    ragged.data_collator = pad_to_longest
    with pytest.raises(ConfigError, match="pad"):  # to one length
        ragged.train()
    # a compiled forward cannot be routed through the cache (it failed deep inside dynamo)
    compiled = _trainer(tmp_path / "c", [FrostlineCallback(LinearFreezing(**HALF_EARLY), cache="memory")])
    compiled.args.torch_compile, compiled.args.torch_compile_backend = True, "eager"
    with pytest.raises(ConfigError, match="torch_compile=True"):
        compiled.train()
    with pytest.raises(ConfigError, match="unknown cache mode"):
        FrostlineCallback("linear", cache="disk")
    with pytest.raises(ConfigError, match="cache_memory_mb"):
        FrostlineCallback("linear", cache="auto", cache_memory_mb=0)


def test_training_data_without_a_length_needs_the_epoch_given_not_made_up(tmp_path):
    """The Trainer counts no epochs over an iterable dataset (its num_train_epochs is sys.maxsize):
    a method that counts epochs must be told their length, not handed a one-step epoch."""
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(Reviews().items)

    def trainer(out, frost):
        t = _trainer(out, [frost])
        t.train_dataset = Stream()
        return t

    with pytest.raises(ConfigError, match="no length.*policy_kwargs"):
        trainer(tmp_path / "a", FrostlineCallback("smartfrz")).train()
    frost = FrostlineCallback("smartfrz", policy_kwargs={"steps_per_epoch": 4})
    _train_quietly(trainer(tmp_path / "b", frost))
    assert frost.freezer.policy.clock.steps_per_epoch == 4
    frost = FrostlineCallback("linear", policy_kwargs=HALF_EARLY)  # counts the run, not epochs: needs nothing
    _train_quietly(trainer(tmp_path / "c", frost))
    assert frost.freezer.frozen


def test_a_resume_from_the_trainer_does_not_use_is_said(tmp_path):
    frost = FrostlineCallback(LinearFreezing(**HALF_EARLY), resume_from=tmp_path / "nowhere")
    assert any("resume_from" in m and "step 0" in m for m in _train_quietly(_trainer(tmp_path / "r", [frost])))


def test_ddp_that_would_wait_for_frozen_units_gradients_is_refused_before_training():
    """Under DDP without find_unused_parameters, the first freeze would stop training inside DDP."""
    from frostline.integrations.hf import _check_ddp_lets_units_freeze

    def args(**kw):
        return transformers.TrainingArguments(output_dir="unused", use_cpu=True, report_to=[], **kw)

    with pytest.raises(ConfigError, match="ddp_find_unused_parameters=True"):
        _check_ddp_lets_units_freeze(args(ddp_find_unused_parameters=False), _model(), 2)
    checkpointing = _model()
    checkpointing.gradient_checkpointing_enable()
    with pytest.raises(ConfigError, match="gradient checkpointing"):
        _check_ddp_lets_units_freeze(args(), checkpointing, 2)
    _check_ddp_lets_units_freeze(args(), _model(), 2)  # the Trainer's default for a transformers model: on
    _check_ddp_lets_units_freeze(args(ddp_find_unused_parameters=True), checkpointing, 2)


DDP_SCRIPT = '''
import os, sys, json, torch
sys.path.insert(0, sys.argv[2])
import test_integration_hf as t
from frostline.integrations.hf import FrostlineCallback
frost = FrostlineCallback("autofreeze", policy_kwargs={"intervals": 6})
trainer = t._trainer(sys.argv[1], [frost])
trainer.args.ddp_backend, trainer.args.save_strategy = "gloo", "no"
trainer.train()
# one file per rank: two processes printing to one pipe can interleave their lines
with open(f"{sys.argv[1]}-rank{os.environ['RANK']}.json", "w") as f:
    json.dump({"rank": int(os.environ["RANK"]), "frozen": [(e.unit, e.step) for e in frost.freezer.timeline],
               "sum": sum(float(p.detach().double().sum()) for p in trainer.model.parameters())}, f)
# leave the gloo group once the Trainer's DDP is garbage: torn down at interpreter exit instead, a
# rank aborts now and then (about one run in eight here, with or without the callback)
import gc
del trainer, frost
gc.collect()
torch.distributed.destroy_process_group()
'''


def test_under_torchrun_every_process_freezes_what_rank_0_decided(tmp_path):
    """AutoFreeze reads each process's own gradients: without rank 0's decision for all, the
    replicas froze different units and their weights drifted apart."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from test_distributed import free_port

    script = tmp_path / "ddp_autofreeze.py"
    script.write_text(DDP_SCRIPT)
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent), str(here)]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                           "127.0.0.1", "--master_port", str(free_port()), str(script), str(tmp_path / "out"),
                           str(here)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"out-rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["rank"] for r in results] == [0, 1]
    assert results[0]["frozen"] and results[0]["frozen"] == results[1]["frozen"]
    assert results[0]["sum"] == results[1]["sum"]


def test_gradient_checkpointing_runs_no_backward_through_the_frozen_prefix(tmp_path):
    """transformers makes the embeddings' output require a gradient for checkpointing; with the
    prefix frozen, that sent backward through every frozen layer. The run must train as without
    checkpointing, with no gradient reaching a frozen unit's output after it froze."""
    runs = {}
    for checkpointing, cache in ((False, "off"), (True, "off"), (True, "memory")):
        frost = FrostlineCallback(LinearFreezing(**HALF_EARLY), cache=cache)
        model = _model()
        reached = []

        def count(module, inputs, output, frost=frost, reached=reached):
            hidden = output[0] if isinstance(output, tuple) else output
            if frost.freezer is not None and frost.freezer.units and 1 in frost.freezer.frozen and hidden.requires_grad:
                hidden.register_hook(lambda g: reached.append(1))

        model.bert.encoder.layer[0].register_forward_hook(count)
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert model._require_grads_hooks
        trainer = _trainer(tmp_path / f"{checkpointing}-{cache}", [frost], model=model)
        trainer.args.save_strategy = "no"
        assert not _train_quietly(trainer)  # the cache serves it too: the flag is no sign of a trainable prefix
        assert frost.freezer.frozen_prefix >= 2 and not reached
        assert cache == "off" or frost.cached.cache.stats["hits"] > 0
        runs[checkpointing, cache] = {n: p.detach().clone() for n, p in model.named_parameters()}
        assert getattr(model, "_require_grads_hooks", None) or not checkpointing  # transformers' hooks are back
    for run in ((True, "off"), (True, "memory")):
        assert all(torch.allclose(runs[run][n], p, rtol=0, atol=1e-6) for n, p in runs[False, "off"].items()), run
