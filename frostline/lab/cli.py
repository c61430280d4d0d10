"""``frostline`` command line: ``train``, ``estimate``, ``bench steptime|compare|readme``, ``data``, ``predictor``, ``report``.

Flags of ``train`` map one-to-one onto :class:`frostline.lab.recipe.TrainConfig` fields. Bad input
exits with code 2 and one line saying what to do, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing

from ..errors import FrostlineError

HELP = {
    "model": "model: from scratch resnet, vgg, mobilenetv2, vit; pretrained minilm (text), efficientnet-lite0",
    "dataset": "dataset (fashion-mnist, mnist; fine-foods: text reviews, for minilm)",
    "method": "freezing method (none, linear, freezeout, autofreeze, cka-oracle, smartfrz)",
    "epochs": "epochs to train (may be fractional)",
    "batch_size": "samples per step",
    "optimizer": "sgd (Nesterov momentum) or adamw",
    "lr": "base learning rate",
    "lr_schedule": "cosine or constant (freezeout brings its own per-unit schedule)",
    "train_subset": "train on the first N samples of the (shuffled) train split",
    "val_size": "samples held out from train for validation (default 5000; 400 for fine-foods)",
    "max_length": "text datasets: tokens per sample (padded / truncated)",
    "test_subset": "evaluate on the first N test samples",
    "width": "model width (channels / embedding dim)",
    "depth": "model depth (blocks per stage / transformer blocks)",
    "device": "auto, cpu or cuda[:N]",
    "threads": "torch CPU threads (default: torch's choice)",
    "out": "run folder for metrics.jsonl, summary.json, timeline.png",
    "log_every": "steps between metrics rows",
    "checkpoint_every": "steps between checkpoints (also written at every freeze event and epoch end; 0: only those)",
    "resume": "continue the run in this folder from its last good checkpoint, with its own settings",
    "repeats": "timed steps per configuration (medians are reported)",
    "warmup": "untimed steps first",
    "progress": "show a progress bar",
    "t_0": "freezeout: fraction at which the first unit freezes, before the schedule is applied",
    "schedule": "freezeout: linear, squared or cubic spacing of freezing times",
    "scale_lr": "freezeout: start unit i at lr / t_i",
    "const_time": "freezeout/linear: lengthen training to the baseline's predicted compute",
    "freeze_start": "linear: fraction of training before freezing starts",
    "freeze_level": "linear: fraction of units frozen at the end",
    "percentile": "autofreeze: freeze the units before the first whose gradient-norm change rate reaches this percentile",
    "intervals_per_epoch": "autofreeze: evaluation intervals per epoch",
    "stages_per_epoch": "cka-oracle/smartfrz: freezing stages (decisions) per epoch (default: the method's, 4 / 1)",
    "prefix_only": "cka-oracle/smartfrz: freeze only a growing prefix of units (otherwise any ready unit)",
    "reference": "cka-oracle: folder of a finished `frostline train` of the same model to compare with",
    "probe_size": "cka-oracle: train samples in the fixed probe batch CKA is measured on",
    "cka_window": "cka-oracle: stages over which the CKA must be stable",
    "cka_epsilon": "cka-oracle: a unit is stable when the variance of its CKA over the window is below this",
    "cka_floor": "cka-oracle: ... and its latest CKA to the reference is at least this",
    "predictor": "smartfrz: predictor file from `frostline predictor train` (default: the one shipped with frostline)",
    "history_window": "smartfrz: snapshots per unit the predictor looks at",
    "tailor_size": "smartfrz: sampled weights per unit per snapshot (must match the predictor)",
    "snapshots_per_epoch": "smartfrz: weight snapshots per epoch",
    "augment": "random shifts (+ flips, not on mnist) of training samples",
    "fixed_augmentation": "draw each sample's augmentation once, so the cache can serve it (changes training)",
    "cache": "activation cache for the frozen prefix: auto (on when safe), memory (spills to disk past the budget), disk, off",
    "cache_dtype": "cache storage: float32 (lossless), float16, bfloat16",
    "cache_memory_mb": "memory budget of the cache before it spills to disk",
    "compile": "torch.compile each freeze unit separately (regional), so a freeze recompiles only the units it changes",
    "compile_backend": "torch.compile backend for --compile (inductor needs a C compiler on CPU; aot_eager compiles fast)",
}


def _add_config_flags(parser: argparse.ArgumentParser, config_cls, overrides: dict[str, str] | None = None) -> None:
    hints = typing.get_type_hints(config_cls)
    helps = {**HELP, **(overrides or {})}
    for f in dataclasses.fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        help_text = f"{helps.get(f.name, '')} (default: {f.default})"
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
            continue
        base = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
        parser.add_argument(flag, dest=f.name, type=base, default=f.default, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    from .steptime import BenchConfig
    from .recipe import TrainConfig

    parser = argparse.ArgumentParser(prog="frostline", description="Progressive layer freezing for PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True)

    p_train = sub.add_parser("train", help="train a model with a freezing method on real data")
    _add_config_flags(p_train, TrainConfig)

    p_est = sub.add_parser("estimate", help="predicted saving of a linear/freezeout schedule, before training")
    _add_config_flags(p_est, TrainConfig)

    p_bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = p_bench.add_subparsers(dest="bench", required=True)
    p_step = bench_sub.add_parser("steptime", help="step time with the first k units frozen, for every k")
    _add_config_flags(p_step, BenchConfig, {
        "cache": "also time the cached step (prefix output replayed from the cache) against a suffix-only step",
        "out": "folder for steptime.json and steptime.md"})

    p_cmp = bench_sub.add_parser("compare", help="every method side by side on real data (resumable); writes report.md and plots")
    p_cmp.add_argument("--suite", default="quick", help="quick (about 30 min on 2 CPU cores) or full (default: quick)")
    p_cmp.add_argument("--out", default="runs/bench-compare", help="bench folder; finished runs in it are reused (default: runs/bench-compare)")
    p_cmp.add_argument("--jobs", type=int, default=1, help="runs at once (default: 1); use one per core with the suite's one thread per run")
    p_cmp.add_argument("--report-only", action="store_true", help="redraw report.md and plots from the runs already there")
    p_cmp.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar")
    p_readme = bench_sub.add_parser("readme", help="replace the README's results block with a bench's report")
    p_readme.add_argument("bench_dir", help="folder of a finished `frostline bench compare`")
    p_readme.add_argument("--readme", default="README.md", help="README to update (default: README.md)")

    p_data = sub.add_parser("data", help="datasets")
    data_sub = p_data.add_subparsers(dest="data", required=True)
    p_fetch = data_sub.add_parser("fetch", help="fetch a dataset that is not installed by apt (mnist)")
    p_fetch.add_argument("name", choices=["mnist"])
    data_sub.add_parser("list", help="list datasets and where their files are")

    p_pred = sub.add_parser("predictor", help="SmartFRZ predictor: collect labelled runs, train, evaluate")
    pred_sub = p_pred.add_subparsers(dest="predictor_command", required=True)
    p_collect = pred_sub.add_parser("collect", help="reference run + recording run -> DIR/dataset.pt (CKA-labelled snapshots)")
    _add_config_flags(p_collect, TrainConfig, {
        "method": "ignored (both runs train without freezing)",
        "out": "folder for reference/, recording/ and dataset.pt",
        "stages_per_epoch": "labelled stages per epoch (default 4)",
        "cka_window": "labelling rule: stages over which the CKA must be stable",
        "cka_epsilon": "labelling rule: variance bound", "cka_floor": "labelling rule: CKA floor"})
    p_fit = pred_sub.add_parser("train", help="train a predictor on collected runs, report on held-out runs")
    p_fit.add_argument("runs", nargs="+", help="folders written by `frostline predictor collect`")
    p_fit.add_argument("--out", required=True, help="predictor file to write")
    p_fit.add_argument("--holdout", nargs="*", default=None,
                       help="collected folders to hold out (default: one of the runs, chosen by --seed)")
    p_fit.add_argument("--epochs", type=int, default=40, help="passes over the training samples (default: 40)")
    p_fit.add_argument("--seed", type=int, default=0, help="seed for initialisation, order and the held-out run")
    p_fit.add_argument("--history-window", type=int, default=30, help="snapshots per sample (default: 30)")
    p_fit.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar")
    p_eval = pred_sub.add_parser("eval", help="precision/recall/F1 of a predictor on collected runs")
    p_eval.add_argument("runs", nargs="+", help="folders written by `frostline predictor collect`")
    p_eval.add_argument("--predictor", default=None, help="predictor file (default: the shipped one)")
    p_eval.add_argument("--history-window", type=int, default=30, help="snapshots per sample (default: 30)")

    p_report = sub.add_parser("report", help="a Markdown table comparing finished runs")
    p_report.add_argument("runs", nargs="+", help="run folders (each with a summary.json)")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "train":
        from .recipe import TrainConfig, train

        cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
        summary = train(cfg)
        if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
            return 0
        print(f"test accuracy {summary['test_accuracy']:.2f}% | train time {summary['train_time_s']:.1f}s | "
              f"FLOPs saved {100 * summary['flops_saved']:.1f}% | frozen {sum(v is not None for v in summary['frozen_at'].values())}/{len(summary['units'])} units")
        print(f"results: {cfg.out}/summary.json, {cfg.out}/metrics.jsonl, {cfg.out}/timeline.png")
        return 0
    if args.command == "estimate":
        from .report import markdown_table
        from .recipe import TrainConfig, plan

        cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
        p = plan(cfg)
        print(markdown_table(["unit", "freezes at"], [[u, "never" if t is None else f"{t:.3f}"] for u, t in zip(p["units"], p["freeze_times"])]))
        print(f"predicted compute saved: {100 * p['saving']:.1f}% | with the activation cache: {100 * p['saving_cached']:.1f}% | "
              f"assuming backward = forward (FreezeOut's estimate): {100 * p['saving_backward_equals_forward']:.1f}%")
        return 0
    if args.command == "bench" and args.bench == "compare":
        from .compare import run_suite

        data = run_suite(args.suite, args.out, progress=args.progress, report_only=args.report_only, jobs=args.jobs)
        print(f"{data['finished']}/{data['cells']} runs finished" + (f", {len(data['failed'])} failed" if data["failed"] else ""))
        print(f"report: {args.out}/report.md (plots beside it)")
        return 1 if data["failed"] else 0
    if args.command == "bench" and args.bench == "readme":
        from .compare import update_readme

        print(f"updated {update_readme(args.bench_dir, args.readme)}")
        return 0
    if args.command == "bench":
        from .steptime import BenchConfig, steptime

        cfg = BenchConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(BenchConfig)})
        result = steptime(cfg)
        print(result["table"])
        print(f"results: {cfg.out}/steptime.json, {cfg.out}/steptime.md")
        return 0
    if args.command == "data":
        from . import data

        if args.data == "fetch":
            path = data.fetch_mnist()
            print(f"mnist ready: {path}")
        else:
            for name in data.list_datasets():
                try:
                    data.load_arrays(name, "test")
                    where = "installed"
                except FrostlineError as e:
                    where = f"missing ({e})"
                print(f"{name}: {where}")
        return 0
    if args.command == "predictor":
        return _predictor(args)
    if args.command == "report":
        from .report import runs_table

        print(runs_table([_read_summary(run) for run in args.runs]))
        return 0
    raise AssertionError(args.command)


def _predictor(args: argparse.Namespace) -> int:
    from .predictor import fit

    if args.predictor_command == "collect":
        from .predictor.collect import collect
        from .recipe import TrainConfig

        cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
        path = collect(cfg, cfg.out, tailor_size=cfg.tailor_size, snapshots_per_epoch=cfg.snapshots_per_epoch,
                       label_stages_per_epoch=cfg.stages_per_epoch or 4, probe_size=cfg.probe_size,
                       rule=(cfg.cka_window, cfg.cka_epsilon, cfg.cka_floor))
        from .predictor.collect import load_collected

        ds = load_collected(path)
        labels = ds["labels"][ds["labels"] >= 0]
        print(f"dataset: {path} | {ds['snapshots'].shape[0]} snapshots x {ds['snapshots'].shape[1]} units | "
              f"{len(labels)} labelled (unit, stage) pairs, {int(labels.sum())} freeze")
        return 0
    if args.predictor_command == "train":
        report = fit.train_from_dirs(args.runs, args.out, holdout=args.holdout, epochs=args.epochs, seed=args.seed,
                                     window=args.history_window, progress=args.progress)
        print(fit.format_report(report))
        print(f"predictor: {args.out}")
        return 0
    from .predictor.collect import load_collected
    from ..policies.smartfrz.predictor import load_predictor

    model, meta = load_predictor(args.predictor)
    report = fit.evaluate_runs(model, [load_collected(r) for r in args.runs], args.history_window)
    print(fit.format_report({"eval": None, "heldout": report}).replace("| heldout |", "| eval |"))
    print(f"predictor: {meta['path']} (sha256 {meta['sha256']})")
    return 0


def _read_summary(run: str) -> dict:
    import json
    from pathlib import Path

    path = Path(run) / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise FrostlineError(f"{path} does not exist: pass folders written by `frostline train`") from None
    except json.JSONDecodeError as e:
        raise FrostlineError(f"{path} is not valid JSON ({e}); re-run that training") from None
    if summary.get("status") != "finished":
        raise FrostlineError(f"{path} is from a run that did not finish (status {summary.get('status')!r})")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except FrostlineError as e:
        print(f"frostline: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("frostline: interrupted; finished results are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
