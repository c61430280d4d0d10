"""Linear layer freezing, after Composer's ``LayerFreezing`` (MosaicML).

After ``freeze_start`` (fraction of training), the frozen prefix grows linearly so that at
``freeze_end`` (the end of training in Composer's form) ``freeze_level`` of the freezable units are
frozen. The schedule knows nothing about the model; it is the simplest baseline, and Composer's own
card reports it did not improve the speed/accuracy trade-off on their benchmarks. An earlier
``freeze_end`` is for fine-tuning, where the pretrained layers hardly move: the units still freeze
in order, and the run spends its last part training the head over a cached frozen body, trading
accuracy for time (the card has the measured trade).
"""

from __future__ import annotations

import math

from ...errors import ConfigError, check_float
from ..base import FreezePolicy, Progress
from ..registry import Hyperparameter, register_policy


def check_linear_args(freeze_start: float, freeze_level: float, freeze_end: float = 1.0) -> None:
    freeze_start = check_float(freeze_start, "freeze_start", "[0, 1)", note="fraction of training")
    check_float(freeze_level, "freeze_level", "[0, 1]", note="fraction of layers")
    freeze_end = check_float(freeze_end, "freeze_end", "(0, 1]", note="fraction of training")
    if not freeze_start < freeze_end:
        raise ConfigError(f"freeze_end must be after freeze_start ({freeze_start}) and at most 1 "
                          f"(fraction of training), got {freeze_end}")


def linear_freeze_fraction(current_duration: float, freeze_start: float, freeze_level: float,
                           freeze_end: float = 1.0) -> float:
    """Composer's schedule: 0 until ``freeze_start``, then linear up to ``freeze_level`` at
    ``freeze_end`` (1 in Composer), and held there."""
    if current_duration <= freeze_start:
        return 0.0
    return freeze_level * min(1.0, (current_duration - freeze_start) / (freeze_end - freeze_start))


def linear_freeze_depth(fraction: float, num_layers: int) -> int:
    """``floor(fraction * (N - 1))``: the last layer (the head) is never counted."""
    return int(math.floor(fraction * (num_layers - 1)))


@register_policy(
    "linear",
    Hyperparameter("freeze_start", "fraction of training before freezing starts"),
    Hyperparameter("freeze_level", "fraction of units frozen at the end"),
    Hyperparameter("freeze_end", "fraction of training by which freeze_level is reached (1: the end, as in Composer)"),
)
class LinearFreezing(FreezePolicy):
    """Freeze a prefix of ``floor(f(t) * (N - 1))`` units, ``f`` as in :func:`linear_freeze_fraction`."""

    name = "linear"

    def __init__(self, freeze_start: float = 0.5, freeze_level: float = 1.0, freeze_end: float = 1.0):
        super().__init__()
        check_linear_args(freeze_start, freeze_level, freeze_end)
        self.freeze_start = float(freeze_start)
        self.freeze_level = float(freeze_level)
        self.freeze_end = float(freeze_end)

    def decide(self, progress: Progress) -> set[int]:
        f = linear_freeze_fraction(progress.fraction, self.freeze_start, self.freeze_level, self.freeze_end)
        return set(range(linear_freeze_depth(f, self.num_units)))

    def reason(self, unit: int):
        return {"freeze_fraction_reached": (unit + 1) / max(self.num_units - 1, 1)}

    def config(self):
        return {"freeze_start": self.freeze_start, "freeze_level": self.freeze_level, "freeze_end": self.freeze_end}
