"""How far a unit's BatchNorm running statistics lag its weights when the unit freezes mid-run.

    python scripts/frozen_bn_staleness.py [--epochs-before 1] [--seed 0]

A frozen unit runs in eval mode, so its BatchNorm layers normalise with their running statistics
from then on. Those are an exponential average of past batches (EfficientNet-Lite0's momentum is
0.01: about the last hundred steps), taken while the weights were still moving, so at the moment
of freezing they describe weights a hundred steps old, not the frozen ones. This script fine-tunes
EfficientNet-Lite0 as the fine-tuning suites do (12,000 Fashion-MNIST images at 64 x 64, AdamW,
lr 1e-3, batch 64, cosine decay over 6 epochs) for ``--epochs-before`` epochs, where SmartFRZ makes
its first freezes, and then, for every unit, feeds one held-out batch of 256 images through the
units below it in eval mode and compares the unit's output with running statistics (what a
freeze now would give) against the same with statistics re-estimated for the current weights on
1,024 training images (what the weights compute): the relative difference, and the share of ReLU6
outputs clipped at 6 in each (clipped values carry no information to the units above). Results:
``benchmarks/frozen-bn-staleness/``; what re-estimating them over a cool-down did to accuracy:
docs/benchmarks.md (it cost accuracy, so the Freezer leaves the statistics as they are).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from frostline.lab.data import load_dataset  # noqa: E402
from frostline.lab.pretrained import efficientnet_lite0  # noqa: E402


def batches(dataset, size: int, *, shuffle: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=size, shuffle=shuffle, generator=g, drop_last=shuffle)


def clipped_share(module: nn.Module, run) -> float:
    """Share of the ReLU6 outputs inside ``module`` at 6 during ``run()``."""
    seen = [0, 0]

    def hook(_, __, out):
        seen[0] += int((out >= 6).sum())
        seen[1] += out.numel()

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.ReLU6)]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return seen[0] / seen[1] if seen[1] else math.nan


def reestimated(unit: nn.Module, inputs: list[torch.Tensor]) -> nn.Module:
    """A copy of ``unit`` whose BatchNorm statistics are the plain average over ``inputs`` with
    its current weights."""
    fresh = copy.deepcopy(unit)
    for m in fresh.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    fresh.train()
    with torch.no_grad():
        for x in inputs:
            fresh(x)
    return fresh.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs-before", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the table as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_dataset("fashion-mnist", val_size=1000, train_subset=12000, seed=args.seed)
    model = efficientnet_lite0(num_classes=data.num_classes, in_channels=data.in_channels, image_size=data.image_size)
    epochs, batch = 6, 64
    steps_per_epoch = len(data.train) // batch
    total = epochs * steps_per_epoch
    run_steps = int(round(args.epochs_before * steps_per_epoch))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    model.train()
    step = 0
    while step < run_steps:
        for b in batches(data.train, batch, shuffle=True, seed=args.seed * 1000 + step):
            loss = nn.functional.cross_entropy(model(b[0]), b[1])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step >= run_steps:
                break
    model.eval()
    probe = next(iter(batches(data.val, 256, shuffle=False, seed=0)))[0]
    calib = [b[0] for _, b in zip(range(16), batches(data.train, 64, shuffle=True, seed=12345))]
    rows = []
    h, hs = probe, calib
    with torch.no_grad():
        for name, unit in model.named_children():
            fresh = reestimated(unit, hs)
            stale_out = unit(h)
            fresh_out = fresh(h)
            diff = float((stale_out - fresh_out).norm() / fresh_out.norm().clamp_min(1e-12))
            rows.append({"unit": name, "relative_difference": diff,
                         "clipped_running": clipped_share(unit, lambda: unit(h)),
                         "clipped_reestimated": clipped_share(fresh, lambda: fresh(h))})
            print(f"{name:8s} output with running statistics vs re-estimated: {diff:6.1%} apart; ReLU6 clipped "
                  f"{rows[-1]['clipped_running']:.2%} vs {rows[-1]['clipped_reestimated']:.2%}", flush=True)
            if name == "head":
                break
            h, hs = stale_out, [unit(x) for x in hs]
    result = {"epochs_before": args.epochs_before, "steps": run_steps, "total_steps": total, "seed": args.seed,
              "units": rows, "command": "python scripts/frozen_bn_staleness.py " + " ".join(sys.argv[1:])}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
