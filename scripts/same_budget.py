r"""What does a longer run with freezing buy at the cost of a shorter one without? Pairs of runs.

Each pair is a freezing run and the ``none`` run of a shorter regime, same seed. The freezing
run's cost is counted in full-model steps: its steps times its time relative to its own full
speed (the measure behind the bench's *time saved*: a ratio inside the run, so two runs made on
different days or machines can be set side by side). The shorter baseline's cost is its steps::

    python scripts/same_budget.py \
        benchmarks/finetune-long/cells/fashion-mnist/efficientnet-lite0/linear-start0-end0.75_cache/seed0 \
        benchmarks/finetune/cells/fashion-mnist/efficientnet-lite0/none/seed0

(more pairs may follow). A cost ratio near 1 means the same compute bought the accuracy shown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from frostline.errors import ConfigError, run_script
from frostline.lab.compare import in_run_saving
from frostline.lab.report import read_metrics, read_summary


def compare(run: Path, baseline: Path) -> dict:
    long, short = read_summary(run), read_summary(baseline)
    if short.get("method") != "none":
        raise ConfigError(f"{baseline}: not a `none` run; the second folder of a pair is the shorter baseline")
    if long.get("seed") != short.get("seed"):
        raise ConfigError(f"{run} (seed {long.get('seed')}) and {baseline} (seed {short.get('seed')}): pair runs of one seed")
    saved = in_run_saving(long, read_metrics(run))
    if saved is None:
        raise ConfigError(f"{run}: no full speed of its own to measure it against (made without --speed-probe?)")
    cost = long["total_steps"] * (1 - saved)
    return {"seed": long["seed"], "epochs": long["epochs"], "short_epochs": short["epochs"], "cost_steps": cost,
            "short_steps": short["total_steps"], "accuracy": long["test_accuracy"],
            "short_accuracy": short["test_accuracy"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pairs", nargs="+", type=Path, help="RUN SHORTER_BASELINE, repeated")
    args = ap.parse_args(argv)
    if len(args.pairs) % 2:
        raise ConfigError("pass folders in pairs: a freezing run, then the shorter regime's `none` run of its seed")
    rows = [compare(run, baseline) for run, baseline in zip(args.pairs[::2], args.pairs[1::2])]
    print("| seed | freezing run: epochs, cost in full steps | shorter baseline: epochs, steps | cost ratio | "
          "test acc % (freezing) | test acc % (shorter baseline) | Δ |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['epochs']:g}, {r['cost_steps']:.0f} | {r['short_epochs']:g}, {r['short_steps']} | "
              f"{r['cost_steps'] / r['short_steps']:.2f} | {r['accuracy']:.2f} | {r['short_accuracy']:.2f} | "
              f"{r['accuracy'] - r['short_accuracy']:+.2f} |")
    return 0


if __name__ == "__main__":
    run_script(main)
