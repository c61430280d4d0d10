"""FrostlineCallback added to Trainers set up the way users set them up: TrainingArguments
combinations beyond the defaults (gradient accumulation, clipping, warmup and every kind of LR
schedule, ReduceLROnPlateau, evaluation during training, bf16 on the CPU, epochs instead of
max_steps, optimizers by name or passed in, PEFT, model_init, a second ``trainer.train()``, padding
collators with the cache). Each checks what matters: frozen units stop bit for bit and leave the
optimizer, a resumed run ends as the uninterrupted one, and what cannot work is said."""

import math
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import frostline  # noqa: E402
from frostline import ConfigError, FreezeOut, LinearFreezing  # noqa: E402
from frostline.integrations.hf import FrostlineCallback  # noqa: E402
from test_integration_hf import Reviews, _model, _texts  # noqa: E402

pytestmark = pytest.mark.integration

STEPS, SAVE_AT, LR = 12, 6, 1e-3
HALF_EARLY = dict(freeze_start=0.2, freeze_level=0.5, freeze_end=0.3)  # half the units frozen by step 4 of 12


def _freezeout():
    return FrostlineCallback(FreezeOut(t_0=0.3, schedule="linear"))


def _linear(cache="off"):
    return FrostlineCallback(LinearFreezing(**HALF_EARLY), cache=cache)


class Watch(transformers.TrainerCallback):
    """Runs after FrostlineCallback: each unit's parameters when it froze, every step's lrs, and
    whether the frozen units' modules stayed in eval mode through the Trainer's model.train()."""

    def __init__(self, frost):
        self.frost, self.at_freeze, self.lrs, self.eval_mode = frost, {}, [], []

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        freezer = self.frost.freezer
        for i in freezer.frozen:
            self.at_freeze.setdefault(i, [p.detach().clone() for p in freezer.units[i].params])
        self.lrs.append((state.global_step, [(g.get("frostline_unit"), g["lr"]) for g in optimizer.param_groups],
                         freezer.policy.lr_scales(freezer.progress)))
        self.eval_mode.append(all(not m.training for i in freezer.frozen for m in freezer.units[i].modules))


