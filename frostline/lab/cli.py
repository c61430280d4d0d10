"""``frostline`` command line: ``train``, ``estimate``, ``bench steptime|compare|readme``, ``data``, ``predictor``, ``report``.

Flags of ``train`` map one-to-one onto :class:`frostline.lab.config.TrainConfig` fields. Bad input
exits with code 2 and one line saying what to do, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import typing
import warnings
from pathlib import Path
from typing import Callable

from ..errors import FrostlineError
from ..policies import list_policies

#: Help of the run settings; the methods' hyperparameters bring their own (from the policy registry).
HELP = {
    "model": "model: from scratch resnet, vgg, mobilenetv2, vit; pretrained minilm (text), efficientnet-lite0",
    "dataset": "dataset (fashion-mnist, mnist; fine-foods: text reviews, for minilm)",
    "method": f"freezing method ({', '.join(list_policies())})",
    "epochs": "epochs to train (may be fractional)",
    "batch_size": "samples per step",
    "optimizer": "sgd (Nesterov momentum) or adamw",
    "lr": "base learning rate",
    "lr_schedule": "cosine, step (a tenth of the rate from half of training, a hundredth from three quarters) or constant (freezeout brings its own per-unit schedule)",
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
    "const_time": "freezeout/linear: lengthen training to the baseline's predicted compute",
    "reference": "cka-oracle: folder of a finished `frostline train` of the same model to compare with",
    "probe_size": "cka-oracle: train samples in the fixed probe batch CKA is measured on",
    "cooldown": "optimizer steps over which a unit the method decided to freeze anneals its learning rate "
                "to zero (half a cosine) before it freezes; 0 freezes at once (not for freezeout, which anneals itself)",
    "head_units": "how many of the model's last units form the head, which never freezes (1: the classifier alone; "
                  "3: it and the two blocks below it, a common choice when fine-tuning)",
    "speed_probe": "after training, time this many steps of a fresh full model (nothing frozen, no cache) in the same "
                   "process, so time saved is measured against this machine's speed now, not another run's (0: off)",
    "augment": "random shifts (+ flips, not on mnist) of training samples",
    "fixed_augmentation": "draw each sample's augmentation once, so the cache can serve it (changes training)",
    "cache": "activation cache for the frozen prefix: auto (on when safe), memory (spills to disk past the budget), disk, off",
    "cache_dtype": "cache storage: float32 (lossless), float16, bfloat16",
    "cache_memory_mb": "memory budget of the cache before it spills to disk",
    "compile": "torch.compile each freeze unit separately (regional), so a freeze recompiles only the units it changes",
    "compile_backend": "torch.compile backend for --compile (inductor needs a C compiler on CPU; aot_eager compiles fast)",
}


def _add_config_flags(parser: argparse.ArgumentParser, config_cls, overrides: dict[str, str] | None = None) -> None:
    """One flag per field of ``config_cls``; its help from ``overrides``, the field's own (method
    hyperparameters) or :data:`HELP`. A flag left unset is left off the parsed arguments, so
    :func:`_config` can tell what was given: a pretrained model's fine-tuning settings fill only
    the flags left unset, and a given flag the run would not read is an error (:func:`_given`)."""
    from .pretrained import FINETUNE_SETTINGS

    recipe_fields = {name for settings in FINETUNE_SETTINGS.values() for name in settings}
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        text = (overrides or {}).get(f.name) or f.metadata.get("help") or HELP.get(f.name, "")
        help_text = text if "(default:" in text else f"{text} (default: {f.default})"
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_text)
            continue
        base = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
        if f.name in recipe_fields:  # left unset, a pretrained model's fine-tuning setting replaces the default
            help_text = f"{text} (default: {f.default}; a pretrained model's fine-tuning setting)"
        parser.add_argument(flag, dest=f.name, type=base, default=argparse.SUPPRESS, help=help_text)


def _given(args: argparse.Namespace, config_cls) -> set[str]:
    """The fields of ``config_cls`` whose flags were given on the command line."""
    return {f.name for f in dataclasses.fields(config_cls) if hasattr(args, f.name)}


def _config(args: argparse.Namespace, config_cls):
    """``config_cls`` from the parsed flags. A pretrained model (``--model minilm``) gets its
    fine-tuning settings (:data:`frostline.lab.pretrained.FINETUNE_SETTINGS`) for the flags left
    unset, and the command says which on stderr."""
    from .pretrained import FINETUNE_SETTINGS

    given = _given(args, config_cls)
    cfg = config_cls(**{name: getattr(args, name) for name in given})
    names = {f.name for f in dataclasses.fields(config_cls)}
    recipe = {k: v for k, v in FINETUNE_SETTINGS.get(getattr(cfg, "model", None), {}).items()
              if k in names and k not in given}
    if recipe:
        cfg = dataclasses.replace(cfg, **recipe)
    if recipe and int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 speaks
        print(f"{cfg.model} is pretrained: its fine-tuning settings fill the flags left unset: "
              + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in recipe.items()), file=sys.stderr)
    return cfg


def _command(sub, name: str, command: str, **kwargs) -> argparse.ArgumentParser:
    """A leaf parser whose parsed arguments dispatch to ``COMMANDS[command]``."""
    parser = sub.add_parser(name, **kwargs)
    parser.set_defaults(command_name=command)
    return parser


def build_parser() -> argparse.ArgumentParser:
    from .config import TrainConfig

    parser = argparse.ArgumentParser(prog="frostline", description="Progressive layer freezing for PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_config_flags(_command(sub, "train", "train", help="train a model with a freezing method on real data"), TrainConfig)
    _add_config_flags(_command(sub, "estimate", "estimate", help="predicted time and FLOPs saved by a linear/freezeout schedule, profiled on this device before training"),
                      TrainConfig)
    _bench_parsers(sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True))
    data_sub = sub.add_parser("data", help="datasets").add_subparsers(dest="data", required=True)
    p_fetch = _command(data_sub, "fetch", "data fetch", help="fetch a dataset that is not installed by apt (mnist)")
    p_fetch.add_argument("name", choices=["mnist"])
    _command(data_sub, "list", "data list", help="list datasets and where their files are")
    p_pred = sub.add_parser("predictor", help="SmartFRZ predictor: collect labelled runs, train, evaluate")
    _predictor_parsers(p_pred.add_subparsers(dest="predictor_command", required=True))
    p_report = _command(sub, "report", "report", help="a Markdown table comparing finished runs")
    p_report.add_argument("runs", nargs="+", help="run folders (each with a summary.json)")
    return parser


def _bench_parsers(bench_sub) -> None:
    from .steptime import BenchConfig

    p_step = _command(bench_sub, "steptime", "bench steptime", help="step time with the first k units frozen, for every k")
    _add_config_flags(p_step, BenchConfig, {
        "cache": "also time the cached step (prefix output replayed from the cache) against a suffix-only step",
        "out": "folder for steptime.json and steptime.md", "progress": "show a progress bar",
        "optimizer": "optimizer whose step is timed: sgd or adamw"})
    p_cmp = _command(bench_sub, "compare", "bench compare",
                     help="every method side by side on real data (resumable); writes report.md and plots")
    p_cmp.add_argument("--suite", default="quick",
                       help="standard (the regime goals are judged on: full Fashion-MNIST, converged baseline, one run "
                            "at a time; hours on 2 CPU cores), quick (about 30 min; no goals), smoke, finetune, finetune-long "
                            "(EfficientNet-Lite0 fine-tuned 6 epochs), full (default: quick)")
    p_cmp.add_argument("--out", default="runs/bench-compare", help="bench folder; finished runs in it are reused (default: runs/bench-compare)")
    p_cmp.add_argument("--jobs", type=int, default=1, help="runs at once (default: 1); use one per core with the suite's one thread per run (standard allows only 1)")
    p_cmp.add_argument("--report-only", action="store_true", help="redraw report.md and plots from the runs already there")
    for what in ("model", "seed", "variant"):
        p_cmp.add_argument(f"--only-{what}", nargs="+", default=None, metavar=what.upper(),
                           help=f"run only the cells of these {what}s now (the report still covers the whole suite)")
    p_cmp.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar")
    p_readme = _command(bench_sub, "readme", "bench readme",
                        help="publish a bench: its full results into the docs, a short summary into the README")
    p_readme.add_argument("bench_dir", help="folder of a finished `frostline bench compare`")
    p_readme.add_argument("--readme", default="README.md", help="README whose summary block to update (default: README.md)")
    p_readme.add_argument("--docs", default="docs/benchmarks.md",
                          help="page that holds the full results, created if missing (default: docs/benchmarks.md)")


def _predictor_parsers(pred_sub) -> None:
    from .config import TrainConfig

    p_collect = _command(pred_sub, "collect", "predictor collect",
                         help="reference run + recording run -> DIR/dataset.pt (CKA-labelled snapshots)")
    _add_config_flags(p_collect, TrainConfig, {
        "method": "not read: both runs train without freezing",
        "out": "folder for reference/, recording/ and dataset.pt",
        "stages_per_epoch": "labelled stages per epoch (default 4)",
        "reference": "finished run (same model, another seed) to label against (default: one trained here "
                     "with --seed + 1)"})
    p_fit = _command(pred_sub, "train", "predictor train", help="train a predictor on collected runs, report on held-out runs")
    p_fit.add_argument("runs", nargs="+", help="folders written by `frostline predictor collect`")
    p_fit.add_argument("--out", required=True, help="predictor file to write")
    p_fit.add_argument("--holdout", nargs="*", default=None,
                       help="collected folders to hold out (default: one of the runs, chosen by --seed)")
    p_fit.add_argument("--epochs", type=int, default=40, help="passes over the training samples (default: 40)")
    p_fit.add_argument("--seed", type=int, default=0, help="seed for initialisation, order and the held-out run")
    p_fit.add_argument("--history-window", type=int, default=30, help="snapshots per sample (default: 30)")
    p_fit.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar")
    _add_rule_flags(p_fit)
    p_eval = _command(pred_sub, "eval", "predictor eval", help="precision/recall/F1 of a predictor on collected runs")
    p_eval.add_argument("runs", nargs="+", help="folders written by `frostline predictor collect`")
    p_eval.add_argument("--predictor", default=None, help="predictor file (default: the shipped one)")
    p_eval.add_argument("--history-window", type=int, default=30, help="snapshots per sample (default: 30)")
    _add_rule_flags(p_eval)


def _add_rule_flags(parser: argparse.ArgumentParser) -> None:
    """The rule the recorded CKA is labelled with (frostline.lab.predictor.collect.LabelRule)."""
    from .predictor.collect import LabelRule

    rule = LabelRule()
    parser.add_argument("--label-window", type=int, default=rule.window,
                        help=f"labels: stages the normalised CKA must be stable over (default: {rule.window})")
    parser.add_argument("--label-tolerance", type=float, default=rule.tolerance,
                        help=f"labels: its spread bound over the window (default: {rule.tolerance})")
    parser.add_argument("--label-share", type=float, default=rule.share,
                        help=f"labels: share of its end value it must have reached (default: {rule.share})")
    parser.add_argument("--label-min-learned", type=float, default=rule.min_learned,
                        help=f"labels: a unit whose end value is below this never learned (default: {rule.min_learned})")


def _rule(args: argparse.Namespace):
    from .predictor.collect import LabelRule

    return LabelRule(args.label_window, args.label_tolerance, args.label_share, args.label_min_learned).check()


def _measured_line(summary: dict, out: Path) -> str:
    """The time saved against the run's own full speed (``--speed-probe``)."""
    probe = summary["full_speed_probe"]
    saved = _with_own_saving(summary, out)["in_run_time_saved"]
    return (f"time saved against this run's own full speed: {100 * saved:.1f}% "
            f"(a full-model step took {probe['step_s'] * 1000:.1f} ms over {probe['steps']} steps timed after training)")


