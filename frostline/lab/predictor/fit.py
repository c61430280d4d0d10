"""Offline training and evaluation of the SmartFRZ predictor on collected runs.

Held-out data is split *by run*: every (unit, stage) sample of a held-out run stays out of
training, so the reported precision/recall/F1 say how the predictor does on a training run it has
never seen, not on neighbouring snapshots of runs it has. Training is class-balanced (the loss
weights each class by the inverse of its frequency).

The tailored positions are a random sample of a unit's weights, so their order means nothing and
a weight's trajectory says as much about convergence with its sign flipped: every batch is seen
with its feature columns permuted and sign-flipped at random (the same for every snapshot of a
window). This teaches the network functions of the trajectory, not of positions, from a corpus of
a few thousand windows.

A wrong "freeze" costs accuracy, a wrong "keep" only time, so the decision threshold is not 0.5:
it is the lowest P(freeze) at which the held-out (validation) runs reach a precision of
:data:`TARGET_PRECISION`, stored in the predictor file. Every report shows the accuracy of the
constant answer (the majority label) beside the predictor's.
"""

from __future__ import annotations

import dataclasses
import random
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError
from ..loop import keep_aside
from .collect import LabelRule, load_collected, samples

from ...policies.smartfrz.predictor import SmartFRZPredictor, batch_windows, save_predictor

#: Labels come from the recorded CKA, by default with the current default rule.
RULE = LabelRule()
#: (feature window, context, label, unit), as :func:`frostline.lab.predictor.collect.samples` gives them.
Sample = tuple[torch.Tensor, torch.Tensor, int, int]
#: Precision of "freeze" the calibrated threshold aims for on held-out runs.
TARGET_PRECISION = 0.9


def run_name(ds: dict[str, Any]) -> str:
    """model/dataset[/width, depth, lr when set]/seed: unique within a corpus."""
    p = ds["provenance"]
    extra = [f"{k[0]}{p[k]}" for k in ("width", "depth") if p.get(k) is not None]
    extra += [f"lr{p['lr']:g}"] if p.get("lr") not in (None, 0.05) else []
    return "/".join([p["model"], p["dataset"], *extra, f"seed{p['seed']}"])


def metrics(pred: list[int], true: list[int]) -> dict[str, Any]:
    """Precision, recall and F1 of the *freeze* class, accuracy, and the counts behind them."""
    tp = sum(1 for p, t in zip(pred, true) if p == 1 and t == 1)
    fp = sum(1 for p, t in zip(pred, true) if p == 1 and t == 0)
    fn = sum(1 for p, t in zip(pred, true) if p == 0 and t == 1)
    correct = sum(1 for p, t in zip(pred, true) if p == t)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    majority = max(sum(true), len(true) - sum(true))
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": correct / len(true) if true else 0.0,
            "constant_accuracy": majority / len(true) if true else 0.0,
            "samples": len(true), "positives": sum(true), "predicted_positives": sum(pred)}


@torch.no_grad()
def freeze_probabilities(model: SmartFRZPredictor, data: list[Sample], batch: int = 256) -> list[float]:
    model.eval()
    out: list[float] = []
    for i in range(0, len(data), batch):
        chunk = data[i:i + batch]
        x, mask = batch_windows([w for w, _, _, _ in chunk])
        out += torch.softmax(model(x, mask, torch.stack([c for _, c, _, _ in chunk])), dim=1)[:, 1].tolist()
    return out


def predict(model: SmartFRZPredictor, data: list[Sample]) -> list[int]:
    return [int(p > model.threshold) for p in freeze_probabilities(model, data)]


