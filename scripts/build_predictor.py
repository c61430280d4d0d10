"""Rebuild the SmartFRZ predictor shipped in frostline/policies/smartfrz/predictor.pt, from scratch.

    nice -n 19 python scripts/build_predictor.py [--work runs/predictor] [--jobs 2]

1. Collect the corpus (`frostline predictor collect`): for every configuration in CORPUS, a chain
   of runs: a plain run with the first seed is the reference of the recording with the second seed,
   whose finished model is in turn the reference of the recording with the third seed (every
   recording is labelled against a finished run of *another* seed). A finished collection is reused,
   so an interrupted build continues where it stopped.
2. `frostline predictor train` on every recording except those of HELDOUT_PAIRS, holding out one
   recording per training pair *by run* for validation (the threshold is calibrated there).
3. `frostline predictor eval` on the recordings of HELDOUT_PAIRS, (model, dataset) pairs never seen
   in training.

Every run is sized for a shared 2-core CPU (one thread each; COMMON); the corpus (17 runs) takes about
half an hour with --jobs 2 on a quiet machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["--train-subset", "6000", "--val-size", "1000", "--test-subset", "2000", "--batch-size", "128",
          "--threads", "1", "--no-progress"]
#: name -> (model, dataset, extra flags, seeds): seeds[0] is a plain run, the others are recordings.
CORPUS = {
    "resnet-fmnist": ("resnet", "fashion-mnist", ["--epochs", "8"], (0, 1, 2)),
    "vgg-fmnist": ("vgg", "fashion-mnist", ["--epochs", "8"], (0, 1, 2)),
    "resnet-fmnist-w8-lr0.1": ("resnet", "fashion-mnist", ["--epochs", "8", "--width", "8", "--lr", "0.1"], (0, 1)),
    "mobilenetv2-fmnist": ("mobilenetv2", "fashion-mnist", ["--epochs", "8"], (0, 1)),
    "vit-fmnist": ("vit", "fashion-mnist", ["--epochs", "8", "--lr", "0.02"], (0, 1)),
    "resnet-mnist-d3-lr0.02": ("resnet", "mnist", ["--epochs", "8", "--depth", "3", "--lr", "0.02"], (0, 1)),
    "vgg-mnist": ("vgg", "mnist", ["--epochs", "8"], (0, 1)),
}
#: (model, dataset) pairs kept out of training entirely: the predictor's "never seen" figures.
HELDOUT_PAIRS = {("vgg", "mnist")}


def frostline(*args: str) -> None:
    cmd = [sys.executable, "-m", "frostline", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def chain(work: Path, name: str) -> list[Path]:
    """Collect one configuration's chain; returns its recording folders."""
    model, dataset, extra, seeds = CORPUS[name]
    base = ["--model", model, "--dataset", dataset, *COMMON, *extra]
    first = work / name / f"seed{seeds[0]}"
    if not (first / "model.pt").exists():
        frostline("train", *base, "--method", "none", "--seed", str(seeds[0]), "--out", str(first))
    reference, out = first, []
    for seed in seeds[1:]:
        folder = work / name / f"seed{seed}"
        if not (folder / "dataset.pt").exists():
            frostline("predictor", "collect", *base, "--seed", str(seed), "--reference", str(reference),
                      "--out", str(folder))
        out.append(folder)
        reference = folder / "recording"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(ROOT / "runs" / "predictor"), help="folder for the collected runs")
    parser.add_argument("--out", default=str(ROOT / "frostline" / "policies" / "smartfrz" / "predictor.pt"))
    parser.add_argument("--jobs", type=int, default=2, help="configurations collected at once (one thread each)")
    parser.add_argument("--collect-only", action="store_true", help="stop after collecting the corpus")
    args = parser.parse_args()
    work = Path(args.work)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        recordings = dict(zip(CORPUS, pool.map(lambda n: chain(work, n), CORPUS)))
    if args.collect_only:
        return
    train, validation, never_seen = [], [], []
    for name, folders in recordings.items():
        model, dataset = CORPUS[name][:2]
        if (model, dataset) in HELDOUT_PAIRS:
            never_seen += folders
        elif len(folders) > 1:  # the last recording of a chain validates, the others train
            train += folders[:-1]
            validation.append(folders[-1])
        else:
            train += folders
    frostline("predictor", "train", *map(str, train + validation), "--holdout", *map(str, validation),
              "--out", args.out, "--no-progress")
    frostline("predictor", "eval", *map(str, never_seen), "--predictor", args.out)


if __name__ == "__main__":
    main()
