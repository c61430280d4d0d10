"""Tests for the model zoo (frostline.lab.zoo): registry, shapes, the freeze-unit contract."""

from __future__ import annotations

import time
from collections import OrderedDict

import pytest
import torch
from torch import nn

from frostline.errors import ConfigError
from frostline.lab.zoo import MODELS, create_model, list_models, register_model

NAMES = ["mobilenetv2", "resnet", "vgg", "vit"]
PRETRAINED = ["efficientnet-lite0", "minilm"]  # frostline.lab.pretrained; tested in test_pretrained.py
# (smaller, larger) sizes per model for the width / depth scaling checks
WIDTHS = {"resnet": (8, 16), "vgg": (8, 16), "mobilenetv2": (8, 16), "vit": (32, 64)}
DEPTHS = {"resnet": (1, 2), "vgg": (1, 3), "mobilenetv2": (1, 2), "vit": (2, 4)}


@pytest.fixture(autouse=True)
def _one_thread():
    """Small-batch checks run single-threaded: with 2 threads, a CPU shared with another busy
    process makes torch's OpenMP workers spin and slows these tests 10-100x."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(name: str, **kwargs) -> nn.Sequential:
    torch.manual_seed(0)
    return create_model(name, **kwargs)


def test_registry_lists_all_models():
    assert list_models() == sorted(NAMES + PRETRAINED)
    assert set(MODELS) == set(NAMES + PRETRAINED)
    assert all(callable(fn) for fn in MODELS.values())


def test_register_model_decorator_adds_and_create_model_finds_it():
    @register_model("_tiny_test_model")
    def _tiny(*, num_classes=10, in_channels=1, image_size=28):
        head = nn.Sequential(nn.Flatten(1), nn.Linear(in_channels * image_size**2, num_classes))
        return nn.Sequential(OrderedDict(head=head))

    try:
        assert "_tiny_test_model" in list_models()
        m = create_model("_tiny_test_model", num_classes=3, image_size=4)
        assert m(torch.randn(2, 1, 4, 4)).shape == (2, 3)
        with pytest.raises(ConfigError, match="width"):
            create_model("_tiny_test_model", width=8)  # builder does not take width
        with pytest.raises(ConfigError, match="already registered"):
            register_model("_tiny_test_model")(lambda **kw: None)
    finally:
        MODELS.pop("_tiny_test_model", None)
    assert list_models() == sorted(NAMES + PRETRAINED)


@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes(name):
    m = build(name).eval()
    with torch.no_grad():
        assert m(torch.randn(4, 1, 28, 28)).shape == (4, 10)
        for size in (32, 64):
            m3 = build(name, in_channels=3, image_size=size, num_classes=7).eval()
            assert m3(torch.randn(4, 3, size, size)).shape == (4, 7)


@pytest.mark.parametrize("name", NAMES)
def test_width_and_depth_change_size(name):
    (w_small, w_big), (d_small, d_big) = WIDTHS[name], DEPTHS[name]
    assert n_params(build(name, width=w_small)) < n_params(build(name, width=w_big))
    shallow, deep = build(name, depth=d_small), build(name, depth=d_big)
    assert n_params(shallow) < n_params(deep)
    assert len(shallow) < len(deep)  # more depth means more freeze units
    with torch.no_grad():
        for m in (build(name, width=w_small), deep):
            assert m.eval()(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name", NAMES)
def test_freeze_unit_structure(name):
    m = build(name, num_classes=5)
    assert type(m) is nn.Sequential
    names = [n for n, _ in m.named_children()]
    assert names[-1] == "head"
    assert len(names) >= 4
    head_linears = [mod for mod in m.head.modules() if isinstance(mod, nn.Linear)]
    assert head_linears and head_linears[-1].out_features == 5
    # every parameter belongs to exactly one unit, and every unit owns parameters
    assert sum(n_params(child) for child in m.children()) == n_params(m)
    for unit_name, child in m.named_children():
        assert n_params(child) > 0, f"unit {unit_name} owns no parameters"
        convs_out = {c.out_channels for c in child.modules() if isinstance(c, nn.Conv2d)}
        for bn in (b for b in child.modules() if isinstance(b, nn.BatchNorm2d)):
            assert bn.num_features in convs_out, f"BatchNorm in {unit_name} without its conv"
    # no module computes in place
    for mod in m.modules():
        assert not getattr(mod, "inplace", False), f"{type(mod).__name__} is in-place"


def test_unit_names():
    assert [n for n, _ in build("resnet").named_children()] == [
        "stem", "block1_1", "block1_2", "block2_1", "block2_2", "block3_1", "block3_2", "head"
    ]
    assert [n for n, _ in build("vgg").named_children()] == [f"conv{i}" for i in range(1, 9)] + ["head"]
    assert [n for n, _ in build("mobilenetv2").named_children()] == [
        "stem", "block1_1", "block2_1", "block2_2", "block3_1", "block3_2",
        "block4_1", "block4_2", "block5_1", "conv_last", "head",
    ]
    assert [n for n, _ in build("vit").named_children()] == ["embed", "block1", "block2", "block3", "block4", "head"]
    vit = build("vit")
    assert isinstance(vit.embed.cls_token, nn.Parameter) and isinstance(vit.embed.pos_embed, nn.Parameter)
    assert vit.embed.pos_embed.shape == (1, 1 + 7 * 7, 64)


@pytest.mark.parametrize("name", NAMES)
def test_prefix_suffix_composition(name):
    m = build(name).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        full = m(x)
        for k in range(len(m) + 1):
            mid = m[:k](x)
            mid_copy = mid.clone()
            out = m[k:](mid)
            torch.testing.assert_close(out, full, rtol=0, atol=1e-6)
            assert torch.equal(mid, mid_copy), f"suffix from unit {k} modified its input in place"


@pytest.mark.parametrize("name", NAMES)
def test_suffix_trains_on_no_grad_prefix_output(name):
    m = build(name).train()
    k = len(m) // 2
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        cached = m[:k](x)
    m[k:](cached).sum().backward()
    for i, child in enumerate(m.children()):
        for p in child.parameters():
            assert (p.grad is not None) == (i >= k)


@pytest.mark.parametrize("name", NAMES)
def test_backward_gives_gradients_for_all_parameters(name):
    m = build(name).train()
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    nn.functional.cross_entropy(m(x), y).backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", NAMES)
def test_init_is_deterministic_under_seed(name):
    a, b = build(name).state_dict(), build(name).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _is_plain_chain(model: nn.Module) -> bool:
    """True if every module is a Sequential or a leaf: forward is then a pure chain, no skips."""
    return all(isinstance(mod, nn.Sequential) or not list(mod.children()) for mod in model.modules())


def test_vgg_has_no_skip_connections():
    assert _is_plain_chain(build("vgg"))
    assert _is_plain_chain(build("vgg", depth=3, width=8))
    # the check is meaningful: the residual models fail it
    assert not _is_plain_chain(build("resnet"))
    assert not _is_plain_chain(build("mobilenetv2"))


def test_vit_default_patch_size_and_validation():
    assert build("vit").embed.patch_size == 4
    assert build("vit", image_size=32, in_channels=3).embed.patch_size == 4
    assert build("vit", image_size=64, in_channels=3).embed.patch_size == 8
    assert build("vit", patch_size=7).embed.num_patches == 16
    with pytest.raises(ConfigError, match="patch_size 5 must divide image_size 28"):
        create_model("vit", patch_size=5)
    with pytest.raises(ConfigError, match="divisible by num_heads"):
        create_model("vit", width=30, num_heads=4)
    with pytest.raises(ConfigError, match="32x32"):
        build("vit", image_size=32)(torch.randn(1, 1, 28, 28))
    with pytest.raises(ConfigError):
        create_model("vit", drop=1.5)


def test_vit_dropout_option():
    m = build("vit", drop=0.1)
    assert any(isinstance(mod, nn.Dropout) and mod.p == 0.1 for mod in m.modules())


def test_unknown_model_name_lists_known_names():
    with pytest.raises(ConfigError) as exc:
        create_model("resnet50")
    for name in NAMES:
        assert name in str(exc.value)
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"width": 0}, "width"),
        ({"width": 2}, "width"),
        ({"depth": 0}, "depth"),
        ({"depth": 1000}, "depth"),
        ({"depth": 2.5}, "depth"),
        ({"num_classes": 0}, "num_classes"),
        ({"in_channels": 0}, "in_channels"),
        ({"bogus_option": 1}, "bogus_option"),
    ],
)
def test_bad_sizes_and_options_raise_config_error(kwargs, match):
    for name in NAMES:
        with pytest.raises(ConfigError, match=match):
            create_model(name, **kwargs)


@pytest.mark.integration  # times every model at batch 128
def test_print_size_and_speed_table():
    """Not a check: prints params and batch-128 fwd+bwd time (see with pytest -s)."""
    old_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
        rows, contended = [], False
        for name in NAMES:
            m = build(name).train()
            times = []
            for _ in range(4):  # the first call is a warm-up
                t0 = time.perf_counter()
                nn.functional.cross_entropy(m(x), y).backward()
                times.append(time.perf_counter() - t0)
                m.zero_grad(set_to_none=True)
                if times[0] > 2.0:  # CPU shared with a busy process: don't wait for meaningless numbers
                    contended = True
                    break
            times = sorted(times[1:] or times)
            rows.append((name, len(m), n_params(m), times[0] * 1e3, times[len(times) // 2] * 1e3))
    finally:
        torch.set_num_threads(old_threads)
    print("\nmodel        units   params   fwd+bwd@128 min / median (ms, 2 threads, 1x28x28)")
    for name, units, params, t_min, t_med in rows:
        print(f"{name:<12} {units:>5} {params:>8,}   {t_min:7.1f} / {t_med:7.1f}")
    if contended:
        print("(timings unreliable: the CPU is busy with another process)")
