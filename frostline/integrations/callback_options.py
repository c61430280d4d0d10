"""A framework callback's freezing options (Hugging Face, Lightning), checked when the callback is
made: an unknown method, a setting it does not take or a bad value for one, hyperparameters given
with a policy object, a bad cool-down or cache option fail at construction, not minutes later when
training begins."""

from __future__ import annotations

from ..errors import check_bool, check_names
from ..freezer.cooldown import check_cooldown
from ..policies import TRIAL_RUNTIME, FreezePolicy, as_policy, policy_class
from ..policies.registry import check_policy_kwargs
from ..units import check_head_units
from .trainer_cache import check_cache_options


def checked_options(policy: FreezePolicy | str, policy_kwargs: dict | None, cooldown: int, cache: str,
                    cache_memory_mb, *, units=None, freeze_head: bool = False,
                    head_units: int = 1) -> tuple[FreezePolicy | str, dict, int]:
    """``(policy, policy_kwargs, cooldown)`` as the callback keeps them. A method name stays a name
    (its policy is built per run, once the trainer's epoch length is known), but it is built once
    now with stand-ins for what only the run knows, so that a bad setting fails here; a policy
    object is checked as it is. ``units``, ``freeze_head`` and ``head_units`` (the Freezer's) are checked too."""
    check_names(units, "units")
    check_bool(freeze_head, "freeze_head")
    check_head_units(head_units)
    check_cache_options(cache, cache_memory_mb)
    kwargs = dict(policy_kwargs or {})
    if not isinstance(policy, str):
        policy = as_policy(policy, **kwargs)
    else:  # a bad name or value fails now; what only the run has (the CKA oracle's reference) is left out
        check_policy_kwargs(policy, kwargs)
        as_policy(policy, runtime=TRIAL_RUNTIME, **kwargs)
    return policy, kwargs, check_cooldown(cooldown, policy_class(policy))
