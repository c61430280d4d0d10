"""The :class:`Freezer`: applies a policy's decisions to a model and its optimizer.

It flips ``requires_grad``, takes frozen parameters (and their optimizer state) out of the
optimizer, keeps frozen modules in eval mode even after ``model.train()``, applies per-unit
learning rates (and the cool-down ramp before a decided unit freezes: :mod:`.cooldown`), records
the timeline, and saves/restores all of it for an exact resume.

Plain PyTorch use is two lines::

    freezer = Freezer(model, optimizer, FreezeOut(), total_steps=len(loader) * epochs)
    ...  # after each optimizer.step():
    freezer.step()
"""

from __future__ import annotations

import numbers
import time
import warnings
import weakref
from dataclasses import dataclass, asdict
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, FrostlineError, ModelError, check_bool, check_int, check_names
from ..exploit.distributed import is_distributed, refuse_sharding, world_size
from ..policies import as_policy
from ..policies.base import FreezePolicy, Progress
from ..signals import STANDARD as STANDARD_COLLECTORS
from ..units import (GRANULARITIES, ExecutionOrderRecorder, FreezeUnit, check_head_units, check_units, freeze_units,
                     merge_head, unwrap_compiled, units_from_names)
from . import param_groups
from .cooldown import Cooling, check_cooldown, cooldown_scale
from .eval_mode import outside_prefix, pin_eval, pin_eval_alone, unpin
from .marks import frozen_by_frostline, mark_frozen, thaw
from .schedulers import SchedulerBridge

#: Optimizer -> the hook handle of the Freezer that checks it for an LR scheduler not attached.
_SCHEDULER_CHECKS: "weakref.WeakKeyDictionary[torch.optim.Optimizer, Any]" = weakref.WeakKeyDictionary()

#: Epochs a named per-epoch method (SmartFRZ, the CKA oracle) assumes when it is not told.
EPOCHS_IF_UNKNOWN = 10

STATE_VERSION = 3
#: Versions :meth:`Freezer.load_state_dict` still reads (1: no original optimizer layout; 2: no cool-down).
READABLE_VERSIONS = (1, 2, 3)
#: Keys every readable state has (``cooldown``, ``cooling``, ``signals``, ``pinned_outside``,
#: ``decision_time_s`` and ``original_param_groups`` are absent from older versions' states).
STATE_KEYS = ("total_steps", "units", "unit_names", "frozen", "step", "policy", "timeline", "param_groups")


def _few(names: list[str]) -> str:
    """A unit list short enough for a message."""
    return str(names) if len(names) <= 8 else f"{names[:4]} ... {names[-2:]} ({len(names)} in all)"


def _kind(value) -> str:
    """What was passed, short enough for a message (the repr of a model or an optimizer runs to pages)."""
    if value is None or isinstance(value, (bool, numbers.Number, str)):
        return repr(value)[:60]
    if isinstance(value, type):
        return f"the class {value.__name__} (not an instance of it)"
    if isinstance(value, (list, tuple)):
        kinds = sorted({type(v).__name__ for v in value})
        return f"a {type(value).__name__} of {len(value)} ({', '.join(kinds[:3])})"
    return f"an object of type {type(value).__name__}"


@dataclass
class FreezeEvent:
    """One entry of the freezing timeline: the unit froze after optimizer step ``step``; the policy
    had decided it at ``decided_step`` (earlier by the cool-down; None in states saved before
    cool-downs existed)."""

    unit: str
    index: int
    step: int
    fraction: float
    signal: dict[str, Any] | None = None
    decided_step: int | None = None


