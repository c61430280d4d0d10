"""Frozen modules run in eval mode, whatever mode the model is in.

A frozen unit must stop changing: its BatchNorm running statistics must not move and its
dropout must be off. Training loops call ``model.train()`` at every epoch start, so setting eval
mode once is not enough. A forward pre-hook on every module of a frozen unit switches that module
to eval mode just before it runs: ``model.train()``/``model.eval()`` keep their ordinary meaning
(a frozen module may *report* ``training=True`` until its next forward), and the pin is a hook
handle that can be removed.

The frozen prefix is everything that runs before the first unit still training, and that can
include modules in no unit: modules the user froze before frostline saw the model (a LoRA model's
embeddings, a stem frozen by hand), which hold no trainable parameter and so belong to no unit. Left
in training mode their dropout draws anew and their BatchNorm follows each batch, so the prefix
would neither stop changing nor replay from the activation cache. Once units ``0..k-1`` are frozen,
:func:`outside_prefix` finds the modules in no unit that return before a frozen unit starts (what
they compute feeds the frozen prefix), with nothing trainable run before them, and they are pinned
like the frozen units. A module between the prefix and the first unit that trains (a dropout on the
head's input) is that unit's regularisation, and stays as it is; so does a module that also runs
later (a dropout a model reuses after its last layer) or after a weight that still trains (a
language model's embedding tied to its head).
"""

from __future__ import annotations

from torch import nn
from torch.utils.hooks import RemovableHandle


def _run_in_eval(module: nn.Module, args) -> None:
    if module.training:  # write only when needed: torch.compile traces this hook into each graph
        module.training = False


def pin_eval(module: nn.Module) -> list[RemovableHandle]:
    """Put ``module`` and all its submodules in eval mode now and before each of their forwards.
    Returns the hook handles (remove them to unpin)."""
    module.eval()
    return [m.register_forward_pre_hook(_run_in_eval) for m in module.modules()]


def pin_eval_alone(module: nn.Module) -> list[RemovableHandle]:
    """:func:`pin_eval` for ``module`` only, not its submodules (a container holding frozen units)."""
    module.training = False
    return [module.register_forward_pre_hook(_run_in_eval)]


def outside_prefix(model: nn.Module, units, spans: dict[str, list[int]], k: int) -> list[tuple[str, nn.Module]]:
    """The modules of ``model`` (name, module) in no unit that belong to the frozen prefix of units
    ``0..k-1`` (see the module docstring). ``spans`` from
    :class:`~frostline.units.ExecutionOrderRecorder`: when each module first started and last returned."""
    if not 1 <= k <= len(units):
        return []
    inside = {id(m) for u in units for top in u.modules for m in top.modules()}
    modules = dict(model.named_modules())
    starts = [spans[n][0] for n in units[k - 1].module_names if n in spans]  # the prefix's last unit
    starts += [spans[n][0] for n, m in modules.items()  # what still trains, tied weights included
               if n in spans and any(p.requires_grad for p in m.parameters(recurse=False))]
    if not starts:
        return []
    limit = min(starts)
    return [(n, m) for n, m in modules.items()
            if n and n in spans and spans[n][1] < limit and not any(id(sub) in inside for sub in m.modules())]


def unpin(handles: list[RemovableHandle]) -> None:
    for h in handles:
        h.remove()
