"""Run records read back: selection by data set, model predictions, comparability checks.

`make_fake_run` writes a run folder the way pipeline.run does (record.json, folds.npy, y.npy,
models/<name>/{oof,test}.npy, views.json, scores.csv) from synthetic probabilities, so the
leaderboard, ensemble and CLI tests need no backbone or head.
"""
from __future__ import annotations

import datetime as dt
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from kaggle_tl.config import RunConfig
from kaggle_tl.cv import FoldPredictions, make_folds, score_table
from kaggle_tl.errors import KaggleTLError
from kaggle_tl.runs import (check_comparable, list_runs, load_models, load_record, resolve_run_dir,
                            same_folds_as_newest, save_model_predictions, select_runs, write_record)

VIEWS = ["original", "hflip"]


def competition_labels(competition: Path) -> tuple[list[str], np.ndarray, list[str], list[str]]:
    """(classes, y, train ids, test ids) of a conftest competition, as pipeline.run reads them."""
    labels = pd.read_csv(competition / "labels.csv", dtype=str)
    sample = pd.read_csv(competition / "sample_submission.csv", dtype={"id": str})
    classes = [c for c in sample.columns if c != "id"]
    y = np.array([classes.index(label) for label in labels["label"]])
    return classes, y, labels["id"].tolist(), sample["id"].tolist()


def make_fake_run(runs_dir: Path, competition: Path, run_id: str, models: dict[str, tuple[list[str], float]],
                  fingerprint: str = "fp-a", seed: int = 42, folds: int = 5, minutes: int = 0,
                  head: str = "logreg") -> Path:
    """A run of ``models``: name -> (backbones, signal); a larger signal gives a better model."""
    classes, y, train_ids, test_ids = competition_labels(competition)
    fold_ids = make_folds(y, folds, seed)
    rng = np.random.default_rng(zlib.crc32(run_id.encode()))
    run_dir = runs_dir / run_id
    run_dir.mkdir(parents=True)
    np.save(run_dir / "folds.npy", fold_ids)
    np.save(run_dir / "y.npy", y)
    entries = []
    for name, (backbones, signal) in models.items():
        onehot = np.eye(len(classes))[y]
        oof = softmax(rng.normal(0, 1, (len(VIEWS), len(y), len(classes))) + signal * onehot, axis=2)
        test = softmax(rng.normal(0, 1, (len(VIEWS), folds, len(test_ids), len(classes))), axis=3)
        preds = FoldPredictions(VIEWS, oof, test)
        save_model_predictions(run_dir, name, oof, test, VIEWS)
        scores = score_table(preds, y, fold_ids)
        scores.to_csv(run_dir / "models" / name / "scores.csv", index=False)
        overall = scores[scores.fold == "all"].iloc[-1]
        entries.append({"name": name, "head": name.split("__")[-1] if "__" in name else head,
                        "backbones": backbones, "views": VIEWS, "cv_logloss": float(overall.logloss),
                        "cv_accuracy": float(overall.accuracy), "submission": f"submissions/{run_id}_{name}.csv"})
    config = RunConfig(data=str(competition), backbones=tuple(models[next(iter(models))][0]), weights="none",
                       folds=folds, seed=seed, runs_dir=str(runs_dir))
    write_record(run_dir, {
        "run_id": run_id, "created": (dt.datetime(2024, 5, 1, 12) + dt.timedelta(minutes=minutes)).isoformat(),
        "config": config.to_dict(), "competition": str(competition.resolve()), "data_fingerprint": fingerprint,
        "classes": classes, "views": VIEWS, "random_weights": True, "models": entries,
        "id_column": "id", "submission_columns": ["id", *classes], "test_ids": test_ids, "train_ids": train_ids,
        "train_paths": [str(p.resolve()) for i in train_ids for p in (competition / "train").glob(f"{i}.*")],
    })
    return run_dir


