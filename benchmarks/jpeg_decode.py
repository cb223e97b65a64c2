#!/usr/bin/env python
"""kaggle_tl's JPEG decode (libjpeg-turbo through simplejpeg, strict: data.jpeg) against OpenCV's imdecode.

For every JPEG in ``--photos`` (e.g. the 1,000 ImageNet sample photos of EliSchwartz/imagenet-sample-images,
EXIF-rotated ones included) and each DCT reduction (1, 1/2, 1/4, 1/8): how many decode to exactly
OpenCV's pixels (``IMREAD_COLOR`` / ``IMREAD_REDUCED_COLOR_*``, BGR -> RGB), the largest difference of
the others, and how many libjpeg warns about (bad images to kaggle_tl, printed and decoded by OpenCV).
Then the time per image of each decoder at full size, one thread, interleaved for ``--rounds`` rounds
(best round).

    python benchmarks/jpeg_decode.py --photos /tmp/photos --rounds 3
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import _common as common
import cv2
import numpy as np

from kaggle_tl.data.images import MAX_PIXELS, read_image
from kaggle_tl.data.jpeg import decode_jpeg

FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
         8: cv2.IMREAD_REDUCED_COLOR_8}


def opencv(data: bytes, factor: int) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), FLAGS[factor]), cv2.COLOR_BGR2RGB)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", required=True, help="a folder of JPEGs")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    paths = sorted(p for p in Path(args.photos).iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    datas = [p.read_bytes() for p in paths]
    print(common.describe_machine(common.machine_info()), "|", common.load_line())
    print(f"{len(paths)} JPEGs in {args.photos}")
    for factor in (1, 2, 4, 8):
        same, differ, warned, other, biggest = 0, 0, 0, 0, 0
        for data in datas:
            ours, problem = decode_jpeg(data, factor, MAX_PIXELS)
            if problem:
                warned += 1
                continue
            if ours is None:  # CMYK: OpenCV decodes it
                other += 1
                continue
            theirs = opencv(data, factor)
            if ours.shape == theirs.shape and np.array_equal(ours, theirs):
                same += 1
            else:
                differ += 1
                if ours.shape == theirs.shape:
                    biggest = max(biggest, int(np.abs(ours.astype(int) - theirs).max()))
        print(f"reduction 1/{factor}: identical {same}, different {differ} (largest difference {biggest}), "
              f"warned about {warned}, CMYK (decoded by OpenCV) {other}")
    best = {"opencv": float("inf"), "kaggle_tl": float("inf")}
    for _ in range(args.rounds):
        start = time.perf_counter()
        for data in datas:
            opencv(data, 1)
        best["opencv"] = min(best["opencv"], time.perf_counter() - start)
        start = time.perf_counter()
        for path in paths:
            read_image(path)
        best["kaggle_tl"] = min(best["kaggle_tl"], time.perf_counter() - start)
    print("ms per image, full size, one thread (best round): " +
          ", ".join(f"{name} {seconds / len(paths) * 1e3:.2f}" for name, seconds in best.items()) +
          " (kaggle_tl's includes reading the file and its header checks)")


if __name__ == "__main__":
    main()
