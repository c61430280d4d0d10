import dataclasses
import json

import pytest
import torch
from torch import nn

from frostline import CheckpointError, ConfigError, Freezer, Progress
from frostline.lab.cli import main
from frostline.lab.zoo import create_model
from frostline.policies import POLICIES, SmartFRZ
from frostline.policies.smartfrz import (SmartFRZPredictor, Tailor, batch_windows, load_predictor, save_predictor,
                                        window_context, window_features)
from frostline.lab.predictor.collect import LabelRule, label_stages, load_collected
from frostline.policies.smartfrz.history import History
from frostline.policies.smartfrz.predictor import SHIPPED
from frostline.policies.stages import StageClock

TINY = ["--train-subset", "256", "--val-size", "128", "--test-subset", "128", "--batch-size", "64",
        "--no-progress", "--threads", "1", "--width", "8"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _biased(freeze: bool, size: int = 1024) -> SmartFRZPredictor:
    """A predictor whose answer is fixed by its last bias (to test the policy's mechanics)."""
    torch.manual_seed(0)
    p = SmartFRZPredictor(size)
    with torch.no_grad():
        p.head[-1].weight.zero_()
        p.head[-1].bias.copy_(torch.tensor([-5.0, 5.0] if freeze else [5.0, -5.0]))
    return p


def test_tailor_reads_fixed_positions():
    lin, tiny = nn.Linear(100, 30), nn.Linear(3, 2)
    t = Tailor([list(lin.parameters()), list(tiny.parameters())], size=64, seed=3)
    a = t.sample(0, list(lin.parameters()))
    assert a.shape == (64,) and torch.equal(a, t.sample(0, list(lin.parameters())))
    with torch.no_grad():
        lin.weight.add_(1.0)
    b = t.sample(0, list(lin.parameters()))
    moved = (b - a).abs()
    assert ((moved - 1.0).abs() < 1e-6).sum() + (moved < 1e-6).sum() == 64  # the same positions, re-read
    small = t.sample(1, list(tiny.parameters()))
    assert torch.all(small[8:] == 0)  # 6 + 2 parameters (all of them, below), padded
    assert sorted(small[:8].tolist()) == sorted(torch.cat([p.detach().reshape(-1) for p in tiny.parameters()]).tolist())
    other = Tailor([list(lin.parameters())], size=64, seed=4).sample(0, list(lin.parameters()))
    assert not torch.equal(other, b)
    for bad in (0, -1, 2.5):
        with pytest.raises(ConfigError):
            Tailor([list(lin.parameters())], size=bad)


def test_predictor_is_the_papers_network_and_masks_padding():
    p = SmartFRZPredictor(1024)
    for mlp in (p.key, p.query, p.value):
        assert [(m.in_features, m.out_features) for m in mlp if isinstance(m, nn.Linear)] == [(1024, 256), (256, 256), (256, 64)]
    # the attention's 64 numbers, and the context: progress and four trajectory statistics
    assert [(m.in_features, m.out_features) for m in p.head if isinstance(m, nn.Linear)] == [(69, 32), (32, 2)]
    raw = torch.randn(5, 1024)
    w = window_features(raw)
    assert torch.allclose(w.mean(0), torch.zeros(1024), atol=1e-5) and w[-1].abs().sum() > 0  # centred
    x, mask = batch_windows([w, window_features(torch.randn(9, 1024))])
    assert x.shape == (2, 9, 1024) and mask[0].tolist() == [False] * 4 + [True] * 5
    c = window_context(raw, 0.5).unsqueeze(0)
    alone = p(w.unsqueeze(0), None, c)
    padded = p(x, mask, torch.cat([c, c]))[0:1]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_predictor_computes_the_network_it_describes():
    """The shipped predictor's logits are the described network's: keys and values through their
    whole MLPs on every snapshot, dot-product attention of the newest query, the head (the
    predictor skips the key's and value's last layer per row; that must change nothing)."""
    model, _ = load_predictor()
    g = torch.Generator().manual_seed(4)
    windows = [torch.randn(1024, generator=g) + torch.cumsum(s * torch.randn(n, 1024, generator=g), 0)
               for s, n in ((1e-3, 30), (3e-2, 12), (1e-1, 30))]
    x, mask = batch_windows([window_features(w) for w in windows])
    context = torch.stack([window_context(w, 0.4) for w in windows])
    with torch.no_grad():
        x_in = x * model.input_scale
        k, q, v = model.key(x_in), model.query(x_in[:, -1]), model.value(x_in)
        attn = torch.softmax((k @ q.unsqueeze(-1)).squeeze(-1).masked_fill(~mask, float("-inf")), dim=1)
        summary = (attn.unsqueeze(-1) * v).sum(dim=1)
        described = model.head(torch.cat([summary, (context - model.context_mean) / model.context_std], dim=1))
        assert torch.allclose(model(x, mask, context), described, atol=1e-4)


def test_predictor_output_changes_with_window_content():
    """The query is the newest snapshot's row, which depends on the whole window (not zero by
    construction): two windows that end at the same weights but got there differently get
    different answers, and so does a window that is only rescaled by its newest weights' size."""
    torch.manual_seed(0)
    p = SmartFRZPredictor(64)
    newest = torch.randn(64)
    still = torch.stack([newest + 1e-3 * torch.randn(64) for _ in range(7)] + [newest])
    drift = torch.stack([newest + (7 - t) * 0.2 * torch.randn(64) for t in range(7)] + [newest])
    a, b = (p(window_features(w).unsqueeze(0), None, window_context(w, 0.5).unsqueeze(0)) for w in (still, drift))
    assert not torch.allclose(a, b, atol=1e-4)
    q_still, q_drift = (p.query(window_features(w)[-1]) for w in (still, drift))
    assert not torch.allclose(q_still, q_drift, atol=1e-4)
    assert torch.allclose(window_features(3.0 * drift), window_features(drift), atol=1e-5)  # scale-free
    assert torch.allclose(window_context(3.0 * drift, 0.5), window_context(drift, 0.5), atol=1e-4)


def test_decisions_reuse_each_snapshot_and_answer_as_the_plain_network():
    """The policy projects each snapshot once and keeps its step length; its probabilities must be
    the predictor's own on the same windows (slid past the window size, of different lengths), and
    a run resumed between decisions must decide exactly as one that was not. (An epoch of 20
    snapshots: windows of 20 and of 30 are judged in one pass; the stage at the epoch's end never
    comes, the test asks itself.)"""
    model, _ = load_predictor()
    g = torch.Generator().manual_seed(1)
    trajectories = [torch.randn(1024, generator=g) + torch.cumsum(s * torch.randn(45, 1024, generator=g), 0)
                    for s in (1e-3, 1e-2, 3e-2, 1e-1)]
    policy = SmartFRZ(predictor=model, window=30, steps_per_epoch=1000, snapshots_per_epoch=20)
    policy.bind(["a", "b", "c", "d", "head"])
    for t in range(45):
        if t == 30:
            policy.freeze_probabilities(Progress(t, 100))  # projects the rows so far; later ones wait
            resumed = SmartFRZ(predictor=model, window=30, steps_per_epoch=1000, snapshots_per_epoch=20)
            resumed.bind(["a", "b", "c", "d", "head"])
            resumed.load_state_dict(policy.state_dict())
        rows = [w[t] if t >= 25 * (i % 2) else None for i, w in enumerate(trajectories)] + [torch.zeros(1024)]
        for p in (policy, resumed) if t >= 30 else (policy,):
            p.observe(Progress(t + 1, 100), {"tailored_weights": [None if r is None else r.clone() for r in rows]})
    windows = [w[25 * (i % 2):][-30:] for i, w in enumerate(trajectories)]
    assert [policy.history.length(i) for i in range(4)] == [30, 20, 30, 20]
    with torch.no_grad():
        x, mask = batch_windows([window_features(w) for w in windows])
        context = torch.stack([window_context(w, 0.45) for w in windows])
        plain = torch.softmax(model(x, mask, context), dim=1)[:, 1]
    mine = policy.freeze_probabilities(Progress(45, 100))
    assert torch.allclose(torch.tensor([mine[i] for i in range(4)]), plain, atol=1e-5)
    assert resumed.freeze_probabilities(Progress(45, 100)) == mine  # bit for bit
    full = policy.history.inputs([0, 2], model.project, 0.45)  # two full windows: the unpadded pass
    assert full[1] is None
    assert torch.allclose(torch.softmax(model.forward_projected(*full), dim=1)[:, 1], plain[[0, 2]], atol=1e-5)
    oldest = {**policy.state_dict()}  # a checkpoint from before the kept projections were key-value only
    oldest["history"] = {k: v for k, v in oldest["history"].items() if k not in ("projection", "steps")}
    oldest["history"]["projected"] = [[torch.zeros(768)] * policy.history.length(u) for u in range(5)]
    previous = {**policy.state_dict()}  # key-value projections, but no step lengths kept
    previous["history"] = {**{k: v for k, v in previous["history"].items() if k != "steps"}, "projection": "key-value"}
    for older in (oldest, previous):
        reloaded = SmartFRZ(predictor=model, window=30, steps_per_epoch=1000, snapshots_per_epoch=20)
        reloaded.bind(["a", "b", "c", "d", "head"])
        reloaded.load_state_dict(older)
        again = reloaded.freeze_probabilities(Progress(45, 100))
        assert torch.allclose(torch.tensor([again[i] for i in range(4)]), torch.tensor([mine[i] for i in range(4)]),
                              atol=1e-6)
    assert len(set(mine.values())) == 4  # the four trajectories are told apart


def test_decision_pass_follows_the_predictors_weights():
    """The decision's pass multiplies out the network's linear steps once and keeps them; a change
    to any weight or to the context's standardisation must reach its answers, as it reaches the
    plain network's."""
    torch.manual_seed(3)
    p = SmartFRZPredictor(64).eval()
    history = History(3, window=6)
    g = torch.Generator().manual_seed(5)
    walks = [torch.randn(64, generator=g) + torch.cumsum(s * torch.randn(6, 64, generator=g), 0) for s in (0.01, 0.3)]
    for t in range(6):
        history.add([walks[0][t], walks[1][t] if t >= 2 else None, None])

    def both():
        raw = [torch.stack(list(history.snapshots[u])) for u in (0, 1)]
        x, mask = batch_windows([window_features(w) for w in raw])
        context = torch.stack([window_context(w, 0.3) for w in raw])
        with torch.no_grad():
            return p(x, mask, context), p.forward_projected(*history.inputs([0, 1], p.project, 0.3))

    plain, decided = both()
    assert torch.allclose(plain, decided, atol=1e-5)
    with torch.no_grad():  # the encoders' first layers stay: the history keeps projections made with them
        p.query[2].weight.mul_(2.0)
        p.key[4].weight.mul_(1.5)
        p.value[2].weight.mul_(-1.0)
        p.head[0].bias.add_(0.5)
        p.context_std.mul_(3.0)
    plain_after, decided_after = both()
    assert not torch.allclose(plain, plain_after, atol=1e-3)
    assert torch.allclose(plain_after, decided_after, atol=1e-5)


def test_window_context_tells_drift_from_a_random_walk():
    """The trajectory statistics: a steady drift has net displacement equal to its path (ratio 1),
    a random walk of the same step size a much shorter one; a slowing unit's second-half path is
    shorter than its first; progress is passed through."""
    g = torch.Generator().manual_seed(0)
    start, direction = torch.randn(256, generator=g), torch.randn(256, generator=g)
    drift = start + torch.linspace(0, 1, 30)[:, None] * direction
    walk = start + 0.03 * torch.randn(30, 256, generator=g).cumsum(0)
    slowing = start + torch.sqrt(torch.linspace(0, 1, 30))[:, None] * direction
    c_drift, c_walk, c_slow = (window_context(w, 0.25) for w in (drift, walk, slowing))
    assert c_drift[0] == 0.25 and abs(float(c_drift[3]) - 1.0) < 1e-3 and float(c_walk[3]) < 0.5
    assert abs(float(c_drift[4])) < 0.1 and float(c_slow[4]) < -0.5  # 15 steps against 14: log(15/14)
    assert torch.isfinite(window_context(torch.ones(2, 8), 1.0)).all()  # no movement at all


def test_default_cadences_fit_every_epoch_length():
    """30 snapshots and 1 stage per epoch by default: an epoch of fewer steps (a small dataset)
    gets a snapshot every step, never an error."""
    for steps in (1, 2, 7, 24, 29, 30, 31, 430):
        policy = SmartFRZ(predictor=_biased(False), steps_per_epoch=steps)
        policy.bind(["a", "head"])
        snaps = [s for s in range(1, 3 * steps + 1) if policy.snapshots.is_stage_end(s)]
        assert len(snaps) == 3 * min(30, steps)
        assert [s for s in range(1, 3 * steps + 1) if policy.clock.is_stage_end(s)] == [steps, 2 * steps, 3 * steps]
        # the Freezer asks the policy at these steps only
        asked, s = [], 0
        while s <= 3 * steps:
            s = policy.next_call(Progress(s, 3 * steps))
            asked.append(s)
        assert asked[:-1] == snaps and asked[-1] > 3 * steps


@pytest.mark.integration  # 2 epochs of 12 resnet steps
def test_units_are_judged_only_from_an_epochs_window(synthetic):
    """The predictor learned "freeze" only from windows holding an epoch of snapshots: deciding
    four times an epoch, the always-freeze predictor freezes nothing before the first epoch ends and
    everything at its end; a run too short to fill a window says why nothing froze."""
    policy = SmartFRZ(predictor=_biased(True), steps_per_epoch=12, stages_per_epoch=4)
    assert policy.judged_from == 12  # an epoch of 12 steps holds 12 snapshots (fewer than the window of 30)
    fz = _run(policy, synthetic, steps=24)
    assert fz.frozen == set(range(len(fz.units) - 1))
    assert {e.step for e in fz.timeline} == {12} and {e.signal["snapshots"] for e in fz.timeline} == {12}
    with pytest.warns(UserWarning, match="held the 12 snapshots it is judged from"):
        short = _run(SmartFRZ(predictor=_biased(True), steps_per_epoch=12, stages_per_epoch=4), synthetic, steps=11,
                     total_steps=11)
    assert not short.frozen
    assert [SmartFRZ(predictor=_biased(True), steps_per_epoch=n).judged_from for n in (1, 2, 29, 430)] == [2, 2, 29, 30]
    assert SmartFRZ(predictor=_biased(True), stage_steps=4, snapshot_steps=1).judged_from == 30  # no epoch: the window


def test_stage_clock_next_end_is_the_next_step_that_closes_a_stage():
    for per_epoch, steps_per_epoch, every in [(1, 5, None), (3, 7, None), (4, 430, None), (30, 29, None),
                                              (2, 2, None), (1, None, 3), (1, None, 1)]:
        clock = StageClock(per_epoch, steps_per_epoch, every)
        for step in range(0, 40):
            assert clock.next_end(step) == next(s for s in range(step + 1, step + 1000) if clock.is_stage_end(s))


def test_labels_say_settled_and_never_untrained():
    """Units (columns): one that never learns (its CKA stays at its initial 0.95, as untrained early
    convolutions do), one that rises to the reference and settles at stage 6, one still rising at
    the end, and the head."""
    stages = 16
    init = torch.tensor([0.95, 0.2, 0.2, 0.1], dtype=torch.float64)
    cka = torch.zeros(stages, 4, dtype=torch.float64)
    cka[:, 0] = 0.95
    cka[:, 1] = torch.tensor([0.2 + 0.7 * min(k, 6) / 6 for k in range(stages)])
    cka[:, 2] = torch.tensor([0.2 + 0.7 * k / (stages - 1) for k in range(stages)])
    cka[:, 3] = 0.5
    labels = label_stages(cka, init, LabelRule())
    assert torch.all(labels[:, 0] == 0)  # untrained: never converged, however high its raw CKA
    assert labels[:, 1].tolist() == [0] * 10 + [1] * 6  # settled at stage 6, stable over 5 stages from 10
    assert labels[:, 2].sum() <= 2  # still moving until (nearly) the end
    assert torch.all(labels[:, 3] == -1)
    with pytest.raises(ConfigError):
        LabelRule(window=1).check()


def test_predictor_file_roundtrip_and_bad_files(tmp_path):
    p = SmartFRZPredictor(64, input_scale=3.0, threshold=0.8)
    path = save_predictor(p, tmp_path / "p.pt", {"note": "test"})
    q, meta = load_predictor(path)
    assert q.input_scale == 3.0 and q.threshold == 0.8 and meta["note"] == "test" and len(meta["sha256"]) == 16
    assert SmartFRZ(predictor=path, tailor_size=64, stage_steps=4, snapshot_steps=1).threshold == 0.8
    assert SmartFRZ(predictor=path, tailor_size=64, threshold=0.6, stage_steps=4, snapshot_steps=1).threshold == 0.6
    raw = torch.randn(6, 64)
    x, mask = batch_windows([window_features(raw)])
    c = window_context(raw, 0.3).unsqueeze(0)
    assert torch.allclose(p(x, mask, c), q(x, mask, c), atol=5e-2)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_predictor(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x80not a torch file at all")
    with pytest.raises(CheckpointError, match="corrupted"):
        load_predictor(tmp_path / "junk.pt")
    torch.save({"format": "frostline-smartfrz-predictor-3", "input_size": 1024, "input_scale": 1.0, "threshold": 0.5,
                "state_dict": p.state_dict()}, tmp_path / "shape.pt")  # 64-wide weights labelled 1024
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_predictor(tmp_path / "shape.pt")
    torch.save({"format": "frostline-smartfrz-predictor-2", "input_size": 64, "input_scale": 1.0, "threshold": 0.5,
                "state_dict": {}}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="older format"):
        load_predictor(tmp_path / "old.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a frostline SmartFRZ predictor"):
        load_predictor(tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="tailor"):
        SmartFRZ(predictor=path, tailor_size=1024, stage_steps=4, snapshot_steps=1)


def test_validation():
    assert POLICIES["smartfrz"] is SmartFRZ
    pred = _biased(True)
    for kw in [dict(window=0), dict(window=1), dict(window=-3), dict(tailor_size=0), dict(tailor_size=-1), dict(stages_per_epoch=0),
               dict(threshold=0), dict(threshold=1.0), dict(threshold="high")]:
        with pytest.raises(ConfigError):
            SmartFRZ(predictor=pred, steps_per_epoch=30, **kw)


def _run(policy, data, steps=8, total_steps=100):
    torch.manual_seed(0)
    model = create_model("resnet", width=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x0 = data.train.get_batch(torch.arange(16))[0]
    freezer = Freezer(model, opt, policy, total_steps, example_input=x0)
    model.train()
    for s in range(steps):
        x, y = data.train.get_batch(torch.arange(s * 32, s * 32 + 32) % len(data.train))
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        freezer.step()
    return freezer


@pytest.mark.integration  # 16 resnet steps
def test_policy_mechanics_on_real_training(synthetic):
    # snapshot every step, a stage every 4, a window of 4: the always-freeze predictor freezes every
    # unit but the head at the first stage
    fz = _run(SmartFRZ(predictor=_biased(True), stage_steps=4, snapshot_steps=1, window=4), synthetic)
    assert fz.frozen == set(range(len(fz.units) - 1))
    first = fz.timeline[0]
    assert first.step == 4 and first.signal["freeze_probability"] > 0.99 and first.signal["snapshots"] == 4
    assert all(fz.policy.history.length(u) == 0 for u in range(len(fz.units) - 1))  # frozen units' histories dropped
    assert fz.policy.history.length(len(fz.units) - 1) == 0  # the head never freezes: never read
    never = _run(SmartFRZ(predictor=_biased(False), stage_steps=4, snapshot_steps=1, window=3), synthetic)
    assert not never.frozen and all(never.policy.history.length(u) == 3 for u in range(len(never.units) - 1))  # window caps history
    # prefix_only: a unit that is not ready blocks every unit after it
    p = SmartFRZ(predictor=_biased(True), stage_steps=2, snapshot_steps=1, window=2, prefix_only=True)
    p.bind(["a", "b", "c", "head"])
    snap = [torch.randn(1024) for _ in range(4)]
    p.observe(Progress(1, 100), {"tailored_weights": snap})
    p.history.drop(1)  # b has too few snapshots to be judged
    p.observe(Progress(2, 100), {"tailored_weights": [s + 0.1 for s in snap]})
    assert p.decide(Progress(2, 100)) == {0}
    # resume
    q = SmartFRZ(predictor=_biased(True), stage_steps=2, snapshot_steps=1, window=2, prefix_only=True)
    q.bind(["a", "b", "c", "head"])
    q.load_state_dict(p.state_dict())
    assert q.decide(Progress(2, 100)) == {0} and [q.history.length(u) for u in range(4)] == [0, 1, 2, 0]
    r = SmartFRZ(predictor=_biased(True), stage_steps=2, snapshot_steps=1, window=5)
    r.bind(["a", "b", "c", "head"])
    with pytest.raises(CheckpointError):
        r.load_state_dict(p.state_dict())


def test_shipped_predictor_loads_and_tells_settled_from_moving_weights():
    model, meta = load_predictor()
    assert meta["path"] == str(SHIPPED) and model.input_size == 1024 and 0 < model.threshold < 1
    assert SHIPPED.stat().st_size < 5 * 2**20
    assert meta["trained_on"] and meta["heldout"] and meta["report"]["heldout"]["overall"]["samples"] > 0
    trained = {(r["model"], r["dataset"]) for r in meta["trained_on"]}
    assert ("mobilenetv2", "fashion-mnist") not in trained  # kept out: scripts/build_predictor.py HELDOUT_PAIRS
    # windows of 30 snapshots of 1024 weights of RMS 1: settled (tiny noise around a point) against
    # still learning (a steady drift of 20-300% of their size over the window, plus noise)
    g = torch.Generator().manual_seed(0)
    point = torch.randn(1024, generator=g)
    settled = [point + 1e-4 * torch.randn(30, 1024, generator=g) for _ in range(8)]
    direction = torch.randn(1024, generator=g)
    moving = [point + torch.linspace(-d, 0, 30)[:, None] * direction + 1e-3 * torch.randn(30, 1024, generator=g)
              for d in (0.2, 0.5, 1.0, 3.0)]
    x, mask = batch_windows([window_features(w) for w in settled + moving])
    for progress in (0.3, 0.6):  # at the same point of training, only the weights differ
        context = torch.stack([window_context(w, progress) for w in settled + moving])
        p = torch.softmax(model(x, mask, context), dim=1)[:, 1]
        assert p[:8].min() > p[8:].max(), (progress, p)


@pytest.mark.integration
def test_pipeline_end_to_end(tmp_path, capsys):
    runs = []
    for seed in (0, 1):
        out = tmp_path / f"col{seed}"
        chained = ["--reference", str(tmp_path / "col0" / "recording")] if seed else []  # seed 1 against seed 0
        assert main(["predictor", "collect", "--model", "resnet", "--epochs", "1", "--seed", str(seed), *chained,
                     "--snapshots-per-epoch", "4", "--stages-per-epoch", "4", *TINY, "--out", str(out)]) == 0
        runs.append(str(out))
    ds = load_collected(runs[0])
    assert ds["snapshots"].shape == (4, 8, 1024) and ds["labels"].shape == (4, 8)
    assert ds["cka_init"].shape == (8,) and ds["provenance"]["rule"] == dataclasses.asdict(LabelRule())
    assert ds["provenance"]["reference"]["seed"] == 1 and (tmp_path / "col0" / "reference").is_dir()
    assert load_collected(runs[1])["provenance"]["reference"]["seed"] == 0
    assert not (tmp_path / "col1" / "reference").exists()  # the chained reference was used, none trained
    assert torch.all(ds["labels"][:, -1] == -1)
    assert ds["cka"][-1, :-1].max() < 0.999  # another seed: the recording does not retrace the reference
    capsys.readouterr()
    code = main(["predictor", "collect", "--model", "resnet", "--epochs", "1", "--seed", "0", "--reference",
                 str(tmp_path / "col0" / "recording"), *TINY, "--out", str(tmp_path / "same")])
    err = capsys.readouterr().err
    assert code == 2 and "seed 0, the recording's own" in err, err
    capsys.readouterr()
    pred = tmp_path / "p.pt"
    # one-epoch runs on 256 images barely learn: a loose rule gives both labels
    loose = ["--label-window", "2", "--label-tolerance", "1", "--label-share", "0", "--label-min-learned", "0"]
    assert main(["predictor", "train", *runs, "--holdout", runs[1], "--epochs", "3", "--out", str(pred),
                 "--no-progress", *loose]) == 0
    text = capsys.readouterr().out
    assert "| heldout | resnet/fashion-mnist/w8/seed1 |" in text and "| train | resnet/fashion-mnist/w8/seed0 |" in text
    assert "heldout | resnet/fashion-mnist/w8/seed0" not in text
    _, meta = load_predictor(pred)
    assert meta["heldout"] == ["resnet/fashion-mnist/w8/seed1"]
    assert main(["predictor", "eval", runs[1], "--predictor", str(pred), *loose]) == 0
    assert "F1" in capsys.readouterr().out
    run = tmp_path / "smartfrz"
    assert main(["train", "--model", "resnet", "--method", "smartfrz", "--predictor", str(pred), "--epochs", "1",
                 "--snapshots-per-epoch", "4", "--stages-per-epoch", "2", *TINY, "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and (run / "timeline.png").exists()
    assert summary["policy"]["predictor_sha256"] == meta["sha256"]
    assert "profiling step times" in capsys.readouterr().err  # the predicted saving, after training
    for bad, needle in [(str(tmp_path / "nope.pt"), "does not exist"), (runs[0] + "/dataset.pt", "not a frostline")]:
        code = main(["train", "--method", "smartfrz", "--predictor", bad, *TINY, "--out", str(tmp_path / "x")])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and err.count("\n") == 1, err
    code = main(["train", "--method", "smartfrz", "--history-window", "0", *TINY, "--out", str(tmp_path / "x")])
    assert code == 2 and "window" in capsys.readouterr().err
