r"""Does a unit frozen *out of order* lose less accuracy if its BatchNorm keeps batch statistics?

A frozen unit is pinned to eval mode, so its BatchNorm normalises with the running statistics it
had when it froze. When units *before* it keep training (SmartFRZ and the CKA oracle may freeze in
any order), its input distribution keeps moving and those statistics go stale. The alternative is
to let the frozen unit's BatchNorm layers run in train mode (batch statistics, running statistics
still updated; its weights stay frozen, dropout would stay off). This script trains the zoo
``resnet`` on Fashion-MNIST with one fixed out-of-order freeze, once per BatchNorm mode, for
several seeds, and prints the test accuracy of each (results: ``docs/benchmarks.md``)::

    nice -n 10 python scripts/measure_frozen_bn.py --seeds 0 1 2 3 4 5 6 7 --jobs 2 --out docs/results/frozen_bn.json
    nice -n 10 python scripts/measure_frozen_bn.py --seeds 0 1 2 3 --units block1_2 block2_1 block2_2 --at 0.15 \
        --jobs 2 --out docs/results/frozen_bn_three_early.json

The two modes of one seed share everything up to the freeze (data order, initialisation, the
model at the freeze step), so the per-seed difference is far less noisy than either accuracy;
both are reported. Each run uses one thread; ``--jobs 2`` runs two at once. Runs already in the
``--out`` file with the same settings are reused, so seeds can be added later.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import torch
from torch import nn

from frostline import Freezer
from frostline.policies import FreezePolicy
from frostline.lab.data import load_dataset
from frostline.lab.loop import evaluate, iterate_batches
from frostline.lab.zoo import create_model

MODES = ("eval", "train")


class FreezeAt(FreezePolicy):
    """Freeze ``units`` once ``fraction`` of training is done: a fixed out-of-order decision."""

    name = "freeze-at"

    def __init__(self, units, fraction):
        super().__init__()
        self.units, self.fraction = set(units), fraction

    def decide(self, progress):
        return set(self.units) if progress.fraction >= self.fraction else set()


def batch_stats_for_bn(model: nn.Module, unit) -> None:
    """Let the BatchNorm layers of a frozen ``unit`` follow the model's mode again. The Freezer's
    eval pin runs first (a forward pre-hook); this hook, registered after it, runs next."""

    def follow_model(module, args):
        module.training = model.training

    for m in unit.modules:
        for sub in m.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                sub.register_forward_pre_hook(follow_model)


def run_one(args: dict) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(args["seed"])
    data = load_dataset("fashion-mnist", val_size=0, train_subset=args["train_subset"], seed=args["seed"])
    model = create_model("resnet", num_classes=data.num_classes, in_channels=data.in_channels,
                         image_size=data.image_size)
    steps_per_epoch = math.ceil(len(data.train) / args["batch_size"])
    total = steps_per_epoch * args["epochs"]
    optimizer = torch.optim.SGD(model.parameters(), lr=args["lr"], momentum=0.9, weight_decay=5e-4, nesterov=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    names = [n for n, _ in model.named_children()]
    units = [names.index(u) for u in args["units"]]
    freezer = Freezer(model, optimizer, FreezeAt(units, args["at"]), total, units=names)
    t0 = time.perf_counter()
    model.train()
    step = 0
    for epoch in range(args["epochs"]):
        for _, x, y in iterate_batches(data.train, args["batch_size"], shuffle=True, seed=args["seed"] * 1000 + epoch):
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            for i in freezer.step():
                if args["mode"] == "train":
                    batch_stats_for_bn(model, freezer.units[i])
            step += 1
    acc = evaluate(model, data.test, 512, torch.device("cpu"))
    frozen_step = freezer.timeline[0].step if freezer.timeline else None
    return {"seed": args["seed"], "mode": args["mode"], "test_accuracy": acc, "frozen_at_step": frozen_step,
            "steps": step, "seconds": round(time.perf_counter() - t0, 1)}


def _earlier_runs(path: str | None, settings: dict) -> dict:
    """(seed, mode) -> result of the runs already in ``path`` made with the same ``settings``."""
    try:
        saved = json.loads(Path(path).read_text())
    except (TypeError, OSError, json.JSONDecodeError):
        return {}
    if any(saved["settings"].get(k) != v for k, v in settings.items()):
        return {}
    return {(r["seed"], r["mode"]): r for r in saved["results"]}


def summarise(results: list[dict]) -> dict:
    def mean_std(values):
        return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}

    by = {(r["mode"], r["seed"]): r["test_accuracy"] for r in results}
    seeds = sorted({r["seed"] for r in results})
    out = {mode: mean_std([by[mode, s] for s in seeds]) for mode in MODES}
    out["train_minus_eval"] = mean_std([by["train", s] - by["eval", s] for s in seeds])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--units", nargs="+", default=["block2_1"], help="units frozen out of order (default: block2_1)")
    p.add_argument("--at", type=float, default=0.3, help="training fraction at which they freeze (default: 0.3)")
    p.add_argument("--train-subset", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--jobs", type=int, default=1, help="runs at once, one thread each")
    p.add_argument("--out", default=None, help="JSON file for the per-seed results and the summary")
    a = p.parse_args(argv)
    settings = {"units": a.units, "at": a.at, "train_subset": a.train_subset, "epochs": a.epochs,
                "batch_size": a.batch_size, "lr": a.lr}
    done = _earlier_runs(a.out, settings)
    jobs = [{**settings, "seed": s, "mode": m} for s in a.seeds for m in MODES if (s, m) not in done]
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        for r in pool.map(run_one, jobs):
            print(f"seed {r['seed']} {r['mode']:5s}: {r['test_accuracy']:.2f}%  ({r['seconds']} s)", flush=True)
            done[r["seed"], r["mode"]] = r
    results = [done[key] for key in sorted(done)]
    seeds = sorted({r["seed"] for r in results})
    summary = summarise(results)
    for key, v in summary.items():
        print(f"{key:16s} {v['mean']:.2f} ± {v['std']:.2f}")
    if a.out:
        command = (f"python scripts/measure_frozen_bn.py --seeds {' '.join(map(str, seeds))} --units {' '.join(a.units)} "
                   f"--at {a.at} --train-subset {a.train_subset} --epochs {a.epochs} --batch-size {a.batch_size} "
                   f"--lr {a.lr} --jobs {a.jobs} --out {a.out}")
        payload = {"command": command,
                   "settings": {**settings, "seeds": seeds, "model": "resnet", "dataset": "fashion-mnist",
                                "optimizer": "sgd nesterov momentum 0.9, weight decay 5e-4, cosine lr",
                                "test_set": "full 10,000-image test set"},
                   "machine": {"torch": torch.__version__, "python": platform.python_version(),
                               "cpu": platform.processor() or platform.machine()},
                   "results": results, "summary": summary}
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"results: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
