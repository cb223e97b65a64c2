"""Ridge regression in closed form, every alpha of a grid from one decomposition: the ridge head's solver.

scikit-learn's ``Ridge(alpha, fit_intercept=True)``: minimise ||y - X w - b||^2 + alpha ||w||^2,
solved on the centred X and y (so the intercept is unpenalised). With the thin SVD of the centred
X = U S V^T, the solution at any alpha is

    w(alpha) = V diag(1 / (s^2 + alpha)) V^T X^T y  =  X^T U diag(1 / (s^2 + alpha)) U^T y

so one decomposition gives the whole path, a grid of alphas costing a matrix product each. The
factors come from the eigendecomposition of the smaller Gram matrix, never from the SVD: with more
rows than columns X^T X (d x d, eigenvectors V), with fewer X X^T (n x n, eigenvectors U; the
"dual"). A fold's inner split has fewer rows than a 3-stage backbone has columns (2,530 x 3,104 on
cifar10-small): there the SVD took 9.0 s on one thread, the whole path by the dual's float32
eigendecomposition 1.8 s.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg


def ridge_path(X: np.ndarray, y: np.ndarray, alphas, decomposition=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """(coef (d, A), intercept (A,)): the ridge fit of y (n,) on X (n, d) at each of the A ``alphas`` (> 0).

    ``decomposition=np.float32`` forms the Gram matrix and its eigendecomposition in float32 (divide
    and conquer): 1.8x faster at 3,162 x 3,104 on one thread (5.2 s against 9.5 s), the rest in
    float64. Its eigenvalues are then exact to about 1e-7 of the largest, so the fits are exact to
    that relative to ``alphas`` (``max_float32_error`` says how far; ``tuning.choose_ridge_alpha`` checks).
    """
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    alphas = np.asarray(alphas, dtype=np.float64)
    x_mean, y_mean = X.mean(axis=0), y.mean()
    centred = X - x_mean
    low = centred.astype(decomposition, copy=False)
    primal = len(X) >= X.shape[1]
    squares, vectors = scipy.linalg.eigh(low.T @ low if primal else low @ low.T, driver="evd")
    squares, vectors = np.clip(squares.astype(np.float64), 0, None), vectors.astype(np.float64)
    shrink = 1 / (squares[:, None] + alphas[None, :])
    if primal:  # V diag V^T X^T y
        coef = vectors @ ((vectors.T @ (centred.T @ (y - y_mean)))[:, None] * shrink)
    else:  # X^T U diag U^T y
        coef = centred.T @ (vectors @ ((vectors.T @ (y - y_mean))[:, None] * shrink))
    return coef, y_mean - x_mean @ coef


def max_float32_error(X: np.ndarray) -> float:
    """The scale of the float32 eigenvalues' absolute error for ``ridge_path`` on X: one float32 ulp of the trace of
    the centred X^T X. LAPACK's bound is a small multiple of eps times the largest eigenvalue, which the trace
    exceeds by the effective rank (hundreds for CNN features), so this errs on the safe side in practice."""
    X = np.asarray(X, dtype=np.float64)
    return float(np.finfo(np.float32).eps) * float(np.sum(np.square(X - X.mean(axis=0))))


def ridge_fit(X: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """(coef (d,), intercept): the ridge fit at one ``alpha``, as ``ridge_path`` gives it.

    One alpha needs no decomposition: a Cholesky solve of (X^T X + alpha I) w = X^T y on the
    centred data takes 1.1 s where the eigendecomposition took 24.6 s (4,000 x 3,104, 2 busy cores);
    the two agree to 1.3e-13 relative. With fewer rows than columns the path's (dual) decomposition is as cheap.
    """
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(X) < X.shape[1]:
        coef, intercept = ridge_path(X, y, [alpha])
        return coef[:, 0], float(intercept[0])
    x_mean, y_mean = X.mean(axis=0), y.mean()
    centred = X - x_mean
    gram = centred.T @ centred
    gram[np.diag_indices_from(gram)] += alpha
    coef = scipy.linalg.solve(gram, centred.T @ (y - y_mean), assume_a="pos")
    return coef, float(y_mean - x_mean @ coef)

