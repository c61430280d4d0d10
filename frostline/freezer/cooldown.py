"""Anneal, then freeze: a unit's learning rate ramps to zero over a short cool-down before it freezes.

A policy that decides from signals (AutoFreeze, the CKA oracle, SmartFRZ) says "ready" while the
unit still trains at the full learning rate, so freezing at once keeps the weights of the last
noisy step. FreezeOut never has that problem: its per-unit cosine reaches zero at the freezing
time. With ``Freezer(..., cooldown=C)`` a decided unit keeps training for ``C`` more optimizer
steps at a learning rate that falls from 1 to 0 along half a cosine, and freezes after them.

Why steps, not a fraction of the run
    What the ramp settles is the optimizer's step-to-step noise, and its memory (momentum,
    Adam's moments) is a number of steps (about ``1 / (1 - beta)``). A fraction would make one
    setting mean 10 steps on a short run and thousands on a long one, and the compute spent on
    units that were already decided would grow with the run.
Why a cosine, not a line
    It is FreezeOut's shape, the annealing this borrows. It leaves the rate near 1 for the first
    steps (no jump at the decision) and takes small steps at the end (a slope of zero when it reaches
    0), so the unit lands where its last updates leave it rather than on one large final step.

Why a cooling unit's BatchNorm statistics are left as they are
    A frozen unit normalises with running statistics averaged while its weights still moved:
    after one epoch of fine-tuning EfficientNet-Lite0 (momentum 0.01) they put a unit's output
    13-53% away from what its weights give with statistics re-estimated for them, against 0.3-8%
    at the end of training (``python scripts/frozen_bn_staleness.py``). Re-estimating them over
    the cool-down (momentum ``1 / (k + 1)`` from its first batch) was measured on the 6-epoch
    EfficientNet-Lite0 fine-tune, with the same decisions on every seed: it cost 0.14-0.21 points
    more (docs/benchmarks.md), so the layers keep their own momentum.

The ramp: after ``k`` of its ``C`` steps of cool-down, the unit's next step uses
``0.5 * (1 + cos(pi * (k + 1) / (C + 1)))``, so the ``C`` steps it trains for use scales strictly
between 1 (the decision) and 0 (the freeze). With an attached LR scheduler the scale multiplies
what the scheduler says (:mod:`.schedulers`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, check_int


@dataclass
class Cooling:
    """A unit the policy decided to freeze, still training at a falling learning rate."""

    decided_step: int
    signal: dict[str, Any] | None = None


def cooldown_scale(elapsed: int, length: int) -> float:
    """Learning-rate multiplier for the next step of a unit that has cooled ``elapsed`` of ``length`` steps."""
    return 0.5 * (1.0 + math.cos(math.pi * (elapsed + 1) / (length + 1)))


def check_cooldown(cooldown, policy, total_steps: int | None = None) -> int:
    """``cooldown`` as an int, or a :class:`ConfigError` saying why it cannot be used with ``policy``."""
    cooldown = check_int(cooldown, "cooldown (optimizer steps)", low=0)
    if cooldown and policy.scales_lr:
        raise ConfigError(
            f"method {policy.name!r} sets each unit's learning rate itself (FreezeOut anneals every unit to zero "
            "before it freezes): a cooldown does not apply, leave it at 0")
    if cooldown and total_steps is not None and cooldown >= total_steps:
        raise ConfigError(f"cooldown={cooldown} steps is not shorter than the run ({total_steps} steps): "
                          "no unit could finish cooling")
    return cooldown
