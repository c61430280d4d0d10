"""The schedule-based methods (FreezeOut, linear, Composer's ``freeze_layers``) used as a user would,
on models frostline did not write: per-unit learning rates under the user's own LR scheduler, and
bad input that must be one clear ConfigError."""

import math
import warnings

import pytest
import torch
from torch import nn

import frostline
from frostline import ConfigError
from frostline.integrations.composer import freeze_layers

from outside_models import hf_bert, hf_gpt2, timm_vit_tiny

torch.set_num_threads(1)


def _decay_split(model, lr_no_decay=5e-4):
    """Hugging Face's usual two groups: weight decay off for biases and LayerNorm weights."""
    no_decay = ("bias", "LayerNorm.weight")
    named = list(model.named_parameters())
    return [{"params": [p for n, p in named if not any(k in n for k in no_decay)], "weight_decay": 0.01},
            {"params": [p for n, p in named if any(k in n for k in no_decay)], "weight_decay": 0.0, "lr": lr_no_decay}]


def test_freezeout_on_bert_is_the_users_warmup_schedule_times_each_units_cosine_down_to_its_freeze():
    transformers = pytest.importorskip("transformers")
    model, batch = hf_bert()
    total = 12
    optimizer = torch.optim.AdamW(_decay_split(model), lr=1e-3)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, 2, total)
    reference = torch.optim.AdamW([{**{k: v for k, v in g.items() if k != "params"}, "params": [torch.zeros(1)]}
                                   for g in _decay_split(model)], lr=1e-3)
    ref_scheduler = transformers.get_linear_schedule_with_warmup(reference, 2, total)  # the same, unsplit
    policy = frostline.FreezeOut(t_0=0.5, schedule="linear")
    freezer = frostline.Freezer(model, optimizer, policy, total)
    freezer.attach_scheduler(scheduler)
    last_lr = {}
    for step in range(total):
        model(**batch(2, step)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        reference.step()  # no gradients: only says it stepped
        ref_scheduler.step()
        for i in freezer.step():
            assert 0 < last_lr[i] < 0.3 * 1e-3  # annealed most of the way before it froze
        scales = policy.lr_scales(freezer.progress)
        for g in optimizer.param_groups:
            expected = ref_scheduler.get_last_lr()[g["frostline_group"]] * scales[g["frostline_unit"]]
            assert g["lr"] == pytest.approx(expected, rel=1e-9, abs=1e-15)
            if g["params"]:
                last_lr[g["frostline_unit"]] = g["lr"]
    assert len(optimizer.param_groups) == 2 * len(freezer.units)  # each (decay group, unit) pair
    # each unit froze at the first step whose fraction reached its t_i (the pooler's 11/12 too), the head never
    expected = [math.ceil(t * total - 1e-6) / total for t in policy.times[:-1]] + [None]
    assert list(freezer.frozen_at().values()) == pytest.approx(expected)


@pytest.mark.parametrize("make", [
    lambda opt, total: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / total),
    lambda opt, total: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total),
    lambda opt, total: torch.optim.lr_scheduler.StepLR(opt, 2, 0.5),
    lambda opt, total: __import__("transformers").get_linear_schedule_with_warmup(opt, 2, total),
    lambda opt, total: torch.optim.lr_scheduler.CyclicLR(opt, 0.01, 0.1, step_size_up=3),
], ids=["lambda", "cosine", "step", "hf-warmup", "cyclic"])
def test_a_scheduler_made_after_the_freezer_split_the_groups_is_not_scaled_twice(make):
    """Made after ``Freezer(..., example_input=x)``, a scheduler took the scaled lrs (lr / t_i) as its
    base lrs: attached, a closed-form one (LambdaLR, Hugging Face's) trained every unit at lr x scale x
    scale (3.6x the first unit's learning rate here), silently. Chainable ones (cosine, step) and those
    with base lrs of their own (cyclic) were right, and must stay so."""
    model, batch = hf_bert()
    total = 10
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    policy = frostline.FreezeOut(t_0=0.5, schedule="linear")
    freezer = frostline.Freezer(model, optimizer, policy, total, example_input=batch(2))
    scheduler = make(optimizer, total)  # after the split
    freezer.attach_scheduler(scheduler)
    reference = torch.optim.SGD([torch.zeros(1)], lr=0.1)
    ref_scheduler = make(reference, total)  # the same schedule, one group
    for step in range(6):
        model(**batch(2, step)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        reference.step()
        scheduler.step()
        ref_scheduler.step()
        freezer.step()
        scales = policy.lr_scales(freezer.progress)
        for g in optimizer.param_groups:
            assert g["lr"] == pytest.approx(ref_scheduler.get_last_lr()[0] * scales[g["frostline_unit"]], rel=1e-9)


@pytest.mark.parametrize("num_units", [2.5, "3", True, -1, [1, 2, 3]])
def test_freezeout_times_of_a_count_that_is_not_one_is_a_config_error(num_units):
    with pytest.raises(ConfigError, match="num_units"):
        frostline.freezeout_times(num_units)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))


