"""How much of SmartFRZ's "converged" label can each signal explain? Leave-one-run-out ROC AUC on
collected runs (1.0: the signal ranks every "freeze" sample above every "keep"; 0.5: chance).

    python scripts/label_signals.py runs/predictor/*/seed*   [--predictor FILE]

Signals, per (unit, labelled stage), over the window of the last 30 snapshots:

- *progress*: the fraction of training done, and nothing about the unit;
- *weights*: four statistics of the unit's tailored trajectory (log net displacement and log path
  length, both over the newest weights' RMS; their ratio; the log ratio of the window's second-half
  path to its first-half path), combined by a logistic regression fitted on the other runs;
- *progress + weights*: both, same regression;
- *predictor*: the predictor's P(freeze) (trained on some of these runs: flattering there).

If *progress* alone rivals the predictor, the labels mostly encode *when* in training a sample
was taken, and no weight-only predictor can freeze much earlier than a schedule would.
"""

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from frostline.lab.predictor.collect import load_collected, with_datasets  # noqa: E402
from frostline.lab.predictor.fit import run_name  # noqa: E402
from frostline.lab.predictor.collect import total_steps  # noqa: E402
from frostline.policies.smartfrz.predictor import batch_windows, load_predictor, window_context, window_features  # noqa: E402

WINDOW = 30


def auc(score: torch.Tensor, label: torch.Tensor) -> float:
    pos, neg = score[label == 1], score[label == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).double().mean()
    ties = (pos[:, None] == neg[None, :]).double().mean()
    return float(greater + 0.5 * ties)


def window_stats(w: torch.Tensor) -> list[float]:
    rms = w[-1].square().mean().sqrt().clamp_min(1e-12)
    steps = (w[1:] - w[:-1]).norm(dim=1) / rms
    disp = float((w[-1] - w[0]).norm() / rms)
    path = float(steps.sum())
    half = len(steps) // 2
    return [math.log(disp + 1e-12), math.log(path + 1e-12), disp / max(path, 1e-12),
            math.log((float(steps[half:].sum()) + 1e-12) / (float(steps[:half].sum()) + 1e-12))]


def table(ds, predictor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, 5) [progress, 4 weight statistics], (rows,) labels, (rows,) predictor P(freeze)."""
    labels, snaps, steps = ds["labels"], ds["snapshots"].float(), ds["snapshot_steps"]
    total = total_steps(ds)
    rows, ys, windows, contexts = [], [], [], []
    for k, stage in enumerate(ds["stage_steps"].tolist()):
        end = int((steps <= stage).sum())
        if end < WINDOW:
            continue
        for u in range(labels.shape[1] - 1):  # the head is never frozen
            if labels[k, u] < 0:
                continue
            w = snaps[end - WINDOW:end, u]
            rows.append([stage / total, *window_stats(w)])
            ys.append(int(labels[k, u]))
            windows.append(window_features(w))
            contexts.append(window_context(w, stage / total))
    with torch.no_grad():
        x, mask = batch_windows(windows)
        p = torch.softmax(predictor(x, mask, torch.stack(contexts)), dim=1)[:, 1]
    return torch.tensor(rows), torch.tensor(ys), p


def fit_logistic(x: torch.Tensor, y: torch.Tensor):
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-9)
    w = torch.zeros(x.shape[1], dtype=x.dtype, requires_grad=True)
    b = torch.zeros(1, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits((x - mu) / sd @ w + b, y.to(x.dtype))
        loss.backward()
        return loss

    opt.step(closure)
    return lambda z: ((z - mu) / sd @ w + b).detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="folders written by `frostline predictor collect`")
    parser.add_argument("--predictor", help="predictor file (default: the shipped one)")
    args = parser.parse_args()
    predictor, meta = load_predictor(args.predictor)
    data = {}
    for path in with_datasets(args.runs):
        ds = load_collected(path)
        data[run_name(ds)] = table(ds, predictor)
    signals = {"progress": [0], "weights": [1, 2, 3, 4], "progress + weights": [0, 1, 2, 3, 4]}
    print(f"predictor {meta['path']} (sha256 {meta['sha256']}); leave-one-run-out ROC AUC of the freeze label\n")
    print("| run | samples | freeze | " + " | ".join(signals) + " | predictor |")
    print("|---|---|---|" + "---|" * (len(signals) + 1))
    pooled: dict[str, list[torch.Tensor]] = {name: [] for name in [*signals, "predictor"]}
    ys = []
    for held, (x, y, p) in data.items():
        cells = []
        for name, cols in signals.items():
            train_x = torch.cat([v[0][:, cols] for k, v in data.items() if k != held]).double()
            train_y = torch.cat([v[1] for k, v in data.items() if k != held])
            score = fit_logistic(train_x, train_y)(x[:, cols].double())
            pooled[name].append(score)
            cells.append(auc(score, y))
        pooled["predictor"].append(p)
        ys.append(y)
        cells.append(auc(p, y))
        print(f"| {held} | {len(y)} | {int(y.sum())} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    y = torch.cat(ys)
    mean = [sum(auc(s, yy) for s, yy in zip(pooled[name], ys)) / len(ys) for name in pooled]
    print(f"| mean over runs | {len(y)} | {int(y.sum())} | " + " | ".join(f"{m:.3f}" for m in mean) + " |")


if __name__ == "__main__":
    main()
