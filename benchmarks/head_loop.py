#!/usr/bin/env python
"""The head loop a competitor repeats: every head's 5 folds x 2 views on a real run's features, per revision.

    python benchmarks/head_loop.py --data ../shared/datasets/cifar10-small.tar.gz --baseline-rev 02776de
    python benchmarks/head_loop.py --data ... --heads logreg --jobs 1,2 --profile

1. Features as ``kaggle-tl run`` makes them (``--backbones``, default stages, views original + hflip),
   from the benchmark cache (``$KAGGLE_TL_BENCH_DIR/cache``) or computed into it; the time is
   printed, as a cold run's feature stage to weigh the heads against.
2. For this checkout and each ``--baseline-rev`` (a git worktree under the bench folder), in a
   fresh process per (revision, head, jobs): ``cv.fit_fold_models`` + ``cv.predict_folds`` exactly as
   the pipeline calls them (``n_jobs`` fits at once, one BLAS thread each), timed (wall and CPU).
3. The table: seconds, CV log loss and accuracy with their standard errors, what each fit chose,
   and the paired difference of the per-row log loss against the first revision (same rows).
4. ``--profile``: one logreg fit of fold 0 in this checkout, step by step (transform, each C of the
   path with its solver iterations, the refit), against the FLOP floor of those iterations.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHILD = "--child"


def features_file(data: Path, backbones: str) -> tuple[Path, float | None]:
    """The run's training/test features by view, labels and folds in one .npz (seconds if computed now)."""
    import logging

    from kaggle_tl.cache.store import Cache
    from kaggle_tl.config import RunConfig, resolve_config
    from kaggle_tl.data.competition import read_competition
    from kaggle_tl.data.digests import data_fingerprint, image_set_key
    from kaggle_tl.engine import Engine
    from kaggle_tl.pipeline import Inputs, _extract, backbone_refs, layout_of, task_settings

    out = common.BENCH_DIR / "head_loop" / f"{data.name}-{backbones.replace(',', '+')}.npz"
    if out.is_file():
        return out, None
    config = resolve_config(RunConfig(data=str(data), backbones=tuple(backbones.split(",")),
                                      cache_dir=str(common.BENCH_DIR / "cache")))
    competition = read_competition(config.data, layout_of(config), task_settings(config)[0])
    competition = competition.with_usable_images(*competition.scan_images(), False, config.folds)
    folds = competition.task.make_folds(competition.y, config.folds, config.seed)  # as the pipeline makes them
    keys = {"train": image_set_key(competition.train_paths), "test": image_set_key(competition.test_paths)}
    inputs = Inputs(competition, backbone_refs(config), keys, data_fingerprint(competition, keys["train"],
                                                                              keys["test"]), folds)
    start = time.perf_counter()
    with Engine("local") as engine:
        features = _extract(config, inputs, Cache(config.cache_dir), engine, logging.getLogger("bench").info)
    seconds = time.perf_counter() - start
    names = [r.name for r in inputs.refs]
    arrays = {f"train_{v}": x for v, x in features["train"].by_view(names, config.views).items()}
    arrays |= {f"test_{v}": x for v, x in features["test"].by_view(names, config.views).items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, y=competition.y, folds=folds, seed=config.seed, **arrays)
    return out, seconds


def child(npz: str, head_name: str, jobs: int, out: str) -> None:
    """In the revision's own kaggle_tl: fit and predict one head as the pipeline does; write times and OOF."""
    from kaggle_tl.cv import fit_fold_models, predict_folds
    try:
        from kaggle_tl.heads.base import create_head
    except ImportError:  # revisions before the heads/ subpackage
        from kaggle_tl.heads import create_head

    data = np.load(npz)
    views = sorted({k.split("_", 1)[1] for k in data.files if k.startswith("train_")}, key=["original", "hflip"].index)
    train = {v: data[f"train_{v}"] for v in views}
    test = {v: data[f"test_{v}"] for v in views}
    y, folds = data["y"], data["folds"]
    head = create_head(head_name, random_state=int(data["seed"]))
    wall, cpu = time.perf_counter(), time.process_time()
    models = fit_fold_models(head, train, y, folds, n_jobs=jobs, blas_threads=1, desc=head_name)
    fit_wall = time.perf_counter() - wall
    try:
        preds = predict_folds(models, train, test, y, folds, "proba", int(y.max()) + 1)
    except TypeError:  # revisions before heads had responses
        preds = predict_folds(models, train, test, y, folds, int(y.max()) + 1)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    np.savez(out, oof=preds.oof, **{f"fitted_{k}": v for k, v in models.fitted.items()})
    import kaggle_tl
    print(json.dumps({"wall_s": wall, "fit_wall_s": fit_wall, "cpu_s": cpu, "package": kaggle_tl.__file__}))


if __name__ == "__main__" and sys.argv[1:2] == [CHILD]:
    # Before _common, which puts this checkout's kaggle_tl first on the path: the child runs PYTHONPATH's.
    child(*sys.argv[2:4], int(sys.argv[4]), sys.argv[5])
    sys.exit()

import _common as common  # noqa: E402


def worktree(rev: str) -> Path:
    path = common.BENCH_DIR / "worktrees" / rev
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=common.REPO, check=True,
                       capture_output=True)
    return path


