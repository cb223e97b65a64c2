"""Every fold's logistic regression (classes or tags) on one view, solved together: the C path on each fold's inner
split, then the refit on each fold's training rows, all the folds' solves advanced in lockstep so that one pair of
matrix products over the view's rows evaluates all of them.

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

Each fold runs what ``tuning.LogisticRegressionAutoC`` runs (for tags ``tuning.SigmoidRegressionAutoC``: the same
inner split, grid, walk, tolerances, refine and warm starts; fixed C: the refit only) as a generator of the points
it needs evaluated (``lbfgs``), so its choices are its own: the folds share arithmetic, not decisions. A transform
with a fitted step other than a final ``standard`` (``pca_whiten``) has no such form: ``fits_jointly`` says so and
the folds are fitted one by one.
"""
from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, softmax

from kaggle_tl.heads.frozen import FrozenHead
from kaggle_tl.heads.lbfgs import LBFGSResult, lbfgs
from kaggle_tl.heads.sigmoid import prior_logits
from kaggle_tl.heads.softmax import GTOL, TOL
from kaggle_tl.heads.transforms import NONE_SPECS, apply_frozen_transform, frozen_fixed_then_standard
from kaggle_tl.heads.tuning import LOGREG_PATH_TOL, LOGREG_PATIENCE, inner_split, refine_C, tags_logloss
from kaggle_tl.tasks.metrics import row_logloss

FIXED_STEPS = ("sqrt", "l2")  # transform steps fitted to nothing: applied to the view's rows once


@dataclass
class _Fold:
    """Fold k's features as an affine map of Z: X_k = Z * ratio - shift (float64, one value per column)."""
    ratio: np.ndarray
    shift: np.ndarray


@dataclass
class _Problem:
    """One L2 logistic regression over ``rows`` of Z: ``loss`` "softmax" (``target`` the rows' class indices in
    [0, width)) or "sigmoid" (``target`` their (rows, width) 0/1 tags, one regression each); the mean loss over the
    rows plus ``penalty`` ||W||^2 / 2. ``score``, given the float64 scores of ``score_rows`` (the inner validation
    rows), is the inner log loss sent back with each value."""
    fold: _Fold
    loss: str
    rows: np.ndarray
    target: np.ndarray
    width: int
    penalty: float
    score_rows: np.ndarray
    score: Callable[[np.ndarray], float] | None


def _split_spec(transform: str) -> tuple[list[str], bool]:
    """A transform spec's steps before a final ``standard``, and whether it ends with one."""
    text = transform.strip().lower()
    steps = [] if text in NONE_SPECS else [part.strip() for part in text.split(",")]
    standard = bool(steps) and steps[-1] == "standard"
    return (steps[:-1] if standard else steps), standard


def fits_jointly(transform: str) -> bool:
    """Whether folds with this transform spec can be solved together: fixed steps, then at most one ``standard``."""
    return all(step in FIXED_STEPS for step in _split_spec(transform)[0])


def fit_logreg_folds(X: np.ndarray, y: np.ndarray, train_rows: list[np.ndarray], C: list[float | str], grid,
                     transform: str, max_iter: int, seed: int, tags: bool = False, inner_fraction: float = 0.2,
                     refine: bool = True) -> list[tuple[FrozenHead, dict[str, float]]]:
    """For each k: the logreg head's fit on the rows ``train_rows[k]`` of X at ``C[k]`` (a number or "auto"), frozen,
    and what it chose ({"C": ...} for "auto"), as ``LogRegHead(C[k], max_iter, transform, seed, response).fit``
    gives it, all solved together; ``tags``: y is the (N, L) 0/1 tag matrix (response "tags")."""
    X = np.asarray(X, dtype=np.float32)
    fixed, standard = _split_spec(transform)
    Z = apply_frozen_transform(frozen_fixed_then_standard(fixed), X)
    Z = Z.copy() if Z is X else Z  # in place below: never the caller's features
    mean = Z.mean(axis=0, dtype=np.float64)
    scale = Z.std(axis=0, dtype=np.float64)
    scale[scale == 0] = 1
    Z -= mean.astype(np.float32)
    Z /= scale.astype(np.float32)
    programs, classes, transforms = [], [], []
    for k, rows in enumerate(train_rows):
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
        fold_classes = np.arange(y.shape[1]) if tags else np.unique(y[rows])
        if len(fold_classes) < 2 and not tags:
            raise ValueError(f"needs at least 2 classes in the training rows, got {len(fold_classes)}")
        classes.append(fold_classes)
        program = _tags_program if tags else _classes_program
        programs.append(program(fold, rows, y, C[k], grid, max_iter, seed, inner_fraction, refine))
    out = []
    for k, (chosen_C, params) in enumerate(_run_together(Z, programs)):
        linear = [{"coef": params[:-1].astype(np.float32), "intercept": params[-1].astype(np.float32)}]
        out.append((FrozenHead(classes[k], transforms[k], "sigmoid" if tags else "softmax", linear),
                    {"C": float(chosen_C)} if C[k] == "auto" else {}))
    return out


