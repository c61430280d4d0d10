"""AutoFreeze: freeze the prefix whose gradient-norm change rate has fallen; the method card is ``README.md`` here."""

from .autofreeze import AutoFreeze, autofreeze_depth, change_rates, percentile_linear

__all__ = ["AutoFreeze", "autofreeze_depth", "change_rates", "percentile_linear"]
