"""Folds and fold x view predictions."""
from __future__ import annotations

import numpy as np
import pytest

from kaggle_tl.cv import clip_proba, fold_predictions, make_folds, score, score_table
from kaggle_tl.heads import LogRegHead
from test_heads import blobs  # noqa: E402


def test_folds_are_stratified_reproducible_and_seeded():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    folds = make_folds(y, 5, seed=3)
    assert np.array_equal(folds, make_folds(y, 5, seed=3))
    assert not np.array_equal(folds, make_folds(y, 5, seed=4))
    for k in range(5):
        assert np.bincount(y[folds == k], minlength=3).tolist() == [10, 6, 4]


def test_fold_predictions_fill_every_row_once_and_give_ten_test_predictions():
    X, y = blobs(n_per_class=20)
    X_test, _ = blobs(n_per_class=4, seed=1)
    train = {"original": X, "hflip": X + 0.01}
    test = {"original": X_test, "hflip": X_test + 0.01}
    folds = make_folds(y, 5, seed=0)
    preds = fold_predictions(LogRegHead(), train, test, y, folds, n_classes=3)
    assert preds.oof.shape == (2, 60, 3) and preds.test.shape == (2, 5, 12, 3)
    np.testing.assert_allclose(preds.oof.sum(axis=2), 1.0, atol=1e-6)  # float32 heads
    # Each OOF row equals the prediction of the model that did not see it: refit fold 0 by hand.
    head = LogRegHead().fit(X[folds != 0], y[folds != 0])
    np.testing.assert_allclose(preds.oof[0, folds == 0], head.predict_proba(X[folds == 0]), atol=1e-7)
    np.testing.assert_allclose(preds.test_mean.sum(axis=1), 1.0)
    assert score(y, preds.oof_mean)["accuracy"] >= 0.95


def test_a_class_missing_from_a_fold_gets_zero_before_clipping():
    X, y = blobs(n_per_class=10, n_classes=2)
    folds = make_folds(y, 2, seed=0)
    preds = fold_predictions(LogRegHead(), {"original": X}, {"original": X[:3]}, y, folds, n_classes=3)
    assert (preds.oof[..., 2] == 0).all()  # class 2 exists in the submission but not in training
    assert clip_proba(preds.oof[0])[:, 2].min() > 0


def test_score_table_has_per_fold_and_overall_rows_for_each_view_and_the_average():
    X, y = blobs(n_per_class=10)
    folds = make_folds(y, 3, seed=0)
    preds = fold_predictions(LogRegHead(), {"original": X, "hflip": X}, {"original": X, "hflip": X}, y, folds, 3)
    table = score_table(preds, y, folds)
    assert set(table.view) == {"original", "hflip", "original+hflip"}
    assert len(table) == 3 * 4
    overall = table[(table.view == "original") & (table.fold == "all")].iloc[0]
    assert overall.logloss == pytest.approx(score(y, preds.oof[0])["logloss"])
