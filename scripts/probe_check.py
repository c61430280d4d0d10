r"""How well does a full-speed probe stand in for a run's own full speed? Baselines made with one.

A ``none`` run made with ``--speed-probe`` knows its true full speed: its mean step time over the
whole run. This script prints, per run, how far three estimates of it land from that mean: the
probe alone (a fresh model's steps after training), the run's first ``--stretch`` steps alone
(what a run that froze there would have of its own), and their mean, the bracket that
``frostline bench compare`` uses for runs made with a probe::

    python scripts/probe_check.py --stretch 25 benchmarks/finetune/probe-check/fashion-mnist/efficientnet-lite0/none/seed*
    python scripts/probe_check.py --stretch 40 benchmarks/finetune/probe-check/fine-foods/minilm/none/seed*

A positive error overstates the full step, so it overstates a freezing run's time saved.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from frostline.errors import ConfigError, run_script
from frostline.lab.report import read_metrics, read_summary


def errors(run: Path, stretch: int) -> dict[str, float]:
    summary = read_summary(run)
    probe = (summary.get("full_speed_probe") or {}).get("step_s")
    if summary.get("method") != "none" or not probe:
        raise ConfigError(f"{run}: not a `none` run made with --speed-probe; only those know their own full speed")
    steps = [m for m in read_metrics(run) if m.get("kind") == "step"]
    first = steps[0]  # its time holds start-up costs: the run's own measure starts after it, as here
    end = next((m for m in steps if m["step"] >= first["step"] + stretch), None)
    if end is None:
        raise ConfigError(f"{run}: its log has no {stretch} steps after its first line; pass a smaller --stretch")
    early = (end["train_time_s"] - first["train_time_s"]) / (end["step"] - first["step"])
    mean = summary["train_time_s"] / summary["total_steps"]
    return {"mean_step_s": mean, "probe": probe / mean - 1, "stretch": early / mean - 1,
            "bracket": (probe + early) / 2 / mean - 1}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--stretch", type=int, default=25, help="full-speed steps a freezing run has before its first freeze")
    args = ap.parse_args(argv)
    print(f"| run | mean step s | probe | first {args.stretch} steps | bracket |")
    print("|---|---|---|---|---|")
    for run in args.runs:
        e = errors(run, args.stretch)
        print(f"| {run} | {e['mean_step_s']:.3f} | {100 * e['probe']:+.1f}% | {100 * e['stretch']:+.1f}% | "
              f"{100 * e['bracket']:+.1f}% |")
    return 0


if __name__ == "__main__":
    run_script(main)
