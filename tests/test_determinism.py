"""Same config and seed, same numbers (on the CPU): folds, features, OOF and test predictions."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import class_task, make_competition  # noqa: E402
from kaggle_tl.config import RunConfig
from kaggle_tl.cv import cross_validate
from kaggle_tl.heads.base import create_head
from kaggle_tl.pipeline import run


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 12)
    centres = rng.normal(size=(3, 16))
    # One view and two folds: four fits per call keep the Keras head quick; views are independent.
    train = {"original": (centres[y] + rng.normal(scale=2.0, size=(len(y), 16))).astype(np.float32)}
    test = {"original": rng.normal(size=(7, 16)).astype(np.float32)}
    return train, test, y


def test_folds_depend_only_on_labels_and_seed(features):
    _, _, y = features
    task = class_task(3)
    np.testing.assert_array_equal(task.make_folds(y, 3, seed=42), task.make_folds(y, 3, seed=42))
    assert not np.array_equal(task.make_folds(y, 3, seed=42), task.make_folds(y, 3, seed=7))


@pytest.mark.parametrize("head_name", ["dense", "svm", "logreg"])
def test_cross_validate_repeats_exactly(features, head_name):
    train, test, y = features
    task = class_task(3)
    folds = task.make_folds(y, 2, seed=42)
    first, second = (cross_validate(create_head(head_name, random_state=42), task, train, test, y, folds)
                     for _ in range(2))
    assert np.array_equal(first.oof, second.oof) and np.array_equal(first.test, second.test)
    assert first.oof.shape == (1, 36, 3) and first.test.shape == (1, 2, 7, 3)


def test_two_runs_with_separate_caches_are_identical(tmp_path, monkeypatch):
    # weights="none": random init, which must be the same in both runs (their cache key is the same).
    monkeypatch.setattr("kaggle_tl.pipeline.plot_model", lambda *args, **kwargs: {}, raising=False)  # not tested here
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=3)
    results = []
    for name in ("a", "b"):
        config = RunConfig(data=str(comp), backbones=("mobilenet_v2",), weights="none", image_size=32, views=("original",),
                           stages=1, folds=2, heads=("logreg",), cache_dir=str(tmp_path / name / "cache"),
                           runs_dir=str(tmp_path / name / "runs"), submissions_dir=str(tmp_path / name / "subs"))
        results.append(run(config))
    a, b = results
    feature_files = sorted((tmp_path / "a" / "cache" / "features").glob("*/features.npy"))
    assert len(feature_files) == 2  # train and test, one view
    for path in feature_files:
        assert np.array_equal(np.load(path), np.load(tmp_path / "b" / "cache" / "features" / path.parent.name / path.name))
    preds_a, preds_b = (r.predictions("mobilenet_v2__logreg") for r in (a, b))
    for name in ("folds", "oof", "test"):
        assert np.array_equal(getattr(preds_a, name), getattr(preds_b, name)), name
    assert open(a.models[0].submission, "rb").read() == open(b.models[0].submission, "rb").read()
