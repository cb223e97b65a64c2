"""extract_features(): images x backbones x views -> cached (N, D) float32 arrays."""
from __future__ import annotations

import collections
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from kaggle_tl.backbones import BackboneRef
from kaggle_tl.cache import FeatureCache, cache_key
from kaggle_tl.images import VIEW_TRANSFORMS, ImageError, iter_image_batches

log = logging.getLogger(__name__)

FEATURE_VERSION = 3  # bump when decoding/resizing changes, so old caches are not served (3: reduced JPEG decode)


def feature_key(image_key: str, ref: BackboneRef, view: str) -> str:
    return cache_key(images=image_key, backbone=ref.name, weights=ref.weights_id, size=ref.input_size,
                     resize=ref.resize, view=view, version=FEATURE_VERSION)


DEFAULT_CHUNK_ROWS = 1024  # rows per cache chunk: what a killed run can lose, at most


def extract_features(paths: Sequence[Path], image_key: str, refs: Sequence[BackboneRef], views: Sequence[str],
                     cache: FeatureCache, build_backbones: Callable[[list[BackboneRef]], dict],
                     batch_size: int = 32, threads: int = 4, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                     desc: str = "features") -> dict[tuple[str, str], np.ndarray]:
    """Features for every (backbone, view), computing only what the cache lacks.

    ``build_backbones(refs)`` is called only when something must be computed, so a fully
    cached run never builds (or calls) a model. Each needed image is decoded once and feeds
    every backbone and view. Features are written every ``chunk_rows`` images, so a killed run
    resumes from its last complete chunk.

    An image that cannot be decoded does not stop extraction: its rows are NaN, cached like the
    others (decoding depends only on the file's bytes, which the key covers), and the caller
    decides what that means (``competition.drop_undecodable``).

    Returns {(backbone name, view): memory-mapped (N, dim) float32 array}.
    """
    entries = {(ref.name, view): cache.entry(feature_key(image_key, ref, view), len(paths), ref.dim, chunk_rows,
                                             {"backbone": ref.name, "weights": ref.weights_id, "size": ref.input_size,
                                              "resize": ref.resize, "view": view, "images": image_key})
               for ref in refs for view in views}
    result = {k: e.load() for k, e in entries.items()}
    todo = {k: entries[k] for k, arr in result.items() if arr is None}
    if not todo:
        log.info("%s: all %d arrays from the cache", desc, len(result))
        return result
    missing = {k: set(e.missing_chunks()) for k, e in todo.items()}
    # Every array in todo shares the chunk layout; a chunk missing for any of them is computed
    # for all (they differ only when a run was killed between two writes of the same chunk).
    layout = next(iter(todo.values()))
    chunks = collections.deque(sorted(set().union(*missing.values())))
    rows = [i for c in chunks for i in range(layout.chunk_slice(c).start, layout.chunk_slice(c).stop)]
    refs_needed = [r for r in refs if any(k[0] == r.name for k in todo)]
    backbones = build_backbones(refs_needed) if chunks else {}
    log.info("%s: computing %d chunk(s) of %d images for %s", desc, len(chunks), len(rows), sorted(todo))

    failed: dict[int, str] = {}  # position in rows -> problem

    def on_error(position: int, error: ImageError) -> None:
        failed[position] = error.problem
        log.warning("%s: %s; its features are NaN", desc, error)

    pending: dict[tuple[str, str], list[np.ndarray]] = {k: [] for k in todo}
    n_pending = done = 0
    sizes = sorted({r.input_size for r in refs_needed})
    (resize,) = {r.resize for r in refs_needed}  # one policy per run (the run's resize setting)
    with tqdm(total=len(rows), desc=desc, unit="img", disable=None) as bar:
        for batch in iter_image_batches([paths[i] for i in rows], sizes, batch_size, threads, on_error=on_error,
                                        resize=resize):
            n = len(next(iter(batch.values())))
            bad = [p - done for p in failed if done <= p < done + n]
            for key in todo:
                name, view = key
                ref = next(r for r in refs_needed if r.name == name)
                features = np.array(backbones[name].features(VIEW_TRANSFORMS[view](batch[ref.input_size])),
                                    dtype=np.float32)
                features[bad] = np.nan
                pending[key].append(features)
            n_pending, done = n_pending + n, done + n
            bar.update(n)
            while chunks and n_pending >= _length(layout.chunk_slice(chunks[0])):
                index = chunks.popleft()
                length = _length(layout.chunk_slice(index))
                for key, entry in todo.items():
                    joined = np.concatenate(pending[key])
                    if index in missing[key]:
                        entry.write_chunk(index, joined[:length])
                    pending[key] = [joined[length:]]
                n_pending -= length
    if failed:
        log.warning("%s: %d image(s) could not be decoded", desc, len(failed))
    for key, entry in todo.items():
        result[key] = entry.finalize()
    return result


def _length(rows: slice) -> int:
    return rows.stop - rows.start


def concat_views(features: dict[tuple[str, str], np.ndarray], backbone_names: Sequence[str],
                 views: Sequence[str]) -> dict[str, np.ndarray]:
    """{view: (N, sum of dims)}: each view's features concatenated across backbones, in order."""
    return {view: np.concatenate([np.asarray(features[(b, view)]) for b in backbone_names], axis=1)
            for view in views}
