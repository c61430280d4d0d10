"""How close the activation cache comes to the ideal on models that are not a chain.

    OMP_NUM_THREADS=1 PYTHONPATH=. python scripts/cache_overhead.py [--batch 32] [--repeats 15]

For a timm ResNet-18 and a timm ViT-tiny (the random-init builders of tests/outside_models.py,
32 x 32 images), with the first k units frozen and every sample of the batch already stored,
times round-robin in one process:

* ``cached``: a training step through ``CachedPrefixModel`` (the model's own forward, the prefix
  skipped by hooks, the stored inputs swapped in at unit k);
* ``suffix``: the *suffix-only ideal*, a hand-written module that runs only the trainable units
  (and the head's glue) on the stored inputs, on a copy of the model;
* ``full``: the plain training step with nothing frozen, for scale.

Times are this process's CPU time (one thread), so other jobs on the machine disturb them less.
Prints the median of the paired ratios cached/suffix (goal: <= 1.05), the medians in ms, and a
second copy of the suffix-only step against the first (the noise floor).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import outside_models as om  # noqa: E402

import frostline  # noqa: E402
from frostline.exploit.cache import ActivationCache, CachedPrefixModel  # noqa: E402


class ResNetSuffix(nn.Module):
    """timm ResNet from ``layer3`` on (units 5.. when conv1, layer1 and layer2 are frozen)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, h):
        return self.m.forward_head(self.m.layer4(self.m.layer3(h)))


class ViTSuffix(nn.Module):
    """timm ViT from ``blocks[start]`` on."""

    def __init__(self, m, start):
        super().__init__()
        self.m, self.start = m, start

    def forward(self, h):
        return self.m.forward_head(self.m.norm(self.m.blocks[self.start:](h)))


CASES = {  # name -> (builder, frozen units k, suffix module on a copy)
    "timm-resnet18": (om.timm_resnet18, 5, ResNetSuffix),
    "timm-vit": (om.timm_vit_tiny, 3, lambda m: ViTSuffix(m, 2)),
}


def _step(fn, params, y):
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(fn(), y).backward()
        opt.step()

    return step


def measure(name: str, batch: int, repeats: int, warmup: int = 3) -> dict[str, float]:
    build, k, make_suffix = CASES[name]
    model, make_batch = build()
    data = make_batch(batch, 0)
    x, y = data["x"], data["y"]
    full = copy.deepcopy(model).train()
    suffix = make_suffix(copy.deepcopy(model)).train()
    suffix2 = make_suffix(copy.deepcopy(model)).train()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    freezer = frostline.Freezer(model, opt, frostline.NoFreezing(), 1, example_input=x[:2])
    for i in range(k):
        freezer.freeze(i)
    cached = CachedPrefixModel(model, freezer, ActivationCache(batch))
    idx = torch.arange(batch)
    cached(idx, x)  # fills the cache (and checks the replayed forward once)
    assert cached._cutter.cut(k).name == ("layer3.0" if "resnet" in name else "blocks.2"), cached._cutter.cut(k).name
    slot, = cached._cutter.cut(k).layout  # one stored input: the hidden state entering unit k
    h = cached.cache.stores[k].data[idx].reshape(batch, *slot.shape).clone()
    steps = {
        "cached": _step(lambda: cached(idx, x), [p for p in model.parameters() if p.requires_grad], y),
        "suffix": _step(lambda: suffix(h), [p for p in suffix.parameters()], y),
        "full": _step(lambda: full(x), full.parameters(), y),
        "suffix_again": _step(lambda: suffix2(h), [p for p in suffix2.parameters()], y),  # the noise floor
    }
    times = {n: [] for n in steps}
    for r in range(warmup + repeats):
        for n, fn in steps.items():
            t0 = time.process_time()  # this process's CPU time: other jobs on the machine disturb it less
            fn()
            if r >= warmup:
                times[n].append(time.process_time() - t0)
    hits = cached.cache.stats["hits"]
    assert hits >= batch * (warmup + repeats), cached.cache.stats
    return {
        "cached_over_suffix": statistics.median(a / b for a, b in zip(times["cached"], times["suffix"])),
        "noise": statistics.median(a / b for a, b in zip(times["suffix_again"], times["suffix"])),
        **{f"{n}_ms": 1000 * statistics.median(ts) for n, ts in times.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--models", nargs="*", default=list(CASES))
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {args.batch}, "
          f"median of {args.repeats} round-robin repeats")
    for name in args.models:
        r = measure(name, args.batch, args.repeats)
        print(f"{name:14s} cached/suffix-only {r['cached_over_suffix']:.3f}  cached {r['cached_ms']:.1f} ms  "
              f"suffix-only {r['suffix_ms']:.1f} ms  full {r['full_ms']:.1f} ms  (suffix-only/itself {r['noise']:.3f})")


if __name__ == "__main__":
    main()
