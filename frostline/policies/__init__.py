"""Freezing policies by name (timm-style registry). One small module per method."""

from __future__ import annotations

import inspect
from typing import Callable

from ..errors import ConfigError
from .autofreeze import AutoFreeze
from .cka_oracle import CKAOracle, cka_ready
from .base import FreezePolicy, NoFreezing, Progress
from .freezeout import FreezeOut, freezeout_times
from .linear import LinearFreezing
from .smartfrz import SmartFRZ

POLICIES: dict[str, Callable[..., FreezePolicy]] = {
    "none": NoFreezing,
    "linear": LinearFreezing,
    "freezeout": FreezeOut,
    "autofreeze": AutoFreeze,
    "cka-oracle": CKAOracle,
    "smartfrz": SmartFRZ,
}


def register_policy(name: str):
    def wrap(cls):
        POLICIES[name] = cls
        return cls

    return wrap


def list_policies() -> list[str]:
    return sorted(POLICIES)


def create_policy(name: str, **kwargs) -> FreezePolicy:
    """Build a policy by name; hyperparameters the policy does not take are an error."""
    if name not in POLICIES:
        raise ConfigError(f"unknown method {name!r}; choose one of {list_policies()}")
    cls = POLICIES[name]
    accepted = set(inspect.signature(cls).parameters)
    unknown = set(kwargs) - accepted
    if unknown:
        raise ConfigError(
            f"method {name!r} does not take {sorted(unknown)}; it takes {sorted(accepted) or 'nothing'}"
        )
    return cls(**kwargs)


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
    "create_policy",
    "list_policies",
    "register_policy",
    "freezeout_times",
]
