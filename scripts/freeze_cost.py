"""What does freezing a prefix at a given moment cost? The accuracy surface behind every schedule.

    nice -n 19 python scripts/freeze_cost.py [--seeds 0 1] [--work runs/freeze-cost]

For VGG-11 on the full Fashion-MNIST train split in the standard suite's regime (8 epochs, batch
128, SGD with cosine decay, two threads), each run freezes the first ``k`` units all at once at
fraction ``t`` of training and trains the rest to the end (`linear` with ``freeze_end`` a step after
``freeze_start``). Every other unit keeps training to the last step, so a run's loss is what that
one freeze costs; a schedule that freezes the prefix in steps, or more units later, costs at least
as much. So the earliest harmless ``t`` for each ``k`` bounds what any method (a clock, AutoFreeze,
SmartFRZ) can save at no loss in this regime, and shows how far a well-placed clock is from it.

Each seed gets its own baseline (``none``) and the suite's `linear-start0.25` clock, trained here
the same way, one run at a time. Validation and test accuracy are both kept; the table reports
test accuracy against the baseline of the same seed (the suite's measure) and validation beside it.
Finished runs are reused, so an interrupted study continues; the per-run figures go to
``benchmarks/freeze-cost/vgg-fmnist.json``.

    nice -n 19 python scripts/freeze_cost.py --staircase --seeds 3 4 5 [--model resnet]

checks what the study found on fresh seeds: it trains, beside each seed's baseline and clock, the
staircase the study's harmless moments make (:func:`harmless_schedule`) as one run. Its seeds must
not be the study's, whose test accuracy chose the staircase. Freezing costs read alone need not add
up, so this run is what says whether the room the study shows is there. With ``--model resnet`` the
same staircase, by relative depth, goes to ResNet-14, which the study never trained: whether the
room carries over to another model. Its figures go to
``benchmarks/freeze-cost/<model>-fmnist-staircase.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout

from frostline.errors import ConfigError, run_script  # noqa: E402
from frostline.policies.base import FreezePolicy, Progress  # noqa: E402
from frostline.lab.compare import in_run_saving  # noqa: E402
from frostline.lab.machine import label  # noqa: E402
from frostline.lab.report import read_metrics  # noqa: E402

MODEL, DATASET, UNITS_BELOW_HEAD = "vgg", "fashion-mnist", 8
COMMON = ["--batch-size", "128", "--epochs", "8", "--threads", "2", "--no-progress", "--log-every", "50"]
#: k (units frozen from the input side) -> fractions of training at which they freeze. Each k is
#: tried at and before the moment the suite's `linear-start0.25` clock reaches it
#: (0.25 + 0.75 * k / 8: k=2 at 0.44, 4 at 0.63, 6 at 0.81, 8 at 1.0).
GRID = {2: (0.125, 0.25), 4: (0.25, 0.375, 0.5), 6: (0.375, 0.5, 0.625), 8: (0.5, 0.625, 0.75)}
#: The suite's `linear-start0.25` clock: `linear` from a quarter of training to the end.
CLOCK_START = 0.25
CLOCK = ["--method", "linear", "--freeze-start", str(CLOCK_START)]
CLOCK_RUN = f"linear-start{CLOCK_START:g}"  # its run name
RESULTS = ROOT / "benchmarks" / "freeze-cost" / "vgg-fmnist.json"
STAIRCASE_RESULTS = RESULTS.parent / "{model}-fmnist-staircase.json"
#: Models the staircase check can train (the study itself trains VGG-11 only).
STAIRCASE_MODELS = ("vgg", "resnet")
#: Test accuracy (points, mean over seeds) a freeze may cost and count as harmless: the threshold
#: calibration's line.
TOLERANCE = 0.1


def prefix_args(k: int, t: float) -> list[str]:
    """`linear` freezing exactly the first ``k`` units from fraction ``t`` (its depth is
    ``floor(level * units below the head)``; the half unit keeps the floor off a rounding edge)."""
    level = 1.0 if k == UNITS_BELOW_HEAD else (k + 0.5) / UNITS_BELOW_HEAD
    return ["--method", "linear", "--freeze-start", str(t), "--freeze-end", str(round(t + 0.001, 6)),
            "--freeze-level", str(level)]


def train(out: Path, seed: int, method: list[str], model: str = MODEL) -> dict:
    if not _finished(out):
        cmd = [sys.executable, "-m", "frostline", "train", *_train_args(seed, method, out, model)]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
    return figures(out)


def _train_args(seed: int, method: list[str], out: Path, model: str = MODEL) -> list[str]:
    return ["--model", model, "--dataset", DATASET, *COMMON, "--seed", str(seed), *method, "--out", str(out)]


def _finished(out: Path) -> bool:
    summary = out / "summary.json"
    return summary.exists() and json.loads(summary.read_text()).get("status") == "finished"


def figures(out: Path) -> dict:
    """A finished run's figures, as the tables use them."""
    s = json.loads((out / "summary.json").read_text())
    frozen = {u: round(f, 4) for u, f in s["frozen_at"].items() if f is not None}
    return {"val_accuracy": s["val_accuracy"], "test_accuracy": s["test_accuracy"], "train_time_s": s["train_time_s"],
            "time_saved_in_run": in_run_saving(s, read_metrics(out)), "flops_saved": s.get("flops_saved"),
            "frozen_at": frozen, "machine": label(s["machine"]) if s.get("machine") else None,
            "step_time_prefix": (s.get("step_time_profile") or {}).get("prefix")}