# -- one function per command ----------------------------------------------------------------------
def _run_config(args: argparse.Namespace):
    """The TrainConfig of ``train`` and ``estimate``, none of whose given flags goes unread."""
    from .config import TrainConfig, check_all_read

    cfg = _config(args, TrainConfig)
    check_all_read(cfg, _given(args, TrainConfig))
    return cfg


def _train(args: argparse.Namespace) -> int:
    from .config import resumed_config
    from .recipe import train

    cfg = _run_config(args)
    summary = train(cfg)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    if cfg.resume:  # the run's own settings, as train() read them: its folder (not --out's default), its cooldown
        cfg = resumed_config(cfg)
    frozen = sum(v is not None for v in summary["frozen_at"].values())
    print(f"test accuracy {summary['test_accuracy']:.2f}% | train time {summary['train_time_s']:.1f}s | "
          f"FLOPs saved {100 * summary['flops_saved']:.1f}% | frozen {frozen}/{len(summary['units'])} units")
    if summary.get("cooling_at_end"):
        print(f"decided but not frozen: {', '.join(c['unit'] for c in summary['cooling_at_end'])} (their "
              f"{cfg.cooldown}-step cool-down had not ended when training did)")
    if summary.get("cache"):
        print(_cache_line(summary["cache"], summary["units"], frozen))
    if summary.get("full_speed_probe"):
        print(_measured_line(summary, Path(cfg.out)))
    print(f"results: {cfg.out}/summary.json, {cfg.out}/metrics.jsonl, {cfg.out}/timeline.png")
    return 0


