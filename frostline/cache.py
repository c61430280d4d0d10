"""Activation cache: replay the frozen prefix's output instead of recomputing it.

Once units ``0..k-1`` are frozen and in eval mode, their output for a sample never changes, so
it is computed once, stored under the sample's index, and later batches run only the trainable
suffix. When the prefix grows from ``k`` to ``k'``, stored entries are *extended* through units
``k..k'-1`` the next time their sample comes up, instead of being recomputed from the raw input.

Storage is one array per boundary ``k`` (``num_samples x shape``), in memory while it fits the
byte budget and as a memory-mapped file in the cache folder past it. ``save`` writes every
array with a header (format version, boundary, shape, dtype, fingerprint of the prefix weights)
and a checksum; ``load`` serves nothing stale or corrupted: such arrays are dropped and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .errors import ConfigError

FORMAT_VERSION = 1
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_NUMPY_VIEW = {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: np.uint16}


def fingerprint(modules: Sequence[nn.Module]) -> str:
    """SHA-256 over the parameters and buffers of ``modules``: equal iff the prefix computes
    the same function (for the same code)."""
    h = hashlib.sha256()
    for m in modules:
        for name, t in list(m.named_parameters()) + list(m.named_buffers()):
            h.update(name.encode())
            h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class _Store:
    """All samples' activations at one boundary."""

    boundary: int
    shape: tuple[int, ...]
    dtype: torch.dtype
    data: torch.Tensor  # (num_samples, *shape), in memory or a view of a memmap
    path: Path | None = None
    count: int = 0  # samples whose newest entry lives here
    memmap: np.memmap | None = field(default=None, repr=False)

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()


