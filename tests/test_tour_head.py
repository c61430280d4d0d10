"""``head_units`` on models frostline did not write, the way a fine-tuning user meets it: units
merged by ``freeze_units`` handed to a Freezer, and a run resumed with another head."""

import pytest
import torch

import frostline
from frostline import CheckpointError, ConfigError, Freezer
from outside_models import forward, hf_bert, hf_gpt2, loss_of

pytestmark = pytest.mark.usefixtures("one_thread")


def _train(model, batch_of, freezer, optimizer, steps):
    for s in range(steps):
        batch = batch_of(4, s)
        optimizer.zero_grad()
        loss_of(forward(model, batch), batch).backward()
        optimizer.step()
        freezer.step()


def test_units_merged_by_freeze_units_are_not_merged_again_by_the_freezer():
    """``freeze_units(..., head_units=3)`` then ``Freezer(units=those, head_units=3)`` silently merged
    the head again with the two units before it (five BERT units kept training, not three)."""
    model, batch_of = hf_bert()
    units = frostline.freeze_units(model, example_input=batch_of(2), head_units=3)
    head = units[-1].name
    with pytest.raises(ConfigError, match="already merges the last 3 units.*pass head_units once"):
        Freezer(model, torch.optim.AdamW(model.parameters()), "linear", 10, units=units, head_units=3)
    freezer = Freezer(model, torch.optim.AdamW(model.parameters()), "linear", 10, units=units)
    assert freezer.unit_names[-1] == head and head.count("+") == 2


def test_a_traced_freezer_does_not_resume_a_run_with_another_head():
    """A Freezer that traces its units (the HF callback's) takes them from the saved state on resume:
    a head_units changed between the runs was silently dropped, the old head kept. Same head_units
    resumes, and the resumed run's state resumes again; a Freezer whose units are known already
    names head_units in its mismatch error."""
    model, batch_of = hf_gpt2()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    freezer = Freezer(model, optimizer, "linear", 10, head_units=3)
    _train(model, batch_of, freezer, optimizer, 6)
    state = freezer.state_dict()

    def fresh(head_units, **kw):
        return Freezer(model, torch.optim.AdamW(model.parameters(), lr=1e-3), "linear", 10, head_units=head_units, **kw)

    with pytest.raises(CheckpointError, match="head_units=3, this one 2"):
        fresh(2).load_state_dict(state)
    with pytest.raises(CheckpointError, match="head_units="):
        fresh(2, example_input=batch_of(2)).load_state_dict(state)
    same = fresh(3)
    same.load_state_dict(state)
    assert same.unit_names == freezer.unit_names and same.frozen == freezer.frozen
    again = fresh(3)
    again.load_state_dict(same.state_dict())  # a resumed run's checkpoint keeps its head
    assert again.unit_names == freezer.unit_names
