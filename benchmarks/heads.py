"""Heads: time, CV log loss and accuracy of 10 fits (5 folds x 2 views) of each head.

    python benchmarks/heads.py [--features DIR] [--baseline OLD_HEADS.py [--baseline-views N]] [--sizes demo,10k]

Two data sizes, as in the competitor's loop (issue 11):
  demo   300 rows x 1280 features, 4 classes (240-row training folds): 75 images of each of the
         first 4 classes of CIFAR-10-small, EfficientNet-Lite0 features, views original / hflip.
  10k    10,000 rows x 1280, 10 classes: the 5,000 images' two views stacked (labels repeated; both
         copies of an image in the same fold, so no image is scored by a head that trained on it).
         Its two "views" are the two stacking orders (original first, hflip first): same rows.
  5k     (optional) 5,000 rows x 1280, views original / hflip: the CIFAR-10-small run itself.

Features are read from DIR (default /work/feats): cifar_small_lite0_train_{original,hflip}.npy and
cifar_small_y.npy; when they are missing, synthetic Gaussian blobs of the same shapes stand in and
the output says so. Each fit predicts its held-out fold; the scores are those of the view-averaged
out-of-fold probabilities (kaggle_tl.tasks.metrics.score), and of the first view's alone (``*_view1``: the
figures to compare with a baseline fitted on one view). All fits run under threadpoolctl's
``threadpool_limits(1)`` (one BLAS/OpenMP thread); the old Keras dense head's TensorFlow pools are
not under threadpoolctl and keep TensorFlow's defaults (printed).

Times: wall clock, and this process's CPU time (all its threads). On a machine shared with other
work, CPU time is the closer estimate of a quiet machine's wall time for a single-threaded head.

``--baseline FILE`` also times the heads of another kaggle_tl.heads.base module, e.g. the ones this
benchmark replaced: ``git show e0a6357:kaggle_tl/heads.py > /tmp/old_heads.py``. The old SVM
head takes ~50 CPU-s a fit at 10k; ``--baseline-views 1`` fits the baseline on the first view
only (5 fits; at 10k the two views hold the same rows) and reports 10-fit times as 2 x measured,
marked "est.".
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (puts this checkout's kaggle_tl on the path)

TARGETS_S = {("demo", "dense"): 10.0, ("10k", "dense"): 20.0, ("10k", "svm"): 60.0}  # issue 11, 10 fits


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", default="/work/feats", help="folder of cached Lite0 features (default %(default)s)")
    p.add_argument("--baseline", help="a heads.py to time as well, e.g. the heads before this change")
    p.add_argument("--sizes", default="demo,10k", help="data sizes: demo, 5k, 10k (default %(default)s)")
    p.add_argument("--heads", default="dense,svm,logreg", help="heads (default %(default)s)")
    p.add_argument("--baseline-views", type=int, default=2, help="views the baseline is fitted on (default 2)")
    p.add_argument("--json", help="also write the results here")
    return p.parse_args()


def load_features(folder: Path) -> tuple[dict[str, np.ndarray], np.ndarray, str]:
    """The two views' training features and labels; synthetic blobs when the files are missing."""
    names = {view: folder / f"cifar_small_lite0_train_{view}.npy" for view in ("original", "hflip")}
    labels = folder / "cifar_small_y.npy"
    if all(path.is_file() for path in [*names.values(), labels]):
        return {view: np.load(path) for view, path in names.items()}, np.load(labels), f"CIFAR-10-small Lite0 features from {folder}"
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 500)
    centres = rng.normal(size=(10, 1280))
    original = np.maximum(centres[y] + rng.normal(scale=4.0, size=(len(y), 1280)), 0).astype(np.float32)
    hflip = np.maximum(original + rng.normal(scale=0.5, size=original.shape), 0).astype(np.float32)
    return {"original": original, "hflip": hflip}, y, f"SYNTHETIC Gaussian blobs (no features in {folder})"


def datasets(features: dict[str, np.ndarray], y: np.ndarray, sizes: list[str]):
    """(size, {view: X}, y, folds) for each requested size; folds stratified, fixed seed."""
    from sklearn.model_selection import StratifiedKFold

    def folds_of(labels):
        folds = np.empty(len(labels), int)
        for k, (_, rows) in enumerate(StratifiedKFold(5, shuffle=True, random_state=0).split(labels, labels)):
            folds[rows] = k
        return folds

    if "demo" in sizes:
        rows = np.concatenate([np.flatnonzero(y == c)[:75] for c in range(4)])
        yield "demo", {view: X[rows] for view, X in features.items()}, y[rows], folds_of(y[rows])
    if "5k" in sizes:
        yield "5k", features, y, folds_of(y)
    if "10k" in sizes:
        original, hflip = features["original"], features["hflip"]
        folds = folds_of(y)
        yield ("10k", {"original+hflip": np.vstack([original, hflip]), "hflip+original": np.vstack([hflip, original])},
               np.concatenate([y, y]), np.concatenate([folds, folds]))


def head_variants(heads_module, names: list[str], label: str):
    """(head, implementation, factory, passes validation_data) for one heads module."""
    if hasattr(heads_module, "create_head"):
        make = heads_module.create_head
        if "dense" in names:
            yield "dense", f"{label}, inner-stopped", lambda: make("dense"), False
            yield "dense", f"{label}, fold-stopped", lambda: make("dense", early_stopping="fold"), True
        for name in (n for n in names if n != "dense"):
            yield name, label, lambda name=name: make(name), False
    else:  # the heads before the registry: fit's validation_data was always the CV fold
        classes = {"dense": heads_module.DenseHead, "svm": heads_module.SVMHead, "logreg": heads_module.LogRegHead}
        for name in names:
            yield name, label + (", fold-stopped" if name == "dense" else ""), classes[name], name == "dense"


