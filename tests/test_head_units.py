"""``head_units``: the last N units form one head that keeps training (the fine-tuning habit of
leaving the top blocks trainable), in ``freeze_units``, the ``Freezer`` and ``frostline train``."""

import pytest
import torch
from torch import nn

from frostline import CheckpointError, ConfigError, Freezer, freeze_units
from frostline.lab.zoo import create_model
from frostline.policies import FreezePolicy


class FreezeAll(FreezePolicy):
    """Wants every unit frozen from the first step on."""

    name = "all"

    def decide(self, progress):
        return set(range(self.num_units))


def _step(model, optimizer, x, y):
    optimizer.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


def test_freeze_units_merges_the_last_units_into_one_head(batch):
    x, _ = batch
    model = create_model("resnet")
    plain = freeze_units(model, example_input=x)
    merged = freeze_units(model, example_input=x, head_units=3)
    assert [u.name for u in merged[:-1]] == [u.name for u in plain[:-3]]
    head = merged[-1]
    assert head.name == "+".join(u.name for u in plain[-3:])
    assert [id(p) for p in head.params] == [id(p) for u in plain[-3:] for p in u.params]
    assert head.module_names == [n for u in plain[-3:] for n in u.module_names]


def test_the_units_merged_into_the_head_keep_training(batch):
    """A policy that wants everything frozen gets all but the merged head: those parameters still
    get gradients, stay in the optimizer and move."""
    x, y = batch
    torch.manual_seed(0)
    model = create_model("resnet")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    freezer = Freezer(model, optimizer, FreezeAll(), 10, head_units=2, example_input=x)
    names = [n for n, _ in model.named_children()]
    assert freezer.unit_names == names[:-2] + [f"{names[-2]}+{names[-1]}"]
    _step(model, optimizer, x, y)
    freezer.step()
    assert freezer.frozen == set(range(len(names) - 2))
    kept = list(getattr(model, names[-2]).parameters())
    before = [p.detach().clone() for p in kept]
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert all(p.requires_grad and id(p) in in_optimizer for p in kept)
    _step(model, optimizer, x, y)
    assert all(p.grad is not None for p in kept)
    assert any(not torch.equal(b, p) for b, p in zip(before, kept))


def test_head_units_applies_to_units_found_at_the_first_forward_and_to_named_ones(batch):
    x, y = batch
    model = create_model("resnet")
    names = [n for n, _ in model.named_children()]
    traced = Freezer(model, torch.optim.SGD(model.parameters(), lr=0.1), "linear", 10, head_units=2)
    _step(model, torch.optim.SGD(model.parameters(), lr=0.0), x, y)
    assert traced.unit_names[-1] == f"{names[-2]}+{names[-1]}"
    named = Freezer(model, torch.optim.SGD(model.parameters(), lr=0.1), "linear", 10, units=names, head_units=2)
    assert named.unit_names == traced.unit_names


def test_a_head_of_every_unit_or_a_bad_count_is_one_clear_error(batch):
    x, _ = batch
    model = create_model("vgg")
    count = len(freeze_units(model, example_input=x))
    with pytest.raises(ConfigError, match=f"all {count} units .* nothing to freeze: use at most {count - 1}"):
        freeze_units(model, example_input=x, head_units=count)
    for bad in (0, 1.5, True):
        with pytest.raises(ConfigError, match="head_units"):
            Freezer(model, torch.optim.SGD(model.parameters(), lr=0.1), "linear", 10, head_units=bad)


def test_a_too_large_head_found_by_a_later_trace_is_said_as_it_is(batch):
    # a Freezer waiting for its first forward learns its units from whatever forward comes first,
    # here the one freeze_units runs on example_input: its error must not be blamed on the model
    x, _ = batch
    model = create_model("vgg")
    count = len(freeze_units(model, example_input=x))
    Freezer(model, torch.optim.SGD(model.parameters(), lr=0.1), "linear", 10, head_units=count)
    with pytest.raises(ConfigError, match=f"^head_units={count} would make all {count} units"):
        freeze_units(model, example_input=x)


def test_a_run_saved_with_another_head_does_not_resume(batch):
    x, y = batch
    model = create_model("resnet")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    freezer = Freezer(model, optimizer, "linear", 10, head_units=2, example_input=x)
    _step(model, optimizer, x, y)
    freezer.step()
    state = freezer.state_dict()
    other = Freezer(model, torch.optim.SGD(model.parameters(), lr=0.05), "linear", 10, example_input=x)
    with pytest.raises(CheckpointError, match="other units="):
        other.load_state_dict(state)
    same = Freezer(model, torch.optim.SGD(model.parameters(), lr=0.05), "linear", 10, head_units=2, example_input=x)
    same.load_state_dict(state)
    assert same.unit_names == freezer.unit_names
