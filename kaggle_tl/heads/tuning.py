"""Regularisation chosen honestly: by an inner split of the rows handed to ``fit``, never the scored rows.

``choose_logreg_C`` fits logistic regression (``softmax.SoftmaxRegression``) along a log grid of C
on 1 - ``inner_fraction`` of the training rows (stratified), from strong to weak regularisation,
each fit warm-started from the previous one's weights (``logreg_path``), and scores each C by log
loss on the other ``inner_fraction``, stopping at the first C worse than the best so far.
``choose_svm_C`` does the same for the linear SVM (Platt-calibrated on the inner rows, stopping after two worse).
``choose_tags_C`` does it for per-tag logistic regressions (``sigmoid.SigmoidRegression``, one C
for all tags) on a random split, scored by the mean per-tag log loss (``sigmoid_path``).
``LogisticRegressionAutoC``, ``LinearSVMAutoC`` and ``SigmoidRegressionAutoC`` are the scikit-learn
estimators built on them: their ``fit`` chooses C, refits on all its rows, and keeps ``C_`` and
``inner_scores_`` (C -> inner log loss) for a head to record per fold.
``choose_ridge_alpha`` chooses ridge's alpha on a random split, every grid alpha from one
decomposition (``ridge.ridge_path``), by the inner mean squared error.
``choose_svr_C`` chooses the linear SVR's C (``svr.LinearSVR``) on a random split, along a grid walked as
``choose_logreg_C`` walks its own (warm-started, ``svr_path``), by the inner mean squared error.
"""
from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y

from kaggle_tl.heads.ridge import max_float32_error, ridge_path
from kaggle_tl.heads.sigmoid import SigmoidRegression
from kaggle_tl.heads.softmax import SoftmaxRegression
from kaggle_tl.heads.svm import LinearSVM
from kaggle_tl.heads.svr import DELTA, EPSILON, LinearSVR
from kaggle_tl.tasks.metrics import row_logloss

# Log grids (2 steps a decade) around the measured optima: CIFAR-10-small Lite0 logreg 0.005 (5,000
# rows), the demo (240 rows a fold) 3 to 10 and more; SVM 0.001. Walked upwards with early stopping,
# so the large values cost a fit only on data that wants them.
LOGREG_C_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
SVM_C_GRID = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
PATIENCE = 2  # stop along the grid after this many C values in a row worse than the best so far
# Logistic regression's walk (classes and tags): one worse C ends it, and each inner solve stops at a relative
# objective change of 1e-5 (the refit at the chosen C keeps softmax.TOL). On cifar10-small's Lite0 features (5 folds, 3,953 x 3,104)
# together they took 12.6 s for 17.2 s, choosing C within ~3% and moving the held-out log loss by
# -0.0004 +- 0.0003 (BENCHMARKS.md, round 8): the inner log loss a C is chosen by cannot resolve more.
LOGREG_PATIENCE = 1
LOGREG_PATH_TOL = 1e-5
# Ridge's alpha per inner fit row, a log grid of 2 steps a decade (17 values): X^T X of standardised features
# grows with the rows, so per row the grid spans the same shrinkage on 200 rows as on 40,000. 1e-3 barely
# shrinks a direction of the features' spread (variance 1e-3 or more), 1e5 shrinks all of them to ~0 (the
# mean): both ends are reached only by data that wants them.
RIDGE_ALPHA_GRID = tuple(float(a) for a in np.logspace(-3, 5, 17))
# The linear SVR's C times the inner fit rows, a log grid of 2 steps a decade (15 values). Per row for ridge's
# reason: at strong regularisation w = C X^T g (g the loss's slopes, at most 1 a row), so C n plays the part of
# 1 / (ridge's alpha per row) on the standardised target. 1e-3 shrinks every prediction to ~ the intercept, 1e4
# barely regularises; walked upwards, the weakly regularised end (the slow solves) is reached only by data that
# wants it.
SVR_C_GRID = tuple(float(c) for c in np.logspace(-3, 4, 15))


