"""Where SmartFRZ's decision time goes *inside* a training run, per call, on the standard suite's
VGG-11 run (full Fashion-MNIST split, batch 128, two threads, four decisions per epoch, 100-step
cool-down at threshold 0.8: the `smartfrz+cache+4stages+cooldown` cell), for a few epochs.

    python scripts/smartfrz_overhead_in_run.py [--epochs 2] [--out runs/smartfrz-overhead]

`scripts/smartfrz_overhead.py` times the same code alone, with nothing else running; between
training steps each small tensor operation costs several times more (the step has just run through
the caches), so the two differ, and this one is what a run's ``decision_time_s`` adds up. Prints,
per kind of call, how many there were and their mean time: the snapshot read (``Tailor``: scattered
reads of 1,024 weights per unit), keeping it (``History.add``), and the decisions
(``SmartFRZ.freeze_probabilities``: the predictor's pass, ``forward_projected``, with its inputs,
``History.inputs``, which first projects the snapshots new since the last decision,
``History._catch_up``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from frostline.lab.config import TrainConfig  # noqa: E402
from frostline.lab.recipe import train  # noqa: E402
from frostline.policies.smartfrz import SmartFRZ, Tailor  # noqa: E402
from frostline.policies.smartfrz.history import History  # noqa: E402
from frostline.policies.smartfrz.predictor import SmartFRZPredictor  # noqa: E402

CALLS = ((Tailor, "sample_units", "snapshot read (Tailor.sample_units)"),
         (History, "add", "snapshot kept (History.add)"),
         (History, "_catch_up", "new snapshots projected (History._catch_up)"),
         (History, "inputs", "decision inputs, projections included (History.inputs)"),
         (SmartFRZPredictor, "forward_projected", "predictor pass (forward_projected)"),
         (SmartFRZ, "freeze_probabilities", "decision, inputs included (freeze_probabilities)"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--out", default="runs/smartfrz-overhead")
    args = parser.parse_args()
    spent, calls = defaultdict(float), Counter()
    for owner, name, label in CALLS:
        def timed(*a, _fn=getattr(owner, name), _label=label, **k):
            t0 = time.perf_counter()
            out = _fn(*a, **k)
            spent[_label] += time.perf_counter() - t0
            calls[_label] += 1
            return out
        setattr(owner, name, timed)
    summary = train(TrainConfig(model="vgg", dataset="fashion-mnist", method="smartfrz", epochs=args.epochs, threads=2,
                                cache="memory", cooldown=100, stages_per_epoch=4, freeze_threshold=0.8,
                                progress=False, log_every=50, out=args.out))
    print(f"{summary['steps_done']} steps, {summary['train_time_s']:.1f} s training, {summary['decision_time_s']:.3f} s "
          f"deciding ({100 * summary['decision_overhead']:.3f}% of training-step time)")
    for _, _, label in CALLS:
        print(f"  {label}: {calls[label]} calls, {1e6 * spent[label] / max(calls[label], 1):.0f} us each")


if __name__ == "__main__":
    main()
