"""Folds, and each head fitted per fold x view -> OOF and test predictions, with scores."""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import StratifiedKFold

log = logging.getLogger(__name__)

CLIP_EPS = 1e-7  # the same clipping as the submission, so CV scores what is submitted


def make_folds(y: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """(N,) fold index of each row: StratifiedKFold(n_folds, shuffle=True, random_state=seed)."""
    folds = np.empty(len(y), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, val) in enumerate(splitter.split(np.zeros(len(y)), y)):
        folds[val] = k
    return folds


def clip_proba(proba: np.ndarray) -> np.ndarray:
    proba = np.clip(np.asarray(proba, dtype=np.float64), CLIP_EPS, 1.0)
    return proba / proba.sum(axis=1, keepdims=True)


def _full_columns(proba: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """Place a head's columns (its classes_) into all n_classes columns (absent classes get 0)."""
    out = np.zeros((len(proba), n_classes))
    out[:, np.asarray(classes, dtype=np.int64)] = proba
    return out


@dataclass
class FoldPredictions:
    views: list[str]
    oof: np.ndarray  # (V, N, C): row i predicted by the head of the fold that held i out
    test: np.ndarray  # (V, K, M, C): every fold's head on every test row

    @property
    def oof_mean(self) -> np.ndarray:
        """OOF averaged over views (the fold x flip average), clipped as submitted."""
        return clip_proba(self.oof.mean(axis=0))

    @property
    def test_mean(self) -> np.ndarray:
        """The V x K test predictions averaged: what the submission holds."""
        return clip_proba(self.test.mean(axis=(0, 1)))


def fold_predictions(head, train_by_view: dict[str, np.ndarray], test_by_view: dict[str, np.ndarray],
                     y: np.ndarray, folds: np.ndarray, n_classes: int) -> FoldPredictions:
    """For each view v and fold k: fit a clone of ``head`` on view-v features of fold k's
    training rows; predict fold k's held-out rows (OOF) and the view-v test features."""
    views = list(train_by_view)
    n_folds = int(folds.max()) + 1
    n_test = len(next(iter(test_by_view.values())))
    oof = np.zeros((len(views), len(y), n_classes))
    test = np.zeros((len(views), n_folds, n_test, n_classes))
    takes_validation = "validation_data" in inspect.signature(head.fit).parameters
    for v, view in enumerate(views):
        X, X_test = train_by_view[view], test_by_view[view]
        for k in range(n_folds):
            fit_rows, val_rows = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
            model = clone(head)
            extra = {"validation_data": (X[val_rows], y[val_rows])} if takes_validation else {}
            model.fit(X[fit_rows], y[fit_rows], **extra)
            oof[v, val_rows] = _full_columns(model.predict_proba(X[val_rows]), model.classes_, n_classes)
            test[v, k] = _full_columns(model.predict_proba(X_test), model.classes_, n_classes)
            log.info("%s view=%s fold=%d: logloss %.4f", type(head).__name__, view, k,
                     log_loss(y[val_rows], clip_proba(oof[v, val_rows]), labels=range(n_classes)))
    return FoldPredictions(views, oof, test)


def score(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    proba = clip_proba(proba)
    return {"logloss": float(log_loss(y, proba, labels=range(proba.shape[1]))),
            "accuracy": float(accuracy_score(y, proba.argmax(axis=1)))}


def score_table(preds: FoldPredictions, y: np.ndarray, folds: np.ndarray) -> pd.DataFrame:
    """Log loss / accuracy per fold and overall, for each view and for the view average."""
    rows = []
    columns = [(view, preds.oof[v]) for v, view in enumerate(preds.views)]
    if len(preds.views) > 1:
        columns.append(("+".join(preds.views), preds.oof.mean(axis=0)))
    for name, proba in columns:
        for k in range(int(folds.max()) + 1):
            rows.append({"view": name, "fold": str(k), **score(y[folds == k], proba[folds == k])})
        rows.append({"view": name, "fold": "all", **score(y, proba)})
    return pd.DataFrame(rows)
