"""``torch.compile`` per freeze unit (regional compilation).

Compiling the whole model as one graph ties every unit's ``requires_grad`` and train/eval mode
into one set of guards: each freeze invalidates the whole graph and recompiles all of it, and code
that captured the graph once (an ``aot_autograd`` backward built while a unit was trainable) is
exactly where a stale graph would keep computing gradients for a frozen unit. Compiling each unit's
modules separately keeps a freeze local: the newly frozen unit gets one new graph (parameters
without grad, eval mode), the first trainable unit after it one more (its input no longer requires
grad), and every other unit keeps the graph it has. Units of the same class and shapes share
compiled code, so a deep stack of identical blocks compiles once.

Dynamo keys its cache on the code object, and ``nn.Module.compile`` compiles ``Module._call_impl``
for every unit, so all units share one cache; :func:`compile_units` raises dynamo's recompile limit
to room for a few variants per unit (otherwise a deep model silently falls back to eager).
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch

from .errors import ConfigError
from .units import FreezeUnit

#: Graph variants allowed per unit: trainable, frozen (no grad + eval), input without grad, spare.
VARIANTS_PER_UNIT = 4


def check_backend(backend: str) -> None:
    """Reject an unknown ``torch.compile`` backend before any work is done."""
    try:
        import torch._dynamo as dynamo
    except ImportError:  # pragma: no cover - torch builds without dynamo
        raise ConfigError("this torch build has no torch.compile: run without --compile") from None
    known = set(dynamo.list_backends(exclude_tags=())) | {"inductor"}
    if backend not in known:
        raise ConfigError(f"unknown torch.compile backend {backend!r}; choose one of {sorted(known)}")


def compile_units(units: Sequence[FreezeUnit], backend: str = "inductor") -> int:
    """Compile every module of every unit in place (``nn.Module.compile``); returns how many."""
    import torch._dynamo as dynamo

    check_backend(backend)
    limit = max(int(dynamo.config.recompile_limit), VARIANTS_PER_UNIT * len(units))
    dynamo.config.recompile_limit = limit
    count = 0
    for unit in units:
        for module in unit.modules:
            module.compile(backend=backend)
            count += 1
    return count


def compile_stats() -> dict[str, int]:
    """Process-wide dynamo counters: graphs compiled so far, graph breaks, frames compiled."""
    from torch._dynamo.utils import counters

    return {
        "graphs": int(counters["stats"]["unique_graphs"]),
        "graph_breaks": int(sum(counters["graph_break"].values())),
        "frames_ok": int(counters["frames"]["ok"]),
    }


def eager():
    """Run compiled modules eagerly inside this context (``torch.compiler.set_stance``, torch >= 2.6;
    on older torch, a no-op). Evaluation uses it: in eval mode without grad every unit would need
    its own graph variants, compiled for a pass that runs once an epoch."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    return set_stance("force_eager") if set_stance is not None else contextlib.nullcontext()
