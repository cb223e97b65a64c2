"""The Task: what a competition asks, decided once from its labels and sample submission.

Like scikit-learn's ``type_of_target`` and its scorers, one frozen object owns everything that
differs between competitions, and every stage downstream asks it instead of guessing:

- ``kind``: multiclass, binary, ordinal, regression, multilabel or topk;
- ``encode``: raw label cells -> ``y`` (class index, 0/1 tag matrix or value);
- ``make_folds``: the CV splitter (stratified for classes and grades, by quantile bins for
  values, by each row's rarest tag for tags);
- ``response``: what a head must output (class probabilities, tag probabilities or a value) and
  its width;
- ``decide``: predictions -> what the submission holds (probabilities, P(positive), a label, a
  grade via tuned cut points, tags via a tuned threshold, the top k with a tuned catch-all), the
  rule's parameters fitted by ``fit_decision`` on rows the scored fold never touched;
- ``cells``: decided predictions -> the submission's columns, as the sample writes them;
- ``metric``: the competition's metric, its direction and its noise (``tasks.scoring``).
It is saved typed in the run record (``to_dict`` / ``from_dict``).
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold

from kaggle_tl.errors import KaggleTLError
from kaggle_tl.tasks import decisions
from kaggle_tl.tasks.metrics import CLIP_EPS, clip_proba
from kaggle_tl.tasks.scoring import Metric, get_metric

KINDS = ("multiclass", "binary", "ordinal", "regression", "multilabel", "topk")
# What heads output for each kind, in the order a head that can do several picks from.
RESPONSES = {"multiclass": ("proba",), "binary": ("proba",), "topk": ("proba",), "multilabel": ("tags",),
             "regression": ("value",), "ordinal": ("proba", "value")}
# The heads a run fits when --heads is not given: a classifier and the dense head for classes, tags,
# rankings and grades (class probabilities -> expected grade, cut points tuned for QWK); for values a
# ridge-type head. Grades read as a value (ridge + cut points) stay on request: logreg's expected grade
# beat them by 2.9 to 9 standard errors of QWK on real photos, cifar10-small and the demo (BENCHMARKS round 9).
DEFAULT_HEADS = {"multiclass": ("logreg", "dense"), "binary": ("logreg", "dense"), "topk": ("logreg", "dense"),
                 "multilabel": ("logreg", "dense"), "regression": ("ridge", "dense"), "ordinal": ("logreg", "dense")}
VALUE_BINS = 10  # quantile bins a regression target is stratified on


@dataclass(frozen=True)
class Task:
    kind: str
    metric_name: str
    id_column: str
    target_columns: tuple[str, ...]  # the sample submission's columns after the id
    classes: tuple[str, ...] = ()  # class / grade / tag names as the files write them; () for a value
    positive: str = ""  # binary: the class whose probability a P(positive) cell holds
    k: int = 0  # topk: labels per cell
    catch_all: str = ""  # topk: the class that means "none of the known ones" (new_whale)
    value_range: tuple[float, float] | None = None  # regression: what a submitted value is clipped to
    integer_cells: bool = False  # a value or grade written as an integer
    source: str = ""  # where the labels came from, for the run's one-line summary

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise KaggleTLError(f"setting task: unknown task {self.kind!r}; choose from: {', '.join(KINDS)}")
        metric = get_metric(self.metric_name)
        if self.kind not in metric.reads:
            fits = [k for k in KINDS if k in metric.reads]
            raise KaggleTLError(f"setting metric: {self.metric_name} does not score a {self.kind} task "
                                f"(it scores {', '.join(fits)} tasks); choose a metric for {self.kind}, "
                                f"e.g. {', '.join(default_metrics(self.kind))}")
        by_column = self.form in ("proba", "tag_proba")
        if by_column and len(self.target_columns) != len(self.classes):
            raise KaggleTLError(f"setting metric: {self.metric_name} on a {self.kind} task submits one column per "
                                f"class, but the sample submission has the column(s) {list(self.target_columns)}")
        if not by_column and len(self.target_columns) != 1:
            raise KaggleTLError(f"setting metric: {self.metric_name} on a {self.kind} task submits one column, but the "
                                f"sample submission has {len(self.target_columns)} (one per class: "
                                f"{', '.join(default_metrics(self.kind, by_column=True)) or 'none'} fit that)")

    # ------------------------------------------------------------------ what it is
    @property
    def metric(self) -> Metric:
        return get_metric(self.metric_name)

    @property
    def form(self) -> str:
        """What the submission holds: proba, p_positive, label, value, tag_proba, tags or ranked."""
        return self.metric.reads[self.kind]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def default_heads(self) -> tuple[str, ...]:
        return DEFAULT_HEADS[self.kind]

    def response_of(self, supported: tuple[str, ...]) -> str | None:
        """The first of this task's responses a head that outputs ``supported`` can give, or None."""
        return next((r for r in RESPONSES[self.kind] if r in supported), None)

    def width(self, response: str) -> int:
        """Columns a head's predictions have for ``response``."""
        return 1 if response == "value" else self.n_classes

    def class_probabilities(self, width: int) -> bool:
        """True when predictions of ``width`` columns are one probability per class, rows summing to 1 (what
        confusion figures, stacking and weighted ensembles read); False for tags and values."""
        return self.kind in ("multiclass", "binary", "topk", "ordinal") and width == self.n_classes

    @property
    def tuned_decision(self) -> bool:
        """True when the decision rule has parameters fitted per fold (and so needs inner predictions)."""
        return (self.form == "tags" or (self.kind == "ordinal" and self.form == "label")
                or (self.form == "ranked" and bool(self.catch_all)))

    @property
    def grades(self) -> np.ndarray:
        return np.array([float(c) for c in self.classes])

    def describe(self) -> str:
        """One line: 'binary: P(has_cactus = 1), roc_auc, labels from train.csv id/has_cactus'."""
        what = {"proba": f"a probability per {'class' if self.kind != 'multilabel' else 'tag'} "
                         f"({self.n_classes} columns)",
                "p_positive": f"P({self.target_columns[0]} = {self.positive})",
                "label": f"the {'grade' if self.kind == 'ordinal' else 'label'} in {self.target_columns[0]} "
                         f"({self.n_classes} {'grades' if self.kind == 'ordinal' else 'classes'})",
                "value": f"the value of {self.target_columns[0]}"
                         + (f" in [{self.value_range[0]:g}, {self.value_range[1]:g}]" if self.value_range else ""),
                "tag_proba": f"a probability per tag ({self.n_classes} columns)",
                "tags": f"tags in {self.target_columns[0]} ({self.n_classes} tags, threshold tuned per fold)",
                "ranked": f"the top {self.k} of {self.n_classes} labels in {self.target_columns[0]}"
                          + (f", {self.catch_all} scored per fold" if self.catch_all else "")}[self.form]
        return f"{self.kind}: {what}, {self.metric_name}" + (f", {self.source}" if self.source else "")

    # ------------------------------------------------------------------ targets and folds
    def encode(self, cells: pd.DataFrame, where: str) -> np.ndarray:
        """``y`` from the label cells (one column per target; text as read), one line naming a bad row."""
        if self.kind == "regression":
            values = pd.to_numeric(cells.iloc[:, 0], errors="coerce")
            bad = np.flatnonzero(~np.isfinite(values.to_numpy(dtype=np.float64)))
            if len(bad):
                raise KaggleTLError(f"{where}: row {bad[0] + 2} ({cells.index[bad[0]]}): {cells.columns[0]} "
                                    f"{cells.iloc[bad[0], 0]!r} is not a number (a regression target needs one "
                                    f"on every row; {len(bad)} such row(s))")
            return values.to_numpy(dtype=np.float64)
        if self.kind == "multilabel":
            return self._encode_tags(cells, where)
        column = cells.iloc[:, 0] if cells.shape[1] == 1 else None
        if column is None:  # one-hot columns with exactly one 1 a row
            return np.asarray(cells.to_numpy(dtype=np.float64).argmax(axis=1), dtype=np.int64)
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({v for v in column if v not in index})
        if unknown:
            raise KaggleTLError(f"{where}: label(s) {unknown[:5]} are not among the {self.n_classes} classes "
                                f"({', '.join(self.classes[:5])}{', ...' if self.n_classes > 5 else ''})")
        return np.array([index[v] for v in column], dtype=np.int64)

    def _encode_tags(self, cells: pd.DataFrame, where: str) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        if cells.shape[1] > 1:  # one-hot columns
            return (cells.to_numpy(dtype=np.float64) > 0.5).astype(np.uint8)
        y = np.zeros((len(cells), self.n_classes), dtype=np.uint8)
        for row, text in enumerate(cells.iloc[:, 0]):
            for tag in str(text).split():
                if tag not in index:
                    raise KaggleTLError(f"{where}: row {row + 2} ({cells.index[row]}): tag {tag!r} is not among the "
                                        f"{self.n_classes} tags")
                y[row, index[tag]] = 1
        return y

    def make_folds(self, y: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
        """(N,) fold of each row, shuffled with ``seed``: stratified on what keeps folds alike for this kind."""
        if self.kind == "regression":
            edges = np.quantile(y, np.linspace(0, 1, VALUE_BINS + 1)[1:-1])
            strata = np.searchsorted(edges, y, side="right")
        elif self.kind == "multilabel":
            # Each row's rarest tag: every tag's positives spread over the folds, as far as one label a row can.
            counts = y.sum(axis=0)
            strata = np.where(y.any(axis=1), np.argmin(np.where(y > 0, counts, np.inf), axis=1), -1)
        else:
            strata = y
        folds = np.empty(len(y), dtype=np.int64)
        counts = np.unique(strata, return_counts=True)[1]
        splitter = (StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed) if counts.max() >= n_folds
                    else KFold(n_splits=n_folds, shuffle=True, random_state=seed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "least populated class has 1 member": expected for top-k catalogues
            for k, (_, val) in enumerate(splitter.split(np.zeros(len(y)), strata)):
                folds[val] = k
        return folds

    def fold_problem(self, y: np.ndarray, n_folds: int) -> str | None:
        """Why ``y`` cannot be split into ``n_folds`` stratified folds for this task, or None.

        A class (or grade) with fewer rows than folds leaves a fold without it; a top-k catalogue
        (one image of most whales) is split without stratifying, so its rare classes are expected.
        """
        if self.kind in ("multiclass", "binary", "ordinal"):
            counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=self.n_classes)
            small = [(self.classes[i], int(n)) for i, n in enumerate(counts) if 0 < n < n_folds]
            if small:
                name, n = small[0]
                return (f"class {name!r} has {n} image(s), fewer than folds={n_folds}; lower --folds or add images "
                        f"({len(small)} class(es) affected)")
            if np.count_nonzero(counts) < 2:
                return (f"training images of at least 2 classes are needed, found "
                        f"{[self.classes[i] for i in np.flatnonzero(counts)]}")
        if len(y) < n_folds:
            return f"{len(y)} training image(s), fewer than folds={n_folds}"
        return None

    # ------------------------------------------------------------------ decisions
    def signal(self, prediction: np.ndarray) -> np.ndarray:
        """Ordinal: the continuous grade, the expected grade of class probabilities or a value head's value."""
        prediction = np.asarray(prediction, dtype=np.float64)
        if prediction.shape[1] == 1:
            return prediction[:, 0]
        return clip_proba(prediction) @ self.grades

    def fit_decision(self, y: np.ndarray, prediction: np.ndarray) -> np.ndarray:
        """The decision rule's parameters, fitted on (y, predictions) of rows no scored fold reads."""
        metric = self.metric
        if self.form == "tags":
            return decisions.fit_threshold(y, prediction, metric)
        if self.kind == "ordinal" and self.form == "label":
            return decisions.fit_cuts(y, self.signal(prediction), self.grades, metric)
        if self.form == "ranked" and self.catch_all:
            return decisions.fit_catch_all(y, prediction, self.classes.index(self.catch_all), self.k, metric)
        return np.zeros(0)

    def default_decision(self) -> np.ndarray:
        """The rule's parameters before any tuning (rounding, threshold 0.5, no catch-all boost)."""
        if self.form == "tags":
            return np.array([0.5])
        if self.kind == "ordinal" and self.form == "label":
            return decisions.default_cuts(self.grades)
        if self.form == "ranked" and self.catch_all:
            return np.array([0.0])
        return np.zeros(0)

    def decide(self, prediction: np.ndarray, params: np.ndarray | None = None) -> np.ndarray:
        """Predictions (N, width) -> what the submission holds, in index space (see scoring.FORMS)."""
        prediction = np.asarray(prediction, dtype=np.float64)
        params = self.default_decision() if params is None else np.asarray(params, dtype=np.float64)
        form = self.form
        if form == "proba":
            return clip_proba(prediction)
        if form == "tag_proba":
            return np.clip(prediction, CLIP_EPS, 1 - CLIP_EPS)
        if form == "p_positive":
            return np.clip(clip_proba(prediction)[:, self.classes.index(self.positive)], CLIP_EPS, 1 - CLIP_EPS)
        if form == "value":
            low, high = self.value_range or (-np.inf, np.inf)
            return np.clip(prediction[:, 0], low, high)
        if form == "tags":
            return decisions.apply_threshold(prediction, params)
        if form == "ranked":
            return decisions.apply_catch_all(prediction, params, self.classes.index(self.catch_all)
                                             if self.catch_all else -1, self.k)
        if self.kind == "ordinal":  # the grade index: the continuous grade placed between the cut points
            return decisions.apply_cuts(self.signal(prediction), params)
        return prediction.argmax(axis=1)

    # ------------------------------------------------------------------ what the metric reads
    def truth(self, y: np.ndarray, form: str | None = None) -> np.ndarray:
        """``y`` as a metric of ``form`` (default: the task's) reads it: a P(positive) is scored against 1
        for the positive class, everything else against ``y`` itself."""
        if (form or self.form) == "p_positive":
            return (np.asarray(y) == self.classes.index(self.positive)).astype(np.int64)
        return np.asarray(y)

    def logloss_input(self, y: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(truth, probabilities) log loss is computed on, or None where the predictions are not
        probabilities (a value, or a grade from a value head)."""
        prediction = np.asarray(prediction, dtype=np.float64)
        if self.kind == "regression" or prediction.ndim != 2 or prediction.shape[1] != self.n_classes:
            return None
        if self.kind == "binary":
            p = clip_proba(prediction)[:, self.classes.index(self.positive)]
            return self.truth(y, "p_positive"), np.clip(p, CLIP_EPS, 1 - CLIP_EPS)
        if self.kind == "multilabel":
            return np.asarray(y), np.clip(prediction, CLIP_EPS, 1 - CLIP_EPS)
        return np.asarray(y), clip_proba(prediction)

    # ------------------------------------------------------------------ the submission's cells
    def cells(self, decided: np.ndarray) -> dict[str, object]:
        """The submission's target columns from decided predictions, as the sample writes them."""
        form, column = self.form, self.target_columns[0]
        if form in ("proba", "tag_proba"):
            return {c: decided[:, j] for j, c in enumerate(self.target_columns)}
        if form == "p_positive":
            return {column: decided}
        if form == "value":
            return {column: np.rint(decided).astype(np.int64) if self.integer_cells else decided}
        names = np.array(self.classes, dtype=object)
        if form == "label":
            return {column: names[np.asarray(decided, dtype=np.int64)]}
        if form == "tags":
            return {column: [" ".join(names[np.flatnonzero(row)]) for row in decided]}
        return {column: [" ".join(names[row]) for row in np.asarray(decided, dtype=np.int64)]}

    def read_cells(self, frame: pd.DataFrame, where: str) -> np.ndarray:
        """A submission's target columns back into decided form (``kaggle-tl score``); one line for a bad cell."""
        form = self.form
        if form in ("proba", "tag_proba"):
            values = frame[list(self.target_columns)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
        elif form in ("p_positive", "value"):
            values = pd.to_numeric(frame[self.target_columns[0]], errors="coerce").to_numpy(np.float64)
        else:
            values = None
        if values is not None:
            bad = np.flatnonzero(~np.isfinite(values).reshape(len(frame), -1).all(axis=1))
            if len(bad):
                raise KaggleTLError(f"{where}: row {bad[0] + 2}: a cell is not a number")
            return values
        index = {c: i for i, c in enumerate(self.classes)}
        column = frame[self.target_columns[0]].astype(str)
        if form == "label" and self.kind == "ordinal":
            return self.encode(frame[[self.target_columns[0]]].astype(str).set_axis(frame.iloc[:, 0]), where)
        if form == "label":  # a label no answer holds is just wrong, as a grader scores it: each its own -1, -2 ...
            unknown: dict[str, int] = {}
            return np.array([index[c] if c in index else unknown.setdefault(c, -1 - len(unknown)) for c in column],
                            dtype=np.int64)
        if form == "tags":
            return self._encode_tags(frame[[self.target_columns[0]]].astype(str), where)
        ranked = np.full((len(frame), self.k), -1, dtype=np.int64)
        for row, text in enumerate(column):
            tokens = text.split()[:self.k]
            ranked[row, :len(tokens)] = [index.get(t, -1) for t in tokens]
        return ranked

    # ------------------------------------------------------------------ typed in the record
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Task":
        data = dict(data)
        for name in ("target_columns", "classes"):
            data[name] = tuple(data[name])
        if data.get("value_range") is not None:
            data["value_range"] = tuple(data["value_range"])
        return cls(**data)


def default_metrics(kind: str, by_column: bool = False) -> list[str]:
    """The metrics that score ``kind``, the usual one first (by_column: submissions with a column per class)."""
    usual = {"multiclass": ["log_loss", "roc_auc"] if by_column else ["accuracy", "macro_f1", "micro_f1", "qwk"],
             "binary": [] if by_column else ["roc_auc", "log_loss", "accuracy", "micro_f1"],
             "ordinal": [] if by_column else ["qwk", "accuracy"],
             "regression": [] if by_column else ["rmse", "mae"],
             "multilabel": ["roc_auc", "log_loss"] if by_column else ["micro_f1", "f2_samples", "f1_samples",
                                                                      "macro_f1"],
             "topk": [] if by_column else ["map@5"]}
    return usual[kind]
