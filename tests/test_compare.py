"""``frostline bench compare``: cells run as real trainings, are reused when finished, and the
report pairs every run with the baseline of its own seed, checks that the baseline converged, and
never passes a goal on missing runs."""

import json
import math
import shutil
import statistics

import pytest
import torch

from frostline.lab.cli import main
from frostline.lab.compare import (ADAPTIVE, FROM_SCRATCH, STANDARD_EPOCHS, SUITES, VARIANTS, Goal, Suite,
                                   _finished, _train_argv, aggregate, check_cells, convergence_lines, convergence_rows, goal_lines,
                                   in_run_saving, judge, per_run_lines,
                                   publish_results, reference_cell, results_markers, run_suite, suite_cells,
                                   summary_markers)
from frostline.errors import ConfigError, FrostlineError
from frostline.lab.machine import label, machine_counts, machines_text, same_machine, this_machine
from frostline.lab.report import read_metrics

TINY = {"epochs": 1, "train_subset": 384, "val_size": 64, "test_subset": 256, "batch_size": 64, "width": 8,
        "threads": 1, "log_every": 2}
METHODS = ["none", "linear", "freezeout", "autofreeze", "cka-oracle", "smartfrz"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The smoke suite itself, end to end: two seeds, a CKA oracle, the convergence check."""
    root = tmp_path_factory.mktemp("bench")
    data = run_suite("smoke", root, progress=False, jobs=2)
    return SUITES["smoke"], root, data


def _summary(root, variant, seed=0):
    return json.loads((root / f"cells/fashion-mnist/resnet/{variant}/seed{seed}/summary.json").read_text())


@pytest.mark.integration
def test_every_cell_is_a_finished_training_with_the_suite_settings(bench):
    suite, root, data = bench
    assert data["finished"] == data["cells"] == 2 * 4 + 1 and not data["failed"] and not data["missing"]
    cfg = json.loads((root / "cells/fashion-mnist/resnet/freezeout_cache/seed0/config.json").read_text())
    assert cfg["method"] == "freezeout" and cfg["cache"] == "memory" and cfg["train_subset"] == 640
    summary = _summary(root, "freezeout_cache")
    assert summary["status"] == "finished" and summary["cache"] is not None
    assert summary["cpu_time_s"] > 0 and summary["decision_time_s"] >= 0


@pytest.mark.integration
def test_the_oracle_compares_with_the_other_seeds_baseline(bench):
    suite, root, data = bench
    for seed, other in ((0, 1), (1, 0)):
        cfg = json.loads((root / f"cells/fashion-mnist/resnet/cka-oracle_cache/seed{seed}/config.json").read_text())
        assert cfg["reference"] == str(root / f"cells/fashion-mnist/resnet/none/seed{other}")
    assert not (root / "references").exists()  # the reported baselines' weights were there


@pytest.mark.integration
def test_the_convergence_check_ran_and_is_in_the_report(bench):
    suite, root, data = bench
    short, long = _summary(root, "none"), _summary(root, "none-1.5x")
    assert long["epochs"] == 1.5 and long["steps_done"] == round(1.5 * short["steps_done"])
    (row,) = data["convergence"]
    assert row["gap"] == pytest.approx(long["test_accuracy"] - short["test_accuracy"])
    assert row["verdict"] == ("PASS" if row["gap"] <= 0.5 else "FAIL")
    assert f"— **{row['verdict']}**" in (root / "report.md").read_text()


@pytest.mark.integration
def test_time_saved_is_paired_with_the_same_seed_baseline(bench):
    suite, root, data = bench
    base, frz = _summary(root, "none"), _summary(root, "freezeout_cache")
    row = next(r for r in data["rows"] if r["variant"] == "freezeout+cache")
    frz1, base1 = _summary(root, "freezeout_cache", 1), _summary(root, "none", 1)
    assert row["paired_time_saved"] == pytest.approx(1 - (frz["train_time_s"] / base["train_time_s"]
                                                          + frz1["train_time_s"] / base1["train_time_s"]) / 2)
    # the headline: each run against its own full-speed steps where it has enough of them, else paired
    own = [(in_run_saving(s, read_metrics(root / f"cells/fashion-mnist/resnet/freezeout_cache/seed{k}")), s, b)
           for k, s, b in ((0, frz, base), (1, frz1, base1))]
    assert row["time_saved"] == pytest.approx(sum(1 - s["train_time_s"] / b["train_time_s"] if v is None else v
                                                  for v, s, b in own) / 2)
    assert row["in_run"] == sum(v is not None for v, _, _ in own)
    assert row["cpu_time_saved"] == pytest.approx(1 - (frz["cpu_time_s"] / base["cpu_time_s"]
                                                       + frz1["cpu_time_s"] / base1["cpu_time_s"]) / 2)
    assert row["delta_accuracy"] == pytest.approx((frz["test_accuracy"] - base["test_accuracy"]
                                                   + frz1["test_accuracy"] - base1["test_accuracy"]) / 2)
    assert row["flops_saved"] > 0
    report = (root / "report.md").read_text()
    assert "| freezeout+cache |" in report and results_markers("smoke")[0] in report
    for png in ("accuracy_vs_time_saved.png", "freezing_moments.png", "memory.png", "predicted_vs_measured.png"):
        assert (root / png).stat().st_size > 1000


@pytest.mark.integration
def test_finished_cells_are_reused_and_a_broken_one_is_rerun(bench):
    suite, root, _ = bench
    kept = root / "cells/fashion-mnist/resnet/none/seed0/summary.json"
    broken = root / "cells/fashion-mnist/resnet/freezeout_cache/seed0/summary.json"
    before = kept.stat().st_mtime_ns
    broken.write_text("{not json")
    data = run_suite(suite, root, progress=False)
    assert data["finished"] == data["cells"]
    assert kept.stat().st_mtime_ns == before  # reused, not retrained
    assert json.loads(broken.read_text())["status"] == "finished"  # rebuilt from its checkpoint


@pytest.mark.integration
def test_with_one_seed_the_oracle_compares_with_an_extra_baseline(tmp_path):
    suite = Suite("one", ("resnet",), ("fashion-mnist",), 1, ("none", "cka-oracle+cache"), TINY, "one seed")
    data = run_suite(suite, tmp_path, progress=False)
    assert data["finished"] == data["cells"] == 2 and not data["failed"]
    extra = tmp_path / "references/fashion-mnist/resnet/none/seed1"
    assert json.loads((extra / "summary.json").read_text())["seed"] == 1 and (extra / "model.pt").exists()
    cfg = json.loads((tmp_path / "cells/fashion-mnist/resnet/cka-oracle_cache/seed0/config.json").read_text())
    assert cfg["reference"] == str(extra)
    assert [r["variant"] for r in data["rows"]] == ["none", "cka-oracle+cache"]  # the extra run is not reported


@pytest.mark.integration
def test_publish_writes_full_results_to_docs_and_a_short_summary_to_the_readme(bench, tmp_path):
    suite, root, _ = bench
    readme, docs = tmp_path / "README.md", tmp_path / "docs" / "benchmarks.md"
    begin, end = summary_markers("smoke")
    other = "\n".join(summary_markers("quick"))
    readme.write_text(f"# x\n\nbefore\n{begin}\nold numbers\n{end}\nafter\n{other}\n")
    publish_results(root, readme, docs)  # docs/benchmarks.md does not exist yet: created
    text = readme.read_text()
    assert "old numbers" not in text and "| freezeout+cache |" not in text  # the summary, not the tables
    assert "Adaptive methods from scratch" in text and "Convergence of resnet" in text  # goals, convergence
    assert "](docs/bench/smoke/accuracy_vs_time_saved.png)" in text and "](docs/benchmarks.md)" in text
    assert text.startswith("# x\n\nbefore\n") and text.endswith(f"after\n{other}\n")  # other suites' blocks stay
    page = docs.read_text()
    assert "| freezeout+cache |" in page and results_markers("smoke")[0] in page
    assert "](bench/smoke/accuracy_vs_time_saved.png)" in page  # relative to docs/
    assert (tmp_path / "docs/bench/smoke/accuracy_vs_time_saved.png").exists()
    docs.write_text(page.replace("| freezeout+cache |", "| stale |") + "\nkept\n")
    publish_results(root, readme, docs)  # the section is replaced, the rest of the page stays
    page = docs.read_text()
    assert "| stale |" not in page and page.count(results_markers("smoke")[0]) == 1 and "\nkept\n" in page
    readme.write_text("no markers here\n")
    with pytest.raises(FrostlineError, match="no summary block"):
        publish_results(root, readme, docs)


@pytest.mark.integration
def test_a_study_suite_is_published_to_the_docs_alone(bench, tmp_path):
    _, root, _ = bench
    assert SUITES["step-lr"].in_readme is False and SUITES["standard"].in_readme
    study = tmp_path / "study"
    shutil.copytree(root, study)
    results = json.loads((study / "results.json").read_text())
    (study / "results.json").write_text(json.dumps({**results, "suite": "step-lr"}))
    readme, docs = tmp_path / "README.md", tmp_path / "docs" / "benchmarks.md"
    readme.write_text("no markers here\n")  # it has no block for the suite, and needs none
    assert publish_results(study, readme, docs) == (docs,)
    assert readme.read_text() == "no markers here\n"
    assert results_markers("step-lr")[0] in docs.read_text() and "| freezeout+cache |" in docs.read_text()


def _row(variant, method, saved, delta, model="resnet", seeds=3, overhead=math.nan):
    return {"dataset": "d", "model": model, "variant": variant, "method": method, "time_saved": saved, "delta_accuracy": delta,
            "cpu_time_saved": saved, "seeds": seeds, "of_seeds": 3, "paired": seeds, "decision_overhead": overhead}


def test_goals_are_the_suites_data():
    rows = [_row("autofreeze+cache", "autofreeze", 0.35, -0.1), _row("smartfrz+cache", "smartfrz", 0.5, -1.0)]
    line = goal_lines(FROM_SCRATCH, rows)[0]
    assert "**autofreeze+cache**" in line and "**met**" in line  # smartfrz saves more but loses too much
    strict = Goal("Strict", min_time_saved=0.4, methods=("autofreeze", "smartfrz"))
    assert "**not met**" in goal_lines(strict, rows)[0] and "≥ 40% time saved" in goal_lines(strict, rows)[0]
    assert "no run of this bench" in goal_lines(Goal("Tuning", 0.5, pretrained=True), rows)[0]
    assert SUITES["standard"].goals and not SUITES["quick"].goals  # no goal is judged on the short regime
    assert "no goal is judged" in SUITES["quick"].about


def test_standard_goals_beat_rivals_bound_the_overhead_and_need_every_run():
    smartfrz, autofreeze, oracle, overhead = SUITES["standard"].goals
    rows = [_row("none", "none", math.nan, math.nan), _row("linear", "linear", 0.20, -0.1),
            _row("autofreeze+cache", "autofreeze", 0.30, -0.2), _row("smartfrz+cache", "smartfrz", 0.35, -0.1, overhead=0.0004),
            _row("cka-oracle+cache", "cka-oracle", 0.40, -0.5)]
    verdict = lambda goal, rs, conv=None: [e["verdict"] for e in judge(goal, rs, conv)]  # noqa: E731
    assert verdict(smartfrz, rows) == ["met"] and verdict(autofreeze, rows) == ["met"]
    assert verdict(oracle, rows) == ["not met"] and verdict(overhead, rows) == ["met"]
    (entry,) = judge(smartfrz, rows)
    assert set(entry["rivals"]) == {"linear", "autofreeze+cache"} and entry["saved"] == 0.35
    # more time saved than autofreeze, but at worse accuracy: no longer beats it
    worse = [r if r["method"] != "smartfrz" else {**r, "delta_accuracy": -0.25} for r in rows]
    assert verdict(smartfrz, worse) == ["not met"] and "does not beat autofreeze+cache" in judge(smartfrz, worse)[0]["why"]
    costly = [r if r["method"] != "smartfrz" else {**r, "decision_overhead": 0.002} for r in rows]
    assert verdict(overhead, costly) == ["not met"] and "0.200%" in goal_lines(overhead, costly)[0]
    # one seed of a rival missing, a variant not run at all: not measured, never a pass
    assert verdict(smartfrz, [r if r["method"] != "linear" else {**r, "seeds": 2, "paired": 2} for r in rows]) == ["not measured yet"]
    assert verdict(autofreeze, [r for r in rows if r["method"] != "autofreeze"]) == ["not covered"]
    assert verdict(autofreeze, [r if r["method"] != "autofreeze" else {**r, "seeds": 0, "paired": 0} for r in rows]) == ["not measured yet"]
    line = goal_lines(smartfrz, [r for r in rows if r["method"] != "linear"])[0]
    assert "**not measured yet**" in line and "linear (not in this suite)" in line
    # the convergence check gates every goal: missing, it is not measured; failed, nothing passes
    conv = lambda v: [{"dataset": "d", "model": "resnet", "verdict": v}]  # noqa: E731
    assert verdict(autofreeze, rows, conv("PASS")) == ["met"]
    assert verdict(autofreeze, rows, conv("not measured yet")) == ["not measured yet"]
    assert verdict(autofreeze, rows, []) == ["not measured yet"]
    assert verdict(autofreeze, rows, conv("FAIL")) == ["not met"] and "baseline not converged" in goal_lines(autofreeze, rows, conv("FAIL"))[0]


def test_with_no_variant_within_the_accuracy_bound_the_nearest_is_named_not_the_fastest():
    autofreeze = SUITES["standard"].goals[1]  # <= 0.3 points lost
    rows = [_row("none", "none", math.nan, math.nan), _row("autofreeze+cache", "autofreeze", 0.30, -0.35),
            _row("autofreeze-p80+cache", "autofreeze", 0.60, -0.80)]
    (entry,) = judge(autofreeze, rows)
    assert entry["best"] == "autofreeze+cache" and entry["nearest"] and entry["verdict"] == "not met"
    assert "none within the accuracy bound; nearest **autofreeze+cache**" in goal_lines(autofreeze, rows)[0]
    within = rows + [_row("autofreeze-p20+cache", "autofreeze", 0.10, -0.1)]
    assert "best **autofreeze-p20+cache**" in goal_lines(autofreeze, within)[0]


def test_with_none_within_the_bound_the_nearest_of_those_saving_enough_is_named():
    """One target missed beats two: a slower variant that also loses a little less is not the nearest."""
    finetune = SUITES["finetune"].goals[0]  # >= 50% saved, <= 0.3 points lost, per model
    rows = [_row("none", "none", math.nan, math.nan, model="minilm"),
            _row("smartfrz+cache", "smartfrz", 0.53, -0.35, model="minilm"),
            _row("smartfrz+cache+head2", "smartfrz", 0.49, -0.32, model="minilm")]
    (entry,) = judge(finetune, rows)
    assert entry["best"] == "smartfrz+cache" and entry["why"] == ["too much accuracy lost"]
    assert "nearest of those saving enough **smartfrz+cache**" in goal_lines(finetune, rows)[0]
    slow = [r for r in rows if r["variant"] != "smartfrz+cache"]  # none saves enough: the least loss
    assert judge(finetune, slow)[0]["best"] == "smartfrz+cache+head2"


def test_beating_a_rival_is_judged_run_by_run_beyond_noise():
    smartfrz = SUITES["standard"].goals[0]
    runs = lambda saved, deltas: [{"seed": k, "time_saved": s, "delta_accuracy": d}  # noqa: E731
                                  for k, (s, d) in enumerate(zip(saved, deltas))]
    def rows(ours_saved, ours_delta):
        mine = _row("smartfrz+cache", "smartfrz", statistics.fmean(ours_saved), statistics.fmean(ours_delta))
        lin = _row("linear", "linear", 0.18, 0.05)
        auto = _row("autofreeze+cache", "autofreeze", 0.26, -0.10)
        mine["runs"], lin["runs"] = runs(ours_saved, ours_delta), runs([0.17, 0.18, 0.19], [0.1, 0.0, 0.05])
        auto["runs"] = runs([0.16, 0.26, 0.36], [-0.1, -0.2, 0.0])
        return [_row("none", "none", math.nan, math.nan), lin, auto, mine]
    # a mean that beats autofreeze by one point of time, inside seed noise ten times larger: not a win
    (entry,) = judge(smartfrz, rows([0.27, 0.27, 0.27], [0.05, 0.05, 0.05]))
    assert entry["versus"]["autofreeze+cache"]["saved"] == pytest.approx(0.01)
    assert entry["versus"]["autofreeze+cache"]["saved_se"] == pytest.approx(0.1 / math.sqrt(3))
    assert entry["why"] == ["does not beat autofreeze+cache"]
    # clearly faster than both; accuracy a hair below linear's mean but within its noise: a win
    (entry,) = judge(smartfrz, rows([0.40, 0.42, 0.44], [0.1, -0.05, 0.05]))
    assert entry["verdict"] == "met" and entry["versus"]["linear"]["delta"] < 0
    assert "over 3 paired runs" in goal_lines(smartfrz, rows([0.40, 0.42, 0.44], [0.1, -0.05, 0.05]))[0]
    # faster, but worse than linear by more than the noise in that difference: not a win
    (entry,) = judge(smartfrz, rows([0.40, 0.42, 0.44], [-0.15, -0.25, -0.2]))
    assert "does not beat linear" in entry["why"]


def _fake_summary(cell, accuracy, train_time=100.0):
    settings = dict(cell.settings)
    return {"status": "finished", "method": settings["method"], "model": cell.model, "dataset": cell.dataset,
            "epochs": settings["epochs"], "seed": cell.seed, "test_accuracy": accuracy, "train_time_s": train_time,
            "cpu_time_s": 2 * train_time, "flops_saved": 0.0, "predicted_saving": 0.0, "peak_memory_mb": 500.0,
            "frozen_at": {"a": None, "b": None}, "units": ["a", "b"], "cache": None,
            "decision_overhead": 0.0 if settings["method"] != "none" else None}


def test_the_per_run_table_pairs_each_run_with_its_own_seeds_baseline():
    suite = Suite("p", ("resnet",), ("fashion-mnist",), 2, ("none", "linear"), {"epochs": 2})
    cells, _ = suite_cells(suite, METHODS)
    figures = {("none", 0): (90.0, 100.0), ("none", 1): (92.0, 200.0),
               ("linear", 0): (89.5, 50.0), ("linear", 1): (92.25, 160.0)}
    results = {c.key: _fake_summary(c, *figures[c.variant, c.seed]) for c in cells}
    results[cells[-1].key]["frozen_at"] = {"a": 0.25, "b": None}
    lines = "\n".join(per_run_lines(cells, results))
    assert "| linear | 0 | 89.50 | -0.50 | 50.0% (vs baseline) | 2.00× | — | 0/2 |" in lines
    assert "| linear | 1 | 92.25 | +0.25 | 20.0% (vs baseline) | 1.25× | 0.25 – 0.25 | 1/2 |" in lines


def test_a_run_whose_probe_says_another_speed_is_not_paired_by_clock():
    """Two hosts can report the same CPU name at different speeds: a run whose full-speed probe
    took half its baseline's time per step is not paired with that baseline's clock (its accuracy
    still is); one within the tolerance is."""
    suite = Suite("p", ("resnet",), ("fashion-mnist",), 2, ("none", "linear"), {"epochs": 2})
    cells, _ = suite_cells(suite, METHODS)
    results = {c.key: _fake_summary(c, 90.0, 100.0 if c.variant == "none" else 50.0) for c in cells}
    for c in cells:
        results[c.key]["steps_done"] = 100  # the baseline: 1 s a step
        if c.variant == "linear":
            results[c.key]["full_speed_probe"] = {"steps": 40, "step_s": 0.5 if c.seed == 0 else 0.9}
    lines = "\n".join(per_run_lines(cells, results))
    assert "| linear | 0 | 90.00 | +0.00 | n/a | n/a (other speed) |" in lines
    assert "| linear | 1 | 90.00 | +0.00 | 50.0% (vs baseline) | 2.00× |" in lines
    row = next(r for r in aggregate(cells, results) if r["variant"] == "linear")
    assert row["paired_time_saved"] == pytest.approx(0.5) and row["paired"] == 2


def test_a_run_without_a_probe_is_told_apart_by_its_own_steps_before_its_first_freeze():
    """No probe, and too few full-speed steps for an in-run figure, so the run is paired with its
    baseline by clock: the baseline was made when the machine ran at half this speed, which the
    run's own early steps (0.1 s against the baseline's 0.2 s a step) show, so that pairing would
    credit the method with the machine's change. Not paired; one at its baseline's speed is."""
    from frostline.lab.compare import in_run_saving, own_full_step

    suite = Suite("p", ("resnet",), ("fashion-mnist",), 2, ("none", "linear"), {"epochs": 2})
    cells, _ = suite_cells(suite, METHODS)
    results = {c.key: _fake_summary(c, 90.0, 200.0 if c.variant == "none" else 75.0) for c in cells}
    for c in cells:
        results[c.key]["steps_done"] = 1000  # the baseline: 0.2 s a step
        if c.variant == "linear":
            summary, lines = _log((0.1 if c.seed == 0 else 0.18, 0.05), 150)  # 100 full-speed steps logged
            assert in_run_saving(summary, lines) is None  # under 200: no in-run figure
            results[c.key]["own_full_step_s"] = own_full_step(summary, lines)
    lines = "\n".join(per_run_lines(cells, results))
    assert "| linear | 0 | 90.00 | +0.00 | n/a | n/a (other speed) |" in lines
    assert "| linear | 1 | 90.00 | +0.00 | 62.5% (vs baseline) | 2.67× |" in lines
    assert own_full_step(*_log((0.1, 0.05), 60)) is None  # 10 logged steps tell nothing


def test_runs_from_two_machines_are_not_paired_by_clock_and_the_report_names_both(tmp_path):
    """Seed 1's run trained on another machine than its baseline: its accuracy is still paired,
    its time is not (the table says why), and the header lists each machine with its runs."""
    suite = Suite("m", ("resnet",), ("fashion-mnist",), 2, ("none", "linear"), {"epochs": 2})
    cells, _ = suite_cells(suite, METHODS)
    fast = {"cpu": "Fast CPU", "cpu_cores": 2, "gpu": None, "torch": "2.13.0"}
    slow = {**fast, "cpu": "Slow CPU"}
    figures = {("none", 0): (90.0, 100.0), ("none", 1): (92.0, 200.0),
               ("linear", 0): (89.5, 50.0), ("linear", 1): (92.25, 100.0)}
    for c in cells:
        folder = c.folder(tmp_path)
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(dict(c.settings)))
        summary = {**_fake_summary(c, *figures[c.variant, c.seed]),
                   "machine": slow if (c.variant, c.seed) == ("linear", 1) else fast}
        (folder / "summary.json").write_text(json.dumps(summary))
    data = run_suite(suite, tmp_path, progress=False, report_only=True)
    linear = next(r for r in data["rows"] if r["variant"] == "linear")
    assert linear["paired"] == 2 and linear["paired_time_saved"] == pytest.approx(0.5)  # the clock: seed 0 only
    assert linear["delta_accuracy"] == pytest.approx((-0.5 + 0.25) / 2)  # both seeds
    report = (tmp_path / "report.md").read_text()
    assert "Runs trained on: Fast CPU (2 cores), no GPU (3 runs); Slow CPU (2 cores), no GPU (1 run)." in report
    assert "| linear | 1 | 92.25 | +0.25 | n/a | n/a (other machine) |" in report
    assert "| linear | 0 | 89.50 | -0.50 | 50.0% (vs baseline) | 2.00× |" in report
    unrecorded = {k: {kk: vv for kk, vv in s.items() if kk != "machine"} for k, s in
                  ((c.key, json.loads((c.folder(tmp_path) / "summary.json").read_text())) for c in cells)}
    assert machines_text(machine_counts(list(unrecorded.values()))).startswith("not recorded for 4 runs")
    assert machines_text(data["machines"], brief=True) == "Fast CPU ×3, Slow CPU ×1"
    assert per_run_lines(cells, unrecorded)  # unrecorded runs are paired as before
    assert "| linear | 1 | 92.25 | +0.25 | 50.0% (vs baseline) | 2.00× |" in "\n".join(per_run_lines(cells, unrecorded))


@pytest.mark.integration
def test_a_run_on_another_machine_than_its_baseline_gets_a_baseline_of_its_own_machine(tmp_path, capsys):
    """The seed's baseline trained elsewhere (its summary says so): running a variant here also
    trains this machine's baseline beside it, keeps the first one, and pairs the run with the new
    one, by clock and by accuracy; the per-run table lists both baselines by machine."""
    suite = Suite("h", ("resnet",), ("fashion-mnist",), 1, ("none", "linear"), TINY)
    cells, _ = suite_cells(suite, METHODS)
    elsewhere = cells[0].folder(tmp_path)
    elsewhere.mkdir(parents=True)
    (elsewhere / "config.json").write_text(json.dumps(dict(cells[0].settings)))
    other = {"cpu": "Other CPU", "cpu_cores": 64, "gpu": None, "torch": "2.13.0"}
    (elsewhere / "summary.json").write_text(json.dumps({**_fake_summary(cells[0], 10.0, 1e6), "machine": other}))
    data = run_suite(suite, tmp_path, progress=False, only={"variant": ["linear"]})
    assert "training one on this machine too" in capsys.readouterr().err
    here = [f for f in elsewhere.parent.iterdir() if f.name.startswith("seed0.on-")]
    assert len(here) == 1 and json.loads((elsewhere / "summary.json").read_text())["machine"] == other
    ours = json.loads((here[0] / "summary.json").read_text())
    run = _summary(tmp_path, "linear")
    assert ours["status"] == "finished" and same_machine(ours, run) and ours["method"] == "none"
    linear = next(r for r in data["rows"] if r["variant"] == "linear")
    assert linear["delta_accuracy"] == pytest.approx(run["test_accuracy"] - ours["test_accuracy"])
    assert linear["paired_time_saved"] == pytest.approx(1 - run["train_time_s"] / ours["train_time_s"])
    none = next(r for r in data["rows"] if r["variant"] == "none")
    assert none["accuracy"] == 10.0 and data["finished"] == data["cells"] == 3  # the table's row is the first one
    report = (tmp_path / "report.md").read_text()
    assert "| none (Other CPU) | 0 | 10.00 |" in report and f"| none ({label(run['machine']).split(' (')[0]}) | 0 |" in report
    again = run_suite(suite, tmp_path, progress=False, only={"variant": ["linear"]})  # nothing left to train
    assert again["finished"] == again["cells"] == 3
    assert "training one" not in capsys.readouterr().err


def test_a_run_records_the_machine_it_trained_on():
    m = this_machine("cpu")
    assert m["cpu"] and m["cpu_cores"] >= 1 and m["gpu"] is None and m["torch"] == torch.__version__
    assert label(m).endswith("cores), no GPU")
    assert same_machine({"machine": m}, {"machine": dict(m)}) is True
    assert same_machine({"machine": m}, {"machine": {**m, "cpu": "other"}}) is False
    assert same_machine({"machine": m}, {}) is None


def test_convergence_verdict_from_summaries():
    suite = Suite("c", ("resnet", "vgg"), ("fashion-mnist",), 2, ("none",), {"epochs": 8}, convergence=1.5)
    checks = check_cells(suite)
    assert [(c.model, c.seed, dict(c.settings)["epochs"]) for c in checks] == [("resnet", 0, 12.0), ("vgg", 0, 12.0)]
    cells, _ = suite_cells(suite, METHODS)
    acc = {("resnet", "none"): 92.0, ("resnet", "none@1.5x"): 92.45, ("vgg", "none"): 90.0, ("vgg", "none@1.5x"): 90.6}
    results = {c.key: _fake_summary(c, acc[c.model, c.variant]) for c in cells + checks if c.seed == 0}
    resnet, vgg = convergence_rows(checks, results)
    assert (resnet["verdict"], resnet["epochs"], resnet["long_epochs"]) == ("PASS", 8, 12.0)
    assert resnet["gap"] == pytest.approx(0.45) and vgg["gap"] == pytest.approx(0.6) and vgg["verdict"] == "FAIL"
    lower = {**results, checks[0].key: _fake_summary(checks[0], 91.2)}
    assert convergence_rows(checks, lower)[0]["verdict"] == "PASS"  # longer and worse: past its best, not short of it
    assert convergence_rows(checks, {**results, checks[0].key: _fake_summary(checks[0], 92.51)})[0]["verdict"] == "FAIL"
    del results[checks[1].key]
    assert [r["verdict"] for r in convergence_rows(checks, results)] == ["PASS", "not measured yet"]
    for brief in (False, True):  # a check not trained yet is said so, in the docs and in the README
        assert "**not measured yet**" in convergence_lines(convergence_rows(checks, results), brief=brief)[1]


def test_a_partial_bench_reports_from_summaries_on_disk(tmp_path):
    """Summaries written by hand into a bench folder: the report redraws from them alone, shows the
    convergence FAIL (also in the README summary) and says what is missing."""
    suite = Suite("fake", ("resnet",), ("fashion-mnist",), 2, ("none", "autofreeze+cache"), {"epochs": 8},
                  "hand-made", goals=(SUITES["standard"].goals[1],), convergence=1.5)
    cells, _ = suite_cells(suite, METHODS)
    for cell in cells + check_cells(suite):
        if cell.variant == "autofreeze+cache" and cell.seed == 1:
            continue  # not run yet
        folder = cell.folder(tmp_path)
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(dict(cell.settings)))
        accuracy = 91.0 if cell.variant == "none@1.5x" else 90.0 if cell.variant == "none" else 89.9
        (folder / "summary.json").write_text(json.dumps(_fake_summary(cell, accuracy, 100 if cell.variant == "none" else 70)))
    data = run_suite(suite, tmp_path, progress=False, report_only=True)
    assert data["missing"] == ["fashion-mnist/resnet/autofreeze+cache/seed1"] and data["finished"] == 4
    assert data["convergence"][0]["verdict"] == "FAIL" and data["convergence"][0]["gap"] == pytest.approx(1.0)
    report = (tmp_path / "report.md").read_text()
    assert "90.00% vs 91.00% (+1.00 points) — **FAIL**" in report
    assert "**not measured yet**: missing autofreeze+cache on resnet (1 of 2 runs)" in report
    assert "| autofreeze+cache | 89.90 ± 0.00 | -0.10 | 70.0 | 30.0 ± 0.0% | 30.0 ± 0.0% |" in report
    assert "Partial bench" in report and "`fashion-mnist/resnet/autofreeze+cache/seed1`" in report
    readme = tmp_path / "README.md"
    readme.write_text("\n".join(summary_markers("fake")) + "\n")
    publish_results(tmp_path, readme, tmp_path / "docs.md")
    summary = readme.read_text()
    assert "**FAIL**: no goal can pass on this baseline" in summary and "1 of 5 runs not finished" in summary


def test_the_standard_suite_is_the_realistic_regime(tmp_path, capsys):
    suite = SUITES["standard"]
    cells, skipped = suite_cells(suite, METHODS)
    assert not skipped and suite.max_jobs == 1
    assert {c.model for c in cells} == {"resnet", "vgg"} and {c.dataset for c in cells} == {"fashion-mnist"}
    assert {c.seed for c in cells} == {0, 1, 2} and len(cells) == 2 * 9 * 3
    assert {c.variant for c in cells} == {"none", "linear", "linear-start0.25", "freezeout", "autofreeze+cache", "cka-oracle+cache",
                                          "smartfrz+cache", "smartfrz+cache+4stages", "smartfrz+cache+4stages+cooldown"}
    for cell in cells:
        settings = dict(cell.settings)
        assert settings["train_subset"] is None and settings["test_subset"] is None and settings["val_size"] == 5000
        assert (settings["epochs"], settings["batch_size"], settings["threads"]) == (STANDARD_EPOCHS, 128, 2)
        assert not {"optimizer", "lr", "width", "depth"} & set(settings)  # SGD and the zoo's models as the defaults
        assert settings.get("cache") == "memory" or "+cache" not in cell.variant
    checks = check_cells(suite)
    assert [(c.model, c.seed, dict(c.settings)["epochs"]) for c in checks] == [("resnet", 0, 1.5 * STANDARD_EPOCHS),
                                                                            ("vgg", 0, 1.5 * STANDARD_EPOCHS)]
    base = next(c for c in cells if (c.model, c.variant, c.seed) == ("resnet", "none", 0))
    assert {k: v for k, v in checks[0].settings if k != "epochs"} == {k: v for k, v in base.settings if k != "epochs"}
    with pytest.raises(ConfigError, match="one run at a time|1 cell at a time"):
        run_suite("standard", tmp_path, progress=False, jobs=2)
    assert main(["bench", "compare", "--suite", "standard", "--jobs", "2", "--out", str(tmp_path)]) == 2
    assert "drop --jobs 2" in capsys.readouterr().err and not (tmp_path / "cells").exists()


def test_the_oracle_reference_is_another_seeds_baseline(tmp_path):
    for name in ("standard", "quick", "smoke"):
        suite = SUITES[name]
        cells, _ = suite_cells(suite, METHODS)
        oracles = [c for c in cells if c.variant == "cka-oracle+cache"]
        assert oracles and all(c.reference_seed != c.seed and c.reference_seed < suite.seeds for c in oracles)
    suite = SUITES["standard"]
    cells, _ = suite_cells(suite, METHODS)
    oracle = next(c for c in cells if c.variant == "cka-oracle+cache" and c.model == "vgg" and c.seed == 2)
    baseline = next(c for c in cells if (c.model, c.variant, c.seed) == ("vgg", "none", 0))
    baseline.folder(tmp_path).mkdir(parents=True)
    (baseline.folder(tmp_path) / "model.pt").write_bytes(b"weights")
    assert reference_cell(suite, oracle, tmp_path) == baseline
    argv = _train_argv(oracle, oracle.folder(tmp_path), reference_cell(suite, oracle, tmp_path).folder(tmp_path))
    assert argv[argv.index("--reference") + 1] == str(tmp_path / "cells/fashion-mnist/vgg/none/seed0")
    # the committed cells keep no weights: the reference is then an extra run of that seed's baseline
    (baseline.folder(tmp_path) / "model.pt").unlink()
    extra = reference_cell(suite, oracle, tmp_path)
    assert extra.extra and extra.settings == baseline.settings
    assert extra.folder(tmp_path) == tmp_path / "references/fashion-mnist/vgg/none/seed0"
    with pytest.raises(ConfigError, match="reference"):
        _train_argv(oracle, oracle.folder(tmp_path))
    # one seed: an extra baseline of seed 1
    one = Suite("one", ("resnet",), ("fashion-mnist",), 1, ("none", "cka-oracle+cache"), TINY)
    (oracle1,) = [c for c in suite_cells(one, METHODS)[0] if c.variant != "none"]
    ref = reference_cell(one, oracle1, tmp_path)
    assert (ref.seed, ref.extra, dict(ref.settings)["method"]) == (1, True, "none")
    # an oracle cell finished against its own seed (older benches) is not reused
    folder = oracle.folder(tmp_path)
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"status": "finished"}))
    for seed, reused in ((2, False), (0, True)):
        reference = str(tmp_path / f"cells/fashion-mnist/vgg/none/seed{seed}")
        (folder / "config.json").write_text(json.dumps({**dict(oracle.settings), "reference": reference}))
        assert (_finished(folder, oracle) is not None) == reused


def _smartfrz_cell_with_its_config(tmp_path):
    """A standard-suite SmartFRZ cell and its folder, holding that cell's config.json."""
    cells, _ = suite_cells(SUITES["standard"], METHODS)
    cell = next(c for c in cells if c.variant == "smartfrz+cache")
    folder = cell.folder(tmp_path)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(dict(cell.settings)))
    return cell, folder


