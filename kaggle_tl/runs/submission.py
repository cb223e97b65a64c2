"""Build, validate and write submission CSVs that match sample_submission.csv exactly."""
from __future__ import annotations

import dataclasses
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kaggle_tl.data.csvs import read_text_csv
from kaggle_tl.errors import KaggleTLError
from kaggle_tl.files import atomic_write_bytes, disk_errors_as_one_line, ensure_writable, read_json, to_json
from kaggle_tl.tasks.detect import TaskSettings, detect_task
from kaggle_tl.tasks.metrics import KAGGLE_EPS, Score, clip_proba, row_logloss
from kaggle_tl.tasks.task import Task

ROW_SUM_TOLERANCE = 1e-6


def build_submission(task: Task, test_prediction: np.ndarray, decision: np.ndarray, test_ids: list[str],
                     sample: pd.DataFrame) -> pd.DataFrame:
    """Rows in sample_submission's id order, columns in its order, cells as the task decides them
    (clipped probabilities, P(positive), a label, a value in range, tags, the top k)."""
    cells = task.cells(task.decide(test_prediction, decision))
    frame = pd.DataFrame({task.id_column: list(test_ids), **cells})
    order = sample[task.id_column].astype(str).tolist()
    frame = frame.set_index(task.id_column).reindex(order).reset_index()
    return frame[list(sample.columns)]


def validate_submission(frame: pd.DataFrame, sample: pd.DataFrame, task: Task, source: str = "submission") -> None:
    """Raise KaggleTLError naming the first problem: the checks a Kaggle grader makes, for the task's cells."""
    id_column = task.id_column
    if list(frame.columns) != list(sample.columns):
        missing = [c for c in sample.columns if c not in frame.columns]
        extra = [c for c in frame.columns if c not in sample.columns]
        raise KaggleTLError(f"{source}: columns differ from the sample submission "
                            f"(missing {missing[:5]}, extra {extra[:5]}, or in another order)")
    ids = frame[id_column].astype(str)
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        raise KaggleTLError(f"{source}: id {duplicated.iloc[0]!r} appears more than once")
    expected = set(sample[id_column].astype(str))
    missing_ids, extra_ids = expected - set(ids), set(ids) - expected
    if missing_ids or extra_ids:
        raise KaggleTLError(f"{source}: {len(missing_ids)} id(s) missing (e.g. {sorted(missing_ids)[:3]}), "
                            f"{len(extra_ids)} unexpected (e.g. {sorted(extra_ids)[:3]})")
    targets = frame[list(task.target_columns)]
    empty = targets.isna().to_numpy().any(axis=1) | (targets.astype(str) == "").to_numpy().any(axis=1)
    if empty.any():
        raise KaggleTLError(f"{source}: row for id {ids.iloc[np.argmax(empty)]!r} has an empty or NaN cell")
    if task.form in ("label", "tags", "ranked"):
        task.read_cells(frame.astype(str), source)  # every label, tag or ranked label one of the task's classes
        return
    values = task.read_cells(frame, source).reshape(len(frame), -1)
    if task.form == "value":
        low, high = task.value_range or (-np.inf, np.inf)
        outside = ((values < low) | (values > high)).any(axis=1)
        if outside.any():
            raise KaggleTLError(f"{source}: row for id {ids.iloc[np.argmax(outside)]!r} has a value outside "
                                f"[{low:g}, {high:g}]")
        return
    out_of_range = ((values < 0) | (values > 1)).any(axis=1)
    if out_of_range.any():
        raise KaggleTLError(f"{source}: row for id {ids.iloc[np.argmax(out_of_range)]!r} has a value outside [0, 1]")
    off = np.abs(values.sum(axis=1) - 1) > ROW_SUM_TOLERANCE
    if task.form == "proba" and off.any():
        row = int(np.argmax(off))
        raise KaggleTLError(f"{source}: row for id {ids.iloc[row]!r} sums to {values[row].sum():.6f}, not 1")


def submission_folder(submissions_dir: str | Path, competition: str | Path) -> Path:
    """Where a competition's submissions go: grouped by its folder's name, never mixed across data sets."""
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "-", Path(competition).name).strip(".-") or "competition"
    return Path(submissions_dir) / name


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.StringIO()
    # %.9g keeps probabilities exact enough for log loss while the file stays small.
    frame.to_csv(buffer, index=False, float_format="%.9g")
    return buffer.getvalue().encode("utf-8")


