"""The history window: the last ``window`` tailored snapshots of every active unit, and beside each
snapshot what a decision reads of it: its projection through the key and value encoders' first
layer (:meth:`SmartFRZPredictor.project`) and its step length from the snapshot before it, made
once, when a decision first needs them: a snapshot is read at up to ``window`` decisions.

Why so little happens per snapshot: SmartFRZ snapshots every unit 30 times an epoch, between
training steps, where each small tensor operation costs tens of microseconds (the training step has
just run through the caches), several times what it costs on its own. So keeping a snapshot is a
list append, no tensor operation at all; the new snapshots are projected and measured at the next
decision, all units' together; the decision then reads their projections, their sum (the window's
mean centres the query's row) and, for the context, the step lengths and the newest and oldest
snapshot."""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Callable

import torch

from ...errors import check_int
from .predictor import context_from

#: what the kept projections are (a checkpoint that kept others has its snapshots projected again)
PROJECTION = "key-value+steps"


class History:
    def __init__(self, num_units: int, window: int = 30):
        self.window = check_int(window, "the SmartFRZ history window", low=1)
        self.snapshots: list[deque] = [deque(maxlen=window) for _ in range(num_units)]
        self.projected: list[deque] = [deque(maxlen=window) for _ in range(num_units)]
        #: per snapshot, its distance from the one before it (None until measured, or with none before it)
        self.steps: list[deque] = [deque(maxlen=window) for _ in range(num_units)]

    def length(self, unit: int) -> int:
        """How many snapshots of ``unit`` the window holds."""
        return len(self.snapshots[unit])

    def add(self, samples: list[torch.Tensor | None]) -> None:
        """One snapshot per unit (``None``: none for that unit this time), kept as given."""
        for u, sample in enumerate(samples):
            if sample is not None:
                self.snapshots[u].append(sample)
                self.projected[u].append(None)
                self.steps[u].append(None)

    def drop(self, unit: int) -> None:
        """A frozen unit's weights no longer change: its history is no use any more."""
        for kept in (self.snapshots, self.projected, self.steps):
            kept[unit].clear()

    def _catch_up(self, units: list[int], project: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Project the snapshots of ``units`` not projected yet, and measure their steps from the
        snapshot before each, all in one batch. (A snapshot that is the oldest of its window when
        projected gets no step: it stays the oldest until it leaves, and the context reads the
        steps between the window's snapshots only.)"""
        todo = [(u, t) for u in units for t, p in enumerate(self.projected[u]) if p is None]
        if not todo:
            return
        new = torch.stack([self.snapshots[u][t] for u, t in todo])
        before = torch.stack([self.snapshots[u][max(t - 1, 0)] for u, t in todo])
        for (u, t), row, step in zip(todo, project(new), torch.linalg.vector_norm(new - before, dim=1).tolist()):
            self.projected[u][t] = row
            self.steps[u][t] = step if t else None

    def inputs(self, units: list[int], project: Callable[[torch.Tensor], torch.Tensor], progress: float):
        """What :meth:`SmartFRZPredictor.forward_projected` reads for the windows of ``units``:
        their projected rows left-padded with zero rows to the longest window (B, T, P), its mask
        (B, T; None when every window is full, as in a run), each window's newest snapshot minus
        its mean snapshot (B, D), the newest snapshot's RMS (B,) and the context (B, CONTEXT_SIZE;
        the same numbers as :func:`window_context` on each window)."""
        self._catch_up(units, project)
        held = [len(self.snapshots[u]) for u in units]
        longest = max(held)
        projected = _padded([self.projected[u] for u in units], longest)
        raw = _padded([self.snapshots[u] for u in units], longest)
        total, newest = raw.sum(dim=1), raw[:, -1]  # zero rows add nothing
        if min(held) < longest:
            lengths = torch.tensor(held)
            mask = torch.arange(longest) >= longest - lengths.unsqueeze(1)
            oldest = raw[torch.arange(len(units)), longest - lengths]
            centred = newest - total / lengths.unsqueeze(1).to(total.dtype)
        else:
            mask, oldest = None, raw[:, 0]
            centred = torch.sub(newest, total, alpha=1 / longest)
        ends = torch.linalg.vector_norm(torch.stack([newest - oldest, newest]), dim=2).tolist()
        root = math.sqrt(newest.shape[1])
        rms = [max(norm / root, 1e-12) for norm in ends[1]]
        context = torch.tensor([context_from(list(self.steps[u])[1:], displacement, r, progress)
                                for u, displacement, r in zip(units, ends[0], rms)])
        return projected, mask, centred, torch.tensor(rms), context

    def state_dict(self) -> dict[str, Any]:
        # the projections and steps are kept too: recomputed after a resume in other groupings they
        # could differ in the last bits, and a resumed run must decide exactly as an uninterrupted one
        return {"window": self.window, "snapshots": [torch.stack(list(h)) if h else None for h in self.snapshots],
                "projected": [list(p) for p in self.projected], "steps": [list(s) for s in self.steps],
                "projection": PROJECTION}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.snapshots = [deque([] if s is None else list(s), maxlen=self.window) for s in state["snapshots"]]
        ours = state.get("projection") == PROJECTION  # from an older version: project and measure again
        projected = (state["projected"] if ours else None) or [None] * len(self.snapshots)
        steps = (state.get("steps") if ours else None) or [None] * len(self.snapshots)
        self.projected, self.steps = (
            [deque(k if k is not None and len(k) == len(h) else [None] * len(h), maxlen=self.window)
             for k, h in zip(kept, self.snapshots)] for kept in (projected, steps))


def _padded(windows: list[deque], longest: int) -> torch.Tensor:
    """Windows of rows -> (B, longest, D), each left-padded with zeros, in one ``torch.stack``."""
    zero = torch.zeros_like(windows[0][-1])
    return torch.stack([row for w in windows for row in [zero] * (longest - len(w)) + list(w)]).view(
        len(windows), longest, -1)
