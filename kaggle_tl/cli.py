"""`kaggle-tl` command line: the only place that prints tables and exits."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tomllib
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

from kaggle_tl.config import RunConfig, resolve_config
from kaggle_tl.errors import KaggleTLError

# flag -> RunConfig field; every flag maps 1:1 to a field.
RUN_FLAGS: list[tuple[str, dict[str, Any]]] = [
    ("--data", dict(help="competition folder (default: the embedded demo in data/demo)")),
    ("--backbones", dict(help="comma-separated backbone names (default xception,inception_v3; demo: efficientnet_lite0); "
                              "`kaggle-tl backbones` lists them")),
    ("--image-size", dict(type=int, help="input size in px (default: each backbone's native size)")),
    ("--weights", dict(help="imagenet | none | path to a weights file or folder")),
    ("--views", dict(help="comma-separated TTA views: original, hflip, vflip, rot90, rot180, rot270 "
                          "(default original,hflip)")),
    ("--resize", dict(help="pad | squash | crop: how images become the backbone's square input (default pad)")),
    ("--heads", dict(help="comma-separated heads: dense, svm, logreg (default dense)")),
    ("--head-param", dict(dest="head_param", action="append", metavar="HEAD.NAME=VALUE",
                          help="a head parameter, e.g. logreg.C=0.2 or dense.early_stopping=fold (repeatable)")),
    ("--head-jobs", dict(type=int, help="head fits run in parallel, one BLAS thread each (default 1; with "
                                       "--engine dask: every worker)")),
    ("--folds", dict(type=int, help="CV folds (default 5)")),
    ("--seed", dict(type=int, help="seed for folds and heads (default 42)")),
    ("--batch-size", dict(type=int, help="images per model call (default 32)")),
    ("--decode-threads", dict(type=int, help="image decoding threads (default 4)")),
    ("--engine", dict(help="local | dask: where features are extracted and heads fitted (default local)")),
    ("--address", dict(help="dask scheduler address, e.g. tcp://host:8786 (default: a LocalCluster here)")),
    ("--cache-dir", dict(help="feature cache folder (default cache)")),
    ("--runs-dir", dict(help="run records folder (default runs)")),
    ("--submissions-dir", dict(help="submissions folder (default submissions)")),
    ("--train-dir", dict(help="train images sub-folder (default train)")),
    ("--test-dir", dict(help="test images sub-folder (default test)")),
    ("--labels-csv", dict(help="labels file name (default labels.csv)")),
    ("--sample-submission", dict(help="sample submission file name (default sample_submission.csv)")),
    ("--id-column", dict(help="id column name (default id)")),
    ("--label-column", dict(help="label column name (default label)")),
    ("--flips", dict(action=argparse.BooleanOptionalAction, default=None,
                     help="shorthand: --flips is --views original,hflip, --no-flips is --views original")),
    ("--skip-bad-train-images", dict(action="store_true", default=None,
                                     help="exclude unreadable training images (recorded in the run) instead of stopping")),
]


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file of RunConfig settings; flags override it")
    for flag, options in RUN_FLAGS:
        parser.add_argument(flag, **options)


def parse_head_params(items: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """``["logreg.C=0.2", "dense.early_stopping=fold"]`` -> {"logreg": {"C": 0.2}, "dense": {...}}.

    Values are read as TOML values (numbers, true/false, quoted strings); anything else is a string.
    """
    params: dict[str, dict[str, Any]] = {}
    for item in items or []:
        target, sep, text = item.partition("=")
        head, dot, name = target.partition(".")
        if not (sep and dot and head and name):
            raise KaggleTLError(f"--head-param {item!r}: expected HEAD.NAME=VALUE, e.g. logreg.C=0.2")
        try:
            value = tomllib.loads(f"value = {text}")["value"]
        except tomllib.TOMLDecodeError:
            value = text
        params.setdefault(head.strip(), {})[name.strip()] = value
    return params


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The resolved config of flags over the TOML file (if any): checked before anything runs."""
    names = {f.name for f in fields(RunConfig)} | {"flips"}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if args.head_param:
        overrides["head_params"] = parse_head_params(args.head_param)
    if args.config:
        config = RunConfig.from_toml(args.config, **overrides)
    else:
        config = RunConfig.from_dict(overrides, source="flags")
    return resolve_config(config)


