"""`kaggle-tl` command line: the only place that prints tables and exits."""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields
from typing import Any, Sequence

from kaggle_tl.config import DEMO_OVERRIDES, RunConfig
from kaggle_tl.errors import KaggleTLError

# flag -> RunConfig field; every flag maps 1:1 to a field.
RUN_FLAGS: list[tuple[str, dict[str, Any]]] = [
    ("--data", dict(help="competition folder (default: the embedded demo in data/demo)")),
    ("--backbones", dict(help="comma-separated backbone names (default xception,inception_v3; demo: efficientnet_lite0)")),
    ("--image-size", dict(type=int, help="input size in px (default: each backbone's native size)")),
    ("--weights", dict(help="imagenet | none | path to a weights file or folder")),
    ("--heads", dict(help="comma-separated heads: dense, svm, logreg (default dense)")),
    ("--folds", dict(type=int, help="CV folds (default 5)")),
    ("--seed", dict(type=int, help="seed for folds and heads (default 42)")),
    ("--batch-size", dict(type=int, help="images per model call (default 32)")),
    ("--decode-threads", dict(type=int, help="image decoding threads (default 4)")),
    ("--max-epochs", dict(type=int, help="dense head: most epochs (default 50)")),
    ("--cache-dir", dict(help="feature cache folder (default cache)")),
    ("--runs-dir", dict(help="run records folder (default runs)")),
    ("--submissions-dir", dict(help="submissions folder (default submissions)")),
    ("--train-dir", dict(help="train images sub-folder (default train)")),
    ("--test-dir", dict(help="test images sub-folder (default test)")),
    ("--labels-csv", dict(help="labels file name (default labels.csv)")),
    ("--sample-submission", dict(help="sample submission file name (default sample_submission.csv)")),
    ("--id-column", dict(help="id column name (default id)")),
    ("--label-column", dict(help="label column name (default label)")),
    ("--flips", dict(action=argparse.BooleanOptionalAction, default=None, help="also use horizontal flips (default on)")),
    ("--skip-bad-train-images", dict(action="store_true", default=None,
                                     help="exclude unreadable training images (recorded in the run) instead of stopping")),
]


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file of RunConfig settings; flags override it")
    for flag, options in RUN_FLAGS:
        parser.add_argument(flag, **options)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    names = {f.name for f in fields(RunConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if args.config:
        config = RunConfig.from_toml(args.config, **overrides)
    else:
        config = RunConfig.from_dict(overrides, source="flags")
    if config.data is None and "backbones" not in overrides and not _toml_sets(args.config, "backbones"):
        config = config.replace(**DEMO_OVERRIDES)
    return config


def _toml_sets(path: str | None, name: str) -> bool:
    if not path:
        return False
    import tomllib
    with open(path, "rb") as handle:
        values = tomllib.load(handle)
    return name in values.get("kaggle_tl", values)


def print_run(result) -> None:
    import pandas as pd

    print(f"\nrun {result.run_id}  ({result.run_dir})")
    if result.config.weights == "none":
        print("WARNING: weights=none — random backbone weights; these scores say nothing about pretrained features")
    for model in result.models:
        table = model.scores.pivot(index="fold", columns="view", values=["logloss", "accuracy"])
        table = table.reindex([*sorted(i for i in table.index if i != "all"), "all"])
        print(f"\n{model.name}: CV log loss {model.cv_logloss:.4f}, accuracy {model.cv_accuracy:.4f}")
        with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 160):
            print(table.to_string())
        print(f"submission: {model.submission}")
    print(f"\ntimings: " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items()))


def cmd_run(args: argparse.Namespace) -> int:
    from kaggle_tl.pipeline import run

    result = run(config_from_args(args))
    print_run(result)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kaggle-tl", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="features -> CV heads -> submission")
    add_run_arguments(run_parser)
    run_parser.set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return args.func(args)
    except KaggleTLError as exc:
        print(f"kaggle-tl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kaggle-tl: interrupted; completed feature chunks are kept and the next run resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
