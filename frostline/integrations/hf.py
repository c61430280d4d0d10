"""Progressive freezing inside the Hugging Face ``Trainer``::

    from frostline.integrations.hf import FrostlineCallback
    trainer = Trainer(model, args, train_dataset=..., callbacks=[FrostlineCallback(policy="freezeout")])

The callback builds a :class:`frostline.Freezer` on the Trainer's model and optimizer when training
begins, counts progress in the Trainer's optimizer steps (``state.global_step`` out of
``state.max_steps``), keeps the Trainer's LR scheduler driving every param group that remains
(per-unit scales of FreezeOut are multiplied onto it: :meth:`Freezer.attach_scheduler`), and makes
``trainer.train(resume_from_checkpoint=...)`` exact: every checkpoint folder gets ``frostline.pt``
and its ``optimizer.pt``/``scheduler.pt`` are rewritten in the layout a fresh Trainer creates.

With ``cache="auto"`` (or ``"memory"``) the frozen prefix's forward is skipped too: the activation
cache replays what enters the first trainable unit. The Trainer does not tell the model which
samples a batch holds, so each sample is known by a digest of its own inputs
(:mod:`frostline.exploit.sample_keys`); batches must be padded to one length.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Sequence


try:
    from transformers import PreTrainedModel, TrainerCallback
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "frostline.integrations.hf needs the Hugging Face transformers and accelerate packages: "
        "pip install 'frostline[hf]'"
    ) from e

from ..errors import CheckpointError, ConfigError, FrostlineError
from ..exploit.boundary import leaves
from ..exploit.distributed import DecisionSync, sharding_refused
from ..exploit.cache import CachedPrefixModel
from ..freezer import Freezer
from ..freezer.param_groups import FROSTLINE_KEYS
from ..policies import FreezePolicy, fresh_policy
from ..atomic import atomic_torch_save
from ..loading import load_plain
from .layout import optimizer_state_in_original_layout, scheduler_state_in_original_layout
from .callback_options import checked_options
from .trainer_cache import TrainerCache, cannot_cache

#: The Freezer's state inside each ``checkpoint-<step>`` folder.
STATE_FILE = "frostline.pt"
_OPTIMIZER_FILE = "optimizer.pt"  # transformers.trainer.OPTIMIZER_NAME
_SCHEDULER_FILE = "scheduler.pt"  # transformers.trainer.SCHEDULER_NAME
#: What the Trainer passes to the model for the loss alone, changing from batch to batch (the
#: number of labelled items, the loss's normaliser): not part of a sample's key.
LOSS_ONLY_KWARGS = ("num_items_in_batch",)


class FrostlineCallback(TrainerCallback):
    """Freeze units of the Trainer's model as ``policy`` decides (a
    :class:`~frostline.policies.FreezePolicy` or a method name such as ``"freezeout"``, built when
    training begins with ``policy_kwargs`` and, for methods that count epochs such as
    ``"smartfrz"``, the Trainer's optimizer steps per epoch).

    ``units``, ``granularity``, ``freeze_head``, ``head_units`` and ``cooldown`` (optimizer steps of learning-rate
    ramp to zero before a decided unit freezes) are passed to the :class:`~frostline.Freezer`.
    On resume the Freezer's state is read from ``<output_dir>/checkpoint-<global_step>/frostline.pt``;
    ``resume_from`` (a checkpoint folder or a ``frostline.pt`` file) points elsewhere, e.g. when
    ``resume_from_checkpoint`` is not under ``output_dir``. The live Freezer is ``callback.freezer``
    (its ``timeline``, ``frozen``, ``frozen_at()``).

    ``cache``: ``"off"`` (the default), ``"auto"`` (replay a frozen prefix once its replays repay
    their copies, timed on the device, as ``frostline train --cache auto``; a model it cannot serve
    gets one warning and trains on without it) or ``"memory"`` (replay every frozen prefix; what
    it cannot serve is a :class:`~frostline.errors.ConfigError`), in at most ``cache_memory_mb``
    of host memory. Single process only, and not with ``torch_compile=True``. The live cache is
    ``callback.cached`` (its ``cache.stats``).
    """

    def __init__(
        self,
        policy: FreezePolicy | str,
        *,
        policy_kwargs: dict | None = None,
        units: Sequence | None = None,
        granularity: str = "block",
        freeze_head: bool = False,
        head_units: int = 1,
        resume_from: str | os.PathLike | None = None,
        cooldown: int = 0,
        cache: str = "off",
        cache_memory_mb: int = 4096,
    ):
        self.policy, self.policy_kwargs, self.cooldown = checked_options(policy, policy_kwargs, cooldown, cache,
                                                                         cache_memory_mb, units=units,
                                                                         freeze_head=freeze_head, head_units=head_units)
        self.units = units
        self.granularity = granularity
        self.freeze_head = freeze_head
        self.head_units = head_units
        self.resume_from = resume_from
        self.cache, self.cache_memory_mb = cache, cache_memory_mb
        self.freezer: Freezer | None = None
        self._cache: TrainerCache | None = None
        self._input_grads: _InputGradsAtBoundary | None = None

    @property
    def cached(self) -> CachedPrefixModel | None:
        """The activation cache serving this training (None: off, or not built yet)."""
        return self._cache.cached if self._cache is not None else None

    # -- hooks ---------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        if model is None or optimizer is None:
            raise FrostlineError("FrostlineCallback needs the Trainer's model and optimizer at on_train_begin")
        optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer
        _refuse_an_optimizer_split_by_an_earlier_run(optimizer)
        loader = kwargs.get("train_dataloader")
        per_epoch = self._steps_per_epoch(loader, args)
        _refuse_sharded_trainer(args)
        processes = int(getattr(args, "world_size", 1) or 1)
        if processes > 1:
            _check_ddp_lets_units_freeze(args, model, processes)
        self.freezer = Freezer(
            model, optimizer, fresh_policy(self.policy, self.policy_kwargs, per_epoch), int(state.max_steps),
            units=self.units, granularity=self.granularity, freeze_head=self.freeze_head, head_units=self.head_units,
            cooldown=self.cooldown,
            # every process decides from its own batches (AutoFreeze's gradients, SmartFRZ's timing): rank 0's
            # decision must be everyone's, or the replicas freeze different units and drift apart
            # the Trainer's DDP finds unused parameters (checked above), so a freeze needs no rebuild
            sync=DecisionSync(on_freeze=_no_rebuild) if processes > 1 else None,
        )
        if self.cache != "off":
            self._route_through_cache(model, args, state, loader, per_epoch)
        if lr_scheduler is not None:
            self.freezer.attach_scheduler(lr_scheduler)
        self._input_grads = _InputGradsAtBoundary(model)
        if state.global_step > 0:
            self._resume(args, state)
            self._input_grads.follow(self.freezer)
        elif self.resume_from is not None:
            warnings.warn(f"frostline: resume_from={str(self.resume_from)!r} is not used: the Trainer starts from step 0 (pass "
                          "resume_from_checkpoint to trainer.train() to resume)", stacklevel=2)

    def on_step_end(self, args, state, control, **kwargs):
        freezer = self._require_freezer()
        if freezer.step_count != state.global_step - 1:
            warnings.warn(
                f"the Freezer counted {freezer.step_count} steps but the Trainer is at step {state.global_step - 1}; "
                "following the Trainer", stacklevel=2)
            freezer.step_count = state.global_step - 1
        if freezer.step():
            self._input_grads.follow(freezer)

    def on_train_end(self, args, state, control, **kwargs):
        if self.freezer is not None:
            self.freezer.close()  # removes signal hooks (AutoFreeze's) from the model; the frozen units stay
            self._input_grads.close()
        if self._cache is not None:
            self._cache.finish()

    def on_save(self, args, state, control, **kwargs):
        freezer = self._require_freezer()
        if not args.should_save:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not folder.is_dir():
            warnings.warn(f"no checkpoint folder {folder}: the frostline state was not saved", stacklevel=2)
            return
        atomic_torch_save(freezer.state_dict(), folder / STATE_FILE)
        path = folder / _OPTIMIZER_FILE
        if path.exists():
            saved = load_plain(path)
            atomic_torch_save(optimizer_state_in_original_layout(freezer, saved), path)
        path = folder / _SCHEDULER_FILE
        if path.exists() and freezer.schedulers.attached:
            saved = load_plain(path)
            atomic_torch_save(scheduler_state_in_original_layout(freezer, saved), path)

    # -- helpers -------------------------------------------------------------------------
    @staticmethod
    def _steps_per_epoch(loader, args) -> int | None:
        """The Trainer's optimizer steps per epoch; None for training data without a length (the
        Trainer itself then counts no epochs: its ``num_train_epochs`` is ``sys.maxsize``)."""
        try:
            return math.ceil(len(loader) / max(1, args.gradient_accumulation_steps))
        except TypeError:  # no loader, or an iterable one without a length
            return None

    def _route_through_cache(self, model, args, state, loader, per_epoch: int | None) -> None:
        """Install the activation cache on the model's forward, or say why it cannot be."""
        why = None
        if getattr(args, "world_size", 1) > 1:
            why = (f"training runs in {args.world_size} processes, and each sees other samples every epoch; "
                   "the Trainer's cache is single-process")
        if getattr(args, "torch_compile", False):
            why = ("the Trainer compiles the model (torch_compile=True), and a compiled forward cannot be routed "
                   "through the cache; train without torch_compile to use it")
        try:
            num_samples = len(loader.dataset)
        except (AttributeError, TypeError):
            num_samples = 0
        if not num_samples or per_epoch is None:
            why = why or "the training set's length is unknown (an iterable dataset)"
        if why:
            cannot_cache(self.cache, why)
            return
        self._cache = TrainerCache(model, self.freezer, self.cache, self.cache_memory_mb, num_samples, per_epoch,
                                   int(state.max_steps), ignore=LOSS_ONLY_KWARGS)

    def _require_freezer(self) -> Freezer:
        if self.freezer is None:
            raise FrostlineError("FrostlineCallback was not started: pass it to Trainer(callbacks=[...])")
        return self.freezer

    def _resume(self, args, state) -> None:
        where = Path(self.resume_from) if self.resume_from is not None else (
            Path(args.output_dir) / f"checkpoint-{state.global_step}")
        path = where / STATE_FILE if where.is_dir() or where.suffix != ".pt" else where
        if not path.is_file():
            raise CheckpointError(
                f"resuming at step {state.global_step} but there is no frostline state at {path}: pass "
                "FrostlineCallback(..., resume_from='<checkpoint folder>') when the checkpoint is not "
                f"{Path(args.output_dir) / f'checkpoint-{state.global_step}'}, or resume from a checkpoint "
                "saved with the callback")
        saved = load_plain(path, lambda e: CheckpointError(f"{path} is unreadable ({type(e).__name__}: {e})"))
        if isinstance(saved, dict) and saved.get("step") != state.global_step:
            raise CheckpointError(
                f"{path} is from step {saved.get('step')}, the Trainer resumed at step {state.global_step}: "
                "point resume_from at the matching checkpoint")
        self.freezer.load_state_dict(saved)


