"""What frostline froze on a model, so that it can be told apart from what the user froze, and undone.

A Freezer leaves its units frozen when training ends (that is the trained model), and an interrupted
run (Ctrl-C in a notebook) leaves them frozen too. A new Freezer on the same model would take them
for parameters the user froze, make no units of them, and train only the rest: a second run of the
same notebook cell would silently train the head alone. So each parameter a Freezer freezes carries
a mark; a new Freezer says when it finds marked parameters it did not freeze itself, and
:func:`unfreeze` undoes every freeze frostline made (gradients back on, eval-mode pins off).
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from .eval_mode import _run_in_eval

#: attribute set on a parameter a Freezer froze
MARK = "_frozen_by_frostline"


def mark_frozen(param: nn.Parameter) -> None:
    setattr(param, MARK, True)


def thaw(param: nn.Parameter) -> bool:
    """Undo a Freezer's freeze of ``param`` (one frozen by anything else stays as it is); True when
    it requires gradients again because of this call."""
    if not getattr(param, MARK, False):
        return False
    delattr(param, MARK)
    if param.requires_grad:
        return False
    param.requires_grad_(True)
    return True


def frozen_by_frostline(model: nn.Module) -> list[str]:
    """Names of ``model``'s parameters a Freezer froze that are still frozen."""
    return [n for n, p in model.named_parameters() if getattr(p, MARK, False) and not p.requires_grad]


def unfreeze(model: nn.Module) -> list[str]:
    """Undo every freeze frostline made on ``model`` (after training, or after an interrupted run):
    the parameters a Freezer froze require gradients again and every module it pinned leaves eval
    mode (dropout and BatchNorm follow ``model.train()`` again). Parameters frozen by anything else
    stay frozen. Returns the names of the parameters made trainable. An optimizer built before
    this call does not hold them: build it (or the Trainer) after, then a new Freezer."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"unfreeze needs the model (an nn.Module), got {type(model).__name__}: "
                          "frostline.unfreeze(model), then build the optimizer and the Freezer")
    names = [name for name, p in model.named_parameters() if thaw(p)]
    for module in model.modules():
        for key in [k for k, hook in module._forward_pre_hooks.items() if hook is _run_in_eval]:
            del module._forward_pre_hooks[key]
    model.train(model.training)  # the pinned modules take the model's mode again
    return names
