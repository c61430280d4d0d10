"""The settings of one ``frostline train`` run, in one place.

:class:`TrainConfig` is the run's own settings (:class:`RunSettings`) plus every method's
hyperparameters, *derived* from the policy registry (``register_policy(name, Hyperparameter(...))``
beside each policy): the fields, their defaults, the CLI flags and their help all come from that
one declaration. A field several methods declare alike is shared (``prefix_only``); one they
declare with different defaults defaults to None, "each method's own" (``stages_per_epoch``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, check_int
from ..exploit.cache import DTYPES
from ..freezer.cooldown import check_cooldown
from ..policies import TRIAL_RUNTIME, Hyperparameter, create_policy, list_policies, policy_spec
from .data import TEXT_DATASETS
from .pretrained import TEXT_MODELS

OPTIMIZERS = ("sgd", "adamw")
CACHE_MODES = ("auto", "memory", "disk", "off")
LR_SCHEDULES = ("cosine", "step", "constant")


@dataclass
class RunSettings:
    """What a run is, apart from its method's hyperparameters."""

    model: str = "resnet"
    dataset: str = "fashion-mnist"
    method: str = "freezeout"
    epochs: float = 5
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "cosine"
    seed: int = 0
    train_subset: int | None = None
    val_size: int | None = None  # None: 5,000 images (400 reviews for fine-foods)
    test_subset: int | None = None
    max_length: int = 128  # token sequence length (text datasets only)
    width: int | None = None
    depth: int | None = None
    device: str = "auto"
    threads: int | None = None
    out: str = "runs/latest"
    log_every: int = 20
    checkpoint_every: int = 200
    resume: str | None = None
    progress: bool = True
    augment: bool = False
    fixed_augmentation: bool = False
    cache: str = "auto"
    cache_dtype: str = "float32"
    cache_memory_mb: int = 4096
    const_time: bool = False  # schedule-driven methods: train as long as the baseline's compute allows
    compile: bool = False  # torch.compile per freeze unit
    compile_backend: str = "inductor"
    reference: str | None = None  # cka-oracle: the run folder its reference model is loaded from
    probe_size: int = 256  # cka-oracle: samples in the probe batch CKA is measured on
    cooldown: int = 0  # optimizer steps of learning-rate ramp to zero before a decided unit freezes
    head_units: int = 1  # the last this many units form the head, which keeps training
    speed_probe: int = 0  # full-model steps timed after training, to measure time saved in-run (0: none)


def _method_field(name: str, declared: list[tuple[str, Hyperparameter]]) -> tuple[str, Any, dataclasses.Field]:
    """One config field from the methods that declare it: (name, type, field with help)."""
    methods = [m for m, _ in declared]
    kinds = {hp.type for _, hp in declared}
    if len(kinds) > 1:
        raise ConfigError(f"{'/'.join(methods)} declare {name!r} with different types: give one its own field name")
    if name in {f.name for f in fields(RunSettings)}:
        raise ConfigError(f"{'/'.join(methods)}: hyperparameter field {name!r} is a run setting: give it another field name")
    defaults = [hp.default for _, hp in declared]
    shared = all(d == defaults[0] for d in defaults)
    helps = dict.fromkeys(hp.help for _, hp in declared)
    text = "; ".join(f"{'/'.join(m for m, hp in declared if hp.help == h)}: {h}" for h in helps)
    if not shared:
        text += " (None: each method's own, " + ", ".join(f"{m} {hp.default}" for m, hp in declared) + ")"
    default = defaults[0] if shared else None
    kind = kinds.pop()
    return name, (kind if default is not None else Optional[kind]), dataclasses.field(
        default=default, metadata={"help": text, "methods": tuple(methods)})


def _method_fields() -> list[tuple[str, Any, dataclasses.Field]]:
    declared: dict[str, list[tuple[str, Hyperparameter]]] = {}
    for method in list_policies():
        for hp in policy_spec(method).hyperparameters:
            declared.setdefault(hp.config_field, []).append((method, hp))
    return [_method_field(name, decls) for name, decls in declared.items()]


MethodSettings = dataclasses.make_dataclass("MethodSettings", _method_fields())
MethodSettings.__module__ = __name__
MethodSettings.__doc__ = "Every registered method's hyperparameters, derived from the policy registry."


