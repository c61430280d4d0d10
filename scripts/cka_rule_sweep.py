"""How the CKA-oracle rule's settings behave on real CKA trajectories (the measurement behind the
defaults window=3, epsilon=1e-3, floor=0.9).

    python scripts/cka_rule_sweep.py runs/predictor/*/

reads the per-stage CKA to the reference that `frostline predictor collect` recorded (4 stages per
epoch) and, for each (window, epsilon, floor), prints: the mean training fraction at which a unit
first becomes ready (never-ready units count as 1.0), the share of units ever ready, and *flips*:
(unit, stage) pairs labelled ready although the unit is not ready at some later stage: a freezing
rule should not call a unit finished and then see it move again.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import torch

from frostline.policies.cka_oracle.cka_oracle import cka_ready
from frostline.lab.predictor.collect import load_collected


def sweep(paths):
    runs = [load_collected(p) for p in paths]
    print(f"runs: {', '.join(r['provenance']['model'] + '/' + r['provenance']['dataset'] for r in runs)}")
    print("| window | epsilon | floor | mean first-ready fraction | units ever ready | flips / ready labels |")
    print("|---|---|---|---|---|---|")
    for window in (2, 3, 4):
        for epsilon in (1e-3, 1e-4, 1e-5):
            for floor in (0.8, 0.9, 0.95):
                firsts, ever, flips, readies, units = [], 0, 0, 0, 0
                for r in runs:
                    cka = r["cka"]
                    stages = cka.shape[0]
                    for u in range(cka.shape[1] - 1):
                        ready = [cka_ready(cka[: k + 1, u].tolist(), window, epsilon, floor) for k in range(stages)]
                        units += 1
                        first = next((k for k, v in enumerate(ready) if v), None)
                        firsts.append(1.0 if first is None else (first + 1) / stages)
                        ever += first is not None
                        readies += sum(ready)
                        flips += sum(1 for k, v in enumerate(ready) if v and not all(ready[k:]))
                print(f"| {window} | {epsilon:g} | {floor} | {sum(firsts) / len(firsts):.3f} | {ever}/{units} | "
                      f"{flips}/{readies} |")


if __name__ == "__main__":
    sweep(sys.argv[1:] or ["runs/predictor/resnet-fashion-mnist-seed0"])