def _cache_line(cache: dict, units: list[str], frozen: int) -> str:
    """What the activation cache did, in one line; never silent when it did nothing."""
    if cache.get("refused"):
        return "activation cache: turned off (it could not serve this model exactly; see the warning above)"
    counts = (f"{cache['hits']} replays, {cache['extended']} extensions, {cache['computed']} fills, "
              f"peak {cache['peak_memory_mb'] + cache['peak_disk_mb']:.0f} MiB")
    payoff = cache.get("payoff")
    if payoff is None:
        return f"activation cache: {counts}" if cache["computed"] else "activation cache: unused (no frozen prefix)"
    served = [r for r in payoff if "served_from_step" in r]
    if not served:
        why = "no unit froze" if not frozen else "no frozen prefix would have repaid its copies in time"
        return f"activation cache (auto): not filled, {why} (per boundary: summary.json cache.payoff)"
    last = served[-1]
    return (f"activation cache (auto): served units up to {units[last['boundary'] - 1]} from step "
            f"{last['served_from_step']}; {counts}")


#: ``train`` settings that ``estimate`` never reads: its plan comes from the model, data, method and
#: schedule alone, and it prints the saving both with and without the cache.
ESTIMATE_IGNORES = ("out", "resume", "checkpoint_every", "log_every", "speed_probe", "test_subset", "const_time",
                    "augment", "fixed_augmentation", "cache", "cache_dtype", "cache_memory_mb")


