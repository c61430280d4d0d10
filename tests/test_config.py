"""Settings have one source: each policy's registration. The recipe's config fields, the CLI flags
and their help, and the policy's arguments are derived from it; these tests walk that path for
every registered method and for a method registered here."""

import argparse
import dataclasses
import inspect
import math

import pytest

from frostline import ConfigError
from frostline.lab import config
from frostline.lab.cli import _add_config_flags, _config, build_parser
from frostline.lab.config import TrainConfig, make_policy, policy_kwargs, runtime_arguments
from frostline.policies import FreezePolicy, Hyperparameter, create_policy, list_policies, policy_spec, registry

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}

#: TrainConfig's fields and defaults before they were derived: old config.json files still resume.
BEFORE = {
    "model": "resnet", "dataset": "fashion-mnist", "method": "freezeout", "epochs": 5, "batch_size": 128,
    "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "lr_schedule": "cosine", "seed": 0,
    "train_subset": None, "val_size": None, "test_subset": None, "max_length": 128, "width": None, "depth": None,
    "device": "auto", "threads": None, "out": "runs/latest", "log_every": 20, "checkpoint_every": 200,
    "resume": None, "progress": True, "augment": False, "fixed_augmentation": False, "cache": "auto",
    "cache_dtype": "float32", "cache_memory_mb": 4096, "t_0": 0.8, "schedule": "cubic", "scale_lr": True,
    "const_time": False, "freeze_start": 0.5, "freeze_level": 1.0, "percentile": 50.0, "intervals": 20,
    "compile": False, "compile_backend": "inductor", "stages_per_epoch": None, "prefix_only": False,
    "reference": None, "probe_size": 256, "cka_window": 9, "cka_tolerance": 0.03, "cka_floor": 0.85,
    "predictor": None, "freeze_threshold": None, "history_window": 30, "tailor_size": 1024, "snapshots_per_epoch": 30,
}


#: Fields added since, each with a default that keeps an old config.json's run as it was.
ADDED = {"cooldown": 0, "speed_probe": 0, "freeze_end": 1.0, "head_units": 1}


def test_config_keeps_its_fields_and_defaults():
    assert dataclasses.asdict(TrainConfig()) == {**BEFORE, **ADDED}


def _other_value(hp: Hyperparameter):
    """A value different from the default, of the declared type."""
    if hp.type is bool:
        return not hp.default
    if hp.type is int:
        return (hp.default or 1) + 1
    if hp.type is float:
        return 0.25 if hp.default is None else hp.default / 2
    return "other" if hp.default is None else hp.default  # a str: the default is the one valid value we know


def _flag(field: str, value) -> list[str]:
    name = field.replace("_", "-")
    if isinstance(value, bool):
        return [f"--{name}" if value else f"--no-{name}"]
    return [f"--{name}", str(value)]


@pytest.mark.parametrize("method", list_policies())
def test_every_hyperparameter_travels_from_its_declaration_to_the_policy(method):
    spec, parser = policy_spec(method), build_parser()
    help_text = parser._subparsers._group_actions[0].choices["train"].format_help()
    for hp in spec.hyperparameters:
        field = FIELDS[hp.config_field]
        assert field.default in (hp.default, None) and method in field.metadata["methods"]
        assert hp.help in field.metadata["help"] and "--" + hp.config_field.replace("_", "-") in help_text
        value = _other_value(hp)
        args = parser.parse_args(["train", "--method", method, *_flag(hp.config_field, value)])
        cfg = _config(args, TrainConfig)
        assert getattr(cfg, hp.config_field) == value and policy_kwargs(cfg)[hp.name] == value
    # the defaults reach the policy as declared (None: "the policy's own", which it resolves)
    policy = make_policy(TrainConfig(method=method))
    for hp in spec.hyperparameters:
        if hp.name in policy.config() and hp.default is not None:
            assert policy.config()[hp.name] == hp.default, hp.name
    taken = set(inspect.signature(spec.cls).parameters)
    assert set(policy_kwargs(TrainConfig(method=method))) | set(spec.runtime) <= taken