def print_run(record) -> None:
    import pandas as pd

    print(f"\nrun {record.run_id}  ({record.run_dir})")
    if record.random_weights:
        print("WARNING: weights=none — random backbone weights; these scores say nothing about pretrained features")
    for entry in record.models:
        preds = record.predictions(entry.name)
        scores = preds.score_table()
        table = scores.pivot(index="fold", columns="view", values=["logloss", "accuracy"])
        table = table.reindex([*sorted(i for i in table.index if i != "all"), "all"])
        optimistic = "  (optimistic: stopped early on the scored fold)" if entry.optimistic else ""
        print(f"\n{entry.name}: CV log loss {entry.cv_logloss:.4f} ± {entry.cv_logloss_se:.4f}, "
              f"accuracy {entry.cv_accuracy:.4f} ± {entry.cv_accuracy_se:.4f}{optimistic}")
        with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 160):
            print(table.to_string())
        print(f"submission: {entry.submission}")
    for note in record.notes:
        print(f"note: {note}")
    if record.plots:
        print("figures: " + "  ".join(str(record.plots_dir / name) for name in record.plots.values()))
    print("\ntimings: " + ", ".join(f"{k} {v:.1f}" for k, v in record.timings.items() if k.endswith("_s")))
    cached = [k[5:-7] for k, v in record.timings.items() if k.endswith("_cached") and v]
    if cached:
        print(f"predictions from the cache (nothing refitted): {', '.join(cached)}")


def cmd_run(args: argparse.Namespace) -> int:
    from kaggle_tl.pipeline import run

    print_run(run(config_from_args(args)))
    return 0


def _print_paths(title: str, paths: dict) -> None:
    if paths:
        print(f"{title}: " + "  ".join(str(p) for p in paths.values()))


def _print_table(table) -> None:
    import pandas as pd

    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 250,
                           "display.max_colwidth", 90, "display.max_rows", 500):
        print(table.to_string(index=False))


