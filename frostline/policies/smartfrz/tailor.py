"""Layer tailoring (SmartFRZ): a unit is represented by a fixed sample of its parameters.

Each unit gets ``size`` positions drawn once, without replacement, from its flattened
parameters, by a generator seeded with ``(seed, unit index)``; the same positions are read at
every snapshot of the run, so a history is the trajectory of the same weights. A unit with fewer
than ``size`` parameters contributes all of them, padded with zeros to ``size``.
"""

from __future__ import annotations

import torch

from ...errors import check_int


class Tailor:
    """Fixed sampling positions for every unit; :meth:`sample` reads them from live parameters."""

    def __init__(self, unit_params: list[list[torch.nn.Parameter]], size: int = 1024, seed: int = 0):
        self.size = check_int(size, "tailor size", low=1)
        self.seed = seed
        #: per unit: list of (parameter position in the unit, local flat indices)
        self.plan: list[list[tuple[int, torch.Tensor]]] = []
        for u, params in enumerate(unit_params):
            sizes = [p.numel() for p in params]
            total = sum(sizes)
            g = torch.Generator().manual_seed(int(seed) * 1_000_003 + u)
            picks = torch.randperm(total, generator=g)[: self.size].sort().values if total else torch.zeros(0, dtype=torch.long)
            plan, start = [], 0
            for k, n in enumerate(sizes):
                local = picks[(picks >= start) & (picks < start + n)] - start
                if len(local):
                    plan.append((k, local))
                start += n
            self.plan.append(plan)

    @torch.no_grad()
    def sample(self, unit: int, params) -> torch.Tensor:
        """The unit's tailored vector now: float32 on the CPU, length ``size``."""
        parts = []
        for k, ix in self.plan[unit]:
            flat = params[k].detach().reshape(-1)
            parts.append(flat.index_select(0, ix.to(flat.device)).float())
        out = torch.zeros(self.size, dtype=torch.float32)
        if parts:
            v = torch.cat(parts).cpu()
            out[: len(v)] = v
        return out
