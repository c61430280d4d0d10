"""Rebuild the SmartFRZ predictor shipped in frostline/smartfrz/predictor.pt, from scratch.

    nice -n 19 python scripts/build_predictor.py [--work runs/predictor]

1. `frostline predictor collect` for every (model, dataset, seed) in TRAIN_RUNS and HELDOUT_RUNS
   (a reference run, then a recording run; a finished collection is reused).
2. `frostline predictor train` on TRAIN_RUNS, holding out HOLDOUT_RUN *by run*: its precision/
   recall/F1 are printed; the predictor is written to frostline/smartfrz/predictor.pt.
3. `frostline predictor eval` on HELDOUT_RUNS, pairs never seen in training at all.

Every collection uses a small train subset and one thread, so the whole build fits a shared 2-core
CPU (about 20 minutes); the settings are in COMMON.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["--epochs", "3", "--train-subset", "4000", "--val-size", "1000", "--test-subset", "2000",
          "--batch-size", "128", "--threads", "1", "--no-progress"]
TRAIN_RUNS = [("resnet", "fashion-mnist", 0), ("mobilenetv2", "fashion-mnist", 0), ("vit", "fashion-mnist", 0),
              ("resnet", "mnist", 0)]
HOLDOUT_RUN = ("resnet", "mnist", 0)  # held out of predictor training by run: its F1 is reported
HELDOUT_RUNS = [("vgg", "fashion-mnist", 0)]  # pairs never used in training


def folder(work: Path, run) -> Path:
    model, dataset, seed = run
    return work / f"{model}-{dataset}-seed{seed}"


def frostline(*args: str) -> None:
    cmd = [sys.executable, "-m", "frostline", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(ROOT / "runs" / "predictor"), help="folder for the collected runs")
    parser.add_argument("--out", default=str(ROOT / "frostline" / "smartfrz" / "predictor.pt"))
    args = parser.parse_args()
    work = Path(args.work)
    for run in TRAIN_RUNS + HELDOUT_RUNS:
        out = folder(work, run)
        if (out / "dataset.pt").exists():
            print(f"reusing {out}/dataset.pt", flush=True)
            continue
        model, dataset, seed = run
        frostline("predictor", "collect", "--model", model, "--dataset", dataset, "--seed", str(seed), *COMMON,
                  "--out", str(out))
    frostline("predictor", "train", *[str(folder(work, r)) for r in TRAIN_RUNS], "--holdout",
              str(folder(work, HOLDOUT_RUN)), "--out", args.out, "--no-progress")
    frostline("predictor", "eval", *[str(folder(work, r)) for r in HELDOUT_RUNS], "--predictor", args.out)


if __name__ == "__main__":
    main()
