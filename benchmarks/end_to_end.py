#!/usr/bin/env python
"""The whole run, kaggle_tl vs. a seed-style public-kernel pipeline, on the same data and machine.

Three measurements, each in a fresh Python process (so each pays its own model build and warm-up,
and has its own peak RSS), on the same competition folder, folds and backbone:
  kaggle_tl cold   pipeline.run() with an empty feature cache: decode once, both views, CV heads
                   (default dense + logreg), submissions and run records.
  kaggle_tl warm   the same run again on the now-full cache (run(config, new_run=True): a new run,
                   not the earlier run's record returned): heads only (target <= 5% of cold).
  seed-style       written here, deliberately naive, the way public kernels do it: every image
                   loaded with keras.utils.load_img(target_size) into one materialised float32
                   array, one model.predict per view over the whole array, then
                   SVC(probability=True) per fold on each view's raw features and the views averaged.
Speedup = seed wall / kaggle_tl cold wall (target >= 3x, with CV log loss and accuracy no worse).
Wall times start after `import tensorflow` (the same for both) and include building the model.

    python benchmarks/end_to_end.py                       # cifar10-small, efficientnet_lite0, 5 folds
    python benchmarks/end_to_end.py --limit 200 --json out.json
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import _common as common

VIEWS = ("original", "hflip")


def parse_args(argv=None) -> argparse.Namespace:
    from kaggle_tl.config import RunConfig

    defaults = RunConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-archive", default=str(common.SMALL_ARCHIVE),
                   help="Kaggle-layout archive (default: %(default)s); extracted under "
                        f"{common.BENCH_DIR}/data")
    p.add_argument("--limit", type=int, help="use only N training images, classes balanced (quick checks)")
    p.add_argument("--limit-test", type=int,
                   help="use only the first M test images (default with --limit: 2/5 of N, CIFAR's ratio)")
    p.add_argument("--backbone", default="efficientnet_lite0", help="one backbone for both pipelines (default %(default)s)")
    p.add_argument("--weights", default="imagenet", help="imagenet | none | path (default %(default)s)")
    p.add_argument("--image-size", type=int,
                   help="kaggle_tl only: input size in px (default: the backbone's native size, as the seed uses); "
                        "to measure what a smaller size buys on 32 px images")
    p.add_argument("--heads", default="dense,logreg", help="kaggle_tl heads (default %(default)s)")
    p.add_argument("--folds", type=int, default=defaults.folds, help="CV folds, both pipelines (default %(default)s)")
    p.add_argument("--seed", type=int, default=defaults.seed, help="folds and heads (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="both pipelines (default %(default)s)")
    p.add_argument("--decode-threads", type=int, default=defaults.decode_threads)
    p.add_argument("--skip-seed", action="store_true", help="only the kaggle_tl runs")
    p.add_argument("--verbose", action="store_true", help="show kaggle_tl's progress log")
    p.add_argument("--keep", action="store_true", help=f"keep the work folder (cache, runs) under {common.BENCH_DIR}")
    p.add_argument("--json", help="also write the results to this JSON file")
    return p.parse_args(argv)


# -- the two pipelines, each run in its own process --------------------------------------------------
def kaggle_tl_worker(config_values: dict, verbose: bool = False, new_run: bool = False) -> dict:
    """pipeline.run(config) as a user runs it; wall time from after the imports.

    ``new_run``: run again even though an identical run is recorded (the warm run), instead of
    returning that run's record.
    """
    common.quiet_logs(verbose)
    import tensorflow  # noqa: F401  - imported before the clock starts, as in the seed worker

    from kaggle_tl.config import RunConfig
    from kaggle_tl.pipeline import run

    config = RunConfig.from_dict(config_values)
    start = time.perf_counter()
    result = run(config, new_run=new_run)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "timings": result.timings, "peak_rss_mib": common.peak_rss_mib(),
            "heads": {m.head: {"logloss": m.score.logloss, "accuracy": m.score.accuracy} for m in result.models}}


def seed_worker(root: str, backbone_name: str, weights: str, n_folds: int, seed: int, batch_size: int,
                out_dir: str) -> dict:
    """The public-kernel way, on purpose: materialise everything, predict everything, SVC per fold."""
    common.quiet_logs()
    import warnings

    import keras
    import numpy as np
    import pandas as pd
    import tensorflow  # noqa: F401
    from sklearn.svm import SVC

    from kaggle_tl.backbones import create_backbone
    from kaggle_tl.cv import make_folds
    from kaggle_tl.tasks.metrics import score

    root = Path(root)
    timings = {}
    start = time.perf_counter()
    labels = pd.read_csv(root / "labels.csv", dtype=str)
    sample = pd.read_csv(root / "sample_submission.csv", dtype=str)
    classes = list(sample.columns[1:])
    y = labels["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    # The same network and input scaling as kaggle_tl, so only the pipeline around it differs.
    backbone = create_backbone(backbone_name, weights)
    size = backbone.input_size

    t = time.perf_counter()

    def load_all(folder: Path, ids) -> np.ndarray:
        files = {p.stem: p for p in folder.iterdir()}
        return np.array([keras.utils.img_to_array(keras.utils.load_img(files[i], target_size=(size, size)))
                         for i in ids])

    x_train = backbone.preprocess(load_all(root / "train", labels["id"]))
    x_test = backbone.preprocess(load_all(root / "test", sample["id"]))
    timings["load_s"] = time.perf_counter() - t

    t = time.perf_counter()
    features = {}
    for view in VIEWS:
        for split, x in (("train", x_train), ("test", x_test)):
            # Flipping after the per-pixel scaling is the same as before it.
            images = x[:, :, ::-1] if view == "hflip" else x
            features[view, split] = backbone.model.predict(images, batch_size=batch_size, verbose=0)
    timings["features_s"] = time.perf_counter() - t

    t = time.perf_counter()
    # scikit-learn 1.9 deprecates SVC(probability=True) (gone in 1.11); it is what the kernels use.
    warnings.filterwarnings("ignore", category=FutureWarning, message=".*probability.*")
    folds = make_folds(y, n_folds, seed)  # the very folds kaggle_tl uses (same labels order and seed)
    oof = np.zeros((len(VIEWS), len(y), len(classes)))
    test = np.zeros((len(VIEWS), n_folds, len(sample), len(classes)))
    for v, view in enumerate(VIEWS):
        for k in range(n_folds):
            fit_rows, val_rows = folds != k, folds == k
            svc = SVC(probability=True, random_state=seed).fit(features[view, "train"][fit_rows], y[fit_rows])
            oof[v, val_rows] = svc.predict_proba(features[view, "train"][val_rows])
            test[v, k] = svc.predict_proba(features[view, "test"])
    timings["heads_s"] = time.perf_counter() - t
    submission = pd.DataFrame(test.mean(axis=(0, 1)), columns=classes)
    submission.insert(0, "id", sample["id"])
    submission.to_csv(Path(out_dir) / "seed_submission.csv", index=False)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "timings": {**timings, "total_s": wall}, "peak_rss_mib": common.peak_rss_mib(),
            "heads": {"svc": dataclasses.asdict(score(y, oof.mean(axis=0)))},
            "per_view": {view: dataclasses.asdict(score(y, oof[v])) for v, view in enumerate(VIEWS)}}


# -- main -------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    args = parse_args(argv)
    from kaggle_tl.config import RunConfig

    root = common.extract_archive(args.data_archive)
    limit_test = args.limit_test
    if args.limit and limit_test is None:
        limit_test = math.ceil(args.limit * 2 / 5)
    root = common.subset_competition(root, args.limit, limit_test)
    common.BENCH_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=common.BENCH_DIR, prefix="end_to_end-"))
    # runtime="tensorflow": the seed-style pipeline runs the same Keras model on TensorFlow, and this
    # benchmark compares the pipelines around it (RunConfig's default runtime is now openvino where installed).
    config = RunConfig(data=str(root), backbones=(args.backbone,), weights=args.weights, image_size=args.image_size,
                       runtime="tensorflow", heads=args.heads,
                       folds=args.folds, seed=args.seed, views=("original", "hflip"), batch_size=args.batch_size,
                       decode_threads=args.decode_threads, cache_dir=str(work / "cache"),
                       runs_dir=str(work / "runs"), submissions_dir=str(work / "submissions"))
    machine = {**common.machine_info(), **common.code_version()}
    print(common.describe_machine(machine))
    print(common.load_line())
    print(f"data: {root}\nwork folder: {work}")

    results = {}
    try:
        print("kaggle_tl, cold cache ...", flush=True)
        results["kaggle_tl_cold"] = common.in_fresh_process(kaggle_tl_worker, config.to_dict(), args.verbose)
        print("kaggle_tl, warm cache (heads only) ...", flush=True)
        results["kaggle_tl_warm"] = common.in_fresh_process(kaggle_tl_worker, config.to_dict(), args.verbose, True)
        if not args.skip_seed:
            print("seed-style ...", flush=True)
            results["seed_style"] = common.in_fresh_process(seed_worker, str(root), args.backbone, args.weights,
                                                            args.folds, args.seed, args.batch_size, str(work))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    summary = summarise(results)
    print_results(results, summary)
    if args.weights == "none":
        print("\nWARNING: weights=none: random backbone weights; the scores say nothing about pretrained features.")
    print(common.load_line())
    common.write_json(args.json, {"benchmark": "end_to_end", "args": vars(args), "machine": machine,
                                  "load_after": list(os.getloadavg()), "data": str(root),
                                  "results": results, "summary": summary})
    return 0


def summarise(results: dict) -> dict:
    cold, warm = results["kaggle_tl_cold"], results["kaggle_tl_warm"]
    best = min(cold["heads"], key=lambda h: cold["heads"][h]["logloss"])
    out = {"warm_over_cold_pct": 100 * warm["wall_s"] / cold["wall_s"], "kaggle_tl_best_head": best}
    if "seed_style" in results:
        seed = results["seed_style"]["heads"]["svc"]
        out["speedup"] = results["seed_style"]["wall_s"] / cold["wall_s"]
        out["logloss_delta_vs_seed"] = cold["heads"][best]["logloss"] - seed["logloss"]
        out["accuracy_delta_vs_seed"] = cold["heads"][best]["accuracy"] - seed["accuracy"]
    return out


def print_results(results: dict, summary: dict) -> None:
    timing_rows = [{"pipeline": name, "wall s": r["wall_s"], **{k.removesuffix("_s") + " s": v
                                                                for k, v in r["timings"].items() if k != "total_s"},
                    "peak RSS MiB": r["peak_rss_mib"]} for name, r in results.items()]
    common.print_table(timing_rows, "wall time in seconds (from after `import tensorflow`) and its parts",
                       floatfmt="{:.4g}")
    score_rows = [{"pipeline": name, "head": head, "CV log loss": s["logloss"], "CV accuracy": s["accuracy"]}
                  for name, r in results.items() for head, s in r["heads"].items()]
    common.print_table(score_rows, "CV scores (out-of-fold, views averaged, same folds)", floatfmt="{:.4f}")
    print(f"\nwarm re-run (heads only): {summary['warm_over_cold_pct']:.1f}% of the cold run (target <= 5%)")
    if "speedup" in summary:
        print(f"speedup vs seed-style: {summary['speedup']:.2f}x (target >= 3x); best kaggle_tl head "
              f"{summary['kaggle_tl_best_head']}: log loss {summary['logloss_delta_vs_seed']:+.4f}, "
              f"accuracy {summary['accuracy_delta_vs_seed']:+.4f} vs seed-style (no worse: <= 0 and >= 0)")


if __name__ == "__main__":
    sys.exit(main())
