"""The run contract: records and predictions written with save() and read back with load().

`make_run` builds a run from synthetic probabilities through the same `RunRecord.save` /
`save_predictions` API that pipeline.run uses, so the leaderboard, ensemble and CLI tests need
no backbone or head and still read what the contract writes (test_pipeline.py checks that real
runs go through the same API).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import VIEWS, make_run  # noqa: E402
from kaggle_tl.config import RunConfig
from kaggle_tl.errors import KaggleTLError
from kaggle_tl.runs.compare import check_comparable, load_models, same_folds_as_newest
from kaggle_tl.runs.queries import list_runs, resolve_run_dir, select_runs
from kaggle_tl.runs.record import RECORD_FILE, SCHEMA_VERSION, Predictions, RunRecord, claim_run_dir
from kaggle_tl.tasks import metrics
from kaggle_tl.tasks.evaluate import model_score, score_table


@pytest.fixture
def runs(tmp_path, competition):
    """Three runs on fingerprint fp-a (one on other folds), one newer run on fp-b."""
    runs_dir = tmp_path / "runs"
    make_run(runs_dir, competition, "r1", {"xception__logreg": (["xception"], 1.0)}, minutes=1)
    make_run(runs_dir, competition, "r2", {"inception_v3__logreg": (["inception_v3"], 3.0)}, minutes=2)
    make_run(runs_dir, competition, "r3", {"xception__logreg": (["xception"], 2.0)}, seed=7, minutes=3)
    make_run(runs_dir, competition, "r4", {"xception__logreg": (["xception"], 2.0)}, fingerprint="fp-b", minutes=4)
    return runs_dir, competition


def test_record_and_predictions_round_trip(runs):
    runs_dir, _ = runs
    record = RunRecord.load(runs_dir / "r2")
    assert record.run_id == "r2" and record.schema_version == SCHEMA_VERSION and record.views == VIEWS
    entry = record.model("inception_v3__logreg")
    preds = record.predictions(entry.name)
    assert preds.oof.shape == (2, 30, 3) and preds.test.shape == (2, 5, 9, 3) and preds.views == VIEWS
    assert entry.score.logloss == pytest.approx(metrics.row_logloss(preds.y, preds.oof.mean(axis=0)).mean(), rel=1e-6)
    assert np.bincount(preds.folds).tolist() == [6] * 5
    assert isinstance(record.config, RunConfig) and record.config.seed == 42 and record.random_weights


def test_list_runs_oldest_first_and_names_damaged_records(runs):
    runs_dir, _ = runs
    for name, text in [("truncated", '{"schema_version": 2, "run_'), ("null", "null"),
                       ("old", json.dumps({"schema_version": 1, "run_id": "old"}))]:
        (runs_dir / name).mkdir()
        (runs_dir / name / RECORD_FILE).write_text(text)
    (runs_dir / "in-progress").mkdir()  # no record yet: not a problem, not a run
    records, problems = list_runs(runs_dir)
    assert [r.run_id for r in records] == ["r1", "r2", "r3", "r4"]
    assert all(r.run_dir.name == r.run_id for r in records)
    assert len(problems) == 3 and all("\n" not in p for p in problems)
    assert any("null" in p and "not a JSON object" in p for p in problems)
    assert any("old" in p and "schema version 1" in p for p in problems)
    assert any("truncated" in p and "damaged run record" in p for p in problems)


def test_runs_made_within_one_second_list_in_the_order_they_were_made(tmp_path, competition):
    # Run ids share the second and end in a random suffix, so only the creation stamp orders them.
    for run_id in ["20261125-074047-ffff", "20261125-074047-0000", "20261125-074047-8888"]:
        make_run(tmp_path / "runs", competition, run_id, {"xception__logreg": (["xception"], 1.0)}, minutes=None)
    records, _ = list_runs(tmp_path / "runs")
    assert [r.run_id[-4:] for r in records] == ["ffff", "0000", "8888"]


def test_a_run_id_already_taken_is_drawn_again_not_shared(tmp_path, monkeypatch):
    # Two runs launched together can draw the same id; the second must not write into the first's folder.
    drawn = iter(["20261125-074047-abcd", "20261125-074047-abcd", "20261125-074047-abce"])
    monkeypatch.setattr("kaggle_tl.runs.record.new_run_id", lambda: next(drawn))
    first, second = claim_run_dir(tmp_path / "runs"), claim_run_dir(tmp_path / "runs")
    assert (first.name, second.name) == ("20261125-074047-abcd", "20261125-074047-abce")
    assert first.is_dir() and second.is_dir()


def test_a_model_without_its_score_or_predictions_is_a_one_line_error(runs):
    runs_dir, _ = runs
    path = runs_dir / "r1" / RECORD_FILE
    values = json.loads(path.read_text())
    del values["models"][0]["score"]
    path.write_text(json.dumps(values))
    with pytest.raises(KaggleTLError, match="damaged run record .*score"):
        RunRecord.load(runs_dir / "r1")
    record = RunRecord.load(runs_dir / "r2")
    record.predictions_path("inception_v3__logreg").unlink()
    with pytest.raises(KaggleTLError, match="predictions of run r2 missing"):
        record.predictions("inception_v3__logreg")


def test_the_saved_config_comes_back_typed_and_a_renamed_setting_fails_at_load(runs):
    runs_dir, _ = runs
    record = RunRecord.load(runs_dir / "r1")
    assert record.config == RunConfig.from_dict(record.config.to_dict())
    path = runs_dir / "r1" / RECORD_FILE
    values = json.loads(path.read_text())
    values["config"]["n_folds"] = values["config"].pop("folds")  # as a rename in a later version would leave it
    path.write_text(json.dumps(values))
    with pytest.raises(KaggleTLError) as error:
        RunRecord.load(runs_dir / "r1")
    message = str(error.value)
    assert message.startswith(str(path)) and "unknown setting 'n_folds' (did you mean folds?)" in message
    assert "\n" not in message


def test_predictions_swapped_in_from_another_run_are_refused_and_left_out(runs):
    runs_dir, _ = runs
    r1, r2 = RunRecord.load(runs_dir / "r1"), RunRecord.load(runs_dir / "r2")
    theirs = r2.predictions_path("inception_v3__logreg").read_bytes()
    r1.predictions_path("xception__logreg").write_bytes(theirs)
    with pytest.raises(KaggleTLError, match="not the predictions run r1 saved"):
        r1.predictions("xception__logreg")
    models, problems = load_models([r1, r2])
    assert [m.key for m in models] == ["r2/inception_v3__logreg"]
    assert len(problems) == 1 and "r1" in problems[0] and "\n" not in problems[0]


def test_nan_or_damaged_predictions_are_refused(runs):
    runs_dir, _ = runs
    record = RunRecord.load(runs_dir / "r2")
    preds = record.predictions("inception_v3__logreg")
    preds.oof[0, 3, 1] = np.nan
    _, record.models[0].predictions_sha1 = record.save_predictions("inception_v3__logreg", preds)
    with pytest.raises(KaggleTLError, match="NaN"):
        record.predictions("inception_v3__logreg")
    path = record.predictions_path("inception_v3__logreg")
    path.write_bytes(path.read_bytes()[:200])  # truncated: its checksum no longer matches
    with pytest.raises(KaggleTLError, match="replaced or damaged"):
        record.predictions("inception_v3__logreg")


def test_predictions_refuse_inconsistent_shapes():
    with pytest.raises(KaggleTLError, match="inconsistent shapes"):
        Predictions(["original"], np.ones((1, 4, 2)), np.ones((1, 2, 3, 2)), np.array([0, 1, 0, 1]), np.zeros(5))


def test_select_runs_keeps_one_data_set(runs, tmp_path):
    runs_dir, competition = runs
    records, _ = list_runs(runs_dir)
    newest, notes = select_runs(records)  # no filter: the newest run's data (fp-b), the rest named
    assert [r.run_id for r in newest] == ["r4"]
    assert len(notes) == 1 and "--fingerprint fp-a" in notes[0]
    by_fp, notes = select_runs(records, fingerprint="fp-")  # a prefix matching both still never mixes them
    assert {r.data_fingerprint for r in by_fp} == {"fp-b"} and notes
    by_fp, notes = select_runs(records, fingerprint="fp-a")
    assert [r.run_id for r in by_fp] == ["r1", "r2", "r3"] and notes == []
    assert select_runs(records, data=tmp_path / "elsewhere") == ([], [])
    assert [r.run_id for r in select_runs(records, data=competition, fingerprint="fp-a")[0]] == ["r1", "r2", "r3"]


def test_same_folds_as_newest_leaves_out_other_seeds(runs):
    runs_dir, _ = runs
    models, _ = load_models([RunRecord.load(runs_dir / r) for r in ("r1", "r2")])
    kept, notes = same_folds_as_newest(models)
    assert [m.run.run_id for m in kept] == ["r1", "r2"] and notes == []
    models, _ = load_models([RunRecord.load(runs_dir / r) for r in ("r1", "r3", "r2")])
    kept, notes = same_folds_as_newest(models)  # r3, on seed 7, is the newest run: its folds decide
    assert [m.run.run_id for m in kept] == ["r3"]
    assert "2 run(s) on other folds left out (r1, r2)" in notes[0]


def test_load_models_keys_and_means(runs):
    runs_dir, _ = runs
    (model,), problems = load_models([RunRecord.load(resolve_run_dir("r2", runs_dir))])
    assert model.key == "r2/inception_v3__logreg" and model.entry.backbones == ["inception_v3"] and problems == []
    np.testing.assert_allclose(model.predictions.oof_mean, model.predictions.oof.mean(axis=0))
    np.testing.assert_allclose(model.predictions.test_mean.sum(axis=1), 1.0, atol=1e-6)


def test_resolve_run_dir_by_id_or_path(runs, tmp_path):
    runs_dir, _ = runs
    assert resolve_run_dir("r1", runs_dir) == runs_dir / "r1"
    assert resolve_run_dir(str(runs_dir / "r2"), tmp_path / "nowhere") == runs_dir / "r2"
    with pytest.raises(KaggleTLError, match="no run with that id"):
        resolve_run_dir("r9", runs_dir)


@pytest.mark.parametrize("other, message", [("r4", "different data"), ("r3", "different folds")])
def test_check_comparable_refuses_other_data_or_folds(runs, other, message):
    runs_dir, _ = runs
    def models(*run_ids):
        return load_models([RunRecord.load(runs_dir / r) for r in run_ids])[0]

    with pytest.raises(KaggleTLError, match=message):
        check_comparable(models("r1", other))
    y, folds = check_comparable(models("r1", "r2"))
    assert y.shape == folds.shape == (30,)


def test_score_table_matches_the_model_score(runs):
    runs_dir, _ = runs
    record = RunRecord.load(runs_dir / "r1")
    preds = record.predictions("xception__logreg")
    table = score_table(record.task, preds)
    overall = table[(table.fold == "all") & (table.view == "original+hflip")].iloc[0]
    assert overall.cv_logloss == pytest.approx(model_score(record.task, preds).logloss)
    assert set(table.view) == {"original", "hflip", "original+hflip"} and len(table) == 3 * 6