def _selected_runs(args: argparse.Namespace) -> list:
    """Runs of one data set under --runs-dir, by --data and --fingerprint; notes go to stderr."""
    from kaggle_tl.runs import list_runs, select_runs, with_models

    records, problems = list_runs(args.runs_dir)
    records, notes = select_runs(records, args.data, args.fingerprint)
    records, empty = with_models(records)
    for note in [*problems, *notes, *empty]:
        print(f"note: {note}", file=sys.stderr)
    if not records:
        where = " ".join(f"{flag} {value}" for flag, value in (("--data", args.data), ("--fingerprint", args.fingerprint))
                         if value)
        raise KaggleTLError(f"{args.runs_dir}: no runs found{' for ' + where if where else ''}; "
                            "`kaggle-tl run` makes one")
    return records


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from kaggle_tl.leaderboard import leaderboard_table, write_table
    from kaggle_tl.metrics import NOISE_Z
    from kaggle_tl.runs import load_models

    records = _selected_runs(args)
    table = leaderboard_table(load_models(records), per_view=args.models)
    first = records[0]
    print(f"\nleaderboard: {len(records)} run(s) on {first.competition} "
          f"(data fingerprint {first.data_fingerprint}), by CV log loss (lower is better)")
    _print_table(table)
    print(f"\n_se: standard error over rows. diff_vs_best: paired log-loss difference from the best model on the "
          f"same rows;\nwithin_noise=yes when it is within {NOISE_Z:g} standard errors of 0 (the models are not "
          "distinguishable on this data).")
    csv_path, md_path = write_table(table, Path(args.out or Path(args.runs_dir) / "leaderboard"),
                                    "leaderboard_models" if args.models else "leaderboard")
    print(f"\ntable: {csv_path}  {md_path}")
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    from kaggle_tl.reports import ensemble_runs
    from kaggle_tl.runs import resolve_run_dir, same_folds_as_newest

    if args.all:
        records, notes = same_folds_as_newest(_selected_runs(args))
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        run_dirs = [r.run_dir for r in records]
    else:
        run_dirs = [resolve_run_dir(run, args.runs_dir) for run in args.runs]
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()] if args.strategies else None
    result = ensemble_runs(run_dirs, strategies, args.submit, out_root=args.out or Path(args.runs_dir) / "ensembles",
                           submissions_dir=args.submissions_dir)
    print(f"\nensemble {result.ensemble_id}: {len(result.models)} model(s) from "
          f"{len({m.run.run_id for m in result.models})} run(s); scores are nested-CV where a strategy is fitted")
    _print_table(result.table.drop(columns="submission"))
    for note in result.notes:
        print(f"note: {note}")
    for name, path in result.submissions.items():
        print(f"submission ({name}): {path}")
    _print_paths("table", dict(enumerate(result.tables)))
    _print_paths("figures", result.plots)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from kaggle_tl.submission import score_submission

    scores = score_submission(args.submission, args.labels, args.sample, args.id_column, args.label_column)
    print(f"{args.submission}: log loss {scores['logloss']:.5f}, accuracy {scores['accuracy']:.4f} "
          f"({scores['rows']} rows, {scores['classes']} classes; clipped at 1e-15 as Kaggle's grader does)")
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    from kaggle_tl.backbones.catalog import backbones_table

    table = backbones_table(args.weights)
    shown = table.assign(gflops=table["gflops"].map("{:.2f}".format),
                         imagenet_top1=table["imagenet_top1"].map(lambda v: "" if v != v or v is None else f"{v:.1f}"))
    _print_table(shown)
    available = table[table["weights_offline"] != "no"]["backbone"].tolist()
    print(f"\n{len(table)} backbones; GFLOPs per image at the native size (counted from the layers), ImageNet top-1 "
          f"as published in the Keras documentation.\nweights_offline: where imagenet weights load from without a "
          f"network right now ({len(available)} of {len(table)}); a --weights folder must hold weights_file.")
    return 0


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-dir", default="runs", help="run records folder (default runs)")
    parser.add_argument("--data", help="only runs on this competition folder")
    parser.add_argument("--fingerprint", help="only runs with this data fingerprint (a prefix will do)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kaggle-tl", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show every log line, TensorFlow's included (default: progress, tables, warnings)")
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="features -> CV heads -> submission")
    add_run_arguments(run_parser)
    run_parser.set_defaults(func=cmd_run)

    board = sub.add_parser("leaderboard", help="all runs on one data set, ranked by CV log loss",
                           description="Every model of every run on one data set (one data fingerprint), best CV "
                                       "log loss first; printed and written as CSV and Markdown.")
    add_selection_arguments(board)
    board.add_argument("--models", action="store_true", help="one row per model and view (original, flip, average)")
    board.add_argument("--out", help="folder for leaderboard.csv/.md (default RUNS_DIR/leaderboard)")
    board.set_defaults(func=cmd_leaderboard)

    ens = sub.add_parser("ensemble", help="compare ensembling strategies on runs' OOF predictions, write submissions",
                         description="Combine the models of one or more runs (same data, same folds) and score "
                                     "each strategy by nested CV on their OOF predictions.")
    which = ens.add_mutually_exclusive_group(required=True)
    which.add_argument("--runs", nargs="+", metavar="RUN_ID_OR_DIR", help="runs to combine")
    which.add_argument("--all", action="store_true", help="every run on one data set (--data/--fingerprint)")
    add_selection_arguments(ens)
    ens.add_argument("--strategies", help="comma-separated (default all: best_single, mean, geometric_mean, "
                                          "weighted, greedy, stacking)")
    ens.add_argument("--submit", default="best", help="best | all | none | comma-separated strategy names (default best)")
    ens.add_argument("--out", help="folder for ensemble outputs (default RUNS_DIR/ensembles)")
    ens.add_argument("--submissions-dir", default="submissions", help="submissions folder (default submissions)")
    ens.set_defaults(func=cmd_ensemble)

    catalog = sub.add_parser("backbones", help="every backbone: input size, feature dim, GFLOPs, ImageNet top-1, "
                                                "whether its weights are available offline")
    catalog.add_argument("--weights", help="a weights folder to check for each backbone's file")
    catalog.set_defaults(func=cmd_backbones)

    grade = sub.add_parser("score", help="score a submission CSV against a labels file like the Kaggle grader")
    grade.add_argument("submission", help="submission CSV (id, one column per class)")
    grade.add_argument("--labels", required=True, help="CSV of id,label for the scored rows")
    grade.add_argument("--sample", help="sample submission: its class columns must all be present")
    grade.add_argument("--id-column", default="id", help="id column name (default id)")
    grade.add_argument("--label-column", default="label", help="label column name in --labels (default label)")
    grade.set_defaults(func=cmd_score)
    return parser


def quiet_unless(verbose: bool) -> None:
    """By default a user sees progress bars, tables and real warnings; -v shows everything.

    TensorFlow's C++ start-up lines (CUDA probing on a CPU machine, oneDNN notes; see
    kaggle_tl.quiet) and Keras' retracing warnings are noise to a user.
    """
    from kaggle_tl import quiet

    quiet.verbose = verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if verbose:
        return
    # Dask sets its loggers from its config when imported (here and in spawned workers, which inherit this).
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    for name in ("tensorflow", "absl", "keras", "h5py", "distributed"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="(keras|tensorflow|absl)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_unless(args.verbose)
    try:
        return args.func(args)
    except KaggleTLError as exc:
        message = " ".join(str(exc).split("\n"))  # one line, even when a file name holds a newline
        print(f"kaggle-tl: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kaggle-tl: interrupted; completed feature chunks are kept and the next run resumes", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `kaggle-tl backbones | head`: the reader left; no traceback for that
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python flushes stdout at exit
        return 141


if __name__ == "__main__":
    sys.exit(main())
