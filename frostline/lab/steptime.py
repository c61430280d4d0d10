"""Benchmarks that measure what freezing saves, as ratios inside one process.

``steptime``: for every k, the median training-step time with the first k units frozen, next to
the full step and the *ideal* for that k (the frozen prefix's forward under ``no_grad`` plus a
standalone training step of the remaining units on its output). Full, frozen and ideal steps
are timed round-robin so machine noise hits all three alike.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..exploit.cache import ActivationCache, CachedPrefixModel
from ..exploit.cost import measure_costs
from .data import load_dataset
from ..errors import ConfigError, ModelError
from ..freezer import Freezer
from .zoo import create_model
from ..policies import NoFreezing
from .report import markdown_table
from .loop import iterate_batches, pick_device
from ..units import freeze_units


@dataclass
class BenchConfig:
    """Settings of ``frostline bench steptime``."""

    model: str = "resnet"
    dataset: str = "fashion-mnist"
    batch_size: int = 128
    width: int | None = None
    depth: int | None = None
    repeats: int = 25
    warmup: int = 3
    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    cache: bool = False
    out: str = "runs/bench-steptime"


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


def _sgd(params):
    return torch.optim.SGD(params, lr=0.01, momentum=0.9)


def steptime(cfg: BenchConfig) -> dict[str, Any]:
    """Measure and write ``steptime.json`` / ``steptime.md`` under ``cfg.out``."""
    if cfg.repeats < 3 or cfg.warmup < 0 or cfg.batch_size <= 0:
        raise ConfigError("need repeats >= 3, warmup >= 0 and batch_size > 0")
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    data = load_dataset(cfg.dataset, train_subset=cfg.batch_size, test_subset=1, seed=cfg.seed)
    _, x, y = next(iterate_batches(data.train, cfg.batch_size, shuffle=False))
    x, y = x.to(device), y.to(device)
    base = create_model(cfg.model, num_classes=data.num_classes, in_channels=data.in_channels,
                        image_size=data.image_size, width=cfg.width, depth=cfg.depth).to(device)
    if not isinstance(base, nn.Sequential):
        raise ModelError("steptime needs a model whose children are its units in order (the zoo's models are)")
    units = freeze_units(base, example_input=x)
    if [u.module_names for u in units] != [[name] for name, _ in base.named_children()]:
        raise ModelError("steptime needs each child of the model to be exactly one freeze unit")
    cost = measure_costs(base, units, x, y)
    full_flops = cost.full_step_flops

    rows = []
    for k in range(len(units)):  # k frozen units; the head (last) is never frozen
        full_model = copy.deepcopy(base).train()
        full = _training_step(full_model, _sgd(full_model.parameters()), x, y)

        frozen_model = copy.deepcopy(base).train()
        opt = _sgd(frozen_model.parameters())
        freezer = Freezer(frozen_model, opt, NoFreezing(), 1, units=[u.module_names for u in units])
        for i in range(k):
            freezer.freeze(i)
        frozen = _training_step(frozen_model, opt, x, y)

        ideal_model = copy.deepcopy(base).train()
        prefix, suffix = ideal_model[:k].eval(), ideal_model[k:]
        ideal = _ideal_step(prefix, suffix, _sgd(suffix.parameters()), x, y)

        steps = {"full": full, "frozen": frozen, "ideal": ideal}
        if cfg.cache and k > 0:
            # the cache already holds this batch at boundary k (as after its first epoch)
            cached_model = copy.deepcopy(frozen_model)
            cached_opt = _sgd([p for p in cached_model.parameters() if p.requires_grad])
            cached_freezer = Freezer(cached_model, cached_opt, NoFreezing(), 1, units=[u.module_names for u in units])
            for i in range(k):
                cached_freezer.freeze(i)
            cached = CachedPrefixModel(cached_model, cached_freezer, ActivationCache(len(y)))
            indices = torch.arange(len(y))
            cached(indices, x)
            steps["cached"] = _training_step(lambda inp: cached(indices, inp), cached_opt, x, y)
            with torch.no_grad():
                h = cached_model[:k](x)
            suffix_only = copy.deepcopy(base)[k:].train()
            steps["suffix"] = _training_step(suffix_only, _sgd(suffix_only.parameters()), h, y)
        times = {name: [] for name in steps}
        for r in range(cfg.warmup + cfg.repeats):
            for name, fn in steps.items():
                t = _timed(fn, device)
                if r >= cfg.warmup:
                    times[name].append(t)
        med = {name: statistics.median(ts) for name, ts in times.items()}
        # Ratios of steps timed back to back, then the median: robust to the machine drifting.
        frozen_over_ideal = statistics.median(f / i for f, i in zip(times["frozen"], times["ideal"]))
        predicted = 1 - cost.step_flops(range(k)) / full_flops
        measured = 1 - statistics.median(f / u for f, u in zip(times["frozen"], times["full"]))
        rows.append({
            "k": k, "first_trainable": units[k].name,
            "full_ms": 1000 * med["full"], "frozen_ms": 1000 * med["frozen"], "ideal_ms": 1000 * med["ideal"],
            "frozen_over_ideal": frozen_over_ideal,
            "measured_saving": measured, "predicted_saving": predicted,
            "saved_bytes_predicted": cost.saved_bytes(range(k)),
        })
        if "cached" in times:
            rows[-1].update(
                cached_ms=1000 * med["cached"], suffix_ms=1000 * med["suffix"],
                cached_over_suffix=statistics.median(c / s for c, s in zip(times["cached"], times["suffix"])),
                cached_saving=1 - statistics.median(c / u for c, u in zip(times["cached"], times["full"])),
                cached_predicted_saving=1 - cost.step_flops(range(k), cached_prefix=k) / full_flops,
            )

    headers = ["k frozen", "first trainable", "full ms", "frozen ms", "ideal ms", "frozen/ideal",
               "measured saving", "predicted (FLOPs)", "gap (points)"]
    table = markdown_table(headers, [
        [r["k"], r["first_trainable"], f"{r['full_ms']:.1f}", f"{r['frozen_ms']:.1f}", f"{r['ideal_ms']:.1f}",
         f"{r['frozen_over_ideal']:.3f}", f"{100 * r['measured_saving']:.1f}%", f"{100 * r['predicted_saving']:.1f}%",
         f"{100 * (r['predicted_saving'] - r['measured_saving']):+.1f}"]
        for r in rows
    ])
    if cfg.cache:
        table += "\n\nWith the activation cache (the batch's prefix output already stored at boundary k):\n\n" + markdown_table(
            ["k frozen", "cached ms", "suffix-only ms", "cached/suffix-only", "measured saving", "predicted (FLOPs)"],
            [[r["k"], f"{r['cached_ms']:.1f}", f"{r['suffix_ms']:.1f}", f"{r['cached_over_suffix']:.3f}",
              f"{100 * r['cached_saving']:.1f}%", f"{100 * r['cached_predicted_saving']:.1f}%"]
             for r in rows if "cached_ms" in r])
    worst_ratio = max(r["frozen_over_ideal"] for r in rows)
    worst_gap = max(abs(r["predicted_saving"] - r["measured_saving"]) for r in rows)
    result = {
        "config": asdict(cfg), "device": str(device), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "rows": rows, "table": table,
        "worst_frozen_over_ideal": worst_ratio, "worst_prediction_gap": worst_gap,
        "cost_model": cost.to_dict(),
    }
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "steptime.json").write_text(json.dumps(result, indent=2) + "\n")
    command = (f"frostline bench steptime --model {cfg.model} --dataset {cfg.dataset} --batch-size {cfg.batch_size}"
               f" --repeats {cfg.repeats}" + (f" --threads {cfg.threads}" if cfg.threads else "")
               + (" --cache" if cfg.cache else ""))
    (out / "steptime.md").write_text(
        f"# Step time with the first k units frozen: {cfg.model} on {cfg.dataset}\n\n"
        f"`{command}` on {device} ({torch.get_num_threads()} threads, torch {torch.__version__}); "
        f"times are medians of {cfg.repeats} steps after {cfg.warmup} warm-up, ratios medians of back-to-back pairs, batch {cfg.batch_size}.\n\n{table}\n\n"
        f"Worst frozen/ideal: {worst_ratio:.3f} (goal <= 1.05). "
        f"Worst |predicted - measured| saving: {100 * worst_gap:.1f} points (goal <= 5)."
        + (f" Worst cached/suffix-only: {max(r['cached_over_suffix'] for r in rows if 'cached_ms' in r):.3f} (goal <= 1.05)."
           if cfg.cache and len(rows) > 1 else "") + "\n")
    return result
