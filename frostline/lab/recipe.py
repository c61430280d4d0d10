"""The reference training loop behind ``frostline train``: readable top to bottom.

One run = one model trained on one dataset with one freezing method. It writes, under ``out``:
``config.json``, ``metrics.jsonl`` (one row per log step and per epoch), ``summary.json`` and
``timeline.png``. A run that fails part-way still leaves its metrics and a summary marked
``"status": "failed"``.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.data import default_collate

from ..exploit.cache import DTYPES, ActivationCache, CachedPrefixModel, is_deterministic
from .checkpoint import load_checkpoint, save_checkpoint
from ..exploit import distributed
from . import launch
from ..exploit.cost import estimate_speedup, measure_costs
from .data import TEXT_DATASETS, AugmentedDataset, load_dataset
from ..atomic import atomic_write_json
from ..errors import CheckpointError, ConfigError
from ..freezer import Freezer
from .zoo import create_model
from .pretrained import TEXT_MODELS
from ..policies import create_policy, list_policies
from ..units import freeze_units


@dataclass
class TrainConfig:
    """Everything one run depends on; the CLI maps its flags onto these fields one-to-one."""

    model: str = "resnet"
    dataset: str = "fashion-mnist"
    method: str = "freezeout"
    epochs: float = 5
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "cosine"
    seed: int = 0
    train_subset: int | None = None
    val_size: int | None = None  # None: 5,000 images (400 reviews for fine-foods)
    test_subset: int | None = None
    max_length: int = 128  # token sequence length (text datasets only)
    width: int | None = None
    depth: int | None = None
    device: str = "auto"
    threads: int | None = None
    out: str = "runs/latest"
    log_every: int = 20
    checkpoint_every: int = 200
    resume: str | None = None
    progress: bool = True
    augment: bool = False
    fixed_augmentation: bool = False
    cache: str = "auto"
    cache_dtype: str = "float32"
    cache_memory_mb: int = 4096
    # method hyperparameters (each method reads its own)
    t_0: float = 0.8
    schedule: str = "cubic"
    scale_lr: bool = True
    const_time: bool = False
    freeze_start: float = 0.5
    freeze_level: float = 1.0
    percentile: float = 50.0
    intervals_per_epoch: int = 4
    # torch.compile per freeze unit
    compile: bool = False
    compile_backend: str = "inductor"
    stages_per_epoch: int | None = None
    prefix_only: bool = False
    reference: str | None = None
    probe_size: int = 256
    cka_window: int = 3
    cka_epsilon: float = 1e-3
    cka_floor: float = 0.9
    predictor: str | None = None
    history_window: int = 30
    tailor_size: int = 1024
    snapshots_per_epoch: int = 30


#: Which config fields each method takes, by the policy's argument name.
METHOD_ARGS = {
    "none": {},
    "linear": {"freeze_start": "freeze_start", "freeze_level": "freeze_level"},
    "freezeout": {"t_0": "t_0", "schedule": "schedule", "scale_lr": "scale_lr"},
    "autofreeze": {"percentile": "percentile", "intervals_per_epoch": "intervals_per_epoch"},
    "cka-oracle": {"stages_per_epoch": "stages_per_epoch", "window": "cka_window", "epsilon": "cka_epsilon",
                   "floor": "cka_floor", "prefix_only": "prefix_only"},
    "smartfrz": {"predictor": "predictor", "window": "history_window", "tailor_size": "tailor_size",
                 "snapshots_per_epoch": "snapshots_per_epoch", "stages_per_epoch": "stages_per_epoch",
                 "prefix_only": "prefix_only", "seed": "seed"},
}
#: Methods that decide at stages and need the epoch length.
STAGED = ("autofreeze", "cka-oracle", "smartfrz")
OPTIMIZERS = ("sgd", "adamw")
CACHE_MODES = ("auto", "memory", "disk", "off")
LR_SCHEDULES = ("cosine", "constant")


def validate(cfg: TrainConfig) -> None:
    """Reject bad settings before any data is loaded, with a message saying what to use."""
    if cfg.method not in list_policies():
        raise ConfigError(f"unknown method {cfg.method!r}; choose one of {list_policies()}")
    if not (isinstance(cfg.epochs, (int, float)) and cfg.epochs > 0):
        raise ConfigError(f"epochs must be > 0, got {cfg.epochs}")
    if cfg.batch_size <= 0:
        raise ConfigError(f"batch_size must be > 0, got {cfg.batch_size}")
    if not cfg.lr > 0:
        raise ConfigError(f"lr must be > 0, got {cfg.lr}")
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; choose one of {list(OPTIMIZERS)}")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"unknown lr schedule {cfg.lr_schedule!r}; choose one of {list(LR_SCHEDULES)}")
    if cfg.cache not in CACHE_MODES:
        raise ConfigError(f"unknown cache mode {cfg.cache!r}; choose one of {list(CACHE_MODES)}")
    if cfg.cache_dtype not in DTYPES:
        raise ConfigError(f"unknown cache dtype {cfg.cache_dtype!r}; choose one of {list(DTYPES)}")
    if cfg.cache_memory_mb < 0:
        raise ConfigError(f"cache_memory_mb must be >= 0, got {cfg.cache_memory_mb}")
    if (cfg.model in TEXT_MODELS) != (cfg.dataset in TEXT_DATASETS):
        kind = "text" if cfg.dataset in TEXT_DATASETS else "image"
        raise ConfigError(f"model {cfg.model!r} does not fit the {kind} dataset {cfg.dataset!r}: text models "
                          f"({', '.join(TEXT_MODELS)}) go with {', '.join(TEXT_DATASETS)}, the others with image datasets")
    if cfg.augment and cfg.dataset in TEXT_DATASETS:
        raise ConfigError(f"augment flips and shifts images; {cfg.dataset!r} is a text dataset: drop --augment")
    if cfg.fixed_augmentation and not cfg.augment:
        raise ConfigError("fixed_augmentation only applies with augment: add --augment")
    if cfg.checkpoint_every < 0:
        raise ConfigError(f"checkpoint_every must be >= 0 (0: only at freeze events and epoch ends), got {cfg.checkpoint_every}")
    if cfg.log_every <= 0:
        raise ConfigError(f"log_every must be > 0, got {cfg.log_every}")
    if cfg.const_time and cfg.method == "none":
        raise ConfigError("const_time lengthens a freezing run to the baseline's compute; it needs a freezing method")
    if cfg.const_time and make_policy(cfg).requires:
        raise ConfigError("const_time needs a schedule-driven method (linear, freezeout): this one decides "
                          "from training signals, so its compute cannot be planned")
    if cfg.compile:
        from ..exploit.compiling import check_backend

        check_backend(cfg.compile_backend)
    if cfg.method == "cka-oracle" and not cfg.reference:
        raise ConfigError("cka-oracle compares with a finished run: pass --reference RUN_DIR "
                          "(the --out folder of a finished `frostline train` of the same model)")
    if cfg.probe_size < 4:
        raise ConfigError(f"probe_size must be >= 4 samples, got {cfg.probe_size}")
    make_policy(cfg)  # checks the method's own hyperparameters


def make_policy(cfg: TrainConfig, steps_per_epoch: int | None = None, **extra):
    kwargs = {arg: getattr(cfg, field) for arg, field in METHOD_ARGS.get(cfg.method, {}).items()}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}  # None: the method's own default
    kwargs.update(extra)
    if cfg.method in STAGED:
        # validate() runs before the data is loaded; train() passes the real epoch length
        kwargs["steps_per_epoch"] = steps_per_epoch if steps_per_epoch is not None else 10**9
    return create_policy(cfg.method, **kwargs)


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


def _progress_bar(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=not enabled, dynamic_ncols=True, file=sys.stderr)


class _NoLog:
    """What ranks other than 0 write: nothing."""

    def write(self, row: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class _CachedForward(nn.Module):
    """The cached model as a module (``forward(indices, x)``), so DDP can wrap it; its
    parameters are the model's."""

    def __init__(self, cached: CachedPrefixModel):
        super().__init__()
        self.model = cached.model
        self.cached = cached

    def forward(self, indices: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.cached(indices, x)


def train(cfg: TrainConfig, policy=None) -> dict[str, Any]:
    """Run one training and return its summary (also written to ``out/summary.json``).
    With ``cfg.resume`` set to a run folder, continue that run from its last good checkpoint
    with the settings it was started with. ``policy`` replaces the one ``cfg.method`` names (for
    tools that observe a run through a policy, like ``frostline predictor collect``). Launched by
    ``torchrun`` with several processes, it joins their process group (and leaves it at the end);
    see :mod:`frostline.lab.launch`."""
    owns_group = launch.launched_by_torchrun() and not distributed.is_distributed()
    clean = False
    try:
        summary = _train(cfg, policy)
        clean = True
        return summary
    finally:
        if owns_group:
            launch.shutdown(clean)


def _train(cfg: TrainConfig, policy=None) -> dict[str, Any]:
    checkpoint = None
    if cfg.resume:
        cfg = _resumed_config(cfg)
        checkpoint = load_checkpoint(cfg.out)  # every rank reads the same file rank 0 wrote
    validate(cfg)
    device = launch.init_from_env(cfg.device) or pick_device(cfg.device)
    world, main = distributed.world_size(), launch.is_main()
    shard = (distributed.rank(), world) if world > 1 else None
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if checkpoint is None and main:
        atomic_write_json(out / "config.json", asdict(cfg))

    data = load_dataset(cfg.dataset, val_size=cfg.val_size, train_subset=cfg.train_subset,
                        test_subset=cfg.test_subset, seed=cfg.seed, max_length=cfg.max_length)
    model = create_model(cfg.model, num_classes=data.num_classes, in_channels=data.in_channels,
                         image_size=data.image_size, width=cfg.width, depth=cfg.depth).to(device)

    train_set = data.train
    if cfg.augment:
        train_set = AugmentedDataset(data.train, flip=data.name != "mnist", fixed=cfg.fixed_augmentation, seed=cfg.seed)

    # Units and their costs, from one real batch.
    _, x0, y0 = next(iterate_batches(data.train, cfg.batch_size, shuffle=False))
    x0, y0 = x0.to(device), y0.to(device)
    units = freeze_units(model, example_input=x0)
    cost = measure_costs(model, units, x0, y0)
    launch.check_global_batches(len(train_set), cfg.batch_size, world)
    if cfg.compile:  # after the FLOP count, which needs the eager modules
        from ..exploit.compiling import compile_stats, compile_units, eager

        compiled_modules = compile_units(units, cfg.compile_backend)
        compile_base = compile_stats()  # dynamo's counters are process-wide: report this run's share

    steps_per_epoch = math.ceil(len(data.train) / cfg.batch_size)
    if policy is None:
        policy = make_policy(cfg, steps_per_epoch, **_signal_sources(cfg, model, data.train, device))
    total_steps = max(1, round(cfg.epochs * steps_per_epoch))
    planned = None
    if cfg.const_time:
        # Lengthen training until the schedule's predicted compute equals the baseline's.
        probe = make_policy(cfg, steps_per_epoch)
        probe.bind([u.name for u in units])
        planned = estimate_speedup(cost, _planned_freeze_times(probe, len(units)))
        total_steps = max(1, round(total_steps / planned["cost_fraction"]))

    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    else:
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sync = distributed.DecisionSync(device) if world > 1 else None
    freezer = Freezer(model, optimizer, policy, total_steps, units=[u.module_names for u in units], sync=sync)
    cached = _make_cache(cfg, model, freezer, train_set, out)
    scheduler = None
    if cfg.lr_schedule == "cosine" and not policy.scales_lr:  # FreezeOut brings its own schedule
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))

    loop = {"step": 0, "epoch": 0, "batch": 0, "train_time": 0.0, "train_flops": 0, "full_flops": 0,
            "running": 0.0, "seen": 0}
    if checkpoint is not None:
        # the frozen set and param-group layout first, then the optimizer state that matches them
        model.load_state_dict(checkpoint["model"])
        freezer.load_state_dict(checkpoint["freezer"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if device.type == "cuda" and checkpoint["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], device)
        loop = dict(checkpoint["loop"])

    # DDP over what is trainable now (after a resume: what the checkpoint left trainable), rebuilt
    # by the Freezer's sync at every freeze; in one process this is the module itself.
    net = distributed.ReplicatedModel(_CachedForward(cached) if cached else model, device)
    if sync is not None:
        sync.on_freeze = net.rebuild
    pending_loss = [0.0]  # this rank's loss sum not yet in loop["running"] (which is all ranks')
    comm_history: list[dict[str, int]] = []  # all-reduced bytes per step, one entry per change
    compile_history: list[dict[str, int]] = []  # graphs compiled so far, one entry per change
    slowest_train_time = None
    digests = None
    cache_unit_runs = None  # the cache's fill forwards summed over ranks, once a distributed run finished

    def score(dataset) -> float:
        if not cfg.compile:
            return evaluate(model, dataset, cfg.batch_size, device)
        with eager():  # --compile is for the training step; evaluation adds no graph variants
            return evaluate(model, dataset, cfg.batch_size, device)

    def flush_loss():
        loop["running"] += launch.all_reduce_values(pending_loss, device=device)[0]
        pending_loss[0] = 0.0

    def save():
        flush_loss()
        if not main:
            return
        save_checkpoint(out, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "freezer": freezer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None, "loop": dict(loop),
            "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
        })

    log = RunLog(out, loop["step"] if checkpoint is not None else None, loop["epoch"]) if main else _NoLog()
    summary: dict[str, Any] = {
        "status": "running", "method": policy.name if policy.name != "none" else cfg.method, "model": cfg.model, "dataset": data.name,
        "epochs": cfg.epochs, "seed": cfg.seed, "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch, "train_samples": len(data.train),
        "units": [u.name for u in units], "policy": policy.config(), "device": str(device),
        "full_step_flops": cost.full_step_flops, "const_time_plan": planned,
        "distributed": None, "compile": None,
    }
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    bar = _progress_bar(total_steps, cfg.progress and main, f"{cfg.method} {cfg.model}")
    bar.update(loop["step"])
    try:
        while loop["step"] < total_steps:
            t_epoch, seen_at_start = time.perf_counter(), loop["seen"]
            batches = iterate_batches(train_set, cfg.batch_size, shuffle=True,
                                      seed=cfg.seed * 100_003 + loop["epoch"], skip=loop["batch"], shard=shard)
            for idx, x, y in batches:
                if loop["step"] >= total_steps:
                    break
                n_global = min(cfg.batch_size, len(train_set) - loop["batch"] * cfg.batch_size)
                scale = n_global / cost.batch_size
                boundary = cached.boundary() if cached else 0
                loop["train_flops"] += round(cost.step_flops(freezer.frozen, cached_prefix=boundary) * scale)
                loop["full_flops"] += round(cost.full_step_flops * scale)
                t0 = time.perf_counter()
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                loss = loss_fn(net(idx, x) if cached else net(x), y)
                optimizer.zero_grad(set_to_none=True)
                if world > 1:  # DDP averages gradients: weight so the average is the global batch's mean
                    (loss * launch.loss_weight(len(y), n_global, world)).backward()
                else:
                    loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                newly_frozen = freezer.step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                loop["train_time"] += time.perf_counter() - t0
                loop["step"] += 1
                loop["batch"] += 1
                pending_loss[0] += loss.item() * len(y)
                if world == 1:
                    flush_loss()
                loop["seen"] += n_global
                step = loop["step"]
                extra = {}
                if world > 1:
                    extra["allreduce_bytes"] = net.counter.take()
                    if not comm_history or comm_history[-1]["bytes"] != extra["allreduce_bytes"]:
                        comm_history.append({"step": step, "bytes": extra["allreduce_bytes"]})
                if cfg.compile:
                    extra["compiled_graphs"] = compile_stats()["graphs"] - compile_base["graphs"]
                    if not compile_history or compile_history[-1]["graphs"] != extra["compiled_graphs"]:
                        compile_history.append({"step": step, "graphs": extra["compiled_graphs"]})
                bar.update(1)
                if step % cfg.log_every == 0 or step == total_steps:
                    flush_loss()
                    rate = (loop["seen"] - seen_at_start) / max(time.perf_counter() - t_epoch, 1e-9)
                    mean_loss = loop["running"] / loop["seen"]
                    bar.set_postfix(loss=f"{mean_loss:.3f}", sps=f"{rate:.0f}", frozen=f"{len(freezer.frozen)}/{len(units)}")
                    log.write({"kind": "step", "step": step, "epoch": loop["epoch"], "fraction": step / total_steps,
                               "loss": mean_loss, "lr": optimizer.param_groups[-1]["lr"],
                               "frozen": len(freezer.frozen), "samples_per_s": rate, "train_time_s": loop["train_time"],
                               "memory_mb": memory_now_mb(device),
                               "saved_activations_mb": cost.saved_bytes(freezer.frozen) * scale / 2**20, **extra})
                if newly_frozen or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                    save()
            flush_loss()
            val_acc = score(data.val) if len(data.val) else None
            log.write({"kind": "epoch", "epoch": loop["epoch"], "step": loop["step"],
                       "train_loss": loop["running"] / max(loop["seen"], 1), "val_accuracy": val_acc,
                       "frozen": sorted(freezer.frozen), "train_time_s": loop["train_time"]})
            loop.update(epoch=loop["epoch"] + 1, batch=0, running=0.0, seen=0)
            save()
        bar.close()
        # the run took as long as its slowest rank
        slowest_train_time = launch.all_reduce_values([loop["train_time"]], "max", device=device)[0]
        if cached and world > 1:  # each rank filled its own cache: its fill forwards are part of the cost
            names = list(range(len(units)))
            runs = launch.all_reduce_values([cached.cache.unit_runs.get(u, 0) for u in names], device=device)
            cache_unit_runs = {u: int(n) for u, n in zip(names, runs) if n}
        if world > 1:  # every rank must end with the same model (rank 0's buffers, as evaluated and saved)
            launch.broadcast_buffers(model)
            digests = launch.state_digests(model, device)
            if len(set(digests)) != 1:
                raise distributed.DistributedError(
                    f"ranks finished with different models (state SHA-256 per rank: {digests}); this is a bug, please report it")
        summary.update(
            status="finished",
            test_accuracy=score(data.test),
            val_accuracy=score(data.val) if len(data.val) else None,
        )
        if main:
            torch.save(model.state_dict(), out / "model.pt")
    except BaseException as exc:
        bar.close()
        summary.update(status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                       error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        mem, mem_source = peak_memory_mb(device)
        if cached:
            # forwards the cache ran to fill or extend itself are part of the training cost
            runs = cache_unit_runs if cache_unit_runs is not None else cached.cache.unit_runs
            loop["train_flops"] += sum(round(n * cost.units[u].forward_flops / cost.batch_size) for u, n in runs.items())
            summary["cache"] = {**cached.cache.stats, "dtype": cfg.cache_dtype,
                                "peak_memory_mb": cached.cache.peak_memory_bytes / 2**20,
                                "peak_disk_mb": cached.cache.peak_disk_bytes / 2**20}
        else:
            summary["cache"] = None
        if world > 1:
            summary["distributed"] = {
                "world_size": world, "backend": torch.distributed.get_backend(),
                "global_batch_size": cfg.batch_size, "per_rank_batch_size": math.ceil(cfg.batch_size / world),
                "train_time_s_rank0": loop["train_time"], "ddp_rebuilds": net.rebuilds, "state_sha256_per_rank": digests,
                "allreduce_bytes_per_step": comm_history,
                "allreduce_bytes_first": comm_history[0]["bytes"] if comm_history else None,
                "allreduce_bytes_last": comm_history[-1]["bytes"] if comm_history else None,
            }
        if cfg.compile:
            before = [h["graphs"] for h in compile_history if freezer.timeline and h["step"] <= freezer.timeline[0].step]
            summary["compile"] = {
                "backend": cfg.compile_backend, "modules_compiled": compiled_modules,
                **{k: v - compile_base[k] for k, v in compile_stats().items()},
                "graphs_before_first_freeze": before[-1] if before else None, "graphs_per_step": compile_history,
            }
        summary.update(
            steps_done=loop["step"], train_time_s=slowest_train_time if slowest_train_time is not None else loop["train_time"],
            train_flops=loop["train_flops"],
            full_train_flops=loop["full_flops"],
            flops_saved=1 - loop["train_flops"] / loop["full_flops"] if loop["full_flops"] else 0.0,
            resumed_from_step=checkpoint["loop"]["step"] if checkpoint is not None else None,
            predicted_saving=estimate_speedup(cost, _freeze_times(freezer), cached=cached is not None)["saving"],
            peak_memory_mb=mem, peak_memory_source=mem_source,
            saved_activations_mb_full=cost.saved_bytes(()) / 2**20,
            saved_activations_mb_end=cost.saved_bytes(freezer.frozen) / 2**20,
            frozen_at=freezer.frozen_at(),
            decision_time_s=freezer.decision_time_s,
            decision_overhead=freezer.decision_time_s / loop["train_time"] if loop["train_time"] else None,
            timeline=[asdict(e) for e in freezer.timeline],
        )
        log.close()
        if main:
            atomic_write_json(out / "summary.json", summary)
            try:
                from .report import plot_timeline

                plot_timeline(summary, out / "timeline.png")
            except Exception as plot_error:  # a plot must never hide the run's own outcome
                print(f"frostline: could not draw timeline.png: {plot_error}", file=sys.stderr)
    return summary


def _signal_sources(cfg: TrainConfig, model: nn.Module, train_set, device: torch.device) -> dict[str, Any]:
    """What a signal-driven method needs besides its hyperparameters: the reference model and a
    fixed probe batch (seeded, from the un-augmented train split) for the CKA oracle."""
    if cfg.method != "cka-oracle":
        return {}
    from .reference import load_reference

    reference = load_reference(cfg.reference, model, cfg.model)
    return {"reference": reference, "probe": probe_batch(train_set, cfg.probe_size, cfg.seed).to(device)}


def probe_batch(train_set, size: int, seed: int) -> torch.Tensor:
    """``size`` train samples chosen by ``seed`` (the same for every run with that seed)."""
    n = min(size, len(train_set))
    idx = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed + 7919))[:n].sort().values
    if hasattr(train_set, "get_batch"):
        return train_set.get_batch(idx)[0]
    return default_collate([train_set[int(i)] for i in idx])[0]


def _resumed_config(cfg: TrainConfig) -> TrainConfig:
    """The settings a run folder was started with; only how this process runs (progress bar,
    threads) comes from the new command line."""
    path = Path(cfg.resume) / "config.json"
    try:
        saved = json.loads(path.read_text())
        resumed = TrainConfig(**{k: v for k, v in saved.items() if k in config_fields()})
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist: --resume takes the folder of an earlier `frostline train`") from None
    except (json.JSONDecodeError, TypeError) as e:
        raise CheckpointError(f"{path} is unreadable ({e}): start a new run without --resume") from None
    return replace(resumed, out=str(Path(cfg.resume)), resume=str(cfg.resume), progress=cfg.progress, threads=cfg.threads)


def _make_cache(cfg: TrainConfig, model: nn.Module, freezer: Freezer, train_set, out: Path) -> CachedPrefixModel | None:
    """The activation cache, when asked for and safe; otherwise None, with one line saying why."""
    if cfg.cache == "off" or cfg.method == "none":
        return None
    if not isinstance(model, nn.Sequential):
        print("frostline: warning: activation cache off: the model is not a chain of units", file=sys.stderr)
        return None
    if not is_deterministic(train_set, probe=(0, 1, -1)):
        print("frostline: warning: activation cache off: random augmentation gives a sample a new tensor "
              "every epoch (--fixed-augmentation makes it cacheable, and changes training)", file=sys.stderr)
        return None
    budget = 0 if cfg.cache == "disk" else cfg.cache_memory_mb * 2**20
    rank = distributed.rank()  # under torchrun each rank caches the samples it sees, in its own folder
    directory = out / ("cache" if rank == 0 else f"cache-rank{rank}")
    cache = ActivationCache(len(train_set), memory_budget_bytes=budget, dtype=cfg.cache_dtype, directory=directory)
    return CachedPrefixModel(model, freezer, cache)


def plan(cfg: TrainConfig) -> dict[str, Any]:
    """Before training: when a schedule-driven method (linear, freezeout) would freeze each unit of
    ``cfg.model``, and the compute it would save, from FLOPs measured on one real batch."""
    validate(cfg)
    if cfg.method == "none":
        raise ConfigError("method none freezes nothing: pass --method linear or freezeout")
    policy = make_policy(cfg)
    if policy.requires:
        raise ConfigError(f"{cfg.method} decides from training signals, so its schedule cannot be planned "
                          "before training: run it and read summary.json")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    data = load_dataset(cfg.dataset, val_size=0, train_subset=cfg.batch_size, test_subset=1, seed=cfg.seed,
                        max_length=cfg.max_length)
    model = create_model(cfg.model, num_classes=data.num_classes, in_channels=data.in_channels,
                         image_size=data.image_size, width=cfg.width, depth=cfg.depth)
    _, x, y = next(iterate_batches(data.train, cfg.batch_size, shuffle=False))
    units = freeze_units(model, example_input=x)
    cost = measure_costs(model, units, x, y)
    policy.bind([u.name for u in units])
    times = _planned_freeze_times(policy, len(units))
    return {
        "units": [u.name for u in units], "freeze_times": times,
        "saving": estimate_speedup(cost, times)["saving"],
        "saving_cached": estimate_speedup(cost, times, cached=True)["saving"],
        "saving_backward_equals_forward": estimate_speedup(cost, times, backward_equals_forward=True)["saving"],
    }


def _freeze_times(freezer: Freezer) -> list[float | None]:
    return list(freezer.frozen_at().values())


def _planned_freeze_times(policy, num_units: int, resolution: int = 2000) -> list[float | None]:
    """When a schedule-driven policy would freeze each unit, found by stepping its clock."""
    from ..policies import Progress

    times: list[float | None] = [None] * num_units
    for s in range(resolution + 1):
        for i in policy.decide(Progress(s, resolution)):
            if i < num_units - 1 and times[i] is None:
                times[i] = s / resolution
    return times


def config_fields() -> list[str]:
    return [f.name for f in fields(TrainConfig)]
