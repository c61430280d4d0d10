"""SmartFRZ (Li, Yuan, Dai et al., ICLR 2023): an attention-based predictor decides, from a window
of each unit's sampled weights, whether the unit has finished learning.

``tailor`` (which weights are sampled), ``history`` (the window), ``predictor`` (the network and
its file), ``collect`` (CKA-labelled training data from real runs), ``fit`` (offline training and
evaluation). The policy is :class:`frostline.policies.SmartFRZ`.
"""

from .history import History
from .predictor import SmartFRZPredictor, batch_windows, load_predictor, save_predictor, window_features
from .tailor import Tailor

__all__ = ["History", "SmartFRZPredictor", "Tailor", "batch_windows", "load_predictor", "save_predictor",
           "window_features"]
