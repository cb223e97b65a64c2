"""The one definition of clipping and log loss, and of a score as every table and record holds it.

"CV log loss" everywhere in kaggle_tl is the log loss of probabilities clipped to [CLIP_EPS, 1]
and renormalised: exactly what a submission holds, so the local number is the one the grader
would compute on the same predictions. Kaggle's grader clips at 1e-15 (KAGGLE_EPS); `kaggle-tl
score` uses that to reproduce it.

A ``Score`` is the competition's metric (its name, value, standard error and direction) with
log loss beside it wherever the predictions are probabilities. Every ranking goes through
``Score.rank_key`` (lower ranks first), never through "lower is better" written out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

CLIP_EPS = 1e-7  # what a submission is clipped to, and so what every CV score is computed on
KAGGLE_EPS = 1e-15  # Kaggle's own clipping, for `kaggle-tl score`
NOISE_Z = 2.0  # a paired difference within NOISE_Z standard errors of 0 is called noise (~95%)
TIE = 1e-6  # differences this small are float rounding (e.g. two runs of one model), not a result


def clip_proba(proba: np.ndarray, eps: float = CLIP_EPS) -> np.ndarray:
    """(N, C) probabilities clipped to [eps, 1] and renormalised to rows summing to 1."""
    proba = np.clip(np.asarray(proba, dtype=np.float64), eps, 1.0)
    return proba / proba.sum(axis=1, keepdims=True)


def row_logloss(y: np.ndarray, proba: np.ndarray, eps: float = CLIP_EPS) -> np.ndarray:
    """(N,) -log p(true class) of each row, after clipping."""
    proba = clip_proba(proba, eps)
    return -np.log(proba[np.arange(len(y)), np.asarray(y, dtype=np.int64)])


@dataclass(frozen=True)
class Score:
    """A model's (or a strategy's) CV score: the competition's metric with its standard error, and log loss
    with its standard error where the predictions are probabilities (NaN otherwise).

    ``columns()`` names them the one way every table and record does (run table, record,
    leaderboard, ensemble table).
    """

    metric: str
    value: float
    se: float
    greater_is_better: bool
    logloss: float = math.nan
    logloss_se: float = math.nan

    COLUMNS: ClassVar[tuple[str, ...]] = ("metric", "cv_score", "cv_score_se", "greater_is_better", "cv_logloss",
                                          "cv_logloss_se")

    @property
    def rank_key(self) -> float:
        """What sorts scores best first for every metric: -value when higher is better; NaN last."""
        if not math.isfinite(self.value):
            return math.inf
        return -self.value if self.greater_is_better else self.value

    def columns(self) -> dict[str, float | str | bool]:
        return dict(zip(self.COLUMNS, (self.metric, self.value, self.se, self.greater_is_better, self.logloss,
                                       self.logloss_se)))

    @classmethod
    def from_columns(cls, values: dict) -> "Score":
        return cls(str(values["metric"]), float(values["cv_score"]), float(values["cv_score_se"]),
                   bool(values["greater_is_better"]), float(values["cv_logloss"]), float(values["cv_logloss_se"]))

    def __str__(self) -> str:
        text = f"{self.metric} {self.value:.4f} ± {self.se:.4f}"
        if math.isfinite(self.logloss) and self.metric != "log_loss":
            text += f" (log loss {self.logloss:.4f} ± {self.logloss_se:.4f})"
        return text


def best_index(scores: list[Score]) -> int:
    """The position of the best of ``scores`` (the first of equals)."""
    return min(range(len(scores)), key=lambda i: scores[i].rank_key)
