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
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout

from frostline.errors import ConfigError, run_script  # noqa: E402
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
RESULTS = ROOT / "benchmarks" / "freeze-cost" / "vgg-fmnist.json"
#: Test accuracy (points, mean over seeds) a freeze may cost and count as harmless: the threshold
#: calibration's line.
TOLERANCE = 0.1


def prefix_args(k: int, t: float) -> list[str]:
    """`linear` freezing exactly the first ``k`` units from fraction ``t`` (its depth is
    ``floor(level * units below the head)``; the half unit keeps the floor off a rounding edge)."""
    level = 1.0 if k == UNITS_BELOW_HEAD else (k + 0.5) / UNITS_BELOW_HEAD
    return ["--method", "linear", "--freeze-start", str(t), "--freeze-end", str(round(t + 0.001, 6)),
            "--freeze-level", str(level)]


def train(out: Path, seed: int, method: list[str]) -> dict:
    summary = out / "summary.json"
    if not (summary.exists() and json.loads(summary.read_text()).get("status") == "finished"):
        cmd = [sys.executable, "-m", "frostline", "train", "--model", MODEL, "--dataset", DATASET, *COMMON,
               "--seed", str(seed), *method, "--out", str(out)]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
    s = json.loads(summary.read_text())
    frozen = {u: round(f, 4) for u, f in s["frozen_at"].items() if f is not None}
    return {"val_accuracy": s["val_accuracy"], "test_accuracy": s["test_accuracy"], "train_time_s": s["train_time_s"],
            "time_saved_in_run": in_run_saving(s, read_metrics(out)), "flops_saved": s.get("flops_saved"),
            "frozen_at": frozen, "machine": label(s["machine"]) if s.get("machine") else None,
            "step_time_prefix": (s.get("step_time_profile") or {}).get("prefix")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--work", default=str(ROOT / "runs" / "freeze-cost"), help="folder for the runs")
    parser.add_argument("--report-only", action="store_true", help="print the tables from the committed figures")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        raise ConfigError(f"--seeds lists a seed twice: {args.seeds}")
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
        cases = [(f"linear-start{CLOCK_START:g}", None, None, CLOCK)] + [
            (f"prefix{k}-at{t:g}", k, t, prefix_args(k, t)) for k, ts in GRID.items() for t in ts]
        for name, k, t, method in cases:
            r = train(work / f"seed{seed}" / name, seed, method)
            rows.append({"run": name, "k": k, "t": t, "seed": seed, **r,
                         "delta_test": round(r["test_accuracy"] - base["test_accuracy"], 2),
                         "delta_val": round(r["val_accuracy"] - base["val_accuracy"], 2),
                         "time_ratio_to_baseline": round(r["train_time_s"] / base["train_time_s"], 4),
                         "baseline_machine": base["machine"]})
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"model": MODEL, "dataset": DATASET, "settings": COMMON, "grid": GRID,
                                   "command": "python scripts/freeze_cost.py --seeds " + " ".join(
                                       map(str, sorted({r["seed"] for r in rows}))),
                                   "runs": rows}, indent=1) + "\n")
    report(rows)


def report(rows: list[dict]) -> None:
    print(table(rows))
    print(harmless(rows))
    profiles = [r["step_time_prefix"] for r in rows if r.get("step_time_prefix")]
    if not profiles:
        print("no run recorded a step-time profile, so no schedule is priced")
    else:
        prefix = [sum(p[i] for p in profiles) / len(profiles) for i in range(len(profiles[0]))]
        staircase = harmless_schedule(rows)
        print(f"priced by the runs' step-time profile (mean of {len(profiles)}; no cache): the clock saves "
              f"{100 * schedule_saving(clock_moment, prefix):.1f}% of step time; freezing each k at its harmless "
              f"moment ({', '.join(f'{k} at {t:g}' for k, t in staircase.items())}) "
              f"{100 * schedule_saving(lambda k: staircase_moment(staircase, k), prefix):.1f}%")


def clock_moment(k: int) -> float:
    """When the suite's `linear-start0.25` clock has frozen ``k`` units."""
    return CLOCK_START + (1 - CLOCK_START) * k / UNITS_BELOW_HEAD


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
    moments = [moment_of(k) for k in range(1, UNITS_BELOW_HEAD + 1)]
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
