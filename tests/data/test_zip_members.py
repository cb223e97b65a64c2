"""data.zipped below the pipeline: one member as a path (listing, top folder, __MACOSX, pickling, threads and
processes), class folders inside a zip, and the bad zips: truncated, encrypted, a member failing its CRC."""
from __future__ import annotations

import multiprocessing
import pickle
import zipfile
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import random_pngs
from kaggle_tl.data.archives import ArchiveMember, image_path, open_archive, saved
from kaggle_tl.data.competition import Layout, read_competition, usable_competition
from kaggle_tl.data.digests import file_digest, image_set_key
from kaggle_tl.data.folders import list_folder
from kaggle_tl.data.images import find_bad_images, image_problem, read_image
from kaggle_tl.errors import KaggleTLError


def _zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _jpeg(level: int) -> bytes:
    ok, data = cv2.imencode(".jpg", np.full((16, 12, 3), level, np.uint8))
    assert ok
    return data.tobytes()


def _pngs(tmp_path: Path, n: int) -> dict[str, bytes]:
    (tmp_path / "pngs").mkdir()
    return {p.name: p.read_bytes() for p in random_pngs(tmp_path / "pngs", n)}


def _read_member(member: ArchiveMember) -> str:  # in another process
    return file_digest(member)


def test_listing_a_zip_leaves_out_macosx_hidden_and_system_entries(tmp_path):
    pngs = _pngs(tmp_path, 2)
    archive = _zip(tmp_path / "comp" / "images.zip", {
        **pngs, "notes.txt": b"x", ".DS_Store": b"x", "Thumbs.db": b"x", "__MACOSX/._im00.png": b"x",
        "sub/im09.png": pngs["im00.png"]})
    root = open_archive(archive)
    assert (root.member, root.name, str(root)) == ("", "images.zip", str(archive))
    ignored = defaultdict(list)
    files, folders = list_folder(root, ignored)
    assert [f.name for f in files] == ["im00.png", "im01.png", "notes.txt"]
    assert [f.name for f in folders] == ["sub"]
    assert {kind: [str(p.relative_to(tmp_path / "comp")) for p in found] for kind, found in ignored.items()} == {
        "hidden": ["images.zip/.DS_Store"], "system": ["images.zip/Thumbs.db"], "__MACOSX": ["images.zip/__MACOSX"]}
    member = files[0]
    assert (member.stem, member.suffix, member.size, member.parent) == ("im00", ".png", len(pngs["im00.png"]), root)
    assert str(member) == f"{archive}/im00.png" and member.is_file() and not member.is_dir()
    assert member.read_bytes() == pngs["im00.png"]
    assert list_folder(folders[0], ignored)[0] == [ArchiveMember(archive, "sub/im09.png")]


def test_one_top_folder_named_like_the_zip_is_entered_and_another_is_not(tmp_path):
    pngs = _pngs(tmp_path, 2)
    entered = open_archive(_zip(tmp_path / "train.zip", {f"train/{n}": d for n, d in pngs.items()}
                            | {"__MACOSX/train/._im00.png": b"x"}))
    assert (entered.member, entered.name, str(entered)) == ("train", "train.zip", str(tmp_path / "train.zip"))
    ignored = defaultdict(list)
    files, folders = list_folder(entered, ignored)
    assert [str(f) for f in files] == [f"{tmp_path / 'train.zip'}/train/{n}" for n in pngs] and folders == []
    assert [p.member for p in ignored["__MACOSX"]] == ["__MACOSX"]  # the root's, recorded beside the top folder's
    kept = open_archive(_zip(tmp_path / "test.zip", {f"cats/{n}": d for n, d in pngs.items()}))
    assert kept.member == "" and [f.name for f in list_folder(kept, ignored)[1]] == ["cats"]


