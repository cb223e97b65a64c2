"""kaggle-tl: pretrained-CNN features, honest 5-fold CV heads and ensembles, and Kaggle submissions
for image competitions.

Point it at a competition folder (train/, labels.csv, test/, sample_submission.csv):
`kaggle-tl run --data DIR` extracts features, fits the heads, scores them by cross-validation and
writes a validated submission per model; `leaderboard` ranks every run on the data set;
`ensemble` combines runs and scores each combination honestly (nested CV). With no --data, `run`
uses the embedded demo competition.
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import tomllib
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

from kaggle_tl.cache.store import KINDS
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
    ("--stages", dict(type=int, help="pooled features of each backbone's last K resolution stages, concatenated "
                                     "(default 3; 1: the last layer's only)")),
    ("--stage-layers", dict(dest="stage_layers", action="append", metavar="BACKBONE=LAYER,LAYER",
                            help="a backbone's stage layers by name, instead of --stages (repeatable)")),
    ("--runtime", dict(help="tensorflow | openvino: what runs the backbones (default: openvino when installed, "
                            "else tensorflow)")),
    ("--precision", dict(help="fp32 | bf16 (bf16: openvino on a CPU with native bf16) (default fp32)")),
    ("--heads", dict(help="comma-separated heads: logreg, dense, svm, ridge, svr (default: the task's, e.g. "
                          "logreg,dense for classes and tags, ridge,dense for values)")),
    ("--head-param", dict(dest="head_param", action="append", metavar="HEAD.NAME=VALUE",
                          help="a head parameter, e.g. logreg.C=0.2 or dense.early_stopping=fold (repeatable)")),
    ("--head-jobs", dict(type=int, help="head fits run in parallel, one BLAS thread each; 0 chooses: every core "
                                       "for large fits, else 1 (default 0; with --engine dask: every worker)")),
    ("--folds", dict(type=int, help="CV folds (default 5)")),
    ("--seed", dict(type=int, help="seed for folds and heads (default 42)")),
    ("--batch-size", dict(type=int, help="images per model call (default 32)")),
    ("--decode-threads", dict(type=int, help="image decoding threads (default 4)")),
    ("--engine", dict(help="local | dask: where features are extracted and heads fitted (default local)")),
    ("--address", dict(help="dask scheduler address, e.g. tcp://host:8786 (default: a LocalCluster here)")),
    ("--time-limit", dict(type=float, metavar="MINUTES",
                          help="stop before extraction when it is estimated to take longer (default: no limit)")),
    ("--cache-dir", dict(help="the writable cache folder: features, predictions, fitted heads, figures (default cache)")),
    ("--cache-from", dict(dest="cache_from", action="append", metavar="DIR",
                          help="a read-only cache to read first, e.g. a Kaggle dataset of an earlier run's cache "
                               "(repeatable)")),
    ("--runs-dir", dict(help="run records folder (default runs)")),
    ("--submissions-dir", dict(help="submissions folder (default submissions)")),
    ("--submission-file", dict(help="also write the chosen model's submission to exactly this file "
                                    "(in a Kaggle notebook: /kaggle/working/submission.csv)")),
    ("--submit-model", dict(help="the head (or model name) --submission-file gets (default: the best by the "
                                 "competition's metric)")),
    ("--competition", dict(help="the Kaggle competition's slug: its task and metric when kaggle_tl knows it, and the "
                                "upload command printed at the end")),
    ("--task", dict(help="multiclass | binary | ordinal | regression | multilabel | topk (default: read from the "
                         "labels and the sample submission)")),
    ("--metric", dict(help="the competition's metric: log_loss, accuracy, micro_f1, macro_f1, roc_auc, qwk, rmse, "
                           "mae, f1_samples, f2_samples, map@K (default: the usual one for the task)")),
    ("--top-k", dict(type=int, help="topk: labels per submission cell (default: as many as the sample's cells)")),
    ("--catch-all", dict(help="topk: the label meaning none of the known ones (e.g. new_whale), scored per fold")),
    ("--positive-class", dict(help="binary: the class a probability cell is for (default: the second class)")),
    ("--train-dir", dict(help="train images sub-folder (default: train, train_images or images, found)")),
    ("--test-dir", dict(help="test images sub-folder (default: test, test_images or images, found)")),
    ("--labels-csv", dict(help="labels file name (default: train.csv, train_labels.csv or labels.csv, the one "
                               "holding the training ids)")),
    ("--sample-submission", dict(help="sample submission file name (default: sample_submission.csv, or one named "
                                      "like it)")),
    ("--id-column", dict(help="id column name (default: the sample submission's first column)")),
    ("--label-column", dict(help="label column(s) in the labels file, comma-separated (default: the sample "
                                 "submission's target columns)")),
    ("--flips", dict(action=argparse.BooleanOptionalAction, default=None,
                     help="shorthand: --flips is --views original,hflip, --no-flips is --views original")),
    ("--tabular", dict(action=argparse.BooleanOptionalAction, default=None,
                       help="the numeric columns train.csv and test.csv share join the image features (default: on "
                            "when there are any; --no-tabular leaves them out)")),
    ("--skip-bad-train-images", dict(action="store_true", default=None,
                                     help="exclude unreadable training images (recorded in the run) instead of stopping")),
]


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file of run settings (flag names with underscores); flags override it")
    parser.add_argument("--new-run", action="store_true",
                        help="run even when a finished run has the same settings and data (default: reuse it)")
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


def parse_stage_layers(items: Sequence[str]) -> dict[str, list[str]]:
    """``["xception=add_11,block14_sepconv2_act"]`` -> {"xception": ["add_11", "block14_sepconv2_act"]}."""
    layers = {}
    for item in items:
        backbone, sep, names = item.partition("=")
        if not (sep and backbone.strip() and names.strip()):
            raise KaggleTLError(f"--stage-layers {item!r}: expected BACKBONE=LAYER,LAYER, e.g. xception=add_11")
        if backbone.strip() in layers:
            raise KaggleTLError(f"--stage-layers names {backbone.strip()} twice; give its layers in one flag, "
                                f"comma-separated: {backbone.strip()}=LAYER,LAYER")
        layers[backbone.strip()] = [n.strip() for n in names.split(",") if n.strip()]
    return layers


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The resolved config of flags over the TOML file (if any): checked before anything runs."""
    names = {f.name for f in fields(RunConfig)} | {"flips"}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if args.head_param:
        overrides["head_params"] = parse_head_params(args.head_param)
    if args.stage_layers:
        overrides["stage_layers"] = parse_stage_layers(args.stage_layers)
    if args.config:
        config = RunConfig.from_toml(args.config, **overrides)
    else:
        config = RunConfig.from_dict(overrides, source="flags")
    return resolve_config(config)


