"""The history window: the last ``window`` tailored snapshots of every active unit."""

from __future__ import annotations

from collections import deque
from typing import Any

import torch

from ...errors import check_int


class History:
    def __init__(self, num_units: int, window: int = 30):
        self.window = check_int(window, "the SmartFRZ history window", low=1)
        self.snapshots: list[deque] = [deque(maxlen=window) for _ in range(num_units)]

    def add(self, samples: list[torch.Tensor | None]) -> None:
        for h, s in zip(self.snapshots, samples):
            if s is not None:
                h.append(s)

    def drop(self, unit: int) -> None:
        """A frozen unit's weights no longer change: its history is no use any more."""
        self.snapshots[unit].clear()

    def stacked(self, unit: int) -> torch.Tensor | None:
        h = self.snapshots[unit]
        return torch.stack(list(h)) if h else None

    def state_dict(self) -> dict[str, Any]:
        return {"window": self.window, "snapshots": [torch.stack(list(h)) if h else None for h in self.snapshots]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.snapshots = [deque([] if s is None else list(s), maxlen=self.window) for s in state["snapshots"]]
