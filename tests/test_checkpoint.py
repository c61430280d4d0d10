"""Crash safety of checkpoint writes: whatever instant a process dies at, a readable newest or
previous checkpoint is on disk under its own name."""

import os

import pytest
import torch

from frostline import atomic
from frostline.lab.checkpoint import CHECKPOINT, PREVIOUS, load_checkpoint, save_checkpoint


def _state(step):
    return {"model": {"w": torch.full((3,), float(step))}, "optimizer": {}, "freezer": {}, "loop": {"step": step}, "rng": {}}


def test_newest_checkpoint_exists_at_every_rename_and_previous_keeps_the_old_one(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, _state(1))
    seen = []
    real_replace = os.replace

    def replace(src, dst):  # a crash could happen right before any rename: the newest must be there
        seen.append((os.path.basename(src), os.path.basename(dst), (tmp_path / CHECKPOINT).exists()))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    save_checkpoint(tmp_path, _state(2))
    save_checkpoint(tmp_path, _state(3))
    assert seen and all(present for _, _, present in seen), seen
    assert load_checkpoint(tmp_path)["loop"]["step"] == 3
    prev = torch.load(tmp_path / PREVIOUS, weights_only=False)
    assert prev["loop"]["step"] == 2 and torch.equal(prev["model"]["w"], torch.full((3,), 2.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CHECKPOINT, PREVIOUS])  # no temporary left


def test_without_hard_links_the_previous_checkpoint_is_still_kept(tmp_path, monkeypatch):
    def no_links(*args, **kwargs):
        raise OSError("this file system has no hard links")

    save_checkpoint(tmp_path, _state(1))
    monkeypatch.setattr(atomic.os, "link", no_links)
    save_checkpoint(tmp_path, _state(2))
    assert load_checkpoint(tmp_path)["loop"]["step"] == 2
    assert torch.load(tmp_path / PREVIOUS, weights_only=False)["loop"]["step"] == 1


class _RunsCodeWhenUnpickled:
    """What a malicious file could hold: unpickling it calls ``Path.touch(marker)``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_checkpoint_carrying_a_pickled_callable_is_refused_without_running_it(tmp_path):
    from frostline.errors import CheckpointError

    marker = tmp_path / "code-ran"
    state = {"format": "frostline-checkpoint-1", **_state(1), "rng": {"evil": _RunsCodeWhenUnpickled(marker)}}
    torch.save(state, tmp_path / CHECKPOINT)
    with pytest.raises(CheckpointError, match="could run code"):
        load_checkpoint(tmp_path)
    assert not marker.exists()
    save_checkpoint(tmp_path, _state(2))  # a good newest checkpoint is read as before
    assert load_checkpoint(tmp_path)["loop"]["step"] == 2


def test_a_torn_checkpoint_is_reported_unreadable_not_as_carrying_code(tmp_path):
    from frostline.errors import CheckpointError

    (tmp_path / CHECKPOINT).write_bytes(b"half a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable") as info:
        load_checkpoint(tmp_path)
    assert "could run code" not in str(info.value)
