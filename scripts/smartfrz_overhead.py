"""SmartFRZ's decision time per optimizer step, alone (no training), on the zoo's VGG-11 with the
standard suite's epoch length (430 steps) and the shipped predictor.

    OMP_NUM_THREADS=1 python scripts/smartfrz_overhead.py [--steps 1720] [--stages-per-epoch 4]

No gradient steps are taken, so the weights would sit still and the predictor would (rightly)
freeze every unit at its first decision, leaving nothing to decide about. Instead every parameter
drifts along a fixed random direction, by its own RMS over an epoch: a unit still learning, which
stays active, so every decision judges every unit (the script checks that none froze).

Prints the Freezer's ``decision_time_s`` per step (snapshot gathers, history, predictor passes):
divide by a training step's time on your machine for the overhead the suite reports. It is split
into the snapshots (reading the sampled weights, keeping them in the history: every
``snapshots_per_epoch``-th of an epoch) and the decisions (the predictor's passes), because the
two scale differently: snapshots with the epoch, decisions with ``--stages-per-epoch``.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import frostline  # noqa: E402
from frostline.lab.zoo import create_model  # noqa: E402

STEPS_PER_EPOCH = 430


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1720, help=f"optimizer steps ({STEPS_PER_EPOCH} per epoch)")
    parser.add_argument("--stages-per-epoch", type=int, default=1, help="decisions per epoch")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create_model("vgg", num_classes=10, in_channels=1, image_size=28)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    policy = frostline.SmartFRZ(steps_per_epoch=STEPS_PER_EPOCH, stages_per_epoch=args.stages_per_epoch)
    freezer = frostline.Freezer(model, optimizer, policy, total_steps=8 * STEPS_PER_EPOCH,
                                example_input=torch.randn(2, 1, 28, 28))
    spent = {"decisions": 0.0}

    def timed(fn):
        def call(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            spent["decisions"] += time.perf_counter() - t0
            return out
        return call

    policy.freeze_probabilities = timed(policy.freeze_probabilities)
    drift = [(p, torch.randn_like(p) * p.detach().square().mean().sqrt() / STEPS_PER_EPOCH)
             for p in model.parameters()]
    for _ in range(args.steps):
        with torch.no_grad():
            for p, d in drift:
                p.add_(d)
        freezer.step()
    if freezer.frozen:
        raise SystemExit(f"units froze ({sorted(freezer.frozen)}): the measurement no longer judges every unit")
    per_step = 1e6 / args.steps
    print(f"{args.steps} steps, {policy.stages_done} decisions over {policy.num_units - 1} units: "
          f"{freezer.decision_time_s:.3f} s deciding, {per_step * freezer.decision_time_s:.0f} us per step "
          f"(decisions {per_step * spent['decisions']:.0f}, snapshots and the rest "
          f"{per_step * (freezer.decision_time_s - spent['decisions']):.0f})")


if __name__ == "__main__":
    main()
