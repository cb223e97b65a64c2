#!/usr/bin/env python
"""Honest vs fold-stopped dense head: CV log loss, accuracy and time of 10 fits (5 folds x 2 views).

    python benchmarks/early_stopping.py --features DIR [--prefix cifar_small_lite0] [--y cifar_small_y.npy]

``early_stopping="inner"`` (the default) stops on 10% of each fold's training rows;
``"fold"`` stops on the held-out fold it is then scored on (the public write-ups' way). The gap
between the two CV scores is how optimistic the fold-stopped number is.
"""
from __future__ import annotations

import argparse
import time

from _common import describe_machine, load_line, machine_info, print_table
from threads import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features")
    parser.add_argument("--prefix", default="cifar_small_lite0")
    parser.add_argument("--y", default="cifar_small_y.npy")
    args = parser.parse_args()

    from kaggle_tl.cv import cross_validate, make_folds
    from kaggle_tl.heads.base import create_head
    from kaggle_tl.tasks import metrics

    train, test, y, source = load(args.features, args.prefix, args.y)
    folds = make_folds(y, 5, 42)
    print(describe_machine(machine_info()))
    print(f"data: {source}")
    rows = []
    for mode in ("inner", "fold"):
        head = create_head("dense", random_state=42, early_stopping=mode)
        t = time.perf_counter()
        scores = metrics.model_score(cross_validate(head, train, test, y, folds, int(y.max()) + 1))
        rows.append({"early_stopping": mode, "cv_logloss": round(scores.logloss, 4),
                     "logloss_se": round(scores.logloss_se, 4), "cv_accuracy": round(scores.accuracy, 4),
                     "seconds_10_fits": round(time.perf_counter() - t, 1), "load": load_line()})
    print_table(rows, title="dense head, 5 folds x 2 views")


if __name__ == "__main__":
    main()
