import math

import pytest

from frostline import ConfigError, FreezeOut, LinearFreezing, Progress, create_policy, freezeout_times


def test_freezeout_times_are_pre_cubed():
    times = freezeout_times(6, t_0=0.8, schedule="cubic")
    assert times[0] == pytest.approx(0.512)
    assert times[-1] == pytest.approx(1.0)
    assert times == pytest.approx([(0.8 + 0.2 * i / 5) ** 3 for i in range(6)])
    assert freezeout_times(3, t_0=0.5, schedule="linear") == pytest.approx([0.5, 0.75, 1.0])
    assert freezeout_times(3, t_0=0.5, schedule="squared") == pytest.approx([0.25, 0.5625, 1.0])


def test_freezeout_lr_scale_and_decisions():
    p = FreezeOut(t_0=0.5, schedule="linear", scale_lr=True)
    p.bind(["a", "b", "head"])
    s = p.lr_scales(Progress(0, 100))
    assert s == pytest.approx([2.0, 1 / 0.75, 1.0])
    s = p.lr_scales(Progress(25, 100))
    assert s[0] == pytest.approx(0.5 * 2.0 * (1 + math.cos(math.pi * 0.25 / 0.5)))
    assert p.decide(Progress(49, 100)) == set()
    assert p.decide(Progress(50, 100)) == {0}
    assert p.decide(Progress(100, 100)) == {0, 1}  # never the head
    unscaled = FreezeOut(t_0=0.5, schedule="linear", scale_lr=False)
    unscaled.bind(["a", "b", "head"])
    assert unscaled.lr_scales(Progress(0, 100)) == pytest.approx([1.0, 1.0, 1.0])


def test_linear_policy_matches_composer_schedule():
    p = LinearFreezing(freeze_start=0.5, freeze_level=1.0)
    p.bind([f"u{i}" for i in range(5)])
    assert p.decide(Progress(50, 100)) == set()
    assert p.decide(Progress(75, 100)) == {0, 1}
    assert p.decide(Progress(100, 100)) == {0, 1, 2, 3}


def test_linear_policy_with_an_early_end_has_frozen_all_but_the_head_by_then():
    p = LinearFreezing(freeze_start=0.0, freeze_level=1.0, freeze_end=0.5)
    p.bind([f"u{i}" for i in range(5)])
    assert p.decide(Progress(0, 100)) == set()
    assert p.decide(Progress(25, 100)) == {0, 1}  # twice as fast as the same schedule ending at 1
    assert p.decide(Progress(50, 100)) == {0, 1, 2, 3}
    assert p.decide(Progress(90, 100)) == {0, 1, 2, 3}  # held, never the head


@pytest.mark.parametrize("name,kw", [("freezeout", {"t_0": 1.0}), ("freezeout", {"t_0": -0.2}),
                                     ("freezeout", {"schedule": "quartic"}), ("linear", {"freeze_start": 1.0}),
                                     ("linear", {"freeze_level": 2.0}), ("nope", {}), ("linear", {"t_0": 0.5}),
                                     ("linear", {"freeze_start": 0.5, "freeze_end": 0.5}),
                                     ("linear", {"freeze_end": 1.5})])
def test_bad_policy_arguments(name, kw):
    with pytest.raises(ConfigError):
        create_policy(name, **kw)


# -- every numeric or flag hyperparameter of a built-in policy: one ConfigError, never a TypeError or a misread value
_STAGED = {"steps_per_epoch": 10}  # the runtime argument cka-oracle and smartfrz need


@pytest.mark.parametrize("name,field,value", [
    *[("linear", f, v) for f in ("freeze_start", "freeze_level", "freeze_end") for v in ("0.5", None, True, math.nan)],
    ("linear", "freeze_level", math.inf),
    *[("freezeout", "t_0", v) for v in ("0.8", None, False, math.nan)],
    *[("freezeout", "scale_lr", v) for v in ("no", 0, None)],
    ("freezeout", "schedule", ["cubic"]), ("freezeout", "schedule", "cosine"),
    *[("autofreeze", "percentile", v) for v in ("50", True, math.inf)],
    *[("cka-oracle", f, v) for f in ("tolerance", "floor") for v in ("0.1", None, True, math.nan, math.inf)],
    *[("cka-oracle", "prefix_only", v) for v in ("yes", 1)],
    *[("smartfrz", "threshold", v) for v in ("0.5", True, math.nan)],
    ("smartfrz", "prefix_only", "no"), ("smartfrz", "seed", "3"), ("smartfrz", "seed", True), ("smartfrz", "predictor", 5),
])
def test_a_hyperparameter_of_the_wrong_kind_is_one_config_error_naming_it(name, field, value):
    runtime = _STAGED if name in ("cka-oracle", "smartfrz") else {}
    with pytest.raises(ConfigError) as e:
        create_policy(name, **runtime, **{field: value})
    assert (field if field not in ("tolerance", "floor") else "cka_" + field) in str(e.value)
    if field == "schedule":
        assert "linear" in str(e.value) and "cubic" in str(e.value)  # the choices


def test_ints_and_numpy_numbers_still_pass_for_float_hyperparameters():
    import numpy as np

    assert LinearFreezing(freeze_start=0, freeze_level=1, freeze_end=1).config() == {
        "freeze_start": 0.0, "freeze_level": 1.0, "freeze_end": 1.0}
    assert FreezeOut(t_0=0, scale_lr=False).config() == {"t_0": 0.0, "schedule": "cubic", "scale_lr": False}
    assert create_policy("autofreeze", percentile=np.float64(50)).percentile == 50.0
    oracle = create_policy("cka-oracle", steps_per_epoch=10, tolerance=0, floor=1, prefix_only=True)
    assert (oracle.tolerance, oracle.floor, oracle.prefix_only) == (0.0, 1.0, True)
