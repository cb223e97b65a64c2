"""Multinomial logistic regression in float32: scikit-learn's model and objective, solved by scipy's L-BFGS.

The objective is scikit-learn's for ``LogisticRegression(penalty="l2")``, so ``C`` means the same::

    mean_i CE(softmax(x_i W + b), y_i)  +  ||W||^2 / (2 C n)        (the intercept b is not penalised)

What differs is the arithmetic, not the model: the two matrix products of each loss-and-gradient
evaluation (X W and X^T G, nearly all of its cost) run in float32 on float32 features, and the
solver stops when an iteration improves the objective by less than ``tol`` relative to it, a
change far below what a CV log loss can resolve (benchmarks/head_loop.py measures both against
scikit-learn's float64 solve). Always ``c`` columns, also for two classes (one code path), where
the penalty is doubled to give scikit-learn's one-column model.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y

# The relative objective change at which L-BFGS stops (scipy's ftol). On CIFAR-10-small Lite0 features
# 1e-6 moved a fold's held-out log loss by +0.0001 +- 0.0001 from 1e-7 at 0.72x its time; 1e-5 by
# +0.0017 +- 0.0010 (benchmarks/head_loop.py, BENCHMARKS.md).
TOL = 1e-6
GTOL = 1e-5  # ... or the largest gradient component


BLOCK_ROWS = 256  # rows per block of an evaluation: both products of a block while it is in cache


def _loss_and_gradient(w: np.ndarray, X: np.ndarray, y: np.ndarray, onehot: np.ndarray, penalty: float):
    """The objective and its gradient at the flat parameters w = [W (d x c) row-major, b (c)], in float64.

    Block by block of rows, so each block's second product (X_b^T G_b) reads it from cache rather than
    memory: on 4,000 x 3,104 features an evaluation took 26 ms in two whole-matrix products, 18 ms so.
    """
    d, c = X.shape[1], onehot.shape[1]
    W = w[:d * c].reshape(d, c).astype(np.float32)
    b = w[d * c:].astype(np.float32)
    n = len(y)
    grad_w = np.zeros((d, c), np.float32)
    grad_b = np.zeros(c, np.float64)
    loss = 0.0
    for start in range(0, n, BLOCK_ROWS):
        rows = slice(start, start + BLOCK_ROWS)
        block = X[rows]
        logits = block @ W
        logits += b
        logits -= logits.max(axis=1, keepdims=True)
        true_logits = logits[np.arange(len(logits)), y[rows]].astype(np.float64)  # before exp: it may underflow
        np.exp(logits, out=logits)
        sums = logits.sum(axis=1, dtype=np.float64)
        loss += float(np.log(sums).sum() - true_logits.sum())  # sum of log(sum exp) - true logit (shifted)
        logits /= sums[:, None].astype(np.float32)
        logits -= onehot[rows]
        grad_w += block.T @ logits
        grad_b += logits.sum(axis=0, dtype=np.float64)
    grad_w *= np.float32(1 / n)
    grad_w += np.float32(penalty) * W
    loss = loss / n + 0.5 * penalty * float(np.square(W, dtype=np.float64).sum())
    return loss, np.concatenate([grad_w.ravel().astype(np.float64), grad_b / n])


def fit_softmax(X: np.ndarray, y: np.ndarray, n_classes: int, C: float, start: np.ndarray | None = None,
                max_iter: int = 1000, tol: float = TOL) -> tuple[np.ndarray, int, int]:
    """(flat parameters, iterations, evaluations) minimising the objective for class indices y in [0, n_classes).

    ``X`` float32, C-contiguous. ``start``: parameters to start from (warm start), else zeros.
    """
    d = X.shape[1]
    onehot = np.zeros((len(y), n_classes), np.float32)
    onehot[np.arange(len(y)), y] = 1
    w0 = np.zeros(d * n_classes + n_classes) if start is None else np.asarray(start, np.float64)
    # Two classes: scikit-learn fits one column w with penalty ||w||^2 / 2; the two columns here meet at
    # w1 = -w0 = w / 2, so the same model needs twice the penalty.
    penalty = (2.0 if n_classes == 2 else 1.0) / (C * len(y))
    result = minimize(_loss_and_gradient, w0, args=(X, y, onehot, penalty), jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iter, "ftol": tol, "gtol": GTOL, "maxcor": 10})
    return result.x, int(result.nit), int(result.nfev)


class SoftmaxRegression(ClassifierMixin, BaseEstimator):
    """The estimator around ``fit_softmax``: ``coef_`` (c, d) and ``intercept_`` (c,) as scikit-learn lays them out.

    ``fit(X, y, start=...)`` warm-starts from flat parameters (``params_`` of another fit on the
    same classes); ``n_iter_`` and ``n_evaluations_`` say what the solve took.
    """

    def __init__(self, C: float = 1.0, max_iter: int = 1000, tol: float = TOL):
        self.C = C
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X, y, start: np.ndarray | None = None):
        X, y = check_X_y(X, y, dtype=np.float32, order="C")
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"needs at least 2 classes in the training rows, got {len(self.classes_)}")
        c, d = len(self.classes_), X.shape[1]
        self.params_, self.n_iter_, self.n_evaluations_ = fit_softmax(X, encoded, c, self.C, start, self.max_iter,
                                                                      self.tol)
        self.coef_ = self.params_[:d * c].reshape(d, c).T.astype(np.float32)
        self.intercept_ = self.params_[d * c:].astype(np.float32)
        return self

    def decision_function(self, X):
        check_is_fitted(self, "coef_")
        return check_array(X, dtype=np.float32) @ self.coef_.T + self.intercept_

    def predict_proba(self, X):
        logits = self.decision_function(X).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        proba = np.exp(logits)
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X):
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]
