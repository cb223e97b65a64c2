"""The competition metrics, by name: what each reads, its direction, and its noise.

A metric scores what the submission holds, decided from the predictions by the Task
(``Task.decide``): class probabilities, P(positive), a label, a value, tags or a ranking. Each
metric says which of those forms it reads for each task kind (``reads``), whether higher is better
(scikit-learn's ``_sign``), and whether it is a mean over rows.

Noise. A mean over rows (log loss, accuracy, error, MAP@k, F-beta over samples, MAE) has the standard
error std(per-row values) / sqrt(N), and two models scored on the same rows are compared by the
mean and standard error of their per-row differences. Every other metric (ROC AUC, weighted AUC, F1, QWK, RMSE)
gets both from a seeded paired bootstrap over rows (``scipy.stats.bootstrap``, percentile method,
``BOOTSTRAP_RESAMPLES`` resamples): the same resampled rows score both models, so the difference
keeps the pairing that makes it tight.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn import metrics as skm

from kaggle_tl.errors import KaggleTLError, did_you_mean
from kaggle_tl.tasks.metrics import CLIP_EPS, row_logloss  # one definition of clipping

BOOTSTRAP_RESAMPLES = 200  # enough for a standard error to ~5%; each costs one metric evaluation
BOOTSTRAP_SEED = 0

# The forms a decided prediction takes (what a submission cell holds, in index space):
#   proba (N, C) class probabilities      p_positive (N,) P(class 1)       label (N,) class index
#   value (N,) number                     tag_proba (N, L) per-tag P       tags (N, L) 0/1
#   ranked (N, k) class indices, best first
FORMS = ("proba", "p_positive", "label", "value", "tag_proba", "tags", "ranked")


@dataclass(frozen=True)
class Metric:
    name: str
    greater_is_better: bool
    reads: dict[str, str]  # task kind -> the form it scores
    function: Callable[[np.ndarray, np.ndarray], float]
    rows: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None  # per-row values when a mean over rows
    description: str = ""

    @property
    def sign(self) -> float:
        """+1 when higher is better: ``sign * value`` ranks every metric the same way."""
        return 1.0 if self.greater_is_better else -1.0

    @property
    def mean_over_rows(self) -> bool:
        return self.rows is not None

    def __call__(self, y: np.ndarray, decided: np.ndarray) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn's "only one class present" and friends: NaN says it
            try:
                return float(self.function(y, decided))
            except ValueError:  # e.g. ROC AUC on rows of one class: undefined, not a crash
                return float("nan")


def _binary_row_logloss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(N,) binary log loss of P(positive) per row; for (N, L) tags, the mean over tags of each row."""
    p = np.clip(np.asarray(p, dtype=np.float64), CLIP_EPS, 1 - CLIP_EPS)
    y = np.asarray(y, dtype=np.float64)
    losses = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return losses.mean(axis=1) if losses.ndim == 2 else losses


def _logloss_rows(y: np.ndarray, decided: np.ndarray) -> np.ndarray:
    decided = np.asarray(decided)
    if decided.ndim == 2 and np.asarray(y).ndim == 1:
        return row_logloss(y, decided)
    return _binary_row_logloss(y, decided)


def _correct_rows(y: np.ndarray, label: np.ndarray) -> np.ndarray:
    return (np.asarray(label) == np.asarray(y)).astype(np.float64)


def _wrong_rows(y: np.ndarray, label: np.ndarray) -> np.ndarray:
    return 1.0 - _correct_rows(y, label)


def _abs_rows(y: np.ndarray, value: np.ndarray) -> np.ndarray:
    return np.abs(np.asarray(value, dtype=np.float64) - np.asarray(y, dtype=np.float64))


