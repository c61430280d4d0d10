r"""How much of a paired accuracy difference is noise? Two finished runs, one test set.

Two models tested on the same samples differ in accuracy only through the samples they answer
differently. This script loads the ``model.pt`` of two ``frostline train`` folders (same dataset
and split), counts the test samples only the first gets right (``b``) and only the second (``c``),
and prints the accuracy difference with its paired standard error ``sqrt(b + c - (b - c)^2 / n) / n``
(the spread of the difference over resampled test sets)::

    python scripts/paired_noise.py benchmarks/finetune/cells/fine-foods/minilm/none/seed0 \
        benchmarks/finetune/cells/fine-foods/minilm/none/seed1

With two baselines of different seeds it says how far apart two equally good fine-tunings land.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import torch

from frostline.errors import ConfigError, run_script
from frostline.lab.loop import iterate_batches
from frostline.lab.reference import load_finished_run


def predictions(run: Path, batch_size: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    cfg, model, data = load_finished_run(run)
    preds, labels = [], []
    with torch.no_grad():
        for _, x, y in iterate_batches(data.test, batch_size, shuffle=False):
            preds.append(model(x).argmax(1))
            labels.append(y)
    return cfg, torch.cat(preds), torch.cat(labels)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("first", type=Path)
    ap.add_argument("second", type=Path)
    ap.add_argument("--batch-size", type=int, default=250)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg_a, pa, ya = predictions(args.first, args.batch_size)
    cfg_b, pb, yb = predictions(args.second, args.batch_size)
    if cfg_a["dataset"] != cfg_b["dataset"] or not torch.equal(ya, yb):
        raise ConfigError("the two runs were not tested on the same samples: compare runs of one dataset and split")
    n = len(ya)
    right_a, right_b = pa == ya, pb == yb
    b, c = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    diff = 100 * (c - b) / n
    se = 100 * math.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n
    print(f"{n} test samples: first {100 * right_a.float().mean():.2f}%, second {100 * right_b.float().mean():.2f}%")
    print(f"answered differently: {int((pa != pb).sum())}; right only in the first {b}, only in the second {c}")
    print(f"second - first: {diff:+.2f} points, paired standard error {se:.2f} points")
    return 0


if __name__ == "__main__":
    run_script(main)
