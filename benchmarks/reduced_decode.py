#!/usr/bin/env python
"""Large JPEGs to small inputs: full decode + INTER_AREA vs. libjpeg's reduced-size decode + INTER_AREA.

Synthetic 3000 x 4000 photos (smooth colour fields, gradients, sensor-like noise, and white/black
text strokes for sharp edges) are JPEG-encoded once, then each is decoded and resized to each
target size (224, 299 px) three ways:

  full     ``read_image(path)``                     then ``resize_square`` (kaggle_tl before min_side)
  reduced  ``read_image(path, min_side=size)``      the largest 1/2, 1/4, 1/8 with shorter side >= size
  2x       ``read_image(path, min_side=2 * size)``  a gentler choice, for comparison

Times are the median over images of the best of ``--repeats`` runs, wall-clock and CPU, one thread
(cv2.setNumThreads(1): kaggle_tl's decode threads each decode one image). Differences are against ``full``,
in 0..255 pixel values over every pixel of every resized image.

    python benchmarks/reduced_decode.py --images 6 --repeats 3 --json out.json
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import _common as common
import cv2
import numpy as np

from kaggle_tl.data.images import read_image, resize_square


def synthetic_photo(rng: np.random.Generator, height: int = 3000, width: int = 4000) -> np.ndarray:
    """A smooth, photo-like BGR image with text-like sharp edges."""
    coarse = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    image += np.linspace(-40, 40, width, dtype=np.float32)[None, :, None]  # a lighting gradient
    image += rng.normal(0, 6, (height, width, 1)).astype(np.float32)  # sensor-like noise
    image = np.clip(image, 0, 255).astype(np.uint8)
    for i in range(12):
        colour = (255, 255, 255) if i % 2 else (0, 0, 0)
        origin = (int(rng.integers(0, width - 1800)), int(rng.integers(200, height - 50)))
        cv2.putText(image, f"kaggle_tl {i} ABC xyz", origin, cv2.FONT_HERSHEY_SIMPLEX, 5 + i % 4, colour, 6 + i % 8)
    return image


def best_times(function, repeats: int) -> tuple[float, float]:
    """Best wall-clock and best CPU seconds of ``repeats`` calls (CPU time: less hurt by a busy machine)."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return min(wall), min(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quality", type=int, default=92)
    parser.add_argument("--sizes", default="224,299")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = np.random.default_rng(0)
    info = {**common.machine_info(), **common.code_version()}
    print(common.describe_machine(info))
    print(common.load_line())
    results: dict = {"images": args.images, "quality": args.quality, "repeats": args.repeats, "sizes": {}}
    with tempfile.TemporaryDirectory() as folder:
        paths, originals = [], []
        for i in range(args.images):
            path = Path(folder) / f"photo{i}.jpg"
            originals.append(synthetic_photo(rng))
            ok, data = cv2.imencode(".jpg", originals[-1], [cv2.IMWRITE_JPEG_QUALITY, args.quality])
            path.write_bytes(data.tobytes())
            paths.append(path)
        results["mean_file_mb"] = round(float(np.mean([p.stat().st_size for p in paths])) / 1e6, 2)
        ways = {"full": lambda p, s: resize_square(read_image(p), s),
                "reduced": lambda p, s: resize_square(read_image(p, min_side=s), s),
                "2x": lambda p, s: resize_square(read_image(p, min_side=2 * s), s)}
        for size in sizes:
            row: dict = {}
            outputs = {way: [ways[way](p, size).astype(np.int16) for p in paths] for way in ways}
            # The yardstick: how far JPEG's own loss already puts a full decode from the pixels encoded.
            encoded = np.stack([resize_square(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), size).astype(np.int16)
                                for image in originals])
            loss = np.abs(np.stack(outputs["full"]) - encoded)
            row["jpeg_loss"] = {"mean_abs_diff_full_vs_encoded": round(float(loss.mean()), 3),
                                "max_abs_diff_full_vs_encoded": int(loss.max())}
            for way, function in ways.items():
                times = [best_times(lambda: function(p, size), args.repeats) for p in paths]
                seconds = statistics.median(wall for wall, _ in times)
                cpu_seconds = statistics.median(cpu for _, cpu in times)
                diff = np.abs(np.stack(outputs[way]) - np.stack(outputs["full"]))
                decoded = read_image(paths[0], min_side={"full": None, "reduced": size, "2x": 2 * size}[way]).shape
                row[way] = {"ms_per_image": round(seconds * 1000, 1), "cpu_ms_per_image": round(cpu_seconds * 1000, 1),
                            "decoded_shape": list(decoded[:2]),
                            "max_abs_diff": int(diff.max()), "mean_abs_diff": round(float(diff.mean()), 3),
                            "p99_abs_diff": float(np.percentile(diff, 99))}
            results["sizes"][size] = row
            print(f"{size} px  JPEG's own loss at this size (full decode vs the encoded pixels): "
                  f"mean |diff| {row['jpeg_loss']['mean_abs_diff_full_vs_encoded']}, "
                  f"max {row['jpeg_loss']['max_abs_diff_full_vs_encoded']}")
            for way in ways:
                r = row[way]
                speed_up = row["full"]["ms_per_image"] / r["ms_per_image"]
                cpu_speed_up = row["full"]["cpu_ms_per_image"] / r["cpu_ms_per_image"]
                print(f"{size} px  {way:8s} decoded {r['decoded_shape']}  wall {r['ms_per_image']:6.1f} ms/image "
                      f"(x{speed_up:.2f})  CPU {r['cpu_ms_per_image']:6.1f} ms (x{cpu_speed_up:.2f})  "
                      f"max |diff| {r['max_abs_diff']} "
                      f"({r['max_abs_diff'] / 255:.3f})  mean {r['mean_abs_diff']} ({r['mean_abs_diff'] / 255:.4f})  "
                      f"p99 {r['p99_abs_diff']}")
    print(common.load_line())
    common.write_json(args.json, {"machine": info, "load_after": common.load_line(), **results})


if __name__ == "__main__":
    main()
