"""SmartFRZ (Li, Yuan, Dai et al., "SmartFRZ: An Efficient Training Framework using
Attention-Based Layer Freezing", ICLR 2023).

Every ``1/snapshots_per_epoch`` of an epoch the Freezer hands over each active unit's tailored
weights (signal ``"tailored_weights"``: ``tailor_size`` fixed, seeded positions per unit); the
policy keeps the last ``window`` of them. At each freezing stage (``stages_per_epoch``, default
one per epoch) the predictor (:mod:`frostline.policies.smartfrz.predictor`) looks at each active unit's
window and the unit freezes when the "freeze" logit wins. Units may freeze in any order (the
paper's point); ``prefix_only`` keeps to a growing prefix. A frozen unit's history is dropped.
The head never freezes.

The predictor is the shipped one (``frostline/smartfrz/predictor.pt``) unless ``predictor``
names a file from ``frostline predictor train`` (or is a :class:`SmartFRZPredictor`).
"""

from __future__ import annotations

from typing import Any

import torch

from ...errors import CheckpointError, ConfigError, FrostlineError
from .history import History
from .predictor import SmartFRZPredictor, load_predictor, window_features
from .tailor import check_size
from ..base import FreezePolicy, Progress
from ..registry import Hyperparameter, register_policy
from ..stages import StageClock

MIN_SNAPSHOTS = 2


@register_policy(
    "smartfrz",
    Hyperparameter("predictor", "predictor file from `frostline predictor train` (default: the one shipped with frostline)",
                   type=str),
    Hyperparameter("window", "snapshots per unit the predictor looks at", field="history_window"),
    Hyperparameter("tailor_size", "sampled weights per unit per snapshot (must match the predictor)"),
    Hyperparameter("snapshots_per_epoch", "weight snapshots per epoch"),
    Hyperparameter("stages_per_epoch", "freezing stages (decisions) per epoch"),
    Hyperparameter("prefix_only", "freeze only a growing prefix of units (otherwise any ready unit)"),
    runtime=("steps_per_epoch", "seed"),
)
class SmartFRZ(FreezePolicy):
    name = "smartfrz"
    requires = frozenset({"tailored_weights"})

    def __init__(self, predictor=None, window: int = 30, tailor_size: int = 1024, snapshots_per_epoch: int = 30,
                 stages_per_epoch: int = 1, steps_per_epoch: int | None = None, stage_steps: int | None = None,
                 snapshot_steps: int | None = None, prefix_only: bool = False, seed: int = 0):
        super().__init__()
        if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
            raise ConfigError(f"the SmartFRZ history window must be a positive integer, got {window!r}")
        check_size(tailor_size)
        self.window, self.tailor_size, self.seed = window, tailor_size, int(seed)
        self.stages = StageClock(stages_per_epoch, steps_per_epoch, stage_steps)
        self.snapshots = StageClock(snapshots_per_epoch, steps_per_epoch, snapshot_steps, what="snapshots_per_epoch")
        self.prefix_only = bool(prefix_only)
        if isinstance(predictor, SmartFRZPredictor):
            self.predictor, self.predictor_meta = predictor.eval(), {"path": None, "sha256": None}
        else:
            self.predictor, self.predictor_meta = load_predictor(predictor)
        if self.predictor.input_size != tailor_size:
            raise ConfigError(f"the predictor reads {self.predictor.input_size} tailored weights per snapshot, "
                              f"tailor_size is {tailor_size}: use --tailor-size {self.predictor.input_size} "
                              "or a predictor trained with this tailor size")
        self._reset()

    def _reset(self) -> None:
        self.history = History(self.num_units, self.window)
        self.frozen: set[int] = set()
        self.stages_done = 0
        self._reasons: dict[int, dict[str, Any]] = {}
        self.last_stage: dict[str, Any] | None = None

    def bind(self, unit_names):
        super().bind(unit_names)
        self._reset()

    def collectors(self):
        from ...signals import TailoredWeights

        return {"tailored_weights": TailoredWeights(self.tailor_size, self.seed)}

    def wants(self, progress: Progress) -> frozenset[str]:
        s = progress.step
        return self.requires if self.snapshots.is_stage_end(s) or self.stages.is_stage_end(s) else frozenset()

    @torch.no_grad()
    def freeze_probabilities(self) -> dict[int, float]:
        """P(freeze) per active unit (below the head) with at least two snapshots."""
        units = [i for i in range(self.num_units - 1)
                 if i not in self.frozen and len(self.history.snapshots[i]) >= MIN_SNAPSHOTS]
        if not units:
            return {}
        from .predictor import batch_windows

        x, mask = batch_windows([window_features(self.history.stacked(i)) for i in units])
        probs = torch.softmax(self.predictor(x, mask), dim=1)[:, 1].tolist()
        return dict(zip(units, probs))

    def observe(self, progress: Progress, signals: dict[str, Any]) -> None:
        samples = signals["tailored_weights"]
        if len(samples) != self.num_units:
            raise FrostlineError(f"SmartFRZ got {len(samples)} snapshots for {self.num_units} units")
        self.history.add([None if i in self.frozen else s for i, s in enumerate(samples)])
        if not self.stages.is_stage_end(progress.step):
            return
        self.stages_done += 1
        probs = self.freeze_probabilities()
        ready = {i for i, p in probs.items() if p > 0.5}
        if self.prefix_only:
            chosen, i = set(), 0
            while i < self.num_units - 1 and (i in self.frozen or i in ready):
                chosen.add(i)
                i += 1
            chosen -= self.frozen
        else:
            chosen = ready
        for i in sorted(chosen):
            self._reasons[i] = {"freeze_probability": probs[i], "snapshots": len(self.history.snapshots[i]),
                                "stage": self.stages_done, "step": progress.step,
                                "predictor": self.predictor_meta.get("sha256")}
            self.history.drop(i)
        self.frozen |= chosen
        self.last_stage = {"stage": self.stages_done, "step": progress.step,
                           "freeze_probability": {self.unit_names[i]: round(p, 4) for i, p in probs.items()}}

    def decide(self, progress: Progress) -> set[int]:
        return set(self.frozen)

    def reason(self, unit: int):
        return self._reasons.get(unit)

    def config(self):
        return {"window": self.window, "tailor_size": self.tailor_size, "seed": self.seed,
                "snapshots_per_epoch": self.snapshots.per_epoch, "snapshot_steps": self.snapshots.every_steps,
                "stages_per_epoch": self.stages.per_epoch, "stage_steps": self.stages.every_steps,
                "steps_per_epoch": self.stages.steps_per_epoch, "prefix_only": self.prefix_only,
                "predictor_sha256": self.predictor_meta.get("sha256")}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(history=self.history.state_dict(), frozen=sorted(self.frozen), stages_done=self.stages_done,
                     reasons=[[i, dict(r)] for i, r in sorted(self._reasons.items())], last_stage=self.last_stage)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        try:
            if len(state["history"]["snapshots"]) != self.num_units:
                raise CheckpointError(f"saved SmartFRZ state is for {len(state['history']['snapshots'])} units, "
                                      f"this model has {self.num_units}: resume the same model")
            self.history.load_state_dict(state["history"])
            self.frozen = {int(i) for i in state["frozen"]}
            self.stages_done = int(state["stages_done"])
            self._reasons = {int(i): dict(r) for i, r in state["reasons"]}
            self.last_stage = state.get("last_stage")
        except KeyError as e:
            raise CheckpointError(f"saved SmartFRZ state lacks {e}: it is not from this version") from None