class Freezer:
    """Applies a :class:`~frostline.policies.FreezePolicy` to a model and its optimizer.

    ``policy`` is a policy object or a method name (``"freezeout"``: built with its defaults; an
    unknown name fails here). A named method whose cadence is per epoch (``"smartfrz"``) sees the
    run as :data:`EPOCHS_IF_UNKNOWN` epochs; build it yourself to give the real epoch length
    (``SmartFRZ(steps_per_epoch=len(loader))``).

    ``model`` may be ``torch.compile(model)``: units are found on the module it wraps (they share
    parameters). Units come from ``units`` (module names in the order they run, checked against
    the first forward pass, or :class:`FreezeUnit` objects from :func:`frostline.freeze_units`) or
    are traced: from ``example_input`` if given, else from the first forward pass the model runs
    after the Freezer is made.
    ``freeze_head=False`` keeps the last unit trainable whatever the policy says.
    ``head_units`` (default 1) makes the last that many units, given or found, one head
    (:func:`frostline.units.merge_head`): ``head_units=3`` keeps a fine-tune's top two blocks training
    beside its classifier.
    ``sync`` (e.g. :class:`frostline.exploit.distributed.DecisionSync`) makes every rank of a distributed
    run apply the same decision: its ``agree(wanted, frozen, num_units, step)`` returns the set to
    act on, and ``applied(newly)`` hears about units frozen by it (to rebuild DDP).
    ``signals`` maps signal names to collectors (:mod:`frostline.signals`); they override the
    policy's own ``collectors()``.
    ``cooldown`` (optimizer steps, default 0: freeze at once) anneals a decided unit's learning
    rate to zero over that many steps before freezing it (:mod:`frostline.freezer.cooldown`); it
    gives every unit its own param group, and does not apply to policies that scale learning
    rates themselves (FreezeOut): a ConfigError.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        policy: FreezePolicy | str,
        total_steps: int,
        *,
        units: Sequence | None = None,
        granularity: str = "block",
        example_input=None,
        freeze_head: bool = False,
        head_units: int = 1,
        sync=None,
        signals: dict[str, Any] | None = None,
        cooldown: int = 0,
    ):
        if not isinstance(model, nn.Module):
            raise ConfigError(f"Freezer needs the model (an nn.Module) as its first argument, got {_kind(model)}: "
                              "Freezer(model, optimizer, policy, total_steps)")
        if isinstance(optimizer, (list, tuple)) and optimizer and all(hasattr(o, "param_groups") for o in optimizer):
            raise ConfigError(f"Freezer takes one optimizer, got {_kind(optimizer)}: pass the one that trains the "
                              "units that freeze (they leave it with their state); parameters of a frozen unit held by "
                              "another optimizer get no gradient, so it leaves them as they are")
        if not hasattr(optimizer, "param_groups"):
            raise ConfigError(f"Freezer needs the optimizer that trains the model, got {_kind(optimizer)}: build it "
                              "first (e.g. torch.optim.AdamW(model.parameters(), lr=...)) and pass it; freezing takes "
                              "frozen parameters out of it")
        freeze_head = check_bool(freeze_head, "freeze_head")
        self.head_units = check_head_units(head_units)
        if units is not None:
            units = list(check_names(units, "units"))
            if not units:
                raise ConfigError("units=[] names no unit to freeze: pass the module names (in the order they run), "
                                  "or leave units out to find them from the first forward pass")
        check_int(total_steps, "total_steps", low=1)
        # a method name is built with its defaults; a bad one fails here
        policy = as_policy(policy, runtime={"steps_per_epoch": -(-total_steps // EPOCHS_IF_UNKNOWN)})
        self.cooldown = check_cooldown(cooldown, policy, total_steps)
        if isinstance(optimizer, torch.optim.LBFGS) and (policy.scales_lr or self.cooldown):
            which = f"method {policy.name!r}" if policy.scales_lr else "a cooldown"
            raise ConfigError(f"LBFGS takes one param group, and {which} "
                              "gives each unit its own learning rate (its own group): with LBFGS use a method that "
                              "does not scale learning rates (e.g. 'linear', 'autofreeze') and cooldown=0")
        if signals is not None and not isinstance(signals, dict):
            raise ConfigError(f"signals must be a dict of signal name -> collector (see frostline.signals), "
                              f"got {_kind(signals)}")
        if sync is not None and not all(callable(getattr(sync, m, None)) for m in ("agree", "applied")):
            raise ConfigError(f"sync must have agree(wanted, frozen, num_units, step) and applied(newly) (e.g. "
                              f"frostline.DecisionSync()), got {_kind(sync)}")
        if sync is None and is_distributed() and world_size() > 1:
            warnings.warn("frostline: a distributed run and no sync=: each process decides what to freeze from its own "
                          "signals and batches, so the replicas can freeze different units (DDP then fails, or they "
                          "drift apart); pass sync=frostline.DecisionSync(on_freeze=...) (see the guide's distributed "
                          "section)", stacklevel=2)
        compiled, model = model, unwrap_compiled(model)  # torch.compile's wrapper shares the parameters of the model
        refuse_sharding(model, optimizer)
        if compiled is not model and units is None and example_input is None:
            warnings.warn(
                "frostline: a compiled model and no example_input: its units are found by hooks inside its first "
                "compiled forward, after which torch.compile can give up on a model whose forward loops over its "
                "layers (an nn.Sequential) and run it eagerly for the rest of training; pass example_input= (one "
                "batch) to find them before it runs", stacklevel=2)
        if not any(p.requires_grad for p in model.parameters()):
            raise ModelError("the model has no trainable parameters: there is nothing to train or freeze")
        if granularity not in GRANULARITIES:
            raise ConfigError(f"unknown granularity {granularity!r}; use one of {list(GRANULARITIES)}")
        self.model = model
        self.optimizer = optimizer
        self.policy = policy
        self.total_steps = total_steps
        self.freeze_head = freeze_head
        self.granularity = granularity
        self.sync = sync
        self.units: list[FreezeUnit] | None = None
        self.frozen: set[int] = set()
        #: Units decided but still cooling down (unit index -> when it was decided, and why).
        self.cooling: dict[int, Cooling] = {}
        self.timeline: list[FreezeEvent] = []
        self.step_count = 0
        #: Seconds spent collecting signals and deciding (the method's own overhead).
        self.decision_time_s = 0.0
        #: The step at which the policy is next asked (its :meth:`~FreezePolicy.next_call`).
        self._policy_due = 0
        #: Parameter name by ``id(parameter)``: how saved layouts name parameters.
        self.param_name_by_id = {id(p): n for n, p in model.named_parameters()}
        #: The optimizer's layout as the user's code creates it: parameter names and
        #: hyperparameters per original group (what a fresh optimizer/scheduler expects).
        self.original_param_groups = param_groups.layout_by_name(optimizer, self.param_name_by_id)
        #: LR schedulers attached with :meth:`attach_scheduler` (``.attached``).
        self.schedulers = SchedulerBridge(self)
        self._recorder = None
        self._extra_signals = dict(signals or {})
        self._collectors: dict[str, Any] = {}
        self._eval_pins: dict[int, list] = {}  # unit index -> its forward pre-hook handles
        #: Modules in no unit pinned to eval mode with the frozen prefix they run in (name -> handles;
        #: :func:`~frostline.freezer.eval_mode.outside_prefix`), found from the spans of the first forward.
        self._outside_pins: dict[str, list] = {}
        self._spans: dict[str, list[int]] | None = None
        self._span_recorder = ExecutionOrderRecorder(model, lambda _order: self._take_spans())
        #: LRs the Freezer last wrote into the unit groups (to notice a scheduler it was not given).
        self._lrs_written: list[float] | None = None
        self._warned_lr = False
        self._said_earlier_freezes = False
        self._told_nothing_froze = False
        #: one parameter this Freezer froze: trainable again means unfreeze() ran while this Freezer still steps
        self._frozen_sample: torch.Tensor | None = None
        self._load_hook = optimizer.register_load_state_dict_pre_hook(self._check_optimizer_state)
        #: Before each optimizer step, while per-unit lrs may meet an LR scheduler nobody attached
        #: (one check per optimizer: a new Freezer on it, as a second fit's, takes over from an earlier one).
        earlier = _SCHEDULER_CHECKS.pop(optimizer, None)
        if earlier is not None:
            earlier.remove()
        self._step_hook = None
        if self.per_unit_lr:
            self._step_hook = _SCHEDULER_CHECKS[optimizer] = optimizer.register_step_pre_hook(
                self._check_scheduler_attached)
        if units is not None and all(isinstance(u, FreezeUnit) for u in units):
            self._setup(list(units))  # already traced (freeze_units)
        elif units is not None and example_input is not None:
            self._setup(freeze_units(model, granularity, units=units, example_input=example_input))
        elif units is not None:  # known now; checked against the order the first forward runs them in
            self._setup(units_from_names(model, units))
            self._recorder = ExecutionOrderRecorder(model, self._check_named_units)
        elif example_input is not None:
            self._setup(freeze_units(model, granularity, example_input=example_input))
        else:
            self._recorder = ExecutionOrderRecorder(
                model, lambda order: self._setup(freeze_units(model, granularity, execution_order=order))
            )

    # -- set-up ----------------------------------------------------------------------------
    def finish_trace(self) -> None:
        """Find the units from the modules the first forward ran so far. The trace normally ends
        by itself when the model's own ``forward`` returns; call this where a framework runs the
        model's submodules but never its root ``forward`` (a LightningModule's ``training_step``
        calling ``self.net(x)``). Nothing happens once the units are known."""
        if self._recorder is None:
            return
        recorder = self._recorder
        recorder.detach()
        if not recorder.order:
            raise FrostlineError("the Freezer's unit trace saw no module run: call finish_trace() after a forward pass")
        if self.ready:  # units named by the user: check them
            self._check_named_units(recorder.order)
        else:
            self._setup(freeze_units(self.model, self.granularity, execution_order=recorder.order))

    def _check_named_units(self, order) -> None:
        self._recorder = None
        check_units(self.model, self.units, order, self.frozen)

    def detach_trace(self) -> None:
        """Stop waiting for a first forward (training ended before any batch)."""
        if self._recorder is not None:
            self._recorder.detach()
            self._recorder = None
        if self._span_recorder is not None:
            self._span_recorder.detach()
            self._span_recorder = None

    def _take_spans(self) -> None:
        """The first forward has run: keep when each module ran, and pin what a frozen prefix holds."""
        recorder, self._span_recorder = self._span_recorder, None
        recorder.detach()
        self._spans = recorder.spans
        self._pin_outside_prefix()

    def _pin_outside_prefix(self) -> None:
        """Pin to eval mode the modules in no unit that now belong to the frozen prefix."""
        if self._spans is None or self.units is None:
            return
        for name, module in outside_prefix(self.model, self.units, self._spans, self.frozen_prefix):
            if name not in self._outside_pins:
                self._outside_pins[name] = pin_eval_alone(module)

    @property
    def pinned_outside(self) -> list[str]:
        """Modules in no unit that run in eval mode with the frozen prefix (a LoRA model's embeddings)."""
        return sorted(self._outside_pins)

    def _setup(self, units: list[FreezeUnit]) -> None:
        self._recorder = None
        units = merge_head(units, self.head_units)
        self._bind(units)
        self._say_if_optimizer_misses(units)
        if self.per_unit_lr:  # only then: a run without per-unit lrs keeps the user's optimizer layout
            param_groups.split_per_unit(self.optimizer, [u.params for u in units])
            self.schedulers.sync()
        self._apply_lr()

    def _bind(self, units: list[FreezeUnit]) -> None:
        """Take ``units``; bind the policy to them and find a collector for every signal it needs.
        Only the needed collectors are bound: binding one may hook every parameter."""
        self.units = units
        self.policy.bind([u.name for u in units])
        self._policy_due = 0
        self._close_collectors()  # a re-bind (resume) must not leave the old collectors' hooks behind
        standard = {name: make() for name, make in STANDARD_COLLECTORS.items()}
        self._collectors = {**standard, **self.policy.collectors(), **self._extra_signals}
        missing = sorted(n for n in self.policy.requires if n not in self._collectors)
        if missing:
            raise ConfigError(
                f"method {self.policy.name!r} needs signal(s) {missing} that nothing collects: pass "
                "Freezer(..., signals={name: collector}) (see frostline.signals) or the policy's own settings "
                "(e.g. CKAOracle(reference=..., probe=...))")
        for name in sorted(self.policy.requires):
            collector = self._collectors[name]
            if hasattr(collector, "bind"):
                collector.bind(self)

    def _say_if_optimizer_misses(self, units: list[FreezeUnit]) -> None:
        """Freezing takes a unit's parameters out of the optimizer; an optimizer that holds none of a
        unit's trainable parameters (built from another model, or from a copy) has nothing to give
        up, and that unit does not train through it either. Said once, at set-up."""
        held = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        # a head that never freezes may train in an optimizer of its own (a second lr, another optimizer type)
        freezable = units if self.freeze_head or not held else units[:-1]
        missing = [u.name for u in freezable if any(p.requires_grad for p in u.params)
                   and not any(id(p) in held for p in u.params if p.requires_grad)]
        if missing:
            none_held = not any(id(p) in held for u in units for p in u.params)
            which = "any unit" if none_held else f"unit(s) {missing}"
            # some units held: those others may train in an optimizer of their own (embeddings, a second lr)
            ramp = f"method {self.policy.name!r}" if self.policy.scales_lr else "the cooldown" if self.cooldown else ""
            other = "" if none_held else (
                "; if another optimizer trains them, freezing still stops them (no gradients, which it skips) but "
                "leaves their state in it" + (f", and {ramp} cannot lower their learning rate" if ramp else ""))
            warnings.warn(f"frostline: the optimizer holds no trainable parameter of {which}: freezing cannot take them "
                          "out of it, and it does not train them (build the optimizer from this model's parameters, "
                          f"after any copy or .to() that replaces them{other})", stacklevel=4)

    def _required_collectors(self) -> dict[str, Any]:
        return {name: self._collectors[name] for name in sorted(self.policy.requires) if name in self._collectors}

    def _close_collectors(self) -> None:
        for collector in self._collectors.values():
            if hasattr(collector, "close"):
                collector.close()

    def close(self) -> None:
        """Training is over: remove the hooks signal collectors put on the model (AutoFreeze's
        gradient hooks) and stop waiting for a first forward. The frozen units stay frozen. The
        integrations call this when training ends."""
        self.detach_trace()
        self._close_collectors()
        self._load_hook.remove()
        self._stop_scheduler_check()
        self._say_if_nothing_froze()

    def attach_scheduler(self, scheduler) -> None:
        """Make a torch LR scheduler of this optimizer compose with the policy's per-unit
        learning rates: a unit's lr becomes (what ``scheduler`` says for its original param
        group) x (the policy's scale for the unit). Create the scheduler on the optimizer as
        your code builds it (before the Freezer splits groups: before the first forward, or
        before ``Freezer(units=...)``); call ``scheduler.step()`` as usual, before or after
        ``freezer.step()``. Without a scheduler the per-unit lr stays the group's lr at the split.
        How (and why this way): :mod:`frostline.freezer.schedulers`."""
        sched = getattr(scheduler, "scheduler", scheduler)  # accelerate's AcceleratedScheduler
        if isinstance(sched, torch.optim.Optimizer) or not callable(getattr(sched, "step", None)) \
                or not hasattr(sched, "optimizer"):
            raise ConfigError(f"attach_scheduler needs an LR scheduler of the Freezer's optimizer (e.g. "
                              f"torch.optim.lr_scheduler.LambdaLR(optimizer, ...)), got {_kind(scheduler)}")
        self.schedulers.attach(scheduler)
        self._stop_scheduler_check()  # attached: nothing left to check before each optimizer step

    def _stop_scheduler_check(self) -> None:
        if self._step_hook is not None:
            self._step_hook.remove()
            self._step_hook = None

    # -- the step --------------------------------------------------------------------------
    @property
    def progress(self) -> Progress:
        return Progress(self.step_count, self.total_steps)

    @property
    def tracing(self) -> bool:
        """Whether the Freezer still waits for the first forward pass (to find or to check units)."""
        return self._recorder is not None

    @property
    def ready(self) -> bool:
        return self.units is not None

    @property
    def per_unit_lr(self) -> bool:
        """Whether units get their own learning rates (the policy's scales, or cool-down ramps)."""
        return self.policy.scales_lr or self.cooldown > 0

    def _require_units(self) -> list[FreezeUnit]:
        if self.units is None:
            raise FrostlineError(
                "the Freezer has not seen a forward pass yet: call freezer.step() after the "
                "optimizer step of a batch that ran through the model (or pass example_input=)"
            )
        return self.units

    def step(self) -> list[int]:
        """Call after each ``optimizer.step()``. Returns the indices of units frozen now (with a
        cool-down: those whose cool-down ended now, not those decided now)."""
        self._require_units()
        if self.tracing and self._recorder.order:  # named units, and the root forward never returned
            self.finish_trace()
        if self._span_recorder is not None and self._span_recorder.order:  # likewise
            self._take_spans()
        self._check_lrs_untouched()
        if not self._said_earlier_freezes:
            self._say_if_an_earlier_freezer_froze()
        if self._frozen_sample is not None and self._frozen_sample.requires_grad:
            self._frozen_sample = None  # said once
            warnings.warn("frostline: parameters this Freezer froze train again (frostline.unfreeze(model), or "
                          "requires_grad_(True)) while it still steps: they get gradients but are in no optimizer, "
                          "and it still counts their units frozen. After unfreeze, build a new optimizer and a new "
                          "Freezer", stacklevel=2)
        self.step_count += 1
        if self.step_count == self.total_steps + 1:
            warnings.warn(f"frostline: freezer.step() was called more than the total_steps={self.total_steps} it was "
                          "given: its schedule was planned for that many steps and has run out (pass the optimizer "
                          "steps of the whole run)", stacklevel=2)
        progress = self.progress
        if self.step_count >= self._policy_due:  # the policy's answers can change at this step
            t0 = time.perf_counter()
            wanted_signals = self.policy.wants(progress)
            if wanted_signals:
                self.policy.observe(progress, self.collect_signals(wanted_signals))
            wanted = self.policy.decide(progress)
            self._policy_due = self.policy.next_call(progress)
            self.decision_time_s += time.perf_counter() - t0
            if self.sync is not None:  # every rank must have decided (frozen or cooling) the same units
                wanted = self.sync.agree(wanted, self.frozen | set(self.cooling), len(self.units), self.step_count)
            for i in self._admissible(wanted):
                self.cooling[i] = Cooling(self.step_count, self.policy.reason(i))
        newly = sorted(i for i, c in self.cooling.items() if self.step_count - c.decided_step >= self.cooldown)
        for i in newly:
            self.freeze(i)
        if newly and self.sync is not None:
            self.sync.applied(newly)
        self._apply_lr()
        if self.step_count == self.total_steps:
            self._say_if_nothing_froze()
        return newly

    def _say_if_an_earlier_freezer_froze(self) -> None:
        """Parameters another Freezer froze (a finished or interrupted run on this model) that this one
        did not: taken for the user's own frozen ones, they are in no unit and never train again."""
        self._said_earlier_freezes = True
        mine = {self.param_name_by_id.get(id(p)) for i in self.frozen for p in self.units[i].params}
        earlier = [n for n in frozen_by_frostline(self.model) if n not in mine]
        if earlier:
            modules = sorted({n.rsplit(".", 1)[0] for n in earlier})
            warnings.warn(
                f"frostline: {len(earlier)} parameter(s) of this model ({_few(modules)}) were frozen by an earlier Freezer "
                "(a finished or interrupted run) and stay frozen: this one makes no units of them and trains only the "
                "rest. To train them again, call frostline.unfreeze(model) before building the optimizer and the "
                "Freezer; to go on with that run, resume it from its checkpoint", stacklevel=3)

    def _say_if_nothing_froze(self) -> None:
        """Never a silent no-op: a run that ends (its last planned step, or :meth:`close`) with no
        unit frozen saved nothing, and the user should know why."""
        never_decides = type(self.policy).decide is FreezePolicy.decide  # the none baseline, a recorder
        if self._told_nothing_froze or self.frozen or never_decides:
            return
        self._told_nothing_froze = True
        if self.step_count == 0:
            why = "freezer.step() was never called: call it after every optimizer.step()"
        else:
            cooling = f", {len(self.cooling)} unit(s) still cooling down" if self.cooling else ""
            how = ("its schedule reached no unit in a run this long (check total_steps and its settings)"
                   if not self.policy.requires else self.policy.why_idle()
                   or f"no unit looked ready to it (a longer run, or {self.policy.looser}, lets it freeze)")
            why = f"after {self.step_count} of the {self.total_steps} steps it was told{cooling}, {how}"
        warnings.warn(f"frostline: {self.policy.name} froze no unit, so this run saved nothing: {why}", stacklevel=3)

    def _admissible(self, wanted: set[int]) -> list[int]:
        last = len(self.units) - 1
        return sorted(i for i in wanted if i not in self.frozen and i not in self.cooling and 0 <= i <= last
                      and (self.freeze_head or i != last))

    def collect_signals(self, names) -> dict[str, Any]:
        """Signals a policy asked for, computed from the live model by their collectors."""
        unknown = sorted(n for n in names if n not in self._collectors)
        if unknown:
            raise FrostlineError(f"nothing collects signal(s) {unknown}: pass Freezer(..., signals={{name: collector}})")
        return {name: self._collectors[name](self) for name in names}

    # -- acting ----------------------------------------------------------------------------
    def freeze(self, index: int, signal: dict[str, Any] | None = None) -> None:
        """Freeze unit ``index`` now: no gradients, out of the optimizer, pinned to eval mode.
        A unit still cooling down freezes at once (its decision step and signal are kept)."""
        units = self._require_units()
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not 0 <= index < len(units):
            raise ConfigError(f"no unit {index!r} to freeze: the model has {len(units)} units, numbered 0 to "
                              f"{len(units) - 1}: {_few([u.name for u in units])}")
        index = int(index)
        unit = units[index]
        if index in self.frozen:
            return
        decided = self.cooling.pop(index, Cooling(self.step_count, signal))
        self._stop_training(index)
        param_groups.remove_params(self.optimizer, unit.params)
        self.frozen.add(index)
        self._pin_outside_prefix()
        self.timeline.append(FreezeEvent(unit.name, index, self.step_count, self.step_count / self.total_steps,
                                         signal if signal is not None else decided.signal, decided.decided_step))
        if len(self.frozen) == len(units) and self.step_count < self.total_steps:
            warnings.warn(f"frostline: every unit is frozen now, at step {self.step_count} of {self.total_steps} "
                          "(the head too: freeze_head=True): nothing trains any more, and a backward pass has nothing "
                          "to compute (PyTorch: 'element 0 of tensors does not require grad'): end training here",
                          stacklevel=3)

    def _stop_training(self, index: int) -> None:
        """No gradients for unit ``index`` and its modules run in eval mode from now on."""
        unit = self.units[index]
        for p in unit.params:
            if p.requires_grad:  # one the user froze inside the unit is theirs: unfreeze() leaves it
                mark_frozen(p)
                if self._frozen_sample is None:
                    self._frozen_sample = p
            p.requires_grad_(False)
            p.grad = None
        if index not in self._eval_pins:
            self._eval_pins[index] = [h for m in unit.modules for h in pin_eval(m)]
        for collector in self._required_collectors().values():
            if hasattr(collector, "on_freeze"):
                collector.on_freeze(index)  # e.g. free the gradient sums a frozen unit will never add to

    def _apply_lr(self) -> None:
        """Unit groups' lr = unscaled lr x the policy's scale now, or x the cool-down ramp (nothing
        for policies without scales and no cool-down)."""
        if self.cooldown:
            scales = [0.0 if i in self.frozen else 1.0 for i in range(len(self.units))]
            for i, c in self.cooling.items():
                scales[i] = cooldown_scale(self.step_count - c.decided_step, self.cooldown)
        else:
            scales = self.policy.lr_scales(self.progress)
        if scales is not None:
            param_groups.scale_unit_lrs(self.optimizer, scales)
        if self.per_unit_lr:
            self._lrs_written = [g["lr"] for g in self.optimizer.param_groups]

    def _check_lrs_untouched(self) -> None:
        """Warn once when something other than the Freezer (an LR scheduler it was not given)
        changed the split groups' learning rates since its last step: such a scheduler drives only
        the first groups and the policy's scales are overwritten, so units silently train at
        different learning rates."""
        written = self._lrs_written
        if self._warned_lr or written is None or self.schedulers.attached:
            return
        now = [g["lr"] for g in self.optimizer.param_groups]
        if now == written:
            return
        self._warned_lr = True
        warnings.warn(
            "the learning rates of the optimizer's param groups changed outside the Freezer since its last step "
            f"(an LR scheduler it does not know about?). The Freezer split the groups per unit ({len(now)} groups) "
            f"to give each unit its own learning rate (method {self.policy.name!r}"
            f"{f', cooldown={self.cooldown}' if self.cooldown else ''}); a scheduler that is not attached changes "
            "only some of them and loses the per-unit scales: call freezer.attach_scheduler(scheduler) once both "
            "exist. Warned once.", stacklevel=3)

    def _check_scheduler_attached(self, optimizer, _args, _kwargs) -> None:
        """Before an optimizer step: an LR scheduler built on this optimizer (torch marks its
        ``step``; its groups hold ``initial_lr``) and not attached, once the Freezer has split the
        groups. Its next ``step()`` comes before ``freezer.step()`` could notice, and a scheduler
        that keeps a list per group (LambdaLR, SequentialLR, ...) fails there with torch's bare
        "zip() argument 2 is shorter than argument 1": say why first. Warned once."""
        if self._warned_lr or self.schedulers.attached:
            return
        step = optimizer.step
        wrapped = getattr(step, "_wrapped_by_lr_sched", False) or getattr(step, "_with_counter", False)
        if not (wrapped or any("initial_lr" in g for g in optimizer.param_groups)):
            return  # no scheduler (the common case, every step): the group layout need not be read
        if param_groups.group_map(optimizer) is None:
            return
        self._warned_lr = True
        self._stop_scheduler_check()
        warnings.warn(
            "frostline: an LR scheduler was built on this optimizer but not attached to the Freezer, which split the "
            f"param groups per unit ({len(self.original_param_groups)} -> {len(optimizer.param_groups)} groups) to "
            f"give each unit its own learning rate (method {self.policy.name!r}"
            f"{f', cooldown={self.cooldown}' if self.cooldown else ''}): call freezer.attach_scheduler(scheduler) "
            "before training. Unattached, a scheduler with per-group lists (LambdaLR, SequentialLR, "
            "CosineAnnealingWarmRestarts, CyclicLR) fails at its next step() with 'zip() argument 2 is shorter than "
            "argument 1', and the others change the groups' lrs without the per-unit scales. Warned once.",
            stacklevel=4 if wrapped else 3)  # the user's optimizer.step(), past torch's wrappers

    def _check_optimizer_state(self, optimizer, state_dict) -> None:
        """Before ``optimizer.load_state_dict``: a state that does not fit the optimizer's groups
        (torch's bare "different number of parameter groups") most often means the Freezer's
        state was not loaded first, so say that."""
        saved, live = state_dict.get("param_groups", []), optimizer.param_groups
        if len(saved) == len(live) and all(len(s["params"]) == len(g["params"]) for s, g in zip(saved, live)):
            return None
        raise CheckpointError(
            f"the optimizer state holds {len(saved)} param group(s) of {[len(s['params']) for s in saved]} parameters, "
            f"the optimizer now {len(live)} of {[len(g['params']) for g in live]}: the Freezer changes this layout "
            "(frozen parameters leave the optimizer, per-unit learning rates split its groups). Call "
            "freezer.load_state_dict(saved_freezer_state) before optimizer.load_state_dict(...): it restores the "
            "layout the optimizer state was saved in")

    # -- views -----------------------------------------------------------------------------
    @property
    def frozen_prefix(self) -> int:
        """Number of leading units that are frozen (what an activation cache can skip)."""
        k = 0
        while k in self.frozen:
            k += 1
        return k

    @property
    def unit_names(self) -> list[str]:
        return [u.name for u in self._require_units()]

    def frozen_at(self) -> dict[str, float | None]:
        """Unit name -> training fraction when it was frozen (None if never)."""
        when = {e.unit: e.fraction for e in self.timeline}
        return {u.name: when.get(u.name) for u in self._require_units()}

    # -- resume ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        units = self._require_units()
        strays = sum(id(p) not in self.param_name_by_id for g in self.optimizer.param_groups for p in g["params"])
        if strays:
            raise CheckpointError(f"the optimizer holds {strays} parameter(s) that are not the model's: "
                                  "the Freezer can save only an optimizer over the model's own parameters")
        return {
            "version": STATE_VERSION,
            "units": [list(u.module_names) for u in units],
            "unit_names": [u.name for u in units],
            "head_units": units[-1].head_of,
            "freeze_head": self.freeze_head,
            "frozen": sorted(self.frozen),
            "cooldown": self.cooldown,
            "cooling": [{"index": i, "decided_step": c.decided_step, "signal": c.signal}
                        for i, c in sorted(self.cooling.items())],
            "step": self.step_count,
            "decision_time_s": self.decision_time_s,
            "total_steps": self.total_steps,
            "timeline": [asdict(e) for e in self.timeline],
            "pinned_outside": self.pinned_outside,
            "policy": self.policy.state_dict(),
            "signals": {name: c.state_dict() for name, c in self._required_collectors().items()
                        if hasattr(c, "state_dict")},
            "original_param_groups": self.original_param_groups,
            "param_groups": param_groups.layout_by_name(self.optimizer, self.param_name_by_id),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore units, frozen set, policy and param-group layout. Call this *before*
        ``optimizer.load_state_dict`` so the optimizer's groups match the saved ones, or *after*
        loading a state converted by :mod:`frostline.integrations.layout` (original layout): the
        per-parameter state just loaded is kept, and attached schedulers are expanded. A state that
        does not fit (another model, another run's settings, corrupted) is a CheckpointError raised
        before anything changes (but for the policy's own checks: after the units are bound)."""
        units, timeline = self._check_state(state)
        # a Freezer that has stepped past the saved state (a roll-back): the units it froze since train again
        thawed = [] if self.units is None else [self.units[i] for i in sorted(self.frozen - set(state["frozen"]))]
        if self._recorder is not None:  # the units come from the state (the span trace still waits)
            self._recorder.detach()
            self._recorder = None
        self._bind(units)
        self.policy.load_state_dict(state["policy"])  # _bind reset _policy_due: asked at the next step
        self.step_count = int(state["step"])
        self.decision_time_s = float(state.get("decision_time_s", 0.0))
        self.timeline = timeline
        for handles in self._eval_pins.values():  # units (and so the modules to pin) may differ
            unpin(handles)
        self._eval_pins = {}
        self.frozen = {int(i) for i in state["frozen"]}
        self.cooling = {int(c["index"]): Cooling(c["decided_step"], c["signal"]) for c in state.get("cooling", [])}
        for unit in thawed:
            for p in unit.params:
                thaw(p)  # frozen by this Freezer (one the user froze stays frozen)
                if p is self._frozen_sample:
                    self._frozen_sample = None
            for m in unit.modules:
                m.train(self.model.training)  # unpinned above: back to the model's mode
        for i in self.frozen:
            self._stop_training(i)
        modules = dict(self.model.named_modules())
        for name, handles in self._outside_pins.items():
            unpin(handles)
            if name not in state.get("pinned_outside", []):
                modules[name].training = self.model.training
        self._outside_pins = {n: pin_eval_alone(modules[n]) for n in state.get("pinned_outside", []) if n in modules}
        self._pin_outside_prefix()
        saved_signals = state.get("signals") or {}  # absent from states written before collectors kept any
        for name, collector in self._required_collectors().items():
            if hasattr(collector, "load_state_dict"):
                collector.load_state_dict(saved_signals.get(name))
        if "original_param_groups" in state:
            self.original_param_groups = state["original_param_groups"]
        param_groups.restore_layout(self.optimizer, self.model, state["param_groups"])
        self.schedulers.sync()
        self._apply_lr()

    def _check_state(self, state) -> tuple[list[FreezeUnit], list[FreezeEvent]]:
        """Everything :meth:`load_state_dict` reads from ``state``, checked before it changes anything.
        Returns the saved units rebuilt on this model (named as saved) and the saved timeline."""
        if not isinstance(state, dict) or state.get("version") not in READABLE_VERSIONS:
            raise CheckpointError("not a frostline Freezer state (or from an incompatible version)")

        def bad(what: str) -> CheckpointError:
            return CheckpointError(f"unusable Freezer state: {what}. Resume from a checkpoint written by the same "
                                   "model and frostline version, or start the run fresh")

        missing = [k for k in STATE_KEYS if k not in state]
        if missing:
            raise bad(f"it lacks {missing}")
        if state["total_steps"] != self.total_steps:
            raise CheckpointError(
                f"saved run had total_steps={state['total_steps']}, this one {self.total_steps}: "
                "resume with the same epochs, batch size and data"
            )
        saved_cooldown = state.get("cooldown", 0)  # states from before cool-downs had none
        if saved_cooldown != self.cooldown:
            raise CheckpointError(f"saved run had cooldown={saved_cooldown}, this one {self.cooldown}: "
                                  "resume with the same cooldown")
        if state.get("freeze_head", self.freeze_head) != self.freeze_head:  # (absent from older states)
            raise CheckpointError(f"saved run had freeze_head={state['freeze_head']!r}, this one {self.freeze_head}: "
                                  "resume with the same freeze_head")
        saved_head = state.get("head_units", 1)  # states from before head_units had a head of one unit
        if self.units is None and saved_head != self.head_units:  # (units known: compared below, parameter by parameter)
            raise CheckpointError(f"saved run had head_units={saved_head!r}, this one {self.head_units}: its units "
                                  "come from the saved state, so this head_units would go unused; resume with the "
                                  "same head_units (--head-units)")
        saved_method = state["policy"].get("name") if isinstance(state["policy"], dict) else None
        if saved_method is not None and saved_method != self.policy.name:  # the policy checks the rest once bound
            raise CheckpointError(f"saved freezing state is for method {saved_method!r}, not {self.policy.name!r}: "
                                  "resume with the same --method")

        def is_int(v):
            return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0

        def is_list(v, item):
            return isinstance(v, list) and all(item(x) for x in v)

        def is_names(v):
            return is_list(v, lambda n: isinstance(n, str))

        def is_layout(v):
            return is_list(v, lambda g: isinstance(g, dict) and is_names(g.get("params")))

        n = len(state["units"]) if isinstance(state["units"], list) else 0
        expected = {  # key: (check, what it must be)
            "units": (lambda v: n > 0 and is_list(v, lambda u: isinstance(u, str) or is_names(u)),
                      "a non-empty list of module-name lists"),
            "unit_names": (lambda v: is_names(v) and len(v) == n, f"a list of {n} unit names"),
            "head_units": (lambda v: is_int(v) and 1 <= v, "an integer >= 1"),
            "frozen": (lambda v: is_list(v, lambda i: is_int(i) and i < n), f"a list of unit indices 0..{n - 1}"),
            "cooling": (lambda v: is_list(v, lambda c: isinstance(c, dict) and c.keys() >= {"decided_step", "signal"}
                                          and is_int(c.get("index")) and c["index"] < n),
                        f"a list of cool-downs of units 0..{n - 1}"),
            "step": (is_int, "an integer >= 0"),
            "decision_time_s": (lambda v: isinstance(v, numbers.Real), "a number"),
            "policy": (lambda v: isinstance(v, dict), "a dict"),
            "timeline": (lambda v: is_list(v, lambda e: isinstance(e, dict)), "a list of freeze events"),
            "param_groups": (is_layout, "a list of param groups of parameter names"),
            "original_param_groups": (is_layout, "a list of param groups of parameter names"),
            "pinned_outside": (is_names, "a list of module names"),
            "signals": (lambda v: v is None or isinstance(v, dict), "a dict"),
        }
        for key, (ok, what) in expected.items():
            if key in state and not ok(state[key]):
                raise bad(f"{key!r} must be {what}, got {state[key]!r:.100}")
        try:
            timeline = [FreezeEvent(**e) for e in state["timeline"]]
        except TypeError as e:
            raise bad(f"'timeline' holds an entry that is not a freeze event ({e})") from None
        # the units, rebuilt on this model: they must be this Freezer's and account for every parameter
        # its optimizer trains (a state from a smaller model would silently drop the rest)
        theirs = f"its units {_few(state['unit_names'])}"
        try:
            units = units_from_names(self.model, state["units"])
        except ModelError as e:
            raise bad(f"it was saved from another model: {theirs} do not fit this one ({e})") from None
        for u, name in zip(units, state["unit_names"]):
            u.name = name
        units[-1].head_of = saved_head  # the saved head, as merged: a resumed run saves it alike

        def params_of(us):  # (a unit's modules may differ by glue that owns nothing: a traced unit holds its ReLU)
            return [sorted(id(p) for p in u.params) for u in us]

        if self.units is not None and params_of(units) != params_of(self.units):
            raise bad(f"{theirs} are not this Freezer's {_few(self.unit_names)}: it was saved from another model "
                      f"(or with other units= or head_units=: its head merges {saved_head} unit(s))")
        known = set(self.param_name_by_id.values())
        strange = [p for g in state["param_groups"] for p in g["params"] if p not in known]
        if strange:
            raise bad(f"it was saved from another model: its optimizer layout names parameters this model lacks "
                      f"({strange[:3]}{' ...' if len(strange) > 3 else ''})")
        kept = {p for g in state["param_groups"] for p in g["params"]}
        kept |= {self.param_name_by_id.get(id(p)) for i in state["frozen"] for p in units[i].params}
        dropped = [name for g in self.optimizer.param_groups for p in g["params"]
                   if (name := self.param_name_by_id.get(id(p))) is not None and name not in kept]
        if dropped:
            raise bad(f"it was saved from another model: {theirs} leave out parameters this optimizer trains "
                      f"({dropped[:3]}{' ...' if len(dropped) > 3 else ''}), which would never train again")
        return units, timeline