def _walk(grid, solve_at: Callable[[float], Generator]) -> Generator:
    """``tuning._walk_grid`` for generators: each C's (score, solution) from ``solve_at(C)``, from the smallest C up,
    ending after ``LOGREG_PATIENCE`` worse ones in a row; returns (scores, solutions)."""
    scores, solutions, best, worse = {}, {}, np.inf, 0
    for c in sorted(float(c) for c in grid):
        scores[c], solutions[c] = yield from solve_at(c)
        if scores[c] < best:
            best, worse = scores[c], 0
        else:
            worse += 1
            if worse >= LOGREG_PATIENCE:
                break
    return scores, solutions


def _classes_program(fold: _Fold, rows: np.ndarray, y: np.ndarray, C, grid, max_iter: int, seed: int,
                     inner_fraction: float, refine: bool) -> Generator:
    """One fold's C path and refit (``tuning.LogisticRegressionAutoC.fit``), yielding (problem, point) to evaluate;
    returns (C, the refit's (d + 1, classes) parameters [W; b])."""
    d, classes = len(fold.ratio), np.unique(y[rows])
    target = np.searchsorted(classes, y[rows])
    start = np.zeros((d + 1) * len(classes))
    if C == "auto":
        fit, val = inner_split(y[rows], inner_fraction, seed)
        inner_classes = np.unique(y[rows][fit])
        if len(inner_classes) < 2:
            raise ValueError(f"needs at least 2 classes in the training rows, got {len(inner_classes)}")
        positions = np.searchsorted(classes, inner_classes)

        def score(scores: np.ndarray) -> float:  # a class the inner fit never saw: probability ~0 (_inner_logloss)
            full = np.zeros((len(scores), len(classes)))
            full[:, positions] = softmax(scores, axis=1)
            return float(row_logloss(target[val], full).mean())

        def solve_at(c: float) -> Generator:
            problem = _problem(fold, "softmax", rows[fit], np.searchsorted(inner_classes, y[rows][fit]),
                               len(inner_classes), c, rows[val], score)
            result = yield from _solve(problem, point[0], LOGREG_PATH_TOL, max_iter)
            point[0] = result.x  # the next C starts here
            return result.extra, result.x

        point = [np.zeros((d + 1) * len(inner_classes))]
        scores, solutions = yield from _walk(grid, solve_at)
        best_c = min(scores, key=scores.get)  # ties: the smaller C
        C = refine_C(scores) if refine else best_c
        if np.array_equal(inner_classes, classes):  # start from the inner fit when it saw every class
            start = solutions[best_c]
    refit = _problem(fold, "softmax", rows, target, len(classes), float(C), _NO_ROWS, None)
    result = yield from _solve(refit, start, TOL, max_iter)
    return C, result.x.reshape(d + 1, len(classes))


def _tags_program(fold: _Fold, rows: np.ndarray, Y: np.ndarray, C, grid, max_iter: int, seed: int,
                  inner_fraction: float, refine: bool) -> Generator:
    """One fold's C path and refit for tags (``tuning.SigmoidRegressionAutoC.fit``): a tag of one value only in the
    rows fitted is not solved, its weights 0 and its intercept their smoothed log-odds (``sigmoid.fit_sigmoid``);
    returns (C, the refit's (d + 1, tags) parameters)."""
    d = len(fold.ratio)
    start = None  # (d + 1, tags) parameters the refit starts from
    if C == "auto":
        fit, val = inner_split(Y[rows], inner_fraction, seed, stratify=False)
        inner = _tag_params(Y[rows][fit], d)
        active = _active_tags(Y[rows][fit])

        def score(scores: np.ndarray) -> float:
            proba = np.tile(expit(inner[-1]), (len(scores), 1))
            proba[:, active] = expit(scores)
            return tags_logloss(Y[rows][val], proba)

        def solve_at(c: float) -> Generator:
            if not len(active):
                return score(np.zeros((len(val), 0))), inner
            problem = _problem(fold, "sigmoid", rows[fit], Y[rows][fit][:, active].astype(np.float32), len(active),
                               c, rows[val], score)
            result = yield from _solve(problem, point[0], LOGREG_PATH_TOL, max_iter)
            point[0] = result.x
            solution = inner.copy()
            solution[:, active] = result.x.reshape(d + 1, len(active))
            return result.extra, solution

        point = [inner[:, active].ravel()]
        scores, solutions = yield from _walk(grid, solve_at)
        best_c = min(scores, key=scores.get)
        C = refine_C(scores) if refine else best_c
        start = solutions[best_c]
    params, active = _tag_params(Y[rows], d), _active_tags(Y[rows])
    if start is not None:
        params[:, active] = start[:, active]
    if len(active):
        refit = _problem(fold, "sigmoid", rows, Y[rows][:, active].astype(np.float32), len(active), float(C),
                         _NO_ROWS, None)
        result = yield from _solve(refit, params[:, active].ravel(), TOL, max_iter)
        params[:, active] = result.x.reshape(d + 1, len(active))
    return C, params


