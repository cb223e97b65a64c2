"""Per-tag logistic regressions in one float32 L-BFGS solve: scikit-learn's objective per tag, C chosen for all tags."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import approx_fprime
from sklearn.linear_model import LogisticRegression

from kaggle_tl.heads.linear import LogRegHead
from kaggle_tl.heads.sigmoid import SigmoidRegression, _loss_and_gradient, prior_logits
from kaggle_tl.heads.transforms import make_transform
from kaggle_tl.heads.tuning import LOGREG_C_GRID, choose_tags_C, inner_split, tags_logloss


def tags(n: int = 240, d: int = 16, n_tags: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(X (n, d) float32, Y (n, n_tags) uint8): each tag a noisy logistic function of X (a curved optimum)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    Y = rng.random((n, n_tags)) < 1 / (1 + np.exp(-(X @ rng.normal(size=(d, n_tags)) * 0.5 - 1)))
    return X, Y.astype(np.uint8)


def test_gradient_is_that_of_the_objective():
    X, Y = tags(n=60, d=6, n_tags=3)
    w = np.random.default_rng(1).normal(scale=0.3, size=7 * 3)
    loss, grad = _loss_and_gradient(w, X, Y.astype(np.float32), 0.05)
    numeric = approx_fprime(w, lambda v: _loss_and_gradient(v, X, Y.astype(np.float32), 0.05)[0], 1e-3)
    np.testing.assert_allclose(grad, numeric, atol=2e-3)
    # The objective itself: the per-tag mean binary cross-entropy, summed over tags, plus the penalty on W (not b).
    W, b = w[:18].reshape(6, 3), w[18:]
    p = 1 / (1 + np.exp(-(X.astype(np.float64) @ W + b)))
    bce = -(Y * np.log(p) + (1 - Y) * np.log(1 - p)).mean(axis=0).sum()
    assert loss == pytest.approx(bce + 0.5 * 0.05 * (W ** 2).sum(), rel=1e-5)


@pytest.mark.parametrize("C", [0.003, 1.0, 100.0])
def test_each_tag_is_scikit_learns_logistic_regression_at_the_same_C(C):
    X, Y = tags()
    ours = SigmoidRegression(C=C).fit(X, Y).predict_proba(X)
    reference = np.column_stack([LogisticRegression(C=C, max_iter=10_000, tol=1e-10).fit(X, Y[:, t])
                                 .predict_proba(X)[:, 1] for t in range(Y.shape[1])])
    # Ours stops on the summed objective's relative change (1e-6), theirs on a tight gradient: probabilities
    # measured within 1.1e-3 on these data, their log losses within 1e-5 relative.
    np.testing.assert_allclose(ours, reference, atol=3e-3)
    assert tags_logloss(Y, ours) == pytest.approx(tags_logloss(Y, reference), rel=1e-4)


def test_the_joint_solve_gives_the_separate_solves():
    X, Y = tags()
    joint = SigmoidRegression(C=0.3).fit(X, Y).predict_proba(X)
    for t in range(Y.shape[1]):
        alone = SigmoidRegression(C=0.3).fit(X, Y[:, [t]]).predict_proba(X)[:, 0]
        np.testing.assert_allclose(joint[:, t], alone, atol=2e-3)


def test_a_warm_start_reaches_the_cold_solution():
    X, Y = tags()
    near = SigmoidRegression(C=0.03).fit(X, Y)
    cold = SigmoidRegression(C=0.1).fit(X, Y)
    warm = SigmoidRegression(C=0.1).fit(X, Y, start=near.params_)
    np.testing.assert_allclose(warm.predict_proba(X), cold.predict_proba(X), atol=2e-3)
    assert warm.n_iter_ <= cold.n_iter_


def test_prior_logits_are_the_smoothed_log_odds():
    Y = np.array([[0, 1, 1], [0, 1, 0], [0, 1, 1]])
    np.testing.assert_allclose(1 / (1 + np.exp(-prior_logits(Y))), [0.5 / 4, 3.5 / 4, 2.5 / 4])


def test_the_c_choice_scores_each_c_as_cold_scikit_learn_fits_on_the_inner_split_would():
    X, Y = tags(seed=3)
    c, scores = choose_tags_C(X, Y, seed=3)
    assert min(LOGREG_C_GRID) <= c <= max(LOGREG_C_GRID) and len(scores) >= 3
    fit_rows, val_rows = inner_split(Y, 0.2, 3, stratify=False)
    assert len(val_rows) == 48
    for C, loss in scores.items():
        proba = np.column_stack([LogisticRegression(C=C, max_iter=10_000).fit(X[fit_rows], Y[fit_rows, t])
                                 .predict_proba(X[val_rows])[:, 1] for t in range(Y.shape[1])])
        assert loss == pytest.approx(tags_logloss(Y[val_rows], proba), abs=2e-3)


def test_the_tags_walk_stops_at_the_first_c_worse_than_the_best():
    X, Y = tags(seed=3)
    c, scores = choose_tags_C(X, Y, seed=3, refine=False)
    assert list(scores) == list(LOGREG_C_GRID[:len(scores)]) and c == min(scores, key=scores.get)
    best = list(scores).index(c)
    assert len(scores) == best + 2 and list(scores.values())[-1] > scores[c]  # one C past the best, worse


def test_logreg_tags_with_c_auto_records_the_c_its_transformed_rows_choose_and_refits_at_it():
    X, Y = tags(seed=4)
    head = LogRegHead(response="tags", random_state=5).fit(X, Y)
    transformed = make_transform("sqrt,standard").fit_transform(X)
    assert head.fitted_params() == {"C": pytest.approx(choose_tags_C(transformed, Y, seed=5)[0])}
    at_c = LogRegHead(C=head.fitted_params()["C"], response="tags").fit(X, Y)
    np.testing.assert_allclose(head.predict_response(X), at_c.predict_response(X), atol=2e-3)
