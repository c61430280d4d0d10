"""The cost estimate and step-time profile on models frostline did not write: a GPT-2 whose head is
its embedding, a LoRA BERT whose base weights never train."""

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import frostline
from frostline.errors import ConfigError

import outside_models


def _setup(builder, target_key=None):
    model, batch = builder()
    b = batch(2)
    inputs = {k: v for k, v in b.items() if k != "labels"}
    units = frostline.freeze_units(model, example_input=inputs)
    return model, units, inputs, (b["labels"] if target_key else None)


def _real_step_flops(model, units, inputs, target, frozen):
    """One real training step's FLOPs with ``frozen`` units frozen, the user's own freezes kept."""
    twin = copy.deepcopy(model).train()
    for i, u in enumerate(units):
        for p in (twin.get_parameter(n) for n in u.param_names):
            p.requires_grad_(p.requires_grad and i not in frozen)
    with FlopCounterMode(display=False) as counter:
        out = twin(**inputs).logits
        loss = nn.functional.cross_entropy(out, target) if target is not None else out.float().sum()
        loss.backward()
    return counter.get_total_flops()


def test_a_tied_head_keeps_backward_running_through_frozen_blocks():
    model, units, inputs, _ = _setup(outside_models.hf_gpt2)
    cost = frostline.measure_costs(model, units, inputs)
    for k in range(1, len(units)):  # the embedding trains with the head: every block still passes gradients
        assert cost.step_flops(range(k)) == _real_step_flops(model, units, inputs, None, set(range(k)))
    times = [0.0] * (len(units) - 1) + [None]
    # the activation cache refuses such a prefix: it saves nothing here
    assert frostline.estimate_speedup(cost, times, cached=True) == frostline.estimate_speedup(cost, times)


def test_a_tied_head_s_time_profile_claims_no_cache_saving():
    torch.set_num_threads(1)
    model, units, inputs, _ = _setup(outside_models.hf_gpt2)
    profile = frostline.profile_step_times(model, units, inputs, rounds=1, warmup=0, out_of_order=False)
    assert profile.grad_from[-1] == 0
    times = [0.0] * (len(units) - 1) + [None]
    assert frostline.estimate_speedup(profile, times, cached=True) == frostline.estimate_speedup(profile, times)


def test_lora_costs_count_the_adapters_not_the_frozen_base_weights():
    model, units, inputs, target = _setup(outside_models.peft_lora_bert, target_key="labels")
    cost = frostline.measure_costs(model, units, inputs, target)
    assert cost.full_step_flops == _real_step_flops(model, units, inputs, target, set())
    assert cost.step_flops({1}) == _real_step_flops(model, units, inputs, target, {1})
    # freezing one adapter layer out of order saves only its adapters' gradients: a few percent
    assert cost.units[1].backward_weight_flops < 0.1 * cost.units[1].backward_flops


def test_the_estimate_s_bad_inputs_are_one_config_error():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    x, y = torch.randn(4, 4), torch.randint(0, 2, (4,))
    units = frostline.freeze_units(model, example_input=x)
    cost = frostline.measure_costs(model, units, x, y)
    for times in (None, "abc", (t for t in [0.1, None, None]), {0: 0.1}):
        with pytest.raises(ConfigError, match="freeze_times must be a list"):
            frostline.estimate_speedup(cost, times)
    with pytest.raises(ConfigError, match="epoch_fraction"):
        frostline.estimate_speedup(cost, [0.5, None, None], cached=True, epoch_fraction="0.1")
    for bad_units in ("abc", ["0", "2", "4"]):
        with pytest.raises(ConfigError, match="freeze units"):
            frostline.measure_costs(model, bad_units, x, y)
        with pytest.raises(ConfigError, match="freeze units"):
            frostline.profile_step_times(model, bad_units, x, y)
    # a NumPy fraction is a fraction of training like any other
    assert frostline.estimate_speedup(cost, [np.float32(0.5), None, None]) == \
        frostline.estimate_speedup(cost, [0.5, None, None])