def inner_split(y: np.ndarray, fraction: float, seed: int, stratify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, inner validation rows) of ``y``: stratified where the classes allow it, or with
    ``stratify=False`` (tags, values) a plain random split."""
    rows = np.arange(len(y))
    if stratify:
        try:
            return train_test_split(rows, test_size=fraction, stratify=y, random_state=seed)
        except ValueError:  # a class with one row, or fewer held-out rows than classes
            pass
    return train_test_split(rows, test_size=fraction, random_state=seed)


def _inner_logloss(model, X: np.ndarray, y: np.ndarray, classes: np.ndarray) -> float:
    """Mean log loss of ``model`` on (X, y), a class it never saw counting as probability ~0."""
    proba = np.zeros((len(y), len(classes)))
    proba[:, np.searchsorted(classes, model.classes_)] = model.predict_proba(X)
    return float(row_logloss(np.searchsorted(classes, y), proba).mean())


def _walk_grid(grid, fit_and_score, patience: int = PATIENCE) -> tuple[float, dict[float, float]]:
    """Score C values from the smallest up, stopping after ``patience`` worse ones in a row; (best C, scores)."""
    scores: dict[float, float] = {}
    best, worse = np.inf, 0
    for c in sorted(float(c) for c in grid):
        scores[c] = fit_and_score(c)
        if scores[c] < best:
            best, worse = scores[c], 0
        else:
            worse += 1
            if worse >= patience:
                break
    return min(scores, key=scores.get), scores  # ties: the smaller C (scores are in ascending C)


def refine_C(scores: dict[float, float]) -> float:
    """The minimum of the parabola in log C through the best grid point and its two neighbours.

    The grid's steps are half a decade; the loss is smooth in log C, so the vertex lands nearer the
    optimum at no cost (the model is refitted at the chosen C anyway). Kept between the neighbours;
    the best grid point itself at an end of the grid or when the three points do not curve upwards.
    """
    cs = sorted(scores)
    i = min(range(len(cs)), key=lambda j: (scores[cs[j]], j))
    if i == 0 or i == len(cs) - 1:
        return cs[i]
    x = np.log(cs[i - 1:i + 2])
    f = np.array([scores[c] for c in cs[i - 1:i + 2]])
    curvature = (f[2] - f[1]) / (x[2] - x[1]) - (f[1] - f[0]) / (x[1] - x[0])
    if not curvature > 0:
        return cs[i]
    # Vertex of the parabola through three points (x0, f0), (x1, f1), (x2, f2).
    numerator = (x[1] - x[0]) ** 2 * (f[1] - f[2]) - (x[1] - x[2]) ** 2 * (f[1] - f[0])
    denominator = (x[1] - x[0]) * (f[1] - f[2]) - (x[1] - x[2]) * (f[1] - f[0])
    vertex = x[1] - 0.5 * numerator / denominator
    return float(np.exp(np.clip(vertex, x[0], x[2])))


def _check_grid(grid) -> None:
    if len(grid) == 0 or any(not c > 0 for c in grid):
        raise ValueError(f"C grid must be non-empty and positive, got {grid!r}")


def choose_logreg_C(X, y, grid=LOGREG_C_GRID, seed: int = 0, inner_fraction: float = 0.2,
                    max_iter: int = 1000, refine: bool = True) -> tuple[float, dict[float, float]]:
    """The C with the lowest log loss on an inner split of (X, y); and each grid C's inner log loss.

    ``X`` is already transformed (standardised, ...). Only (X, y) is looked at: pass a fold's
    training rows, and the fold's scored rows stay unseen. ``refine``: between grid points by
    ``refine_C``; else the best grid point.
    """
    c, scores, _ = _choose_logreg(X, y, grid, seed, inner_fraction, max_iter, refine)
    return c, scores


def _choose_on_path(path: Iterator[dict], grid, refine: bool, patience: int = PATIENCE):
    """Walk ``path`` (``logreg_path``, ``sigmoid_path``) along ``_walk_grid``: (chosen C, {C: inner log loss},
    the inner fit at the best grid C)."""
    models = {}

    def fit_and_score(c: float) -> float:
        entry = next(path)  # the path walks the same ascending grid as _walk_grid
        models[entry["C"]] = entry["model"]
        return entry["inner_logloss"]

    c, scores = _walk_grid(grid, fit_and_score, patience)
    return (refine_C(scores) if refine else c), scores, models[c]


def logreg_path(X_fit, y_fit, X_val, y_val, grid=LOGREG_C_GRID, max_iter: int = 1000,
                tol: float = LOGREG_PATH_TOL) -> Iterator[dict]:
    """Logistic regression at each C of ``grid`` from the smallest up, each solve warm-started from the
    previous one and stopped at ``tol``; per C: its inner log loss on (X_val, y_val), the fit's parameters and
    what the solve took.

    The caller stops the walk (a generator: C values after it are never fitted).
    """
    classes = np.unique(np.concatenate([y_fit, y_val]))
    X_fit = np.ascontiguousarray(X_fit, dtype=np.float32)
    start = None
    for c in sorted(float(c) for c in grid):
        began = time.perf_counter()
        model = SoftmaxRegression(C=c, max_iter=max_iter, tol=tol).fit(X_fit, y_fit, start=start)
        start = model.params_
        yield {"C": c, "inner_logloss": _inner_logloss(model, X_val, y_val, classes), "model": model,
               "iterations": model.n_iter_, "evaluations": model.n_evaluations_,
               "seconds": time.perf_counter() - began}


def _choose_logreg(X, y, grid, seed: int, inner_fraction: float, max_iter: int, refine: bool):
    """``choose_logreg_C``, plus the inner fit at the best grid C (a ``SoftmaxRegression``)."""
    _check_grid(grid)
    X, y = check_X_y(X, y, dtype=np.float32)
    fit_rows, val_rows = inner_split(y, inner_fraction, seed)
    return _choose_on_path(logreg_path(X[fit_rows], y[fit_rows], X[val_rows], y[val_rows], grid, max_iter),
                           grid, refine, LOGREG_PATIENCE)


def tags_logloss(Y: np.ndarray, proba: np.ndarray) -> float:
    """The mean over tags (and rows) of the binary log loss of per-tag probabilities ``proba`` for 0/1 ``Y``."""
    p, y = np.asarray(proba, dtype=np.float64).ravel(), np.asarray(Y).ravel()
    return float(row_logloss(y, np.column_stack([1 - p, p])).mean())  # each tag cell as a two-class row


def sigmoid_path(X_fit, Y_fit, X_val, Y_val, grid=LOGREG_C_GRID, max_iter: int = 1000,
                 tol: float = LOGREG_PATH_TOL) -> Iterator[dict]:
    """``logreg_path`` for per-tag logistic regressions (``SigmoidRegression``) on 0/1 tag matrices: per C, the
    mean per-tag log loss on (X_val, Y_val) ("inner_logloss"), the fit and what its solve took."""
    X_fit = np.ascontiguousarray(X_fit, dtype=np.float32)
    start = None
    for c in sorted(float(c) for c in grid):
        began = time.perf_counter()
        model = SigmoidRegression(C=c, max_iter=max_iter, tol=tol).fit(X_fit, Y_fit, start=start)
        start = model.params_
        yield {"C": c, "inner_logloss": tags_logloss(Y_val, model.predict_proba(X_val)), "model": model,
               "iterations": model.n_iter_, "evaluations": model.n_evaluations_,
               "seconds": time.perf_counter() - began}


def choose_tags_C(X, Y, grid=LOGREG_C_GRID, seed: int = 0, inner_fraction: float = 0.2, max_iter: int = 1000,
                  refine: bool = True) -> tuple[float, dict[float, float]]:
    """One C for all tags: the lowest mean per-tag log loss on a random inner split of (X, Y (n, L) 0/1),
    along ``grid`` as ``choose_logreg_C`` walks it; and each grid C's inner log loss."""
    c, scores, _ = _choose_tags(X, Y, grid, seed, inner_fraction, max_iter, refine)
    return c, scores


