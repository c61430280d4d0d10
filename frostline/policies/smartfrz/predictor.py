"""SmartFRZ's attention-based predictor (Li, Yuan, Dai et al., ICLR 2023) and its file format.

The network, as the paper describes it: three MLPs of three linear layers (``input → 256 → 256 →
64``, ReLU between) encode every snapshot of a unit's history window into a key, a query and a
value; the query of the *newest* snapshot attends over the keys of every snapshot in the window
(dot product, softmax); the attention-weighted sum of the values goes through a final MLP
(``64 → 32 → 2``) whose two logits are ``[keep training, freeze]``. One predictor serves every
unit of every model, because a unit is seen only through its tailored weights.

Input features: the paper feeds the tailored weights themselves. Raw weights differ in scale from
layer to layer and model to model, and their absolute values say nothing about convergence, so
snapshot ``t`` of a window becomes ``(w_t - mean(w)) / rms(w_T) * input_scale``: the tailored
weights centred on the window's mean and measured in units of the newest weights' size. What is
left is the trajectory itself (how far and how consistently the weights moved over the window),
comparable across layers and models, and the newest snapshot's row (the query) is where the
weights are now relative to where they have been, so attention depends on the window.
``input_scale`` (fitted on the training data, stored in the file) brings the features to unit
variance. Windows shorter than the maximum are left-padded and masked.

Context (not in the paper): beside the attention's summary, the final MLP reads five numbers per
window (:func:`window_context`): the fraction of training done, and four statistics of the unit's
trajectory over the window (log net displacement and log path length, both in units of the newest
weights' RMS; their ratio, near 1 for a steady drift and small for a random walk; the log ratio of
the second half's path to the first half's). ``scripts/label_signals.py`` shows why: on the
collected runs the fraction of training done alone ranks the "freeze" labels better (ROC AUC
0.93) than the attention network on weights alone did (0.83), and these four statistics in a
plain logistic regression did better than it too (0.87). ``context_mean``/``context_std``
(fitted on the training data) standardise them.

The file also stores ``threshold``: the P(freeze) above which the policy freezes, calibrated on
held-out runs when the predictor was trained (see :mod:`frostline.lab.predictor.fit`).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...atomic import atomic_torch_save
from ...errors import CheckpointError
from ...loading import load_plain

FORMAT = "frostline-smartfrz-predictor-3"  # 3: context (training progress, trajectory statistics)
#: Numbers per window beside the snapshots (:func:`window_context`).
CONTEXT_SIZE = 5
SHIPPED = Path(__file__).with_name("predictor.pt")


def _mlp(*sizes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class SmartFRZPredictor(nn.Module):
    def __init__(self, input_size: int = 1024, input_scale: float = 1.0, threshold: float = 0.5):
        super().__init__()
        self.input_size = input_size
        self.input_scale = float(input_scale)
        #: P(freeze) above which a unit freezes (calibrated on held-out runs by training)
        self.threshold = float(threshold)
        self.key = _mlp(input_size, 256, 256, 64)
        self.query = _mlp(input_size, 256, 256, 64)
        self.value = _mlp(input_size, 256, 256, 64)
        self.head = _mlp(64 + CONTEXT_SIZE, 32, 2)
        self.register_buffer("context_mean", torch.zeros(CONTEXT_SIZE))
        self.register_buffer("context_std", torch.ones(CONTEXT_SIZE))
        #: the linear layers of the key, query, value and head, in order (what :meth:`_folded` reads)
        self._linears = tuple(m for mlp in (self.key, self.query, self.value, self.head) for m in mlp
                              if isinstance(m, nn.Linear))

    def forward(self, windows: torch.Tensor, mask: torch.Tensor | None, context: torch.Tensor) -> torch.Tensor:
        """``windows`` (B, T, input_size) of features, newest snapshot last; ``mask`` (B, T) True
        where a snapshot is real (padding on the left) or None; ``context`` (B, CONTEXT_SIZE) from
        :func:`window_context`. Returns (B, 2) logits. The network as described, layer by layer:
        what training runs (a decision runs :meth:`forward_projected`, the same logits)."""
        x = windows * self.input_scale
        keys, query, values = self.key(x), self.query(x[:, -1]), self.value(x)
        scores = torch.einsum("btd,bd->bt", keys, query)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        summary = torch.einsum("bt,btd->bd", torch.softmax(scores, dim=1), values)
        return self.head(torch.cat([summary, (context - self.context_mean) / self.context_std], dim=1))

    def project(self, snapshots: torch.Tensor) -> torch.Tensor:
        """(N, input_size) raw tailored snapshots -> (N, 2 * 256): each snapshot through the first
        (linear) layer of the key and value encoders, without their biases.

        Why: a window's features are its snapshots centred and scaled (:func:`window_features`), and
        a linear layer commutes with both, so :meth:`forward_projected` rebuilds the first layer's
        output of any window from these rows. A snapshot stays in the window for ``window`` of them,
        so the policy projects each once instead of at every decision. The query reads only the
        newest snapshot's row, so it needs no rows kept: :meth:`forward_projected` projects that one
        row, centred on the window's mean snapshot, at the decision (projecting every snapshot
        through the query too, to centre it from the projections, cost more than it saved)."""
        return snapshots @ self._folded()["key_value"].T

    def _folded(self) -> dict[str, torch.Tensor]:
        """The weights :meth:`forward_projected` multiplies by, with every pair of linear steps that
        meet without a ReLU between them multiplied out (in float64, then float32), rebuilt only
        when a weight changes:

        - a key's score is ``q · (W h + b)``, and ``q · b`` is the same for every row of a window,
          which the softmax ignores, so the key's last layer and the query's last layer fold into
          one 256 x 256 matrix applied to the query alone (``query_key``);
        - attention weights sum to 1, so the weighted sum of values is the value's last layer
          applied once to the weighted sum of its inputs, and that layer, the context's
          standardisation and the head's first layer fold into one (``head``)."""
        # read by attribute: walking the module tree at every call cost more than the check itself
        tensors = [w for m in self._linears for w in (m.weight, m.bias)] + [self.context_mean, self.context_std]
        version = [(t.data_ptr(), t._version) for t in tensors]
        cached = getattr(self, "_folded_cache", None)
        if cached is not None and cached[0] == version:
            return cached[1]
        with torch.no_grad():
            k1, k2, k3, q1, q2, q3, v1, v2, v3, h1, h2 = self._linears
            wide = {n: t.detach().double() for n, t in (("q3w", q3.weight), ("q3b", q3.bias), ("k3w", k3.weight),
                                                         ("v3w", v3.weight), ("v3b", v3.bias), ("h1w", h1.weight),
                                                         ("h1b", h1.bias), ("mean", self.context_mean),
                                                         ("std", self.context_std))}
            summary_w, context_w = wide["h1w"][:, :v3.out_features], wide["h1w"][:, v3.out_features:]
            folded = {
                "key_value": torch.cat([k1.weight, v1.weight]).detach(),
                "key_value_bias": torch.cat([k1.bias, v1.bias]).detach(),
                "query_in": q1.weight.detach().T, "query_in_bias": q1.bias.detach(),
                "query_mid": q2.weight.detach().T, "query_mid_bias": q2.bias.detach(),
                "query_key": (wide["q3w"].T @ wide["k3w"]).float(),
                "query_key_bias": (wide["q3b"] @ wide["k3w"]).float(),
                "key_mid": k2.weight.detach().T, "key_mid_bias": k2.bias.detach(),
                "value_mid": v2.weight.detach().T, "value_mid_bias": v2.bias.detach(),
                "head": torch.cat([summary_w @ wide["v3w"], context_w / wide["std"]], dim=1).T.float().contiguous(),
                "head_bias": (wide["h1b"] + summary_w @ wide["v3b"] - context_w @ (wide["mean"] / wide["std"])).float(),
                "out": h2.weight.detach().T, "out_bias": h2.bias.detach(),
            }
        self._folded_cache = (version, folded)
        return folded

    def forward_projected(self, projected: torch.Tensor, mask: torch.Tensor | None, newest_centred: torch.Tensor,
                          rms: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Same logits as :meth:`forward` on the windows' features, from their snapshots'
        :meth:`project` rows: ``projected`` (B, T, 2 * 256) left-padded with zero rows like
        :func:`batch_windows`, ``mask`` (B, T) or None when no window is padded, ``newest_centred``
        (B, input_size) each window's newest raw snapshot minus the mean of its snapshots, ``rms``
        (B,) the newest snapshot's RMS per window (what the features divide by), ``context``
        (B, CONTEXT_SIZE).

        Why it is written this way: a decision is a cost SmartFRZ adds to training, and between
        training steps each tensor operation costs tens of microseconds whatever its size, so it
        runs as few as the network allows (:meth:`_folded`): about twenty, each over a whole batch
        of windows."""
        f = self._folded()
        b, t, width = projected.shape
        hidden = width // 2
        scale = (self.input_scale / rms).unsqueeze(1)
        count = t if mask is None else mask.sum(dim=1, keepdim=True).to(projected.dtype)  # padding rows are zero
        # relu(scale * (row - mean) + bias) = relu(scale * row + (bias - scale * mean)): one pass over the rows
        shift = torch.addcmul(f["key_value_bias"], projected.sum(dim=1), scale / count, value=-1)
        rows = torch.addcmul(shift.unsqueeze(1), projected, scale.unsqueeze(2)).relu_().view(b * t, width)
        keys = torch.addmm(f["key_mid_bias"], rows[:, :hidden], f["key_mid"]).relu_()
        values = torch.addmm(f["value_mid_bias"], rows[:, hidden:], f["value_mid"]).relu_()
        query = torch.addmm(f["query_in_bias"], newest_centred * scale, f["query_in"]).relu_()
        query = torch.addmm(f["query_mid_bias"], query, f["query_mid"]).relu_()
        query = torch.addmm(f["query_key_bias"], query, f["query_key"])
        scores = torch.bmm(keys.view(b, t, hidden), query.unsqueeze(2)).squeeze(2)
        if mask is not None:
            scores.masked_fill_(~mask, float("-inf"))
        summary = torch.bmm(torch.softmax(scores, dim=1).unsqueeze(1), values.view(b, t, hidden)).squeeze(1)
        hidden_head = torch.addmm(f["head_bias"], torch.cat([summary, context], dim=1), f["head"]).relu_()
        return torch.addmm(f["out_bias"], hidden_head, f["out"])


def window_features(snapshots: torch.Tensor) -> torch.Tensor:
    """(T, D) raw tailored snapshots, oldest first -> (T, D) features (see the module docstring)."""
    rms = snapshots[-1].square().mean().sqrt().clamp_min(1e-12)
    return (snapshots - snapshots.mean(dim=0, keepdim=True)) / rms


def window_context(snapshots: torch.Tensor, progress: float) -> torch.Tensor:
    """(T, D) raw tailored snapshots, oldest first, and the fraction of training done -> the
    (CONTEXT_SIZE,) context (see the module docstring); scale-free like the features."""
    w = snapshots.float()
    return torch.tensor(context_from(w[1:].sub(w[:-1]).norm(dim=1).tolist(), float((w[-1] - w[0]).norm()),
                                     snapshot_rms(w[-1]), progress))


def snapshot_rms(snapshot: torch.Tensor) -> float:
    """The RMS of one snapshot: the unit the features and the context measure movement in."""
    return float(snapshot.float().square().mean().sqrt().clamp_min(1e-12))


def context_from(steps, displacement: float, rms: float, progress: float) -> list[float]:
    """:func:`window_context` from what it reads of a window: the lengths of its ``T - 1`` steps
    between consecutive snapshots (a sequence of floats), the distance from its oldest to its
    newest snapshot, and the newest snapshot's RMS (all in the weights' own units). The policy
    keeps the step lengths as snapshots arrive, so a decision need not stack and difference every
    window again; thirty numbers are summed as Python floats, faster than as tensors."""
    steps = [float(d) / rms for d in steps]
    disp = displacement / rms
    path = sum(steps)
    half = len(steps) // 2
    early, late = sum(steps[:half]), sum(steps[half:])
    eps = 1e-6
    return [float(progress), math.log(disp + eps), math.log(path + eps), disp / (path + eps),
            math.log((late + eps) / (early + eps))]


def batch_windows(windows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature windows of different lengths -> left-padded (B, T, D) batch and (B, T) mask."""
    t = max(w.shape[0] for w in windows)
    d = windows[0].shape[1]
    out = torch.zeros(len(windows), t, d)
    mask = torch.zeros(len(windows), t, dtype=torch.bool)
    for b, w in enumerate(windows):
        out[b, t - w.shape[0]:] = w
        mask[b, t - w.shape[0]:] = True
    return out, mask


