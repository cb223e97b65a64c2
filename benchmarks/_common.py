"""Helpers shared by the benchmarks: data archives, machine description, timing, tables, JSON.

Nothing here is part of kaggle_tl; the benchmarks call kaggle_tl's public API and only add the
measuring around it.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter hides the tables

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))  # measure this checkout's kaggle_tl, installed or not
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
SMALL_ARCHIVE = SHARED_DATASETS / "cifar10-small.tar.gz"
FULL_ARCHIVE = SHARED_DATASETS / "cifar10.tar.gz"
# Extracted data and persistent benchmark caches live outside the repository.
BENCH_DIR = Path(os.environ.get("KAGGLE_TL_BENCH_DIR", Path(tempfile.gettempdir()) / "kaggle_tl_bench"))
PACKAGES = {"numpy": "numpy", "tensorflow": "tensorflow", "keras": "keras", "cv2": "opencv-python-headless",
            "sklearn": "scikit-learn"}
CPU_FLAGS_OF_INTEREST = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni",
                         "avx512_bf16", "amx_tile", "amx_bf16")


# -- data ------------------------------------------------------------------------------------------
def extract_archive(archive: str | Path) -> Path:
    """Extract a Kaggle-layout competition archive once under BENCH_DIR/data; return its folder."""
    archive = Path(archive)
    if not archive.is_file():
        sys.exit(f"{archive}: data archive not found; pass its path (see --help)")
    dest = BENCH_DIR / "data" / archive.name.removesuffix(".tar.gz").removesuffix(".tgz")
    if (dest / ".complete").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".extract-"))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        tops = [p for p in tmp.iterdir() if p.is_dir()]
        root = tops[0] if len(tops) == 1 and not (tmp / "labels.csv").exists() else tmp
        shutil.rmtree(dest, ignore_errors=True)
        root.rename(dest)
        (dest / ".complete").touch()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def subset_competition(root: Path, n_train: int | None, n_test: int | None) -> Path:
    """n_train labelled images (classes balanced, file order kept within a class) and the first
    n_test test images of ``root``, as a competition folder of symlinks under BENCH_DIR.

    Returns ``root`` itself when no limit cuts anything.
    """
    import pandas as pd

    labels = pd.read_csv(root / "labels.csv", dtype=str, keep_default_na=False)
    # Round-robin over classes, so that even a small subset can be split into stratified folds.
    rank = labels.groupby(labels.columns[1]).cumcount()
    labels = labels.iloc[rank.sort_values(kind="stable").index]
    sample = pd.read_csv(root / "sample_submission.csv", dtype=str, keep_default_na=False)
    n_train = len(labels) if n_train is None else min(n_train, len(labels))
    n_test = len(sample) if n_test is None else min(max(1, n_test), len(sample))
    if (n_train, n_test) == (len(labels), len(sample)):
        return root
    dest = BENCH_DIR / "data" / f"{root.name}-balanced{n_train}-test{n_test}"
    if (dest / ".complete").exists():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    for split, ids in (("train", labels.iloc[:n_train, 0]), ("test", sample.iloc[:n_test, 0])):
        (dest / split).mkdir(parents=True)
        files = {p.stem: p for p in (root / split).iterdir()}
        for image_id in ids:
            source = files[Path(image_id).stem]
            (dest / split / source.name).symlink_to(source)
    labels.iloc[:n_train].to_csv(dest / "labels.csv", index=False)
    sample.iloc[:n_test].to_csv(dest / "sample_submission.csv", index=False)
    (dest / ".complete").touch()
    return dest


# -- the machine ---------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """Cores, CPU model and SIMD flags, RAM, load, library versions and thread settings, date."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown")
    family, cpu_model = (next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                               if line.split(":")[0].strip() == key), "?") for key in ("cpu family", "model"))
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem_kib = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal")), 0)
    info: dict[str, Any] = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu_model": model,
        "cpu_family_model": f"{family}/{cpu_model}",  # e.g. AMD 25/1 = Zen 3 (Milan)
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "simd_flags": [f for f in CPU_FLAGS_OF_INTEREST if f in flags],
        "cpu_flags": flags,
        "ram_gib": round(mem_kib / 2**20, 1),
        "load_avg_1_5_15": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
    }
    for name, package in PACKAGES.items():
        try:
            info[name] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[name] = "not installed"
    if "tensorflow" in sys.modules:
        tf = sys.modules["tensorflow"]
        info["tf_intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads() or "default (0)"
        info["tf_inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads() or "default (0)"
    if "cv2" in sys.modules:
        info["cv2_threads"] = sys.modules["cv2"].getNumThreads()
    return info


def code_version() -> dict[str, Any]:
    """The commit measured, and whether kaggle_tl/ had uncommitted changes (read-only git calls)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "--short", "HEAD") or "unknown",
            "kaggle_tl_uncommitted_changes": bool(git("status", "--porcelain", "--", "kaggle_tl"))}


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    cores = os.cpu_count() or 1
    line = f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {cores} logical CPUs"
    if one > 0.5:
        line += "  << machine busy: throughput figures are contaminated"
    return line


def describe_machine(info: dict[str, Any]) -> str:
    lines = [info["date"]]
    if "commit" in info:
        dirty = " + uncommitted changes in kaggle_tl/" if info["kaggle_tl_uncommitted_changes"] else ""
        lines[0] += f"  kaggle_tl at {info['commit']}{dirty}"
    lines.append(f"{info['cpu_model']} (family/model {info['cpu_family_model']}), {info['usable_cpus']} usable of {info['logical_cpus']} CPUs, "
                 f"{info['ram_gib']} GiB RAM, SIMD: {' '.join(info['simd_flags']) or '-'}")
    lines.append("  ".join(f"{k} {info[k]}" for k in ("numpy", "tensorflow", "keras", "cv2", "sklearn") if k in info))
    return "\n".join(lines)


def matmul_gflops(n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Best-of-``repeats`` float32 n x n matmul rate (2 n^3 FLOP) with numpy and with TensorFlow.

    The faster of the two is what the benchmarks take as the machine's dense-compute limit.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    flop = 2.0 * n ** 3
    out = {}
    np.matmul(a, b)  # warm-up: thread pool start
    out["numpy_gflops"] = flop / min(_timed(lambda: np.matmul(a, b)) for _ in range(repeats)) / 1e9
    if "tensorflow" in sys.modules:
        tf = sys.modules["tensorflow"]
        ta, tb = tf.constant(a), tf.constant(b)
        tf.matmul(ta, tb).numpy()
        out["tf_gflops"] = flop / min(_timed(lambda: tf.matmul(ta, tb).numpy()) for _ in range(repeats)) / 1e9
    out["gflops"] = max(out.values())
    out["n"] = n
    return out


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- processes and memory ----------------------------------------------------------------------------
def peak_rss_mib() -> float:
    """This process's peak resident set size so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def in_fresh_process(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run fn(*args, **kwargs) in a new interpreter (spawn), so its peak RSS and warm-up are its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def quiet_logs(verbose: bool = False) -> None:
    """Keep kaggle_tl's INFO progress (unless ``verbose``) and TensorFlow's warnings out of the tables."""
    import logging
    import os

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    for name in ("tensorflow", "absl", "h5py", "distributed"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if not verbose:  # Dask reads it when imported, here and in the workers it spawns (as the CLI does)
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")


# -- output ----------------------------------------------------------------------------------------
def print_table(rows: list[dict[str, Any]], title: str | None = None, floatfmt: str = "{:.3g}") -> None:
    import pandas as pd

    if title:
        print(f"\n{title}")
    if not rows:
        print("  (nothing measured)")
        return
    frame = pd.DataFrame(rows)
    formatters = {c: (lambda v, f=floatfmt: "" if v is None or v != v else f.format(v))
                  for c in frame.columns if frame[c].dtype.kind == "f"}
    print(frame.to_string(index=False, formatters=formatters))


def write_json(path: str | Path | None, results: dict[str, Any]) -> None:
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"\nresults written to {path}")
