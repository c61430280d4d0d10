"""Rebuild the SmartFRZ predictor shipped in frostline/policies/smartfrz/predictor.pt, from scratch.

    nice -n 19 python scripts/build_predictor.py [--work runs/predictor] [--jobs 2]

1. Collect the corpus (`frostline predictor collect`): for every configuration in CORPUS, a chain
   of runs: a plain run with the first seed is the reference of the recording with the second seed,
   whose finished model is in turn the reference of the recording with the third seed (every
   recording is labelled against a finished run of *another* seed). A finished collection is reused,
   so an interrupted build continues where it stopped.
2. `frostline predictor train` on every recording except those of HELDOUT_PAIRS, holding out the
   last recording of every three-seed chain *by run* for validation (the threshold is calibrated
   there), into WORK/candidate.pt.
3. `frostline predictor eval` on the recordings of HELDOUT_PAIRS, (model, dataset) pairs never seen
   in training.
4. The gate: the candidate replaces the shipped predictor only if, on the validation runs and on the
   never-seen pairs alike, its precision of "freeze" is at least 0.9 and its accuracy beats the
   constant answer by at least 10 points. Otherwise the script says which figure failed and exits 1,
   leaving the shipped predictor as it was.
5. Then `python scripts/calibrate_threshold.py --write` chooses the decision threshold the policy
   uses by the validation accuracy its freezes cost (the build's own threshold is the one at 90%
   label precision, kept in the file's metadata as ``precision_threshold``).

Every run trains on a full train split for 8 epochs with one thread (COMMON); the corpus (12 runs)
took about 80 minutes with --jobs 2 on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["--batch-size", "128", "--epochs", "8", "--threads", "1", "--no-progress", "--log-every", "50"]
#: name -> (model, dataset, extra flags, seeds): seeds[0] is a plain run, the others are recordings.
#: Full train splits, as in the standard benchmark: the predictor's windows must see weights move
#: as they move in the runs it will judge (a 47-step epoch moves them far less than a 430-step one).
#: The benchmark's own pairs (vgg and resnet on Fashion-MNIST) are recorded only with seeds the
#: benchmark never trains (3): their seed-0 runs serve as references, never as training windows.
CORPUS = {
    "vgg-mnist": ("vgg", "mnist", [], (0, 1, 2)),
    "resnet-fmnist-w8-lr0.1": ("resnet", "fashion-mnist", ["--width", "8", "--lr", "0.1"], (0, 1, 2)),
    "vgg-fmnist": ("vgg", "fashion-mnist", [], (0, 3)),
    "resnet-fmnist": ("resnet", "fashion-mnist", [], (0, 3)),
    "mobilenetv2-fmnist": ("mobilenetv2", "fashion-mnist", [], (0, 1)),
}
#: (model, dataset) pairs kept out of training entirely: the predictor's "never seen" figures.
HELDOUT_PAIRS = {("mobilenetv2", "fashion-mnist")}
#: The bar a predictor must clear to be shipped.
MIN_PRECISION, MIN_GAIN_OVER_CONSTANT = 0.9, 0.10


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
    candidate = work / "candidate.pt"
    frostline("predictor", "train", *map(str, train + validation), "--holdout", *map(str, validation),
              "--out", str(candidate), "--no-progress")
    frostline("predictor", "eval", *map(str, never_seen), "--predictor", str(candidate))
    failures = gate(candidate, validation, never_seen)
    if failures:
        sys.exit("not shipped: " + "; ".join(failures))
    shutil.copyfile(candidate, args.out)
    print(f"shipped: {args.out}")


def gate(candidate: Path, validation: list[Path], never_seen: list[Path]) -> list[str]:
    """What keeps the candidate from shipping (nothing: it ships)."""
    sys.path.insert(0, str(ROOT))
    from frostline.lab.predictor.collect import load_collected
    from frostline.lab.predictor.fit import evaluate_runs
    from frostline.policies.smartfrz.predictor import load_predictor

    model, _ = load_predictor(candidate)
    failures = []
    for split, folders in (("validation runs", validation), ("never-seen pairs", never_seen)):
        m = evaluate_runs(model, [load_collected(f) for f in folders])["overall"]
        print(f"{split}: precision {m['precision']:.3f}, accuracy {m['accuracy']:.3f} "
              f"(constant answer {m['constant_accuracy']:.3f})", flush=True)
        if m["precision"] < MIN_PRECISION:
            failures.append(f"{split}: precision {m['precision']:.3f} < {MIN_PRECISION}")
        if m["accuracy"] < m["constant_accuracy"] + MIN_GAIN_OVER_CONSTANT:
            failures.append(f"{split}: accuracy {m['accuracy']:.3f} is not {MIN_GAIN_OVER_CONSTANT:.2f} above "
                            f"the constant answer's {m['constant_accuracy']:.3f}")
    return failures


if __name__ == "__main__":
    main()