class Staircase(FreezePolicy):
    """A schedule in steps, which `linear` cannot express: ``schedule`` maps a prefix of the study's
    model (k of its 8 units below the head) to the moment it has frozen. On a model of ``n`` units
    below the head, unit ``i`` (from the input side, 1-based) takes the moment of VGG-11's unit at
    the same relative depth, ``ceil(8 i / n)``, and freezes once training is past it. The head never
    freezes."""

    name = "staircase"

    def __init__(self, schedule: dict[int, float]):
        super().__init__()
        self.schedule = {int(k): float(t) for k, t in schedule.items()}
        self.moments: list[float] = []

    def bind(self, unit_names: list[str]) -> None:
        super().bind(unit_names)
        below = self.num_units - 1
        if below < 1:
            raise ConfigError("the staircase needs a model with a unit below its head")
        self.moments = [staircase_moment(self.schedule, math.ceil(UNITS_BELOW_HEAD * i / below))
                        for i in range(1, below + 1)]

    def decide(self, progress: Progress) -> set[int]:
        return {i for i, m in enumerate(self.moments) if progress.fraction > m}

    def config(self) -> dict:
        return {"schedule": {str(k): t for k, t in self.schedule.items()}, "moments": self.moments}


def train_staircase(out: Path, seed: int, schedule: dict[int, float], model: str) -> dict:
    """One run of the staircase, in the study's settings (the run's config says `linear`, whose
    settings it shares; its summary names the staircase, its schedule and its moments). A finished
    run trained with another schedule is an error, not a result."""
    wanted = {str(k): float(t) for k, t in schedule.items()}
    if _finished(out):
        kept = json.loads((out / "summary.json").read_text()).get("policy", {}).get("schedule")
        if kept != wanted:
            raise ConfigError(f"{out} holds a staircase run with schedule {kept}, not {wanted}: move it away to "
                              "train this one")
        return figures(out)
    from frostline.lab.cli import _config, build_parser
    from frostline.lab.config import TrainConfig
    from frostline.lab.recipe import train as train_run

    print(f"+ staircase {wanted} {model} seed {seed} -> {out}", flush=True)
    args = build_parser().parse_args(["train", *_train_args(seed, ["--method", "linear"], out, model)])
    train_run(_config(args, TrainConfig), policy=Staircase(schedule))
    return figures(out)


