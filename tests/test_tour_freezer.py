"""A user's tour of the plain-PyTorch Freezer: optimizers, copies of the model, bad input.

Each test is a set-up real users have that once misbehaved: LBFGS went on moving frozen
parameters, a model copied before its first forward (an EMA) re-ran the Freezer's set-up, and
wrong arguments failed deep inside with a bare TypeError or AttributeError.
"""

import copy
import io
import warnings

import pytest
import torch
from torch import nn

import frostline
from frostline import ConfigError, Freezer, ModelError

pytestmark = pytest.mark.usefixtures("one_thread")


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 2))


def _batch(i):
    g = torch.Generator().manual_seed(i)
    return torch.randn(16, 8, generator=g), torch.randint(0, 2, (16,), generator=g)


def _lbfgs_run(model, optimizer, freezer, steps):
    for i in steps:
        x, y = _batch(i)

        def closure():
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        optimizer.step(closure)
        freezer.step()


def _lbfgs_setup():
    model = _model()
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.1, history_size=5, max_iter=3)
    return model, optimizer, Freezer(model, optimizer, frostline.create_policy("linear", freeze_start=0), 10)


def test_lbfgs_stops_moving_frozen_parameters_and_resumes_exactly():
    """LBFGS steps the parameter list it took at construction; a frozen unit left there moved on
    along its curvature history."""
    model, optimizer, freezer = _lbfgs_setup()
    _lbfgs_run(model, optimizer, freezer, range(4))
    assert freezer.frozen
    frozen = [p.detach().clone() for i in sorted(freezer.frozen) for p in freezer.units[i].params]
    _lbfgs_run(model, optimizer, freezer, range(4, 10))
    after = [p for i in sorted(freezer.frozen) for p in freezer.units[i].params][:len(frozen)]
    assert all(torch.equal(a, b) for a, b in zip(frozen, after))

    # a resumed run ends where an uninterrupted one does
    ref_model, ref_opt, ref_freezer = _lbfgs_setup()
    _lbfgs_run(ref_model, ref_opt, ref_freezer, range(10))
    model, optimizer, freezer = _lbfgs_setup()
    _lbfgs_run(model, optimizer, freezer, range(5))
    buf = io.BytesIO()
    torch.save({"m": model.state_dict(), "o": optimizer.state_dict(), "f": freezer.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    model, optimizer, freezer = _lbfgs_setup()
    model.load_state_dict(saved["m"])
    freezer.load_state_dict(saved["f"])
    optimizer.load_state_dict(saved["o"])
    _lbfgs_run(model, optimizer, freezer, range(5, 10))
    assert all(torch.equal(a, b) for a, b in zip(ref_model.parameters(), model.parameters()))


def test_lbfgs_with_per_unit_learning_rates_is_a_config_error():
    """LBFGS takes one param group; FreezeOut (or a cool-down) needs one per unit: torch's own
    AssertionError came only at the first step."""
    model = _model()
    optimizer = torch.optim.LBFGS(model.parameters())
    with pytest.raises(ConfigError, match="LBFGS takes one param group"):
        Freezer(model, optimizer, frostline.FreezeOut(t_0=0.5), 10)
    with pytest.raises(ConfigError, match="LBFGS takes one param group.*cooldown"):
        Freezer(model, optimizer, "linear", 10, cooldown=2)


def test_a_copy_made_before_the_first_forward_does_not_set_the_freezer_up_again():
    """An EMA (AveragedModel deep-copies the model) or torch.save(model) made while the Freezer waits
    for its first forward carried the trace's hooks: the copy's forward re-ran the set-up (a crash
    in a hook), and the closures could not be pickled."""
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    freezer = Freezer(model, optimizer, frostline.FreezeOut(t_0=0.3), 8)
    ema = torch.optim.swa_utils.AveragedModel(model)
    buf = io.BytesIO()
    torch.save(model, buf)
    for i in range(8):
        x, y = _batch(i)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        freezer.step()
        ema.update_parameters(model)
        with torch.no_grad():
            ema(x)
    assert freezer.frozen == {0, 1, 2} and len(optimizer.param_groups) == 4
    buf.seek(0)
    copied = torch.load(buf, weights_only=False)
    copied(torch.randn(2, 8))  # its hooks do nothing
    assert freezer.unit_names == ["0", "2", "4", "6"]


def test_a_head_in_an_optimizer_of_its_own_is_not_warned_about():
    """The head never freezes (freeze_head=False), so a second optimizer for it is no problem; the
    warning about units the optimizer does not hold named it all the same."""
    model = _model()
    body = torch.optim.SGD([p for n, p in model.named_parameters() if not n.startswith("6.")], lr=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Freezer(model, body, "linear", 10, example_input=torch.randn(2, 8))
    assert not [w for w in caught if "holds no trainable parameter" in str(w.message)]
    with pytest.warns(UserWarning, match="holds no trainable parameter of unit\\(s\\) \\['6'\\]"):
        Freezer(model, body, "linear", 10, example_input=torch.randn(2, 8), freeze_head=True)  # the head freezes


@pytest.mark.parametrize("call, error, match", [
    (lambda m, o: Freezer(None, o, "linear", 10), ConfigError, "needs the model .an nn.Module"),
    (lambda m, o: Freezer(o, m, "linear", 10), ConfigError, "needs the model .an nn.Module"),
    (lambda m, o: Freezer(m, [o, o], "linear", 10), ConfigError, "takes one optimizer, got a list of 2"),
    (lambda m, o: Freezer(m, torch.optim.SGD, "linear", 10), ConfigError, "the class SGD .not an instance"),
    (lambda m, o: Freezer(m, o, "linear", 10, units=[0, 2, 4, 6]), ModelError, "pass names, not modules"),
    (lambda m, o: Freezer(m, o, "linear", 10, units=[m[0], m[2], m[4], m[6]]), ModelError, "pass names, not modules"),
    (lambda m, o: Freezer(m, o, "linear", 10, example_input=torch.randn(2, 9)), ModelError,
     "forward failed on example_input.*mat1 and mat2"),
    (lambda m, o: Freezer(m, o, "linear", 10, signals=["gradients"]), ConfigError, "signals must be a dict"),
    (lambda m, o: Freezer(m, o, "linear", 10, sync=True), ConfigError, "sync must have agree"),
    (lambda m, o: Freezer(m, o, "linear", 10).attach_scheduler(None), ConfigError, "needs an LR scheduler"),
    (lambda m, o: Freezer(m, o, "linear", 10).attach_scheduler(o), ConfigError, "needs an LR scheduler"),
    (lambda m, o: frostline.unfreeze(o), ConfigError, "unfreeze needs the model"),
])
def test_bad_input_is_one_clear_error(call, error, match):
    """Each of these failed deep inside (TypeError: 'int' object is not iterable, AttributeError:
    'NoneType' object has no attribute ...), or, for an optimizer passed as a scheduler, silently
    wrapped its step."""
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(error, match=match):
        call(model, optimizer)
    assert type(optimizer) is torch.optim.SGD  # not wrapped as a scheduler


def test_an_optimizer_in_the_message_is_named_not_printed():
    """The message once held the repr of every param group (or of the whole model)."""
    model = _model()
    with pytest.raises(ConfigError) as info:
        Freezer(model, list(model.parameters()), "linear", 10)
    assert len(str(info.value)) < 300 and "a list of 8 (Parameter)" in str(info.value)
    copy.deepcopy(model)  # nothing left behind on the model


def test_unfreeze_while_the_freezer_still_steps_is_said():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    freezer = frostline.Freezer(model, optimizer, frostline.create_policy("linear", freeze_start=0.0), 6,
                                units=["0", "1", "2"])
    x = torch.randn(8, 4)
    while not freezer.frozen:
        model(x).sum().backward()
        optimizer.step()
        freezer.step()
    frostline.unfreeze(model)
    with pytest.warns(UserWarning, match="train again .* while it still steps"):
        freezer.step()
