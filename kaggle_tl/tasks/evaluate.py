"""A model's CV score under its Task: OOF predictions decided fold by fold, scored by the competition's metric.

Each fold's OOF rows are decided with that fold's rule (``Predictions.decisions[k]``: cut points,
a tag threshold, the catch-all's score, tuned on rows the fold never scores), so the CV score is
the score of the rule as it was tuned. Log loss stands beside the metric wherever the
predictions are probabilities. Standard errors and paired differences follow the metric:
per-row for a mean over rows, a seeded paired bootstrap otherwise (``tasks.scoring``).
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np
import pandas as pd

from kaggle_tl.tasks.metrics import NOISE_Z, TIE, Score, best_index
from kaggle_tl.tasks.scoring import get_metric, paired_difference, value_and_se
from kaggle_tl.tasks.task import Task


def decide_folds(task: Task, prediction: np.ndarray, folds: np.ndarray, decisions: np.ndarray) -> np.ndarray:
    """Each row's prediction decided with its fold's rule (``decisions[k]``); rules without parameters at once."""
    decisions = np.asarray(decisions, dtype=np.float64)
    if decisions.ndim != 2 or decisions.shape[1] == 0:
        return task.decide(prediction)
    decided = None
    for k in np.unique(folds):
        rows = folds == k
        part = task.decide(prediction[rows], decisions[int(k)])
        if decided is None:
            decided = np.empty((len(folds), *part.shape[1:]), dtype=part.dtype)
        decided[rows] = part
    return decided


def score_prediction(task: Task, y: np.ndarray, prediction: np.ndarray, folds: np.ndarray,
                     decisions: np.ndarray) -> Score:
    """The metric (and log loss where there are probabilities) of OOF ``prediction``, decided per fold."""
    decided = decide_folds(task, prediction, folds, decisions)
    value, se = value_and_se(task.metric, task.truth(y), decided)
    logloss = logloss_se = math.nan
    probabilities = task.logloss_input(y, prediction)
    if probabilities is not None:
        logloss, logloss_se = value_and_se(get_metric("log_loss"), *probabilities)
    return Score(task.metric_name, value, se, task.metric.greater_is_better, logloss, logloss_se)


def model_score(task: Task, preds) -> Score:
    """A model's CV score: its view-averaged OOF predictions (a ``runs.record.Predictions``), decided per fold."""
    return score_prediction(task, preds.y, preds.oof_mean, preds.folds, preds.decisions)


def score_table(task: Task, preds) -> pd.DataFrame:
    """A model's scores per fold and overall (Score columns), for each view and (with several) their average."""
    columns = [(view, preds.oof[v]) for v, view in enumerate(preds.views)]
    if len(preds.views) > 1:
        columns.append(("+".join(preds.views), preds.oof_mean))
    rows = []
    for name, prediction in columns:
        for k in range(int(preds.folds.max()) + 1):
            fold = preds.folds == k
            rows.append({"view": name, "fold": str(k), **score_prediction(
                task, preds.y[fold], prediction[fold], preds.folds[fold], preds.decisions).columns()})
        rows.append({"view": name, "fold": "all",
                     **score_prediction(task, preds.y, prediction, preds.folds, preds.decisions).columns()})
    return pd.DataFrame(rows)


def versus_best(task: Task, scores: Sequence[Score], ys: Sequence[np.ndarray], decided: Sequence[np.ndarray],
                rows: Sequence[Hashable] | None = None) -> list[dict[str, float | str]]:
    """Each candidate's paired difference in the metric from the best one, as tables show it.

    ``decided`` holds each candidate's OOF predictions as its submission would (``decide_folds``).
    ``within_noise`` reads "best", "yes" or "no"; a candidate scored on other rows than the best
    (``rows`` differ: runs that left out different unusable images) cannot be paired: "other rows".
    """
    best = best_index(list(scores))
    out = []
    for i, (y, cells) in enumerate(zip(ys, decided)):
        if rows is not None and rows[i] != rows[best]:
            out.append({"diff_vs_best": math.nan, "diff_se": math.nan, "within_noise": "other rows"})
            continue
        diff, se = paired_difference(task.metric, task.truth(y), cells, decided[best])
        within = abs(diff) <= TIE or not abs(diff) > NOISE_Z * se  # a NaN standard error (one row) is noise too
        out.append({"diff_vs_best": diff, "diff_se": se,
                    "within_noise": "best" if i == best else ("yes" if within else "no")})
    return out


class MetricRanker:
    """``ranker(y, prediction)``: the task's metric of the prediction (the default rule), as a value where lower
    ranks first; what ``ensemble.BestSingle`` picks by when the models predict values or tags."""

    def __init__(self, task: Task):
        self.task = task

    def __call__(self, y: np.ndarray, prediction: np.ndarray) -> float:
        value = self.task.metric(self.task.truth(y), self.task.decide(prediction))
        return -value if self.task.metric.greater_is_better else value

    def __str__(self) -> str:
        return self.task.metric_name