def write_submission(frame: pd.DataFrame, sample: pd.DataFrame, directory: str | Path, stem: str,
                     task: Task) -> Path:
    """Validate, then write ``<directory>/<stem>.csv`` atomically, never overwriting a file.

    Ids are written exactly as in the sample submission (the grader matches them byte for
    byte), so they are quoted as CSV needs but never altered or formula-escaped. When the name
    is taken (by the CSV or its ``.json`` sidecar), ``<stem>-1.csv``, ``<stem>-2.csv``... is used.
    """
    validate_submission(frame, sample, task, source=stem)
    directory = ensure_writable(directory, "submissions")  # a file there is named as one, not as a full folder
    data = _csv_bytes(frame)
    for attempt in range(1000):
        path = directory / (f"{stem}.csv" if attempt == 0 else f"{stem}-{attempt}.csv")
        if SubmissionInfo.path_for(path).exists():  # a sidecar left by a deleted submission: keep it
            continue
        try:
            atomic_write_bytes(path, data, overwrite=False)
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise KaggleTLError(f"{path}: cannot write submission ({exc.strerror or exc})") from None
    raise KaggleTLError(f"{directory}: too many submissions named {stem}")


def write_submission_file(frame: pd.DataFrame, sample: pd.DataFrame, destination: str | Path, task: Task) -> Path:
    """Validate, then write to exactly ``destination``, replacing it atomically if it exists.

    What a Kaggle notebook's grader reads (/kaggle/working/submission.csv): that one path is
    replaced, nothing beside it is touched.
    """
    destination = Path(destination)
    validate_submission(frame, sample, task, source=str(destination))
    with disk_errors_as_one_line(destination):
        try:
            atomic_write_bytes(destination, _csv_bytes(frame))
        except OSError as exc:
            raise KaggleTLError(f"{destination}: cannot write the submission file ({exc.strerror or exc})") from None
    return destination


def check_submission_file(path: str | Path) -> None:
    """One line, before any work, unless ``path`` can be written (its folder exists and is writable)."""
    path = Path(path)
    if path.is_dir():
        raise KaggleTLError(f"{path}: submission_file names a folder; give a file path such as {path / 'submission.csv'}")
    ensure_writable(path.parent, "submission_file's")


@dataclass
class SubmissionInfo:
    """The JSON beside a submission CSV: where it came from and the CV score it was chosen on.

    Written for a run's model and for an ensemble's strategy alike (``source`` says which).
    """

    source: str  # "run" or "ensemble"
    source_id: str  # the run id or the ensemble id
    source_dir: str  # the run's or the ensemble's folder
    model: str  # the model's name, or the strategy
    score: Score  # CV score (nested CV for a fitted strategy)
    data_fingerprint: str
    optimistic: bool = False
    random_weights: bool = False
    description: str = ""
    models: list[str] = field(default_factory=list)  # an ensemble's models, <run_id>/<model>

    @staticmethod
    def path_for(csv_path: Path) -> Path:
        return Path(csv_path).with_suffix(".json")

    def save(self, csv_path: Path) -> Path:
        values = {**dataclasses.asdict(self), "score": self.score.columns()}
        path = self.path_for(csv_path)
        atomic_write_bytes(path, to_json(values), overwrite=False)
        return path

    @classmethod
    def load(cls, csv_path: str | Path) -> "SubmissionInfo":
        path = cls.path_for(Path(csv_path))
        values: dict[str, Any] = read_json(path, "submission note")
        try:
            return cls(**{**values, "score": Score.from_columns(values["score"])})
        except (TypeError, KeyError) as exc:
            raise KaggleTLError(f"{path}: damaged submission note ({exc})") from None


# --------------------------------------------------------------------------- scoring a submission file
SCORE_ROW_SUM_TOLERANCE = 1e-3  # hand-written files with 4 decimals still pass; Kaggle rescales rows anyway


def read_sample_submission(path: str | Path, id_column: str = "id") -> pd.DataFrame:
    """A sample submission as strings (ids like "00123" keep their zeros), checked for its id column."""
    return read_text_csv(Path(path), "sample submission", required=[id_column])


def _first_duplicate(ids: pd.Series, path: Path, column: str) -> None:
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        value = duplicated.iloc[0]
        lines = [i + 2 for i in np.flatnonzero(ids.to_numpy() == value)]  # +2: header is line 1
        raise KaggleTLError(f"{path}: {column} {value!r} appears more than once (lines {lines[0]} and {lines[1]})")


def _probabilities(frame: pd.DataFrame, classes: list[str], id_column: str, path: Path) -> np.ndarray:
    """The class columns as floats, with the first non-numeric, missing or out-of-range cell named."""
    ids = frame[id_column].to_numpy()
    values = np.empty((len(frame), len(classes)))
    for j, column in enumerate(classes):
        text = frame[column].str.strip()
        numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
        unparsed = np.isnan(numbers) & ~text.str.lower().isin(["", "nan", "na", "null"]).to_numpy()
        if unparsed.any():
            row = int(np.argmax(unparsed))
            raise KaggleTLError(f"{path}: non-numeric value {text.iloc[row]!r} in column {column!r} "
                                f"for id {ids[row]!r} (line {row + 2})")
        values[:, j] = numbers
    checks = [(~np.isfinite(values), "an empty, NaN or infinite value"),
              ((values < 0) | (values > 1), "a value outside [0, 1]")]
    for bad, what in checks:
        if bad.any():
            row, j = np.unravel_index(int(np.argmax(bad)), bad.shape)
            raise KaggleTLError(f"{path}: id {ids[row]!r} (line {row + 2}) has {what} in column {classes[j]!r}")
    off = np.abs(values.sum(axis=1) - 1.0) > SCORE_ROW_SUM_TOLERANCE
    if off.any():
        row = int(np.argmax(off))
        raise KaggleTLError(f"{path}: row for id {ids[row]!r} (line {row + 2}) sums to {values[row].sum():.6f}, "
                            f"not 1 (tolerance {SCORE_ROW_SUM_TOLERANCE:g})")
    return values