@dataclass
class TrainConfig(MethodSettings, RunSettings):
    """Everything one run depends on: :class:`RunSettings`, then the methods' hyperparameters (each
    method reads its own). The CLI maps its flags onto these fields one-to-one."""


def config_fields() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def config_defaults() -> dict[str, Any]:
    """Every config field at its default (a field added later defaults to what runs did before it)."""
    return {f.name: f.default for f in fields(TrainConfig)}


def method_settings(method: str) -> dict[str, Any]:
    """The config fields ``method`` reads, at their defaults."""
    defaults = config_defaults()
    return {hp.config_field: defaults[hp.config_field] for hp in policy_spec(method).hyperparameters}


def policy_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """``cfg.method``'s hyperparameters as its policy's arguments (None: the method's own default)."""
    kwargs = {hp.name: getattr(cfg, hp.config_field) for hp in policy_spec(cfg.method).hyperparameters}
    return {k: v for k, v in kwargs.items() if v is not None}


@dataclass
class RunContext:
    """What a run knows once its data and model exist: where runtime arguments come from."""

    steps_per_epoch: int
    model: nn.Module
    train_data: Any  # the un-augmented train split
    device: torch.device


def runtime_arguments(cfg: TrainConfig, run: RunContext | None = None) -> dict[str, Any]:
    """The one place a policy's runtime arguments (``register_policy(..., runtime=...)``: what the
    run supplies, never a setting) come from:

    - ``reference``: the finished run in ``cfg.reference``, loaded into a model like this one;
    - ``probe``: ``cfg.probe_size`` samples of the un-augmented train split, chosen by ``cfg.seed``;
    - ``steps_per_epoch``: the epoch length of the run's data;
    - ``seed``: the run's seed.

    Before the data is loaded (``run`` is None: validation, planning) the epoch length is a
    placeholder and ``reference`` / ``probe`` are left out. Supplied in this order (loading the
    reference builds a model, which draws from torch's global generator).
    """
    from .loop import probe_batch
    from .reference import load_reference

    suppliers = {
        "reference": lambda: load_reference(cfg.reference, run.model, cfg.model),
        "probe": lambda: probe_batch(run.train_data, cfg.probe_size, cfg.seed).to(run.device),
        "steps_per_epoch": lambda: run.steps_per_epoch if run else TRIAL_RUNTIME["steps_per_epoch"],
        "seed": lambda: cfg.seed,
    }
    wanted = policy_spec(cfg.method).runtime
    unknown = [name for name in wanted if name not in suppliers]
    if unknown:
        raise ConfigError(f"method {cfg.method!r} asks for runtime arguments {unknown} the recipe does not supply "
                          f"(it supplies {list(suppliers)})")
    needs_run = ("reference", "probe")
    return {name: supply() for name, supply in suppliers.items()
            if name in wanted and (run is not None or name not in needs_run)}


def make_policy(cfg: TrainConfig, run: RunContext | None = None):
    """``cfg.method``'s policy with its hyperparameters from ``cfg`` and its runtime arguments."""
    return create_policy(cfg.method, **policy_kwargs(cfg), **runtime_arguments(cfg, run))


def validate(cfg: TrainConfig) -> None:
    """Reject bad settings before any data is loaded, with a message saying what to use."""
    if cfg.method not in list_policies():
        raise ConfigError(f"unknown method {cfg.method!r}; choose one of {list_policies()}")
    _check_folders(cfg)
    _check_numbers(cfg)
    _check_choices(cfg)
    _check_combinations(cfg)
    make_policy(cfg)  # checks the method's own hyperparameters


def _check_folders(cfg: TrainConfig) -> None:
    """An empty folder name (``--out "$DIR"`` with ``DIR`` unset) would write into the current folder,
    and an empty ``--resume`` would start a new run instead of continuing one."""
    if not str(cfg.out).strip():
        raise ConfigError("--out is empty: pass the folder the run should write to")
    if cfg.resume is not None and not str(cfg.resume).strip():
        raise ConfigError("--resume is empty: pass the folder of the run to continue (or drop --resume to start a new one)")


