"""Choose the SmartFRZ decision threshold by the accuracy its freezes cost, on validation runs.

    nice -n 19 python scripts/calibrate_threshold.py [--work runs/threshold] [--write]
    nice -n 19 python scripts/calibrate_threshold.py --stages-per-epoch 4 --cooldown 100 --candidates 0.8 0.85 0.9

The predictor's training calibrates a first threshold on label precision (the lowest P(freeze) at
which the held-out runs' "freeze" answers are 90% right). Label precision is not what a user pays
for: a freeze the CKA labels call premature may cost nothing, a "correct" one may still cost
accuracy. This script trains, for every validation configuration (the predictor's held-out-by-run
recordings: the last seed of each three-seed chain in ``build_predictor.CORPUS``), one baseline and
one SmartFRZ run per candidate threshold, same seed, one run at a time, and reads each run's
*validation* accuracy (never the test set). The chosen threshold is the lowest candidate whose
mean validation accuracy, over the configurations, is at most ``TOLERANCE`` points below the
baselines' (lower thresholds freeze earlier and save more). Finished runs are reused, so an
interrupted calibration continues; so are the committed per-run rows of thresholds not asked for
again (same predictor, cadence and cool-down), so ``--candidates 0.75`` extends a table on another
machine: every row is paired with a baseline trained on its own machine (``machine`` says which
where it was recorded).

``--stages-per-epoch`` and ``--cooldown`` calibrate another way of deciding (more decisions per
epoch, anneal-then-freeze): a threshold is only right for the cadence and cool-down it was chosen
with, so each configuration gets its own table (``calibration.json`` for the defaults,
``calibration-<stages>stages-cooldown<C>.json`` otherwise) and only the defaults' may be written
into the predictor file. The per-run summaries go to ``benchmarks/smartfrz-threshold/`` either way.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from build_predictor import CORPUS  # noqa: E402

from frostline.lab.machine import label  # noqa: E402

#: Candidate thresholds besides the predictor's own (precision-calibrated) one.
CANDIDATES = (0.8, 0.9)
#: Validation accuracy (points, mean over configurations) a threshold may lose against the baselines.
TOLERANCE = 0.1
#: Same regime as the corpus and the standard benchmark, but two threads: only accuracy is read here.
COMMON = ["--batch-size", "128", "--epochs", "8", "--threads", "2", "--no-progress", "--log-every", "50"]
RESULTS = ROOT / "benchmarks" / "smartfrz-threshold"


def validation_configs() -> dict[str, tuple[str, str, list[str], int]]:
    """name -> (model, dataset, flags, seed): the last recording of every three-seed chain."""
    return {name: (model, dataset, extra, seeds[-1]) for name, (model, dataset, extra, seeds) in CORPUS.items()
            if len(seeds) == 3}


def run(out: Path, model: str, dataset: str, extra: list[str], seed: int, method: list[str]) -> dict:
    summary = out / "summary.json"
    if not (summary.exists() and json.loads(summary.read_text()).get("status") == "finished"):
        cmd = [sys.executable, "-m", "frostline", "train", "--model", model, "--dataset", dataset, *COMMON, *extra,
               "--seed", str(seed), *method, "--out", str(out)]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
    s = json.loads(summary.read_text())
    return {**{k: s.get(k) for k in ("val_accuracy", "test_accuracy", "train_time_s", "flops_saved", "frozen_at",
                                     "total_steps")}, "machine": label(s["machine"]) if s.get("machine") else None}


def committed_rows(path: Path, predictor_sha, stages_per_epoch: int, cooldown: int, rerun: set[float]) -> list[dict]:
    """The per-run rows of the committed table at ``path`` for thresholds not in ``rerun``, if it was
    made with the same predictor, cadence and cool-down (else none: they would measure something else)."""
    if not path.exists():
        return []
    old = json.loads(path.read_text())
    if (old.get("predictor_sha256"), old.get("stages_per_epoch"), old.get("cooldown")) != (
            predictor_sha, stages_per_epoch, cooldown):
        return []
    return [r for r in old["runs"] if r["threshold"] not in rerun]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(ROOT / "runs" / "threshold"), help="folder for the runs")
    parser.add_argument("--predictor", default=None, help="predictor file (default: the shipped one)")
    parser.add_argument("--write", action="store_true", help="store the chosen threshold in the predictor file")
    parser.add_argument("--stages-per-epoch", type=int, default=1, help="SmartFRZ decisions per epoch")
    parser.add_argument("--cooldown", type=int, default=0, help="optimizer steps of anneal-then-freeze")
    parser.add_argument("--candidates", type=float, nargs="+", default=None,
                        help=f"thresholds to try (default: the precision-calibrated one and {CANDIDATES})")
    args = parser.parse_args()
    default_config = args.stages_per_epoch == 1 and args.cooldown == 0
    if args.write and not default_config:
        raise SystemExit("--write stores the threshold of the policy's defaults: drop --stages-per-epoch/--cooldown")
    suffix = "" if default_config else f"-{args.stages_per_epoch}stages-cooldown{args.cooldown}"
    decide = ([] if args.stages_per_epoch == 1 else ["--stages-per-epoch", str(args.stages_per_epoch)]) + (
        [] if not args.cooldown else ["--cooldown", str(args.cooldown)])

    from frostline.policies.smartfrz.predictor import SHIPPED, load_predictor, save_predictor

    path = Path(args.predictor) if args.predictor else SHIPPED
    model, meta = load_predictor(path)
    precision_threshold = float(meta.get("precision_threshold", meta.get("threshold", model.threshold)))
    asked = sorted(set(args.candidates) if args.candidates else {round(precision_threshold, 3), *CANDIDATES})
    out_file = RESULTS / f"calibration{suffix}.json"
    work, rows = Path(args.work), committed_rows(out_file, meta.get("sha256"), args.stages_per_epoch, args.cooldown,
                                                 set(asked))
    if rows:
        kept = sorted({r["threshold"] for r in rows})
        print(f"kept the committed runs of thresholds {', '.join(f'{t:g}' for t in kept)} ({out_file.name})")
    for name, (net, dataset, extra, seed) in validation_configs().items():
        base = run(work / name / "none", net, dataset, extra, seed, ["--method", "none"])
        for t in asked:
            r = run(work / name / f"smartfrz-{t:g}{suffix}", net, dataset, extra, seed,
                    ["--method", "smartfrz", "--freeze-threshold", str(t), "--predictor", str(path), *decide])
            rows.append({"config": name, "seed": seed, "threshold": t, "baseline_val_accuracy": base["val_accuracy"],
                         "delta_val": round(r["val_accuracy"] - base["val_accuracy"], 2), **r})
    thresholds = sorted({r["threshold"] for r in rows})
    table = []
    for t in thresholds:
        mine = [r for r in rows if r["threshold"] == t]
        table.append({"threshold": t, "mean_delta_val": round(sum(r["delta_val"] for r in mine) / len(mine), 3),
                      "mean_flops_saved": round(sum(r["flops_saved"] for r in mine) / len(mine), 4)})
    ok = [row for row in table if row["mean_delta_val"] >= -TOLERANCE]
    chosen = min(ok, key=lambda row: row["threshold"])["threshold"] if ok else max(thresholds)
    result = {"predictor_sha256": meta.get("sha256"), "tolerance_points": TOLERANCE,
              "stages_per_epoch": args.stages_per_epoch, "cooldown": args.cooldown,
              "precision_threshold": precision_threshold, "chosen": chosen, "table": table, "runs": rows,
              "command": " ".join(["python scripts/calibrate_threshold.py", *(
                  [] if default_config else ["--stages-per-epoch", str(args.stages_per_epoch), "--cooldown",
                                             str(args.cooldown), "--candidates", *map(str, thresholds)])])}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(result, indent=1) + "\n")
    print("| threshold | mean Δ validation accuracy (points) | mean FLOPs saved |")
    print("|---|---|---|")
    for row in table:
        print(f"| {row['threshold']:g} | {row['mean_delta_val']:+.2f} | {100 * row['mean_flops_saved']:.1f}% |")
    print(f"chosen: {chosen:g} (lowest within {TOLERANCE:g} points{'' if ok else '; none was: the highest'})")
    if args.write:
        model.threshold = chosen
        saved_meta = {k: v for k, v in meta.items() if k not in ("path", "sha256", "threshold")}
        saved_meta.update(precision_threshold=precision_threshold,
                          threshold_calibration={k: result[k] for k in ("tolerance_points", "chosen", "table")})
        save_predictor(model, path, saved_meta)
        print(f"wrote threshold {chosen:g} into {path}")


if __name__ == "__main__":
    main()