def profile(npz: Path) -> list[dict]:
    """One logreg fit of fold 0, step by step, in this checkout."""
    from threadpoolctl import threadpool_limits

    from kaggle_tl.heads.base import create_head
    from kaggle_tl.heads.transforms import make_transform
    from kaggle_tl.heads.tuning import inner_split, logreg_path

    data = np.load(npz)
    X, y, folds = data["train_original"], data["y"], data["folds"]
    X, y = X[folds != 0], y[folds != 0]
    head = create_head("logreg", random_state=int(data["seed"]))
    rows = []
    with threadpool_limits(1):
        gflops = common.matmul_gflops(n=1024, repeats=3)["numpy_gflops"]
        start = time.perf_counter()
        Xt = make_transform(head.transform).fit_transform(X).astype(np.float32)
        rows.append({"step": f"transform {head.transform} (fit + apply)", "s": time.perf_counter() - start})
        fit_rows, val_rows = inner_split(y, 0.2, int(data["seed"]))
        n, d, c = len(fit_rows), X.shape[1], int(y.max()) + 1
        for entry in logreg_path(Xt[fit_rows], y[fit_rows], Xt[val_rows], y[val_rows]):
            floor = entry["evaluations"] * 4 * n * d * c / (gflops * 1e9)
            rows.append({"step": f"C {entry['C']:.4g} ({n} rows): {entry['iterations']} iterations, "
                                 f"{entry['evaluations']} loss+gradient evaluations, inner log loss "
                                 f"{entry['inner_logloss']:.4f}", "s": entry["seconds"], "FLOP floor s": floor})
        start = time.perf_counter()
        head.fit(X, y)
        rows.append({"step": f"the whole head.fit (C path + refit at C {head.fitted_params()['C']:.4g})",
                     "s": time.perf_counter() - start})
    print(f"FLOP floor: 4 n d c FLOP per evaluation (X W and X^T G) at {gflops:.1f} GFLOP/s "
          "(float32 matmul, 1 thread, measured now)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(common.SMALL_ARCHIVE), help="a competition archive or folder")
    parser.add_argument("--backbones", default="efficientnet_lite0")
    parser.add_argument("--heads", default="logreg,dense")
    parser.add_argument("--jobs", default="1,2", help="head_jobs values to time (default %(default)s)")
    parser.add_argument("--baseline-rev", action="append", default=[], help="a git revision to time as well")
    parser.add_argument("--profile", action="store_true", help="also profile one logreg fit step by step")
    parser.add_argument("--json")
    args = parser.parse_args()
    common.quiet_logs()
    data = Path(args.data)
    data = common.extract_archive(data) if data.is_file() else data
    info = {**common.machine_info(), **common.code_version()}
    print(common.describe_machine(info), "|", common.load_line())
    npz, feature_s = features_file(data, args.backbones)
    shapes = np.load(npz)
    print(f"features: {npz} ({shapes['train_original'].shape[0]} rows x {shapes['train_original'].shape[1]}); "
          + (f"computed now in {feature_s:.1f} s" if feature_s else "from an earlier run of this script"))
    revisions = [("this checkout", common.REPO), *((rev, worktree(rev)) for rev in args.baseline_rev)]
    rows, oofs = [], {}
    from kaggle_tl.tasks import scoring
    log_loss, accuracy = scoring.get_metric("log_loss"), scoring.get_metric("accuracy")
    y = shapes["y"]
    for head in args.heads.split(","):
        for label, tree in revisions:
            for jobs in (int(j) for j in args.jobs.split(",")):
                out = common.BENCH_DIR / "head_loop" / "oof.npz"
                env = {**os.environ, "PYTHONPATH": str(tree)}
                line = subprocess.run([sys.executable, __file__, CHILD, str(npz), head, str(jobs), str(out)], env=env,
                                      check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
                timing = json.loads(line)
                assert Path(timing["package"]).resolve().is_relative_to(tree.resolve()), timing["package"]
                result = np.load(out)
                oof = result["oof"].mean(axis=0)
                logloss, logloss_se = scoring.value_and_se(log_loss, y, oof)
                chosen = {k[len("fitted_"):]: v for k, v in result.items() if k.startswith("fitted_")}
                row = {"head": head, "revision": label, "jobs": jobs, "wall s": timing["wall_s"],
                       "fit s": timing["fit_wall_s"], "CPU s": timing["cpu_s"],
                       "CV log loss": logloss, "+-": logloss_se, "accuracy": accuracy(y, oof.argmax(axis=1)),
                       "chosen": ", ".join(f"{k} {np.median(v):.3g} median" for k, v in chosen.items())}
                reference = oofs.setdefault(head, oof)
                if reference is not oof:
                    diff, diff_se = scoring.paired_difference(log_loss, y, oof, reference)
                    row["vs first: d log loss"] = f"{diff:+.4f} +- {diff_se:.4f}"
                if feature_s:
                    row["share of a cold run"] = timing["wall_s"] / (timing["wall_s"] + feature_s)
                rows.append(row)
                print(f"  {head} {label} jobs {jobs}: {timing['wall_s']:.1f} s, log loss {logloss:.4f}",
                      flush=True)
    common.print_table(rows, title="10 fits (5 folds x 2 views) and their predictions, per head", floatfmt="{:.4g}")
    results = {"machine": info, "features": str(npz), "feature_s": feature_s, "rows": rows}
    if args.profile:
        profiled = profile(npz)
        common.print_table(profiled, title="one logreg fit of fold 0 (original view), step by step")
        results["profile"] = profiled
    print(common.load_line())
    common.write_json(args.json, results)


if __name__ == "__main__":
    main()
