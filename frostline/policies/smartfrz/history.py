"""The history window: the last ``window`` tailored snapshots of every active unit. Beside each
snapshot it keeps what every decision would otherwise recompute from it, once: the length of its
step from the unit's previous snapshot (for :func:`context_from`), and its projection through the
key and value encoders' first layer (:meth:`SmartFRZPredictor.project`), made when a decision first
needs it. A snapshot is read at up to ``window`` decisions and processed once; what a decision
computes, it computes for all the units it judges together (one tensor operation, not one per unit),
because with several decisions per epoch it runs often enough to show in the training time."""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

import torch

from ...errors import check_int
from .predictor import batch_windows, context_from

#: what the kept projections are (older checkpoints kept key, query and value: those are projected again)
PROJECTION = "key-value"


class History:
    def __init__(self, num_units: int, window: int = 30):
        self.window = check_int(window, "the SmartFRZ history window", low=1)
        self.snapshots: list[deque] = [deque(maxlen=window) for _ in range(num_units)]
        self.projected: list[deque] = [deque(maxlen=window) for _ in range(num_units)]
        #: per snapshot, the length of its step from the one before (0.0 for a unit's first)
        self.steps: list[deque] = [deque(maxlen=window) for _ in range(num_units)]

    def length(self, unit: int) -> int:
        """How many snapshots of ``unit`` the window holds."""
        return len(self.snapshots[unit])

    def add(self, samples: list[torch.Tensor | None]) -> None:
        arrived = [u for u, s in enumerate(samples) if s is not None]
        moved = [u for u in arrived if self.snapshots[u]]
        lengths = dict(zip(moved, _steps(torch.stack([self.snapshots[u][-1] for u in moved]),
                                         torch.stack([samples[u] for u in moved])))) if moved else {}
        for u in arrived:
            self.steps[u].append(lengths.get(u, 0.0))
            self.snapshots[u].append(samples[u])
            self.projected[u].append(None)

    def drop(self, unit: int) -> None:
        """A frozen unit's weights no longer change: its history is no use any more."""
        self.snapshots[unit].clear()
        self.projected[unit].clear()
        self.steps[unit].clear()

    def inputs(self, units: list[int], project: Callable[[torch.Tensor], torch.Tensor], progress: float):
        """What :meth:`SmartFRZPredictor.forward_projected` reads for the windows of ``units``:
        their projected rows left-padded to the longest window (B, T, P) and its mask (B, T), each
        window's newest snapshot minus its mean snapshot (B, D), the newest snapshot's RMS (B,) and
        the context (B, CONTEXT_SIZE; the same numbers as :func:`window_context` on each window).
        The snapshots not projected yet go through ``project`` together, in one call."""
        todo = [(u, t) for u in units for t, p in enumerate(self.projected[u]) if p is None]
        if todo:
            rows = project(torch.stack([self.snapshots[u][t] for u, t in todo]))
            for (u, t), row in zip(todo, rows):
                self.projected[u][t] = row
        projected, mask = batch_windows([torch.stack(list(self.projected[u])) for u in units])
        means = [torch.stack(list(self.snapshots[u])).mean(dim=0) for u in units]
        newest = torch.stack([self.snapshots[u][-1] for u in units]).float()
        oldest = torch.stack([self.snapshots[u][0] for u in units]).float()
        rms = newest.square().mean(dim=1).sqrt().clamp_min(1e-12)
        context = torch.tensor([context_from(list(self.steps[u])[1:], d, r, progress)
                                for u, d, r in zip(units, (newest - oldest).norm(dim=1).tolist(), rms.tolist())])
        return projected, mask, newest - torch.stack(means), rms, context

    def state_dict(self) -> dict[str, Any]:
        # the projections and step lengths are kept too: recomputed after a resume in other groupings
        # they could differ in the last bits, and a resumed run must decide exactly as an uninterrupted one
        return {"window": self.window, "snapshots": [torch.stack(list(h)) if h else None for h in self.snapshots],
                "projected": [list(p) for p in self.projected], "projection": PROJECTION,
                "steps": [list(d) for d in self.steps]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.snapshots = [deque([] if s is None else list(s), maxlen=self.window) for s in state["snapshots"]]
        saved = state.get("projected") if state.get("projection") == PROJECTION else None
        saved = saved or [None] * len(self.snapshots)  # from an older version: project again
        self.projected = [deque(p if p is not None and len(p) == len(h) else [None] * len(h), maxlen=self.window)
                          for p, h in zip(saved, self.snapshots)]
        steps = state.get("steps") or [None] * len(self.snapshots)
        self.steps = [deque(d if d is not None and len(d) == len(h) else _window_steps(h), maxlen=self.window)
                      for d, h in zip(steps, self.snapshots)]


def _steps(before: torch.Tensor, after: torch.Tensor) -> list[float]:
    """The length of each row's step, from ``before`` to ``after`` (both (N, D))."""
    return (after.float() - before.float()).norm(dim=1).tolist()


def _window_steps(window) -> list[float]:
    """A window's step lengths as :meth:`History.add` records them (for checkpoints without them)."""
    if not window:
        return []
    rows = torch.stack(list(window))
    return [0.0] + _steps(rows[:-1], rows[1:])
