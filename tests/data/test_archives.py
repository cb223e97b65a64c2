"""Images read in place from train.zip / test.zip or a tar: the same features (cache reused), the same submission."""
from __future__ import annotations

import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import write_image
from kaggle_tl import cli
from kaggle_tl.config import RunConfig
from kaggle_tl.pipeline import run


def _cactus(root: Path, n_train: int = 24, n_test: int = 6) -> None:
    rng = np.random.default_rng(0)
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    rows = []
    for i in range(n_train):
        image = np.full((40, 40, 3), 200 if i % 2 else 40, np.uint8) + rng.integers(0, 30, (40, 40, 3), dtype=np.uint8)
        write_image(root / "train" / f"t{i:03d}.jpg", image)
        rows.append((f"t{i:03d}.jpg", i % 2))
    pd.DataFrame(rows, columns=["id", "has_cactus"]).to_csv(root / "train.csv", index=False)
    for i in range(n_test):
        write_image(root / "test" / f"s{i:03d}.jpg", np.full((40, 40, 3), 200 if i % 2 else 40, np.uint8))
    pd.DataFrame({"id": [f"s{i:03d}.jpg" for i in range(n_test)], "has_cactus": 0.5}).to_csv(
        root / "sample_submission.csv", index=False)


def _zipped_copy(plain: Path, zipped: Path, top_folder: bool) -> None:
    zipped.mkdir()
    for name in ("train.csv", "sample_submission.csv"):
        shutil.copy(plain / name, zipped / name)
    for split in ("train", "test"):
        with zipfile.ZipFile(zipped / f"{split}.zip", "w") as archive:
            archive.writestr("__MACOSX/._x.jpg", b"resource fork")
            for path in sorted((plain / split).iterdir()):
                archive.write(path, f"{split}/{path.name}" if top_folder else path.name)


def _tarred_copy(plain: Path, tarred: Path) -> None:
    """train.tar and test.tar as `tar cf train.tar -C train .` writes them: every name starts with ./"""
    tarred.mkdir()
    for name in ("train.csv", "sample_submission.csv"):
        shutil.copy(plain / name, tarred / name)
    for split in ("train", "test"):
        with tarfile.open(tarred / f"{split}.tar", "w") as archive:
            archive.add(plain / split, arcname=".")


def _config(tmp_path: Path, data: Path, name: str) -> RunConfig:
    return RunConfig(data=str(data), backbones=("mobilenet_v2",), weights="none", image_size=32, stages=1,
                     views=("original", "hflip"), folds=3, heads=("logreg",), cache_dir=str(tmp_path / "cache"),
                     runs_dir=str(tmp_path / f"runs_{name}"), submissions_dir=str(tmp_path / f"subs_{name}"),
                     competition="aerial-cactus-identification")


@pytest.mark.parametrize("kind, top_folder", [("zip", True), ("zip", False), ("tar", False)])
def test_a_zipped_competition_runs_as_the_unzipped_one(tmp_path, kind, top_folder):
    _cactus(tmp_path / "plain")
    if kind == "zip":
        _zipped_copy(tmp_path / "plain", tmp_path / "zipped", top_folder)
    else:
        _tarred_copy(tmp_path / "plain", tmp_path / "zipped")
    plain = run(_config(tmp_path, tmp_path / "plain", "plain"))
    lines: list[str] = []
    zipped = run(_config(tmp_path, tmp_path / "zipped", "zipped"), report=lines.append)
    assert any(line.endswith(f"images in train.{kind}") for line in lines)
    assert zipped.image_keys == plain.image_keys  # the members' bytes are the files' bytes
    assert set(zipped.cache_entries["features"].values()) == {"cache"}  # nothing extracted again
    assert zipped.train_paths[0] == f"{tmp_path / 'zipped' / f'train.{kind}'}/{'train/' * top_folder}t000.jpg"
    first, second = (pd.read_csv(r.models[0].submission) for r in (plain, zipped))
    pd.testing.assert_frame_equal(first, second)
    assert zipped.models[0].score == plain.models[0].score


@pytest.mark.parametrize("content, message", [
    (b"not a zip", r"train\.zip: not a readable zip file"),
    (None, r"train\.zip: holds no images .*found e\.g\. \['readme\.txt'\]"),
    (b"not a tar", r"train\.tar: not a readable tar file"),
])
def test_a_zip_that_holds_no_readable_images_is_one_line(tmp_path, capsys, content, message):
    _cactus(tmp_path / "plain", n_train=6, n_test=2)
    _zipped_copy(tmp_path / "plain", tmp_path / "zipped", top_folder=True)
    target = tmp_path / "zipped" / "train.zip"
    if b"tar" in (content or b""):
        target.unlink()
        target = target.with_suffix(".tar")
    if content is None:
        with zipfile.ZipFile(target, "w") as archive:
            archive.writestr("readme.txt", "no images here")
    else:
        target.write_bytes(content)
    assert cli.main(["run", "--data", str(tmp_path / "zipped"), "--backbones", "mobilenet_v2", "--weights", "none",
                     "--image-size", "32", "--folds", "2", "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("kaggle-tl: error: ")]
    assert re.search(message, line)


def test_a_tar_member_declaring_more_than_the_file_holds_is_one_line_never_read(tmp_path):
    # a crafted header: 8 TB declared for a member of a small tar, no data after it
    from kaggle_tl.data.archives import open_archive
    from kaggle_tl.errors import KaggleTLError

    _cactus(tmp_path / "plain", n_train=2, n_test=1)
    with tarfile.open(tmp_path / "train.tar", "w") as archive:
        archive.add(tmp_path / "plain" / "train" / "t000.jpg", arcname="t000.jpg")
        huge = tarfile.TarInfo("huge.jpg")
        huge.size = 8 * 2 ** 40
        archive.addfile(huge)
    with pytest.raises(KaggleTLError, match=r"train.tar: not a readable tar file \(unexpected end of data\)"):
        open_archive(tmp_path / "train.tar")


def test_a_tar_rewritten_after_it_was_listed_is_listed_again(tmp_path, monkeypatch):
    from kaggle_tl.data import archives
    from kaggle_tl.data.archives import open_archive
    from kaggle_tl.data.images import image_problem
    from kaggle_tl.errors import KaggleTLError

    _cactus(tmp_path / "plain", n_train=2, n_test=1)
    with tarfile.open(tmp_path / "train.tar", "w") as archive:
        for name in ("t000.jpg", "t001.jpg"):
            archive.add(tmp_path / "plain" / "train" / name, arcname=name)
    folder = open_archive(tmp_path / "train.tar")  # listed now, cut below (a download still being written)
    data = (tmp_path / "train.tar").read_bytes()
    (tmp_path / "train.tar").write_bytes(data[:2048])
    with pytest.raises(KaggleTLError, match=r"train.tar: not a readable tar file"):  # its new size: listed again
        (folder / "t001.jpg").read_bytes()
    # Cut between the listing and the read (the size and time it was listed at still seen): the span past the end
    # is a bad image, never a read of what the header declared.
    (tmp_path / "train.tar").write_bytes(data)
    open_archive(tmp_path / "train.tar")
    stamp = archives._stamp(tmp_path / "train.tar")
    monkeypatch.setattr(archives, "_stamp", lambda path: stamp)
    (tmp_path / "train.tar").write_bytes(data[:2048])
    problem = image_problem(folder / "t001.jpg")
    assert re.fullmatch(r"cannot read \(damaged in the tar: its header declares \d+ bytes at byte \d+, past the "
                        r"file's end \(2048 bytes\)\)", problem)
