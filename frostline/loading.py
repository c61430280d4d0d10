"""Reading a file never runs code. A run folder or checkpoint someone hands you is read with
``torch.load(weights_only=True)``: tensors and plain data only (dicts, lists, numbers, strings),
which is all frostline itself ever writes. A file that needs more (a pickled object or callable)
is refused with one clear error instead of being unpickled."""

from __future__ import annotations

import os
import pickle
from typing import Any, Callable

import torch

from .errors import CheckpointError


def load_plain(path: str | os.PathLike, unreadable: Callable[[Exception], Exception] | None = None) -> Any:
    """``torch.load`` of ``path`` on the CPU, refusing anything but tensors and plain data. A file
    that is torn or corrupted (torn writes surface as many different exceptions) raises
    ``unreadable(exception)`` where the caller gives one: the error that says what to do about it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):
            raise CheckpointError(
                f"{path} holds more than tensors and plain data (a pickled object or callable), and loading it "
                "could run code, so frostline refuses it: use files written by frostline, or load a file you trust "
                "yourself") from None
        if unreadable is None:
            raise
        raise unreadable(e) from None
    except Exception as e:
        if unreadable is None:
            raise
        raise unreadable(e) from None
