"""Where the work runs: this process ("local"), or a Dask cluster ("dask", the optional extra).

Extraction sends one task per missing cache chunk (``features.compute_chunk``): the task carries
image paths, backbone identities and cache folders, never a model or features, and workers write
the chunks to a filesystem the driver also sees. Head fits go through joblib, whose Dask backend
sends them to the same cluster. Nothing here imports Dask until a Dask engine is first used, so
a fully cached run starts no cluster.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from kaggle_tl.errors import KaggleTLError, one_line

log = logging.getLogger(__name__)

ENGINES = ("local", "dask")
TASK_RETRIES = 2  # a task that raises is run again this often; a worker lost mid-task is Dask's allowed-failures
CONNECT_TIMEOUT_S = 30
IN_FLIGHT_PER_THREAD = 2  # tasks out per worker thread: one running, one queued behind it
# One compute thread per LocalCluster worker, the workers being as many as the cores: TensorFlow
# and BLAS would otherwise each start a thread per core in every worker.
ONE_THREAD_ENV = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1",
                  "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}



def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, which a container or a job scheduler sets)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

class Engine:
    """``Engine("local")`` or ``Engine("dask", address)``; use as a context manager to close the cluster.

    With ``address=None`` a Dask engine starts a LocalCluster sized to the machine (one
    single-threaded worker process per core); else it connects to the scheduler at ``address``
    (``tcp://host:8786``). It connects on first use and keeps the client, so the workers of one
    run keep their built models from train to test extraction to the head fits.
    """

    def __init__(self, kind: str = "local", address: str | None = None):
        if kind not in ENGINES:
            raise KaggleTLError(f"engine {kind!r}: choose one of {', '.join(ENGINES)}")
        if address and kind != "dask":
            raise KaggleTLError(f"address {address}: only used with engine dask")
        self.kind, self.address = kind, address
        self._client: Any = None
        self._cluster: Any = None
        self._checked: set[tuple[str, str]] = set()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = None

    def client(self):
        """The Dask client, connected (or its LocalCluster started) on the first call."""
        if self._client is None:
            try:
                from distributed import Client, LocalCluster
            except ModuleNotFoundError as exc:
                if exc.name not in ("dask", "distributed"):
                    raise
                raise KaggleTLError("engine dask needs Dask: pip install 'kaggle-tl[dask]' "
                                    "(or pip install 'dask[distributed]')") from None
            if self.address is None:
                cores = usable_cores()
                log.info("starting a Dask LocalCluster: %d worker(s) x 1 thread", cores)
                self._cluster = LocalCluster(n_workers=cores, threads_per_worker=1, processes=True,
                                             dashboard_address=None, env=ONE_THREAD_ENV, silence_logs=logging.ERROR)
                self._client = Client(self._cluster)
            else:
                try:
                    self._client = Client(self.address, timeout=f"{CONNECT_TIMEOUT_S}s")
                except (OSError, TimeoutError) as exc:
                    raise KaggleTLError(f"address {self.address}: cannot connect to a Dask scheduler "
                                        f"({one_line(exc)})") from None
                log.info("connected to the Dask scheduler at %s", self.address)
        return self._client

    def map_unordered(self, fn: Callable, jobs: Iterable, shared_folder: Path, shared_file: str) -> Iterator:
        """``fn(job)`` for every job as one Dask task each (retried), yielding results as they complete.

        First checks that every worker sees ``shared_folder`` (where the tasks write) and
        ``shared_file`` (an input). Jobs are sent a few per worker thread at a time, so neither
        the driver nor the scheduler holds them all. Tasks still out when the caller stops are
        cancelled.
        """
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        client = self.client()
        self._check_shared(client, Path(shared_folder), shared_file)
        run = uuid.uuid4().hex[:8]  # two runs on one cluster never share a task key
        jobs = enumerate(jobs)

        def send(n: int) -> list:
            return [client.submit(fn, job, key=f"kaggle_tl-{run}-{i}", retries=TASK_RETRIES, pure=False)
                    for i, job in itertools.islice(jobs, max(0, n))]

        def window() -> int:  # tasks to keep out; re-read on each result, as workers may join or leave
            threads = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
            return max(1, IN_FLIGHT_PER_THREAD * threads)

        pending = as_completed(send(window()))
        try:
            for future in pending:
                try:
                    result = future.result()
                except KilledWorker as exc:
                    raise KaggleTLError(f"{shared_folder}: Dask workers kept dying on one task ({exc}); "
                                        f"out of memory? Re-run to resume from the chunks written") from None
                pending.update(send(window() - pending.count()))
                yield result
        finally:
            client.cancel(list(pending.futures))

    def _check_shared(self, client, folder: Path, shared_file: str) -> None:
        """Fail with one line if a worker cannot see the driver's cache folder or images."""
        if (str(folder), shared_file) in self._checked:
            return
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except TimeoutError:
            raise KaggleTLError(f"address {self.address}: the Dask cluster has no workers") from None
        token = uuid.uuid4().hex
        probe = folder / f".kaggle_tl-probe-{token}"
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_text(token)
        try:
            problems = client.run(shared_problem, str(probe), token, shared_file)
        finally:
            probe.unlink(missing_ok=True)
        for worker, problem in sorted(problems.items()):
            if problem:
                raise KaggleTLError(f"{folder}: Dask worker {worker} {problem}; workers need a filesystem the "
                                    f"driver also sees (README: Running on a cluster)")
        self._checked.add((str(folder), shared_file))

    @contextlib.contextmanager
    def head_parallelism(self, head_jobs: int = 1) -> Iterator[int]:
        """The ``n_jobs`` for head fits; inside, ``joblib.Parallel`` runs where this engine runs.

        Local: joblib's default backend and ``head_jobs``. Dask: joblib's Dask backend and -1, as
        joblib runs ``n_jobs=1`` in this process whatever the backend: every worker takes fits.
        """
        if self.kind == "local":
            yield head_jobs
            return
        import joblib

        self.client()  # the backend sends work to the current (latest) client
        with joblib.parallel_config(backend="dask"):
            yield -1


def shared_problem(probe: str, token: str, shared_file: str) -> str | None:
    """Run on each worker: what it cannot see of the driver's files, or None."""
    try:
        seen = Path(probe).read_text()
    except OSError:
        seen = None
    if seen != token:
        return f"(host {socket.gethostname()}) cannot see the cache folder"
    if not os.path.exists(shared_file):
        return f"(host {socket.gethostname()}) cannot see the input {shared_file}"
    return None