def _choose_tags(X, Y, grid, seed: int, inner_fraction: float, max_iter: int, refine: bool):
    _check_grid(grid)
    X, Y = check_X_y(X, Y, dtype=np.float32, multi_output=True)
    fit_rows, val_rows = inner_split(Y, inner_fraction, seed, stratify=False)
    return _choose_on_path(sigmoid_path(X[fit_rows], Y[fit_rows], X[val_rows], Y[val_rows], grid, max_iter),
                           grid, refine, LOGREG_PATIENCE)


def choose_ridge_alpha(X, y, grid=RIDGE_ALPHA_GRID, seed: int = 0, inner_fraction: float = 0.2,
                       refine: bool = True) -> tuple[float, dict[float, float]]:
    """The ridge alpha with the lowest mean squared error on a random inner split of (X, y); and each grid
    alpha's inner mean squared error.

    ``grid`` is per row: the alphas tried are grid x the inner fit rows, all from one decomposition of
    those rows (``ridge_path``); ``refine`` places the choice between grid points as ``refine_C`` does.
    The alpha returned is absolute, for a refit on all the rows (like C, it is not rescaled to them).
    """
    _check_grid(grid)
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    fit_rows, val_rows = inner_split(y, inner_fraction, seed, stratify=False)
    alphas = np.sort(np.asarray(grid, dtype=np.float64)) * len(fit_rows)

    def inner_errors(decomposition) -> np.ndarray:
        coef, intercept = ridge_path(X[fit_rows], y[fit_rows], alphas, decomposition)
        return np.mean(np.square(X[val_rows] @ coef + intercept - y[val_rows][:, None]), axis=0)

    # The float32 decomposition where it cannot move the choice: its eigenvalues' error scale is below 1% of
    # the best alpha's smaller neighbour (a choice nearer the float32 floor is computed again in float64).
    # On cifar10-small's Lite0 features it chose the same alpha, refined to 4e-6 of float64's.
    errors = inner_errors(np.float32)
    best = int(np.argmin(errors))
    if alphas[max(best - 1, 0)] < 100 * max_float32_error(X[fit_rows]):
        errors = inner_errors(np.float64)
    scores = {float(a): float(e) for a, e in zip(alphas, errors)}
    return (refine_C(scores) if refine else min(scores, key=scores.get)), scores