def test_a_smartfrz_cell_made_with_an_earlier_shipped_predictor_is_rerun(tmp_path):
    from frostline.lab.compare import _shipped_predictor_sha

    cell, folder = _smartfrz_cell_with_its_config(tmp_path)
    for sha, reused in (("0123456789abcdef", False), (_shipped_predictor_sha(), True)):
        (folder / "summary.json").write_text(json.dumps({"status": "finished", "policy": {"predictor_sha256": sha}}))
        assert (_finished(folder, cell) is not None) == reused


def test_a_smartfrz_cell_that_froze_from_a_short_window_is_rerun(tmp_path):
    """Before units were judged only from an epoch's window, four decisions an epoch froze units from
    7 snapshots: such a run is made again; one whose units all froze from full windows still counts."""
    from frostline.lab.compare import _shipped_predictor_sha

    cell, folder = _smartfrz_cell_with_its_config(tmp_path)
    policy = {"predictor_sha256": _shipped_predictor_sha(), "window": 30, "snapshots_per_epoch": 30,
              "steps_per_epoch": 430}
    for snapshots, reused in ((7, False), (30, True)):
        timeline = [{"unit": "conv1", "signal": {"snapshots": 30}}, {"unit": "conv2", "signal": {"snapshots": snapshots}}]
        (folder / "summary.json").write_text(json.dumps({"status": "finished", "policy": policy, "timeline": timeline}))
        assert (_finished(folder, cell) is not None) == reused


