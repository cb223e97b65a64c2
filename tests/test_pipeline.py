"""End to end on a tiny synthetic competition with random weights at 75 px."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from kaggle_tl.config import RunConfig
from kaggle_tl.errors import KaggleTLError
from kaggle_tl.pipeline import run
from conftest import make_competition  # noqa: E402


@pytest.fixture(scope="module")
def mission_run(tmp_path_factory):
    """Both mission backbones, flips, 5 folds, logreg + a short dense head: one run shared by the tests."""
    root = tmp_path_factory.mktemp("mission")
    comp = make_competition(root / "comp")
    config = RunConfig(data=str(comp), weights="none", image_size=75, heads=("logreg", "dense"), max_epochs=3,
                       cache_dir=str(root / "cache"), runs_dir=str(root / "runs"),
                       submissions_dir=str(root / "subs"))
    return comp, config, run(config)


def test_features_are_4096_d_per_view_and_cached(mission_run):
    comp, config, result = mission_run
    metas = [json.loads(p.read_text()) for p in (result.run_dir.parents[1] / "cache").glob("*/meta.json")]
    # 2 backbones x 2 views x (train, test), each 2048-d; concatenated per view to 4096.
    assert len(metas) == 8
    assert {m["shape"][1] for m in metas} == {2048}
    assert {m["view"] for m in metas} == {"original", "hflip"}
    oof = np.load(result.run_dir / "models" / "xception+inception_v3__logreg" / "oof.npy")
    assert oof.shape == (2, 30, 3)


def test_every_train_row_is_out_of_fold_exactly_once(mission_run):
    comp, config, result = mission_run
    folds = np.load(result.run_dir / "folds.npy")
    y = np.load(result.run_dir / "y.npy")
    assert sorted(np.bincount(folds)) == [6] * 5
    for k in range(5):  # stratified: each fold holds 2 of each of the 3 classes
        assert np.bincount(y[folds == k], minlength=3).tolist() == [2, 2, 2]
    oof = np.load(result.run_dir / "models" / "xception+inception_v3__logreg" / "oof.npy")
    np.testing.assert_allclose(oof.sum(axis=2), 1.0, atol=1e-5)  # every row filled by exactly one fold


def test_submission_matches_sample_and_rows_sum_to_one(mission_run):
    comp, config, result = mission_run
    sample = pd.read_csv(comp / "sample_submission.csv", dtype={"id": str})
    for model in result.models:
        sub = pd.read_csv(model.submission, dtype={"id": str})
        assert list(sub.columns) == list(sample.columns)
        assert sub["id"].tolist() == sample["id"].tolist()
        values = sub.drop(columns="id").to_numpy()
        np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-6)
        assert (values > 0).all() and (values < 1).all()
        assert model.submission.name.startswith(result.run_id)
        side = json.loads(model.submission.with_suffix(".json").read_text())
        assert side["random_weights"] is True and side["config"]["image_size"] == 75
        assert "tensorflow" in side["versions"]


def test_heads_learn_the_easy_task(mission_run):
    # Random conv features still separate the dominant-colour classes; logreg must find it.
    _, _, result = mission_run
    logreg = next(m for m in result.models if m.head == "logreg")
    assert logreg.cv_accuracy >= 0.9
    assert logreg.cv_logloss < np.log(3)


def test_run_record_says_weights_were_random(mission_run):
    _, _, result = mission_run
    record = json.loads((result.run_dir / "record.json").read_text())
    assert record["random_weights"] is True and "random" in record["warning"]
    assert record["n_train"] == 30 and record["n_test"] == 9
    assert json.loads((result.run_dir / "config.json").read_text())["backbones"] == ["xception", "inception_v3"]


def test_second_run_uses_the_cache_without_building_a_model(mission_run, monkeypatch):
    comp, config, first = mission_run

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built although every feature is cached")

    monkeypatch.setattr("kaggle_tl.pipeline.create_backbone", no_model)
    second = run(config.replace(heads=("logreg",)))
    assert second.run_id != first.run_id
    first_logreg = next(m for m in first.models if m.head == "logreg")
    assert second.models[0].cv_logloss == pytest.approx(first_logreg.cv_logloss, abs=1e-9)
    assert second.timings["features_s"] < first.timings["features_s"]


def test_a_changed_image_is_never_served_stale_features(tmp_path):
    comp = make_competition(tmp_path / "comp", n_per_class=5, n_test=3)
    config = RunConfig(data=str(comp), backbones=("mobilenet_v2",), weights="none", image_size=32,
                       heads=("logreg",), folds=2, flips=False, cache_dir=str(tmp_path / "cache"),
                       runs_dir=str(tmp_path / "runs"), submissions_dir=str(tmp_path / "subs"))
    run(config)
    first = sorted(p.parent.name for p in (tmp_path / "cache").glob("*/meta.json"))
    victim = sorted((comp / "train").iterdir())[0]
    victim.write_bytes((comp / "train" / sorted(p.name for p in (comp / "train").iterdir())[-1]).read_bytes())
    run(config)
    second = sorted(p.parent.name for p in (tmp_path / "cache").glob("*/meta.json"))
    assert len(second) == len(first) + 1  # train features recomputed under a new key, test reused


def test_unknown_backbone_is_a_one_line_error(tmp_path):
    comp = make_competition(tmp_path / "comp", n_per_class=5, n_test=3)
    with pytest.raises(KaggleTLError, match="unknown backbone 'resnet5'"):
        run(RunConfig(data=str(comp), backbones=("resnet5",), weights="none", cache_dir=str(tmp_path / "c"),
                      runs_dir=str(tmp_path / "r"), submissions_dir=str(tmp_path / "s")))
