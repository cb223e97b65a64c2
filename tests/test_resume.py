"""A feature extraction killed with SIGKILL at a random moment resumes and gives identical features."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

N_IMAGES, CHUNK_ROWS, VIEWS = 40, 8, 2

# Extraction through kaggle_tl's API with a deterministic stand-in for the CNN (no TensorFlow, so
# the process starts in a second); DELAY seconds per model call leave time to kill it mid-run.
SCRIPT = """
import sys, time
from pathlib import Path
import numpy as np
from kaggle_tl.cache.store import Cache
from kaggle_tl.features import BackboneRef, extract_features

images, cache_dir, delay = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])

class Backbone:
    seen = 0
    def features(self, batch):
        Backbone.seen += len(batch)
        time.sleep(delay)
        x = batch.astype(np.float32)
        return np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2)), x[:, 3, 5, :]], axis=1)

out = extract_features(sorted(images.iterdir()), "images", [BackboneRef("stand-in", "none", 24, 9)],
                       ["original", "hflip"], Cache(cache_dir), lambda refs: {"stand-in": Backbone()},
                       batch_size=4, threads=2, chunk_rows=%d)
print("computed", Backbone.seen, flush=True)
""" % CHUNK_ROWS


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    for i in range(N_IMAGES):
        ok, data = cv2.imencode(".jpg", rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
        (folder / f"{i:03d}.jpg").write_bytes(data.tobytes())
    return folder


def extraction(script: Path, images: Path, cache: Path, delay: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(script), str(images), str(cache), str(delay)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def computed(process: subprocess.Popen) -> int:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-2000:]
    return int(out.split()[-1])


def chunk_ranges(entry: Path) -> set[tuple[int, int]]:
    """Row ranges of the chunk files in one cache entry (names: chunk_<start>-<stop>_<sha1>.npy)."""
    ranges = set()
    for path in entry.glob("chunk_*.npy"):
        start, stop = path.name.split("_")[1].split("-")
        ranges.add((int(start), int(stop)))
    return ranges


def test_sigkill_mid_extraction_resumes_with_identical_features(images, tmp_path):
    script = tmp_path / "extract.py"
    script.write_text(SCRIPT)
    killed_cache, clean_cache = tmp_path / "killed", tmp_path / "clean"

    victim = extraction(script, images, killed_cache, delay=0.04)
    deadline = time.monotonic() + 60
    while len(list(killed_cache.glob("features/*/chunk_*.npy"))) < VIEWS:  # the first chunk, of both views
        assert victim.poll() is None, victim.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no chunk appeared"
        time.sleep(0.01)
    pause = random.uniform(0, 0.3)  # anywhere in the remaining ~1 s: mid-batch, mid-write, between chunks
    time.sleep(pause)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL, f"finished before the kill (pause {pause:.2f}s)"
    assert not list(killed_cache.glob("features/*/features.npy"))

    # Every chunk file present is whole (atomic rename). The views' chunks are written one after
    # the other, so one view may hold a chunk its twin lacks: that chunk is computed again for both.
    by_view = [chunk_ranges(entry) for entry in (killed_cache / "features").iterdir()]
    assert len(by_view) == VIEWS
    kept = set.intersection(*by_view)
    second = computed(extraction(script, images, killed_cache, delay=0))
    uninterrupted = computed(extraction(script, images, clean_cache, delay=0))
    assert uninterrupted == N_IMAGES * VIEWS
    assert second == (N_IMAGES - sum(stop - start for start, stop in kept)) * VIEWS < uninterrupted

    for entry in (clean_cache / "features").iterdir():
        resumed = killed_cache / "features" / entry.name
        assert sorted(p.name for p in resumed.iterdir()) == ["features.npy", "meta.json"]
        assert np.array_equal(np.load(resumed / "features.npy"), np.load(entry / "features.npy"))
