"""The reference training loop behind ``frostline train``, as a recipe (in the spirit of nanoGPT
and torchtune): set up, then epochs of steps, evaluation, checkpoints, and a summary at the end,
each a short named step below, read top to bottom.

One run = one model trained on one dataset with one freezing method. It writes, under ``out``:
``config.json``, ``metrics.jsonl`` (one row per log step and per epoch), ``summary.json`` and
``timeline.png``. A run that fails part-way still leaves its metrics and a summary marked
``"status": "failed"``. Settings are :class:`frostline.lab.config.TrainConfig`; the helpers
shared with other tools (batches, device, evaluation, the run log) are :mod:`frostline.lab.loop`.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import atomic_write_json
from ..errors import CheckpointError, ConfigError, DistributedError, FrostlineError
from ..exploit import distributed
from . import launch
from ..exploit.cache import ActivationCache, CachedPrefixModel, is_deterministic
from ..exploit.payoff import RULE_VERSION, payoff_for, planned_freeze_times
from ..exploit.cost import CostModel, estimate_speedup, measure_costs
from ..exploit.timing import StepTimeModel, profile_step_times
from ..freezer import Freezer
from ..units import FreezeUnit, freeze_units
from .checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from .config import RunContext, TrainConfig, make_policy, resumed_config, validate
from .data import AugmentedDataset, load_dataset
from .fullspeed import probe_full_speed
from .loop import NoLog, RunLog, evaluate, iterate_batches, keep_aside, memory_now_mb, peak_memory_mb, pick_device, progress_bar
from .machine import this_machine
from .zoo import create_model


@dataclass
class LoopState:
    """Where the loop stands; exactly what a checkpoint stores under ``loop``."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch: int = 0  # batches done in this epoch
    train_time: float = 0.0  # seconds spent in training steps (evaluation excluded)
    cpu_time: float = 0.0  # process CPU seconds (all threads) in those same steps
    train_flops: int = 0  # FLOPs spent, with freezing and the cache
    full_flops: int = 0  # FLOPs the same steps cost without freezing
    running: float = 0.0  # loss summed over this epoch's samples, all ranks
    seen: int = 0  # samples of this epoch, all ranks


class _CompileWatch:
    """``--compile``: every unit compiled on its own, and what dynamo compiled during this run
    (its counters are process-wide, so the run reports its own share)."""

    def __init__(self, units: list[FreezeUnit], backend: str):
        from ..exploit.compiling import compile_stats, compile_units

        self.backend = backend
        self.modules = compile_units(units, backend)
        self.base = compile_stats()
        self.history: list[dict[str, int]] = []  # graphs compiled so far, one entry per change

    def graphs(self) -> int:
        from ..exploit.compiling import compile_stats

        return compile_stats()["graphs"] - self.base["graphs"]

    def summary(self, freezer: Freezer) -> dict[str, Any]:
        from ..exploit.compiling import compile_stats

        first = freezer.timeline[0].step if freezer.timeline else None
        before = [h["graphs"] for h in self.history if first is not None and h["step"] <= first]
        return {"backend": self.backend, "modules_compiled": self.modules,
                **{k: v - self.base[k] for k, v in compile_stats().items()},
                "graphs_before_first_freeze": before[-1] if before else None, "graphs_per_step": self.history}


@dataclass
class Run:
    """One training, set up: what every step of the recipe reads and updates."""

    cfg: TrainConfig
    out: Path
    device: torch.device
    data: Any  # the dataset splits (``load_dataset``)
    train_set: Any  # what training iterates: the train split, augmented if asked
    model: nn.Module
    units: list[FreezeUnit]
    cost: CostModel
    total_steps: int
    optimizer: torch.optim.Optimizer
    scheduler: Any
    freezer: Freezer
    cached: CachedPrefixModel | None
    net: Any  # what a step calls: the model, or the cached model, replicated under torchrun
    compile: _CompileWatch | None
    state: LoopState
    resumed_from: int | None
    summary: dict[str, Any] = field(default_factory=dict)
    log: Any = None
    bar: Any = None
    loss_fn: nn.Module = field(default_factory=nn.CrossEntropyLoss)
    pending_loss: float = 0.0  # this rank's loss sum not yet in state.running (which is all ranks')
    epoch_start: tuple[float, int] = (0.0, 0)  # clock and samples seen when this epoch's pass began
    comm_history: list[dict[str, int]] = field(default_factory=list)  # all-reduced bytes, one entry per change
    slowest_train_time: float | None = None  # over ranks, once finished
    digests: list[str] | None = None  # model state hash per rank, once finished
    cache_unit_runs: dict[int, int] | None = None  # cache fill forwards over ranks, once finished

    @property
    def world(self) -> int:
        return distributed.world_size()

    @property
    def main(self) -> bool:
        return launch.is_main()