def calibrate_threshold(probs: list[float], true: list[int], target: float = TARGET_PRECISION) -> float:
    """The lowest threshold whose "freeze" answers reach ``target`` precision on (probs, true);
    if none does, one above every probability (the predictor then never freezes: safe, and the
    report shows it)."""
    ranked = sorted(zip(probs, true), reverse=True)
    best, tp = None, 0
    for k, (p, t) in enumerate(ranked, start=1):
        tp += t
        if tp / k >= target and (k == len(ranked) or ranked[k][0] < p):
            # "freeze" for exactly the k most confident: a threshold between them and the next
            best = (p + ranked[k][0]) / 2 if k < len(ranked) else max(0.0, p - 1e-6)
    if best is None:
        return min(1.0, max(probs, default=0.5) + 1e-6)
    return best


def evaluate_runs(model: SmartFRZPredictor, datasets: list[dict[str, Any]], window: int = 30,
                  rule: LabelRule = RULE) -> dict[str, Any]:
    per_run, all_pred, all_true = {}, [], []
    for ds in datasets:
        data = samples(ds, window, rule)
        pred = predict(model, data)
        true = [t for _, _, t, _ in data]
        per_run[run_name(ds)] = metrics(pred, true)
        all_pred += pred
        all_true += true
    return {"overall": metrics(all_pred, all_true), "runs": per_run}


