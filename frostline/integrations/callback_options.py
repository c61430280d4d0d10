"""A framework callback's freezing options (Hugging Face, Lightning), checked when the callback is
made: an unknown method, hyperparameters given with a policy object, a bad cool-down or cache
option fail at construction, not minutes later when training begins."""

from __future__ import annotations

from ..freezer.cooldown import check_cooldown
from ..policies import FreezePolicy, as_policy, policy_class
from .trainer_cache import check_cache_options


def checked_options(policy: FreezePolicy | str, policy_kwargs: dict | None, cooldown: int, cache: str,
                    cache_memory_mb) -> tuple[FreezePolicy | str, dict, int]:
    """``(policy, policy_kwargs, cooldown)`` as the callback keeps them: a method name stays a name
    (its policy is built per run, once the trainer's epoch length is known), a policy object is
    checked now."""
    check_cache_options(cache, cache_memory_mb)
    if not isinstance(policy, str):
        policy = as_policy(policy, **(policy_kwargs or {}))
    return policy, dict(policy_kwargs or {}), check_cooldown(cooldown, policy_class(policy))
