"""SmartFRZ (Li, Yuan, Dai et al., ICLR 2023): an attention-based predictor decides, from a window
of each unit's sampled weights, whether the unit has finished learning.

``tailor`` (which weights are sampled), ``history`` (the window), ``predictor`` (the network and
its file, with the shipped ``predictor.pt``), ``smartfrz`` (the policy). The offline corpus builder
and predictor training are workbench tools (:mod:`frostline.lab.predictor`). The method card is
``README.md`` here.
"""

from .history import History
from .predictor import (SmartFRZPredictor, batch_windows, load_predictor, save_predictor, window_context,
                        window_features)
from .smartfrz import SmartFRZ
from .tailor import Tailor

__all__ = ["History", "SmartFRZ", "SmartFRZPredictor", "Tailor", "batch_windows", "load_predictor",
           "save_predictor", "window_context", "window_features"]
