"""Folds; one head fitted per fold x view (frozen.FoldModels) -> OOF and test predictions (runs.Predictions)."""
from __future__ import annotations

import logging

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from kaggle_tl.heads.frozen import FoldModels
from kaggle_tl.runs.record import Predictions

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


def _fit_fold(head, X: np.ndarray, y: np.ndarray, folds: np.ndarray, k: int, blas_threads: int):
    """A clone of ``head`` fitted on the rows outside fold k, frozen where it can be; and what the fit chose.

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
        frozen = model.freeze() if hasattr(model, "freeze") else None
    return frozen or model, model.fitted_params() if hasattr(model, "fitted_params") else {}


def fit_fold_models(head, train_by_view: dict[str, np.ndarray], y: np.ndarray, folds: np.ndarray, n_jobs: int = 1,
                    blas_threads: int = 1, desc: str = "head") -> FoldModels:
    """For each view v and fold k: a clone of ``head`` fitted on view-v features of the rows outside fold k.

    The V x K fits run through joblib (``n_jobs`` at once; the active joblib backend, so a Dask
    cluster when one is configured), each with ``blas_threads`` BLAS threads. Heads are
    deterministic given their random_state, so serial and parallel fits give identical models.
    """
    views = list(train_by_view)
    n_folds = int(folds.max()) + 1
    tasks = [(v, k) for v in range(len(views)) for k in range(n_folds)]
    jobs = (delayed(_fit_fold)(head, train_by_view[views[v]], y, folds, k, blas_threads) for v, k in tasks)
    models: list[list] = [[None] * n_folds for _ in views]
    fitted: dict[str, np.ndarray] = {}  # what the fits chose, (views, folds) each
    results = Parallel(n_jobs=n_jobs, return_as="generator")(jobs)
    with tqdm(total=len(tasks), desc=desc, unit="fit", disable=None, leave=False) as bar:
        for (v, k), (model, chosen) in zip(tasks, results):
            models[v][k] = model
            for name, value in chosen.items():
                fitted.setdefault(name, np.full((len(views), n_folds), np.nan))[v, k] = value
            bar.set_postfix_str(f"view {views[v]}, fold {k}")
            bar.update()
    return FoldModels(views, models, fitted)


def predict_folds(models: FoldModels, train_by_view: dict[str, np.ndarray], test_by_view: dict[str, np.ndarray],
                  y: np.ndarray, folds: np.ndarray, n_classes: int) -> Predictions:
    """Each fold model's predictions of the rows it held out (OOF) and of every test row, per view.

    The same whether the models were fitted now or read from the fits cache: a re-run on new test
    images predicts exactly as a run that fitted them.
    """
    n_folds = int(folds.max()) + 1
    n_test = len(next(iter(test_by_view.values())))
    oof = np.zeros((len(models.views), len(y), n_classes))
    test = np.zeros((len(models.views), n_folds, n_test, n_classes))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a diverged head: named by the caller
        for v, view in enumerate(models.views):
            for k in range(n_folds):
                model = models.models[v][k]
                oof[v, folds == k] = _full_columns(model.predict_proba(train_by_view[view][folds == k]),
                                                   model.classes_, n_classes)
                test[v, k] = _full_columns(model.predict_proba(test_by_view[view]), model.classes_, n_classes)
    return Predictions(models.views, oof, test, folds, y, models.fitted)


def cross_validate(head, train_by_view: dict[str, np.ndarray], test_by_view: dict[str, np.ndarray],
                   y: np.ndarray, folds: np.ndarray, n_classes: int, n_jobs: int = 1, blas_threads: int = 1,
                   desc: str = "head") -> Predictions:
    """Fit ``head`` per view x fold (``fit_fold_models``) and predict the held-out and test rows (``predict_folds``)."""
    models = fit_fold_models(head, train_by_view, y, folds, n_jobs, blas_threads, desc)
    return predict_folds(models, train_by_view, test_by_view, y, folds, n_classes)