def paired_row(name: str, k, t, seed: int, r: dict, base: dict) -> dict:
    return {"run": name, "k": k, "t": t, "seed": seed, **r,
            "delta_test": round(r["test_accuracy"] - base["test_accuracy"], 2),
            "delta_val": round(r["val_accuracy"] - base["val_accuracy"], 2),
            "time_ratio_to_baseline": round(r["train_time_s"] / base["train_time_s"], 4),
            "baseline_machine": base["machine"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--work", default=str(ROOT / "runs" / "freeze-cost"), help="folder for the runs")
    parser.add_argument("--report-only", action="store_true", help="print the tables from the committed figures")
    parser.add_argument("--staircase", action="store_true",
                        help="train the staircase the study's harmless moments make, on seeds the study did not use")
    parser.add_argument("--model", default=MODEL, help=f"with --staircase: the model it trains, one of {STAIRCASE_MODELS}")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        raise ConfigError(f"--seeds lists a seed twice: {args.seeds}")
    if args.model != MODEL and not args.staircase:
        raise ConfigError(f"the study trains {MODEL} only; --model {args.model} is for --staircase")
    if args.model not in STAIRCASE_MODELS:
        raise ConfigError(f"--model {args.model!r}: the staircase check trains one of {STAIRCASE_MODELS}")
    if args.staircase:
        staircase_study(args.seeds, Path(args.work), args.report_only, args.model)
        return
    if args.report_only:
        if not RESULTS.exists():
            raise ConfigError(f"no figures at {RESULTS} yet: run without --report-only first")
        report(json.loads(RESULTS.read_text())["runs"])
        return
    work = Path(args.work)
    kept = json.loads(RESULTS.read_text())["runs"] if RESULTS.exists() else []
    rows = [r for r in kept if r["seed"] not in args.seeds]  # other seeds' committed rows stay
    for seed in args.seeds:
        base = train(work / f"seed{seed}" / "none", seed, ["--method", "none"])
        cases = [(CLOCK_RUN, None, None, CLOCK)] + [
            (f"prefix{k}-at{t:g}", k, t, prefix_args(k, t)) for k, ts in GRID.items() for t in ts]
        for name, k, t, method in cases:
            rows.append(paired_row(name, k, t, seed, train(work / f"seed{seed}" / name, seed, method), base))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"model": MODEL, "dataset": DATASET, "settings": COMMON, "grid": GRID,
                                   "command": "python scripts/freeze_cost.py --seeds " + " ".join(
                                       map(str, sorted({r["seed"] for r in rows}))),
                                   "runs": rows}, indent=1) + "\n")
    report(rows)


def staircase_study(seeds: list[int], work: Path, report_only: bool, model: str = MODEL) -> None:
    """Train (or, with ``report_only``, reprint) the staircase check of ``model`` on ``seeds``."""
    results = Path(str(STAIRCASE_RESULTS).format(model=model))
    if report_only:
        if not results.exists():
            raise ConfigError(f"no figures at {results} yet: run --staircase without --report-only first")
        staircase_report(json.loads(results.read_text()))
        return
    if not RESULTS.exists():
        raise ConfigError(f"no figures at {RESULTS}: the staircase comes from the study, run it first")
    grid = json.loads(RESULTS.read_text())["runs"]
    chosen_on = sorted({r["seed"] for r in grid})
    if model == MODEL and set(seeds) & set(chosen_on):
        raise ConfigError(f"seeds {sorted(set(seeds) & set(chosen_on))} chose the staircase (the study ran seeds "
                          f"{chosen_on}): check it on other seeds")
    schedule = harmless_schedule(grid)
    wanted = {str(k): t for k, t in schedule.items()}
    kept = json.loads(results.read_text()) if results.exists() else None
    rows = [r for r in kept["runs"] if r["seed"] not in seeds] if kept and kept["schedule"] == wanted else []
    folder = work if model == MODEL else work / model  # the study's own runs sit at the top
    moments = None
    for seed in seeds:
        base = train(folder / f"seed{seed}" / "none", seed, ["--method", "none"], model)
        clock = train(folder / f"seed{seed}" / CLOCK_RUN, seed, CLOCK, model)
        rows.append(paired_row(CLOCK_RUN, None, None, seed, clock, base))
        out = folder / f"seed{seed}" / "staircase"
        stairs = train_staircase(out, seed, schedule, model)
        moments = json.loads((out / "summary.json").read_text())["policy"]["moments"]
        rows.append(paired_row("staircase", None, None, seed, stairs, base))
    start = equal_clock_start([folder / f"seed{seed}" / run for seed in seeds
                               for run in ("staircase", CLOCK_RUN)])
    if start != CLOCK_START:
        for seed in seeds:
            name = f"linear-start{start:g}"
            base = figures(folder / f"seed{seed}" / "none")
            clock = train(folder / f"seed{seed}" / name, seed, ["--method", "linear", "--freeze-start", str(start)], model)
            rows.append(paired_row(name, None, None, seed, clock, base))
    result = {"model": model, "dataset": DATASET, "settings": COMMON, "schedule": wanted, "equal_clock_start": start,
              "moments": moments if moments is not None else kept["moments"], "chosen_on_seeds": chosen_on,
              "command": f"python scripts/freeze_cost.py --staircase --model {model} --seeds " + " ".join(
                  map(str, sorted({r["seed"] for r in rows}))), "runs": rows}
    results.write_text(json.dumps(result, indent=1) + "\n")
    staircase_report(result)


