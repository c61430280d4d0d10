"""Reading a file never runs code. A run folder or checkpoint someone hands you is read with
``torch.load(weights_only=True)``: tensors and plain data only (dicts, lists, numbers, strings),
which is all frostline itself ever writes. A file that needs more (a pickled object or callable)
is refused with one clear error instead of being unpickled."""

from __future__ import annotations

import os
import pickle
from typing import Any

import torch

from .errors import CheckpointError


def load_plain(path: str | os.PathLike) -> Any:
    """``torch.load`` of ``path`` on the CPU, refusing anything but tensors and plain data."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):  # torn or corrupted, not code: the caller's "unreadable"
            raise
        raise CheckpointError(
            f"{path} holds more than tensors and plain data (a pickled object or callable), and loading it "
            "could run code, so frostline refuses it: use files written by frostline, or load a file you trust "
            "yourself") from None
