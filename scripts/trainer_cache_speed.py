"""What the activation cache buys inside the Hugging Face ``Trainer``: all-MiniLM-L6-v2 fine-tuned
on fine-food reviews by ``examples/hf_minilm_finefoods.py``, in one process, one run after another:
no freezing, then two methods each without the cache, with ``FrostlineCallback(..., cache="memory")``
and with ``cache="auto"``: linear freezing from the start of training (its frozen prefix grows every
eighth of training, so a stored sample seldom comes back before it grows) and SmartFRZ (which
freezes the lower units at its first decision and holds them).

    python scripts/hf_cache_speed.py [--train-subset 1200] [--epochs 3] [--repeats 2]

Prints each run's training time, test accuracy and cache replays, and each time over the
``none`` run's of the same repeat (the median over repeats). The cache is exact: with it a run
decides and trains as without it (the same freezes, the same accuracy), and only its time differs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = (("none", "none", {}, "off"),
        *((f"{name}{'' if cache == 'off' else ' + cache ' + cache}", method, kwargs, cache)
          for name, method, kwargs in (("linear-start0", "linear", {"freeze_start": 0.0}), ("smartfrz", "smartfrz", {}))
          for cache in ("off", "memory", "auto")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-subset", type=int, default=1200)
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="runs/hf-cache-speed")
    ap.add_argument("--save", default="benchmarks/hf-cache/results.json", help="every run's figures, as JSON")
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("example", ROOT / "examples" / "hf_minilm_finefoods.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    results: dict[str, list[dict]] = {label: [] for label, *_ in RUNS}
    for r in range(args.repeats):
        for label, method, kwargs, cache in RUNS:
            print(f"-- repeat {r + 1}: {label}", flush=True)
            results[label].append(example.main([
                "--method", method, "--policy-kwargs", json.dumps(kwargs), "--cache", cache,
                "--epochs", str(args.epochs), "--train-subset", str(args.train_subset), "--test-subset", "1000",
                "--out", f"{args.out}/{label.replace(' ', '')}"]))
    from frostline.atomic import atomic_write_json
    from frostline.lab.machine import label, this_machine

    machine = this_machine()
    atomic_write_json(Path(args.save), {"settings": vars(args), "machine": machine, "runs": results})
    base = results["none"]
    print(f"\n{args.train_subset} reviews, {args.epochs:g} epochs, {args.repeats} repeat(s), {label(machine)}; "
          f"every run in {args.save}")
    print("| run | train s | time / none | test acc % | frozen | cache replays |")
    print("|---|---|---|---|---|---|")
    for label, runs in results.items():
        ratio = statistics.median(x["train_time_s"] / b["train_time_s"] for x, b in zip(runs, base))
        print(f"| {label} | {statistics.median(x['train_time_s'] for x in runs):.1f} | {ratio:.3f} | "
              f"{statistics.median(x['test_accuracy'] for x in runs):.2f} | {runs[0]['frozen']} | "
              f"{runs[0]['cache_hits']} |")


if __name__ == "__main__":
    main()
