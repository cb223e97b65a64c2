"""Decision rules tuned on a fold's inner rows: tag thresholds, QWK cut points, the catch-all's score.

Each ``fit_*`` takes the true targets and the predictions of rows that the fold's scored rows
never touched (the inner split of its training rows) and returns the rule's parameters as a
float vector; each ``apply_*`` turns predictions into decided cells with them. Every fit is a
small grid search on the metric itself, so the OOF score is the score of the rule as tuned.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

THRESHOLDS = np.round(np.arange(0.02, 0.99, 0.02), 2)  # tag thresholds tried
CATCH_ALL_SCORES = np.round(np.arange(0.0, 1.0001, 0.025), 3)  # scores the catch-all class may be given


def apply_threshold(tag_proba: np.ndarray, params: np.ndarray) -> np.ndarray:
    """(N, L) 0/1: tags at or above the threshold; a row with none gets its most probable tag."""
    tag_proba = np.asarray(tag_proba, dtype=np.float64)
    tags = tag_proba >= params[0]
    empty = ~tags.any(axis=1)
    tags[np.flatnonzero(empty), tag_proba[empty].argmax(axis=1)] = True
    return tags.astype(np.uint8)


def fit_threshold(y: np.ndarray, tag_proba: np.ndarray, metric: Callable) -> np.ndarray:
    """The one threshold for every tag that scores best (ties: the middle of the tied range)."""
    scores = np.array([metric(y, apply_threshold(tag_proba, np.array([t]))) for t in THRESHOLDS])
    return np.array([_best(THRESHOLDS, scores)])


def _best(grid: np.ndarray, scores: np.ndarray) -> float:
    scores = np.where(np.isfinite(scores), scores, -np.inf)
    tied = np.flatnonzero(scores >= scores.max() - 1e-12)
    return float(grid[tied[len(tied) // 2]])


def apply_cuts(signal: np.ndarray, params: np.ndarray) -> np.ndarray:
    """(N,) grade index: how many cut points lie below each row's continuous grade."""
    return np.searchsorted(np.sort(params), np.asarray(signal, dtype=np.float64), side="right")


def default_cuts(grades: np.ndarray) -> np.ndarray:
    """Half-way between consecutive grades: rounding to the nearest grade."""
    grades = np.asarray(grades, dtype=np.float64)
    return (grades[1:] + grades[:-1]) / 2


def fit_cuts(y: np.ndarray, signal: np.ndarray, grades: np.ndarray, metric: Callable,
             passes: int = 3, steps: int = 21) -> np.ndarray:
    """Cut points between grades that maximise ``metric`` (QWK), one at a time, a few passes.

    Each cut moves within the gap between its neighbours, starting from rounding; scikit-learn
    has no such search, and the Kaggle kernels that do it (an "optimised rounder") walk the same way.
    """
    cuts = default_cuts(grades)
    for _ in range(passes):
        for j in range(len(cuts)):
            low = cuts[j - 1] if j else float(grades[0]) - 0.5
            high = cuts[j + 1] if j + 1 < len(cuts) else float(grades[-1]) + 0.5
            grid = np.linspace(low, high, steps)[1:-1]
            trial = cuts.copy()
            scores = []
            for value in grid:
                trial[j] = value
                scores.append(metric(y, apply_cuts(signal, trial)))
            cuts[j] = _best(grid, np.array(scores))
    return cuts


def apply_catch_all(proba: np.ndarray, params: np.ndarray, catch_all: int, k: int) -> np.ndarray:
    """(N, k) class indices best first, the catch-all class scored max(its probability, params[0])."""
    proba = np.array(proba, dtype=np.float64)
    if catch_all >= 0:
        proba[:, catch_all] = np.maximum(proba[:, catch_all], params[0])
    return top_k(proba, k)


def top_k(proba: np.ndarray, k: int) -> np.ndarray:
    k = min(k, proba.shape[1])
    order = np.argsort(-proba, axis=1, kind="stable")
    return order[:, :k]


def fit_catch_all(y: np.ndarray, proba: np.ndarray, catch_all: int, k: int, metric: Callable) -> np.ndarray:
    """The score given to the catch-all class (e.g. new_whale) that maximises MAP@k."""
    scores = np.array([metric(y, apply_catch_all(proba, np.array([s]), catch_all, k)) for s in CATCH_ALL_SCORES])
    return np.array([_best(CATCH_ALL_SCORES, scores)])
