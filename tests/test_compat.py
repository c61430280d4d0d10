import math

import pytest
import torch
from torch import nn

from frostline import ConfigError
from frostline.integrations.composer import freeze_layers


def _model():
    torch.manual_seed(0)
    # registration order = depth-first leaves: conv, bn, (relu has no params), conv, bn, linear
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()),
        nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10),
    )


def _leaves(model):
    return [m for m in model.modules() if not list(m.children()) and list(m.parameters(recurse=False))]


@pytest.mark.parametrize("d,start,level", [(0.0, 0.5, 1.0), (0.5, 0.5, 1.0), (0.6, 0.5, 1.0), (0.8, 0.5, 1.0),
                                           (1.0, 0.5, 1.0), (0.9, 0.1, 0.5), (0.35, 0.1, 1.0)])
def test_composer_depth_formula(d, start, level):
    model = _model()
    depth, pct = freeze_layers(model, [], d, freeze_start=start, freeze_level=level)
    expected_pct = 0.0 if d <= start else level * (d - start) / (1 - start)
    n = len(_leaves(model))  # 5 layers with parameters
    assert pct == pytest.approx(expected_pct)
    assert depth == math.floor(expected_pct * (n - 1))
    frozen = [not any(p.requires_grad for p in m.parameters()) for m in _leaves(model)]
    assert frozen == [i < depth for i in range(n)]
    assert not frozen[-1]  # the last layer is never frozen


def test_frozen_layers_leave_optimizer_with_state_and_repeat_is_safe(batch):
    x, y = batch
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()  # creates Adam state for every parameter
    depth, _ = freeze_layers(model, opt, 0.9, freeze_start=0.5)
    depth_again, _ = freeze_layers(model, [opt], 0.9, freeze_start=0.5)
    assert depth == depth_again == 3
    frozen = [p for m in _leaves(model)[:depth] for p in m.parameters()]
    remaining = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in remaining for p in frozen)
    assert len(opt.state_dict()["state"]) == len(remaining)  # Composer raises KeyError here
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    assert all(p.grad is None for p in frozen)
    # cumulative: an earlier duration never unfreezes
    freeze_layers(model, opt, 0.0)
    assert not any(p.requires_grad for p in frozen)


@pytest.mark.parametrize("kw", [{"freeze_start": 1.0}, {"freeze_start": -0.1}, {"freeze_level": 1.5}, {"freeze_level": -1}])
def test_bad_arguments(kw):
    with pytest.raises(ConfigError):
        freeze_layers(_model(), [], 0.5, **kw)


@pytest.mark.parametrize("d", [math.nan, math.inf, -math.inf, "0.5", None])
def test_a_duration_that_is_not_a_finite_number_is_a_config_error(d):
    model = _model()
    with pytest.raises(ConfigError, match="current_duration"):
        freeze_layers(model, [], d)
    assert all(p.requires_grad for p in model.parameters())  # nothing frozen on the way


@pytest.mark.parametrize("kw", [{"freeze_start": "0.5"}, {"freeze_level": None}, {"freeze_start": True}])
def test_settings_of_the_wrong_kind_are_config_errors(kw):
    with pytest.raises(ConfigError, match=next(iter(kw))):
        freeze_layers(_model(), [], 0.5, **kw)


def test_a_model_without_parameters_has_depth_zero_as_in_composer():
    assert freeze_layers(nn.Sequential(nn.ReLU()), [], 0.75, 0.5, 1.0) == (0, 0.5)


@pytest.mark.parametrize("options,needle", [
    ({"policy_kwargs": {"freeze_start": "0.2"}}, "freeze_start"), ({"policy_kwargs": {"freeze_start": None}}, "freeze_start"),
    ({"policy": "freezeout", "policy_kwargs": {"scale_lr": "no"}}, "scale_lr"),
    ({"freeze_head": "yes"}, "freeze_head"), ({"units": "bert.encoder"}, "list of module names"),
])
def test_callback_options_of_the_wrong_kind_are_config_errors(options, needle):
    from frostline.integrations.callback_options import checked_options

    options = {"policy": "linear", "policy_kwargs": None, "cooldown": 0, "cache": "off", "cache_memory_mb": 4096,
               **options}
    with pytest.raises(ConfigError, match=needle):
        checked_options(options.pop("policy"), options.pop("policy_kwargs"), **options)
    assert checked_options("linear", {"freeze_start": 0}, 0, "off", 4096, units=["a", "b"], freeze_head=True)[1] == {
        "freeze_start": 0}


def test_a_layer_tied_to_the_head_is_frozen_as_composer_does_but_said():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.body, self.head = nn.Embedding(16, 8), nn.Linear(8, 8), nn.Linear(8, 16, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, ids):
            return self.head(self.body(self.embed(ids)))

    model = Tied()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(UserWarning, match="shares a weight with the last layer"):
        freeze_layers(model, optimizer, 1.0, freeze_start=0.0, freeze_level=1.0)
    assert not model.head.weight.requires_grad  # Composer's semantics, now said