def time_head(factory, passes_validation: bool, features_by_view: dict, y: np.ndarray, folds: np.ndarray) -> dict:
    from kaggle_tl.tasks.metrics import score

    n_classes = int(y.max()) + 1
    oof = np.zeros((len(features_by_view), len(y), n_classes))
    epochs = []
    wall, cpu = time.perf_counter(), time.process_time()
    for v, X in enumerate(features_by_view.values()):
        for k in range(int(folds.max()) + 1):
            fit_rows, val_rows = folds != k, folds == k
            extra = {"validation_data": (X[val_rows], y[val_rows])} if passes_validation else {}
            head = factory().fit(X[fit_rows], y[fit_rows], **extra)
            oof[v][np.ix_(val_rows, head.classes_)] = head.predict_proba(X[val_rows])
            epochs.append(getattr(head, "n_epochs_", np.nan))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    scores, first = score(y, oof.mean(axis=0)), score(y, oof[0])
    fits = len(epochs)
    return {"fits": fits, "wall_s": wall, "cpu_s": cpu, "wall_s_10_fits": wall * 10 / fits,
            "cpu_s_10_fits": cpu * 10 / fits, "est": "" if fits == 10 else "est.",
            "cv_logloss": scores.logloss, "accuracy": scores.accuracy,
            "logloss_view1": first.logloss, "accuracy_view1": first.accuracy, "mean_epochs": float(np.mean(epochs))}


def thread_settings() -> str:
    from threadpoolctl import threadpool_info

    pools = ", ".join(f"{Path(pool['filepath']).name} {pool['num_threads']}" for pool in threadpool_info())
    env = ", ".join(f"{name}={os.environ.get(name, 'unset')}" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"))
    line = (f"threads: threadpoolctl threadpool_limits(1) around every fit -> {pools or 'no pools loaded'} (a library "
            f"first loaded inside the limit, e.g. by TensorFlow, keeps its default); env {env}")
    if "tensorflow" in sys.modules:
        tf = sys.modules["tensorflow"]
        line += (f"; TensorFlow intra/inter-op threads {tf.config.threading.get_intra_op_parallelism_threads()}"
                 f"/{tf.config.threading.get_inter_op_parallelism_threads()} (0 = TensorFlow's default: all cores)")
    return line


def main() -> None:
    from threadpoolctl import threadpool_limits

    from kaggle_tl.heads import base as heads

    args = parse_args()
    _common.quiet_logs()
    sizes, names = args.sizes.split(","), args.heads.split(",")
    modules = [(heads, "new")]
    if args.baseline:
        spec = importlib.util.spec_from_file_location("baseline_heads", args.baseline)
        baseline = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(baseline)
        modules.append((baseline, f"old ({Path(args.baseline).name})"))
    info = {**_common.machine_info(), **_common.code_version()}
    print(_common.describe_machine(info))
    print("CPU flags (excerpt):", " ".join(info["simd_flags"]) or "-")
    print("at start:", _common.load_line())
    features, y, source = load_features(Path(args.features))
    print(f"features: {source}")
    rows = []
    with threadpool_limits(1):
        for size, features_by_view, labels, folds in datasets(features, y, sizes):
            X = next(iter(features_by_view.values()))
            print(f"\n{size}: {X.shape[0]} rows x {X.shape[1]} features, {labels.max() + 1} classes, "
                  f"{int((folds != 0).sum())}-row training folds, views {', '.join(features_by_view)}", flush=True)
            for module, label in modules:
                views = dict(list(features_by_view.items())[:args.baseline_views if module is not heads else None])
                for name, implementation, factory, passes_validation in head_variants(module, names, label):
                    result = time_head(factory, passes_validation, views, labels, folds)
                    rows.append({"size": size, "head": name, "implementation": implementation, **result})
                    print(f"  {name:6s} {implementation:32s} {result['fits']:2d} fits: wall {result['wall_s']:6.1f} s, "
                          f"CPU {result['cpu_s']:6.1f} s  log loss {result['cv_logloss']:.4f}  "
                          f"accuracy {result['accuracy']:.4f}  epochs {result['mean_epochs']:.1f}", flush=True)
        print(thread_settings())
    print("at end:", _common.load_line())
    _common.print_table(rows, "summary (times include predicting the held-out fold; est. = scaled from fewer fits)",
                        floatfmt="{:.4g}")
    print("\ntargets (issue 11, 10 fits of the new head, default settings):")
    for (size, name), limit in TARGETS_S.items():
        for r in rows:
            if (r["size"], r["head"]) == (size, name) and r["implementation"] in ("new", "new, inner-stopped"):
                verdicts = [f"{kind} {r[kind + '_s']:.1f} s: {'met' if r[kind + '_s'] <= limit else 'NOT met'}"
                            for kind in ("wall", "cpu")]
                print(f"  {name} at {size}, <= {limit:.0f} s: {'; '.join(verdicts)}")
    _common.write_json(args.json, {"machine": info, "features": source, "results": rows})


if __name__ == "__main__":
    main()
