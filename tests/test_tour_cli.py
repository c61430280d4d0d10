"""The command line as a new user meets it: an empty or wrong folder, a flag that would do nothing,
a batch bigger than the data, a run folder that is half there. Each gets one line saying what to
do (no traceback), and no checkpoint or result is touched."""

import json
from pathlib import Path

import pytest

from frostline.lab.cli import main

TINY = ["--train-subset", "256", "--val-size", "128", "--test-subset", "128", "--batch-size", "64", "--no-progress",
        "--width", "8", "--epochs", "1", "--threads", "1"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _one_line_error(capsys, needle: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("frostline: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err, err
    return err


@pytest.mark.parametrize("flag, needle", [
    ("--out", "--out is empty"),  # `--out "$DIR"` with DIR unset: would write into the current folder
    ("--resume", "--resume is empty"),  # would start a new run instead of continuing one
])
def test_an_empty_folder_name_is_an_error_not_the_current_folder(flag, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = [] if flag == "--out" else ["--out", "run"]
    assert main(["train", *TINY, *out, flag, ""]) == 2
    _one_line_error(capsys, needle)
    assert list(tmp_path.iterdir()) == []  # nothing written anywhere


@pytest.mark.parametrize("args", [["--cache", "memory"], ["--cache-dtype", "float16"], ["--cache-memory-mb", "64"]])
def test_cache_settings_for_a_run_that_freezes_nothing_are_an_error(args, tmp_path, capsys):
    """--method none builds no cache: a cache setting given to it must not pass in silence."""
    assert main(["train", "--method", "none", *args, *TINY, "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, "--method none freezes nothing, so there is no frozen prefix to cache")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["train", "estimate"])
def test_a_batch_larger_than_the_training_set_is_said_and_runs(command, tmp_path, capsys):
    """256 samples in batches of 1000 are one step of 256 per epoch: a valid dataset size runs, and says so."""
    out = ["--out", str(tmp_path / "run")] if command == "train" else []
    args = ["--train-subset", "256", "--val-size", "128", "--width", "8", "--threads", "1"] if command == "estimate" else TINY
    with pytest.warns(UserWarning, match="--batch-size 1000 is more than the 256 training samples.*one step of 256"):
        assert main([command, "--method", "linear", *args, "--batch-size", "1000", *out]) == 0
    if command == "train":
        assert json.loads((tmp_path / "run" / "summary.json").read_text())["total_steps"] == 1


def test_a_run_that_cannot_start_leaves_no_empty_folders(tmp_path, capsys):
    out = tmp_path / "a" / "b"
    assert main(["train", *TINY, "--head-units", "99", "--out", str(out)]) == 2
    _one_line_error(capsys, "head_units=99")
    assert list(tmp_path.iterdir()) == []


def test_a_train_subset_too_large_for_what_val_size_leaves_says_why(tmp_path, capsys):
    assert main(["train", *TINY, "--val-size", "59999", "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, "val_size holds out 59999) must be between 1 and 1, got 256")


def test_resume_with_a_config_json_that_is_not_settings_is_one_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text("[1, 2]")
    assert main(["train", "--resume", str(tmp_path), "--no-progress"]) == 2
    _one_line_error(capsys, "config.json is unreadable (a JSON list, not the run's settings)")


def test_resume_with_a_checkpoint_that_does_not_fit_config_json_keeps_it(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--method", "linear", *TINY, "--out", str(run)]) == 0
    (run / "summary.json").unlink()  # as if killed before the end
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "width": 16}))  # edited by hand
    before = {p.name: p.read_bytes() for p in run.glob("checkpoint*.pt")}
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    _one_line_error(capsys, "does not fit the run its config.json describes (size mismatch for stem")
    assert {p.name: p.read_bytes() for p in run.glob("checkpoint*.pt")} == before and len(before) == 2


def test_report_on_an_unfinished_run_says_how_to_go_on(tmp_path, capsys):
    killed = tmp_path / "killed"  # SIGKILL: a checkpoint, no summary.json
    killed.mkdir()
    (killed / "config.json").write_text("{}")
    (killed / "checkpoint.pt").write_bytes(b"x")
    assert main(["report", str(killed)]) == 2
    _one_line_error(capsys, f"holds a run that did not finish (no summary.json): `frostline train --resume {killed}`")
    (killed / "summary.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: out of memory"}))
    assert main(["report", str(killed)]) == 2
    _one_line_error(capsys, "(status 'failed', RuntimeError: out of memory): `frostline train --resume")
    (killed / "summary.json").write_text("[]")
    assert main(["report", str(killed)]) == 2
    _one_line_error(capsys, "is not a run's summary (a JSON list)")


def test_bench_report_only_on_a_folder_without_runs_is_an_error(tmp_path, capsys):
    """It used to print `0/9 runs finished` and write an empty report into a new folder."""
    out = tmp_path / "bench"
    assert main(["bench", "compare", "--suite", "smoke", "--report-only", "--out", str(out)]) == 2
    _one_line_error(capsys, "--report-only redraws the report from the finished runs in")
    assert not out.exists()


STEPTIME = ["bench", "steptime", "--width", "8", "--batch-size", "16", "--repeats", "3", "--warmup", "0",
            "--threads", "1", "--no-progress"]
COLLECT = ["predictor", "collect", "--tailor-size", "64", *TINY]


@pytest.mark.parametrize("command, out, needle", [
    (["bench", "compare", "--suite", "smoke", "--no-progress"], "afile", "is (or is inside) a file"),
    (["bench", "compare", "--suite", "smoke", "--no-progress"], "afile/sub", "is (or is inside) a file"),
    (["bench", "compare", "--suite", "smoke", "--report-only"], "", "--out is empty"),
    (STEPTIME, "afile", "is (or is inside) a file"),
    (STEPTIME, "", "--out is empty"),
    (COLLECT, "afile", "is (or is inside) a file"),
])
def test_other_commands_refuse_an_out_that_is_a_file_or_empty(command, out, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("notes")
    assert main([*command, "--out", out]) == 2
    _one_line_error(capsys, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and Path("afile").read_text() == "notes"


def test_bench_steptime_says_which_setting_is_out_of_range(tmp_path, capsys):
    assert main([*STEPTIME[:6], "--repeats", "2", "--out", str(tmp_path)]) == 2
    _one_line_error(capsys, "got --repeats 2, --warmup 3, --batch-size 16")


def test_an_estimate_in_which_nothing_freezes_says_why(capsys):
    """Two steps, each unit decided on cools down for two: a table of "never" and 0% saved, said in words."""
    args = ["--method", "linear", "--train-subset", "100", "--val-size", "100", "--batch-size", "64", "--epochs", "1",
            "--width", "8", "--threads", "1"]
    assert main(["estimate", *args, "--cooldown", "2"]) == 0
    out = capsys.readouterr().out
    assert "no unit freezes within the run's 2 optimizer steps" in out and "shorten --cooldown" in out, out
    assert main(["estimate", *args]) == 0
    assert "no unit freezes" not in capsys.readouterr().out


def test_report_lists_a_run_given_twice_once(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main(["train", "--method", "linear", *TINY, "--out", str(run)]) == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="run/ is given more than once; it is listed once"):
        assert main(["report", str(run), "run/"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| linear | resnet | fashion-mnist")]
    assert len(rows) == 1, rows
