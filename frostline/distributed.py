"""Distributed data-parallel training under ``torchrun``: process group, data sharding, identical
freezing decisions on every rank, and a DDP wrapper rebuilt after each freeze.

Why each piece exists
    * **Sharding.** Every rank builds the *same* globally shuffled order (``iterate_batches`` with
      the run's seed) and takes its contiguous slice of each global batch. ``--batch-size`` stays
      the *global* batch, so a run has the same steps, schedule and freezing times for any number
      of processes; the loss of a rank is weighted by ``n_local * world / n_global`` so that DDP's
      gradient *average* is exactly the gradient of the global batch's mean loss, even for a
      short last batch split unevenly.
    * **Decisions.** A policy decides from local signals (AutoFreeze: gradient norms, already
      all-reduced by DDP, but float noise could still tip a threshold on one rank only). The
      :class:`DecisionSync` given to the Freezer makes rank 0's decision the decision: each Freezer
      step it all-reduces one small integer tensor holding rank 0's wanted set, every rank's frozen
      set and rank 0's step. A unit frozen on some ranks only, or ranks at different steps, raise
      :class:`~frostline.errors.DistributedError` on the spot instead of hanging or silently
      training different models.
    * **Rebuild.** DDP's reducer is built over the parameters that require grad when it is made.
      After a freeze :class:`ReplicatedModel` drops the old reducer's hooks and wraps the same
      module in a new ``DistributedDataParallel`` on every rank at the same step (the decision is
      synchronised, so the step is too): frozen parameters leave the buckets and the all-reduced
      bytes shrink. ``find_unused_parameters=True`` would instead keep reducing zero gradients for
      frozen parameters and hide a rank that froze alone. A comm hook counts the bytes each step
      really all-reduces.
"""

from __future__ import annotations

import datetime
import gc
import os
from typing import Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn

from .errors import ConfigError, DistributedError

#: Seconds a collective (and the rendezvous) may wait before failing; ``FROSTLINE_DIST_TIMEOUT``
#: overrides it (the tests use a few seconds so a desynchronised rank fails fast).
DEFAULT_TIMEOUT_S = 1800.0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


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


def all_reduce_values(values: Iterable[float], op: str = "sum", device: torch.device | None = None) -> list[float]:
    """Sum (or max) a few numbers over the ranks; identity in a single process."""
    values = [float(v) for v in values]
    if not is_distributed():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device or _collective_device())
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
    import hashlib

    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    mine = torch.frombuffer(bytearray(h.digest()), dtype=torch.uint8)
    if not is_distributed():
        return [mine.numpy().tobytes().hex()]
    dev = device or _collective_device()
    gathered = [torch.empty(32, dtype=torch.uint8, device=dev) for _ in range(world_size())]
    dist.all_gather(gathered, mine.to(dev))
    return [g.cpu().numpy().tobytes().hex() for g in gathered]


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# -- decisions -------------------------------------------------------------------------------
class DecisionSync:
    """The Freezer's synchronisation strategy: rank 0's decision is every rank's decision.

    ``agree`` is called by :meth:`frostline.Freezer.step` on every rank each step with the
    policy's wanted set; ``applied`` after the agreed units were frozen (it calls ``on_freeze``,
    e.g. :meth:`ReplicatedModel.rebuild`). One all-reduce of ``2 * units + 1`` integers per step.
    """

    def __init__(self, device: torch.device | None = None, on_freeze: Callable[[list[int]], None] | None = None):
        self.device = device
        self.on_freeze = on_freeze

    def agree(self, wanted: set[int], frozen: set[int], num_units: int, step: int) -> set[int]:
        if not is_distributed():
            return set(wanted)
        me, world = rank(), world_size()
        buf = torch.zeros(2 * num_units + 1, dtype=torch.int64)
        if me == 0:
            buf[[i for i in wanted if 0 <= i < num_units]] = 1
            buf[-1] = step
        buf[[num_units + i for i in frozen]] = 1
        buf = buf.to(self.device or _collective_device())
        dist.all_reduce(buf)
        buf = buf.cpu()
        if int(buf[-1]) != step:
            raise DistributedError(
                f"rank {me} is at freezer step {step} but rank 0 at {int(buf[-1])}: the ranks ran different "
                "numbers of steps (resumed from different checkpoints?); restart all ranks from one run folder")
        counts = buf[num_units:-1]
        split = [i for i in range(num_units) if 0 < int(counts[i]) < world]
        if split:
            raise DistributedError(
                f"units {split} are frozen on only some ranks (e.g. freezer.freeze() called on one rank): "
                "freeze through freezer.step() so every rank applies rank 0's decision")
        return {i for i in range(num_units) if int(buf[i])}

    def applied(self, newly: list[int]) -> None:
        if self.on_freeze is not None:
            self.on_freeze(newly)


# -- the DDP wrapper -------------------------------------------------------------------------
class CommCounter:
    """Bytes handed to all-reduce by DDP's buckets (a comm hook's state)."""

    def __init__(self) -> None:
        self.bytes = 0

    def take(self) -> int:
        b, self.bytes = self.bytes, 0
        return b


def _counting_allreduce(counter, bucket):
    """DDP's default averaging all-reduce, counting the bucket's bytes first. (No annotations:
    DDP checks them, and this module's postponed annotations would be strings.)"""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    buffer = bucket.buffer()
    counter.bytes += buffer.numel() * buffer.element_size()
    return allreduce_hook(dist.group.WORLD, bucket)


class ReplicatedModel:
    """``DistributedDataParallel`` over the trainable parameters of ``module``, remade by
    :meth:`rebuild` after a freeze. Call it like the module. In a single process it is the
    module itself (no wrapper, no communication)."""

    def __init__(self, module: nn.Module, device: torch.device):
        self.module = module
        self.device = device
        self.counter = CommCounter()
        self.rebuilds = 0
        self._ddp: nn.Module | None = None
        self._wrap()

    def _wrap(self) -> None:
        if not is_distributed() or not any(p.requires_grad for p in self.module.parameters()):
            self._ddp = None  # nothing to reduce: all frozen, or one process
            return
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(
            self.module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=False)
        ddp.register_comm_hook(self.counter, _counting_allreduce)
        self._ddp = ddp

    def rebuild(self, newly: list[int] | None = None) -> None:
        """A new reducer over the parameters that still require grad (same step on every rank)."""
        old, self._ddp = self._ddp, None
        if old is not None:
            old.reducer._remove_autograd_hooks()  # the old reducer must never see another gradient
            del old
        self._wrap()
        self.rebuilds += 1

    @property
    def reduced_param_bytes(self) -> int:
        """Gradient bytes the current reducer is built to all-reduce each step."""
        if self._ddp is None:
            return 0
        return sum(p.numel() * p.element_size() for p in self.module.parameters() if p.requires_grad)

    def __call__(self, *args, **kwargs):
        return (self._ddp if self._ddp is not None else self.module)(*args, **kwargs)
