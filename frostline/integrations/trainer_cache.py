"""The activation cache inside a framework's training loop (the Hugging Face ``Trainer``,
Lightning), which calls the model with a batch and never says which samples the batch holds.

What the two callbacks share: the cache modes and their checks, building the
:class:`~frostline.exploit.cache.CachedPrefixModel` once the Freezer knows its units (with
``--cache auto``'s payoff rule), routing the model's own ``forward`` through it with sample keys
from the inputs (:class:`~frostline.exploit.sample_keys.KeyedForward`), and, at the end of
training, saying why a cache that replayed nothing did not (never a silent no-op).
"""

from __future__ import annotations

import warnings
from typing import Collection

from torch import nn

from ..errors import ConfigError
from ..exploit.cache import ActivationCache, CachedPrefixModel
from ..exploit.payoff import payoff_for
from ..exploit.sample_keys import KeyedForward

CACHE_MODES = ("off", "auto", "memory")


def check_cache_options(cache: str, cache_memory_mb) -> None:
    """A clear error for an unknown mode or a budget that is not a positive number of MiB."""
    if cache not in CACHE_MODES:
        raise ConfigError(f"unknown cache mode {cache!r}; use one of {list(CACHE_MODES)}")
    if isinstance(cache_memory_mb, bool) or not isinstance(cache_memory_mb, int) or cache_memory_mb <= 0:
        raise ConfigError(f"cache_memory_mb is a positive number of MiB, got {cache_memory_mb!r}")


def cannot_cache(cache: str, why: str) -> None:
    """What a training the cache cannot serve gets: with ``"memory"`` an error, with ``"auto"`` one
    warning (and the training goes on without the cache)."""
    if cache == "memory":
        raise ConfigError(f"cache='memory' cannot serve this training: {why}; use cache='off'")
    warnings.warn(f"frostline: activation cache off: {why}", stacklevel=3)


class TrainerCache:
    """Routes ``module``'s forward through the activation cache for the training steps of a run of
    ``total_steps`` optimizer steps over ``num_samples`` samples (``steps_per_epoch`` of them an
    epoch), in at most ``memory_mb`` MiB of host memory; ``ignore`` names the keyword arguments the
    loop passes for the loss alone (not part of a sample's key). ``module`` is the model the
    ``freezer`` was built on or a submodule holding every one of its units."""

    def __init__(self, module: nn.Module, freezer, cache: str, memory_mb: int, num_samples: int,
                 steps_per_epoch: int, total_steps: int, ignore: Collection[str] = ()):
        budget = memory_mb * 2**20
        on_refuse = "warn" if cache == "auto" else "raise"

        def make_cached() -> CachedPrefixModel | None:
            if not freezer.ready:  # the units are found by the first forward
                return None
            payoff = payoff_for(freezer, num_samples, steps_per_epoch, total_steps, budget) if cache == "auto" else None
            return CachedPrefixModel(module, freezer, ActivationCache(num_samples, memory_budget_bytes=budget),
                                     on_refuse=on_refuse, payoff=payoff)

        self.freezer = freezer
        self.route = KeyedForward(module, make_cached, num_samples, on_refuse=on_refuse, ignore=ignore)

    @property
    def cached(self) -> CachedPrefixModel | None:
        """The cache serving this training (None until the first training call can build it)."""
        return self.route.cached

    def finish(self) -> None:
        """Give the model its forward back, and say why the cache replayed nothing if it did not."""
        self.route.remove()
        cached, route = self.cached, self.route
        if route.stopped or (cached is not None and cached.refused):
            return  # already said
        if cached is not None and cached.cache.stats["hits"] > 0:
            return
        payoff = cached.payoff if cached is not None else None
        declined = [f"units 0..{b - 1}: {d['why']}" for b, d in sorted(payoff.decisions.items()) if "why" in d] \
            if payoff is not None else []
        if not self.freezer.frozen_prefix:
            why = "no prefix of units froze, and only a frozen prefix can be replayed"
        elif cached is not None and cached.cache.stats["computed"] + cached.cache.stats["extended"] > 0:
            why = (f"it stored the frozen prefix's output of {cached.cache.stats['computed']} samples, but none came "
                   "back before the prefix grew or training ended")
        elif declined:
            why = "; ".join(declined)
        else:
            why = "no frozen prefix held long enough for a stored sample to come back before training ended"
        warnings.warn(f"frostline: the activation cache replayed no sample: {why}", stacklevel=3)
