"""The float32 L-BFGS logistic regression: scikit-learn's objective and predictions, warm starts, C choices."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import approx_fprime
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from conftest import blobs
from kaggle_tl.heads.softmax import SoftmaxRegression, _loss_and_gradient
from kaggle_tl.heads.tuning import LOGREG_C_GRID, LOGREG_PATIENCE, PATIENCE, _walk_grid, inner_split, logreg_path
from kaggle_tl.tasks.metrics import row_logloss


def test_gradient_is_that_of_the_objective():
    X, y = blobs(n_per_class=30, n_classes=3, dim=8, spread=2.0)
    onehot = np.eye(3, dtype=np.float32)[y]
    w = np.random.default_rng(0).normal(scale=0.3, size=8 * 3 + 3)
    loss, grad = _loss_and_gradient(w, X, y, onehot, 0.05)
    numeric = approx_fprime(w, lambda v: _loss_and_gradient(v, X, y, onehot, 0.05)[0], 1e-3)
    np.testing.assert_allclose(grad, numeric, atol=2e-3)
    # The objective itself: mean cross-entropy plus the penalty on W (not on b).
    W, b = w[:24].reshape(8, 3), w[24:]
    logits = X.astype(np.float64) @ W + b
    log_proba = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert loss == pytest.approx(-log_proba[np.arange(len(y)), y].mean() + 0.5 * 0.05 * (W ** 2).sum(), rel=1e-5)


@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("C", [0.003, 1.0, 100.0])
def test_predictions_are_scikit_learns_at_the_same_C(n_classes, C):
    X, y = blobs(n_per_class=60, n_classes=n_classes, dim=24, spread=2.5, seed=n_classes)
    reference = LogisticRegression(C=C, max_iter=1000).fit(X.astype(np.float64), y)  # the head's solver before
    ours = SoftmaxRegression(C=C).fit(X, y)
    assert list(ours.classes_) == list(reference.classes_)
    # The two stop at different points of a flat optimum (scikit-learn on the gradient, ours on the
    # objective's relative change, 1e-6): probabilities within 0.03, their log loss within 0.2%.
    np.testing.assert_allclose(ours.predict_proba(X), reference.predict_proba(X), atol=0.03)
    ours_loss, reference_loss = (row_logloss(y, m.predict_proba(X)).mean() for m in (ours, reference))
    assert ours_loss == pytest.approx(reference_loss, rel=2e-3, abs=1e-4)
    assert (ours.predict(X) == reference.predict(X)).mean() >= 0.99


def test_a_warm_start_reaches_the_cold_solution_in_fewer_iterations():
    X, y = blobs(n_per_class=80, n_classes=3, dim=32, spread=8.0, seed=2)  # overlapping: a curved optimum
    near = SoftmaxRegression(C=0.03).fit(X, y)
    cold = SoftmaxRegression(C=0.1).fit(X, y)
    warm = SoftmaxRegression(C=0.1).fit(X, y, start=near.params_)
    np.testing.assert_allclose(warm.predict_proba(X), cold.predict_proba(X), atol=0.02)
    assert warm.n_iter_ < cold.n_iter_


def test_the_c_path_chooses_scikit_learns_grid_point():
    """The head's grid walk (its solver at the path's tolerance, stopping at the first worse C) picks the C that
    cold scikit-learn fits on the same inner split pick walking on past two worse C values."""
    assert LOGREG_PATIENCE < PATIENCE  # the walk compared is the shorter one
    for seed in range(3):
        X, y = blobs(n_per_class=50, n_classes=4, dim=40, spread=8.0, seed=10 + seed)  # inner log loss ~0.6
        fit_rows, val_rows = inner_split(y, 0.2, seed)
        path = logreg_path(X[fit_rows], y[fit_rows], X[val_rows], y[val_rows])
        ours, ours_scores = _walk_grid(LOGREG_C_GRID, lambda c: next(path)["inner_logloss"], LOGREG_PATIENCE)

        row_losses = {}

        def sklearn_loss(c):
            model = LogisticRegression(C=c, max_iter=10_000, tol=1e-10).fit(X[fit_rows], y[fit_rows])
            row_losses[c] = row_logloss(y[val_rows], model.predict_proba(X[val_rows]))
            return float(row_losses[c].mean())

        reference, reference_scores = _walk_grid(LOGREG_C_GRID, sklearn_loss, PATIENCE)
        grid = sorted(LOGREG_C_GRID)
        # The same point, or its neighbour when two grid points score within the solver's tolerance.
        assert abs(grid.index(ours) - grid.index(reference)) <= 1
        if ours != reference:
            assert abs(reference_scores[ours] - reference_scores[reference]) < 5e-3
        # The path's solves stop earlier (relative change 1e-5): its inner score may differ from the converged
        # one, by far less than the 40 inner rows resolve (a fifth of the score's standard error).
        se = row_losses[ours].std(ddof=1) / np.sqrt(len(val_rows))
        assert ours_scores[ours] == pytest.approx(reference_scores[ours], abs=se / 5)


def test_fits_do_not_depend_on_the_blas_thread_count():
    X, y = blobs(n_per_class=200, n_classes=5, dim=300, spread=4.0, seed=4)
    with threadpool_limits(1):
        one = SoftmaxRegression(C=0.1).fit(X, y).params_
    with threadpool_limits(2):
        two = SoftmaxRegression(C=0.1).fit(X, y).params_
    np.testing.assert_array_equal(one, two)


def test_one_class_is_refused():
    X, y = blobs(n_per_class=10, n_classes=1)
    with pytest.raises(ValueError, match="at least 2 classes"):
        SoftmaxRegression().fit(X, y)
