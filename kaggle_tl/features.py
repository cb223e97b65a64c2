"""extract_features(): images x backbones x views -> cached (N, D) float32 arrays.

The unit of work is one cache chunk: ``compute_chunk`` decodes a chunk's images once, runs every
backbone and view on them and writes the chunk files itself. The local engine runs the missing
chunks here, one after the other; the Dask engine (``engine.py``) runs one task per missing chunk
on a cluster. Both feed the models the same batches, so their features are bit-identical.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from kaggle_tl.backbones import BackboneRef
from kaggle_tl.cache import CacheEntry, FeatureCache, cache_key
from kaggle_tl.images import VIEW_TRANSFORMS, ImageError, iter_image_batches

if TYPE_CHECKING:
    from kaggle_tl.engine import Engine

log = logging.getLogger(__name__)

FEATURE_VERSION = 3  # bump when decoding/resizing changes, so old caches are not served (3: reduced JPEG decode)


def feature_key(image_key: str, ref: BackboneRef, view: str) -> str:
    return cache_key(images=image_key, backbone=ref.name, weights=ref.weights_id, size=ref.input_size,
                     resize=ref.resize, view=view, version=FEATURE_VERSION)


DEFAULT_CHUNK_ROWS = 1024  # rows per cache chunk: what a killed run can lose, at most; one Dask task

_BUILT: dict[tuple, object] = {}  # this process's models by identity: a worker builds each once, not per task


@dataclass(frozen=True)
class BackboneBuilder:
    """``build_backbones`` for registered backbones and user model files; picklable, for Dask workers.

    It carries only the weights option ("imagenet", "none" or a path every worker also sees): each
    process builds a model the first time a chunk needs it and keeps it for the next chunks.
    """

    weights: str | None = "imagenet"

    def __post_init__(self):
        if self.weights not in (None, "imagenet", "none"):  # a path: workers may run in another folder
            object.__setattr__(self, "weights", os.path.abspath(self.weights))

    def __call__(self, refs: Sequence[BackboneRef]) -> dict:
        from kaggle_tl.backbones import create_backbone  # TensorFlow is imported only where a model runs
        from kaggle_tl.quiet import import_tensorflow

        import_tensorflow()  # quietly, in a Dask worker too, before the seeding below imports Keras

        for ref in refs:
            if (ref, self.weights) not in _BUILT:
                log.info("building %s (weights=%s, %d px)", ref.name, self.weights, ref.input_size)
                if ref.weights_id == "none":  # one cache key for every random init: make it the same init
                    import keras
                    keras.utils.set_random_seed(0)
                _BUILT[ref, self.weights] = create_backbone(ref.name, self.weights, ref.input_size)
        return {ref.name: _BUILT[ref, self.weights] for ref in refs}


@dataclass(frozen=True)
class ChunkJob:
    """Chunk ``index`` of every entry being extracted: what a worker needs, with no model in it."""

    index: int
    first_row: int
    paths: tuple[str, ...]  # this chunk's images, absolute, in row order
    refs: tuple[BackboneRef, ...]
    views: tuple[str, ...]
    entries: dict[tuple[str, str], CacheEntry]  # (backbone, view) -> entry; all are computed...
    write: frozenset[tuple[str, str]]  # ...and written where the chunk is missing
    build_backbones: Callable[[list[BackboneRef]], dict]
    batch_size: int
    threads: int


def compute_chunk(job: ChunkJob, progress: Callable[[int], None] | None = None) -> tuple[int, dict[int, str]]:
    """Decode the chunk's images once, run every backbone and view on them, write the chunk files.

    An image that cannot be decoded gets NaN rows. Returns the chunk index and {row in the whole
    image list: problem} for such images; features never travel back, they are on disk.
    """
    backbones = job.build_backbones(list(job.refs))
    failed: dict[int, str] = {}  # position in job.paths -> problem

    def on_error(position: int, error: ImageError) -> None:
        failed[position] = error.problem

    pending: dict[tuple[str, str], list[np.ndarray]] = {key: [] for key in job.entries}
    done = 0
    sizes = sorted({r.input_size for r in job.refs})
    (resize,) = {r.resize for r in job.refs}  # one policy per run (the run's resize setting)
    for batch in iter_image_batches(job.paths, sizes, job.batch_size, job.threads, on_error=on_error,
                                    resize=resize):
        n = len(next(iter(batch.values())))
        # Decode threads add to `failed` while we read it: iterate over a copy.
        bad = [p - done for p in failed.copy() if done <= p < done + n]
        for ref in job.refs:
            for view in job.views:
                if (ref.name, view) in pending:
                    features = _features(backbones[ref.name], VIEW_TRANSFORMS[view](batch[ref.input_size]))
                    features[bad] = np.nan
                    pending[ref.name, view].append(features)
        done += n
        if progress is not None:
            progress(n)
    for key in sorted(job.write):
        entry = job.entries[key]
        entry.write_chunk(job.index, np.concatenate(pending[key]) if done else np.empty((0, entry.dim), np.float32))
    return job.index, {job.first_row + p: problem for p, problem in failed.items()}


def _features(backbone, images: np.ndarray) -> np.ndarray:
    """The backbone's features of a batch, padding a batch of one image to two.

    TensorFlow runs a batch of one through other kernels, whose results differ in the last bits
    from the same image in a larger batch, and with the thread count; batches of two or more
    agree (EfficientNet-Lite0, 1 or 2 threads). Padding keeps a chunk's features independent
    of where its batches end and of the worker they run on.
    """
    if len(images) == 1:
        return np.array(backbone.features(np.concatenate([images, images])), dtype=np.float32)[:1]
    return np.array(backbone.features(images), dtype=np.float32)


def extract_features(paths: Sequence[Path], image_key: str, refs: Sequence[BackboneRef], views: Sequence[str],
                     cache: FeatureCache, build_backbones: Callable[[list[BackboneRef]], dict],
                     batch_size: int = 32, threads: int = 4, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                     desc: str = "features", engine: Engine | None = None) -> dict[tuple[str, str], np.ndarray]:
    """Features for every (backbone, view), computing only the cache chunks that are missing.

    ``build_backbones(refs)`` is called only when something must be computed, so a fully cached
    run never builds (or calls) a model, and never starts a cluster. ``engine``: None or a local
    Engine computes here; a Dask Engine runs one task per missing chunk on its cluster, and then
    ``build_backbones`` must be picklable (``BackboneBuilder``). A killed run resumes from the
    chunks already written. Another run extracting the same entries is waited for, then read.

    An image that cannot be decoded does not stop extraction: its rows are NaN, cached like the
    others (decoding depends only on the file's bytes, which the key covers), and the caller
    decides what that means (``competition.drop_undecodable``).

    Returns {(backbone name, view): memory-mapped (N, dim) float32 array}.
    """
    cache = FeatureCache(os.path.abspath(cache.root))  # workers may run in another folder
    entries = {(ref.name, view): cache.entry(feature_key(image_key, ref, view), len(paths), ref.dim, chunk_rows,
                                             {"backbone": ref.name, "weights": ref.weights_id, "size": ref.input_size,
                                              "resize": ref.resize, "view": view, "images": image_key})
               for ref in refs for view in views}
    with contextlib.ExitStack() as locks:
        # In folder order, so two runs needing overlapping entries never each hold one the other needs.
        for entry in sorted(entries.values(), key=lambda e: e.folder):
            locks.enter_context(entry.locked(f"{desc}: another run is extracting these features; waiting for it"))
        result = {k: e.load() for k, e in entries.items()}
        todo = {k: entries[k] for k, arr in result.items() if arr is None}
        if not todo:
            log.info("%s: all %d arrays from the cache", desc, len(result))
            return result
        sizes, make_job = _plan(paths, refs, views, todo, build_backbones, batch_size, threads)
        log.info("%s: computing %d chunk(s) of %d images for %s", desc, len(sizes), sum(sizes.values()),
                 sorted(todo))
        # Jobs are made as they are run or sent: the driver never holds every chunk's paths twice.
        an_input = os.path.abspath(paths[0]) if len(paths) else str(cache.root)
        failed = _run_jobs(map(make_job, sizes), sizes, engine, cache.root, an_input, desc)
        for row, problem in sorted(failed.items()):
            log.warning("%s: %s: %s; its features are NaN", desc, paths[row], problem)
        if failed:
            log.warning("%s: %d image(s) could not be decoded", desc, len(failed))
        for key, entry in todo.items():
            result[key] = entry.finalize()
    return result


def _plan(paths: Sequence[Path], refs: Sequence[BackboneRef], views: Sequence[str],
          todo: dict[tuple[str, str], CacheEntry], build_backbones: Callable, batch_size: int,
          threads: int) -> tuple[dict[int, int], Callable[[int], ChunkJob]]:
    """{chunk missing from any entry in ``todo``: its rows}, and how to make the job computing one."""
    missing = {k: set(e.missing_chunks()) for k, e in todo.items()}
    # Every entry shares the chunk layout; a chunk missing for any of them is computed for all
    # (they differ only when a run was killed between two writes of the same chunk).
    layout = next(iter(todo.values()))
    refs_needed = tuple(r for r in refs if any(k[0] == r.name for k in todo))

    def make_job(index: int) -> ChunkJob:
        rows = layout.chunk_slice(index)
        return ChunkJob(index, rows.start, tuple(os.path.abspath(p) for p in paths[rows]), refs_needed, tuple(views),
                        todo, frozenset(k for k in todo if index in missing[k]), build_backbones, batch_size, threads)

    sizes = {}
    for index in sorted(set().union(*missing.values())):
        rows = layout.chunk_slice(index)
        sizes[index] = rows.stop - rows.start
    return sizes, make_job


def _run_jobs(jobs: Iterator[ChunkJob], sizes: dict[int, int], engine: Engine | None, cache_root: Path,
              an_input: str, desc: str) -> dict[int, str]:
    """Run the jobs here or on the engine's cluster, with progress; {row: problem} of undecodable images."""
    local = engine is None or engine.kind == "local"
    failed: dict[int, str] = {}
    with tqdm(total=sum(sizes.values()), desc=desc, unit="img", disable=None) as bar:
        results = ((compute_chunk(job, bar.update) for job in jobs) if local
                   else engine.map_unordered(compute_chunk, jobs, cache_root, an_input))
        for index, bad_rows in results:
            if not local:  # a local job reports each batch as it goes
                bar.update(sizes[index])
            failed.update(bad_rows)
            log.debug("%s: chunk %d written", desc, index)
    return failed


def concat_views(features: dict[tuple[str, str], np.ndarray], backbone_names: Sequence[str],
                 views: Sequence[str]) -> dict[str, np.ndarray]:
    """{view: (N, sum of dims)}: each view's features concatenated across backbones, in order."""
    return {view: np.concatenate([np.asarray(features[(b, view)]) for b in backbone_names], axis=1)
            for view in views}