def _refuse_sharded_trainer(args) -> None:
    """FSDP or DeepSpeed as the Trainer is set up to run them (``fsdp=``, ``deepspeed=``, or an
    ``accelerate launch`` configuration): the Freezer refuses a model wrapped in them
    (:func:`~frostline.exploit.distributed.sharding`), and this says so in the Trainer's terms,
    whatever the model the Trainer hands over looks like yet."""
    wrapper = ("FSDP" if getattr(args, "fsdp", None) or _env_flag("ACCELERATE_USE_FSDP") else
               "DeepSpeed" if getattr(args, "deepspeed", None) or getattr(args, "deepspeed_plugin", None)
               or _env_flag("ACCELERATE_USE_DEEPSPEED") else None)
    if wrapper is not None:
        raise sharding_refused(f"the Trainer is set up to train under {wrapper}",
                               f"Train without {wrapper} (one device, or DDP under torchrun) to freeze with frostline")


def _refuse_an_optimizer_split_by_an_earlier_run(optimizer) -> None:
    """A second ``trainer.train()`` on the same Trainer reuses its optimizer, which the first run's
    Freezer changed: frozen parameters left it and, with per-unit learning rates (FreezeOut, a
    cool-down), every group was split per unit. A Freezer built on those groups trains, then fails at
    the first checkpoint (a fresh Trainer could not load that layout); say so before training."""
    if any(key in group for group in optimizer.param_groups for key in FROSTLINE_KEYS):
        raise ConfigError(
            "the Trainer's optimizer was changed by an earlier FrostlineCallback run (its param groups are split per "
            "unit, frozen parameters left it): a second trainer.train() on the same Trainer reuses it. Set "
            "trainer.optimizer = None and trainer.lr_scheduler = None before calling trainer.train() again, so that "
            "the Trainer builds them afresh (call frostline.unfreeze(trainer.model) first to train the frozen units "
            "again), or build a new Trainer")


