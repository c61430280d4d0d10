"""A small model zoo, registered by name (timm-style), sized for quick CPU experiments.

Every model returned by :func:`create_model` follows one structural contract that the freezing
machinery and the activation cache rely on:

* it is an :class:`torch.nn.Sequential` built from an ``OrderedDict``;
* its direct children are the *freeze units*, in forward order, each consuming the previous
  child's output, so ``model[:k]`` is a valid prefix and ``model[k:]`` a valid suffix and
  ``model[k:](model[:k](x)) == model(x)``;
* the last child is named ``head`` and holds the classifier;
* every child owns parameters, and a conv and its BatchNorm always live in the same child;
* no module modifies its input in place, so a prefix output computed under ``no_grad`` (or
  cached) can be fed to a trainable suffix safely.

Unit names: ``stem``/``block{stage}_{i}``/``head`` for the CNNs with residual blocks,
``conv{i}``/``head`` for VGG, ``embed``/``block{i}``/``head`` for the ViT.

Initialisation is the usual deterministic recipe (reproducible under ``torch.manual_seed``):
Kaiming-normal for convs, BatchNorm weight 1 / bias 0, zero biases, small normal classifier
weights for CNNs, and truncated-normal(0.02) for the ViT.
"""

from __future__ import annotations

import inspect
import math
from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

from frostline.errors import ConfigError, check_int

__all__ = [
    "MODELS",
    "register_model",
    "list_models",
    "create_model",
    "ConvBNAct",
    "Head",
    "BasicBlock",
    "InvertedResidual",
    "PatchEmbed",
    "ViTBlock",
    "ViTHead",
    "resnet",
    "vgg",
    "mobilenetv2",
    "vit",
]

MODELS: dict[str, Callable[..., nn.Sequential]] = {}

WIDTH_RANGE = (4, 1024)
DEPTH_RANGE = (1, 32)


def register_model(name: str) -> Callable[[Callable[..., nn.Sequential]], Callable[..., nn.Sequential]]:
    """Decorator: register a model builder under ``name`` so :func:`create_model` can find it."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"model name must be a non-empty string, got {name!r}")

    def decorator(fn: Callable[..., nn.Sequential]) -> Callable[..., nn.Sequential]:
        prev = MODELS.get(name)
        same = prev is not None and (prev.__module__, prev.__qualname__) == (fn.__module__, fn.__qualname__)
        if prev is not None and not same:  # re-registering the same function (module reload) is fine
            raise ConfigError(f"a model named {name!r} is already registered; pick another name")
        MODELS[name] = fn
        return fn

    return decorator


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(MODELS)


def create_model(
    name: str,
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    width: int | None = None,
    depth: int | None = None,
    **kwargs,
) -> nn.Sequential:
    """Build the registered model ``name``.

    ``width`` and ``depth`` scale the model (their meaning is per model, see each builder's
    docstring; ``None`` means the model's default). Extra keyword arguments go to the builder
    (e.g. ``patch_size``/``num_heads``/``drop`` for ``vit``). Raises :class:`ConfigError` for an
    unknown name, an out-of-range size, or an option the builder does not take.
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    check_int(num_classes, "num_classes", low=1)
    check_int(in_channels, "in_channels", low=1)
    check_int(image_size, "image_size", low=1)
    if width is not None:
        check_int(width, "width", low=WIDTH_RANGE[0], high=WIDTH_RANGE[1])
    if depth is not None:
        check_int(depth, "depth", low=DEPTH_RANGE[0], high=DEPTH_RANGE[1])
    fn = MODELS[name]
    call = dict(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)
    if width is not None:
        call["width"] = width
    if depth is not None:
        call["depth"] = depth
    sig = inspect.signature(fn)
    accepts_var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    if not accepts_var_kw:
        unknown = sorted(k for k in call if k not in sig.parameters)
        if unknown:
            options = sorted(
                p for p in sig.parameters if p not in ("num_classes", "in_channels", "image_size")
            )
            raise ConfigError(
                f"model {name!r} does not take option(s) {', '.join(unknown)}; "
                f"it takes: {', '.join(options)}"
            )
    return fn(**call)


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def _act(kind: str | None) -> nn.Module | None:
    if kind is None:
        return None
    if kind == "relu":
        return nn.ReLU(inplace=False)
    if kind == "relu6":
        return nn.ReLU6(inplace=False)
    raise ConfigError(f"unknown activation {kind!r}; known: relu, relu6")


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d + optional activation + optional 2x2 max-pool.

    A plain chain (no skip), so the conv and its BatchNorm always travel together.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: str | None = "relu",
        pool: bool = False,
    ) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv"] = nn.Conv2d(
            in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias=False
        )
        layers["bn"] = nn.BatchNorm2d(out_ch)
        a = _act(act)
        if a is not None:
            layers["act"] = a
        if pool:
            # ceil_mode keeps odd sizes (7 -> 4 -> 2 -> 1 -> 1) valid for any image size.
            layers["pool"] = nn.MaxPool2d(2, 2, ceil_mode=True)
        super().__init__(layers)


