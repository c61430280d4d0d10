"""A user's tour of compiling and of DDP in a plain loop: bad arguments get one ConfigError, a
compiled model trains like the eager one after a freeze, and two gloo ranks with per-rank AutoFreeze
signals freeze the same units at the same step and stay bit-identical."""

import copy
import datetime
import gc
import os
import socket
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import frostline
from frostline.errors import ConfigError
from frostline.exploit.compiling import compile_stats, compile_units
from frostline.exploit.distributed import DecisionSync, ReplicatedModel


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2))


def test_compile_units_rejects_what_is_not_units_or_a_backend_and_takes_a_callable_backend():
    model = _mlp()
    units = frostline.freeze_units(model, example_input=torch.randn(2, 8))
    for bad in (["0", "2", "4"], model, units[0]):
        with pytest.raises(ConfigError, match="FreezeUnits"):
            compile_units(bad, backend="eager")
    with pytest.raises(ConfigError, match="backend"):
        compile_units(units, backend=["eager"])
    # torch.compile takes a callable backend; so does compile_units
    assert compile_units(units, backend=lambda gm, example_inputs: gm.forward) == sum(len(u.modules) for u in units)
    assert model(torch.randn(2, 8)).shape == (2, 2)


def test_decision_sync_and_replicated_model_reject_bad_arguments(monkeypatch):
    rebuild = ReplicatedModel(_mlp(), "cpu").rebuild  # a device string is taken (it is a torch.device)
    with pytest.raises(ConfigError, match="on_freeze="):
        DecisionSync(rebuild)  # the callback passed where the device goes
    with pytest.raises(ConfigError, match="callable"):
        DecisionSync(on_freeze=5)
    with pytest.raises(ConfigError, match="plain nn.Module"):
        ReplicatedModel("net", torch.device("cpu"))
    with pytest.raises(ConfigError, match="device"):
        ReplicatedModel(_mlp(), 0.5)
    # launched as 2 processes but no process group: the ranks would decide alone
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="init_process_group"):
        DecisionSync().agree({0}, set(), 3, 1)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert DecisionSync().agree({0}, set(), 3, 1) == {0}  # one process: the policy's own decision


@pytest.mark.integration  # dynamo tracing with aot_eager: a few seconds
def test_whole_model_compile_with_example_input_trains_like_eager_through_a_freeze():
    torch.set_num_threads(1)
    eager = _mlp()
    compiled_model = copy.deepcopy(eager)
    x, y = torch.randn(16, 8), torch.randint(0, 2, (16,))
    runs = []
    for model, net in ((eager, eager), (compiled_model, torch.compile(compiled_model, backend="aot_eager"))):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # example_input given: no warning about finding units
            runs.append((net, opt, frostline.Freezer(net, opt, frostline.create_policy("none"), 10, example_input=x)))
    graphs = []
    for s in range(6):
        if s == 3:
            for _, _, freezer in runs:
                freezer.freeze(0)
        losses = []
        for net, opt, freezer in runs:
            loss = nn.functional.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            freezer.step()
            losses.append(loss.detach())
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=1e-7)
        graphs.append(compile_stats()["graphs"])
    assert graphs[1] == graphs[2] and graphs[3] == graphs[2] + 1 and graphs[5] == graphs[3]  # one recompile per freeze
    assert compiled_model[0].weight.grad is None and compiled_model[2].weight.grad is not None


# -- two gloo ranks, AutoFreeze on each rank's own shard -------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _autofreeze_worker(rank, port, outdir, rebuild):
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=10))
    try:
        torch.save(_autofreeze_run(rank, rebuild), os.path.join(outdir, f"rank{rank}.pt"))
    finally:
        # the run's DDP reducers hold the gloo group; one freed at interpreter exit, after the group
        # is destroyed, aborts the process now and then: free them while the group is alive
        gc.collect()
        dist.destroy_process_group()


def _autofreeze_run(rank, rebuild):
    result = {"freezes": [], "error": None, "warnings": []}
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16),
                          nn.Tanh(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    policy = frostline.create_policy("autofreeze", percentile=50, interval_steps=3)
    sync = DecisionSync()
    freezer = frostline.Freezer(model, opt, policy, 30, units=["0", "2", "4", "6"], sync=sync)
    if rebuild:
        net = ReplicatedModel(model, torch.device("cpu"))
        sync.on_freeze = net.rebuild
    else:  # the user's own DDP, never rebuilt
        net = nn.parallel.DistributedDataParallel(model, find_unused_parameters=False)
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own data: its own gradient signals
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            for _ in range(30):
                x = torch.randn(8, 8, generator=g)
                loss = nn.functional.cross_entropy(net(x), (x[:, 0] > 0).long())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                newly = freezer.step()
                if newly:
                    result["freezes"].append((freezer.step_count, newly))
            result["params"] = [p.detach().clone() for p in model.parameters()]
        except RuntimeError as e:
            result["error"] = str(e)
    result["warnings"] = [str(w.message) for w in caught]
    return result


@pytest.mark.integration  # two spawned processes: about 5 s
def test_autofreeze_on_two_ranks_freezes_the_same_units_at_the_same_step_and_replicas_stay_identical(tmp_path):
    mp.start_processes(_autofreeze_worker, args=(_free_port(), str(tmp_path), True), nprocs=2, start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert r0["error"] is None and r1["error"] is None, (r0["error"], r1["error"])
    assert r0["freezes"] and r0["freezes"] == r1["freezes"]
    assert all(torch.equal(a, b) for a, b in zip(r0["params"], r1["params"]))


@pytest.mark.integration
def test_a_freeze_without_on_freeze_warns_before_ddp_fails_on_unreduced_gradients(tmp_path):
    mp.start_processes(_autofreeze_worker, args=(_free_port(), str(tmp_path), False), nprocs=2, start_method="spawn")
    for rank in range(2):
        r = torch.load(tmp_path / f"rank{rank}.pt")
        assert "finished reduction" in (r["error"] or "")  # torch's error, which blames unused parameters
        assert any("ReplicatedModel" in w and "on_freeze" in w for w in r["warnings"]), r["warnings"]


def _no_sync_worker(rank, port, outdir):
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=10))
    try:
        model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 2))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frostline.Freezer(model, torch.optim.SGD(model.parameters(), lr=0.1), "autofreeze", 10, units=["0", "1"])
        torch.save([str(w.message) for w in caught], os.path.join(outdir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.integration
def test_a_distributed_freezer_without_sync_is_warned_about(tmp_path):
    mp.start_processes(_no_sync_worker, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    for rank in range(2):
        assert any("no sync=" in w and "DecisionSync" in w for w in torch.load(tmp_path / f"rank{rank}.pt"))