def _env_flag(name: str) -> bool:
    """An ``accelerate launch`` switch as accelerate reads it (``strtobool``)."""
    return os.environ.get(name, "false").strip().lower() in ("1", "true", "yes", "y", "on", "t")


def _no_rebuild(_newly: list[int]) -> None:
    """What the Trainer's DDP needs after a freeze: nothing (it runs with find_unused_parameters)."""


def _check_ddp_lets_units_freeze(args, model, processes: int) -> None:
    """The Trainer's DDP wrapper waits for a gradient of every parameter it was built with unless
    ``find_unused_parameters`` is on, so the first freeze would stop training inside DDP; say so
    before training. The flag as the Trainer resolves it: ``ddp_find_unused_parameters``, else off
    for a transformers model that checkpoints its activations, else on."""
    flag = getattr(args, "ddp_find_unused_parameters", None)
    if flag is None:
        checkpointing = any(getattr(model, name, False) is True for name in
                            ("is_gradient_checkpointing", "is_activation_checkpointing")) or any(
            getattr(args, name, False) is True for name in ("gradient_checkpointing", "activation_checkpointing"))
        flag = not (isinstance(model, PreTrainedModel) and checkpointing)
    if not flag:
        raise ConfigError(
            f"training runs in {processes} processes with find_unused_parameters off in DDP (ddp_find_unused_parameters"
            f"={getattr(args, 'ddp_find_unused_parameters', None)}; the Trainer turns it off for gradient checkpointing): "
            "after the first freeze DDP would wait for the frozen units' gradients and stop; pass "
            "TrainingArguments(ddp_find_unused_parameters=True)")


