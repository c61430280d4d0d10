"""Errors for bad input. Each message says what to do about it; the CLI prints it and exits 2."""


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
