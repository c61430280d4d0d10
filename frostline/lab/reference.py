"""A finished run as a reference model (for the CKA oracle and SmartFRZ's labels).

``frostline train`` leaves ``config.json`` and, when it finishes, ``model.pt`` in its run folder.
The reference is rebuilt as a copy of the model being trained and given the finished weights, so
an architecture mismatch (another model, width, depth, or number of classes) is caught by name
and shape before any training step, not as a confusing CKA later.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from torch import nn

from ..errors import CheckpointError
from ..loading import load_plain


def load_reference(run_dir, like: nn.Module, model_name: str | None = None) -> nn.Module:
    """The model of the finished run in ``run_dir``, with ``like``'s architecture, in eval mode,
    without gradients, on ``like``'s device."""
    run = Path(run_dir)
    weights, config = run / "model.pt", run / "config.json"
    if not run.is_dir():
        raise CheckpointError(f"reference {run} is not a folder: pass the --out folder of a finished `frostline train`")
    if not weights.exists():
        raise CheckpointError(f"reference {run} has no model.pt: the run did not finish; "
                              "pass the folder of a finished `frostline train`")
    ref_model = "?"
    try:
        saved = json.loads(config.read_text())
        ref_model = saved.get("model", "?")
        ref_shape = (saved.get("model"), saved.get("width"), saved.get("depth"))
    except (FileNotFoundError, json.JSONDecodeError):
        ref_shape = None
    state = load_plain(weights, lambda e: CheckpointError(
        f"reference {weights} is unreadable ({type(e).__name__}): retrain the reference run"))
    what = f"a {ref_model!r} model" + (f" (width {ref_shape[1]}, depth {ref_shape[2]})" if ref_shape else "")
    wanted = f"this run trains {model_name!r}" if model_name else "this run's model differs"
    if not isinstance(state, dict):
        raise CheckpointError(f"reference {weights} is not a state dict: retrain the reference run")
    reference = copy.deepcopy(like)
    own = reference.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if model_name and ref_model not in ("?", model_name):
        raise CheckpointError(f"reference {run} is a {ref_model!r} run, this run trains {model_name!r}: "
                              f"pass a finished run of --model {model_name} (same --width, --depth and dataset)")
    if missing or unexpected or mismatched:
        detail = "; ".join(f"{label}: {keys[:3]}" for label, keys in
                           (("missing", missing), ("unexpected", unexpected), ("other shape", mismatched)) if keys)
        raise CheckpointError(
            f"reference {run} holds {what} whose weights do not fit this architecture ({detail}); {wanted}: "
            "train the reference with the same --model, --width, --depth and dataset")
    reference.load_state_dict(state)
    reference.eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    return reference


def load_finished_run(run_dir, test_subset: int | None = None):
    """A finished ``frostline train`` run rebuilt from its folder: ``(config, model, data)``, the
    model with the run's weights (checked as :func:`load_reference` checks them), the data split as
    the run split it (``test_subset``: only the first N test samples). For scripts that examine a
    run after the fact."""
    from .data import load_dataset
    from .zoo import create_model
    from . import pretrained  # noqa: F401  (registers the pretrained models)

    run = Path(run_dir)
    try:
        cfg = json.loads((run / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{run} has no readable config.json ({e}): pass the folder of a finished "
                              "`frostline train`") from None
    data = load_dataset(cfg["dataset"], val_size=cfg.get("val_size"), train_subset=cfg.get("train_subset"),
                        test_subset=test_subset or cfg.get("test_subset"), seed=cfg["seed"],
                        max_length=cfg.get("max_length", 128))
    like = create_model(cfg["model"], num_classes=data.num_classes, in_channels=data.in_channels,
                        image_size=data.image_size, width=cfg.get("width"), depth=cfg.get("depth"))
    return cfg, load_reference(run, like, cfg["model"]), data