@pytest.mark.parametrize("args, needle", [
    (lambda m: (m, m.parameters(), 1.0), "pass the optimizer, not model.parameters"),
    (lambda m: (m, list(m.parameters()), 1.0), "got Parameter"),
    (lambda m: (m, torch.optim.lr_scheduler.StepLR(torch.optim.SGD(m.parameters(), lr=0.1), 1), 1.0), "got StepLR"),
    (lambda m: (torch.optim.SGD(m.parameters(), lr=0.1), m, 1.0), "takes the model first"),
    (lambda m: (m, None, 3), "current_duration must be in \\[0, 1\\]"),  # an epoch passed for the fraction
    (lambda m: (m, None, -0.5), "current_duration"),
])
def test_freeze_layers_given_the_wrong_thing_says_so_and_freezes_nothing(args, needle):
    model = _mlp()
    with pytest.raises(ConfigError, match=needle):
        freeze_layers(*args(model), freeze_start=0.0)
    assert all(p.requires_grad for p in model.parameters())


def test_freeze_layers_says_which_parameters_no_leaf_layer_holds():
    """nn.MultiheadAttention's in_proj weights and a ViT's cls_token/pos_embed sit in modules with
    children: Composer's schedule never freezes them, so they train to the end, and the backward
    runs through every frozen layer to reach them. Said, not silent."""
    model = nn.Sequential(nn.Linear(8, 16), nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), nn.Linear(16, 2))
    with pytest.warns(UserWarning, match=r"never freezes \['1.self_attn.in_proj_weight', '1.self_attn.in_proj_bias'\]"):
        freeze_layers(model, None, 1.0, freeze_start=0.0)
    vit, _ = timm_vit_tiny()
    with pytest.warns(UserWarning, match=r"never freezes \['cls_token', 'pos_embed'\]"):
        freeze_layers(vit, torch.optim.AdamW(vit.parameters()), 1.0, freeze_start=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        freeze_layers(model, None, 0.2, freeze_start=0.5)  # nothing frozen yet: nothing to say


def test_freeze_layers_on_gpt2_with_two_optimizers_takes_frozen_weights_out_of_both():
    model, batch = hf_gpt2()
    body = [p for n, p in model.named_parameters() if not n.startswith("transformer.wte")]
    optimizers = [torch.optim.AdamW(body[: len(body) // 2]), torch.optim.AdamW(body[len(body) // 2:] + [model.lm_head.weight])]
    model(**batch(2)).loss.backward()
    for opt in optimizers:
        opt.step()
    with pytest.warns(UserWarning, match="shares a weight with the last layer"):  # wte is the first leaf
        depth, _ = freeze_layers(model, optimizers, 0.75, freeze_start=0.5)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert depth > 0 and any(p is model.lm_head.weight for p in frozen)  # Composer's semantics, said
    held = {id(p) for opt in optimizers for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in held for p in frozen)
    assert all(len(opt.state_dict()["state"]) == sum(len(g["params"]) for g in opt.param_groups) for opt in optimizers)


def test_an_attached_scheduler_pickles_as_the_scheduler_it_was():
    import io

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 3)
    freezer = frostline.Freezer(model, optimizer, frostline.FreezeOut(t_0=0.5), 10, units=["0", "1"])
    freezer.attach_scheduler(scheduler)
    buffer = io.BytesIO()
    torch.save({"scheduler": scheduler}, buffer)  # the object itself, as some training scripts keep it
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)["scheduler"]
    assert type(loaded) is torch.optim.lr_scheduler.StepLR
    assert loaded.state_dict() == scheduler.state_dict()
