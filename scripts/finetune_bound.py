r"""What a speed-up asks of freezing: for each frozen prefix, how late it may freeze and still reach it.

A run with a step-time profile (every freezing run of ``frostline train`` profiles its steps after
training, on its own machine and in its own configuration) knows what a step costs with the first
k units frozen, and with their forward replayed from the activation cache. This script takes such
a run and answers, for every k: if the first k units froze together at a moment T of an E-epoch run
and were cached from then on, what is the end-to-end speed-up, and what is the latest T that
still reaches ``--target`` (2× by default)? ::

    python scripts/finetune_bound.py benchmarks/finetune/cells/fine-foods/minilm/linear-start0_cache/seed0
    python scripts/finetune_bound.py --target 1.5 benchmarks/finetune/cells/fashion-mnist/efficientnet-lite0/linear-start0_cache/seed0

The model of a run, in epochs of full-speed steps: T epochs at full speed, then every sample's
first visit after the freeze computes the frozen prefix once and stores its output (one epoch of
steps at the frozen, uncached cost), and every later visit replays it (the cached cost)::

    time = T + f_k + (E - T - 1) * c_k        (T <= E - 1; later: T + (E - T) * f_k)

It is an upper bound for a method that freezes k units at T: a schedule that freezes them one at
a time, later, or not as a prefix saves less. The cache's own copies (microseconds per sample) and
evaluation are left out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from frostline.errors import ConfigError, run_script
from frostline.exploit.timing import StepTimeModel
from frostline.lab.machine import label
from frostline.lab.report import read_summary


def run_time(t: float, epochs: int, frozen: float, cached: float) -> float:
    """Training time, in epochs of full-speed steps, when a prefix freezes after ``t`` epochs."""
    if t >= epochs - 1:
        return t + (epochs - t) * frozen
    return t + frozen + (epochs - t - 1) * cached


def latest_freeze(epochs: int, frozen: float, cached: float, target: float) -> float | None:
    """The latest freezing moment (epochs) that still gives ``target`` speed-up; None if none does."""
    budget = epochs / target
    if run_time(0.0, epochs, frozen, cached) > budget:
        return None
    # solves run_time(t) = budget for t <= E - 1; a replay that saves nothing (cached >= 1, a noisy
    # profile) makes every t up to E - 1 cost the same, so the answer lies in the later branch
    t = (budget - frozen - (epochs - 1) * cached) / (1 - cached) if cached < 1 else float("inf")
    if t <= epochs - 1:
        return t
    return (budget - epochs * frozen) / (1 - frozen)


def bound_table(summary: dict, target: float, epochs: int | None = None) -> list[dict]:
    if not summary.get("step_time_profile"):
        raise ConfigError("this run has no step-time profile: pass a finished run of a freezing method "
                          "(`frostline train` profiles its step times after training)")
    profile = StepTimeModel(**summary["step_time_profile"])
    epochs = epochs or summary["epochs"]
    rows = []
    for k in range(1, len(profile.unit_names)):  # the head is never frozen
        frozen, cached = profile.step_cost(range(k)), profile.step_cost(range(k), cached_prefix=k)
        latest = latest_freeze(epochs, frozen, cached, target)
        rows.append({"k": k, "first_trainable": profile.unit_names[k], "frozen": frozen, "cached": cached,
                     "speedup_from_start": epochs / run_time(0.0, epochs, frozen, cached),
                     "latest_fraction": None if latest is None else latest / epochs})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="folder of a finished run with a step-time profile")
    parser.add_argument("--target", type=float, default=2.0, help="end-to-end speed-up asked for")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the run to plan (default: the run's)")
    args = parser.parse_args(argv)
    if args.target <= 1 or (args.epochs is not None and args.epochs < 1):
        raise ConfigError("--target must be above 1 and --epochs at least 1")
    summary = read_summary(args.run)
    epochs = args.epochs or summary["epochs"]
    rows = bound_table(summary, args.target, epochs)
    machine = label(summary["machine"]) if summary.get("machine") else summary.get("device", "?")
    print(f"{summary['model']} on {summary['dataset']}, {epochs:g} epochs, step times profiled on {machine}; "
          f"target {args.target:g}x")
    print("| k frozen | first trainable | frozen step | cached step | speed-up, frozen from the start | "
          f"latest freeze for {args.target:g}x |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        latest = "never enough" if r["latest_fraction"] is None else f"{r['latest_fraction']:.0%} of training"
        print(f"| {r['k']} | {r['first_trainable']} | {r['frozen']:.3f} | {r['cached']:.3f} | "
              f"{r['speedup_from_start']:.2f}x | {latest} |")


if __name__ == "__main__":
    run_script(main)