def _train(out, frost, *, model=None, data=None, resume=None, trainer_kwargs=None, **arguments):
    """A Trainer with ``frost`` (and a :class:`Watch` if it is a FrostlineCallback), trained:
    (trainer, watch, frostline's warnings)."""
    torch.set_num_threads(1)  # every run with the same threads, so sums match bit for bit
    settings = dict(output_dir=str(out), per_device_train_batch_size=8, max_steps=STEPS, learning_rate=LR,
                    save_strategy="no", use_cpu=True, seed=0, report_to=[], disable_tqdm=True, logging_strategy="no")
    settings.update(arguments)
    watch = Watch(frost) if isinstance(frost, FrostlineCallback) else None
    trainer = transformers.Trainer(model=model if model is not None else _model(),
                                   args=transformers.TrainingArguments(**settings),
                                   train_dataset=data if data is not None else Reviews(),
                                   callbacks=[frost] + ([watch] if watch else []),
                                   **(trainer_kwargs or {}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train(resume_from_checkpoint=resume)
    return trainer, watch, [str(w.message) for w in caught if "frostline" in str(w.message)]


def _frozen_stopped(trainer, frost, watch):
    """Every frozen unit: not one bit changed since it froze, out of the optimizer with no state,
    no gradient, eval mode; and at least one unit froze while something else still trained."""
    freezer = frost.freezer
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert freezer.frozen and len(freezer.frozen) < len(freezer.units)
    for i in freezer.frozen:
        for before, p in zip(watch.at_freeze[i], freezer.units[i].params):
            assert torch.equal(before, p), freezer.unit_names[i]
            assert not p.requires_grad and p.grad is None and id(p) not in held and p not in optimizer.state
    assert all(watch.eval_mode)


def _same_weights(a, b):
    for (name, x), y in zip(a.model.named_parameters(), b.model.parameters()):
        assert torch.equal(x, y), name


def _trains_and_resumes(tmp_path, make_callback, **kw):
    """Train with saves, check the frozen units, resume from the middle: the same end, bit for bit."""
    kw = dict(dict(save_strategy="steps", save_steps=SAVE_AT), **kw)
    frost = make_callback()
    full, watch, said = _train(tmp_path, frost, **kw)
    _frozen_stopped(full, frost, watch)
    again = make_callback()
    resumed, _, said_again = _train(tmp_path, again, resume=str(tmp_path / f"checkpoint-{SAVE_AT}"), **kw)
    assert again.freezer.timeline == frost.freezer.timeline
    _same_weights(full, resumed)
    return frost, watch, said + said_again, full


@pytest.mark.parametrize("arguments", [
    dict(gradient_accumulation_steps=2, max_grad_norm=0.5, lr_scheduler_type="cosine", warmup_steps=2),
    dict(lr_scheduler_type="constant_with_warmup", warmup_steps=0.2),  # a fraction: transformers 5's warmup ratio
    dict(lr_scheduler_type="cosine_with_restarts", warmup_steps=2, lr_scheduler_kwargs={"num_cycles": 2}),
    dict(lr_scheduler_type="polynomial", warmup_steps=2, lr_scheduler_kwargs={"power": 2.0}),
    dict(optim="sgd", label_smoothing_factor=0.1),
    dict(optim="adafactor", bf16=True),
], ids=["accumulate-clip-cosine", "constant-warmup", "restarts", "polynomial", "sgd-smoothing", "adafactor-bf16"])
def test_freezeout_under_other_schedules_and_optimizers_composes_lrs_and_resumes(tmp_path, arguments):
    """Every group's lr is the Trainer's schedule times the unit's FreezeOut scale (the schedule as
    a run without frostline sees it), the frozen units stop, and a resume ends bit for bit alike."""
    plain = []

    class Schedule(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, optimizer=None, **kwargs):
            plain.append(optimizer.param_groups[0]["lr"])

    _train(tmp_path / "plain", Schedule(), **arguments)
    _, watch, said, _ = _trains_and_resumes(tmp_path / "frozen", _freezeout, **arguments)
    assert not said
    for (step, groups, scales), want in zip(watch.lrs, plain, strict=True):
        for unit, lr in groups:
            assert lr == pytest.approx(want * (1.0 if unit is None else scales[unit]), rel=1e-9, abs=1e-15), (step, unit)


def test_reduce_lr_on_plateau_steps_on_evaluation_and_resumes(tmp_path):
    """The Trainer steps ReduceLROnPlateau with the eval loss, outside the training step: its
    reductions (forced at every evaluation: no loss beats the threshold) reach every unit's group,
    times its scale."""
    arguments = dict(lr_scheduler_type="reduce_lr_on_plateau", eval_strategy="steps", eval_steps=2,
                     lr_scheduler_kwargs={"patience": 0, "factor": 0.5, "threshold": 10.0},
                     trainer_kwargs=dict(eval_dataset=Reviews()))
    _, watch, said, _ = _trains_and_resumes(tmp_path, _freezeout, **arguments)
    assert not said
    for step, groups, scales in watch.lrs:
        want = LR * 0.5 ** ((step - 1) // 2)  # evaluations at steps 2, 4, ...: each halves it
        for unit, lr in groups:
            assert lr == pytest.approx(want * (1.0 if unit is None else scales[unit]), rel=1e-9, abs=1e-15), (step, unit)


@pytest.mark.parametrize("method", ["smartfrz", "autofreeze"])
def test_epochs_instead_of_max_steps_with_accumulation_and_a_method_by_name(tmp_path, method):
    """num_train_epochs=4 over 4 batches with gradient_accumulation_steps=2: 2 optimizer steps an
    epoch, which SmartFRZ counts its epochs in."""
    frost, _, _, _ = _trains_and_resumes(tmp_path, lambda: FrostlineCallback(method), max_steps=-1, num_train_epochs=4,
                                      gradient_accumulation_steps=2, save_steps=2)
    assert frost.freezer.total_steps == 8
    if method == "smartfrz":
        assert frost.freezer.policy.clock.steps_per_epoch == 2


def test_a_cooldown_with_warmup_and_a_custom_optimizer_and_scheduler(tmp_path):
    """optimizers=(SGD with momentum, OneCycleLR): OneCycleLR keeps its per-group values in the param
    groups, which the cool-down's per-unit split copies; a resume rebuilds both and ends alike."""
    def make():
        model = _model()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return model, (optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=STEPS))

    runs = []
    for resume in (None, "checkpoint"):
        model, optimizers = make()
        frost = FrostlineCallback(LinearFreezing(freeze_start=0.2), cooldown=3)
        runs.append(_train(tmp_path, frost, model=model, trainer_kwargs=dict(optimizers=optimizers),
                           save_strategy="steps", save_steps=SAVE_AT,
                           resume=str(tmp_path / f"checkpoint-{SAVE_AT}") if resume else None) + (frost,))
    (full, watch, _, frost), (resumed, _, _, again) = runs
    _frozen_stopped(full, frost, watch)
    assert all(e.step - e.decided_step == 3 for e in frost.freezer.timeline)
    assert again.freezer.timeline == frost.freezer.timeline
    _same_weights(full, resumed)


def test_evaluation_during_training_is_not_served_from_the_cache_nor_unfreezes(tmp_path):
    """Evaluations every 2 steps (model.eval(), then the Trainer's model.train()) between cached
    steps with accumulation; the best model loaded at the end; a resume: all as without the cache."""
    arguments = dict(eval_strategy="steps", eval_steps=2, gradient_accumulation_steps=2, save_total_limit=2,
                     trainer_kwargs=dict(eval_dataset=Reviews()))
    cached, _, said, full = _trains_and_resumes(tmp_path / "memory", lambda: _linear("memory"), **arguments)
    assert not said and cached.cached.cache.stats["hits"] > 0
    plain, _, _ = _train(tmp_path / "off", _linear(), **arguments)
    _same_weights(plain, full)
    best, _, _ = _train(tmp_path / "best", _linear("auto"), eval_strategy="steps", eval_steps=3, save_strategy="steps",
                        save_steps=3, load_best_model_at_end=True, save_total_limit=1,
                        trainer_kwargs=dict(eval_dataset=Reviews()))
    assert best.state.best_model_checkpoint


def test_a_lora_model_with_freezeout_resumes(tmp_path):
    peft = pytest.importorskip("peft")

    def callback():
        return FrostlineCallback(FreezeOut(t_0=0.3, schedule="linear"))

    def lora():
        return peft.get_peft_model(_model(), peft.LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"]))

    frost = callback()
    full, watch, _ = _train(tmp_path, frost, model=lora(), save_strategy="steps", save_steps=SAVE_AT)
    _frozen_stopped(full, frost, watch)
    again = callback()
    resumed, _, _ = _train(tmp_path, again, model=lora(), save_strategy="steps", save_steps=SAVE_AT,
                           resume=str(tmp_path / f"checkpoint-{SAVE_AT}"))
    assert again.freezer.timeline == frost.freezer.timeline
    _same_weights(full, resumed)


def test_a_trainer_built_with_model_init_freezes_its_model_and_resumes(tmp_path):
    def trainer(frost):
        args = transformers.TrainingArguments(str(tmp_path), per_device_train_batch_size=8, max_steps=STEPS,
                                              save_strategy="steps", save_steps=SAVE_AT, use_cpu=True, seed=0,
                                              report_to=[], disable_tqdm=True, logging_strategy="no")
        return transformers.Trainer(model_init=_model, args=args, train_dataset=Reviews(), callbacks=[frost])

    torch.set_num_threads(1)
    frost = _linear()
    full = trainer(frost)
    full.train()
    assert frost.freezer.model is full.model and frost.freezer.frozen
    again = _linear()
    resumed = trainer(again)
    resumed.train(resume_from_checkpoint=str(tmp_path / f"checkpoint-{SAVE_AT}"))
    assert again.freezer.timeline == frost.freezer.timeline
    _same_weights(full, resumed)


@pytest.mark.parametrize("make_callback", [_freezeout, lambda: FrostlineCallback(LinearFreezing(freeze_start=0.2),
                                                                                  cooldown=3)],
                         ids=["freezeout", "cooldown"])
def test_a_second_train_on_the_same_trainer_is_refused_before_it_trains_and_says_what_to_do(tmp_path, make_callback):
    """The Trainer keeps its optimizer across train() calls, and the first run's Freezer split its
    groups per unit (per-unit lrs) and took the frozen parameters out. A second run on it trained,
    then failed at its first checkpoint with "original param groups [...] have no group in the
    optimizer any more". It is refused before any step; the way it says works."""
    torch.set_num_threads(1)
    frost = make_callback()
    args = transformers.TrainingArguments(str(tmp_path), per_device_train_batch_size=8, max_steps=STEPS,
                                          save_strategy="steps", save_steps=SAVE_AT, use_cpu=True, seed=0,
                                          report_to=[], disable_tqdm=True, logging_strategy="no")
    trainer = transformers.Trainer(model=_model(), args=args, train_dataset=Reviews(), callbacks=[frost])
    trainer.train()
    first = frost.freezer.timeline
    weights = [p.detach().clone() for p in trainer.model.parameters()]
    with pytest.raises(ConfigError, match=r"trainer.optimizer = None and trainer.lr_scheduler = None"):
        trainer.train()
    assert all(torch.equal(w, p) for w, p in zip(weights, trainer.model.parameters()))  # not one step ran
    frostline.unfreeze(trainer.model)
    trainer.optimizer = trainer.lr_scheduler = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    assert frost.freezer.timeline == first  # every unit trained and froze again, on the same steps
    assert (tmp_path / f"checkpoint-{SAVE_AT}" / "frostline.pt").is_file()


def test_resuming_on_the_same_trainer_after_unfreezing_and_dropping_its_optimizer_is_exact(tmp_path):
    """What the guide says to do before a second train() on the same Trainer, here with a resume."""
    torch.set_num_threads(1)
    frost = _freezeout()
    args = transformers.TrainingArguments(str(tmp_path), per_device_train_batch_size=8, max_steps=STEPS,
                                          learning_rate=LR, save_strategy="steps", save_steps=SAVE_AT, use_cpu=True,
                                          seed=0, report_to=[], disable_tqdm=True, logging_strategy="no")
    trainer = transformers.Trainer(model=_model(), args=args, train_dataset=Reviews(), callbacks=[frost])
    trainer.train()
    timeline, weights = frost.freezer.timeline, [p.detach().clone() for p in trainer.model.parameters()]
    frostline.unfreeze(trainer.model)
    trainer.optimizer = trainer.lr_scheduler = None
    trainer.train(resume_from_checkpoint=str(tmp_path / f"checkpoint-{SAVE_AT}"))
    assert frost.freezer.timeline == timeline
    assert all(torch.equal(w, p) for w, p in zip(weights, trainer.model.parameters()))


def _tokenized(padding):
    """The reviews cut to 3..13 words (so dynamic padding gives batches of different lengths),
    tokenized by the bundled all-MiniLM-L6-v2 tokenizer."""
    try:
        from frostline.lab.pretrained import minilm_dir

        tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_dir()))
    except Exception as e:  # noqa: BLE001 - the tokenizer's package not installed
        pytest.skip(f"the bundled all-MiniLM-L6-v2 tokenizer is not available ({e})")
    texts, labels = _texts(32)
    texts = [" ".join(t.split()[: 3 + (i * 7) % 11]) for i, t in enumerate(texts)]
    items = [dict(tokenizer(t, truncation=True, max_length=16, padding=padding), labels=y) for t, y in zip(texts, labels)]
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32, num_labels=2))
    return tokenizer, items, model


