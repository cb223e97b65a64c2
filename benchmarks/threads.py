#!/usr/bin/env python
"""Thread discipline for head fits: serial vs parallel fold x view fits, 1 vs 2 BLAS threads each.

    python benchmarks/threads.py --features DIR [--heads logreg,svm,dense] [--json out.json]

DIR holds ``<prefix>_train_original.npy``, ``<prefix>_train_hflip.npy``, ``<prefix>_test_*.npy``
and ``<prefix>_y.npy`` style files (see --prefix); without --features, synthetic blobs of the
same shape (5,000 x 1,280, 10 classes) are used. Every variant runs the same 10 fits
(5 folds x 2 views) through kaggle_tl.cv.cross_validate in one process, side by side, and the
predictions of every variant are checked to be identical to the first's.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from _common import describe_machine, load_line, machine_info, print_table, write_json


def load(folder: str | None, prefix: str, y_name: str):
    if folder is None:
        rng = np.random.default_rng(0)
        y = rng.integers(0, 10, 5000)
        centres = rng.normal(size=(10, 1280)).astype(np.float32)
        train = {v: centres[y] + rng.normal(scale=3.0, size=(5000, 1280)).astype(np.float32)
                 for v in ("original", "hflip")}
        test = {v: rng.normal(size=(2000, 1280)).astype(np.float32) for v in ("original", "hflip")}
        return train, test, y, "synthetic blobs 5000 x 1280"
    d = Path(folder)
    train = {v: np.load(d / f"{prefix}_train_{v}.npy") for v in ("original", "hflip")}
    test = {v: np.load(d / f"{prefix}_test_{v}.npy") for v in ("original", "hflip")}
    return train, test, np.load(d / y_name), f"{folder}/{prefix}_*"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features")
    parser.add_argument("--prefix", default="cifar_small_lite0")
    parser.add_argument("--y", default="cifar_small_y.npy")
    parser.add_argument("--heads", default="logreg")
    parser.add_argument("--json")
    args = parser.parse_args()

    from kaggle_tl.cv import cross_validate, make_folds
    from kaggle_tl.heads.base import create_head
    from kaggle_tl.tasks import metrics

    train, test, y, source = load(args.features, args.prefix, args.y)
    folds = make_folds(y, 5, 42)
    info = machine_info()
    print(describe_machine(info))
    print(f"data: {source}; load before: {load_line()}")
    rows = []
    for head_name in args.heads.split(","):
        reference = None
        for n_jobs, blas in ((1, 1), (1, 2), (2, 1)):
            head = create_head(head_name, random_state=42)
            t = time.perf_counter()
            preds = cross_validate(head, train, test, y, folds, int(y.max()) + 1, n_jobs=n_jobs, blas_threads=blas)
            seconds = time.perf_counter() - t
            same = reference is None or (np.allclose(preds.oof, reference.oof, atol=1e-6))
            reference = reference or preds
            score = metrics.model_score(preds)
            rows.append({"head": head_name, "jobs": n_jobs, "blas_threads": blas, "seconds_10_fits": round(seconds, 2),
                         "cv_logloss": round(score.logloss, 4), "same_predictions": same, "load": load_line()})
    print_table(rows, title="10 fits (5 folds x 2 views) per variant")
    write_json(args.json, {"machine": info, "data": source, "rows": rows})


if __name__ == "__main__":
    main()
