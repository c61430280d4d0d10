"""Signal collectors: what the Freezer reads from the live model for policies that decide from it.

A policy names the signals it needs in ``requires``; the Freezer asks a *collector* for each.
Collectors live here so that policies stay pure deciders: they never run the model, never look at
its weights. A collector is any object with ``bind(freezer)`` (called once the units are known, to
check and prepare) and ``__call__(freezer)`` (returns the signal for this step). Signals that need
no settings have a collector in :data:`STANDARD`; a policy can offer its own (``policy.collectors()``,
built from its hyperparameters); ``Freezer(..., signals={...})`` overrides both.

* :class:`GradNorms` (signal ``"grad_norm"``): per unit, the L2 norm of its current gradient.
* :class:`ReferenceCKA` (signal ``"cka"``): per unit, linear CKA between the unit's output in the
  training model and in a reference model, on a fixed probe batch.
* :class:`TailoredWeights` (signal ``"tailored_weights"``): per unit, a fixed seeded sample of its
  parameters (SmartFRZ's "layer tailoring").
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from .cka import centered_gram, cka_from_grams
from .errors import CheckpointError, ModelError
from .policies.smartfrz.tailor import Tailor
from .units import FreezeUnit, units_from_names


@contextlib.contextmanager
def quiet_eval(modules: list[nn.Module]):
    """Run ``modules`` in eval mode under ``no_grad`` and put everything back afterwards: every
    module's training flag and the CPU/CUDA RNG state. A probe forward then neither moves
    BatchNorm statistics nor consumes random numbers the training run would have used."""
    flags = [(m, m.training) for root in modules for m in root.modules()]
    devices = [d for d in {p.device for root in modules for p in root.parameters()} if d.type == "cuda"]
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        for root in modules:
            root.eval()
        try:
            yield
        finally:
            for m, was in flags:  # per module: the modes may be mixed (frozen units)
                m.training = was


def unit_outputs(model: nn.Module, units: list[FreezeUnit], x: torch.Tensor, wanted: set[int]) -> dict[int, torch.Tensor]:
    """Outputs of the units in ``wanted`` for input ``x`` (one forward of ``model``), caught by
    forward hooks on each unit's last module (a unit's modules are in execution order)."""
    caught: dict[int, torch.Tensor] = {}
    handles = []
    for i in wanted:
        def hook(_module, _inputs, output, i=i):
            out = output[0] if isinstance(output, (tuple, list)) else output
            caught[i] = out.detach()
        handles.append(units[i].modules[-1].register_forward_hook(hook))
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return caught


class GradNorms:
    """Signal ``"grad_norm"``: the L2 norm of each active unit's current gradient (None for frozen
    units or units without gradients). One fused norm per device and a single host transfer."""

    def __call__(self, freezer) -> list[float | None]:
        units = freezer.units
        by_device: dict[torch.device, tuple[list, list]] = {}
        for i, u in enumerate(units):
            if i in freezer.frozen:
                continue
            for p in u.params:
                if p.grad is not None:
                    grads, owners = by_device.setdefault(p.grad.device, ([], []))
                    grads.append(p.grad)
                    owners.append(i)
        if not by_device:
            return [None] * len(units)
        total = None
        for device, (grads, owners) in by_device.items():
            sq = torch.stack(torch._foreach_norm(grads)).to(torch.float32).square()
            part = torch.zeros(len(units), dtype=torch.float32, device=device).index_add_(
                0, torch.tensor(owners, device=device), sq)
            total = part if total is None else total + part.to(total.device)
        values = total.sqrt().tolist()
        has = {i for _, owners in by_device.values() for i in owners}
        return [values[i] if i in has else None for i in range(len(units))]


class ReferenceCKA:
    """Signal ``"cka"``: linear CKA (Kornblith et al. 2019) of each active unit's output with the
    same unit's output in ``reference``, on the fixed ``probe`` batch.

    Both models run in eval mode under ``no_grad`` with the RNG state restored afterwards (see
    :func:`quiet_eval`), so collecting the signal does not change the training run. The
    reference never changes, so its centred Gram matrices are computed once, at :meth:`bind`;
    each call costs one eval forward of the training model on the probe batch plus one n x n
    Gram matrix per active unit (n = probe size). Frozen units get ``None``.
    """

    def __init__(self, reference: nn.Module, probe: torch.Tensor):
        if not isinstance(probe, torch.Tensor) or probe.dim() < 2 or probe.shape[0] < 4:
            raise ModelError("the CKA probe must be a batch tensor of at least 4 samples")
        self.reference = reference
        self.probe = probe
        self._ref_grams: list[torch.Tensor | None] | None = None

    def bind(self, freezer) -> None:
        units = freezer.units
        try:
            ref_units = units_from_names(self.reference, [u.module_names for u in units])
        except ModelError as e:
            raise CheckpointError(f"the reference model does not have this model's units ({e}): "
                                  "use a reference trained with the same --model, --width and --depth") from None
        for u, r in zip(units, ref_units):
            shapes = [tuple(p.shape) for p in u.params]
            ref_shapes = [tuple(p.shape) for p in r.params]
            if shapes != ref_shapes:
                raise CheckpointError(
                    f"the reference model's unit {u.name} has parameter shapes {ref_shapes}, this model's {shapes}: "
                    "use a reference trained with the same --model, --width, --depth and dataset")
        device = next(self.reference.parameters()).device
        self.probe = self.probe.to(device)
        with quiet_eval([self.reference]):
            outs = unit_outputs(self.reference, ref_units, self.probe, set(range(len(units))))
        self._ref_grams = [centered_gram(outs[i]) if i in outs else None for i in range(len(units))]

    def __call__(self, freezer) -> list[float | None]:
        if self._ref_grams is None:
            self.bind(freezer)
        units = freezer.units
        active = {i for i in range(len(units)) if i not in freezer.frozen}
        probe = self.probe.to(next(freezer.model.parameters()).device)
        with quiet_eval([freezer.model]):
            outs = unit_outputs(freezer.model, units, probe, active)
        values: list[float | None] = [None] * len(units)
        for i, out in outs.items():
            ref = self._ref_grams[i]
            if ref is not None:
                values[i] = cka_from_grams(centered_gram(out), ref.to(out.device))
        return values


class TailoredWeights:
    """Signal ``"tailored_weights"``: for each active unit a float32 CPU vector of ``size`` of its
    parameter values at fixed seeded positions (:class:`frostline.policies.smartfrz.Tailor`); ``None`` for
    frozen units. A gather of ``size`` numbers per unit: no copy of the weights."""

    def __init__(self, size: int = 1024, seed: int = 0):
        self.size = size
        self.seed = seed
        self.tailor: Tailor | None = None

    def bind(self, freezer) -> None:
        self.tailor = Tailor([u.params for u in freezer.units], size=self.size, seed=self.seed)

    def __call__(self, freezer) -> list[Any]:
        if self.tailor is None:
            self.bind(freezer)
        units = freezer.units
        return [None if i in freezer.frozen else self.tailor.sample(i, units[i].params) for i in range(len(units))]


#: Collectors for the signals that need no settings (name -> factory).
STANDARD = {"grad_norm": GradNorms}
