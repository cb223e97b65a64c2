#!/usr/bin/env python
"""A Kaggle code competition's hidden re-run against a cold run, as `kaggle-tl run` processes.

1. cold: a fresh cache, every train and test image extracted, the heads fitted;
2. export: `kaggle-tl cache export` of the cold run (the notebook's features dataset);
3. hidden re-run: the same competition with its test images replaced by other ones (here: the
   same photos re-encoded, so that every test image's content, and so its cache key, is new),
   a fresh writable cache and the export as --cache-from: only the test images are computed.

Each step is one `kaggle-tl run` process, TensorFlow's import included, as a notebook pays it.

    python benchmarks/kaggle_rerun.py --data ../shared/datasets/cifar10-small.tar.gz
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import _common as common


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(common.SMALL_ARCHIVE), help="a competition folder or .tar.gz archive")
    p.add_argument("--backbones", default="efficientnet_lite0")
    p.add_argument("--heads", default="logreg,dense")
    p.add_argument("--extra", default="", help="more `kaggle-tl run` flags, e.g. '--runtime openvino'")
    p.add_argument("--json", help="also write the results to this JSON file")
    return p.parse_args(argv)


def kaggle_tl(*args: str) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kaggle_tl.cli", *args], capture_output=True, text=True,
                          cwd=common.REPO)
    if done.returncode != 0:
        sys.exit(f"kaggle-tl {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start, done.stdout


def hidden_copy(root: Path, out: Path) -> Path:
    """``root`` with every test image re-encoded (JPEG quality 93): new content under the same ids."""
    import cv2

    if (out / ".complete").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in ("train", "labels.csv", "sample_submission.csv"):
        (out / name).symlink_to((root / name).resolve())
    (out / "test").mkdir()
    for path in sorted((root / "test").iterdir()):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        cv2.imwrite(str(out / "test" / (path.stem + ".jpg")), image, [cv2.IMWRITE_JPEG_QUALITY, 93])
    (out / ".complete").touch()
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    data = Path(args.data)
    root = common.extract_archive(data) if data.suffix == ".gz" else data
    work = common.BENCH_DIR / "kaggle_rerun"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    hidden = hidden_copy(root, common.BENCH_DIR / "data" / f"{root.name}-hidden-test")
    flags = ["--backbones", args.backbones, "--heads", args.heads, *args.extra.split()]
    info = common.machine_info()
    print(common.describe_machine(info), "|", common.load_line())

    cold_s, cold_out = kaggle_tl("run", "--data", str(root), *flags, "--cache-dir", str(work / "cold-cache"),
                                 "--runs-dir", str(work / "runs"), "--submissions-dir", str(work / "subs"))
    export_s, _ = kaggle_tl("cache", "export", str(work / "features"), "--runs-dir", str(work / "runs"))
    rerun_s, rerun_out = kaggle_tl("run", "--data", str(hidden), *flags, "--cache-dir", str(work / "notebook-cache"),
                                   "--cache-from", str(work / "features"), "--runs-dir", str(work / "notebook-runs"),
                                   "--submissions-dir", str(work / "notebook-subs"),
                                   "--submission-file", str(work / "submission.csv"))
    computed = next(line for line in rerun_out.splitlines() if line.startswith("features:"))
    rows = [{"step": "cold run (fresh cache)", "seconds": cold_s},
            {"step": "cache export", "seconds": export_s},
            {"step": "hidden re-run (--cache-from)", "seconds": rerun_s},
            {"step": "re-run / cold", "seconds": rerun_s / cold_s}]
    common.print_table(rows, title=f"{root.name}: {' '.join(flags)}", floatfmt="{:.3f}")
    print(f"hidden re-run: {computed}")
    print(f"cold run: {next(line for line in cold_out.splitlines() if line.startswith('features:'))}")
    stages = {name: next(line for line in out.splitlines() if line.startswith("timings (s):"))
              for name, out in (("cold run", cold_out), ("hidden re-run", rerun_out))}
    for name, line in stages.items():  # inside each process, after the imports
        print(f"{name} {line}")
    reused = [line for line in rerun_out.splitlines() if line.startswith("heads from the cache")]
    print(f"hidden re-run: {reused[0] if reused else 'every head refitted'}")
    common.write_json(args.json, {"machine": info, "load": common.load_line(), "rows": rows, "flags": flags,
                                  "rerun_features_line": computed, "timings": stages})
    return 0


if __name__ == "__main__":
    sys.exit(main())
