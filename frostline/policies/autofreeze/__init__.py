"""AutoFreeze: freeze the prefix whose gradient change rate has fallen; the method card is ``README.md`` here."""

from .autofreeze import SIGNAL, AutoFreeze, autofreeze_depth, change_rates, percentile_linear

__all__ = ["AutoFreeze", "SIGNAL", "autofreeze_depth", "change_rates", "percentile_linear"]