def test_a_cache_auto_cell_made_before_the_payoff_rule_is_rerun(tmp_path):
    cells, _ = suite_cells(SUITES["standard"], METHODS)
    cell = next(c for c in cells if c.variant == "linear")  # the default cache: auto
    folder = cell.folder(tmp_path)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({**dict(cell.settings), "cache": "auto"}))
    for cache, reused in (({"hits": 9}, False), ({"hits": 9, "payoff": []}, True), (None, True)):
        (folder / "summary.json").write_text(json.dumps({"status": "finished", "cache": cache}))
        assert (_finished(folder, cell) is not None) == reused


def test_an_adaptive_cache_auto_cell_weighed_by_an_older_payoff_rule_is_rerun(tmp_path):
    from frostline.exploit.payoff import RULE_VERSION

    cells, _ = suite_cells(SUITES["finetune"], METHODS)
    auto = next(c for c in cells if c.variant == "smartfrz+auto")
    linear = next(c for c in cells if c.variant == "linear")  # a schedule: the rule never changed for it
    for cell, rule, reused in ((auto, None, False), (auto, RULE_VERSION - 1, False), (auto, RULE_VERSION, True),
                               (linear, None, True)):
        folder = cell.folder(tmp_path / str(rule))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({**dict(cell.settings), "cache": "auto"}))
        cache = {"hits": 9, "payoff": [], **({"payoff_rule": rule} if rule is not None else {})}
        (folder / "summary.json").write_text(json.dumps({"status": "finished", "cache": cache,
                                                         "policy": {"predictor_sha256": None}}))
        assert (_finished(folder, cell) is not None) == reused, (cell.variant, rule)


