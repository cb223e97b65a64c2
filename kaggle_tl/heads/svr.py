"""Linear support vector regression in the primal, float32 matrix products, solved by scipy's L-BFGS: the svr head's
solver.

On a standardised target ``z = (y - median(y)) / s``, s the robust standard deviation (``robust_scale``), it
minimises::

    ||w||^2 / (2 C n)  +  mean_i huber_eps(z_i - x_i w - b)            (the intercept b is not penalised)

where, for a residual r and u = max(0, |r| - epsilon),

    huber_eps(r) = 0                        if u == 0          (inside the epsilon tube)
                   u^2 / (2 delta)          if 0 < u <= delta  (a quadratic join, so the loss is differentiable)
                   u - delta / 2            if u > delta       (linear, as the SVR's epsilon-insensitive loss)

so with ``delta`` -> 0 it is scikit-learn's ``LinearSVR(loss="epsilon_insensitive")`` (C sum_i loss + ||w||^2 / 2,
divided by C n) on the standardised target. Why: a competition's values can be heavy-tailed (PetFinder's
Pawpularity piles up at 100, photos scored far off what they show): ridge's squared error lets each such row pull the
fit by its residual, this loss by at most 1 (its gradient is bounded), so a few gross rows move it little. The
target is standardised so that ``C``, ``epsilon`` and ``delta`` are scale-free (epsilon and delta in units of y's
spread, robustly measured: the standard deviation for normal values); ``coef_`` and ``intercept_`` are rescaled back
to y's units.

The solve is ``softmax.py``'s: the two matrix-vector products of each loss-and-gradient evaluation (X w and X^T g,
nearly all of its cost) in float32 on float32 features, the rest in float64; it stops when an iteration improves the
objective by less than ``tol`` (``TOL``) relative to it. ``fit(X, y, start=params_)`` warm-starts from another fit's
parameters (``tuning.choose_svr_C`` walks its C grid so).
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y

from kaggle_tl.heads.softmax import GTOL

# In units of y's (robust) standard deviation. epsilon = 0.1: residuals within a tenth of the spread cost nothing
# (SVR's usual 0.1, here scale-free): wide enough to ignore a target's rounding, small against the errors of a model on
# image features (the best Pawpularity solutions' RMSE was ~17 against a standard deviation of ~20.6), so nearly every
# row still pulls the fit. delta = 0.1: the quadratic join's width, as small as keeps the loss's curvature (1 / delta)
# mild enough for L-BFGS; beyond epsilon + delta a row's pull is constant, which is what makes the loss robust.
EPSILON = 0.1
DELTA = 0.1
# The relative objective change at which L-BFGS stops (scipy's ftol; absolute below an objective of 1, where this
# one mostly is). Tighter than softmax's 1e-6: warm-started from the previous C, a solve improves little per step and
# 1e-6 stopped it early, its inner MSE up to 0.47% above a cold fit's at the same C (200 x 30, the grid's weak end);
# 1e-8 to 0.03%, for 1.5x the time (C = "auto" on 4,000 x 1,800: 3.3 s against 2.0 s, 10.2 s against 6.6 s on a
# stronger signal, 2 busy cores).
TOL = 1e-8


def robust_scale(y: np.ndarray) -> tuple[float, float]:
    """(centre, scale) the target is standardised by: its median and 1.4826 x its median absolute deviation (the
    standard deviation of normal values). Not the mean and standard deviation: the gross values this loss resists
    would inflate the standard deviation, and with it the tube (epsilon) and the join (delta) in y's units (5% of
    rows 30 standard deviations off made it 6.6x the clean rows', and the fit shrank to a tube 0.66 of their
    spread wide: RMSE 8.6 on clean rows where the noise is 1). The standard deviation where half the values or more
    are one value (MAD 0), 1 for a constant target (z = 0, w = 0: the constant predicted)."""
    centre = float(np.median(y))
    scale = 1.4826 * float(np.median(np.abs(y - centre)))
    if not scale > 0:
        scale = float(y.std())
    return centre, scale if scale > 0 else 1.0


def huber_eps(r: np.ndarray, epsilon: float, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """(loss, d loss / d r) per residual r: the epsilon-insensitive loss with a quadratic join of width ``delta``."""
    u = np.maximum(np.abs(r) - epsilon, 0.0)
    quadratic = u <= delta
    loss = np.where(quadratic, u * u / (2 * delta), u - delta / 2)
    slope = np.sign(r) * np.where(quadratic, u / delta, 1.0)
    return loss, slope


def _loss_and_gradient(params: np.ndarray, X: np.ndarray, z: np.ndarray, penalty: float, epsilon: float,
                       delta: float) -> tuple[float, np.ndarray]:
    """The objective and its gradient at params = [w (d), b], float64; the products in X's precision (float32 in a
    fit, float64 where a test checks the gradient by finite differences)."""
    w, b = params[:-1], params[-1]
    n = len(z)
    residual = z - (X @ w.astype(X.dtype)).astype(np.float64) - b
    loss, slope = huber_eps(residual, epsilon, delta)
    grad_w = -(X.T @ slope.astype(X.dtype)).astype(np.float64) / n + penalty * w
    grad_b = -slope.sum() / n
    value = float(loss.mean()) + 0.5 * penalty * float(w @ w)
    return value, np.append(grad_w, grad_b)


def fit_svr(X: np.ndarray, z: np.ndarray, C: float, epsilon: float = EPSILON, delta: float = DELTA,
            start: np.ndarray | None = None, max_iter: int = 1000, tol: float = TOL) -> tuple[np.ndarray, int, int]:
    """(parameters [w, b], iterations, evaluations) minimising the objective for the (standardised) target z.

    ``X`` float32 (or float64), C-contiguous. ``start``: parameters to start from (warm start), else zeros.
    """
    params0 = np.zeros(X.shape[1] + 1) if start is None else np.asarray(start, np.float64)
    result = minimize(_loss_and_gradient, params0, args=(X, np.asarray(z, np.float64), 1.0 / (C * len(z)), epsilon,
                                                         delta),
                      jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iter, "ftol": tol, "gtol": GTOL, "maxcor": 10})
    return result.x, int(result.nit), int(result.nfev)


class LinearSVR(RegressorMixin, BaseEstimator):
    """The estimator around ``fit_svr`` (not scikit-learn's LinearSVR: a smoothed loss, a standardised target, an
    unpenalised intercept): ``coef_`` (d,) and ``intercept_`` in y's units, float64.

    ``fit(X, y, start=...)`` warm-starts from ``params_`` of another fit (parameters on the standardised target);
    ``y_centre_`` and ``y_scale_`` are the standardisation; ``n_iter_`` and ``n_evaluations_`` what the solve took.
    """

    def __init__(self, C: float = 1.0, epsilon: float = EPSILON, delta: float = DELTA, max_iter: int = 1000,
                 tol: float = TOL):
        self.C = C
        self.epsilon = epsilon
        self.delta = delta
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X, y, start: np.ndarray | None = None):
        X, y = check_X_y(X, y, dtype=np.float32, order="C", y_numeric=True)
        y = y.astype(np.float64)
        self.y_centre_, self.y_scale_ = robust_scale(y)
        z = (y - self.y_centre_) / self.y_scale_
        self.params_, self.n_iter_, self.n_evaluations_ = fit_svr(X, z, self.C, self.epsilon, self.delta, start,
                                                                  self.max_iter, self.tol)
        self.coef_ = self.params_[:-1] * self.y_scale_
        self.intercept_ = float(self.params_[-1] * self.y_scale_ + self.y_centre_)
        return self

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "coef_")
        return check_array(X, dtype=np.float64) @ self.coef_ + self.intercept_