def _estimate(args: argparse.Namespace) -> int:
    from .config import TrainConfig, check_all_read, unread_settings
    from .recipe import plan
    from .report import markdown_table

    def unread(cfg, given):
        why = ("frostline estimate plans the schedule from the model, data and method before any run, and prints "
               "the saving with and without the cache")
        return unread_settings(dataclasses.replace(cfg, resume=None), set(given) - set(ESTIMATE_IGNORES)) + [
            (name, why) for name in sorted(given) if name in ESTIMATE_IGNORES]

    cfg = _config(args, TrainConfig)
    check_all_read(cfg, _given(args, TrainConfig), unread=unread)
    p = plan(cfg)
    print(markdown_table(["unit", "freezes at"], [[u, "never" if t is None else f"{t:.3f}"] for u, t in zip(p["units"], p["freeze_times"])]))
    if all(t is None for t in p["freeze_times"]):  # a table of "never" and 0% would not say why
        cooling = f", and each decided unit cools down for {cfg.cooldown} of them first" if cfg.cooldown else ""
        print(f"no unit freezes within the run's {p['steps']} optimizer steps with these settings{cooling}: nothing "
              "would be saved; train longer, let the method freeze sooner" + (", or shorten --cooldown" if cfg.cooldown
                                                                              else ""))
    prof = p["profile"]
    print(f"predicted time saved: {100 * p['time_saving']:.1f}% | with the activation cache: {100 * p['time_saving_cached']:.1f}% "
          f"(step times profiled on {prof['device']}, {prof['threads']} threads: full step {1000 * prof['full_step_s']:.1f} ms)")
    print(f"predicted compute (FLOPs) saved: {100 * p['saving']:.1f}% | with the activation cache: {100 * p['saving_cached']:.1f}% | "
          f"assuming backward = forward (FreezeOut's estimate): {100 * p['saving_backward_equals_forward']:.1f}%")
    return 0