def svr_path(X_fit, y_fit, X_val, y_val, grid, epsilon: float, delta: float, max_iter: int = 1000) -> Iterator[dict]:
    """The linear SVR at each (absolute) C of ``grid`` from the smallest up, each solve warm-started from the previous
    one's parameters (the same fit rows, so the same standardised target); per C: its mean squared error on
    (X_val, y_val), the fit and what its solve took. The caller stops the walk."""
    X_fit = np.ascontiguousarray(X_fit, dtype=np.float32)
    start = None
    for c in sorted(float(c) for c in grid):
        began = time.perf_counter()
        model = LinearSVR(C=c, epsilon=epsilon, delta=delta, max_iter=max_iter).fit(X_fit, y_fit, start=start)
        start = model.params_
        yield {"C": c, "inner_mse": float(np.mean(np.square(model.predict(X_val) - y_val))), "model": model,
               "iterations": model.n_iter_, "evaluations": model.n_evaluations_,
               "seconds": time.perf_counter() - began}


def choose_svr_C(X, y, grid=SVR_C_GRID, seed: int = 0, inner_fraction: float = 0.2, refine: bool = True,
                 epsilon: float = EPSILON, delta: float = DELTA) -> tuple[float, dict[float, float]]:
    """The linear SVR's C with the lowest mean squared error (what RMSE-scored competitions score) on a random inner
    split of (X, y); and each grid C's inner mean squared error.

    ``grid`` is per row, as ``choose_ridge_alpha``'s: the C values tried are grid / the inner fit rows, walked from
    the smallest up with warm starts and early stopping (``_walk_grid``), ``refine`` placing the choice between grid
    points (``refine_C``). The C returned is absolute, for a refit on all the rows. Only (X, y) is looked at.
    """
    c, scores, _ = _choose_svr(X, y, grid, seed, inner_fraction, refine, epsilon, delta)
    return c, scores


