"""``frostline bench compare``: every method side by side, on one machine, in one process tree.

A *suite* is a list of cells (model × dataset × method variant × seed). Each cell is one
``frostline train`` run in its own subprocess (so its peak memory is its own) under
``DIR/cells/<dataset>/<model>/<variant>/seed<k>``; by default cells run one at a time so they do not
compete for the machine. A finished cell whose settings match is reused, so an interrupted bench
continues where it stopped, also from cells kept in git without their weights. Time saved is
paired: each cell against the ``none`` cell of the same model, dataset and seed, measured in the
same bench. A suite may also check that its baseline converged (the same baseline trained longer);
no goal passes without that check.

The report (``report.md`` + PNG plots) is written from the cells' ``summary.json`` and
``metrics.jsonl`` alone, so it can be redrawn at any time (``frostline bench compare --report-only``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError, FrostlineError
from ..exploit.payoff import RULE_VERSION as PAYOFF_RULE
from .machine import label, machine_counts, machines_text, same_machine, slug

#: Method variants: the label in the tables, its method, and only the settings that differ from the
#: method's registered defaults (the authors' recommendations: FreezeOut t_0 = 0.8 cubic; AutoFreeze
#: N = 50 %, 20 intervals over the run; Composer freeze_start 0.5, freeze_level 1.0), on top of the suite's settings.
VARIANTS: dict[str, dict[str, Any]] = {
    "none": {"method": "none", "cache": "off"},
    "linear": {"method": "linear"},
    # the same schedule started at a quarter of training, set before any run: its freezing times
    # (stem at about a third, the last block at the end) are where AutoFreeze's fall and it saves
    # about what the adaptive methods save, so it asks whether adapting beats a clock at equal savings
    "linear-start0.25": {"method": "linear", "freeze_start": 0.25},
    # its twins for the cache suite (the plain name above has the default `--cache auto`): a clock whose
    # prefix grows every 7% of training, where `auto` is asked to serve prefixes that seldom come back
    "linear-start0.25-off": {"method": "linear", "freeze_start": 0.25, "cache": "off"},
    "linear-start0.25+cache": {"method": "linear", "freeze_start": 0.25, "cache": "memory"},
    # fine-tuning: the schedule from the first step with every frozen prefix replayed, set before any run:
    # the most a linear clock that ends with training can save (about half of it), so it asks whether
    # SmartFRZ's and AutoFreeze's early decisions in fine-tuning beat a clock that freezes as early
    "linear-start0+cache": {"method": "linear", "freeze_start": 0.0, "cache": "memory"},
    # the same clock done by half of training, so the second half trains only the head over the cached
    # body; set before any of its runs from cost alone: `frostline estimate --method linear --freeze-start 0
    # --freeze-end E` on MiniLM predicts 69.8% saved with the cache at E = 0.5 and 60.8% at 0.67, and the
    # estimate ran 4-12 points above what linear-start0+cache measured, so 0.5 is the round end clear of 2x
    "linear-start0-end0.5+cache": {"method": "linear", "freeze_start": 0.0, "freeze_end": 0.5, "cache": "memory"},
    # set after those runs, which were 2.3x faster and a point worse: the last block or two, which a fine-tune
    # adapts most, keep training (MiniLM's last encoder layer, EfficientNet-Lite0's last two blocks), and the
    # rest freezes sooner so the run stays past 2x; from cost alone, `frostline estimate ... --freeze-end 0.35
    # --freeze-level 0.9` predicts 63.7% (MiniLM) and 66.2% (EfficientNet-Lite0) saved with the cache
    "linear-start0-end0.35-level0.9+cache": {"method": "linear", "freeze_start": 0.0, "freeze_end": 0.35,
                                             "freeze_level": 0.9, "cache": "memory"},
    # set after those two, which lost a point each: FreezeOut's insight, anneal before freezing, on the clock.
    # Each unit's learning rate falls to zero over 30 steps (9% of MiniLM's run, 5% of EfficientNet-Lite0's)
    # before it freezes, so no unit stops on a full-rate step. The end was set from cost alone, before any
    # run, so that the run stays about as fast as linear-start0-end0.5+cache: `frostline estimate --method
    # linear --freeze-start 0 --freeze-end 0.4 --cooldown 30 --cache memory` predicts 62.9% saved (MiniLM)
    # and 68.9% (EfficientNet-Lite0), against 68.7% and 68.7% at --freeze-end 0.5 without a cool-down
    "linear-start0-end0.4+cache+cooldown30": {"method": "linear", "freeze_start": 0.0, "freeze_end": 0.4,
                                              "cache": "memory", "cooldown": 30},
    # set after those three, which lost a point each by stopping every unit below the head within the run:
    # a fixed bottom, frozen from the first step and replayed from the cache, above which the top layers
    # train for the whole run. The level was set from cost alone, before any of its runs: the smallest
    # prefix that `python scripts/finetune_bound.py` prices at 2x when frozen from the start, on the Xeon's
    # profile, is embeddings + 3 of MiniLM's 6 encoder layers (2.31x; 2.10x on the EPYC's) and stem + 10 of
    # EfficientNet-Lite0's 16 blocks (2.19x; 2.65x), and a level of 0.65 freezes exactly those 4 of 7 and
    # 11 of 17 units (freeze_end 0.001 reaches it at the first decision)
    "linear-start0-end0.001-level0.65+cache": {"method": "linear", "freeze_start": 0.0, "freeze_end": 0.001,
                                               "freeze_level": 0.65, "cache": "memory"},
    # the longer fine-tune (6 epochs): set after seed 0's linear-start0-end0.5+cache there, which ran 3x faster
    # than its baseline, far past 2x: the latest round end that `frostline estimate --model efficientnet-lite0
    # --epochs 6 --train-subset 12000 --method linear --freeze-start 0 --freeze-end 0.75 --cache memory` still
    # prices past 2x (54.1% saved with the cache; 41.3% at an end of 1.0)
    "linear-start0-end0.75+cache": {"method": "linear", "freeze_start": 0.0, "freeze_end": 0.75, "cache": "memory"},
    "freezeout": {"method": "freezeout", "cache": "off"},
    "freezeout+cache": {"method": "freezeout", "cache": "memory"},
    # the cache's payoff rule (`--cache auto`): a frozen prefix is replayed only once that repays its copies
    "freezeout+auto": {"method": "freezeout", "cache": "auto"},
    "freezeout-lin0.5+cache": {"method": "freezeout", "t_0": 0.5, "schedule": "linear", "cache": "memory"},
    "autofreeze": {"method": "autofreeze", "cache": "off"},
    "autofreeze+cache": {"method": "autofreeze", "cache": "memory"},
    "autofreeze+auto": {"method": "autofreeze", "cache": "auto"},
    # a less strict percentile, set before any run: the prefix stops only at a unit whose change rate is
    # in the top fifth (the authors' N trades speed for accuracy); for fine-tuning, where lower layers barely move
    "autofreeze-p80+cache": {"method": "autofreeze", "percentile": 80, "cache": "memory"},
    "cka-oracle+cache": {"method": "cka-oracle", "cache": "memory"},
    "smartfrz": {"method": "smartfrz", "cache": "off"},
    "smartfrz+cache": {"method": "smartfrz", "cache": "memory"},
    "smartfrz+auto": {"method": "smartfrz", "cache": "auto"},
    # anneal, then freeze: a decided unit's lr falls to zero over 100 steps (a quarter of a full
    # Fashion-MNIST epoch at batch 128) before it freezes, at the threshold calibrated for it on
    # validation runs (`python scripts/calibrate_threshold.py --cooldown 100 --candidates 0.657 0.8`,
    # table in benchmarks/smartfrz-threshold/calibration-1stages-cooldown100.json)
    "smartfrz+cache+cooldown": {"method": "smartfrz", "cache": "memory", "cooldown": 100, "freeze_threshold": 0.8},
    # four decisions per epoch instead of one: a unit freezes at the first quarter-epoch its
    # P(freeze) clears the threshold, not at the end of the epoch it did
    "smartfrz+cache+4stages": {"method": "smartfrz", "cache": "memory", "stages_per_epoch": 4},
    # the cadence between, added to the 6-epoch fine-tune after once and four times an epoch there had
    # bracketed the fine-tuning goal (48.7% saved at -0.17 points; 57.5% at -0.39)
    "smartfrz+cache+2stages": {"method": "smartfrz", "cache": "memory", "stages_per_epoch": 2},
    # both, at the threshold calibrated on validation runs for that way of deciding (lowest within 0.1
    # validation points: `python scripts/calibrate_threshold.py --stages-per-epoch 4 --cooldown 100
    # --candidates 0.8 0.85 0.9`, table in benchmarks/smartfrz-threshold/calibration-4stages-cooldown100.json)
    # (the 6-epoch fine-tune added it, set before any of its runs there: the from-scratch suite's best, and the
    # only SmartFRZ setting that lost no accuracy on the 3-epoch EfficientNet-Lite0 fine-tune, -0.02 points)
    "smartfrz+cache+4stages+cooldown": {"method": "smartfrz", "cache": "memory", "stages_per_epoch": 4,
                                        "cooldown": 100, "freeze_threshold": 0.8},
    # anneal, then freeze, on the 6-epoch fine-tune, set before any of their runs after twice and four times an
    # epoch there had saved past 2x but lost 0.37 and 0.39 points: a decided unit's lr falls to zero over 30 steps
    # before it freezes (the finetune suite's linear cool-down; a sixth of an epoch here, three times AdamW's
    # first-moment memory), at the predictor's default threshold; both cadences, so neither is picked after the fact
    "smartfrz+cache+2stages+cooldown30": {"method": "smartfrz", "cache": "memory", "stages_per_epoch": 2,
                                          "cooldown": 30},
    "smartfrz+cache+4stages+cooldown30": {"method": "smartfrz", "cache": "memory", "stages_per_epoch": 4,
                                          "cooldown": 30},
    # the same 30-step cool-down on the 3-epoch fine-tunes, once an epoch as `smartfrz+cache` there (which froze
    # every unit below the head of MiniLM at its first decision, -1.07 points), set before any of its runs and
    # after the two above had given EfficientNet-Lite0 no accuracy back: the cool-down measured on MiniLM too
    "smartfrz+cache+cooldown30": {"method": "smartfrz", "cache": "memory", "cooldown": 30},
    # the fine-tunes' top block kept training beside the classifier (`--head-units 2`), set before any of its
    # runs: SmartFRZ ended every 6-epoch EfficientNet-Lite0 run with all 17 units below the head frozen (-0.35
    # points), and the one block above them is the cheapest to keep: its step time profile put the step with
    # every unit below the head frozen at 0.195 of a full one and with all but the top block frozen at 0.234
    # (`step_time_profile.prefix` in the smartfrz_cache cells' summary.json)
    "smartfrz+cache+head2": {"method": "smartfrz", "cache": "memory", "head_units": 2},
}

#: Methods that are adaptive (decide from training signals).
ADAPTIVE = ("autofreeze", "cka-oracle", "smartfrz")
#: Pretrained models: their rows are fine-tuning, not training from scratch.
PRETRAINED = ("minilm", "efficientnet-lite0")


def cache_mode(variant: str) -> str:
    """A variant's activation-cache mode; one that does not set it trains with `frostline train`'s default."""
    return VARIANTS.get(variant, {}).get("cache", "auto")


def variant_settings(variant: str) -> dict[str, Any]:
    """A variant's full settings: its method's hyperparameters at their defaults, then its own."""
    from ..policies import list_policies
    from .config import method_settings

    method = VARIANTS[variant]["method"]
    defaults = method_settings(method) if method in list_policies() else {}
    return {"method": method, **defaults, **VARIANTS[variant]}


@dataclass(frozen=True)
class Goal:
    """An acceptance target a suite states and its report checks. Among the rows it covers, the best
    variant (averaged over model/dataset pairs, or judged per model) must meet every target that is
    set: ``min_time_saved`` of the wall time, at most ``max_accuracy_loss`` points lost, more time
    saved than each method in ``beats`` at equal or better accuracy (judged run by run, see
    :func:`rival_difference`), and a decision overhead below
    ``max_decision_overhead`` on every covered row. A target left at None is reported, not judged."""

    title: str
    min_time_saved: float | None
    max_accuracy_loss: float | None = 0.3
    methods: tuple[str, ...] = ()  # methods covered (empty: every freezing method)
    pretrained: bool = False  # fine-tuning rows (pretrained models) instead of from-scratch ones
    cached_only: bool = False  # only variants whose cache mode is `memory` (every frozen prefix replayed: `+cache`)
    per_model: bool = False  # judge each model on its own
    beats: tuple[str, ...] = ()  # methods the best variant must save more time than, at equal or better accuracy
    max_decision_overhead: float | None = None  # decision time over training-step time, worst covered row

    def covers(self, row: dict[str, Any]) -> bool:
        return (row["method"] != "none" and (not self.methods or row["method"] in self.methods)
                and (row["model"] in PRETRAINED) == self.pretrained
                and (not self.cached_only or cache_mode(row["variant"]) == "memory"))

    def rival(self, row: dict[str, Any]) -> bool:
        return row["method"] in self.beats and (row["model"] in PRETRAINED) == self.pretrained

    def target(self, brief: bool = False) -> str:
        """The goal in words; ``brief`` (the README) leaves how it is judged to the docs."""
        parts = []
        if self.min_time_saved is not None:
            speedup = 1 / (1 - self.min_time_saved)
            parts.append(f"≥ {100 * self.min_time_saved:.0f}% time saved" + ("" if brief else f" ({speedup:.3g}× faster)"))
        if self.max_accuracy_loss is not None:
            parts.append(f"≤ {self.max_accuracy_loss:g} points accuracy lost")
        if self.beats:
            parts.append(f"more time saved than {' and '.join(self.beats)} at equal or better accuracy"
                         + ("" if brief else ", paired by seed, beyond one standard error"))
        if self.max_decision_overhead is not None:
            parts.append(f"decision overhead < {100 * self.max_decision_overhead:g}% of training-step time")
        return ", ".join(parts)


#: The project's acceptance targets, stated by the suites that measure them.
FROM_SCRATCH = Goal("Adaptive methods from scratch", min_time_saved=0.30, methods=ADAPTIVE)
FINE_TUNING = Goal("Fine-tuning with the cache", min_time_saved=0.50, pretrained=True, cached_only=True, per_model=True)
#: Judged on the `standard` suite, where the baseline is shown to have converged.
STANDARD_GOALS = (
    Goal("SmartFRZ from scratch", min_time_saved=0.25, methods=("smartfrz",), beats=("linear", "autofreeze")),
    Goal("AutoFreeze keeps accuracy", min_time_saved=None, methods=("autofreeze",)),
    Goal("CKA oracle keeps accuracy", min_time_saved=None, methods=("cka-oracle",)),
    Goal("SmartFRZ decision overhead", min_time_saved=None, max_accuracy_loss=None, methods=("smartfrz",),
         max_decision_overhead=0.001),
)
#: A baseline has converged when training it ``Suite.convergence`` times longer gains at most this many
#: points of test accuracy. One-sided: the check rules out a baseline cut short, whose "loss" under
#: freezing would only be training it did not get; a longer run that ends lower (a fine-tuned model
#: that overfits) shows the baseline past its best, not short of it.
CONVERGENCE_TOLERANCE = 0.5


@dataclass(frozen=True)
class Suite:
    """Cells are ``models`` × ``datasets`` × ``variants`` × seeds, or, when ``pairs`` is given,
    each ``(dataset, model, settings)`` pair × variants × seeds (pretrained models fit one
    dataset each and need their own learning rate)."""

    name: str
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    seeds: int
    variants: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    about: str = ""
    pairs: tuple[tuple[str, str, dict[str, Any]], ...] = ()
    goals: tuple[Goal, ...] = ()
    convergence: float | None = None  # also train the baseline this many times longer, to show it converged
    convergence_seeds: int = 1  # seeds of that longer baseline (paired with the same seeds' baselines)
    max_jobs: int | None = None  # cells at once it allows (1: each run alone, so its times are honest)
    #: Whether ``bench readme`` puts its summary in the README too: the front door holds the suites the
    #: project's goals are judged on; a study of one question goes in the docs alone.
    in_readme: bool = True

    def combos(self) -> list[tuple[str, str, dict[str, Any]]]:
        if self.pairs:
            return list(self.pairs)
        return [(d, m, {}) for d in self.datasets for m in self.models]


#: Epochs of the `standard` suite; its convergence check shows whether they are enough.
STANDARD_EPOCHS = 8
#: Epochs of the `finetune` suite (BERT-style fine-tuning runs 2-4); its plateau check likewise.
FINETUNE_EPOCHS = 3

#: Epochs of the `finetune-long` suite: EfficientNet-Lite0's 3-epoch baseline was still climbing (+0.46 points
#: at 4.5 epochs, +0.83 at 6, seed 0), and in a longer run the cache's one epoch of fills weighs less.
FINETUNE_LONG_EPOCHS = 6

#: The EfficientNet-Lite0 fine-tune both fine-tuning suites run, so the longer one differs only in its epochs.
EFFICIENTNET_FINETUNE = ("fashion-mnist", "efficientnet-lite0", {"lr": 1e-3, "batch_size": 64, "train_subset": 12000,
                                                                 "val_size": 1000, "test_subset": None})

#: Full-speed steps each finetune run times after training: its methods freeze within the first
#: ~50 steps, too few to measure the run's full speed on (see :func:`relative_time`).
FINETUNE_SPEED_PROBE = 40

#: Training settings both fine-tuning suites share (all but the epochs).
FINETUNE_SETTINGS = {"optimizer": "adamw", "weight_decay": 0.01, "threads": 2, "log_every": 5,
                     "speed_probe": FINETUNE_SPEED_PROBE}

#: What every `standard` run shares (the full split, batch 128, two threads, one run at a time).
STANDARD_SETTINGS = {"epochs": STANDARD_EPOCHS, "train_subset": None, "val_size": 5000, "test_subset": None,
                     "batch_size": 128, "threads": 2, "log_every": 50}

SUITES: dict[str, Suite] = {
    "standard": Suite(
        "standard", ("resnet", "vgg"), ("fashion-mnist",), 3,
        ("none", "linear", "linear-start0.25", "freezeout", "autofreeze+cache", "cka-oracle+cache", "smartfrz+cache",
         "smartfrz+cache+4stages", "smartfrz+cache+4stages+cooldown"),
        STANDARD_SETTINGS,
        f"from scratch on the full Fashion-MNIST train split (55,000 images after the 5,000-image validation "
        f"hold-out), {STANDARD_EPOCHS} epochs, tested on all 10,000 test images, batch 128, SGD; two threads per "
        "run and one run at a time, so times are the run's own; the baseline's convergence is checked at 1.5× "
        "the epochs (seed 0)",
        goals=STANDARD_GOALS, convergence=1.5, max_jobs=1),
    # Set before any of its runs: does a freezing schedule placed for cosine decay carry over to another
    # learning-rate schedule, and does a method that reads the training adapt? Under step decay the rate
    # holds its peak for half of training, so a clock started at a quarter (the best trade under cosine)
    # stops units while they still move at full rate; an adaptive method should wait for the first drop.
    # The standard suite's settings and variants unchanged (SmartFRZ's threshold stays the one calibrated
    # under cosine), only the schedule differs.
    "step-lr": Suite(
        "step-lr", ("vgg", "resnet"), ("fashion-mnist",), 3,
        ("none", "linear", "linear-start0.25", "autofreeze+cache", "smartfrz+cache+4stages+cooldown"),
        {**STANDARD_SETTINGS, "lr_schedule": "step"},
        f"the standard suite's runs (from scratch, full Fashion-MNIST split, {STANDARD_EPOCHS} epochs, batch 128, "
        "SGD, two threads, one run at a time) with the learning rate cut tenfold at half and again at three "
        "quarters of training instead of cosine decay: whether settings chosen under cosine decay carry over; "
        "the baseline's convergence is checked at 1.5× the epochs (seed 0)",
        convergence=1.5, max_jobs=1, in_readme=False),
    "quick": Suite(
        "quick", ("resnet", "vgg"), ("fashion-mnist",), 3,
        ("none", "linear", "freezeout", "freezeout+cache", "autofreeze+cache", "cka-oracle+cache", "smartfrz+cache"),
        {"epochs": 4, "train_subset": 6000, "val_size": 1000, "batch_size": 128, "threads": 1, "log_every": 5},
        "from scratch on a 6,000-sample subset of Fashion-MNIST, 4 epochs, evaluated on the full 10,000-image test "
        "set, one thread per run; sized for about 30 minutes on 2 CPU cores with `--jobs 2`. A fast check of the "
        "whole grid, not a regime anyone trains in (its baseline is far from converged and two runs share the "
        "cores), so no goal is judged on it: see `--suite standard`"),
    "cache": Suite(
        "cache", ("resnet", "vgg"), ("fashion-mnist",), 2,
        ("none", "freezeout", "freezeout+cache", "freezeout+auto", "autofreeze", "autofreeze+cache", "autofreeze+auto",
         "linear-start0.25-off", "linear-start0.25+cache", "linear-start0.25"),
        {"epochs": 3, "train_subset": 20000, "val_size": 1000, "batch_size": 128, "threads": 1, "log_every": 10},
        "each method without the activation cache, with it on every frozen prefix (`memory`) and with its payoff "
        "rule (`auto`), from scratch on 20,000 Fashion-MNIST images for 3 epochs (enough steps at full speed "
        "before anything freezes to measure time saved inside each run), one thread per run and one run at a time",
        max_jobs=1),
    "smoke": Suite(
        "smoke", ("resnet",), ("fashion-mnist",), 2, ("none", "freezeout+cache", "autofreeze+cache", "cka-oracle+cache"),
        {"epochs": 1, "train_subset": 640, "val_size": 128, "test_subset": 512, "batch_size": 64, "width": 8,
         "threads": 1, "log_every": 2},
        "a one-minute check that the bench runs end to end, convergence check included (tiny model and data: its "
        "numbers mean nothing)",
        goals=(FROM_SCRATCH,), convergence=1.5),
    "finetune": Suite(
        "finetune", (), (), 3, ("none", "linear", "linear-start0+cache", "linear-start0-end0.5+cache",
                               "linear-start0-end0.35-level0.9+cache", "linear-start0-end0.4+cache+cooldown30",
                               "linear-start0-end0.001-level0.65+cache", "freezeout+cache", "autofreeze+cache",
                               "autofreeze-p80+cache", "smartfrz", "smartfrz+cache", "smartfrz+auto",
                               "smartfrz+cache+4stages", "smartfrz+cache+4stages+cooldown", "smartfrz+cache+cooldown30",
                               "smartfrz+cache+head2"),
        {"epochs": FINETUNE_EPOCHS, **FINETUNE_SETTINGS},
        f"fine-tuning pretrained models, {FINETUNE_EPOCHS} epochs (AdamW, cosine decay), two threads per run and one "
        "run at a time: all-MiniLM-L6-v2 on every fine-food training review (3,600 after the 400-review validation "
        "hold-out; 64 tokens, lr 5e-5, batch 32; tested on all 1,000 test reviews) and ImageNet EfficientNet-Lite0 "
        "on 12,000 Fashion-MNIST images upscaled to 64 x 64 (lr 1e-3, batch 64; tested on all 10,000 test images; a "
        "subset of the 55,000, sized for a 2-core CPU); the baseline's plateau is checked at 1.5x the epochs (seed 0); "
        f"after training each run times {FINETUNE_SPEED_PROBE} steps of a fresh full model (`--speed-probe`), and its time "
        "saved is measured against those and its own steps before its first freeze (runs made before the probe: "
        "against 200 full-speed steps of their own, else the same seed's baseline)",
        pairs=(
            ("fine-foods", "minilm", {"lr": 5e-5, "batch_size": 32, "max_length": 64, "train_subset": None,
                                       "val_size": 400}),
            EFFICIENTNET_FINETUNE,
        ),
        goals=(FINE_TUNING,), convergence=1.5, max_jobs=1),
    "finetune-long": Suite(
        "finetune-long", (), (), 3, ("none", "linear-start0-end0.75+cache", "linear-start0-end0.5+cache",
                                      "smartfrz+cache", "smartfrz+cache+2stages", "smartfrz+cache+4stages",
                                      "smartfrz+cache+2stages+cooldown30", "smartfrz+cache+4stages+cooldown30",
                                      "autofreeze+cache", "smartfrz+cache+head2", "smartfrz+cache+4stages+cooldown"),
        {"epochs": FINETUNE_LONG_EPOCHS, **FINETUNE_SETTINGS},
        f"the fine-tune of ImageNet EfficientNet-Lite0 as in the `finetune` suite (12,000 Fashion-MNIST images "
        f"upscaled to 64 x 64, AdamW, lr 1e-3, batch 64, cosine decay, tested on all 10,000 test images), trained "
        f"{FINETUNE_LONG_EPOCHS} epochs instead of {FINETUNE_EPOCHS}, where its baseline had not yet stopped climbing; "
        "two threads per run and one run at a time; the plateau is checked at 1.5x the epochs (seed 0); each run's "
        f"time saved is measured against {FINETUNE_SPEED_PROBE} steps of a fresh full model timed after training "
        "(`--speed-probe`) and its own steps before its first freeze. MiniLM is not in it: trained longer, it ends "
        "lower (past its best at 3 epochs)",
        pairs=(
            EFFICIENTNET_FINETUNE,
        ),
        goals=(FINE_TUNING,), convergence=1.5, max_jobs=1),
    "full": Suite(
        "full", ("resnet", "vgg", "mobilenetv2", "vit"), ("fashion-mnist", "mnist"), 3, tuple(VARIANTS),
        {"epochs": 10},
        "from scratch on the full training sets (55,000 after the validation hold-out), 10 epochs; for a long "
        "run or a GPU",
        goals=(FROM_SCRATCH,)),
}


@dataclass(frozen=True)
class Cell:
    """One training of a suite. ``reference_seed``: a CKA-oracle cell's reference, the baseline of
    that seed. ``extra``: a run the report does not show (an oracle's reference that is not one of
    the reported baselines), kept under ``references/`` instead of ``cells/``. ``on``: a baseline
    trained again on another machine (its :func:`~.machine.slug`), kept beside the suite's own as
    ``seed<N>.on-<slug>``, so that runs made there are paired with a baseline of their machine."""

    dataset: str
    model: str
    variant: str
    seed: int
    settings: tuple[tuple[str, Any], ...]
    reference_seed: int | None = None
    extra: bool = False
    on: str | None = None

    @property
    def key(self) -> str:
        return (("references/" if self.extra else "") + f"{self.dataset}/{self.model}/{self.variant}/seed{self.seed}"
                + (f" on {self.on}" if self.on else ""))

    def folder(self, root: Path) -> Path:
        variant = self.variant.replace("+", "_").replace("@", "-")
        seed = f"seed{self.seed}" + (f".on-{self.on}" if self.on else "")
        return root / ("references" if self.extra else "cells") / self.dataset / self.model / variant / seed


def _cell(suite: Suite, dataset: str, model: str, extra: dict[str, Any], variant: str, seed: int, **kwargs) -> Cell:
    settings = {**suite.settings, **extra, **variant_settings(variant), "model": model, "dataset": dataset, "seed": seed}
    return Cell(dataset, model, variant, seed, tuple(sorted(settings.items())), **kwargs)


def reference_seed(seed: int, seeds: int) -> int:
    """The seed of the baseline a CKA-oracle cell of ``seed`` compares with: another seed, since a
    reference of the same seed starts from the same weights and draws the same batches, so the
    oracle's CKA would reach 1.0 by construction. With one seed, an extra baseline of seed 1."""
    return (seed + 1) % seeds if seeds > 1 else seeds


