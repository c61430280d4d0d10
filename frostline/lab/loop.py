"""What every training-shaped tool of the workbench shares: the device, the batches, evaluation,
memory readings and the run log. The recipe (:mod:`frostline.lab.recipe`), ``bench steptime`` and
the SmartFRZ corpus builder use these; none of them imports another tool to get them."""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.data import default_collate

from ..errors import ConfigError
from ..exploit import distributed
from . import launch


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda asked for but no CUDA GPU is available; use --device cpu")
    return device


def check_out_folder(out) -> Path:
    """``--out`` as a folder to write into, checked before any work: an empty name (it would write
    into the current folder) or a file where the folder, or one above it, should be is one clear error."""
    if not str(out).strip():
        raise ConfigError("--out is empty: pass the folder to write to")
    path = Path(out)
    existing = next((folder for folder in (path, *path.parents) if folder.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"--out {path} is (or is inside) a file, not a folder: pass a folder")
    return path


def free_name(path: Path, tag: str) -> Path:
    """The first free ``<name>.<tag>[-N]`` beside ``path`` (a file keeps its suffix after the tag)."""
    stem, suffix = (path.stem, path.suffix) if path.is_file() else (path.name, "")
    target, n = path.with_name(f"{stem}.{tag}{suffix}"), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{stem}.{tag}-{n}{suffix}")
    return target


def keep_aside(path: Path, what: str, then: str = "") -> Path:
    """Move ``path`` (a run folder or a result file) to the first free ``<name>.earlier[-N]``
    beside it (a file keeps its suffix: ``dataset.earlier.pt``) and say so: a new run or a re-run
    never loses a finished result. ``then`` is added to the message (``{target}`` in it: where the
    path went). Returns where it went."""
    target = free_name(path, "earlier")
    path.rename(target)
    print(f"frostline: {path} held {what}: kept as {target}, nothing deleted{then.format(target=target)}",
          file=sys.stderr)
    return target


def iterate_batches(dataset, batch_size: int, *, shuffle: bool, seed: int = 0, skip: int = 0,
                    shard: tuple[int, int] | None = None) -> Iterator[tuple]:
    """``(indices, x, y)`` batches; the order depends only on ``seed`` (so a run is repeatable
    and a resumed run finds its place by skipping ``skip`` batches without loading them).
    Whole-batch tensor indexing when the dataset allows. ``shard=(rank, world)`` yields only this
    rank's slice of each global batch (every rank builds the same global order)."""
    n = len(dataset)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
    for start in range(skip * batch_size, n, batch_size):
        idx = order[start : start + batch_size]
        if shard is not None:
            idx = launch.shard(idx, *shard)
        if hasattr(dataset, "get_batch"):
            x, y = dataset.get_batch(idx)
        else:
            x, y = default_collate([dataset[int(i)] for i in idx])
        yield idx, x, y


def probe_batch(train_set, size: int, seed: int) -> torch.Tensor:
    """``size`` train samples chosen by ``seed`` (the same for every run with that seed)."""
    n = min(size, len(train_set))
    idx = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed + 7919))[:n].sort().values
    if hasattr(train_set, "get_batch"):
        return train_set.get_batch(idx)[0]
    return default_collate([train_set[int(i)] for i in idx])[0]


@torch.no_grad()
def evaluate(model: nn.Module, dataset, batch_size: int, device: torch.device) -> float:
    """Top-1 accuracy (%) on ``dataset``; restores the model's training mode. Under torchrun each
    rank scores its share with rank 0's buffers and the counts are summed: the same figure on
    every rank."""
    was_training = model.training
    model.eval()
    launch.broadcast_buffers(model)
    shard = (distributed.rank(), distributed.world_size()) if distributed.is_distributed() else None
    correct = 0
    for _, x, y in iterate_batches(dataset, max(batch_size, 256), shuffle=False, shard=shard):
        if len(y):
            correct += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
    model.train(was_training)
    (correct,) = launch.all_reduce_values([correct], device=device)
    return 100.0 * correct / len(dataset)


def memory_now_mb(device: torch.device) -> float:
    """Memory in use now: allocated CUDA memory, or the process's resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """The run's peak memory and what was measured (CUDA allocations, or the process's peak RSS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return rss_kb / 1024, "process_peak_rss"


class RunLog:
    """``metrics.jsonl`` written line by line, so a crash loses at most the current line. On
    resume, rows the checkpoint does not cover (written after it, before the crash) are dropped."""

    def __init__(self, out: Path, resume_step: int | None = None, resume_epoch: int = 0):
        path = out / "metrics.jsonl"
        kept = []
        if resume_step is not None and path.exists():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line
                if (row["kind"] == "step" and row["step"] <= resume_step) or (row["kind"] == "epoch" and row["epoch"] < resume_epoch):
                    kept.append(line)
        self.file = open(path, "w", buffering=1)
        for line in kept:
            self.file.write(line + "\n")

    def write(self, row: dict[str, Any]) -> None:
        self.file.write(json.dumps(row) + "\n")

    def close(self) -> None:
        self.file.close()


class NoLog:
    """What ranks other than 0 write: nothing."""

    def write(self, row: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, enabled: bool, desc: str, unit: str = "step"):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True, file=sys.stderr)
