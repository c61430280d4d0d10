"""What freezing saves, predicted from per-unit costs measured on the real model.

Backward work per unit depends on whether it trains and whether any earlier unit trains: a
frozen prefix costs no backward at all, the first trainable unit needs no input gradient, and a
frozen unit after a trainable one still passes activation gradients through (it saves only its
weight gradients). FLOPs come from
``torch.utils.flop_counter.FlopCounterMode``; saved-for-backward bytes from
``torch.autograd.graph.saved_tensors_hooks``.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import ConfigError
from .units import FreezeUnit


@dataclass
class UnitCost:
    """Costs of one unit for one batch of ``CostModel.batch_size`` samples.

    Backward FLOPs depend on the unit's situation, so three are measured:
    ``backward_flops`` while it trains and an earlier unit trains too (gradients flow through it),
    ``backward_first_flops`` while it trains as the first trainable unit (no input gradient),
    ``backward_input_flops`` while it is frozen but an earlier unit trains (activation
    gradients only). Internal activation gradients are needed in all three.
    """

    name: str
    forward_flops: int
    backward_flops: int
    backward_first_flops: int
    backward_input_flops: int
    saved_bytes: int  # activations this unit is the last to keep alive for backward

    @property
    def backward_weight_flops(self) -> int:
        """What freezing the unit saves when gradients still flow through it."""
        return self.backward_flops - self.backward_input_flops


@dataclass
class CostModel:
    """Per-unit costs plus what runs outside any unit (loss, glue ops)."""

    units: list[UnitCost]
    batch_size: int
    other_flops: int = 0
    other_saved_bytes: int = 0
    notes: dict = field(default_factory=dict)

    def step_flops(self, frozen: Iterable[int] = (), cached_prefix: int = 0) -> int:
        """Predicted FLOPs of one training step (forward + backward) with ``frozen`` units
        frozen and the forward of the first ``cached_prefix`` units replayed from a cache."""
        frozen = set(frozen)
        total = self.other_flops
        trainable_before = False
        for i, u in enumerate(self.units):
            if i >= cached_prefix:
                total += u.forward_flops
            if i not in frozen:
                total += u.backward_flops if trainable_before else u.backward_first_flops
                trainable_before = True
            elif trainable_before:
                total += u.backward_input_flops
        return total

    @property
    def full_step_flops(self) -> int:
        return self.step_flops(())

    def saved_bytes(self, frozen: Iterable[int] = ()) -> int:
        """Predicted bytes saved for backward: a frozen prefix keeps nothing alive."""
        frozen = set(frozen)
        k = 0
        while k in frozen:
            k += 1
        return self.other_saved_bytes + sum(u.saved_bytes for u in self.units[k:])

    def with_backward_equal_forward(self) -> "CostModel":
        """FreezeOut's own estimate assumed backward costs as much as forward; this applies
        that assumption (half for weights, half for inputs) so the two can be compared."""
        units = [
            UnitCost(u.name, u.forward_flops, u.forward_flops, u.forward_flops // 2, u.forward_flops // 2, u.saved_bytes)
            for u in self.units
        ]
        return CostModel(units, self.batch_size, self.other_flops, self.other_saved_bytes,
                         {**self.notes, "assumption": "backward == forward"})

    def to_dict(self) -> dict:
        return asdict(self)


def _as_tensor(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)):
        return _as_tensor(output[0])
    if isinstance(output, dict):
        return _as_tensor(next(iter(output.values())))
    raise ConfigError(f"cannot find a tensor in the model output of type {type(output).__name__}")


def _loss(out: torch.Tensor, target) -> torch.Tensor:
    if target is not None and out.dim() == 2 and target.dim() == 1:
        return nn.functional.cross_entropy(out.float(), target)
    return out.float().sum()


def _call(model, example_input):
    if isinstance(example_input, dict):
        return model(**example_input)
    if isinstance(example_input, (tuple, list)):
        return model(*example_input)
    return model(example_input)


def _flops_by_unit(model: nn.Module, units: Sequence[FreezeUnit], example_input, target, backward: bool):
    with FlopCounterMode(display=False) as counter:
        out = _call(model, example_input)
        if backward:
            _loss(_as_tensor(out), target).backward()
    counts = counter.get_flop_counts()
    root = type(model).__name__

    def total(key):
        return sum(counts.get(key, {}).values())

    per_unit = []
    for u in units:
        per_unit.append(sum(total(f"{root}.{n}" if n else root) for n in u.module_names))
    return per_unit, total("Global")


def _saved_bytes_by_unit(model: nn.Module, units: Sequence[FreezeUnit], example_input, target) -> tuple[list[int], int]:
    """Bytes of distinct activation storages saved for backward, each given to the *last* unit
    that saves it (a storage stays alive until every unit that saved it is gone)."""
    param_ptrs = {p.data_ptr() for p in model.parameters()}
    current: list[int | None] = [None]
    last_saver: dict[int, tuple[int | None, int]] = {}
    handles = []
    for i, u in enumerate(units):
        for m in u.modules:
            handles.append(m.register_forward_pre_hook(lambda _m, _a, _i=i: current.__setitem__(0, _i)))
    handles.append(model.register_forward_hook(lambda *_: current.__setitem__(0, None)))

    def pack(t: torch.Tensor):
        if t.device.type != "meta":
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in param_ptrs and ptr != 0:
                prev = last_saver.get(ptr)
                unit = current[0]
                if prev is None or (unit is not None and (prev[0] is None or unit >= prev[0])):
                    last_saver[ptr] = (unit, storage.nbytes())
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = _call(model, example_input)
            loss = _loss(_as_tensor(out), target)
        loss.backward()
    finally:
        for h in handles:
            h.remove()
    per_unit = [0] * len(units)
    other = 0
    for unit, nbytes in last_saver.values():
        if unit is None:
            other += nbytes
        else:
            per_unit[unit] += nbytes
    return per_unit, other


def measure_costs(model: nn.Module, units: Sequence[FreezeUnit], example_input, target=None) -> CostModel:
    """Measure per-unit forward / backward FLOPs and saved bytes on one batch, on a copy of the
    model (so BatchNorm statistics and ``requires_grad`` flags of the real one are untouched)."""
    twin = copy.deepcopy(model)
    twin.train()
    modules = dict(twin.named_modules())
    params = dict(twin.named_parameters(remove_duplicate=False))
    twin_units = [
        FreezeUnit(u.name, list(u.module_names), [modules[n] for n in u.module_names],
                   [params[n] for n in u.param_names], list(u.param_names))
        for u in units
    ]
    all_params = list(twin.parameters())

    def set_trainable(which: Iterable[int]):
        for p in all_params:
            p.requires_grad_(False)
            p.grad = None
        for i in which:
            for p in twin_units[i].params:
                p.requires_grad_(True)

    n = len(twin_units)
    with torch.no_grad():
        fwd, _ = _flops_by_unit(twin, twin_units, example_input, target, backward=False)
    # Only unit 0 trains: every later unit computes activation gradients and nothing else.
    set_trainable([0])
    only_first, _ = _flops_by_unit(twin, twin_units, example_input, target, backward=True)
    # Units k.. train: unit k is the first trainable one (k = 0: everything trains).
    first = [0] * n
    both = []
    global_all = 0
    for k in range(n):
        set_trainable(range(k, n))
        per_unit, global_total = _flops_by_unit(twin, twin_units, example_input, target, backward=True)
        first[k] = per_unit[k] - fwd[k]
        if k == 0:
            both, global_all = per_unit, global_total
    set_trainable(range(n))
    saved, other_saved = _saved_bytes_by_unit(twin, twin_units, example_input, target)

    costs = []
    for i, u in enumerate(twin_units):
        through = both[i] - fwd[i] if i > 0 else first[0]
        activations_only = only_first[i] - fwd[i] if i > 0 else 0
        costs.append(UnitCost(u.name, fwd[i], through, first[i], activations_only, saved[i]))
    batch = _as_tensor(_call_shape_probe(example_input)).shape[0]
    return CostModel(costs, batch, global_all - sum(both), other_saved)


def _call_shape_probe(example_input):
    if isinstance(example_input, dict):
        return next(iter(example_input.values()))
    if isinstance(example_input, (tuple, list)):
        return example_input[0]
    return example_input


def schedule_cost_fraction(cost: CostModel, freeze_times: Sequence[float | None], cached: bool = False) -> float:
    """Average step cost over training, relative to full training, when unit ``i`` freezes at
    training fraction ``freeze_times[i]`` (None: never). Exact for a piecewise-constant frozen set."""
    if len(freeze_times) != len(cost.units):
        raise ConfigError(f"got {len(freeze_times)} freeze times for {len(cost.units)} units")
    points = sorted({0.0, 1.0, *[min(max(t, 0.0), 1.0) for t in freeze_times if t is not None]})
    full = cost.full_step_flops
    total = 0.0
    for a, b in zip(points, points[1:]):
        frozen = {i for i, t in enumerate(freeze_times) if t is not None and t <= a}
        prefix = 0
        while prefix in frozen:
            prefix += 1
        total += (b - a) * cost.step_flops(frozen, cached_prefix=prefix if cached else 0)
    return total / full


def estimate_speedup(
    cost: CostModel,
    freeze_times: Sequence[float | None],
    *,
    backward_equals_forward: bool = False,
    cached: bool = False,
) -> dict:
    """Predicted compute saving of a freezing schedule.

    Returns ``{"cost_fraction", "saving", "speedup"}``: the schedule's compute as a fraction of
    full training, ``1 - cost_fraction``, and ``1 / cost_fraction``.
    ``backward_equals_forward=True`` reproduces FreezeOut's simplifying assumption.
    """
    if backward_equals_forward:
        cost = cost.with_backward_equal_forward()
    fraction = schedule_cost_fraction(cost, freeze_times, cached=cached)
    return {"cost_fraction": fraction, "saving": 1.0 - fraction, "speedup": 1.0 / fraction if fraction > 0 else float("inf")}