def fit_predictor(train_sets: list[dict[str, Any]], *, epochs: int = 40, lr: float = 1e-3, batch: int = 64,
                  seed: int = 0, window: int = 30, rule: LabelRule = RULE,
                  progress: bool = True) -> SmartFRZPredictor:
    from tqdm.auto import tqdm

    data = [s for ds in train_sets for s in samples(ds, window, rule)]
    labels = torch.tensor([t for _, _, t, _ in data], dtype=torch.long)
    counts = torch.bincount(labels, minlength=2).double()
    if (counts == 0).any():
        raise ConfigError(f"the training runs have {int(counts[0])} keep / {int(counts[1])} freeze samples: both "
                          "classes are needed (collect longer runs, or more of them)")
    sizes = {ds["snapshots"].shape[-1] for ds in train_sets}
    if len(sizes) != 1:
        raise ConfigError(f"the runs were collected with different tailor sizes {sorted(sizes)}: train on one size")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    feats = torch.cat([w.reshape(-1) for w, _, _, _ in data])
    model = SmartFRZPredictor(sizes.pop(), input_scale=float(1.0 / feats.std().clamp_min(1e-12)))
    contexts = torch.stack([c for _, c, _, _ in data])
    model.context_mean.copy_(contexts.mean(0))
    model.context_std.copy_(contexts.std(0).clamp_min(1e-6))
    weight = (counts.sum() / (2 * counts)).float()
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    order = list(range(len(data)))
    bar = tqdm(range(epochs), desc="predictor", unit="epoch", disable=not progress, file=sys.stderr)
    for _ in bar:
        model.train()
        rng.shuffle(order)
        total = 0.0
        for i in range(0, len(order), batch):
            chunk = [data[j] for j in order[i:i + batch]]
            x, mask = batch_windows([w for w, _, _, _ in chunk])
            x = x[:, :, torch.randperm(x.shape[-1])] * (torch.randint(0, 2, (x.shape[-1],)) * 2 - 1)
            y = torch.tensor([t for _, _, t, _ in chunk])
            loss = loss_fn(model(x, mask, torch.stack([c for _, c, _, _ in chunk])), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(chunk)
        bar.set_postfix(loss=f"{total / len(data):.4f}")
    model.eval()
    return model


def train_from_dirs(dirs: list[str], out, *, holdout: list[str] | None = None, epochs: int = 40, seed: int = 0,
                    rule: LabelRule = RULE,
                    window: int = 30, progress: bool = True) -> dict[str, Any]:
    """Load collected runs, hold some out *by run*, train, report, save. ``holdout`` names folders
    (among ``dirs``) to hold out; by default one run, chosen by ``seed``. An existing ``out`` is
    kept aside (:func:`~frostline.lab.loop.keep_aside`), never written over."""
    from ...errors import check_int
    from ...policies.smartfrz.predictor import SHIPPED

    out = _check_out_file(out, SHIPPED)
    check_int(epochs, "--epochs (passes over the training samples)", low=1)
    datasets = [load_collected(d) for d in dirs]
    if holdout is None:
        if len(datasets) < 2:
            raise ConfigError("need at least 2 collected runs to hold one out (or pass --holdout with another folder)")
        held_idx = {random.Random(seed).randrange(len(datasets))}
    else:
        held_paths = {str(load_collected(h)["path"]) for h in holdout}
        held_idx = {i for i, ds in enumerate(datasets) if ds["path"] in held_paths}
        extra = [load_collected(h) for h in holdout if str(load_collected(h)["path"]) not in {d["path"] for d in datasets}]
        datasets += extra
        held_idx |= set(range(len(datasets) - len(extra), len(datasets)))
    train_sets = [ds for i, ds in enumerate(datasets) if i not in held_idx]
    held_sets = [ds for i, ds in enumerate(datasets) if i in held_idx]
    if not train_sets:
        raise ConfigError("every run is held out: leave at least one to train on")
    calibration = [s for ds in (held_sets or train_sets) for s in samples(ds, window, rule)]
    if held_sets and not any(t for _, _, t, _ in calibration):
        raise ConfigError(f"the held-out run(s) {', '.join(run_name(ds) for ds in held_sets)} have no window labelled "
                          "freeze, so the threshold cannot be calibrated on them (the predictor would never freeze): "
                          "hold out a run whose units converge (--holdout), or collect longer runs")
    model = fit_predictor(train_sets, epochs=epochs, seed=seed, window=window, rule=rule, progress=progress)
    model.threshold = calibrate_threshold(freeze_probabilities(model, calibration), [t for _, _, t, _ in calibration])
    report = {"train": evaluate_runs(model, train_sets, window, rule),
              "heldout": evaluate_runs(model, held_sets, window, rule) if held_sets else None}
    meta = {"trained_on": [ds["provenance"] | {"name": run_name(ds)} for ds in train_sets],
            "heldout": [run_name(ds) for ds in held_sets], "report": report, "epochs": epochs, "seed": seed,
            "window": window, "threshold": model.threshold, "target_precision": TARGET_PRECISION,
            "calibrated_on": "heldout" if held_sets else "train", "label_rule": dataclasses.asdict(rule)}
    for m in meta["trained_on"]:
        m.pop("train_config", None)
    if out.exists():
        keep_aside(out, "a predictor")
    save_predictor(model, out, meta)
    return report


def _check_out_file(out, shipped) -> Path:
    """``--out`` as a predictor file to write, checked before any work."""
    if not str(out).strip():
        raise ConfigError("--out is empty: pass the predictor file to write (e.g. --out predictor.pt)")
    path = Path(out)
    if path.is_dir():
        raise ConfigError(f"--out {path} is a folder: pass the predictor file to write (e.g. --out {path / 'predictor.pt'})")
    if any(p.exists() and not p.is_dir() for p in path.parents):
        raise ConfigError(f"--out {path} is inside a file, not a folder: pass a file in a folder")
    if path.resolve() == Path(shipped).resolve():
        raise ConfigError(f"--out {path} is the predictor shipped with frostline: pass another file")
    return path


def format_report(report: dict[str, Any]) -> str:
    lines = ["| split | run | samples | freeze (true) | freeze (predicted) | precision | recall | F1 | accuracy | "
             "constant answer |", "|---|---|---|---|---|---|---|---|---|---|"]
    for split in ("train", "heldout"):
        part = report.get(split)
        if not part:
            continue
        rows = list(part["runs"].items()) + [("all", part["overall"])]
        for name, m in rows:
            lines.append(f"| {split} | {name} | {m['samples']} | {m['positives']} | {m['predicted_positives']} | "
                         f"{m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['accuracy']:.3f} | "
                         f"{m['constant_accuracy']:.3f} |")
    return "\n".join(lines)