def suite_cells(suite: Suite, methods_available: Sequence[str]) -> tuple[list[Cell], list[str]]:
    """The suite's cells, baselines first; and the variants skipped because their method is not
    installed (reported, never silently dropped)."""
    skipped = [v for v in suite.variants if VARIANTS[v]["method"] not in methods_available]
    cells = []
    for dataset, model, extra in suite.combos():
        for variant in suite.variants:
            if variant in skipped:
                continue
            for seed in range(suite.seeds):
                ref = reference_seed(seed, suite.seeds) if VARIANTS[variant]["method"] == "cka-oracle" else None
                cells.append(_cell(suite, dataset, model, extra, variant, seed, reference_seed=ref))
    return cells, skipped


def convergence_label(suite: Suite) -> str:
    return f"none@{suite.convergence:g}x"


def check_cells(suite: Suite) -> list[Cell]:
    """The convergence check: the baseline trained ``suite.convergence`` times longer, for the first
    ``convergence_seeds`` seeds (paired with those seeds' baselines); none without a check."""
    if not suite.convergence:
        return []
    from .config import RunSettings

    cells = []
    for dataset, model, extra in suite.combos():
        epochs = {**suite.settings, **extra}.get("epochs", RunSettings.epochs) * suite.convergence
        for seed in range(min(suite.convergence_seeds, suite.seeds)):
            base = _cell(suite, dataset, model, {**extra, "epochs": epochs}, "none", seed)
            cells.append(dataclasses.replace(base, variant=convergence_label(suite)))
    return cells


