"""SmartFRZ (Li, Yuan, Dai et al., "SmartFRZ: An Efficient Training Framework using
Attention-Based Layer Freezing", ICLR 2023).

Every ``1/snapshots_per_epoch`` of an epoch the Freezer hands over each active unit's tailored
weights (signal ``"tailored_weights"``: ``tailor_size`` fixed, seeded positions per unit); the
policy keeps the last ``window`` of them. At each freezing stage (``stages_per_epoch``, default
one per epoch) the predictor (:mod:`frostline.policies.smartfrz.predictor`) looks at each active unit's
window and the unit freezes when its P(freeze) exceeds ``threshold`` (by default the one calibrated
on held-out runs when the predictor was trained). Units may freeze in any order (the
paper's point); ``prefix_only`` keeps to a growing prefix. A frozen unit's history is dropped.
The head never freezes.

A unit is judged only once its window holds an epoch of snapshots, or the whole window when that is
less (:attr:`SmartFRZ.judged_from`; the whole window when the epoch's length is unknown): the
predictor's labels call a unit converged only after an epoch of stable CKA, so it learned "freeze"
from full windows alone, and every shorter window it saw was labelled "keep training". Judged on a
few snapshots anyway, a fine-tune's barely moving pretrained weights look settled at once: deciding
four times an epoch, the first decision (a twenty-fourth of a 6-epoch EfficientNet-Lite0 fine-tune)
froze its lowest blocks from seven snapshots each.

The predictor is the shipped one (``frostline/smartfrz/predictor.pt``) unless ``predictor``
names a file from ``frostline predictor train`` (or is a :class:`SmartFRZPredictor`).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ...errors import ConfigError, check_float, check_int
from .history import History
from .predictor import SmartFRZPredictor, load_predictor
from ..base import Progress
from ..stages import StageClock, StagedPolicy
from ..registry import Hyperparameter, register_policy


def snapshots_judged_from(window: int, snapshots_per_epoch: int, steps_per_epoch: int | None) -> int:
    """How many snapshots a unit's window must hold before the predictor judges it: an epoch's (a
    short epoch takes one per step), at most the window; the whole window when the epoch's length
    is unknown (see the module docstring)."""
    if steps_per_epoch is None:
        return window
    return max(2, min(window, snapshots_per_epoch, steps_per_epoch))


@register_policy(
    "smartfrz",
    Hyperparameter("predictor", "predictor file from `frostline predictor train` (default: the one shipped with frostline)",
                   type=str),
    Hyperparameter("threshold", "P(freeze) above which a unit freezes (default: the predictor's calibrated one)",
                   type=float, field="freeze_threshold"),
    Hyperparameter("window", "snapshots per unit the predictor looks at", field="history_window"),
    Hyperparameter("tailor_size", "sampled weights per unit per snapshot (must match the predictor)"),
    Hyperparameter("snapshots_per_epoch", "weight snapshots per epoch"),
    Hyperparameter("stages_per_epoch", "freezing stages (decisions) per epoch"),
    Hyperparameter("prefix_only", "freeze only a growing prefix of units (otherwise any ready unit)"),
    runtime=("steps_per_epoch", "seed"),
)
class SmartFRZ(StagedPolicy):
    name = "smartfrz"
    requires = frozenset({"tailored_weights"})

    def __init__(self, predictor=None, threshold: float | None = None, window: int = 30, tailor_size: int = 1024, snapshots_per_epoch: int = 30,
                 stages_per_epoch: int = 1, steps_per_epoch: int | None = None, stage_steps: int | None = None,
                 snapshot_steps: int | None = None, prefix_only: bool = False, seed: int = 0):
        window = check_int(window, "the SmartFRZ history window (at least two snapshots: a trajectory)", low=2)
        tailor_size = check_int(tailor_size, "tailor size", low=1)
        threshold = check_float(threshold, "the SmartFRZ freeze threshold", "(0, 1)", note="a probability",
                                allow_none=True)
        seed = check_int(seed, "seed", low=-2**63)
        if predictor is not None and not isinstance(predictor, (str, os.PathLike, SmartFRZPredictor)):
            raise ConfigError(f"predictor must be a file from `frostline predictor train` (a path), a SmartFRZPredictor "
                              f"or None (the shipped one), got {type(predictor).__name__}")
        super().__init__(stages_per_epoch, steps_per_epoch, stage_steps, prefix_only)
        self.window, self.tailor_size, self.seed = window, tailor_size, seed
        self.snapshots = StageClock(snapshots_per_epoch, steps_per_epoch, snapshot_steps,
                                    per_epoch_name="snapshots_per_epoch", every_name="snapshot_steps")
        self.steps_per_epoch = steps_per_epoch
        per_epoch = snapshots_per_epoch if snapshot_steps is None or steps_per_epoch is None else max(
            1, steps_per_epoch // snapshot_steps)
        self.judged_from = snapshots_judged_from(window, per_epoch, steps_per_epoch)
        if isinstance(predictor, SmartFRZPredictor):
            self.predictor, self.predictor_meta = predictor.eval(), {"path": None, "sha256": None}
        else:
            self.predictor, self.predictor_meta = load_predictor(predictor)
        self.threshold = float(self.predictor.threshold if threshold is None else threshold)
        if self.predictor.input_size != tailor_size:
            raise ConfigError(f"the predictor reads {self.predictor.input_size} tailored weights per snapshot, "
                              f"tailor_size is {tailor_size}: use tailor_size={self.predictor.input_size} (--tailor-size) "
                              "or a predictor trained with this tailor size")
        self._reset()

    def _reset(self) -> None:
        super()._reset()
        self.history = History(self.num_units, self.window)
        self.last_stage: dict[str, Any] | None = None

    def collectors(self):
        from ...signals import TailoredWeights

        return {"tailored_weights": TailoredWeights(self.tailor_size, self.seed, head=False)}

    def wants(self, progress: Progress) -> frozenset[str]:
        self._say_if_never_decides(progress)
        return self.requires if self.snapshots.is_stage_end(progress.step) else super().wants(progress)

    def _first_decision(self) -> tuple[int, str]:
        """The first stage end at which a window holds the :attr:`judged_from` snapshots (a stage
        end takes a snapshot too)."""
        step = 0
        for _ in range(self.judged_from):
            step = min(self.snapshots.next_end(step), self.clock.next_end(step))
        if not self.clock.is_stage_end(step):
            step = self.clock.next_end(step)
        snapshots = (f"every snapshot_steps={self.snapshots.every_steps} steps" if self.snapshots.every_steps
                     else f"{self.snapshots.per_epoch} per epoch")
        return step, (f"it judges a unit at a stage end ({self._cadence()}) once its window holds {self.judged_from} "
                      f"weight snapshots (taken {snapshots} and at each stage end)")

    def next_call(self, progress: Progress) -> int:
        return min(self.snapshots.next_end(progress.step), super().next_call(progress))

    @torch.no_grad()
    def freeze_probabilities(self, progress: Progress) -> dict[int, float]:
        """P(freeze) per active unit (below the head) whose window holds :attr:`judged_from` snapshots."""
        units = [i for i in range(self.num_units - 1)
                 if i not in self.frozen and self.history.length(i) >= self.judged_from]
        if not units:
            return {}
        inputs = self.history.inputs(units, self.predictor.project, progress.fraction)
        probs = torch.softmax(self.predictor.forward_projected(*inputs), dim=1)[:, 1].tolist()
        return dict(zip(units, probs))

    def _record(self, progress: Progress, signals: dict[str, Any]) -> None:
        samples = self._per_unit(signals["tailored_weights"], "snapshots")
        judged = self.num_units - 1  # the head never freezes: its trajectory is not kept
        self.history.add([None if i in self.frozen or i >= judged else s for i, s in enumerate(samples)])

    def _ready(self, progress: Progress) -> dict[int, dict[str, Any]]:
        probs = self.freeze_probabilities(progress)
        self.last_stage = {"stage": self.stages_done, "step": progress.step,
                           "freeze_probability": {self.unit_names[i]: round(p, 4) for i, p in probs.items()}}
        return {i: {"freeze_probability": p, "snapshots": self.history.length(i), "stage": self.stages_done,
                    "step": progress.step, "predictor": self.predictor_meta.get("sha256")}
                for i, p in probs.items() if p > self.threshold}

    def why_idle(self) -> str | None:
        if self.frozen or (self.last_stage is not None and self.last_stage["freeze_probability"]):
            return None  # units were judged: the general word (none looked ready) is the right one
        return (self.stages_done == 0 and self._never_decides()) or (
            f"no unit's window ever held the {self.judged_from} snapshots it is judged from (an epoch's, at most "
            "the history window) at a decision: train longer, or pass a smaller window (window=, --history-window)")

    def _freeze(self, units: set[int]) -> None:
        super()._freeze(units)
        for i in units:
            self.history.drop(i)  # a frozen unit's weights no longer change

    def config(self):
        return {"threshold": self.threshold, "window": self.window, "tailor_size": self.tailor_size, "seed": self.seed,
                "snapshots_per_epoch": self.snapshots.per_epoch, "snapshot_steps": self.snapshots.every_steps,
                "stages_per_epoch": self.clock.per_epoch, "stage_steps": self.clock.every_steps,
                "steps_per_epoch": self.steps_per_epoch, "prefix_only": self.prefix_only,
                "predictor_sha256": self.predictor_meta.get("sha256")}

    def _own_state(self) -> dict[str, Any]:
        return {"history": self.history.state_dict(), "last_stage": self.last_stage}

    def _load_own_state(self, state: dict[str, Any]) -> None:
        self._check_units(len(state["history"]["snapshots"]))
        self.history.load_state_dict(state["history"])
        self.last_stage = state.get("last_stage")
