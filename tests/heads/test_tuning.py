"""Automatic C: chosen on an inner split of the training rows, warm-started along the grid, never on scored rows."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from kaggle_tl.heads.tuning import (LOGREG_C_GRID, LOGREG_PATIENCE, LinearSVMAutoC, LogisticRegressionAutoC,
                                    choose_logreg_C, choose_svm_C, inner_split, refine_C)
from kaggle_tl.tasks.metrics import row_logloss


def _blobs(n: int, d: int, separation: float, informative: int | None = None,
           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three classes whose centres differ in the first ``informative`` dims; unit noise everywhere."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    k = d if informative is None else informative
    X = rng.normal(0, 1, (n, d))
    X[:, :k] += rng.normal(0, 1, (3, k))[y] * separation
    return X.astype(np.float32), y


@pytest.mark.parametrize("seed", [0, 1])
def test_choice_follows_the_data(seed):
    # Few rows, 2 informative dims among 1,000: strong regularisation; many rows, separable: weak.
    X, y = _blobs(90, 1000, separation=1.0, informative=2, seed=seed)
    c_noisy, _ = choose_logreg_C(X, y, seed=0)
    X, y = _blobs(600, 5, separation=3.0, seed=seed)
    c_clear, _ = choose_logreg_C(X, y, seed=0)
    assert c_noisy <= 0.03 and c_clear >= 0.3


def test_scores_follow_the_grid_and_stop_after_the_first_worse():
    X, y = _blobs(120, 50, separation=0.3)
    c, scores = choose_logreg_C(X, y, grid=LOGREG_C_GRID[::-1], seed=0, refine=False)  # any order: walked up
    assert list(scores) == sorted(scores) == list(LOGREG_C_GRID[:len(scores)])
    assert c == min(scores, key=scores.get)
    best = list(scores).index(c)
    assert LOGREG_PATIENCE == 1
    assert len(scores) == len(LOGREG_C_GRID) or len(scores) == best + 2  # stopped 1 past the best


def test_warm_started_scores_equal_cold_fits():
    X, y = _blobs(150, 20, separation=0.5)
    _, scores = choose_logreg_C(X, y, seed=3)
    fit_rows, val_rows = inner_split(y, 0.2, 3)
    for c, loss in scores.items():
        cold = LogisticRegression(C=c, max_iter=1000).fit(X[fit_rows], y[fit_rows])
        # The path stops its solves at a relative change of 1e-5: 1.2e-3 off scikit-learn's (converged) score at
        # C = 1 here, where the 30 inner rows' score has a standard error of 0.07.
        assert loss == pytest.approx(row_logloss(y[val_rows], cold.predict_proba(X[val_rows])).mean(), abs=2e-3)


def test_svm_choice_and_records():
    X, y = _blobs(150, 20, separation=0.5)
    c, scores = choose_svm_C(X, y, seed=0)
    assert c in scores and all(np.isfinite(list(scores.values())))
    head = LinearSVMAutoC(random_state=0).fit(X, y)
    assert head.C_ == c and head.inner_scores_ == scores
    np.testing.assert_allclose(head.predict_proba(X).sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("auto", [LogisticRegressionAutoC(random_state=0), LinearSVMAutoC(random_state=0)],
                         ids=["logreg", "svm"])
def test_choice_never_sees_the_scored_rows(auto):
    # A row's OOF prediction may depend on the fold's training rows and on itself, never on the rows it
    # is scored with: replace those by noise and it must not move. Had they been in the inner split,
    # the chosen C (and the scaler) would follow them.
    X, y = _blobs(90, 30, separation=0.6)
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    head = make_pipeline(StandardScaler(), auto)

    def oof(features):
        return cross_val_predict(head, features, y, cv=folds, method="predict_proba")  # a clone fitted per fold

    fold0 = folds[0][1]  # the first fold's scored rows
    watched, others = fold0[0], fold0[1:]
    noisy = X.copy()
    noisy[others] = np.random.default_rng(1).normal(0, 5, noisy[others].shape)
    np.testing.assert_allclose(oof(noisy)[watched], oof(X)[watched], rtol=1e-6, atol=1e-9)
    # The control: had the choice seen every row, that noise changes which C wins.
    assert choose_logreg_C(noisy, y, seed=0)[0] != choose_logreg_C(X, y, seed=0)[0]


def test_auto_head_is_a_scikit_learn_classifier():
    X, y = _blobs(120, 10, separation=1.0)
    head = clone(LogisticRegressionAutoC(grid=(0.01, 0.1, 1.0), random_state=2)).fit(X, y.astype(str))
    assert 0.01 <= head.C_ <= 1.0 and set(head.inner_scores_) <= {0.01, 0.1, 1.0}
    assert list(head.classes_) == ["0", "1", "2"]
    proba = head.predict_proba(X)
    assert proba.shape == (120, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert set(head.predict(X)) <= {"0", "1", "2"}


def test_refine_c_finds_the_vertex_between_grid_points():
    bowl = {c: (np.log(c) - np.log(0.005)) ** 2 for c in (0.001, 0.003, 0.01, 0.03)}
    assert refine_C(bowl) == pytest.approx(0.005)
    assert refine_C({0.001: 0.5, 0.003: 0.4, 0.01: 0.3}) == 0.01  # best at the grid's end: kept
    assert refine_C({0.001: 0.5, 0.003: 0.4, 0.01: 0.4 - 1e-9, 0.03: 0.4}) == pytest.approx(0.01, rel=0.6)
    assert 0.003 <= refine_C({0.001: 0.9, 0.003: 0.5, 0.01: 0.50001}) <= 0.01
