r"""Is the point a fast fine-tune loses the frozen layers' dropout being switched off?

A frozen unit is pinned to eval mode: its dropout stops drawing, so its output is a function of its
input (what lets the activation cache replay it). In a fine-tune of a pretrained transformer that
pin also takes the dropout of every frozen layer out of the run: a fixed bottom frozen from the
first step (``linear-start0-end0.001-level0.65+cache``: MiniLM's embeddings and lower three encoder
layers) trains the rest of the run with a third of the model's dropout gone. This script trains a
finetune-suite cell again with the cache off and the frozen units *following the model's mode*
(dropout drawing in training, off in evaluation; weights still frozen, backward still skipped), and
sets its test accuracy beside the committed cell of the same seed (eval-pinned; with the cache,
which trains exactly as without it) and that seed's baseline::

    nice -n 10 python scripts/frozen_dropout.py --seeds 0 1 2

Results go to ``benchmarks/finetune/frozen-dropout/`` (one folder per seed, with the run's summary
and metrics); finished runs are reused, so seeds can be added later.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout

import frostline.freezer.eval_mode as eval_mode  # noqa: E402
import frostline.lab.recipe as recipe  # noqa: E402
from frostline.errors import ConfigError, run_script  # noqa: E402
from frostline.lab.compare import SUITES, cell_config, in_run_saving  # noqa: E402
from frostline.lab.report import read_metrics, read_summary  # noqa: E402

#: the model being trained (the latest one the recipe built)
_model: list = [None]
#: forwards of frozen modules that ran in training mode: the check that the pin was replaced
_trained_forwards = [0]


def _follow_the_model(module, args) -> None:
    """Instead of the eval pin: a frozen module runs in the mode of the model it is part of."""
    module.training = _model[0].training
    _trained_forwards[0] += module.training


def _remember_model(new_model):
    def make(*args, **kwargs):
        model = new_model(*args, **kwargs)
        _model[0] = model
        return model
    return make


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="finetune")
    p.add_argument("--model", default="minilm")
    p.add_argument("--variant", default="linear-start0-end0.001-level0.65+cache")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "finetune" / "frozen-dropout"))
    a = p.parse_args(argv)
    if a.suite not in SUITES:
        raise ConfigError(f"unknown suite {a.suite!r}; choose one of {sorted(SUITES)}")
    suite = SUITES[a.suite]
    datasets = {model: dataset for dataset, model, _ in suite.combos()}
    if a.model not in datasets:
        raise ConfigError(f"suite {a.suite!r} has no model {a.model!r}; choose one of {sorted(datasets)}")
    if a.variant not in suite.variants:
        raise ConfigError(f"suite {a.suite!r} has no variant {a.variant!r}; choose one of {list(suite.variants)}")
    dataset = datasets[a.model]
    cells = ROOT / "benchmarks" / a.suite / "cells" / dataset / a.model
    slug = a.variant.replace("+", "_")
    eval_mode._run_in_eval = _follow_the_model
    recipe._new_model = _remember_model(recipe._new_model)
    rows = []
    for seed in a.seeds:
        out = Path(a.out) / a.model / slug / f"seed{seed}"
        if not (out / "summary.json").exists() or read_summary(out).get("status") != "finished":
            _trained_forwards[0] = 0
            recipe.train(cell_config(suite, a.model, a.variant, seed, out, cache="off"))
            if not _trained_forwards[0]:
                raise ConfigError(f"seed {seed}: no frozen module ran in training mode; the pin was not replaced")
            print(f"seed {seed}: frozen modules ran {_trained_forwards[0]} forwards in training mode")
        mine, pinned = read_summary(out), read_summary(cells / slug / f"seed{seed}")
        base = read_summary(cells / "none" / f"seed{seed}")
        saved = in_run_saving(mine, read_metrics(out))
        rows.append({"seed": seed, "baseline": base["test_accuracy"],
                     "pinned": round(pinned["test_accuracy"] - base["test_accuracy"], 2),
                     "dropout_on": round(mine["test_accuracy"] - base["test_accuracy"], 2),
                     "time_saved_dropout_on": None if saved is None else round(saved, 4)})
    print(f"{a.model}, {a.variant}: frozen units eval-pinned (the committed cells, cached) against following the "
          "model's mode (dropout on in training, no cache); test accuracy minus the seed's baseline, points")
    print("| seed | baseline % | eval-pinned Δ | dropout on Δ | dropout on − pinned | time saved, dropout on |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        t = "n/a" if r["time_saved_dropout_on"] is None else f"{100 * r['time_saved_dropout_on']:.1f}%"
        print(f"| {r['seed']} | {r['baseline']:.2f} | {r['pinned']:+.2f} | {r['dropout_on']:+.2f} | "
              f"{r['dropout_on'] - r['pinned']:+.2f} | {t} |")
    if len(rows) > 1:
        diffs = [r["dropout_on"] - r["pinned"] for r in rows]
        print(f"mean: pinned {statistics.mean(r['pinned'] for r in rows):+.2f}, dropout on "
              f"{statistics.mean(r['dropout_on'] for r in rows):+.2f}, difference {statistics.mean(diffs):+.2f} "
              f"± {statistics.stdev(diffs) / len(diffs) ** 0.5:.2f} (standard error over seeds)")
    (Path(a.out) / a.model / slug / "results.json").write_text(json.dumps({
        "runs here": f"{a.variant} with the cache off and its frozen units following the model's mode (dropout on "
                     "in training)",
        "eval-pinned": str((cells / slug).relative_to(ROOT)), "baseline": str((cells / "none").relative_to(ROOT)),
        "command": f"python scripts/frozen_dropout.py --seeds {' '.join(map(str, a.seeds))}", "rows": rows},
        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    run_script(main)
