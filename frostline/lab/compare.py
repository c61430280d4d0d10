"""``frostline bench compare``: every method side by side, on one machine, in one process tree.

A *suite* is a list of cells (model × dataset × method variant × seed). Each cell is one
``frostline train`` run in its own subprocess (so its peak memory is its own) under
``DIR/cells/<dataset>/<model>/<variant>/seed<k>``; cells run one at a time so they do not compete
for the machine. A finished cell whose settings match is reused, so an interrupted bench continues
where it stopped. Time saved is paired: each cell against the ``none`` cell of the same model,
dataset and seed, measured in the same bench.

The report (``report.md`` + PNG plots) is written from the cells' ``summary.json`` and
``metrics.jsonl`` alone, so it can be redrawn at any time (``frostline bench compare --report-only``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError, FrostlineError

#: Method variants: the label in the tables, its method, and only the settings that differ from the
#: method's registered defaults (the authors' recommendations: FreezeOut t_0 = 0.8 cubic; AutoFreeze
#: N = 50 %, 20 intervals over the run; Composer freeze_start 0.5, freeze_level 1.0), on top of the suite's settings.
VARIANTS: dict[str, dict[str, Any]] = {
    "none": {"method": "none", "cache": "off"},
    "linear": {"method": "linear"},
    "freezeout": {"method": "freezeout", "cache": "off"},
    "freezeout+cache": {"method": "freezeout", "cache": "memory"},
    "freezeout-lin0.5+cache": {"method": "freezeout", "t_0": 0.5, "schedule": "linear", "cache": "memory"},
    "autofreeze+cache": {"method": "autofreeze", "cache": "memory"},
    "cka-oracle+cache": {"method": "cka-oracle", "cache": "memory"},
    "smartfrz+cache": {"method": "smartfrz", "cache": "memory"},
}

#: Methods that are adaptive (decide from training signals).
ADAPTIVE = ("autofreeze", "cka-oracle", "smartfrz")
#: Pretrained models: their rows are fine-tuning, not training from scratch.
PRETRAINED = ("minilm", "efficientnet-lite0")


def variant_settings(variant: str) -> dict[str, Any]:
    """A variant's full settings: its method's hyperparameters at their defaults, then its own."""
    from ..policies import list_policies
    from .config import method_settings

    method = VARIANTS[variant]["method"]
    defaults = method_settings(method) if method in list_policies() else {}
    return {"method": method, **defaults, **VARIANTS[variant]}


@dataclass(frozen=True)
class Goal:
    """An acceptance target a suite states and its report checks: among the rows it covers, the best
    variant (averaged over model/dataset pairs, or judged per model) saves at least
    ``min_time_saved`` of the training time while losing at most ``max_accuracy_loss`` points."""

    title: str
    min_time_saved: float
    max_accuracy_loss: float = 0.3
    methods: tuple[str, ...] = ()  # methods covered (empty: every freezing method)
    pretrained: bool = False  # fine-tuning rows (pretrained models) instead of from-scratch ones
    cached_only: bool = False  # only variants with the activation cache
    per_model: bool = False  # judge each model on its own

    def covers(self, row: dict[str, Any]) -> bool:
        return (row["method"] != "none" and (not self.methods or row["method"] in self.methods)
                and (row["model"] in PRETRAINED) == self.pretrained
                and (not self.cached_only or "cache" in row["variant"]) and not math.isnan(row["time_saved"]))

    def target(self) -> str:
        speedup = 1 / (1 - self.min_time_saved)
        return (f"≥ {100 * self.min_time_saved:.0f}% time saved ({speedup:.3g}× faster) at "
                f"≤ {self.max_accuracy_loss:g} points accuracy lost")


#: The project's acceptance targets, stated by the suites that measure them.
FROM_SCRATCH = Goal("Adaptive methods from scratch", min_time_saved=0.30, methods=ADAPTIVE)
FINE_TUNING = Goal("Fine-tuning with the cache", min_time_saved=0.50, pretrained=True, cached_only=True, per_model=True)


@dataclass(frozen=True)
class Suite:
    """Cells are ``models`` × ``datasets`` × ``variants`` × seeds, or, when ``pairs`` is given,
    each ``(dataset, model, settings)`` pair × variants × seeds (pretrained models fit one
    dataset each and need their own learning rate)."""

    name: str
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    seeds: int
    variants: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    about: str = ""
    pairs: tuple[tuple[str, str, dict[str, Any]], ...] = ()
    goals: tuple[Goal, ...] = ()

    def combos(self) -> list[tuple[str, str, dict[str, Any]]]:
        if self.pairs:
            return list(self.pairs)
        return [(d, m, {}) for d in self.datasets for m in self.models]


SUITES: dict[str, Suite] = {
    "quick": Suite(
        "quick", ("resnet", "vgg"), ("fashion-mnist",), 3,
        ("none", "linear", "freezeout", "freezeout+cache", "autofreeze+cache", "cka-oracle+cache", "smartfrz+cache"),
        {"epochs": 4, "train_subset": 6000, "val_size": 1000, "batch_size": 128, "threads": 1, "log_every": 5},
        "from scratch on a 6,000-sample subset of Fashion-MNIST, 4 epochs, evaluated on the full 10,000-image test "
        "set, one thread per run; sized for about 30 minutes on 2 CPU cores with `--jobs 2`",
        goals=(FROM_SCRATCH,)),
    "smoke": Suite(
        "smoke", ("resnet",), ("fashion-mnist",), 2, ("none", "freezeout+cache", "autofreeze+cache"),
        {"epochs": 1, "train_subset": 640, "val_size": 128, "test_subset": 512, "batch_size": 64, "width": 8,
         "threads": 1, "log_every": 2},
        "a one-minute check that the bench runs end to end (tiny model and data: its numbers mean nothing)",
        goals=(FROM_SCRATCH,)),
    "finetune": Suite(
        "finetune", (), (), 2, ("none", "linear", "freezeout+cache", "autofreeze+cache", "smartfrz+cache"),
        {"epochs": 2, "optimizer": "adamw", "weight_decay": 0.01, "threads": 1, "log_every": 5},
        "fine-tuning pretrained models: all-MiniLM-L6-v2 on 2,000 fine-food reviews (64 tokens, AdamW 5e-5, "
        "tested on all 1,000 test reviews) and ImageNet EfficientNet-Lite0 on 3,000 Fashion-MNIST images upscaled "
        "to 64 x 64 (AdamW 1e-3, tested on 2,000), 2 epochs, one thread per run; about 20 minutes with `--jobs 2`",
        pairs=(
            ("fine-foods", "minilm", {"lr": 5e-5, "batch_size": 32, "max_length": 64, "train_subset": 2000,
                                       "val_size": 400}),
            ("fashion-mnist", "efficientnet-lite0", {"lr": 1e-3, "batch_size": 64, "train_subset": 3000,
                                                     "val_size": 1000, "test_subset": 2000}),
        ),
        goals=(FINE_TUNING,)),
    "full": Suite(
        "full", ("resnet", "vgg", "mobilenetv2", "vit"), ("fashion-mnist", "mnist"), 3, tuple(VARIANTS),
        {"epochs": 10},
        "from scratch on the full training sets (55,000 after the validation hold-out), 10 epochs; for a long "
        "run or a GPU",
        goals=(FROM_SCRATCH,)),
}


@dataclass(frozen=True)
class Cell:
    dataset: str
    model: str
    variant: str
    seed: int
    settings: tuple[tuple[str, Any], ...]

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.model}/{self.variant}/seed{self.seed}"

    def folder(self, root: Path) -> Path:
        return root / "cells" / self.dataset / self.model / self.variant.replace("+", "_") / f"seed{self.seed}"


def suite_cells(suite: Suite, methods_available: Sequence[str]) -> tuple[list[Cell], list[str]]:
    """The suite's cells, baselines first; and the variants skipped because their method is not
    installed (reported, never silently dropped)."""
    skipped = [v for v in suite.variants if VARIANTS[v]["method"] not in methods_available]
    cells = []
    for dataset, model, extra in suite.combos():
        for variant in suite.variants:
            if variant in skipped:
                continue
            for seed in range(suite.seeds):
                settings = {**suite.settings, **extra, **variant_settings(variant), "model": model, "dataset": dataset,
                            "seed": seed}
                cells.append(Cell(dataset, model, variant, seed, tuple(sorted(settings.items()))))
    return cells, skipped


def _train_argv(cell: Cell, out: Path, root: Path) -> list[str]:
    from .config import config_fields

    fields = set(config_fields())
    argv = [sys.executable, "-m", "frostline", "train", "--out", str(out), "--no-progress"]
    settings = dict(cell.settings)
    if settings["method"] == "cka-oracle":
        # the oracle's reference is the finished baseline of the same model, dataset and seed
        base = Cell(cell.dataset, cell.model, "none", cell.seed, ()).folder(root)
        settings["reference"] = str(base)
    for name, value in settings.items():
        if name not in fields:
            raise ConfigError(f"suite setting {name!r} is not a `frostline train` option")
        flag = "--" + name.replace("_", "-")
        if value is None:  # the default of every field that takes None ("the method's own"): nothing to pass
            continue
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            argv += [flag, str(value)]
    return argv


def _finished(folder: Path, cell: Cell) -> dict | None:
    """The cell's summary when it finished with exactly this cell's settings."""
    try:
        summary = json.loads((folder / "summary.json").read_text())
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if summary.get("status") != "finished":
        return None
    if any(config.get(k) != v for k, v in cell.settings):
        return None
    return summary


def run_suite(suite: str | Suite, out: str | os.PathLike, *, progress: bool = True, report_only: bool = False,
              jobs: int = 1) -> dict[str, Any]:
    """Run (or continue) a suite (by name, or your own :class:`Suite`) and write its report.
    ``jobs`` cells run at once (each with the suite's ``threads``); every cell, baselines included,
    then shares the machine alike. Returns the report's data."""
    from tqdm.auto import tqdm

    from ..policies import list_policies

    if isinstance(suite, str):
        if suite not in SUITES:
            raise ConfigError(f"unknown suite {suite!r}; choose one of {sorted(SUITES)}")
        suite = SUITES[suite]
    unknown = [v for v in suite.variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown method variants {unknown}; choose from {list(VARIANTS)}")
    if "none" not in suite.variants:
        raise ConfigError("a suite needs the `none` variant: time saved is measured against it")
    suite_name = suite.name
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs must be an integer >= 1, got {jobs!r}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    cells, skipped = suite_cells(suite, list_policies())
    command = "frostline " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv and "frostline" in sys.argv[0] else None
    results: dict[str, dict] = {}
    failed: dict[str, str] = {}
    bar = tqdm(total=len(cells), desc=f"bench {suite_name}", unit="run", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    todo = []
    for cell in cells:
        summary = _finished(cell.folder(root), cell)
        if summary is not None:
            results[cell.key] = summary
            bar.update(1)
        elif not report_only:
            todo.append(cell)
    # baselines first: the oracle's reference and every pairing need them
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for wave in ([c for c in todo if c.variant == "none"], [c for c in todo if c.variant != "none"]):
            running = {pool.submit(_run_cell, c, c.folder(root), root): c for c in wave}
            for done in as_completed(running):
                cell = running[done]
                summary, error = done.result()
                if error:
                    failed[cell.key] = error
                if summary is not None:
                    results[cell.key] = summary
                bar.set_postfix_str(cell.key)
                bar.update(1)
    bar.close()
    return write_report(root, suite, cells, results, failed, skipped, command or f"frostline bench compare --suite {suite_name} --out {root}")


def _run_cell(cell: Cell, folder: Path, root: Path) -> tuple[dict | None, str | None]:
    """Run one cell in a subprocess; resume it if an earlier bench was cut off mid-run."""
    from .checkpoint import CHECKPOINT, PREVIOUS

    folder.mkdir(parents=True, exist_ok=True)
    if ((folder / CHECKPOINT).exists() or (folder / PREVIOUS).exists()) and (folder / "config.json").exists():
        argv = [sys.executable, "-m", "frostline", "train", "--resume", str(folder), "--no-progress"]
    else:
        argv = _train_argv(cell, folder, root)
    with open(folder / "bench.log", "a") as log:
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        rc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = (folder / "bench.log").read_text().strip().splitlines()[-1:] or ["(no output)"]
        return None, f"exit {rc}: {tail[0]}"
    summary = _finished(folder, cell)
    return summary, None if summary else "finished without a summary.json"


def machine_info() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    commit = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    from .. import __version__

    return {"cpu": cpu, "cpu_cores": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
            "torch": torch.__version__, "frostline": __version__, "commit": commit, "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%d")}


# -- aggregation ------------------------------------------------------------------------------
def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(cells: Sequence[Cell], results: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per (dataset, model, variant) over its seeds. Time saved and accuracy change are
    paired with the baseline of the same seed, then averaged."""
    groups: dict[tuple[str, str, str], list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.dataset, c.model, c.variant), []).append(c)
    rows = []
    for (dataset, model, variant), members in groups.items():
        done = [(c, results[c.key]) for c in members if c.key in results]
        if not done:
            continue
        paired_time, paired_acc = [], []
        for c, s in done:
            base = results.get(Cell(dataset, model, "none", c.seed, ()).key)
            if base:
                paired_time.append(1 - s["train_time_s"] / base["train_time_s"])
                paired_acc.append(s["test_accuracy"] - base["test_accuracy"])
        acc = _mean_std([s["test_accuracy"] for _, s in done])
        saved = _mean_std(paired_time)
        rows.append({
            "dataset": dataset, "model": model, "variant": variant, "method": done[0][1]["method"],
            "seeds": len(done), "of_seeds": len(members),
            "accuracy": acc[0], "accuracy_std": acc[1],
            "delta_accuracy": statistics.fmean(paired_acc) if paired_acc else math.nan,
            "train_time_s": statistics.fmean(s["train_time_s"] for _, s in done),
            "time_saved": saved[0], "time_saved_std": saved[1],
            "flops_saved": statistics.fmean(s["flops_saved"] for _, s in done),
            "predicted_saving": statistics.fmean(s["predicted_saving"] for _, s in done),
            "peak_memory_mb": statistics.fmean(s["peak_memory_mb"] for _, s in done),
            "peak_memory_source": done[0][1].get("peak_memory_source"),
            "cache_mb": statistics.fmean(((s.get("cache") or {}).get("peak_memory_mb", 0.0) + (s.get("cache") or {}).get("peak_disk_mb", 0.0)) for _, s in done),
            "frozen_units": statistics.fmean(sum(v is not None for v in s["frozen_at"].values()) for _, s in done),
            "units": len(done[0][1]["units"]),
            "policy": done[0][1].get("policy"),
        })
    return rows


def goal_lines(goal: Goal, rows: Sequence[dict[str, Any]]) -> list[str]:
    """Plain statements of whether ``goal`` was met in this bench."""
    covered = [r for r in rows if goal.covers(r)]
    if not covered:
        return [f"- {goal.title} (goal: {goal.target()}): no run of this bench is covered."]
    groups = {r["model"]: [] for r in covered} if goal.per_model else {"": []}
    for r in covered:
        groups[r["model"] if goal.per_model else ""].append(r)
    lines = []
    for model, group in groups.items():
        by_variant: dict[str, list[dict]] = {}
        for r in group:
            by_variant.setdefault(r["variant"], []).append(r)
        avg = {v: (statistics.fmean(r["time_saved"] for r in rs), statistics.fmean(r["delta_accuracy"] for r in rs))
               for v, rs in by_variant.items()}
        within = [v for v, (_, delta) in avg.items() if delta >= -goal.max_accuracy_loss]
        best = max(within or avg, key=lambda v: avg[v][0])
        saved, delta = avg[best]
        met = saved >= goal.min_time_saved and delta >= -goal.max_accuracy_loss
        lines.append(f"- {goal.title}{f' ({model})' if model else ''}: best **{best}**, {100 * saved:.1f}% time saved "
                     f"({1 / max(1e-9, 1 - saved):.2f}× faster) at {delta:+.2f} points on average over "
                     f"{len(by_variant[best])} model/dataset pairs — goal ({goal.target()}) **{'met' if met else 'not met'}**.")
        lines += [f"  - {v}: {100 * s:.1f}% saved, {d:+.2f} points." for v, (s, d) in sorted(avg.items()) if v != best]
    return lines


def _fmt_pct(x: float, std: float | None = None) -> str:
    if math.isnan(x):
        return "n/a"
    return f"{100 * x:.1f}" + (f" ± {100 * std:.1f}" if std is not None and not math.isnan(std) else "") + "%"


def results_markers(suite: str) -> tuple[str, str]:
    """The lines of ``docs/benchmarks.md`` between which a suite's full results block lives."""
    return f"<!-- frostline-bench-results:{suite}:begin -->", f"<!-- frostline-bench-results:{suite}:end -->"


def summary_markers(suite: str) -> tuple[str, str]:
    """The README lines between which a suite's short summary lives."""
    return f"<!-- frostline-bench-summary:{suite}:begin -->", f"<!-- frostline-bench-summary:{suite}:end -->"


def results_markdown(suite: Suite, rows: Sequence[dict[str, Any]], command: str, machine: dict[str, Any],
                     image_prefix: str = "") -> str:
    """The results block: tables in the shape of SmartFRZ's Tables 2–3, goals, plots."""
    from .report import markdown_table

    begin, end = results_markers(suite.name)
    out = [begin, "",
           f"Suite `{suite.name}`: {suite.about}. {suite.seeds} seeds per cell. Machine: {machine['cpu']} "
           f"({machine['cpu_cores']} cores){', GPU ' + machine['gpu'] if machine.get('gpu') else ', no GPU'}; "
           f"torch {machine['torch']}, Python {machine['python']}, frostline {machine['frostline']}"
           f"{' @ ' + machine['commit'] if machine.get('commit') else ''}, {machine['date']}.", "",
           f"Command: `{command}`", "",
           "Time saved and Δ accuracy are paired with the `none` run of the same seed in the same bench, then "
           "averaged; time is training-step time only (evaluation excluded). *Predicted* is the cost model's "
           "FLOPs-based estimate for the schedule that actually happened; *FLOPs saved* counts the cache's own "
           "fill and extension forwards as cost.", ""]
    for (dataset, model) in dict.fromkeys((r["dataset"], r["model"]) for r in rows):
        group = [r for r in rows if r["dataset"] == dataset and r["model"] == model]
        table = []
        for r in group:
            table.append([
                r["variant"], f"{r['accuracy']:.2f} ± {r['accuracy_std']:.2f}",
                "—" if r["method"] == "none" else ("n/a" if math.isnan(r["delta_accuracy"]) else f"{r['delta_accuracy']:+.2f}"),
                f"{r['train_time_s']:.1f}", "—" if r["method"] == "none" else _fmt_pct(r["time_saved"], r["time_saved_std"]),
                "—" if r["method"] == "none" else _fmt_pct(r["flops_saved"]),
                "—" if r["method"] == "none" else _fmt_pct(r["predicted_saving"]),
                f"{r['peak_memory_mb']:.0f}", f"{r['cache_mb']:.0f}" if r["cache_mb"] else "—",
                f"{r['frozen_units']:.1f}/{r['units']}",
                f"{r['seeds']}" + ("" if r["seeds"] == r["of_seeds"] else f" of {r['of_seeds']}"),
            ])
        out += [f"**{model} on {dataset}**", "", markdown_table(
            ["method", "test acc %", "Δ acc", "train s", "time saved", "FLOPs saved", "predicted", "peak MB",
             "cache MB", "frozen", "seeds"], table), ""]
    if suite.goals:
        out += ["Goals:", "", *[line for goal in suite.goals for line in goal_lines(goal, rows)], ""]
    for name, caption in PLOTS:
        out.append(f"![{caption}]({image_prefix}{name})")
    out += ["", end]
    return "\n".join(out)


PLOTS = (
    ("accuracy_vs_time_saved.png", "test accuracy against time saved, one point per run, Pareto front"),
    ("freezing_moments.png", "when each unit froze (seed 0)"),
    ("memory.png", "activation memory kept for backward over training (seed 0)"),
    ("predicted_vs_measured.png", "predicted saving against measured time saved"),
)


def write_report(root: Path, suite: Suite, cells: Sequence[Cell], results: dict[str, dict], failed: dict[str, str],
                 skipped: Sequence[str], command: str) -> dict[str, Any]:
    from .report import plot_bench

    rows = aggregate(cells, results)
    machine = machine_info()
    hyper = {v: {k: val for k, val in (VARIANTS[v] if v in skipped else variant_settings(v)).items() if k != "method"}
             for v in suite.variants}
    text = ["# frostline bench", "", results_markdown(suite, rows, command, machine), "",
            "## Settings", "", f"Suite settings: `{json.dumps(suite.settings)}`", "",
            "Method variants (hyperparameters as their authors recommend; nothing was tuned on the test set):", ""]
    text += [f"- `{v}`: `{json.dumps(h)}`" + (" — **skipped: method not installed**" if v in skipped else "")
             for v, h in hyper.items()]
    if failed:
        text += ["", "## Failed runs", ""] + [f"- `{k}`: {err} (log: `{k}`/bench.log)" for k, err in failed.items()]
    missing = [c.key for c in cells if c.key not in results and c.key not in failed]
    if missing:
        text += ["", f"## Not run yet ({len(missing)})", ""] + [f"- `{k}`" for k in missing]
    (root / "report.md").write_text("\n".join(text) + "\n")
    plot_bench(root, cells, results, rows)
    data = {"suite": suite.name, "seeds": suite.seeds, "about": suite.about,
            "goals": [dataclasses.asdict(g) for g in suite.goals], "command": command, "machine": machine, "rows": rows,
            "failed": failed, "skipped": list(skipped), "cells": len(cells), "finished": len(results)}
    (root / "results.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    return data


def publish_results(bench_dir: str | os.PathLike, readme: str | os.PathLike = "README.md",
                    docs: str | os.PathLike = "docs/benchmarks.md") -> tuple[Path, Path]:
    """Publish a finished bench: its full results block into ``docs`` (the file and the suite's
    section are created when missing) with its plots beside it under ``bench/<suite>/``, and a short
    summary (the suite's goals and the accuracy-against-time-saved plot) into the README's summary
    block of that suite. Returns the two files written."""
    root, readme, docs = Path(bench_dir), Path(readme), Path(docs)
    data = _read_results(root)
    suite = _suite_of(data)
    if not readme.exists():
        raise FrostlineError(f"{readme} does not exist: pass --readme PATH")
    begin, end = summary_markers(suite.name)
    readme_text = readme.read_text()
    if begin not in readme_text or end not in readme_text:
        raise FrostlineError(f"{readme} has no summary block for suite {suite.name!r}: add the lines {begin} and "
                             f"{end} where it goes")
    images = docs.parent / "bench" / suite.name
    _copy_plots(root, images)
    block = results_markdown(suite, data["rows"], data["command"], data["machine"], image_prefix=f"bench/{suite.name}/")
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs_text = docs.read_text() if docs.exists() else "# Benchmarks\n"
    docs.write_text(_replace_block(docs_text, *results_markers(suite.name), block))
    summary = summary_markdown(suite, data, plot=_relative(images / PLOTS[0][0], readme.parent),
                               details=_relative(docs, readme.parent))
    readme.write_text(_replace_block(readme_text, begin, end, summary))
    return readme, docs


def summary_markdown(suite: Suite, data: dict[str, Any], plot: str, details: str) -> str:
    """The README's short block for a suite: what ran, the goals, the headline plot."""
    begin, end = summary_markers(suite.name)
    machine = data["machine"]
    goals = [line for goal in suite.goals for line in goal_lines(goal, data["rows"])]
    return "\n".join([begin, "", f"Suite `{suite.name}`: {suite.about} ({suite.seeds} seed{'s' if suite.seeds != 1 else ''} per cell; "
                       f"{machine['cpu']}, {machine['date']}).", "", *goals, *([""] if goals else []),
                       f"![{PLOTS[0][1]}]({plot})", "", f"Full tables, machine and command: [{details}]({details}).",
                       "", end])


def _read_results(root: Path) -> dict[str, Any]:
    try:
        return json.loads((root / "results.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FrostlineError(f"{root / 'results.json'} is missing or unreadable ({e}): run `frostline bench compare --out {root}` first") from None


def _suite_of(data: dict[str, Any]) -> Suite:
    """The suite a results.json describes (goals from the file; older files: the suite's own)."""
    if "goals" in data:
        goals = tuple(Goal(**{**g, "methods": tuple(g["methods"])}) for g in data["goals"])
    else:
        goals = SUITES[data["suite"]].goals if data["suite"] in SUITES else ()
    return Suite(data["suite"], (), (), data["seeds"], (), about=data["about"], goals=goals)


def _copy_plots(root: Path, target: Path) -> None:
    import shutil

    target.mkdir(parents=True, exist_ok=True)
    for name, _ in PLOTS:
        if (root / name).exists():
            shutil.copyfile(root / name, target / name)


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def _replace_block(text: str, begin: str, end: str, block: str) -> str:
    """``text`` with the lines from ``begin`` to ``end`` replaced by ``block`` (appended when absent)."""
    if begin not in text or end not in text:
        return text.rstrip("\n") + "\n\n" + block + "\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return head + block + tail
