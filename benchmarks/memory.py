#!/usr/bin/env python
"""Peak memory of feature extraction as the image count grows, and fit time/memory of the heads.

Every measurement runs in a fresh Python process (spawn), so its peak RSS
(``resource.getrusage(...).ru_maxrss``) is its own. Three parts, all run by default:

  extraction  kaggle_tl's feature step as ``pipeline.run`` does it (read the competition, then a
              ``FeaturePlan`` of both splits: decode, resize, both views, cache, then the per-view
              arrays the heads get), on TensorFlow, on cifar10-small (7,000 images) and on cifar10
              (60,000; ``--large-limit`` for a subset). Target: peak RSS of the larger <= 1.5 x
              the smaller. Default backbone: efficientnet_lite0 at 64 px (``--image-size``) so that
              60,000 images take minutes, not hours on 2 cores; the model's own memory at 64 px is
              small, so what grows with the image count shows more, not less, than at 224 px.
  model       one batch (``--batch-size``) through the backbone at its native size, called as
              kaggle_tl's ``Backbone.features`` does (``model(x)``, eager) and compiled
              (``predict_on_batch``): the constant part of the extraction's memory.
  heads       fit time and peak RSS of SVMHead (LinearSVC + Platt calibration, cv=3), the
              seed-style SVC(probability=True) (libsvm RBF, default C, raw features), LogRegHead
              and DenseHead, on R training rows of real efficientnet_lite0 features (224 px,
              original view) of cifar10-small's training images (5,000 x 1280 at most), extracted
              once into a cache under the benchmark folder.

    python benchmarks/memory.py
    python benchmarks/memory.py --what extraction --small-limit 500 --large-limit 2000
    python benchmarks/memory.py --what heads --rows 500,1000 --json heads.json
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import _common as common

HEADS = ("svm", "svc", "logreg", "dense")


def parse_args(argv=None) -> argparse.Namespace:
    from kaggle_tl.config import RunConfig

    defaults = RunConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--what", default="extraction,model,heads",
                   help="any of extraction, model, heads (default: all three)")
    p.add_argument("--small-archive", default=str(common.SMALL_ARCHIVE), help="default: %(default)s")
    p.add_argument("--large-archive", default=str(common.FULL_ARCHIVE), help="default: %(default)s")
    p.add_argument("--small-limit", type=int, help="train images of the small set (default: all 5,000)")
    p.add_argument("--large-limit", type=int, help="train images of the large set (default: all 50,000)")
    p.add_argument("--backbone", default="efficientnet_lite0", help="extraction backbone (default %(default)s)")
    p.add_argument("--image-size", type=int, default=64, help="extraction input size in px (default %(default)s)")
    p.add_argument("--weights", default="imagenet", help="imagenet | none | path (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--decode-threads", type=int, default=defaults.decode_threads)
    p.add_argument("--heads", default=",".join(HEADS), help="heads to fit (default %(default)s)")
    p.add_argument("--rows", default="1250,2500,5000", help="training rows per head fit (default %(default)s)")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--json", help="also write the results to this JSON file")
    return p.parse_args(argv)


def limited(archive: str, n_train: int | None) -> Path:
    """The extracted competition, or its first n_train training images and 2/5 as many test images."""
    root = common.extract_archive(archive)
    if n_train is None:
        return root
    return common.subset_competition(root, n_train, math.ceil(n_train * 2 / 5))


# -- extraction ---------------------------------------------------------------------------------------
def extraction_worker(config_values: dict) -> dict:
    """The features of both splits on a fresh cache, as pipeline.run computes them; RSS before and at peak."""
    common.quiet_logs()
    import tensorflow  # noqa: F401

    from kaggle_tl.cache.store import Cache
    from kaggle_tl.config import RunConfig
    from kaggle_tl.data.competition import usable_competition
    from kaggle_tl.data.digests import image_set_key
    from kaggle_tl.features import BackboneBuilder, FeaturePlan
    from kaggle_tl.pipeline import backbone_refs, layout_of

    config = RunConfig.from_dict(config_values)
    competition = usable_competition(config.data, layout_of(config), config.folds, config.skip_bad_train_images)
    refs = backbone_refs(config)
    rss_before = common.current_rss_mib()
    start = time.perf_counter()
    # pipeline._run's feature step: one plan of both splits, one builder, then the per-view arrays.
    cache = Cache(config.cache_dir, config.cache_from)
    build = BackboneBuilder(config.weights, config.runtime, config.precision, str(cache.root), tuple(config.cache_from))
    splits = {split: (paths, image_set_key(paths))
              for split, paths in (("train", competition.train_paths), ("test", competition.test_paths))}
    with FeaturePlan(cache, splits, refs, config.views, info={"data": competition.root.name}) as plan:
        features = plan.extract(build, config.batch_size, config.decode_threads)
    names = [r.name for r in refs]
    train_by_view = features["train"].by_view(names, config.views)
    test_by_view = features["test"].by_view(names, config.views)
    wall = time.perf_counter() - start
    feature_bytes = sum(a.nbytes for arrays in (train_by_view, test_by_view) for a in arrays.values())
    return {"images": len(competition.train_paths) + len(competition.test_paths), "wall_s": wall,
            "rss_before_mib": rss_before, "peak_rss_mib": common.peak_rss_mib(),
            "feature_arrays_mib": feature_bytes / 2**20}


def measure_extraction(args: argparse.Namespace) -> list[dict]:
    from kaggle_tl.config import RunConfig

    rows = []
    for label, archive, limit in (("small", args.small_archive, args.small_limit),
                                  ("large", args.large_archive, args.large_limit)):
        root = limited(archive, limit)
        common.BENCH_DIR.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=common.BENCH_DIR, prefix="memory-cache-") as cache:
            # runtime="tensorflow": what this benchmark measured (the default is now openvino where installed).
            config = RunConfig(data=str(root), backbones=(args.backbone,), weights=args.weights,
                               image_size=args.image_size, runtime="tensorflow", batch_size=args.batch_size,
                               decode_threads=args.decode_threads, cache_dir=cache)
            print(f"extraction, {label}: {root} ...", flush=True)
            result = common.in_fresh_process(extraction_worker, config.to_dict())
        rows.append({"set": label, "data": root.name, **result,
                     "growth_mib": result["peak_rss_mib"] - result["rss_before_mib"]})
    rows[1]["peak_vs_small"] = rows[1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    return rows


# -- one model call -----------------------------------------------------------------------------------
def model_call_worker(backbone_name: str, weights: str, batch_size: int, call: str) -> dict:
    """Peak RSS of 3 calls on one batch at the native size: model(x) (kaggle_tl) or predict_on_batch."""
    common.quiet_logs()
    import numpy as np
    import tensorflow  # noqa: F401

    from kaggle_tl.backbones import create_backbone

    backbone = create_backbone(backbone_name, weights)
    rng = np.random.default_rng(0)
    x = backbone.preprocess(rng.integers(0, 256, (batch_size, backbone.input_size, backbone.input_size, 3))
                            .astype(np.float32))
    rss_before = common.current_rss_mib()
    for _ in range(3):
        np.asarray(backbone.model(x, training=False) if call == "model(x)" else backbone.model.predict_on_batch(x))
    return {"backbone": backbone_name, "px": backbone.input_size, "batch": batch_size, "call": call,
            "rss_before_mib": rss_before, "peak_rss_mib": common.peak_rss_mib(),
            "growth_mib": common.peak_rss_mib() - rss_before}


def measure_model_calls(args: argparse.Namespace) -> list[dict]:
    rows = []
    for call in ("model(x)", "predict_on_batch"):
        print(f"model call {call}: {args.backbone}, batch {args.batch_size} ...", flush=True)
        rows.append(common.in_fresh_process(model_call_worker, args.backbone, args.weights, args.batch_size, call))
    return rows


# -- heads ---------------------------------------------------------------------------------------------
def features_worker(root: str, weights: str, cache_dir: str) -> dict:
    """efficientnet_lite0 (224 px) original-view features of the training images, cached."""
    common.quiet_logs()
    import tensorflow  # noqa: F401

    from kaggle_tl.backbones import create_backbone
    from kaggle_tl.cache.store import Cache
    from kaggle_tl.config import RunConfig
    from kaggle_tl.data.competition import usable_competition
    from kaggle_tl.data.digests import image_set_key
    from kaggle_tl.features import extract_features
    from kaggle_tl.pipeline import backbone_refs, layout_of

    # runtime="tensorflow": the refs must say what builds the features here (create_backbone: TensorFlow).
    config = RunConfig(data=root, backbones=("efficientnet_lite0",), weights=weights, views=("original",),
                       runtime="tensorflow")
    competition = usable_competition(config.data, layout_of(config), config.folds, config.skip_bad_train_images)
    refs = backbone_refs(config)
    features = extract_features(competition.train_paths, image_set_key(competition.train_paths), refs, ["original"],
                                Cache(cache_dir),
                                lambda needed: {r.name: create_backbone(r.name, weights) for r in needed})
    return {"features": str(features.arrays[("efficientnet_lite0", "original")].filename), "y": competition.y}


def make_estimator(name: str, seed: int):
    from sklearn.svm import SVC

    from kaggle_tl.heads.base import create_head

    if name == "svc":
        return SVC(probability=True, random_state=seed)  # the seed-style head, as public kernels use it
    return create_head(name, random_state=seed)


def head_worker(name: str, features_path: str, y, rows: int, seed: int) -> dict:
    """Fit one head on the first ``rows`` rows; time the fit and predict_proba on up to 1,000 of them;
    RSS before and at peak."""
    common.quiet_logs()
    import warnings

    import numpy as np

    warnings.filterwarnings("ignore", category=FutureWarning)  # SVC(probability=True) is deprecated in sklearn 1.9
    X = np.array(np.load(features_path, mmap_mode="r")[:rows])
    estimator = make_estimator(name, seed)
    if name == "dense":
        import tensorflow  # noqa: F401  - the import is not part of the fit
    rss_before = common.current_rss_mib()
    start = time.perf_counter()
    estimator.fit(X, y[:rows])
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    estimator.predict_proba(X[:1000])
    return {"head": name, "rows": rows, "dim": X.shape[1], "fit_s": fit_s,
            "predict_s": time.perf_counter() - start, "rss_before_mib": rss_before,
            "peak_rss_mib": common.peak_rss_mib(), "growth_mib": common.peak_rss_mib() - rss_before}


def measure_heads(args: argparse.Namespace) -> list[dict]:
    row_counts = sorted(int(r) for r in args.rows.split(","))
    root = limited(args.small_archive, row_counts[-1])
    print(f"head features: efficientnet_lite0, {root} ...", flush=True)
    source = common.in_fresh_process(features_worker, str(root), args.weights, str(common.BENCH_DIR / "cache"))
    results = []
    for rows in row_counts:
        for name in [h.strip() for h in args.heads.split(",") if h.strip()]:
            print(f"head {name}, {rows} rows ...", flush=True)
            results.append(common.in_fresh_process(head_worker, name, source["features"], source["y"], rows,
                                                   args.seed))
    return results


# -- main -----------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    args = parse_args(argv)
    what = {w.strip() for w in args.what.split(",")}
    machine = {**common.machine_info(), **common.code_version()}
    print(common.describe_machine(machine))
    print(common.load_line())
    results: dict = {}
    if "extraction" in what:
        results["extraction"] = measure_extraction(args)
        title = (f"extraction: {args.backbone} at {args.image_size} px, both views, batch {args.batch_size} "
                 "(RSS in MiB; target: large peak <= 1.5 x small peak)")
        common.print_table(results["extraction"], title, floatfmt="{:.4g}")
    if "model" in what:
        results["model"] = measure_model_calls(args)
        common.print_table(results["model"], "one batch through the model at its native size: peak RSS (MiB) by "
                                             "call (kaggle_tl's Backbone.features calls model(x))", floatfmt="{:.4g}")
    if "heads" in what:
        results["heads"] = measure_heads(args)
        common.print_table(results["heads"], "head fit time (s), predict_proba time on min(rows, 1000) rows (s) "
                                             "and RSS (MiB), on efficientnet_lite0 features",
                           floatfmt="{:.4g}")
    print(common.load_line())
    common.write_json(args.json, {"benchmark": "memory", "args": vars(args), "machine": machine,
                                  "load_after": list(os.getloadavg()), **results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
