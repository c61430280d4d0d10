"""Crash-safe checkpoints: written to a temporary file, fsynced, then renamed over the old one,
which is first kept (hard-linked) as ``checkpoint.prev.pt``. A torn or corrupted newest file falls back to the
previous good one, so a crash at any moment never loses what was already written."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any


from ..atomic import atomic_torch_save
from ..errors import CheckpointError
from ..loading import load_plain

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
FORMAT = "frostline-checkpoint-1"
REQUIRED = ("format", "model", "optimizer", "freezer", "loop", "rng")


def save_checkpoint(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically as ``directory/checkpoint.pt``; the last good one survives."""
    directory = Path(directory)
    return atomic_torch_save({"format": FORMAT, **state}, directory / CHECKPOINT, previous=directory / PREVIOUS)


def _read(path: Path) -> dict[str, Any]:
    state = load_plain(path, lambda e: CheckpointError(f"{path.name} is unreadable ({type(e).__name__})"))
    if not isinstance(state, dict) or state.get("format") != FORMAT or any(k not in state for k in REQUIRED):
        raise CheckpointError(f"{path.name} is not a complete frostline checkpoint")
    return state


def load_checkpoint(directory: str | os.PathLike) -> dict[str, Any]:
    """The newest readable checkpoint in ``directory``; warns when it had to fall back."""
    directory = Path(directory)
    problems = []
    for name in (CHECKPOINT, PREVIOUS):
        path = directory / name
        if not path.exists():
            continue
        try:
            state = _read(path)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        if problems:
            warnings.warn(f"{'; '.join(problems)}: resuming from {name} instead", stacklevel=2)
        return state
    detail = f" ({'; '.join(problems)})" if problems else ""
    raise CheckpointError(
        f"no usable checkpoint in {directory}{detail}: start a new run without --resume"
    )
