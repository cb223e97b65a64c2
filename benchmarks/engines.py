#!/usr/bin/env python
"""Feature extraction on the local engine vs the Dask engine (a LocalCluster sized to the machine).
(Not named distributed.py: the benchmarks folder is first on sys.path, and that name would hide Dask's
``distributed`` package.)

Each measurement runs in a fresh Python process and extracts N training images of a Kaggle-layout
folder (default: cifar10-small) into a fresh cache, both views, the way ``pipeline.run`` calls
``extract_features``:

  local   ``Engine("local")``: TensorFlow and the model in this process.
  dask    ``Engine("dask")``: a LocalCluster of one single-threaded worker per core, one task
          per missing cache chunk; the driver process only plans, shows progress and finalises.

Reported: wall time (start-up included: TensorFlow import and model build for both, the cluster's
start for Dask), the cluster start alone, images/s, the driver's peak RSS, and whether the
features are bit-identical. Target: Dask overhead <= 10 % of the local wall time at 2,000+
images; driver RSS independent of the image count (a second, smaller Dask run, ``--rss-images``).
The engines alternate ``--repeats`` times and the summary compares each one's fastest run, as
other jobs on a shared machine slow some runs down.

    python benchmarks/engines.py --images 2000 --json engines.json
    python benchmarks/engines.py --images 200 --image-size 64 --rss-images 50   # a quick look
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import _common as common


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="Kaggle-layout folder (default: cifar10-small extracted from "
                                  f"{common.SMALL_ARCHIVE})")
    p.add_argument("--images", type=int, default=2000, help="training images extracted (default %(default)s)")
    p.add_argument("--rss-images", type=int, default=500,
                   help="a second Dask run on this many images, for the driver's RSS (0: skip; default %(default)s)")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--weights", default="imagenet")
    p.add_argument("--views", default="original,hflip")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--decode-threads", type=int, default=4)
    p.add_argument("--chunk-rows", type=int, help="rows per cache chunk = per Dask task (default: kaggle_tl's)")
    p.add_argument("--engines", default="local,dask")
    p.add_argument("--repeats", type=int, default=2,
                   help="runs per engine, alternating; the summary takes each engine's fastest (default %(default)s)")
    p.add_argument("--json", help="write the results here")
    return p.parse_args(argv)


def extraction_worker(engine_kind: str, paths: list[str], options: dict) -> dict:
    """One extraction into a fresh cache, timed from before TensorFlow or Dask is imported."""
    started = time.perf_counter()
    from kaggle_tl.backbones import backbone_spec
    from kaggle_tl.cache.store import Cache
    from kaggle_tl.engine import Engine
    from kaggle_tl.features import DEFAULT_CHUNK_ROWS, BackboneBuilder, extract_features

    common.quiet_logs()
    chunk_times = []  # when the driver learnt of each written chunk (extract_features logs it at DEBUG)

    class ChunkClock(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().endswith("written"):
                chunk_times.append(time.perf_counter() - started)

    clock = logging.getLogger("kaggle_tl.features")
    clock.setLevel(logging.DEBUG)
    clock.addHandler(ChunkClock(logging.DEBUG))
    clock.propagate = False  # its DEBUG lines are for the clock, not the table
    load_before = os.getloadavg()[0]
    # TensorFlow, explicitly: what this benchmark has always measured (RunConfig's default is now openvino).
    ref = backbone_spec(options["backbone"]).identity(options["weights"], options["image_size"],
                                                      options.get("resize", "pad"), runtime="tensorflow")
    cache = Path(tempfile.mkdtemp(prefix="dist-bench-", dir=common.BENCH_DIR))
    try:
        with Engine(engine_kind) as engine:
            cluster_s = 0.0
            if engine_kind == "dask":
                t = time.perf_counter()
                workers = len(engine.client().scheduler_info()["workers"])
                cluster_s = time.perf_counter() - t
            else:
                workers = 1
            features = extract_features([Path(p) for p in paths], f"bench-{len(paths)}", [ref], options["views"],
                                        Cache(cache), BackboneBuilder(options["weights"], runtime="tensorflow"),
                                        batch_size=options["batch_size"], threads=options["decode_threads"],
                                        chunk_rows=options["chunk_rows"] or DEFAULT_CHUNK_ROWS, engine=engine)
            wall = time.perf_counter() - started
            peak_rss = common.peak_rss_mib()  # before the digests below read the features into memory
        digests = {view: hashlib.sha1(features.arrays[ref.name, view].tobytes()).hexdigest()[:16]
                   for view in options["views"]}
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return {"engine": engine_kind, "workers": workers, "images": len(paths), "wall_s": wall,
            "cluster_start_s": cluster_s, "first_chunk_s": chunk_times[0], "last_chunk_s": chunk_times[-1],
            "images_per_s": len(paths) / wall,
            "passes_per_s": len(paths) * len(options["views"]) / wall,
            "driver_peak_rss_mib": peak_rss, "load_1min_before": load_before,
            "load_1min_after": os.getloadavg()[0], "digests": digests}


def main(argv=None) -> None:
    args = parse_args(argv)
    common.BENCH_DIR.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else common.extract_archive(common.SMALL_ARCHIVE)
    paths = sorted(str(p) for p in (data / "train").iterdir())
    if len(paths) < args.images:
        sys.exit(f"{data / 'train'}: {len(paths)} images, fewer than --images {args.images}")
    options = {"backbone": args.backbone, "image_size": args.image_size, "weights": args.weights,
               "views": args.views.split(","), "batch_size": args.batch_size,
               "decode_threads": args.decode_threads, "chunk_rows": args.chunk_rows}
    info = {**common.machine_info(), **common.code_version()}
    print(common.describe_machine(info))
    print(common.load_line())

    runs = [(kind, args.images) for _ in range(args.repeats) for kind in args.engines.split(",")]
    if args.rss_images and "dask" in args.engines:
        runs.append(("dask", args.rss_images))
    rows = []
    for kind, n in runs:
        print(f"{kind}: {n} images ...", flush=True)
        rows.append(common.in_fresh_process(extraction_worker, kind, paths[:n], options))
        print(f"  {rows[-1]['wall_s']:.1f} s; {common.load_line()}", flush=True)

    by_engine = {}  # (engine, images) -> its fastest run
    for r in rows:
        best = by_engine.setdefault((r["engine"], r["images"]), r)
        if r["wall_s"] < best["wall_s"]:
            by_engine[r["engine"], r["images"]] = r
    local, dask = by_engine.get(("local", args.images)), by_engine.get(("dask", args.images))
    summary = {}
    if local and dask:
        summary["overhead_s"] = dask["wall_s"] - local["wall_s"]
        summary["overhead_pct_of_local"] = 100 * summary["overhead_s"] / local["wall_s"]
        summary["bit_identical"] = all(r["digests"] == local["digests"] for r in rows if r["images"] == args.images)
    small = by_engine.get(("dask", args.rss_images))
    if dask and small and small is not dask:
        summary["driver_rss_ratio"] = dask["driver_peak_rss_mib"] / small["driver_peak_rss_mib"]
    common.print_table([{k: v for k, v in r.items() if k != "digests"} for r in rows],
                       title=f"{args.backbone} at {args.image_size} px, views {args.views}, "
                             f"chunk rows {args.chunk_rows or 'default'}", floatfmt="{:.4g}")
    for key, value in summary.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    print(common.load_line())
    common.write_json(args.json, {"machine": info, "args": vars(args), "runs": rows, "summary": summary,
                                  "load_after": os.getloadavg()})


if __name__ == "__main__":
    main()
