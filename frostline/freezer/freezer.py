"""The Freezer: the only code that *acts* on a freezing decision.

It flips ``requires_grad``, takes frozen parameters (and their optimizer state) out of the
optimizer, keeps frozen modules in eval mode even after ``model.train()``, applies per-unit
learning rates, records the timeline, and saves/restores all of it for an exact resume.

Plain PyTorch use is two lines::

    freezer = Freezer(model, optimizer, FreezeOut(), total_steps=len(loader) * epochs)
    ...  # after each optimizer.step():
    freezer.step()
"""

from __future__ import annotations

import time
import types
from dataclasses import dataclass, asdict
from typing import Any, Sequence

import torch
from torch import nn

from .errors import CheckpointError, ConfigError, FrostlineError, ModelError
from .policies.base import FreezePolicy, Progress
from .units import GRANULARITIES, ExecutionOrderRecorder, FreezeUnit, freeze_units, units_from_names

STATE_VERSION = 2
#: Versions :meth:`Freezer.load_state_dict` still reads (1: no original optimizer layout).
READABLE_VERSIONS = (1, 2)
#: Signals the Freezer computes itself; others come from collectors (frostline.signals).
BUILTIN_SIGNALS = frozenset({"grad_norm"})


@dataclass
class FreezeEvent:
    """One entry of the freezing timeline."""

    unit: str
    index: int
    step: int
    fraction: float
    signal: dict[str, Any] | None = None


def _train_keeps_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    """Replacement ``train`` for a frozen module: whatever the caller asks, stay in eval mode so
    BatchNorm statistics stop moving and dropout is off."""
    return nn.Module.train(self, False)


def _pin_eval(module: nn.Module) -> None:
    for m in module.modules():
        m.train = types.MethodType(_train_keeps_eval, m)
    nn.Module.train(module, False)


