"""The Dask engine: one task per cache chunk on a 2-worker LocalCluster gives the local engine's features,
through a killed worker and a killed driver; head fits through joblib's Dask backend match serial fits."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

from distributed import Client, LocalCluster  # noqa: E402
from joblib import Parallel, delayed  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from conftest import make_competition  # noqa: E402
from kaggle_tl.cache.store import Cache  # noqa: E402
from kaggle_tl.data.archives import ArchiveMember  # noqa: E402
from kaggle_tl.engine import ONE_THREAD_ENV, Engine  # noqa: E402
from kaggle_tl.errors import KaggleTLError  # noqa: E402
from kaggle_tl.features import BackboneBuilder, BackboneRef, extract_features  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

# EfficientNet-Lite0 with its pip-installed ImageNet weights at 64 px: real, deterministic features
# at a few milliseconds per image; the model builds in under a second on each worker.
REF = BackboneRef("efficientnet_lite0", "imagenet", 64, 1280)
VIEWS = ["original", "hflip"]
CHUNK_ROWS, BATCH = 4, 3  # 31 images: 8 chunks, batches that straddle no chunk
BROKEN = 5  # position of an image that passes the scan but cannot be decoded


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> list[Path]:
    comp = make_competition(tmp_path_factory.mktemp("comp"))
    images = sorted((comp / "train").iterdir())
    broken = comp / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 garbage \xff\xda more garbage \xff\xd9")
    return [*images[:BROKEN], broken, *images[BROKEN:]]


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      env=ONE_THREAD_ENV) as cluster, Client(cluster) as client:
        yield cluster, client


def extract(paths, cache_dir, engine=None, builder=BackboneBuilder("imagenet")) -> dict:
    out = extract_features(paths, "images-key", [REF], VIEWS, Cache(cache_dir), builder,
                           batch_size=BATCH, threads=2, chunk_rows=CHUNK_ROWS, engine=engine)
    return {key: np.array(array) for key, array in out.arrays.items()}


@pytest.fixture(scope="module")
def reference(paths, tmp_path_factory) -> dict:
    return extract(paths, tmp_path_factory.mktemp("local"))


def assert_same(features: dict, reference: dict) -> None:
    assert features.keys() == reference.keys()
    for key in reference:
        np.testing.assert_array_equal(features[key], reference[key], err_msg=str(key))


def test_tensorflow_runs_onednn_kernels_whatever_the_cpu():
    """Eigen's kernels (TensorFlow's own choice on AVX2-only CPUs) change with the thread count, which
    would make a 1-thread Dask worker's features differ from the local engine's; kaggle_tl asks for oneDNN."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    code = ("import kaggle_tl, tensorflow\n"
            "from tensorflow.python.util import _pywrap_util_port\n"
            "print(_pywrap_util_port.IsMklEnabled())")
    out = subprocess.run([sys.executable, "-c", code], env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[-1] == "True"


def test_dask_features_are_those_of_the_local_engine(paths, reference, cluster, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="kaggle_tl")
    with Engine("dask", cluster[0].scheduler_address) as engine:
        features = extract(paths, tmp_path, engine)
    assert_same(features, reference)
    assert np.isnan(features["efficientnet_lite0", "hflip"][BROKEN]).all()
    assert "broken.jpg: not a decodable image; its features are NaN" in caplog.text  # reported by the driver
    assert not list(tmp_path.glob(".*"))  # no probe file left
    entries = tmp_path / "features"
    assert {p.name for p in entries.glob("*/*")} | {p.name for p in entries.glob("*/.*")} == {"features.npy",
                                                                                             "meta.json"}

    caplog.clear()
    with Engine("dask") as engine:  # a fully cached run starts no cluster
        assert_same(extract(paths, tmp_path, engine), reference)
        assert engine._client is None
    assert "all 2 entries from the caches" in caplog.text


def test_images_inside_archives_are_read_by_the_workers_themselves(paths, cluster, tmp_path):
    # members of a zip, a tar and a BSON of products (cdiscount's): each worker process opens the archive itself
    import bson

    images = [p for p in paths if p.name != "broken.jpg"][:4]
    with zipfile.ZipFile(tmp_path / "train.zip", "w") as archive:
        for path in images:
            archive.write(path, path.name)
    with tarfile.open(tmp_path / "train.tar", "w") as archive:
        for path in images:
            archive.add(path, arcname=path.name)
    with open(tmp_path / "train.bson", "wb") as products:
        for k, path in enumerate(images):
            products.write(bson.BSON.encode({"_id": k, "imgs": [{"picture": path.read_bytes()}], "category_id": 1}))
    members = ([ArchiveMember(tmp_path / "train.zip", p.name) for p in images]
               + [ArchiveMember(tmp_path / "train.tar", p.name) for p in images]
               + [ArchiveMember(tmp_path / "train.bson", f"{k}.jpg") for k in range(len(images))])
    local = extract(images * 3, tmp_path / "local")
    with Engine("dask", cluster[0].scheduler_address) as engine:
        assert_same(extract(members, tmp_path / "dask", engine), local)


class KillOnce:
    """build_backbones that SIGKILLs the worker the first time a chunk task starts (the marker says it did)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __call__(self, refs):
        if not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return BackboneBuilder("imagenet")(refs)


def test_a_worker_killed_mid_task_changes_nothing(paths, reference, cluster, tmp_path):
    client = cluster[1]
    pids = set(client.run(os.getpid).values())
    with Engine("dask", cluster[0].scheduler_address) as engine:
        features = extract(paths, tmp_path / "cache", engine, KillOnce(tmp_path / "killed"))
    assert (tmp_path / "killed").exists()
    client.wait_for_workers(2, timeout=60)
    assert set(client.run(os.getpid).values()) != pids  # the nanny replaced the killed worker
    assert_same(features, reference)


DRIVER = """
import sys, time
from pathlib import Path
from kaggle_tl.cache.store import Cache
from kaggle_tl.engine import Engine
from kaggle_tl.features import BackboneBuilder, BackboneRef, extract_features

class Slow(BackboneBuilder):  # a second per chunk task, so the driver can be killed half-way
    def __call__(self, refs):
        time.sleep(1)
        return super().__call__(refs)

paths = [Path(line) for line in Path(sys.argv[1]).read_text().splitlines()]
with Engine("dask", sys.argv[3]) as engine:
    extract_features(paths, "images-key", [BackboneRef("efficientnet_lite0", "imagenet", 64, 1280)],
                     ["original", "hflip"], Cache(sys.argv[2]), Slow("imagenet"), batch_size=%d, threads=2,
                     chunk_rows=%d, engine=engine)
""" % (BATCH, CHUNK_ROWS)


def chunk_indices(entry: Path) -> set[int]:
    return {int(p.name.split("_")[1].split("-")[0]) // CHUNK_ROWS for p in entry.glob("chunk_*.npy")}


def test_a_killed_driver_resumes_only_the_missing_chunks(paths, reference, cluster, tmp_path, caplog):
    scheduler, client = cluster[0].scheduler_address, cluster[1]
    (tmp_path / "paths.txt").write_text("\n".join(map(str, paths)))
    (tmp_path / "driver.py").write_text(DRIVER)
    cache = tmp_path / "cache"
    driver = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "paths.txt"), str(cache),
                               scheduler], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(list(cache.glob("features/*/chunk_*.npy"))) < 2 * len(VIEWS):  # two chunks of each view
        assert driver.poll() is None, driver.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no chunk appeared"
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.communicate()
    assert driver.returncode == -signal.SIGKILL
    # The tasks running when the driver died still finish and write their chunk: wait for them.
    while any(client.run(lambda dask_worker: len(dask_worker.state.executing)).values()):
        time.sleep(0.05)
    assert not list(cache.glob("features/*/features.npy"))
    kept = set.intersection(*(chunk_indices(entry) for entry in (cache / "features").iterdir()))
    n_chunks = -(-len(paths) // CHUNK_ROWS)
    assert 2 <= len(kept) < n_chunks

    caplog.set_level(logging.DEBUG, logger="kaggle_tl.features")
    with Engine("dask", scheduler) as engine:
        features = extract(paths, cache, engine)
    computed = {int(r.getMessage().split()[2]) for r in caplog.records if r.getMessage().startswith("features: chunk")}
    assert computed == set(range(n_chunks)) - kept
    assert_same(features, reference)


def fit_predict(model, X, y, train, test):
    """One fold: the fitted clone's probabilities on the held-out rows, and where it ran."""
    return clone(model).fit(X[train], y[train]).predict_proba(X[test]), os.getpid()


def test_heads_through_the_dask_backend_match_serial_fits(cluster):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(120, 8)), rng.integers(0, 3, 120)
    folds = np.arange(120) % 4
    model = LogisticRegression(C=0.5, max_iter=200)
    splits = [(folds != f, folds == f) for f in range(4)]
    serial = [fit_predict(model, X, y, train, test)[0] for train, test in splits]
    with Engine("local").head_parallelism(3) as n_jobs:
        assert n_jobs == 3  # --head-jobs, on joblib's own backend
    with Engine("dask", cluster[0].scheduler_address) as engine, engine.head_parallelism(1) as n_jobs:
        # Every worker, whatever --head-jobs says: joblib would run n_jobs=1 in the driver.
        results = Parallel(n_jobs=n_jobs)(delayed(fit_predict)(model, X, y, train, test) for train, test in splits)
    for (proba, _), expected in zip(results, serial):
        np.testing.assert_array_equal(proba, expected)
    assert {pid for _, pid in results} <= set(cluster[1].run(os.getpid).values())  # fitted on the workers


