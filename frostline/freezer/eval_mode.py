"""Frozen modules run in eval mode, whatever mode the model is in.

A frozen unit must stop changing: its BatchNorm running statistics must not move and its
dropout must be off. Training loops call ``model.train()`` at every epoch start, so setting eval
mode once is not enough. A forward pre-hook on every module of a frozen unit switches that module
to eval mode just before it runs: ``model.train()``/``model.eval()`` keep their ordinary meaning
(a frozen module may *report* ``training=True`` until its next forward), and the pin is a hook
handle that can be removed.
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


def unpin(handles: list[RemovableHandle]) -> None:
    for h in handles:
        h.remove()
