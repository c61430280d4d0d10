"""What a freezing method costs per step *before* it has frozen anything, against ``none``.

    PYTHONPATH=. python scripts/method_overhead.py --suite finetune --model efficientnet-lite0 \
        --variant freezeout+cache [--blocks 12 --block-steps 5 --threads 2]

The bench's in-run *time saved* compares a run with its own steps before anything froze, so a
constant per-step overhead of the method (its optimizer layout, its per-step bookkeeping, a cache
that records while nothing is frozen) is invisible to it; pairing with the baseline run sees it,
but also sees the machine's drift between the two runs. This script sets up both runs exactly as
the suite's cells do (same settings, seed 0) in one process and trains them in alternating
blocks of steps, so drift hits both alike, and prints the median of the paired block ratios
(method / none) with the per-step medians. It stops if the method freezes a unit (its steps would
no longer be full steps): pick a method whose first freeze is later than ``blocks x block-steps``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from frostline.lab.compare import SUITES, VARIANTS, cell_config  # noqa: E402
from frostline.lab.loop import iterate_batches  # noqa: E402
from frostline.lab.recipe import set_up, train_step  # noqa: E402


def make_run(suite, model: str, variant: str, out: Path, threads: int):
    cfg = cell_config(suite, model, variant, 0, out, threads=threads)  # main() checked the model is there
    run = set_up(cfg)
    batches = iterate_batches(run.train_set, cfg.batch_size, shuffle=True, seed=cfg.seed * 100_003)
    return run, batches


def block(run, batches, steps: int) -> float:
    """Seconds per step over ``steps`` training steps (the recipe's own step clock)."""
    before = run.state.train_time
    for _ in range(steps):
        idx, x, y = next(batches)
        train_step(run, idx, x, y, len(y))
        if run.freezer.frozen:
            sys.exit(f"{run.cfg.method} froze units {sorted(run.freezer.frozen)} at step {run.state.step}: "
                     "fewer --blocks or --block-steps")
    return (run.state.train_time - before) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="finetune", choices=sorted(SUITES))
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--variant", default="freezeout+cache", choices=sorted(VARIANTS))
    ap.add_argument("--blocks", type=int, default=12)
    ap.add_argument("--block-steps", type=int, default=5)
    ap.add_argument("--warmup-steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    suite = SUITES[args.suite]
    models = [m for _, m, _ in suite.combos()]
    if args.model not in models:
        sys.exit(f"suite {args.suite} has no model {args.model!r}: pick one of {', '.join(models)}")
    if VARIANTS[args.variant]["method"] == "none":
        sys.exit("the variant is compared with none: pick a freezing variant")
    if min(args.blocks, args.block_steps) < 1 or args.warmup_steps < 0:
        sys.exit("--blocks and --block-steps must be at least 1, --warmup-steps at least 0")
    with tempfile.TemporaryDirectory() as tmp:
        runs = {v: make_run(suite, args.model, v, Path(tmp) / v.replace("+", "_"), args.threads)
                for v in ("none", args.variant)}
        for run, batches in runs.values():
            block(run, batches, args.warmup_steps)
        times = {v: [] for v in runs}
        for b in range(args.blocks):
            order = list(runs) if b % 2 == 0 else list(reversed(runs))  # neither always goes first
            for v in order:
                times[v].append(block(*runs[v], args.block_steps))
    ratios = [m / n for m, n in zip(times[args.variant], times["none"])]
    q = statistics.quantiles(ratios, n=4)
    print(f"{args.model} ({args.suite} settings), {args.blocks} blocks of {args.block_steps} steps each, round-robin, "
          f"{args.threads} threads, nothing frozen:")
    print(f"  none: {1000 * statistics.median(times['none']):.1f} ms/step; {args.variant}: "
          f"{1000 * statistics.median(times[args.variant]):.1f} ms/step")
    print(f"  {args.variant} / none, median of paired blocks: {statistics.median(ratios):.3f} "
          f"(quartiles {q[0]:.3f} - {q[2]:.3f})")


if __name__ == "__main__":
    main()
