"""Drop-in replacement for Composer's functional ``freeze_layers``.

Same semantics as ``composer.algorithms.layer_freezing.freeze_layers``: layers are the leaf
modules that own parameters, depth-first in registration order; the last one is never frozen;
``freeze_depth = floor(f * (N - 1))`` with ``f = freeze_level * (d - freeze_start) / (1 -
freeze_start)`` once ``d > freeze_start``; freezing is cumulative and calling again is safe; a
model without parameters has depth 0, as ``int(f * len(layers[:-1]))`` gives in Composer.
The differences: a ``current_duration`` outside [0, 1] (an epoch or step count passed for the
fraction; NaN) is a :class:`~frostline.errors.ConfigError` (Composer freezes everything or fails
converting it to a depth), as are a model or optimizers of the wrong kind; and frozen parameters
leave the optimizer *with their state*, so ``optimizer.state_dict()`` keeps working (Composer's
leaves the state behind and raises KeyError).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..errors import ConfigError, check_float
from ..freezer.param_groups import remove_params
from ..policies.linear.linear import check_linear_args, linear_freeze_depth, linear_freeze_fraction


def _leaf_layers(module: nn.Module) -> list[nn.Module]:
    """Leaf modules that own parameters, depth-first in registration order (Composer's order)."""
    children = list(module.children())
    if not children:
        return [module] if next(module.parameters(recurse=False), None) is not None else []
    layers = []
    for child in children:
        layers.extend(_leaf_layers(child))
    return layers


def _optimizer_list(optimizers) -> list:
    """One optimizer, several, or None (as Composer takes them); anything else (``model.parameters()``,
    a scheduler) would fail deep inside with an AttributeError."""
    if optimizers is None:
        return []
    if isinstance(optimizers, torch.optim.Optimizer) or hasattr(optimizers, "param_groups"):
        return [optimizers]
    if isinstance(optimizers, (list, tuple)):
        bad = [o for o in optimizers if not hasattr(o, "param_groups") or not hasattr(o, "state")]
        if not bad:
            return list(optimizers)
        got = type(bad[0]).__name__
    else:
        got = type(optimizers).__name__
    raise ConfigError(f"optimizers must be the torch optimizer that trains the model, a list of them, or None, got "
                      f"{got}: freezing takes the frozen parameters out of them (pass the optimizer, not "
                      "model.parameters())")


def freeze_layers(
    model: nn.Module,
    optimizers,
    current_duration: float,
    freeze_start: float = 0.5,
    freeze_level: float = 1.0,
) -> tuple[int, float]:
    """Freeze the first ``freeze_depth`` layers for training progress ``current_duration`` in
    [0, 1]. Returns ``(freeze_depth, freeze_percentage)`` as Composer does."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"freeze_layers(model, optimizers, current_duration, ...) takes the model first, got "
                          f"{type(model).__name__}")
    check_linear_args(freeze_start, freeze_level)
    current_duration = check_float(current_duration, "current_duration", "[0, 1]",
                                   note="fraction of training done, as Composer's state.get_elapsed_duration(): "
                                        "divide the step or epoch by the run's total")
    optimizers = _optimizer_list(optimizers)
    layers = _leaf_layers(model)
    freeze_percentage = linear_freeze_fraction(current_duration, freeze_start, freeze_level)
    freeze_depth = linear_freeze_depth(freeze_percentage, max(len(layers), 1))  # no layers: depth 0
    head = {id(p) for p in layers[-1].parameters()} if layers else set()
    for layer in layers[:-1][:freeze_depth]:
        params = list(layer.parameters())
        if head and any(id(p) in head and p.requires_grad for p in params):
            warnings.warn("frostline: a frozen layer shares a weight with the last layer (a language model's embedding "
                          "tied to its head), so the head stops training too, as in Composer; untie them, or freeze "
                          "with frostline.Freezer, which keeps a tied weight training with the head", stacklevel=2)
        remove_params(optimizers, params)
        for p in params:
            p.requires_grad_(False)
            p.grad = None
    if freeze_depth:
        _say_what_no_layer_holds(model, layers)
    return freeze_depth, freeze_percentage


def _say_what_no_layer_holds(model: nn.Module, layers: list[nn.Module]) -> None:
    """Parameters of a module that has children (nn.MultiheadAttention's ``in_proj_weight``, a ViT's
    ``pos_embed``) are in no leaf layer, so Composer's schedule never freezes them: they train to the
    end, and the backward runs through every frozen layer below them to reach them."""
    held = {id(p) for layer in layers for p in layer.parameters()}
    loose = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in held]
    if loose:
        shown = loose if len(loose) <= 4 else loose[:3] + [f"... {len(loose)} in all"]
        warnings.warn(f"frostline: freeze_layers never freezes {shown}: they belong to a module with children, not to "
                      "a leaf layer, as in Composer, so they keep training (and the backward keeps running to them); "
                      "freeze them yourself, or freeze with frostline.Freezer, whose units hold them", stacklevel=3)
