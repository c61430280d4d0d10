"""The LR-scheduler bridge: a user's torch LR scheduler and the policy's per-unit scales, composed.

A unit's lr is (what the scheduler says for the unit's original param group) x (the policy's
scale for the unit). Two things stand in the way, and this module handles both:

* **Group count.** The Freezer splits every param group per unit, but a scheduler keeps per-group
  lists (``base_lrs``, ``lr_lambdas``, ...) and ``zip``s them with the groups, silently leaving the
  new groups unscheduled. :meth:`SchedulerBridge.sync` expands those lists to the split layout
  (:func:`remap_group_lists`); :mod:`frostline.integrations.layout` folds a saved state back.
* **Scaled lrs.** A scheduler must see the *unscaled* lr when it steps (a chainable scheduler
  computes the next lr from ``group["lr"]`` and would compound the scale), while the optimizer and
  everyone who reads ``param_groups`` between steps (loggers, the HF and Lightning callbacks) must
  see the scaled lr. So the bridge runs around the scheduler's ``step``: unscaled lrs in, record
  what the scheduler set, scaled lrs out.

Why ``step`` is wrapped by changing the scheduler's class (to a subclass that adds only
``step``): torch schedulers have no step hooks; an instance attribute ``step`` would land in
``scheduler.state_dict()`` (it returns ``vars(self)``); optimizer step pre/post hooks could apply
the scale only *during* ``optimizer.step()``, so ``param_groups`` would show unscaled lrs to every
reader between steps; a proxy ``scheduler.optimizer`` would show them to Lightning's LR monitor.
The subclass keeps ``isinstance`` and ``state_dict`` as they were; the bridge the wrapped ``step``
reports to lives on that class, so the scheduler's own state stays untouched.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import ConfigError
from .param_groups import group_map, unit_groups

#: Scheduler attributes with one entry per param group, by name: torch's schedulers keep exactly
#: these (``base_lrs``, ``_last_lr``: all; ``lr_lambdas``: LambdaLR, MultiplicativeLR; ``min_lrs``:
#: ReduceLROnPlateau; ``max_lrs``, ``base_momentums``, ``max_momentums``: CyclicLR). A list's length
#: says nothing: OneCycleLR's ``_schedule_phases`` (2 or 3 phases) or SequentialLR's ``_milestones``
#: can equal the group count by chance, and expanding them corrupts the schedule. OneCycleLR keeps
#: its per-group values (``initial_lr``, ``max_lr``, ...) in the param groups, which the split copies.
_PER_GROUP = frozenset({"base_lrs", "_last_lr", "lr_lambdas", "min_lrs", "max_lrs", "base_momentums", "max_momentums"})


def group_count(scheduler_state: dict[str, Any]) -> int | None:
    """Number of param groups a scheduler's (state) dict is laid out for."""
    for key in ("base_lrs", "min_lrs", "_last_lr"):
        if isinstance(scheduler_state.get(key), list):
            return len(scheduler_state[key])
    return None


def remap_group_lists(scheduler_state: dict[str, Any], n: int, mapping: Sequence[int]) -> None:
    """In place: every per-group list (:data:`_PER_GROUP`) of length ``n`` becomes
    ``[old[i] for i in mapping]``; nested schedulers (SequentialLR's and ChainedScheduler's
    ``_schedulers``, objects or state dicts) are remapped too. Other lists are left alone."""
    for sub in scheduler_state.get("_schedulers") or ():
        sub_state = sub if isinstance(sub, dict) else getattr(sub, "__dict__", None)
        if sub_state is not None and group_count(sub_state) == n:
            remap_group_lists(sub_state, n, mapping)
    for key in _PER_GROUP & scheduler_state.keys():
        value = scheduler_state[key]
        if isinstance(value, list) and len(value) == n:
            scheduler_state[key] = [value[i] for i in mapping]