def _check_numbers(cfg: TrainConfig) -> None:
    if not (isinstance(cfg.epochs, (int, float)) and 0 < cfg.epochs < math.inf):
        raise ConfigError(f"epochs must be a finite number > 0, got {cfg.epochs}")
    check_int(cfg.threads, "threads (torch CPU threads; leave it out for torch's choice)", low=1, allow_none=True)
    if cfg.batch_size <= 0:
        raise ConfigError(f"batch_size must be > 0, got {cfg.batch_size}")
    if not cfg.lr > 0:
        raise ConfigError(f"lr must be > 0, got {cfg.lr}")
    if cfg.cache_memory_mb < 0:
        raise ConfigError(f"cache_memory_mb must be >= 0, got {cfg.cache_memory_mb}")
    if cfg.checkpoint_every < 0:
        raise ConfigError(f"checkpoint_every must be >= 0 (0: only at freeze events and epoch ends), got {cfg.checkpoint_every}")
    if cfg.log_every <= 0:
        raise ConfigError(f"log_every must be > 0, got {cfg.log_every}")
    if cfg.probe_size < 4:
        raise ConfigError(f"probe_size must be >= 4 samples, got {cfg.probe_size}")
    check_int(cfg.cooldown, "cooldown (optimizer steps)", low=0)
    check_int(cfg.head_units, "head units (--head-units: how many of the last units keep training as the head)", low=1)
    check_int(cfg.speed_probe, "speed_probe (timed steps; 0: no probe)", low=0)


def _check_choices(cfg: TrainConfig) -> None:
    from .data import list_datasets
    from .zoo import list_models

    if cfg.model not in list_models():
        raise ConfigError(f"unknown model {cfg.model!r}; known models: {', '.join(list_models())}")
    if cfg.dataset not in list_datasets():
        raise ConfigError(f"unknown dataset {cfg.dataset!r}; known datasets: {', '.join(list_datasets())}")
    for name, value, choices in (("optimizer", cfg.optimizer, OPTIMIZERS), ("lr schedule", cfg.lr_schedule, LR_SCHEDULES),
                                 ("cache mode", cfg.cache, CACHE_MODES), ("cache dtype", cfg.cache_dtype, DTYPES)):
        if value not in choices:
            raise ConfigError(f"unknown {name} {value!r}; choose one of {list(choices)}")
    if cfg.compile:
        from ..exploit.compiling import check_backend

        check_backend(cfg.compile_backend)


def _check_combinations(cfg: TrainConfig) -> None:
    if (cfg.model in TEXT_MODELS) != (cfg.dataset in TEXT_DATASETS):
        kind = "text" if cfg.dataset in TEXT_DATASETS else "image"
        raise ConfigError(f"model {cfg.model!r} does not fit the {kind} dataset {cfg.dataset!r}: text models "
                          f"({', '.join(TEXT_MODELS)}) go with {', '.join(TEXT_DATASETS)}, the others with image datasets")
    if cfg.augment and cfg.dataset in TEXT_DATASETS:
        raise ConfigError(f"augment flips and shifts images; {cfg.dataset!r} is a text dataset: drop --augment")
    if cfg.fixed_augmentation and not cfg.augment:
        raise ConfigError("fixed_augmentation only applies with augment: add --augment")
    if cfg.const_time and cfg.method == "none":
        raise ConfigError("const_time lengthens a freezing run to the baseline's compute; it needs a freezing method")
    if cfg.const_time and make_policy(cfg).requires:
        raise ConfigError("const_time needs a schedule-driven method (linear, freezeout): this one decides "
                          "from training signals, so its compute cannot be planned")
    if cfg.cooldown:
        if cfg.method == "none":
            raise ConfigError("cooldown anneals a unit before it freezes; method none freezes nothing: "
                              "pick a freezing method or drop --cooldown")
        if cfg.const_time:
            raise ConfigError("const_time plans the run from the schedule's freezing times, which a cooldown "
                              "delays: drop one of --const-time and --cooldown")
        check_cooldown(cfg.cooldown, make_policy(cfg))  # FreezeOut anneals by itself: no cooldown
    if cfg.method == "cka-oracle" and not cfg.reference:
        raise ConfigError("cka-oracle compares with a finished run: pass --reference RUN_DIR "
                          "(the --out folder of a finished `frostline train` of the same model)")