def blind(dask_worker):
    """Make this worker's file reads fail, as on a host that does not mount the driver's folder."""
    import kaggle_tl.engine as engine_module
    engine_module.Path = lambda path: Path("/nonexistent") / Path(path).name


def see_again(dask_worker):
    import kaggle_tl.engine as engine_module
    engine_module.Path = Path


def test_a_worker_that_cannot_see_the_cache_folder_stops_the_run(paths, cluster, tmp_path):
    scheduler, client = cluster[0].scheduler_address, cluster[1]
    worker = sorted(client.scheduler_info()["workers"])[0]
    client.run(blind, workers=[worker])
    try:
        with Engine("dask", scheduler) as engine, \
                pytest.raises(KaggleTLError, match=f"{tmp_path}: Dask worker {worker} .* cannot see the cache folder"):
            extract(paths, tmp_path, engine)
    finally:
        client.run(see_again, workers=[worker])
    assert not list(tmp_path.glob("features/*/chunk_*")) and not list(tmp_path.glob(".*"))  # nothing ran, no probe left


def test_an_unknown_engine_or_address_is_one_line(monkeypatch):
    monkeypatch.setattr("kaggle_tl.engine.CONNECT_TIMEOUT_S", 1)
    with pytest.raises(KaggleTLError, match="engine 'spark': choose one of local, dask"):
        Engine("spark")
    with pytest.raises(KaggleTLError, match="address tcp://h:8786: only used with engine dask"):
        Engine("local", "tcp://h:8786")
    with pytest.raises(KaggleTLError, match="address tcp://127.0.0.1:1: cannot connect to a Dask scheduler"):
        Engine("dask", "tcp://127.0.0.1:1").client()


def test_a_run_on_the_dask_engine_submits_exactly_what_the_local_engine_does(cluster, tmp_path):
    from kaggle_tl.cli import main
    from kaggle_tl.runs.queries import list_runs

    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=3)
    common = ["--data", str(comp), "--backbones", "efficientnet_lite0", "--image-size", "64", "--heads", "logreg,dense",
              "--folds", "2", "--batch-size", "3"]
    records = {}
    for engine, extra in (("local", []), ("dask", ["--address", cluster[0].scheduler_address])):
        out = tmp_path / engine
        assert main(["run", *common, "--engine", engine, *extra, "--cache-dir", str(out / "cache"),
                     "--runs-dir", str(out / "runs"), "--submissions-dir", str(out / "subs")]) == 0
        (records[engine],), _ = list_runs(out / "runs")
    local, dask = records["local"], records["dask"]
    assert dask.config.engine == "dask" and dask.data_fingerprint == local.data_fingerprint
    for entry_local, entry_dask in zip(local.models, dask.models):
        assert Path(entry_local.submission).read_bytes() == Path(entry_dask.submission).read_bytes()
        np.testing.assert_array_equal(local.predictions(entry_local.name).oof, dask.predictions(entry_dask.name).oof)