def _choose_svr(X, y, grid, seed: int, inner_fraction: float, refine: bool, epsilon: float, delta: float):
    """``choose_svr_C``, plus the inner fit at the best grid C (a ``LinearSVR``)."""
    _check_grid(grid)
    X, y = check_X_y(X, y, dtype=np.float32, y_numeric=True)
    y = y.astype(np.float64)
    fit_rows, val_rows = inner_split(y, inner_fraction, seed, stratify=False)
    cs = [float(c) / len(fit_rows) for c in grid]
    path = svr_path(X[fit_rows], y[fit_rows], X[val_rows], y[val_rows], cs, epsilon, delta)
    models = {}

    def fit_and_score(c: float) -> float:
        entry = next(path)  # the path walks the same ascending grid as _walk_grid
        models[entry["C"]] = entry["model"]
        return entry["inner_mse"]

    c, scores = _walk_grid(cs, fit_and_score)
    return (refine_C(scores) if refine else c), scores, models[c]


def choose_svm_C(X, y, grid=SVM_C_GRID, seed: int = 0, inner_fraction: float = 0.2,
                 refine: bool = True) -> tuple[float, dict[float, float]]:
    """Like ``choose_logreg_C`` for the linear SVM (``heads.LinearSVM``) with sigmoid calibration.

    One SVM fit per C on the inner fit rows; its decision values are Platt-calibrated (one sigmoid
    a class, then normalised: CalibratedClassifierCV's "sigmoid") on one half of the inner
    validation rows and scored on the other, then the halves swap. The head's own 3-fold
    calibration would cost three SVM fits per C.
    """
    _check_grid(grid)
    X, y = check_X_y(X, y, dtype=np.float32)
    classes = np.unique(y)
    fit_rows, val_rows = inner_split(y, inner_fraction, seed)
    halves = [val_rows[r] for r in inner_split(y[val_rows], 0.5, seed)]

    def fit_and_score(c: float) -> float:
        svm = LinearSVM(C=c).fit(X[fit_rows], y[fit_rows])
        loss = 0.0
        for calibrate, score in (halves, halves[::-1]):
            proba = _platt(svm, X[calibrate], y[calibrate], X[score], classes)
            loss += row_logloss(np.searchsorted(classes, y[score]), proba).sum()
        return float(loss / len(val_rows))

    c, scores = _walk_grid(grid, fit_and_score)
    return (refine_C(scores) if refine else c), scores