def test_a_finished_run_with_other_settings_is_kept_aside_not_resumed(tmp_path):
    from frostline.lab.compare import _resumable, _set_aside

    cell, folder = _smartfrz_cell_with_its_config(tmp_path)
    (folder / "checkpoint.pt").write_bytes(b"state")
    assert _resumable(folder, cell)  # cut off mid-run with these settings: resume it
    (folder / "summary.json").write_text(json.dumps({"status": "finished", "policy": {"predictor_sha256": "old"}}))
    assert not _resumable(folder, cell)  # finished (with an earlier predictor): a fresh run, the old one kept
    _set_aside(folder)
    assert not folder.exists() and (folder.with_name(folder.name + ".superseded") / "summary.json").exists()
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**dict(cell.settings), "epochs": 1}))
    assert not _resumable(folder, cell)  # other settings, unfinished: not this cell's either
    _set_aside(folder)
    assert folder.with_name(folder.name + ".superseded-2").exists()


def _log(rates, frozen_from, total=1000, every=50):
    """Step log lines of a run whose steps cost ``rates[0]`` s before step ``frozen_from`` and
    ``rates[1]`` s after it (a unit frozen there), with start-up costs in the first line."""
    lines, spent = [], 0.5
    for step in range(every, total + 1, every):
        spent += every * (rates[0] if step <= frozen_from else rates[1])
        lines.append({"kind": "step", "step": step, "frozen": int(step > frozen_from), "train_time_s": spent})
    return {"total_steps": total, "train_time_s": spent, "resumed_from_step": None}, lines


