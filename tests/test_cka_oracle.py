import copy

import pytest
import torch
from torch import nn

from frostline import CheckpointError, ConfigError, Freezer, NoFreezing, Progress, linear_cka
from frostline.cka import centered_gram, cka_from_grams
from frostline.lab.cli import main
from frostline.lab.zoo import create_model
from frostline.policies import POLICIES, CKAOracle, cka_ready, create_policy
from frostline.policies.cka_oracle import normalised_cka
from frostline.signals import ReferenceCKA, quiet_eval

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = ["--train-subset", "256", "--val-size", "128", "--test-subset", "128", "--batch-size", "64",
        "--no-progress", "--threads", "1"]


def test_rule():
    c0 = 0.5  # normalised: n = (c - 0.5) / 0.5
    assert not cka_ready([0.99, 0.99], c0, 3, 0.05, 0.8)  # too few stages
    assert cka_ready([0.6, 0.95, 0.96, 0.95], c0, 3, 0.05, 0.8)  # n = 0.9, 0.92, 0.9
    assert not cka_ready([0.8, 0.9, 0.99], c0, 3, 0.05, 0.8)  # still moving: n spread 0.38
    assert not cka_ready([0.8, 0.8, 0.8], c0, 3, 0.05, 0.8)  # stable but n = 0.6 < floor
    assert not cka_ready([0.99, float("nan"), 0.99], c0, 3, 0.05, 0.8)
    assert not cka_ready([0.99] * 3, None, 3, 0.05, 0.8)  # no initial value: cannot normalise
    assert not cka_ready([1.0] * 3, 1.0, 3, 0.05, 0.8)  # identical from the start: nothing to normalise by
    assert normalised_cka([0.5, 0.75, 1.0], 0.5) == pytest.approx([0.0, 0.5, 1.0])
    for kw in [dict(window=1), dict(window=0), dict(tolerance=-0.1), dict(floor=1.5), dict(floor=0),
               dict(stages_per_epoch=0), dict(window=2.5)]:
        with pytest.raises(ConfigError):
            CKAOracle(steps_per_epoch=10, **kw)
    with pytest.raises(ConfigError):
        CKAOracle()  # no stage length
    assert POLICIES["cka-oracle"] is CKAOracle


def test_an_untrained_unit_is_never_ready():
    """Raw CKA between untrained networks is high on early layers (0.9-0.99 measured); a unit that
    does not learn keeps its initial CKA however high it is, so its normalised CKA stays 0."""
    for c0 in (0.5, 0.9, 0.95, 0.99, 0.999):
        assert not cka_ready([c0] * 10, c0, 5, 0.05, 0.8)
    p = create_policy("cka-oracle", stage_steps=2, window=3)
    p.bind(["a", "b", "head"])
    assert _fed(p, [[0.97, 0.95, 0.3]] * 8, initial=[0.97, 0.1, 0.2]) == {1}  # a never moved from 0.97


def test_gram_form_equals_linear_cka(batch):
    x, _ = batch
    a = torch.randn(64, 300, dtype=torch.float64)
    b = a @ torch.randn(300, 40, dtype=torch.float64) + 0.1 * torch.randn(64, 40, dtype=torch.float64)
    assert cka_from_grams(centered_gram(a), centered_gram(b)) == pytest.approx(linear_cka(a, b), abs=1e-12)
    assert cka_from_grams(centered_gram(x), centered_gram(x)) == pytest.approx(1.0, abs=1e-12)


def _model():
    torch.manual_seed(0)
    return create_model("resnet", width=8)


def test_probe_leaves_bn_stats_rng_and_modes_alone(batch):
    x, y = batch
    model = _model()
    model.train()
    bn_before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    rng = torch.get_rng_state()
    freezer = Freezer(model, torch.optim.SGD(model.parameters(), lr=0.1), NoFreezing(), 10,
                      example_input=x[:4], signals={"cka": ReferenceCKA(copy.deepcopy(model), x[:32])})
    values = freezer.collect_signals({"cka"})["cka"]
    assert values == pytest.approx([1.0] * len(freezer.units), abs=1e-9)  # identical models
    assert all(m.training for m in model.modules())
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        if "running" in k:
            assert torch.equal(v, bn_before[k]), k
    with quiet_eval([model]):
        assert not any(m.training for m in model.modules())
    assert all(m.training for m in model.modules())


def test_collecting_does_not_change_training(synthetic):
    """A run with the CKA oracle that never freezes (floor 1.0 is never reached exactly) ends with
    the same weights, bit for bit, as a run without any freezing: the probe forwards leave BN
    statistics, dropout RNG and the data order alone."""
    def run(policy_factory):
        torch.manual_seed(1)
        model = create_model("vit", width=32, depth=2, drop=0.1)  # dropout consumes the RNG
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        x0 = synthetic.train.get_batch(torch.arange(16))[0]
        freezer = Freezer(model, opt, policy_factory(model, x0), 8, example_input=x0)
        model.train()
        for s in range(8):
            x, y = synthetic.train.get_batch(torch.arange(s * 32, s * 32 + 32))
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            freezer.step()
        return model.state_dict(), freezer

    plain, _ = run(lambda m, x: NoFreezing())
    probed, fz = run(lambda m, x: CKAOracle(reference=copy.deepcopy(m), probe=x, stage_steps=2, floor=1.0))
    assert fz.policy.stages_done == 4 and not fz.frozen
    assert all(len(h) == 4 for h in fz.policy.history)
    for k in plain:
        assert torch.equal(plain[k], probed[k]), k


