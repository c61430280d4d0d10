"""The CKA oracle: freeze a unit once its representation has settled where a finished run's did.

Given a *reference* model of the same architecture (the end of an earlier, complete training run
with *another seed*), the Freezer measures, for every active unit, the linear CKA (Kornblith et
al. 2019) between the unit's output in the training model and in the reference, on a fixed probe
batch (signal ``"cka"``, :class:`frostline.signals.ReferenceCKA`): once at the first step (the
unit's value at initialisation, ``c0``) and at each freezing stage.

Raw CKA cannot tell a learned unit from an untrained one: two independently initialised, untrained
networks already agree to 0.90–0.99 on early convolutions, because a random convolution of an image
still looks like the image. So the rule reads the *init-normalised* CKA
``n = (c - c0) / (1 - c0)``: 0 where the unit started, 1 where it matches the reference exactly.
A unit is *ready* when, over the last ``window`` stages (at the default four stages per epoch,
nine values spanning two epochs),

* every ``n`` is at least ``floor`` (it went most of the way from where it started to where a
  finished run ends up), and
* ``max(n) - min(n)`` is at most ``tolerance`` (it stopped moving).

A unit that has not learned keeps ``c = c0``, so ``n = 0``: it is never ready, whatever its raw CKA.
A unit whose initial CKA is already (numerically) 1 has nothing to normalise by and is never ready.
The reference must come from another seed: with the same seed the training run retraces it and
every unit's CKA reaches exactly 1 at the end, so the rule would encode time-to-end, not learning.

:func:`cka_ready` is this rule alone. SmartFRZ's training labels
(:mod:`frostline.lab.predictor.collect`) read the same normalised CKA, with hindsight. It is an
oracle: it needs a finished run of the same model, so it is a yardstick rather than a way to save
time on a first training.

The reference must be an ``nn.Module`` of the trained model's very architecture (the same
parameter names and shapes: a deeper model or another head is refused with a ConfigError, not
compared unit by unit), and not the trained model itself; one that starts with the trained model's
weights (a copy, the same seed untrained) is warned about. The probe is a tensor (the model's first
argument) or a dict of tensors (its keyword arguments: ``input_ids`` and ``attention_mask``).

With ``prefix_only`` only a growing prefix is frozen (a unit freezes when it and every unit
before it are ready), which is what the activation cache and the backward savings need;
otherwise any ready unit freezes. The head never freezes. Decisions are permanent.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

from torch import nn

from ...errors import ConfigError, check_float, check_int
from ..base import Progress
from ..stages import StagedPolicy
from ..registry import Hyperparameter, register_policy

DEFAULT_WINDOW = 9
DEFAULT_TOLERANCE = 0.03
DEFAULT_FLOOR = 0.85
#: Below this distance from 1 the initial CKA leaves nothing to normalise by.
MIN_HEADROOM = 1e-6


def check_rule(window, tolerance, floor) -> None:
    check_int(window, "the CKA window (stages; stability needs two values)", low=2)
    check_float(tolerance, "cka_tolerance", "[0, inf)", note="spread of the normalised CKA over the window")
    check_float(floor, "cka_floor", "(0, 1]", note="normalised CKA every unit must reach")


def check_reference(reference, probe) -> None:
    """The reference and the probe batch, checked where they are given, not at the first step."""
    if reference is not None and not isinstance(reference, nn.Module):
        raise ConfigError(f"the CKA reference must be an nn.Module (the model of a finished run of this architecture, "
                          f"another seed), got {type(reference).__name__}: build the model and load the run's weights "
                          "into it (model.load_state_dict(torch.load(path)))")
    if probe is not None:
        from ...signals import check_probe

        check_probe(probe)
    if (reference is None) != (probe is None):
        raise ConfigError("the CKA oracle needs both reference= (a finished run's model) and probe= (a batch of "
                          f"inputs); {'probe' if probe is None else 'reference'} is missing")


def normalised_cka(values: Sequence[float], initial: float | None) -> list[float]:
    """``(c - c0) / (1 - c0)`` for each value; NaN where it is undefined (no or degenerate ``c0``)."""
    if initial is None or not math.isfinite(initial) or 1.0 - initial < MIN_HEADROOM:
        return [math.nan] * len(values)
    return [(float(v) - initial) / (1.0 - initial) for v in values]


def cka_ready(history: Sequence[float], initial: float | None, window: int, tolerance: float, floor: float) -> bool:
    """The readiness rule on a unit's raw CKA ``history`` (one value per stage) and its CKA at
    initialisation: at least ``window`` values; the last ``window``, init-normalised, all finite,
    all >= ``floor`` and within ``tolerance`` of each other."""
    if len(history) < window:
        return False
    last = normalised_cka(history[-window:], initial)
    if not all(math.isfinite(v) for v in last):
        return False
    return min(last) >= floor and max(last) - min(last) <= tolerance


@register_policy(
    "cka-oracle",
    Hyperparameter("stages_per_epoch", "freezing stages (decisions) per epoch"),
    Hyperparameter("window", "stages over which the init-normalised CKA must stay above the floor and stable",
                   field="cka_window"),
    Hyperparameter("tolerance", "... within this spread (max - min of the normalised CKA over the window)",
                   field="cka_tolerance"),
    Hyperparameter("floor", "... and at least this: the share of the way from the unit's initial CKA to the reference",
                   field="cka_floor"),
    Hyperparameter("prefix_only", "freeze only a growing prefix of units (otherwise any ready unit)"),
    runtime=("reference", "probe", "steps_per_epoch"),
)
class CKAOracle(StagedPolicy):
    """Freeze units whose init-normalised CKA to a reference model has settled above a floor;
    decides at ``stages_per_epoch`` stages per epoch of ``steps_per_epoch`` steps (or every
    ``stage_steps``).

    ``reference`` (an ``nn.Module`` with the trained model's architecture and the weights of a
    finished run with another seed) and ``probe`` (a batch of inputs) build the default ``"cka"``
    collector; without them, pass ``Freezer(..., signals={"cka": ReferenceCKA(reference, probe)})``.
    """

    name = "cka-oracle"
    requires = frozenset({"cka"})
    looser = "a lower floor or a larger tolerance"

    def __init__(self, reference=None, probe=None, stages_per_epoch: int = 4, steps_per_epoch: int | None = None,
                 stage_steps: int | None = None, window: int = DEFAULT_WINDOW, tolerance: float = DEFAULT_TOLERANCE,
                 floor: float = DEFAULT_FLOOR, prefix_only: bool = False):
        check_rule(window, tolerance, floor)
        check_reference(reference, probe)
        super().__init__(stages_per_epoch, steps_per_epoch, stage_steps, prefix_only)
        self.reference, self.probe = reference, probe
        self.window, self.tolerance, self.floor = int(window), float(tolerance), float(floor)
        self._reset()

    def _reset(self) -> None:
        super()._reset()
        self.history: list[list[float]] = [[] for _ in range(self.num_units)]
        #: Each unit's CKA at the first step, what the rule normalises by.
        self.initial: list[float | None] = [None] * self.num_units

    def collectors(self):
        if self.reference is None or self.probe is None:
            return {}
        from ...signals import ReferenceCKA

        return {"cka": ReferenceCKA(self.reference, self.probe, distinct=True)}

    def wants(self, progress: Progress) -> frozenset[str]:
        self._say_if_never_decides(progress)
        first = progress.step == 1 or self._awaiting_initial()
        return self.requires if first else super().wants(progress)

    def _awaiting_initial(self) -> bool:
        """No unit's CKA at initialisation recorded yet: ask at every step until one is."""
        return bool(self.num_units) and all(v is None for v in self.initial)

    def next_call(self, progress: Progress) -> int:
        return progress.step + 1 if self._awaiting_initial() else super().next_call(progress)

    def _first_decision(self) -> tuple[int, str]:
        step = 0
        for _ in range(self.window):
            step = self.clock.next_end(step)
        return step, f"it freezes a unit once window={self.window} stages of its CKA agree ({self._cadence()})"

    def _record(self, progress: Progress, signals: dict[str, Any]) -> None:
        stage_end = self.clock.is_stage_end(progress.step)
        first = self._awaiting_initial()
        for i, v in enumerate(self._per_unit(signals["cka"], "CKA values")):
            if v is None or i in self.frozen:
                continue
            if self.initial[i] is None:
                self.initial[i] = float(v)
            if stage_end:
                self.history[i].append(float(v))
        if first and self._unjudgeable():
            warnings.warn(f"frostline: cka-oracle can freeze nothing in this run: {self._unjudgeable()}", stacklevel=5)

    def _unjudgeable(self) -> str | None:
        """Why no unit below the head can ever be ready: each started at CKA 1 to the reference, so
        there is nothing to normalise by (None: some unit can)."""
        below = [v for v in self.initial[:-1] if v is not None]
        if not below or not all(math.isnan(normalised_cka([0.0], v)[0]) for v in below):
            return None
        return ("every unit already had CKA 1 to the reference at the first step, so its progress towards the "
                "reference cannot be measured: the reference starts where this model starts (a copy of it, the same "
                "seed, or the same pretrained weights). Use the finished run of another seed; fine-tuning from the "
                "same pretrained weights leaves the oracle nothing to measure")

    def why_idle(self) -> str | None:
        if self.frozen:
            return None
        return self._unjudgeable() or super().why_idle()

    def _ready(self, progress: Progress) -> dict[int, dict[str, Any]]:
        ready = {}
        for i in range(self.num_units - 1):
            if i in self.frozen or not cka_ready(self.history[i], self.initial[i], self.window, self.tolerance,
                                                 self.floor):
                continue
            last = normalised_cka(self.history[i][-self.window:], self.initial[i])
            ready[i] = {"cka": self.history[i][-1], "cka_initial": self.initial[i], "normalised_cka": last[-1],
                        "normalised_window": [round(v, 4) for v in last], "floor": self.floor,
                        "tolerance": self.tolerance, "stage": self.stages_done, "step": progress.step}
        return ready

    def config(self):
        return {"stages_per_epoch": self.clock.per_epoch, "steps_per_epoch": self.clock.steps_per_epoch,
                "stage_steps": self.clock.every_steps, "window": self.window, "tolerance": self.tolerance,
                "floor": self.floor, "prefix_only": self.prefix_only}

    def _own_state(self) -> dict[str, Any]:
        return {"history": [list(h) for h in self.history], "initial": list(self.initial)}

    def _load_own_state(self, state: dict[str, Any]) -> None:
        history = [[float(v) for v in h] for h in state["history"]]
        self._check_units(len(history))
        self.history = history
        self.initial = [None if v is None else float(v) for v in state["initial"]]
