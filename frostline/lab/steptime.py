"""Benchmarks that measure what freezing saves, as ratios inside one process.

``steptime``: for every k, the median training-step time with the first k units frozen, next to
the full step and the *ideal* for that k (the frozen prefix's forward under ``no_grad`` plus a
standalone training step of the remaining units on its output). Full, frozen and ideal steps
are timed round-robin so machine noise hits all three alike. Beside the measured saving stand two
predictions made before it: the FLOPs cost model's and the time-calibrated one
(:func:`~frostline.exploit.timing.profile_step_times`, a separate, shorter profiling pass).
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..atomic import atomic_write_json
from ..exploit.cache import ActivationCache, CachedPrefixModel
from ..exploit.cost import measure_costs
from ..exploit.timing import profile_step_times
from .config import OPTIMIZERS
from .data import load_dataset
from ..errors import ConfigError, ModelError
from ..freezer import Freezer
from .pretrained import TEXT_MODELS
from .zoo import create_model
from ..policies import NoFreezing
from .report import markdown_table
from .loop import check_out_folder, iterate_batches, pick_device, progress_bar
from ..units import freeze_units


@dataclass
class BenchConfig:
    """Settings of ``frostline bench steptime``."""

    model: str = "resnet"
    dataset: str = "fashion-mnist"
    batch_size: int = 128
    max_length: int = 128  # text datasets: tokens per sample
    optimizer: str = "sgd"  # whose step is timed: sgd or adamw
    width: int | None = None
    depth: int | None = None
    repeats: int = 25
    warmup: int = 3
    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    cache: bool = False
    out: str = "runs/bench-steptime"
    progress: bool = True


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _training_step(model: nn.Module, optimizer, x, y) -> Callable[[], None]:
    loss_fn = nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    return step


def _ideal_step(prefix: nn.Module, suffix: nn.Module, optimizer, x, y) -> Callable[[], None]:
    loss_fn = nn.CrossEntropyLoss()

    def step():
        with torch.no_grad():
            h = prefix(x)
        optimizer.zero_grad(set_to_none=True)
        loss_fn(suffix(h), y).backward()
        optimizer.step()

    return step


def _optimizer(name: str) -> Callable[..., torch.optim.Optimizer]:
    """The optimizer whose step is timed, as the run would use it: AdamW keeps twice SGD's state
    per parameter, so its step is a larger share of a fine-tuning step (the learning rate does not
    change the time)."""
    if name == "sgd":
        return lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9)
    return lambda params: torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)


def steptime(cfg: BenchConfig) -> dict[str, Any]:
    """Measure and write ``steptime.json`` / ``steptime.md`` under ``cfg.out``."""
    if cfg.repeats < 3 or cfg.warmup < 0 or cfg.batch_size <= 0:
        raise ConfigError(f"need --repeats >= 3, --warmup >= 0 and --batch-size > 0, got --repeats {cfg.repeats}, "
                          f"--warmup {cfg.warmup}, --batch-size {cfg.batch_size}")
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; choose one of {list(OPTIMIZERS)}")
    check_out_folder(cfg.out)  # before the minutes of timing, not when their results are written
    make_optimizer = _optimizer(cfg.optimizer)
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    base, units, x, y = _model_and_batch(cfg, device)
    # a pretrained model on a CPU takes minutes: say where it is (the profile, then each boundary)
    bar = progress_bar(len(units) + 1, cfg.progress, f"steptime {cfg.model}", unit="part")
    cost = measure_costs(base, units, x, y)
    profile = profile_step_times(base, units, x, y, optimizer=make_optimizer, rounds=max(5, cfg.repeats // 2), out_of_order=False)
    bar.update()
    rows = []
    for k in range(len(units)):  # k frozen units; the head (last) is never frozen
        steps = _steps(base, units, k, x, y, make_optimizer, cache=cfg.cache)
        rows.append(_row(k, units, cost, profile, _time_round_robin(steps, cfg, device)))
        bar.update()
    bar.close()
    table = _table(rows, cfg.cache)
    result = {
        "config": asdict(cfg), "device": str(device), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "rows": rows, "table": table,
        "worst_frozen_over_ideal": max(r["frozen_over_ideal"] for r in rows),
        "worst_prediction_gap": max(abs(r["predicted_saving"] - r["measured_saving"]) for r in rows),
        "worst_time_prediction_gap": max(abs(r["time_predicted_saving"] - r["measured_saving"]) for r in rows),
        "cost_model": cost.to_dict(), "step_time_model": profile.to_dict(),
    }
    _write(cfg, device, result)
    return result


def _model_and_batch(cfg: BenchConfig, device: torch.device):
    """The zoo model (each child one freeze unit, as the ideal step slices it) and one real batch."""
    data = load_dataset(cfg.dataset, train_subset=cfg.batch_size, test_subset=1, seed=cfg.seed, max_length=cfg.max_length)
    _, x, y = next(iterate_batches(data.train, cfg.batch_size, shuffle=False))
    x, y = x.to(device), y.to(device)
    base = create_model(cfg.model, num_classes=data.num_classes, in_channels=data.in_channels,
                        image_size=data.image_size, width=cfg.width, depth=cfg.depth).to(device)
    if not isinstance(base, nn.Sequential):
        raise ModelError("steptime needs a model whose children are its units in order (the zoo's models are)")
    units = freeze_units(base, example_input=x)
    if [u.module_names for u in units] != [[name] for name, _ in base.named_children()]:
        raise ModelError("steptime needs each child of the model to be exactly one freeze unit")
    return base, units, x, y


def _frozen_copy(base: nn.Module, units, k: int, make_optimizer):
    """A copy of ``base`` with its first ``k`` units frozen by a Freezer, and its optimizer."""
    model = copy.deepcopy(base).train()
    opt = make_optimizer(model.parameters())
    freezer = Freezer(model, opt, NoFreezing(), 1, units=[u.module_names for u in units])
    for i in range(k):
        freezer.freeze(i)
    return model, opt, freezer


def _steps(base: nn.Module, units, k: int, x, y, make_optimizer, *, cache: bool) -> dict[str, Callable[[], None]]:
    """The training steps to time for boundary ``k``: full, frozen, ideal (and cached, suffix)."""
    full_model = copy.deepcopy(base).train()
    frozen_model, opt, _ = _frozen_copy(base, units, k, make_optimizer)
    ideal_model = copy.deepcopy(base).train()
    prefix, suffix = ideal_model[:k].eval(), ideal_model[k:]
    steps = {"full": _training_step(full_model, make_optimizer(full_model.parameters()), x, y),
             "frozen": _training_step(frozen_model, opt, x, y),
             "ideal": _ideal_step(prefix, suffix, make_optimizer(suffix.parameters()), x, y)}
    if cache and k > 0:
        # the cache already holds this batch at boundary k (as after its first epoch)
        cached_model, cached_opt, cached_freezer = _frozen_copy(base, units, k, make_optimizer)
        cached = CachedPrefixModel(cached_model, cached_freezer, ActivationCache(len(y)))
        indices = torch.arange(len(y))
        cached(indices, x)
        steps["cached"] = _training_step(lambda inp: cached(indices, inp), cached_opt, x, y)
        with torch.no_grad():
            h = cached_model[:k](x)
        suffix_only = copy.deepcopy(base)[k:].train()
        steps["suffix"] = _training_step(suffix_only, make_optimizer(suffix_only.parameters()), h, y)
    return steps


def _time_round_robin(steps: dict[str, Callable[[], None]], cfg: BenchConfig, device) -> dict[str, list[float]]:
    """Each step once per round, so machine noise hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(cfg.warmup + cfg.repeats):
        for name, fn in steps.items():
            t = _timed(fn, device)
            if r >= cfg.warmup:
                times[name].append(t)
    return times


