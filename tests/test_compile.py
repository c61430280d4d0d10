"""Regional ``torch.compile`` under freezing: a freeze recompiles only the units it changes, frozen
units get no gradients, active ones keep training exactly as in eager mode.

The tests use the ``aot_eager`` backend: it runs dynamo's capture and AOTAutograd's forward/backward
split (where a stale graph would keep producing gradients for a frozen unit) without inductor's
C++ code generation, which takes tens of seconds per graph on this 2-core CPU."""

import copy
import json

import pytest
import torch

from frostline.lab.cli import main
from frostline.exploit.compiling import compile_stats, compile_units
from frostline.freezer import Freezer
from frostline.lab.zoo import create_model
from frostline.policies import create_policy
from frostline.units import freeze_units


@pytest.mark.integration  # dynamo tracing: about 5 s
def test_compiled_units_after_a_freeze_match_eager_and_recompile_only_what_changed(batch):
    torch.set_num_threads(1)  # tiny ops: a second thread only adds contention
    x, y = batch
    x, y = x[:16], y[:16]
    eager = create_model("vit", width=16, depth=3, num_heads=2)
    compiled = copy.deepcopy(eager)
    names = [n for n, _ in eager.named_children()]  # embed, block1..3, head
    pairs = []
    for model in (eager, compiled):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        pairs.append((model, opt, Freezer(model, opt, create_policy("none"), 100, units=names)))
    assert compile_units(freeze_units(compiled, example_input=x[:2]), backend="aot_eager") == len(names)

    def step(model, opt):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    def train(steps):
        for _ in range(steps):
            losses = [step(m, o) for m, o, _ in pairs]
            torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)

    start = compile_stats()["graphs"]
    train(3)
    first = compile_stats()["graphs"] - start
    assert 1 <= first <= len(names)  # identical blocks share one graph

    before = {n: p.detach().clone() for n, p in compiled.named_parameters()}
    for _, _, freezer in pairs:
        freezer.freeze(0)
        freezer.freeze(1)
    mark = compile_stats()["graphs"]
    train(3)
    after_freeze = compile_stats()["graphs"] - mark
    # new graphs for the frozen embed and block1, and for block2 whose input no longer needs grad; not for the rest
    assert 1 <= after_freeze <= 3
    mark = compile_stats()["graphs"]
    train(2)
    assert compile_stats()["graphs"] == mark  # no recompiling once the new graphs exist

    for name, p in compiled.named_parameters():
        if name.startswith(("embed.", "block1.")):
            assert p.grad is None and not p.requires_grad and torch.equal(p, before[name])
        else:
            assert p.grad is not None and not torch.equal(p, before[name]), name
    for (n, p), (_, q) in zip(compiled.named_parameters(), eager.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=n)


@pytest.mark.integration
def test_train_with_compile_reports_graph_counts(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    args = ["--model", "vit", "--width", "16", "--depth", "2", "--method", "freezeout", "--t-0", "0.3",
            "--schedule", "linear", "--epochs", "1", "--train-subset", "128", "--val-size", "32", "--test-subset", "32",
            "--batch-size", "16", "--threads", "1", "--no-progress", "--cache", "off"]
    assert main(["train", *args, "--compile", "--compile-backend", "aot_eager", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    c = s["compile"]
    assert c["backend"] == "aot_eager" and c["modules_compiled"] == 4
    assert sum(v is not None for v in s["frozen_at"].values()) == 3
    # the first steps compiled one graph per distinct unit; each of the 3 freezes adds at most the two
    # graphs of the units it changes (evaluation runs eager and adds none)
    assert 1 <= c["graphs_before_first_freeze"] <= 4 and c["graphs"] - c["graphs_before_first_freeze"] <= 2 * 3
    assert c["graphs"] == c["graphs_per_step"][-1]["graphs"]
    assert main(["train", *args, "--compile", "--compile-backend", "nope", "--out", str(tmp_path / "bad")]) == 2