class ActivationCache:
    """Per-sample activations of the frozen prefix, keyed by sample index."""

    def __init__(
        self,
        num_samples: int,
        *,
        memory_budget_bytes: int = 4 * 2**30,
        dtype: str | torch.dtype = "float32",
        directory: str | os.PathLike | None = None,
    ):
        if num_samples <= 0:
            raise ConfigError(f"the cache needs a positive number of samples, got {num_samples}")
        if memory_budget_bytes < 0:
            raise ConfigError(f"memory budget must be >= 0 bytes, got {memory_budget_bytes}")
        if isinstance(dtype, str):
            if dtype not in DTYPES:
                raise ConfigError(f"unknown cache dtype {dtype!r}; use one of {list(DTYPES)}")
            dtype = DTYPES[dtype]
        if dtype not in _NUMPY_VIEW:
            raise ConfigError(f"unsupported cache dtype {dtype}; use one of {list(DTYPES)}")
        self.num_samples = num_samples
        self.memory_budget_bytes = memory_budget_bytes
        self.dtype = dtype
        self.directory = Path(directory) if directory is not None else None
        #: boundary of each sample's newest entry; 0 means "nothing stored" (boundary 0 is the input)
        self.levels = np.zeros(num_samples, dtype=np.int32)
        self.stores: dict[int, _Store] = {}
        self.fingerprints: dict[int, str] = {}
        self.stats = {"hits": 0, "extended": 0, "computed": 0}
        #: unit index -> samples run through it by the cache (to count the FLOPs it spent)
        self.unit_runs: dict[int, int] = {}
        self.peak_memory_bytes = 0
        self.peak_disk_bytes = 0

    # -- storage -----------------------------------------------------------------------------
    @property
    def memory_bytes(self) -> int:
        return sum(s.nbytes for s in self.stores.values() if s.path is None)

    @property
    def disk_bytes(self) -> int:
        return sum(s.nbytes for s in self.stores.values() if s.path is not None)

    def _allocate(self, boundary: int, shape: tuple[int, ...]) -> _Store:
        per_sample = int(np.prod(shape)) * torch.tensor([], dtype=self.dtype).element_size()
        total = per_sample * self.num_samples
        if self.memory_bytes + total <= self.memory_budget_bytes or self.directory is None:
            if self.memory_bytes + total > self.memory_budget_bytes:
                raise ConfigError(
                    f"the activation cache needs {total / 2**20:.0f} MiB at unit {boundary}, over the "
                    f"{self.memory_budget_bytes / 2**20:.0f} MiB memory budget, and has no folder to "
                    "spill to: raise the budget or give it a directory"
                )
            data = torch.empty((self.num_samples, *shape), dtype=self.dtype)
            store = _Store(boundary, tuple(shape), self.dtype, data)
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"boundary{boundary}.bin"
            mm = np.memmap(path, dtype=_NUMPY_VIEW[self.dtype], mode="w+", shape=(self.num_samples, *shape))
            data = torch.from_numpy(mm)
            if self.dtype == torch.bfloat16:
                data = data.view(torch.bfloat16)
            store = _Store(boundary, tuple(shape), self.dtype, data, path=path, memmap=mm)
        self.stores[boundary] = store
        self.peak_memory_bytes = max(self.peak_memory_bytes, self.memory_bytes)
        self.peak_disk_bytes = max(self.peak_disk_bytes, self.disk_bytes)
        return store

    def _release(self, boundary: int, n: int) -> None:
        store = self.stores[boundary]
        store.count -= n
        if store.count <= 0:
            del self.stores[boundary]
            if store.path is not None:
                del store.data, store.memmap
                store.path.unlink(missing_ok=True)

    # -- the one operation training needs -----------------------------------------------------
    def prefix_output(
        self, indices: torch.Tensor, x: torch.Tensor, boundary: int, run_units: Callable[[torch.Tensor, int, int], torch.Tensor],
        prefix_fingerprint: Callable[[int], str] | None = None,
    ) -> torch.Tensor:
        """Output of units ``0..boundary-1`` for the samples ``indices`` (whose raw inputs are
        ``x``): read where stored, extended from an earlier boundary, or computed and stored.
        ``run_units(h, a, b)`` runs units ``a..b-1`` on ``h`` (under no_grad, in eval mode)."""
        if boundary <= 0:
            raise ConfigError("the cache serves a frozen prefix of at least one unit")
        if prefix_fingerprint is not None and boundary not in self.fingerprints:
            self.fingerprints[boundary] = prefix_fingerprint(boundary)
        idx = indices.cpu().numpy().astype(np.int64)
        if idx.min(initial=0) < 0 or idx.max(initial=0) >= self.num_samples:
            raise ConfigError(f"sample index out of range for a cache of {self.num_samples} samples")
        levels = self.levels[idx]
        if (levels == boundary).all():  # the steady state: every sample replayed
            self.stats["hits"] += len(idx)
            rows = torch.index_select(self.stores[boundary].data, 0, torch.from_numpy(idx))
            return rows.to(x.device, torch.float32, non_blocking=True)
        unique = np.unique(levels)
        out: torch.Tensor | None = None
        for level in unique:
            pos = np.nonzero(levels == level)[0]
            pos_t = torch.from_numpy(pos)
            if level == boundary:
                h = torch.index_select(self.stores[boundary].data, 0, torch.from_numpy(idx[pos]))
                self.stats["hits"] += len(pos)
            else:
                start = int(level) if 0 < level < boundary else 0
                if start > 0:
                    src = torch.index_select(self.stores[start].data, 0, torch.from_numpy(idx[pos]))
                    src = src.to(x.device, torch.float32)
                    self.stats["extended"] += len(pos)
                else:
                    src = x[pos_t.to(x.device)]
                    self.stats["computed"] += len(pos)
                with torch.no_grad():
                    fresh = run_units(src, start, boundary)
                for u in range(start, boundary):
                    self.unit_runs[u] = self.unit_runs.get(u, 0) + len(pos)
                store = self.stores.get(boundary) or self._allocate(boundary, tuple(fresh.shape[1:]))
                h = fresh.detach().to("cpu", self.dtype)
                store.data[torch.from_numpy(idx[pos])] = h
                store.count += len(pos)
                if 0 < level:
                    self._release(int(level), len(pos))
                self.levels[idx[pos]] = boundary
            h = h.to(x.device, torch.float32, non_blocking=True)
            if len(unique) == 1:
                return h
            if out is None:
                out = torch.empty((len(idx), *h.shape[1:]), dtype=torch.float32, device=x.device)
            out[pos_t.to(x.device)] = h
        return out

    # -- persistence -------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> None:
        """Write every array with a header and checksum (atomically), plus the per-sample levels."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for b, store in self.stores.items():
            path = directory / f"boundary{b}.bin"
            raw = store.data.view(torch.uint8) if store.dtype == torch.bfloat16 else store.data
            array = raw.numpy() if store.path is None else store.memmap
            if store.path is not None:
                store.memmap.flush()
            if store.path is None or store.path.resolve() != path.resolve():
                tmp = path.with_suffix(".tmp")
                array.tofile(tmp)
                os.replace(tmp, path)
            header = {
                "format": FORMAT_VERSION, "boundary": b, "shape": list(store.shape), "dtype": str(store.dtype),
                "num_samples": self.num_samples, "fingerprint": self.fingerprints.get(b),
                "checksum": zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B")),
            }
            _write_json(directory / f"boundary{b}.json", header)
        np.save(directory / "levels.npy", self.levels)

    @classmethod
    def load(
        cls, directory: str | os.PathLike, *, prefix_fingerprint: Callable[[int], str], num_samples: int,
        memory_budget_bytes: int = 4 * 2**30, dtype: str | torch.dtype = "float32",
    ) -> "ActivationCache":
        """Reopen a saved cache, keeping only arrays whose header, fingerprint and checksum all
        match; anything else is dropped with a warning and rebuilt as training goes."""
        directory = Path(directory)
        cache = cls(num_samples, memory_budget_bytes=memory_budget_bytes, dtype=dtype, directory=directory)
        try:
            levels = np.load(directory / "levels.npy")
        except (OSError, ValueError):
            return cache
        if levels.shape != (num_samples,):
            warnings.warn("activation cache is for another dataset size; rebuilding it", stacklevel=2)
            return cache
        for header_path in sorted(directory.glob("boundary*.json")):
            problem = cache._open_store(header_path, prefix_fingerprint)
            if problem:
                warnings.warn(f"activation cache {header_path.name}: {problem}; rebuilding it", stacklevel=2)
        for b, store in cache.stores.items():
            store.count = int((levels == b).sum())
        valid = np.isin(levels, list(cache.stores))
        cache.levels = np.where(valid, levels, 0).astype(np.int32)
        for b in [b for b, s in cache.stores.items() if s.count == 0]:
            del cache.stores[b]
        return cache

    def _open_store(self, header_path: Path, prefix_fingerprint) -> str | None:
        try:
            header = json.loads(header_path.read_text())
            b = int(header["boundary"])
        except (OSError, ValueError, KeyError, TypeError):
            return "unreadable header"
        if header.get("format") != FORMAT_VERSION:
            return f"format {header.get('format')} is not {FORMAT_VERSION}"
        if header.get("dtype") != str(self.dtype) or header.get("num_samples") != self.num_samples:
            return "stored dtype or size differs"
        if header.get("fingerprint") != prefix_fingerprint(b):
            return "the frozen prefix's weights differ from those it was built with"
        path = header_path.with_suffix(".bin")
        shape = tuple(header["shape"])
        expected = self.num_samples * int(np.prod(shape)) * torch.tensor([], dtype=self.dtype).element_size()
        if not path.exists() or path.stat().st_size != expected:
            return "data file missing or of the wrong size"
        mm = np.memmap(path, dtype=_NUMPY_VIEW[self.dtype], mode="r+", shape=(self.num_samples, *shape))
        if zlib.crc32(memoryview(np.ascontiguousarray(mm)).cast("B")) != header.get("checksum"):
            return "checksum mismatch (corrupted)"
        data = torch.from_numpy(mm)
        if self.dtype == torch.bfloat16:
            data = data.view(torch.bfloat16)
        self.stores[b] = _Store(b, shape, self.dtype, data, path=path, memmap=mm)
        self.fingerprints[b] = header["fingerprint"]
        return None


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def is_deterministic(dataset, probe: Sequence[int] = (0, -1)) -> bool:
    """Fetch a few samples twice: a pipeline with random augmentation gives different tensors."""
    n = len(dataset)
    for i in probe:
        i = i % n
        a, b = dataset[i], dataset[i]
        if not torch.equal(torch.as_tensor(a[0]), torch.as_tensor(b[0])):
            return False
    return True


class CachedPrefixModel:
    """A chain model (``nn.Sequential`` of freeze units) whose frozen prefix is served from an
    :class:`ActivationCache`. Call it with sample indices and inputs instead of the model::

        cached = CachedPrefixModel(model, freezer, ActivationCache(len(train_set)))
        out = cached(indices, x)   # == model(x), computing only the trainable suffix on hits
    """

    def __init__(self, model: nn.Sequential, freezer, cache: ActivationCache):
        if not isinstance(model, nn.Sequential):
            raise ConfigError("the activation cache needs a model whose children are its units in order (nn.Sequential)")
        self.model, self.freezer, self.cache = model, freezer, cache
        self._units = list(model)
        self._fingerprints: dict[int, str] = {}

    def prefix_fingerprint(self, k: int) -> str:
        if k not in self._fingerprints:
            self._fingerprints[k] = fingerprint(list(self.model[:k]))
        return self._fingerprints[k]

    def _run(self, h: torch.Tensor, a: int, b: int) -> torch.Tensor:
        return self.model[a:b](h)

    def boundary(self) -> int:
        """How many leading units the cache may serve now: the frozen prefix, and never the last
        unit; and only units in eval mode (the Freezer pins frozen units there)."""
        k = min(self.freezer.frozen_prefix, len(self.model) - 1)
        while k > 0 and any(m.training for unit in self._units[:k] for m in unit.modules()):
            k -= 1
        return k

    def __call__(self, indices: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        k = self.boundary()
        if k == 0:
            return self.model(x)
        h = self.cache.prefix_output(indices, x, k, self._run, self.prefix_fingerprint)
        return self.model[k:](h)
