r"""Is replaying a frozen prefix from a float16 or bfloat16 cache lossless enough?

The activation cache stores each sample's prefix output in ``--cache-dtype`` (float32 by default):
half the bytes in float16 or bfloat16, at the price of rounding what the trainable rest sees. This
script loads a finished run's model (``model.pt`` and ``config.json`` of a ``frostline train``
folder), runs its whole test split once, and at every boundary a frozen prefix can end at rounds the
prefix output to each dtype, runs the rest, and reports how many predictions change, the test
accuracy, and the largest change of a logit::

    python scripts/cache_dtype_check.py benchmarks/finetune/cells/fine-foods/minilm/none/seed0

It measures the replayed *forward*; training on rounded inputs also rounds what the trainable
units' gradients see, by the same relative amount.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import torch

from frostline.errors import run_script
from frostline.lab.loop import iterate_batches
from frostline.lab.reference import load_finished_run

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a finished `frostline train` folder (config.json, model.pt)")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--samples", type=int, default=None, help="only the first N test samples (default: all)")
    args = ap.parse_args(argv)
    cfg, model, data = load_finished_run(args.run, args.samples)
    torch.set_num_threads(cfg.get("threads") or 1)
    units = list(model.children())
    boundaries = range(1, len(units) - 1)
    agree = {(k, d): 0 for k in boundaries for d in DTYPES}
    right = dict.fromkeys(agree, 0)
    drift = dict.fromkeys(agree, 0.0)
    correct = total = 0
    with torch.no_grad():
        for _, x, y in iterate_batches(data.test, args.batch_size, shuffle=False):
            h = [x]
            for u in units:
                h.append(u(h[-1]))
            ref = h[-1].argmax(1)
            correct += int((ref == y).sum())
            total += len(y)
            for k in boundaries:
                for name, dt in DTYPES.items():
                    out = h[k].to(dt).float()
                    for u in units[k:]:
                        out = u(out)
                    agree[k, name] += int((out.argmax(1) == ref).sum())
                    right[k, name] += int((out.argmax(1) == y).sum())
                    drift[k, name] = max(drift[k, name], float((out - h[-1]).abs().max()))
    print(f"{cfg['model']} on {cfg['dataset']}, {total} test samples: float32 accuracy {100 * correct / total:.2f}%\n")
    print("| boundary (first trainable unit) | cache dtype | predictions changed | test accuracy % | max logit change |")
    print("|---|---|---|---|---|")
    unit_names = [n for n, _ in model.named_children()]
    for k in boundaries:
        for name in DTYPES:
            print(f"| {unit_names[k]} | {name} | {total - agree[k, name]} | {100 * right[k, name] / total:.2f} | "
                  f"{drift[k, name]:.2g} |")
    return 0


if __name__ == "__main__":
    run_script(main)
