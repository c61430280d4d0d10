"""The history window: the last ``window`` tailored snapshots of every active unit. Beside each
snapshot it keeps what every decision would otherwise recompute from it, once: the length of its
step from the unit's previous snapshot (for :func:`context_from`), and its projection through the
predictor's first layer (:meth:`SmartFRZPredictor.project`), made when a decision first needs it.
A snapshot is read at up to ``window`` decisions and processed once."""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

import torch

from ...errors import check_int
from .predictor import context_from, snapshot_rms


class History:
    def __init__(self, num_units: int, window: int = 30):
        self.window = check_int(window, "the SmartFRZ history window", low=1)
        self.snapshots: list[deque] = [deque(maxlen=window) for _ in range(num_units)]
        self.projected: list[deque] = [deque(maxlen=window) for _ in range(num_units)]
        #: per snapshot, the length of its step from the one before (0.0 for a unit's first)
        self.steps: list[deque] = [deque(maxlen=window) for _ in range(num_units)]

    def add(self, samples: list[torch.Tensor | None]) -> None:
        for h, p, d, s in zip(self.snapshots, self.projected, self.steps, samples):
            if s is not None:
                d.append(_step(h[-1], s) if h else 0.0)
                h.append(s)
                p.append(None)

    def drop(self, unit: int) -> None:
        """A frozen unit's weights no longer change: its history is no use any more."""
        self.snapshots[unit].clear()
        self.projected[unit].clear()
        self.steps[unit].clear()

    def context(self, unit: int, progress: float) -> torch.Tensor:
        """The predictor's context for ``unit``'s window (same as :func:`window_context` on it)."""
        h = self.snapshots[unit]
        return context_from(list(self.steps[unit])[1:], _step(h[0], h[-1]), snapshot_rms(h[-1]), progress)

    def rms(self, unit: int) -> float:
        return snapshot_rms(self.snapshots[unit][-1])

    def projections(self, units: list[int], project: Callable[[torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
        """Per unit in ``units``, its window's projected rows (T, P), oldest first; the snapshots not
        projected yet go through ``project`` together, in one call."""
        todo = [(u, t) for u in units for t, p in enumerate(self.projected[u]) if p is None]
        if todo:
            rows = project(torch.stack([self.snapshots[u][t] for u, t in todo]))
            for (u, t), row in zip(todo, rows):
                self.projected[u][t] = row
        return [torch.stack(list(self.projected[u])) for u in units]

    def state_dict(self) -> dict[str, Any]:
        # the projections are kept too: recomputed after a resume in other groupings they could differ
        # in the last bits, and a resumed run must decide exactly as an uninterrupted one
        return {"window": self.window, "snapshots": [torch.stack(list(h)) if h else None for h in self.snapshots],
                "projected": [list(p) for p in self.projected]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.snapshots = [deque([] if s is None else list(s), maxlen=self.window) for s in state["snapshots"]]
        saved = state.get("projected") or [None] * len(self.snapshots)  # older checkpoints: project again
        self.projected = [deque(p if p is not None and len(p) == len(h) else [None] * len(h), maxlen=self.window)
                          for p, h in zip(saved, self.snapshots)]
        # the same function on the same snapshots as when they arrived: the same lengths
        self.steps = [deque([0.0] + [_step(a, b) for a, b in zip(list(h)[:-1], list(h)[1:])] if h else [],
                            maxlen=self.window) for h in self.snapshots]


def _step(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((b.float() - a.float()).norm())
