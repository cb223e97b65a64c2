"""The one definition of every score: clipping, log loss, accuracy, and their noise.

"CV log loss" everywhere in kaggle_tl (a run's table, the leaderboard, ensembles) is the log
loss of probabilities clipped to [CLIP_EPS, 1] and renormalised: exactly what a submission
holds, so the local number is the one the grader would compute on the same predictions.
Kaggle's grader clips at 1e-15 (KAGGLE_EPS); `kaggle-tl score` uses that to reproduce it.

Noise: a score is a mean over rows, so its standard error is std(per-row values) / sqrt(N).
Two models scored on the same rows are compared by their *paired* difference: the mean and
standard error of the per-row differences, which cancels the rows' shared difficulty and is far
tighter than comparing two independent standard errors.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

CLIP_EPS = 1e-7  # what a submission is clipped to, and so what every CV score is computed on
KAGGLE_EPS = 1e-15  # Kaggle's own clipping, for `kaggle-tl score`
NOISE_Z = 2.0  # a paired difference within NOISE_Z standard errors of 0 is called noise (~95%)
TIE = 1e-6  # log-loss differences this small are float rounding (e.g. two runs of one model), not a result


def clip_proba(proba: np.ndarray, eps: float = CLIP_EPS) -> np.ndarray:
    """(N, C) probabilities clipped to [eps, 1] and renormalised to rows summing to 1."""
    proba = np.clip(np.asarray(proba, dtype=np.float64), eps, 1.0)
    return proba / proba.sum(axis=1, keepdims=True)


def row_logloss(y: np.ndarray, proba: np.ndarray, eps: float = CLIP_EPS) -> np.ndarray:
    """(N,) -log p(true class) of each row, after clipping."""
    proba = clip_proba(proba, eps)
    return -np.log(proba[np.arange(len(y)), np.asarray(y, dtype=np.int64)])


def row_correct(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """(N,) 1.0 where the arg-max class is the true one."""
    return (np.asarray(proba).argmax(axis=1) == np.asarray(y)).astype(np.float64)


def _standard_error(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


@dataclass(frozen=True)
class Score:
    """A model's (or a strategy's) log loss and accuracy over rows, each with its standard error.

    ``columns()`` names them the one way every table and record does (run table, record,
    leaderboard, ensemble table).
    """

    logloss: float
    logloss_se: float
    accuracy: float
    accuracy_se: float

    COLUMNS: ClassVar[tuple[str, ...]] = ("cv_logloss", "cv_logloss_se", "cv_accuracy", "cv_accuracy_se")

    def columns(self) -> dict[str, float]:
        return dict(zip(self.COLUMNS, (self.logloss, self.logloss_se, self.accuracy, self.accuracy_se)))

    @classmethod
    def from_columns(cls, values: dict[str, float]) -> "Score":
        return cls(*(float(values[c]) for c in cls.COLUMNS))

    def __str__(self) -> str:
        return f"{self.logloss:.4f} ± {self.logloss_se:.4f} (accuracy {self.accuracy:.4f} ± {self.accuracy_se:.4f})"


def score(y: np.ndarray, proba: np.ndarray, eps: float = CLIP_EPS) -> Score:
    """Log loss and accuracy of (N, C) probabilities against integer labels, with standard errors."""
    losses, correct = row_logloss(y, proba, eps), row_correct(y, proba)
    return Score(float(losses.mean()), _standard_error(losses), float(correct.mean()), _standard_error(correct))


def model_score(preds) -> Score:
    """A model's CV score: ``score`` of its view-averaged OOF predictions (a ``runs.record.Predictions``)."""
    return score(preds.y, preds.oof_mean)


def score_table(preds) -> pd.DataFrame:
    """A model's scores per fold and overall (Score columns), for each view and (with several) their average."""
    columns = [(view, preds.oof[v]) for v, view in enumerate(preds.views)]
    if len(preds.views) > 1:
        columns.append(("+".join(preds.views), preds.oof_mean))
    rows = []
    for name, proba in columns:
        for k in range(int(preds.folds.max()) + 1):
            rows.append({"view": name, "fold": str(k),
                         **score(preds.y[preds.folds == k], proba[preds.folds == k]).columns()})
        rows.append({"view": name, "fold": "all", **score(preds.y, proba).columns()})
    return pd.DataFrame(rows)


def paired_difference(y: np.ndarray, proba: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Log-loss difference of ``proba`` minus ``reference`` on the same rows, with its standard error.

    ``within_noise`` is True when the difference is within NOISE_Z standard errors of zero.
    """
    diff = row_logloss(y, proba) - row_logloss(y, reference)
    mean, se = float(diff.mean()), _standard_error(diff)
    within = abs(mean) <= TIE or not abs(mean) > NOISE_Z * se  # a NaN standard error (one row) is noise too
    return {"diff": mean, "diff_se": se, "within_noise": bool(within)}


def versus_best(losses: Sequence[float], ys: Sequence[np.ndarray], probas: Sequence[np.ndarray],
                rows: Sequence[Hashable] | None = None) -> list[dict[str, float | str]]:
    """Each candidate's paired difference from the best one (lowest of ``losses``), as tables show it.

    ``within_noise`` reads "best", "yes" or "no"; a candidate scored on other rows than the best
    (``rows`` differ: runs that left out different unusable images) cannot be paired: "other rows".
    """
    best = int(np.argmin(losses))
    out = []
    for i, (y, proba) in enumerate(zip(ys, probas)):
        if rows is not None and rows[i] != rows[best]:
            out.append({"diff_vs_best": float("nan"), "diff_se": float("nan"), "within_noise": "other rows"})
            continue
        paired = paired_difference(y, proba, probas[best])
        out.append({"diff_vs_best": paired["diff"], "diff_se": paired["diff_se"],
                    "within_noise": "best" if i == best else ("yes" if paired["within_noise"] else "no")})
    return out
