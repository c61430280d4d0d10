"""AutoFreeze (Liu, Agarwal, Venkataraman 2021: "AutoFreeze: Automatically Freezing Model Blocks
to Accelerate Fine-tuning").

Training is cut into ``intervals`` evaluation intervals of ``L = total_steps // intervals``
optimizer steps each (or ``interval_steps``). Over an interval every active unit ``i`` gets
``G_i``, the L1 norm of its gradient *summed* over the interval (summed over the unit's
parameters). At the end of the interval its *change rate* is ``r_i = |G_i(prev) - G_i(now)| /
G_i(prev)`` (the first interval only sets the baseline). Among the active units below the head,
``P`` is the ``N``-th percentile of the rates (``percentile``, default 50), and every unit before
the first one whose ``r >= P`` is frozen: the frozen prefix only grows, the unit that stopped the
scan and the head stay trainable. A unit whose gradient stopped changing is taken to have finished
learning.

What follows the authors' code (github.com/YuhanLiu11/AutoFreeze, ``freeze_intermediate_e2e_lr.py``)
    The interval, ``int(num_train_epochs * len(train_dataloader) / num_intervals)`` there, is
    counted over the whole run, and 20 intervals is their README's setting. ``G_i`` is their
    quantity: the per-parameter gradient summed over the interval, its L1 norm, summed over the
    layer; the percentile is numpy's (linear interpolation); the prefix rule is theirs.

What differs, and why
    * The gradients are caught by hooks as backward runs (:class:`frostline.signals.SummedGradients`),
      not read from ``param.grad`` at the step: the sum is the same in the usual loop, and stays
      right when the user zeroes gradients right after ``optimizer.step()`` (the Hugging Face
      ``Trainer`` always does) or accumulates several micro-batches per step.
    * Guards instead of undefined behaviour: a unit with a zero or missing baseline has no rate and
      is treated as still learning (it stops the prefix); units that had no gradient all interval
      (already frozen, or unused) neither vote nor block; a sum that is not finite (an AMP overflow
      step inside the interval) gives that unit no rate this interval and keeps its old baseline;
      when no unit has a rate, or ``P`` is 0 (the rates of at least ``N``% of the units are exactly
      0) or not finite, the interval decides nothing (the original would divide by zero or restart
      from the first layer). Freezing is never undone and the head is never frozen.
    * Only intervals of the same length are compared. An interval that is shorter or longer than
      ``L`` (the first one after a resume that had no saved state, or one whose end the Freezer
      did not see) only sets a new baseline. The steps after the last full interval (``total_steps``
      not a multiple of ``L``) are never judged, as in the original. With fewer steps than
      intervals, ``L`` is 1.

Interval boundaries are a function of the step count alone, and the sums in progress are saved
with the Freezer's state, so a run resumed from a mid-interval checkpoint decides identically.
If no unit receives any gradient for a whole interval the policy warns once (the signal is not
reaching it, so it would silently never freeze); so it does at the first step of a run too short
for two full intervals (``interval_steps`` too long, or ``total_steps`` not the run's optimizer steps).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

from ...errors import CheckpointError, check_float, check_int
from ..base import FreezePolicy, Progress
from ..registry import Hyperparameter, register_policy

#: The signal AutoFreeze decides from (collected by :class:`frostline.signals.SummedGradients`).
SIGNAL = "grad_sum_l1"


def check_autofreeze_args(percentile: float, intervals: int, interval_steps: int | None) -> None:
    """Checks AutoFreeze's settings."""
    check_float(percentile, "percentile", "(0, 100]")
    check_int(intervals, "intervals", low=1)
    if interval_steps is not None:
        check_int(interval_steps, "interval_steps", low=1)


