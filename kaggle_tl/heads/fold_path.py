"""Every fold's logistic regression on one view, solved together: the C path on each fold's inner split, then the
refit on each fold's training rows, all the folds' solves advanced in lockstep so that one pair of matrix products
over the view's rows evaluates all of them.

Why: an evaluation's cost is two products with the features, and a product with 10 columns (one fold's weights)
runs far below the machine's speed (~25 GFLOP/s on a Xeon 6/167 core, against ~140 for square ones); the same
products with the five folds' 50 columns side by side cost 2.3-2.8x less than five separate ones
(BENCHMARKS.md, round 10). Every fold's rows are rows of the view's matrix, and every fold's features are an
affine map of it, column by column:

    X_k = (F - mean_k) / scale_k = Z * ratio_k - shift_k,   Z = (F - mean) / scale

with F the rows after the transform's fixed steps (``sqrt``, ``l2``), (mean_k, scale_k) the fold's StandardScaler
(fitted on its training rows only, as ``fit`` fits it) and (mean, scale) of all the view's rows, which only keep
Z's numbers near 0 and 1 for float32 (the model is the fold's: any reference point gives the same X_k). So
``X_k W = Z (ratio_k W) - shift_k W``: each fold's weights are scaled into Z's columns, one product gives every
fold's logits, a fold's loss takes only its own rows, and ``X_k^T G = ratio_k (Z^T G) - shift_k 1^T G``.

Each fold runs what ``tuning.LogisticRegressionAutoC`` runs (the same inner split, grid, walk, tolerances, refine
and warm starts; fixed C: the refit only) as a generator of the points it needs evaluated (``lbfgs``), so its
choices are its own: the folds share arithmetic, not decisions. A transform with a fitted step other than a final
``standard`` (``pca_whiten``) has no such form: ``fits_jointly`` says so and the folds are fitted one by one.
"""
from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from kaggle_tl.heads.frozen import FrozenHead
from kaggle_tl.heads.lbfgs import LBFGSResult, lbfgs
from kaggle_tl.heads.softmax import GTOL, TOL
from kaggle_tl.heads.transforms import NONE_SPECS, apply_frozen_transform, frozen_fixed_then_standard
from kaggle_tl.heads.tuning import LOGREG_PATH_TOL, LOGREG_PATIENCE, inner_split, refine_C
from kaggle_tl.tasks.metrics import row_logloss

FIXED_STEPS = ("sqrt", "l2")  # transform steps fitted to nothing: applied to the view's rows once


@dataclass
class _Fold:
    """Fold k's features as an affine map of Z: X_k = Z * ratio - shift (float64, one value per column)."""
    ratio: np.ndarray
    shift: np.ndarray


@dataclass
class _Problem:
    """One L2 multinomial logistic regression: the mean loss over ``rows`` of Z (``target`` their class indices in
    [0, width)) plus the penalty; with each value, the log loss on ``score_rows`` (the inner validation rows),
    whose classes ``score_target`` index a set of which this problem's classes are at ``score_positions``."""
    fold: _Fold
    rows: np.ndarray
    target: np.ndarray
    width: int
    penalty: float
    score_rows: np.ndarray
    score_target: np.ndarray
    score_positions: np.ndarray
    n_score_classes: int


def fits_jointly(transform: str) -> bool:
    """Whether folds with this transform spec can be solved together: fixed steps, then at most one ``standard``."""
    text = transform.strip().lower()
    steps = [] if text in NONE_SPECS else [part.strip() for part in text.split(",")]
    if steps and steps[-1] == "standard":
        steps = steps[:-1]
    return all(step in FIXED_STEPS for step in steps)


