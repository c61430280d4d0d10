"""The CKA oracle: freeze a unit once its representation has settled where a finished run's did.

Given a *reference* model of the same architecture (the end of an earlier, complete training run),
at each freezing stage the Freezer measures, for every active unit, the linear CKA (Kornblith et
al. 2019) between the unit's output in the training model and in the reference, on a fixed probe
batch (signal ``"cka"``, :class:`frostline.signals.ReferenceCKA`). A unit is *ready* when

* its CKA over the last ``window`` stages varies by less than ``epsilon`` (population variance),
  i.e. the representation stopped moving relative to where training ends up, and
* its latest CKA is at least ``floor``, i.e. it stopped *near* the reference, not on a plateau
  far from it.

:func:`cka_ready` is this rule alone; it also labels SmartFRZ's training data
(:mod:`frostline.lab.predictor.collect`). It is an oracle: it needs a finished run of the same model,
so it is a yardstick and a labeller rather than a way to save time on a first training.

With ``prefix_only`` only a growing prefix is frozen (a unit freezes when it and every unit
before it are ready), which is what the activation cache and the backward savings need;
otherwise any ready unit freezes. The head never freezes. Decisions are permanent.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from ...errors import ConfigError, check_int
from ..base import Progress
from ..stages import StagedPolicy
from ..registry import Hyperparameter, register_policy

DEFAULT_WINDOW = 3
DEFAULT_EPSILON = 1e-3
DEFAULT_FLOOR = 0.9


def check_rule(window, epsilon, floor) -> None:
    check_int(window, "the CKA window (stages; a variance needs two values)", low=2)
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0:
        raise ConfigError(f"cka_epsilon must be > 0, got {epsilon!r}")
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not (0.0 <= floor <= 1.0):
        raise ConfigError(f"cka_floor must be in [0, 1], got {floor!r}")


def cka_ready(history: Sequence[float], window: int, epsilon: float, floor: float) -> bool:
    """The readiness rule: at least ``window`` values, all finite, the last ``window`` of them
    with population variance < ``epsilon`` and the last one >= ``floor``."""
    if len(history) < window:
        return False
    last = [float(v) for v in history[-window:]]
    if not all(math.isfinite(v) for v in last):
        return False
    mean = sum(last) / window
    variance = sum((v - mean) ** 2 for v in last) / window
    return variance < epsilon and last[-1] >= floor


@register_policy(
    "cka-oracle",
    Hyperparameter("stages_per_epoch", "freezing stages (decisions) per epoch"),
    Hyperparameter("window", "stages over which the CKA must be stable", field="cka_window"),
    Hyperparameter("epsilon", "a unit is stable when the variance of its CKA over the window is below this",
                   field="cka_epsilon"),
    Hyperparameter("floor", "... and its latest CKA to the reference is at least this", field="cka_floor"),
    Hyperparameter("prefix_only", "freeze only a growing prefix of units (otherwise any ready unit)"),
    runtime=("reference", "probe", "steps_per_epoch"),
)
class CKAOracle(StagedPolicy):
    """Freeze units whose CKA to a reference model has stabilised above a floor; decides at
    ``stages_per_epoch`` stages per epoch of ``steps_per_epoch`` steps (or every ``stage_steps``).

    ``reference`` (an ``nn.Module`` with the trained model's architecture and the finished run's
    weights) and ``probe`` (a batch of inputs) build the default ``"cka"`` collector; without them,
    pass ``Freezer(..., signals={"cka": ReferenceCKA(reference, probe)})``.
    """

    name = "cka-oracle"
    requires = frozenset({"cka"})

    def __init__(self, reference=None, probe=None, stages_per_epoch: int = 4, steps_per_epoch: int | None = None,
                 stage_steps: int | None = None, window: int = DEFAULT_WINDOW, epsilon: float = DEFAULT_EPSILON,
                 floor: float = DEFAULT_FLOOR, prefix_only: bool = False):
        check_rule(window, epsilon, floor)
        super().__init__(stages_per_epoch, steps_per_epoch, stage_steps, prefix_only)
        self.reference, self.probe = reference, probe
        self.window, self.epsilon, self.floor = int(window), float(epsilon), float(floor)
        self._reset()

    def _reset(self) -> None:
        super()._reset()
        self.history: list[list[float]] = [[] for _ in range(self.num_units)]

    def collectors(self):
        if self.reference is None or self.probe is None:
            return {}
        from ...signals import ReferenceCKA

        return {"cka": ReferenceCKA(self.reference, self.probe)}

    def _record(self, progress: Progress, signals: dict[str, Any]) -> None:
        for i, v in enumerate(self._per_unit(signals["cka"], "CKA values")):
            if v is not None and i not in self.frozen:
                self.history[i].append(float(v))

    def _ready(self, progress: Progress) -> dict[int, dict[str, Any]]:
        ready = {}
        for i in range(self.num_units - 1):
            if i in self.frozen or not cka_ready(self.history[i], self.window, self.epsilon, self.floor):
                continue
            last = self.history[i][-self.window:]
            mean = sum(last) / len(last)
            ready[i] = {"cka": last[-1], "cka_window": last,
                        "cka_variance": sum((v - mean) ** 2 for v in last) / len(last),
                        "epsilon": self.epsilon, "floor": self.floor, "stage": self.stages_done,
                        "step": progress.step}
        return ready

    def config(self):
        return {"stages_per_epoch": self.clock.per_epoch, "steps_per_epoch": self.clock.steps_per_epoch,
                "stage_steps": self.clock.every_steps, "window": self.window, "epsilon": self.epsilon,
                "floor": self.floor, "prefix_only": self.prefix_only}

    def _own_state(self) -> dict[str, Any]:
        return {"history": [list(h) for h in self.history]}

    def _load_own_state(self, state: dict[str, Any]) -> None:
        history = [[float(v) for v in h] for h in state["history"]]
        self._check_units(len(history))
        self.history = history
