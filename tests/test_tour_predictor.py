"""The SmartFRZ predictor pipeline as a user meets it: `frostline predictor collect`, `train`,
`eval`, then `frostline train --method smartfrz --predictor FILE`, on two tiny real collections."""

import hashlib
import json
import shutil

import pytest
import torch

from frostline.lab.cli import main
from frostline.lab.predictor.collect import LabelRule, label_stages, load_collected
from frostline.policies.smartfrz import load_predictor
from frostline.policies.smartfrz.predictor import SHIPPED

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

TINY = ["--model", "resnet", "--epochs", "2", "--train-subset", "256", "--val-size", "128", "--test-subset", "128",
        "--batch-size", "32", "--no-progress", "--threads", "1", "--width", "8"]
COLLECT = [*TINY, "--snapshots-per-epoch", "8"]
# two-epoch runs on 256 images barely settle: under this loose rule seed 1 has "freeze" windows, seed 0 none
LOOSE = ["--label-window", "2", "--label-tolerance", "1", "--label-share", "0", "--label-min-learned", "0"]
LOOSE_RULE = LabelRule(2, 1, 0, 0)
FIT = ["--epochs", "2", "--history-window", "8", "--no-progress", *LOOSE]


@pytest.fixture(scope="module")
def collections(tmp_path_factory):
    """Seed 0 (against a seed-1 reference it trains) and seed 1 (against seed 0's recording)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("collections")
    c0, c1 = root / "resnet-s0", root / "resnet-s1"
    assert main(["predictor", "collect", *COLLECT, "--seed", "0", "--out", str(c0)]) == 0
    assert main(["predictor", "collect", *COLLECT, "--seed", "1", "--reference", str(c0 / "recording"),
                 "--out", str(c1)]) == 0
    return c0, c1


def _freeze_labels(folder) -> int:
    ds = load_collected(folder)
    return int((label_stages(ds["cka"], ds["cka_init"], LOOSE_RULE) == 1).sum())


def _one_error_line(capsys, code, needle):
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err, (code, err)
    return err


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_documented_workflow_runs_end_to_end(collections, tmp_path, capsys):
    c0, c1 = collections
    pred = tmp_path / "predictor.pt"
    capsys.readouterr()
    # `frostline predictor train runs/predictor/*/ --out predictor.pt --holdout runs/predictor/resnet-s2`,
    # here holding out seed 0 would leave no "freeze" to calibrate on, so train on seed 1 and calibrate on it
    assert main(["predictor", "train", str(c1), "--holdout", "--out", str(pred), *FIT]) == 0
    out = capsys.readouterr().out
    assert "| train | resnet/fashion-mnist/w8/seed1 |" in out and f"predictor: {pred}" in out
    for chosen in (["--predictor", str(pred)], []):  # the user's predictor, then the shipped one
        assert main(["predictor", "eval", str(c0), str(c1), "--history-window", "8", *LOOSE, *chosen]) == 0
        out = capsys.readouterr().out
        assert "| eval | resnet/fashion-mnist/w8/seed0 |" in out and "| eval | all |" in out
        assert str(pred if chosen else SHIPPED) in out
    run = tmp_path / "smartfrz"
    assert main(["train", *TINY, "--epochs", "1", "--method", "smartfrz", "--predictor", str(pred),
                 "--snapshots-per-epoch", "8", "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["policy"]["predictor_sha256"] == load_predictor(pred)[1]["sha256"]


def test_a_retrained_predictor_keeps_the_earlier_file_aside(collections, tmp_path, capsys):
    _, c1 = collections
    pred = tmp_path / "predictor.pt"
    assert main(["predictor", "train", str(c1), "--holdout", "--out", str(pred), *FIT]) == 0
    first = _sha(pred)
    capsys.readouterr()
    assert main(["predictor", "train", str(c1), "--holdout", "--out", str(pred), *FIT, "--seed", "1"]) == 0
    err = capsys.readouterr().err
    earlier = tmp_path / "predictor.earlier.pt"
    assert earlier.is_file() and _sha(earlier) == first, list(tmp_path.iterdir())
    assert f"kept as {earlier}" in err and pred.is_file() and _sha(pred) != first
    load_predictor(earlier)  # still a working predictor


def test_collecting_again_keeps_the_finished_dataset_aside(collections, tmp_path, capsys):
    c0, _ = collections
    folder = tmp_path / "resnet-s0"
    shutil.copytree(c0, folder)  # with its finished reference, which the re-run reuses
    first = _sha(folder / "dataset.pt")
    capsys.readouterr()
    assert main(["predictor", "collect", *COLLECT, "--seed", "0", "--out", str(folder)]) == 0
    err = capsys.readouterr().err
    earlier = folder / "dataset.earlier.pt"
    assert earlier.is_file() and _sha(earlier) == first, sorted(p.name for p in folder.iterdir())
    assert f"kept as {earlier}" in err
    assert load_collected(earlier)["provenance"]["seed"] == 0 and load_collected(folder)["provenance"]["seed"] == 0


def test_held_out_runs_without_a_freeze_label_are_refused(collections, tmp_path, capsys):
    c0, c1 = collections
    assert _freeze_labels(c0) == 0 and _freeze_labels(c1) > 0  # the premise: only seed 1 has "freeze" windows
    capsys.readouterr()
    pred = tmp_path / "p.pt"
    code = main(["predictor", "train", str(c0), str(c1), "--holdout", str(c0), "--out", str(pred), *FIT])
    _one_error_line(capsys, code, "no window labelled freeze")
    assert not pred.exists()  # rather than a predictor calibrated never to freeze


def test_a_bad_predictor_out_is_one_clear_error_before_training(collections, tmp_path, capsys):
    _, c1 = collections
    shipped = SHIPPED.read_bytes()
    (tmp_path / "file").write_text("x")
    capsys.readouterr()
    try:
        for out, needle in [(str(tmp_path), "is a folder"), ("", "--out is empty"),
                            (str(tmp_path / "file" / "p.pt"), "inside a file"), (str(SHIPPED), "shipped")]:
            code = main(["predictor", "train", str(c1), "--holdout", "--out", out, *FIT])
            _one_error_line(capsys, code, needle)
    finally:  # should the check ever go, put the shipped predictor back (and leave no copy beside it)
        if SHIPPED.read_bytes() != shipped:
            SHIPPED.write_bytes(shipped)
            SHIPPED.with_name("predictor.earlier.pt").unlink(missing_ok=True)
            pytest.fail("`predictor train --out` wrote over the shipped predictor")


def test_a_history_window_or_epochs_that_cannot_work_is_one_clear_error(collections, tmp_path, capsys):
    _, c1 = collections
    capsys.readouterr()
    _one_error_line(capsys, main(["predictor", "eval", str(c1), "--history-window", "0"]), "--history-window")
    code = main(["predictor", "train", str(c1), "--holdout", "--out", str(tmp_path / "w.pt"), *FIT,
                 "--history-window", "1"])
    _one_error_line(capsys, code, "--history-window")
    code = main(["predictor", "train", str(c1), "--holdout", "--out", str(tmp_path / "e.pt"), *FIT, "--epochs", "0"])
    _one_error_line(capsys, code, "--epochs")
    assert not list(tmp_path.glob("*.pt"))


def test_collections_too_small_to_train_on_say_what_to_do(collections, tmp_path, capsys):
    c0, c1 = collections
    (tmp_path / "empty").mkdir()
    out = str(tmp_path / "p.pt")
    capsys.readouterr()
    for args, needle in [([str(c1)], "need at least 2 collected runs"),  # one run
                         ([str(c0), "--holdout"], "both classes are needed"),  # no converged unit
                         ([str(tmp_path / "empty")], "pass folders written by `frostline predictor collect`"),
                         ([str(c0 / "reference"), str(c1)], "pass folders written by `frostline predictor collect`")]:
        _one_error_line(capsys, main(["predictor", "train", *args, "--out", out, *FIT]), needle)
    _one_error_line(capsys, main(["predictor", "eval", str(c0 / "recording")]), "frostline predictor collect")
    assert not (tmp_path / "p.pt").exists()


def test_a_corrupted_or_wrong_predictor_file_is_one_clear_error(collections, tmp_path, capsys):
    _, c1 = collections
    (tmp_path / "garbage.pt").write_bytes(b"not a predictor")
    capsys.readouterr()
    for bad, needle in [(tmp_path / "garbage.pt", "unreadable or corrupted"),
                        (c1 / "dataset.pt", "not a frostline SmartFRZ predictor"),
                        (tmp_path / "missing.pt", "does not exist")]:
        _one_error_line(capsys, main(["predictor", "eval", str(c1), "--predictor", str(bad)]), needle)
