"""One head fitted per fold x view (frozen.FoldModels) -> OOF and test predictions (runs.Predictions), and the
task's decision rule tuned per fold.

The head caches' policy lives here too: what a head's fold models and predictions depend on
(``fits_key``, ``predictions_key``) and where ``head_predictions`` takes them from.
"""
from __future__ import annotations

import logging

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from kaggle_tl import __version__
from kaggle_tl.backbones import BackboneRef
from kaggle_tl.cache.store import Cache, array_digest, cache_key
from kaggle_tl.config import RunConfig
from kaggle_tl.data.competition import Competition
from kaggle_tl.data.tabular import SideFeatures
from kaggle_tl.errors import KaggleTLError
from kaggle_tl.features import feature_key
from kaggle_tl.heads.base import HEAD_VERSION
from kaggle_tl.heads.frozen import FoldModels, FrozenHead
from kaggle_tl.runs.record import Predictions
from kaggle_tl.tasks.task import Task

log = logging.getLogger(__name__)


INNER_FOLDS = 5  # a tuned decision rule is fitted on 1/INNER_FOLDS of each fold's training rows


def _full_columns(proba: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """Place a head's columns (its classes_) into all n_classes columns (absent classes get 0)."""
    out = np.zeros((len(proba), n_classes))
    out[:, np.asarray(classes, dtype=np.int64)] = proba
    return out


def _predict(model, X: np.ndarray, response: str, width: int) -> np.ndarray:
    """(n, width) predictions of a fitted (or frozen) head: class probabilities placed in every class's column."""
    out = model.predict_response(X)
    return _full_columns(out, model.classes_, width) if response == "proba" else np.asarray(out, dtype=np.float64)


def _fit_rows(head, X: np.ndarray, y: np.ndarray, fit_rows: np.ndarray, val_rows: np.ndarray, blas_threads: int):
    """A clone of ``head`` fitted on ``fit_rows``, frozen where it can be; and what the fit chose.

    The BLAS/OpenMP pools are capped for the fit: two fits each using every core's BLAS
    threads run many times slower than one thread each (oversubscription, BENCHMARKS.md).
    """
    # A diverging head (an absurd regularisation) overflows: the caller names it on one line
    # instead of numpy's warnings from deep inside the fit.
    with threadpool_limits(limits=blas_threads), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        model = clone(head)
        # Only a head told to stop early on the held-out rows sees them (optimistic, recorded as such).
        extra = ({"validation_data": (X[val_rows], y[val_rows])}
                 if getattr(model, "uses_fold_for_early_stopping", False) else {})
        model.fit(X[fit_rows], y[fit_rows], **extra)
        frozen = model.freeze() if hasattr(model, "freeze") else None
    return frozen or model, model.fitted_params() if hasattr(model, "fitted_params") else {}


def _fit_fold(head, X: np.ndarray, y: np.ndarray, folds: np.ndarray, k: int, blas_threads: int):
    """``head`` fitted on the rows outside fold k."""
    return _fit_rows(head, X, y, np.flatnonzero(folds != k), np.flatnonzero(folds == k), blas_threads)


def _fit_view(head, X: np.ndarray, y: np.ndarray, folds: np.ndarray, blas_threads: int) -> list:
    """``head.fit_folds``: every fold of one view at once, under ``_fit_rows``'s thread cap and float errors."""
    with threadpool_limits(limits=blas_threads), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return clone(head).fit_folds(X, y, [np.flatnonzero(folds != k) for k in range(int(folds.max()) + 1)])


def fit_fold_models(head, train_by_view: dict[str, np.ndarray], y: np.ndarray, folds: np.ndarray, n_jobs: int = 1,
                    blas_threads: int = 1, desc: str = "head") -> FoldModels:
    """For each view v and fold k: a clone of ``head`` fitted on view-v features of the rows outside fold k.

    The V x K fits run through joblib (``n_jobs`` at once; the active joblib backend, so a Dask
    cluster when one is configured), each with ``blas_threads`` BLAS threads; a head that
    ``fits_folds_jointly`` fits a view's K folds in one job. Heads are deterministic given their
    random_state, so serial and parallel fits give identical models.
    """
    views = list(train_by_view)
    n_folds = int(folds.max()) + 1
    if head.fits_folds_jointly():
        tasks = [(v, None) for v in range(len(views))]
        jobs = (delayed(_fit_view)(head, train_by_view[views[v]], y, folds, blas_threads) for v, _ in tasks)
    else:
        tasks = [(v, k) for v in range(len(views)) for k in range(n_folds)]
        jobs = (delayed(_fit_fold)(head, train_by_view[views[v]], y, folds, k, blas_threads) for v, k in tasks)
    models: list[list] = [[None] * n_folds for _ in views]
    fitted: dict[str, np.ndarray] = {}  # what the fits chose, (views, folds) each
    results = Parallel(n_jobs=n_jobs, return_as="generator")(jobs)
    with tqdm(total=len(views) * n_folds, desc=desc, unit="fit", disable=None, leave=False) as bar:
        for (v, k), result in zip(tasks, results):
            for k, (model, chosen) in (enumerate(result) if k is None else [(k, result)]):
                models[v][k] = model
                for name, value in chosen.items():
                    fitted.setdefault(name, np.full((len(views), n_folds), np.nan))[v, k] = value
                bar.set_postfix_str(f"view {views[v]}, fold {k}")
                bar.update()
    return FoldModels(views, models, fitted)


def predict_folds(models: FoldModels, train_by_view: dict[str, np.ndarray], test_by_view: dict[str, np.ndarray],
                  y: np.ndarray, folds: np.ndarray, response: str, width: int) -> Predictions:
    """Each fold model's predictions of the rows it held out (OOF) and of every test row, per view.

    The same whether the models were fitted now or read from the fits cache: a re-run on new test
    images predicts exactly as a run that fitted them.
    """
    n_folds = int(folds.max()) + 1
    n_test = len(next(iter(test_by_view.values())))
    oof = np.zeros((len(models.views), len(y), width))
    test = np.zeros((len(models.views), n_folds, n_test, width))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a diverged head: named by the caller
        for v, view in enumerate(models.views):
            for k in range(n_folds):
                model = models.models[v][k]
                oof[v, folds == k] = _predict(model, train_by_view[view][folds == k], response, width)
                test[v, k] = _predict(model, test_by_view[view], response, width)
    return Predictions(models.views, oof, test, folds, y, models.fitted)


def _inner_prediction(head, task: Task, X: np.ndarray, y: np.ndarray, fit_rows: np.ndarray, seed: int,
                      response: str, blas_threads: int, chosen: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """(rows, predictions) of an inner split of ``fit_rows``: a clone fitted on the rest of them predicts
    1/INNER_FOLDS of them, split as the task splits its folds.

    The clone takes what the fold's own fit ``chosen`` (C, alpha, l2 of an "auto" head) instead of choosing
    again: that choice read only the fold's training rows, and the search it skips is most of a fit's cost
    (ordinal logreg 49.0 s -> see BENCHMARKS.md round 7)."""
    rows, rest = _inner_rows(task, y, fit_rows, seed)
    model, _ = _fit_rows(clone(head).set_params(**chosen), X, y, rest, rows, blas_threads)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return rows, _predict(model, X[rows], response, task.width(response))


def _inner_rows(task: Task, y: np.ndarray, fit_rows: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(1/INNER_FOLDS of ``fit_rows``, the rest of them), split as the task splits its folds."""
    inner = task.make_folds(y[fit_rows], INNER_FOLDS, seed)
    return fit_rows[inner == 0], fit_rows[inner != 0]


def _inner_predictions_of_view(head, task: Task, X: np.ndarray, y: np.ndarray, folds: np.ndarray, seed: int,
                               response: str, blas_threads: int, chosen: list[dict[str, float]]) -> list:
    """``_inner_prediction`` of every fold of one view, the inner fits solved together (``head.fit_folds``)."""
    splits = [_inner_rows(task, y, np.flatnonzero(folds != k), seed) for k in range(int(folds.max()) + 1)]
    with threadpool_limits(limits=blas_threads), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        models = clone(head).fit_folds(X, y, [rest for _, rest in splits], chosen)
        return [(rows, _predict(model, X[rows], response, task.width(response)))
                for (rows, _), (model, _) in zip(splits, models)]


def fit_decisions(head, task: Task, train_by_view: dict[str, np.ndarray], y: np.ndarray, folds: np.ndarray,
                  oof: np.ndarray, response: str, seed: int, n_jobs: int = 1, blas_threads: int = 1,
                  fitted: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """(K + 1, P) parameters of the task's decision rule: row k for fold k's OOF rows, row K for the test rows.

    Fold k's rule is tuned on an inner split of its training rows (predicted by a clone fitted on
    the rest of them, views averaged), so no row fold k scores is read; the test rows' rule on every
    OOF row (``oof``, views averaged). Rules without parameters (arg-max, P(positive)) cost nothing.
    ``fitted``: what each fold model chose ({name: (V, K)}, ``Predictions.fitted``), for its inner clone.
    """
    n_folds = int(folds.max()) + 1
    if not task.tuned_decision:
        return np.zeros((n_folds + 1, 0))
    views = list(train_by_view)
    tasks = [(v, k) for k in range(n_folds) for v in range(len(views))]

    def chosen(v: int, k: int) -> dict[str, float]:
        return {n: float(c[v, k]) for n, c in (fitted or {}).items()}

    if head.fits_folds_jointly():
        by_view = Parallel(n_jobs=n_jobs)(
            delayed(_inner_predictions_of_view)(head, task, train_by_view[view], y, folds, seed, response,
                                                blas_threads, [chosen(v, k) for k in range(n_folds)])
            for v, view in enumerate(views))
        results = [by_view[v][k] for v, k in tasks]
    else:
        results = Parallel(n_jobs=n_jobs)(
            delayed(_inner_prediction)(head, task, train_by_view[views[v]], y, np.flatnonzero(folds != k), seed,
                                       response, blas_threads, chosen(v, k))
            for v, k in tasks)
    params = []
    for k in range(n_folds):
        per_view = [prediction for (_, fold), (_, prediction) in zip(tasks, results) if fold == k]
        rows = next(r for (_, fold), (r, _) in zip(tasks, results) if fold == k)
        params.append(task.fit_decision(y[rows], np.mean(per_view, axis=0)))
    params.append(task.fit_decision(y, oof))
    return np.stack(params)


def _predictions_problem(preds: Predictions, views: list[str], y: np.ndarray, folds: np.ndarray, n_test: int,
                         width: int, response: str) -> str | None:
    """Why cached predictions are not this run's (other rows, targets, folds, views or widths; values no head of
    this response gives), or None."""
    n_folds = int(folds.max()) + 1
    if preds.views != views:
        return f"made for views {preds.views}, this run has {views}"
    if preds.oof.shape[1:] != (len(y), width) or preds.test.shape[1:] != (n_folds, n_test, width):
        return f"of shapes oof {preds.oof.shape}, test {preds.test.shape} for {len(y)} rows, {n_test} test rows, " \
               f"{n_folds} folds and width {width}"
    if preds.y.shape != y.shape or not np.array_equal(preds.y, y):
        return "made for other training targets"
    if not np.array_equal(preds.folds, folds):
        return "made for other folds"
    values = (preds.oof, preds.test)
    if not all(np.isfinite(v).all() for v in values) or not np.isfinite(preds.decisions).all():
        return "holds NaN or infinite values"
    if response in ("proba", "tags") and not all(((v >= 0) & (v <= 1)).all() for v in values):
        return "holds probabilities outside [0, 1]"
    if response == "proba" and not all(np.allclose(v.sum(axis=-1), 1, atol=1e-3) for v in values):
        return "holds class probabilities that do not sum to 1"
    return None


def _fits_problem(models: FoldModels, views: list[str], y: np.ndarray, folds: np.ndarray, n_features: int,
                  width: int, response: str) -> str | None:
    """Why cached fold models do not fit this run (views, folds, output, classes, widths, finiteness), or None."""
    n_folds = int(folds.max()) + 1
    if models.views != views or any(len(row) != n_folds for row in models.models) or len(models.models) != len(views):
        return f"fold models of views {models.views} x {[len(r) for r in models.models]} folds, this run has " \
               f"{views} x {n_folds}"
    if models.decisions is None or models.decisions.shape[0] != n_folds + 1 or not np.isfinite(models.decisions).all():
        return "no usable decision rules"
    for v, row in enumerate(models.models):
        for k, model in enumerate(row):
            where = f"view {views[v]}, fold {k}"
            if not isinstance(model, FrozenHead) or model.response != response:
                return f"{where}: a model of output {getattr(model, 'output', '?')}, this run needs {response}"
            trained = np.unique(y[folds != k]) if response == "proba" else None  # the classes its rows hold
            if trained is not None and not np.array_equal(np.asarray(model.classes_), trained):
                return (f"{where}: classes {np.asarray(model.classes_).tolist()[:5]}, its training rows hold "
                        f"{trained.tolist()[:5]}")
            arrays = [*model.transform.values(), *(a for m in model.linear for a in m.values())]
            if any(a.dtype.kind == "f" and not np.isfinite(a).all() for a in arrays):
                return f"{where}: NaN or infinite coefficients"
            scales = [a for name, a in model.transform.items() if name.endswith("_scale")]
            if any((a == 0).any() for a in scales):
                return f"{where}: a zero scale in its transform"
            problem = _transform_problem(model.transform, n_features)
            if problem:
                return f"{where}: {problem}"
            outputs = {"value": 1, "tags": width}.get(response, len(model.classes_))
            if model.output != "platt" and model.linear[0]["coef"].shape[1] != outputs:
                return f"{where}: coefficients of width {model.linear[0]['coef'].shape[1]}, this run needs {outputs}"
    return None


def _transform_problem(transform: dict[str, np.ndarray], n_features: int) -> str | None:
    """Why a frozen transform cannot be what was fitted on ``n_features`` columns (its steps' arrays, in order,
    of other widths, or arrays of no step), or None."""
    steps = [str(step) for step in np.atleast_1d(transform.get("steps", np.array([], dtype=str)))]
    expected = {"standard": ("mean", "scale"), "pca_whiten": ("mean", "components", "scale")}
    named = {f"step{i}_{part}" for i, step in enumerate(steps) for part in expected.get(step, ())}
    stray = sorted(set(transform) - named - {"steps"})
    if stray or not named <= set(transform):
        return f"transform arrays {stray or sorted(named - set(transform))} do not match its steps {steps}"
    width = n_features
    for i, step in enumerate(steps):
        if step == "standard" and not transform[f"step{i}_mean"].shape == transform[f"step{i}_scale"].shape == (width,):
            return f"its transform's step {i} ({step}) is of {transform[f'step{i}_mean'].shape} columns, not {width}"
        if step == "pca_whiten":
            components = transform[f"step{i}_components"]
            if components.ndim != 2 or components.shape[1] != width or transform[f"step{i}_mean"].shape != (width,):
                return f"its transform's step {i} ({step}) is of {components.shape} columns, not {width}"
            width = components.shape[0]
    return None


def fit_and_predict(head, task: Task, train_by_view: dict[str, np.ndarray], test_by_view: dict[str, np.ndarray],
                    y: np.ndarray, folds: np.ndarray, seed: int = 0, n_jobs: int = 1, blas_threads: int = 1,
                    desc: str = "head") -> tuple[Predictions, FoldModels]:
    """Fit ``head`` per view x fold (``fit_fold_models``), predict the held-out and test rows (``predict_folds``),
    and tune the task's decision rule per fold (``fit_decisions``); the predictions and the fold models.

    ``head`` outputs its ``response`` (set for the task: class probabilities, tags or a value)."""
    models = fit_fold_models(head, train_by_view, y, folds, n_jobs, blas_threads, desc)
    preds = predict_folds(models, train_by_view, test_by_view, y, folds, head.response, task.width(head.response))
    if preds.is_finite():
        models.decisions = preds.decisions = fit_decisions(head, task, train_by_view, y, folds, preds.oof_mean,
                                                           head.response, seed, n_jobs, blas_threads,
                                                           preds.fitted)
    return preds, models


def cross_validate(head, task: Task, train_by_view: dict[str, np.ndarray], test_by_view: dict[str, np.ndarray],
                   y: np.ndarray, folds: np.ndarray, seed: int = 0, n_jobs: int = 1) -> Predictions:
    """A head's cross-validated predictions for the task (``fit_and_predict`` without its fold models)."""
    return fit_and_predict(head, task, train_by_view, test_by_view, y, folds, seed, n_jobs)[0]


def fits_key(config: RunConfig, head_name: str, refs: list[BackboneRef], image_keys: dict[str, str],
             competition: Competition, folds: np.ndarray) -> str:
    """What a head's fitted fold models (and its decision rules) depend on: the training features (every stage
    of every backbone and view), rows, targets, the task (kind, classes, metric, decision settings), folds,
    head, its parameters, seed, version and the heads' implementation (HEAD_VERSION), the training rows' side
    features when the run joins them (``competition.side``); never the test images."""
    task = {k: v for k, v in competition.task.to_dict().items() if k != "source"}  # source: words, not numbers
    side = competition.side.digest("train") if competition.side is not None else ""
    return cache_key(features=[feature_key(image_keys["train"], ref, view, output)
                               for ref in refs for view in config.views for output, _ in ref.outputs],
                     train_ids=array_digest(np.array(competition.train_ids, dtype=str)),
                     y=array_digest(competition.y), task=task, folds=array_digest(folds), side_features=side,
                     head=head_name, params=config.head_params[head_name], seed=config.seed, version=__version__,
                     heads=HEAD_VERSION)


def predictions_key(fits: str, config: RunConfig, refs: list[BackboneRef], image_keys: dict[str, str],
                    side: SideFeatures | None) -> str:
    """What a head's predictions depend on: its fold models (``fits_key``) and the test features they predict
    (the test rows' ``side`` features among them, when the run joins them)."""
    return cache_key(fits=fits, test_features=[feature_key(image_keys["test"], ref, view, output)
                                               for ref in refs for view in config.views for output, _ in ref.outputs],
                     test_side_features=side.digest("test") if side is not None else "")


def head_predictions(head, competition: Competition, train_by_view: dict, test_by_view: dict, folds: np.ndarray,
                     keys: dict[str, str], cache: Cache, seed: int,
                     n_jobs: int = 1) -> tuple[Predictions, dict[str, str]]:
    """A head's fold x view predictions, and where each cache entry of ``keys`` ({"fits": key, "predictions":
    key}) came from ("computed", "cache" or a read-only layer).

    In order: the predictions themselves from a cache; else the fold models from the fits cache,
    predicting the test rows (a re-run on new test images: nothing refitted); else the head fitted
    ``n_jobs`` fits at a time, its models and predictions then cached (unless they diverged; a head
    that cannot be frozen, an RBF SVM, caches its predictions only). ``head`` has its ``response``
    for the task set.
    """
    task, y, response = competition.task, competition.y, head.response
    width = task.width(response)
    n_folds, n_views = int(folds.max()) + 1, len(train_by_view)
    n_test, n_features = len(next(iter(test_by_view.values()))), next(iter(train_by_view.values())).shape[1]
    for path in cache.find_files("predictions", keys["predictions"]):
        try:
            preds = Predictions.load(path, Predictions.max_bytes(n_views, len(y), n_folds, n_test, width))
        except KaggleTLError as exc:  # a damaged cache file is recomputed, never served
            log.warning("%s; refitting", exc)
            continue
        problem = _predictions_problem(preds, list(train_by_view), y, folds, n_test, width, response)
        if problem is None:
            # The fits entry too, when there is one: `cache export` then hands a hidden re-run the models.
            fits = cache.find_files("fits", keys["fits"])
            return preds, {"predictions": cache.source(path), **({"fits": cache.source(fits[0])} if fits else {})}
        log.warning("damaged entry %s: %s; refitting", path, problem)
    for path in cache.find_files("fits", keys["fits"]):
        try:
            models = FoldModels.load(path, FoldModels.max_bytes(n_views, n_folds, n_features, width))
        except KaggleTLError as exc:
            log.warning("%s; refitting", exc)
            continue
        problem = _fits_problem(models, list(train_by_view), y, folds, n_features, width, response)
        if problem is None:
            try:
                preds = predict_folds(models, train_by_view, test_by_view, y, folds, response, width)
                preds.decisions = models.decisions
                problem = _predictions_problem(preds, list(train_by_view), y, folds, n_test, width, response)
            except (ValueError, KeyError, IndexError, TypeError, KaggleTLError) as exc:  # arrays that do not fit
                problem = f"its models fail to predict ({type(exc).__name__}: {exc})"
        if problem is None:
            cache.write_file("predictions", keys["predictions"], preds.to_bytes())
            return preds, {"fits": cache.source(path), "predictions": "computed"}
        log.warning("damaged entry %s: %s; refitting", path, problem)
    preds, models = fit_and_predict(head, task, train_by_view, test_by_view, y, folds, seed, n_jobs, desc=head.name)
    sources = {"predictions": "computed"}
    if preds.is_finite():
        cache.write_file("predictions", keys["predictions"], preds.to_bytes())
        if models.frozen:
            cache.write_file("fits", keys["fits"], models.to_bytes())
            sources["fits"] = "computed"
    return preds, sources
