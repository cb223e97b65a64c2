"""read_competition on broken folders: one-line errors naming the file, or documented handling."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_competition  # noqa: E402
from kaggle_tl.data.competition import Layout, usable_competition
from kaggle_tl.errors import KaggleTLError


@pytest.fixture
def comp(tmp_path):
    return make_competition(tmp_path / "comp", n_per_class=4, n_test=4)


def read(root, folds=2, skip_bad_train_images=False, **layout):
    return usable_competition(root, Layout(**layout), folds, skip_bad_train_images)


def labels(root) -> pd.DataFrame:
    return pd.read_csv(root / "labels.csv", dtype=str, keep_default_na=False)


def sample(root) -> pd.DataFrame:
    return pd.read_csv(root / "sample_submission.csv", dtype={"id": str})


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def test_a_healthy_folder_reads(comp):
    competition = read(comp)
    assert len(competition.train_ids) == 12 and len(competition.test_ids) == 4
    assert competition.test_ids == sample(comp)["id"].tolist()
    assert competition.skipped_images == []


def test_labelled_id_without_image(comp):
    frame = labels(comp)
    frame.loc[len(frame)] = ["ghost", "red"]
    frame.to_csv(comp / "labels.csv", index=False)
    with pytest.raises(KaggleTLError, match=r"labels.csv: 1 id\(s\) have no image in .*train.*'ghost'") as exc:
        read(comp)
    one_line(exc)


def test_duplicate_id_names_the_row(comp):
    frame = labels(comp)
    frame.loc[len(frame)] = [frame.id[2], "red"]
    frame.to_csv(comp / "labels.csv", index=False)
    with pytest.raises(KaggleTLError, match=rf"labels.csv: duplicate id '{frame.id[2]}' at row {len(frame) + 1}"):
        read(comp)


def test_duplicate_id_with_and_without_extension(comp):
    frame = labels(comp)
    frame.loc[len(frame)] = [frame.id[0] + ".jpg", "red"]
    frame.to_csv(comp / "labels.csv", index=False)
    with pytest.raises(KaggleTLError, match="duplicate id"):
        read(comp)


def test_duplicate_id_in_sample_submission(comp):
    frame = sample(comp)
    pd.concat([frame, frame.iloc[:1]]).to_csv(comp / "sample_submission.csv", index=False)
    with pytest.raises(KaggleTLError, match="sample_submission.csv: duplicate id"):
        read(comp)


def test_two_images_with_one_id(comp):
    (comp / "train" / "tr001.png").write_bytes((comp / "train" / "tr000.png").read_bytes())
    with pytest.raises(KaggleTLError, match="two images share the id 'tr001'"):
        read(comp)


def test_train_image_without_label_is_ignored_and_noted(comp):
    (comp / "train" / "stray.png").write_bytes((comp / "train" / "tr000.png").read_bytes())
    competition = read(comp)
    assert "stray" not in competition.train_ids
    assert any("1 image(s) in train/ have no row in labels.csv: ignored" in n for n in competition.notes)


def test_label_that_is_not_a_submission_column(comp):
    frame = labels(comp)
    frame.loc[0, "label"] = "purple"
    frame.to_csv(comp / "labels.csv", index=False)
    with pytest.raises(KaggleTLError, match=r"labels.csv: label\(s\) \['purple'\] are not among the 3 classes "
                                            r"\(blue, green, red\)"):
        read(comp)


def test_submission_column_without_training_images_is_noted(comp):
    frame = sample(comp)
    frame["yellow"] = 0.25
    frame.to_csv(comp / "sample_submission.csv", index=False)
    competition = read(comp)
    assert competition.classes[-1] == "yellow" and (competition.y != 3).all()
    assert any("['yellow'] have no training image" in n for n in competition.notes)


def test_sample_id_without_test_image(comp):
    frame = sample(comp)
    frame.loc[len(frame)] = ["te999", *[1 / 3] * 3]
    frame.to_csv(comp / "sample_submission.csv", index=False)
    with pytest.raises(KaggleTLError, match=r"sample_submission.csv: 1 id\(s\) have no image in .*'te999'"):
        read(comp)


def test_extra_test_image_is_ignored_and_noted(comp):
    (comp / "test" / "unlisted.png").write_bytes((comp / "train" / "tr000.png").read_bytes())
    competition = read(comp)
    assert "unlisted" not in competition.test_ids
    assert any("1 image(s) in test/ are not in sample_submission.csv" in n for n in competition.notes)


def test_sample_ids_with_extension_keep_their_spelling(comp):
    frame = sample(comp)
    paths = {p.stem: p.name for p in (comp / "test").iterdir()}
    frame["id"] = [paths[i] for i in frame["id"]]
    frame.to_csv(comp / "sample_submission.csv", index=False)
    competition = read(comp)
    assert competition.test_ids == frame["id"].tolist()  # "te001.png", as the grader expects
    assert [p.name for p in competition.test_paths] == frame["id"].tolist()


def test_empty_test_folder(comp):
    for path in (comp / "test").iterdir():
        path.unlink()
    with pytest.raises(KaggleTLError, match=r"sample_submission.csv: 4 id\(s\) have no image in"):
        read(comp)
    (comp / "sample_submission.csv").unlink()
    with pytest.raises(KaggleTLError, match="no test images"):
        read(comp)


def test_missing_test_folder(comp):
    for path in (comp / "test").iterdir():
        path.unlink()
    (comp / "test").rmdir()
    with pytest.raises(KaggleTLError, match="test: test folder not found"):
        read(comp)


def test_sample_submission_without_rows(comp):
    sample(comp).iloc[:0].to_csv(comp / "sample_submission.csv", index=False)
    with pytest.raises(KaggleTLError, match="sample_submission.csv: no rows"):
        read(comp)


@pytest.mark.parametrize("csv, columns, layout, message", [
    ("labels.csv", ["image", "label"], {"id_column": "id"}, r"labels.csv: missing column\(s\) \['id'\]"),
    ("labels.csv", ["id", "breed"], {"label_column": "label"}, r"labels.csv: missing column\(s\) \['label'\]"),
    ("sample_submission.csv", ["image_id", "blue", "green", "red"], {"id_column": "id"},
     r"sample_submission.csv: missing column\(s\)"),
])
def test_wrong_csv_columns_given_by_flags(comp, csv, columns, layout, message):
    frame = pd.read_csv(comp / csv, dtype=str)
    frame.columns = columns
    frame.to_csv(comp / csv, index=False)
    with pytest.raises(KaggleTLError, match=message):
        read(comp, **layout)


def test_sample_submission_with_only_the_id_column(comp):
    sample(comp)[["id"]].to_csv(comp / "sample_submission.csv", index=False)
    with pytest.raises(KaggleTLError, match="sample_submission.csv: no target column besides the id column 'id'"):
        read(comp)


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00garbage\x00", b"id\n"], ids=["empty", "binary", "header-only"])
def test_unreadable_or_empty_labels_csv(comp, content):
    (comp / "labels.csv").write_bytes(content)
    with pytest.raises(KaggleTLError, match="labels.csv: "):
        read(comp)


def test_labels_csv_saved_by_excel_with_a_byte_order_mark(comp):
    text = (comp / "labels.csv").read_text()
    (comp / "labels.csv").write_bytes("\ufeff".encode() + text.encode())
    assert len(read(comp).train_ids) == 12


def test_configured_column_names(comp):
    frame = labels(comp).rename(columns={"id": "image", "label": "breed"})
    frame.to_csv(comp / "labels.csv", index=False)
    sample(comp).rename(columns={"id": "image"}).to_csv(comp / "sample_submission.csv", index=False)
    assert len(read(comp, id_column="image", label_column="breed").train_ids) == 12


def test_class_with_fewer_images_than_folds(comp):
    with pytest.raises(KaggleTLError, match=r"class '\w+' has 4 image\(s\), fewer than folds=5"):
        read(comp, folds=5)


def test_a_single_class_cannot_be_cross_validated(comp):
    frame = labels(comp)
    frame["label"] = "red"
    frame.to_csv(comp / "labels.csv", index=False)
    with pytest.raises(KaggleTLError, match="at least 2 classes"):
        read(comp)


# -- headers: exactly the file's columns, never one pandas invents ------------------------------
@pytest.mark.parametrize("csv, header, message", [
    ("sample_submission.csv", "id,blue,green,red,", r"sample_submission.csv: empty column name at position 5 "),
    ("sample_submission.csv", "id,blue,green,red,blue", r"sample_submission.csv: duplicated column 'blue' in the "
                                                        r"header \(positions 2 and 5\)"),
    ("labels.csv", "id,label,label", r"labels.csv: duplicated column 'label' in the header \(positions 2 and 3\)"),
    ("labels.csv", "id,,label", "labels.csv: empty column name at position 2 "),
], ids=["sample-trailing-comma", "sample-duplicate", "labels-two-label-columns", "labels-empty-name"])
def test_header_that_pandas_would_rename_stops(comp, csv, header, message):
    # Rows get as many fields as the header, as a spreadsheet exports them.
    lines = (comp / csv).read_text().splitlines()
    extra = header.count(",") - lines[0].count(",")
    (comp / csv).write_text("\n".join([header] + [line + "," * extra for line in lines[1:]]) + "\n")
    with pytest.raises(KaggleTLError, match=message) as exc:
        read(comp)
    one_line(exc)


def test_rows_with_more_fields_than_the_header_stop(comp):
    # pandas would silently make the id column the index and shift every other column left.
    lines = (comp / "sample_submission.csv").read_text().splitlines()
    (comp / "sample_submission.csv").write_text("\n".join([lines[0]] + [line + "," for line in lines[1:]]) + "\n")
    with pytest.raises(KaggleTLError, match=r"sample_submission.csv: line 2 has more fields than the 4 of the header"):
        read(comp)


# -- listing folders: hidden and system entries, unsupported formats, unreadable folders --------
def to_class_folders(comp):
    """The class-per-folder layout: train/<label>/<id>.<ext>, no labels.csv."""
    for image_id, label in labels(comp).itertuples(index=False):
        (comp / "train" / label).mkdir(exist_ok=True)
        path = next((comp / "train").glob(f"{image_id}.*"))
        path.rename(comp / "train" / label / path.name)
    (comp / "labels.csv").unlink()
    return comp


def test_hidden_and_system_entries_are_ignored_everywhere_and_noted(comp):
    to_class_folders(comp)
    image = (comp / "train" / "blue" / "tr000.png").read_bytes()
    for folder in ("train/.ipynb_checkpoints", "train/__MACOSX/red", "train/red/.ipynb_checkpoints"):
        (comp / folder).mkdir(parents=True)
        (comp / folder / "tr000-checkpoint.png").write_bytes(image)
    for name in ("train/.DS_Store", "train/red/._tr000.png", "test/._te000.jpg", "test/.DS_Store"):
        (comp / name).write_bytes(b"\x00\x05\x16\x07 not an image")
    for name in ("train/red/Thumbs.db", "test/desktop.ini"):
        (comp / name).write_bytes(b"junk")
    competition = read(comp)
    assert competition.classes == ["blue", "green", "red"]
    assert len(competition.train_ids) == 12 and len(competition.test_ids) == 4
    notes = [n for n in competition.notes if " ignored, e.g. " in n]
    assert notes == ["6 hidden file(s)/folder(s) (name starting with '.') ignored, e.g. train/.DS_Store",
                     "1 __MACOSX folder(s) (macOS zip metadata) ignored, e.g. train/__MACOSX",
                     "2 system file(s) (Thumbs.db, desktop.ini, Icon) ignored, e.g. train/red/Thumbs.db"]


def test_hidden_folder_of_images_is_not_a_class_without_a_sample_submission(comp):
    to_class_folders(comp)
    (comp / "sample_submission.csv").unlink()
    (comp / "train" / ".ipynb_checkpoints").mkdir()
    image = (comp / "train" / "blue" / "tr000.png").read_bytes()
    for i in range(2):
        (comp / "train" / ".ipynb_checkpoints" / f"x{i}.png").write_bytes(image)
    competition = read(comp)
    assert competition.classes == ["blue", "green", "red"]
    assert list(competition.sample_submission.columns) == ["id", "blue", "green", "red"]


@pytest.mark.parametrize("folder", ["test", "train"])
def test_gif_image_is_refused_naming_the_format(comp, folder):
    image_id = "te001" if folder == "test" else "tr001"
    next((comp / folder).glob(f"{image_id}.*")).unlink()
    (comp / folder / f"{image_id}.gif").write_bytes(b"GIF89a\x01\x00\x01\x00\x80\x00\x00" + bytes(20) + b";")
    message = rf"{image_id}.gif: GIF is not supported; convert to PNG/JPEG \(1 id"
    with pytest.raises(KaggleTLError, match=message) as exc:
        read(comp)
    one_line(exc)


def test_image_under_a_foreign_extension_is_named(comp):
    path = next((comp / "test").glob("te002.*"))
    path.rename(comp / "test" / "te002.jfif")
    with pytest.raises(KaggleTLError, match=r"te002.jfif: the .jfif extension is not one kaggle_tl reads"):
        read(comp)


def test_links_that_lead_nowhere_are_ignored_and_noted_a_loop_like_a_dangling_link(comp):
    before = read(comp)
    (comp / "train" / "gone.png").symlink_to(comp / "nowhere.png")
    (comp / "test" / "loop").symlink_to(comp / "test" / "loop")
    competition = read(comp)
    assert competition.train_ids == before.train_ids and competition.test_ids == before.test_ids
    assert "2 link(s) that lead nowhere (dangling, or a loop) ignored, e.g. train/gone.png" in competition.notes


def test_other_files_are_ignored_and_noted(comp):
    (comp / "test" / "README.txt").write_text("test images")
    competition = read(comp)
    assert "1 file(s) that are not images kaggle_tl reads ignored, e.g. test/README.txt" in competition.notes


@pytest.mark.parametrize("folder", ["test", "train", "train/red"])
def test_unreadable_folder_is_one_line(comp, folder, monkeypatch):
    # Tests run as root, whom chmod 000 does not stop: make listing that folder fail instead.
    if folder == "train/red":
        to_class_folders(comp)
    real_scandir = os.scandir

    def scandir(path):
        if Path(path) == comp / folder:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr("kaggle_tl.data.folders.os.scandir", scandir)
    with pytest.raises(KaggleTLError, match=rf"{folder}: cannot list the folder \(Permission denied\)") as exc:
        read(comp)
    one_line(exc)


# -- the bad-image policy -----------------------------------------------------------------------
def break_images(comp):
    (comp / "train" / "tr001.jpg").write_bytes(b"")
    data = (comp / "train" / "tr002.jpg").read_bytes()
    (comp / "train" / "tr002.jpg").write_bytes(data[: len(data) // 2])
    (comp / "train" / "tr004.jpg").write_text("not a picture")


def test_bad_train_images_stop_the_run_all_named_at_once(comp, caplog):
    break_images(comp)
    with pytest.raises(KaggleTLError) as exc:
        read(comp)
    message = one_line(exc)
    assert message.startswith("3 unusable image(s) (3 in train/; all listed in the log)")
    assert "tr001.jpg: empty file" in message and "tr002.jpg: truncated JPEG" in message
    assert "tr004.jpg: not an image" in message and "--skip-bad-train-images" in message
    logged = [r.getMessage() for r in caplog.records if "unusable image" in r.getMessage()]
    assert len(logged) == 3


def test_skip_bad_train_images_leaves_them_out_and_records_them(comp):
    break_images(comp)
    competition = read(comp, skip_bad_train_images=True)
    assert len(competition.train_ids) == 9 and len(competition.y) == 9
    assert not {"tr001", "tr002", "tr004"} & set(competition.train_ids)
    assert [s["id"] for s in competition.skipped_images] == ["tr001", "tr002", "tr004"]
    assert competition.skipped_images[1]["problem"] == "truncated JPEG (no end-of-image marker)"
    assert any("3 unusable training image(s) left out" in n for n in competition.notes)
    # rows stay aligned: every kept id still has its own label
    truth = dict(zip(labels(comp).id, labels(comp).label))
    assert [competition.classes[k] for k in competition.y] == [truth[i] for i in competition.train_ids]


def test_skipping_that_leaves_a_class_too_small_stops(comp):
    for name in ("tr000.png", "tr003.png", "tr006.png"):  # three of the four "blue" images
        (comp / "train" / name).write_bytes(b"")
    with pytest.raises(KaggleTLError, match=r"after leaving out unusable images: class 'blue' has 1 image"):
        read(comp, skip_bad_train_images=True)


@pytest.mark.parametrize("skip", [False, True])
def test_a_bad_test_image_always_stops(comp, skip):
    victim = sorted((comp / "test").iterdir())[0]
    victim.write_bytes(b"")
    with pytest.raises(KaggleTLError, match=rf"1 unusable image\(s\) \(1 in test/.*{victim.name}: empty file.*"
                                            r"a submission needs every test image"):
        read(comp, skip_bad_train_images=skip)


def test_undecodable_rows_found_after_extraction_follow_the_same_policy(comp):
    competition = read(comp)
    bad_train, bad_test = {3: "could not be decoded", 7: "could not be decoded"}, {}
    with pytest.raises(KaggleTLError, match=r"2 unusable image\(s\).*tr003.*could not be decoded"):
        competition.with_usable_images(bad_train, bad_test, False, 2)
    kept = competition.with_usable_images(bad_train, bad_test, True, 2)
    assert kept.train_ids == [i for k, i in enumerate(competition.train_ids) if k not in (3, 7)]
    assert [s["id"] for s in kept.skipped_images] == ["tr003", "tr007"] and len(kept.y) == 10
    with pytest.raises(KaggleTLError, match="1 in test/"):
        competition.with_usable_images(bad_train, {1: "could not be decoded"}, True, 2)
    assert competition.with_usable_images({}, {}, True, 2) is competition
