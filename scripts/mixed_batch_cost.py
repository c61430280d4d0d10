"""What a training step costs when only part of its batch is stored in the activation cache.

    PYTHONPATH=. python scripts/mixed_batch_cost.py --model vgg --frozen 5 --boundary 4 \
        [--stored 0 0.11 0.5 1 --rounds 15 --threads 1]

The payoff rule behind ``--cache auto`` weighs copies per sample: a fill's write against what a
replay saves. A step whose batch is part stored, part not also runs the prefix in two pieces and
joins the rows, a cost per step the rule does not weigh. This script measures it where it matters
most, right after the cache starts serving, when few of a batch's samples are stored yet: with
units ``0..frozen-1`` frozen and boundary ``--boundary`` served, it times training steps (forward,
backward, SGD update) of the model served from a cache in which a fraction ``--stored`` of each
batch is stored, interleaved with the same steps of the plain model, on Fashion-MNIST batches of
128, and prints the median cached step over the median plain one. A fraction 0 is a step that
only fills (every sample computed and written), 1 the steady state.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from frostline import Freezer  # noqa: E402
from frostline.exploit.cache import ActivationCache, CachedPrefixModel  # noqa: E402
from frostline.exploit.payoff import CachePayoff  # noqa: E402
from frostline.lab.data import load_dataset  # noqa: E402
from frostline.lab.zoo import create_model  # noqa: E402

BATCH = 128


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vgg")
    ap.add_argument("--frozen", type=int, default=5, help="units frozen (a prefix)")
    ap.add_argument("--boundary", type=int, default=4, help="units served from the cache (at most --frozen)")
    ap.add_argument("--stored", type=float, nargs="+", default=[0.0, 0.11, 0.5, 1.0])
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if not 1 <= args.boundary <= args.frozen or not all(0 <= f <= 1 for f in args.stored) or args.rounds < 4:
        sys.exit("need 1 <= --boundary <= --frozen, --stored fractions in [0, 1] and --rounds >= 4")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = load_dataset("fashion-mnist", val_size=0, train_subset=args.samples, seed=0)
    x_all, y_all = data.train.get_batch(torch.arange(len(data.train)))
    n = len(x_all)
    model = create_model(args.model, num_classes=data.num_classes, in_channels=data.in_channels,
                         image_size=data.image_size)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    freezer = Freezer(model, opt, "linear", total_steps=1000, example_input=x_all[:BATCH])
    if args.frozen >= len(freezer.units):
        sys.exit(f"{args.model} has {len(freezer.units)} units: freeze fewer than that")
    for i in range(args.frozen):
        freezer.freeze(i)

    def served(fraction: float) -> tuple[CachedPrefixModel, int]:
        """A cached model serving the boundary, with the first ``fraction`` of the samples stored."""
        payoff = CachePayoff(n, n // BATCH, 10**6, 2**40)
        payoff.decisions[args.boundary] = {"served_from_step": 0}
        for k in range(args.boundary + 1, args.frozen + 1):  # serve the boundary asked for, not a deeper one
            payoff.decisions[k] = {"declined_at_step": 0, "why": "held at --boundary"}
        cached = CachedPrefixModel(model, freezer, ActivationCache(n), payoff=payoff)
        stored = round(fraction * n)
        with torch.no_grad():
            for start in range(0, stored, 512):
                idx = torch.arange(start, min(stored, start + 512))
                cached(idx, x_all[idx])
        return cached, stored

    def step(forward, y) -> float:
        t0 = time.perf_counter()
        nn.functional.cross_entropy(forward(), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    caches = {f: served(f) for f in args.stored}
    g = torch.Generator().manual_seed(1)
    plain, times = [], {f: [] for f in args.stored}
    for _ in range(args.rounds):
        idx = torch.randperm(n, generator=g)[:BATCH]
        plain.append(step(lambda: model(x_all[idx]), y_all[idx]))
        for f, (cached, stored) in caches.items():
            hits = round(f * BATCH) if stored < n else BATCH
            idx = torch.cat([torch.randperm(max(stored, 1), generator=g)[:hits],
                             stored + torch.randperm(n - stored, generator=g)[:BATCH - hits]]) if stored < n \
                else torch.randperm(n, generator=g)[:BATCH]
            times[f].append(step(lambda: cached(idx, x_all[idx]), y_all[idx]))
            if stored < n:  # the step stored its misses: forget them, so the next batch has the same fraction
                cached.cache.levels[idx[idx >= stored].numpy()] = 0
    base = statistics.median(plain[3:])  # the first rounds warm the allocator
    print(f"{args.model}, units 0..{args.frozen - 1} frozen, boundary {args.boundary} served, batch {BATCH}, "
          f"{args.threads} thread(s), median of {args.rounds - 3} rounds: plain step {1000 * base:.1f} ms")
    for f in args.stored:
        print(f"  {100 * f:5.1f}% of the batch stored: cached step / plain step {statistics.median(times[f][3:]) / base:.3f}")


if __name__ == "__main__":
    main()