#: Run settings that feed a method's runtime argument (:func:`runtime_arguments`): field -> argument.
RUNTIME_FIELDS = {"reference": "reference", "probe_size": "probe"}
#: Other run settings only some runs read: field -> (whether this run reads it, why not).
READ_ONLY_WHEN = {
    "cache_dtype": (lambda c: c.cache != "off", "the activation cache is off (--cache off)"),
    "cache_memory_mb": (lambda c: c.cache != "off", "the activation cache is off (--cache off)"),
    "compile_backend": (lambda c: c.compile, "nothing is compiled without --compile"),
    "max_length": (lambda c: c.dataset in TEXT_DATASETS, f"only text datasets ({', '.join(TEXT_DATASETS)}) are tokenised"),
    "momentum": (lambda c: c.optimizer == "sgd", "only --optimizer sgd has momentum"),
    "lr_schedule": (lambda c: getattr(c, "method", None) not in list_policies() or not policy_spec(c.method).cls.scales_lr,
                    "freezeout anneals each unit's learning rate along its own schedule"),
}
#: What a resumed run takes from the new command line (how this process runs); everything else
#: comes from the run's config.json.
RESUME_TAKES = ("progress", "threads")
#: The activation cache's settings: a run that freezes nothing (``--method none``) has no cache.
CACHE_FIELDS = ("cache", "cache_dtype", "cache_memory_mb")


def unread_settings(cfg, given) -> list[tuple[str, str]]:
    """Of the settings ``given`` (the fields a user set, e.g. by flag), those this run would not read,
    each as ``(field, why)``. A setting that changes nothing must not pass in silence: the user
    meant something by it (a method's hyperparameter given to another method, a cache dtype with
    the cache off, a new epoch count for a resumed run). ``cfg``: a :class:`TrainConfig`, or another
    command's settings that share some of its fields (``bench steptime``'s)."""
    if getattr(cfg, "resume", None):
        return [(name, f"a resumed run keeps the settings in {Path(cfg.resume) / 'config.json'} (to change them, "
                       "start a new run with another --out)") for name in sorted(set(given) - {"resume", *RESUME_TAKES})]
    methods = {f.name: f.metadata.get("methods") for f in fields(cfg)}
    methods.update({name: tuple(m for m in list_policies() if argument in policy_spec(m).runtime)
                    for name, argument in RUNTIME_FIELDS.items()})
    unread = []
    for name in sorted(given):
        if methods.get(name) and cfg.method not in methods[name]:
            unread.append((name, f"read only by {', '.join(methods[name])} (this run: --method {cfg.method})"))
        elif (name in CACHE_FIELDS and getattr(cfg, "method", None) == "none"
              and not (name == "cache" and cfg.cache == "off")):
            unread.append((name, "--method none freezes nothing, so there is no frozen prefix to cache"))
        elif name in READ_ONLY_WHEN and not READ_ONLY_WHEN[name][0](cfg):
            unread.append((name, READ_ONLY_WHEN[name][1]))
    return unread


def check_all_read(cfg, given, unread=unread_settings) -> None:
    """``unread(cfg, given)`` (by default :func:`unread_settings`) as one clear error."""
    by_reason: dict[str, list[str]] = {}
    for name, why in unread(cfg, given):
        by_reason.setdefault(why, []).append("--" + name.replace("_", "-"))
    if by_reason:
        raise ConfigError("; ".join(f"{', '.join(flags)} {'does' if len(flags) == 1 else 'do'} nothing here: {why}"
                                    for why, flags in by_reason.items())
                          + (": drop it" if sum(map(len, by_reason.values())) == 1 else ": drop them"))


def resumed_config(cfg: TrainConfig) -> TrainConfig:
    """The settings a run folder was started with; only how this process runs (progress bar,
    threads, when given) comes from the new command line."""
    path = Path(cfg.resume) / "config.json"
    try:
        saved = json.loads(path.read_text())
        if not isinstance(saved, dict):
            raise TypeError(f"a JSON {type(saved).__name__}, not the run's settings")
        resumed = TrainConfig(**{k: v for k, v in saved.items() if k in config_fields()})
    except (FileNotFoundError, NotADirectoryError):
        raise CheckpointError(f"{path} does not exist: --resume takes the folder of an earlier `frostline train`") from None
    except (json.JSONDecodeError, TypeError) as e:
        raise CheckpointError(f"{path} is unreadable ({e}): start a new run without --resume") from None
    takes = {name: getattr(cfg, name) for name in RESUME_TAKES}
    if takes["threads"] is None:  # not given: the run's own, or the rest would not be the same computation
        takes["threads"] = resumed.threads
    return replace(resumed, out=str(Path(cfg.resume)), resume=str(cfg.resume), **takes)
