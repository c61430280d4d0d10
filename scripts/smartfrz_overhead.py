"""SmartFRZ's decision time per optimizer step, alone (no training), on the zoo's VGG-11 with the
standard suite's epoch length (430 steps) and the shipped predictor at a threshold that never
freezes, so every unit is sampled for the whole span.

    OMP_NUM_THREADS=1 python scripts/smartfrz_overhead.py [--steps 1720]

Prints the Freezer's ``decision_time_s`` per step (snapshot gathers, history, predictor passes):
divide by a training step's time on your machine for the overhead the suite reports.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import frostline  # noqa: E402
from frostline.lab.zoo import create_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1720, help="optimizer steps (430 per epoch)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = create_model("vgg", num_classes=10, in_channels=1, image_size=28)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    policy = frostline.SmartFRZ(steps_per_epoch=430, threshold=0.999999)
    freezer = frostline.Freezer(model, optimizer, policy, total_steps=3440, example_input=torch.randn(2, 1, 28, 28))
    for _ in range(args.steps):
        freezer.step()
    print(f"{args.steps} steps: {freezer.decision_time_s:.3f} s deciding, "
          f"{1e6 * freezer.decision_time_s / args.steps:.0f} us per step")


if __name__ == "__main__":
    main()
