"""Images x backbones x views -> cached (N, D) float32 features, and the rows that could not be decoded.

``plan_features`` looks in the caches (the writable one, then the read-only layers) for every
entry, holds the writable ones it must compute, and says how much work is left, so that the
caller can estimate the time before spending it; ``FeaturePlan.extract`` then computes the
missing chunks. The unit of work is one cache chunk: ``compute_chunk`` decodes a chunk's images
once, runs every backbone and view on them and writes the chunk files itself. The local engine
runs the missing chunks here, one after the other; the Dask engine (``engine.py``) runs one task
per missing chunk on a cluster. Both feed the models the same batches, so their features are
bit-identical.

A row of NaN in a cached entry is an image that could not be decoded only when the entry lists it
as one and the image still fails to decode here; any other NaN or infinite row, or a listed image
that decodes, is the entry's damage: named on one line and recomputed, never blamed on the image.

A backbone may yield several outputs (the pooled features of its last stages): each output of
each view is a cache entry of its own, so a run asking for fewer stages reads what a run with
more computed.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from kaggle_tl.backbones import BackboneRef, key_name
from kaggle_tl.cache.store import Cache, FeatureEntry, cache_key
from kaggle_tl.data.archives import ArchiveMember, ImagePath, absolute, on_disk
from kaggle_tl.data.images import VIEW_TRANSFORMS, ImageError, iter_image_batches, load_resized
from kaggle_tl.errors import KaggleTLError

if TYPE_CHECKING:
    from kaggle_tl.engine import Engine

log = logging.getLogger(__name__)

# Bump when decoding/resizing changes, so old caches are not served (4: crop in source pixels; 5: JPEG through
# libjpeg-turbo, strict: a damaged one is a bad image where it was decoded grey, while whole ones keep their pixels).
FEATURE_VERSION = 5
DEFAULT_CHUNK_ROWS = 1024  # rows per cache chunk: what a killed run can lose, at most; one Dask task

EntryId = tuple[str, str, str]  # (backbone, view, output)


def feature_key(image_key: str, ref: BackboneRef, view: str, output: str = "pooled") -> str:
    """Everything that determines one entry's numbers: images by content, backbone, weights by content,
    size, resize policy, view, the output (stage), the runtime and precision, and the decoding version."""
    # In bf16 an output's numbers depend on which other outputs the converted graph has (OpenVINO fuses
    # otherwise: up to 0.04 on Lite0's pooled output); in fp32 they do not (TensorFlow and OpenVINO,
    # bit for bit), so there a run asking for fewer stages reads what one with more computed.
    graph = [name for name, _ in ref.outputs] if ref.runtime.endswith("-bf16") else None
    return cache_key(images=image_key, backbone=key_name(ref.name), weights=ref.weights_id, size=ref.input_size,
                     resize=ref.resize, view=view, output=output, runtime=ref.runtime, graph=graph,
                     version=FEATURE_VERSION)


_BUILT: dict[tuple, object] = {}  # this process's models by identity: a worker builds each once, not per task


@dataclass(frozen=True)
class BackboneBuilder:
    """Builds the backbones for registered names and user model files; picklable, for Dask workers.

    It carries the weights option ("imagenet", "none" or a path every worker also sees), the runtime
    and precision, and the cache folders (a converted model is kept in the cache's ``models/``):
    each process builds a model the first time a chunk needs it and keeps it for the next chunks.
    """

    weights: str | None = "imagenet"
    runtime: str = "tensorflow"
    precision: str = "fp32"
    cache_root: str | None = None  # where converted models are kept (None: converted in memory each time)
    cache_from: tuple[str, ...] = ()

    def __post_init__(self):
        if self.weights not in (None, "imagenet", "none"):  # a path: workers may run in another folder
            object.__setattr__(self, "weights", os.path.abspath(self.weights))

    def __call__(self, refs: Sequence[BackboneRef]) -> dict:
        from kaggle_tl.backbones import create_backbone  # TensorFlow is imported only where a model runs
        from kaggle_tl.backbones.quiet import import_tensorflow

        import_tensorflow()  # quietly, in a Dask worker too
        for ref in refs:
            if (ref, self) not in _BUILT:
                log.info("building %s (weights=%s, %d px, %s %s)", ref.name, self.weights, ref.input_size,
                         self.runtime, self.precision)
                backbone = create_backbone(ref.name, self.weights, ref.input_size).with_outputs(ref.outputs)
                if self.runtime != "tensorflow":
                    ir_dir, ir_layers = self._converted_dirs(ref)
                    backbone = backbone.on(self.runtime, self.precision, ir_dir, _threads(), ir_layers)
                _BUILT[ref, self] = backbone
        return {ref.name: _BUILT[ref, self] for ref in refs}

    def _converted_dirs(self, ref: BackboneRef) -> tuple[Path | None, list[Path]]:
        """The writable folder of the converted model (None: in memory) and the read-only layers' folders of it."""
        from kaggle_tl.backbones.runtimes import ir_key_parts

        if self.cache_root is None:
            return None, []
        key = cache_key(backbone=key_name(ref.name), weights=ref.weights_id, size=ref.input_size, outputs=ref.outputs,
                        **ir_key_parts())
        return Cache(self.cache_root, self.cache_from).model_dirs(key)


def _threads() -> int | None:
    """The threads a runtime may use: OMP_NUM_THREADS where set (a Dask worker's one), else every core."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


@dataclass(frozen=True)
class ChunkJob:
    """Chunk ``index`` of every entry being extracted: what a worker needs, with no model in it."""

    index: int
    first_row: int
    paths: tuple[str | ArchiveMember, ...]  # this chunk's images, absolute, in row order (an image in a zip: its member)
    refs: tuple[BackboneRef, ...]
    views: tuple[str, ...]
    entries: dict[EntryId, FeatureEntry]  # all are computed...
    write: frozenset[EntryId]  # ...and written where the chunk is missing
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

    pending: dict[EntryId, list[np.ndarray]] = {key: [] for key in job.entries}
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
                if not any(key[:2] == (ref.name, view) for key in pending):
                    continue
                features = _features(backbones[ref.name], VIEW_TRANSFORMS[view](batch[ref.input_size]))
                _check_model_output(features, bad, ref, job.paths[done:done + n])
                features[bad] = np.nan
                start = 0
                for output, dim in ref.outputs:
                    if (ref.name, view, output) in pending:
                        pending[ref.name, view, output].append(features[:, start:start + dim])
                    start += dim
        done += n
        if progress is not None:
            progress(n)
    for key in sorted(job.write):
        entry = job.entries[key]
        entry.write_chunk(job.index, np.concatenate(pending[key]) if done else np.empty((0, entry.dim), np.float32))
    return job.index, {job.first_row + p: problem for p, problem in failed.items()}


def _check_model_output(features: np.ndarray, bad: list[int], ref: BackboneRef, paths: Sequence[str]) -> None:
    """NaN or infinite features of images that decoded fine are the model's fault: name it and its weights."""
    wrong = ~np.isfinite(features).all(axis=1)
    wrong[bad] = False
    if wrong.any():
        raise KaggleTLError(f"{ref.name} (weights {ref.weights_id}) gave NaN or infinite features for "
                            f"{int(wrong.sum())} image(s) that decoded fine, e.g. {paths[int(np.argmax(wrong))]}; "
                            "its weights or the model are at fault, not the images")


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


@dataclass
class Features:
    """What extraction found for one image list: the arrays, the rows that could not be decoded, and
    where each entry came from."""

    arrays: dict[tuple[str, str], np.ndarray]  # (backbone, view) -> (N, dim of every output)
    bad_rows: dict[int, str]  # row -> why it has no features (it could not be decoded)
    sources: dict[str, str] = field(default_factory=dict)  # cache key -> computed | cache | <read-only layer>

    def by_view(self, backbone_names: Sequence[str], views: Sequence[str],
                rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """{view: (N, sum of dims)}: each view's features concatenated across backbones, in order."""
        out = {}
        for view in views:
            parts = [np.asarray(self.arrays[(b, view)]) for b in backbone_names]
            out[view] = np.concatenate([p if rows is None else p[rows] for p in parts], axis=1)
        return out


@dataclass
class _Split:
    """One image list's part of a plan."""

    paths: Sequence[ImagePath]
    image_key: str
    entries: dict[EntryId, FeatureEntry]
    found: dict[EntryId, np.ndarray]
    sources: dict[str, str]
    todo: dict[EntryId, FeatureEntry] = field(default_factory=dict)
    missing: dict[EntryId, set[int]] = field(default_factory=dict)
    bad_rows: set[int] = field(default_factory=set)  # NaN rows of the found entries: undecodable images
    decodes: dict[int, bool] = field(default_factory=dict)  # row -> whether its image decodes (asked once)

    @property
    def chunks(self) -> dict[int, int]:
        """{chunk missing from any entry: its rows}."""
        if not self.todo:
            return {}
        layout = next(iter(self.todo.values()))
        return {i: layout.chunk_slice(i).stop - layout.chunk_slice(i).start
                for i in sorted(set().union(*self.missing.values()))}


class FeaturePlan:
    """What the caches hold of every (split, backbone, view, output) and what is left to compute.

    Use as a context manager: the writable entries to compute stay locked from planning to the
    end of ``extract``, so two runs sharing a cache never compute the same chunk twice.
    """

    def __init__(self, cache: Cache, splits: dict[str, tuple[Sequence[ImagePath], str]], refs: Sequence[BackboneRef],
                 views: Sequence[str], chunk_rows: int = DEFAULT_CHUNK_ROWS, info: dict | None = None):
        self.cache, self.refs, self.views = cache, list(refs), list(views)
        self._info = info or {}
        self.splits: dict[str, _Split] = {}
        for split, (paths, image_key) in splits.items():
            entries = {(ref.name, view, output): cache.features(
                feature_key(image_key, ref, view, output), len(paths), dim, chunk_rows,
                {"backbone": ref.name, "weights": ref.weights_id, "size": ref.input_size, "resize": ref.resize,
                 "view": view, "output": output, "runtime": ref.runtime, "images": image_key, "split": split,
                 **self._info})
                for ref in refs for view in views for output, dim in ref.outputs}
            self.splits[split] = _Split(list(paths), image_key, entries, {}, {})
        self._locks = contextlib.ExitStack()

    def __enter__(self) -> "FeaturePlan":
        try:
            self._plan()
        except BaseException:
            self._locks.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self._locks.close()

    def _plan(self) -> None:
        for split in self.splits.values():
            for key, entry in split.entries.items():
                if entry.is_complete():
                    continue
                for layered in self.cache.read_only_features(entry):
                    array = self._load(split, layered)
                    if array is not None:
                        split.found[key] = array
                        split.sources[entry.key] = str(layered.folder.parents[1])  # the layer
                        break
        # In folder order, so two runs needing overlapping entries never each hold one the other needs.
        held = sorted((e for s in self.splits.values() for k, e in s.entries.items() if k not in s.found),
                      key=lambda e: e.folder)
        for entry in held:
            self._locks.enter_context(entry.locked("another run is extracting these features; waiting for it"))
        for split in self.splits.values():
            for key, entry in split.entries.items():
                if key in split.found:
                    continue
                array = self._load(split, entry)
                if array is None:
                    split.todo[key] = entry
                else:
                    split.found[key] = array
                    split.sources[entry.key] = "cache"
            # Every entry of a split shares the chunk layout; a chunk missing from any is computed for all
            # (they differ only when a run was killed between two writes of the same chunk).
            split.missing = {k: set(e.missing_chunks()) for k, e in split.todo.items()}

    def _load(self, split: _Split, entry: FeatureEntry) -> np.ndarray | None:
        """``entry``'s array when it is intact (``FeatureEntry.load``) and every image it lists as undecodable
        still fails to decode here; else None, the entry named on one line (and removed, if writable)."""
        array = entry.load()
        if array is None:
            return None
        decoding = [row for row in sorted(entry.bad_rows) if self._decodes(split, row)]
        if decoding:
            more = f" (and {len(decoding) - 1} more)" if len(decoding) > 1 else ""
            entry.reject(f"row {decoding[0]} is NaN as an undecodable image, but {split.paths[decoding[0]]} "
                         f"decodes{more}")
            return None
        split.bad_rows.update(entry.bad_rows)
        return array

    def _decodes(self, split: _Split, row: int) -> bool:
        """Whether the image of ``row`` decodes here, as extraction would decode it."""
        if row not in split.decodes:
            (resize,) = {r.resize for r in self.refs}
            try:
                load_resized(split.paths[row], sorted({r.input_size for r in self.refs}), resize)
                split.decodes[row] = True
            except ImageError:
                split.decodes[row] = False
        return split.decodes[row]

    def images_to_compute(self, split: str | None = None) -> int:
        return sum(sum(s.chunks.values()) for name, s in self.splits.items() if split in (None, name))

    def passes(self) -> int:
        """Model calls per image summed over what is left: images x views x backbones."""
        total = 0
        for split in self.splits.values():
            for index, rows in split.chunks.items():
                needed = {(k[0], k[1]) for k, chunks in split.missing.items() if index in chunks}
                total += rows * len(needed)
        return total

    def refs_to_compute(self) -> list[BackboneRef]:
        names = {k[0] for s in self.splits.values() for k in s.todo}
        return [r for r in self.refs if r.name in names]

    def extract(self, build_backbones: Callable[[list[BackboneRef]], dict], batch_size: int = 32, threads: int = 4,
                engine: Engine | None = None) -> dict[str, Features]:
        """Compute what is missing (``build_backbones`` is called only then); every split's Features.

        ``engine``: None or a local Engine computes here; a Dask Engine runs one task per missing
        chunk on its cluster, and then ``build_backbones`` must be picklable (``BackboneBuilder``).
        A killed run resumes from the chunks already written.

        An image that cannot be decoded does not stop extraction: its rows are NaN, cached like the
        others (decoding depends only on the file's bytes, which the key covers), and reported in
        ``Features.bad_rows``; the caller decides what that means.
        """
        out = {}
        for name, split in self.splits.items():
            failed: dict[int, str] = {}
            if not split.todo:
                log.info("%s: all %d entries from the caches", name, len(split.entries))
            else:
                log.info("%s: computing %d chunk(s) of %d images for %d entries", name, len(split.chunks),
                         sum(split.chunks.values()), len(split.todo))
                failed = self._compute(name, split, build_backbones, batch_size, threads, engine)
                for key, entry in split.todo.items():
                    split.found[key] = entry.finalize(failed)
                    split.sources[entry.key] = "computed"
                    split.bad_rows.update(entry.bad_rows)
            out[name] = self._features(split, failed)
        return out

    def _compute(self, name: str, split: _Split, build_backbones, batch_size, threads, engine) -> dict[int, str]:
        refs_needed = tuple(r for r in self.refs if any(k[0] == r.name for k in split.todo))
        layout = next(iter(split.todo.values()))

        def make_job(index: int) -> ChunkJob:
            rows = layout.chunk_slice(index)
            missing = frozenset(k for k in split.todo if index in split.missing[k])
            return ChunkJob(index, rows.start, tuple(absolute(p) for p in split.paths[rows]), refs_needed,
                            tuple(self.views), split.todo, missing, build_backbones, batch_size, threads)

        sizes = split.chunks
        # Jobs are made as they are run or sent: the driver never holds every chunk's paths twice.
        an_input = on_disk(split.paths[0]) if len(split.paths) else str(self.cache.root)
        failed = _run_jobs(map(make_job, sizes), sizes, engine, self.cache.root, an_input, name)
        for row, problem in sorted(failed.items()):
            log.warning("%s: %s: %s; its features are NaN", name, split.paths[row], problem)
        if failed:
            log.warning("%s: %d image(s) could not be decoded", name, len(failed))
        return failed

    def _features(self, split: _Split, failed: dict[int, str]) -> Features:
        arrays = {}
        for ref in self.refs:
            for view in self.views:
                parts = [split.found[ref.name, view, output] for output, _ in ref.outputs]
                arrays[ref.name, view] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        # The entries' NaN rows: images this run's decoder failed on (it said why), or that a cache entry lists
        # as undecodable and that still fail to decode here (``_load``); no other row is NaN.
        bad_rows = {row: failed.get(row, "could not be decoded (no finite features in the cache)")
                    for row in sorted(split.bad_rows)}
        return Features(arrays, bad_rows, dict(split.sources))


def extract_features(paths: Sequence[ImagePath], image_key: str, refs: Sequence[BackboneRef], views: Sequence[str],
                     cache: Cache, build_backbones: Callable[[list[BackboneRef]], dict],
                     batch_size: int = 32, threads: int = 4, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                     desc: str = "features", engine: Engine | None = None) -> Features:
    """Features of one image list, computing only the cache chunks that are missing (a plan of one split)."""
    with FeaturePlan(cache, {desc: (paths, image_key)}, refs, views, chunk_rows) as plan:
        return plan.extract(build_backbones, batch_size, threads, engine)[desc]


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


def seconds_per_image(build_backbones: Callable[[list[BackboneRef]], dict], refs: Sequence[BackboneRef],
                      views: Sequence[str], sample: Sequence[Path], batch_size: int, threads: int) -> float:
    """Seconds one image takes here, decoding, resizing and every backbone and view included.

    Timed on up to two batches of ``sample`` (real images of the run) after a warm-up batch that
    pays the models' tracing; builds the models, which the extraction that follows reuses. The
    price of knowing the time before spending it is these few batches of compute.
    """
    backbones = build_backbones(list(refs))
    sizes = sorted({r.input_size for r in refs})
    (resize,) = {r.resize for r in refs}

    def process(paths: Sequence[Path]) -> int:
        count = 0
        for batch in iter_image_batches(paths, sizes, batch_size, threads, on_error=lambda *_: None, resize=resize):
            for ref in refs:
                for view in views:
                    _features(backbones[ref.name], VIEW_TRANSFORMS[view](batch[ref.input_size]))
            count += len(batch[sizes[0]])
        return count

    process(sample[:batch_size])  # warm-up
    timed = sample[batch_size:3 * batch_size] or sample[:batch_size]
    start = time.perf_counter()
    count = process(timed)
    return (time.perf_counter() - start) / max(1, count)


# Live activation bytes per input float of a CNN at inference, generous: the largest activation
# of the common ImageNet CNNs holds 5-8 floats per input float (EfficientNet-Lite0's 112x112x96
# expansion at 224 px is 8), and TensorFlow keeps two or three alive at once.
ACTIVATION_FACTOR = 24


def extraction_memory(refs: Sequence[BackboneRef], batch_size: int) -> int:
    """Bytes extraction needs at its peak, estimated before any model is built.

    The largest backbone's activations for one batch (backbones run one after the other), plus
    the decoded batches in flight (two ahead, uint8, every size).
    """
    activations = max(batch_size * r.input_size ** 2 * 3 * 4 * ACTIVATION_FACTOR for r in refs)
    decoded = 2 * batch_size * sum(size ** 2 * 3 for size in {r.input_size for r in refs})
    return activations + decoded


def available_memory() -> int | None:
    """Bytes this process can still use: MemAvailable, or a smaller cgroup (container) limit; None if unknown."""
    found = []
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            found.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def check_memory(refs: Sequence[BackboneRef], batch_size: int) -> None:
    """One line, before extraction, when it would need more memory than the machine has left."""
    needed, available = extraction_memory(refs, batch_size), available_memory()
    if available is not None and needed > available:
        largest = max(refs, key=lambda r: r.input_size)
        raise KaggleTLError(f"setting batch_size/image_size: extraction would need about {needed / 2**30:.1f} GiB "
                            f"({batch_size} images of {largest.input_size} px per batch for {largest.name}), "
                            f"{available / 2**30:.1f} GiB are available; lower --batch-size or --image-size")