def score_submission(submission: str | Path, labels: str | Path, sample: str | Path | None = None,
                     id_column: str = "id", label_column: str = "label",
                     settings: TaskSettings = TaskSettings()) -> dict[str, float | str]:
    """Score a submission CSV against an id,label file the way Kaggle's grader does.

    Format first, stopping at the first problem with one line naming the file and row: the id
    column; every labelled id exactly once and no other. A submission with one probability column
    per class (the sample's when given, else its own, which must include every label): numeric
    values in [0, 1], no NaN, rows summing to 1 within SCORE_ROW_SUM_TOLERANCE, then multi-class log
    loss after Kaggle's clipping at 1e-15 (metrics.KAGGLE_EPS) and row rescaling, and accuracy of the
    argmax. A submission with one target column (a label, P(positive), a value, tags, the top k): the
    task read from the labels and that column (``settings`` as ``--task``/``--metric``), scored by its
    metric.

    Returns
    -------
    {"metric", "score", "rows", "classes"}, and "logloss", "accuracy" for probability columns
    """
    submission, labels = Path(submission), Path(labels)
    truth = read_text_csv(labels, "labels", required=[id_column, label_column])
    _first_duplicate(truth[id_column], labels, id_column)
    frame = read_text_csv(submission, "submission", required=[id_column])
    if sample is not None:
        expected = [c for c in read_sample_submission(sample, id_column).columns if c != id_column]
        missing = [c for c in expected if c not in frame.columns]
        if missing:
            raise KaggleTLError(f"{submission}: missing column(s) {missing[:5]} of the sample submission {sample}")
        extra = [c for c in frame.columns if c not in expected and c != id_column]
        if extra:
            raise KaggleTLError(f"{submission}: column(s) {extra[:5]} are not in the sample submission {sample}")
        columns = expected
    else:
        columns = [c for c in frame.columns if c != id_column]

    ids = frame[id_column]
    _first_duplicate(ids, submission, id_column)
    missing_ids = sorted(set(truth[id_column]) - set(ids))
    if missing_ids:
        raise KaggleTLError(f"{submission}: {len(missing_ids)} labelled id(s) missing, e.g. {missing_ids[:3]}")
    extra_ids = ids[~ids.isin(set(truth[id_column]))]
    if len(extra_ids):
        raise KaggleTLError(f"{submission}: {len(extra_ids)} id(s) not in {labels.name}, e.g. "
                            f"{extra_ids.iloc[:3].tolist()} (first on line {extra_ids.index[0] + 2})")
    order = pd.Index(ids).get_indexer(truth[id_column])
    if len(columns) == 1:
        return _score_cells(frame.iloc[order].reset_index(drop=True), truth, columns[0], id_column, label_column,
                            settings, submission, labels)
    unknown = sorted(set(truth[label_column]) - set(columns))
    if unknown:
        raise KaggleTLError(f"{submission}: missing column(s) {unknown[:5]} for labels in {labels}")
    proba = _probabilities(frame, columns, id_column, submission)
    y = pd.Index(columns).get_indexer(truth[label_column])
    proba = clip_proba(proba[order], KAGGLE_EPS)  # the grader's clipping, not the CV scores' (metrics.py)
    logloss = float(row_logloss(y, proba, KAGGLE_EPS).mean())
    return {"metric": "log_loss", "score": logloss, "logloss": logloss,
            "accuracy": float((proba.argmax(axis=1) == y).mean()), "rows": len(y), "classes": len(columns)}


def _score_cells(frame: pd.DataFrame, truth: pd.DataFrame, column: str, id_column: str, label_column: str,
                 settings: TaskSettings, submission: Path, labels: Path) -> dict[str, float | str]:
    """One target column: the task read from the labels (and the submission's cells), scored by its metric."""
    targets = truth[[label_column]].set_axis(truth[id_column]).rename(columns={label_column: column})
    task, _ = detect_task(targets, frame[[id_column, column]], settings, where=str(labels))
    y = task.encode(targets, str(labels))
    cells = task.read_cells(frame, str(submission))
    if task.form in ("p_positive", "tag_proba"):
        outside = np.flatnonzero(((cells < 0) | (cells > 1)).reshape(len(frame), -1).any(axis=1))
        if len(outside):
            raise KaggleTLError(f"{submission}: id {frame[id_column].iloc[outside[0]]!r} has a value outside [0, 1]")
    return {"metric": task.metric_name, "score": task.metric(task.truth(y), cells), "rows": len(y),
            "classes": task.n_classes}
