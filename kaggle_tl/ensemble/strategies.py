"""Combine per-model OOF/test probabilities into one prediction, scored honestly by nested CV.

Every strategy follows one small contract (scikit-learn style, so `clone` works):
``fit(probas, y) -> self`` learns from a list of (N, C) probability arrays, one per model, and
``combine(probas) -> (n, C)`` applies what was learned to arrays with the same model order.
Strategies that learn something from OOF rows are scored by refitting them inside the same outer
folds the models were cross-validated with; scoring them on the rows they were fitted on would
reward overfitting the ensemble to the OOF set.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import ClassVar

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import PredefinedSplit

from kaggle_tl.errors import KaggleTLError
from kaggle_tl.registry import Registry
from kaggle_tl.tasks import metrics
from kaggle_tl.tasks.evaluate import MetricRanker, score_prediction
from kaggle_tl.tasks.metrics import Score
from kaggle_tl.tasks.task import Task

logger = logging.getLogger(__name__)

# The one clipping of every CV score (metrics.CLIP_EPS): a strategy is chosen on what is submitted.
EPS = metrics.CLIP_EPS

__all__ = [
    "STRATEGIES",
    "BestSingle",
    "GeometricMean",
    "Greedy",
    "Mean",
    "Stacking",
    "Strategy",
    "Weighted",
    "compare_strategies",
    "create_strategy",
    "list_strategies",
    "nested_cv_predict",
    "register_strategy",
]


# --------------------------------------------------------------------------- helpers
def _stack(probas: Sequence[np.ndarray]) -> np.ndarray:
    """Stack per-model (N, C) arrays into one float64 (M, N, C) array."""
    return np.stack([np.asarray(p, dtype=np.float64) for p in probas])


def _true_class_proba(stacked: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(M, N) probability each model gives to each row's true class."""
    return stacked[:, np.arange(stacked.shape[1]), y]


def _mean_neg_log(q: np.ndarray, axis: int = -1) -> np.ndarray:
    """Log loss from true-class probabilities (a weighted average of rows summing to 1 sums to 1)."""
    return -np.log(np.clip(q, EPS, 1.0)).mean(axis=axis)


def _format_weights(weights: np.ndarray, model_names: Sequence[str], min_weight: float = 0.005) -> str:
    """'a=0.62, b=0.38' for the models whose weight is visible at two decimals."""
    order = np.argsort(-weights, kind="stable")
    parts = [f"{model_names[i]}={weights[i]:.2f}" for i in order if weights[i] >= min_weight]
    return ", ".join(parts)


# --------------------------------------------------------------------------- registry
STRATEGIES: Registry[type[Strategy]] = Registry("ensemble strategy")


