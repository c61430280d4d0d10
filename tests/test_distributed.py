"""Distributed training with 2 CPU processes (gloo): the same model as one process over the same
global batches, identical on both ranks, identical freezing decisions, less all-reduced data after
each freeze, and a rank that froze alone fails fast instead of hanging."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from frostline.lab.cli import main
from run_files import last_step

ROOT = Path(__file__).resolve().parents[1]
# a tiny ViT (no BatchNorm, so per-rank batch statistics play no part) and FreezeOut freezing
# embed, block1, block2 at 3/8, 5/8, 7/8 of 8 steps of 32 samples
ARGS = ["--model", "vit", "--width", "16", "--depth", "2", "--method", "freezeout", "--t-0", "0.3",
        "--schedule", "linear", "--epochs", "1", "--train-subset", "256", "--val-size", "64", "--test-subset", "64",
        "--batch-size", "32", "--threads", "1", "--no-progress", "--log-every", "1",
        "--cache", "memory"]  # one epoch: `auto` would fill nothing (no sample comes back)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args, timeout=120):
    env = {**os.environ, "FROSTLINE_DIST_TIMEOUT": "20", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "frostline", "train", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _why(proc) -> str:
    """A failed torchrun's stderr: the ranks' own messages come first, the launcher's report last."""
    err = proc.stderr
    return err if len(err) <= 6000 else err[:3000] + "\n[...]\n" + err[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    single, ddp = tmp_path_factory.mktemp("single"), tmp_path_factory.mktemp("ddp")
    assert main(["train", *ARGS, "--out", str(single)]) == 0
    proc = _torchrun([*ARGS, "--out", str(ddp)])
    assert proc.returncode == 0, _why(proc)
    return single, ddp, proc


@pytest.mark.integration
def test_torchrun_trains_the_single_process_model_on_both_ranks(runs):
    single, ddp, proc = runs
    s1 = json.loads((single / "summary.json").read_text())
    s2 = json.loads((ddp / "summary.json").read_text())
    assert s2["status"] == "finished" and s2["distributed"]["world_size"] == 2
    assert s2["distributed"]["backend"] == "gloo"
    # freezing decided identically, at the same steps, as in one process
    assert s2["frozen_at"] == s1["frozen_at"] and sum(v is not None for v in s2["frozen_at"].values()) == 3
    # both ranks hold the same model, and it is the one rank 0 saved
    from frostline.lab.launch import state_digests
    from frostline.lab.zoo import create_model

    digests = s2["distributed"]["state_sha256_per_rank"]
    assert len(digests) == 2 and digests[0] == digests[1]
    saved = torch.load(ddp / "model.pt")
    model = create_model("vit", width=16, depth=2)
    model.load_state_dict(saved)
    assert state_digests(model) == [digests[0]]
    # and it is the single-process model, up to float summation order (two half-batch gradients averaged)
    reference = torch.load(single / "model.pt")
    assert saved.keys() == reference.keys()
    for k in saved:
        torch.testing.assert_close(saved[k], reference[k], rtol=1e-4, atol=1e-6)
    assert s2["test_accuracy"] == s1["test_accuracy"] and s2["val_accuracy"] == s1["val_accuracy"]
    # the activation cache served the frozen prefix on each rank (DDP wraps the cached forward)
    assert s2["cache"] is not None and s2["cache"]["computed"] > 0
    # rank 0 alone reports: one summary line, one metrics row per step
    assert proc.stdout.count("test accuracy") == 1
    steps = [json.loads(line)["step"] for line in (ddp / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "step"]
    assert steps == list(range(1, 9))


@pytest.mark.integration
def test_allreduced_bytes_shrink_to_the_trainable_parameters_after_each_freeze(runs):
    _, ddp, _ = runs
    s = json.loads((ddp / "summary.json").read_text())
    from frostline.lab.zoo import create_model

    model = create_model("vit", width=16, depth=2)
    unit_bytes = [sum(p.numel() * 4 for p in child.parameters()) for child in model.children()]
    history = s["distributed"]["allreduce_bytes_per_step"]
    freeze_steps = [e["step"] for e in s["timeline"]]
    # step 1 reduces every gradient; after the freeze at step k, step k + 1 reduces one unit less
    assert history == [{"step": 1, "bytes": sum(unit_bytes)}] + [
        {"step": k + 1, "bytes": sum(unit_bytes[i + 1:])} for i, k in enumerate(freeze_steps)]
    assert s["distributed"]["ddp_rebuilds"] == 3
    assert s["distributed"]["allreduce_bytes_last"] == unit_bytes[-1] < s["distributed"]["allreduce_bytes_first"]


@pytest.mark.integration
def test_torchrun_resumes_a_killed_run_from_the_checkpoint_rank_0_wrote(runs, tmp_path):
    """A one-process run killed after its first freeze, resumed by two processes that both read its
    checkpoint: the data order is global, so it ends with the uninterrupted run's model."""
    single, _, _ = runs
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "frostline", "train", *ARGS, "--checkpoint-every", "1", "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics, deadline = out / "metrics.jsonl", time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if last_step(metrics) >= 4:  # past the freeze (and its checkpoint) at step 3
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    resumed = _torchrun(["--resume", str(out), "--no-progress", "--threads", "1"])
    assert resumed.returncode == 0, _why(resumed)
    s, ref = json.loads((out / "summary.json").read_text()), json.loads((single / "summary.json").read_text())
    assert s["status"] == "finished" and s["resumed_from_step"] >= 3 and s["distributed"]["world_size"] == 2
    assert s["frozen_at"] == ref["frozen_at"]
    a, b = torch.load(out / "model.pt"), torch.load(single / "model.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    # DDP was built over what the checkpoint left trainable, not over the whole model
    from frostline.lab.zoo import create_model

    unit_bytes = [sum(p.numel() * 4 for p in c.parameters()) for c in create_model("vit", width=16, depth=2).children()]
    frozen_then = sum(e["step"] <= s["resumed_from_step"] for e in s["timeline"])
    first = s["distributed"]["allreduce_bytes_per_step"][0]
    assert frozen_then >= 1 and first == {"step": s["resumed_from_step"] + 1, "bytes": sum(unit_bytes[frozen_then:])}


# -- the pieces, without the trainer: a rank that freezes alone ------------------------------
def _desync_worker(rank, port, outdir):
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), FROSTLINE_DIST_TIMEOUT="10")
    torch.set_num_threads(1)
    from frostline.lab import launch

    result = {}
    try:
        _desync_run(rank, launch.init_from_env("cpu"), result)
    finally:
        torch.save(result, os.path.join(outdir, f"rank{rank}.pt"))
        launch.shutdown()  # after the run's DDP reducers became garbage: shutdown frees them first


def _desync_run(rank, device, result):
    from frostline.exploit import distributed
    from frostline.errors import DistributedError
    from frostline.freezer import Freezer
    from frostline.policies import create_policy

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sync = distributed.DecisionSync(device)
    freezer = Freezer(model, opt, create_policy("none"), 10, units=["0", "1", "2"], sync=sync)
    net = distributed.ReplicatedModel(model, device)
    sync.on_freeze = net.rebuild
    x = torch.randn(4, 4)
    net(x).sum().backward()
    opt.step()
    freezer.step()
    result["bytes_before"] = net.counter.take()
    if rank == 1:
        freezer.freeze(0)  # behind the other rank's back
    try:
        freezer.step()
    except DistributedError as e:
        result["error"] = str(e)


@pytest.mark.integration
def test_a_unit_frozen_on_one_rank_only_fails_loudly_on_every_rank(tmp_path):
    mp.start_processes(_desync_worker, args=(free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    for rank in range(2):
        r = torch.load(tmp_path / f"rank{rank}.pt")
        assert r["bytes_before"] == (4 * 8 + 8 + 8 * 8 + 8 + 8 * 2 + 2) * 4
        assert "frozen on only some ranks" in r["error"] and "[0]" in r["error"]


def test_every_global_batch_must_feed_every_rank():
    from frostline.lab.launch import check_global_batches, loss_weight, shard
    from frostline.errors import ConfigError

    check_global_batches(100, 32, 2)  # last batch 4 >= 2
    with pytest.raises(ConfigError, match="--batch-size"):
        check_global_batches(97, 32, 2)  # last batch of 1 sample
    parts = [shard(torch.arange(7), r, 2) for r in range(2)]
    assert [p.tolist() for p in parts] == [[0, 1, 2, 3], [4, 5, 6]]
    # weighted rank means, averaged over ranks, are the global mean
    assert sum(loss_weight(len(p), 7, 2) * p.float().mean() for p in parts) / 2 == pytest.approx(3.0)