def _fed(policy, values_per_stage, initial=None):
    """Feed the CKA at the first step (``initial``, default 0.1 everywhere), then one value per stage."""
    if not any(v is not None for v in policy.initial):
        assert policy.wants(Progress(1, 100)) == {"cka"}
        policy.observe(Progress(1, 100), {"cka": initial or [0.1] * len(values_per_stage[0])})
    for stage, values in enumerate(values_per_stage, start=1):
        progress = Progress(stage * 2, 100)
        assert policy.wants(progress) == {"cka"} and not policy.wants(Progress(stage * 2 + 1, 100))
        policy.observe(progress, {"cka": values})
    return policy.decide(Progress(len(values_per_stage) * 2, 100))


def test_decisions_prefix_only_reasons_and_resume():
    names = ["a", "b", "c", "head"]
    stable_b = [[0.5 + 0.1 * s, 0.95, 0.6 + 0.1 * s, 0.3] for s in range(3)]
    p = create_policy("cka-oracle", stage_steps=2, window=3)
    p.bind(names)
    assert _fed(p, stable_b) == {1}  # non-sequential: b is ready, a (moving) is not, head never
    r = p.reason(1)
    assert r["cka"] == 0.95 and r["normalised_cka"] == pytest.approx(0.85 / 0.9) and r["stage"] == 3
    q = create_policy("cka-oracle", stage_steps=2, window=3, prefix_only=True)
    q.bind(names)
    assert _fed(q, stable_b) == set()  # b waits for a
    assert _fed(q, [[0.97, 0.95, 0.7, 0.3]] * 3) == {0, 1}  # a stabilises: prefix a, b
    # resume: a fresh policy continues with the same history and decisions
    r2 = create_policy("cka-oracle", stage_steps=2, window=3, prefix_only=True)
    r2.bind(names)
    r2.load_state_dict(q.state_dict())
    assert r2.decide(Progress(12, 100)) == {0, 1} and r2.history == q.history and r2.initial == q.initial
    other = create_policy("cka-oracle", stage_steps=2, window=4, prefix_only=True)
    other.bind(names)
    with pytest.raises(CheckpointError):
        other.load_state_dict(q.state_dict())


def test_freezer_needs_a_reference(batch):
    model = _model()
    with pytest.raises(ConfigError, match="reference"):
        Freezer(model, torch.optim.SGD(model.parameters(), lr=0.1), CKAOracle(stage_steps=2), 10,
                example_input=batch[0][:4])


@pytest.mark.integration
def test_train_end_to_end_and_bad_references(tmp_path, capsys):
    ref = tmp_path / "ref"
    assert main(["train", "--model", "resnet", "--width", "8", "--method", "none", "--epochs", "1", *TINY,
                 "--out", str(ref)]) == 0
    run = tmp_path / "cka"
    assert main(["train", "--model", "resnet", "--width", "8", "--method", "cka-oracle", "--reference", str(ref),
                 "--epochs", "2", "--stages-per-epoch", "4", "--cka-window", "5", "--cka-tolerance", "0.5", "--cka-floor", "0.05",
                 "--probe-size", "64", *TINY, "--out", str(run)]) == 0
    import json

    from frostline.lab.loop import iterate_batches
    from frostline.lab.reference import load_finished_run

    cfg, model, data = load_finished_run(ref)  # a finished run rebuilt from its folder answers as it reported
    right = sum(int((model(x).argmax(1) == y).sum()) for _, x, y in iterate_batches(data.test, 256, shuffle=False))
    assert cfg["model"] == "resnet" and 100 * right / len(data.test) == pytest.approx(
        json.loads((ref / "summary.json").read_text())["test_accuracy"], abs=1e-6)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and (run / "timeline.png").exists()
    assert summary["timeline"], "with a loose rule some unit must freeze in 8 stages"
    for event in summary["timeline"]:
        window = event["signal"]["normalised_window"]
        assert min(window) >= 0.05 and max(window) - min(window) <= 0.5
    capsys.readouterr()
    cases = [
        (["--model", "vgg", "--width", "8", "--reference", str(ref)], "'resnet' run, this run trains 'vgg'"),
        (["--model", "resnet", "--width", "16", "--reference", str(ref)], "do not fit"),
        (["--model", "resnet", "--width", "8", "--reference", str(tmp_path / "nowhere")], "not a folder"),
        (["--model", "resnet", "--width", "8"], "--reference"),
    ]
    (tmp_path / "unfinished").mkdir()
    cases.append((["--model", "resnet", "--width", "8", "--reference", str(tmp_path / "unfinished")], "no model.pt"))
    for args, needle in cases:
        code = main(["train", "--method", "cka-oracle", "--epochs", "1", *args, *TINY, "--out", str(tmp_path / "bad")])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and err.count("\n") == 1, err