def _bench_steptime(args: argparse.Namespace) -> int:
    from .config import check_all_read
    from .steptime import BenchConfig, steptime

    cfg = _config(args, BenchConfig)
    check_all_read(cfg, _given(args, BenchConfig))
    result = steptime(cfg)
    print(result["table"])
    print(f"results: {cfg.out}/steptime.json, {cfg.out}/steptime.md")
    return 0


def _bench_compare(args: argparse.Namespace) -> int:
    from .compare import run_suite

    only = {"model": args.only_model, "seed": args.only_seed, "variant": args.only_variant}
    data = run_suite(args.suite, args.out, progress=args.progress, report_only=args.report_only, jobs=args.jobs,
                     only=only)
    print(f"{data['finished']}/{data['cells']} runs finished" + (f", {len(data['failed'])} failed" if data["failed"] else ""))
    print(f"report: {args.out}/report.md (plots beside it)")
    return 1 if data["failed"] else 0


def _bench_readme(args: argparse.Namespace) -> int:
    from .compare import publish_results

    for path in publish_results(args.bench_dir, readme=args.readme, docs=args.docs):
        print(f"updated {path}")
    return 0


def _data_fetch(args: argparse.Namespace) -> int:
    from . import data

    print(f"mnist ready: {data.fetch_mnist()}")
    return 0


def _data_list(args: argparse.Namespace) -> int:
    from . import data

    for name in data.list_datasets():
        try:
            if name in data.TEXT_DATASETS:  # reviews, not image arrays
                from .finefoods import read_reviews

                read_reviews("test")
            else:
                data.load_arrays(name, "test")
            where = "installed"
        except FrostlineError as e:
            where = f"missing ({e})"
        print(f"{name}: {where}")
    return 0


def _predictor_collect(args: argparse.Namespace) -> int:
    from .config import TrainConfig, check_all_read
    from .predictor.collect import collect, load_collected, unread_by_collect

    cfg = _config(args, TrainConfig)
    check_all_read(cfg, _given(args, TrainConfig), unread_by_collect)
    path = collect(cfg, cfg.out, reference=cfg.reference, tailor_size=cfg.tailor_size, snapshots_per_epoch=cfg.snapshots_per_epoch,
                   label_stages_per_epoch=cfg.stages_per_epoch or 4, probe_size=cfg.probe_size)
    ds = load_collected(path)
    labels = ds["labels"][ds["labels"] >= 0]
    print(f"dataset: {path} | {ds['snapshots'].shape[0]} snapshots x {ds['snapshots'].shape[1]} units | "
          f"{len(labels)} labelled (unit, stage) pairs, {int(labels.sum())} freeze")
    return 0


