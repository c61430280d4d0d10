"""What every freezing policy looks like. A policy *decides*; it never touches the model or the
optimizer (that is :class:`frostline.Freezer`'s job), so it can be tested and swapped alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Progress:
    """Where training is: ``step`` optimizer steps done out of ``total_steps``."""

    step: int
    total_steps: int

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps


class FreezePolicy:
    """Base policy: never freezes, never changes learning rates (the ``none`` baseline).

    Subclasses override :meth:`decide` (and :meth:`lr_scales` if they anneal per unit).
    ``requires`` names the signals the Freezer must collect and pass to :meth:`observe`.
    """

    name = "none"
    requires: frozenset[str] = frozenset()
    #: the setting that makes an adaptive rule freeze sooner, for the word a run that froze nothing gets
    looser = "a lower threshold"
    #: True when :meth:`lr_scales` returns multipliers, so the Freezer gives each unit its own
    #: optimizer param group.
    scales_lr = False

    def __init__(self) -> None:
        self.unit_names: list[str] = []
        self.num_units = 0

    # -- lifecycle -------------------------------------------------------------------------
    def bind(self, unit_names: list[str]) -> None:
        """Called once the model's units are known (the last one is the head)."""
        self.unit_names = list(unit_names)
        self.num_units = len(unit_names)

    def wants(self, progress: Progress) -> frozenset[str]:
        """The signals to collect after this step (default: all of ``requires``, every step).
        Policies that decide at stages ask only at stage ends, so costly signals (a probe
        forward, a weight snapshot) are not computed on the other steps."""
        return self.requires

    def collectors(self) -> dict[str, Any]:
        """Default collectors for signals the Freezer does not compute itself (see
        :mod:`frostline.signals`), built from this policy's settings."""
        return {}

    def observe(self, progress: Progress, signals: dict[str, Any]) -> None:
        """See the signals returned by :meth:`wants` after an optimizer step."""

    def _per_unit(self, values, what: str):
        """``values`` (a signal) if there is one per unit, else a clear error (a collector out of step)."""
        if len(values) != self.num_units:
            from ..errors import FrostlineError

            raise FrostlineError(f"{type(self).__name__} got {len(values)} {what} for {self.num_units} units")
        return values

    def decide(self, progress: Progress) -> set[int]:
        """Indices of the units that should be frozen now. Freezing is permanent: the Freezer
        keeps the union of every answer."""
        return set()

    def next_call(self, progress: Progress) -> int:
        """The first optimizer step after ``progress.step`` at which :meth:`wants` or :meth:`decide`
        may answer differently; the Freezer does not ask in between. Default: the next step. A
        policy that acts at stage ends says so, because asking costs ~10 µs of cold-cache Python
        per step in a training run: for SmartFRZ, more than its weight snapshots."""
        return progress.step + 1

    def lr_scales(self, progress: Progress) -> list[float] | None:
        """Per-unit learning-rate multipliers for the next step, or None for "leave as is"."""
        return None

    def reason(self, unit: int) -> dict[str, Any] | None:
        """The signal behind freezing ``unit`` (recorded in the timeline), if any."""
        return None

    def why_idle(self) -> str | None:
        """Why nothing froze, when the policy knows better than "no unit looked ready" (the
        Freezer's word to a run that saved nothing)."""
        return None

    def config(self) -> dict[str, Any]:
        """Hyperparameters, for summaries and for checking a resumed run uses the same ones."""
        return {}

    # -- resume ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from ..errors import CheckpointError

        if state.get("name") != self.name:
            raise CheckpointError(
                f"saved freezing state is for method {state.get('name')!r}, not {self.name!r}: "
                "resume with the same --method"
            )
        if state.get("config") != self.config():
            raise CheckpointError(
                f"saved {self.name} hyperparameters {state.get('config')} differ from the "
                f"current ones {self.config()}: resume with the same settings"
            )


NoFreezing = FreezePolicy
