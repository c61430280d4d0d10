"""What a run's steps would have cost with nothing frozen, measured in the same process after it.

A run that freezes early has only a short stretch of full-speed steps before its first freeze, and
a CPU machine's speed drifts by tens of percent between one hour and the next; comparing with a
baseline trained in another session then measures the machine as much as the method. The probe
trains a fresh copy of the model as the baseline would (nothing frozen, no cache, the run's
optimizer, real batches) for a few steps right after the run, timed as the run's own steps are.
Averaged with the run's own full-speed stretch from before its first freeze, it brackets the run
in time, so a drift during the run cancels to first order (see
:func:`frostline.lab.compare.relative_time`).
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Callable

import torch
from torch import nn

from .loop import iterate_batches

#: Untimed steps first: a fresh model's first steps allocate its gradients and optimizer state.
WARMUP_STEPS = 3


def probe_full_speed(make_model: Callable[[], nn.Module], make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
                     train_set, batch_size: int, device: torch.device, steps: int, *, seed: int,
                     loss_fn: nn.Module | None = None) -> dict[str, Any]:
    """Mean seconds of ``steps`` full training steps (after :data:`WARMUP_STEPS` untimed ones) of a
    fresh model on shuffled real batches; the random generators are left as they were. Each step
    is timed from its batch's arrival to the end of the optimizer step, like the run's."""
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    times = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = make_model().to(device).train()
        optimizer = make_optimizer(model)

        def epochs():
            for epoch in itertools.count():
                yield from iterate_batches(train_set, batch_size, shuffle=True, seed=seed * 7 + epoch)

        for i, (_, x, y) in enumerate(itertools.islice(epochs(), WARMUP_STEPS + steps)):
            t0 = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= WARMUP_STEPS:
                times.append(time.perf_counter() - t0)
    return {"steps": len(times), "step_s": sum(times) / len(times), "warmup_steps": WARMUP_STEPS}