def test_in_run_saving_compares_a_run_with_its_own_full_speed_steps():
    """Full steps at 0.1 s, then half price from the middle: 25% saved, whatever the machine's speed
    in another run; a run without freezing reads ~0; too short a full-speed stretch or a resumed log
    gives no figure (the report pairs with the baseline then)."""
    assert in_run_saving(*_log((0.1, 0.05), 500)) == pytest.approx(0.25, abs=0.01)
    assert in_run_saving(*_log((0.3, 0.15), 500)) == pytest.approx(0.25, abs=0.01)  # a 3x slower machine
    assert in_run_saving(*_log((0.1, 0.1), 1000)) == pytest.approx(0.0, abs=0.01)
    assert in_run_saving(*_log((0.1, 0.05), 60)) is None  # froze before 200 full-speed steps
    summary, lines = _log((0.1, 0.05), 500)
    assert in_run_saving({**summary, "resumed_from_step": 300}, lines) is None
    assert in_run_saving(summary, []) is None


def test_a_full_speed_probe_brackets_the_run_with_its_own_early_steps():
    """With a probe, full speed is the mean of the probe and the run's stretch before its first
    freeze (when it spans 20 steps), so a run that froze early still gets an in-run figure, and a
    machine that slowed during the run (the probe, after it, is slower) is met halfway."""
    summary, lines = _log((0.1, 0.05), 60)  # froze at step 60: a 10-step stretch from the first line
    assert in_run_saving(summary, lines) is None
    probed = {**summary, "full_speed_probe": {"steps": 40, "step_s": 0.1}}
    assert in_run_saving(probed, lines) == pytest.approx(1 - summary["train_time_s"] / (1000 * 0.1))
    summary, lines = _log((0.1, 0.05), 300)  # a 250-step stretch at 0.1 s; the probe after the run says 0.12
    slower = {**summary, "full_speed_probe": {"steps": 40, "step_s": 0.12}}
    assert in_run_saving(slower, lines) == pytest.approx(1 - summary["train_time_s"] / (1000 * 0.11))
    assert in_run_saving({**slower, "resumed_from_step": 300}, lines) == pytest.approx(
        1 - summary["train_time_s"] / (1000 * 0.12))  # a resumed log restarts: the probe alone


