"""The Freezer: the only code that *acts* on a freezing decision.

* :mod:`.freezer` -- :class:`Freezer` (set-up, step, freeze, views, save/restore) and :class:`FreezeEvent`.
* :mod:`.param_groups` -- param groups per unit, removing parameters and their optimizer state,
  saved layouts.
* :mod:`.schedulers` -- the LR-scheduler bridge (per-unit lr = scheduler's lr x policy's scale).
* :mod:`.cooldown` -- anneal, then freeze: the ramp a decided unit's lr follows before it freezes.
* :mod:`.eval_mode` -- frozen modules run in eval mode whatever ``model.train()`` said.
* :mod:`.marks` -- what a Freezer froze, told apart from the user's own freezes; :func:`unfreeze` undoes it.
"""

from .freezer import READABLE_VERSIONS, STATE_VERSION, FreezeEvent, Freezer
from .marks import unfreeze

__all__ = ["FreezeEvent", "Freezer", "READABLE_VERSIONS", "STATE_VERSION", "unfreeze"]