def say_note(note: str, file=None) -> None:
    """A note wrapped to the terminal's 120 columns (a long path alone on a line stays whole)."""
    import textwrap

    from kaggle_tl.report.tables import TERMINAL_WIDTH

    print(textwrap.fill(f"note: {note}", TERMINAL_WIDTH, subsequent_indent="  ", break_long_words=False,
                        break_on_hyphens=False), file=file or sys.stdout)


def print_run(record, config: RunConfig) -> None:
    import pandas as pd

    from kaggle_tl.tasks.evaluate import score_table

    print(f"\nrun {record.run_id}  ({record.run_dir})")
    print(f"task: {record.task.describe()}")
    if record.random_weights:
        print("WARNING: weights=none — random backbone weights; these scores say nothing about pretrained features")
    for entry in record.models:
        table = score_table(record.task, record.predictions(entry.name))
        table["view"] = table["view"].where(~table["view"].str.contains(r"\+"), "mean of views")
        wide = table.pivot(index="fold", columns="view", values="cv_score")
        wide = wide.reindex(index=[*sorted(i for i in wide.index if i != "all"), "all"],
                            columns=[*record.views, *(["mean of views"] if len(record.views) > 1 else [])])
        optimistic = "  (optimistic: stopped early on the scored fold)" if entry.optimistic else ""
        print(f"\n{entry.name}: CV {entry.score}{optimistic}")
        print(f"  {entry.recipe}")
        with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 118):
            print(f"  CV {entry.score.metric} by fold and view:")
            print("\n".join("  " + line for line in wide.to_string().splitlines()))
        print(f"  submission: {entry.submission}")
    for note in record.notes:
        say_note(note)
    if record.plots:
        print("figures: " + "  ".join(str(record.plots_dir / name) for name in record.plots.values()))
    print("\ntimings (s): " + ", ".join(f"{k[:-2]} {v:.1f}" for k, v in record.timings.items() if k.endswith("_s")))
    cached = [k[5:-7] for k, v in record.timings.items() if k.endswith("_cached") and v]
    if cached:
        print(f"heads from the cache, predictions or fold models (nothing refitted): {', '.join(cached)}")
    _print_upload(record, config)


