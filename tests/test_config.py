"""RunConfig from TOML, flags and Python: typed, checked, and resolved in one place."""
from __future__ import annotations

from pathlib import Path

import pytest

from kaggle_tl.cli import build_parser, config_from_args
from kaggle_tl.config import DEMO_DATA, RunConfig, resolve_config
from kaggle_tl.errors import KaggleTLError


def parse(argv):
    return config_from_args(build_parser().parse_args(["run", *argv]))


def test_defaults_are_the_mission():
    config = resolve_config(RunConfig(data="x"))
    assert config.backbones == ("xception", "inception_v3")
    assert config.views == ("original", "hflip") and config.folds == 5 and config.stages == 3
    assert config.heads is None  # the task's: logreg,dense for classes (resolve_heads, once the task is read)
    assert config.weights == "imagenet" and config.image_size is None and config.engine == "local"


def test_no_data_means_the_offline_demo_with_lite0_from_python_and_from_flags():
    # kaggle_tl.run(RunConfig()) and `python run_all.py` resolve to the same config.
    assert parse([]) == resolve_config(RunConfig())
    config = parse([])
    assert config.data == str(Path(DEMO_DATA).absolute()) and config.backbones == ("efficientnet_lite0",)
    assert parse(["--backbones", "xception"]).backbones == ("xception",)


def test_resolved_config_holds_every_heads_parameters():
    config = parse(["--heads", "logreg,dense", "--head-param", "logreg.C=0.2", "--head-param", "logreg.max_iter=50"])
    assert config.head_params["logreg"]["C"] == 0.2 and config.head_params["logreg"]["max_iter"] == 50
    assert "max_epochs" in config.head_params["dense"]  # defaults filled in, so the saved config is complete
    assert "random_state" not in config.head_params["dense"]  # that is the run's seed
    assert resolve_config(config) == config  # resolving is idempotent


def test_flags_override_toml(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('data = "comp"\nbackbones = ["resnet50"]\nheads = ["svm", "logreg"]\nfolds = 3\n'
                    'views = ["original", "vflip"]\n[head_params.logreg]\nC = 0.3\nmax_iter = 20\n')
    config = parse(["--config", str(toml), "--folds", "4", "--no-flips", "--heads", "logreg",
                    "--head-param", "logreg.C=0.1"])
    assert config.data == str(tmp_path / "comp") and config.backbones == ("resnet50",)  # relative to the TOML
    assert config.folds == 4 and config.heads == ("logreg",) and config.views == ("original",)
    assert config.head_params["logreg"]["C"] == 0.1 and config.head_params["logreg"]["max_iter"] == 20


def test_toml_table_and_round_trip(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('[kaggle_tl]\ndata = "comp"\nseed = 7\nviews = ["original", "rot90"]\n')
    config = RunConfig.from_toml(toml)
    assert config.seed == 7 and config.views == ("original", "rot90")
    assert RunConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("text, message", [
    ('colour = "red"', "unknown setting"),
    ("folds = 1", "setting folds: must be at least 2"),
    ("folds = 5.5", "setting folds: expected an integer, got 5.5"),
    ('image_size = "64"', "setting image_size: expected an integer"),
    ("image_size = 0", "setting image_size: must be a positive"),
    ("data = 5", "setting data: expected a string, got 5"),
    ('flips = "false"', 'setting flips: expected true or false, got \'false\''),
    ('skip_bad_train_images = "false"', "setting skip_bad_train_images: expected true or false"),
    ("seed = -1", "setting seed: must be in"),
    ("seed = 4294967296", "setting seed: must be in"),
    ('views = ["original", "sideways"]', "setting views: must be distinct names"),
    ('resize = "stretch"', "setting resize: must be one of squash, crop, pad"),
    ('engine = "spark"', "setting engine: must be one of local, dask"),
    ("folds = [", "not valid TOML"),
    ('flips = false\nviews = ["original", "hflip"]', "contradicts"),
])
def test_bad_config_is_a_one_line_error_naming_the_file_and_setting(tmp_path, text, message):
    toml = tmp_path / "bad.toml"
    toml.write_text(text)
    with pytest.raises(KaggleTLError, match=message) as error:
        RunConfig.from_toml(toml)
    assert str(error.value).startswith(str(toml)) and "\n" not in str(error.value)


def test_non_utf8_toml_is_named(tmp_path):
    toml = tmp_path / "latin1.toml"
    toml.write_bytes('data = "café"\n'.encode("latin-1"))
    with pytest.raises(KaggleTLError, match="not UTF-8"):
        RunConfig.from_toml(toml)


@pytest.mark.parametrize("argv, message", [
    (["--heads", "forest"], "unknown head 'forest'"),
    (["--heads", "logreg", "--head-param", "logreg.C=0"], "C"),
    (["--heads", "logreg", "--head-param", "logreg.gamma=1"], "gamma"),
    (["--heads", "logreg", "--head-param", "svm.C=1"], "not among heads"),
    (["--head-param", "C=1"], "expected HEAD.NAME=VALUE"),
    (["--seed", "-3"], "setting seed"),
    (["--image-size", "0"], "setting image_size"),
    (["--backbones", "xception", "--image-size", "40"], "xception needs at least 71 px"),
    (["--head-jobs", "-1"], "setting head_jobs"),
])
def test_every_setting_is_checked_before_anything_runs(argv, message):
    with pytest.raises(KaggleTLError, match=message):
        parse(argv)


def test_to_toml_is_valid_toml_that_reads_back_the_same_settings(tmp_path):
    import tomllib

    config = RunConfig(backbones=("mobilenet_v2", "my.model.keras:pool"), weights="none", heads=("logreg", "dense"),
                       label_column='odd "name"\x7f\twith\\controls',
                       stage_layers={"mobilenet_v2": ("block_6_expand_relu",)},
                       head_params={"logreg": {"C": float("inf")}, "dense": {"dropout": 0.25}})
    text = config.to_toml()
    tomllib.loads(text)  # JSON's Infinity and \u007f spellings were not TOML
    (tmp_path / "run.toml").write_text(text)
    read = RunConfig.from_toml(tmp_path / "run.toml")
    assert read.result_settings() == config.result_settings()  # the folders are read relative to the file
