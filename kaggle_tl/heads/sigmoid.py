"""Independent logistic regressions, one per tag, in float32: scikit-learn's model and objective per tag,
all tags solved as one L-BFGS problem.

Per tag l the objective is scikit-learn's for ``LogisticRegression(penalty="l2", C=C)`` on the 0/1
column y_l, so ``C`` means the same; divided by C n, as ``softmax.py`` writes it::

    mean_i BCE(expit(x_i w_l + b_l), y_il)  +  ||w_l||^2 / (2 C n)      (the intercept b_l is not penalised)

The tags share no parameter, so the sum of their objectives is minimised by minimising each: one
solve over the (D + 1) x L parameter matrix gives the separate solves' models, at the cost of two
matrix products an evaluation for all tags together (float32, block by block, as ``softmax.py``),
stopping at the same relative change ``softmax.TOL`` of the (summed) objective.

A tag whose training rows are all 0 (or all 1) has no finite optimum (its intercept runs off to
-inf): it is left out of the solve, with weights 0 and the intercept at the smoothed log-odds of
its rows (``prior_logits``), so it predicts ~0 (~1) instead of failing.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, logit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y

from kaggle_tl.heads.softmax import BLOCK_ROWS, GTOL, TOL


def prior_logits(Y: np.ndarray) -> np.ndarray:
    """(L,) log-odds of each tag in the rows of Y, smoothed by half a row each way: finite for a tag never
    (or always) seen, which then predicts 0.5 / (n + 1) (or 1 minus that)."""
    return logit((np.asarray(Y, dtype=np.float64).sum(axis=0) + 0.5) / (len(Y) + 1))


def _loss_and_gradient(w: np.ndarray, X: np.ndarray, Y: np.ndarray, penalty: float):
    """The summed objective and its gradient at the flat parameters w = [W (d x L) row-major, b (L)], in float64."""
    d, n_tags = X.shape[1], Y.shape[1]
    W = w[:d * n_tags].reshape(d, n_tags).astype(np.float32)
    b = w[d * n_tags:].astype(np.float32)
    n = len(Y)
    grad_w = np.zeros((d, n_tags), np.float32)
    grad_b = np.zeros(n_tags, np.float64)
    loss = 0.0
    for start in range(0, n, BLOCK_ROWS):
        rows = slice(start, start + BLOCK_ROWS)
        block = X[rows]
        scores = block @ W
        scores += b
        # BCE(expit(z), y) = log(1 + e^z) - y z, without overflow for large |z|.
        loss += float(np.logaddexp(0, scores).sum(dtype=np.float64) - (Y[rows] * scores).sum(dtype=np.float64))
        residual = expit(scores)
        residual -= Y[rows]
        grad_w += block.T @ residual
        grad_b += residual.sum(axis=0, dtype=np.float64)
    grad_w *= np.float32(1 / n)
    grad_w += np.float32(penalty) * W
    loss = loss / n + 0.5 * penalty * float(np.square(W, dtype=np.float64).sum())
    return loss, np.concatenate([grad_w.ravel().astype(np.float64), grad_b / n])


def fit_sigmoid(X: np.ndarray, Y: np.ndarray, C: float, start: np.ndarray | None = None, max_iter: int = 1000,
                tol: float = TOL) -> tuple[np.ndarray, int, int]:
    """((d + 1, L) parameters [W; b], iterations, evaluations) minimising every tag's objective for 0/1 Y (n, L).

    ``X`` float32, C-contiguous. ``start``: (d + 1, L) parameters to start from (warm start), else
    zero weights and each tag's prior log-odds. Tags of one value only are not solved (see above).
    """
    d, n_tags = X.shape[1], Y.shape[1]
    positives = Y.sum(axis=0)
    active = np.flatnonzero((positives > 0) & (positives < len(Y)))
    params = np.zeros((d + 1, n_tags))
    params[d] = prior_logits(Y)
    if start is not None:
        params[:, active] = np.asarray(start, np.float64)[:, active]
    if len(active) == 0:
        return params, 0, 0
    w0 = params[:, active].ravel()  # [W row-major, b]: the last row of the (d + 1, L') matrix is b
    targets = np.ascontiguousarray(Y[:, active], dtype=np.float32)
    result = minimize(_loss_and_gradient, w0, args=(X, targets, 1.0 / (C * len(Y))), jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iter, "ftol": tol, "gtol": GTOL, "maxcor": 10})
    params[:, active] = result.x.reshape(d + 1, len(active))
    return params, int(result.nit), int(result.nfev)


class SigmoidRegression(ClassifierMixin, BaseEstimator):
    """The estimator around ``fit_sigmoid``: ``coef_`` (L, d) and ``intercept_`` (L,), one row per tag.

    ``fit(X, Y)`` takes the (n, L) 0/1 tag matrix; ``predict_proba`` gives (n, L) per-tag
    probabilities (as scikit-learn's multi-label MLPClassifier does); ``classes_`` are the tag
    indices. ``fit(X, Y, start=...)`` warm-starts from ``params_`` of another fit on as many tags.
    """

    def __init__(self, C: float = 1.0, max_iter: int = 1000, tol: float = TOL):
        self.C = C
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X, Y, start: np.ndarray | None = None):
        X, Y = check_X_y(X, Y, dtype=np.float32, order="C", multi_output=True)
        if Y.ndim != 2:
            raise ValueError(f"needs an (n, L) 0/1 tag matrix, got shape {Y.shape}")
        self.classes_ = np.arange(Y.shape[1])
        self.params_, self.n_iter_, self.n_evaluations_ = fit_sigmoid(X, Y, self.C, start, self.max_iter, self.tol)
        self.coef_ = self.params_[:-1].T.astype(np.float32)
        self.intercept_ = self.params_[-1].astype(np.float32)
        return self

    def decision_function(self, X):
        check_is_fitted(self, "coef_")
        return check_array(X, dtype=np.float32) @ self.coef_.T + self.intercept_

    def predict_proba(self, X):
        return expit(self.decision_function(X).astype(np.float64))

    def predict(self, X):
        return (self.decision_function(X) >= 0).astype(np.uint8)