class Head(nn.Sequential):
    """Global average pool + flatten + Linear classifier (the CNNs' ``head`` unit)."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__(
            OrderedDict(
                pool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(1),
                fc=nn.Linear(in_features, num_classes),
            )
        )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv/BN, identity or 1x1-conv/BN projection shortcut, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=False)
        if stride != 1 or in_ch != out_ch:
            self.shortcut: nn.Module = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                    bn=nn.BatchNorm2d(out_ch),
                )
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> 1x1 linear projection.

    The skip connection is used only when stride is 1 and input/output channels match.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(in_ch * expand_ratio))
        self.use_residual = stride == 1 and in_ch == out_ch
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if expand_ratio != 1:
            layers["expand"] = ConvBNAct(in_ch, hidden, 1, act="relu6")
        layers["dw"] = ConvBNAct(hidden, hidden, 3, stride=stride, groups=hidden, act="relu6")
        layers["project"] = ConvBNAct(hidden, out_ch, 1, act=None)  # linear bottleneck
        self.conv = nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class PatchEmbed(nn.Module):
    """ViT input unit: patchify conv, prepend the learnable ``cls_token``, add ``pos_embed``.

    ``cls_token`` and ``pos_embed`` are owned here so that the unit is self-contained.
    Input (B, C, H, W) -> tokens (B, 1 + (H/p)*(W/p), dim).
    """

    def __init__(self, in_ch: int, dim: int, image_size: int, patch_size: int, drop: float = 0.0) -> None:
        super().__init__()
        self.image_size = image_size
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        self.num_patches = self.grid * self.grid
        self.proj = nn.Conv2d(in_ch, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, dim))
        self.pos_drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h != self.image_size or w != self.image_size:
            raise ConfigError(
                f"this ViT was built for {self.image_size}x{self.image_size} inputs, got {h}x{w}; "
                f"create it with a matching image_size"
            )
        x = self.proj(x).flatten(2).transpose(1, 2)  # (B, N, dim)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1) + self.pos_embed
        return self.pos_drop(x)


class Attention(nn.Module):
    """Multi-head self-attention (fused qkv projection, output projection)."""

    def __init__(self, dim: int, num_heads: int, drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = self.drop(attn.softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.drop(self.proj(out))


class Mlp(nn.Module):
    """Transformer feed-forward: Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class ViTBlock(nn.Module):
    """Pre-norm transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTHead(nn.Module):
    """Final LayerNorm, take the cls token, Linear classifier."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x[:, 0]))


# --------------------------------------------------------------------------------------------
# Initialisation
# --------------------------------------------------------------------------------------------


def _init_cnn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def _init_vit(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, PatchEmbed):
            nn.init.normal_(m.cls_token, std=0.02)
            nn.init.normal_(m.pos_embed, std=0.02)


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without dropping more than 10% (as MobileNetV2)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