def _platt(svm, X_fit: np.ndarray, y_fit: np.ndarray, X: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(len(X), len(classes)) probabilities: a sigmoid of each class's decision value fitted on
    (X_fit, y_fit), normalised to sum to 1; a class the SVM never saw gets probability ~0."""
    scores_fit, scores = svm.decision_function(X_fit), svm.decision_function(X)
    if scores.ndim == 1:  # binary: one column, for classes_[1]
        scores_fit, scores = np.column_stack([-scores_fit, scores_fit]), np.column_stack([-scores, scores])
    proba = np.zeros((len(X), len(classes)))
    for j, label in enumerate(svm.classes_):
        target = (y_fit == label).astype(int)
        if target.min() == target.max():  # one class only among the calibration rows: its base rate
            proba[:, np.searchsorted(classes, label)] = target[0]
            continue
        sigmoid = LogisticRegression(C=1e6).fit(scores_fit[:, j:j + 1], target)
        proba[:, np.searchsorted(classes, label)] = sigmoid.predict_proba(scores[:, j:j + 1])[:, 1]
    proba = np.clip(proba, 1e-12, None)
    return proba / proba.sum(axis=1, keepdims=True)


class _RefittedAtC(ClassifierMixin, BaseEstimator):
    """An estimator whose ``fit`` chooses C and leaves ``model_``, the model refitted at that C, to predict."""

    def predict_proba(self, X):
        check_is_fitted(self, "model_")
        return self.model_.predict_proba(check_array(X, dtype=np.float32))

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class LogisticRegressionAutoC(_RefittedAtC):
    """LogisticRegression whose C is chosen by ``choose_logreg_C`` on the rows given to ``fit``.

    After fit: ``C_`` (chosen), ``inner_scores_`` ({C: inner log loss}), ``model_`` (a
    ``SoftmaxRegression`` refitted on all rows, warm-started from the inner fit at the best grid C),
    ``classes_``.
    """

    def __init__(self, grid=LOGREG_C_GRID, inner_fraction: float = 0.2, max_iter: int = 1000,
                 refine: bool = True, random_state: int = 0):
        self.grid = grid
        self.inner_fraction = inner_fraction
        self.max_iter = max_iter
        self.refine = refine
        self.random_state = random_state

    def fit(self, X, y):
        X, y = check_X_y(X, y, dtype=np.float32, order="C")
        self.C_, self.inner_scores_, inner = _choose_logreg(X, y, self.grid, self.random_state, self.inner_fraction,
                                                            self.max_iter, self.refine)
        # Start from the inner fit (fewer steps to converge) when it saw every class.
        start = inner.params_ if np.array_equal(inner.classes_, np.unique(y)) else None
        self.model_ = SoftmaxRegression(C=self.C_, max_iter=self.max_iter).fit(X, y, start=start)
        self.classes_ = self.model_.classes_
        return self


class LinearSVMAutoC(_RefittedAtC):
    """The svm head's model (``LinearSVM`` in 3-fold sigmoid CalibratedClassifierCV) with C chosen by
    ``choose_svm_C`` on the rows given to ``fit``; ``C_`` and ``inner_scores_`` as above."""

    def __init__(self, grid=SVM_C_GRID, inner_fraction: float = 0.2, calibration_folds: int = 3,
                 refine: bool = True, random_state: int = 0):
        self.grid = grid
        self.inner_fraction = inner_fraction
        self.calibration_folds = calibration_folds
        self.refine = refine
        self.random_state = random_state

    def fit(self, X, y):
        X, y = check_X_y(X, y, dtype=np.float32)
        self.C_, self.inner_scores_ = choose_svm_C(X, y, self.grid, self.random_state, self.inner_fraction,
                                                   self.refine)
        self.model_ = CalibratedClassifierCV(LinearSVM(C=self.C_), method="sigmoid",
                                             cv=self.calibration_folds).fit(X, y)
        self.classes_ = self.model_.classes_
        return self


class SigmoidRegressionAutoC(_RefittedAtC):
    """Per-tag logistic regressions (``SigmoidRegression``) whose one C is chosen by ``choose_tags_C`` on the
    rows given to ``fit``; ``C_``, ``inner_scores_`` and ``model_`` (refitted on all rows, warm-started from
    the inner fit at the best grid C) as ``LogisticRegressionAutoC``; ``classes_`` the tag indices."""

    def __init__(self, grid=LOGREG_C_GRID, inner_fraction: float = 0.2, max_iter: int = 1000,
                 refine: bool = True, random_state: int = 0):
        self.grid = grid
        self.inner_fraction = inner_fraction
        self.max_iter = max_iter
        self.refine = refine
        self.random_state = random_state

    def fit(self, X, Y):
        X, Y = check_X_y(X, Y, dtype=np.float32, order="C", multi_output=True)
        self.C_, self.inner_scores_, inner = _choose_tags(X, Y, self.grid, self.random_state, self.inner_fraction,
                                                          self.max_iter, self.refine)
        self.model_ = SigmoidRegression(C=self.C_, max_iter=self.max_iter).fit(X, Y, start=inner.params_)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        return self.model_.predict(X)