class Freezer:
    """Applies a :class:`~frostline.policies.FreezePolicy` to a model and its optimizer.

    Units come from ``units`` (module names, taken in the order given) or are traced: from
    ``example_input`` if given, else from the first forward pass the model runs after the
    Freezer is made.
    ``freeze_head=False`` keeps the last unit trainable whatever the policy says.
    ``sync`` (e.g. :class:`frostline.exploit.distributed.DecisionSync`) makes every rank of a distributed
    run apply the same decision: its ``agree(wanted, frozen, num_units, step)`` returns the set to
    act on, and ``applied(newly)`` hears about units frozen by it (to rebuild DDP).
    ``signals`` maps signal names to collectors (:mod:`frostline.signals`); they override the
    policy's own ``collectors()``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        policy: FreezePolicy,
        total_steps: int,
        *,
        units: Sequence | None = None,
        granularity: str = "block",
        example_input=None,
        freeze_head: bool = False,
        sync=None,
        signals: dict[str, Any] | None = None,
    ):
        if not isinstance(total_steps, int) or total_steps <= 0:
            raise ConfigError(f"total_steps must be a positive integer, got {total_steps!r}")
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
        self.timeline: list[FreezeEvent] = []
        self.step_count = 0
        #: Seconds spent collecting signals and deciding (the method's own overhead).
        self.decision_time_s = 0.0
        self._recorder = None
        self._extra_signals = dict(signals or {})
        self._collectors: dict[str, Any] = {}
        self._param_name = {id(p): n for n, p in model.named_parameters()}
        #: The optimizer's layout as the user's code creates it: parameter names and
        #: hyperparameters per original group (what a fresh optimizer/scheduler expects).
        self.original_param_groups = [
            {**{k: v for k, v in g.items() if k != "params"},
             "params": [self._param_name[id(p)] for p in g["params"] if id(p) in self._param_name]}
            for g in optimizer.param_groups
        ]
        self._schedulers: list = []
        if units is not None:
            self._setup(units_from_names(model, [[u] if isinstance(u, str) else list(u) for u in units]))
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
        self._setup(freeze_units(self.model, self.granularity, execution_order=recorder.order))

    def detach_trace(self) -> None:
        """Stop waiting for a first forward (training ended before any batch)."""
        if self._recorder is not None:
            self._recorder.detach()
            self._recorder = None

    def _setup(self, units: list[FreezeUnit]) -> None:
        self._recorder = None
        self.units = units
        self.policy.bind([u.name for u in units])
        self._bind_collectors()
        if self.policy.scales_lr:
            self._split_param_groups()
        self._apply_lr(self.progress)

    def _bind_collectors(self) -> None:
        """Find a collector for every signal the policy needs, and let each check the model."""
        self._collectors = {**self.policy.collectors(), **self._extra_signals}
        missing = sorted(n for n in self.policy.requires if n not in BUILTIN_SIGNALS and n not in self._collectors)
        if missing:
            raise ConfigError(
                f"method {self.policy.name!r} needs signal(s) {missing} that nothing collects: pass "
                "Freezer(..., signals={name: collector}) (see frostline.signals) or the policy's own settings "
                "(e.g. CKAOracle(reference=..., probe=...))")
        for collector in self._collectors.values():
            if hasattr(collector, "bind"):
                collector.bind(self)

    def _split_param_groups(self) -> None:
        """Give every (original group, unit) pair its own param group so each unit can have its
        own learning rate. Parameters outside every unit keep their original group."""
        unit_of = {id(p): i for i, u in enumerate(self.units) for p in u.params}
        new_groups = []
        for index, group in enumerate(self.optimizer.param_groups):
            buckets: dict[int | None, list] = {}
            for p in group["params"]:
                buckets.setdefault(unit_of.get(id(p)), []).append(p)
            # an empty group stays (as one group), so every original group keeps a place
            for unit, params in sorted(buckets.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)) or [(None, [])]:
                g = {k: v for k, v in group.items() if k != "params"}
                g.update(params=params, frostline_unit=unit, frostline_base_lr=group.get("frostline_base_lr", group["lr"]),
                         frostline_group=group.get("frostline_group", index))
                new_groups.append(g)
        self.optimizer.param_groups[:] = new_groups
        self._sync_schedulers()

    # -- LR schedulers ---------------------------------------------------------------------
    def attach_scheduler(self, scheduler) -> None:
        """Make a torch LR scheduler of this optimizer compose with the policy's per-unit
        learning rates: a unit's lr becomes (what ``scheduler`` says for its original param
        group) x (the policy's scale for the unit). Create the scheduler on the optimizer as
        your code builds it (before the Freezer splits groups: before the first forward, or
        before ``Freezer(units=...)``); call ``scheduler.step()`` as usual, before or after
        ``freezer.step()``. Without a scheduler the per-unit lr stays the group's lr at the split.

        Per-group lists of the scheduler (``base_lrs``, ``lr_lambdas``, ...) are expanded when
        groups are split (so ``zip`` over groups does not silently drop the new ones), and its
        ``step`` is wrapped (its class becomes a subclass) so that it sees and sets unscaled lrs."""
        sched = getattr(scheduler, "scheduler", scheduler)  # accelerate's AcceleratedScheduler
        if any(s is sched for s in self._schedulers):
            return
        if getattr(getattr(sched, "optimizer", self.optimizer), "param_groups", None) is not self.optimizer.param_groups:
            raise ConfigError("the LR scheduler drives a different optimizer than the Freezer's")
        previous = getattr(type(sched), "_frostline_freezer", None)
        if previous is not None:  # attached to an earlier Freezer (a second trainer.train()): move it here
            previous._schedulers = [s for s in previous._schedulers if s is not sched]
            type(sched)._frostline_freezer = self
            self._schedulers.append(sched)
            self._sync_schedulers()
            return
        base = type(sched)

        def step(this, *args, **kwargs):
            freezer = type(this)._frostline_freezer
            freezer._before_scheduler_step()
            result = base.step(this, *args, **kwargs)
            freezer._after_scheduler_step()
            return result

        sched.__class__ = type(base.__name__, (base,), {
            "step": step, "_frostline_freezer": self, "__module__": base.__module__,
            "__qualname__": base.__qualname__})
        self._schedulers.append(sched)
        self._sync_schedulers()

    def _group_map(self) -> list[int] | None:
        """Original group index of every current param group (None when groups are not split)."""
        groups = self.optimizer.param_groups
        if not any("frostline_group" in g for g in groups):
            return None
        if not all("frostline_group" in g for g in groups):
            raise FrostlineError("some optimizer param groups were added outside the Freezer after it split them")
        return [g["frostline_group"] for g in groups]

    def _sync_schedulers(self) -> None:
        """Expand attached schedulers' per-group lists to the current (split) layout."""
        mapping = self._group_map()
        if mapping is None:
            return
        for sched in self._schedulers:
            n = _group_count(vars(sched))
            if n is None or n == len(mapping):
                continue
            if n != len(self.original_param_groups):
                raise ConfigError(
                    f"the LR scheduler has {n} param groups, the optimizer {len(mapping)} (split by the Freezer "
                    f"from {len(self.original_param_groups)}): create the scheduler before the Freezer splits groups")
            _remap_group_lists(vars(sched), n, mapping)

    def _unit_groups(self):
        return [g for g in self.optimizer.param_groups if g.get("frostline_unit") is not None]

    def _before_scheduler_step(self) -> None:
        self._sync_schedulers()
        for g in self._unit_groups():
            g["lr"] = g["frostline_base_lr"]  # chainable schedulers must not compound our scale

    def _after_scheduler_step(self) -> None:
        groups = self._unit_groups()
        for g in groups:
            g["frostline_base_lr"] = g["lr"]
        if groups and self.ready:
            self._apply_lr(self.progress)

    # -- the step --------------------------------------------------------------------------
    @property
    def progress(self) -> Progress:
        return Progress(self.step_count, self.total_steps)

    @property
    def ready(self) -> bool:
        return self.units is not None

    def _require_units(self) -> list[FreezeUnit]:
        if self.units is None:
            raise FrostlineError(
                "the Freezer has not seen a forward pass yet: call freezer.step() after the "
                "optimizer step of a batch that ran through the model (or pass example_input=)"
            )
        return self.units

    def step(self) -> list[int]:
        """Call after each ``optimizer.step()``. Returns the indices of units frozen now."""
        self._require_units()
        self.step_count += 1
        progress = self.progress
        t0 = time.perf_counter()
        wanted_signals = self.policy.wants(progress)
        if wanted_signals:
            self.policy.observe(progress, self.collect_signals(wanted_signals))
        wanted = self.policy.decide(progress)
        self.decision_time_s += time.perf_counter() - t0
        if self.sync is not None:
            wanted = self.sync.agree(wanted, self.frozen, len(self.units), self.step_count)
        newly = self._admissible(wanted)
        for i in newly:
            self.freeze(i, signal=self.policy.reason(i))
        if newly and self.sync is not None:
            self.sync.applied(newly)
        self._apply_lr(progress)
        return newly

    def _admissible(self, wanted: set[int]) -> list[int]:
        last = len(self.units) - 1
        return sorted(i for i in wanted if i not in self.frozen and 0 <= i <= last and (self.freeze_head or i != last))

    def collect_signals(self, names) -> dict[str, Any]:
        """Signals a policy asked for, computed from the live model (extended by later policies)."""
        signals: dict[str, Any] = {}
        for name in names:
            if name in self._collectors:
                signals[name] = self._collectors[name](self)
            elif name == "grad_norm":
                signals[name] = self.grad_norms()
            else:
                raise FrostlineError(f"the Freezer cannot collect signal {name!r}")
        return signals

    def grad_norms(self) -> list[float | None]:
        """L2 norm of each active unit's current gradient (None for frozen units or units without
        gradients): one fused norm per device and a single host transfer per step."""
        units = self._require_units()
        by_device: dict[torch.device, tuple[list, list]] = {}
        for i, u in enumerate(units):
            if i in self.frozen:
                continue
            for p in u.params:
                if p.grad is not None:
                    grads, owners = by_device.setdefault(p.grad.device, ([], []))
                    grads.append(p.grad)
                    owners.append(i)
        if not by_device:
            return [None] * len(units)
        total = None
        for device, (grads, owners) in by_device.items():
            sq = torch.stack(torch._foreach_norm(grads)).to(torch.float32).square()
            part = torch.zeros(len(units), dtype=torch.float32, device=device).index_add_(
                0, torch.tensor(owners, device=device), sq)
            total = part if total is None else total + part.to(total.device)
        values = total.sqrt().tolist()
        has = {i for _, owners in by_device.values() for i in owners}
        return [values[i] if i in has else None for i in range(len(units))]

    # -- acting ----------------------------------------------------------------------------
    def freeze(self, index: int, signal: dict[str, Any] | None = None) -> None:
        """Freeze unit ``index`` now: no gradients, out of the optimizer, pinned to eval mode."""
        unit = self._require_units()[index]
        if index in self.frozen:
            return
        self._detach_from_training(unit)
        self._remove_from_optimizer(unit.params)
        self.frozen.add(index)
        self.timeline.append(
            FreezeEvent(unit.name, index, self.step_count, self.step_count / self.total_steps, signal)
        )

    @staticmethod
    def _detach_from_training(unit: FreezeUnit) -> None:
        for p in unit.params:
            p.requires_grad_(False)
            p.grad = None
        for m in unit.modules:
            _pin_eval(m)

    def _remove_from_optimizer(self, params) -> None:
        """Drop ``params`` from every group and drop their state, so ``optimizer.state_dict()``
        keeps working (Composer's version leaves the state behind and state_dict() raises).
        Groups that become empty stay, so LR schedulers keep their per-group lists aligned."""
        gone = {id(p) for p in params}
        for group in self.optimizer.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in gone]
        for p in params:
            self.optimizer.state.pop(p, None)

    def _apply_lr(self, progress: Progress) -> None:
        scales = self.policy.lr_scales(progress)
        if scales is None:
            return
        for group in self.optimizer.param_groups:
            unit = group.get("frostline_unit")
            if unit is not None:
                group["lr"] = group["frostline_base_lr"] * scales[unit]

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
        return {
            "version": STATE_VERSION,
            "units": [list(u.module_names) for u in units],
            "unit_names": [u.name for u in units],
            "frozen": sorted(self.frozen),
            "step": self.step_count,
            "decision_time_s": self.decision_time_s,
            "total_steps": self.total_steps,
            "timeline": [asdict(e) for e in self.timeline],
            "policy": self.policy.state_dict(),
            "original_param_groups": self.original_param_groups,
            "param_groups": [
                {**{k: v for k, v in g.items() if k != "params"},
                 "params": [self._param_name[id(p)] for p in g["params"]]}
                for g in self.optimizer.param_groups
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore units, frozen set, policy and param-group layout. Call this *before*
        ``optimizer.load_state_dict`` so the optimizer's groups match the saved ones, or *after*
        loading a state converted by :mod:`frostline.integrations.layout` (original layout): the
        per-parameter state just loaded is kept, and attached schedulers are expanded."""
        if not isinstance(state, dict) or state.get("version") not in READABLE_VERSIONS:
            raise CheckpointError("not a frostline Freezer state (or from an incompatible version)")
        if state["total_steps"] != self.total_steps:
            raise CheckpointError(
                f"saved run had total_steps={state['total_steps']}, this one {self.total_steps}: "
                "resume with the same epochs, batch size and data"
            )
        self.detach_trace()
        try:
            units = units_from_names(self.model, state["units"])
        except ModelError as e:
            raise CheckpointError(f"saved freeze units do not match this model: {e}") from None
        for u, name in zip(units, state["unit_names"]):
            u.name = name
        self.units = units
        self.policy.bind([u.name for u in units])
        self._bind_collectors()
        self.policy.load_state_dict(state["policy"])
        self.step_count = int(state["step"])
        self.decision_time_s = float(state.get("decision_time_s", 0.0))
        self.timeline = [FreezeEvent(**e) for e in state["timeline"]]
        self.frozen = set(state["frozen"])
        for i in self.frozen:
            self._detach_from_training(units[i])
        if "original_param_groups" in state:
            self.original_param_groups = state["original_param_groups"]
        self._restore_param_groups(state["param_groups"])
        self._sync_schedulers()
        self._apply_lr(self.progress)

    def _restore_param_groups(self, saved: list[dict[str, Any]]) -> None:
        by_name = dict(self.model.named_parameters())
        missing = [n for g in saved for n in g["params"] if n not in by_name]
        if missing:
            raise CheckpointError(f"saved optimizer layout names parameters the model lacks: {missing[:5]}")
        groups = [{**g, "params": [by_name[n] for n in g["params"]]} for g in saved]
        kept = {id(p) for g in groups for p in g["params"]}
        for p in list(self.optimizer.state):
            if id(p) not in kept:
                del self.optimizer.state[p]
        self.optimizer.param_groups[:] = groups


#: Scheduler attributes that are lists but not one entry per param group.
_NOT_PER_GROUP = frozenset({"_milestones", "milestones", "_schedulers"})


def _group_count(scheduler_state: dict[str, Any]) -> int | None:
    """Number of param groups a scheduler's (state) dict is laid out for."""
    for key in ("base_lrs", "min_lrs", "_last_lr"):
        if isinstance(scheduler_state.get(key), list):
            return len(scheduler_state[key])
    return None


def _remap_group_lists(scheduler_state: dict[str, Any], n: int, mapping: Sequence[int]) -> None:
    """In place: every per-group list of length ``n`` becomes ``[old[i] for i in mapping]``;
    nested schedulers (SequentialLR, ChainedScheduler) are remapped too."""
    for key, value in list(scheduler_state.items()):
        if key in _NOT_PER_GROUP:
            for sub in value if isinstance(value, list) else ():
                sub_state = sub if isinstance(sub, dict) else getattr(sub, "__dict__", None)
                if sub_state is not None and _group_count(sub_state) == n:
                    _remap_group_lists(sub_state, n, mapping)
        elif isinstance(value, list) and len(value) == n:
            scheduler_state[key] = [value[i] for i in mapping]
