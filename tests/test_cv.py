"""Folds and fold x view predictions: every row out of fold once, parallel equal to serial."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import blobs, class_task  # noqa: E402
from kaggle_tl.cv import cross_validate
from kaggle_tl.heads.base import create_head
from kaggle_tl.heads.linear import LogRegHead
from kaggle_tl.tasks.metrics import clip_proba
from kaggle_tl.tasks.task import Task

TASK = class_task(3)


def make_folds(y, n_folds, seed):
    return TASK.make_folds(y, n_folds, seed)


def test_folds_are_stratified_reproducible_and_seeded():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    folds = make_folds(y, 5, seed=3)
    assert np.array_equal(folds, make_folds(y, 5, seed=3))
    assert not np.array_equal(folds, make_folds(y, 5, seed=4))
    for k in range(5):
        assert np.bincount(y[folds == k], minlength=3).tolist() == [10, 6, 4]


def test_cross_validate_fills_every_row_once_and_gives_ten_test_predictions():
    X, y = blobs(n_per_class=20)
    X_test, _ = blobs(n_per_class=4, seed=1)
    train = {"original": X, "hflip": X + 0.01}
    test = {"original": X_test, "hflip": X_test + 0.01}
    folds = make_folds(y, 5, seed=0)
    preds = cross_validate(LogRegHead(), TASK, train, test, y, folds)
    assert preds.oof.shape == (2, 60, 3) and preds.test.shape == (2, 5, 12, 3)
    assert np.array_equal(preds.y, y) and np.array_equal(preds.folds, folds)
    np.testing.assert_allclose(preds.oof.sum(axis=2), 1.0, atol=1e-6)  # float32 heads
    # Each OOF row equals the prediction of the model that did not see it: fold 0's model by hand (logreg fits a
    # view's folds together; tests/heads/test_fold_path.py compares those with one fit a fold).
    fold_0, _ = LogRegHead().fit_folds(X, y, [np.flatnonzero(folds != k) for k in range(5)])[0]
    np.testing.assert_allclose(preds.oof[0, folds == 0], fold_0.predict_proba(X[folds == 0]), atol=1e-7)
    np.testing.assert_allclose(preds.test_mean.sum(axis=1), 1.0, atol=1e-6)  # stored as float32
    assert (preds.oof_mean.argmax(axis=1) == y).mean() >= 0.95


@pytest.mark.parametrize("head_name", ["logreg", "svm", "dense"])
def test_parallel_fits_give_the_same_predictions_as_serial(head_name):
    X, y = blobs(n_per_class=15)
    folds = make_folds(y, 3, seed=0)
    train, test = {"original": X, "hflip": X[:, ::-1].copy()}, {"original": X[:5], "hflip": X[:5, ::-1].copy()}
    head = create_head(head_name, random_state=3)
    serial = cross_validate(head, TASK, train, test, y, folds, n_jobs=1)
    parallel = cross_validate(head, TASK, train, test, y, folds, n_jobs=2)
    np.testing.assert_array_equal(serial.oof, parallel.oof)
    np.testing.assert_array_equal(serial.test, parallel.test)


def test_a_class_missing_from_a_fold_gets_zero_before_clipping():
    X, y = blobs(n_per_class=10, n_classes=2)
    folds = make_folds(y, 2, seed=0)
    preds = cross_validate(LogRegHead(), TASK, {"original": X}, {"original": X[:3]}, y, folds)
    assert (preds.oof[..., 2] == 0).all()  # class 2 exists in the submission but not in training
    assert clip_proba(preds.oof[0])[:, 2].min() > 0


class _RecordsValidation(LogRegHead):
    """A head that remembers whether fit() was shown held-out rows."""

    seen: list = []

    def __init__(self, C=0.005, max_iter=1000, random_state=0, fold_stopping=False):
        super().__init__(C=C, max_iter=max_iter, random_state=random_state)
        self.fold_stopping = fold_stopping

    @property
    def uses_fold_for_early_stopping(self):
        return self.fold_stopping

    def fits_folds_jointly(self):
        return False  # a fit a fold, each shown (or not) its held-out rows

    def fit(self, X, y, validation_data=None):
        _RecordsValidation.seen.append(validation_data is not None)
        return super().fit(X, y)


@pytest.mark.parametrize("fold_stopping", [False, True])
def test_only_a_head_asking_for_it_sees_the_scored_fold(fold_stopping):
    X, y = blobs(n_per_class=10)
    folds = make_folds(y, 3, seed=0)
    _RecordsValidation.seen = []
    cross_validate(_RecordsValidation(fold_stopping=fold_stopping), TASK, {"original": X}, {"original": X}, y, folds)
    assert _RecordsValidation.seen == [fold_stopping] * 3


def _grades(n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 5
    X = (y[:, None] * 0.6 + rng.normal(size=(n, 8))).astype(np.float32)
    task = Task("ordinal", "qwk", id_column="id_code", target_columns=("diagnosis",), classes=tuple("01234"))
    return X, y, task


class _OneFitAFold(LogRegHead):
    def fits_folds_jointly(self):
        return False


def test_logregs_inner_fits_for_the_rules_solved_together_give_the_rules_of_one_fit_each():
    X, y, task = _grades(seed=2)
    folds = task.make_folds(y, 3, seed=0)
    train, test = {"original": X, "hflip": X[:, ::-1].copy()}, {"original": X[:4], "hflip": X[:4, ::-1].copy()}
    joint = cross_validate(LogRegHead(), task, train, test, y, folds)
    alone = cross_validate(_OneFitAFold(), task, train, test, y, folds)
    assert joint.decisions.shape == alone.decisions.shape == (4, 4)
    np.testing.assert_allclose(joint.decisions, alone.decisions, atol=0.05)  # cut points on the 0-4 grade scale
    np.testing.assert_allclose(joint.oof, alone.oof, atol=0.02)


@pytest.mark.parametrize("head_name", ["ridge", "logreg"])
def test_a_folds_decision_rule_never_reads_the_rows_it_scores(head_name):
    # Change every label fold 0 scores: fold 0's cut points and OOF predictions must not move (they are
    # tuned on inner rows of the other folds), while the other folds' rules and the test rows' rule may.
    X, y, task = _grades()
    folds = task.make_folds(y, 3, seed=0)
    head = create_head(head_name, random_state=0)
    train, test = {"original": X}, {"original": X[:4]}
    before = cross_validate(head, task, train, test, y, folds)
    changed = y.copy()
    changed[folds == 0] = 4 - changed[folds == 0]
    after = cross_validate(head, task, train, test, changed, folds)
    assert before.decisions.shape == (4, 4)  # 4 cut points for each of 3 folds, and the test rows'
    np.testing.assert_array_equal(before.decisions[0], after.decisions[0])
    np.testing.assert_array_equal(before.oof[:, folds == 0], after.oof[:, folds == 0])
    assert not np.array_equal(before.decisions[1:], after.decisions[1:])  # the check can fail: these do read them


def test_the_cut_points_beat_rounding_on_the_scores_they_were_tuned_for():
    X, y, task = _grades(seed=1)
    folds = task.make_folds(y, 3, seed=0)
    preds = cross_validate(create_head("ridge", random_state=0), task, {"original": X}, {"original": X[:4]}, y, folds)
    tuned = task.metric(y, task.decide(preds.oof_mean, preds.test_decision))
    rounded = task.metric(y, task.decide(preds.oof_mean))
    assert tuned >= rounded  # the test rows' rule is tuned on every OOF row


def test_a_folds_inner_fit_for_its_rule_takes_the_alpha_the_fold_chose(monkeypatch):
    import kaggle_tl.cv as cv
    X, y, task = _grades()
    folds = task.make_folds(y, 3, seed=0)
    seen = []
    fit_rows = cv._fit_rows

    def recording(model, X, y, rows, held, threads):
        seen.append((len(rows), model.get_params()["alpha"]))
        return fit_rows(model, X, y, rows, held, threads)

    monkeypatch.setattr(cv, "_fit_rows", recording)
    preds = cross_validate(create_head("ridge", random_state=0), task, {"original": X}, {"original": X[:4]}, y, folds)
    fold_fits, inner_fits = seen[:3], seen[3:]
    assert [alpha for _, alpha in fold_fits] == ["auto"] * 3
    assert [alpha for _, alpha in inner_fits] == list(preds.fitted["alpha"][0])  # chosen, not searched again
    assert all(n_inner < n_fold for (n_fold, _), (n_inner, _) in zip(fold_fits, inner_fits))