def _fbeta_sample_rows(beta: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def rows(y: np.ndarray, tags: np.ndarray) -> np.ndarray:
        y, tags = np.asarray(y, dtype=bool), np.asarray(tags, dtype=bool)
        tp = (y & tags).sum(axis=1)
        denominator = (1 + beta ** 2) * tp + beta ** 2 * (y & ~tags).sum(axis=1) + (~y & tags).sum(axis=1)
        # As fbeta_score(average="samples", zero_division=0): a row with no true and no predicted tag scores 0.
        return np.where(denominator > 0, (1 + beta ** 2) * tp / np.maximum(denominator, 1), 0.0)
    return rows


def _apk_rows(k: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def rows(y: np.ndarray, ranked: np.ndarray) -> np.ndarray:
        """Average precision at k with one true label: 1/rank of its first hit within the top k, else 0."""
        ranked = np.asarray(ranked)[:, :k]
        hits = ranked == np.asarray(y)[:, None]
        first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)
        return np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)
    return rows


def _mean_of(rows: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[[np.ndarray, np.ndarray], float]:
    return lambda y, decided: float(rows(y, decided).mean())


def _labels_f1(average: str) -> Callable[[np.ndarray, np.ndarray], float]:
    return lambda y, decided: skm.f1_score(y, decided, average=average, zero_division=0)


# alaska2-image-steganalysis' weighted AUC: the ROC curve's area in TPR bands (low, high, weight), weighted.
ALASKA_BANDS = ((0.0, 0.4, 2.0), (0.4, 1.0, 1.0))


def weighted_auc(y: np.ndarray, p: np.ndarray, bands: tuple = ALASKA_BANDS) -> float:
    """The area under the ROC curve (piecewise linear, as scikit-learn's ``auc``) within each band of true-positive
    rates, clip(TPR - low, 0, high - low) integrated over the false-positive rate, weighted and normalised so that
    a perfect ranking scores 1 (a constant one 41/70 with alaska2's bands)."""
    fpr, tpr, _ = skm.roc_curve(np.asarray(y), np.asarray(p, dtype=np.float64))
    total = sum(weight * _band_area(fpr, tpr, low, high) for low, high, weight in bands)
    return float(total / sum(weight * (high - low) for low, high, weight in bands))


def _band_area(fpr: np.ndarray, tpr: np.ndarray, low: float, high: float) -> float:
    """Exact area of clip(tpr - low, 0, high - low): the curve's crossings of both levels added as points."""
    xs, ys = [fpr[0]], [tpr[0]]
    for x0, y0, x1, y1 in zip(fpr[:-1], tpr[:-1], fpr[1:], tpr[1:]):
        for level in (low, high):
            if (y0 - level) * (y1 - level) < 0:
                xs.append(x0 + (x1 - x0) * (level - y0) / (y1 - y0))
                ys.append(level)
        xs.append(x1)
        ys.append(y1)
    return float(np.trapezoid(np.clip(np.asarray(ys) - low, 0.0, high - low), np.asarray(xs)))


_CLASS_KINDS = ("multiclass", "binary", "ordinal")
_METRICS: dict[str, Metric] = {m.name: m for m in [
    Metric("log_loss", False, {"multiclass": "proba", "binary": "p_positive", "multilabel": "tag_proba",
                               "topk": "proba"},
           _mean_of(_logloss_rows), _logloss_rows, "log loss of the clipped probabilities"),
    Metric("accuracy", True, {k: "label" for k in (*_CLASS_KINDS, "topk")},
           _mean_of(_correct_rows), _correct_rows, "share of rows whose label is right"),
    Metric("error", False, {k: "label" for k in (*_CLASS_KINDS, "topk")},
           _mean_of(_wrong_rows), _wrong_rows, "share of rows whose label is wrong (1 - accuracy; inaturalist's)"),
    Metric("micro_f1", True, {**{k: "label" for k in _CLASS_KINDS}, "multilabel": "tags"},
           _labels_f1("micro"), None, "F1 over all (row, label) decisions"),
    Metric("macro_f1", True, {**{k: "label" for k in _CLASS_KINDS}, "multilabel": "tags"},
           _labels_f1("macro"), None, "mean F1 over classes or tags"),
    Metric("roc_auc", True, {"binary": "p_positive", "multilabel": "tag_proba", "multiclass": "proba"},
           lambda y, p: (skm.roc_auc_score(y, p, multi_class="ovr", average="macro", labels=range(p.shape[1]))
                         if np.ndim(y) == 1 and np.ndim(p) == 2 else skm.roc_auc_score(y, p, average="macro")), None,
           "ROC AUC of P(positive); for tag columns, the mean over columns"),
    Metric("weighted_auc", True, {"binary": "p_positive"}, weighted_auc, None,
           "ROC AUC weighted by true-positive-rate band (alaska2's: TPR 0-0.4 twice, 0.4-1 once)"),
    Metric("qwk", True, {"ordinal": "label", "multiclass": "label"},
           lambda y, label: skm.cohen_kappa_score(y, label, weights="quadratic"), None,
           "quadratic weighted kappa of the grades"),
    Metric("rmse", False, {"regression": "value"},
           lambda y, v: float(np.sqrt(np.mean((np.asarray(v, float) - np.asarray(y, float)) ** 2))), None,
           "root mean squared error"),
    Metric("mae", False, {"regression": "value"}, _mean_of(_abs_rows), _abs_rows, "mean absolute error"),
    Metric("f1_samples", True, {"multilabel": "tags"}, _mean_of(_fbeta_sample_rows(1.0)), _fbeta_sample_rows(1.0),
           "F1 of each row's tags, averaged over rows"),
    Metric("f2_samples", True, {"multilabel": "tags"}, _mean_of(_fbeta_sample_rows(2.0)), _fbeta_sample_rows(2.0),
           "F2 of each row's tags, averaged over rows"),
]}
_MAP = re.compile(r"map@([1-9][0-9]?)")


def metric_names() -> list[str]:
    return [*sorted(_METRICS), "map@K"]


def get_metric(name: str) -> Metric:
    """The metric called ``name`` ("qwk", "roc_auc", "map@5", ...); a one-line error for an unknown one."""
    match = _MAP.fullmatch(name)
    if match:
        k = int(match.group(1))
        rows = _apk_rows(k)
        return Metric(name, True, {"topk": "ranked"}, _mean_of(rows), rows,
                      f"mean average precision of the top {k} labels")
    if name not in _METRICS:
        raise KaggleTLError(f"setting metric: unknown metric {name!r}{did_you_mean(name, _METRICS)}; "
                            f"choose from: {', '.join(metric_names())}")
    return _METRICS[name]


def _standard_error(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def _bootstrap_se(statistic: Callable[[np.ndarray], float], n_rows: int) -> float:
    """Standard error of ``statistic(rows)`` by a seeded bootstrap over row indices.

    Resampling indices (not each array) keeps every array of a row together, (N, L) tags included,
    and pairs two models on the same resampled rows.
    """
    if n_rows < 3:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a degenerate resample (one class) gives NaN, which bootstrap warns about
        result = stats.bootstrap((np.arange(n_rows),), statistic, vectorized=False, method="percentile",
                                 n_resamples=BOOTSTRAP_RESAMPLES, random_state=BOOTSTRAP_SEED)
    values = np.asarray(result.bootstrap_distribution, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def value_and_se(metric: Metric, y: np.ndarray, decided: np.ndarray) -> tuple[float, float]:
    """The metric on all rows, and its standard error (per-row, or bootstrapped)."""
    if metric.mean_over_rows:
        rows = metric.rows(y, decided)
        return float(rows.mean()), _standard_error(rows)
    y, decided = np.asarray(y), np.asarray(decided)
    return metric(y, decided), _bootstrap_se(lambda rows: metric(y[rows], decided[rows]), len(y))


def paired_difference(metric: Metric, y: np.ndarray, decided: np.ndarray,
                      reference: np.ndarray) -> tuple[float, float]:
    """``metric(decided) - metric(reference)`` on the same rows, with its standard error."""
    if metric.mean_over_rows:
        diff = metric.rows(y, decided) - metric.rows(y, reference)
        return float(diff.mean()), _standard_error(diff)
    y, decided, reference = np.asarray(y), np.asarray(decided), np.asarray(reference)
    se = _bootstrap_se(lambda rows: metric(y[rows], decided[rows]) - metric(y[rows], reference[rows]), len(y))
    return metric(y, decided) - metric(y, reference), se
