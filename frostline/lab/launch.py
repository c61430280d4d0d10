"""The recipe under ``torchrun``: joining the process group, sharding the data, weighting the
loss, and the few collectives the training loop needs around the model.

Why sharding works this way: every rank builds the *same* globally shuffled order
(``iterate_batches`` with the run's seed) and takes its contiguous slice of each global batch.
``--batch-size`` stays the *global* batch, so a run has the same steps, schedule and freezing
times for any number of processes; the loss of a rank is weighted by ``n_local * world /
n_global`` so that DDP's gradient *average* is exactly the gradient of the global batch's mean
loss, even for a short last batch split unevenly.

Identical decisions on every rank and the DDP wrapper rebuilt after a freeze are library
pieces: :mod:`frostline.exploit.distributed`.
"""

from __future__ import annotations

import datetime
import gc
import hashlib
import os
from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError, DistributedError
from ..exploit.distributed import collective_device, is_distributed, rank, world_size

#: Seconds a collective (and the rendezvous) may wait before failing; ``FROSTLINE_DIST_TIMEOUT``
#: overrides it (the tests use a few seconds so a desynchronised rank fails fast).
DEFAULT_TIMEOUT_S = 1800.0


def is_main() -> bool:
    """Rank 0 writes every output (checkpoints, metrics, summary, progress bar)."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device_name: str = "auto") -> torch.device | None:
    """Join the process group that ``torchrun`` describes in the environment (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``). NCCL when this rank trains
    on a GPU, gloo on CPU. Returns this rank's device, or None when not launched with more
    than one process (then nothing is initialised)."""
    if not launched_by_torchrun():
        return None
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed: run without torchrun")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device_name!r} asked for but CUDA is not available; use --device cpu")
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    elif device_name in ("auto", "cpu"):
        device = torch.device("cpu")
    else:
        raise ConfigError(f"unknown device {device_name!r}; use auto, cpu or cuda")
    if not dist.is_initialized():
        timeout = float(os.environ.get("FROSTLINE_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout))
    return device


def shutdown(clean: bool = True) -> None:
    """Leave the process group. After a clean run every rank first waits for the others, so none
    tears its connections down while a peer is still talking to it; the garbage collector then
    frees DDP reducers left in reference cycles (they hold the group, and a gloo group destroyed
    during interpreter shutdown can abort the process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if clean and dist.get_world_size() > 1:
        dist.barrier()
    gc.collect()
    dist.destroy_process_group()


# -- data ------------------------------------------------------------------------------------
def shard(indices: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This rank's contiguous slice of a global batch (sizes differ by at most one)."""
    return indices.tensor_split(world)[rank]


def check_global_batches(num_samples: int, batch_size: int, world: int) -> None:
    """Every global batch, the short last one included, must give each rank a sample: a rank
    with an empty batch could not run the forward that DDP's all-reduce waits for."""
    if world <= 1:
        return
    last = num_samples % batch_size or batch_size
    if batch_size < world or last < world:
        raise ConfigError(
            f"with {world} processes every global batch needs >= {world} samples, but batch size {batch_size} "
            f"over {num_samples} samples leaves a last batch of {last}: change --batch-size or --train-subset")


def loss_weight(n_local: int, n_global: int, world: int) -> float:
    """Factor on a rank's mean loss so DDP's average of gradients is the global batch's mean."""
    return n_local * world / n_global


# -- collectives around the model ------------------------------------------------------------
def all_reduce_values(values: Iterable[float], op: str = "sum", device: torch.device | None = None) -> list[float]:
    """Sum (or max) a few numbers over the ranks; identity in a single process."""
    values = [float(v) for v in values]
    if not is_distributed():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device or collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_buffers(module: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics are updated from each
    rank's own batch), so evaluation and the saved model agree on every rank."""
    if not is_distributed():
        return
    for b in module.buffers():
        dist.broadcast(b.data, src=0)


def state_digests(module: nn.Module, device: torch.device | None = None) -> list[str]:
    """SHA-256 of ``module``'s state (parameters and buffers, in ``state_dict`` order) on every
    rank, gathered: the end-of-run proof that all ranks hold the same model."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    mine = torch.frombuffer(bytearray(h.digest()), dtype=torch.uint8)
    if not is_distributed():
        return [mine.numpy().tobytes().hex()]
    dev = device or collective_device()
    gathered = [torch.empty(32, dtype=torch.uint8, device=dev) for _ in range(world_size())]
    dist.all_gather(gathered, mine.to(dev))
    return [g.cpu().numpy().tobytes().hex() for g in gathered]
