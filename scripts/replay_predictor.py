"""Replay a SmartFRZ predictor on collected runs, offline: when would each unit freeze, and would
the labels have agreed at that moment?

    python scripts/replay_predictor.py runs/predictor/vgg-mnist/seed2 [--predictor FILE] [--threshold P]

For every unit below the head, the policy's rule is applied to the recorded windows (the last 30
snapshots at each labelled stage): the unit freezes at the first decision whose P(freeze) exceeds
the threshold, deciding once per epoch (``--every 4``, the policy's default with four labelled
stages per epoch) or at every labelled stage (``--every 1``). Each entry reads
``freeze fraction/first "freeze" label`` and ``!`` marks a freeze the labels call premature.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from frostline.lab.predictor.collect import load_collected, total_steps  # noqa: E402
from frostline.policies.smartfrz.predictor import batch_windows, load_predictor, window_context, window_features  # noqa: E402


def probabilities(model, ds, window: int = 30) -> torch.Tensor:
    """(stages, units below the head) P(freeze) from the recorded snapshots."""
    steps, labels = ds["snapshot_steps"], ds["labels"]
    out = torch.zeros(labels.shape[0], labels.shape[1] - 1)
    total = total_steps(ds)
    with torch.no_grad():
        for k, stage_step in enumerate(ds["stage_steps"].tolist()):
            end = int((steps <= stage_step).sum())
            windows = [ds["snapshots"][max(0, end - window):end, u] for u in range(labels.shape[1] - 1)]
            x, mask = batch_windows([window_features(w) for w in windows])
            context = torch.stack([window_context(w, stage_step / total) for w in windows])
            out[k] = torch.softmax(model(x, mask, context), dim=1)[:, 1]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="folders written by `frostline predictor collect`")
    parser.add_argument("--predictor", help="predictor file (default: the shipped one)")
    parser.add_argument("--threshold", type=float, help="P(freeze) to freeze above (default: the predictor's)")
    parser.add_argument("--every", type=int, nargs="+", default=[4, 1], help="decide every N labelled stages")
    args = parser.parse_args()
    model, _ = load_predictor(args.predictor)
    threshold = model.threshold if args.threshold is None else args.threshold
    print(f"threshold {threshold:.3f}")
    for path in args.runs:
        ds = load_collected(path)
        labels, stage_steps = ds["labels"], ds["stage_steps"]
        total = int(ds["snapshot_steps"][-1])
        p = probabilities(model, ds)
        for every in args.every:
            entries, premature = [], 0
            for u in range(labels.shape[1] - 1):
                decided = next((k for k in range(every - 1, len(stage_steps), every) if p[k, u] > threshold), None)
                ones = (labels[:, u] == 1).nonzero().flatten().tolist()
                first = f"{int(stage_steps[ones[0]]) / total:.2f}" if ones else "never"
                if decided is None:
                    entries.append(f"-/{first}")
                    continue
                wrong = int(labels[decided, u]) != 1
                premature += wrong
                entries.append(f"{int(stage_steps[decided]) / total:.2f}{'!' if wrong else ''}/{first}")
            print(f"{path}  every {every}: {premature} premature  " + " ".join(entries))


if __name__ == "__main__":
    main()
