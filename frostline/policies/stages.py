"""Freezing stages: the steps at which a stage-based policy looks at its signals and decides.

``per_epoch`` stages per epoch of ``steps_per_epoch`` steps (at most one per step), evenly spread (the k-th stage of an
epoch ends after ``k * steps_per_epoch // per_epoch`` of its steps), or one stage every
``every_steps`` steps (which wins when both are given: a named method is handed the run's epoch
length whatever cadence the user chose). A function of the step count alone, so a resumed run
meets the same stages.

:class:`StagedPolicy` is the bookkeeping shared by the policies that decide at stage ends from a
per-unit readiness rule (the CKA oracle, SmartFRZ); each method keeps only its rule in its file.
"""

from __future__ import annotations

import warnings
from bisect import bisect_left, bisect_right
from typing import Any

from ..errors import CheckpointError, ConfigError, check_bool, check_int
from .base import FreezePolicy, Progress


class StageClock:
    """Where the stage boundaries fall. ``per_epoch_name`` and ``every_name`` are the option
    names the caller exposes (``stages_per_epoch``, ``snapshot_steps``...), for error messages."""

    def __init__(self, per_epoch: int, steps_per_epoch: int | None, every_steps: int | None,
                 per_epoch_name: str = "stages_per_epoch", every_name: str = "stage_steps"):
        check_int(per_epoch, per_epoch_name, low=1)
        check_int(steps_per_epoch, "steps_per_epoch", low=1, allow_none=True)
        if every_steps is not None:
            check_int(every_steps, every_name, low=1)
            # a cadence in steps wins over one per epoch: the callbacks and the Freezer hand a named
            # method the run's epoch length, which the user who chose every_steps never gave
            steps_per_epoch = None
        elif steps_per_epoch is None:
            raise ConfigError("the length of a stage is unknown: pass steps_per_epoch (optimizer steps per epoch, "
                              f"e.g. len(train_loader)) with {per_epoch_name}, or {every_name}")
        else:
            # an epoch shorter than the cadence (a small dataset) gets one stage per step: every
            # dataset size the data loader accepts is a valid run
            per_epoch = min(per_epoch, steps_per_epoch)
        self.per_epoch = per_epoch
        self.steps_per_epoch = steps_per_epoch
        self.every_steps = every_steps
        if steps_per_epoch is not None:
            # steps (0-based, within an epoch) at which the 2nd, 3rd, ... stage of the epoch begins
            self._starts = [k * steps_per_epoch // per_epoch for k in range(1, per_epoch)]
            # steps within an epoch (0-based) that close a stage: asked at every optimizer step
            self._ends = frozenset([start - 1 for start in self._starts] + [steps_per_epoch - 1])
            self._sorted_ends = sorted(self._ends)

    def index(self, step: int) -> int:
        """Which stage (0-based, counted from the start of training) optimizer step ``step``
        (1-based) belongs to."""
        s = step - 1
        if self.every_steps is not None:
            return s // self.every_steps
        epoch, within = divmod(s, self.steps_per_epoch)
        return epoch * self.per_epoch + bisect_right(self._starts, within)

    def next_end(self, step: int) -> int:
        """The first optimizer step after ``step`` (1-based) that closes a stage."""
        if self.every_steps is not None:
            return (max(step, 0) // self.every_steps + 1) * self.every_steps
        step = max(step, 0)
        within = step % self.steps_per_epoch  # 0-based position of step + 1 in its epoch
        ends = self._sorted_ends
        k = bisect_left(ends, within)
        if k < len(ends):
            return step + 1 + ends[k] - within
        return step + 1 + self.steps_per_epoch - within + ends[0]

    def is_stage_end(self, step: int) -> bool:
        """Whether optimizer step ``step`` (1-based) closes a stage (``index`` changes after it)."""
        if step <= 0:
            return False
        if self.every_steps is not None:
            return step % self.every_steps == 0
        return (step - 1) % self.steps_per_epoch in self._ends


class StagedPolicy(FreezePolicy):
    """A policy that records a per-unit signal and, at the end of each stage of :attr:`clock`,
    freezes the units its rule finds ready, for good. The head never freezes. With
    ``prefix_only`` a ready unit waits until every unit before it is frozen or ready, so the
    frozen units stay a prefix (what the activation cache and the backward savings need).

    A subclass gives the rule: :meth:`_record` (keep the signals of one step),
    :meth:`_ready` (the units ready at this stage end, with the reason for each), and its
    histories' ``_reset``/:meth:`_own_state`/:meth:`_load_own_state`.
    """

    def __init__(self, stages_per_epoch: int, steps_per_epoch: int | None, stage_steps: int | None,
                 prefix_only: bool):
        super().__init__()
        self.clock = StageClock(stages_per_epoch, steps_per_epoch, stage_steps)
        self.prefix_only = check_bool(prefix_only, "prefix_only")

    def _reset(self) -> None:
        self.frozen: set[int] = set()
        self.stages_done = 0
        self._reasons: dict[int, dict[str, Any]] = {}
        self._run_steps: int | None = None  # the run's length, once seen (at the first step)

    def bind(self, unit_names):
        super().bind(unit_names)
        self._reset()

    def wants(self, progress: Progress) -> frozenset[str]:
        self._say_if_never_decides(progress)
        return self.requires if self.clock.is_stage_end(progress.step) else frozenset()

    # -- a run too short to decide in: said at its first step, not after it ends --------------
    def _first_decision(self) -> tuple[int, str]:
        """The first step at which the rule can freeze a unit, and what sets it."""
        return self.clock.next_end(0), f"it decides at the end of each stage ({self._cadence()})"

    def _cadence(self) -> str:
        if self.clock.every_steps is not None:
            return f"every stage_steps={self.clock.every_steps} steps"
        return (f"{self.clock.per_epoch} per epoch of steps_per_epoch={self.clock.steps_per_epoch} optimizer steps: "
                "the optimizer steps of one epoch are len(train_loader) divided by the gradient accumulation steps")

    def _never_decides(self) -> str | None:
        """Why this run ends before the rule can freeze anything (None: it can)."""
        if self._run_steps is None:
            return None
        first, why = self._first_decision()
        if first <= self._run_steps:
            return None
        return (f"{why}, so its first decision would fall at step {first}, after the {self._run_steps} steps of the "
                "run; train longer or decide more often")

    def _say_if_never_decides(self, progress: Progress) -> None:
        if self._run_steps is not None:
            return
        self._run_steps = progress.total_steps
        why = self._never_decides()
        if why is not None and not self.frozen:
            warnings.warn(f"frostline: {self.name} can freeze nothing in this run: {why}", stacklevel=4)

    def why_idle(self) -> str | None:
        return self._never_decides() if not self.frozen else None

    def next_call(self, progress: Progress) -> int:
        """Signals are read and decisions change only at stage ends."""
        return self.clock.next_end(progress.step)

    # -- the rule (subclasses) ---------------------------------------------------------------
    def _record(self, progress: Progress, signals: dict[str, Any]) -> None:
        """Keep what the signals of an observed step say (every observed step, stage end or not)."""
        raise NotImplementedError

    def _ready(self, progress: Progress) -> dict[int, dict[str, Any]]:
        """Units below the head, not frozen yet, that the rule finds ready now -> the reason."""
        raise NotImplementedError

    def _own_state(self) -> dict[str, Any]:
        return {}

    def _load_own_state(self, state: dict[str, Any]) -> None:
        pass

    # -- the shared part ---------------------------------------------------------------------
    def _check_units(self, saved: int) -> None:
        if saved != self.num_units:
            raise CheckpointError(f"saved {type(self).__name__} state is for {saved} units, this model has "
                                  f"{self.num_units}: resume the same model")

    def observe(self, progress: Progress, signals: dict[str, Any]) -> None:
        self._record(progress, signals)
        if not self.clock.is_stage_end(progress.step):
            return
        self.stages_done += 1
        ready = self._ready(progress)
        new = self._prefix(ready) if self.prefix_only else set(ready)
        for i in sorted(new):
            self._reasons[i] = ready[i]
        self._freeze(new)

    def _prefix(self, ready) -> set[int]:
        """The ready units that extend the frozen prefix: up to the first unit neither frozen nor ready."""
        new, i = set(), 0
        while i < self.num_units - 1 and (i in self.frozen or i in ready):
            if i not in self.frozen:
                new.add(i)
            i += 1
        return new

    def _freeze(self, units: set[int]) -> None:
        self.frozen |= units

    def decide(self, progress: Progress) -> set[int]:
        return set(self.frozen)

    def reason(self, unit: int):
        return self._reasons.get(unit)

    # -- resume ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(self._own_state())
        state.update(frozen=sorted(self.frozen), stages_done=self.stages_done,
                     reasons=[[i, dict(r)] for i, r in sorted(self._reasons.items())])
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        try:
            self._load_own_state(state)
            self.frozen = {int(i) for i in state["frozen"]}
            self.stages_done = int(state["stages_done"])
            self._reasons = {int(i): dict(r) for i, r in state["reasons"]}
        except KeyError as e:
            raise CheckpointError(f"saved {type(self).__name__} state lacks {e}: it is not from this version") from None
