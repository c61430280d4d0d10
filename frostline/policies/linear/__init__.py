"""Linear layer freezing (Composer's ``LayerFreezing``); the method card is ``README.md`` here."""

from .linear import LinearFreezing, check_linear_args, linear_freeze_depth, linear_freeze_fraction

__all__ = ["LinearFreezing", "check_linear_args", "linear_freeze_depth", "linear_freeze_fraction"]
