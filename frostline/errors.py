"""Errors for bad input, and the small checks (integer, number, flag, names) that raise them. Each
message says what to do about it; the CLI prints it and exits 2."""

import math
import numbers


class FrostlineError(Exception):
    """Base class for every error frostline raises on purpose (bad input, missing data, ...)."""


class ConfigError(FrostlineError, ValueError):
    """A hyperparameter or option is out of range or unknown."""


class DatasetNotFoundError(FrostlineError, FileNotFoundError):
    """A dataset's files are not installed; the message names the command that installs them."""


class ModelError(FrostlineError):
    """A model cannot be frozen as asked (no trainable parameters, unknown unit names, ...)."""


class CheckpointError(FrostlineError):
    """A checkpoint or saved state is missing, corrupted, or does not match the model."""


class DistributedError(FrostlineError):
    """Ranks of a distributed run disagree (different steps, a unit frozen on some ranks only)."""


class DataError(FrostlineError):
    """A data file (e.g. a collected SmartFRZ dataset) is missing, unreadable or of the wrong kind."""


def check_int(value, what: str, *, low: int, high: int | None = None, allow_none: bool = False) -> int | None:
    """``value`` as an ``int`` if it is an integer in ``[low, high]``, else a :class:`ConfigError`
    naming ``what``. One helper, so every option reports a bad integer the same way. ``True`` is not
    an integer here (a flag passed where a count belongs is a mistake); numpy integers are."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{what} must be an integer, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise ConfigError(f"{what} must be {bound}, got {value}")
    return value


def check_float(value, what: str, interval: str = "(-inf, inf)", *, note: str = "", allow_none: bool = False) -> float | None:
    """``value`` as a ``float`` if it is a finite real number in ``interval`` (written as in maths:
    ``"[0, 1)"``, ``"(0, inf)"``), else a :class:`ConfigError` naming ``what``; ``note`` says what the
    number means. Like :func:`check_int`: ``True`` is not a number here; ints and numpy numbers are."""
    if value is None and allow_none:
        return None
    about = f" ({note})" if note else ""
    where = f" in {interval}" if interval != "(-inf, inf)" else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{what} must be a number{where}{about}, got {value!r}")
    lo, hi = (float(x) for x in interval[1:-1].split(","))
    x = float(value)
    above = lo < x if interval[0] == "(" else lo <= x
    below = x < hi if interval[-1] == ")" else x <= hi
    if not (math.isfinite(x) and above and below):
        raise ConfigError(f"{what} must be {f'in {interval}' if where else 'a finite number'}{about}, got {value}")
    return x


def check_bool(value, what: str) -> bool:
    """``value`` if it is ``True`` or ``False``, else a :class:`ConfigError` naming ``what`` (a string
    such as ``"no"`` is truthy: never read it as a flag)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{what} must be True or False, got {value!r}")
    return value


def check_names(value, what: str):
    """``value`` unless it is a single string where a list of module names belongs (it would be read
    letter by letter); then a :class:`ConfigError` naming ``what``."""
    if isinstance(value, (str, bytes)):
        raise ConfigError(f"{what} must be a list of module names in the order they run (e.g. "
                          f"['bert.embeddings', 'bert.encoder.layer.0', ..., 'classifier']), not the string {value!r}")
    return value


def run_script(main) -> None:
    """A repository script's entry point: exit with ``main()``'s status, or with the one-line message
    of the :class:`FrostlineError` it raised instead of a traceback."""
    import sys

    try:
        sys.exit(main())
    except FrostlineError as e:
        sys.exit(f"error: {e}")