def train(cfg: TrainConfig, policy=None) -> dict[str, Any]:
    """Run one training and return its summary (also written to ``out/summary.json``).
    With ``cfg.resume`` set to a run folder, continue that run from its last good checkpoint
    with the settings it was started with. ``policy`` replaces the one ``cfg.method`` names (for
    tools that observe a run through a policy, like ``frostline predictor collect``). Launched by
    ``torchrun`` with several processes, it joins their process group (and leaves it at the end);
    see :mod:`frostline.exploit.distributed`."""
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
        cfg = resumed_config(cfg)
        finished = _finished_summary(Path(cfg.out))
        if finished is not None:  # evaluating it again would only rewrite its results
            warnings.warn(f"frostline: {cfg.out} holds a finished run: there is nothing to resume, its results are as "
                          "they were", stacklevel=2)
            return finished
        checkpoint = load_checkpoint(cfg.out)  # every rank reads the same file rank 0 wrote
    validate(cfg)
    made = [d for d in (Path(cfg.out), *Path(cfg.out).parents) if not d.exists()]  # the folders set_up makes
    try:
        run = set_up(cfg, policy, checkpoint)
    except BaseException:
        for folder in made:  # a run that could not start leaves no empty folder behind (rmdir: only if empty)
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    run.bar = progress_bar(run.total_steps, cfg.progress and run.main, f"{cfg.method} {cfg.model}")
    run.bar.update(run.state.step)
    try:
        # An epoch whose steps are all done but whose end (validation row, checkpoint) is not yet
        # (state.batch > 0: resumed from a checkpoint written at its last step) still has to end,
        # or its epoch row, which the RunLog dropped as written after that checkpoint, is lost.
        while run.state.step < run.total_steps or run.state.batch > 0:
            train_epoch(run)
        finish(run)
    except BaseException as exc:
        run.bar.close()
        run.summary.update(status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                           error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        summarise(run)
    return run.summary


# -- set up ---------------------------------------------------------------------------------------
def _finished_summary(out: Path) -> dict[str, Any] | None:
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and summary.get("status") == "finished" else None


#: what marks a folder as holding a run: a new run there keeps it aside instead of writing over it
_RUN_FILES = ("summary.json", CHECKPOINT, "config.json")


def _keep_earlier_run(out: Path) -> None:
    """A new run in a folder that holds an earlier one (finished, or cut off with its checkpoint)
    moves that run to the first free ``<out>.earlier[-N]`` beside it and says so: starting afresh
    must never lose a finished result or a checkpoint that ``--resume`` could go on from."""
    if not any((out / name).exists() for name in _RUN_FILES):
        return
    if out.resolve() in (Path.cwd().resolve(), *Path.cwd().resolve().parents):
        raise ConfigError(f"--out {out} holds an earlier run and is the current folder (or holds it): pass another "
                          "--out for the new run, or --resume to continue that one")
    earlier = _finished_summary(out)
    what = (f"a finished run ({earlier['test_accuracy']:.2f}% test accuracy)" if earlier and "test_accuracy" in earlier
            else "a finished run" if earlier else "an unfinished run")
    keep_aside(out, what, "" if earlier else "; `frostline train --resume {target}` goes on with it")
    out.mkdir()


def set_up(cfg: TrainConfig, policy=None, checkpoint: dict[str, Any] | None = None) -> Run:
    """Everything a run needs. The order keeps runs repeatable: the model (and the CKA reference)
    draw from torch's generator right after it is seeded, and a checkpoint restores it last."""
    device = _environment(cfg)
    data, train_set, model = _data_and_model(cfg, device)
    if checkpoint is None:  # a resumed run goes on as it was started
        _check_batch_fits(cfg, len(data.train))
    units, cost = _units_and_costs(cfg, model, data.train, len(train_set), device)
    compiled = _CompileWatch(units, cfg.compile_backend) if cfg.compile else None  # after the FLOP count
    steps_per_epoch = _steps_per_epoch(cfg, len(data.train))
    if policy is None:
        policy = make_policy(cfg, RunContext(steps_per_epoch, model, data.train, device))
    total_steps, planned = _schedule(cfg, units, cost, steps_per_epoch)
    optimizer = _optimizer(cfg, model)
    scheduler = _lr_scheduler(cfg, optimizer, policy, total_steps)  # on the optimizer as made, before any split
    sync = distributed.DecisionSync(device) if distributed.world_size() > 1 else None
    freezer = Freezer(model, optimizer, policy, total_steps, units=units, sync=sync,
                      cooldown=cfg.cooldown)
    if scheduler is not None and freezer.per_unit_lr:  # a cooling unit's lr = the cosine's lr x its ramp
        freezer.attach_scheduler(scheduler)
    cached = _make_cache(cfg, model, freezer, train_set, Path(cfg.out), steps_per_epoch, total_steps)
    state = _restore(cfg, checkpoint, model, freezer, optimizer, scheduler, device) if checkpoint else LoopState()
    # DDP over what is trainable now (after a resume: what the checkpoint left trainable), rebuilt
    # by the Freezer's sync at every freeze; in one process this is the module itself.
    net = distributed.ReplicatedModel(_CachedForward(cached) if cached else model, device)
    if sync is not None:
        sync.on_freeze = net.rebuild
    run = Run(cfg, Path(cfg.out), device, data, train_set, model, units, cost, total_steps, optimizer, scheduler,
              freezer, cached, net, compiled, state, resumed_from=checkpoint["loop"]["step"] if checkpoint else None)
    if checkpoint is None and run.main:  # only now: settings that fail while the run is set up leave the folder as it was
        _keep_earlier_run(run.out)
        atomic_write_json(run.out / "config.json", asdict(cfg))
    run.log = RunLog(run.out, state.step if checkpoint else None, state.epoch) if run.main else NoLog()
    run.summary = _first_summary(run, policy, steps_per_epoch, planned)
    model.train()
    return run


def _check_batch_fits(cfg: TrainConfig, num_train: int) -> None:
    """A batch larger than the training set is one short step per epoch: said, not refused (every
    dataset size must run with the defaults), so a schedule that looks odd is not a surprise."""
    if cfg.batch_size > num_train:
        warnings.warn(f"frostline: --batch-size {cfg.batch_size} is more than the {num_train} training samples (after "
                      f"--val-size and --train-subset): each epoch is one step of {num_train}; pass --batch-size "
                      f"{num_train} or less for batches of the size you meant, or train on more samples", stacklevel=2)


def _environment(cfg: TrainConfig) -> torch.device:
    """The device (joining torchrun's process group when launched by it), threads, the seed, and
    the run folder (its ``config.json`` is written once the run is set up; a resumed run keeps its own)."""
    device = launch.init_from_env(cfg.device) or pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"--out {out} is (or is inside) a file, not a folder: pass a folder for the run") from None
    return device


