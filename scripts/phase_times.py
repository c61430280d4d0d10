"""Step time through a run, phase by phase: where a freezing run spends its time.

Reads a run's ``metrics.jsonl`` (the training clock and the frozen-unit count it logs) and prints,
for every ``--every`` logged rows, the first step of the stretch, how many units were frozen there
and the mean milliseconds per step over it. It shows what the run's total hides: a stretch where
the cache is extending a growing prefix can be slower than the full model before the frozen
stretch pays it back.

    python scripts/phase_times.py RUN_DIR [RUN_DIR ...] [--every 20]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
from frostline.lab.report import read_metrics  # noqa: E402


def phases(run: Path, every: int) -> list[tuple[int, int, float]]:
    """``(first step, frozen units, ms per step)`` for each stretch of ``every`` logged steps."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"error: {run} has no metrics.jsonl; give the folder of a `frostline train` run")
    rows = [row for row in read_metrics(run) if row.get("kind") == "step"]
    if len(rows) < 2:
        raise SystemExit(f"error: {path} logged fewer than two training steps")
    out = []
    for i in range(0, len(rows) - 1, every):
        a, b = rows[i], rows[min(i + every, len(rows) - 1)]
        out.append((a["step"], a["frozen"], 1000 * (b["train_time_s"] - a["train_time_s"]) / (b["step"] - a["step"])))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (each with a metrics.jsonl)")
    parser.add_argument("--every", type=int, default=20, help="logged rows per stretch (default: 20)")
    args = parser.parse_args(argv)
    if args.every < 1:
        parser.error("--every must be at least 1")
    for run in args.runs:
        stretches = phases(run, args.every)
        print(f"{run}: step:frozen:ms/step")
        print("  " + " ".join(f"{s}:{f}:{ms:.1f}" for s, f, ms in stretches))
    return 0


if __name__ == "__main__":
    sys.exit(main())