def _print_upload(record, config: RunConfig) -> None:
    """The exact command that uploads the chosen submission, where the competition's slug is known."""
    from kaggle_tl.config import in_kaggle_notebook
    from kaggle_tl.pipeline import chosen_model

    if not config.competition or in_kaggle_notebook() or not record.models:
        return
    entry = chosen_model(config, record)
    path = config.submission_file or entry.submission
    message = f"kaggle_tl {record.run_id} {entry.name} CV {entry.score.metric} {entry.score.value:.4f}"
    command = ["kaggle", "competitions", "submit", "-c", config.competition, "-f", str(path), "-m", message]
    print(f"\nupload: {shlex.join(command)}")


def cmd_run(args: argparse.Namespace) -> int:
    from kaggle_tl.pipeline import run

    config = config_from_args(args)
    print_run(run(config, new_run=args.new_run, report=print), config)
    return 0


def _selected_models(args: argparse.Namespace) -> list:
    """Every usable model of the runs of one data set under --runs-dir, by --data and --fingerprint.

    Damaged runs and damaged or replaced predictions are left out, each named on stderr.
    """
    from kaggle_tl.runs.compare import load_models, same_task_as_newest
    from kaggle_tl.runs.queries import list_runs, select_runs, with_models

    records, problems = list_runs(args.runs_dir)
    records, notes = select_runs(records, args.data, args.fingerprint)
    records, empty = with_models(records)
    models, damaged = load_models(records)
    models, other_tasks = same_task_as_newest(models)
    for note in [*problems, *notes, *empty, *damaged, *other_tasks]:
        say_note(note, file=sys.stderr)
    if not models:
        where = " ".join(f"{flag} {value}" for flag, value in (("--data", args.data), ("--fingerprint", args.fingerprint))
                         if value)
        raise KaggleTLError(f"{args.runs_dir}: no runs found{' for ' + where if where else ''}; "
                            "`kaggle-tl run` makes one")
    return models


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from kaggle_tl.report.leaderboard import TERMINAL_COLUMNS, leaderboard_table
    from kaggle_tl.report.tables import Column, terminal_text, write_table
    from kaggle_tl.tasks.metrics import NOISE_Z

    models = _selected_models(args)
    table = leaderboard_table(models, per_view=args.models)
    first = models[0].run
    runs = {m.run.run_id for m in models}
    print(f"\nleaderboard: {len(runs)} run(s) on {Path(first.competition).name} (data fingerprint "
          f"{first.data_fingerprint}), {first.task.kind} scored by {first.task.metric_name}, best first")
    columns = TERMINAL_COLUMNS if not args.models else [*TERMINAL_COLUMNS[:2], Column("view", lambda r: r.view,
                                                                                     align="<"), *TERMINAL_COLUMNS[2:]]
    print(terminal_text(table, columns))
    print(f"\nse: standard error ({'over rows' if first.task.metric.mean_over_rows else 'paired bootstrap over rows'})."
          f" vs best: paired {first.task.metric_name} difference from the best model on the same rows;"
          f"\nnoise = yes: within {NOISE_Z:g} standard errors of 0 (not distinguishable on this data).")
    csv_path, md_path = write_table(table, _output_folder(args.out or Path(args.runs_dir) / "leaderboard"),
                                    "leaderboard_models" if args.models else "leaderboard")
    print(f"every column: {csv_path}  {md_path}")
    return 0