def fit_logreg_folds(X: np.ndarray, y: np.ndarray, folds: np.ndarray, C: float | str, grid, transform: str,
                     max_iter: int, seed: int, inner_fraction: float = 0.2,
                     refine: bool = True) -> list[tuple[FrozenHead, dict[str, float]]]:
    """For each fold k: the logreg head's fit on the rows outside fold k, frozen, and what it chose ({"C": ...} when
    ``C = "auto"``), as ``LogRegHead(C, max_iter, transform, seed).fit`` gives it, every fold solved together."""
    X = np.asarray(X, dtype=np.float32)
    n_folds = int(folds.max()) + 1
    steps = [] if transform.strip().lower() in NONE_SPECS else [p.strip() for p in transform.lower().split(",")]
    standard = bool(steps) and steps[-1] == "standard"
    fixed = steps[:-1] if standard else steps
    Z = apply_frozen_transform(frozen_fixed_then_standard(fixed), X)
    Z = Z.copy() if Z is X else Z  # in place below: never the caller's features
    mean = Z.mean(axis=0, dtype=np.float64)
    scale = Z.std(axis=0, dtype=np.float64)
    scale[scale == 0] = 1
    Z -= mean.astype(np.float32)
    Z /= scale.astype(np.float32)
    programs, classes, transforms = [], [], []
    for k in range(n_folds):
        rows = np.flatnonzero(folds != k)
        if standard:
            # Each fold's StandardScaler from its own rows of Z, in two passes: a column constant in the fold's
            # training rows (a ReLU channel alive in one held-out image) has variance exactly 0, as scikit-learn
            # finds it; all rows' sums less the held-out rows' left rounding noise there, which the scale then blew up.
            fold_rows = Z[rows]
            z_mean, z_var = fold_rows.mean(axis=0, dtype=np.float64), fold_rows.var(axis=0, dtype=np.float64)
            del fold_rows
            fold_mean, fold_var = mean + scale * z_mean, np.square(scale) * z_var
            fold_scale = np.sqrt(fold_var)
            # scikit-learn's test for a constant column (its scale then 1): the variance within float64's error.
            eps = np.finfo(np.float64).eps
            fold_scale[fold_var <= len(rows) * eps * fold_var + np.square(len(rows) * fold_mean * eps)] = 1
        else:
            fold_mean, fold_scale = np.zeros_like(mean), np.ones_like(scale)
        transforms.append(frozen_fixed_then_standard(fixed, fold_mean, fold_scale) if standard
                          else frozen_fixed_then_standard(fixed))
        fold = _Fold(scale / fold_scale, (fold_mean - mean) / fold_scale)
        fold_classes = np.unique(y[rows])
        if len(fold_classes) < 2:
            raise ValueError(f"needs at least 2 classes in the training rows, got {len(fold_classes)}")
        classes.append(fold_classes)
        programs.append(_fold_program(fold, rows, y, fold_classes, C, grid, max_iter, seed, inner_fraction, refine))
    results = _run_together(Z, programs)
    out = []
    for k, (chosen_C, result) in enumerate(results):
        d, c = Z.shape[1], len(classes[k])
        linear = [{"coef": result.x[:d * c].reshape(d, c).astype(np.float32),
                   "intercept": result.x[d * c:].astype(np.float32)}]
        out.append((FrozenHead(classes[k], transforms[k], "softmax", linear),
                    {"C": float(chosen_C)} if C == "auto" else {}))
    return out


def _fold_program(fold: _Fold, rows: np.ndarray, y: np.ndarray, classes: np.ndarray, C, grid, max_iter: int,
                  seed: int, inner_fraction: float, refine: bool) -> Generator:
    """One fold's C path and refit (``tuning.LogisticRegressionAutoC.fit``), yielding (problem, point) to evaluate;
    returns (C, the refit's LBFGSResult)."""
    target = np.searchsorted(classes, y[rows])
    start = None
    if C == "auto":
        fit, val = inner_split(y[rows], inner_fraction, seed)
        inner_classes = np.unique(y[rows][fit])

        def inner(c: float) -> _Problem:
            return _problem(fold, rows[fit], np.searchsorted(inner_classes, y[rows][fit]), len(inner_classes), c,
                            rows[val], target[val], np.searchsorted(classes, inner_classes), len(classes))

        if len(inner_classes) < 2:
            raise ValueError(f"needs at least 2 classes in the training rows, got {len(inner_classes)}")
        scores, solutions, best, worse = {}, {}, np.inf, 0
        point = np.zeros(len(fold.ratio) * len(inner_classes) + len(inner_classes))
        for c in sorted(float(c) for c in grid):
            result = yield from _solve(inner(c), point, LOGREG_PATH_TOL, max_iter)
            point, scores[c], solutions[c] = result.x, result.extra, result.x
            if scores[c] < best:
                best, worse = scores[c], 0
            else:
                worse += 1
                if worse >= LOGREG_PATIENCE:
                    break
        best_c = min(scores, key=scores.get)  # ties: the smaller C
        C = refine_C(scores) if refine else best_c
        if np.array_equal(inner_classes, classes):  # start from the inner fit when it saw every class
            start = solutions[best_c]
    empty = np.zeros(0, np.int64)
    refit = _problem(fold, rows, target, len(classes), float(C), empty, empty, np.arange(len(classes)), len(classes))
    if start is None:
        start = np.zeros(len(fold.ratio) * len(classes) + len(classes))
    result = yield from _solve(refit, start, TOL, max_iter)
    return C, result