def test_the_cache_with_dynamic_padding_says_so_and_with_max_length_padding_serves(tmp_path):
    tokenizer, items, model = _tokenized(padding=False)
    assert len({len(i["input_ids"]) for i in items}) > 3
    dynamic = dict(data_collator=transformers.DataCollatorWithPadding(tokenizer))
    frost = _linear("auto")
    _, _, said = _train(tmp_path / "auto", frost, model=model, data=items, trainer_kwargs=dynamic)
    assert len(said) == 1 and "padding to each batch's longest" in said[0] and "pad to one length" in said[0], said
    assert 'padding="max_length" and max_length=N' in said[0]  # the fix, in the Trainer's terms
    assert frost.freezer.frozen  # freezing went on without the cache
    with pytest.raises(ConfigError, match="pad to one length"):
        _train(tmp_path / "memory", _linear("memory"), model=_tokenized(padding=False)[2], data=items,
               trainer_kwargs=dynamic)
    fixed = dict(data_collator=transformers.DataCollatorWithPadding(tokenizer, padding="max_length", max_length=16))
    runs = {}
    for cache in ("off", "auto", "memory"):
        frost = _linear(cache)
        runs[cache] = _train(tmp_path / f"fixed-{cache}", frost, model=_tokenized(padding=False)[2], data=items,
                             trainer_kwargs=fixed)[0], frost
        assert cache == "off" or frost.cached.cache.stats["hits"] > 0
    for cache in ("auto", "memory"):
        _same_weights(runs["off"][0], runs[cache][0])


def test_bf16_on_the_cpu_with_the_cache_trains_as_without_it(tmp_path):
    runs = {}
    for cache in ("off", "memory"):
        frost = _linear(cache)
        runs[cache], watch, said = _train(tmp_path / cache, frost, bf16=True)
        _frozen_stopped(runs[cache], frost, watch)
        assert not said and (cache == "off" or frost.cached.cache.stats["hits"] > 0)
    _same_weights(runs["off"], runs["memory"])
    assert not math.isnan(float(next(runs["memory"].model.parameters()).sum()))