def _output_folder(folder: str | Path) -> Path:
    from kaggle_tl.files import ensure_writable

    return ensure_writable(folder, "output")


def cmd_ensemble(args: argparse.Namespace) -> int:
    from kaggle_tl.ensemble.across_runs import ensemble_models
    from kaggle_tl.report.tables import Column, plus_minus, terminal_text
    from kaggle_tl.runs.compare import load_models, same_folds_as_newest
    from kaggle_tl.runs.queries import resolve_run_dir
    from kaggle_tl.runs.record import RunRecord

    if args.all:
        models, notes = same_folds_as_newest(_selected_models(args))
    else:
        records = {}
        for run in args.runs:
            record = RunRecord.load(resolve_run_dir(run, args.runs_dir))
            records.setdefault(record.run_id, record)
        models, notes = load_models(list(records.values()))
    for note in notes:
        say_note(note, file=sys.stderr)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()] if args.strategies else None
    record = ensemble_models(models, strategies, args.submit, out_root=args.out or Path(args.runs_dir) / "ensembles",
                             submissions_dir=args.submissions_dir)
    print(f"\nensemble {record.ensemble_id}: {len(record.models)} model(s) from {len(record.runs)} run(s); "
          "scores are nested CV where a strategy is fitted")
    print(terminal_text(record.frame, [
        Column("strategy", lambda r: r.strategy, flexible=True, align="<"),
        Column(f"CV {record.frame['metric'].iloc[0]} ± se", lambda r: plus_minus(r.cv_score, r.cv_score_se)),
        Column("log loss", lambda r: "" if r.cv_logloss != r.cv_logloss else f"{r.cv_logloss:.4f}"),
        Column("vs best ± se", lambda r: plus_minus(r.diff_vs_best, r.diff_se)),
        Column("noise", lambda r: str(r.within_noise), align="<"),
        Column("description", lambda r: r.description, flexible=True, align="<")]))
    for note in record.notes:
        say_note(note)
    for name, path in record.submissions.items():
        print(f"submission ({name}): {path}")
    print(f"every column: {'  '.join(record.tables)}")
    if record.plots:
        print("figures: " + "  ".join(record.plots.values()))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from kaggle_tl.runs.submission import score_submission
    from kaggle_tl.tasks.detect import TaskSettings

    scores = score_submission(args.submission, args.labels, args.sample, args.id_column, args.label_column,
                              TaskSettings(task=args.task or "", metric=args.metric or ""))
    if "logloss" in scores:
        print(f"{args.submission}: log loss {scores['logloss']:.5f}, accuracy {scores['accuracy']:.4f} "
              f"({scores['rows']} rows, {scores['classes']} classes; clipped at 1e-15 as Kaggle's grader does)")
    else:
        print(f"{args.submission}: {scores['metric']} {scores['score']:.5f} ({scores['rows']} rows, "
              f"{scores['classes']} classes)")
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    from kaggle_tl.backbones.catalog import backbones_table
    from kaggle_tl.report.tables import Column, terminal_text

    table = backbones_table(args.weights)
    print(terminal_text(table, [
        Column("backbone", lambda r: r.backbone, align="<"),
        Column("px", lambda r: str(r.native_px)), Column("min px", lambda r: str(r.min_px)),
        Column("dim", lambda r: str(r.dim)), Column("GFLOPs", lambda r: f"{r.gflops:.2f}"),
        Column("top-1", lambda r: "" if r.imagenet_top1 != r.imagenet_top1 or r.imagenet_top1 is None
               else f"{r.imagenet_top1:.1f}"),
        Column("weights offline", lambda r: r.weights_offline, align="<"),
        Column("weights file", lambda r: r.weights_file or "", flexible=True, align="<")]))
    available = table[table["weights_offline"] != "no"]["backbone"].tolist()
    print(f"\n{len(table)} backbones; GFLOPs per image at the native size (counted from the layers), ImageNet top-1 "
          f"as published.\nweights offline: where imagenet weights load from without a network now "
          f"({len(available)} of {len(table)});\na --weights folder must hold the weights file.")
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from kaggle_tl.cache.clean import clean

    clean(args.cache_dir, older_than_days=args.older_than, data=args.data, backbone=args.backbone, kind=args.kind,
          remove=args.yes, out=print)
    return 0