def _problem(fold, rows, target, width, C, score_rows, score_target, score_positions, n_score_classes) -> _Problem:
    # Two classes: scikit-learn's one-column model needs twice the penalty on two columns (softmax.fit_softmax).
    penalty = (2.0 if width == 2 else 1.0) / (C * len(rows))
    return _Problem(fold, rows, target, width, penalty, score_rows, score_target, score_positions, n_score_classes)


def _solve(problem: _Problem, start: np.ndarray, tol: float, max_iter: int) -> Generator:
    """``lbfgs`` on ``problem`` from ``start``: yields (problem, point), is sent each point's value."""
    solver = lbfgs(start, tol, GTOL, max_iter)
    point = next(solver)
    while True:
        value = yield problem, point
        try:
            point = solver.send(value)
        except StopIteration as done:
            result: LBFGSResult = done.value
            return result


def _run_together(Z: np.ndarray, programs: list[Generator]) -> list:
    """Advance every program one evaluation at a time, all its pending points evaluated in one pair of products."""
    results: list = [None] * len(programs)
    pending = {k: next(program) for k, program in enumerate(programs)}
    while pending:
        values = _evaluate(Z, list(pending.values()))
        for k, value in zip(list(pending), values):
            try:
                pending[k] = programs[k].send(value)
            except StopIteration as done:
                results[k] = done.value
                del pending[k]
    return results


def _evaluate(Z: np.ndarray, requests: list[tuple[_Problem, np.ndarray]]) -> list[tuple[float, np.ndarray, float]]:
    """Each problem's objective, gradient (flat, [W (d x c) row-major, b (c)], float64) and inner log loss (NaN
    without score rows) at its point; the products in float32, as ``softmax._loss_and_gradient``'s."""
    n, d = Z.shape
    weights, biases, offsets = [], [], [0]
    for problem, point in requests:
        c = problem.width
        W = point[:d * c].reshape(d, c)
        weights.append((W * problem.fold.ratio[:, None]).astype(np.float32))
        biases.append(point[d * c:] - problem.fold.shift @ W)
        offsets.append(offsets[-1] + c)
    logits_all = Z @ np.concatenate(weights, axis=1)
    residuals = np.zeros((n, offsets[-1]), np.float32)
    out = []
    for (problem, point), bias, start, end in zip(requests, biases, offsets, offsets[1:]):
        logits = logits_all[problem.rows, start:end]
        logits += bias.astype(np.float32)
        logits -= logits.max(axis=1, keepdims=True)
        true_logits = logits[np.arange(len(logits)), problem.target].astype(np.float64)  # before exp: it may underflow
        np.exp(logits, out=logits)
        sums = logits.sum(axis=1, dtype=np.float64)
        W = point[:d * problem.width].reshape(d, problem.width)
        loss = float(np.log(sums).sum() - true_logits.sum()) / len(problem.rows)
        loss += 0.5 * problem.penalty * float(np.square(W).sum())
        logits /= sums[:, None].astype(np.float32)
        logits[np.arange(len(logits)), problem.target] -= 1
        logits *= np.float32(1 / len(problem.rows))
        residuals[problem.rows, start:end] = logits
        out.append([loss, logits.sum(axis=0, dtype=np.float64), _score(problem, logits_all[:, start:end], bias)])
    products = Z.T @ residuals
    for entry, (problem, point), start, end in zip(out, requests, offsets, offsets[1:]):
        W = point[:d * problem.width].reshape(d, problem.width)
        grad_b = entry[1]
        grad_w = products[:, start:end] * problem.fold.ratio[:, None] - np.outer(problem.fold.shift, grad_b)
        grad_w += problem.penalty * W
        entry[1] = np.concatenate([grad_w.ravel(), grad_b])
    return [tuple(entry) for entry in out]


def _score(problem: _Problem, logits: np.ndarray, bias: np.ndarray) -> float:
    """The mean log loss on the problem's score rows, a class it never trained on counting as probability ~0
    (``tuning._inner_logloss``)."""
    if not len(problem.score_rows):
        return float("nan")
    scores = logits[problem.score_rows].astype(np.float64) + bias
    scores -= scores.max(axis=1, keepdims=True)
    proba = np.exp(scores)
    proba /= proba.sum(axis=1, keepdims=True)
    full = np.zeros((len(scores), problem.n_score_classes))
    full[:, problem.score_positions] = proba
    return float(row_logloss(problem.score_target, full).mean())
