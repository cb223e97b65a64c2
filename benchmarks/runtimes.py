#!/usr/bin/env python
"""TensorFlow vs OpenVINO fp32 vs OpenVINO bf16 (kaggle_tl.backbones.runtimes), side by side in one process.

For each backbone (default: EfficientNet-Lite0 at 224 px and Lite2 at 260 with their pip ImageNet
weights, Xception at 299 with random weights, as its ImageNet file cannot be downloaded offline):

  model alone   img/s at ``--batch-size`` on a fixed uint8 batch, the runtimes interleaved for
                ``--rounds`` rounds (best and median: other jobs on a shared machine slow some
                rounds down), and CPU ms per image (all threads; less hurt by a busy machine).
  agreement     features of real images against TensorFlow's: max |diff| / max |TF feature| and the
                smallest cosine similarity over the images.

Then, for ``--pipeline-backbones`` (default Lite0), extraction with decoding: ``iter_image_batches``
feeding the compiled callable, as ``features.compute_chunk`` does, on CIFAR-10's 32 px JPEGs
(upscaled) and on 500x375 JPEGs made from them, for each decode thread count and OpenCV thread
setting asked for; the loader alone for comparison; and the single-thread cost per image of
each step (decode, resize, uint8 -> float32 copy, numpy preprocessing). With ``--settings``, the
OpenVINO compile settings ``runtimes.compile_backbone`` chose among, for those backbones too.

    python benchmarks/runtimes.py --settings           # everything, ~15 min on 2 cores
    python benchmarks/runtimes.py --backbones efficientnet_lite0:224:imagenet --rounds 2 --images 128
"""
from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import _common as common
import cv2
import numpy as np

DEFAULT_BACKBONES = "efficientnet_lite0:224:imagenet,efficientnet_lite2:260:imagenet,xception:299:none"
VARIANTS = (("tensorflow", "tensorflow", "fp32"), ("openvino fp32", "openvino", "fp32"),
            ("openvino bf16", "openvino", "bf16"))  # (label, runtime, precision)
SUB_BATCHES = (32, 16, 8, 4)  # images per OpenVINO inference request tried by --settings


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", default=DEFAULT_BACKBONES, help="name:size:weights,... (default %(default)s)")
    p.add_argument("--pipeline-backbones", default="efficientnet_lite0",
                   help="backbones also measured with decoding (comma list; '' for none; default %(default)s)")
    p.add_argument("--data", help=f"Kaggle-layout folder of JPEGs (default: {common.SMALL_ARCHIVE.name} extracted)")
    p.add_argument("--images", type=int, default=256,
                   help="images per pipeline run and per source (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the model-alone timing")
    p.add_argument("--seconds", type=float, default=3.0, help="per runtime per round (default %(default)s)")
    p.add_argument("--decode-threads", default="2,4", help="decode thread counts tried (default %(default)s)")
    p.add_argument("--cv2-threads", default="default,1",
                   help="cv2.setNumThreads settings tried in the pipeline ('default' = OpenCV's; default %(default)s)")
    p.add_argument("--settings", action="store_true",
                   help="also compare OpenVINO compile settings (hint, sub-batch size) for the pipeline backbones")
    p.add_argument("--json", help="write the results here too")
    return p.parse_args(argv)


