"""extract_features(): images x backbones x views -> cached (N, D) float32 arrays."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from kaggle_tl.cache import CacheEntry, FeatureCache, cache_key
from kaggle_tl.images import hflip, iter_image_batches

log = logging.getLogger(__name__)

FEATURE_VERSION = 1  # bump when decoding/resizing changes, so old caches are not served
VIEW_TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"original": lambda x: x, "hflip": hflip}


@dataclass(frozen=True)
class BackboneRef:
    """What identifies a backbone's features without building the model."""

    name: str
    weights_id: str
    input_size: int
    dim: int


def feature_key(image_key: str, ref: BackboneRef, view: str) -> str:
    return cache_key(images=image_key, backbone=ref.name, weights=ref.weights_id, size=ref.input_size,
                     view=view, version=FEATURE_VERSION)


def extract_features(paths: Sequence[Path], image_key: str, refs: Sequence[BackboneRef], views: Sequence[str],
                     cache: FeatureCache, build_backbones: Callable[[list[BackboneRef]], dict],
                     batch_size: int = 32, threads: int = 4, chunk_rows: int | None = None,
                     desc: str = "features") -> dict[tuple[str, str], np.ndarray]:
    """Features for every (backbone, view), computing only what the cache lacks.

    ``build_backbones(refs)`` is called only when something must be computed, so a fully
    cached run never builds (or calls) a model. Each needed image is decoded once and feeds
    every backbone and view. Returns {(backbone name, view): memory-mapped (N, dim) array}.
    """
    chunk_rows = chunk_rows or batch_size * max(1, 1024 // batch_size)
    entries = {(ref.name, view): cache.entry(feature_key(image_key, ref, view), len(paths), ref.dim, chunk_rows,
                                             {"backbone": ref.name, "weights": ref.weights_id,
                                              "size": ref.input_size, "view": view, "images": image_key})
               for ref in refs for view in views}
    result = {k: e.load() for k, e in entries.items()}
    todo = {k: entries[k] for k, arr in result.items() if arr is None}
    if not todo:
        log.info("%s: all %d arrays from the cache", desc, len(result))
        return result
    missing = {k: set(e.missing_chunks()) for k, e in todo.items()}
    chunks = sorted(set().union(*missing.values()))
    refs_needed = [r for r in refs if any(k[0] == r.name for k in todo)]
    backbones = build_backbones(refs_needed) if chunks else {}
    rows = [i for c in chunks for i in range(*next(iter(todo.values())).chunk_slice(c).indices(len(paths)))]
    log.info("%s: computing %d chunk(s) of %d images for %s", desc, len(chunks), len(rows), sorted(todo))

    buffers: dict[tuple[str, str], list[np.ndarray]] = {k: [] for k in todo}
    chunk_iter = iter(chunks)
    current = next(chunk_iter, None)
    filled = 0
    sizes = sorted({r.input_size for r in refs_needed})
    with tqdm(total=len(rows), desc=desc, unit="img", disable=None) as bar:
        for batch in iter_image_batches([paths[i] for i in rows], sizes, batch_size, threads):
            n = len(next(iter(batch.values())))
            for ref in refs_needed:
                for view in views:
                    if (ref.name, view) in todo and current in missing[(ref.name, view)]:
                        images = VIEW_TRANSFORMS[view](batch[ref.input_size])
                        buffers[(ref.name, view)].append(backbones[ref.name].features(images))
            filled += n
            bar.update(n)
            # chunk_rows is a multiple of batch_size, so a batch never straddles two chunks.
            if filled == _chunk_len(todo, current):
                for key, entry in todo.items():
                    if buffers[key]:
                        entry.write_chunk(current, np.concatenate(buffers[key]))
                        buffers[key] = []
                current, filled = next(chunk_iter, None), 0
    for key, entry in todo.items():
        result[key] = entry.finalize()
    return result


def _chunk_len(todo: dict[tuple[str, str], CacheEntry], index: int) -> int:
    s = next(iter(todo.values())).chunk_slice(index)
    return s.stop - s.start


def concat_views(features: dict[tuple[str, str], np.ndarray], backbone_names: Sequence[str],
                 views: Sequence[str]) -> dict[str, np.ndarray]:
    """{view: (N, sum of dims)}: each view's features concatenated across backbones, in order."""
    return {view: np.concatenate([np.asarray(features[(b, view)]) for b in backbone_names], axis=1)
            for view in views}
