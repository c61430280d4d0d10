"""Freezing stages: the steps at which a stage-based policy looks at its signals and decides.

``per_epoch`` stages per epoch of ``steps_per_epoch`` steps, evenly spread (the k-th stage of an
epoch ends after ``k * steps_per_epoch // per_epoch`` of its steps), or one stage every
``every_steps`` steps. A function of the step count alone, so a resumed run meets the same stages.
"""

from __future__ import annotations

from ..errors import ConfigError


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class StageClock:
    def __init__(self, per_epoch: int, steps_per_epoch: int | None, every_steps: int | None, what: str = "stages_per_epoch"):
        if not _is_int(per_epoch) or per_epoch < 1:
            raise ConfigError(f"{what} must be an integer >= 1, got {per_epoch!r}")
        if steps_per_epoch is None and every_steps is None:
            raise ConfigError("the stage length is unknown: pass steps_per_epoch (optimizer steps per epoch, "
                              "e.g. len(train_loader)) or stage_steps")
        if steps_per_epoch is not None and every_steps is not None:
            raise ConfigError(f"pass steps_per_epoch (with {what}) or stage_steps, not both")
        if steps_per_epoch is not None:
            if not _is_int(steps_per_epoch) or steps_per_epoch <= 0:
                raise ConfigError(f"steps_per_epoch must be a positive integer, got {steps_per_epoch!r}")
            if per_epoch > steps_per_epoch:
                raise ConfigError(f"{what}={per_epoch} is more than the {steps_per_epoch} steps of an epoch: "
                                  "use at most one stage per step")
        if every_steps is not None and (not _is_int(every_steps) or every_steps <= 0):
            raise ConfigError(f"stage_steps must be a positive integer, got {every_steps!r}")
        self.per_epoch = per_epoch
        self.steps_per_epoch = steps_per_epoch
        self.every_steps = every_steps
        if steps_per_epoch is not None:
            self._ends = {k * steps_per_epoch // per_epoch for k in range(1, per_epoch + 1)}

    def is_stage_end(self, step: int) -> bool:
        """Whether optimizer step ``step`` (1-based) closes a stage."""
        if step <= 0:
            return False
        if self.every_steps is not None:
            return step % self.every_steps == 0
        within = step % self.steps_per_epoch or self.steps_per_epoch
        return within in self._ends
