#!/usr/bin/env python
"""TensorFlow's CPU kernels: oneDNN against Eigen, at 1 and 2 intra-op threads, side by side.

TensorFlow turns oneDNN on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX; elsewhere (AVX2
machines) it runs Eigen's kernels, whose float32 results change with the thread count, so a Dask
worker's single thread and the local engine's two gave features that differed in the last bits.
Each setting runs in a fresh process (TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, at import);
``ONEDNN_MAX_CPU_ISA=AVX2`` stands in for an AVX2-only CPU on a newer one.

    python benchmarks/tf_kernels.py                 # Lite0 at 224 px, 32-image batches, ~2 min
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import _common as common

SETTINGS = (("eigen", {"TF_ENABLE_ONEDNN_OPTS": "0"}),
            ("onednn, avx2 only", {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"}),
            ("onednn", {"TF_ENABLE_ONEDNN_OPTS": "1"}))

CHILD = """
import sys, time, numpy as np, tensorflow as tf
threads, size, batch, rounds = map(int, sys.argv[1:5])
tf.config.threading.set_intra_op_parallelism_threads(threads)
from kaggle_tl.backbones import create_backbone
backbone = create_backbone("efficientnet_lite0", "imagenet", size)
images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3)).astype(np.float32)
backbone.features(images[:4])
seconds = []
for _ in range(rounds):
    start = time.perf_counter(); features = np.asarray(backbone.features(images)); seconds.append(time.perf_counter() - start)
print(batch / min(seconds), batch / sorted(seconds)[len(seconds) // 2], features.astype(np.float64).sum())
np.save(sys.argv[5], features)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import numpy as np

    print(common.describe_machine(common.machine_info()), "|", common.load_line())
    rows, features = [], {}
    for label, env in SETTINGS:
        for threads in (1, 2):
            out = common.BENCH_DIR / f"tf_kernels_{len(rows)}.npy"
            out.parent.mkdir(parents=True, exist_ok=True)
            child_env = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA")}
            line = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(args.size), str(args.batch_size),
                                   str(args.rounds), str(out)], env={**child_env, **env, "TF_CPP_MIN_LOG_LEVEL": "3"},
                                  check=True, capture_output=True, text=True, cwd=common.REPO).stdout.split()
            features[label, threads] = np.load(out)
            rows.append({"kernels": label, "threads": threads, "img/s best": float(line[0]),
                         "img/s median": float(line[1])})
    for row in rows:
        one, two = features[row["kernels"], 1], features[row["kernels"], 2]
        row["1 vs 2 threads: max |diff|"] = float(np.abs(one - two).max())
    common.print_table(rows, title=f"EfficientNet-Lite0 at {args.size} px, batches of {args.batch_size}")


if __name__ == "__main__":
    main()
