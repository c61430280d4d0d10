"""How the CKA-oracle rule's settings behave on real CKA trajectories.

    python scripts/cka_rule_sweep.py runs/predictor/*/seed*/

reads the per-stage CKA to another seed's finished run that `frostline predictor collect` recorded
(4 stages per epoch, plus each unit's CKA at the first step) and, for each (window, tolerance,
floor) of the init-normalised rule, prints: the mean training fraction at which a unit first
becomes ready (never-ready units count as 1.0), the share of units ever ready, and *flips*: (unit,
stage) pairs labelled ready although the unit is not ready at some later stage. It describes the
labels; which setting to use is decided by the accuracy the resulting freezes cost (the bench).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from frostline.policies.cka_oracle.cka_oracle import cka_ready
from frostline.lab.predictor.collect import load_collected, with_datasets


def sweep(paths):
    runs = [load_collected(p) for p in with_datasets(paths)]
    print(f"runs: {', '.join(r['provenance']['model'] + '/' + r['provenance']['dataset'] for r in runs)}")
    print("| window | tolerance | floor | mean first-ready fraction | units ever ready | flips / ready labels |")
    print("|---|---|---|---|---|---|")
    for window in (3, 5, 9):
        for tolerance in (0.02, 0.03, 0.05, 0.1):
            for floor in (0.6, 0.8, 0.85, 0.9):
                firsts, ever, flips, readies, units = [], 0, 0, 0, 0
                for r in runs:
                    cka, init = r["cka"], r["cka_init"]
                    stages = cka.shape[0]
                    for u in range(cka.shape[1] - 1):
                        ready = [cka_ready(cka[: k + 1, u].tolist(), float(init[u]), window, tolerance, floor)
                                 for k in range(stages)]
                        units += 1
                        first = next((k for k, v in enumerate(ready) if v), None)
                        firsts.append(1.0 if first is None else (first + 1) / stages)
                        ever += first is not None
                        readies += sum(ready)
                        flips += sum(1 for k, v in enumerate(ready) if v and not all(ready[k:]))
                print(f"| {window} | {tolerance:g} | {floor} | {sum(firsts) / len(firsts):.3f} | {ever}/{units} | "
                      f"{flips}/{readies} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sweep(sys.argv[1:])
