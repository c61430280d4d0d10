"""``frostline bench compare``: cells run as real trainings, are reused when finished, and the
report pairs every run with the baseline of its own seed."""

import json

import pytest

from frostline.lab.cli import main
from frostline.lab.compare import (FROM_SCRATCH, SUITES, VARIANTS, Goal, Suite, goal_lines, publish_results, results_markers,
                                   run_suite, suite_cells, summary_markers)
from frostline.errors import ConfigError, FrostlineError

TINY = {"epochs": 1, "train_subset": 384, "val_size": 64, "test_subset": 256, "batch_size": 64, "width": 8,
        "threads": 1, "log_every": 2}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    suite = Suite("test", ("resnet",), ("fashion-mnist",), 1, ("none", "freezeout+cache"), TINY, "tiny test suite",
                  goals=(FROM_SCRATCH,))
    data = run_suite(suite, root, progress=False, jobs=2)
    return suite, root, data


@pytest.mark.integration
def test_every_cell_is_a_finished_training_with_the_suite_settings(bench):
    suite, root, data = bench
    assert data["finished"] == data["cells"] == 2 and not data["failed"]
    cfg = json.loads((root / "cells/fashion-mnist/resnet/freezeout_cache/seed0/config.json").read_text())
    assert cfg["method"] == "freezeout" and cfg["cache"] == "memory" and cfg["train_subset"] == 384
    summary = json.loads((root / "cells/fashion-mnist/resnet/freezeout_cache/seed0/summary.json").read_text())
    assert summary["status"] == "finished" and summary["cache"] is not None


@pytest.mark.integration
def test_time_saved_is_paired_with_the_same_seed_baseline(bench):
    suite, root, data = bench
    cell = lambda v: json.loads((root / f"cells/fashion-mnist/resnet/{v}/seed0/summary.json").read_text())
    base, frz = cell("none"), cell("freezeout_cache")
    row = next(r for r in data["rows"] if r["variant"] == "freezeout+cache")
    assert row["time_saved"] == pytest.approx(1 - frz["train_time_s"] / base["train_time_s"])
    assert row["delta_accuracy"] == pytest.approx(frz["test_accuracy"] - base["test_accuracy"])
    assert row["flops_saved"] == pytest.approx(frz["flops_saved"]) and row["flops_saved"] > 0
    report = (root / "report.md").read_text()
    assert "| freezeout+cache |" in report and results_markers("test")[0] in report
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
    assert data["finished"] == 2
    assert kept.stat().st_mtime_ns == before  # reused, not retrained
    assert json.loads(broken.read_text())["status"] == "finished"  # rebuilt from its checkpoint


@pytest.mark.integration
def test_publish_writes_full_results_to_docs_and_a_short_summary_to_the_readme(bench, tmp_path):
    suite, root, _ = bench
    readme, docs = tmp_path / "README.md", tmp_path / "docs" / "benchmarks.md"
    begin, end = summary_markers("test")
    other = "\n".join(summary_markers("quick"))
    readme.write_text(f"# x\n\nbefore\n{begin}\nold numbers\n{end}\nafter\n{other}\n")
    publish_results(root, readme, docs)  # docs/benchmarks.md does not exist yet: created
    text = readme.read_text()
    assert "old numbers" not in text and "| freezeout+cache |" not in text  # the summary, not the tables
    assert "Adaptive methods from scratch" in text  # the suite's goal line
    assert "](docs/bench/test/accuracy_vs_time_saved.png)" in text and "](docs/benchmarks.md)" in text
    assert text.startswith("# x\n\nbefore\n") and text.endswith(f"after\n{other}\n")  # other suites' blocks stay
    page = docs.read_text()
    assert "| freezeout+cache |" in page and results_markers("test")[0] in page
    assert "](bench/test/accuracy_vs_time_saved.png)" in page  # relative to docs/
    assert (tmp_path / "docs/bench/test/accuracy_vs_time_saved.png").exists()
    docs.write_text(page.replace("| freezeout+cache |", "| stale |") + "\nkept\n")
    publish_results(root, readme, docs)  # the section is replaced, the rest of the page stays
    page = docs.read_text()
    assert "| stale |" not in page and page.count(results_markers("test")[0]) == 1 and "\nkept\n" in page
    readme.write_text("no markers here\n")
    with pytest.raises(FrostlineError, match="no summary block"):
        publish_results(root, readme, docs)


def test_goals_are_the_suites_data():
    rows = [{"dataset": "d", "model": "resnet", "variant": v, "method": m, "time_saved": t, "delta_accuracy": a}
            for v, m, t, a in [("autofreeze+cache", "autofreeze", 0.35, -0.1), ("smartfrz+cache", "smartfrz", 0.5, -1.0)]]
    line = goal_lines(FROM_SCRATCH, rows)[0]
    assert "**autofreeze+cache**" in line and "**met**" in line  # smartfrz saves more but loses too much
    strict = Goal("Strict", min_time_saved=0.4, methods=("autofreeze", "smartfrz"))
    assert "**not met**" in goal_lines(strict, rows)[0] and "≥ 40% time saved" in goal_lines(strict, rows)[0]
    assert "no run of this bench" in goal_lines(Goal("Tuning", 0.5, pretrained=True), rows)[0]
    assert all(s.goals for s in SUITES.values())


def test_variants_name_only_what_differs_from_the_registered_defaults():
    from frostline.lab.config import method_settings

    for name, variant in VARIANTS.items():
        defaults = method_settings(variant["method"])
        assert all(defaults[k] != v for k, v in variant.items() if k in defaults), name
    cells, _ = suite_cells(SUITES["quick"], ["none", "linear", "freezeout", "autofreeze", "cka-oracle", "smartfrz"])
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


def test_finetune_suite_pairs_each_pretrained_model_with_its_dataset_and_settings():
    cells, skipped = suite_cells(SUITES["finetune"], ["none", "linear", "freezeout", "autofreeze", "smartfrz"])
    assert not skipped
    combos = {(c.dataset, c.model) for c in cells}
    assert combos == {("fine-foods", "minilm"), ("fashion-mnist", "efficientnet-lite0")}
    minilm = dict(next(c for c in cells if c.model == "minilm" and c.variant == "freezeout+cache").settings)
    assert minilm["lr"] == 5e-5 and minilm["optimizer"] == "adamw" and minilm["cache"] == "memory"
    assert len(cells) == 2 * 5 * SUITES["finetune"].seeds
