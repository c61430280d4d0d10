"""The runnable examples in examples/, each in a shortened form (same code path, less data)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # each example trains on a real dataset or pretrained weights

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_efficientnet_finetune_example_trains_and_freezes():
    pytest.importorskip("efficientnet_lite_pytorch")
    result = load("efficientnet_finetune").main(["--epochs", "1", "--train-subset", "256", "--test-subset", "256"])
    assert result["frozen"] == 17  # linear from 10 %: everything but the head by the end
    assert result["test_accuracy"] > 20  # pretrained features after 4 steps (about 33 % here); chance is 10 %


def test_hf_minilm_example_trains_with_the_callback(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("rdata")
    result = load("hf_minilm_finefoods").main(["--epochs", "1", "--train-subset", "128", "--test-subset", "128",
                                               "--max-length", "32", "--out", str(tmp_path)])
    assert result["frozen"] > 0
    assert 0 <= result["test_accuracy"] <= 100


def test_gpt2_from_scratch_example_freezes_blocks_but_never_the_tied_embedding():
    """A decoder whose token embedding is its output layer: the embedding lives in the head, which
    never freezes; the blocks before it do."""
    pytest.importorskip("transformers")
    pytest.importorskip("rdata")
    result = load("gpt2_from_scratch").main(["--method", "linear", "--epochs", "1", "--train-bytes", "20000",
                                             "--layers", "2", "--width", "32"])
    assert result["units"] == ["transformer.wpe", "transformer.h.0", "transformer.h.1", "lm_head"]
    assert result["frozen"] == 3 and result["frozen_at"]["lm_head"] is None
    assert math.isfinite(result["val_loss"]) and result["val_loss"] < math.log(256)  # better than uniform bytes