def test_the_probe_trains_a_fresh_model_and_leaves_the_random_generators_alone():
    from frostline.lab.data import load_dataset
    from frostline.lab.fullspeed import WARMUP_STEPS, probe_full_speed
    from frostline.lab.zoo import create_model

    data = load_dataset("fashion-mnist", val_size=64, train_subset=256, test_subset=64, seed=0)
    made = []

    def make_model():
        made.append(create_model("resnet", num_classes=10, in_channels=1, image_size=28, width=8))
        return made[-1]

    before = torch.get_rng_state()
    probe = probe_full_speed(make_model, lambda m: torch.optim.SGD(m.parameters(), lr=0.1), data.train, 64,
                             torch.device("cpu"), 6, seed=3)
    assert torch.equal(before, torch.get_rng_state())
    assert probe["steps"] == 6 and probe["warmup_steps"] == WARMUP_STEPS and probe["step_s"] > 0
    assert len(made) == 1 and all(p.grad is not None for p in made[0].parameters())  # every parameter trained
    # more steps than one epoch's 4 batches: the probe goes on into the next epoch


@pytest.mark.parametrize("missing,changed", [("speed_probe", {"epochs": 1}), ("freeze_end", {"freeze_end": 0.5})])
def test_a_run_made_without_a_later_setting_still_counts(tmp_path, missing, changed):
    """A finished run whose config lacks a setting is not stale: the finetune suite's speed probe
    measures a run without changing it, and a setting added to a method later (linear's
    ``freeze_end``) defaults to what runs did before it existed. A setting that changes training,
    given another value, still makes the run another cell's."""
    cells, _ = suite_cells(SUITES["finetune"], METHODS)
    cell = next(c for c in cells if c.variant == "linear-start0+cache")
    assert dict(cell.settings)["speed_probe"] > 0 and dict(cell.settings)["freeze_end"] == 1.0
    folder = tmp_path / "run"
    folder.mkdir()
    settings = {k: v for k, v in cell.settings if k != missing}
    (folder / "config.json").write_text(json.dumps(settings))
    (folder / "summary.json").write_text(json.dumps({"status": "finished"}))
    assert _finished(folder, cell) is not None
    (folder / "config.json").write_text(json.dumps({**settings, **changed}))
    assert _finished(folder, cell) is None
    assert "--speed-probe" in _train_argv(cell, folder)  # the probe runs where the run is made again