def _paired(a: list[float], b: list[float]) -> float:
    """Median of ratios of steps timed back to back: robust to the machine drifting."""
    return statistics.median(x / y for x, y in zip(a, b))


def _row(k: int, units, cost, profile, times: dict[str, list[float]]) -> dict[str, Any]:
    med = {name: statistics.median(ts) for name, ts in times.items()}
    full_flops = cost.full_step_flops
    row = {
        "k": k, "first_trainable": units[k].name,
        "full_ms": 1000 * med["full"], "frozen_ms": 1000 * med["frozen"], "ideal_ms": 1000 * med["ideal"],
        "frozen_over_ideal": _paired(times["frozen"], times["ideal"]),
        "measured_saving": 1 - _paired(times["frozen"], times["full"]),
        "predicted_saving": 1 - cost.step_flops(range(k)) / full_flops,
        "time_predicted_saving": 1 - profile.step_cost(range(k)),
        "saved_bytes_predicted": cost.saved_bytes(range(k)),
    }
    if "cached" in times:
        row.update(
            cached_ms=1000 * med["cached"], suffix_ms=1000 * med["suffix"],
            cached_over_suffix=_paired(times["cached"], times["suffix"]),
            cached_saving=1 - _paired(times["cached"], times["full"]),
            cached_predicted_saving=1 - cost.step_flops(range(k), cached_prefix=k) / full_flops,
            cached_time_predicted_saving=1 - profile.step_cost(range(k), cached_prefix=k),
        )
    return row


