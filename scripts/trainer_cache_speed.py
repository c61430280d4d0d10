"""What the activation cache buys inside a framework's trainer, in one process, one run after
another: no freezing, then two methods each without the cache, with ``cache="memory"`` and with
``cache="auto"``: linear freezing (its frozen prefix grows step by step, so a stored sample seldom
comes back before it grows) and SmartFRZ (which freezes several units at a decision and holds them).

    python scripts/trainer_cache_speed.py [--trainer hf] [--train-subset 1200] [--epochs 3] [--repeats 2]
    python scripts/trainer_cache_speed.py --trainer lightning [--train-subset 20000] [--epochs 4]
    python scripts/trainer_cache_speed.py --trainer lightning --only none linear-start0.25 "linear-start0.25 + cache auto"

``hf``: all-MiniLM-L6-v2 fine-tuned on fine-food reviews in the Hugging Face ``Trainer``
(``examples/hf_minilm_finefoods.py``; linear from the start of training). ``lightning``: a zoo
ResNet trained from scratch on Fashion-MNIST in a Lightning ``Trainer``
(``examples/lightning_fashion_mnist.py``; linear from a quarter of training).

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
#: per trainer: its example, the linear variant it runs, and its defaults
TRAINERS = {
    "hf": ("hf_minilm_finefoods.py", ("linear-start0", {"freeze_start": 0.0}),
           dict(train_subset=1200, epochs=3, save="benchmarks/hf-cache/results.json")),
    "lightning": ("lightning_fashion_mnist.py", ("linear-start0.25", {"freeze_start": 0.25}),
                  dict(train_subset=20000, epochs=4, save="benchmarks/lightning-cache/results.json")),
}


def runs(linear: tuple[str, dict]):
    """(label, method, hyperparameters, cache mode) of every run of one repeat."""
    yield "none", "none", {}, "off"
    for name, method, kwargs in ((*linear[:1], "linear", linear[1]), ("smartfrz", "smartfrz", {})):
        for cache in ("off", "memory", "auto"):
            yield f"{name}{'' if cache == 'off' else ' + cache ' + cache}", method, kwargs, cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trainer", choices=list(TRAINERS), default="hf")
    ap.add_argument("--train-subset", type=int, default=None, help="training samples (default: per trainer)")
    ap.add_argument("--epochs", type=float, default=None, help="default: per trainer")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="runs/trainer-cache-speed")
    ap.add_argument("--save", default=None, help="every run's figures, as JSON (default: per trainer)")
    ap.add_argument("--only", nargs="+", default=None, metavar="RUN", help="run only these (their labels; none is kept)")
    args = ap.parse_args()
    script, linear, defaults = TRAINERS[args.trainer]
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    spec = importlib.util.spec_from_file_location("example", ROOT / "examples" / script)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    plan = list(runs(linear))
    if args.only:
        unknown = set(args.only) - {label for label, *_ in plan}
        if unknown:
            ap.error(f"unknown runs {sorted(unknown)}; known: {[label for label, *_ in plan]}")
        plan = [p for p in plan if p[0] in set(args.only) | {"none"}]
    results: dict[str, list[dict]] = {label: [] for label, *_ in plan}
    for r in range(args.repeats):
        for label, method, kwargs, cache in plan:
            print(f"-- repeat {r + 1}: {label}", flush=True)
            argv = ["--method", method, "--policy-kwargs", json.dumps(kwargs), "--cache", cache,
                    "--epochs", f"{args.epochs:g}", "--train-subset", str(args.train_subset), "--test-subset", "1000"]
            if args.trainer == "hf":
                argv += ["--out", f"{args.out}/{label.replace(' ', '')}"]
            else:
                argv += ["--threads", "2", "--seed", str(r)]
            results[label].append(example.main(argv))
    from frostline.atomic import atomic_write_json
    from frostline.lab.machine import label, this_machine

    machine = this_machine()
    atomic_write_json(Path(args.save), {"settings": vars(args), "machine": machine, "runs": results})
    base = results["none"]
    print(f"\n{args.trainer}: {args.train_subset} samples, {args.epochs:g} epochs, {args.repeats} repeat(s), "
          f"{label(machine)}; every run in {args.save}")
    print("| run | train s | time / none | test acc % | frozen | cache replays |")
    print("|---|---|---|---|---|---|")
    for name, done in results.items():
        ratio = statistics.median(x["train_time_s"] / b["train_time_s"] for x, b in zip(done, base))
        print(f"| {name} | {statistics.median(x['train_time_s'] for x in done):.1f} | {ratio:.3f} | "
              f"{statistics.median(x['test_accuracy'] for x in done):.2f} | {done[0]['frozen']} | "
              f"{done[0]['cache_hits']} |")


if __name__ == "__main__":
    main()
