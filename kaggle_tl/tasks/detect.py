"""What a competition asks, read from its label cells and sample submission (``type_of_target``).

The sample submission's first column is the id and its others the targets. One column per class
with one label column in the labels: multiclass probabilities. The same columns in the labels
(one-hot): multilabel, or multiclass when exactly one is set a row. One target column: its
training cells decide; several tags a cell: multilabel; two classes, 0/1: binary; a few integers
or names (spaces allowed): multiclass labels; other numbers, or integers where the sample submits
values: regression; a sample cell holding k one-word labels: top-k.
Where the cells fit two kinds (integer grades: classes, ordinal or values), the note says which
setting decides (``--task``); ``--metric`` picks among the metrics that fit the kind.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kaggle_tl.errors import KaggleTLError
from kaggle_tl.tasks.task import KINDS, Task, default_metrics

MAX_INTEGER_CLASSES = 20  # more distinct integers than this read as a value (Pawpularity's 1-100), fewer as classes


@dataclass(frozen=True)
class TaskSettings:
    """What the user (or the known-competitions table) fixed; empty fields are detected."""

    task: str = ""
    metric: str = ""
    top_k: int = 0
    catch_all: str = ""
    positive: str = ""
    value_range: tuple[float, float] | None = None
    negative: str = ""  # binary of many labels: this one against all the others (alaska2's Cover; --competition)


def _numbers(values: pd.Series) -> np.ndarray | None:
    """The cells as floats, or None when any is not a number."""
    parsed = pd.to_numeric(values, errors="coerce")
    return None if parsed.isna().any() else parsed.to_numpy(dtype=np.float64)


def class_order(names: set[str]) -> tuple[str, ...]:
    """Classes in numeric order when they are all numbers ('2' before '10'), else sorted as text."""
    try:
        return tuple(sorted(names, key=float))
    except ValueError:
        return tuple(sorted(names))


def _is_fraction(cell: str) -> bool:
    try:
        value = float(cell)
    except ValueError:
        return False
    return math.isfinite(value) and 0 < value < 1


def detect_task(targets: pd.DataFrame, sample: pd.DataFrame, settings: TaskSettings = TaskSettings(),
                where: str = "labels", source: str = "") -> tuple[Task, list[str]]:
    """The Task of a competition, and notes on what was read where another reading was possible.

    ``targets``: the training label cells as text, one column per target (index: train ids).
    ``sample``: the sample submission as text (first column: ids).
    """
    if settings.task and settings.task not in KINDS:
        raise KaggleTLError(f"setting task: unknown task {settings.task!r}; choose from: {', '.join(KINDS)}")
    id_column, target_columns = sample.columns[0], tuple(sample.columns[1:])
    if not target_columns:
        raise KaggleTLError(f"sample submission: no target column besides the id column {id_column!r}")
    notes: list[str] = []
    empty = targets.isna() | (targets.astype(str).apply(lambda c: c.str.strip()) == "")
    if empty.to_numpy().any():
        row = int(np.flatnonzero(empty.to_numpy().any(axis=1))[0])
        raise KaggleTLError(f"{where}: row {row + 2} ({targets.index[row]}): no label in "
                            f"{', '.join(targets.columns[empty.iloc[row].to_numpy()])}")
    common = dict(id_column=id_column, target_columns=target_columns, source=source)
    if targets.shape[1] > 1:
        task = _one_hot(targets, settings, where, common)
        if task.kind == "multiclass" and not settings.task:
            notes.append(f"{where}: exactly one of the label columns {', '.join(targets.columns[:4])}"
                         f"{', ...' if targets.shape[1] > 4 else ''} is set on every row: read as classes "
                         "(multiclass); --task multilabel reads them as tags")
        return task, notes
    cells = targets.iloc[:, 0].astype(str).str.strip()
    if len(target_columns) > 1:  # one column per class (dog breeds) or per tag
        kind = settings.task or ("multilabel" if _are_tags(set(cells)) else "multiclass")
        return Task(kind, settings.metric or default_metrics(kind, by_column=True)[0], classes=target_columns,
                    **common), notes
    kind, classes = settings.task, ()
    first_sample_cell = str(sample.iloc[0, 1]).strip() if len(sample) else ""
    if not kind:
        kind, note = _guess_kind(cells, first_sample_cell, where)
        if note:
            notes.append(note)
    if kind == "topk" and not settings.catch_all:
        notes.extend(_catch_all_note(sample.iloc[:, 1], set(cells), where))
    if kind == "multilabel":
        classes = class_order({tag for cell in cells for tag in cell.split()})
        return Task(kind, settings.metric or default_metrics(kind)[0], classes=classes, **common), notes
    if kind == "regression":
        values = _numbers(cells)
        if values is None:
            bad = int(np.flatnonzero(pd.to_numeric(cells, errors="coerce").isna())[0])
            raise KaggleTLError(f"{where}: row {bad + 2} ({cells.index[bad]}): {targets.columns[0]} "
                                f"{cells.iloc[bad]!r} is not a number (a regression target needs one on every row)")
        value_range = settings.value_range or (float(values.min()), float(values.max()))
        return Task(kind, settings.metric or "rmse", value_range=value_range, **common), notes
    classes = class_order(set(cells))
    if kind == "binary" and len(classes) != 2:
        raise KaggleTLError(f"setting task: binary needs two classes, {where} has {len(classes)}: {list(classes[:5])}")
    positive = ""
    if kind == "binary":
        positive = settings.positive or classes[1]
        if positive not in classes:
            raise KaggleTLError(f"setting positive_class: {positive!r} is not one of the classes {list(classes)}")
    k, catch_all = 0, ""
    if kind == "topk":
        k = settings.top_k or max(1, len(first_sample_cell.split()))
        catch_all = settings.catch_all
        if catch_all and catch_all not in classes:
            raise KaggleTLError(f"setting catch_all: {catch_all!r} is not a label in {where}")
    metric = settings.metric or (f"map@{k}" if kind == "topk" else default_metrics(kind)[0])
    return Task(kind, metric, classes=classes, positive=positive, k=k, catch_all=catch_all, **common), notes


def _are_tags(distinct: set[str]) -> bool:
    """True when the cells are sets of space-separated tags: the cells are more than the words they are made
    of (combinations), a word of a several-word cell is a cell of its own ("13 51" beside "51"), or a word
    takes two places ("a b", "b c"). Class names with spaces share words in one place ("Common Chickweed",
    "Common wheat") and are not made of other classes."""
    several = [cell.split() for cell in distinct if len(cell.split()) > 1]
    if not several:
        return False
    places: dict[str, int] = {}
    moved = any(places.setdefault(word, place) != place for words in several for place, word in enumerate(words))
    return _combined(distinct) or moved or any(word in distinct for words in several for word in words)


def _combined(distinct: set[str]) -> bool:
    """More distinct cells than distinct words: the cells are combinations of a few tags (planet, imet)."""
    return len({word for cell in distinct for word in cell.split()}) < len(distinct)


def _is_value_cell(cell: str) -> bool:
    """A number that is neither an integer nor a probability (Pawpularity's 64.06): the sample submits values."""
    try:
        value = float(cell)
    except ValueError:
        return False
    return math.isfinite(value) and value != round(value) and not 0 < value < 1


def _catch_all_note(sample_cells: pd.Series, labels: set[str], where: str) -> list[str]:
    """A note when every sample cell ranks the same training label first (new_whale): a catch-all class."""
    firsts = {str(cell).split()[0] for cell in sample_cells if str(cell).split()}
    if len(firsts) != 1 or next(iter(firsts)) not in labels:
        return []
    label = next(iter(firsts))
    return [f"{where}: every sample cell ranks {label!r} first: --catch-all {label} reads it as 'none of the known "
            f"ones' (its score tuned per fold); without it, it is one label among the others"]


def _guess_kind(cells: pd.Series, first_sample_cell: str, where: str) -> tuple[str, str]:
    """The kind one target column's training cells and the sample's first cell suggest; a note where it chose."""
    distinct = set(cells)
    if _are_tags(distinct):
        note = "" if _combined(distinct) else (
            f"{where}: cells of {cells.name!r} with spaces read as tags (multilabel: 'a b' is the tags a and b); "
            "--task multiclass reads each cell as one label")
        return "multilabel", note
    # A ranked sample cell ("new_whale w_1 w_2"), unless the labels themselves have spaces ("Sugar beet").
    if len(first_sample_cell.split()) > 1 and all(len(cell.split()) == 1 for cell in distinct):
        return "topk", ""
    values = _numbers(cells)
    numeric = pd.to_numeric(cells, errors="coerce").notna()
    if values is None and numeric.any():
        text = cells[~numeric].iloc[0]
        number = cells[numeric].iloc[0]
        raise KaggleTLError(f"{where}: labels of mixed types in {cells.name!r}: numbers such as {number!r} and text "
                            f"such as {text!r} (row {int(np.flatnonzero(~numeric)[0]) + 2}); make them one kind")
    if values is not None:
        integers = bool(np.all(values == np.round(values)))
        if not integers:
            return "regression", ""
        if set(np.unique(values)) <= {0.0, 1.0} and len(distinct) == 2:
            return "binary", ""
        if _is_value_cell(first_sample_cell):
            return "regression", (f"{where}: integers in {cells.name!r} read as a value (regression), as the sample "
                                  f"submits values such as {first_sample_cell!r}; --task multiclass or --task "
                                  "ordinal reads them as classes")
        if len(distinct) > MAX_INTEGER_CLASSES:
            return "regression", (f"{where}: {len(distinct)} distinct integers in {cells.name!r} read as a value "
                                  f"(regression); --task multiclass or --task ordinal reads them as classes")
        return "multiclass", (f"{where}: integers {sorted(distinct, key=float)[:6]} in {cells.name!r} read as classes "
                              f"(multiclass); --task ordinal reads them as grades (QWK), --task regression as a value")
    if len(distinct) == 2 and _is_fraction(first_sample_cell):
        return "binary", ""
    return "multiclass", ""


def _one_hot(targets: pd.DataFrame, settings: TaskSettings, where: str, common: dict) -> Task:
    values = targets.apply(pd.to_numeric, errors="coerce")
    if values.isna().to_numpy().any() or not values.isin([0, 1]).to_numpy().all():
        row = int(np.flatnonzero((values.isna() | ~values.isin([0, 1])).to_numpy().any(axis=1))[0])
        raise KaggleTLError(f"{where}: row {row + 2} ({targets.index[row]}): the label columns "
                            f"{list(targets.columns[:4])}... must hold 0 or 1")
    per_row = values.to_numpy().sum(axis=1)
    kind = settings.task or ("multiclass" if np.all(per_row == 1) else "multilabel")
    if kind == "multiclass" and not np.all(per_row == 1):
        row = int(np.flatnonzero(per_row != 1)[0])
        raise KaggleTLError(f"{where}: row {row + 2} ({targets.index[row]}) has {int(per_row[row])} classes set; "
                            "a multiclass row has exactly one (--task multilabel for tags)")
    # One-hot label columns (plant-pathology-2020, ranzcr-clip) are scored by the mean column ROC AUC.
    return Task(kind, settings.metric or "roc_auc", classes=tuple(targets.columns), **common)