def _table(rows: list[dict[str, Any]], cache: bool) -> str:
    headers = ["k frozen", "first trainable", "full ms", "frozen ms", "ideal ms", "frozen/ideal",
               "measured saving", "predicted (time)", "gap (points)", "predicted (FLOPs)", "gap (points)"]
    table = markdown_table(headers, [
        [r["k"], r["first_trainable"], f"{r['full_ms']:.1f}", f"{r['frozen_ms']:.1f}", f"{r['ideal_ms']:.1f}",
         f"{r['frozen_over_ideal']:.3f}", f"{100 * r['measured_saving']:.1f}%",
         f"{100 * r['time_predicted_saving']:.1f}%", f"{100 * (r['time_predicted_saving'] - r['measured_saving']):+.1f}",
         f"{100 * r['predicted_saving']:.1f}%", f"{100 * (r['predicted_saving'] - r['measured_saving']):+.1f}"]
        for r in rows
    ])
    if cache:
        table += "\n\nWith the activation cache (the batch's prefix output already stored at boundary k):\n\n" + markdown_table(
            ["k frozen", "cached ms", "suffix-only ms", "cached/suffix-only", "measured saving", "predicted (time)",
             "predicted (FLOPs)"],
            [[r["k"], f"{r['cached_ms']:.1f}", f"{r['suffix_ms']:.1f}", f"{r['cached_over_suffix']:.3f}",
              f"{100 * r['cached_saving']:.1f}%", f"{100 * r['cached_time_predicted_saving']:.1f}%",
              f"{100 * r['cached_predicted_saving']:.1f}%"]
             for r in rows if "cached_ms" in r])
    return table


def _write(cfg: BenchConfig, device: torch.device, result: dict[str, Any]) -> None:
    rows = result["rows"]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "steptime.json", result)
    command = (f"frostline bench steptime --model {cfg.model} --dataset {cfg.dataset} --batch-size {cfg.batch_size}"
               + (f" --max-length {cfg.max_length}" if cfg.model in TEXT_MODELS else "")
               + (f" --optimizer {cfg.optimizer}" if cfg.optimizer != "sgd" else "")
               + f" --repeats {cfg.repeats}" + (f" --threads {cfg.threads}" if cfg.threads else "")
               + (" --cache" if cfg.cache else ""))
    cached = [r["cached_over_suffix"] for r in rows if "cached_ms" in r]
    (out / "steptime.md").write_text(
        f"# Step time with the first k units frozen: {cfg.model} on {cfg.dataset}\n\n"
        f"`{command}` on {device} ({torch.get_num_threads()} threads, torch {torch.__version__}); "
        f"times are medians of {cfg.repeats} steps after {cfg.warmup} warm-up, ratios medians of back-to-back pairs, "
        f"batch {cfg.batch_size}, {cfg.optimizer} steps.\n\n{result['table']}\n\n"
        f"Worst frozen/ideal: {result['worst_frozen_over_ideal']:.3f}. "
        f"Worst |predicted - measured| saving: time-calibrated {100 * result['worst_time_prediction_gap']:.1f} points, "
        f"FLOPs {100 * result['worst_prediction_gap']:.1f} points. The time-calibrated prediction comes from a "
        f"separate profiling pass ({result['step_time_model']['rounds']} rounds) timed before these rows."
        + (f" Worst cached/suffix-only: {max(cached):.3f}." if cached else "") + "\n")
