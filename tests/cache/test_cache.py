"""The feature cache: damaged files are recomputed, never trusted; interrupted runs resume."""
from __future__ import annotations

import errno
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import random_pngs
from kaggle_tl import files as files_module
from kaggle_tl.cache import store as cache_module
from kaggle_tl.cache.store import Cache, array_digest
from kaggle_tl.errors import KaggleTLError
from kaggle_tl.features import BackboneRef, extract_features
from kaggle_tl.files import _host, atomic_write_bytes

N_IMAGES, CHUNK, BATCH, DIM = 20, 8, 4, 6  # chunks of rows [0, 8), [8, 16), [16, 20)
REF = BackboneRef("fake", "none", 16, DIM)


class FakeBackbone:
    """Deterministic pixel statistics; counts images and can stop after ``stop_after`` calls."""

    def __init__(self, stop_after: int | None = None):
        self.images_seen, self.calls, self.stop_after = 0, 0, stop_after

    def features(self, images: np.ndarray) -> np.ndarray:
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt  # what Ctrl-C raises in the middle of extraction
        self.calls += 1
        self.images_seen += len(images)
        x = images.astype(np.float32)
        return np.concatenate([x.mean(axis=(1, 2)), x[:, 0, 0, :]], axis=1)


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory) -> list[Path]:
    return random_pngs(tmp_path_factory.mktemp("images"), N_IMAGES)


def extract(paths, cache_dir, backbone=None, chunk_rows=CHUNK, batch_size=BATCH):
    backbone = backbone or FakeBackbone()
    out = extract_features(paths, "images-key", [REF], ["original"], Cache(cache_dir),
                           lambda refs: {"fake": backbone}, batch_size=batch_size, threads=2, chunk_rows=chunk_rows)
    return np.array(out.arrays[("fake", "original")]), backbone


@pytest.fixture(scope="module")
def reference(image_paths, tmp_path_factory) -> np.ndarray:
    features, backbone = extract(image_paths, tmp_path_factory.mktemp("reference"))
    assert backbone.images_seen == N_IMAGES
    return features


def entry_dir(cache_dir: Path) -> Path:
    (folder,) = [p for p in (cache_dir / "features").iterdir() if p.is_dir()]
    return folder


def interrupted(image_paths, cache_dir, calls: int, **options) -> Path:
    """Run extraction that is interrupted after ``calls`` model calls; return the entry folder."""
    with pytest.raises(KeyboardInterrupt):
        extract(image_paths, cache_dir, FakeBackbone(stop_after=calls), **options)
    return entry_dir(cache_dir)


def chunks(folder: Path) -> list[Path]:
    return sorted(folder.glob("chunk_*.npy"))