def register_strategy(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    """Class decorator that makes a strategy available to `create_strategy` under `name`."""
    return STRATEGIES.register(name)


def list_strategies() -> list[str]:
    return STRATEGIES.names()


def create_strategy(name: str, **params) -> Strategy:
    """Build a registered strategy by name, e.g. ``create_strategy("greedy", n_rounds=50)``."""
    return STRATEGIES.create(name, **params)


# --------------------------------------------------------------------------- strategies
class Strategy(BaseEstimator):
    """Base class: `fit(probas, y)` learns from OOF rows, `combine(probas)` predicts."""

    # False when fit learns nothing from y, so the strategy can be scored on all OOF rows directly.
    needs_fit: ClassVar[bool] = True
    # False when it combines any predictions (values, tag probabilities), not only class probabilities.
    reads_class_probabilities: ClassVar[bool] = True

    def fit(self, probas: Sequence[np.ndarray], y: np.ndarray) -> Strategy:
        """Learn the combination from per-model (N, C) OOF probabilities and labels."""
        raise NotImplementedError

    def combine(self, probas: Sequence[np.ndarray]) -> np.ndarray:
        """Combine per-model (n, C) probabilities into normalised (n, C) probabilities."""
        raise NotImplementedError

    def describe(self, model_names: Sequence[str]) -> str:
        """One readable line about what was fitted (weights, selection)."""
        return type(self).__name__


class _WeightedAverage(Strategy):
    """Shared `combine` for strategies that end in non-negative weights summing to 1."""

    def combine(self, probas: Sequence[np.ndarray]) -> np.ndarray:
        """Weighted arithmetic mean of the models' predictions (probabilities stay rows summing to 1)."""
        return np.tensordot(self.weights_, _stack(probas), axes=1)

    def describe(self, model_names: Sequence[str]) -> str:
        """Weights of the models that take part."""
        return _format_weights(self.weights_, model_names)


@register_strategy("best_single")
class BestSingle(_WeightedAverage):
    """The single model with the best score on the rows it is fitted on: the lowest log loss, or by ``ranker``
    (``ranker(y, prediction)``, lower is better: the competition's metric, ``evaluate.MetricRanker``)."""

    reads_class_probabilities = False

    def __init__(self, ranker: Callable[[np.ndarray, np.ndarray], float] | None = None):
        self.ranker = ranker

    def fit(self, probas: Sequence[np.ndarray], y: np.ndarray) -> BestSingle:
        """Pick the best model."""
        stacked = _stack(probas)
        if self.ranker is None:
            self.model_scores_ = _mean_neg_log(_true_class_proba(stacked, y))
        else:
            self.model_scores_ = np.array([self.ranker(y, p) for p in stacked])
        self.best_index_ = int(np.argmin(self.model_scores_))
        self.weights_ = np.eye(len(stacked))[self.best_index_]
        return self

    def describe(self, model_names: Sequence[str]) -> str:
        """The chosen model."""
        what = "logloss" if self.ranker is None else str(self.ranker)
        return f"{model_names[self.best_index_]} ({what} {abs(self.model_scores_[self.best_index_]):.4f})"


@register_strategy("mean")
class Mean(_WeightedAverage):
    """Arithmetic mean of all models."""

    needs_fit = False
    reads_class_probabilities = False

    def fit(self, probas: Sequence[np.ndarray], y: np.ndarray | None = None) -> Mean:
        """Equal weights; labels are not used."""
        self.weights_ = np.full(len(probas), 1.0 / len(probas))
        return self

    def describe(self, model_names: Sequence[str]) -> str:
        """Equal weights."""
        return f"equal weights over {len(model_names)} models"


@register_strategy("geometric_mean")
class GeometricMean(Strategy):
    """Geometric mean of all models' probabilities, renormalised per row."""

    needs_fit = False

    def fit(self, probas: Sequence[np.ndarray], y: np.ndarray | None = None) -> GeometricMean:
        """Nothing to learn."""
        self.n_models_ = len(probas)
        return self

    def combine(self, probas: Sequence[np.ndarray]) -> np.ndarray:
        """exp(mean log p), renormalised; clipping first keeps one zero from vetoing a class."""
        log_proba = np.log(np.clip(_stack(probas), EPS, 1.0))
        return metrics.clip_proba(np.exp(log_proba.mean(axis=0)))

    def describe(self, model_names: Sequence[str]) -> str:
        """Equal weights in log space."""
        return f"geometric mean of {len(model_names)} models"


@register_strategy("weighted")
class Weighted(_WeightedAverage):
    """Non-negative weights summing to 1 that minimise the log loss of the weighted average."""

    def __init__(self, max_iter: int = 200, tol: float = 1e-10):
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, probas: Sequence[np.ndarray], y: np.ndarray) -> Weighted:
        """Solve the simplex-constrained problem with SLSQP and an analytic gradient."""
        # The weighted average's rows sum to 1, so its log loss only needs the true-class column;
        # that makes the objective and its gradient one matrix-vector product each.
        p_true = _true_class_proba(_stack(probas), y)
        n_models = len(p_true)

        def loss_and_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
            q = np.clip(w @ p_true, EPS, None)
            return float(-np.log(q).mean()), -(p_true / q).mean(axis=1)

        result = minimize(
            loss_and_grad,
            x0=np.full(n_models, 1.0 / n_models),
            jac=True,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * n_models,
            constraints={"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)},
            options={"maxiter": self.max_iter, "ftol": self.tol},
        )
        if not result.success:
            logger.warning("weighted ensemble: SLSQP did not converge (%s); using its last weights", result.message)
        # SLSQP may step a hair outside the bounds; project back onto the simplex.
        weights = np.clip(result.x, 0.0, None)
        self.weights_ = weights / weights.sum()
        return self


@register_strategy("greedy")
class Greedy(_WeightedAverage):
    """Caruana et al. (2004) ensemble selection with replacement, as in AutoGluon's WeightedEnsemble.

    Parameters
    ----------
    n_rounds : int
        Number of models added to the running average (with replacement); weights = counts / total.
    n_init : int
        Start from the `n_init` individually best models, each added once ("sorted initialisation").
    """

    def __init__(self, n_rounds: int = 25, n_init: int = 0):
        self.n_rounds = n_rounds
        self.n_init = n_init

    def fit(self, probas: Sequence[np.ndarray], y: np.ndarray) -> Greedy:
        """Repeatedly add the model that most lowers the log loss of the running average."""
        p_true = _true_class_proba(_stack(probas), y)
        counts = np.zeros(len(p_true), dtype=int)
        counts[np.argsort(_mean_neg_log(p_true), kind="stable")[: self.n_init]] = 1
        running_sum = counts @ p_true
        self.losses_ = []
        for _ in range(self.n_rounds):
            # Losses of all M candidate averages at once: (running_sum + p_m) / (k + 1).
            candidate_losses = _mean_neg_log((running_sum + p_true) / (counts.sum() + 1))
            best = int(np.argmin(candidate_losses))
            counts[best] += 1
            running_sum += p_true[best]
            self.losses_.append(float(candidate_losses[best]))
        self.counts_ = counts
        self.weights_ = counts / counts.sum()
        return self

    def describe(self, model_names: Sequence[str]) -> str:
        """Selection counts and the resulting weights."""
        order = np.argsort(-self.counts_, kind="stable")
        picks = ", ".join(f"{model_names[i]}×{self.counts_[i]}" for i in order if self.counts_[i])
        return f"{picks} ({_format_weights(self.weights_, model_names)})"


@register_strategy("stacking")
class Stacking(Strategy):
    """Regularised multinomial logistic regression on the models' concatenated logits.

    Parameters
    ----------
    C : float
        Inverse L2 regularisation strength. The stacker has M*C*C coefficients, so it needs
        stronger regularisation than sklearn's default of 1 (0.1 did better on 4 and 20 classes).
    feature_eps : float
        Probabilities are clipped to this before the log, so one near-zero probability does
        not become a huge feature that dominates the linear model.
    """

    def __init__(self, C: float = 0.1, feature_eps: float = 1e-6, max_iter: int = 1000):
        self.C = C
        self.feature_eps = feature_eps
        self.max_iter = max_iter

    def _features(self, probas: Sequence[np.ndarray]) -> np.ndarray:
        """(N, M*C) centred log-probabilities."""
        log_proba = np.log(np.clip(_stack(probas), self.feature_eps, 1.0))
        # Logits are defined up to a per-row shift; centring removes that arbitrary shift.
        logits = log_proba - log_proba.mean(axis=2, keepdims=True)
        return np.concatenate(list(logits), axis=1)

    def fit(self, probas: Sequence[np.ndarray], y: np.ndarray) -> Stacking:
        """Fit the stacker on OOF logits."""
        self.n_classes_ = probas[0].shape[1]
        self.model_ = LogisticRegression(C=self.C, max_iter=self.max_iter)
        self.model_.fit(self._features(probas), y)
        return self

    def combine(self, probas: Sequence[np.ndarray]) -> np.ndarray:
        """Stacker probabilities, with a column for every class even if one was absent in fit."""
        proba = np.zeros((probas[0].shape[0], self.n_classes_))
        proba[:, self.model_.classes_] = self.model_.predict_proba(self._features(probas))
        return metrics.clip_proba(proba)

    def describe(self, model_names: Sequence[str]) -> str:
        """The stacker and its input."""
        return f"LogisticRegression(C={self.C:g}) on logits of {len(model_names)} models"


# --------------------------------------------------------------------------- scoring
def nested_cv_predict(strategy: Strategy, probas: Sequence[np.ndarray], y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Predict each fold's rows with a copy of `strategy` fitted on the other folds' rows."""
    stacked = _stack(probas)
    nested = np.zeros(stacked.shape[1:])
    for train, held_out in PredefinedSplit(folds).split():
        fitted = clone(strategy).fit(list(stacked[:, train]), y[train])
        nested[held_out] = fitted.combine(list(stacked[:, held_out]))
    return nested


def _resolve_strategies(strategies: Iterable[str] | Mapping[str, Strategy] | None, task: Task,
                        class_probabilities: bool) -> dict[str, Strategy]:
    """Name → unfitted strategy, from names, a ready mapping, or None for all registered that fit the task's
    predictions (only mean and best_single combine values or tag probabilities); best_single ranks by the
    task's metric."""
    if isinstance(strategies, Mapping):
        return dict(strategies)
    names = STRATEGIES.names() if strategies is None else list(strategies)
    unfit = [n for n in names if STRATEGIES.get(n).reads_class_probabilities and not class_probabilities]
    if unfit and strategies is not None:
        raise KaggleTLError(f"--strategies: {', '.join(unfit)} combine class probabilities, and these models predict "
                            f"{task.kind} outputs; choose from mean, best_single")
    return {name: create_strategy(name, **({"ranker": MetricRanker(task)} if name == "best_single" else {}))
            for name in names if name not in unfit}


def _check_inputs(
    oof: Mapping[str, np.ndarray], y: np.ndarray, folds: np.ndarray, test: Mapping[str, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes at the boundary; return y and folds (as int)."""
    if not oof:
        raise KaggleTLError("no OOF predictions to ensemble; run cross-validation for at least one model first")
    shapes = {name: np.shape(p) for name, p in oof.items()}
    first = next(iter(shapes.values()))
    if len(first) != 2 or any(s != first for s in shapes.values()):
        raise KaggleTLError(f"OOF predictions must all be (N, W) arrays of one shape; got {shapes}")
    n_rows, width = first
    y, folds = np.asarray(y), np.asarray(folds)
    if len(y) != n_rows or folds.shape != (n_rows,):
        raise KaggleTLError(f"y {y.shape} and folds {folds.shape} must both have one entry per OOF row ({n_rows})")
    if folds.min() < 0 or len(np.unique(folds)) < 2:
        raise KaggleTLError("folds must hold at least two distinct non-negative fold indices for nested CV")
    if test is not None:
        if set(test) != set(oof):
            raise KaggleTLError(f"test predictions {sorted(test)} must cover the same models as OOF {sorted(oof)}")
        test_shapes = {name: np.shape(p) for name, p in test.items()}
        n_test = np.shape(next(iter(test.values())))[0]
        if any(s != (n_test, width) for s in test_shapes.values()):
            raise KaggleTLError(f"test predictions must all be (M, {width}) arrays; got {test_shapes}")
    return y, folds.astype(int)


def ensemble_decisions(task: Task, y: np.ndarray, oof: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """(K + 1, P) decision rules of a strategy's OOF predictions: fold k's tuned on the other folds' rows
    (which fold k never scores), the test rows' on every row.

    A model's own rule is tuned on an inner split (``cv.fit_decisions``); a strategy has no inner
    predictions, so this is the nearest honest rule: its rows were predicted by models that had
    fold k's rows in training, which the notes say.
    """
    n_folds = int(folds.max()) + 1
    if not task.tuned_decision:
        return np.zeros((n_folds + 1, 0))
    rules = [task.fit_decision(y[folds != k], oof[folds != k]) for k in range(n_folds)]
    return np.stack([*rules, task.fit_decision(y, oof)])


def compare_strategies(
    oof: Mapping[str, np.ndarray],
    y: np.ndarray,
    folds: np.ndarray,
    task: Task,
    test: Mapping[str, np.ndarray] | None = None,
    strategies: Iterable[str] | Mapping[str, Strategy] | None = None,
) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Score ensemble strategies on OOF predictions by the task's metric and build their test predictions.

    Parameters
    ----------
    oof : model name → (N, W) out-of-fold predictions (class probabilities, tag probabilities or values).
    y : the task's targets of the N rows.
    folds : (N,) outer-fold index of each row, the folds the models were cross-validated with.
    task : what the predictions are for and how they are scored.
    test : model name → (M, W) test predictions, or None.
    strategies : registered names, a mapping name → Strategy, or None for all that fit the predictions.

    Returns
    -------
    table : columns strategy, Score.COLUMNS, description; best by the task's metric first.
    oof_by_strategy : name → (N, W) honest OOF predictions (nested CV where the strategy fits).
    test_by_strategy : name → (M, W) test predictions from a fit on all OOF rows ({} without test).
    decisions_by_strategy : name → (K + 1, P) its decision rules (``ensemble_decisions``).
    """
    y, folds = _check_inputs(oof, y, folds, test)
    model_names = list(oof)
    probas = [oof[name] for name in model_names]
    class_probabilities = task.class_probabilities(probas[0].shape[1])
    rows, oof_by_strategy, test_by_strategy, decisions_by_strategy, scores = [], {}, {}, {}, []
    for name, strategy in _resolve_strategies(strategies, task, class_probabilities).items():
        final = clone(strategy).fit(probas, y)
        if strategy.needs_fit:
            oof_by_strategy[name] = nested_cv_predict(strategy, probas, y, folds)
        else:
            oof_by_strategy[name] = final.combine(probas)
        if test is not None:
            test_by_strategy[name] = final.combine([test[m] for m in model_names])
        decisions_by_strategy[name] = ensemble_decisions(task, y, oof_by_strategy[name], folds)
        score = score_prediction(task, y, oof_by_strategy[name], folds, decisions_by_strategy[name])
        logger.info("ensemble %-15s cv %s", name, score)
        scores.append(score)
        rows.append({"strategy": name, **score.columns(), "description": final.describe(model_names)})
    table = pd.DataFrame(rows, columns=["strategy", *Score.COLUMNS, "description"])
    table["rank_key"] = [s.rank_key for s in scores]
    table = table.sort_values("rank_key", kind="stable", ignore_index=True).drop(columns="rank_key")
    return table, oof_by_strategy, test_by_strategy, decisions_by_strategy