@pytest.fixture
def runs(tmp_path, competition):
    """Three runs on fingerprint fp-a (one on other folds), one newer run on fp-b, one on another folder."""
    runs_dir = tmp_path / "runs"
    make_fake_run(runs_dir, competition, "r1", {"xception__logreg": (["xception"], 1.0)}, minutes=1)
    make_fake_run(runs_dir, competition, "r2", {"inception_v3__logreg": (["inception_v3"], 3.0)}, minutes=2)
    make_fake_run(runs_dir, competition, "r3", {"xception__logreg": (["xception"], 2.0)}, seed=7, minutes=3)
    make_fake_run(runs_dir, competition, "r4", {"xception__logreg": (["xception"], 2.0)}, fingerprint="fp-b",
                  minutes=4)
    return runs_dir, competition


def test_list_runs_oldest_first_and_skips_damaged_records(runs):
    runs_dir, _ = runs
    (runs_dir / "broken").mkdir()
    (runs_dir / "broken" / "record.json").write_text("{ half a reco")
    records = list_runs(runs_dir)
    assert [r["run_id"] for r in records] == ["r1", "r2", "r3", "r4"]
    assert all(Path(r["run_dir"]).name == r["run_id"] for r in records)


def test_select_runs_keeps_one_data_set(runs, tmp_path):
    runs_dir, competition = runs
    records = list_runs(runs_dir)
    newest, notes = select_runs(records)  # no filter: the newest run's data (fp-b), the rest named
    assert [r["run_id"] for r in newest] == ["r4"]
    assert len(notes) == 1 and "--fingerprint fp-a" in notes[0]
    by_fp, notes = select_runs(records, fingerprint="fp-")  # a prefix matching both still never mixes them
    assert {r["data_fingerprint"] for r in by_fp} == {"fp-b"} and notes
    by_fp, notes = select_runs(records, fingerprint="fp-a")
    assert [r["run_id"] for r in by_fp] == ["r1", "r2", "r3"] and notes == []
    assert select_runs(records, data=tmp_path / "elsewhere") == ([], [])
    assert [r["run_id"] for r in select_runs(records, data=competition, fingerprint="fp-a")[0]] == ["r1", "r2", "r3"]


def test_same_folds_as_newest_leaves_out_other_seeds(runs):
    runs_dir, _ = runs
    kept, notes = same_folds_as_newest([load_record(runs_dir / r) for r in ("r1", "r3", "r2")])
    assert [r["run_id"] for r in kept] == ["r1", "r2"]
    assert "r3" in notes[0]


def test_load_models_shapes_and_means(runs):
    runs_dir, _ = runs
    (model,) = load_models(load_record(resolve_run_dir("r2", runs_dir)))
    assert model.key == "r2/inception_v3__logreg" and model.backbones == ["inception_v3"]
    assert model.oof.shape == (2, 30, 3) and model.test.shape == (2, 5, 9, 3)
    np.testing.assert_allclose(model.oof_mean, model.oof.mean(axis=0))
    np.testing.assert_allclose(model.test_mean.sum(axis=1), 1.0, atol=1e-6)


def test_resolve_run_dir_by_id_or_path(runs, tmp_path):
    runs_dir, _ = runs
    assert resolve_run_dir("r1", runs_dir) == runs_dir / "r1"
    assert resolve_run_dir(str(runs_dir / "r2"), tmp_path / "nowhere") == runs_dir / "r2"
    with pytest.raises(KaggleTLError, match="no run with that id"):
        resolve_run_dir("r9", runs_dir)


@pytest.mark.parametrize("other, message", [("r4", "different data"), ("r3", "different folds")])
def test_check_comparable_refuses_other_data_or_folds(runs, other, message):
    runs_dir, _ = runs
    with pytest.raises(KaggleTLError, match=message):
        check_comparable([load_record(runs_dir / "r1"), load_record(runs_dir / other)])
    y, folds = check_comparable([load_record(runs_dir / "r1"), load_record(runs_dir / "r2")])
    assert y.shape == folds.shape == (30,)
