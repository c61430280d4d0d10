"""FreezeOut: per-unit cosine annealing to zero, then freezing; the method card is ``README.md`` here."""

from .freezeout import SCHEDULES, FreezeOut, check_freezeout_args, freezeout_times

__all__ = ["SCHEDULES", "FreezeOut", "check_freezeout_args", "freezeout_times"]
