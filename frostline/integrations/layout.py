"""Convert optimizer and LR-scheduler states between the Freezer's layout and the user's.

The Freezer changes the optimizer: frozen parameters leave their param groups (and their state
goes), and policies with per-unit learning rates (FreezeOut) split every group into one group per
(original group, unit). A framework that resumes by building a *fresh* optimizer and scheduler the
way the user's code does (Hugging Face ``Trainer``, Lightning) cannot load a state saved in that
layout. These functions turn such a state back into the original layout (original groups, every
parameter in its original order, frozen ones without state), which a fresh optimizer/scheduler
loads; ``Freezer.load_state_dict(frostline_state)`` then re-applies the frozen set and the split
while keeping the per-parameter state just loaded::

    opt_state = optimizer_state_in_original_layout(freezer, optimizer.state_dict())
    sched_state = scheduler_state_in_original_layout(freezer, scheduler.state_dict())
    ...  # on resume, in a fresh process:
    optimizer.load_state_dict(opt_state); scheduler.load_state_dict(sched_state)
    freezer = Freezer(model, optimizer, policy, total_steps); freezer.attach_scheduler(scheduler)
    freezer.load_state_dict(frostline_state)

Convert right after taking the state dicts: they must describe the Freezer's *current* layout.
"""

from __future__ import annotations

import copy
from typing import Any


from ..errors import CheckpointError
from ..freezer import Freezer
from ..freezer.param_groups import FROSTLINE_KEYS, group_map
from ..freezer.schedulers import group_count, remap_group_lists


def _original_hyperparameters(saved_group: dict[str, Any]) -> dict[str, Any]:
    """A saved (possibly split) group's hyperparameters as its original group had them: the
    unscaled lr, no frostline bookkeeping."""
    hyper = {k: v for k, v in saved_group.items() if k != "params" and k not in FROSTLINE_KEYS}
    if "frostline_base_lr" in saved_group:
        hyper["lr"] = saved_group["frostline_base_lr"]
    return hyper


def optimizer_state_in_original_layout(freezer: Freezer, optimizer_state_dict: dict[str, Any]) -> dict[str, Any]:
    """``optimizer_state_dict`` (taken from ``freezer.optimizer`` now) in the layout the user's code
    creates: the original param groups with all their parameters, frozen ones without state."""
    original = freezer.original_param_groups
    live = freezer.optimizer.param_groups
    saved = optimizer_state_dict["param_groups"]
    if len(saved) != len(live) or any(len(s["params"]) != len(g["params"]) for s, g in zip(saved, live)):
        raise CheckpointError(
            "the optimizer state does not match the Freezer's current param groups: convert it right "
            "after optimizer.state_dict(), before the Freezer freezes anything else")
    split = any("frostline_group" in s for s in saved)
    if not split and len(saved) != len(original):
        raise CheckpointError(
            f"the optimizer has {len(saved)} param groups but had {len(original)} when the Freezer was made: "
            "param groups added later cannot be mapped back")
    saved_id: dict[str, int] = {}
    hyper: dict[int, dict[str, Any]] = {}
    for index, (s, g) in enumerate(zip(saved, live)):
        for pid, p in zip(s["params"], g["params"]):
            saved_id[freezer.param_name_by_id[id(p)]] = pid
        hyper.setdefault(s.get("frostline_group", index), _original_hyperparameters(s))
    known = {n for g in original for n in g["params"]}
    stray = sorted(set(saved_id) - known)
    if stray:
        raise CheckpointError(f"parameters {stray[:5]} are in the optimizer but were not when the Freezer was made")
    state, groups, next_id = {}, [], 0
    for index, og in enumerate(original):
        ids = []
        for name in og["params"]:
            old = saved_id.get(name)
            if old is not None and old in optimizer_state_dict["state"]:
                state[next_id] = optimizer_state_dict["state"][old]
            ids.append(next_id)
            next_id += 1
        fallback = {k: v for k, v in og.items() if k != "params"}
        groups.append({**hyper.get(index, fallback), "params": ids})
    rest = {k: v for k, v in optimizer_state_dict.items() if k not in ("state", "param_groups")}
    return {**rest, "state": state, "param_groups": groups}


def scheduler_state_in_original_layout(freezer: Freezer, scheduler_state_dict: dict[str, Any]) -> dict[str, Any]:
    """``scheduler_state_dict`` (of a scheduler attached with ``freezer.attach_scheduler``) with its
    per-group lists (``base_lrs``, ``_last_lr``, ``lr_lambdas``, ...) back to one entry per original
    param group. A state already in that layout is returned unchanged (as a copy)."""
    state = copy.copy(scheduler_state_dict)
    mapping = group_map(freezer.optimizer)
    n = group_count(state)
    if mapping is None or n is None or (n == len(freezer.original_param_groups) and n != len(mapping)):
        return state
    if n != len(mapping):
        raise CheckpointError(
            f"the scheduler state has {n} param groups, the optimizer {len(mapping)}: convert it right after "
            "scheduler.state_dict()")
    first: dict[int, int] = {}
    for j, o in enumerate(mapping):
        first.setdefault(o, j)
    missing = [o for o in range(len(freezer.original_param_groups)) if o not in first]
    if missing:
        raise CheckpointError(f"original param groups {missing} have no group in the optimizer any more")
    pick = [first[o] for o in range(len(freezer.original_param_groups))]
    # nested state dicts are copied before being remapped in place
    for key in ("_schedulers",):
        if isinstance(state.get(key), list):
            state[key] = [copy.copy(s) if isinstance(s, dict) else s for s in state[key]]
    remap_group_lists(state, n, pick)
    return state
