"""Layer tailoring (SmartFRZ): a unit is represented by a fixed sample of its parameters.

Each unit gets ``size`` positions drawn once, without replacement, from its flattened
parameters, by a generator seeded with ``(seed, unit index)``; the same positions are read at
every snapshot of the run, so a history is the trajectory of the same weights. A unit with fewer
than ``size`` parameters contributes all of them, padded with zeros to ``size``.
"""

from __future__ import annotations

import torch

from ...errors import check_int


def draw_positions(total: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``min(size, total)`` distinct positions in ``range(total)``, sorted. A permutation of a large
    unit's millions of positions took ~50 ms per unit (once per run, but inside the decision time),
    so a large unit draws with replacement and keeps the first occurrence of each position until it
    has ``size`` of them."""
    if total <= 4 * size:
        return torch.randperm(total, generator=generator)[:size].sort().values
    picks = torch.empty(0, dtype=torch.long)
    while len(picks) < size:
        draws = torch.cat([picks, torch.randint(total, (2 * size,), generator=generator)])
        unique, inverse = torch.unique(draws, return_inverse=True)
        first = torch.full((len(unique),), len(draws), dtype=torch.long).scatter_reduce(
            0, inverse, torch.arange(len(draws)), reduce="amin")
        picks = draws[first.sort().values][:size]  # distinct, in the order they were drawn
    return picks.sort().values


class Tailor:
    """Fixed sampling positions for every unit; :meth:`sample_units` reads them from live parameters.

    A snapshot is cheap because it is taken every few steps for the whole run (30 per epoch): each
    parameter's positions are gathered straight into their slice of one preallocated buffer on the
    parameters' device (no concatenation, no padding per call), and the buffer reaches the CPU in
    one copy (one device synchronisation per snapshot, not one per unit)."""

    def __init__(self, unit_params: list[list[torch.nn.Parameter]], size: int = 1024, seed: int = 0):
        self.size = check_int(size, "tailor size", low=1)
        self.seed = seed
        #: per unit: list of (parameter position in the unit, local flat indices, start in the row)
        self.plan: list[list[tuple[int, torch.Tensor, int]]] = []
        for u, params in enumerate(unit_params):
            sizes = [p.numel() for p in params]
            total = sum(sizes)
            picks = draw_positions(total, self.size, torch.Generator().manual_seed(int(seed) * 1_000_003 + u))
            plan, start, filled = [], 0, 0
            for k, n in enumerate(sizes):
                local = picks[(picks >= start) & (picks < start + n)] - start
                if len(local):
                    plan.append((k, local, filled))
                    filled += len(local)
                start += n
            self.plan.append(plan)
        self._buffer: torch.Tensor | None = None

    def _gathers(self, unit_params, device: torch.device):
        """Per unit, the (parameter, positions, slice of the buffer row) of every gather, made once
        per device: a snapshot then costs one ``index_select`` per parameter and nothing else."""
        if self._buffer is None or self._buffer.device != device:
            self._buffer = torch.zeros(len(self.plan), self.size, dtype=torch.float32, device=device)
            self._jobs = [[(k, ix.to(device), self._buffer[u, at:at + len(ix)]) for k, ix, at in plan]
                          for u, plan in enumerate(self.plan)]
        return self._jobs

    @torch.no_grad()
    def sample_units(self, unit_params: list[list[torch.nn.Parameter]], active: list[int]) -> dict[int, torch.Tensor]:
        """The tailored vectors of the units ``active`` now: float32 CPU rows of length ``size``."""
        if not active:
            return {}
        device = next((unit_params[u][k].device for u in active for k, _, _ in self.plan[u]), torch.device("cpu"))
        jobs = self._gathers(unit_params, device)
        for u in active:
            params = unit_params[u]
            for k, ix, out in jobs[u]:
                p = params[k]
                if p.dtype == torch.float32:
                    torch.index_select(p.view(-1), 0, ix, out=out)
                else:
                    out.copy_(p.reshape(-1).index_select(0, ix))
        host = self._buffer.to("cpu", copy=True)
        return {u: host[u] for u in active}

    def sample(self, unit: int, params) -> torch.Tensor:
        """One unit's tailored vector now: float32 on the CPU, length ``size``."""
        units = [[] for _ in self.plan]
        units[unit] = list(params)
        return self.sample_units(units, [unit])[unit].clone()