class SchedulerBridge:
    """The LR schedulers attached to one :class:`~frostline.Freezer`."""

    def __init__(self, freezer):
        self.freezer = freezer
        self.attached: list = []

    def attach(self, scheduler) -> None:
        """See :meth:`frostline.Freezer.attach_scheduler`."""
        sched = getattr(scheduler, "scheduler", scheduler)  # accelerate's AcceleratedScheduler
        if any(s is sched for s in self.attached):
            return
        optimizer = self.freezer.optimizer
        if getattr(getattr(sched, "optimizer", optimizer), "param_groups", None) is not optimizer.param_groups:
            raise ConfigError("the LR scheduler drives a different optimizer than the Freezer's")
        previous = getattr(type(sched), "_frostline_bridge", None)
        if previous is None:
            self._rebase_if_built_on_split_groups(sched)
            _wrap_step(sched)
        else:  # attached to an earlier Freezer (a second trainer.train()): move it here
            previous.attached = [s for s in previous.attached if s is not sched]
        type(sched)._frostline_bridge = self
        self.attached.append(sched)
        self.sync()

    def _rebase_if_built_on_split_groups(self, sched) -> None:
        """A scheduler made after the split (after ``Freezer(..., example_input=x)``) took the lrs the
        Freezer had just scaled as its base lrs; a closed-form one (LambdaLR, Hugging Face's schedules)
        then trained every unit at lr x scale x scale, silently. Its base lrs are then exactly what the
        Freezer wrote: make them the unscaled ones (chainable schedulers do not read them). Base lrs of
        its own (CyclicLR's, OneCycleLR's, from its arguments) differ and are left alone."""
        groups, written = self.freezer.optimizer.param_groups, self.freezer._lrs_written
        if group_map(self.freezer.optimizer) is None or written is None or len(written) != len(groups):
            return
        unscaled = [g["frostline_base_lr"] for g in groups]
        for s in [sched, *(getattr(sched, "_schedulers", None) or ())]:
            if getattr(s, "base_lrs", None) == written != unscaled:
                s.base_lrs = list(unscaled)

    def sync(self) -> None:
        """Expand attached schedulers' per-group lists to the current (split) layout."""
        mapping = group_map(self.freezer.optimizer)
        if mapping is None:
            return
        original = len(self.freezer.original_param_groups)
        for sched in self.attached:
            n = group_count(vars(sched))
            if n is None or n == len(mapping):
                continue
            if n != original:
                raise ConfigError(
                    f"the LR scheduler has {n} param groups, the optimizer {len(mapping)} (split by the Freezer "
                    f"from {original}): create the scheduler before the Freezer splits groups")
            remap_group_lists(vars(sched), n, mapping)

    def before_step(self) -> None:
        self.sync()
        for g in unit_groups(self.freezer.optimizer):
            g["lr"] = g["frostline_base_lr"]  # chainable schedulers must not compound our scale

    def after_step(self) -> None:
        groups = unit_groups(self.freezer.optimizer)
        for g in groups:
            g["frostline_base_lr"] = g["lr"]
        if groups and self.freezer.ready:
            self.freezer._apply_lr()


def _plain_instance(cls):
    """An empty instance of ``cls`` for pickle to fill with a wrapped scheduler's state."""
    return cls.__new__(cls)


def _wrap_step(sched) -> None:
    """Give ``sched`` a class whose ``step`` runs inside its bridge (see the module docstring)."""
    base = type(sched)

    def step(this, *args, **kwargs):
        bridge = type(this)._frostline_bridge
        bridge.before_step()
        result = base.step(this, *args, **kwargs)
        bridge.after_step()
        return result

    def reduce(this, protocol):
        # pickled (torch.save of the scheduler object, a deepcopy) as the plain scheduler it was: the
        # class made here is no importable name; a loaded copy is attached again if it is to drive a Freezer
        return _plain_instance, (base,), dict(this.__dict__)

    sched.__class__ = type(base.__name__, (base,), {
        "step": step, "__reduce_ex__": reduce, "_frostline_bridge": None, "__module__": base.__module__,
        "__qualname__": base.__qualname__})
