"""The policy registry: every method registers itself, with its hyperparameters, where it is
defined. The workbench derives its settings from this one declaration (the recipe's config fields,
the CLI flags and their help, the bench variants), so a new hyperparameter is one edit: the
argument in the policy's signature and a :class:`Hyperparameter` line in its ``register_policy``.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConfigError

_FROM_SIGNATURE: Any = object()


@dataclass(frozen=True)
class Hyperparameter:
    """One setting of a method. ``default`` and ``type`` come from the policy's signature (give
    ``type`` where the argument has no annotation); ``field`` is the recipe/CLI name when the
    argument's own name would clash with another method's (cka-oracle's ``window`` is
    ``cka_window``)."""

    name: str
    help: str
    field: str | None = None
    type: type | None = None
    default: Any = _FROM_SIGNATURE

    @property
    def config_field(self) -> str:
        return self.field or self.name


@dataclass(frozen=True)
class PolicySpec:
    """A registered method: its class, its hyperparameters and its *runtime* arguments (what
    the training run supplies, e.g. ``steps_per_epoch``; never a setting)."""

    name: str
    cls: Callable[..., Any]
    hyperparameters: tuple[Hyperparameter, ...]
    runtime: tuple[str, ...]


POLICIES: dict[str, Callable[..., Any]] = {}
SPECS: dict[str, PolicySpec] = {}


def register_policy(name: str, *hyperparameters: Hyperparameter, runtime: tuple[str, ...] = ()):
    """Class decorator: register a policy under ``name`` with its hyperparameters."""

    def wrap(cls):
        resolved = tuple(_resolve(cls, name, hp) for hp in hyperparameters)
        _check_runtime(cls, name, runtime)
        POLICIES[name] = cls
        SPECS[name] = PolicySpec(name, cls, resolved, tuple(runtime))
        return cls

    return wrap


def _resolve(cls, method: str, hp: Hyperparameter) -> Hyperparameter:
    """``hp`` with its default and type read from ``cls``'s signature (a typo is an error here,
    at import, not a flag that silently does nothing)."""
    params = inspect.signature(cls).parameters
    if hp.name not in params or params[hp.name].default is inspect.Parameter.empty:
        raise ConfigError(f"{method}: hyperparameter {hp.name!r} must be an argument with a default of {cls.__name__}")
    default = params[hp.name].default
    if hp.default is not _FROM_SIGNATURE and hp.default != default:
        raise ConfigError(f"{method}: {hp.name} is declared with default {hp.default!r} but {cls.__name__} uses {default!r}")
    kind = hp.type or _annotated_type(cls, hp.name) or type(default)
    if kind is type(None):
        raise ConfigError(f"{method}: {hp.name} defaults to None: declare its type (Hyperparameter(..., type=...))")
    return dataclasses.replace(hp, default=default if default is None else kind(default), type=kind)


def _annotated_type(cls, arg: str) -> type | None:
    hint = typing.get_type_hints(cls.__init__).get(arg)
    options = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return options[0] if len(options) == 1 and isinstance(options[0], type) else None


def _check_runtime(cls, method: str, runtime: tuple[str, ...]) -> None:
    missing = [r for r in runtime if r not in inspect.signature(cls).parameters]
    if missing:
        raise ConfigError(f"{method}: runtime arguments {missing} are not arguments of {cls.__name__}")


def list_policies() -> list[str]:
    return sorted(POLICIES)


def policy_spec(name: str) -> PolicySpec:
    """A method's registration (a class put straight into ``POLICIES`` has no hyperparameters)."""
    if name not in POLICIES:
        raise ConfigError(f"unknown method {name!r}; choose one of {list_policies()}")
    spec = SPECS.get(name)
    return spec if spec is not None and spec.cls is POLICIES[name] else PolicySpec(name, POLICIES[name], (), ())


def check_policy_kwargs(name: str, kwargs) -> type:
    """Method ``name``'s class; arguments it does not take are an error."""
    cls = policy_spec(name).cls
    accepted = set(inspect.signature(cls).parameters)
    unknown = set(kwargs) - accepted
    if unknown:
        raise ConfigError(
            f"method {name!r} does not take {sorted(unknown)}; it takes {sorted(accepted) or 'nothing'}"
        )
    return cls


def create_policy(name: str, **kwargs):
    """Build a policy by name; hyperparameters the policy does not take are an error."""
    return check_policy_kwargs(name, kwargs)(**kwargs)
