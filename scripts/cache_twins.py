"""Is a cached run slower than its uncached twin? Both trained in one process, block by block.

    PYTHONPATH=. python scripts/cache_twins.py --suite cache --model vgg --variant linear-start0.25 \
        [--seeds 0 1 --block-steps 10 --save benchmarks/cache/twins/vgg-linear-start0.25.json]

The cache suite compares a cached cell with its uncached twin across two separate runs, each
normalised by its own full-speed steps. That cannot see the machine drift *after* the first
freeze, and on a noisy CPU two seeds of one cell went opposite ways (0.985 and 1.061). This script
sets up the cell (``--variant``, as the suite runs it) and its twin (the same settings with
``cache=off``) in one process and trains both to the end, alternating blocks of ``--block-steps``
steps (which goes first alternates too), so drift hits both alike. The twins compute the same
things (same seed, batches, dropout draws and freezes; the cache replays the stored rows exactly),
which the script checks at the end: the same units frozen at the same steps (what makes them twins) and whether the
parameters are bit-identical (a batch served in two parts runs the prefix's convolutions at other
batch sizes, whose kernels may round differently in the last bit; an adaptive method can then
decide otherwise, and such a pair is not a pair).

It prints, per seed, the whole run's time ratio (cached over uncached, sums of the paired blocks),
the median of the block ratios with their quartiles, the ratio over the blocks in which the
cache served a prefix, and a control: the ratio over the blocks before anything froze, where the
twins do the same work. Pairing cancels drift but not a burst of other work that lands on a few
blocks; a control more than a percent or two from 1 says one did, and the pair should be run again
with the machine to itself. ``--save`` writes them with every block's times and both twins'
freezes, to commit beside a report.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from frostline.exploit.payoff import RULE_VERSION  # noqa: E402
from frostline.lab.compare import SUITES, VARIANTS, cell_config  # noqa: E402
from frostline.lab.loop import iterate_batches  # noqa: E402
from frostline.lab.recipe import set_up, train_step  # noqa: E402


def make_run(suite, model: str, variant: str, seed: int, out: Path, cache: str | None = None):
    return set_up(cell_config(suite, model, variant, seed, out, **({"cache": cache} if cache else {})))


def steps(run):
    """The run's training steps, epoch after epoch as ``frostline train`` takes them (evaluation
    and checkpoints left out: they are not training time); yields after each step."""
    cfg, state = run.cfg, run.state
    while state.step < run.total_steps:
        for idx, x, y in iterate_batches(run.train_set, cfg.batch_size, shuffle=True, seed=cfg.seed * 100_003 + state.epoch):
            if state.step >= run.total_steps:
                break
            train_step(run, idx, x, y, min(cfg.batch_size, len(run.train_set) - state.batch * cfg.batch_size))
            yield
        state.epoch, state.batch = state.epoch + 1, 0


def block(run, stepper, n: int) -> tuple[float, int]:
    """Seconds of training over the next ``n`` steps (the recipe's own step clock), and how many
    of them ran with a prefix served from the cache."""
    before, served = run.state.train_time, 0
    for _ in range(n):
        served += bool(run.cached and run.cached.boundary())  # what this step will serve
        if next(stepper, "end") == "end":
            break
    return run.state.train_time - before, served


def twins(suite, model: str, variant: str, seed: int, block_steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cached = make_run(suite, model, variant, seed, Path(tmp) / "cached")
        plain = make_run(suite, model, variant, seed, Path(tmp) / "plain", cache="off")
        if cached.cached is None:
            sys.exit(f"{variant} trains {model} without the activation cache (cache=off, or method none): pick a "
                     "variant with cache memory or auto")
        runs = {"cached": (cached, steps(cached)), "plain": (plain, steps(plain))}
        # dropout draws from the global generator: each twin keeps its own stream, as if it ran alone
        # (set up the same way, both start from the same state), so the two draw the same masks
        rng = {name: torch.get_rng_state() for name in runs}
        blocks = []
        while cached.state.step < cached.total_steps:
            order = ["cached", "plain"] if len(blocks) % 2 == 0 else ["plain", "cached"]
            t = {}
            for name in order:
                torch.set_rng_state(rng[name])
                t[name] = block(*runs[name], block_steps)
                rng[name] = torch.get_rng_state()
            blocks.append({"first_step": cached.state.step - block_steps, "cached_s": t["cached"][0],
                           "plain_s": t["plain"][0], "served_steps": t["cached"][1]})
        freezes = {name: [[e.unit, e.step] for e in run.freezer.timeline]
                   for name, (run, _) in runs.items()}
        same_freezes = freezes["cached"] == freezes["plain"]
        same_parameters = all(torch.equal(a, b) for a, b in zip(cached.model.state_dict().values(),
                                                                 plain.model.state_dict().values()))
        payoff = cached.cached.payoff.summary() if cached.cached.payoff is not None else None
        stats = dict(cached.cached.cache.stats)
    ratios = [b["cached_s"] / b["plain_s"] for b in blocks]
    served = [b for b in blocks if b["served_steps"]]
    # before anything froze the twins do the same work, so their ratio there is the machine's own
    # noise: far from 1 says a burst of other work landed on one twin's blocks (run it again alone)
    first = min((step for _, step in freezes["cached"] + freezes["plain"]), default=cached.total_steps)
    control = [b for b in blocks if b["first_step"] + block_steps <= first]
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return {
        "model": model, "variant": variant, "seed": seed, "block_steps": block_steps, "steps": cached.total_steps,
        "same_freezes": same_freezes, "identical_parameters": same_parameters,
        "freezes": freezes,  # (unit, step) in the order each twin froze them
        "time_ratio": sum(b["cached_s"] for b in blocks) / sum(b["plain_s"] for b in blocks),
        "median_block_ratio": statistics.median(ratios), "block_ratio_quartiles": [q[0], q[2]],
        "served_blocks": len(served),
        "control_ratio": (sum(b["cached_s"] for b in control) / sum(b["plain_s"] for b in control)) if control else None,
        "control_blocks": len(control),
        "served_ratio": (sum(b["cached_s"] for b in served) / sum(b["plain_s"] for b in served)) if served else None,
        "cache_stats": stats, "payoff_rule": RULE_VERSION if payoff is not None else None, "payoff": payoff,
        "blocks": blocks,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="cache", choices=sorted(SUITES))
    ap.add_argument("--model", default="vgg")
    ap.add_argument("--variant", default="linear-start0.25", choices=sorted(VARIANTS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--block-steps", type=int, default=10)
    ap.add_argument("--save", type=Path, help="write the results (a JSON list, one entry per seed) here")
    args = ap.parse_args()
    suite = SUITES[args.suite]
    models = [m for _, m, _ in suite.combos()]
    if args.model not in models:
        sys.exit(f"suite {args.suite} has no model {args.model!r}: pick one of {', '.join(models)}")
    if args.block_steps < 1:
        sys.exit("--block-steps must be at least 1")
    results = []
    for seed in args.seeds:
        r = twins(suite, args.model, args.variant, seed, args.block_steps)
        results.append(r)
        served = "no block" if r["served_ratio"] is None else f"{r['served_blocks']} blocks: {r['served_ratio']:.3f}"
        control = "none" if r["control_ratio"] is None else f"{r['control_ratio']:.3f} over {r['control_blocks']} blocks"
        print(f"{args.model} {args.variant} seed {seed} ({r['steps']} steps, blocks of {args.block_steps}): "
              f"cached / uncached {r['time_ratio']:.3f} (block median {r['median_block_ratio']:.3f}, quartiles "
              f"{r['block_ratio_quartiles'][0]:.3f}-{r['block_ratio_quartiles'][1]:.3f}); while serving ({served}); "
              f"control before any freeze ({control}); "
              f"hits {r['cache_stats'].get('hits', 0)}; same freezes: {r['same_freezes']}, bit-identical parameters: "
              f"{r['identical_parameters']}", flush=True)
        if args.save:
            args.save.parent.mkdir(parents=True, exist_ok=True)
            args.save.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
