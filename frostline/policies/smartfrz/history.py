"""The history window: the last ``window`` tailored snapshots of every active unit, and beside each
snapshot its projection through the key and value encoders' first layer
(:meth:`SmartFRZPredictor.project`), made once, when a decision first needs it: a snapshot is read
at up to ``window`` decisions.

Why so little happens per snapshot: SmartFRZ snapshots every unit 30 times an epoch, between
training steps, where each small tensor operation costs tens of microseconds (the training step has
just run through the caches), several times what it costs on its own. So keeping a snapshot is a
list append, no tensor operation at all; the new snapshots are projected at the next decision,
all units' together, and everything else a decision reads from the snapshots (their mean, the
newest and oldest, the step lengths for :func:`context_from`) is computed there from one stacked
batch of the windows."""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Callable

import torch

from ...errors import check_int
from .predictor import context_from

#: what the kept projections are (older checkpoints kept key, query and value: those are projected again)
PROJECTION = "key-value"


class History:
    def __init__(self, num_units: int, window: int = 30):
        self.window = check_int(window, "the SmartFRZ history window", low=1)
        self.snapshots: list[deque] = [deque(maxlen=window) for _ in range(num_units)]
        self.projected: list[deque] = [deque(maxlen=window) for _ in range(num_units)]

    def length(self, unit: int) -> int:
        """How many snapshots of ``unit`` the window holds."""
        return len(self.snapshots[unit])

    def add(self, samples: list[torch.Tensor | None]) -> None:
        """One snapshot per unit (``None``: none for that unit this time), kept as given."""
        for u, sample in enumerate(samples):
            if sample is not None:
                self.snapshots[u].append(sample)
                self.projected[u].append(None)

    def drop(self, unit: int) -> None:
        """A frozen unit's weights no longer change: its history is no use any more."""
        self.snapshots[unit].clear()
        self.projected[unit].clear()

    def _catch_up(self, units: list[int], project: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Project the snapshots of ``units`` not projected yet, all in one batch."""
        todo = [(u, t) for u in units for t, p in enumerate(self.projected[u]) if p is None]
        if todo:
            for (u, t), row in zip(todo, project(torch.stack([self.snapshots[u][t] for u, t in todo]))):
                self.projected[u][t] = row

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
        # every number the context needs, read back at once: the step lengths (across the padding
        # too: sliced off below), the net displacement and the newest snapshot's norm
        numbers = torch.cat([torch.linalg.vector_norm(raw.diff(dim=1), dim=2),
                             torch.linalg.vector_norm(torch.stack([newest - oldest, newest], dim=1), dim=2)],
                            dim=1).tolist()
        root = math.sqrt(newest.shape[1])
        rms = [max(row[-1] / root, 1e-12) for row in numbers]
        context = torch.tensor([context_from(row[longest - n:-2], row[-2], r, progress)
                                for row, n, r in zip(numbers, held, rms)])
        return projected, mask, centred, torch.tensor(rms), context

    def state_dict(self) -> dict[str, Any]:
        # the projections are kept too: recomputed after a resume in other groupings they could
        # differ in the last bits, and a resumed run must decide exactly as an uninterrupted one
        return {"window": self.window, "snapshots": [torch.stack(list(h)) if h else None for h in self.snapshots],
                "projected": [list(p) for p in self.projected], "projection": PROJECTION}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # step lengths that older checkpoints kept are recomputed from the snapshots at each decision now
        self.snapshots = [deque([] if s is None else list(s), maxlen=self.window) for s in state["snapshots"]]
        saved = state.get("projected") if state.get("projection") == PROJECTION else None
        saved = saved or [None] * len(self.snapshots)  # from an older version: project again
        self.projected = [deque(p if p is not None and len(p) == len(h) else [None] * len(h), maxlen=self.window)
                          for p, h in zip(saved, self.snapshots)]


def _padded(windows: list[deque], longest: int) -> torch.Tensor:
    """Windows of rows -> (B, longest, D), each left-padded with zeros, in one ``torch.stack``."""
    zero = torch.zeros_like(windows[0][-1])
    return torch.stack([row for w in windows for row in [zero] * (longest - len(w)) + list(w)]).view(
        len(windows), longest, -1)