def cmd_cache_export(args: argparse.Namespace) -> int:
    from kaggle_tl.cache.store import Cache
    from kaggle_tl.runs.queries import chosen_run

    record = chosen_run(args.run, args.runs_dir)
    cache = Cache(args.cache_dir or record.config.cache_dir, args.cache_from or record.config.cache_from)
    wanted = {kind: list(keys) for kind, keys in record.cache_entries.items()}
    copied = cache.export(wanted, args.out)
    total = sum(len(keys) for keys in wanted.values())
    print(f"{args.out}: {total} cache entries of run {record.run_id} ({len(copied)} copied, the rest already there); "
          f"upload it as a Kaggle dataset and pass --cache-from with its path")
    return 0


def cmd_wheels(args: argparse.Namespace) -> int:
    from kaggle_tl.kaggle import INSTALL_README, write_wheels

    wheels = write_wheels(args.out, _names(args.extras), args.include or [], args.all, args.python_version,
                          args.platform or [])
    size = sum(p.stat().st_size for p in wheels) / 2**20
    print(f"{args.out}: {len(wheels)} wheel(s), {size:.1f} MiB: {', '.join(p.name for p in wheels)}")
    print(f"install offline: see {Path(args.out) / INSTALL_README}")
    return 0


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def cmd_kernel(args: argparse.Namespace) -> int:
    import math

    from kaggle_tl.backbones import backbone_spec
    from kaggle_tl.config import OPERATIONAL, PATH_SETTINGS
    from kaggle_tl.kaggle import write_kernel
    from kaggle_tl.runs.queries import chosen_run

    if args.config:  # the notebook passes --data: resolved as with data, never as the demo
        config = RunConfig.from_toml(args.config)
        config = resolve_config(config.replace(data=config.data or "."))
    else:
        config = chosen_run(args.run, args.runs_dir).config
    if args.time_limit is not None and not (math.isfinite(args.time_limit) and args.time_limit > 0):
        raise KaggleTLError(f"--time-limit {args.time_limit:g}: must be a positive number of minutes")
    config = _models_in_dataset(config, args.models_dataset)
    local_weights = config.weights not in ("imagenet", "none")
    if args.weights_dataset and (config.weights == "none" or all(
            getattr(getattr(backbone_spec(b), "pretrained", None), "weights_package", None) for b in config.backbones)):
        raise KaggleTLError(f"--weights-dataset {args.weights_dataset}: the run's backbones "
                            f"({', '.join(config.backbones)}) take no weights file "
                            f"({'weights = none' if config.weights == 'none' else 'their weights come with pip'}); "
                            "leave the flag out")
    if local_weights and not args.weights_dataset:
        raise KaggleTLError(f"weights: the run read {config.weights}, a file on this machine the notebook cannot see; "
                            "upload it as a dataset and pass --weights-dataset USER/NAME")
    # The notebook names its own folders and weights; the rest are the run's settings (the model it
    # submits among them), so that the cache keys of its features are those of the features dataset.
    kept = {"batch_size", "decode_threads", "submit_model"}
    settings = config.to_toml(leave_out=tuple({*PATH_SETTINGS, *OPERATIONAL} - kept)
                              + (("weights",) if args.weights_dataset else ()))
    run_arguments = [*(["--time-limit", f"{args.time_limit:g}"] if args.time_limit is not None else [])]
    extras = _names(args.extras)
    if config.runtime == "openvino" and "openvino" not in extras:  # the features were made by OpenVINO: so here
        extras.append("openvino")
    meta, script = write_kernel(args.out, args.competition, run_arguments, settings,
                                args.id or f"{args.user}/kaggle-tl-{args.competition}", args.wheels_dataset,
                                args.features_dataset, args.weights_dataset, extras, args.gpu, args.models_dataset)
    print(f"{meta}\n{script}\npush it: kaggle kernels push -p {args.out}")
    if args.gpu and config.runtime == "openvino":
        print("note: --gpu asks Kaggle for a GPU, but the run's features come from OpenVINO on the CPU (runtime = "
              "openvino is part of their cache keys): the notebook will not use it")
    return 0