def test_a_member_pickles_round_trips_its_str_and_reads_in_other_processes(tmp_path):
    pngs = _pngs(tmp_path, 3)
    archive = _zip(tmp_path / "train.zip", {f"train/{n}": d for n, d in pngs.items()}, zipfile.ZIP_DEFLATED)
    members = list_folder(open_archive(archive), defaultdict(list))[0]
    assert pickle.loads(pickle.dumps(members[0])) == members[0]
    assert {members[0]: 1}[ArchiveMember(archive, "train/im00.png")] == 1  # hashes as its value
    assert image_path(str(members[1])) == members[1] and image_path(saved(members[1])) == members[1]
    missing = ArchiveMember(archive, "train/missing.png")
    assert image_path(str(tmp_path / "train.zip" / "train" / "missing.png")) == missing
    assert members[0].read_bytes() == pngs["im00.png"]  # the zip is open in this process before the fork
    expected = [file_digest(path) for path in sorted((tmp_path / "pngs").iterdir())]
    for method in ("fork", "spawn"):
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(method)) as pool:
            assert list(pool.map(_read_member, members)) == expected


def test_threads_read_members_of_one_zip_at_once(tmp_path):
    images = {f"{k:03d}.jpg": _jpeg(k) for k in range(120)}
    archive = _zip(tmp_path / "test.zip", images, zipfile.ZIP_DEFLATED)
    members = [ArchiveMember(archive, name) for name in images]
    assert find_bad_images(members, threads=8) == {}
    (tmp_path / "test").mkdir()
    for name, data in images.items():
        (tmp_path / "test" / name).write_bytes(data)
    files = [tmp_path / "test" / name for name in images]
    assert image_set_key(members, threads=8) == image_set_key(files, threads=8)
    assert all((read_image(m) == read_image(f)).all() for m, f in zip(members[::17], files[::17]))


def test_class_folders_inside_a_zip(tmp_path):
    # plant-seedlings-classification: train.zip holds train/<species>/<image>.png, test.zip test/<image>.png
    root = tmp_path / "plant-seedlings-classification"
    pngs = list(_pngs(tmp_path, 6).values())
    _zip(root / "train.zip", {f"train/{species}/{k}{species[0]}.png": pngs[k]
                              for species in ("Charlock", "Maize") for k in range(3)}
         | {"train/Maize/.DS_Store": b"x", "train/readme.txt": b"x"})
    _zip(root / "test.zip", {"test/0a1.png": pngs[4], "test/0b2.png": pngs[5]})
    pd.DataFrame({"file": ["0a1.png", "0b2.png"], "species": "Maize"}).to_csv(root / "sample_submission.csv",
                                                                             index=False)
    competition = read_competition(root)
    assert competition.task.describe().endswith("labels from the class folders of train.zip")
    assert competition.classes == ["Charlock", "Maize"] and competition.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert competition.train_ids[:2] == ["Charlock/0C", "Charlock/1C"]
    assert str(competition.train_paths[0]) == f"{root / 'train.zip'}/train/Charlock/0C.png"
    assert [p.name for p in competition.test_paths] == ["0a1.png", "0b2.png"]
    assert any(n.startswith("1 file(s) directly in train.zip have no class folder") for n in competition.notes)
    assert any(n.startswith("1 hidden file(s)/folder(s) (name starting with '.') ignored, e.g. "
                            "train.zip/train/Maize/.DS_Store") for n in competition.notes)


def test_a_zip_whose_names_use_backslashes_reads_its_folders(tmp_path):
    # Some Windows tools write "train\\Charlock\\0C.png": its folders are folders, its bytes read by the stored name
    root = tmp_path / "plant-seedlings-classification"
    pngs = list(_pngs(tmp_path, 5).values())
    _zip(root / "train.zip", {f"train\\{species}\\{k}{species[0]}.png": pngs[k]
                              for species in ("Charlock", "Maize") for k in range(2)})
    assert any("\\" in name for name in zipfile.ZipFile(root / "train.zip").namelist())
    _zip(root / "test.zip", {"test\\0a1.png": pngs[4]})
    pd.DataFrame({"file": ["0a1.png"], "species": "Maize"}).to_csv(root / "sample_submission.csv", index=False)
    competition = read_competition(root)
    assert competition.classes == ["Charlock", "Maize"] and competition.y.tolist() == [0, 0, 1, 1]
    assert str(competition.train_paths[2]) == f"{root / 'train.zip'}/train/Maize/0M.png"
    assert competition.train_paths[2].read_bytes() == pngs[0]
    assert read_image(competition.test_paths[0]).shape[2] == 3


