"""Folds, and one head fitted per fold x view -> OOF and test predictions (runs.Predictions)."""
from __future__ import annotations

import logging

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from kaggle_tl.runs import Predictions

log = logging.getLogger(__name__)


def make_folds(y: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """(N,) fold index of each row: StratifiedKFold(n_folds, shuffle=True, random_state=seed)."""
    folds = np.empty(len(y), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, val) in enumerate(splitter.split(np.zeros(len(y)), y)):
        folds[val] = k
    return folds


def _full_columns(proba: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """Place a head's columns (its classes_) into all n_classes columns (absent classes get 0)."""
    out = np.zeros((len(proba), n_classes))
    out[:, np.asarray(classes, dtype=np.int64)] = proba
    return out


def _fit_fold(head, X: np.ndarray, X_test: np.ndarray, y: np.ndarray, folds: np.ndarray, k: int,
              n_classes: int, blas_threads: int) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Fit a clone of ``head`` on the rows outside fold k; predict fold k's rows and the test rows.

    The BLAS/OpenMP pools are capped for the fit: two fits each using every core's BLAS
    threads run many times slower than one thread each (oversubscription, BENCHMARKS.md).
    """
    fit_rows, val_rows = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
    # A diverging head (an absurd regularisation) overflows: the caller names it on one line
    # instead of numpy's warnings from deep inside the fit.
    with threadpool_limits(limits=blas_threads), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        model = clone(head)
        # Only a head told to stop early on the held-out fold sees its rows (optimistic, recorded as such).
        extra = ({"validation_data": (X[val_rows], y[val_rows])}
                 if getattr(model, "uses_fold_for_early_stopping", False) else {})
        model.fit(X[fit_rows], y[fit_rows], **extra)
        oof = _full_columns(model.predict_proba(X[val_rows]), model.classes_, n_classes)
        test = _full_columns(model.predict_proba(X_test), model.classes_, n_classes)
    return oof, test, model.fitted_params() if hasattr(model, "fitted_params") else {}


def cross_validate(head, train_by_view: dict[str, np.ndarray], test_by_view: dict[str, np.ndarray],
                   y: np.ndarray, folds: np.ndarray, n_classes: int, n_jobs: int = 1, blas_threads: int = 1,
                   desc: str = "head") -> Predictions:
    """For each view v and fold k: fit a clone of ``head`` on view-v features of the rows outside
    fold k; predict fold k's rows (OOF) and the view-v test features.

    The V x K fits run through joblib (``n_jobs`` at once; the active joblib backend, so a Dask
    cluster when one is configured), each with ``blas_threads`` BLAS threads. Heads are
    deterministic given their random_state, so serial and parallel fits give identical predictions.
    """
    views = list(train_by_view)
    n_folds = int(folds.max()) + 1
    n_test = len(next(iter(test_by_view.values())))
    tasks = [(v, k) for v in range(len(views)) for k in range(n_folds)]
    jobs = (delayed(_fit_fold)(head, train_by_view[views[v]], test_by_view[views[v]], y, folds, k, n_classes,
                               blas_threads) for v, k in tasks)
    oof = np.zeros((len(views), len(y), n_classes))
    test = np.zeros((len(views), n_folds, n_test, n_classes))
    fitted: dict[str, np.ndarray] = {}  # what the fits chose, (views, folds) each
    results = Parallel(n_jobs=n_jobs, return_as="generator")(jobs)
    with tqdm(total=len(tasks), desc=desc, unit="fit", disable=None, leave=False) as bar:
        for (v, k), (oof_rows, test_rows, chosen) in zip(tasks, results):
            oof[v, folds == k] = oof_rows
            test[v, k] = test_rows
            for name, value in chosen.items():
                fitted.setdefault(name, np.full((len(views), n_folds), np.nan))[v, k] = value
            bar.set_postfix_str(f"view {views[v]}, fold {k}")
            bar.update()
    return Predictions(views, oof, test, folds, y, fitted)