def test_a_field_several_methods_declare_differently_defaults_to_each_methods_own():
    assert FIELDS["stages_per_epoch"].default is None
    assert make_policy(TrainConfig(method="cka-oracle")).config()["stages_per_epoch"] == 4
    assert make_policy(TrainConfig(method="smartfrz")).config()["stages_per_epoch"] == 1
    assert make_policy(TrainConfig(method="smartfrz", stages_per_epoch=2)).config()["stages_per_epoch"] == 2
    assert "cka-oracle 4, smartfrz 1" in FIELDS["stages_per_epoch"].metadata["help"]


def test_runtime_arguments_are_supplied_by_the_run_not_by_settings():
    for method in list_policies():
        supplied = runtime_arguments(TrainConfig(method=method, seed=7))
        assert set(supplied) <= set(policy_spec(method).runtime)
        assert not set(supplied) & {hp.config_field for hp in policy_spec(method).hyperparameters}
    assert runtime_arguments(TrainConfig(method="smartfrz", seed=7))["seed"] == 7
    assert make_policy(TrainConfig(method="smartfrz", seed=7)).config()["seed"] == 7


@pytest.fixture
def scratch_registry(monkeypatch):
    monkeypatch.setattr(registry, "POLICIES", dict(registry.POLICIES))
    monkeypatch.setattr(registry, "SPECS", dict(registry.SPECS))


def test_a_new_hyperparameter_is_one_declaration(scratch_registry):
    @registry.register_policy("toy", Hyperparameter("gamma", "how far the toy goes"), runtime=("steps_per_epoch",))
    class Toy(FreezePolicy):
        name = "toy"

        def __init__(self, gamma: float = 0.25, steps_per_epoch: int | None = None):
            super().__init__()
            self.gamma, self.steps_per_epoch = gamma, steps_per_epoch

    toy_config = dataclasses.make_dataclass("ToyConfig", [("method", str, "toy"), ("seed", int, 0),
                                                          *config._method_fields()])
    parser = argparse.ArgumentParser()
    _add_config_flags(parser, toy_config)
    assert "toy: how far the toy goes (default: 0.25)" in " ".join(parser.format_help().split())
    cfg = toy_config(**vars(parser.parse_args(["--gamma", "0.5"])))
    assert policy_kwargs(cfg) == {"gamma": 0.5}
    policy = create_policy("toy", **policy_kwargs(cfg), **runtime_arguments(cfg))
    assert policy.gamma == 0.5 and policy.steps_per_epoch == 10**9  # before the data is loaded: a placeholder


@pytest.mark.parametrize("declaration,needle", [
    (Hyperparameter("gama", "typo"), "must be an argument"),
    (Hyperparameter("gamma", "wrong default", default=0.3), "declared with default"),
    (Hyperparameter("path", "no type"), "declare its type"),
])
def test_a_bad_declaration_fails_at_import_with_what_to_do(scratch_registry, declaration, needle):
    class Toy(FreezePolicy):
        def __init__(self, gamma: float = 0.25, path=None):
            super().__init__()

    with pytest.raises(ConfigError, match=needle):
        registry.register_policy("toy", declaration)(Toy)
    with pytest.raises(ConfigError, match="runtime arguments"):
        registry.register_policy("toy", runtime=("probe",))(Toy)



def test_a_resumed_run_keeps_its_threads_unless_told_otherwise(tmp_path):
    """Resumed with torch's default threads, a run made with --threads 1 went on as another
    computation (77 of 92 tensors differed from the uninterrupted run) and several times slower."""
    import json
    from dataclasses import asdict

    (tmp_path / "config.json").write_text(json.dumps(asdict(TrainConfig(threads=1, width=8))))
    assert config.resumed_config(TrainConfig(resume=str(tmp_path))).threads == 1
    assert config.resumed_config(TrainConfig(resume=str(tmp_path), threads=2)).threads == 2


@pytest.mark.parametrize("settings, needle", [({"epochs": math.inf}, "finite number"), ({"threads": 0}, "threads"),
                                              ({"epochs": math.nan}, "finite number")])
def test_numbers_a_run_cannot_use_are_refused(settings, needle):
    with pytest.raises(ConfigError, match=needle):
        config.validate(TrainConfig(**settings))