def test_aggregate_lists_every_variant_and_pairs_cpu_time():
    suite = Suite("a", ("resnet",), ("fashion-mnist",), 2, ("none", "smartfrz+cache", "linear"), {"epochs": 8})
    cells, _ = suite_cells(suite, METHODS)
    results = {}
    for c in cells:
        if c.variant == "linear" or (c.variant == "smartfrz+cache" and c.seed == 1):
            continue
        results[c.key] = _fake_summary(c, 90.0, 100.0 if c.variant == "none" else 80.0)
        results[c.key]["cpu_time_s"] = 200.0 if c.variant == "none" else 120.0
        if c.variant != "none":
            results[c.key]["decision_overhead"] = 0.0005
    rows = {r["variant"]: r for r in aggregate(cells, results)}
    assert rows["smartfrz+cache"]["time_saved"] == pytest.approx(0.2) and rows["smartfrz+cache"]["cpu_time_saved"] == pytest.approx(0.4)
    assert rows["smartfrz+cache"]["decision_overhead"] == pytest.approx(0.0005) and rows["smartfrz+cache"]["seeds"] == 1
    assert rows["linear"]["seeds"] == 0 and rows["linear"]["of_seeds"] == 2 and math.isnan(rows["linear"]["time_saved"])
    assert "smartfrz" in ADAPTIVE


def test_variants_name_only_what_differs_from_the_registered_defaults():
    from frostline.lab.config import method_settings

    for name, variant in VARIANTS.items():
        defaults = method_settings(variant["method"])
        assert all(defaults[k] != v for k, v in variant.items() if k in defaults), name
    cells, _ = suite_cells(SUITES["quick"], METHODS)
    linear = dict(next(c for c in cells if c.variant == "linear").settings)
    assert linear["freeze_start"] == 0.5 and linear["freeze_level"] == 1.0  # the cell records the full settings