@register_model("resnet")
def resnet(
    *, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, width: int = 16, depth: int = 2
) -> nn.Sequential:
    """CIFAR-style ResNet (He et al. 2016, sec. 4.2): 3x3 stem, 3 stages of BasicBlocks.

    Stage widths are ``width``, ``2*width``, ``4*width`` (strides 1, 2, 2) with ``depth`` blocks
    per stage; ``depth=3`` with ``width=16`` is ResNet-20. The default (width 16, depth 2, i.e. a
    ResNet-14 with 8 freeze units) keeps a batch-128 training step on 28x28 inputs near 0.2 s on
    two CPU cores while leaving enough units for a freezing schedule to have some resolution.
    Shortcuts that change shape use a 1x1 conv + BN projection. The stem has stride 1 because
    inputs are small; global average pooling makes any image size work.

    Units: ``stem``, ``block{stage}_{i}`` (stage 1..3, i 1..depth), ``head``.
    """
    check_int(width, "width", low=WIDTH_RANGE[0], high=WIDTH_RANGE[1])
    check_int(depth, "depth", low=DEPTH_RANGE[0], high=DEPTH_RANGE[1])
    units: OrderedDict[str, nn.Module] = OrderedDict()
    units["stem"] = ConvBNAct(in_channels, width, 3)
    in_ch = width
    for s, (mult, stride) in enumerate(((1, 1), (2, 2), (4, 2)), start=1):
        out_ch = width * mult
        for i in range(1, depth + 1):
            units[f"block{s}_{i}"] = BasicBlock(in_ch, out_ch, stride if i == 1 else 1)
            in_ch = out_ch
    units["head"] = Head(in_ch, num_classes)
    model = nn.Sequential(units)
    _init_cnn(model)
    return model


@register_model("vgg")
def vgg(
    *, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, width: int = 16, depth: int = 2
) -> nn.Sequential:
    """VGG-style plain network (Simonyan & Zisserman 2015): conv/BN/ReLU stacks with max-pool.

    Five stages of widths ``width * (1, 2, 4, 8, 8)``, each ending in a 2x2 max-pool, with
    ``(d-1, d-1, d, d, d)`` convs per stage (at least 1) for ``d = depth``: ``depth=2`` is the
    VGG-11 layout, ``depth=3`` VGG-16; ``width=64`` gives VGG's channel counts, the default 16 is
    a quarter of that so it trains fast on CPU. There are NO skip connections: every unit is a
    plain chain, which makes it the no-residual baseline for freezing. The three big FC layers are
    replaced by global average pooling + one Linear (as in CIFAR VGG variants), and pools use
    ``ceil_mode`` so 28x28 inputs survive five poolings (28->14->7->4->2->1).

    Units: ``conv1`` .. ``convN`` (a stage's pool lives inside its last conv unit), ``head``.
    """
    check_int(width, "width", low=WIDTH_RANGE[0], high=WIDTH_RANGE[1])
    check_int(depth, "depth", low=DEPTH_RANGE[0], high=DEPTH_RANGE[1])
    stage_widths = [width * m for m in (1, 2, 4, 8, 8)]
    stage_convs = [max(1, depth - 1)] * 2 + [depth] * 3
    units: OrderedDict[str, nn.Module] = OrderedDict()
    in_ch, idx = in_channels, 0
    for out_ch, n in zip(stage_widths, stage_convs):
        for j in range(n):
            idx += 1
            units[f"conv{idx}"] = ConvBNAct(in_ch, out_ch, 3, pool=(j == n - 1))
            in_ch = out_ch
    units["head"] = Head(in_ch, num_classes)
    model = nn.Sequential(units)
    _init_cnn(model)
    return model


@register_model("mobilenetv2")
def mobilenetv2(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    width: int = 16,
    depth: int = 2,
    expand_ratio: int = 6,
) -> nn.Sequential:
    """Scaled-down MobileNetV2 (Sandler et al. 2018): inverted residuals with linear bottlenecks.

    Each block expands 1x1 (x``expand_ratio``, ReLU6), filters with a 3x3 depthwise conv
    (ReLU6), and projects back with a linear 1x1 conv; it adds a skip connection when stride is
    1 and channels match. The original's 7 stages / 17 blocks for 224px are cut to 5 stages for
    28-64px inputs: widths ``width * (1, 1.5, 2, 4, 6)`` (rounded to multiples of 8, i.e.
    16/24/32/64/96 by default, the original's first five), strides 1, 2, 2, 2, 1, and
    ``(1, depth, depth, depth, 1)`` blocks, followed by a 1x1 conv to ``16 * width`` channels
    (the original's 1280 feature layer, scaled). The stem has stride 1 because inputs are small.

    Units: ``stem``, ``block{stage}_{i}``, ``conv_last``, ``head``.
    """
    check_int(width, "width", low=WIDTH_RANGE[0], high=WIDTH_RANGE[1])
    check_int(depth, "depth", low=DEPTH_RANGE[0], high=DEPTH_RANGE[1])
    check_int(expand_ratio, "expand_ratio", low=1, high=16)
    settings = [  # (expansion, width multiple, blocks, first stride)
        (1, 1.0, 1, 1),
        (expand_ratio, 1.5, depth, 2),
        (expand_ratio, 2.0, depth, 2),
        (expand_ratio, 4.0, depth, 2),
        (expand_ratio, 6.0, 1, 1),
    ]
    units: OrderedDict[str, nn.Module] = OrderedDict()
    stem_ch = _make_divisible(width)
    units["stem"] = ConvBNAct(in_channels, stem_ch, 3, stride=2, act="relu6")
    in_ch = stem_ch
    for s, (t, mult, n, stride) in enumerate(settings, start=1):
        out_ch = _make_divisible(width * mult)
        for i in range(1, n + 1):
            units[f"block{s}_{i}"] = InvertedResidual(in_ch, out_ch, stride if i == 1 else 1, t)
            in_ch = out_ch
    last_ch = _make_divisible(16 * width)
    units["conv_last"] = ConvBNAct(in_ch, last_ch, 1, act="relu6")
    units["head"] = Head(last_ch, num_classes)
    model = nn.Sequential(units)
    _init_cnn(model)
    return model


