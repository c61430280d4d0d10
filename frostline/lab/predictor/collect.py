"""Training data for the SmartFRZ predictor, from real runs, labelled by the CKA oracle.

``collect`` trains a *reference* run to the end with another seed (or takes a finished run), then
trains the configuration while a :class:`Recorder` (a policy that never freezes) receives, through
the Freezer, every unit's tailored weights ``snapshots_per_epoch`` times per epoch and, at the first
step and ``label_stages_per_epoch`` times per epoch, every unit's CKA to the reference on a fixed
probe batch. The labels (:class:`LabelRule`) read the init-normalised CKA ``n = (c - c0) / (1 - c0)``
with hindsight: a (unit, stage) is *freeze* when the unit has learned (its ``n`` at the end of the
run is at least ``min_learned``), and over the last ``window`` stages its ``n`` stayed within
``tolerance`` and at or above ``share`` of where it ends. "It has got where it is going and stopped
moving." The reference has another seed so that ``n`` says "has learned what a finished run's unit
learns", not "is near its own end" (a same-seed reference is retraced exactly and reaches CKA 1 at
the end). An absolute floor on ``n`` (the CKA oracle's online rule) cannot label across models: a
ViT's units end at n = 0.1-0.2 against another seed, a VGG's at 0.8-0.95, and an early
convolution whose random initialisation already matched the reference can end below 0. A unit
that never learns keeps ``n = 0`` and is never labelled *freeze*. The raw snapshots and CKA values
are kept, so the data can be relabelled with another rule without retraining.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from ...atomic import atomic_torch_save
from ...errors import CheckpointError, DataError
from ...loading import load_plain
from ...policies.base import FreezePolicy, Progress
from ...policies.cka_oracle.cka_oracle import normalised_cka
from ...policies.stages import StageClock
from ..loop import keep_aside

FORMAT = "frostline-smartfrz-dataset-2"  # 2: CKA at initialisation, another-seed reference
DATASET_FILE = "dataset.pt"


class Recorder(FreezePolicy):
    """Never freezes; keeps every tailored snapshot and every CKA measurement it is given."""

    name = "record"
    requires = frozenset({"tailored_weights", "cka"})

    def __init__(self, reference, probe, steps_per_epoch: int, tailor_size: int = 1024, seed: int = 0,
                 snapshots_per_epoch: int = 30, label_stages_per_epoch: int = 4):
        super().__init__()
        self.reference, self.probe, self.tailor_size, self.seed = reference, probe, tailor_size, seed
        self.snap_clock = StageClock(snapshots_per_epoch, steps_per_epoch, None, per_epoch_name="snapshots_per_epoch")
        self.label_clock = StageClock(label_stages_per_epoch, steps_per_epoch, None,
                                      per_epoch_name="label_stages_per_epoch")
        self.snapshot_steps: list[int] = []
        self.snapshots: list[torch.Tensor] = []
        self.stage_steps: list[int] = []
        self.cka: list[list[float]] = []
        self.cka_init: list[float] | None = None

    def collectors(self):
        from ...signals import ReferenceCKA, TailoredWeights

        return {"tailored_weights": TailoredWeights(self.tailor_size, self.seed),
                "cka": ReferenceCKA(self.reference, self.probe)}

    def wants(self, progress: Progress) -> frozenset[str]:
        want = set()
        label = self.label_clock.is_stage_end(progress.step) or progress.step == 1
        if label or self.snap_clock.is_stage_end(progress.step):
            want.add("tailored_weights")
        if label:
            want.add("cka")
        return frozenset(want)

    def observe(self, progress: Progress, signals: dict[str, Any]) -> None:
        self.snapshot_steps.append(progress.step)
        self.snapshots.append(torch.stack(signals["tailored_weights"]))
        if "cka" in signals:
            values = [float("nan") if v is None else float(v) for v in signals["cka"]]
            if self.cka_init is None:
                self.cka_init = values
            if self.label_clock.is_stage_end(progress.step):
                self.stage_steps.append(progress.step)
                self.cka.append(values)


@dataclass(frozen=True)
class LabelRule:
    """When a recorded (unit, stage) is labelled *freeze* (see the module docstring). The defaults:
    one epoch of stability at four stages per epoch, 95% of the way to where the unit ends."""

    window: int = 5
    tolerance: float = 0.05
    share: float = 0.95
    min_learned: float = 0.1
    final_stages: int = 4  # the unit's end value: the mean over the last stages (an epoch)

    def check(self) -> "LabelRule":
        from ...errors import ConfigError, check_int

        check_int(self.window, "the label window (stages)", low=2)
        for name in ("tolerance", "share", "min_learned"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(f"label {name} must be a number >= 0, got {value!r}")
        return self


def label_stages(cka: torch.Tensor, initial: torch.Tensor, rule: LabelRule = LabelRule()) -> torch.Tensor:
    """(stages, units) CKA and (units,) CKA at initialisation -> (stages, units) labels: 1 freeze,
    0 keep training, -1 for the head."""
    labels = torch.zeros(cka.shape, dtype=torch.long)
    for u in range(cka.shape[1] - 1):
        n = torch.tensor(normalised_cka(cka[:, u].tolist(), float(initial[u])), dtype=torch.float64)
        end = float(n[-rule.final_stages:].mean())
        if not math.isfinite(end) or end < rule.min_learned:
            continue  # never learned (or cannot tell): never labelled converged
        for k in range(rule.window - 1, cka.shape[0]):
            w = n[k - rule.window + 1:k + 1]
            if bool(torch.isfinite(w).all()) and float(w.max() - w.min()) <= rule.tolerance \
                    and float(w.min()) >= rule.share * end:
                labels[k, u] = 1
    labels[:, -1] = -1
    return labels


#: The reference run's seed is the recording's plus this, unless a finished run is given.
REFERENCE_SEED_OFFSET = 1
#: The settings of a method a collection reads (its snapshots and labels); it reads the training
#: settings too, and nothing else: both of its runs train every unit to the end.
READS = ("tailor_size", "snapshots_per_epoch", "stages_per_epoch", "reference", "probe_size")
_NO_FREEZING = "both runs of a collection train without freezing"
NOT_READ = {
    **dict.fromkeys(("method", "cooldown", "const_time"), _NO_FREEZING),
    **dict.fromkeys(("cache", "cache_dtype", "cache_memory_mb"), _NO_FREEZING + ", so nothing is cached"),
    "resume": "a collection does not resume (run it again with the same --out: a finished reference is reused)",
}


def unread_by_collect(cfg, given) -> list[tuple[str, str]]:
    """Of the settings ``given`` to :func:`collect`, those it would not read, each as ``(field,
    why)`` (:func:`frostline.lab.config.check_all_read` turns them into one error)."""
    from ..config import READ_ONLY_WHEN

    methods = {f.name: f.metadata.get("methods") for f in fields(cfg)}
    unread = []
    for name in sorted(given):
        if name in NOT_READ:
            unread.append((name, NOT_READ[name]))
        elif methods.get(name) and name not in READS:
            unread.append((name, f"a setting of {', '.join(methods[name])}, and a collection trains without freezing"))
        elif name in READ_ONLY_WHEN and not READ_ONLY_WHEN[name][0](cfg):
            unread.append((name, READ_ONLY_WHEN[name][1]))
    return unread


def _finished_run(folder: Path) -> dict | None:
    path = folder / "summary.json"
    if not (path.exists() and (folder / "model.pt").exists()):
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("status") == "finished" else None


def collect(cfg, out, *, reference=None, tailor_size: int = 1024, snapshots_per_epoch: int = 30,
            label_stages_per_epoch: int = 4, probe_size: int = 256, rule: LabelRule = LabelRule()) -> Path:
    """A recording run of ``cfg`` (a :class:`frostline.lab.config.TrainConfig`; its method is
    ignored) labelled against a reference, then ``out/dataset.pt``. The reference is the finished
    run in ``reference`` (any ``frostline train`` folder of the same model, or another collection's
    ``recording/``), else a run trained here in ``out/reference`` with seed ``cfg.seed + 1`` (a
    finished one is reused). A reference with the recording's own seed is refused."""
    from ... import __version__
    from ...errors import ConfigError
    from ..data import load_dataset
    from ..zoo import create_model
    from ..reference import load_reference
    from ..loop import check_out_folder, probe_batch
    from ..recipe import train

    out = check_out_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    base = replace(cfg, method="none", cache="off", resume=None, const_time=False, reference=None)
    ref_dir = Path(reference) if reference is not None else out / "reference"
    ref_summary = _finished_run(ref_dir)
    reused = ref_summary is not None
    if ref_summary is None:
        if reference is not None:
            raise CheckpointError(f"reference {ref_dir} is not a finished run (no summary.json with status "
                                  "'finished' and model.pt): pass the folder of a finished `frostline train`")
        ref_summary = train(replace(base, out=str(ref_dir), seed=cfg.seed + REFERENCE_SEED_OFFSET))
    ref_seed = json.loads((ref_dir / "config.json").read_text()).get("seed")
    if ref_seed == cfg.seed:
        raise ConfigError(f"the reference {ref_dir} was trained with seed {ref_seed}, the recording's own: the "
                          "recording would retrace it and every CKA would reach 1 at the end; use another seed")

    rec_cfg = replace(base, out=str(out / "recording"))
    data = load_dataset(rec_cfg.dataset, val_size=rec_cfg.val_size, train_subset=rec_cfg.train_subset,
                        test_subset=rec_cfg.test_subset, seed=rec_cfg.seed, max_length=rec_cfg.max_length)
    like = create_model(rec_cfg.model, num_classes=data.num_classes, in_channels=data.in_channels,
                        image_size=data.image_size, width=rec_cfg.width, depth=rec_cfg.depth)
    reference_model = load_reference(ref_dir, like, rec_cfg.model)
    steps_per_epoch = math.ceil(len(data.train) / rec_cfg.batch_size)
    recorder = Recorder(reference_model, probe_batch(data.train, probe_size, rec_cfg.seed), steps_per_epoch,
                        tailor_size=tailor_size, seed=rec_cfg.seed, snapshots_per_epoch=snapshots_per_epoch,
                        label_stages_per_epoch=label_stages_per_epoch)
    rec_summary = train(rec_cfg, policy=recorder)

    cka = torch.tensor(recorder.cka, dtype=torch.float64)
    cka_init = torch.tensor(recorder.cka_init, dtype=torch.float64)
    dataset = {
        "format": FORMAT,
        "unit_names": rec_summary["units"],
        "snapshot_steps": torch.tensor(recorder.snapshot_steps),
        "snapshots": torch.stack(recorder.snapshots),
        "stage_steps": torch.tensor(recorder.stage_steps),
        "cka": cka,
        "cka_init": cka_init,
        "labels": label_stages(cka, cka_init, rule),
        "provenance": {
            "model": rec_cfg.model, "dataset": rec_cfg.dataset, "epochs": rec_cfg.epochs, "seed": rec_cfg.seed,
            "train_subset": rec_cfg.train_subset, "batch_size": rec_cfg.batch_size, "width": rec_cfg.width,
            "depth": rec_cfg.depth, "lr": rec_cfg.lr, "optimizer": rec_cfg.optimizer,
            "steps_per_epoch": steps_per_epoch, "tailor_size": tailor_size,
            "snapshots_per_epoch": snapshots_per_epoch, "label_stages_per_epoch": label_stages_per_epoch,
            "probe_size": probe_size, "rule": asdict(rule),
            "reference": {"out": str(ref_dir), "seed": ref_seed, "test_accuracy": ref_summary.get("test_accuracy"),
                          "reused": reused},
            "recording_test_accuracy": rec_summary.get("test_accuracy"),
            "train_config": asdict(rec_cfg), "frostline": __version__, "torch": str(torch.__version__),
            "python": platform.python_version(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    }
    if (out / DATASET_FILE).exists():
        keep_aside(out / DATASET_FILE, "a finished collection")
    return atomic_torch_save(dataset, out / DATASET_FILE)


def with_datasets(paths) -> list[Path]:
    """The given folders (or files) that hold a collected dataset: a glob over a collection's work
    folder also matches its reference runs (finished models, no dataset), which are left out with a
    note on stderr."""
    import sys

    keep = [Path(p) for p in paths if Path(p).is_file() or (Path(p) / DATASET_FILE).is_file()]
    skipped = [str(p) for p in paths if Path(p) not in keep and (Path(p) / "summary.json").is_file()]
    if skipped:
        print(f"skipped {len(skipped)} reference run(s) without {DATASET_FILE}: {', '.join(skipped)}", file=sys.stderr)
    keep += [Path(p) for p in paths if Path(p) not in keep and str(p) not in skipped]  # missing: load_collected says so
    return keep


def load_collected(path) -> dict[str, Any]:
    """A dataset written by :func:`collect` (``path`` is the file or its folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / DATASET_FILE
    if not path.is_file():
        raise DataError(f"{path} does not exist: pass folders written by `frostline predictor collect`")
    ds = load_plain(path, lambda e: DataError(f"{path} is unreadable ({type(e).__name__}): collect it again"))
    if not isinstance(ds, dict) or ds.get("format") != FORMAT:
        raise DataError(f"{path} is not a frostline SmartFRZ dataset: collect it with `frostline predictor collect`")
    ds["path"] = str(path)
    return ds


def samples(ds: dict[str, Any], window: int = 30, rule: LabelRule | None = None
            ) -> list[tuple[torch.Tensor, torch.Tensor, int, int]]:
    """(feature window (T, D), context, label, unit) for every labelled (unit, stage) of a dataset:
    the last ``window`` snapshots taken at or before the stage, and the predictor's context (the
    fraction of training done at the stage, trajectory statistics). ``rule`` (a :class:`LabelRule`)
    relabels from the recorded CKA; None keeps the labels the dataset was collected with."""
    from ...errors import check_int
    from ...policies.smartfrz.predictor import window_context, window_features

    check_int(window, "--history-window (snapshots per sample, at least 2 to show a trajectory)", low=2)
    labels = ds["labels"] if rule is None else label_stages(ds["cka"], ds["cka_init"], rule)
    total = total_steps(ds)
    out = []
    steps = ds["snapshot_steps"]
    for k, step in enumerate(ds["stage_steps"].tolist()):
        end = int((steps <= step).sum())
        start = max(0, end - window)
        if end - start < 2:
            continue
        for u in range(labels.shape[1]):
            label = int(labels[k, u])
            if label >= 0:
                snaps = ds["snapshots"][start:end, u]
                out.append((window_features(snaps), window_context(snaps, step / total), label, u))
    return out


def total_steps(ds: dict[str, Any]) -> int:
    """The recorded run's length in optimizer steps."""
    p = ds["provenance"]
    return max(1, math.ceil(float(p["epochs"]) * int(p["steps_per_epoch"])))
