"""Centered kernel alignment (CKA) between two sets of activations, with linear kernels.

Two estimators:

* :func:`linear_cka` (Kornblith, Norouzi, Lee, Hinton 2019, "Similarity of Neural Network
  Representations Revisited"): the plain (biased) estimator on one full set of ``n`` samples.
  With centred features ``Xc`` (n x p) and ``Yc`` (n x q),
  ``CKA = ||Ycᵀ Xc||_F² / (||Xcᵀ Xc||_F ||Ycᵀ Yc||_F)``, which equals the Gram-matrix form
  ``<Kc, Lc>_F / (||Kc||_F ||Lc||_F)`` with ``K = X Xᵀ``. Each of the three inner products is
  computed by the cheaper side: features-by-features when features are fewer than samples,
  samples-by-samples otherwise, so wide activations (p >> n, e.g. flattened conv maps) never
  build a p x p matrix and long sample sets (n >> p) never build an n x n one.
* :class:`MinibatchCKA` / :func:`minibatch_cka` (Nguyen, Raghu, Kornblith 2021, "Do Wide and Deep
  Networks Learn the Same Things?"): sums the *unbiased* HSIC estimator of Song, Smola, Gretton,
  Bedo, Borgwardt 2012 over minibatches,
  ``CKA = Σ_b HSIC₁(K_b, L_b) / sqrt(Σ_b HSIC₁(K_b, K_b) · Σ_b HSIC₁(L_b, L_b))``,
  so activations never need to be held for the whole data set, and the result does not depend
  on the minibatch size the way averaging the biased estimator would.

Everything is computed in float64 on the inputs' device. Inputs are ``(n, ...)`` tensors (or
anything ``torch.as_tensor`` takes); dimensions after the first are flattened into features.
CKA is undefined when a representation is constant over the samples (a zero kernel): the
functions then return ``nan`` rather than guess.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from .errors import ConfigError

__all__ = ["linear_cka", "hsic1", "minibatch_cka", "MinibatchCKA", "centered_gram", "cka_from_grams"]


def _as_features(a, name: str) -> torch.Tensor:
    t = torch.as_tensor(a)
    if t.dim() < 1:
        raise ConfigError(f"{name} must have a sample dimension (shape (n, ...)), got a scalar")
    if t.is_complex():
        raise ConfigError(f"{name} is complex; CKA takes real activations")
    return t.detach().reshape(t.shape[0], -1).to(torch.float64)


def _pair(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _as_features(x, "x"), _as_features(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ConfigError(
            f"x and y must hold the same samples in the same order: got {x.shape[0]} and {y.shape[0]} rows"
        )
    if x.device != y.device:
        y = y.to(x.device)
    return x, y


def _gram_inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``<A Aᵀ, B Bᵀ>_F = ||Aᵀ B||_F²`` (n x p and n x q), by whichever side is cheaper: the
    feature form costs n·p·q time and p·q memory, the Gram form n²·(p + q) and n² — so an n x n
    matrix is built only when features outnumber samples, and a p x q one only when they don't."""
    n, p, q = a.shape[0], a.shape[1], b.shape[1]
    if a is b:
        if p <= n:
            return torch.linalg.matrix_norm(a.T @ a) ** 2
        return torch.linalg.matrix_norm(a @ a.T) ** 2
    if p * q <= n * (p + q):
        return torch.linalg.matrix_norm(b.T @ a) ** 2
    return ((a @ a.T) * (b @ b.T)).sum()


def linear_cka(x, y) -> float:
    """Linear CKA between ``x`` (n x ...) and ``y`` (n x ...), the same n samples in the same order.

    1.0 means the representations are equal up to an orthogonal transform and isotropic scaling
    (and a shift); 0.0 means their centred Gram matrices are orthogonal. ``nan`` if either is
    constant over the samples.
    """
    x, y = _pair(x, y)
    n = x.shape[0]
    if n < 2:
        raise ConfigError(f"linear CKA needs at least 2 samples, got {n}")
    xc = x - x.mean(dim=0, keepdim=True)
    yc = y - y.mean(dim=0, keepdim=True)
    cross = _gram_inner(xc, yc)
    denom = float(torch.sqrt(_gram_inner(xc, xc) * _gram_inner(yc, yc)))
    if denom == 0.0 or not math.isfinite(denom):
        return float("nan")
    return float(cross) / denom


def centered_gram(x) -> torch.Tensor:
    """``H K H`` for ``K = X Xᵀ`` (float64, n x n): for comparing one fixed representation (a
    reference model's) with many others, its Gram matrix is built once and reused."""
    x = _as_features(x, "x")
    xc = x - x.mean(dim=0, keepdim=True)
    return xc @ xc.T


def cka_from_grams(kc: torch.Tensor, lc: torch.Tensor) -> float:
    """Linear CKA from two centred Gram matrices (:func:`centered_gram`); equals
    :func:`linear_cka` of the underlying features. ``nan`` if either is zero."""
    if kc.shape != lc.shape:
        raise ConfigError(f"Gram matrices of different sizes {tuple(kc.shape)} and {tuple(lc.shape)}: use the same samples")
    denom = float(torch.linalg.matrix_norm(kc) * torch.linalg.matrix_norm(lc))
    if denom == 0.0 or not math.isfinite(denom):
        return float("nan")
    return float((kc * lc).sum()) / denom


