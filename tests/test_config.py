"""RunConfig from TOML and flags."""
from __future__ import annotations

import pytest

from kaggle_tl.cli import build_parser, config_from_args
from kaggle_tl.config import RunConfig
from kaggle_tl.errors import KaggleTLError


def parse(argv):
    return config_from_args(build_parser().parse_args(["run", *argv]))


def test_defaults_are_the_mission():
    config = RunConfig(data="x")
    assert config.backbones == ("xception", "inception_v3")
    assert config.views == ("original", "hflip") and config.folds == 5 and config.heads == ("dense",)
    assert config.weights == "imagenet" and config.image_size is None


def test_no_data_means_the_offline_demo_with_lite0():
    config = parse([])
    assert config.data is None and config.backbones == ("efficientnet_lite0",)
    assert parse(["--backbones", "xception"]).backbones == ("xception",)


def test_flags_override_toml(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('data = "comp"\nbackbones = ["resnet50"]\nheads = ["svm", "logreg"]\nfolds = 3\n')
    config = parse(["--config", str(toml), "--folds", "4", "--no-flips", "--heads", "dense"])
    assert config.data == "comp" and config.backbones == ("resnet50",)
    assert config.folds == 4 and config.heads == ("dense",) and config.views == ("original",)


def test_toml_table_and_round_trip(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('[kaggle_tl]\ndata = "comp"\nseed = 7\n')
    config = RunConfig.from_toml(toml)
    assert config.seed == 7
    assert RunConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("text, message", [
    ('colour = "red"', "unknown setting"),
    ('heads = ["forest"]', "unknown head"),
    ("folds = 1", "folds must be at least 2"),
    ("folds = [", "not valid TOML"),
])
def test_bad_config_is_a_one_line_error_naming_the_file(tmp_path, text, message):
    toml = tmp_path / "bad.toml"
    toml.write_text(text)
    with pytest.raises(KaggleTLError, match=message):
        RunConfig.from_toml(toml)


def test_head_regularisation_flags_reach_the_config():
    config = parse(["--logreg-c", "0.2", "--svm-c", "0.01"])
    assert config.logreg_c == 0.2 and config.svm_c == 0.01