# -- inputs ----------------------------------------------------------------------------------------
def jpeg_sources(data: Path, n: int) -> dict[str, list[Path]]:
    """{"cifar 32x32": n of the folder's JPEGs, "500x375": n larger JPEGs made from them (once)}."""
    small = sorted((data / "train").glob("*.jpg"))[:n]
    large_dir = common.BENCH_DIR / "data" / f"{data.name}-500x375"
    if len(list(large_dir.glob("*.jpg"))) < len(small):
        tmp = Path(tempfile.mkdtemp(dir=common.BENCH_DIR / "data", prefix=".large-"))
        rng = np.random.default_rng(0)
        for path in small:
            big = cv2.resize(cv2.imread(str(path)), (500, 375), interpolation=cv2.INTER_CUBIC)
            # Some noise, so the JPEG holds photo-like high frequencies and decodes at a realistic cost.
            big = np.clip(big.astype(np.int16) + rng.integers(-6, 7, big.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(tmp / path.name), big, [cv2.IMWRITE_JPEG_QUALITY, 90])
        shutil.rmtree(large_dir, ignore_errors=True)
        tmp.rename(large_dir)
    return {"cifar 32x32": small, "500x375": sorted(large_dir.glob("*.jpg"))[:n]}


def real_batch(paths: list[Path], size: int, n: int) -> np.ndarray:
    from kaggle_tl.data.images import iter_image_batches

    return next(iter(iter_image_batches(paths[:n], [size], n, threads=2)))[size]


# -- measuring ------------------------------------------------------------------------------------
def rate(run, n_images: int, seconds: float) -> tuple[float, float]:
    """(img/s, CPU ms per image) of calling ``run`` for about ``seconds``."""
    run()  # warm-up: first-call allocation and kernel selection
    start, start_cpu, done = time.perf_counter(), time.process_time(), 0
    while time.perf_counter() - start < seconds or not done:
        run()
        done += n_images
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return done / wall, 1000 * cpu / done


def agreement(features: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    cosine = (features * reference).sum(1) / (np.linalg.norm(features, axis=1) * np.linalg.norm(reference, axis=1))
    return float(np.abs(features - reference).max() / np.abs(reference).max()), float(cosine.min())


def model_alone(spec: str, args, sample_paths: list[Path], ir_root: Path) -> tuple[list[dict], dict]:
    """One backbone's rows: each runtime's speed and agreement; and its compiled callables."""
    from kaggle_tl.backbones import create_backbone
    from kaggle_tl.backbones.runtimes import check_runtime, compile_backbone

    name, size, weights = spec.split(":")
    size = int(size)
    backbone = create_backbone(name, None if weights == "none" else weights, size)
    compiled, convert_s = {}, {}
    for label, runtime, precision in VARIANTS:
        try:
            check_runtime(runtime, precision)
        except Exception as exc:  # bf16 on a CPU without it, OpenVINO missing: a row says so
            compiled[label] = str(exc)
            continue
        start = time.perf_counter()
        compiled[label] = compile_backbone(backbone.model, size, backbone.preprocess, runtime, precision,
                                           ir_root / f"{name}-{size}-{weights}")
        convert_s[label] = time.perf_counter() - start  # the first OpenVINO one converts, the others read the IR
    batch = np.random.default_rng(0).integers(0, 256, (args.batch_size, size, size, 3), dtype=np.uint8)
    speeds: dict = {key: [] for key, f in compiled.items() if callable(f)}
    for _ in range(args.rounds):
        for key in speeds:
            speeds[key].append(rate(lambda: compiled[key](batch), len(batch), args.seconds))
    images = real_batch(sample_paths, size, 64)
    reference = compiled["tensorflow"](images)[0]
    rows = []
    for key, f in compiled.items():
        row = {"backbone": f"{name} {size}px ({weights})", "runtime": key}
        if not callable(f):
            rows.append({**row, "note": f})
            continue
        walls = [w for w, _ in speeds[key]]
        diff, cosine = agreement(f(images)[0], reference)
        rows.append({**row, "img/s best": max(walls), "img/s median": statistics.median(walls),
                     "CPU ms/img": min(c for _, c in speeds[key]), "max rel diff": diff, "min cosine": cosine,
                     "compile s": convert_s[key]})
    return rows, {"name": name, "size": size, "backbone": backbone, "compiled": compiled,
                  "ir": ir_root / f"{name}-{size}-{weights}"}


def compile_settings(built: dict, args) -> list[dict]:
    """OpenVINO alone, batch ``--batch-size``: performance hint x images per inference request.

    What ``runtimes.compile_backbone`` chose among: LATENCY (one stream, every thread; requests
    run one after the other, like a sync infer) or THROUGHPUT (OpenVINO's streams, one request
    per stream in flight through an AsyncInferQueue), the batch whole or split.
    """
    import openvino as ov

    from kaggle_tl.backbones.runtimes import IR_NAME, _cpu_has_bf16

    core, size = ov.Core(), built["size"]
    images = np.random.default_rng(0).integers(0, 256, (args.batch_size, size, size, 3), dtype=np.uint8)
    x = built["backbone"].preprocess(images.astype(np.float32))
    runs = {}
    for precision in ("f32", "bf16") if _cpu_has_bf16() else ("f32",):
        for hint in ("LATENCY", "THROUGHPUT"):
            compiled = core.compile_model(built["ir"] / IR_NAME, "CPU",
                                          {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": hint})
            layout = f"{compiled.get_property('NUM_STREAMS')} / {compiled.get_property('INFERENCE_NUM_THREADS')}"
            queue = ov.AsyncInferQueue(compiled, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            for per in SUB_BATCHES:
                def run(queue=queue, per=per):
                    for start in range(0, len(x), per):
                        queue.start_async({0: x[start:start + per]}, share_inputs=True)
                    queue.wait_all()
                runs[precision, hint, layout, min(per, len(x))] = run
    speeds: dict = {key: [] for key in runs}
    for _ in range(args.rounds):
        for key, run in runs.items():
            speeds[key].append(rate(run, len(x), args.seconds))
    return [{"backbone": f"{built['name']} {size}px", "precision": p, "hint": h, "streams / threads in all": layout,
             "images per request": per, "img/s best": max(w for w, _ in v),
             "img/s median": statistics.median(w for w, _ in v), "CPU ms/img": min(c for _, c in v)}
            for (p, h, layout, per), v in speeds.items()]


@contextlib.contextmanager
def cv2_threads(setting: str):
    saved = cv2.getNumThreads()
    if setting != "default":
        cv2.setNumThreads(int(setting))
    try:
        yield
    finally:
        cv2.setNumThreads(saved)


def pipeline(built: dict, sources: dict[str, list[Path]], args) -> list[dict]:
    """Extraction with decoding, per source x cv2 setting x decode threads: loader alone, then each runtime."""
    from kaggle_tl.data.images import iter_image_batches

    size, rows = built["size"], []
    for source, paths in sources.items():
        for cv2_setting in args.cv2_threads.split(","):
            for threads in (int(t) for t in args.decode_threads.split(",")):
                def run(features=None):
                    for batch in iter_image_batches(paths, [size], args.batch_size, threads):
                        if features is not None:
                            features(batch[size])
                row = {"backbone": f"{built['name']} {size}px", "source": source, "cv2 threads": cv2_setting,
                       "decode threads": threads}
                with cv2_threads(cv2_setting):
                    wall, cpu = rate(run, len(paths), 0)
                    rows.append({**row, "runtime": "loader alone", "img/s": wall, "CPU ms/img": cpu})
                    for key, f in built["compiled"].items():
                        if callable(f):
                            wall, cpu = rate(lambda: run(f), len(paths), 0)
                            rows.append({**row, "runtime": key, "img/s": wall, "CPU ms/img": cpu})
    return rows


def step_costs(built: dict, sources: dict[str, list[Path]], batch_size: int) -> list[dict]:
    """Single-thread CPU ms per image of each step between a JPEG file and the model's input.

    Thread CPU time, not wall time: other jobs on a busy machine would inflate the latter. The
    float32 copy and the preprocessing are timed per batch, as they run (a fresh batch-sized array).
    """
    from kaggle_tl.data.images import REDUCED_DECODE_MARGIN, read_image, resize_image

    size, preprocess, rows = built["size"], built["backbone"].preprocess, []
    with cv2_threads("1"):
        for source, paths in sources.items():
            times: dict[str, list[float]] = {"decode": [], "resize (pad)": []}
            resized = []
            for path in paths:
                t0 = time.thread_time()
                image = read_image(path, min_side=REDUCED_DECODE_MARGIN * size)
                t1 = time.thread_time()
                resized.append(resize_image(image, size))
                t2 = time.thread_time()
                times["decode"].append(t1 - t0)
                times["resize (pad)"].append(t2 - t1)
            times["uint8->float32 copy"], times["numpy preprocess"] = [], []
            for start in range(0, len(resized) - batch_size + 1, batch_size):
                batch = np.stack(resized[start:start + batch_size])
                t0 = time.thread_time()
                x = batch.astype(np.float32, copy=True)
                t1 = time.thread_time()
                preprocess(x)
                t2 = time.thread_time()
                times["uint8->float32 copy"].append((t1 - t0) / batch_size)
                times["numpy preprocess"].append((t2 - t1) / batch_size)
            rows.append({"source": source, "size": size,
                         **{f"{step} CPU ms": 1000 * statistics.median(v) for step, v in times.items() if v}})
    return rows


# -- output ----------------------------------------------------------------------------------------
def markdown(rows: list[dict], title: str) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.2e}" if 0 < abs(value) < 1e-2 else f"{value:.4g}" if abs(value) < 1 else f"{value:.1f}"
        return "" if value is None else str(value)

    lines = [f"\n### {title}\n", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    common.quiet_logs()
    from kaggle_tl.backbones.quiet import import_tensorflow

    import_tensorflow()
    data = Path(args.data) if args.data else common.extract_archive(common.SMALL_ARCHIVE)
    (common.BENCH_DIR / "data").mkdir(parents=True, exist_ok=True)
    sources = jpeg_sources(data, args.images)
    info = {**common.machine_info(), **common.code_version()}
    with contextlib.suppress(ImportError):
        import openvino

        info["openvino"] = openvino.get_version()
    print(common.describe_machine(info))
    print(f"all CPU flags: {' '.join(info['cpu_flags'])}")
    print(f"openvino {info.get('openvino', 'not installed')}")
    print(common.load_line())
    results: dict = {"machine": info, "model_alone": [], "settings": [], "pipeline": [], "steps": []}
    pipeline_names = {n for n in args.pipeline_backbones.split(",") if n}
    with tempfile.TemporaryDirectory(prefix="runtimes-ir-") as ir_root:
        for spec in args.backbones.split(","):
            rows, built = model_alone(spec, args, sources["cifar 32x32"], Path(ir_root))
            results["model_alone"] += rows
            print(markdown(rows, f"Model alone, batch {args.batch_size} ({common.load_line()})"), flush=True)
            if built["name"] in pipeline_names and args.settings and callable(built["compiled"]["openvino fp32"]):
                rows = compile_settings(built, args)
                results["settings"] += rows
                print(markdown(rows, f"OpenVINO compile settings ({common.load_line()})"), flush=True)
            if built["name"] in pipeline_names:
                steps = step_costs(built, sources, args.batch_size)
                results["steps"] += steps
                print(markdown(steps, "Single-thread CPU cost per image of each step (median)"), flush=True)
                rows = pipeline(built, sources, args)
                results["pipeline"] += rows
                print(markdown(rows, f"Extraction with decoding, {args.images} images per run "
                                     f"({common.load_line()})"), flush=True)
    print(f"\n{common.load_line()}")
    common.write_json(args.json, results)


if __name__ == "__main__":
    main()
