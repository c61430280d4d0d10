"""Models frostline did not write, built small and randomly initialised, for tests that use
frostline the way a user would: torchvision and timm image models, Hugging Face BERT, GPT-2
(its head tied to its embedding) and Llama (rotary position encoding computed once, outside every
layer, and read by each), and a PEFT LoRA BERT.

PyPI's torchvision wheel is linked against CUDA builds of torch: beside the CPU build its import
dies while registering fake kernels for its C++ detection ops (``torchvision::nms does not
exist``), and so does every ``transformers`` import that finds torchvision installed. So
torchvision and timm are not installed into the environment: CI puts them in ``.outside/``
(``pip install --no-deps --target .outside torchvision timm``), which :func:`torchvision` adds to
the path for the tests that ask, after standing an empty module in for
``torchvision._meta_registrations`` (classification models are pure Python and never call those
ops). Tests only: frostline itself never imports either.

Each builder returns ``(model, batch)``: ``batch(n, seed)`` gives the keyword arguments of one
forward (``labels`` included, so ``model(**batch)`` computes the loss for HF models) and
:func:`loss_of` turns a forward's output into a scalar loss for every model here.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

NUM_CLASSES, IMAGE, SEQ, VOCAB = 10, 32, 16, 128
#: Where CI installs torchvision and timm, away from the environment transformers sees.
OUTSIDE_PACKAGES = Path(__file__).resolve().parent.parent / ".outside"


def torchvision():
    """The real torchvision, importable beside a CPU torch (see the module docstring); skips the
    test where it is not installed."""
    if OUTSIDE_PACKAGES.is_dir() and str(OUTSIDE_PACKAGES) not in sys.path:
        sys.path.append(str(OUTSIDE_PACKAGES))
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    return pytest.importorskip("torchvision")


def timm():
    torchvision()
    return pytest.importorskip("timm")


def _images(n: int, seed: int, channels: int = 3):
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(n, channels, IMAGE, IMAGE, generator=g),
            "y": torch.randint(0, NUM_CLASSES, (n,), generator=g)}


def _tokens(n: int, seed: int, causal: bool):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, SEQ), generator=g)
    labels = ids.clone() if causal else torch.randint(0, 2, (n,), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def torchvision_resnet18():
    tv = torchvision()
    torch.manual_seed(0)
    return tv.models.resnet18(num_classes=NUM_CLASSES), lambda n, seed=0: _images(n, seed)


def timm_resnet18():
    tm = timm()
    torch.manual_seed(0)
    return tm.create_model("resnet18", pretrained=False, num_classes=NUM_CLASSES), lambda n, seed=0: _images(n, seed)


def timm_vit_tiny():
    tm = timm()
    torch.manual_seed(0)
    model = tm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=NUM_CLASSES, img_size=IMAGE,
                            patch_size=8, depth=4)
    return model, lambda n, seed=0: _images(n, seed)


def hf_bert():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64, num_labels=2)
    return transformers.BertForSequenceClassification(config), lambda n, seed=0: _tokens(n, seed, causal=False)


def hf_gpt2():
    """GPT-2 whose ``lm_head.weight`` *is* ``transformer.wte.weight`` (tied, as every GPT-2)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=4, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config)
    assert model.lm_head.weight is model.transformer.wte.weight
    return model, lambda n, seed=0: _tokens(n, seed, causal=True)


def hf_llama():
    """A Llama decoder with its head untied, as Llama 2 and 3 have it: the model computes the
    rotary cosines and sines once (``model.rotary_emb``, in no layer) and hands them to every layer."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=False)
    return transformers.LlamaForCausalLM(config), lambda n, seed=0: _tokens(n, seed, causal=True)


def hf_opt():
    """An OPT decoder with its head untied: its learned position embedding is a unit of its own,
    after the token embedding, whose output reaches the layers past it (added to the positions)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.OPTConfig(vocab_size=VOCAB, hidden_size=32, ffn_dim=64, num_hidden_layers=3,
                                    num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=32,
                                    tie_word_embeddings=False, dropout=0.0)
    return transformers.OPTForCausalLM(config), lambda n, seed=0: _tokens(n, seed, causal=True)


def hf_wav2vec2():
    """A wav2vec2 classifier with its convolutional feature encoder frozen (``freeze_feature_encoder``,
    the usual fine-tuning), whose training forward masks features at random with NumPy's generator
    (SpecAugment), in no module, before the encoder."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(
        vocab_size=32, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_feat_extract_layers=2, num_labels=2,
        mask_time_prob=0.05, layerdrop=0.0)
    model = transformers.Wav2Vec2ForSequenceClassification(config)
    model.freeze_feature_encoder()

    def batch(n, seed=0):
        g = torch.Generator().manual_seed(seed)
        return {"input_values": torch.randn(n, 800, generator=g), "labels": torch.randint(0, 2, (n,), generator=g)}

    return model, batch


def peft_lora_bert():
    """A LoRA-wrapped BERT: only the adapters (and the classifier) train; most modules hold
    nothing trainable."""
    peft = pytest.importorskip("peft")
    model, batch = hf_bert()
    config = peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"])
    return peft.get_peft_model(model, config), batch


BUILDERS = {
    "torchvision-resnet18": torchvision_resnet18,
    "timm-resnet18": timm_resnet18,
    "timm-vit": timm_vit_tiny,
    "hf-bert": hf_bert,
    "hf-gpt2": hf_gpt2,
    "hf-llama": hf_llama,
    "hf-opt": hf_opt,
    "hf-wav2vec2": hf_wav2vec2,
    "peft-lora-bert": peft_lora_bert,
}


def forward(model, batch):
    """One forward with a batch from a builder: image models get ``x`` positionally."""
    if "x" in batch:
        return model(batch["x"])
    return model(**batch)


def loss_of(output, batch) -> torch.Tensor:
    """A scalar loss from a forward's output: HF's own loss, or cross-entropy for image logits."""
    if "x" in batch:
        return torch.nn.functional.cross_entropy(output, batch["y"])
    return output.loss