_NO_ROWS = np.zeros(0, np.int64)


def _active_tags(Y: np.ndarray) -> np.ndarray:
    """The tags with both values among the rows of Y: the only ones with a finite optimum."""
    positives = Y.sum(axis=0)
    return np.flatnonzero((positives > 0) & (positives < len(Y)))


def _tag_params(Y: np.ndarray, d: int) -> np.ndarray:
    """(d + 1, tags) zero weights under each tag's smoothed log-odds in the rows of Y."""
    params = np.zeros((d + 1, Y.shape[1]))
    params[d] = prior_logits(Y)
    return params


def _problem(fold, loss, rows, target, width, C, score_rows, score) -> _Problem:
    # Two classes: scikit-learn's one-column model needs twice the penalty on two columns (softmax.fit_softmax).
    penalty = (2.0 if loss == "softmax" and width == 2 else 1.0) / (C * len(rows))
    return _Problem(fold, loss, rows, target, width, penalty, score_rows, score)


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
    pending = {}
    for k, program in enumerate(programs):
        try:
            pending[k] = next(program)
        except StopIteration as done:  # nothing to solve (tags of one value only)
            results[k] = done.value
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
    """Each problem's objective, gradient (flat, [W (d x width) row-major, b], float64) and inner log loss (NaN
    without score rows) at its point; the products in float32, as ``softmax._loss_and_gradient``'s."""
    n, d = Z.shape
    weights, biases, offsets = [], [], [0]
    for problem, point in requests:
        W = point[:d * problem.width].reshape(d, problem.width)
        weights.append((W * problem.fold.ratio[:, None]).astype(np.float32))
        biases.append(point[d * problem.width:] - problem.fold.shift @ W)
        offsets.append(offsets[-1] + problem.width)
    logits_all = Z @ np.concatenate(weights, axis=1)
    residuals = np.zeros((n, offsets[-1]), np.float32)
    out = []
    for (problem, point), bias, start, end in zip(requests, biases, offsets, offsets[1:]):
        logits = logits_all[problem.rows, start:end]
        logits += bias.astype(np.float32)
        total = (_softmax_residual if problem.loss == "softmax" else _sigmoid_residual)(logits, problem.target)
        W = point[:d * problem.width].reshape(d, problem.width)
        loss = total / len(problem.rows) + 0.5 * problem.penalty * float(np.square(W).sum())
        logits *= np.float32(1 / len(problem.rows))
        residuals[problem.rows, start:end] = logits
        score = (problem.score(logits_all[problem.score_rows, start:end].astype(np.float64) + bias)
                 if problem.score else float("nan"))
        out.append([loss, logits.sum(axis=0, dtype=np.float64), score])
    products = Z.T @ residuals
    for entry, (problem, point), start, end in zip(out, requests, offsets, offsets[1:]):
        W = point[:d * problem.width].reshape(d, problem.width)
        grad_b = entry[1]
        grad_w = products[:, start:end] * problem.fold.ratio[:, None] - np.outer(problem.fold.shift, grad_b)
        grad_w += problem.penalty * W
        entry[1] = np.concatenate([grad_w.ravel(), grad_b])
    return [tuple(entry) for entry in out]


def _softmax_residual(logits: np.ndarray, target: np.ndarray) -> float:
    """The summed cross-entropy of the rows' logits against class indices; ``logits`` becomes softmax - one-hot."""
    logits -= logits.max(axis=1, keepdims=True)
    true_logits = logits[np.arange(len(logits)), target].astype(np.float64)  # before exp: it may underflow
    np.exp(logits, out=logits)
    sums = logits.sum(axis=1, dtype=np.float64)
    logits /= sums[:, None].astype(np.float32)
    logits[np.arange(len(logits)), target] -= 1
    return float(np.log(sums).sum() - true_logits.sum())


def _sigmoid_residual(scores: np.ndarray, Y: np.ndarray) -> float:
    """The summed binary cross-entropy log(1 + e^z) - y z of every tag cell; ``scores`` becomes expit(z) - y."""
    total = float(np.logaddexp(0, scores).sum(dtype=np.float64) - (Y * scores).sum(dtype=np.float64))
    scores[:] = expit(scores)
    scores -= Y
    return total