def _models_in_dataset(config: RunConfig, models_dataset: str | None) -> RunConfig:
    """``config`` with its model-file backbones read from the models dataset (``MODELS_DATASET_MARK/<file
    name>[:layer]``, the notebook's path written in by its script); one line when a model file has no dataset, a
    dataset no model file, or two files one name. The features' keys name a model file by its name and content,
    not its folder (``backbones.key_name``), so the dataset's copy has the keys of the features dataset."""
    from kaggle_tl.backbones import UserModelSpec, backbone_spec
    from kaggle_tl.kaggle import MODELS_DATASET_MARK

    files = {b: backbone_spec(b) for b in config.backbones if isinstance(backbone_spec(b), UserModelSpec)}
    if files and not models_dataset:
        raise KaggleTLError(f"backbones: {next(iter(files))} is a model file on this machine, which the notebook "
                            "cannot see; upload the run's model files as a dataset and pass --models-dataset USER/NAME")
    if models_dataset and not files:
        raise KaggleTLError(f"--models-dataset {models_dataset}: the run's backbones ({', '.join(config.backbones)}) "
                            "are no model files; leave the flag out")
    names = [Path(spec.path).name for spec in files.values()]
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise KaggleTLError(f"backbones: two model files are named {twice!r}; one dataset holds one file of a name: "
                            "rename one")
    moved = {b: f"{MODELS_DATASET_MARK}/{Path(spec.path).name}" + (f":{b.partition(':')[2]}" if ":" in b else "")
             for b, spec in files.items()}
    return config.replace(backbones=tuple(moved.get(b, b) for b in config.backbones),
                          stage_layers={moved.get(b, b): layers for b, layers in config.stage_layers.items()})


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-dir", default="runs", help="run records folder (default runs)")
    parser.add_argument("--data", help="only runs on this competition folder")
    parser.add_argument("--fingerprint", help="only runs with this data fingerprint (a prefix will do)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kaggle-tl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show kaggle_tl's every log line and TensorFlow's start-up (default: progress, tables, "
                             "warnings)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str, func) -> argparse.ArgumentParser:
        made = sub.add_parser(name, help=summary, description=description)
        made.set_defaults(func=func)
        return made

    add_run_arguments(command(
        "run", "features -> CV heads -> scores -> submissions (python run_all.py does the same)",
        "Extract pooled features of every train and test image (cached), fit each head on 5 folds x views, "
        "print the CV scores with standard errors and write one validated submission per model. Settings come "
        "from flags, a TOML file (--config) or both; every one is checked before any work starts.", cmd_run))

    board = command("leaderboard", "all runs on one data set, ranked by the competition's metric",
                    "Every model of every run on one data set (one data fingerprint), best CV score first (by the "
                    "metric's direction; runs of another task or metric are left out, with a note), with "
                    "standard errors and the paired difference from the best; printed in short, written in full "
                    "as CSV and Markdown.", cmd_leaderboard)
    add_selection_arguments(board)
    board.add_argument("--models", action="store_true", help="one row per model and view (original, flip, average)")
    board.add_argument("--out", help="folder for leaderboard.csv/.md (default RUNS_DIR/leaderboard)")

    ens = command("ensemble", "combine runs' models; score each strategy by nested CV; write submissions",
                  "Combine the models of one or more runs (same data, same folds) and score each strategy by "
                  "nested CV on their out-of-fold predictions; write the table, figures and the chosen "
                  "strategies' submissions.", cmd_ensemble)
    which = ens.add_mutually_exclusive_group(required=True)
    which.add_argument("--runs", nargs="+", metavar="RUN_ID_OR_DIR", help="runs to combine")
    which.add_argument("--all", action="store_true", help="every run on one data set (--data/--fingerprint)")
    add_selection_arguments(ens)
    ens.add_argument("--strategies", help="comma-separated (default all: best_single, mean, geometric_mean, "
                                          "weighted, greedy, stacking)")
    ens.add_argument("--submit", default="best", help="best | all | none | comma-separated strategy names (default best)")
    ens.add_argument("--out", help="folder for ensemble outputs (default RUNS_DIR/ensembles)")
    ens.add_argument("--submissions-dir", default="submissions", help="submissions folder (default submissions)")

    catalog = command("backbones", "every backbone: input size, feature dim, GFLOPs, ImageNet top-1, offline weights",
                      "List every registered backbone with its native and minimum input size, pooled feature size, "
                      "cost, published ImageNet accuracy and whether its weights load without a network.",
                      cmd_backbones)
    catalog.add_argument("--weights", help="a weights folder to check for each backbone's file")

    grade = command("score", "score a submission CSV against a labels file like the Kaggle grader",
                    "Check a submission's format as Kaggle does, then score it by the task's metric (--metric; "
                    "probabilities: log loss clipped at 1e-15, and accuracy) against an id,label file.", cmd_score)
    grade.add_argument("submission", help="submission CSV (the id column, then the sample's target columns)")
    grade.add_argument("--labels", required=True, help="CSV of id,label for the scored rows")
    grade.add_argument("--sample", help="sample submission: its class columns must all be present")
    grade.add_argument("--id-column", default="id", help="id column name (default id)")
    grade.add_argument("--label-column", default="label", help="label column name in --labels (default label)")
    grade.add_argument("--task", help="the task, where the labels fit two readings (as kaggle-tl run --task)")
    grade.add_argument("--metric", help="the competition's metric (default: the usual one for the task)")

    tidy = command("clean", "list what the cache holds; remove what you name or what is old",
                   "List the cache's entries by kind, data set and backbone with their sizes and last use. With a "
                   "selection (--older-than, --data, --backbone, --kind) show what would be removed; add --yes to "
                   "remove it.", cmd_clean)
    tidy.add_argument("--cache-dir", default="cache", help="the cache folder (default cache)")
    tidy.add_argument("--older-than", type=float, metavar="DAYS", help="entries not used for this many days")
    tidy.add_argument("--data", help="entries of this data set (the competition folder's name)")
    tidy.add_argument("--backbone", help="feature entries of this backbone")
    tidy.add_argument("--kind", choices=list(KINDS), help="entries of this kind")
    tidy.add_argument("--yes", action="store_true", help="remove the selected entries (default: only list them)")

    cache = command("cache", "cache tools: export a run's entries as a folder to attach to a Kaggle notebook",
                    "Cache tools: `kaggle-tl cache export OUT` copies the entries a run used into a folder to upload "
                    "as a Kaggle dataset.", cmd_cache_export)
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="COMMAND", required=True)
    export = cache_sub.add_parser("export", help="copy the cache entries a run used into a folder",
                                  description="Copy exactly the cache entries a run used (features, predictions, fitted heads) "
                                              "into OUT, laid out as a cache: upload OUT as a Kaggle dataset and "
                                              "pass its path to --cache-from, so the notebook computes only what is "
                                              "new (the hidden test images).")
    export.set_defaults(func=cmd_cache_export)
    export.add_argument("out", help="the folder to write (created)")
    export.add_argument("--run", help="run id or folder (default: the newest run in --runs-dir)")
    export.add_argument("--runs-dir", default="runs", help="run records folder (default runs)")
    export.add_argument("--cache-dir", help="the run's cache folder (default: the one it used)")
    export.add_argument("--cache-from", action="append", metavar="DIR", help="read-only caches it used (repeatable)")

    wheels = command("wheels", "a folder of wheels to install kaggle_tl with no network (a Kaggle dataset)",
                     "Build kaggle_tl's wheel and download the wheels of every requirement a Kaggle image lacks "
                     "(or all, with --all) into OUT, with a README.txt holding the one install line. Upload OUT "
                     "as a dataset; in the notebook: pip install --no-index --find-links /kaggle/input/NAME "
                     "kaggle_tl.", cmd_wheels)
    wheels.add_argument("out", help="the folder to write (created)")
    wheels.add_argument("--extras", help="comma-separated extras to include, e.g. lite,openvino")
    wheels.add_argument("--include", action="append", metavar="NAME",
                        help="also a wheel of this requirement, e.g. one the Kaggle image lacks (repeatable)")
    wheels.add_argument("--all", action="store_true", help="every requirement and its dependencies, TensorFlow "
                                                            "included (for a machine with nothing installed)")
    wheels.add_argument("--python-version", help="the target's Python, e.g. 3.11 (default: this one's)")
    wheels.add_argument("--platform", action="append", help="the target's platform tag, e.g. "
                                                            "manylinux2014_x86_64 (repeatable; default: this one)")

    kernel = command("kernel", "write a notebook folder for `kaggle kernels push`: offline install, one run",
                     "Write kernel-metadata.json and a script that installs kaggle_tl from the wheels dataset "
                     "(no internet), then runs with the settings of a run (--run, default the newest) or a "
                     "TOML file on /kaggle/input/COMPETITION, the features dataset as a read-only cache and "
                     "writes /kaggle/working/submission.csv. Inputs are read from $KAGGLE_TL_INPUT and outputs "
                     "written to $KAGGLE_TL_WORKING when set (a local rehearsal).", cmd_kernel)
    kernel.add_argument("out", help="the folder to write (created)")
    kernel.add_argument("--competition", required=True, help="the competition's slug (kaggle.com/competitions/SLUG)")
    kernel.add_argument("--id", help="the notebook's USER/SLUG (default USER/kaggle-tl-COMPETITION)")
    kernel.add_argument("--user", default="me", help="your Kaggle user name, for the default --id (default me)")
    kernel.add_argument("--wheels-dataset", metavar="USER/NAME", help="the dataset of `kaggle-tl wheels`")
    kernel.add_argument("--features-dataset", metavar="USER/NAME", help="the dataset of `kaggle-tl cache export`")
    kernel.add_argument("--weights-dataset", metavar="USER/NAME", help="a dataset of Keras weights files")
    kernel.add_argument("--models-dataset", metavar="USER/NAME",
                        help="a dataset of the run's model files (backbones given as path/model.keras[:layer])")
    kernel.add_argument("--extras", help="extras to install, e.g. lite")
    kernel.add_argument("--gpu", action="store_true", help="ask Kaggle for a GPU (enable_gpu)")
    kernel.add_argument("--time-limit", type=float, metavar="MINUTES",
                        help="stop before extraction if the hidden test set would take longer")
    source = kernel.add_mutually_exclusive_group()
    source.add_argument("--run", help="take the settings of this run (id or folder)")
    source.add_argument("--config", help="take the settings of this TOML file")
    kernel.add_argument("--runs-dir", default="runs", help="run records folder (default runs)")
    return parser


def quiet_unless(verbose: bool) -> None:
    """By default a user sees progress bars, tables and real warnings; -v shows kaggle_tl's every line.

    Other libraries stay at warning level either way (matplotlib alone logs ~300 font-search lines
    at debug level); -v also lets TensorFlow's C++ start-up lines through (kaggle_tl.backbones.quiet).
    """
    from kaggle_tl.backbones import quiet

    quiet.verbose = verbose
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("kaggle_tl").setLevel(logging.DEBUG if verbose else logging.WARNING)
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
