"""One way to write a file so that a crash never leaves a torn one: write a temporary file beside
it, fsync, rename over the target, fsync the directory. Checkpoints, summaries, cache headers and
the predictor all go through :func:`atomic_write`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any, Callable

import torch


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any], *,
                 previous: str | os.PathLike | None = None) -> Path:
    """Call ``write(file)`` on a temporary binary file, then rename it over ``path``: readers see
    the old file or the new one, never half of one. With ``previous``, the old file is first kept
    under that name (hard-linked, so ``path`` exists at every instant)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    if previous is not None and path.exists():
        _keep_as(path, Path(previous))
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike, *, previous: str | os.PathLike | None = None) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    return atomic_write(path, lambda f: torch.save(obj, f), previous=previous)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """JSON (non-JSON values as ``str``) through :func:`atomic_write`."""
    text = json.dumps(obj, indent=indent, default=str) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def _keep_as(path: Path, previous: Path) -> None:
    """Give ``path``'s current content the name ``previous`` while ``path`` itself stays in
    place (a hard link, renamed over the old ``previous``). Where the file system has no hard
    links, fall back to a rename, which leaves only ``previous`` for that instant."""
    link = previous.with_name(previous.name + ".tmp")
    try:
        link.unlink(missing_ok=True)
        os.link(path, link)
    except OSError:
        os.replace(path, previous)
        return
    os.replace(link, previous)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory; the rename itself is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