def test_bad_suites_are_refused_clearly(tmp_path, capsys):
    with pytest.raises(ConfigError, match="needs the `none` variant"):
        run_suite(Suite("x", ("resnet",), ("fashion-mnist",), 1, ("linear",)), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="unknown method variants"):
        run_suite(Suite("x", ("resnet",), ("fashion-mnist",), 1, ("none", "magic")), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="jobs"):
        run_suite("smoke", tmp_path, progress=False, jobs=0)
    assert main(["bench", "compare", "--suite", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown suite" in capsys.readouterr().err
    assert main(["bench", "readme", str(tmp_path / "missing")]) == 2
    capsys.readouterr()
    # a selection naming no cell of the suite would run nothing: it is refused, naming the choices
    for flag, value in (("--only-variant", "linear-start0.1"), ("--only-model", "vgg"), ("--only-seed", "7")):
        assert main(["bench", "compare", "--suite", "smoke", "--out", str(tmp_path / "sel"), flag, value]) == 2
        err = capsys.readouterr().err
        assert value in err and "choose from" in err, err
    assert not (tmp_path / "sel" / "cells").exists()  # nothing ran


def test_finetune_suite_pairs_each_pretrained_model_with_its_dataset_and_settings():
    cells, skipped = suite_cells(SUITES["finetune"], ["none", "linear", "freezeout", "autofreeze", "smartfrz"])
    assert not skipped
    combos = {(c.dataset, c.model) for c in cells}
    assert combos == {("fine-foods", "minilm"), ("fashion-mnist", "efficientnet-lite0")}
    minilm = dict(next(c for c in cells if c.model == "minilm" and c.variant == "freezeout+cache").settings)
    assert minilm["lr"] == 5e-5 and minilm["optimizer"] == "adamw" and minilm["cache"] == "memory"
    assert len(cells) == 2 * len(SUITES["finetune"].variants) * SUITES["finetune"].seeds
    assert SUITES["finetune"].max_jobs == 1 and SUITES["finetune"].convergence  # honest times, a plateau shown


def test_the_longer_finetune_trains_efficientnet_as_the_finetune_suite_does_but_longer():
    """Its cells must differ from the 3-epoch suite's only in the epochs, or the two regimes could
    not be read side by side."""
    methods = ["none", "linear", "freezeout", "autofreeze", "smartfrz"]
    short = {c.variant: dict(c.settings) for c in suite_cells(SUITES["finetune"], methods)[0]
             if c.model == "efficientnet-lite0" and c.seed == 0}
    cells, skipped = suite_cells(SUITES["finetune-long"], methods)
    assert not skipped and {(c.dataset, c.model) for c in cells} == {("fashion-mnist", "efficientnet-lite0")}
    for cell in (c for c in cells if c.seed == 0 and c.variant in short):
        longer = dict(cell.settings)
        assert longer.pop("epochs") == 2 * short[cell.variant].pop("epochs")
        assert longer == short[cell.variant], cell.variant
    assert SUITES["finetune-long"].max_jobs == 1 and SUITES["finetune-long"].convergence


def test_cache_rows_pair_each_cached_variant_with_its_uncached_twin():
    """Times relative to each run's own full speed, paired by seed; a cached variant slower than
    its twin beyond the tolerance is called slower, and the README line says how many were not."""
    from frostline.lab.compare import CACHE_TOLERANCE, Cell, cache_lines, cache_rows, cache_summary_lines

    cells = [Cell("fashion-mnist", m, v, seed, ()) for m in ("resnet", "vgg") for seed in (0, 1)
             for v in ("none", "freezeout", "freezeout+cache", "freezeout+auto")]
    relative = {"none": 1.0, "freezeout": 0.8, "freezeout+cache": 0.8 * (1 + 3 * CACHE_TOLERANCE), "freezeout+auto": 0.78}
    results = {c.key: {"train_time_s": 100 * relative[c.variant] * (1.1 if c.seed else 1.0),
                       "relative_time": relative[c.variant],
                       "cache": {"peak_memory_mb": 50.0, "payoff": [{"boundary": 3, "served_from_step": 9}]}
                       if c.variant == "freezeout+auto" else None}
               for c in cells if not (c.model == "vgg" and c.variant == "freezeout+auto" and c.seed == 1)}
    rows = {(r["model"], r["variant"]): r for r in cache_rows(cells, results)}
    assert set(rows) == {(m, v) for m in ("resnet", "vgg") for v in ("freezeout+cache", "freezeout+auto")}
    auto, memory = rows[("resnet", "freezeout+auto")], rows[("resnet", "freezeout+cache")]
    assert auto["uncached"] == "freezeout" and auto["pairs"] == 2 and auto["ratio"] == pytest.approx(0.78 / 0.8)
    assert auto["verdict"] == "not slower" and auto["boundaries_served"] == 1.0
    assert memory["verdict"] == "slower" and memory["boundaries_served"] is None
    assert rows[("vgg", "freezeout+auto")]["pairs"] == 1  # the missing seed is not paired
    table = "\n".join(cache_lines(list(rows.values())))
    assert "| resnet | freezeout+cache | freezeout | 2 |" in table and "slower" in table
    summary = cache_summary_lines(list(rows.values()))
    assert any(s.startswith("- `--cache auto` against no cache: not slower in 2 of 2") for s in summary)
    assert any("`--cache memory`" in s and "not slower in 0 of 2" in s for s in summary)

    # runs that froze differently (another machine's arithmetic moved an adaptive method) are not twins
    for c in cells:
        if c.key in results:
            results[c.key]["frozen_at"] = {"a": 0.5 if (c.variant, c.seed) == ("freezeout+auto", 1) else 0.25}
    rows = {(r["model"], r["variant"]): r for r in cache_rows(cells, results)}
    moved = rows[("resnet", "freezeout+auto")]
    assert moved["pairs"] == 1 and moved["not_twins"] == 1 and rows[("resnet", "freezeout+cache")]["pairs"] == 2
    assert "| resnet | freezeout+auto | freezeout | 1 (1 froze otherwise) |" in "\n".join(cache_lines(list(rows.values())))


def test_twins_trained_in_one_process_decide_the_cache_verdict(tmp_path, capsys):
    """Across runs the cached VGG cell reads 4% slower (machine drift between two runs); trained side
    by side in one process its twins read 0.99, which decides. A pair that froze differently, or
    an `auto` pair measured under an older payoff rule, is left out; an unreadable file is skipped."""
    from frostline.exploit.payoff import RULE_VERSION
    from frostline.lab.compare import Cell, cache_lines, cache_rows, cache_summary_lines, read_twins

    cells = [Cell("fashion-mnist", "vgg", v, seed, ()) for seed in (0, 1) for v in ("linear-start0.25-off", "linear-start0.25")]
    results = {c.key: {"train_time_s": 40.0, "relative_time": 0.74 if c.variant.endswith("off") else 0.77,
                       "cache": None if c.variant.endswith("off") else {"peak_memory_mb": 78.0, "payoff": []}}
               for c in cells}
    assert cache_rows(cells, results)[0]["verdict"] == "slower"
    twins = tmp_path / "twins"
    twins.mkdir()
    entry = {"model": "vgg", "variant": "linear-start0.25", "same_freezes": True, "payoff_rule": RULE_VERSION}
    (twins / "vgg-linear.json").write_text(json.dumps([
        {**entry, "seed": 0, "time_ratio": 0.98}, {**entry, "seed": 1, "time_ratio": 1.0},
        {**entry, "seed": 2, "time_ratio": 1.5, "same_freezes": False},
        {**entry, "seed": 3, "time_ratio": 1.5, "payoff_rule": RULE_VERSION - 1}]))
    (twins / "broken.json").write_text("{not json")
    side = read_twins(tmp_path)
    assert [e["seed"] for e in side[("vgg", "linear-start0.25")]] == [0, 1]
    told = capsys.readouterr().err
    assert "seed 2 (its runs froze differently)" in told and f"seed 3 (made under payoff rule {RULE_VERSION - 1}" in told
    row = cache_rows(cells, results, side)[0]
    assert row["in_process_ratio"] == pytest.approx(0.99) and row["in_process_pairs"] == 2
    assert row["in_process_worst"] == pytest.approx(1.0) and row["verdict"] == "not slower"
    assert "0.990 (worst 1.000, 2 seeds)" in "\n".join(cache_lines([row]))
    line = cache_summary_lines([row])[0]
    assert "not slower in 1 of 1" in line and "across runs mean time ratio 1.041" in line
    assert "side by side in one process (2 twin pairs): mean 0.990, highest 1.000" in line
    # a pair measured only side by side (its runs froze otherwise across machines) still counts
    only_side = {**row, "variant": "autofreeze+auto", "pairs": 0, "ratio": float("nan")}
    line = cache_summary_lines([row, only_side])[0]
    assert "not slower in 2 of 2" in line and "(4 twin pairs)" in line and "highest 1.041 (linear-start0.25" in line


def test_a_suite_without_uncached_cells_is_judged_by_its_twins_alone(tmp_path, capsys):
    """The standard suite's `linear` cells take the default `--cache auto` and have no `cache=off`
    copy among its cells: their twins, trained side by side in one process, are the whole cache
    comparison. A slow pair says slower; twins of a variant the suite does not run are not its rows."""
    from frostline.exploit.payoff import RULE_VERSION
    from frostline.lab.compare import Cell, cache_lines, cache_rows, cache_summary_lines, read_twins

    cells = [Cell("fashion-mnist", m, v, 0, ()) for m in ("vgg", "resnet") for v in ("none", "linear")]
    assert cache_rows(cells, {}) == []
    twins = tmp_path / "twins"
    twins.mkdir()
    entry = {"variant": "linear", "same_freezes": True, "payoff_rule": RULE_VERSION, "seed": 0,
             "payoff": [{"boundary": 4, "served_from_step": 296}, {"boundary": 5, "declined_at_step": 300}]}
    (twins / "vgg-linear.json").write_text(json.dumps([{**entry, "model": "vgg", "time_ratio": 0.97}]))
    (twins / "resnet-linear.json").write_text(json.dumps([{**entry, "model": "resnet", "time_ratio": 1.04}]))
    (twins / "vgg-other.json").write_text(json.dumps([{**entry, "model": "vgg", "variant": "linear-start0.25",
                                                        "time_ratio": 0.9}]))
    rows = cache_rows(cells, {}, read_twins(tmp_path))
    assert [(r["model"], r["variant"], r["verdict"]) for r in rows] == [
        ("resnet", "linear", "slower"), ("vgg", "linear", "not slower")]
    assert "leaving out the twins of vgg linear-start0.25: this suite does not run that cell" in capsys.readouterr().err
    assert rows[1]["boundaries_served"] == 1 and rows[1]["pairs"] == 0
    table = "\n".join(cache_lines(rows))
    assert "| vgg | linear | cache off, same process | 0.970 (worst 0.970, 1 seed) | 1.0 | not slower |" in table
    assert "| pairs |" not in table and "wall ratio" not in table and "cache MB" not in table
    line = cache_summary_lines(rows)[0]
    assert "not slower in 1 of 2" in line and "across runs" not in line
    assert "side by side in one process (2 twin pairs): mean 1.005, highest 1.040 (linear on resnet)" in line