class _InputGradsAtBoundary:
    """Keeps gradient checkpointing from running backward through the frozen prefix.

    For gradient checkpointing (and PEFT), transformers makes the input embeddings' output require
    a gradient (``enable_input_require_grads``), so that a checkpointed layer whose own input needs
    no gradient still gets its weights' gradients. With a frozen prefix that flag makes backward go
    through every frozen layer (recomputing each checkpointed one first), for gradients nothing
    uses. Once a prefix is frozen, the flag moves to the prefix's output: the first trainable unit
    still receives an input that requires a gradient, backward stops there. The model gets
    transformers' own hooks back when training ends."""

    def __init__(self, model):
        self.model = model
        self.moved = False  # transformers' hooks were taken off
        self.handles: list = []
        self.prefix = 0

    def follow(self, freezer: Freezer) -> None:
        """Move the flag to the end of the frozen prefix, if transformers set it and the prefix grew."""
        k = freezer.frozen_prefix
        if k == 0 or k == self.prefix or not (self.moved or getattr(self.model, "_require_grads_hooks", None)):
            return
        if not self.moved:
            self.model.disable_input_require_grads()
            self.moved = True
        for h in self.handles:
            h.remove()
        self.handles = [m.register_forward_hook(_require_grad) for m in freezer.units[k - 1].modules]
        self.prefix = k

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles, self.prefix = [], 0
        if self.moved:
            self.model.enable_input_require_grads()
            self.moved = False


def _require_grad(module, inputs, output) -> None:
    """A frozen unit's outputs computed without a graph become inputs that require a gradient."""
    for _, t in leaves(output):
        if t.is_floating_point() and not t.requires_grad:
            t.requires_grad_(True)