def _cactus(root: Path, train: dict[str, bytes]) -> Path:
    _zip(root / "train.zip", train)
    _zip(root / "test.zip", {"s.jpg": _jpeg(9)})
    pd.DataFrame({"id": list(train), "has_cactus": [k % 2 for k in range(len(train))]}).to_csv(
        root / "train.csv", index=False)
    pd.DataFrame({"id": ["s.jpg"], "has_cactus": 0.5}).to_csv(root / "sample_submission.csv", index=False)
    return root


def test_a_folder_wins_over_its_zip_and_a_given_zip_is_read(tmp_path):
    root = _cactus(tmp_path / "cactus", {f"{k}.jpg": _jpeg(k) for k in range(4)})
    (root / "train").mkdir()
    for k in range(4):
        (root / "train" / f"{k}.jpg").write_bytes(_jpeg(k))
    competition = read_competition(root)
    assert competition.train_paths[0] == root / "train" / "0.jpg" and competition.layout.test_dir == "test.zip"
    assert ("train images read from train/, not train.zip (a folder wins over its archive; --train-dir decides)"
            in competition.notes)
    given = read_competition(root, Layout(train_dir="train.zip"))
    assert given.train_paths[0] == ArchiveMember(root / "train.zip", "0.jpg")


def test_a_truncated_zip_is_one_line(tmp_path):
    root = _cactus(tmp_path / "cactus", {f"{k}.jpg": _jpeg(k) for k in range(4)})
    data = (root / "train.zip").read_bytes()
    (root / "train.zip").write_bytes(data[:len(data) // 2])
    with pytest.raises(KaggleTLError, match=r"^\S*train\.zip: not a readable zip file \(File is not a zip file\)$"):
        read_competition(root)


def test_an_encrypted_image_is_one_line(tmp_path):
    root = tmp_path / "cactus"
    _cactus(root, {f"{k}.jpg": _jpeg(k) for k in range(4)})
    with zipfile.ZipFile(root / "train.zip", "a") as archive:
        archive.writestr("4.jpg", _jpeg(4))
    # zipfile writes no encryption: set the flag a password-protected zip sets on the last member's headers
    data = bytearray((root / "train.zip").read_bytes())
    for signature, flag in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        data[data.rfind(signature) + flag] |= 0x1
    (root / "train.zip").write_bytes(bytes(data))
    with pytest.raises(KaggleTLError, match=r"train\.zip/4\.jpg: encrypted \(1 of its 5 images are\); kaggle_tl "
                                            r"reads no password-protected zip: unzip it with its password$"):
        read_competition(root)


def test_a_member_failing_its_crc_is_a_bad_image(tmp_path):
    images = {f"{k}.jpg": _jpeg(40 * k) for k in range(6)}
    root = _cactus(tmp_path / "cactus", images)
    data = bytearray((root / "train.zip").read_bytes())
    start = data.find(images["2.jpg"])  # stored: the member's bytes as they are
    data[start + len(images["2.jpg"]) // 2] ^= 0xFF
    (root / "train.zip").write_bytes(bytes(data))
    member = ArchiveMember(root / "train.zip", "2.jpg")
    assert image_problem(member) == "cannot read (damaged in the zip: Bad CRC-32 for file '2.jpg')"
    with pytest.raises(KaggleTLError, match=r"1 unusable image\(s\) \(1 in train\.zip; all listed in the log\): "
                                            r"\S*train\.zip/2\.jpg: cannot read \(damaged in the zip: Bad CRC-32"):
        usable_competition(root, Layout(), folds=2, skip_bad_train_images=False)
    competition = usable_competition(root, Layout(), folds=2, skip_bad_train_images=True)
    assert competition.train_ids == ["0.jpg", "1.jpg", "3.jpg", "4.jpg", "5.jpg"]
    assert competition.skipped_images == [{"id": "2.jpg", "path": str(member),
                                           "problem": "cannot read (damaged in the zip: Bad CRC-32 for file '2.jpg')"}]