def _data_and_model(cfg: TrainConfig, device: torch.device):
    data = load_dataset(cfg.dataset, val_size=cfg.val_size, train_subset=cfg.train_subset,
                        test_subset=cfg.test_subset, seed=cfg.seed, max_length=cfg.max_length)
    model = _new_model(cfg, data).to(device)
    train_set = data.train
    if cfg.augment:
        train_set = AugmentedDataset(data.train, flip=data.name != "mnist", fixed=cfg.fixed_augmentation, seed=cfg.seed)
    return data, train_set, model


def _new_model(cfg: TrainConfig, data) -> nn.Module:
    """The run's model as it starts (the full-speed probe builds another one)."""
    return create_model(cfg.model, num_classes=data.num_classes, in_channels=data.in_channels,
                        image_size=data.image_size, width=cfg.width, depth=cfg.depth)


def _units_and_costs(cfg: TrainConfig, model: nn.Module, train_data, num_train: int, device: torch.device):
    """The freeze units (from one traced forward) and their FLOP and memory costs, on one real batch."""
    _, x0, y0 = next(iterate_batches(train_data, cfg.batch_size, shuffle=False))
    x0, y0 = x0.to(device), y0.to(device)
    units = freeze_units(model, example_input=x0, head_units=cfg.head_units)
    cost = measure_costs(model, units, x0, y0)
    launch.check_global_batches(num_train, cfg.batch_size, distributed.world_size())
    return units, cost


def _schedule(cfg: TrainConfig, units: list[FreezeUnit], cost: CostModel, steps_per_epoch: int) -> tuple[int, dict | None]:
    """Total steps; with ``const_time``, lengthened until the schedule's predicted compute equals
    the baseline's (returned with the plan that says so)."""
    total_steps = _run_steps(cfg, steps_per_epoch)
    if not cfg.const_time:
        return total_steps, None
    probe = make_policy(cfg)  # a schedule-driven method (validate() checked): no runtime arguments
    probe.bind([u.name for u in units])
    planned = estimate_speedup(cost, planned_freeze_times(probe, len(units)))
    return max(1, round(total_steps / planned["cost_fraction"])), planned


