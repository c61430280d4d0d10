"""Drop-in replacement for Composer's functional ``freeze_layers``.

Same semantics as ``composer.algorithms.layer_freezing.freeze_layers``: layers are the leaf
modules that own parameters, depth-first in registration order; the last one is never frozen;
``freeze_depth = floor(f * (N - 1))`` with ``f = freeze_level * (d - freeze_start) / (1 -
freeze_start)`` once ``d > freeze_start``; freezing is cumulative and calling again is safe; a
model without parameters has depth 0, as ``int(f * len(layers[:-1]))`` gives in Composer.
The differences: a NaN or infinite ``current_duration`` is a :class:`~frostline.errors.ConfigError`
(Composer fails converting it to a depth), and frozen parameters leave the optimizer *with their state*, so
``optimizer.state_dict()`` keeps working (Composer's leaves the state behind and raises KeyError).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..errors import check_float
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


def freeze_layers(
    model: nn.Module,
    optimizers,
    current_duration: float,
    freeze_start: float = 0.5,
    freeze_level: float = 1.0,
) -> tuple[int, float]:
    """Freeze the first ``freeze_depth`` layers for training progress ``current_duration`` in
    [0, 1]. Returns ``(freeze_depth, freeze_percentage)`` as Composer does."""
    check_linear_args(freeze_start, freeze_level)
    current_duration = check_float(current_duration, "current_duration", note="fraction of training done")
    if isinstance(optimizers, torch.optim.Optimizer):
        optimizers = [optimizers]
    optimizers = list(optimizers or [])
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
    return freeze_depth, freeze_percentage
