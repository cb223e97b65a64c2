"""The tool a person uses every day: tables that fit the terminal, clean, help, quiet logs, one registry."""
from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_competition, make_run
from kaggle_tl import cli
from kaggle_tl.cache.store import Cache
from kaggle_tl.config import RunConfig
from kaggle_tl.ensemble.strategies import STRATEGIES, create_strategy
from kaggle_tl.errors import KaggleTLError
from kaggle_tl.heads.base import HEADS
from kaggle_tl.pipeline import run
from kaggle_tl.report.tables import TERMINAL_WIDTH

REPO = Path(__file__).resolve().parents[1]
# The widest names a user meets: three long backbones concatenated, a long head parameter set.
WIDE = "efficientnetv2_b3+inception_resnet_v2+convnext_xlarge__logreg"


@pytest.fixture
def no_plots(monkeypatch):
    monkeypatch.setattr("kaggle_tl.pipeline.plot_model", lambda *args, **kwargs: {}, raising=False)


def test_leaderboard_and_ensemble_fit_120_columns_at_the_widest_names(tmp_path, competition, capsys):
    runs_dir = tmp_path / "runs"
    make_run(runs_dir, competition, "20261130-101010-abcd", {WIDE: (["efficientnetv2_b3", "inception_resnet_v2",
                                                                     "convnext_xlarge"], 2.0)}, minutes=1)
    make_run(runs_dir, competition, "20261130-101011-abce", {"efficientnet_lite0__dense": (["efficientnet_lite0"], 1.0),
                                                             "efficientnet_lite0__svm": (["efficientnet_lite0"], 0.5)},
             minutes=2)
    assert cli.main(["leaderboard", "--runs-dir", str(runs_dir), "--out", str(tmp_path / "board")]) == 0
    assert cli.main(["leaderboard", "--runs-dir", str(runs_dir), "--models", "--out", str(tmp_path / "board")]) == 0
    assert cli.main(["ensemble", "--all", "--runs-dir", str(runs_dir), "--submit", "none",
                     "--out", str(tmp_path / "ens")]) == 0
    assert cli.main(["backbones"]) == 0
    out = capsys.readouterr().out
    tables = [line for line in out.splitlines() if str(tmp_path) not in line]  # a path is as long as it is
    assert max(len(line) for line in tables) <= TERMINAL_WIDTH
    assert "efficientnetv2_b3+inception_resnet_v2+" in out  # cut with an ellipsis, not dropped
    full = pd.read_csv(tmp_path / "board" / "leaderboard.csv")
    assert WIDE in set(full["model"]) and {"recipe", "submission", "cv_logloss_se"} <= set(full.columns)


def test_the_leaderboard_tells_apart_models_that_differ_in_a_parameter(tmp_path, no_plots, capsys):
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=2)
    base = RunConfig(data=str(comp), backbones=("mobilenet_v2",), weights="none", image_size=32, views=("original",),
                     folds=2, heads=("logreg",), cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"),
                     submissions_dir=str(tmp_path / "subs"))
    run(base)
    run(base.replace(head_params={"logreg": {"C": 0.02}}))
    assert cli.main(["leaderboard", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "board")]) == 0
    recipes = pd.read_csv(tmp_path / "board" / "leaderboard.csv")["recipe"].tolist()
    fixed, auto = sorted(recipes)  # the default C is "auto": the recipe shows what it chose
    assert fixed == "logreg C=0.02 | 32px pad views original weights none"
    assert re.fullmatch(r"logreg C~[0-9.e+-]+ \| 32px pad views original weights none", auto)
    assert "logreg C=0.02" in capsys.readouterr().out


def _age(path: Path, days: float) -> None:
    stamp = (dt.datetime.now() - dt.timedelta(days=days)).timestamp()
    for p in [path, *path.rglob("*")]:
        os.utime(p, (stamp, stamp))


def _tiny_run(tmp_path) -> RunConfig:
    """A finished run of a tiny competition (random weights, one view, two folds); its config."""
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=2)
    config = RunConfig(data=str(comp), backbones=("mobilenet_v2",), weights="none", image_size=32, views=("original",),
                       stages=1, folds=2, heads=("logreg",), cache_dir=str(tmp_path / "cache"),
                       runs_dir=str(tmp_path / "runs"), submissions_dir=str(tmp_path / "subs"))
    run(config)
    return config


def test_clean_lists_the_cache_and_removes_only_what_is_named_after_a_yes(tmp_path, no_plots, capsys):
    config = _tiny_run(tmp_path)
    cache = Cache(tmp_path / "cache")
    features = [e for e in cache.entries() if e.kind == "features"]
    assert len(features) == 2 and all(e.info["data"] == "comp" and e.info["backbone"] == "mobilenet_v2"
                                      for e in features)
    old = next(e for e in features if e.info["split"] == "train")
    _age(old.path, 40)
    assert cli.main(["clean", "--cache-dir", str(tmp_path / "cache")]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"features\s+comp\s+mobilenet_v2\s+2 ", listing) and "predictions" in listing
    assert cli.main(["clean", "--cache-dir", str(tmp_path / "cache"), "--older-than", "30"]) == 0
    assert "would remove 1 entries" in capsys.readouterr().out and old.path.exists()  # a dry run by default
    assert cli.main(["clean", "--cache-dir", str(tmp_path / "cache"), "--older-than", "30", "--yes"]) == 0
    assert "removed 1 entries" in capsys.readouterr().out and not old.path.exists()
    left = [e.kind for e in cache.entries()]
    assert left.count("features") == 1 and left.count("predictions") == 1  # only the old entry went
    assert cli.main(["clean", "--cache-dir", str(tmp_path / "cache"), "--kind", "predictions", "--yes"]) == 0
    assert not [e for e in cache.entries() if e.kind == "predictions"]
    record = run(config)  # what was removed is recomputed, nothing else breaks
    assert record.cache_entries["features"][old.key] == "computed"


