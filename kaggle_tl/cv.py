"""Folds; one head fitted per fold x view (frozen.FoldModels) -> OOF and test predictions (runs.Predictions).

The head caches' policy lives here too: what a head's fold models and predictions depend on
(``fits_key``, ``predictions_key``) and where ``head_predictions`` takes them from.
"""
from __future__ import annotations

import logging

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from kaggle_tl import __version__
from kaggle_tl.backbones import BackboneRef
from kaggle_tl.cache.store import Cache, array_digest, cache_key
from kaggle_tl.config import RunConfig
from kaggle_tl.data.competition import Competition
from kaggle_tl.errors import KaggleTLError
from kaggle_tl.features import feature_key
from kaggle_tl.heads.base import HEAD_VERSION
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


def fits_key(config: RunConfig, head_name: str, refs: list[BackboneRef], image_keys: dict[str, str],
             competition: Competition, folds: np.ndarray) -> str:
    """What a head's fitted fold models depend on: the training features (every stage of every backbone and
    view), rows, labels, classes, folds, head, its parameters, seed, version and the heads' implementation
    (HEAD_VERSION); never the test images."""
    return cache_key(features=[feature_key(image_keys["train"], ref, view, output)
                               for ref in refs for view in config.views for output, _ in ref.outputs],
                     train_ids=array_digest(np.array(competition.train_ids, dtype=str)),
                     y=array_digest(competition.y), classes=competition.classes, folds=array_digest(folds),
                     head=head_name, params=config.head_params[head_name], seed=config.seed, version=__version__,
                     heads=HEAD_VERSION)


def predictions_key(fits: str, config: RunConfig, refs: list[BackboneRef], image_keys: dict[str, str]) -> str:
    """What a head's predictions depend on: its fold models (``fits_key``) and the test features they predict."""
    return cache_key(fits=fits, test_features=[feature_key(image_keys["test"], ref, view, output)
                                               for ref in refs for view in config.views for output, _ in ref.outputs])


def head_predictions(head, competition: Competition, train_by_view: dict, test_by_view: dict, folds: np.ndarray,
                     keys: dict[str, str], cache: Cache, n_jobs: int = 1) -> tuple[Predictions, dict[str, str]]:
    """A head's fold x view predictions, and where each cache entry of ``keys`` ({"fits": key, "predictions":
    key}) came from ("computed", "cache" or a read-only layer).

    In order: the predictions themselves from a cache; else the fold models from the fits cache,
    predicting the test rows (a re-run on new test images: nothing refitted); else the head fitted
    ``n_jobs`` fits at a time, its models and predictions then cached (unless they diverged; a head
    that cannot be frozen, an RBF SVM, caches its predictions only).
    """
    n_folds, n_views = int(folds.max()) + 1, len(train_by_view)
    n_test, n_features = len(next(iter(test_by_view.values()))), next(iter(train_by_view.values())).shape[1]
    for path in cache.find_files("predictions", keys["predictions"]):
        try:
            preds = Predictions.load(path, Predictions.max_bytes(n_views, len(competition.y), n_folds, n_test,
                                                                 competition.n_classes))
        except KaggleTLError as exc:  # a damaged cache file is recomputed, never served
            log.warning("%s; refitting", exc)
            continue
        if preds.oof.shape[1:] == (len(competition.y), competition.n_classes):
            # The fits entry too, when there is one: `cache export` then hands a hidden re-run the models.
            fits = cache.find_files("fits", keys["fits"])
            return preds, {"predictions": cache.source(path), **({"fits": cache.source(fits[0])} if fits else {})}
        log.warning("%s: predictions of another shape; refitting", path)
    for path in cache.find_files("fits", keys["fits"]):
        try:
            models = FoldModels.load(path, FoldModels.max_bytes(n_views, n_folds, n_features, competition.n_classes))
        except KaggleTLError as exc:
            log.warning("%s; refitting", exc)
            continue
        if models.views == list(train_by_view) and all(len(row) == n_folds for row in models.models):
            preds = predict_folds(models, train_by_view, test_by_view, competition.y, folds, competition.n_classes)
            cache.write_file("predictions", keys["predictions"], preds.to_bytes())
            return preds, {"fits": cache.source(path), "predictions": "computed"}
        log.warning("%s: fold models of other views or folds; refitting", path)
    models = fit_fold_models(head, train_by_view, competition.y, folds, n_jobs=n_jobs, blas_threads=1, desc=head.name)
    preds = predict_folds(models, train_by_view, test_by_view, competition.y, folds, competition.n_classes)
    sources = {"predictions": "computed"}
    if preds.is_finite():
        cache.write_file("predictions", keys["predictions"], preds.to_bytes())
        if models.frozen:
            cache.write_file("fits", keys["fits"], models.to_bytes())
            sources["fits"] = "computed"
    return preds, sources
