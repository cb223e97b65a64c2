"""Side features: the numeric columns train.csv and test.csv share join the image features (data.tabular)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import write_image
from kaggle_tl.config import RunConfig, resolve_config
from kaggle_tl.cv import fits_key, predictions_key
from kaggle_tl.data.competition import read_competition
from kaggle_tl.data.digests import data_fingerprint
from kaggle_tl.errors import KaggleTLError
from kaggle_tl.pipeline import backbone_refs, run

FLAGS = ["Subject Focus", "Eyes", "Face", "Near"]


def _pawpularity(root: Path, n_train: int = 200, n_test: int = 30, seed: int = 0) -> dict[str, float]:
    """Pawpularity's layout whose images are noise and whose value is 20 + 30 Eyes + 40 Near (+ noise): only the
    side features tell it. Returns the test answers."""
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    answers, tables = {}, {"train": [], "test": []}
    for split, n, offset in (("train", n_train, 0), ("test", n_test, 1000)):
        for i in range(n):
            image_id = f"{offset + i:032x}"
            write_image(root / split / f"{image_id}.jpg", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
            flags = rng.integers(0, 2, len(FLAGS))
            value = float(np.clip(20 + 30 * flags[1] + 40 * flags[3] + rng.normal(0, 3), 1, 100))
            tables[split].append((image_id, *flags, round(value)))
            if split == "test":
                answers[image_id] = value
    pd.DataFrame(tables["train"], columns=["Id", *FLAGS, "Pawpularity"]).to_csv(root / "train.csv", index=False)
    pd.DataFrame([row[:-1] for row in tables["test"]], columns=["Id", *FLAGS]).to_csv(root / "test.csv", index=False)
    pd.DataFrame({"Id": list(answers), "Pawpularity": 50.0}).to_csv(root / "sample_submission.csv", index=False)
    return answers


def _config(tmp_path: Path, comp: Path, **settings) -> RunConfig:
    return RunConfig(data=str(comp), backbones=("mobilenet_v2",), weights="none", image_size=32, stages=1,
                     views=("original",), folds=3, heads=("dense",), cache_dir=str(tmp_path / "cache"),
                     runs_dir=str(tmp_path / "runs"), submissions_dir=str(tmp_path / "subs"),
                     competition="petfinder-pawpularity-score", **settings)


def test_side_features_join_the_images_and_no_tabular_leaves_them_out(tmp_path):
    comp = tmp_path / "petfinder"
    answers = _pawpularity(comp)
    lines: list[str] = []
    with_side = run(_config(tmp_path, comp), report=lines.append)
    assert any(line.startswith("side features: 4 numeric column(s) of train.csv and test.csv") for line in lines)
    assert any("side features" in note for note in with_side.notes)
    without = run(_config(tmp_path, comp, tabular=False), report=lines.append)
    assert any("left out (--no-tabular)" in note for note in without.notes)
    assert without.data_fingerprint == with_side.data_fingerprint  # the same data: ranked together

    scores = {record.config.tabular: record.models[0].score.value for record in (with_side, without)}
    # The flags carry the value, the noise images nothing. The dense head finds them; ridge, one penalty for 4
    # columns beside 1,280 image columns, does not (BENCHMARKS.md measures what side features add).
    assert scores[True] < 0.85 * scores[False]
    sub = pd.read_csv(with_side.models[0].submission)
    truth = np.array([answers[i] for i in sub["Id"]])
    assert np.sqrt(np.mean((sub["Pawpularity"] - truth) ** 2)) < 0.85 * truth.std()  # test.csv's flags were read


def _keys(tmp_path: Path, comp: Path, config: RunConfig):
    competition = read_competition(comp)
    refs = backbone_refs(config)
    image_keys = {"train": "t", "test": "s"}
    folds = np.arange(len(competition.y)) % 3
    fits = fits_key(config, "dense", refs, image_keys, competition, folds)
    return (fits, predictions_key(fits, config, refs, image_keys, competition.side),
            data_fingerprint(competition, "t", "s"))


@pytest.mark.parametrize("split, part", [("train", 0), ("test", 1)])
def test_a_changed_side_value_changes_the_keys_and_the_fingerprint(tmp_path, split, part):
    comp = tmp_path / "petfinder"
    _pawpularity(comp, n_train=12, n_test=4)
    config = resolve_config(_config(tmp_path, comp))
    before = _keys(tmp_path, comp, config)
    table = pd.read_csv(comp / f"{split}.csv", dtype=str)
    table.loc[2, "Eyes"] = str(1 - int(table.loc[2, "Eyes"]))
    table.to_csv(comp / f"{split}.csv", index=False)
    after = _keys(tmp_path, comp, config)
    assert after[part] != before[part]
    assert after[2] != before[2]
    if split == "test":
        assert after[0] == before[0]  # the fold models never see the test rows


def test_which_columns_are_side_features(tmp_path):
    comp = tmp_path / "petfinder"
    _pawpularity(comp, n_train=12, n_test=4)
    train, test = pd.read_csv(comp / "train.csv"), pd.read_csv(comp / "test.csv")
    train["only_in_train"] = 1.5
    train["constant"], test["constant"] = 7, 3
    train["age"], test["age"] = np.arange(12.0), [1, 2, np.nan, 4]
    train["sex"], test["sex"] = "m", "f"
    train["width"], test["width"] = np.arange(12) * 10, [5, 6, 7, 8]
    train.to_csv(comp / "train.csv", index=False)
    test.to_csv(comp / "test.csv", index=False)
    competition = read_competition(comp)
    side = competition.side
    assert side.columns == (*FLAGS, "width")
    np.testing.assert_array_equal(side.train[:, -1], np.arange(12) * 10)
    np.testing.assert_array_equal(side.test[:, -1], [5, 6, 7, 8])
    note = next(n for n in competition.notes if "left out of the side features" in n)
    assert all(f"{c} (" in note for c in ("constant", "age", "sex")) and "only_in_train" not in note
    joined = side.join(np.zeros((12, 2), np.float32), "train")
    assert joined.dtype == np.float32 and joined.shape == (12, 2 + len(side.columns))
    np.testing.assert_allclose(joined[:, 2:].mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(joined[:, 2:].std(axis=0), 1, atol=1e-5)


def test_test_rows_matched_by_id_in_the_sample_order(tmp_path):
    comp = tmp_path / "petfinder"
    _pawpularity(comp, n_train=12, n_test=4)
    test = pd.read_csv(comp / "test.csv").iloc[::-1]
    test["Id"] = test["Id"] + ".jpg"  # written with the extension, in another order
    test.to_csv(comp / "test.csv", index=False)
    competition = read_competition(comp)
    expected = test.set_index(test["Id"].str.removesuffix(".jpg")).loc[competition.test_ids, FLAGS].to_numpy()
    np.testing.assert_array_equal(competition.side.test, expected)


def test_a_test_csv_without_every_test_id_is_a_note_and_a_duplicate_id_an_error(tmp_path):
    comp = tmp_path / "petfinder"
    _pawpularity(comp, n_train=12, n_test=4)
    test = pd.read_csv(comp / "test.csv")
    test.iloc[:3].to_csv(comp / "test.csv", index=False)
    competition = read_competition(comp)
    assert competition.side is None
    assert any("does not list every test id" in note for note in competition.notes)
    pd.concat([test, test.iloc[:1]]).to_csv(comp / "test.csv", index=False)
    with pytest.raises(KaggleTLError, match=r"test\.csv: id '.*' appears twice in column 'Id'"):
        read_competition(comp)
