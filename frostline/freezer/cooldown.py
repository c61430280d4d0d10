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

Fresh BatchNorm statistics (``refresh_statistics=True``)
    A frozen unit normalises with its BatchNorm running statistics from then on, and those are an
    exponential average over the last ``1 / momentum`` steps (a hundred for EfficientNet-Lite0),
    taken while the weights still moved: they describe weights that are no longer there. After one
    epoch of fine-tuning EfficientNet-Lite0, a unit below the head gave outputs 13-53% away from
    those of the same weights with re-estimated statistics, against 0.3-8% at the end of training
    (``python scripts/frozen_bn_staleness.py``). With the option, a decided unit's BatchNorm
    layers forget their statistics when its cool-down begins: the first cool-down batch replaces
    them, and each later one is averaged in with an equal weight (momentum ``1 / (k + 1)``) until
    that is less than the layer's own momentum, which then takes over (a layer whose average spans
    fewer steps than the cool-down ends as it would have). The freeze puts the momenta back. The
    cool-down's batches run through the unit in training mode anyway: this costs nothing.

The ramp: after ``k`` of its ``C`` steps of cool-down, the unit's next step uses
``0.5 * (1 + cos(pi * (k + 1) / (C + 1)))``, so the ``C`` steps it trains for use scales strictly
between 1 (the decision) and 0 (the freeze). With an attached LR scheduler the scale multiplies
what the scheduler says (:mod:`.schedulers`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import ConfigError, check_bool, check_int


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


def check_refresh_statistics(refresh: bool, cooldown: int) -> bool:
    """``refresh_statistics`` as a bool, or a :class:`ConfigError` when there is no cool-down to average over."""
    refresh = check_bool(refresh, "refresh_statistics")
    if refresh and not cooldown:
        raise ConfigError("refresh_statistics re-estimates a decided unit's BatchNorm statistics over its cool-down: "
                          "set a cooldown (e.g. cooldown=30 steps), or leave refresh_statistics off")
    return refresh


def averaging_layers(modules) -> list[tuple[nn.Module, float | None]]:
    """Every BatchNorm layer with running statistics in ``modules`` (and below them), with the
    momentum it has now: what :func:`average_cooldown` sets and :func:`keep_statistics` puts back."""
    return [(m, m.momentum) for top in modules for m in top.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None]


def average_cooldown(layers: list[tuple[nn.Module, float | None]], elapsed: int) -> None:
    """Momenta for the next batch of a unit ``elapsed`` steps into its cool-down: ``1 / (elapsed + 1)``,
    so the statistics are the plain average of its cool-down batches, until that weighs a batch
    less than the layer's own momentum does (then its exponential average goes on)."""
    fresh = 1.0 / (elapsed + 1)
    for module, momentum in layers:
        module.momentum = fresh if momentum is None else max(momentum, fresh)


def keep_statistics(layers: list[tuple[nn.Module, float | None]]) -> None:
    """Put back the momenta :func:`average_cooldown` replaced: the statistics stay as averaged."""
    for module, momentum in layers:
        module.momentum = momentum