def test_clean_touches_only_what_is_provably_a_cache_entry(tmp_path, no_plots, capsys):
    _tiny_run(tmp_path)
    cache_dir = tmp_path / "cache"
    mine = [cache_dir / "models" / "best" / "model.h5", cache_dir / "fits" / "notes.csv",
            cache_dir / "predictions" / "my-blend.npz"]
    for path in mine:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("a user's own file")
    target = next(p for p in (cache_dir / "features").iterdir())
    (cache_dir / "figures").mkdir(exist_ok=True)
    (cache_dir / "figures" / ("0" * 20)).symlink_to(target)  # a link shaped like an entry
    entries = Cache(cache_dir).entries()
    assert {"features", "fits", "predictions"} <= {e.kind for e in entries}
    assert not {e.path for e in entries} & {*mine, cache_dir / "figures" / ("0" * 20), cache_dir / "models" / "best"}
    assert cli.main(["clean", "--cache-dir", str(cache_dir), "--older-than", "0", "--yes"]) == 0
    assert all(path.read_text() == "a user's own file" for path in mine)
    assert (cache_dir / "figures" / ("0" * 20)).is_symlink() and target.is_dir() is False
    assert not Cache(cache_dir).entries()


def test_every_command_has_a_description_for_a_user():
    parser = cli.build_parser()
    assert "Point it at a competition folder" in parser.format_help()
    assert "the only place" not in parser.format_help()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        assert sub.description and len(sub.description) > 20, name


def test_verbose_shows_kaggle_tl_lines_but_not_other_libraries_debug(tmp_path):
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=2)
    argv = [sys.executable, "-m", "kaggle_tl.cli", "-v", "run", "--data", str(comp), "--backbones", "mobilenet_v2",
            "--weights", "none", "--image-size", "32", "--heads", "logreg", "--folds", "2"]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "kaggle_tl.features" in done.stderr  # kaggle_tl's own debug and info lines
    assert "findfont" not in done.stderr and "matplotlib" not in done.stderr


def test_one_registry_contract_for_backbones_heads_and_strategies():
    from kaggle_tl.backbones import BACKBONES

    assert {"dense", "logreg", "svm"} <= set(HEADS.names()) and "greedy" in STRATEGIES.names()
    assert "efficientnet_lite0" in BACKBONES.names()
    with pytest.raises(KaggleTLError, match=r"strategy greedy: unknown parameter 'n_round' \(did you mean n_rounds\?\)"):
        create_strategy("greedy", n_round=50)
    with pytest.raises(KaggleTLError, match=r"unknown ensemble strategy 'greedyy' \(did you mean greedy\?\)"):
        create_strategy("greedyy")
    with pytest.raises(KaggleTLError, match=r"unknown backbone 'xcepton' \(did you mean xception\?\)"):
        BACKBONES.get("xcepton")
    assert create_strategy("greedy", n_rounds=5).n_rounds == 5


def _commands(text: str) -> list[str]:
    """Every `kaggle-tl ...` command line in a Markdown text: shell code blocks, and inline code with flags."""
    found = []
    for language, block in re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M):
        if language in ("", "bash", "sh", "console"):
            joined = block.replace("\\\n", " ")
            found += [line.strip() for line in joined.splitlines() if line.strip().startswith("kaggle-tl ")]
    found += [m for m in re.findall(r"`(kaggle-tl [^`]+)`", text) if " --" in m]
    return found


def test_every_command_in_the_readme_and_docs_parses_with_the_current_cli():
    parser = cli.build_parser()
    documents = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    commands = [(doc.name, c) for doc in documents for c in _commands(doc.read_text(encoding="utf-8"))]
    assert len(commands) >= 15
    for doc, command in commands:
        command = re.split(r";|\s(?:#|&&|\|\||\||>)\s", command)[0]  # the kaggle-tl part of a shell line
        words = shlex.split(command)[1:]
        if "..." in command or "[" in command:
            continue  # a synopsis ([optional] parts, alternatives), not a command
        try:
            parser.parse_args(words)
        except SystemExit:
            pytest.fail(f"{doc}: `{command}` does not parse")


def test_clean_keeps_a_feature_entry_a_running_extraction_holds(tmp_path, no_plots, capsys):
    import fcntl

    _tiny_run(tmp_path)
    cache_dir = tmp_path / "cache"
    held, free = sorted(e.path for e in Cache(cache_dir).entries() if e.kind == "features")
    fd = os.open(held / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as FeatureEntry.locked holds it while a run extracts
    try:
        assert cli.main(["clean", "--cache-dir", str(cache_dir), "--kind", "features", "--yes"]) == 0
    finally:
        os.close(fd)
    out = capsys.readouterr().out
    assert "removed 1 entries" in out and f"kept 1 that a running run holds ({held})" in out
    assert (held / "features.npy").is_file() and not free.exists()
