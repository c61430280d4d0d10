"""Linear layer freezing, after Composer's ``LayerFreezing`` (MosaicML).

After ``freeze_start`` (fraction of training), the frozen prefix grows linearly so that at the end
``freeze_level`` of the freezable units are frozen. The schedule knows nothing about the model;
it is the simplest baseline, and Composer's own card reports it did not improve the
speed/accuracy trade-off on their benchmarks.
"""

from __future__ import annotations

import math

from ...errors import ConfigError
from ..base import FreezePolicy, Progress
from ..registry import Hyperparameter, register_policy


def check_linear_args(freeze_start: float, freeze_level: float) -> None:
    if not (0.0 <= freeze_start < 1.0):
        raise ConfigError(f"freeze_start must be in [0, 1) (fraction of training), got {freeze_start}")
    if not (0.0 <= freeze_level <= 1.0):
        raise ConfigError(f"freeze_level must be in [0, 1] (fraction of layers), got {freeze_level}")


def linear_freeze_fraction(current_duration: float, freeze_start: float, freeze_level: float) -> float:
    """Composer's schedule: 0 until ``freeze_start``, then linear up to ``freeze_level`` at 1."""
    if current_duration <= freeze_start:
        return 0.0
    return freeze_level * (current_duration - freeze_start) / (1.0 - freeze_start)


def linear_freeze_depth(fraction: float, num_layers: int) -> int:
    """``floor(fraction * (N - 1))``: the last layer (the head) is never counted."""
    return int(math.floor(fraction * (num_layers - 1)))


@register_policy(
    "linear",
    Hyperparameter("freeze_start", "fraction of training before freezing starts"),
    Hyperparameter("freeze_level", "fraction of units frozen at the end"),
)
class LinearFreezing(FreezePolicy):
    """Freeze a prefix of ``floor(f(t) * (N - 1))`` units, ``f`` as in :func:`linear_freeze_fraction`."""

    name = "linear"

    def __init__(self, freeze_start: float = 0.5, freeze_level: float = 1.0):
        super().__init__()
        check_linear_args(freeze_start, freeze_level)
        self.freeze_start = float(freeze_start)
        self.freeze_level = float(freeze_level)

    def decide(self, progress: Progress) -> set[int]:
        f = linear_freeze_fraction(progress.fraction, self.freeze_start, self.freeze_level)
        return set(range(linear_freeze_depth(f, self.num_units)))

    def reason(self, unit: int):
        return {"freeze_fraction_reached": (unit + 1) / max(self.num_units - 1, 1)}

    def config(self):
        return {"freeze_start": self.freeze_start, "freeze_level": self.freeze_level}
