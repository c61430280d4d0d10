"""PyTorch Lightning integration: progressive freezing as a ``Callback``.

::

    from frostline.integrations.lightning import FrostlineCallback
    trainer = L.Trainer(callbacks=[FrostlineCallback(policy="freezeout")])

Hooks (Lightning 2.x; ``pytorch_lightning`` works too):

* ``on_train_start`` -- the optimizer exists, the model is on its device and wrapped, and on a
  resume Lightning has already loaded the optimizer and scheduler states: the :class:`Freezer` is
  made here (and a saved Freezer state re-applied). Units are traced during the first training
  batch (``on_before_backward`` ends the trace, before the first optimizer step) unless
  ``units=`` names them.
* ``on_train_batch_end`` -- ``freezer.step()`` once per *optimizer* step: only when
  ``trainer.global_step`` advanced, so gradient accumulation steps the Freezer once per
  ``accumulate_grad_batches`` batches. Manual optimization works the same (the global step counts
  the steps of ``self.optimizers()``); a training_step that does not step once a batch is told to
  give the Trainer ``max_steps``, since Lightning counts such a run's length in batches.
* ``state_dict``/``load_state_dict`` -- the Freezer state travels in ``checkpoint["callbacks"]``.
  ``on_save_checkpoint`` rewrites ``checkpoint["optimizer_states"]`` and ``["lr_schedulers"]``
  into the optimizer's *original* layout (frozen parameters back in their groups, FreezeOut's
  per-unit groups merged), because on resume Lightning loads them into a fresh optimizer made by
  ``configure_optimizers`` before any callback can change it.
* DDP (``strategy="ddp"``): decisions go through :class:`frostline.exploit.distributed.DecisionSync`
  (rank 0's decision is every rank's; a rank that diverged raises ``DistributedError``) and after
  each freeze the ``DistributedDataParallel`` wrapper (``trainer.strategy.model``) is rebuilt on
  every rank over the parameters that still train, so frozen parameters stop being all-reduced
  and DDP's reducer never waits for a gradient that will not come.
* ``cache="auto"``/``"memory"`` -- the frozen prefix's forward is skipped too: the forward of the
  module holding every unit (the LightningModule, or its ``self.net``) is routed through the
  activation cache, each sample keyed by its inputs (:mod:`frostline.integrations.trainer_cache`).
  ``training_step`` must call that module; one that does not is told so at its first batch.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

from ..errors import ConfigError, FrostlineError
from ..exploit.cache import compiled_whole
from ..freezer import Freezer
from ..policies import FreezePolicy, fresh_policy, policy_class
from .callback_options import checked_options
from .trainer_cache import TrainerCache, cannot_cache


def _import_lightning():
    try:
        import lightning.pytorch as pl  # noqa: F401

        return pl
    except ImportError:
        pass
    try:
        import pytorch_lightning as pl  # noqa: F401

        return pl
    except ImportError:
        raise ImportError(
            "frostline.integrations.lightning needs PyTorch Lightning: pip install 'frostline[lightning]' "
            "(or pip install lightning)"
        ) from None


_pl = _import_lightning()


class FrostlineCallback(_pl.Callback):
    """Progressive layer freezing inside a Lightning ``Trainer``.

    ``policy``: a :class:`~frostline.FreezePolicy` or a method name for
    :func:`frostline.create_policy` (then ``policy_kwargs`` are its hyperparameters; a method that
    counts epochs, such as ``"smartfrz"``, is built at train start with the trainer's optimizer
    steps per epoch).
    ``units``/``granularity``/``freeze_head``/``head_units``/``signals``/``cooldown`` go to :class:`~frostline.Freezer`
    (``cooldown``: optimizer steps of learning-rate ramp to zero before a decided unit freezes).
    ``units`` are module names relative to the LightningModule (e.g. ``"net.block1_1"``); without
    them the units are traced from the first training batch. The run length the policy sees is
    ``trainer.estimated_stepping_batches`` optimizer steps. One optimizer per LightningModule.
    ``sync_ranks`` (default: whenever more than one process trains) uses
    :class:`~frostline.exploit.distributed.DecisionSync`; ``rebuild_ddp`` re-wraps DDP after a freeze.

    ``cache``: ``"off"`` (the default), ``"auto"`` (replay a frozen prefix once its replays repay
    their copies, as ``frostline train --cache auto``; what it cannot serve gets one warning and
    trains on without it) or ``"memory"`` (replay every frozen prefix; what it cannot serve is a
    :class:`~frostline.errors.ConfigError`), in at most ``cache_memory_mb`` of host memory. One
    process, one training DataLoader, no ``torch.compile`` around the units; inputs must be the
    same for a sample every epoch (no random augmentation). The live cache is ``callback.cached``
    (its ``cache.stats``).
    """

    def __init__(
        self,
        policy: FreezePolicy | str = "linear",
        *,
        policy_kwargs: dict[str, Any] | None = None,
        units: Sequence | None = None,
        granularity: str = "block",
        freeze_head: bool = False,
        head_units: int = 1,
        signals: dict[str, Any] | None = None,
        sync_ranks: bool | None = None,
        rebuild_ddp: bool = True,
        cooldown: int = 0,
        cache: str = "off",
        cache_memory_mb: int = 4096,
    ):
        super().__init__()
        self.policy, self.policy_kwargs, self.cooldown = checked_options(policy, policy_kwargs, cooldown, cache,
                                                                         cache_memory_mb, units=units,
                                                                         freeze_head=freeze_head, head_units=head_units)
        self.units = units
        self.granularity = granularity
        self.freeze_head = freeze_head
        self.head_units = head_units
        self.signals = signals
        self.sync_ranks = sync_ranks
        self.rebuild_ddp = rebuild_ddp
        self.freezer: Freezer | None = None
        #: DDP wrappers made after freezes (on every rank).
        self.ddp_rebuilds = 0
        self._pending_state: dict[str, Any] | None = None
        self._last_global_step = 0
        self._awaiting_trace = False
        self._warned_manual = False  # a manual training_step that does not step once a batch (said once a fit)
        self._start_step = 0
        self._trainer = None
        self.cache, self.cache_memory_mb = cache, cache_memory_mb
        self._cache: TrainerCache | None = None
        self._cache_plan: tuple[int, int, int] | None = None  # (samples, steps per epoch, steps) until installed
        self._calls_before: int | None = None  # the routed forward's training calls when this batch began
        self._holder_name = ""  # the module whose forward the cache serves, relative to the LightningModule

    # -- set-up -----------------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        return f"FrostlineCallback[{policy_class(self.policy).name}]"

    def _optimizer(self, trainer):
        optimizers = trainer.optimizers
        if len(optimizers) != 1:
            raise ConfigError(
                f"FrostlineCallback supports exactly one optimizer, configure_optimizers returned {len(optimizers)}")
        return optimizers[0]

    def _make_sync(self, trainer):
        distributed = trainer.world_size > 1
        if self.sync_ranks is False or not (distributed or self.sync_ranks):
            return None
        from ..exploit.distributed import DecisionSync

        return DecisionSync(on_freeze=self._on_freeze)

    def _check_strategy(self, trainer) -> None:
        name = type(trainer.strategy).__name__
        if any(k in name for k in ("FSDP", "DeepSpeed", "ModelParallel", "XLA")):
            raise ConfigError(
                f"FrostlineCallback supports single-device training and DDP, not {name}: sharded strategies "
                "flatten or shard parameters, so a unit cannot leave the optimizer on its own")

    def on_train_start(self, trainer, pl_module) -> None:
        self._check_strategy(trainer)
        self._trainer = trainer
        self.ddp_rebuilds = 0
        self._warned_manual = False
        optimizer = self._optimizer(trainer)
        total_steps = trainer.estimated_stepping_batches
        if not math.isfinite(total_steps) or total_steps <= 0:
            raise ConfigError(
                "FrostlineCallback needs a known run length: give the Trainer max_epochs or max_steps "
                f"(estimated_stepping_batches is {total_steps})")
        total_steps = int(total_steps)
        self._last_global_step = trainer.global_step
        per_epoch = self._steps_per_epoch(trainer)
        policy = fresh_policy(self.policy, self.policy_kwargs, per_epoch)
        self._cache, self._cache_plan, self._calls_before = None, None, None
        if self.cache != "off":
            self._cache_plan = self._plan_cache(trainer, per_epoch, total_steps)
        common = dict(granularity=self.granularity, freeze_head=self.freeze_head, head_units=self.head_units,
                      sync=self._make_sync(trainer), signals=self.signals, cooldown=self.cooldown)
        self._start_step = 0
        self._awaiting_trace = False
        if self._pending_state is not None:
            # resume: Lightning has loaded the optimizer and schedulers (original layout, written
            # by on_save_checkpoint); take the frozen parameters back out, split groups again,
            # restore the policy.
            state, self._pending_state = self._pending_state, None
            # the saved units are the run's own, head already merged (head_units would merge it again)
            self.freezer = Freezer(pl_module, optimizer, policy, total_steps, units=state["units"],
                                   **{**common, "head_units": 1})
            self._attach_schedulers(trainer)
            self.freezer.load_state_dict(state)
            if self.freezer.step_count != trainer.global_step:
                raise FrostlineError(
                    f"the checkpoint's Freezer is at step {self.freezer.step_count} but the trainer at "
                    f"global step {trainer.global_step}: the checkpoint was not written by this callback's run")
            if self.freezer.frozen and self.rebuild_ddp:
                self._rebuild_ddp()
            self._install_cache()
            return
        if trainer.global_step > 0:
            warnings.warn(
                f"resuming at global step {trainer.global_step} from a checkpoint without frostline state: the "
                "policy starts there with nothing frozen", stacklevel=2)
            self._start_step = trainer.global_step
        # without units, the Freezer traces them from the first training forward (finished in
        # on_before_backward: Lightning may never call the LightningModule's own forward)
        self.freezer = Freezer(pl_module, optimizer, policy, total_steps, units=self.units, **common)
        self._awaiting_trace = not self.freezer.ready
        if not self._awaiting_trace:
            self._started()

    @staticmethod
    def _steps_per_epoch(trainer) -> int | None:
        """The trainer's optimizer steps per epoch (a fresh policy is built with them at every fit:
        a policy's history must not leak from one fit into the next); None for training data
        without a length, whose epochs no one can count."""
        batches = trainer.num_training_batches
        if isinstance(batches, (int, float)) and math.isfinite(batches) and batches > 0:
            return math.ceil(batches / max(1, trainer.accumulate_grad_batches))
        return None

    def _started(self) -> None:
        self.freezer.step_count = self._start_step
        self._attach_schedulers(self._trainer)
        self._install_cache()

    # -- the activation cache -----------------------------------------------------------------
    @property
    def cached(self):
        """The :class:`~frostline.exploit.cache.CachedPrefixModel` serving this fit (None: off, not
        built yet, or refused)."""
        return self._cache.cached if self._cache is not None else None

    def _plan_cache(self, trainer, per_epoch: int | None, total_steps: int) -> tuple[int, int, int] | None:
        """What the cache needs to know of the run, or None (said) when it cannot serve it."""
        why = None
        if trainer.world_size > 1:
            why = (f"training runs in {trainer.world_size} processes, and each sees other samples every epoch; "
                   "the callback's cache is single-process")
        loader = trainer.train_dataloader
        try:
            num_samples = len(loader.dataset)
        except (AttributeError, TypeError):
            num_samples, why = 0, why or ("the training data is not one DataLoader over a dataset of known length "
                                          f"(got {type(loader).__name__})")
        if per_epoch is None:
            why = why or "the training data has no length, so the steps of an epoch are unknown"
        if why:
            cannot_cache(self.cache, why)
            return None
        return num_samples, per_epoch, total_steps

    def _install_cache(self) -> None:
        """Route the forward of the module holding every unit through the cache, once the units are known."""
        if self._cache_plan is None:
            return
        (num_samples, per_epoch, total_steps), self._cache_plan = self._cache_plan, None
        module = self._trainer.lightning_module
        name, holder = _unit_holder(module, self.freezer.units)
        parts = name.split(".") if name else []
        path = [module] + [module.get_submodule(".".join(parts[:i + 1])) for i in range(len(parts))]
        if getattr(module, "_compiler_ctx", None) or any(compiled_whole(m) for m in path):
            cannot_cache(self.cache, "the model is compiled (torch.compile), and a compiled forward cannot be routed "
                                     "through the cache; compile nothing above the units to use it")
            return
        self._cache = TrainerCache(holder, self.freezer, self.cache, self.cache_memory_mb, num_samples, per_epoch,
                                   total_steps)
        self._holder_name = name

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._calls_before = self._cache.route.calls if self._cache is not None else None

    def _check_the_cache_saw_the_batch(self) -> None:
        """Never a silent no-op: a ``training_step`` that runs the units without calling the module
        that holds them all gives the cache nothing to key or replay."""
        route = self._cache.route if self._cache is not None else None
        if route is None or self._calls_before is None or route.stopped or route.calls > self._calls_before:
            return
        call = f"self.{self._holder_name}(...)" if self._holder_name else "self(...)"
        route.stop(f"training_step did not call {self._holder_name or 'the LightningModule'} (the module holding every "
                   f"freeze unit), so the cache never sees a batch's inputs: call {call} rather than its parts")

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        # The first training forward has run: its execution order gives the units, and the Freezer
        # exists before the first optimizer step (FreezeOut's per-unit learning rates apply to it).
        if self.freezer is not None and self.freezer.tracing and not self._awaiting_trace:
            self.freezer.finish_trace()  # units named by the user: check them against this first forward
        if not self._awaiting_trace or not trainer.training:
            if trainer.training:
                self._check_the_cache_saw_the_batch()
            return
        self._awaiting_trace = False
        self.freezer.finish_trace()  # no-op when the LightningModule's own forward ended the trace
        self._started()

    def _attach_schedulers(self, trainer) -> None:
        for config in trainer.lr_scheduler_configs:
            self.freezer.attach_scheduler(config.scheduler)

    # -- the step ----------------------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        steps = trainer.global_step - self._last_global_step
        if steps != 1 and not pl_module.automatic_optimization:
            self._check_manual_steps(trainer, steps, batch_idx)
        if steps == 0:
            return  # accumulating gradients: no optimizer step on this batch
        self._last_global_step = trainer.global_step
        if self.freezer is None or self._awaiting_trace:
            raise FrostlineError(
                "FrostlineCallback: the optimizer stepped before the first training batch's backward reached the "
                "callback (on_before_backward), where the units traced from the first forward are taken: with manual "
                "optimization call self.manual_backward(loss) rather than loss.backward(), or name the units "
                "(units=[...])")
        for _ in range(steps):
            newly = self.freezer.step()
            if newly and self.freezer.sync is None:
                self._on_freeze(newly)  # with a DecisionSync, its applied() called this already

    def _check_manual_steps(self, trainer, steps: int, batch_idx: int) -> None:
        """Manual optimization: Lightning counts the run as one optimizer step a batch unless
        ``max_steps`` bounds it, and the trainer's global step, which the Freezer follows, counts
        only the steps of the optimizer ``self.optimizers()`` returns. A training_step that steps
        less often (accumulating) or more would get a schedule planned for another run: said once."""
        if self._warned_manual or self.freezer is None or trainer.max_steps == self.freezer.total_steps:
            return
        self._warned_manual = True
        warnings.warn(
            f"frostline: with manual optimization the policy plans for trainer.estimated_stepping_batches = "
            f"{self.freezer.total_steps} optimizer steps, one a batch, but batch {batch_idx} made {steps}, so its "
            "schedule will not fit the run: give the Trainer max_steps=<the run's optimizer steps>, and step the "
            "optimizer self.optimizers() returns (the trainer's global step does not count a raw optimizer's steps)",
            stacklevel=2)

    def _on_freeze(self, newly: list[int]) -> None:
        if self.rebuild_ddp:
            self._rebuild_ddp()

    def _rebuild_ddp(self) -> None:
        """New ``DistributedDataParallel`` over the parameters still training (every rank, same
        step: the decision is synchronised). The old wrapper is retired first so it never sees
        another gradient."""
        trainer = self._trainer
        if trainer is None:
            return
        from torch.nn.parallel import DistributedDataParallel

        from ..exploit.distributed import retire_ddp

        strategy = trainer.strategy
        wrapper = getattr(strategy, "model", None)
        if not isinstance(wrapper, DistributedDataParallel) or not hasattr(strategy, "configure_ddp"):
            return
        module = strategy.lightning_module
        if not any(p.requires_grad for p in module.parameters()):
            return  # nothing left to reduce; never happens with the head kept trainable
        retire_ddp(wrapper)
        strategy.model = module
        strategy.configure_ddp()
        self.ddp_rebuilds += 1

    def on_train_end(self, trainer, pl_module) -> None:
        if self.freezer is not None:
            self.freezer.close()  # stops a pending trace and removes signal hooks (AutoFreeze's)
        if self._cache is not None:
            self._cache.finish()

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.freezer is None or not self.freezer.ready:
            return {}
        return {"freezer": self.freezer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_state = state_dict.get("freezer") if state_dict else None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        """Write the optimizer and scheduler states in the layout ``configure_optimizers`` makes,
        which is what Lightning loads them into on resume (before this callback runs)."""
        if self.freezer is None or not self.freezer.ready:
            return
        from .layout import optimizer_state_in_original_layout, scheduler_state_in_original_layout

        if "optimizer_states" in checkpoint:
            checkpoint["optimizer_states"] = [
                optimizer_state_in_original_layout(self.freezer, s) for s in checkpoint["optimizer_states"]]
        if "lr_schedulers" in checkpoint:
            checkpoint["lr_schedulers"] = [
                scheduler_state_in_original_layout(self.freezer, s) for s in checkpoint["lr_schedulers"]]

    @property
    def frozen_units(self) -> list[str]:
        """Names of the units frozen so far."""
        if self.freezer is None or not self.freezer.ready:
            return []
        return [self.freezer.unit_names[i] for i in sorted(self.freezer.frozen)]


def _unit_holder(module, units) -> tuple[str, Any]:
    """The innermost submodule of ``module`` holding every unit (its name, "" for ``module``)."""
    paths = [name.split(".") for u in units for name in u.module_names]
    common = []
    for parts in zip(*paths):
        if len(set(parts)) > 1:
            break
        common.append(parts[0])
    if any(len(p) == len(common) for p in paths):  # a unit is that module itself: take its parent
        common = common[:-1]
    name = ".".join(common)
    return name, module.get_submodule(name) if name else module


__all__ = ["FrostlineCallback"]
