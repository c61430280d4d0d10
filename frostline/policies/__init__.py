"""Freezing policies by name (timm-style registry). One small module per method; each registers
itself with its hyperparameters (:func:`register_policy`, :class:`Hyperparameter`)."""

from __future__ import annotations

import copy
import warnings

from ..errors import ConfigError
from .registry import POLICIES, SPECS, Hyperparameter, PolicySpec, create_policy, list_policies, policy_spec, register_policy
from .base import FreezePolicy, NoFreezing, Progress
from .autofreeze import AutoFreeze
from .cka_oracle import CKAOracle, cka_ready
from .freezeout import FreezeOut, freezeout_times
from .linear import LinearFreezing
from .smartfrz import SmartFRZ

register_policy("none")(NoFreezing)  # the baseline is the base class itself: nothing to declare


def as_policy(policy, runtime: dict | None = None, **kwargs) -> FreezePolicy:
    """A policy object as given, or built from a method name with ``kwargs`` (what the
    framework callbacks accept) and, of ``runtime`` (what the run knows, e.g. ``steps_per_epoch``),
    the arguments the method declares as runtime ones and ``kwargs`` does not set; anything else
    is a clear error."""
    if isinstance(policy, str):
        wanted = policy_spec(policy).runtime
        supplied = {k: v for k, v in (runtime or {}).items() if k in wanted and k not in kwargs}
        return create_policy(policy, **kwargs, **supplied)
    if kwargs:
        raise ConfigError("policy hyperparameters only apply when the policy is given by name")
    if not isinstance(policy, FreezePolicy):
        raise ConfigError(f"policy must be a FreezePolicy or a method name, got {type(policy).__name__}")
    return policy


#: Stand-ins for the runtime arguments a run supplies (its epoch length, its seed), to build a method
#: before that run exists and so check its settings: the CLI's validation and the callbacks'
#: constructors. An epoch this long never limits a setting that counts per epoch.
TRIAL_RUNTIME = {"steps_per_epoch": 10**9, "seed": 0}


def fresh_policy(policy, policy_kwargs: dict, steps_per_epoch: int | None) -> FreezePolicy:
    """The policy for one run of a framework callback: a copy of a given object (a policy's history
    must not leak from one run into the next), or one built from its name with ``policy_kwargs``
    and the trainer's optimizer steps per epoch (for the methods that count epochs; None when the
    training data has no length: such a method then needs its cadence in ``policy_kwargs``, rather
    than an epoch made up from the run's length)."""
    if not isinstance(policy, str):
        return copy.deepcopy(policy)
    if steps_per_epoch is not None:
        counted, given = max(1, int(steps_per_epoch)), policy_kwargs.get("steps_per_epoch")
        if given is not None and given != counted and "steps_per_epoch" in policy_spec(policy).runtime:
            warnings.warn(f"frostline: {policy!r} counts epochs of the steps_per_epoch={given!r} it was given, where "
                          f"the trainer runs {counted} optimizer steps an epoch; drop it from policy_kwargs to use "
                          f"the trainer's")
        return as_policy(policy, runtime={"steps_per_epoch": counted}, **policy_kwargs)
    try:
        return as_policy(policy, **policy_kwargs)
    except ConfigError as e:
        if "steps_per_epoch" not in policy_spec(policy).runtime:
            raise
        raise ConfigError(f"the training data has no length, so the optimizer steps of an epoch are unknown and "
                          f"{policy!r} cannot count epochs: give them in policy_kwargs ({e})") from None


def policy_class(policy) -> type:
    """The class of a policy object or of a registered method name (an unknown name fails here):
    what a callback checks its options against before the run, and so its epoch length, is known."""
    if isinstance(policy, str):
        return policy_spec(policy).cls
    return type(as_policy(policy))


__all__ = [
    "TRIAL_RUNTIME",
    "as_policy",
    "fresh_policy",
    "policy_class",
    "FreezePolicy",
    "NoFreezing",
    "LinearFreezing",
    "FreezeOut",
    "AutoFreeze",
    "CKAOracle",
    "SmartFRZ",
    "cka_ready",
    "Progress",
    "POLICIES",
    "SPECS",
    "Hyperparameter",
    "PolicySpec",
    "create_policy",
    "list_policies",
    "policy_spec",
    "register_policy",
    "freezeout_times",
]
