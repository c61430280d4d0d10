"""FreezeOut (Brock, Lim, Ritchie, Weston 2017: "FreezeOut: Accelerate Training by Progressively
Freezing Layers").

Unit ``i`` of ``L`` has its own cosine learning-rate schedule that reaches zero at ``t_i`` (a
fraction of the iterations), after which it is frozen. ``t_i = s(t_0 + (1 - t_0) i / (L - 1))``
with ``s`` linear, squared or cubic; ``s`` is applied to ``t_0`` as well (the paper's
"pre-cubed" variant), so cubic ``t_0 = 0.8`` freezes the first unit at 0.512. The last unit (the
head) has ``t = 1``: it anneals over the whole run and is never frozen.
"""

from __future__ import annotations

import math

from ...errors import ConfigError, check_bool, check_float, check_int
from ..base import FreezePolicy, Progress
from ..registry import Hyperparameter, register_policy

SCHEDULES = {"linear": 1, "squared": 2, "cubic": 3}
#: ``t_i`` is reached at the step whose fraction equals it: 11/12 and 0.5 + 0.5 * 5/6 differ in the last
#: bit, which kept a unit training one more step at a learning rate of 0.
_TOLERANCE = 1e-9


def freezeout_times(num_units: int, t_0: float = 0.8, schedule: str = "cubic") -> list[float]:
    """Training fraction at which each unit stops (the head's is 1.0)."""
    if isinstance(num_units, (list, tuple)):
        raise ConfigError(f"num_units is a count: got a list of {len(num_units)}, pass len(units)")
    num_units = check_int(num_units, "num_units (the number of freeze units, head included)", low=0)
    check_freezeout_args(t_0, schedule)
    if num_units <= 1:
        return [1.0] * num_units
    power = SCHEDULES[schedule]
    return [(t_0 + (1.0 - t_0) * i / (num_units - 1)) ** power for i in range(num_units)]


def check_freezeout_args(t_0: float, schedule: str) -> None:
    check_float(t_0, "t_0", "[0, 1)", note="fraction of training")
    if not isinstance(schedule, str) or schedule not in SCHEDULES:
        raise ConfigError(f"unknown FreezeOut schedule {schedule!r}; use one of {list(SCHEDULES)}")


@register_policy(
    "freezeout",
    Hyperparameter("t_0", "fraction at which the first unit freezes, before the schedule is applied"),
    Hyperparameter("schedule", "linear, squared or cubic spacing of freezing times"),
    Hyperparameter("scale_lr", "start unit i at lr / t_i"),
)
class FreezeOut(FreezePolicy):
    """Per-unit cosine annealing to zero, then freezing. ``scale_lr`` starts unit ``i`` at
    ``lr / t_i`` so that every unit gets about the same total learning rate ("area")."""

    name = "freezeout"
    scales_lr = True

    def __init__(self, t_0: float = 0.8, schedule: str = "cubic", scale_lr: bool = True):
        super().__init__()
        check_freezeout_args(t_0, schedule)
        self.t_0 = float(t_0)
        self.schedule = schedule
        self.scale_lr = check_bool(scale_lr, "scale_lr")
        self.times: list[float] = []

    def bind(self, unit_names):
        super().bind(unit_names)
        self.times = freezeout_times(self.num_units, self.t_0, self.schedule)

    def decide(self, progress: Progress) -> set[int]:
        t = progress.fraction
        return {i for i, t_i in enumerate(self.times[:-1]) if t >= t_i - _TOLERANCE}

    def lr_scales(self, progress: Progress) -> list[float]:
        t = progress.fraction
        scales = []
        for t_i in self.times:
            if t_i <= 0.0 or t >= t_i - _TOLERANCE:
                scales.append(0.0)
                continue
            start = 1.0 / t_i if self.scale_lr else 1.0
            scales.append(0.5 * start * (1.0 + math.cos(math.pi * t / t_i)))
        return scales

    def reason(self, unit: int):
        return {"t_i": self.times[unit]}

    def config(self):
        return {"t_0": self.t_0, "schedule": self.schedule, "scale_lr": self.scale_lr}
