"""Amazon fine-food reviews (``small_fine_foods``), read straight from Debian's R package.

``r-cran-modeldata`` ships 4,000 train and 1,000 test reviews labelled ``great``/``other``
inside R's lazy-load database (``data/Rdata.rdx`` + ``Rdata.rdb``); we read it without R: the
``.rdx`` index is an R serialization that gives each object's (offset, length) in the ``.rdb``,
and each object there is a 4-byte big-endian length, a compression type byte and the compressed
R serialization, which the ``rdata`` package parses. This mirrors the BERT fine-tuning
experiments of AutoFreeze and SmartFRZ on a task small enough for two CPU cores.

Reviews are tokenised once with the WordPiece tokenizer of the bundled MiniLM
(:func:`frostline.lab.pretrained.minilm_dir`), padded/truncated to a fixed length, so a sample is a
fixed ``int64`` vector: deterministic for its index, which the activation cache relies on.
"""

from __future__ import annotations

import bz2
import lzma
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError, DatasetNotFoundError

#: Where Debian puts the package's data; $FROSTLINE_MODELDATA overrides (another R library).
MODELDATA_DIR = Path("/usr/lib/R/site-library/modeldata/data")
MODELDATA_ENV = "FROSTLINE_MODELDATA"
INSTALL_HINT = "sudo apt-get install r-cran-modeldata && pip install rdata"
CLASS_NAMES = ("great", "other")
SIZES = {"train": 4000, "test": 1000}
_OBJECTS = {"train": "training_data", "test": "testing_data"}


def modeldata_dir() -> Path:
    env = os.environ.get(MODELDATA_ENV)
    return Path(env).expanduser() if env else MODELDATA_DIR


def _rdata():
    try:
        import rdata
    except ImportError:
        raise DatasetNotFoundError(
            f"reading fine-foods needs the PyPI package rdata: {INSTALL_HINT} (or pip install 'frostline[text]')"
        ) from None
    return rdata


def _parse(rdata, raw: bytes):
    with warnings.catch_warnings():  # rdata warns about the header-less lazy-load format; it is expected
        warnings.simplefilter("ignore")
        return rdata.conversion.convert(rdata.parser.parse_data(raw))


def _decompress(blob: bytes) -> bytes:
    """One object of an R lazy-load database: length, type byte, compressed payload."""
    if len(blob) < 5:
        raise ValueError("object shorter than its header")
    (size,) = struct.unpack(">I", blob[:4])
    kind, payload = blob[4:5], blob[5:]
    if kind == b"Z":  # R's xz: a raw LZMA2 stream
        raw = lzma.decompress(payload, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 26}])
    elif kind == b"2":
        raw = bz2.decompress(payload)
    elif kind == b"0":
        raw = payload
    else:  # type 1 has no type byte: zlib right after the length
        raw = zlib.decompress(blob[4:])
    if len(raw) != size:
        raise ValueError(f"decompressed {len(raw)} bytes, header says {size}")
    return raw


def read_reviews(split: str) -> tuple[list[str], np.ndarray]:
    """The reviews of ``split`` ('train' or 'test') and their labels (0 = great, 1 = other)."""
    if split not in _OBJECTS:
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")
    folder = modeldata_dir()
    rdx, rdb = folder / "Rdata.rdx", folder / "Rdata.rdb"
    if not (rdx.is_file() and rdb.is_file()):
        raise DatasetNotFoundError(
            f"dataset 'fine-foods' not found: no {rdx} / {rdb}. Install it with: {INSTALL_HINT} "
            f"(or point ${MODELDATA_ENV} at an R library's modeldata/data folder)"
        )
    rdata = _rdata()
    try:
        index = _parse(rdata, rdx.read_bytes())["variables"]
        offset, length = (int(v) for v in index[_OBJECTS[split]])
        with open(rdb, "rb") as f:
            f.seek(offset)
            frame = _parse(rdata, _decompress(f.read(length)))
        texts = [str(t) for t in frame["review"]]
        scores = [str(s) for s in frame["score"]]
    except DatasetNotFoundError:
        raise
    except Exception as e:  # any parse failure means the files are not what we expect
        raise DatasetNotFoundError(
            f"dataset 'fine-foods' in {folder} is unreadable ({type(e).__name__}: {e}); reinstall it: "
            "sudo apt-get install --reinstall r-cran-modeldata"
        ) from None
    unknown = sorted(set(scores) - set(CLASS_NAMES))
    if unknown or len(texts) != SIZES[split]:
        raise DatasetNotFoundError(
            f"dataset 'fine-foods' {split} split has {len(texts)} reviews and labels {sorted(set(scores))}, expected "
            f"{SIZES[split]} with {list(CLASS_NAMES)}; reinstall r-cran-modeldata"
        )
    return texts, np.array([CLASS_NAMES.index(s) for s in scores], dtype=np.int64)


def tokenize(texts: list[str], max_length: int) -> np.ndarray:
    """Token ids ``(N, max_length)`` with MiniLM's uncased WordPiece ([CLS] ... [SEP], 0-padded)."""
    from tokenizers import Tokenizer

    from .pretrained import minilm_dir

    tok = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length)
    tok.enable_padding(length=max_length, pad_id=0)
    return np.array([e.ids for e in tok.encode_batch(texts)], dtype=np.int64)


class TokenDataset(Dataset):
    """Fixed-length token-id vectors with ``int`` labels; deterministic for an index."""

    def __init__(self, ids, labels, indices=None):
        self._ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
        self.targets = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if self._ids.dim() != 2 or self._ids.shape[0] != self.targets.shape[0]:
            raise DataError(f"token ids must be (N, L) with N labels, got {tuple(self._ids.shape)}")
        self.indices = torch.arange(len(self.targets)) if indices is None else torch.as_tensor(np.asarray(indices)).long()

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __getitem__(self, index):
        return self._ids[index].clone(), int(self.targets[index])

    def get_batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self._ids[idx], self.targets[idx]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, length={self._ids.shape[1]})"