def test_complete_run_leaves_only_features_and_meta(reference, image_paths, tmp_path):
    features, _ = extract(image_paths, tmp_path)
    np.testing.assert_array_equal(features, reference)
    folder = entry_dir(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["features.npy", "meta.json"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["shape"] == [N_IMAGES, DIM] and meta["sha1"] == array_digest(np.load(folder / "features.npy"))
    again, backbone = extract(image_paths, tmp_path)
    assert backbone.images_seen == 0  # all from the cache, no model call
    np.testing.assert_array_equal(again, reference)


def test_interrupted_run_resumes_from_its_last_complete_chunk(reference, image_paths, tmp_path):
    folder = interrupted(image_paths, tmp_path, calls=3)  # 3 batches of 4 = 12 rows: chunk 0 done, 4 rows lost
    assert [p.name.split("_")[1] for p in chunks(folder)] == ["0000000000-0000000008"]
    features, backbone = extract(image_paths, tmp_path)
    assert backbone.images_seen == N_IMAGES - 8
    np.testing.assert_array_equal(features, reference)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def wrong_shape(path: Path) -> None:
    with open(path, "wb") as handle:
        np.save(handle, np.zeros((3, DIM + 1), np.float32))


def flip_a_value(path: Path) -> None:
    array = np.load(path)
    array[1, 2] += 1.0
    with open(path, "wb") as handle:  # same file name, same shape: only the checksum can tell
        np.save(handle, array)


def empty(path: Path) -> None:
    path.write_bytes(b"")


DAMAGE = [truncate, wrong_shape, flip_a_value, empty]


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_features_npy_is_recomputed(damage, reference, image_paths, tmp_path, caplog):
    extract(image_paths, tmp_path)
    damage(entry_dir(tmp_path) / "features.npy")
    features, backbone = extract(image_paths, tmp_path)
    assert backbone.images_seen == N_IMAGES
    np.testing.assert_array_equal(features, reference)
    assert "recomputing" in caplog.text


@pytest.mark.parametrize("meta", [b"", b"{not json", b"[]", b'{"sha1": "0000"}'])
def test_damaged_meta_json_is_recomputed(meta, reference, image_paths, tmp_path):
    extract(image_paths, tmp_path)
    (entry_dir(tmp_path) / "meta.json").write_bytes(meta)
    features, backbone = extract(image_paths, tmp_path)
    assert backbone.images_seen == N_IMAGES
    np.testing.assert_array_equal(features, reference)


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_chunk_is_recomputed(damage, reference, image_paths, tmp_path, caplog):
    folder = interrupted(image_paths, tmp_path, calls=4)  # chunks 0 and 1
    damage(chunks(folder)[0])
    features, backbone = extract(image_paths, tmp_path)
    assert backbone.images_seen == N_IMAGES - 8  # chunk 1 was kept
    np.testing.assert_array_equal(features, reference)
    assert "damaged chunk" in caplog.text


def test_chunk_of_another_row_layout_is_not_trusted(reference, image_paths, tmp_path):
    # Rows [0, 12) written with chunk_rows=12 must not pass for chunk 0 ([0, 8)) or chunk 1 ([8, 16)).
    with pytest.raises(KeyboardInterrupt):
        extract(image_paths, tmp_path, FakeBackbone(stop_after=3), chunk_rows=12)
    assert len(chunks(entry_dir(tmp_path))) == 1
    features, backbone = extract(image_paths, tmp_path)
    assert backbone.images_seen == N_IMAGES
    np.testing.assert_array_equal(features, reference)


def test_chunk_rows_need_not_be_a_multiple_of_the_batch(reference, image_paths, tmp_path):
    features, _ = extract(image_paths, tmp_path, chunk_rows=7, batch_size=3)
    np.testing.assert_array_equal(features, reference)
    folder = interrupted(image_paths, tmp_path / "again", calls=4, chunk_rows=7, batch_size=3)  # 12 rows: [0, 7)
    assert len(chunks(folder)) == 1 and "0000000000-0000000007" in chunks(folder)[0].name
    features, backbone = extract(image_paths, tmp_path / "again", chunk_rows=7, batch_size=3)
    assert backbone.images_seen == N_IMAGES - 7 + 1  # chunk 1's last batch, of one image, is padded to two
    np.testing.assert_array_equal(features, reference)


def test_leftover_temp_files_are_ignored_and_cleaned(reference, image_paths, tmp_path):
    folder = interrupted(image_paths, tmp_path, calls=2)
    # A temp file of a process that died mid-write (pid 2**22 + 1 is above Linux's pid_max default).
    (folder / f".chunk_0000000008-0000000016_0123456789abcdef.npy.{_host()}-{2**22 + 1}-0123456789abcdef.tmp"
     ).write_bytes(b"\x93NUMPY half")
    features, _ = extract(image_paths, tmp_path)
    np.testing.assert_array_equal(features, reference)
    assert sorted(p.name for p in folder.iterdir()) == ["features.npy", "meta.json"]


def test_disk_full_while_writing_a_chunk_is_one_clear_error(image_paths, tmp_path, monkeypatch):
    writes = []

    def fsync(fd):
        writes.append(fd)
        if len(writes) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files_module.os, "fsync", fsync)
    with pytest.raises(KaggleTLError, match="cannot write features .No space left on device.; the chunks already "
                                            "written are kept"):
        extract(image_paths, tmp_path)
    folder = entry_dir(tmp_path)
    assert len(chunks(folder)) == 1 and not list(folder.glob(".*"))  # the first chunk kept, no temp file left
    monkeypatch.undo()
    _, backbone = extract(image_paths, tmp_path)
    assert backbone.images_seen == N_IMAGES - CHUNK


def test_finalise_streams_chunks_into_a_checked_file_and_a_full_disk_keeps_the_chunks(tmp_path, monkeypatch):
    rows = np.random.default_rng(1).normal(size=(N_IMAGES, DIM)).astype(np.float32)
    entry = Cache(tmp_path).features("k", N_IMAGES, DIM, CHUNK)
    for index in range(entry.n_chunks):
        entry.write_chunk(index, rows[entry.chunk_slice(index)])
    real_fdopen = files_module.os.fdopen

    def fdopen_full(fd, mode="rb", **kwargs):
        class Full:  # the joined file's writes fail as on a full disk
            def __init__(self):
                self.file = real_fdopen(fd, mode, **kwargs)

            def write(self, data):
                raise OSError(errno.ENOSPC, "No space left on device")

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.file.close()
        return Full()

    monkeypatch.setattr(cache_module.os, "fdopen", fdopen_full)
    with pytest.raises(KaggleTLError, match="cannot write features.npy .No space left on device.; the chunks are kept"):
        entry.finalize()
    assert len(chunks(entry.folder)) == entry.n_chunks and not list(entry.folder.glob(".*"))
    monkeypatch.undo()
    np.testing.assert_array_equal(entry.finalize(), rows)
    reopened = Cache(tmp_path).features("k", N_IMAGES, DIM, CHUNK).load()  # checksum checked on load
    assert reopened is not None and array_digest(reopened) == array_digest(rows)
    assert sorted(p.name for p in entry.folder.iterdir()) == ["features.npy", "meta.json"]


def test_undecodable_image_gives_nan_rows_that_are_cached(reference, image_paths, tmp_path, caplog):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 garbage \xff\xda more garbage \xff\xd9")  # passes the scan
    paths = [*image_paths[:5], broken, *image_paths[5:]]
    features, backbone = extract(paths, tmp_path / "cache")
    assert "broken.jpg: not a decodable image" in caplog.text
    assert np.isnan(features[5]).all() and np.isfinite(np.delete(features, 5, axis=0)).all()
    np.testing.assert_array_equal(np.delete(features, 5, axis=0), reference)
    again, backbone = extract(paths, tmp_path / "cache")
    assert backbone.images_seen == 0  # the decision is the pipeline's; nothing is recomputed


def test_atomic_write_never_clobbers_when_asked(tmp_path):
    path = tmp_path / "record.json"
    atomic_write_bytes(path, b"first", overwrite=False)
    with pytest.raises(FileExistsError):
        atomic_write_bytes(path, b"second", overwrite=False)
    assert path.read_bytes() == b"first" and [p.name for p in tmp_path.iterdir()] == ["record.json"]


# Extraction in its own process with a stand-in CNN. Given two more file names, it writes the first
# at its first model call (the cache entries are then its own) and waits there for the second.
CONCURRENT = """
import logging, sys, time
from pathlib import Path
import numpy as np
from kaggle_tl.cache.store import Cache
from kaggle_tl.features import BackboneRef, extract_features

logging.basicConfig(level=logging.INFO, format="%(message)s")
images, cache_dir, signals = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]

class Backbone:
    seen = 0
    def features(self, batch):
        if signals and not Path(signals[1]).exists():
            Path(signals[0]).touch()
            while not Path(signals[1]).exists():
                time.sleep(0.01)
        Backbone.seen += len(batch)
        x = batch.astype(np.float32)
        return np.concatenate([x.mean(axis=(1, 2)), x[:, 0, 0, :]], axis=1)

extract_features(sorted(images.iterdir()), "images-key", [BackboneRef("fake", "none", 16, 6)], ["original", "hflip"],
                 Cache(cache_dir), lambda refs: {"fake": Backbone()}, batch_size=4, threads=2, chunk_rows=8)
print("computed", Backbone.seen, flush=True)
"""


def test_two_runs_sharing_a_cache_take_turns(image_paths, tmp_path):
    script = tmp_path / "extract.py"
    script.write_text(CONCURRENT)
    images, shared, alone = image_paths[0].parent, tmp_path / "shared", tmp_path / "alone"
    computing, go = tmp_path / "computing", tmp_path / "go"

    def start(cache: Path, *extra: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(script), str(images), str(cache), *map(str, extra)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = start(shared, computing, go)  # in the middle of computing until `go` exists
    deadline = time.monotonic() + 60
    while not computing.exists():
        assert first.poll() is None, first.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the first run never started computing"
        time.sleep(0.01)
    second = start(shared)
    unstick = threading.Timer(60, go.touch)  # should the second run never say it waits
    unstick.start()
    for line in second.stderr:  # the second run says it waits, and does
        if "another run is extracting these features; waiting for it" in line:
            break
    go.touch()
    unstick.cancel()
    outputs = [p.communicate(timeout=120) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], [err[-2000:] for _, err in outputs]
    computed = [int(out.split()[-1]) for out, _ in outputs]
    assert computed == [N_IMAGES * 2, 0]  # the second read what the first wrote: nothing computed twice

    assert subprocess.run([sys.executable, str(script), str(images), str(alone)], capture_output=True).returncode == 0
    for entry in (alone / "features").iterdir():
        twin = shared / "features" / entry.name
        assert sorted(p.name for p in twin.iterdir()) == ["features.npy", "meta.json"]
        np.testing.assert_array_equal(np.load(twin / "features.npy"), np.load(entry / "features.npy"))