# -- the unbiased estimator ------------------------------------------------------------------
def _gram_stats(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For ``K = A Aᵀ`` with its diagonal zeroed (K̃): diag(K), 1ᵀK̃1 and K̃1, in O(n p)."""
    diag = (a * a).sum(dim=1)
    col_sum = a.sum(dim=0)
    row_sums = a @ col_sum - diag  # K̃ 1
    total = row_sums.sum()  # 1ᵀ K̃ 1
    return diag, total, row_sums


def _trace_zeroed(a: torch.Tensor, b: torch.Tensor, diag_a: torch.Tensor, diag_b: torch.Tensor) -> torch.Tensor:
    """tr(K̃ L̃) for K = A Aᵀ, L = B Bᵀ: tr(K L) - Σ_i K_ii L_ii, tr(K L) by the cheaper form."""
    return _gram_inner(a, b) - (diag_a * diag_b).sum()


def _hsic1(n: int, tr: torch.Tensor, stats_a, stats_b) -> torch.Tensor:
    _, total_a, rows_a = stats_a
    _, total_b, rows_b = stats_b
    return (
        tr + total_a * total_b / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (rows_a * rows_b).sum()
    ) / (n * (n - 3))


def _check_unbiased_n(n: int) -> None:
    if n <= 3:
        raise ConfigError(
            f"the unbiased HSIC estimator needs more than 3 samples per minibatch, got {n}: "
            "use a larger batch (or linear_cka for tiny sample sets)"
        )


def hsic1(x, y) -> float:
    """Unbiased HSIC (Song et al. 2012) between ``x`` and ``y`` with linear kernels:
    ``[tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1 / ((n-1)(n-2)) - 2/(n-2) · 1ᵀK̃L̃1] / (n(n-3))``, where K̃, L̃
    are the Gram matrices with zeroed diagonals. Needs n > 3 samples."""
    x, y = _pair(x, y)
    n = x.shape[0]
    _check_unbiased_n(n)
    sx, sy = _gram_stats(x), _gram_stats(y)
    return float(_hsic1(n, _trace_zeroed(x, y, sx[0], sy[0]), sx, sy))


class MinibatchCKA:
    """Accumulates minibatch CKA (Nguyen et al. 2021) between two representations.

    ::

        acc = MinibatchCKA()
        for x in loader:
            acc.update(layer_a(x), layer_b(x))   # same samples, same order, n > 3 each
        similarity = acc.compute()

    Each minibatch adds its unbiased HSIC₁(K, L), HSIC₁(K, K), HSIC₁(L, L); sums stay float64
    tensors on the activations' device, so ``update`` does not synchronise with an accelerator.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._xy: torch.Tensor | float = 0.0
        self._xx: torch.Tensor | float = 0.0
        self._yy: torch.Tensor | float = 0.0
        self.batches = 0
        self.samples = 0

    @torch.no_grad()
    def update(self, x, y) -> None:
        """Add one minibatch: ``x`` and ``y`` are the two representations of the same n samples."""
        x, y = _pair(x, y)
        n = x.shape[0]
        _check_unbiased_n(n)
        sx, sy = _gram_stats(x), _gram_stats(y)
        self._xy = self._xy + _hsic1(n, _trace_zeroed(x, y, sx[0], sy[0]), sx, sy)
        self._xx = self._xx + _hsic1(n, _trace_zeroed(x, x, sx[0], sx[0]), sx, sx)
        self._yy = self._yy + _hsic1(n, _trace_zeroed(y, y, sy[0], sy[0]), sy, sy)
        self.batches += 1
        self.samples += n

    def compute(self) -> float:
        """CKA over every minibatch added so far; ``nan`` if a self-similarity sum is not > 0
        (a constant representation, or too few samples for the unbiased estimate to be positive)."""
        if self.batches == 0:
            raise ConfigError("MinibatchCKA has no data: call update(x, y) with at least one minibatch first")
        xy, xx, yy = float(self._xy), float(self._xx), float(self._yy)
        if not (xx > 0.0 and yy > 0.0):
            return float("nan")
        return xy / math.sqrt(xx * yy)

    def state_dict(self) -> dict[str, Any]:
        return {"hsic_xy": float(self._xy), "hsic_xx": float(self._xx), "hsic_yy": float(self._yy),
                "batches": self.batches, "samples": self.samples}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._xy, self._xx, self._yy = float(state["hsic_xy"]), float(state["hsic_xx"]), float(state["hsic_yy"])
        self.batches, self.samples = int(state["batches"]), int(state["samples"])


def minibatch_cka(batches: Iterable[tuple[Any, Any]]) -> float:
    """Minibatch CKA over an iterable of ``(x, y)`` pairs (see :class:`MinibatchCKA`)."""
    acc = MinibatchCKA()
    for x, y in batches:
        acc.update(x, y)
    return acc.compute()