def percentile_linear(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile with linear interpolation (numpy's default method)."""
    v = sorted(values)
    if not v:
        raise ValueError("percentile of no values")
    pos = (len(v) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def change_rates(prev: Sequence[float | None], now: Sequence[float | None]) -> list[float | None]:
    """``|prev - now| / prev`` per unit; None where there is no previous or current norm, or the
    previous one is 0 (no baseline to be relative to)."""
    out: list[float | None] = []
    for p, g in zip(prev, now):
        if p is None or g is None or not (p > 0.0) or not math.isfinite(p) or not math.isfinite(g):
            out.append(None)
        else:
            out.append(abs(p - g) / p)
    return out


def autofreeze_depth(rates: Sequence[float | None], observed: Sequence[bool], depth: int,
                     percentile: float) -> tuple[int, float | None]:
    """The functional core: the new frozen-prefix length and the threshold ``P``.

    ``rates`` holds one change rate per unit *below the head* (None = no rate), ``observed`` whether
    the unit had a gradient at all during the interval, ``depth`` the units already frozen.
    Returns ``(depth, None)`` when the interval cannot decide (no rates, ``P`` zero or not finite).
    """
    candidates = range(depth, len(rates))
    valid = [rates[i] for i in candidates if rates[i] is not None and observed[i]]
    if not valid:
        return depth, None
    p = min(percentile_linear(valid, percentile), max(valid))  # P <= max: someone always stops the scan
    if not (p > 0.0) or not math.isfinite(p):
        return depth, p
    new = depth
    for i in candidates:
        if not observed[i]:  # no gradient all interval (frozen elsewhere, unused): free to include
            new = i + 1
            continue
        if rates[i] is not None and rates[i] < p:
            new = i + 1
            continue
        break  # r >= P, or no rate (treated as still learning)
    else:
        return depth, p  # cannot happen (the unit with the largest rate stops the scan); stay put
    return new, p


@register_policy(
    "autofreeze",
    Hyperparameter("percentile", "freeze the units before the first whose gradient change rate reaches this percentile"),
    Hyperparameter("intervals", "evaluation intervals over the whole run (each total steps // intervals optimizer steps)"),
)
class AutoFreeze(FreezePolicy):
    """Freeze the prefix of units whose gradient change rate fell below the ``percentile``-th
    percentile, judged at the end of each of ``intervals`` equal intervals of the run (or every
    ``interval_steps`` steps)."""

    name = "autofreeze"
    requires = frozenset({SIGNAL})
    looser = "a higher percentile"

    def __init__(self, percentile: float = 50, intervals: int = 20, interval_steps: int | None = None):
        super().__init__()
        check_autofreeze_args(percentile, intervals, interval_steps)
        self.percentile = float(percentile)
        self.intervals = int(intervals)
        self.interval_steps = interval_steps
        self._warned_no_signal = False
        self._reset()

    def _reset(self) -> None:
        n = self.num_units
        self.depth = 0  # units frozen by this policy: always a prefix
        self.intervals_done = 0
        self._closed_at: int | None = None  # step that closed the last interval (or where the first began)
        self._prev: list[float | None] = [None] * n
        self._prev_full = False  # whether the baseline in _prev came from a full-length interval
        self._reasons: dict[int, dict[str, Any]] = {}
        #: What the last closed interval saw (for logs): sums, rates, threshold, depth.
        self.last_interval: dict[str, Any] | None = None
        #: The step of the first verdict this process can see and the run's length (set at the first
        #: step): a run too short for two full intervals is said at once, not after it ends.
        self._first_verdict: int | None = None
        self._run_steps: int | None = None

    def bind(self, unit_names):
        super().bind(unit_names)
        self._reset()

    def interval_length(self, total_steps: int) -> int:
        """Steps per evaluation interval in a run of ``total_steps`` optimizer steps."""
        if self.interval_steps is not None:
            return self.interval_steps
        return max(1, total_steps // self.intervals)

    # -- intervals -------------------------------------------------------------------------
    def wants(self, progress: Progress) -> frozenset[str]:
        if self._closed_at is None:
            # the first step this policy is asked about: its gradients began the first sum
            self._closed_at = progress.step - 1
        if self._run_steps is None:
            self._say_if_too_short(progress)
        return self.requires if progress.step >= self._due(progress) else frozenset()

    def _say_if_too_short(self, progress: Progress) -> None:
        """A verdict compares two full intervals back to back: a run that ends before the first
        such pair can never freeze anything, which is better said at its first step."""
        length = self.interval_length(progress.total_steps)
        due = self._due(progress)
        full = due - self._closed_at == length
        self._first_verdict = due if full and self._prev_full else due + length if full else due + 2 * length
        self._run_steps = progress.total_steps
        if self.depth == 0 and self._first_verdict > progress.total_steps:
            warnings.warn(f"frostline: AutoFreeze can freeze nothing in this run: {self._too_short()}", stacklevel=4)

    def _too_short(self) -> str:
        length = self.interval_length(self._run_steps)
        how = (f"interval_steps={self.interval_steps}" if self.interval_steps is not None
               else f"total_steps // intervals = {self._run_steps} // {self.intervals}")
        return (f"it compares the gradient sums of two full intervals of {length} steps ({how}), and its first "
                f"verdict would fall at step {self._first_verdict}, after the {self._run_steps} steps of the run: "
                "pass a smaller interval_steps, or check that total_steps is the run's optimizer steps")

    def _due(self, progress: Progress) -> int:
        """The end of the interval being summed."""
        length = self.interval_length(progress.total_steps)
        return (self._closed_at // length + 1) * length

    def next_call(self, progress: Progress) -> int:
        """The end of the interval being summed (the gradient sums keep running in between)."""
        if self._closed_at is None:
            return progress.step + 1
        return max(progress.step + 1, self._due(progress))

    def observe(self, progress: Progress, signals: dict[str, Any]) -> None:
        sums = self._per_unit(signals[SIGNAL], "gradient sums")
        if self._closed_at is None:
            self._closed_at = progress.step - 1
        self._close(progress, [None if g is None else float(g) for g in sums])

    def _close(self, progress: Progress, now: list[float | None]) -> None:
        step, head = progress.step, self.num_units - 1
        length = self.interval_length(progress.total_steps)
        steps = step - self._closed_at
        full = steps == length
        comparable = full and self._prev_full
        self.intervals_done += 1
        if all(g is None for g in now):
            self._warn_no_signal(self._closed_at + 1, step)
        observed = [g is not None for g in now]
        finite = [g if g is not None and math.isfinite(g) else None for g in now]
        rates = change_rates(self._prev, finite) if comparable else [None] * self.num_units
        old = self.depth
        threshold = None
        if comparable and head > 0:
            self.depth, threshold = autofreeze_depth(rates[:head], observed[:head], old, self.percentile)
        for i in range(old, self.depth):
            self._reasons[i] = {"change_rate": rates[i], "threshold": threshold, "percentile": self.percentile,
                                "interval": self.intervals_done, "step": step, "grad_l1": now[i],
                                "prev_grad_l1": self._prev[i]}
        self.last_interval = {"interval": self.intervals_done, "step": step, "steps": steps, "grad_l1": now,
                              "change_rate": rates, "threshold": threshold, "depth": self.depth}
        if comparable:  # a unit without a usable sum this time keeps its last baseline
            self._prev = [g if g is not None else p for g, p in zip(finite, self._prev)]
        else:  # a new baseline, from this interval alone
            self._prev = finite
        self._prev_full = full
        self._closed_at = step

    def _warn_no_signal(self, first: int, last: int) -> None:
        if self._warned_no_signal:
            return
        self._warned_no_signal = True
        warnings.warn(
            f"AutoFreeze saw no gradient in steps {first}-{last}: no parameter of an unfrozen unit received one, "
            "so it cannot tell which units finished learning and freezes nothing. Its gradients are caught by "
            "hooks that the Freezer puts on the model's parameters: build the Freezer on the model you train "
            "(not a copy), check that loss.backward() runs, and call freezer.step() once per optimizer step "
            "(not after freezer.close()). Warned once.", stacklevel=5)

    # -- answers ---------------------------------------------------------------------------
    def decide(self, progress: Progress) -> set[int]:
        return set(range(self.depth))

    def reason(self, unit: int):
        return self._reasons.get(unit)

    def why_idle(self) -> str | None:
        if self.depth:
            return None
        if self._run_steps is not None and self._first_verdict > self._run_steps:
            return self._too_short()
        if self.num_units == 2:
            return ("only one unit is below the head, and the percentile rule freezes a unit only when its change rate "
                    "is below the percentile of the rates, which for one rate is that rate itself: give the Freezer "
                    "more units (granularity='leaf', or units=[...])")
        return None

    def config(self):
        return {"percentile": self.percentile, "intervals": self.intervals, "interval_steps": self.interval_steps}

    # -- resume ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            depth=self.depth,
            intervals_done=self.intervals_done,
            closed_at=self._closed_at,
            prev=list(self._prev),
            prev_full=self._prev_full,
            reasons=[[i, dict(r)] for i, r in sorted(self._reasons.items())],
            last_interval=self.last_interval,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") == self.name and ("closed_at" not in state or "intervals" not in state.get("config", {})):
            raise CheckpointError(
                "saved AutoFreeze state is from an older version (intervals per epoch, averaged gradient norms): "
                "this version sums gradients over intervals of the whole run and cannot continue it; start the run "
                "again")
        super().load_state_dict(state)
        try:
            prev = list(state["prev"])
            if len(prev) != self.num_units:
                raise CheckpointError(
                    f"saved AutoFreeze state is for {len(prev)} units, this model has {self.num_units}: resume the same model"
                )
            self.depth = int(state["depth"])
            self.intervals_done = int(state["intervals_done"])
            self._closed_at = None if state["closed_at"] is None else int(state["closed_at"])
            self._prev = [None if p is None else float(p) for p in prev]
            self._prev_full = bool(state["prev_full"])
            self._reasons = {int(i): dict(r) for i, r in state["reasons"]}
            self.last_interval = state.get("last_interval")
        except KeyError as e:
            raise CheckpointError(f"saved AutoFreeze state lacks {e}: it is not from this version") from None