def _predictor_train(args: argparse.Namespace) -> int:
    from .predictor import fit

    report = fit.train_from_dirs(args.runs, args.out, holdout=args.holdout, epochs=args.epochs, seed=args.seed,
                                 window=args.history_window, rule=_rule(args), progress=args.progress)
    print(fit.format_report(report))
    print(f"predictor: {args.out}")
    return 0


def _predictor_eval(args: argparse.Namespace) -> int:
    from ..policies.smartfrz.predictor import load_predictor
    from .predictor import fit
    from .predictor.collect import load_collected

    model, meta = load_predictor(args.predictor)
    report = fit.evaluate_runs(model, [load_collected(r) for r in args.runs], args.history_window, _rule(args))
    print(fit.format_report({"eval": None, "heldout": report}).replace("| heldout |", "| eval |"))
    print(f"predictor: {meta['path']} (sha256 {meta['sha256']})")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import cache_table, read_summary, runs_table

    runs: dict[Path, str] = {}  # by the folder itself: two spellings of one run are one row
    for run in args.runs:
        folder = Path(run).resolve()
        if folder in runs:
            warnings.warn(f"frostline: {run} is given more than once; it is listed once")
        runs.setdefault(folder, run)
    summaries = [_with_own_saving(read_summary(run), Path(run)) for run in runs.values()]
    print(runs_table(summaries))
    cache = cache_table(summaries)
    if cache:
        print("\nActivation cache (`--cache auto`): per frozen prefix, a sample's fill against what each replay saves\n")
        print(cache)
    return 0


def _with_own_saving(summary: dict, folder: Path) -> dict:
    """A run made with ``--speed-probe`` gets its time saved against its own full speed."""
    if not summary.get("full_speed_probe"):
        return summary
    from .compare import in_run_saving
    from .report import read_metrics

    return {**summary, "in_run_time_saved": in_run_saving(summary, read_metrics(folder))}


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": _train,
    "estimate": _estimate,
    "bench steptime": _bench_steptime,
    "bench compare": _bench_compare,
    "bench readme": _bench_readme,
    "data fetch": _data_fetch,
    "data list": _data_list,
    "predictor collect": _predictor_collect,
    "predictor train": _predictor_train,
    "predictor eval": _predictor_eval,
    "report": _report,
}


#: What the workbench needs beyond the library (the ``lab`` extra).
LAB_MODULES = ("tqdm", "matplotlib")


def check_lab_installed() -> None:
    """The CLI is the workbench: say which extra to install instead of failing mid-run on an import."""
    import importlib.util

    missing = [m for m in LAB_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise FrostlineError(f"the frostline command needs the workbench ({', '.join(missing)} missing): "
                             "pip install 'frostline[lab]' (from a checkout: pip install -e '.[lab]')")


@contextlib.contextmanager
def _one_line_warnings():
    """A warning on the command line reads as one line (``warning: ...``), not as the library
    file and source line that raised it: those mean nothing to someone who ran a command."""
    before = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *_, **__: f"warning: {message}\n"
    try:
        yield
    finally:
        warnings.formatwarning = before


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_lab_installed()
        with _one_line_warnings():
            return COMMANDS[args.command_name](args)
    except FrostlineError as e:
        print(f"frostline: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        from .config import TrainConfig

        where = getattr(args, "resume", None) or getattr(args, "out", None) or TrainConfig.out
        again = (f"; `frostline train --resume {where}` goes on from its last checkpoint (the steps since are trained "
                 "again)") if args.command_name == "train" and where else ""
        print(f"frostline: interrupted; finished results are kept{again}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