def save_predictor(model: SmartFRZPredictor, path, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (weights in float16: half the size, no measurable change in its answers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() for k, v in model.state_dict().items()}
    return atomic_torch_save({"format": FORMAT, "input_size": model.input_size, "input_scale": model.input_scale,
                              "threshold": model.threshold, "state_dict": state, "meta": meta or {}}, path)


def predictor_digest(path=None) -> str:
    """The short SHA-256 a run's policy config records for its predictor file (None: the shipped one)."""
    return hashlib.sha256(Path(path if path is not None else SHIPPED).read_bytes()).hexdigest()[:16]


def load_predictor(path=None) -> tuple[SmartFRZPredictor, dict[str, Any]]:
    """The predictor in ``path`` (None: the one shipped with frostline) and its metadata, with a
    clear :class:`CheckpointError` for a missing, corrupted or wrongly shaped file."""
    path = Path(path) if path is not None else SHIPPED
    how = ("rebuild it with `python scripts/build_predictor.py`" if path == SHIPPED
           else "train one with `frostline predictor train`, or leave --predictor unset to use the shipped one")
    if not path.is_file():
        raise CheckpointError(f"SmartFRZ predictor {path} does not exist: {how}")
    saved = load_plain(path, lambda e: CheckpointError(
        f"SmartFRZ predictor {path} is unreadable or corrupted ({type(e).__name__}): {how}"))
    if not isinstance(saved, dict) or saved.get("format") != FORMAT or "state_dict" not in saved:
        if isinstance(saved, dict) and str(saved.get("format", "")).startswith("frostline-smartfrz-predictor-"):
            raise CheckpointError(f"{path} is a SmartFRZ predictor of an older format ({saved['format']}, this "
                                  f"frostline reads {FORMAT}): {how}")
        raise CheckpointError(f"{path} is not a frostline SmartFRZ predictor file: {how}")
    try:
        model = SmartFRZPredictor(int(saved["input_size"]), float(saved["input_scale"]), float(saved["threshold"]))
        model.load_state_dict({k: v.float() for k, v in saved["state_dict"].items()})
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as e:
        first = str(e).strip().splitlines()[0][:200]
        raise CheckpointError(f"SmartFRZ predictor {path} has the wrong shape or contents ({first}): {how}") from None
    model.eval()
    meta = dict(saved.get("meta") or {})
    meta["path"] = str(path)
    meta["sha256"] = predictor_digest(path)
    return model, meta