def _optimizer(cfg: TrainConfig, model: nn.Module | list[nn.Parameter]) -> torch.optim.Optimizer:
    params = [p for p in (model.parameters() if isinstance(model, nn.Module) else model) if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


#: Fractions of training at which the ``step`` schedule cuts the learning rate tenfold: the classic
#: CIFAR schedule of ResNet and VGG papers, in which the rate holds its peak for half of training.
STEP_DROPS = (0.5, 0.75)


def _lr_scheduler(cfg: TrainConfig, optimizer, policy, total_steps: int):
    """Cosine decay or step drops over the run, unless the policy brings its own per-unit schedule
    (FreezeOut). A LambdaLR either way, so the Freezer's per-unit groups and cool-downs follow it."""
    if cfg.lr_schedule == "constant" or policy.scales_lr:
        return None
    if cfg.lr_schedule == "step":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 0.1 ** sum(s >= d * total_steps for d in STEP_DROPS))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))


def _restore(cfg: TrainConfig, checkpoint: dict[str, Any], model, freezer: Freezer, optimizer, scheduler,
             device) -> LoopState:
    """Continue where the checkpoint stopped: the frozen set and param-group layout first, then the
    optimizer state that matches them, then the random generators. A checkpoint that does not fit
    the run its folder's ``config.json`` describes is one clear error (the files are left as they are)."""
    try:
        model.load_state_dict(checkpoint["model"])
        freezer.load_state_dict(checkpoint["freezer"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
    except FrostlineError:
        raise  # already says what is wrong with the checkpoint
    except (RuntimeError, ValueError, KeyError) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        detail = next((line for line in lines if not line.endswith(":")), lines[0] if lines else type(e).__name__)
        raise CheckpointError(
            f"the checkpoint in {cfg.out} does not fit the run its config.json describes ({detail}): was config.json "
            "edited, or the checkpoint copied from another run? Put back the config.json it was written with, or "
            "start a new run without --resume") from None
    torch.set_rng_state(checkpoint["rng"]["torch"])
    if device.type == "cuda" and checkpoint["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], device)
    return LoopState(**checkpoint["loop"])


def _first_summary(run: Run, policy, steps_per_epoch: int, planned: dict | None) -> dict[str, Any]:
    cfg = run.cfg
    return {
        "status": "running", "method": policy.name if policy.name != "none" else cfg.method, "model": cfg.model,
        "dataset": run.data.name, "epochs": cfg.epochs, "seed": cfg.seed, "total_steps": run.total_steps,
        "steps_per_epoch": steps_per_epoch, "train_samples": len(run.data.train),
        "units": [u.name for u in run.units], "policy": policy.config(), "cooldown": cfg.cooldown,
        "device": str(run.device), "machine": this_machine(run.device),
        "full_step_flops": run.cost.full_step_flops, "const_time_plan": planned,
        "distributed": None, "compile": None,
    }


def _make_cache(cfg: TrainConfig, model: nn.Module, freezer: Freezer, train_set, out: Path, steps_per_epoch: int,
                total_steps: int) -> CachedPrefixModel | None:
    """The activation cache, when asked for and safe; otherwise None, with one line saying why.
    A model the cache cannot serve exactly is found at its first cached step: ``--cache auto``
    then warns once and trains on without it, ``--cache memory|disk`` stops with a ConfigError.
    ``--cache auto`` serves a frozen prefix only once its replays repay their copies
    (:mod:`frostline.exploit.payoff`); ``memory|disk`` serve every frozen prefix at once."""
    if cfg.cache == "off" or cfg.method == "none":
        return None
    if not is_deterministic(train_set, probe=(0, 1, -1)):
        print("frostline: warning: activation cache off: random augmentation gives a sample a new tensor "
              "every epoch (--fixed-augmentation makes it cacheable, and changes training)", file=sys.stderr)
        return None
    budget = 0 if cfg.cache == "disk" else cfg.cache_memory_mb * 2**20
    rank = distributed.rank()  # under torchrun each rank caches the samples it sees, in its own folder
    directory = out / ("cache" if rank == 0 else f"cache-rank{rank}")
    cache = ActivationCache(len(train_set), memory_budget_bytes=budget, dtype=cfg.cache_dtype, directory=directory)
    payoff = payoff_for(freezer, len(train_set), steps_per_epoch, total_steps, budget) if cfg.cache == "auto" else None
    return CachedPrefixModel(model, freezer, cache, on_refuse="warn" if cfg.cache == "auto" else "raise", payoff=payoff)


class _CachedForward(nn.Module):
    """The cached model as a module (``forward(indices, x)``), so DDP can wrap it; its
    parameters are the model's."""

    def __init__(self, cached: CachedPrefixModel):
        super().__init__()
        self.model = cached.model
        self.cached = cached

    def forward(self, indices: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.cached(indices, x)


# -- train ----------------------------------------------------------------------------------------
def train_epoch(run: Run) -> None:
    """One pass over the shuffled train set, from where the loop stands (a resumed run skips the
    batches it already did); then validation and a checkpoint."""
    cfg, state = run.cfg, run.state
    run.epoch_start = (time.perf_counter(), state.seen)
    batches = iterate_batches(run.train_set, cfg.batch_size, shuffle=True, seed=cfg.seed * 100_003 + state.epoch,
                              skip=state.batch, shard=(distributed.rank(), run.world) if run.world > 1 else None)
    for idx, x, y in batches:
        if state.step >= run.total_steps:
            break
        n_global = min(cfg.batch_size, len(run.train_set) - state.batch * cfg.batch_size)
        newly_frozen = train_step(run, idx, x, y, n_global)
        _after_step(run, newly_frozen, n_global)
    _flush_loss(run)
    val_acc = _evaluate(run, run.data.val) if len(run.data.val) else None
    run.log.write({"kind": "epoch", "epoch": state.epoch, "step": state.step,
                   "train_loss": state.running / max(state.seen, 1), "val_accuracy": val_acc,
                   "frozen": sorted(run.freezer.frozen), "train_time_s": state.train_time})
    state.epoch, state.batch, state.running, state.seen = state.epoch + 1, 0, 0.0, 0
    write_checkpoint(run)


def train_step(run: Run, idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor, n_global: int) -> list[int]:
    """One optimizer step on this rank's share of a global batch of ``n_global`` samples, then the
    Freezer's decision; returns the units it froze. Only the step itself is timed, by the wall clock
    and by the process's CPU clock (which another process on the machine disturbs less)."""
    state, cost = run.state, run.cost
    scale = n_global / cost.batch_size
    boundary = run.cached.boundary() if run.cached else 0
    state.train_flops += round(cost.step_flops(run.freezer.frozen, cached_prefix=boundary) * scale)
    state.full_flops += round(cost.full_step_flops * scale)
    t0, c0 = time.perf_counter(), time.process_time()
    x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
    loss = run.loss_fn(run.net(idx, x) if run.cached else run.net(x), y)
    run.optimizer.zero_grad(set_to_none=True)
    if run.world > 1:  # DDP averages gradients: weight so the average is the global batch's mean
        (loss * launch.loss_weight(len(y), n_global, run.world)).backward()
    else:
        loss.backward()
    run.optimizer.step()
    if run.scheduler is not None:
        run.scheduler.step()
    newly_frozen = run.freezer.step()
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    state.train_time += time.perf_counter() - t0
    state.cpu_time += time.process_time() - c0
    state.step += 1
    state.batch += 1
    run.pending_loss += loss.item() * len(y)
    if run.world == 1:
        _flush_loss(run)
    state.seen += n_global
    return newly_frozen


def _after_step(run: Run, newly_frozen: list[int], n_global: int) -> None:
    """The progress bar, a metrics row every ``log_every`` steps, and a checkpoint at every freeze
    event and every ``checkpoint_every`` steps."""
    cfg, step = run.cfg, run.state.step
    extra = _step_records(run)
    run.bar.update(1)
    if step % cfg.log_every == 0 or step == run.total_steps:
        _log_step(run, extra, n_global / run.cost.batch_size)
    if newly_frozen or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
        write_checkpoint(run)


def _step_records(run: Run) -> dict[str, int]:
    """Per-step figures that only some runs have: bytes all-reduced (torchrun), graphs compiled."""
    extra = {}
    if run.world > 1:
        extra["allreduce_bytes"] = run.net.counter.take()
        _note_change(run.comm_history, run.state.step, "bytes", extra["allreduce_bytes"])
    if run.compile is not None:
        extra["compiled_graphs"] = run.compile.graphs()
        _note_change(run.compile.history, run.state.step, "graphs", extra["compiled_graphs"])
    return extra


def _note_change(history: list[dict[str, int]], step: int, key: str, value: int) -> None:
    if not history or history[-1][key] != value:
        history.append({"step": step, key: value})


def _log_step(run: Run, extra: dict[str, int], scale: float) -> None:
    state, freezer = run.state, run.freezer
    _flush_loss(run)
    t_epoch, seen_at_start = run.epoch_start
    rate = (state.seen - seen_at_start) / max(time.perf_counter() - t_epoch, 1e-9)
    mean_loss = state.running / state.seen
    run.bar.set_postfix(loss=f"{mean_loss:.3f}", sps=f"{rate:.0f}", frozen=f"{len(freezer.frozen)}/{len(run.units)}")
    run.log.write({"kind": "step", "step": state.step, "epoch": state.epoch, "fraction": state.step / run.total_steps,
                   "loss": mean_loss, "lr": run.optimizer.param_groups[-1]["lr"],
                   "frozen": len(freezer.frozen), "samples_per_s": rate, "train_time_s": state.train_time,
                   "memory_mb": memory_now_mb(run.device),
                   "saved_activations_mb": run.cost.saved_bytes(freezer.frozen) * scale / 2**20, **extra})


def _flush_loss(run: Run) -> None:
    """Add every rank's pending loss to the epoch's running sum (a collective under torchrun)."""
    run.state.running += launch.all_reduce_values([run.pending_loss], device=run.device)[0]
    run.pending_loss = 0.0


def _evaluate(run: Run, dataset) -> float:
    if run.compile is None:
        return evaluate(run.model, dataset, run.cfg.batch_size, run.device)
    from ..exploit.compiling import eager

    with eager():  # --compile is for the training step; evaluation adds no graph variants
        return evaluate(run.model, dataset, run.cfg.batch_size, run.device)


def write_checkpoint(run: Run) -> None:
    """Everything a resumed run needs to continue exactly (rank 0 writes it)."""
    _flush_loss(run)
    if not run.main:
        return
    device = run.device
    save_checkpoint(run.out, {
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(), "freezer": run.freezer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None, "loop": asdict(run.state),
        "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
    })


# -- finish and summarise ---------------------------------------------------------------------------
def finish(run: Run) -> None:
    """After the last step: the ranks agree on the model, then it is tested and kept."""
    run.bar.close()
    run.freezer.close()  # no more backward passes: signal collectors' hooks come off the model
    device = run.device
    # the run took as long as its slowest rank
    run.slowest_train_time = launch.all_reduce_values([run.state.train_time], "max", device=device)[0]
    if run.cached and run.world > 1:  # each rank filled its own cache: its fill forwards are part of the cost
        names = list(range(len(run.units)))
        runs = launch.all_reduce_values([run.cached.cache.unit_runs.get(u, 0) for u in names], device=device)
        run.cache_unit_runs = {u: int(n) for u, n in zip(names, runs) if n}
    if run.world > 1:  # every rank must end with the same model (rank 0's buffers, as evaluated and saved)
        launch.broadcast_buffers(run.model)
        run.digests = launch.state_digests(run.model, device)
        if len(set(run.digests)) != 1:
            raise DistributedError(
                f"ranks finished with different models (state SHA-256 per rank: {run.digests}); this is a bug, please report it")
    run.summary.update(
        status="finished",
        test_accuracy=_evaluate(run, run.data.test),
        val_accuracy=_evaluate(run, run.data.val) if len(run.data.val) else None,
    )
    if run.main:
        torch.save(run.model.state_dict(), run.out / "model.pt")


def summarise(run: Run) -> None:
    """Whatever the outcome: what the run did, into ``summary.json`` (and ``timeline.png``)."""
    mem, mem_source = peak_memory_mb(run.device)
    run.summary["cache"] = _cache_summary(run)
    if run.world > 1:
        run.summary["distributed"] = _distributed_summary(run)
    if run.compile is not None:
        run.summary["compile"] = run.compile.summary(run.freezer)
    state, freezer = run.state, run.freezer
    run.summary.update(
        steps_done=state.step,
        train_time_s=run.slowest_train_time if run.slowest_train_time is not None else state.train_time,
        cpu_time_s=state.cpu_time,  # this rank's
        train_flops=state.train_flops, full_train_flops=state.full_flops,
        flops_saved=1 - state.train_flops / state.full_flops if state.full_flops else 0.0,
        resumed_from_step=run.resumed_from,
        predicted_saving=estimate_speedup(run.cost, _freeze_times(freezer), cached=_cache_served(run))["saving"],
        peak_memory_mb=mem, peak_memory_source=mem_source,
        saved_activations_mb_full=run.cost.saved_bytes(()) / 2**20,
        saved_activations_mb_end=run.cost.saved_bytes(freezer.frozen) / 2**20,
        frozen_at=freezer.frozen_at(),
        decision_time_s=freezer.decision_time_s,
        decision_overhead=freezer.decision_time_s / state.train_time if state.train_time else None,
        timeline=[asdict(e) for e in freezer.timeline],
        # decided, but the cool-down outlasted the run: they trained to the end at a falling learning rate
        cooling_at_end=[{"unit": run.units[i].name, "decided_step": c.decided_step}
                        for i, c in sorted(freezer.cooling.items())],
    )
    if run.summary.get("status") == "finished" and run.world == 1:  # after the peak memory was read
        run.summary["predicted_time_saving"], run.summary["step_time_profile"] = _predicted_time_saving(run)
    if run.summary.get("status") == "finished" and run.cfg.speed_probe:
        run.summary["full_speed_probe"] = _full_speed_probe(run)
    run.log.close()
    if run.main:
        _write_results(run)


def _cache_summary(run: Run) -> dict[str, Any] | None:
    """The cache's figures; the forwards it ran to fill or extend itself count as training cost."""
    if not run.cached:
        return None
    cache, cost = run.cached.cache, run.cost
    runs = run.cache_unit_runs if run.cache_unit_runs is not None else cache.unit_runs
    run.state.train_flops += sum(round(n * cost.units[u].forward_flops / cost.batch_size) for u, n in runs.items())
    return {**cache.stats, "refused": run.cached.refused,
            "skipped_boundaries": {str(k): why for k, why in sorted({**run.cached.unservable,
                                                                     **run.cached.inexact}.items())},
            "dtype": run.cfg.cache_dtype, "peak_memory_mb": cache.peak_memory_bytes / 2**20,
            "peak_disk_mb": cache.peak_disk_bytes / 2**20, "kept_on": sorted(cache.kept_on),
            "payoff": run.cached.payoff.summary() if run.cached.payoff is not None else None,
            "payoff_rule": RULE_VERSION if run.cached.payoff is not None else None}


def _distributed_summary(run: Run) -> dict[str, Any]:
    comm, world = run.comm_history, run.world
    return {
        "world_size": world, "backend": torch.distributed.get_backend(),
        "global_batch_size": run.cfg.batch_size, "per_rank_batch_size": math.ceil(run.cfg.batch_size / world),
        "train_time_s_rank0": run.state.train_time, "ddp_rebuilds": run.net.rebuilds, "state_sha256_per_rank": run.digests,
        "allreduce_bytes_per_step": comm,
        "allreduce_bytes_first": comm[0]["bytes"] if comm else None,
        "allreduce_bytes_last": comm[-1]["bytes"] if comm else None,
    }


def _write_results(run: Run) -> None:
    atomic_write_json(run.out / "summary.json", run.summary)
    try:
        from .report import plot_timeline

        plot_timeline(run.summary, run.out / "timeline.png")
    except Exception as plot_error:  # a plot must never hide the run's own outcome
        print(f"frostline: could not draw timeline.png: {plot_error}", file=sys.stderr)


# -- before training ------------------------------------------------------------------------------
def plan(cfg: TrainConfig) -> dict[str, Any]:
    """Before training: when a schedule-driven method (linear, freezeout) would freeze each unit of
    ``cfg.model`` (after ``cfg.cooldown`` of the run's steps, if set), and the time it would save
    (step times profiled on this device, in the run's configuration) next to the compute (FLOPs),
    both measured on one real batch."""
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
    data = load_dataset(cfg.dataset, val_size=cfg.val_size, train_subset=cfg.train_subset, test_subset=1,
                        seed=cfg.seed, max_length=cfg.max_length)  # the train split as the run will load it
    _check_batch_fits(cfg, len(data.train))
    model = create_model(cfg.model, num_classes=data.num_classes, in_channels=data.in_channels,
                         image_size=data.image_size, width=cfg.width, depth=cfg.depth)
    _, x, y = next(iterate_batches(data.train, cfg.batch_size, shuffle=False))
    units = freeze_units(model, example_input=x, head_units=cfg.head_units)
    cost = measure_costs(model, units, x, y)
    device = pick_device(cfg.device)
    model.to(device)
    profile = profile_run(cfg, model, units, data.train, device, rounds=5, out_of_order=False)  # a prefix schedule
    policy.bind([u.name for u in units])
    steps = _run_steps(cfg, _steps_per_epoch(cfg, len(data.train)))
    times = planned_freeze_times(policy, len(units), *((steps, cfg.cooldown) if cfg.cooldown else ()))
    return {
        "units": [u.name for u in units], "freeze_times": times, "steps": steps,
        "time_saving": estimate_speedup(profile, times)["saving"],
        "time_saving_cached": estimate_speedup(profile, times, cached=True, epoch_fraction=1 / cfg.epochs)["saving"],
        "profile": {"device": profile.device, "threads": profile.threads, "full_step_s": profile.full_step_s,
                    "rounds": profile.rounds},
        "saving": estimate_speedup(cost, times)["saving"],
        "saving_cached": estimate_speedup(cost, times, cached=True, epoch_fraction=1 / cfg.epochs)["saving"],
        "saving_backward_equals_forward": estimate_speedup(cost, times, backward_equals_forward=True)["saving"],
    }


def profile_run(cfg: TrainConfig, model: nn.Module, units: list[FreezeUnit], train_data, device: torch.device,
                rounds: int = 3, out_of_order: bool = True) -> StepTimeModel:
    """Step times of ``model`` in the freezing situations, profiled on ``device`` with the run's
    optimizer on one real batch; the random generators are left as they were."""
    _, x, y = next(iterate_batches(train_data, cfg.batch_size, shuffle=False))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return profile_step_times(model, units, x.to(device), y.to(device), rounds=rounds, out_of_order=out_of_order,
                                  optimizer=lambda params: _optimizer(cfg, params))


def _predicted_time_saving(run: Run) -> tuple[float | None, dict | None]:
    """The time-calibrated prediction for the schedule that happened, and the profile behind it
    (profiled after training, so the profile neither delays the run nor counts in its time);
    0 when nothing froze, None when the model could not be profiled."""
    times = _freeze_times(run.freezer)
    if all(t is None for t in times):
        return 0.0, None
    frozen_sets = [{i for i, t in enumerate(times) if t is not None and t <= when} for when in times if when is not None]
    apart = any(s != set(range(len(s))) for s in frozen_sets)
    print("profiling step times for the predicted saving ...", file=sys.stderr, flush=True)
    try:
        profile = profile_run(run.cfg, run.model, run.units, run.data.train, run.device, out_of_order=apart)
    except Exception as e:  # a finished run keeps its results; the prediction is a bonus
        print(f"warning: could not profile step times for the predicted saving ({type(e).__name__}: {e})",
              file=sys.stderr)
        return None, None
    epoch = run.summary["steps_per_epoch"] / run.total_steps  # the cache fills for an epoch after each growth
    saving = estimate_speedup(profile, times, cached=_cache_served(run), epoch_fraction=epoch)["saving"]
    return saving, profile.to_dict()


def _full_speed_probe(run: Run) -> dict[str, Any] | None:
    """``--speed-probe``: the run's full speed, measured after it (see :mod:`.fullspeed`); None
    (and a warning) where it would not be the baseline's step: under torchrun or ``--compile``."""
    cfg = run.cfg
    if run.world > 1 or run.compile is not None:
        print(f"warning: --speed-probe skipped: it times a plain single-process step, and this run "
              f"{'ran under torchrun' if run.world > 1 else 'was compiled'}", file=sys.stderr)
        return None
    print(f"timing {cfg.speed_probe} full-speed steps (--speed-probe) ...", file=sys.stderr, flush=True)
    try:
        return probe_full_speed(lambda: _new_model(cfg, run.data), lambda model: _optimizer(cfg, model), run.train_set,
                                cfg.batch_size, run.device, cfg.speed_probe, seed=cfg.seed, loss_fn=run.loss_fn)
    except Exception as e:  # a finished run keeps its results (a second model may not fit beside the first)
        print(f"warning: --speed-probe failed ({type(e).__name__}: {e}); the run's results are kept without it",
              file=sys.stderr)
        return None


def _cache_served(run: Run) -> bool:
    """Whether the activation cache replayed anything (``--cache auto`` may have found nothing worth it)."""
    cached = run.cached
    return cached is not None and not cached.refused and (cached.payoff is None or cached.payoff.served > 0)


def _freeze_times(freezer: Freezer) -> list[float | None]:
    return list(freezer.frozen_at().values())


def _steps_per_epoch(cfg: TrainConfig, num_train: int) -> int:
    return math.ceil(num_train / cfg.batch_size)  # the last batch may be short


def _run_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """The run's optimizer steps, before ``const_time`` lengthens them."""
    return max(1, round(cfg.epochs * steps_per_epoch))