def reference_cell(suite: Suite, cell: Cell, root: Path) -> Cell:
    """The finished baseline whose ``model.pt`` a CKA-oracle cell compares with: the reported
    baseline of ``cell.reference_seed`` when its weights are there (weights are not kept in git, so a
    bench continued from committed cells may lack them), otherwise an extra baseline of that seed
    under ``references/``, run before the oracle."""
    combo = next(x for d, m, x in suite.combos() if (d, m) == (cell.dataset, cell.model))
    seed = cell.reference_seed
    baseline = _cell(suite, cell.dataset, cell.model, combo, "none", seed)
    if seed < suite.seeds and (baseline.folder(root) / "model.pt").exists():
        return baseline
    return dataclasses.replace(baseline, extra=True)


def cell_config(suite: Suite, model: str, variant: str, seed: int, out: Path, **overrides):
    """A suite cell's ``frostline train`` settings as a validated TrainConfig, for tools that train
    it in their own process (``overrides`` replace settings, e.g. ``cache="off"`` for its twin)."""
    from .config import TrainConfig, config_fields, validate

    dataset, _, extra = next(c for c in suite.combos() if c[1] == model)
    fields = set(config_fields())
    settings = {k: v for k, v in _cell(suite, dataset, model, extra, variant, seed).settings
                if k in fields and v is not None}
    cfg = TrainConfig(**{**settings, **overrides, "out": str(out), "progress": False})
    validate(cfg)
    return cfg


def _train_argv(cell: Cell, out: Path, reference: Path | None = None) -> list[str]:
    """The ``frostline train`` command of a cell; a CKA-oracle cell compares with ``reference``."""
    from .config import config_fields

    fields = set(config_fields())
    argv = [sys.executable, "-m", "frostline", "train", "--out", str(out), "--no-progress"]
    settings = dict(cell.settings)
    if settings["method"] == "cka-oracle":
        if reference is None:
            raise ConfigError(f"{cell.key}: the CKA oracle needs a reference run (another seed's baseline)")
        settings["reference"] = str(reference)
    for name, value in settings.items():
        if name not in fields:
            raise ConfigError(f"suite setting {name!r} is not a `frostline train` option")
        flag = "--" + name.replace("_", "-")
        if value is None:  # the default of every field that takes None ("the method's own"): nothing to pass
            continue
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            argv += [flag, str(value)]
    return argv


@functools.lru_cache(maxsize=1)
def _shipped_predictor_sha() -> str:
    """The shipped SmartFRZ predictor's digest, as a run's policy config records it."""
    from ..policies.smartfrz.predictor import predictor_digest

    return predictor_digest()


#: Settings that change what a run measures about itself, not what it trains: a finished run made
#: without them still counts (it is measured the way it was made).
MEASUREMENT_ONLY = frozenset({"speed_probe"})


def _same_settings(config: dict, cell: Cell) -> bool:
    """Whether a run's ``config.json`` says it was trained with exactly ``cell``'s settings. A
    setting the run's config lacks was added since, with a default that trains as runs did before
    it existed, so the run trained with that default."""
    from .config import config_defaults

    defaults = config_defaults()
    return all(config.get(k, defaults.get(k)) == v for k, v in cell.settings if k not in MEASUREMENT_ONLY)


def _finished(folder: Path, cell: Cell) -> dict | None:
    """The cell's summary when it finished with exactly this cell's settings."""
    try:
        summary = json.loads((folder / "summary.json").read_text())
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if summary.get("status") != "finished":
        return None
    if not _same_settings(config, cell):
        return None
    settings = dict(cell.settings)
    if settings["method"] == "smartfrz" and not settings.get("predictor"):
        used = (summary.get("policy") or {}).get("predictor_sha256")
        if used is not None and used != _shipped_predictor_sha():
            return None  # made with an earlier shipped predictor (its weights or its threshold)
        if _judged_short_windows(summary):
            return None  # froze a unit from a window shorter than an epoch, which SmartFRZ no longer judges
    cache = summary.get("cache")
    if settings.get("cache", "auto") == "auto" and cache is not None:
        if "payoff" not in cache:
            return None  # made before `--cache auto` weighed a replay against its copies (it served every prefix)
        if settings["method"] in ADAPTIVE and cache.get("payoff_rule") != PAYOFF_RULE:
            # an adaptive method's prefixes were weighed by an older rule. A schedule's cells are kept with the
            # rule they record: rule 2 changed only adaptive horizons; rule 3's dearer fills can serve a schedule
            # fewer prefixes too, but its figures stand for the rule in its summary (docs/benchmarks.md says which)
            return None
    if cell.reference_seed is not None and Path(config.get("reference") or "").parts[-3:] != (
            cell.model, "none", f"seed{cell.reference_seed}"):
        return None  # compared with another reference (older benches used the same seed's)
    return summary


def _judged_short_windows(summary: dict) -> bool:
    """Whether a SmartFRZ run froze a unit from a window shorter than an epoch's snapshots, as it did
    before units were judged only from such windows (so this frostline would not make it). Runs whose
    units all froze later decided exactly as they would now: a decision that freezes nothing changes
    nothing."""
    from ..policies.smartfrz.smartfrz import snapshots_judged_from

    policy = summary.get("policy") or {}
    judged_from = snapshots_judged_from(policy.get("window", 30), policy.get("snapshots_per_epoch", 30),
                                        policy.get("steps_per_epoch"))
    return any((entry.get("signal") or {}).get("snapshots", judged_from) < judged_from
               for entry in summary.get("timeline") or [])


