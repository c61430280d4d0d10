"""Freezing policies by name (timm-style registry). One small module per method; each registers
itself with its hyperparameters (:func:`register_policy`, :class:`Hyperparameter`)."""

from __future__ import annotations

from ..errors import ConfigError
from .registry import POLICIES, SPECS, Hyperparameter, PolicySpec, create_policy, list_policies, policy_spec, register_policy
from .base import FreezePolicy, NoFreezing, Progress
from .autofreeze import AutoFreeze
from .cka_oracle import CKAOracle, cka_ready
from .freezeout import FreezeOut, freezeout_times
from .linear import LinearFreezing
from .smartfrz import SmartFRZ

register_policy("none")(NoFreezing)  # the baseline is the base class itself: nothing to declare


def as_policy(policy, **kwargs) -> FreezePolicy:
    """A policy object as given, or built from a method name with ``kwargs`` (what the
    framework callbacks accept); anything else is a clear error."""
    if isinstance(policy, str):
        return create_policy(policy, **kwargs)
    if kwargs:
        raise ConfigError("policy hyperparameters only apply when the policy is given by name")
    if not isinstance(policy, FreezePolicy):
        raise ConfigError(f"policy must be a FreezePolicy or a method name, got {type(policy).__name__}")
    return policy


__all__ = [
    "as_policy",
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
