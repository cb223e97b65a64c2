"""Side features: the numeric columns that both the labels CSV and ``test.csv`` hold, beside the images.

Some competitions ship more than images: Pawpularity's 12 photo flags, Leaf Classification's 192
shape and texture values, iWildCam's image sizes. A column is a side feature when ``test.csv`` has it
too (a column only the labels hold is a label or was made from one), it is not an id or label
column, and every one of its cells, train and test, is a finite number; a column that is constant
over the training rows says nothing and is left out. What is left out, and why, is one note.

The values join every view's image features (``SideFeatures.join``), standardised by the training
rows' mean and spread (no label is read), so a head's own transform sees them on the scale of the
CNN features. ``digest`` covers the columns and every value: the fits and predictions keys and the
data fingerprint include it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kaggle_tl.data.csvs import locate_csv, read_text_csv
from kaggle_tl.data.folders import strip_extension
from kaggle_tl.data.layouts import TEST_CSV
from kaggle_tl.errors import KaggleTLError

__all__ = ["SideFeatures", "read_side_features"]


@dataclass(frozen=True)
class SideFeatures:
    columns: tuple[str, ...]
    train: np.ndarray  # (N, T) float64, the training rows in Competition.train_ids order
    test: np.ndarray  # (M, T) float64, the test rows in submission order
    sources: tuple[str, str]  # the labels CSV's and test.csv's file names

    def rows(self, keep: np.ndarray) -> "SideFeatures":
        """These side features for the training rows ``keep`` (images left out)."""
        return SideFeatures(self.columns, self.train[keep], self.test, self.sources)

    def digest(self, split: str) -> str:
        """What the ``split``'s values are: the column names and every value, bit for bit."""
        values = np.ascontiguousarray(getattr(self, split), dtype=np.float64)
        h = hashlib.sha1(repr((self.columns, values.shape)).encode())
        h.update(values.tobytes())
        return h.hexdigest()[:16]

    def join(self, features: np.ndarray, split: str) -> np.ndarray:
        """``features`` (rows of ``split``) with the standardised side columns after them, in their dtype."""
        mean, scale = self.train.mean(axis=0), self.train.std(axis=0)  # constant columns are never kept
        side = (getattr(self, split) - mean) / scale
        return np.hstack([features, side.astype(features.dtype)])

    def describe(self) -> str:
        shown = ", ".join(self.columns[:4]) + (", ..." if len(self.columns) > 4 else "")
        return (f"side features: {len(self.columns)} numeric column(s) of {self.sources[0]} and {self.sources[1]} "
                f"({shown}) join the image features (--no-tabular leaves them out)")


def read_side_features(root, labels_csv: str, id_column: str, label_columns: tuple[str, ...],
                       train_ids: list[str], test_id_column: str, test_ids: list[str]
                       ) -> tuple[SideFeatures | None, list[str]]:
    """The side features of a competition whose labels came from ``labels_csv`` (None without one), and notes.

    ``train_ids`` are the ids as the labels CSV writes them (its ``id_column``), ``test_ids`` the
    sample submission's; test.csv's rows are matched to them by its ``test_id_column`` (else the
    labels' id column), with or without a file extension on either side.
    """
    test_path = locate_csv(root, TEST_CSV)
    if not labels_csv or not test_path.is_file():
        return None, []
    labels_path = locate_csv(root, labels_csv)
    train_frame = read_text_csv(labels_path, "labels", required=[id_column])
    test_frame = read_text_csv(test_path, "test table", required=[])
    test_id = next((c for c in (test_id_column, id_column) if c in test_frame.columns), None)
    ids = {id_column, test_id_column, *label_columns}
    shared = [c for c in train_frame.columns if c in test_frame.columns and c not in ids]
    if test_id is None or not shared:
        return None, []
    train_rows = _rows(train_frame, id_column, train_ids, labels_path)
    test_rows = _rows(test_frame, test_id, test_ids, test_path)
    if test_rows is None:
        return None, [f"{test_path.name} does not list every test id of the sample submission: its columns "
                      f"{shared[:4]} are not used as side features"]
    kept, left_out = [], []
    for column in shared:
        train = pd.to_numeric(train_rows[column], errors="coerce").to_numpy(dtype=np.float64)
        test = pd.to_numeric(test_rows[column], errors="coerce").to_numpy(dtype=np.float64)
        if not (np.isfinite(train).all() and np.isfinite(test).all()):
            left_out.append(f"{column} (not a number in every row)")
        elif np.ptp(train) == 0:
            left_out.append(f"{column} (constant)")
        else:
            kept.append((column, train, test))
    notes = [f"columns of {labels_path.name} and {test_path.name} left out of the side features: "
             f"{', '.join(left_out[:5])}{', ...' if len(left_out) > 5 else ''}"] if left_out else []
    if not kept:
        return None, notes
    side = SideFeatures(tuple(c for c, _, _ in kept), np.stack([t for _, t, _ in kept], axis=1),
                        np.stack([t for _, _, t in kept], axis=1), (labels_path.name, test_path.name))
    return side, notes


def _rows(frame: pd.DataFrame, id_column: str, ids: list[str], path) -> pd.DataFrame | None:
    """``frame``'s rows for ``ids`` in their order (matched as written, else without file extensions), or None."""
    as_written = frame[id_column]
    if as_written.duplicated().any():
        raise KaggleTLError(f"{path}: id {as_written[as_written.duplicated()].iloc[0]!r} appears twice in column "
                            f"{id_column!r}")
    for key in (lambda i: i, strip_extension):
        keys = as_written.map(key)
        wanted = [key(i) for i in ids]
        if not keys.duplicated().any() and set(wanted) <= set(keys):
            return frame.set_index(keys).loc[wanted].reset_index(drop=True)
    return None