def run_suite(suite: str | Suite, out: str | os.PathLike, *, progress: bool = True, report_only: bool = False,
              jobs: int = 1, only: dict[str, Sequence] | None = None) -> dict[str, Any]:
    """Run (or continue) a suite (by name, or your own :class:`Suite`) and write its report.
    ``jobs`` cells run at once (each with the suite's ``threads``; a suite may allow only one);
    every cell, baselines included, then shares the machine alike. ``only`` (``{"model": [...],
    "seed": [...], "variant": [...]}``) runs just the matching cells now, for a long suite spread
    over several sessions; the report still covers the whole suite. Returns the report's data."""
    from ..policies import list_policies
    from .loop import check_out_folder

    if isinstance(suite, str):
        if suite not in SUITES:
            raise ConfigError(f"unknown suite {suite!r}; choose one of {sorted(SUITES)}")
        suite = SUITES[suite]
    unknown = [v for v in suite.variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown method variants {unknown}; choose from {list(VARIANTS)}")
    if "none" not in suite.variants:
        raise ConfigError("a suite needs the `none` variant: time saved is measured against it")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs must be an integer >= 1, got {jobs!r}")
    if suite.max_jobs is not None and jobs > suite.max_jobs:
        raise ConfigError(f"suite {suite.name!r} runs {suite.max_jobs} cell at a time so that each run has the "
                          f"machine to itself and its times are honest: drop --jobs {jobs}")
    root = check_out_folder(out)
    cells, skipped = suite_cells(suite, list_policies())
    checks = check_cells(suite)
    command = "frostline " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv and "frostline" in sys.argv[0] else None
    results: dict[str, dict] = {}
    failed: dict[str, str] = {}
    todo = []
    wanted = {k: {str(v) for v in values} for k, values in (only or {}).items() if values}
    unknown = sorted(set(wanted) - {"model", "seed", "variant"})
    if unknown:
        raise ConfigError(f"cannot select cells by {unknown}: use model, seed or variant")
    for key, values in wanted.items():  # a selection that matches no cell would run nothing, silently
        known = sorted({str(getattr(c, key)) for c in cells + checks})
        missing = sorted(values - set(known))
        if missing:
            raise ConfigError(f"suite {suite.name!r} has no {key} {', '.join(missing)} (--only-{key}); "
                              f"choose from {', '.join(known)}")
    rebased = machine_baselines(root, cells)
    for cell in cells + checks + rebased:
        summary = _finished(cell.folder(root), cell)
        if summary is not None:
            results[cell.key] = summary
        elif not report_only and not cell.on and all(str(getattr(cell, k)) in v for k, v in wanted.items()):
            todo.append(cell)
    if report_only and not results:  # a report of nothing would pass for one
        raise ConfigError(f"--report-only redraws the report from the finished runs in {root}, and it holds none of "
                          f"suite {suite.name!r}: drop --report-only to run the suite (or pass the bench's --out)")
    root.mkdir(parents=True, exist_ok=True)
    for cell in baselines_here(todo, cells, results, {"machine": machine_info()}):
        base = results[dataclasses.replace(cell, on=None).key]
        print(f"frostline bench: the seed-{cell.seed} baseline of {cell.model} on {cell.dataset} trained on "
              f"{label(base['machine'])}; training one on this machine too (kept beside it as "
              f"{cell.folder(root).name}), so that the runs made here are paired with a baseline of their own machine",
              file=sys.stderr)
        todo.append(cell)
        if cell not in rebased:  # an interrupted one, found on disk: resumed
            rebased.append(cell)
    if todo:
        _run_cells(suite, root, todo, results, failed, jobs, progress)
    return write_report(root, suite, cells, results, failed, skipped,
                        command or f"frostline bench compare --suite {suite.name} --out {root}", checks, rebased)


def machine_baselines(root: Path, cells: Sequence[Cell]) -> list[Cell]:
    """The suite's baselines trained again on other machines (``seed<N>.on-<machine>`` beside them)."""
    found = []
    for c in cells:
        if c.variant == "none" and not c.extra and not c.on:
            found += [dataclasses.replace(c, on=f.name.split(".on-", 1)[1])
                      for f in sorted(c.folder(root).parent.glob(f"seed{c.seed}.on-*")) if f.is_dir()]
    return found


def baselines_here(todo: Sequence[Cell], cells: Sequence[Cell], results: dict[str, dict], here: dict) -> list[Cell]:
    """This machine's own baseline for each (dataset, model, seed) about to train a run here whose
    baseline trained on another machine: without one, the run's accuracy and clock would be paired
    across machines, and the same schedule's accuracy moves by tenths of a point between two CPUs."""
    wanted = []
    for c in cells:
        base = results.get(c.key)
        if c.variant != "none" or c.extra or base is None or same_machine(base, here) is not False:
            continue
        if not any(o.variant != "none" and (o.dataset, o.model, o.seed) == (c.dataset, c.model, c.seed) for o in todo):
            continue
        if any(same_machine(s, here) for s in _rebaselines(c.key, results)):
            continue
        wanted.append(dataclasses.replace(c, on=slug(here["machine"])))
    return wanted


def _run_cells(suite: Suite, root: Path, todo: list[Cell], results: dict[str, dict], failed: dict[str, str],
               jobs: int, progress: bool) -> None:
    """Baselines and convergence checks first (seed by seed, so the check comes early: it says
    whether the epochs are enough before the rest is spent), then the oracles' references, then the
    freezing variants."""
    from tqdm.auto import tqdm

    first = sorted((c for c in todo if c.variant == "none" or c.variant.startswith("none@")), key=lambda c: c.seed)
    rest = [c for c in todo if c not in first]
    bar = tqdm(total=len(todo), desc=f"bench {suite.name}", unit="run", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    references: dict[str, Cell] = {}

    def run(pool, wave: list[Cell]) -> None:
        running = {pool.submit(_run_cell, c, root, references[c.key].folder(root) if c.key in references else None): c
                   for c in wave}
        for done in as_completed(running):
            cell = running[done]
            summary, error = done.result()
            if error:
                failed[cell.key] = error
            if summary is not None:
                results[cell.key] = summary
            bar.set_postfix_str(cell.key)
            bar.update(1)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        run(pool, first)
        for cell in rest:
            if cell.reference_seed is not None:
                references[cell.key] = reference_cell(suite, cell, root)
        extra = [c for c in dict.fromkeys(references.values()) if c.extra and _finished(c.folder(root), c) is None]
        bar.total += len(extra)
        run(pool, extra)
        run(pool, rest)
    bar.close()


def _run_cell(cell: Cell, root: Path, reference: Path | None = None) -> tuple[dict | None, str | None]:
    """Run one cell in a subprocess; resume it if an earlier bench was cut off mid-run."""
    from .checkpoint import CHECKPOINT, PREVIOUS

    folder = cell.folder(root)
    if (folder / "config.json").exists() and not _resumable(folder, cell):
        _set_aside(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if ((folder / CHECKPOINT).exists() or (folder / PREVIOUS).exists()) and (folder / "config.json").exists():
        argv = [sys.executable, "-m", "frostline", "train", "--resume", str(folder), "--no-progress"]
    else:
        argv = _train_argv(cell, folder, reference)
    with open(folder / "bench.log", "a") as log:
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        rc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = (folder / "bench.log").read_text().strip().splitlines()[-1:] or ["(no output)"]
        return None, f"exit {rc}: {tail[0]}"
    summary = _finished(folder, cell)
    return summary, None if summary else "finished without a summary.json"


def _resumable(folder: Path, cell: Cell) -> bool:
    """Whether the run in ``folder`` is this cell's, cut off mid-run: same settings, not finished."""
    try:
        config = json.loads((folder / "config.json").read_text())
        summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").exists() else {}
    except (OSError, json.JSONDecodeError):
        return True  # a half-written file: --resume reads the checkpoints and says what is wrong
    return summary.get("status") != "finished" and _same_settings(config, cell)


def _set_aside(folder: Path) -> None:
    """Keep a run that is not this cell's any more (other settings, an earlier shipped predictor)
    beside the cell, as ``<seed>.superseded[-N]``, instead of resuming or deleting it."""
    from .loop import free_name

    target = free_name(folder, "superseded")
    folder.rename(target)
    print(f"frostline bench: {folder} holds a run with other settings; kept as {target.name}, starting afresh",
          file=sys.stderr)


def machine_info() -> dict[str, Any]:
    """What wrote the report: the machine a run would record (:mod:`.machine`), plus the software
    and commit; the runs themselves record their own machines."""
    import torch

    from .machine import this_machine

    commit = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    from .. import __version__

    return {**this_machine("cuda" if torch.cuda.is_available() else "cpu"), "python": platform.python_version(),
            "frostline": __version__, "commit": commit, "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%d")}


# -- aggregation ------------------------------------------------------------------------------
def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


#: How far (as a ratio, either way) a run's full-speed probe may be from its baseline's time per step
#: before their clocks count as two machines': same-machine pairs in the finetune suite fall within
#: 0.87-1.10, and two hosts that report the same CPU name measured 0.45-0.72.
SAME_SPEED = 1.25


def _same_speed(s: dict, base: dict) -> bool:
    """Whether ``s``'s full-model step is what its baseline's steps took, within :data:`SAME_SPEED`.
    A CPU's name does not tell two hosts apart, nor a host from itself under another load; the
    run's full step does: timed by its probe after training, else over its own steps before its
    first freeze (``own_full_step_s``, set by the report from its log when they span
    :data:`PROBE_STRETCH_MIN_STEPS`). True when ``s`` has neither to tell by."""
    probe = s.get("full_speed_probe")
    step = probe.get("step_s") if isinstance(probe, dict) else None
    step = step or s.get("own_full_step_s")
    if not step or not base.get("steps_done") or not base.get("train_time_s"):
        return True
    ratio = step / (base["train_time_s"] / base["steps_done"])
    return 1 / SAME_SPEED <= ratio <= SAME_SPEED


def _paired_saving(s: dict, base: dict, key: str) -> float | None:
    """1 - the run's time over its baseline's; None when either lacks it or they ran on different
    machines, or at different speeds (two machines' clocks say nothing about the method)."""
    if s.get(key) is None or not base.get(key) or same_machine(s, base) is False or not _same_speed(s, base):
        return None
    return 1 - s[key] / base[key]


#: The full-speed stretch an in-run saving is measured on: at least this many steps, and this share of the run.
IN_RUN_MIN_STEPS, IN_RUN_MIN_SHARE = 200, 0.1
#: With a full-speed probe, the run's own stretch before its first freeze joins it from this many steps.
PROBE_STRETCH_MIN_STEPS = 20


def in_run_saving(summary: dict, metrics: Sequence[dict]) -> float | None:
    """Wall time saved against the same run's own full-model speed: ``1 - T / (N * t_full)``, where
    ``T`` is the run's training-step time, ``N`` its steps, and ``t_full`` the time per step at full
    speed, from the run's own steps between its first and its last log line with nothing frozen (the
    first line leaves start-up costs out) and, where the run has one, its full-speed probe (see
    :func:`relative_time`).

    A ratio inside one run, so a machine that runs faster or slower at another hour (on a shared
    2-core machine the same baseline took 215 s in one session and 159 s in the next) does not move
    it. On ``none`` runs it reads ~0 (a check of the assumption that a full step costs the same
    all run). None when the run has no probe and froze before a stretch of ``IN_RUN_MIN_STEPS``
    steps and ``IN_RUN_MIN_SHARE`` of the run at full speed, or was resumed (its log restarts)."""
    total = summary.get("total_steps")
    relative = relative_time(summary, metrics, max(IN_RUN_MIN_STEPS, IN_RUN_MIN_SHARE * (total or 0)))
    return None if relative is None else 1 - relative


def full_speed_stretch(metrics: Sequence[dict]) -> tuple[int, float] | None:
    """Steps and seconds per step between a run's first and last log lines with nothing frozen."""
    full = [m for m in metrics if m.get("kind") == "step" and m.get("frozen") == 0 and "train_time_s" in m]
    if len(full) < 2:
        return None
    first, last = full[0], full[-1]
    steps = last["step"] - first["step"]
    if steps <= 0 or last["train_time_s"] <= first["train_time_s"]:
        return None
    return steps, (last["train_time_s"] - first["train_time_s"]) / steps


def own_full_step(summary: dict, metrics: Sequence[dict]) -> float | None:
    """Seconds per full-model step over the run's own steps before its first freeze, when they
    span :data:`PROBE_STRETCH_MIN_STEPS` (and the run was not resumed: its log restarts); what
    tells whether it ran at its baseline's speed (:func:`_same_speed`)."""
    stretch = _own_stretch(summary, metrics)
    return stretch[1] if stretch and stretch[0] >= PROBE_STRETCH_MIN_STEPS else None


def _own_stretch(summary: dict, metrics: Sequence[dict]) -> tuple[int, float] | None:
    """The run's full-speed stretch (:func:`full_speed_stretch`); none for a resumed run, whose log restarts."""
    return None if summary.get("resumed_from_step") else full_speed_stretch(metrics)


def relative_time(summary: dict, metrics: Sequence[dict], min_steps: float) -> float | None:
    """A run's training time over what its steps would take at its own full speed (see
    :func:`in_run_saving`), or None without that speed.

    Without a probe the speed is the run's full-speed stretch, which must span ``min_steps``. With
    one (``--speed-probe``: a fresh full model timed right after the run), it is the mean of the
    probe and, when it spans :data:`PROBE_STRETCH_MIN_STEPS`, the stretch: one reading before the
    run's first freeze and one after its end bracket it, so a machine that slowed or sped up during
    the run cancels to first order. (On the finetune suite's baselines the first 40 steps alone
    missed the run's mean step time by up to 15%; the first and last 40 steps together by 5%.)"""
    total, spent = summary.get("total_steps"), summary.get("train_time_s")
    if not total or not spent:
        return None
    stretch = _own_stretch(summary, metrics)
    probe = (summary.get("full_speed_probe") or {}).get("step_s")
    if probe:
        speeds = [probe] + ([stretch[1]] if stretch and stretch[0] >= PROBE_STRETCH_MIN_STEPS else [])
        return spent / (total * statistics.fmean(speeds))
    if stretch is None or stretch[0] < min_steps:
        return None
    return spent / (total * stretch[1])


#: The cache may cost at most this share of a run's time before it counts as slower than no cache
#: (times are ratios inside each run, paired by seed; the CPU machines drift more than this between runs).
CACHE_TOLERANCE = 0.02
#: Full-speed steps a run needs for the cache comparison's per-run time (any method freezes later).
CACHE_MIN_STEPS = 30


#: Where a bench keeps the cache's twins trained side by side in one process (``scripts/cache_twins.py``).
TWINS_DIR = "twins"


def read_twins(root: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The in-process twin measurements under ``root/twins/*.json``, per (model, cached variant):
    only pairs that froze the same units at the same steps, made with the payoff rule of today for
    ``auto`` (an older rule's pairs measured other decisions). A file that cannot be read is left
    out, with one line."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for path in sorted((Path(root) / TWINS_DIR).glob("*.json")):
        try:
            entries = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            print(f"frostline bench: skipping {path} ({type(e).__name__}: {e})", file=sys.stderr)
            continue
        for e in entries if isinstance(entries, list) else ():
            if not isinstance(e, dict) or not {"model", "variant", "time_ratio"} <= e.keys():
                continue
            auto = cache_mode(e["variant"]) == "auto"
            if e.get("same_freezes") and (not auto or e.get("payoff_rule") == PAYOFF_RULE):
                out.setdefault((e["model"], e["variant"]), []).append(e)
            else:  # never dropped without a word
                why = "its runs froze differently" if not e.get("same_freezes") else \
                    f"made under payoff rule {e.get('payoff_rule')}, not {PAYOFF_RULE}"
                print(f"frostline bench: {path.name}: leaving out {e['model']} {e['variant']} seed {e.get('seed')} "
                      f"({why})", file=sys.stderr)
    return out


def cache_rows(cells: Sequence[Cell], results: dict[str, dict],
               twins: dict[tuple[str, str], list[dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
    """Per model and cached variant that has an uncached twin (the same settings but ``cache: off``) in
    the bench: its training time against the twin's, paired by seed. The cache never changes what is
    computed, so the twins run the same steps; each time is taken relative to the run's own full
    speed before anything froze, so a machine that drifts between runs does not count. Two runs that
    froze differently are not twins and are not paired (``not_twins``): an adaptive method's
    decisions hang on floating-point detail, and the same seed on another CPU froze other units at
    other times."""
    def settings(variant: str) -> dict[str, Any]:
        return {k: v for k, v in VARIANTS.get(variant, {}).items() if k != "cache"}

    runs: dict[tuple[str, str, str], dict[int, dict]] = {}
    for c in cells:
        if c.key in results:
            runs.setdefault((c.dataset, c.model, c.variant), {})[c.seed] = results[c.key]
    rows = []
    for (dataset, model, variant), seeds in runs.items():
        mode = cache_mode(variant)
        if mode == "off" or VARIANTS.get(variant, {}).get("method") == "none":
            continue
        twin = next((v for (d, m, v) in runs if (d, m) == (dataset, model) and v != variant
                     and cache_mode(v) == "off" and settings(v) == settings(variant)), None)
        if twin is None:
            continue
        ratios, walls, not_twins = [], [], 0
        for seed, s in sorted(seeds.items()):
            o = runs[(dataset, model, twin)].get(seed)
            if o is None:
                continue
            if "frozen_at" in s and "frozen_at" in o and s["frozen_at"] != o["frozen_at"]:
                not_twins += 1
                continue
            if same_machine(s, o) is not False:
                walls.append(s["train_time_s"] / o["train_time_s"])
            if s.get("relative_time") is not None and o.get("relative_time") is not None:
                ratios.append(s["relative_time"] / o["relative_time"])
        served = [sum("served_from_step" in r for r in ((s.get("cache") or {}).get("payoff") or ())) for s in seeds.values()]
        rows.append(_cache_row(dataset, model, variant, twin, ratios, (twins or {}).get((model, variant), ()),
                               not_twins=not_twins, wall_ratio=statistics.fmean(walls) if walls else math.nan,
                               cache_mb=statistics.fmean(((s.get("cache") or {}).get("peak_memory_mb") or 0.0)
                                                         for s in seeds.values()),
                               served=served))
    # a suite without uncached cells (standard, quick: their plain variants take the default `auto`) is
    # judged by the twins alone, each trained beside its `cache=off` copy in one process
    covered = {(r["model"], r["variant"]) for r in rows}
    planned = {(c.model, c.variant): c.dataset for c in cells}
    for (model, variant), side in (twins or {}).items():
        if (model, variant) in covered or cache_mode(variant) == "off":
            continue
        if (model, variant) not in planned:  # never dropped without a word
            print(f"frostline bench: leaving out the twins of {model} {variant}: this suite does not run that cell",
                  file=sys.stderr)
            continue
        rows.append(_cache_row(planned[(model, variant)], model, variant, "cache off, same process", (), side,
                               served=[sum("served_from_step" in p for p in e.get("payoff") or ()) for e in side]))
    return rows


def _cache_row(dataset: str, model: str, variant: str, uncached: str, ratios: Sequence[float],
               side: Sequence[dict[str, Any]], not_twins: int = 0, wall_ratio: float = math.nan,
               cache_mb: float = math.nan, served: Sequence[int] = ()) -> dict[str, Any]:
    """One row of the cache comparison: the across-run ratios and the twins side by side in one
    process, which decide the verdict where they were measured (drift cancels in one process)."""
    mode, inside = cache_mode(variant), [e["time_ratio"] for e in side]
    ratio = statistics.fmean(ratios) if ratios else math.nan
    in_process = statistics.fmean(inside) if inside else math.nan
    judged = in_process if inside else ratio
    return {"dataset": dataset, "model": model, "variant": variant, "uncached": uncached, "cache": mode,
            "pairs": len(ratios), "not_twins": not_twins, "ratio": ratio,
            "worst_ratio": max(ratios) if ratios else math.nan, "wall_ratio": wall_ratio,
            "in_process_ratio": in_process, "in_process_pairs": len(inside),
            "in_process_worst": max(inside) if inside else math.nan, "cache_mb": cache_mb,
            "boundaries_served": statistics.fmean(served) if mode == "auto" and served else None,
            "verdict": "not measured" if not (ratios or inside) else
            ("not slower" if judged <= 1 + CACHE_TOLERANCE else "slower")}


def cache_summary_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The cache comparison in one line per cache mode (the README's summary): how many pairs are
    not slower (by the twins side by side where measured, else across runs), then each measure."""
    lines = []
    for mode in dict.fromkeys(r["cache"] for r in rows):
        group = [r for r in rows if r["cache"] == mode and (r["pairs"] or r.get("in_process_pairs"))]
        if not group:
            continue
        fine = sum(r["verdict"] == "not slower" for r in group)
        line = f"- `--cache {mode}` against no cache: not slower in {fine} of {len(group)} model/method pairs"
        across = [r for r in group if r["pairs"]]
        side = [r for r in group if r.get("in_process_pairs")]
        if across:
            worst = max(across, key=lambda r: r["ratio"])
            line += (f"; {'across runs ' if side else ''}mean time ratio {statistics.fmean(r['ratio'] for r in across):.3f}, "
                     f"highest {worst['ratio']:.3f} ({worst['variant']} on {worst['model']})")
        if side:
            top = max(side, key=lambda r: r["in_process_worst"])
            n = sum(r["in_process_pairs"] for r in side)
            line += (f"; side by side in one process ({n} twin pair{'s' if n != 1 else ''}): mean "
                     f"{statistics.fmean(r['in_process_ratio'] for r in side):.3f}, highest "
                     f"{top['in_process_worst']:.3f} ({top['variant']} on {top['model']})")
        lines.append(line + ".")
    return lines


def cache_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The cache comparison as a table, with the rule it is judged by. The across-run columns appear
    when the bench has uncached cells, the *in one process* column when it has twins."""
    from .report import markdown_table

    if not rows:
        return []
    across, side = any(r["pairs"] or r.get("not_twins") for r in rows), any(r.get("in_process_pairs") for r in rows)
    table = [[r["model"], r["variant"], r["uncached"],
              *([str(r["pairs"]) + (f" ({r['not_twins']} froze otherwise)" if r.get("not_twins") else ""),
                 *(f"{x:.3f}" if x == x else "—" for x in (r["ratio"], r["worst_ratio"], r["wall_ratio"]))]
                if across else []),
              *([(f"{r['in_process_ratio']:.3f} (worst {r['in_process_worst']:.3f}, {r['in_process_pairs']} "
                  f"seed{'s' if r['in_process_pairs'] != 1 else ''})"
                  if r.get("in_process_pairs") else "—")] if side else []),
              *([f"{r['cache_mb']:.0f}" if r["cache_mb"] == r["cache_mb"] else "—"] if across else []),
              "—" if r["boundaries_served"] is None else f"{r['boundaries_served']:.1f}",
              r["verdict"]] for r in rows]
    return ["Cache against no cache: "
            + ("each cached run's training time over its uncached twin's (same method, same seed, so the same "
               "steps), each taken relative to its own run's full speed before anything froze (*wall* is the "
               "plain ratio); a pair whose runs froze differently (another machine's arithmetic can change an "
               "adaptive method's decisions) is not a pair. " if across else "")
            + ("*In one process*: the cell's settings and the same with `cache=off`, trained side by side in one "
               "process, alternating blocks of 10 steps, so the machine's drift hits both alike "
               "(`scripts/cache_twins.py`, results under `twins/`); the whole run's time ratio, mean over seeds; "
               "where measured it decides the verdict. " if side else "")
            + f"*Not slower* means a mean ratio of at most {1 + CACHE_TOLERANCE:g}. "
            "*served* counts the frozen prefixes the payoff rule found worth replaying.", "",
            markdown_table(["model", "cached", "uncached",
                            *(["pairs", "time ratio", "worst seed", "wall ratio"] if across else []),
                            *(["in one process"] if side else []), *(["cache MB"] if across else []),
                            "served", "verdict"], table), ""]


def run_time_saved(s: dict, base: dict | None) -> float | None:
    """One run's time saved: against its own full-speed steps where it has them (see
    :func:`in_run_saving`), else against the same seed's baseline."""
    if s.get("in_run_time_saved") is not None:
        return s["in_run_time_saved"]
    return _paired_saving(s, base, "train_time_s") if base else None


def baseline_of(cell: Cell, results: dict[str, dict]) -> dict | None:
    """The finished `none` run a cell is paired with: same dataset, model and seed, and trained on
    the cell's machine when the suite has a baseline of that seed from there (see :class:`Cell`)."""
    key = Cell(cell.dataset, cell.model, "none", cell.seed, ()).key
    own = results.get(cell.key)
    if own is not None and same_machine(own, results.get(key) or {}) is False:
        return next((s for s in _rebaselines(key, results) if same_machine(own, s)), results.get(key))
    return results.get(key)


def _rebaselines(key: str, results: dict[str, dict]) -> list[dict]:
    """The finished runs of baseline ``key`` trained again on other machines (:class:`Cell` ``on``)."""
    return [s for k, s in results.items() if k.startswith(key + " on ")]


def aggregate(cells: Sequence[Cell], results: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per (dataset, model, variant) over its seeds, also for a variant with no finished run
    yet (``seeds`` 0), so a partial bench says what it lacks. Time saved (wall and CPU) and accuracy
    change are paired with the baseline of the same seed, then averaged."""
    groups: dict[tuple[str, str, str], list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.dataset, c.model, c.variant), []).append(c)
    rows = []
    for (dataset, model, variant), members in groups.items():
        done = [(c, results[c.key]) for c in members if c.key in results]
        paired_time, paired_cpu, paired_acc, saved_time, runs = [], [], [], [], []
        for c, s in done:
            base = baseline_of(c, results)
            saving = run_time_saved(s, base)
            if saving is not None:
                saved_time.append(saving)
            if base:
                paired_acc.append(s["test_accuracy"] - base["test_accuracy"])
                wall = _paired_saving(s, base, "train_time_s")
                if wall is not None:
                    paired_time.append(wall)
                if saving is not None:
                    runs.append({"seed": c.seed, "time_saved": saving, "delta_accuracy": paired_acc[-1]})
                cpu = _paired_saving(s, base, "cpu_time_s")
                if cpu is not None:
                    paired_cpu.append(cpu)
        mean = lambda key: statistics.fmean(s[key] for _, s in done) if done else math.nan  # noqa: E731
        acc, cpu_saved = _mean_std([s["test_accuracy"] for _, s in done]), _mean_std(paired_cpu)
        saved, paired = _mean_std(saved_time), _mean_std(paired_time)
        overheads = [s["decision_overhead"] for _, s in done if s.get("decision_overhead") is not None]
        cpu_times = [s["cpu_time_s"] for _, s in done if s.get("cpu_time_s") is not None]
        rows.append({
            "dataset": dataset, "model": model, "variant": variant, "method": dict(members[0].settings)["method"],
            "seeds": len(done), "of_seeds": len(members), "paired": len(paired_acc),
            "accuracy": acc[0], "accuracy_std": acc[1],
            "delta_accuracy": statistics.fmean(paired_acc) if paired_acc else math.nan,
            "train_time_s": mean("train_time_s"),
            "time_saved": saved[0], "time_saved_std": saved[1],
            "in_run": sum(s.get("in_run_time_saved") is not None for _, s in done),
            "paired_time_saved": paired[0], "paired_time_saved_std": paired[1],
            "cpu_time_s": statistics.fmean(cpu_times) if cpu_times else math.nan,
            "cpu_time_saved": cpu_saved[0], "cpu_time_saved_std": cpu_saved[1],
            "decision_overhead": statistics.fmean(overheads) if overheads else math.nan,
            "flops_saved": mean("flops_saved"),
            "predicted_saving": mean("predicted_saving"),
            "predicted_time_saving": (statistics.fmean(s["predicted_time_saving"] for _, s in done)
                                      if done and all(s.get("predicted_time_saving") is not None for _, s in done)
                                      else math.nan),
            "peak_memory_mb": mean("peak_memory_mb"),
            "peak_memory_source": done[0][1].get("peak_memory_source") if done else None,
            "cache_mb": statistics.fmean(((s.get("cache") or {}).get("peak_memory_mb", 0.0) + (s.get("cache") or {}).get("peak_disk_mb", 0.0)) for _, s in done) if done else math.nan,
            "frozen_units": statistics.fmean(sum(v is not None for v in s["frozen_at"].values()) for _, s in done) if done else math.nan,
            "units": len(done[0][1]["units"]) if done else 0,
            "policy": done[0][1].get("policy") if done else None,
            "runs": runs,  # per seed, for comparing two variants run by run (see `rival_difference`)
        })
    return rows


def per_run_lines(cells: Sequence[Cell], results: dict[str, dict]) -> list[str]:
    """Every finished run on its own line, paired with its seed's baseline, so a figure quoted per
    seed (a card's "−0.5, −0.2") can be read off the report instead of recomputed by hand."""
    from .report import markdown_table

    out: list[str] = []
    for dataset, model in dict.fromkeys((c.dataset, c.model) for c in cells):
        table = []
        for c in (c for c in cells if (c.dataset, c.model) == (dataset, model) and c.key in results):
            s, base = results[c.key], baseline_of(c, results)
            saving = run_time_saved(s, base)
            frozen = [f for f in s["frozen_at"].values() if f is not None]
            wall = _paired_saving(s, base, "train_time_s") if base else None
            speedup = "n/a" if wall is None or wall >= 1 else f"{1 / (1 - wall):.2f}×"
            if base and same_machine(s, base) is False:
                speedup = "n/a (other machine)"
            elif base and not _same_speed(s, base):
                speedup = "n/a (other speed)"
            name = c.variant
            if c.variant == "none" and any(o.on and (o.dataset, o.model) == (dataset, model) for o in cells):
                name = f"none ({label(s['machine']).split(' (')[0]})" if s.get("machine") else name
            table.append([
                name, c.seed, f"{s['test_accuracy']:.2f}",
                f"{s['test_accuracy'] - base['test_accuracy']:+.2f}" if base and c.variant != "none" else "—",
                "n/a" if saving is None else f"{100 * saving:.1f}%" + _how_measured(s),
                "—" if c.variant == "none" else speedup,
                f"{min(frozen):.2f} – {max(frozen):.2f}" if frozen else "—",
                f"{len(frozen)}/{len(s['frozen_at'])}"])
        if table:
            out += [f"**{model} on {dataset}**", "", markdown_table(
                ["variant", "seed", "test acc %", "Δ acc", "time saved", "speed-up vs baseline",
                 "froze (share of training, first – last)", "frozen"], table), ""]
    return out


def _how_measured(s: dict) -> str:
    """The per-run table's mark on a time saved: in-run with a probe, in-run, or against the baseline."""
    if s.get("in_run_time_saved") is None:
        return " (vs baseline)"
    return " (probe)" if s.get("full_speed_probe") else ""


def convergence_rows(checks: Sequence[Cell], results: dict[str, dict],
                     tolerance: float = CONVERGENCE_TOLERANCE) -> list[dict[str, Any]]:
    """The convergence check, one row per (dataset, model): the baseline's test accuracy after the
    suite's epochs against the same seeds trained longer (``checks``). PASS when the longer run gains
    at most ``tolerance`` points (see ``CONVERGENCE_TOLERANCE``); "not measured yet" until every
    check and its paired baseline finished."""
    groups: dict[tuple[str, str], list[Cell]] = {}
    for c in checks:
        groups.setdefault((c.dataset, c.model), []).append(c)
    rows = []
    for (dataset, model), members in groups.items():
        pairs = [(baseline_of(c, results), results.get(c.key)) for c in members]
        pairs = [(short, long) for short, long in pairs if short and long]
        long_epochs = dict(members[0].settings)["epochs"]
        row = {"dataset": dataset, "model": model, "seeds": [c.seed for c in members], "paired": len(pairs),
               "long_epochs": long_epochs, "epochs": pairs[0][0]["epochs"] if pairs else None,
               "accuracy": None, "long_accuracy": None, "gap": None, "tolerance": tolerance,
               "verdict": "not measured yet"}
        if pairs and len(pairs) == len(members):
            short = statistics.fmean(p[0]["test_accuracy"] for p in pairs)
            long = statistics.fmean(p[1]["test_accuracy"] for p in pairs)
            row.update(accuracy=short, long_accuracy=long, gap=long - short,
                       verdict="PASS" if long - short <= tolerance else "FAIL")
        rows.append(row)
    return rows


def convergence_lines(rows: Sequence[dict[str, Any]], brief: bool = False) -> list[str]:
    """The convergence criterion, stated, and its verdict per model with the measured numbers
    (``brief``: the README's shorter wording, with the gain alone)."""
    lines = []
    for r in rows:
        seeds = "seed " + ", ".join(str(s) for s in r["seeds"])
        what = f"{r['model']} on {r['dataset']}"
        to = f"{r['long_epochs']:g} epochs" if brief else f"training the baseline to {_epochs(r['long_epochs'])}"
        gains = f"{'gain' if brief else 'gains'} at most {r['tolerance']:g} points{'' if brief else ' of test accuracy'}"
        if r["verdict"] == "not measured yet":  # no pair yet, so no epochs of the suite's own baseline to name
            lines.append(f"- Convergence of {what}: {to} {gains} ({seeds}) — **not measured yet**.")
            continue
        verdict = f"**{r['verdict']}**" + (": no goal can pass on this baseline." if r["verdict"] == "FAIL" else ".")
        if brief:
            lines.append(f"- Convergence of {what}: {r['gap']:+.2f} points at {r['long_epochs']:g} epochs instead of "
                         f"{r['epochs']:g} ({seeds}; at most {r['tolerance']:g}) — {verdict}")
            continue
        lines.append(f"- Convergence of {what}: {to} instead of {_epochs(r['epochs'])} {gains} ({seeds}): "
                     f"{r['accuracy']:.2f}% vs {r['long_accuracy']:.2f}% ({r['gap']:+.2f} points) — {verdict}")
    return lines


def _epochs(n: float) -> str:
    return f"{n:g} epoch{'' if n == 1 else 's'}"


def judge(goal: Goal, rows: Sequence[dict[str, Any]], convergence: Sequence[dict[str, Any]] | None = None
          ) -> list[dict[str, Any]]:
    """``goal``'s verdict on a bench's rows: one entry per model when ``per_model``, otherwise one
    over every covered model/dataset pair. The verdict is "met" or "not met" only when every covered
    run, every run it is compared with and (if the suite checks it) the baseline's convergence are
    measured; otherwise "not measured yet", never a pass on missing data."""
    covered = [r for r in rows if goal.covers(r)]
    if not covered:
        return [{"group": "", "verdict": "not covered"}]
    groups: dict[str, list[dict]] = {}
    for r in covered:
        groups.setdefault(r["model"] if goal.per_model else "", []).append(r)
    verdicts = []
    for model, group in groups.items():
        pairs = {(r["dataset"], r["model"]) for r in group}
        rivals = [r for r in rows if goal.rival(r) and (r["dataset"], r["model"]) in pairs]
        entry: dict[str, Any] = {"group": model, "pairs": len(pairs), "runs": sum(r["seeds"] for r in group), "why": []}
        verdicts.append(entry)
        short = [r for r in group + rivals if r["seeds"] < r["of_seeds"] or r.get("paired", r["seeds"]) < r["seeds"]
                 or not r["seeds"]]
        if short or any(not any(r["method"] == m for r in rivals) for m in goal.beats):
            entry.update(verdict="not measured yet", missing=[_runs_done(r) for r in short] + [
                f"{m} (not in this suite)" for m in goal.beats if not any(r["method"] == m for r in rivals)])
            continue
        by_variant = _average(group)
        within = [v for v, a in by_variant.items() if goal.max_accuracy_loss is None or a["delta"] >= -goal.max_accuracy_loss]
        # within the accuracy bound: the one that saves most; none within it: the one nearest it, among
        # those that save enough when some do (one target missed, not two)
        fast = [v for v, a in by_variant.items() if goal.min_time_saved is None or a["saved"] >= goal.min_time_saved]
        best = (max(within, key=lambda v: by_variant[v]["saved"]) if within
                else max(fast or by_variant, key=lambda v: (by_variant[v]["delta"], by_variant[v]["saved"])))
        nearest = ("of those saving enough" if fast and len(fast) < len(by_variant) else True) if not within else False
        entry.update(best=best, nearest=nearest, **by_variant[best], others={v: a for v, a in by_variant.items() if v != best},
                     rivals=_average(rivals))
        a, why = by_variant[best], entry["why"]
        if goal.min_time_saved is not None and not a["saved"] >= goal.min_time_saved:
            why.append("too little time saved")
        if goal.max_accuracy_loss is not None and not a["delta"] >= -goal.max_accuracy_loss:
            why.append("too much accuracy lost")
        entry["versus"] = {v: rival_difference([r for r in group if r["variant"] == best],
                                               [r for r in rivals if r["variant"] == v]) for v in entry["rivals"]}
        for v, d in entry["versus"].items():
            if not (d["saved"] - d["saved_se"] > 0 and d["delta"] + d["delta_se"] >= 0):
                why.append(f"does not beat {v}")
        if goal.max_decision_overhead is not None:
            overheads = [r.get("decision_overhead", math.nan) for r in group]
            if any(math.isnan(o) for o in overheads):
                entry.update(verdict="not measured yet", missing=["the runs' decision overhead"])
                continue
            entry["worst_overhead"] = max(overheads)
            if not entry["worst_overhead"] < goal.max_decision_overhead:
                why.append("decision overhead too high")
        checked = [c for c in convergence or () if (c["dataset"], c["model"]) in pairs]
        if convergence is not None and any(c["verdict"] == "FAIL" for c in checked):
            why.append("baseline not converged")
        elif convergence is not None and (len(checked) < len(pairs) or any(c["verdict"] != "PASS" for c in checked)):
            entry.update(verdict="not measured yet", missing=["the baseline's convergence check"])
            continue
        entry["verdict"] = "not met" if why else "met"
    return verdicts


def rival_difference(ours: Sequence[dict[str, Any]], theirs: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Our variant minus a rival, run by run: time saved and accuracy change of the same seed on the
    same model/dataset (both paired with that seed's baseline), averaged, with the standard error of
    that mean. A variant *beats* a rival when it saves more time beyond one standard error and loses
    no accuracy to it beyond one: with three seeds a 0.1-point accuracy gap or a one-point time gap
    is within what reruns of the same method differ by, so a bare comparison of means would let
    noise decide. Rows without per-run figures compare their means (standard error 0)."""
    saved, delta = [], []
    for o in ours:
        for t in theirs:
            if (o["dataset"], o["model"]) != (t["dataset"], t["model"]):
                continue
            by_seed = {r["seed"]: r for r in t.get("runs") or ()}
            pairs = [(r, by_seed[r["seed"]]) for r in o.get("runs") or () if r["seed"] in by_seed]
            if not pairs:  # no per-run figures: the two rows' means
                pairs = [({"time_saved": o["time_saved"], "delta_accuracy": o["delta_accuracy"]},
                          {"time_saved": t["time_saved"], "delta_accuracy": t["delta_accuracy"]})]
            saved += [a["time_saved"] - b["time_saved"] for a, b in pairs]
            delta += [a["delta_accuracy"] - b["delta_accuracy"] for a, b in pairs]
    (saved_mean, saved_std), (delta_mean, delta_std) = _mean_std(saved), _mean_std(delta)
    root = math.sqrt(len(saved)) if saved else math.nan
    return {"saved": saved_mean, "saved_se": saved_std / root, "delta": delta_mean, "delta_se": delta_std / root,
            "runs": len(saved)}


def _runs_done(r: dict[str, Any]) -> str:
    paired = r.get("paired", r["seeds"])
    return (f"{r['variant']} on {r['model']} ({r['seeds']} of {r['of_seeds']} runs"
            + (f", {paired} with their baseline)" if paired < r["seeds"] else ")"))


def _average(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per variant, its figures averaged over the model/dataset pairs it ran on."""
    by_variant: dict[str, list[dict]] = {}
    for r in rows:
        by_variant.setdefault(r["variant"], []).append(r)
    return {v: {"saved": statistics.fmean(r["time_saved"] for r in rs),
                "paired_saved": statistics.fmean(r.get("paired_time_saved", math.nan) for r in rs),
                "cpu_saved": statistics.fmean(r.get("cpu_time_saved", math.nan) for r in rs),
                "delta": statistics.fmean(r["delta_accuracy"] for r in rs),
                "overhead": statistics.fmean(r.get("decision_overhead", math.nan) for r in rs)}
            for v, rs in by_variant.items()}


def goal_lines(goal: Goal, rows: Sequence[dict[str, Any]], convergence: Sequence[dict[str, Any]] | None = None,
               brief: bool = False) -> list[str]:
    """Plain statements of whether ``goal`` was met in this bench, with the numbers. ``brief`` (the
    README) counts what a goal still waits for instead of listing it."""
    lines = []
    for e in judge(goal, rows, convergence):
        head = f"- {goal.title}" + (f" ({e['group']})" if e["group"] else "")
        if e["verdict"] == "not covered":
            lines.append(f"- {goal.title} (goal: {goal.target(brief)}): no run of this bench is covered.")
            continue
        if e["verdict"] == "not measured yet":
            waits = (f"{len(e['missing'])} incomplete cell{'s' if len(e['missing']) != 1 else ''}" if brief
                     else f"missing {', '.join(e['missing'])}")
            lines.append(f"{head}: goal ({goal.target(brief)}) **not measured yet**: {waits}.")
            continue
        why = f" — goal ({goal.target(brief)}) **{e['verdict']}**" + (f" ({', '.join(e['why'])})." if e["why"] else ".")
        if goal.min_time_saved is None and goal.max_accuracy_loss is None:  # a bound on overhead alone
            lines.append(f"{head}: worst decision overhead {_fmt_overhead(e.get('worst_overhead'))} "
                         f"over {e['runs']} runs{why}")
            continue
        rivals = "".join(f"; {v}: {_figures(r, brief)}" + ("" if brief else f" ({_versus(e['versus'][v])})")
                         for v, r in e["rivals"].items())
        over = f" on average over {e['pairs']} model/dataset pairs" if e["pairs"] != 1 else ""
        nearest = e.get("nearest")
        label = ("best" if not nearest else "none within the accuracy bound; nearest"
                 + (f" {nearest}" if isinstance(nearest, str) else ""))
        lines.append(f"{head}: {label} **{e['best']}**, {_figures(e, brief)}{over}{rivals}{why}")
        if not brief:  # the README names the best variant; the docs list the others
            lines += [f"  - {v}: {_figures(a, brief)}." for v, a in sorted(e["others"].items())]
    return lines


def _versus(d: dict[str, float]) -> str:
    """The best variant minus a rival, run by run, with the standard errors the verdict weighs."""
    return (f"the best minus it, over {d['runs']} paired runs: {100 * d['saved']:+.1f} ± {100 * d['saved_se']:.1f} "
            f"points of time saved, {d['delta']:+.2f} ± {d['delta_se']:.2f} points of accuracy")


def _figures(a: dict[str, float], brief: bool = False) -> str:
    """A variant's headline figures; ``brief`` (the README) leaves the cross-run checks to the docs."""
    saved = a["saved"]
    text = f"{100 * saved:.1f}% time saved ({1 / max(1e-9, 1 - saved):.2f}× faster"
    if brief:
        return text + f") at {a['delta']:+.2f} points"
    if not math.isnan(a.get("paired_saved", math.nan)):
        text += f"; vs baseline {100 * a['paired_saved']:.1f}%"
    if not math.isnan(a.get("cpu_saved", math.nan)):
        text += f"; CPU time {100 * a['cpu_saved']:.1f}%"
    return text + f") at {a['delta']:+.2f} points"


def _fmt_pct(x: float | None, std: float | None = None) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    return f"{100 * x:.1f}" + (f" ± {100 * std:.1f}" if std is not None and not math.isnan(std) else "") + "%"


def _fmt_overhead(x: float | None) -> str:
    """A decision overhead: a small fraction of training-step time, so three decimals of a percent."""
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.3f}%"


def results_markers(suite: str) -> tuple[str, str]:
    """The lines of ``docs/benchmarks.md`` between which a suite's full results block lives."""
    return f"<!-- frostline-bench-results:{suite}:begin -->", f"<!-- frostline-bench-results:{suite}:end -->"


def summary_markers(suite: str) -> tuple[str, str]:
    """The README lines between which a suite's short summary lives."""
    return f"<!-- frostline-bench-summary:{suite}:begin -->", f"<!-- frostline-bench-summary:{suite}:end -->"


def results_markdown(suite: Suite, rows: Sequence[dict[str, Any]], command: str, machine: dict[str, Any],
                     image_prefix: str = "", convergence: Sequence[dict[str, Any]] | None = None,
                     missing: Sequence[str] = (), caching: Sequence[dict[str, Any]] = (),
                     machines: dict[str, Any] | None = None) -> str:
    """The results block: the convergence check, tables in the shape of SmartFRZ's Tables 2–3,
    goals, plots."""
    from .report import markdown_table

    begin, end = results_markers(suite.name)
    out = [begin, "",
           f"Suite `{suite.name}`: {suite.about}. {suite.seeds} seeds per cell. "
           + (f"Runs trained on: {machines_text(machines)}. Report written on {label(machine)}; " if machines else
              f"Machine: {label(machine)}; ")
           + f"torch {machine['torch']}, Python {machine['python']}, frostline {machine['frostline']}"
           f"{' @ ' + machine['commit'] if machine.get('commit') else ''}, {machine['date']}.", "",
           f"Command: `{command}`", "",
           "Times are training-step time only (evaluation excluded). *Time saved* (the headline) is measured inside "
           "each run by the wall clock: its training time against its own steps at full speed before anything "
           "froze, times its number of steps. A run made with a full-speed probe (`--speed-probe`: a fresh full "
           "model's steps timed right after the run) takes the mean of the probe and those steps (the probe alone "
           "when they are under 20), so the two readings bracket the run in time; without a probe, a run that froze "
           "too early to measure that is paired with its baseline instead. On `none` rows it reads about 0, which "
           "checks the method. *vs baseline* pairs each "
           "run with the `none` run of the same seed (the same figure across runs, so it moves when the machine's "
           "speed changes between them; runs recorded on different machines are not paired, nor a run whose full step "
           f"(timed by its probe, else over its own steps before its first freeze) is more than {SAME_SPEED:g}x off "
           "its baseline's steps, a host that reports the same CPU name but is not the same speed), *CPU saved* likewise "
           "by the process's CPU time. Δ accuracy is paired "
           "with the same seed's baseline. Both take the baseline trained on the run's own machine where there is "
           "one: a bench that trains a run on another machine than its seed's baseline trains that baseline there "
           "too (listed among the runs; the `none` rows are the first machine's). "
           "*Predicted* is the time-calibrated estimate for the schedule that actually happened (step times "
           "profiled after training, on the same machine, in every freezing situation); runs from before that "
           "profile existed show the FLOPs-based estimate, marked (FLOPs). *FLOPs "
           "saved* counts the cache's own fill and extension forwards as cost; *decision* is an adaptive method's "
           "time spent deciding, over training-step time.", ""]
    if missing:
        out += [f"**Partial bench**: {len(missing)} run{'s' if len(missing) != 1 else ''} not finished yet; "
                "goals that need them say *not measured yet*.", ""]
    if convergence:
        out += ["Convergence check:", "", *convergence_lines(convergence), ""]
    for (dataset, model) in dict.fromkeys((r["dataset"], r["model"]) for r in rows):
        group = [r for r in rows if r["dataset"] == dataset and r["model"] == model]
        out += [f"**{model} on {dataset}**", "", markdown_table(
            ["method", "test acc %", "Δ acc", "train s", "time saved", "vs baseline", "CPU saved", "FLOPs saved", "predicted",
             "decision", "peak MB", "cache MB", "frozen", "seeds"], [_table_row(r) for r in group]), ""]
    out += cache_lines(caching)
    if suite.goals:
        out += ["Goals:", "", *[line for goal in suite.goals for line in goal_lines(goal, rows, convergence)], ""]
    for name, caption in PLOTS:
        out.append(f"![{caption}]({image_prefix}{name})")
    out += ["", end]
    return "\n".join(out)


def _table_row(r: dict[str, Any]) -> list[str]:
    seeds = f"{r['seeds']}" + ("" if r["seeds"] == r["of_seeds"] else f" of {r['of_seeds']}")
    if not r["seeds"]:
        return [r["variant"], "not run yet", *[""] * 11, seeds]
    base = r["method"] == "none"
    overhead = r.get("decision_overhead", math.nan)
    return [
        r["variant"], f"{r['accuracy']:.2f} ± {r['accuracy_std']:.2f}",
        "—" if base else ("n/a" if math.isnan(r["delta_accuracy"]) else f"{r['delta_accuracy']:+.2f}"),
        f"{r['train_time_s']:.1f}", _fmt_pct(r["time_saved"], r["time_saved_std"]),
        "—" if base else _fmt_pct(r.get("paired_time_saved"), r.get("paired_time_saved_std")),
        "—" if base else _fmt_pct(r.get("cpu_time_saved"), r.get("cpu_time_saved_std")),
        "—" if base else _fmt_pct(r["flops_saved"]), "—" if base else _fmt_predicted(r),
        _fmt_overhead(overhead) if r["method"] in ADAPTIVE else "—",
        f"{r['peak_memory_mb']:.0f}", f"{r['cache_mb']:.0f}" if r["cache_mb"] else "—",
        f"{r['frozen_units']:.1f}/{r['units']}", seeds,
    ]


def _fmt_predicted(r: dict[str, Any]) -> str:
    """The time-calibrated prediction; the FLOPs one, marked, for runs made before runs profiled."""
    t = r.get("predicted_time_saving", math.nan)
    return _fmt_pct(t) if t == t else f"{_fmt_pct(r['predicted_saving'])} (FLOPs)"


PLOTS = (
    ("accuracy_vs_time_saved.png", "test accuracy against time saved, one point per run, Pareto front"),
    ("freezing_moments.png", "when each unit froze (seed 0)"),
    ("memory.png", "activation memory kept for backward over training (seed 0)"),
    ("predicted_vs_measured.png", "predicted saving against measured time saved"),
)


def write_report(root: Path, suite: Suite, cells: Sequence[Cell], results: dict[str, dict], failed: dict[str, str],
                 skipped: Sequence[str], command: str, checks: Sequence[Cell] = (),
                 rebased: Sequence[Cell] = ()) -> dict[str, Any]:
    """``rebased``: baselines trained again on other machines; they pair with that machine's runs
    and are listed among the runs, while the tables' `none` rows stay the suite's own baselines."""
    from .report import plot_bench, read_metrics

    metrics = {c.key: read_metrics(c.folder(root)) for c in [*cells, *checks, *rebased] if c.key in results}
    results = {k: {**results[k], "in_run_time_saved": in_run_saving(results[k], m),
                   "relative_time": relative_time(results[k], m, CACHE_MIN_STEPS),
                   "own_full_step_s": own_full_step(results[k], m)} for k, m in metrics.items()}
    rows = aggregate(cells, results)
    caching = cache_rows(cells, results, read_twins(root))
    convergence = convergence_rows(checks, results) if suite.convergence else None
    machine = machine_info()
    machines = machine_counts([results[c.key] for c in [*cells, *checks, *rebased] if c.key in results])
    missing = [c.key for c in [*cells, *checks, *rebased] if c.key not in results]
    hyper = {v: {k: val for k, val in (VARIANTS[v] if v in skipped else variant_settings(v)).items() if k != "method"}
             for v in suite.variants}
    text = ["# frostline bench", "",
            results_markdown(suite, rows, command, machine, convergence=convergence, missing=missing,
                             caching=caching, machines=machines), "",
            "## Settings", "", f"Suite settings: `{json.dumps(suite.settings)}`", "",
            "Method variants (a method's own name: its hyperparameters as their authors recommend; a longer name "
            "says what it changes, set before any of its runs or calibrated on validation runs; nothing was tuned on the "
            "test set):", ""]
    text += [f"- `{v}`: `{json.dumps(h)}`" + (" — **skipped: method not installed**" if v in skipped else "")
             for v, h in hyper.items()]
    if any(c.reference_seed is not None for c in cells):
        text += ["", "The CKA oracle of seed *k* compares with the finished `none` run of another seed "
                 f"({'the next one' if suite.seeds > 1 else 'an extra baseline of seed 1, not reported'}): a "
                 "reference of the same seed would start from the same weights and see the same batches."]
    text += ["", "## Per run", "", "Each run against the `none` run of its seed: Δ accuracy, and the speed-up "
             "as the baseline's training time over the run's (both runs' own clocks, so it carries the "
             "machine's drift between them; *time saved* is the report's headline measure).", "",
             *per_run_lines([x for c in cells for x in [c, *(b for b in rebased if c.variant == "none" and
                                                             (b.dataset, b.model, b.seed) == (c.dataset, c.model, c.seed))]],
                            results)]
    if failed:
        text += ["", "## Failed runs", ""] + [f"- `{k}`: {err} (log: `{k}`/bench.log)" for k, err in failed.items()]
    not_run = [k for k in missing if k not in failed]
    if not_run:
        text += ["", f"## Not run yet ({len(not_run)})", ""] + [f"- `{k}`" for k in not_run]
    (root / "report.md").write_text("\n".join(text) + "\n")
    plot_bench(root, cells, results, [r for r in rows if r["seeds"]])
    data = {"suite": suite.name, "seeds": suite.seeds, "about": suite.about,
            "goals": [dataclasses.asdict(g) for g in suite.goals], "command": command, "machine": machine,
            "machines": machines, "rows": rows,
            "cache_rows": caching,
            "convergence": convergence, "failed": failed, "skipped": list(skipped), "missing": missing,
            "cells": len(cells) + len(checks) + len(rebased),
            "finished": len(cells) + len(checks) + len(rebased) - len(missing)}
    (root / "results.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    return data


def publish_results(bench_dir: str | os.PathLike, readme: str | os.PathLike = "README.md",
                    docs: str | os.PathLike = "docs/benchmarks.md") -> tuple[Path, ...]:
    """Publish a finished bench: its full results block into ``docs`` (the file and the suite's
    section are created when missing) with its plots beside it under ``bench/<suite>/``, and a short
    summary (the suite's goals and the accuracy-against-time-saved plot) into the README's summary
    block of that suite, unless the suite keeps out of the README (``Suite.in_readme``). Returns the
    files written."""
    root, readme, docs = Path(bench_dir), Path(readme), Path(docs)
    data = _read_results(root)
    suite = _suite_of(data)
    to_readme = suite.in_readme
    if to_readme and not readme.exists():
        raise FrostlineError(f"{readme} does not exist: pass --readme PATH")
    begin, end = summary_markers(suite.name)
    readme_text = readme.read_text() if to_readme else ""
    if to_readme and (begin not in readme_text or end not in readme_text):
        raise FrostlineError(f"{readme} has no summary block for suite {suite.name!r}: add the lines {begin} and "
                             f"{end} where it goes")
    images = docs.parent / "bench" / suite.name
    _copy_plots(root, images)
    block = results_markdown(suite, data["rows"], data["command"], data["machine"], image_prefix=f"bench/{suite.name}/",
                             convergence=data.get("convergence"), missing=data.get("missing", ()),
                             caching=data.get("cache_rows", ()), machines=data.get("machines"))
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs_text = docs.read_text() if docs.exists() else "# Benchmarks\n"
    docs.write_text(_replace_block(docs_text, *results_markers(suite.name), block))
    if not to_readme:
        return (docs,)
    summary = summary_markdown(suite, data, plot=_relative(images / PLOTS[0][0], readme.parent),
                               details=_relative(docs, readme.parent))
    readme.write_text(_replace_block(readme_text, begin, end, summary))
    return readme, docs


def summary_markdown(suite: Suite, data: dict[str, Any], plot: str, details: str) -> str:
    """The README's short block for a suite: what ran, whether the baseline converged, the goals
    (and the cache comparison), what is missing, the headline plot (for a suite with goals)."""
    begin, end = summary_markers(suite.name)
    machine = data["machine"]
    convergence = data.get("convergence")
    lines = [*convergence_lines(convergence or (), brief=True),
             *[line for goal in suite.goals for line in goal_lines(goal, data["rows"], convergence, brief=True)],
             *cache_summary_lines(data.get("cache_rows") or ())]
    missing = data.get("missing") or ()
    if missing:
        lines.append(f"- Partial bench: {len(missing)} of {data['cells']} runs not finished yet.")
    return "\n".join([begin, "", f"Suite `{suite.name}` ({suite.seeds} seed{'s' if suite.seeds != 1 else ''} per cell; "
                       f"{machines_text(data['machines'], brief=True) if data.get('machines') else machine['cpu']}, "
                       f"{machine['date']}).", "", *lines,
                       *([""] if lines else []),
                       *([f"![{PLOTS[0][1]}]({plot})", ""] if suite.goals else []),  # a suite of goals: its trade-off plot
                       f"The regime, full tables, machines and commands: [{details}]({details}).",
                       "", end])


def _read_results(root: Path) -> dict[str, Any]:
    try:
        return json.loads((root / "results.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FrostlineError(f"{root / 'results.json'} is missing or unreadable ({e}): run `frostline bench compare --out {root}` first") from None


def _suite_of(data: dict[str, Any]) -> Suite:
    """The suite a results.json describes (goals from the file; older files: the suite's own; whether
    it goes in the README: the suite's own)."""
    known = SUITES.get(data["suite"])
    if "goals" in data:
        goals = tuple(Goal(**{k: tuple(v) if isinstance(v, list) else v for k, v in g.items()}) for g in data["goals"])
    else:
        goals = known.goals if known else ()
    return Suite(data["suite"], (), (), data["seeds"], (), about=data["about"], goals=goals,
                 in_readme=known.in_readme if known else True)


def _copy_plots(root: Path, target: Path) -> None:
    import shutil

    target.mkdir(parents=True, exist_ok=True)
    for name, _ in PLOTS:
        if (root / name).exists():
            shutil.copyfile(root / name, target / name)


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def _replace_block(text: str, begin: str, end: str, block: str) -> str:
    """``text`` with the lines from ``begin`` to ``end`` replaced by ``block`` (appended when absent)."""
    if begin not in text or end not in text:
        return text.rstrip("\n") + "\n\n" + block + "\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return head + block + tail
