"""Signal collectors: what the Freezer reads from the live model for policies that decide from it.

A policy names the signals it needs in ``requires``; the Freezer asks a *collector* for each.
Collectors live here so that policies stay pure deciders: they never run the model, never look at
its weights. A collector is any object with ``bind(freezer)`` (called once the units are known, to
check and prepare) and ``__call__(freezer)`` (returns the signal for this step). The Freezer binds
only the collectors of signals its policy requires, so an unused collector costs nothing. Optional
methods, for collectors that hold something between calls (hooks, sums): ``on_freeze(index)`` (a
unit was frozen: let go of what it held), ``close()`` (training is over, or the collector is
replaced: remove hooks) and ``state_dict()`` / ``load_state_dict(state)`` (saved with the Freezer,
so a resumed run continues what was collected). Signals that need no settings have a collector in
:data:`STANDARD`; a policy can offer its own (``policy.collectors()``, built from its
hyperparameters); ``Freezer(..., signals={...})`` overrides both.

* :class:`SummedGradients` (signal ``"grad_sum_l1"``): per unit, the L1 norm of its gradient summed
  over the backward passes since the last read, caught by hooks as backward runs.
* :class:`ReferenceCKA` (signal ``"cka"``): per unit, linear CKA between the unit's output in the
  training model and in a reference model, on a fixed probe batch.
* :class:`TailoredWeights` (signal ``"tailored_weights"``): per unit, a fixed seeded sample of its
  parameters (SmartFRZ's "layer tailoring").
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .cka import centered_gram, cka_from_grams
from .errors import CheckpointError, ConfigError, ModelError
from .policies.smartfrz.tailor import Tailor
from .units import FreezeUnit, units_from_names, unwrap_compiled


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


def probe_to(x, device):
    """A probe batch (a tensor, or a dict of keyword tensors) on ``device``."""
    if isinstance(x, Mapping):
        return {k: v.to(device) for k, v in x.items()}
    return x.to(device)


def unit_outputs(model: nn.Module, units: list[FreezeUnit], x, wanted: set[int]) -> dict[int, torch.Tensor]:
    """Outputs of the units in ``wanted`` for input ``x`` (one forward of ``model``; a dict is its
    keyword arguments), caught by forward hooks on each unit's last module (a unit's modules are in
    execution order)."""
    caught: dict[int, torch.Tensor] = {}
    handles = []
    for i in wanted:
        def hook(_module, _inputs, output, i=i):
            out = output[0] if isinstance(output, (tuple, list)) else output
            caught[i] = out.detach()
        handles.append(units[i].modules[-1].register_forward_hook(hook))
    try:
        model(**x) if isinstance(x, Mapping) else model(x)
    except NotImplementedError as e:
        if 'missing the required "forward"' not in str(e):
            raise
        raise ConfigError(f"the CKA probe runs the model's own forward, and {type(model).__name__} has none (a "
                          "LightningModule that computes in training_step): define forward() to return the network's "
                          "output for a batch of inputs") from None
    finally:
        for h in handles:
            h.remove()
    return caught


class SummedGradients:
    """Signal ``"grad_sum_l1"``: per active unit, the L1 norm of its gradient *summed over every
    backward pass since the previous read* (AutoFreeze's signal); None for frozen units and units
    that received no gradient. Each read starts a new sum.

    Why hooks and not ``p.grad``: a tensor hook (``param.register_hook``) receives the gradient of
    this backward pass for this parameter, before it is added into ``.grad``. The sum is therefore
    the same whether the user zeroes gradients before backward or right after ``optimizer.step()``
    (as the Hugging Face ``Trainer`` does before its step-end callbacks), and gradient accumulation
    counts every micro-batch once. Under DDP the hooks see this rank's local gradients (before the
    all-reduce); the decisions built on them are made identical across ranks by ``DecisionSync``.

    Cost: one in-place add per parameter per backward (into a sum allocated at the parameter's first
    gradient of the interval, so a model-sized buffer while accumulating, as in the original
    AutoFreeze code), and per read one fused L1 reduction per device and one host transfer. Sums
    are float32 for half-precision parameters (a few hundred fp16 additions lose too much). A sum
    that overflowed (an AMP step with inf/nan gradients) is reported as it is, non-finite, so the
    policy can skip it. With a ``GradScaler`` the hooks see gradients times the loss scale (they run
    before ``unscale_``): every unit is scaled alike within an interval, but a change of scale
    between two intervals shows up in their ratio. Units frozen by the Freezer lose their hooks and sums at once
    (:meth:`on_freeze`); :meth:`close` removes every hook.
    """

    def __init__(self) -> None:
        self._reset_slots()

    def _reset_slots(self) -> None:
        self.num_units = 0
        self._params: list[nn.Parameter] = []  # one slot per distinct trainable parameter
        self._names: list[str] = []
        self._owners: list[tuple[int, ...]] = []  # units holding the slot's parameter (tied weights: several)
        self._handles: list[Any] = []
        self._sums: list[torch.Tensor | None] = []  # the closures below write into this very list
        self._released: set[int] = set()  # units whose hooks are gone (frozen)
        self.bound = False

    def bind(self, freezer) -> None:
        """Hook every trainable parameter of the units not frozen (replacing earlier hooks)."""
        self.close()
        slot_of: dict[int, int] = {}
        owners: list[list[int]] = []
        for i, unit in enumerate(freezer.units):
            if i in freezer.frozen:
                continue
            for name, p in zip(unit.param_names, unit.params):
                if not p.requires_grad:
                    continue
                if id(p) in slot_of:
                    owners[slot_of[id(p)]].append(i)
                    continue
                slot_of[id(p)] = len(self._params)
                self._params.append(p)
                self._names.append(name)
                owners.append([i])
        self._owners = [tuple(o) for o in owners]
        self._sums = [None] * len(self._params)
        self._handles = [p.register_hook(self._hook(slot, p.dtype)) for slot, p in enumerate(self._params)]
        self._released = set(freezer.frozen)
        self.num_units = len(freezer.units)
        self.bound = True

    def _hook(self, slot: int, dtype: torch.dtype):
        sums = self._sums
        acc_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype

        def add(grad: torch.Tensor) -> None:
            # detach: with create_graph=True the gradient carries a graph the sum must not keep alive
            g = grad.detach()
            acc = sums[slot]
            if acc is None:
                if g.is_sparse:
                    g = g.to_dense()
                sums[slot] = g.to(dtype=acc_dtype, copy=True)
            else:
                acc.add_(g)

        return add

    def __call__(self, freezer) -> list[float | None]:
        if not self.bound:
            self.bind(freezer)  # collected without being bound first: the sums start now
        n = len(freezer.units)
        by_device: dict[torch.device, tuple[list, list, list]] = {}
        seen: set[int] = set()
        for slot, acc in enumerate(self._sums):
            if acc is None:
                continue
            owners = [u for u in self._owners[slot] if u not in freezer.frozen]
            if not owners:
                continue
            accs, positions, units = by_device.setdefault(acc.device, ([], [], []))
            for u in owners:
                positions.append(len(accs))
                units.append(u)
            accs.append(acc)
            seen.update(owners)
        for slot in range(len(self._sums)):  # a new interval: the next gradient starts each sum again
            self._sums[slot] = None
        if not by_device:
            return [None] * n
        total = None
        for device, (accs, positions, units) in by_device.items():
            norms = torch.stack(torch._foreach_norm(accs, 1)).to(torch.float64)
            part = torch.zeros(n, dtype=torch.float64, device=device).index_add_(
                0, torch.tensor(units, device=device), norms[torch.tensor(positions, device=device)])
            total = part if total is None else total + part.to(total.device)
        values = total.tolist()
        return [values[i] if i in seen else None for i in range(n)]

    def on_freeze(self, index: int) -> None:
        """Unit ``index`` was frozen: drop the hooks and sums no other active unit shares."""
        self._released.add(index)
        for slot, owners in enumerate(self._owners):
            if index in owners and all(u in self._released for u in owners):
                if self._handles[slot] is not None:
                    self._handles[slot].remove()
                    self._handles[slot] = None
                self._sums[slot] = None

    def close(self) -> None:
        """Remove every hook and free every sum."""
        for handle in self._handles:
            if handle is not None:
                handle.remove()
        self._reset_slots()

    # -- resume: a sum in progress is part of the run's state -----------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The sums in progress, by parameter name, as CPU copies (later adds do not change them)."""
        held = [(name, acc) for name, acc in zip(self._names, self._sums) if acc is not None]
        return {"names": [name for name, _ in held], "sums": [acc.detach().to("cpu", copy=True) for _, acc in held]}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue the sums saved by :meth:`state_dict` (call after :meth:`bind`)."""
        if not state:
            return
        slot_of = {name: slot for slot, name in enumerate(self._names) if self._handles[slot] is not None}
        try:
            names, sums = list(state["names"]), list(state["sums"])
        except KeyError as e:
            raise CheckpointError(f"saved gradient sums lack {e}: not from this version") from None
        for name, saved in zip(names, sums):
            slot = slot_of.get(name)
            if slot is None or tuple(saved.shape) != tuple(self._params[slot].shape):
                raise CheckpointError(f"saved gradient sum for {name!r} does not fit this model's trainable parameters: "
                                      "resume the same model")
            p = self._params[slot]
            acc_dtype = torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype
            self._sums[slot] = saved.to(device=p.device, dtype=acc_dtype, copy=True)


def check_probe(probe) -> None:
    """A CKA probe batch: a tensor of at least 4 samples, or a dict of such tensors (keyword inputs)."""
    if isinstance(probe, Mapping):
        tensors = [v for v in probe.values() if isinstance(v, torch.Tensor) and v.dim() >= 1]
        rows = {v.shape[0] for v in tensors}
        ok = bool(probe) and len(tensors) == len(probe) and len(rows) == 1 and min(rows) >= 4
    else:
        ok = isinstance(probe, torch.Tensor) and probe.dim() >= 2 and probe.shape[0] >= 4
    if not ok:
        raise ConfigError(f"the CKA probe must be a batch of at least 4 samples: a tensor (the model's first argument) "
                          f"or a dict of tensors with the samples first (its keyword arguments, e.g. input_ids and "
                          f"attention_mask), got {_describe(probe)}")


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    if isinstance(x, Mapping):
        return "a dict of " + ", ".join(f"{k}: {_describe(v)}" for k, v in list(x.items())[:4])
    return type(x).__name__


class ReferenceCKA:
    """Signal ``"cka"``: linear CKA (Kornblith et al. 2019) of each active unit's output with the
    same unit's output in ``reference``, on the fixed ``probe`` batch (a tensor, the model's first
    argument, or a dict of tensors, its keyword arguments: a Hugging Face model's ``input_ids`` and
    ``attention_mask``).

    Both models run in eval mode under ``no_grad`` with the RNG state restored afterwards (see
    :func:`quiet_eval`), so collecting the signal does not change the training run. The
    reference never changes, so its centred Gram matrices are computed once, at :meth:`bind`;
    each call costs one eval forward of the training model on the probe batch plus one n x n
    Gram matrix per active unit (n = probe size). Frozen units get ``None``.

    ``distinct`` (the CKA oracle's): the reference must not be the model being trained, and a unit
    that starts with the reference's very weights is warned about (its CKA starts at 1, so it can
    never show progress towards the reference: a copy, or the same seed, untrained).
    """

    def __init__(self, reference: nn.Module, probe, distinct: bool = False):
        if not isinstance(reference, nn.Module):
            raise ConfigError(f"the CKA reference must be an nn.Module (the model of a finished run of this "
                              f"architecture), got {type(reference).__name__}: build the model and load the run's "
                              "weights into it")
        check_probe(probe)
        self.reference = unwrap_compiled(reference)
        self.probe = probe
        self.distinct = distinct
        self._ref_grams: list[torch.Tensor | None] | None = None

    def bind(self, freezer) -> None:
        units = freezer.units
        if self.distinct and self.reference is freezer.model:
            raise ConfigError("the CKA reference is the model being trained: pass the model of a finished run of the "
                              "same architecture, trained from another seed")
        ref_units = self._reference_units(freezer)
        if self.distinct:
            self._say_if_identical(freezer, units, ref_units)
        device = next(self.reference.parameters()).device
        self.probe = probe_to(self.probe, device)
        with quiet_eval([self.reference]):
            outs = unit_outputs(self.reference, ref_units, self.probe, set(range(len(units))))
        self._ref_grams = [centered_gram(outs[i]) if i in outs else None for i in range(len(units))]

    def _reference_units(self, freezer) -> list[FreezeUnit]:
        """The training model's units in the reference, which must be the same architecture: the same
        module names and the same parameter shapes throughout (one deeper, wider or with another head
        is refused, not compared unit by unit)."""
        units = freezer.units
        what = ("the CKA reference must be the same architecture as the model being trained (a finished run of it, "
                "from another seed), with parameters named as in it")
        try:
            ref_units = units_from_names(self.reference, [u.module_names for u in units])
        except ModelError:
            missing = [n for u in units for n in u.module_names if n not in dict(self.reference.named_modules())]
            raise ConfigError(f"{what}: it has no module {_first(missing)}") from None
        for u, r in zip(units, ref_units):
            shapes = [tuple(p.shape) for p in u.params]
            ref_shapes = [tuple(p.shape) for p in r.params]
            if shapes != ref_shapes:
                raise ConfigError(f"{what}: its unit {u.name} has parameter shapes {ref_shapes}, this model's {shapes}")
        mine = {n: tuple(p.shape) for n, p in freezer.model.named_parameters()}
        theirs = {n: tuple(p.shape) for n, p in self.reference.named_parameters()}
        if mine != theirs:
            extra = sorted(set(theirs) - set(mine))
            lacking = sorted(set(mine) - set(theirs))
            other = sorted(n for n in set(mine) & set(theirs) if mine[n] != theirs[n])
            detail = (f"it has parameters this model lacks ({_first(extra)})" if extra else
                      f"it lacks parameters of this model ({_first(lacking)})" if lacking else
                      f"parameter {other[0]} has shape {theirs[other[0]]}, this model's {mine[other[0]]}")
            raise ConfigError(f"{what}: {detail}")
        return ref_units

    def _say_if_identical(self, freezer, units, ref_units) -> None:
        same = [u.name for i, (u, r) in enumerate(zip(units, ref_units))
                if i < len(units) - 1 and i not in freezer.frozen and u.params
                and all(torch.equal(p, q.to(p.device)) for p, q in zip(u.params, r.params))]
        if not same:
            return
        which = "every unit below the head" if len(same) == len(units) - 1 - len(freezer.frozen) else f"unit(s) {same}"
        warnings.warn(f"frostline: the CKA reference has the very weights of this model in {which}: their CKA to it "
                      "starts at 1 and cannot show progress towards it, so the CKA oracle never freezes them. The "
                      "reference must be a finished run from another seed (not a copy of this model, nor the same seed "
                      "untrained)", stacklevel=2)

    def __call__(self, freezer) -> list[float | None]:
        if self._ref_grams is None:
            self.bind(freezer)
        units = freezer.units
        active = {i for i in range(len(units)) if i not in freezer.frozen}
        probe = probe_to(self.probe, next(freezer.model.parameters()).device)
        with quiet_eval([freezer.model]):
            outs = unit_outputs(freezer.model, units, probe, active)
        values: list[float | None] = [None] * len(units)
        for i, out in outs.items():
            ref = self._ref_grams[i]
            if ref is not None:
                values[i] = cka_from_grams(centered_gram(out), ref.to(out.device))
        return values


def _first(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


class TailoredWeights:
    """Signal ``"tailored_weights"``: for each active unit a float32 CPU vector of ``size`` of its
    parameter values at fixed seeded positions (:class:`frostline.policies.smartfrz.Tailor`); ``None`` for
    frozen units. A gather of ``size`` numbers per unit into one buffer: no copy of the weights.
    Only the parameters that train when it is bound are sampled: a LoRA layer's frozen base weights
    never change and would drown its adapters' trajectory (for a model that trains everything,
    all of them). With ``head=False`` the last unit is not read (a policy that never freezes the
    head has no use for its trajectory) and gets ``None``."""

    def __init__(self, size: int = 1024, seed: int = 0, head: bool = True):
        self.size = size
        self.seed = seed
        self.head = head
        self.tailor: Tailor | None = None
        self._params: list[list[Any]] = []

    def bind(self, freezer) -> None:
        self._params = [[p for p in u.params if p.requires_grad] for u in freezer.units]
        self.tailor = Tailor(self._params, size=self.size, seed=self.seed)

    def __call__(self, freezer) -> list[Any]:
        if self.tailor is None:
            self.bind(freezer)
        units = freezer.units
        read = len(units) if self.head else len(units) - 1
        active = [i for i in range(read) if i not in freezer.frozen]
        rows = self.tailor.sample_units(self._params, active)
        return [rows.get(i) for i in range(len(units))]


#: Collectors for the signals that need no settings (name -> factory).
STANDARD = {"grad_sum_l1": SummedGradients}
