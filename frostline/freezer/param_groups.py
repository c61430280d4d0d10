"""The optimizer side of freezing: param groups per unit, removing parameters, saved layouts.

A frozen parameter leaves its group *with its optimizer state*, so ``optimizer.state_dict()``
keeps working (Composer's version leaves the state behind and ``state_dict()`` raises). Groups
that become empty stay, so LR schedulers keep one entry per group. Policies with per-unit
learning rates need one group per (original group, unit); each split group remembers its
original group (``frostline_group``), unit (``frostline_unit``) and unscaled lr
(``frostline_base_lr``).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from torch import nn

from ..errors import CheckpointError, FrostlineError

#: Keys the Freezer adds to a split param group.
FROSTLINE_KEYS = ("frostline_unit", "frostline_base_lr", "frostline_group")


def remove_params(optimizers: torch.optim.Optimizer | Iterable[torch.optim.Optimizer], params) -> None:
    """Drop ``params`` from every group of ``optimizers`` (one or several) and drop their state."""
    if isinstance(optimizers, torch.optim.Optimizer):
        optimizers = [optimizers]
    params = list(params)
    gone = {id(p) for p in params}
    for opt in optimizers:
        for group in opt.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in gone]
        for p in params:
            opt.state.pop(p, None)
        _refresh_lbfgs(opt)


def _refresh_lbfgs(optimizer) -> None:
    """LBFGS steps the parameter list it took at construction (``_params``), not its group's: a frozen
    parameter left there goes on moving along the search direction (its curvature history spans
    every parameter), silently. Point it at the group, and drop its history when the list changed: it
    is kept flattened over the old list and no longer fits (the next step starts a fresh history)."""
    if not isinstance(optimizer, torch.optim.LBFGS) or len(optimizer.param_groups) != 1:
        return
    params = optimizer.param_groups[0]["params"]
    if [id(p) for p in optimizer._params] != [id(p) for p in params]:
        optimizer._params = params
        optimizer._numel_cache = None
        optimizer.state.clear()
    else:
        optimizer._params = params


def layout_by_name(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> list[dict[str, Any]]:
    """The optimizer's param groups with parameter names (``names``: id -> name) instead of
    tensors: a layout that can be saved and restored on a fresh model. Parameters ``names``
    does not know are left out."""
    return [{**{k: v for k, v in g.items() if k != "params"},
             "params": [names[id(p)] for p in g["params"] if id(p) in names]}
            for g in optimizer.param_groups]


def restore_layout(optimizer: torch.optim.Optimizer, model: nn.Module, saved: list[dict[str, Any]]) -> None:
    """Make the optimizer's groups those of ``saved`` (a :func:`layout_by_name`), dropping the
    state of parameters no group holds any more."""
    by_name = dict(model.named_parameters())
    missing = [n for g in saved for n in g["params"] if n not in by_name]
    if missing:
        raise CheckpointError(f"saved optimizer layout names parameters the model lacks: {missing[:5]}")
    groups = [{**g, "params": [by_name[n] for n in g["params"]]} for g in saved]
    kept = {id(p) for g in groups for p in g["params"]}
    for p in list(optimizer.state):
        if id(p) not in kept:
            del optimizer.state[p]
    optimizer.param_groups[:] = groups
    _refresh_lbfgs(optimizer)


def split_per_unit(optimizer: torch.optim.Optimizer, unit_params: Sequence[Sequence[nn.Parameter]]) -> None:
    """Give every (original group, unit) pair its own param group so each unit can have its own
    learning rate. Parameters outside every unit keep their original group."""
    unit_of = {id(p): i for i, params in enumerate(unit_params) for p in params}
    new_groups = []
    for index, group in enumerate(optimizer.param_groups):
        buckets: dict[int | None, list] = {}
        for p in group["params"]:
            buckets.setdefault(unit_of.get(id(p)), []).append(p)
        # an empty group stays (as one group), so every original group keeps a place
        for unit, params in sorted(buckets.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)) or [(None, [])]:
            g = {k: v for k, v in group.items() if k != "params"}
            g.update(params=params, frostline_unit=unit, frostline_base_lr=group.get("frostline_base_lr", group["lr"]),
                     frostline_group=group.get("frostline_group", index))
            new_groups.append(g)
    optimizer.param_groups[:] = new_groups


def group_map(optimizer: torch.optim.Optimizer) -> list[int] | None:
    """Original group index of every current param group (None when groups are not split)."""
    groups = optimizer.param_groups
    if not any("frostline_group" in g for g in groups):
        return None
    if not all("frostline_group" in g for g in groups):
        raise FrostlineError("some optimizer param groups were added outside the Freezer after it split them")
    return [g["frostline_group"] for g in groups]


def unit_groups(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """The param groups that belong to one unit (after a split)."""
    return [g for g in optimizer.param_groups if g.get("frostline_unit") is not None]


def scale_unit_lrs(optimizer: torch.optim.Optimizer, scales: Sequence[float]) -> None:
    """Each unit group's lr becomes its unscaled lr times its unit's scale."""
    for group in unit_groups(optimizer):
        group["lr"] = group["frostline_base_lr"] * scales[group["frostline_unit"]]