def staircase_report(result: dict) -> None:
    rows = result["runs"]
    print(f"{result['model']}: staircase chosen on VGG-11 seeds {result['chosen_on_seeds']}: unit moments "
          f"{result['moments']}")
    print(table(rows))
    clocks = [CLOCK_RUN]
    if result.get("equal_clock_start", CLOCK_START) != CLOCK_START:
        clocks.append(f"linear-start{result['equal_clock_start']:g}")
        print(f"linear-start{result['equal_clock_start']:g}: the `linear` clock whose priced step time saves what "
              "the staircase's saves")
    for clock in clocks:
        print(paired_saving(rows, clock))


def paired_saving(rows: list[dict], clock: str) -> str:
    """Time saved in-run by ``clock`` and by the staircase, per seed, and their paired difference."""
    by = {(r["run"], r["seed"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows if ("staircase", r["seed"]) in by})
    pairs = [(by[(clock, s)], by[("staircase", s)]) for s in seeds if (clock, s) in by]
    pairs = [(c, t) for c, t in pairs if c["time_saved_in_run"] is not None and t["time_saved_in_run"] is not None]
    if not pairs:
        return f"no seed has an in-run time saving for both {clock} and the staircase"
    saved = lambda r: 100 * r["time_saved_in_run"]  # noqa: E731
    gain = [saved(t) - saved(c) for c, t in pairs]
    cost = [t["delta_test"] - c["delta_test"] for c, t in pairs]
    return (f"time saved in-run over {len(pairs)} seeds: {clock} {_mean([saved(c) for c, _ in pairs]):.1f}% "
            f"({', '.join(f'{saved(c):.1f}' for c, _ in pairs)}), staircase {_mean([saved(t) for _, t in pairs]):.1f}% "
            f"({', '.join(f'{saved(t):.1f}' for _, t in pairs)}); staircase minus {clock}: {_spread(gain, '+.1f')} "
            f"points of time saved at {_spread(cost, '+.2f')} points of test accuracy (mean ± standard error)")


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def mean_profile(profiles: list[list[float]]) -> list[float]:
    """Step-time profiles (relative step time per frozen-prefix length) averaged entry by entry."""
    return [_mean([p[i] for p in profiles]) for i in range(len(profiles[0]))]


def _spread(xs: list[float], fmt: str) -> str:
    """``mean ± standard error`` of paired differences (the mean alone for one seed)."""
    if len(xs) < 2:
        return format(_mean(xs), fmt)
    sd = (sum((x - _mean(xs)) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5
    return f"{format(_mean(xs), fmt)} ± {sd / len(xs) ** 0.5:.2f}"


def equal_clock_start(runs: list[Path], candidates=(0.0, 0.05, 0.1, 0.15, 0.2, CLOCK_START)) -> float:
    """The start of the `linear` clock (Composer's form: all units frozen at the end) whose step
    time, priced by the step-time profile of ``runs`` (mean; no cache), saves what the staircase's
    saves: the clock to beat at equal savings, not only the suite's."""
    summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
    profiles = [s["step_time_profile"]["prefix"] for s in summaries if s.get("step_time_profile")]
    if not profiles:
        raise ConfigError(f"none of {[str(r) for r in runs]} recorded a step-time profile, so no clock can be "
                          "priced against the staircase")
    prefix = mean_profile(profiles)
    moments = next(s["policy"]["moments"] for s in summaries if s["method"] == "staircase")
    target = schedule_saving(lambda k: moments[k - 1], prefix)
    below = len(prefix) - 1
    return min(candidates, key=lambda start: abs(schedule_saving(lambda k: clock_moment(k, start, below), prefix)
                                                 - target))


def report(rows: list[dict]) -> None:
    print(table(rows))
    print(harmless(rows))
    profiles = [r["step_time_prefix"] for r in rows if r.get("step_time_prefix")]
    if not profiles:
        print("no run recorded a step-time profile, so no schedule is priced")
    else:
        prefix = mean_profile(profiles)
        staircase = harmless_schedule(rows)
        print(f"priced by the runs' step-time profile (mean of {len(profiles)}; no cache): the clock saves "
              f"{100 * schedule_saving(clock_moment, prefix):.1f}% of step time; freezing each k at its harmless "
              f"moment ({', '.join(f'{k} at {t:g}' for k, t in staircase.items())}) "
              f"{100 * schedule_saving(lambda k: staircase_moment(staircase, k), prefix):.1f}%")


def clock_moment(k: int, start: float = CLOCK_START, below: int = UNITS_BELOW_HEAD) -> float:
    """When a `linear` clock from ``start`` to the end (the suite's from 0.25) has frozen ``k`` of
    ``below`` units."""
    return start + (1 - start) * k / below


def harmless(rows: list[dict], tolerance: float = TOLERANCE) -> str:
    """Per k, the earliest moment tried from which freezing k units costs at most ``tolerance``
    points of mean test accuracy at every later moment tried too, beside the clock's moment."""
    lines, moments = [], harmless_moments(rows, tolerance)
    for k in GRID:
        tried = sorted({r["t"] for r in rows if r["k"] == k})
        if not tried:
            continue  # not trained yet
        when = f"from {moments[k]:g}" if k in moments else f"at none of {', '.join(f'{t:g}' for t in tried)}"
        lines.append(f"first {k} units: harmless (within {tolerance:g} points) {when}; "
                     f"the clock freezes them at {clock_moment(k):.2f}")
    return "\n".join(lines)


def harmless_moments(rows: list[dict], tolerance: float = TOLERANCE) -> dict[int, float]:
    """k -> the earliest moment tried from which freezing k units stayed within ``tolerance``."""
    out = {}
    for k, moments in GRID.items():
        means = {t: [r["delta_test"] for r in rows if r["k"] == k and r["t"] == t] for t in moments}
        means = {t: sum(d) / len(d) for t, d in means.items() if d}
        ok = [t for t in means if all(means[u] >= -tolerance for u in means if u >= t)]
        if ok:
            out[k] = min(ok)
    return out


def harmless_schedule(rows: list[dict]) -> dict[int, float]:
    """A schedule from the harmless moments: k units freeze at the earliest harmless moment of k or of
    any larger k (freezing more units already freezes these), else at the clock's moment."""
    moments = harmless_moments(rows)
    out = {}
    for k in GRID:
        later = [moments[j] for j in GRID if j >= k and j in moments]
        out[k] = min(later + [clock_moment(k)])
    return out


def staircase_moment(schedule: dict[int, float], unit_count: int) -> float:
    """When the schedule has frozen ``unit_count`` units: with the smallest k it names that covers them."""
    return schedule[min(k for k in schedule if k >= unit_count)]


def schedule_saving(moment_of, prefix: list[float], points: int = 10_000) -> float:
    """Share of step time a schedule saves over training, from a step-time profile without the cache:
    ``prefix[k]`` is a step's time with the first k units frozen, relative to a full step, and
    ``moment_of(k)`` the fraction of training at which the k-th unit freezes."""
    moments = [moment_of(k) for k in range(1, len(prefix))]
    total = 0.0
    for i in range(points):
        x = (i + 0.5) / points
        total += prefix[sum(m <= x for m in moments)]
    return 1 - total / points


def table(rows: list[dict]) -> str:
    """Mean Δ test (Δ validation) accuracy and time ratio per run kind, over seeds."""
    names = list(dict.fromkeys(r["run"] for r in rows))
    lines = ["| run | seeds | Δ test acc (each seed) | Δ val acc (each seed) | time / baseline |", "|---|---|---|---|---|"]
    for name in names:
        mine = sorted((r for r in rows if r["run"] == name), key=lambda r: r["seed"])
        mean = lambda key: sum(r[key] for r in mine) / len(mine)  # noqa: E731
        each = lambda key: ", ".join(f"{r[key]:+.2f}" for r in mine)  # noqa: E731
        lines.append(f"| {name} | {len(mine)} | {mean('delta_test'):+.2f} ({each('delta_test')}) | "
                     f"{mean('delta_val'):+.2f} ({each('delta_val')}) | {mean('time_ratio_to_baseline'):.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    run_script(main)
