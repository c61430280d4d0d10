"""Exact resume: kill the training process with SIGKILL at several points, resume, and compare with
an uninterrupted run bit for bit (CPU)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from frostline.lab.cli import main
from run_files import last_step

pytestmark = pytest.mark.integration  # real trainings, killed subprocesses

RUN = ["--epochs", "2", "--train-subset", "512", "--val-size", "64", "--test-subset", "64", "--batch-size", "32",
       "--threads", "1", "--cache", "off", "--log-every", "1", "--checkpoint-every", "1", "--no-progress"]
FREEZEOUT = ["--method", "freezeout", "--t-0", "0.3", "--schedule", "linear"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    assert main(["train", *RUN, *FREEZEOUT, "--out", str(out)]) == 0
    return out


def _kill_at(out, step, method=FREEZEOUT):
    """Start a run (``RUN`` and ``method``'s flags) and SIGKILL it once its metrics show ``step`` steps done."""
    proc = subprocess.Popen([sys.executable, "-m", "frostline", "train", *RUN, *method, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if last_step(metrics) >= step:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"


def _same_parameters(a, b):
    sa, sb = torch.load(a / "model.pt"), torch.load(b / "model.pt")
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("kill_step", [3, 9, 20])  # before, around and after freeze events (first at ~0.3)
def test_killed_and_resumed_run_equals_uninterrupted(kill_step, uninterrupted, tmp_path, capsys):
    out = tmp_path / "run"
    _kill_at(out, kill_step)
    assert main(["train", "--resume", str(out), "--no-progress", "--threads", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    reference = json.loads((uninterrupted / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["resumed_from_step"] >= 1
    assert _same_parameters(out, uninterrupted)
    assert summary["frozen_at"] == reference["frozen_at"]
    assert summary["test_accuracy"] == reference["test_accuracy"]
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "step"]
    assert steps == list(range(1, summary["total_steps"] + 1))  # no step logged twice or lost


#: linear freezing with a 5-step cool-down: the first unit is decided at step 11 and cools until 16
COOLING = ["--method", "linear", "--freeze-start", "0.2", "--cooldown", "5"]


def test_killed_mid_cooldown_and_resumed_run_equals_uninterrupted(tmp_path):
    reference = tmp_path / "full"
    assert main(["train", *RUN, *COOLING, "--out", str(reference)]) == 0
    decided = json.loads((reference / "summary.json").read_text())["timeline"][0]["decided_step"]
    out = tmp_path / "run"
    _kill_at(out, decided + 2, method=COOLING)
    resumed_at = torch.load(out / "checkpoint.pt", weights_only=True)["freezer"]
    assert resumed_at["cooling"]  # the checkpoint is mid-cool-down
    assert main(["train", "--resume", str(out), "--no-progress", "--threads", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_step"] >= decided
    assert _same_parameters(out, reference)
    assert summary["timeline"] == json.loads((reference / "summary.json").read_text())["timeline"]


def test_corrupted_checkpoint_falls_back_to_the_previous_one(uninterrupted, tmp_path):
    out = tmp_path / "run"
    _kill_at(out, 12)
    ckpt = out / "checkpoint.pt"
    # A torn write: a new, half-written file under the newest name. (Truncating in place would also
    # tear checkpoint.prev.pt when the kill fell between the hard link and the rename, which share
    # the file for that instant; a real write never touches the old file.)
    torn = ckpt.read_bytes()[: ckpt.stat().st_size // 2]
    ckpt.unlink()
    ckpt.write_bytes(torn)
    with pytest.warns(UserWarning, match="checkpoint.prev.pt"):
        assert main(["train", "--resume", str(out), "--no-progress", "--threads", "1"]) == 0
    assert _same_parameters(out, uninterrupted)


def test_no_usable_checkpoint_is_a_clear_error_that_deletes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    _kill_at(out, 3)
    for name in ["checkpoint.pt", "checkpoint.prev.pt"]:
        (out / name).write_bytes(b"garbage")
    before = sorted(p.name for p in out.iterdir())
    assert main(["train", "--resume", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no usable checkpoint" in err and "without --resume" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == before
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "config.json does not exist" in capsys.readouterr().err


def test_resumed_from_the_last_steps_checkpoint_the_run_still_ends_its_last_epoch(tmp_path):
    """Killed during the final validation, a run's newest checkpoint is the one written at its last
    step, before the last epoch's row. Resumed from it, the run must still validate that epoch and
    log its row: its metrics.jsonl ends as an uninterrupted run's does. The kill is simulated
    exactly by rolling a finished run's folder back to that moment."""
    import shutil

    run = ["--epochs", "2", "--train-subset", "256", "--val-size", "64", "--test-subset", "64", "--batch-size", "64",
           "--threads", "1", "--cache", "off", "--checkpoint-every", "4", "--no-progress", *FREEZEOUT]
    full, out = tmp_path / "full", tmp_path / "run"
    assert main(["train", *run, "--out", str(full)]) == 0
    shutil.copytree(full, out)
    last_step_state = torch.load(out / "checkpoint.prev.pt", weights_only=True)["loop"]
    total = json.loads((full / "summary.json").read_text())["total_steps"]
    assert last_step_state["step"] == total and last_step_state["batch"] > 0  # written before the epoch ended
    (out / "checkpoint.pt").unlink()
    shutil.copyfile(out / "checkpoint.prev.pt", out / "checkpoint.pt")
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["kind"] == "epoch"
    (out / "metrics.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # the row the final validation did not write
    for name in ["summary.json", "model.pt"]:
        (out / name).unlink()
    assert main(["train", "--resume", str(out), "--no-progress", "--threads", "1"]) == 0

    def rows(folder):  # timing fields may differ between runs
        timing = {"samples_per_s", "memory_mb", "train_time_s"}
        return [{k: v for k, v in json.loads(line).items() if k not in timing}
                for line in (folder / "metrics.jsonl").read_text().splitlines()]

    assert rows(out) == rows(full)
    assert [r["epoch"] for r in rows(out) if r["kind"] == "epoch"] == [0, 1]
    assert _same_parameters(out, full)
    assert json.loads((out / "summary.json").read_text())["test_accuracy"] == \
        json.loads((full / "summary.json").read_text())["test_accuracy"]