def _default_patch_size(image_size: int) -> int:
    """The divisor of ``image_size`` whose patch grid is closest to 8x8 (smaller patch on ties)."""
    divisors = [p for p in range(1, image_size + 1) if image_size % p == 0]
    return min(divisors, key=lambda p: (abs(image_size // p - 8), p))


@register_model("vit")
def vit(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    width: int = 64,
    depth: int = 4,
    num_heads: int = 4,
    patch_size: int | None = None,
    mlp_ratio: float = 4.0,
    drop: float = 0.0,
) -> nn.Sequential:
    """DeiT-tiny-like Vision Transformer (Dosovitskiy et al. 2021; Touvron et al. 2021), shrunk.

    Patch-embedding conv + learnable ``cls_token`` + learned ``pos_embed`` (all in the ``embed``
    unit), ``depth`` pre-norm blocks (MHSA + GELU MLP), final LayerNorm and a Linear head on the
    cls token. ``width`` is the embedding dim (default 64, DeiT-tiny uses 192) and must be
    divisible by ``num_heads`` (default 4); ``depth`` defaults to 4 blocks (DeiT-tiny: 12). The
    default patch size picks the divisor of ``image_size`` giving a grid closest to 8x8 (4 for 28
    and 32, 8 for 64), so token counts and CPU cost stay small; an explicit ``patch_size`` must
    divide ``image_size``. The model is built for one input size (``pos_embed`` has a fixed length).

    Units: ``embed``, ``block1`` .. ``block{depth}``, ``head``.
    """
    check_int(width, "width", low=WIDTH_RANGE[0], high=WIDTH_RANGE[1])
    check_int(depth, "depth", low=DEPTH_RANGE[0], high=DEPTH_RANGE[1])
    check_int(num_heads, "num_heads", low=1)
    if width % num_heads:
        raise ConfigError(f"vit width (embedding dim) {width} must be divisible by num_heads={num_heads}")
    if patch_size is None:
        patch_size = _default_patch_size(image_size)
    check_int(patch_size, "patch_size", low=1)
    if patch_size > image_size or image_size % patch_size:
        valid = [p for p in range(1, image_size + 1) if image_size % p == 0]
        raise ConfigError(
            f"vit patch_size {patch_size} must divide image_size {image_size}; "
            f"valid patch sizes: {', '.join(map(str, valid))}"
        )
    if not (isinstance(mlp_ratio, (int, float)) and mlp_ratio > 0 and math.isfinite(mlp_ratio)):
        raise ConfigError(f"mlp_ratio must be a positive number, got {mlp_ratio!r}")
    if not (isinstance(drop, (int, float)) and 0.0 <= drop < 1.0):
        raise ConfigError(f"drop must be in [0, 1), got {drop!r}")
    units: OrderedDict[str, nn.Module] = OrderedDict()
    units["embed"] = PatchEmbed(in_channels, width, image_size, patch_size, drop)
    for i in range(1, depth + 1):
        units[f"block{i}"] = ViTBlock(width, num_heads, mlp_ratio, drop)
    units["head"] = ViTHead(width, num_classes)
    model = nn.Sequential(units)
    _init_vit(model)
    return model
