"""Build, validate and write submission CSVs that match sample_submission.csv exactly."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from kaggle_tl.cache import atomic_write_bytes
from kaggle_tl.cv import clip_proba
from kaggle_tl.errors import KaggleTLError

ROW_SUM_TOLERANCE = 1e-6


def build_submission(test_proba: np.ndarray, test_ids: list[str], classes: list[str],
                     sample: pd.DataFrame, id_column: str = "id") -> pd.DataFrame:
    """Rows in sample_submission's id order, columns in its order, probabilities clipped and renormalised."""
    proba = clip_proba(test_proba)
    frame = pd.DataFrame(proba, columns=classes)
    frame.insert(0, id_column, list(test_ids))
    order = sample[id_column].astype(str).tolist()
    frame = frame.set_index(id_column).reindex(order).reset_index()
    return frame[list(sample.columns)]


def validate_submission(frame: pd.DataFrame, sample: pd.DataFrame, id_column: str = "id",
                        source: str = "submission") -> None:
    """Raise KaggleTLError naming the first problem: the checks a Kaggle grader makes."""
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
    try:
        values = frame.drop(columns=[id_column]).to_numpy(dtype=np.float64)
    except (ValueError, TypeError):
        raise KaggleTLError(f"{source}: probability columns hold non-numeric values") from None
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        raise KaggleTLError(f"{source}: row for id {ids.iloc[np.argmax(bad)]!r} has a NaN or infinite value")
    out_of_range = ((values < 0) | (values > 1)).any(axis=1)
    if out_of_range.any():
        raise KaggleTLError(f"{source}: row for id {ids.iloc[np.argmax(out_of_range)]!r} has a value outside [0, 1]")
    off = np.abs(values.sum(axis=1) - 1) > ROW_SUM_TOLERANCE
    if off.any():
        row = int(np.argmax(off))
        raise KaggleTLError(f"{source}: row for id {ids.iloc[row]!r} sums to {values[row].sum():.6f}, not 1")


def write_submission(frame: pd.DataFrame, sample: pd.DataFrame, directory: str | Path, stem: str,
                     id_column: str = "id") -> Path:
    """Validate, then write ``<directory>/<stem>.csv`` atomically, never overwriting a file."""
    validate_submission(frame, sample, id_column, source=stem)
    directory = Path(directory)
    buffer = io.StringIO()
    # %.9g keeps probabilities exact enough for log loss while the file stays small.
    frame.to_csv(buffer, index=False, float_format="%.9g")
    data = buffer.getvalue().encode("utf-8")
    for attempt in range(1000):
        path = directory / (f"{stem}.csv" if attempt == 0 else f"{stem}-{attempt}.csv")
        try:
            atomic_write_bytes(path, data, overwrite=False)
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise KaggleTLError(f"{path}: cannot write submission ({exc.strerror or exc})") from None
    raise KaggleTLError(f"{directory}: too many submissions named {stem}")
