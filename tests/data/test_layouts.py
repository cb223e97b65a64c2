"""Real competitions' public layouts (docs/dev/competition-layouts.md), found and read without flags: the
folders, the labels file and its columns, the ids, and the Task each one asks for."""
from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from kaggle_tl.config import RunConfig, resolve_config
from kaggle_tl.data.competition import Layout, read_competition, usable_competition
from kaggle_tl.data.images import ImageError, read_image
from kaggle_tl.errors import KaggleTLError
from kaggle_tl.pipeline import layout_of, task_settings
from kaggle_tl.tasks.detect import TaskSettings


def write_images(folder: Path, names: list[str]) -> list[Path]:
    """Tiny images (8 x 8, a grey level per file), in the format each name's extension says."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, name in enumerate(names):
        ok, data = cv2.imencode(Path(name).suffix, np.full((8, 8, 3), 20 * k % 250, dtype=np.uint8))
        assert ok
        (folder / name).write_bytes(data.tobytes())
        paths.append(folder / name)
    return paths


def write_csv(path: Path, columns: list[str], rows: list[list]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    frame.to_csv(path, index=False)
    return frame


def one_line(exc_info) -> str:
    assert "\n" not in str(exc_info.value)
    return str(exc_info.value)


def refused(root: Path, message: str) -> None:
    """Reading ``root`` stops with one line matching ``message``."""
    with pytest.raises(KaggleTLError, match=message) as exc_info:
        read_competition(root)
    one_line(exc_info)


# -- one test per real layout ------------------------------------------------------------------
def test_dog_breed_identification(tmp_path):
    # train/<id>.jpg, labels.csv id,breed (not train.csv), a sample with one probability column per breed
    root = tmp_path / "dog-breed-identification"
    ids = [f"{k:04x}0eb18c7604dc" for k in range(9)]
    breeds = ["affenpinscher", "afghan_hound", "boston_bull"] * 3
    write_images(root / "train", [f"{i}.jpg" for i in ids])
    write_csv(root / "labels.csv", ["id", "breed"], list(zip(ids, breeds)))
    write_images(root / "test", [f"t{k}ab.jpg" for k in range(3)])
    columns = ["affenpinscher", "afghan_hound", "african_hunting_dog", "boston_bull"]
    write_csv(root / "sample_submission.csv", ["id", *columns], [[f"t{k}ab", *[0.25] * 4] for k in (2, 0, 1)])
    competition = read_competition(root)
    task = competition.task
    assert (task.kind, task.form, task.metric_name) == ("multiclass", "proba", "log_loss")
    assert competition.classes == columns and competition.id_column == "id"
    assert competition.train_ids == ids and competition.train_paths == [root / "train" / f"{i}.jpg" for i in ids]
    assert competition.y.tolist() == [0, 1, 3] * 3 and competition.y.dtype == np.int64
    assert competition.test_ids == ["t2ab", "t0ab", "t1ab"]
    assert competition.test_paths == [root / "test" / f"{i}.jpg" for i in competition.test_ids]
    assert task.describe() == ("multiclass: a probability per class (4 columns), log_loss, labels from labels.csv "
                               "id/breed, images in train/")
    assert "class(es) ['african_hunting_dog'] have no training image: their probabilities stay near 0" in \
        competition.notes
    assert competition.layout == Layout("train", "test", "labels.csv", "sample_submission.csv", "id", "breed")


def test_cassava_leaf_disease_classification(tmp_path):
    # train_images/, train.csv image_id,label with ids that include ".jpg", integer labels, sample image_id,label
    root = tmp_path / "cassava-leaf-disease-classification"
    ids = [f"{1000015157 + k}.jpg" for k in range(10)]
    write_images(root / "train_images", ids)
    write_csv(root / "train.csv", ["image_id", "label"], [[i, k % 5] for k, i in enumerate(ids)])
    write_images(root / "test_images", ["2216849948.jpg"])
    write_csv(root / "sample_submission.csv", ["image_id", "label"], [["2216849948.jpg", 4]])
    (root / "train_tfrecords").mkdir()
    (root / "label_num_to_disease_map.json").write_text('{"0": "Cassava Bacterial Blight (CBB)"}')
    competition = read_competition(root)
    task = competition.task
    assert (task.kind, task.form, task.metric_name) == ("multiclass", "label", "accuracy")
    assert competition.classes == ["0", "1", "2", "3", "4"] and competition.id_column == "image_id"
    assert competition.train_ids == ids and competition.train_paths == [root / "train_images" / i for i in ids]
    assert competition.y.tolist() == [0, 1, 2, 3, 4] * 2
    assert competition.test_ids == ["2216849948.jpg"] and competition.test_paths == [root / "test_images" /
                                                                                     "2216849948.jpg"]
    assert task.describe() == ("multiclass: the label in label (5 classes), accuracy, labels from train.csv "
                               "image_id/label, images in train_images/")
    assert any("read as classes (multiclass); --task ordinal" in n for n in competition.notes)


def test_aerial_cactus_identification(tmp_path):
    # train/ + train.csv id,has_cactus, ids with ".jpg" in both CSVs, sample cells 0.5 (P(cactus))
    root = tmp_path / "aerial-cactus-identification"
    ids = [f"{k:02d}2de8f27.jpg" for k in range(8)]
    write_images(root / "train", ids)
    write_csv(root / "train.csv", ["id", "has_cactus"], [[i, k % 2] for k, i in enumerate(ids)])
    write_images(root / "test", ["000940378.jpg", "0017242f5.jpg"])
    write_csv(root / "sample_submission.csv", ["id", "has_cactus"], [["000940378.jpg", 0.5], ["0017242f5.jpg", 0.5]])
    competition = usable_competition(root, Layout(), folds=2, skip_bad_train_images=False)
    task = competition.task
    assert (task.kind, task.form, task.metric_name, task.positive) == ("binary", "p_positive", "roc_auc", "1")
    assert competition.train_ids == ids and competition.y.tolist() == [0, 1] * 4
    assert competition.test_ids == ["000940378.jpg", "0017242f5.jpg"]
    assert task.describe() == ("binary: P(has_cactus = 1), roc_auc, labels from train.csv id/has_cactus, "
                               "images in train/")
    assert competition.sample_submission["has_cactus"].tolist() == ["0.5", "0.5"]  # as read: text


def test_aerial_cactus_as_shipped_zipped_is_read_in_place(tmp_path):
    # mle-bench ships train.zip and test.zip with the jpgs at the zip's root (no train/ or test/ folder)
    root = tmp_path / "aerial-cactus-identification"
    ids = ["0004be2cfeaba1c0361d39e2b000257b.jpg", "000c8a36845c0208e833c79c1bffedd1.jpg"]
    write_images(tmp_path / "unzipped" / "train", ids)
    write_images(tmp_path / "unzipped" / "test", ["000940378.jpg"])
    root.mkdir()
    for split in ("train", "test"):
        with zipfile.ZipFile(root / f"{split}.zip", "w") as archive:
            for path in sorted((tmp_path / "unzipped" / split).iterdir()):
                archive.write(path, path.name)
    write_csv(root / "train.csv", ["id", "has_cactus"], [[ids[0], 1], [ids[1], 0]])
    write_csv(root / "sample_submission.csv", ["id", "has_cactus"], [["000940378.jpg", 0.5]])
    competition = read_competition(root)
    assert competition.task.describe() == ("binary: P(has_cactus = 1), roc_auc, labels from train.csv "
                                           "id/has_cactus, images in train.zip")
    assert (competition.layout.train_dir, competition.layout.test_dir) == ("train.zip", "test.zip")
    assert [str(p) for p in competition.train_paths] == [f"{root / 'train.zip'}/{i}" for i in ids]
    assert read_image(competition.test_paths[0]).shape == (8, 8, 3)


def test_iwildcam_2019_zipped_images_and_a_sample_written_with_its_row_index(tmp_path):
    # train_images.zip / test_images.zip (jpgs at the root), train.csv's id without the extension beside file_name,
    # and a sample submission pandas wrote with its index: header ",Id,Category", rows "0,<uuid>,0"
    root = tmp_path / "iwildcam-2019-fgvc6"
    ids = [f"5998cfa4-23d2-11e8-a6a3-ec086b02610{k}" for k in range(6)]
    test_ids = [f"e0e7a7a4-23d2-11e8-a6a3-ec086b02610{k}" for k in range(3)]
    write_images(tmp_path / "unzipped" / "train", [f"{i}.jpg" for i in ids])
    write_images(tmp_path / "unzipped" / "test", [f"{i}.jpg" for i in test_ids])
    root.mkdir()
    for split in ("train", "test"):
        with zipfile.ZipFile(root / f"{split}_images.zip", "w") as archive:
            for path in sorted((tmp_path / "unzipped" / split).iterdir()):
                archive.write(path, path.name)
    columns = ["category_id", "date_captured", "file_name", "frame_num", "id", "location", "rights_holder", "seq_id",
               "seq_num_frames", "width", "height"]
    rows = [[c, "2011-05-13 23:43:18", f"{i}.jpg", 1, i, 33, "Justin Brown", f"seq{k}", 1, 1024, 747]
            for k, (i, c) in enumerate(zip(ids, [0, 19, 3] * 2))]
    write_csv(root / "train.csv", columns, rows)
    pd.DataFrame({"Id": test_ids, "Category": 0}).to_csv(root / "sample_submission.csv")  # index=True, as shipped
    assert (root / "sample_submission.csv").read_text().splitlines()[:2] == [",Id,Category", f"0,{test_ids[0]},0"]
    with pytest.raises(KaggleTLError, match=r"train.csv: has none of the sample's target columns \['Category'\]"):
        read_competition(root)  # "Category" is train.csv's category_id: only the slug's table knows
    config = resolve_config(RunConfig(data=str(root), competition="iwildcam-2019-fgvc6"))
    competition = read_competition(root, layout_of(config), task_settings(config)[0])
    assert list(competition.sample_submission.columns) == ["Id", "Category"]
    assert competition.id_column == "Id" and competition.test_ids == test_ids
    assert (competition.task.kind, competition.task.form, competition.task.metric_name) == ("multiclass", "label",
                                                                                            "macro_f1")
    assert competition.classes == ["0", "3", "19"] and competition.y.tolist() == [0, 2, 1] * 2  # integers in order
    assert [str(p) for p in competition.train_paths] == [f"{root / 'train_images.zip'}/{i}.jpg" for i in ids]
    assert any("sample_submission.csv: its first column, unnamed, numbers the rows" in n for n in competition.notes)
    assert "train.csv has no column 'Id' (the sample's ids): its column 'id' read as the ids" in competition.notes


def test_an_unnamed_first_column_that_is_not_a_row_index_is_refused(tmp_path):
    # ",Id,Category" over rows "7,<uuid>,0": not the rows' positions, so not a written index
    root = tmp_path / "comp"
    write_images(root / "train", ["a.jpg", "b.jpg"])
    write_images(root / "test", ["t.jpg"])
    write_csv(root / "train.csv", ["Id", "Category"], [["a", 0], ["b", 1]])
    (root / "sample_submission.csv").write_text(",Id,Category\n7,t,0\n")
    with pytest.raises(KaggleTLError, match=r"sample_submission.csv: empty column name at position 1 ") as exc:
        read_competition(root)
    one_line(exc)


def test_an_empty_zip_of_images_is_one_line(tmp_path):
    root = tmp_path / "aerial-cactus-identification"
    root.mkdir()
    for name in ("train.zip", "test.zip"):
        (root / name).write_bytes(b"PK\x05\x06" + bytes(18))
    write_csv(root / "train.csv", ["id", "has_cactus"], [["a.jpg", 1]])
    with pytest.raises(KaggleTLError, match=r"train.zip: holds no images \(.jpg, .jpeg, .png.*\); it is an empty zip"
                       ) as exc:
        read_competition(root)
    one_line(exc)


def test_histopathologic_cancer_detection(tmp_path):
    # train/*.tif, train_labels.csv id,label (0/1), sample id,label cells 0
    root = tmp_path / "histopathologic-cancer-detection"
    ids = [f"f38a6374c348f90b587e046aac6079959adf3{k:03d}" for k in range(8)]
    write_images(root / "train", [f"{i}.tif" for i in ids])
    write_csv(root / "train_labels.csv", ["id", "label"], [[i, int(k < 4)] for k, i in enumerate(ids)])
    write_images(root / "test", ["0b2ea2a822ad23fdb1b5dd26653da899fbd2c0d5.tif"])
    write_csv(root / "sample_submission.csv", ["id", "label"], [["0b2ea2a822ad23fdb1b5dd26653da899fbd2c0d5", 0]])
    competition = usable_competition(root, Layout(), folds=2, skip_bad_train_images=False)
    task = competition.task
    assert (task.kind, task.form, task.metric_name, task.positive) == ("binary", "p_positive", "roc_auc", "1")
    assert competition.train_ids == ids and competition.y.tolist() == [1] * 4 + [0] * 4
    assert [p.suffix for p in competition.train_paths + competition.test_paths] == [".tif"] * 9
    assert read_image(competition.train_paths[1]).shape == (8, 8, 3)  # OpenCV decodes TIFF
    assert task.describe() == ("binary: P(label = 1), roc_auc, labels from train_labels.csv id/label, "
                               "images in train/")


def test_siim_isic_melanoma_jpegs_beside_dicom_folders(tmp_path):
    # train/*.dcm and test/*.dcm (the same images as DICOM: the JPEGs are read) beside jpeg/train/*.jpg and jpeg/test/*.jpg; train.csv
    # image_name (no extension) with metadata, target 0/1; the sample image_name,target
    root = tmp_path / "siim-isic-melanoma-classification"
    ids = [f"ISIC_00157{k:02d}" for k in range(6)]
    test_ids = ["ISIC_0052060", "ISIC_0052349"]
    for split, names in (("train", ids), ("test", test_ids)):
        (root / split).mkdir(parents=True)
        for i in names:
            (root / split / f"{i}.dcm").write_bytes(b"\0" * 128 + b"DICM")
        write_images(root / "jpeg" / split, [f"{i}.jpg" for i in names])
    write_csv(root / "train.csv", ["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge",
                                   "diagnosis", "benign_malignant", "target"],
              [[i, f"IP_{k}", "male", 45.0, "torso", "unknown", "benign", k % 2] for k, i in enumerate(ids)])
    write_csv(root / "sample_submission.csv", ["image_name", "target"], [[i, 0] for i in test_ids])
    competition = read_competition(root)
    assert (competition.task.kind, competition.task.metric_name) == ("binary", "roc_auc")
    assert competition.train_paths == [root / "jpeg" / "train" / f"{i}.jpg" for i in ids]
    assert competition.test_paths == [root / "jpeg" / "test" / f"{i}.jpg" for i in test_ids]
    assert competition.layout.train_dir == "jpeg/train" and competition.layout.test_dir == "jpeg/test"
    assert any(n.startswith("train images read from jpeg/train/: train/ holds only DICOM files")
               for n in competition.notes)


def test_dogs_vs_cats_labels_in_file_names(tmp_path):
    # train/cat.<k>.jpg and train/dog.<k>.jpg (no labels CSV; train.zip beside the folder), test/<int>.jpg
    root = tmp_path / "dogs-vs-cats-redux-kernels-edition"
    names = [f"{animal}.{k}.jpg" for animal in ("cat", "dog") for k in range(5)]
    write_images(root / "train", names)
    write_images(root / "test", ["1.jpg", "2.jpg", "10.jpg"])
    write_csv(root / "sample_submission.csv", ["id", "label"], [[1, 0.5], [2, 0.5], [10, 0.5]])
    (root / "train.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    competition = read_competition(root)
    task = competition.task
    assert (task.kind, task.form, task.metric_name, task.positive) == ("binary", "p_positive", "roc_auc", "dog")
    assert competition.classes == ["cat", "dog"]
    assert competition.train_ids == [Path(n).stem for n in sorted(names)]
    assert competition.y.tolist() == [0] * 5 + [1] * 5
    assert competition.test_ids == ["1", "2", "10"] and [p.name for p in competition.test_paths] == ["1.jpg", "2.jpg",
                                                                                                   "10.jpg"]
    assert task.describe() == ("binary: P(label = dog), roc_auc, labels from the file names in train/ "
                               "(<label>.<n>: cat, dog)")
    assert competition.layout.labels_csv == ""
    dvc = read_competition(root, settings=TaskSettings(metric="log_loss"))
    assert (dvc.task.form, dvc.task.metric_name) == ("p_positive", "log_loss")


def test_aptos2019_blindness_detection(tmp_path):
    # train_images/*.png, train.csv id_code,diagnosis (0-4, ids without extension), test.csv, sample id_code,diagnosis
    root = tmp_path / "aptos2019-blindness-detection"
    ids = [f"000c1434d8{k:02d}" for k in range(10)]
    write_images(root / "train_images", [f"{i}.png" for i in ids])
    write_csv(root / "train.csv", ["id_code", "diagnosis"], [[i, k % 5] for k, i in enumerate(ids)])
    write_images(root / "test_images", ["0005cfc8afb6.png", "003f0afdcd15.png"])
    write_csv(root / "test.csv", ["id_code"], [["0005cfc8afb6"], ["003f0afdcd15"]])
    write_csv(root / "sample_submission.csv", ["id_code", "diagnosis"], [["0005cfc8afb6", 0], ["003f0afdcd15", 0]])
    competition = read_competition(root)
    task = competition.task
    assert (task.kind, task.form, task.metric_name) == ("multiclass", "label", "accuracy")
    assert competition.train_ids == ids and competition.y.tolist() == [0, 1, 2, 3, 4] * 2
    assert competition.test_paths == [root / "test_images" / "0005cfc8afb6.png", root / "test_images" /
                                      "003f0afdcd15.png"]
    note = next(n for n in competition.notes if "integers" in n)
    assert note == (f"{root / 'train.csv'}: integers ['0', '1', '2', '3', '4'] in 'diagnosis' read as classes "
                    "(multiclass); --task ordinal reads them as grades (QWK), --task regression as a value")
    assert task.describe() == ("multiclass: the label in diagnosis (5 classes), accuracy, labels from train.csv "
                               "id_code/diagnosis, images in train_images/")
    graded = read_competition(root, settings=TaskSettings(task="ordinal")).task
    assert (graded.kind, graded.form, graded.metric_name) == ("ordinal", "label", "qwk")
    assert graded.describe() == ("ordinal: the grade in diagnosis (5 grades), qwk, labels from train.csv "
                                 "id_code/diagnosis, images in train_images/")


PETFINDER_FLAGS = ["Subject Focus", "Eyes", "Face", "Near", "Action", "Accessory", "Group", "Collage", "Human",
                   "Occlusion", "Info", "Blur"]


def write_petfinder(root: Path, scores: list) -> list[str]:
    ids = [f"0007de18844b0dbbb5e1f607da0606e{k}" for k in range(len(scores))]
    write_images(root / "train", [f"{i}.jpg" for i in ids])
    write_csv(root / "train.csv", ["Id", *PETFINDER_FLAGS, "Pawpularity"],
              [[i, *[k % 2] * 12, score] for k, (i, score) in enumerate(zip(ids, scores))])
    write_images(root / "test", ["4128bae22183829d2b5fea10effdb0c3.jpg"])
    write_csv(root / "test.csv", ["Id", *PETFINDER_FLAGS], [["4128bae22183829d2b5fea10effdb0c3", *[1] * 12]])
    write_csv(root / "sample_submission.csv", ["Id", "Pawpularity"], [["4128bae22183829d2b5fea10effdb0c3", 64.06]])
    return ids


def test_petfinder_pawpularity_score(tmp_path):
    # train/ + train.csv Id,<12 0/1 flags>,Pawpularity (integers 1-100), sample Id,Pawpularity with values
    root = tmp_path / "petfinder-pawpularity-score"
    scores = [63, 42, 28, 15, 72, 74, 22, 35, 100, 1]
    ids = write_petfinder(root, scores)
    competition = read_competition(root)
    task = competition.task
    assert (task.kind, task.form, task.metric_name, task.value_range) == ("regression", "value", "rmse", (1.0, 100.0))
    assert competition.classes == [] and competition.n_classes == 0
    assert competition.train_ids == ids and competition.y.dtype == np.float64 and competition.y.tolist() == scores
    assert competition.layout.label_column == "Pawpularity"  # the sample's target, not one of the 12 flags
    assert task.describe() == ("regression: the value of Pawpularity in [1, 100], rmse, labels from train.csv "
                               "Id/Pawpularity, images in train/")
    assert any("read as a value (regression), as the sample submits values such as '64.06'" in n
               for n in competition.notes)


def test_plant_pathology_2020_one_images_folder(tmp_path):
    # images/ holds Train_<i>.jpg and Test_<i>.jpg; train.csv image_id + four one-hot columns; test.csv
    root = tmp_path / "plant-pathology-2020-fgvc7"
    columns = ["healthy", "multiple_diseases", "rust", "scab"]
    train_ids, test_ids = [f"Train_{k}" for k in range(8)], [f"Test_{k}" for k in range(3)]
    write_images(root / "images", [f"{i}.jpg" for i in train_ids + test_ids])
    write_csv(root / "train.csv", ["image_id", *columns],
              [[i, *np.eye(4, dtype=int)[k % 4]] for k, i in enumerate(train_ids)])
    write_csv(root / "test.csv", ["image_id"], [[i] for i in test_ids])
    write_csv(root / "sample_submission.csv", ["image_id", *columns], [[i, *[0.25] * 4] for i in test_ids])
    competition = read_competition(root)
    task = competition.task
    assert (task.kind, task.form, task.metric_name) == ("multiclass", "proba", "roc_auc")  # one set a row
    assert competition.classes == columns and competition.y.tolist() == [0, 1, 2, 3] * 2
    assert competition.train_paths == [root / "images" / f"{i}.jpg" for i in train_ids]
    assert competition.test_ids == test_ids and competition.test_paths == [root / "images" / f"{i}.jpg"
                                                                           for i in test_ids]
    assert (competition.layout.train_dir, competition.layout.test_dir) == ("images", "images")
    assert not any("image(s) in images/" in n for n in competition.notes)  # train and test are told apart
    assert task.describe() == ("multiclass: a probability per class (4 columns), roc_auc, labels from train.csv "
                               "image_id/healthy,multiple_diseases,rust,scab, images in images/")
    assert (f"{root / 'train.csv'}: exactly one of the label columns healthy, multiple_diseases, rust, scab is set on "
            "every row: read as classes (multiclass); --task multilabel reads them as tags") in competition.notes
    tags = read_competition(root, settings=TaskSettings(task="multilabel"))
    assert (tags.task.kind, tags.task.form) == ("multilabel", "tag_proba") and tags.y.shape == (8, 4)


def test_plant_pathology_2020_without_a_sample_takes_test_ids_from_test_csv(tmp_path):
    test_plant_pathology_2020_one_images_folder(tmp_path)
    root = tmp_path / "plant-pathology-2020-fgvc7"
    (root / "sample_submission.csv").unlink()
    competition = read_competition(root)
    assert competition.test_ids == ["Test_0", "Test_1", "Test_2"] and competition.classes[0] == "healthy"
    assert list(competition.sample_submission.columns) == ["image_id", "healthy", "multiple_diseases", "rust", "scab"]
    assert "no sample_submission.csv: classes taken from the labels, test ids from test.csv" in competition.notes


def test_leaf_classification_one_images_folder_and_numeric_features(tmp_path):
    # images/<int>.jpg for train and test; train.csv id,species,margin1,...; the sample one column per species
    root = tmp_path / "leaf-classification"
    species = ["Acer_Capillipes", "Acer_Circinatum", "Quercus_Rubra"]
    write_images(root / "images", [f"{k}.jpg" for k in range(1, 11)])
    write_csv(root / "train.csv", ["id", "species", "margin1", "shape1", "texture1"],
              [[k, species[k % 3], 0.007812, 0.000647, 0.049] for k in range(1, 9)])
    write_csv(root / "test.csv", ["id", "margin1", "shape1", "texture1"], [[9, 0.1, 0.2, 0.3], [10, 0.1, 0.2, 0.3]])
    write_csv(root / "sample_submission.csv", ["id", *species], [[9, *[1 / 3] * 3], [10, *[1 / 3] * 3]])
    competition = read_competition(root)
    assert (competition.task.kind, competition.task.form) == ("multiclass", "proba")
    assert competition.layout.label_column == "species" and competition.classes == species
    assert competition.train_ids == [str(k) for k in range(1, 9)] and competition.y.tolist() == [1, 2, 0] * 2 + [1, 2]
    assert [p.name for p in competition.test_paths] == ["9.jpg", "10.jpg"]


def test_imet_2020_labels_csv_that_maps_attribute_names_is_not_the_labels(tmp_path):
    # train/*.png + train.csv id,attribute_ids ("13 51 202"); labels.csv attribute_id,attribute_name is a mapping
    root = tmp_path / "imet-2020-fgvc7"
    cells = ["13 51 202", "51", "13 7", "202 7", "13", "51 202", "7", "13 51", "202", "7 51"]
    ids = [f"1000483014d91860{k}" for k in range(len(cells))]
    write_images(root / "train", [f"{i}.png" for i in ids])
    write_csv(root / "train.csv", ["id", "attribute_ids"], list(zip(ids, cells)))
    write_csv(root / "labels.csv", ["attribute_id", "attribute_name"],
              [[k, f"tag::{k}"] for k in range(300)])
    write_images(root / "test", ["10023b2cc4ed5f68.png"])
    write_csv(root / "sample_submission.csv", ["id", "attribute_ids"], [["10023b2cc4ed5f68", "0 1 2"]])
    competition = read_competition(root)
    task = competition.task
    assert (task.kind, task.form, task.metric_name) == ("multilabel", "tags", "micro_f1")
    assert competition.classes == ["7", "13", "51", "202"]
    assert competition.y.dtype == np.uint8 and competition.y.shape == (10, 4)
    assert competition.y[0].tolist() == [0, 1, 1, 1] and competition.y[2].tolist() == [1, 1, 0, 0]
    assert competition.layout.labels_csv == "train.csv" and competition.train_ids == ids
    assert ("labels.csv (attribute_id, attribute_name) names no image of train/: not read as the labels"
            in competition.notes)
    assert task.describe() == ("multilabel: tags in attribute_ids (4 tags, threshold tuned per fold), micro_f1, "
                               "labels from train.csv id/attribute_ids, images in train/")
    kept = competition.without({0: "broken"}, "left out")
    assert kept.y.shape == (9, 4) and kept.y[1].tolist() == [1, 1, 0, 0]


def test_plant_seedlings_class_folders_with_spaces(tmp_path):
    # train/<Class Name>/*.png (no labels CSV), sample file,species with ids that include ".png"
    root = tmp_path / "plant-seedlings-classification"
    species = ["Common Chickweed", "Common wheat", "Loose Silky-bent", "Sugar beet"]
    for k, name in enumerate(species):
        write_images(root / "train" / name, [f"{k}a{j}f9b.png" for j in range(2)])
    write_images(root / "test", ["f900b7684.png", "0021e90e4.png"])
    write_csv(root / "sample_submission.csv", ["file", "species"], [["f900b7684.png", "Sugar beet"],
                                                                      ["0021e90e4.png", "Sugar beet"]])
    competition = read_competition(root)
    task = competition.task
    assert (task.kind, task.form, task.metric_name) == ("multiclass", "label", "accuracy")
    assert competition.classes == species and competition.id_column == "file"
    assert competition.train_ids[:3] == ["Common Chickweed/0a0f9b", "Common Chickweed/0a1f9b", "Common wheat/1a0f9b"]
    assert competition.train_paths[2] == root / "train" / "Common wheat" / "1a0f9b.png"
    assert competition.y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert competition.test_ids == ["f900b7684.png", "0021e90e4.png"]
    assert task.describe() == ("multiclass: the label in species (4 classes), accuracy, labels from the class "
                               "folders of train/")


def test_whale_categorization_playground(tmp_path):
    # train/ + train.csv Image,Id with new_whale; sample Image,Id cells "new_whale w_1 w_2 w_3 w_4"
    root = tmp_path / "whale-categorization-playground"
    whales = ["new_whale", "w_e15442c", "new_whale", "w_1287fbc", "w_98baff9", "new_whale", "w_e15442c", "w_7554f44"]
    images = [f"00022e1{k}.jpg" for k in range(len(whales))]
    write_images(root / "train", images)
    write_csv(root / "train.csv", ["Image", "Id"], list(zip(images, whales)))
    write_images(root / "test", ["00028a005.jpg", "000dcf7d8.jpg"])
    cell = "new_whale w_1287fbc w_98baff9 w_7554f44 w_1eafe46"
    write_csv(root / "sample_submission.csv", ["Image", "Id"], [["00028a005.jpg", cell], ["000dcf7d8.jpg", cell]])
    competition = read_competition(root)
    task = competition.task
    assert (task.kind, task.form, task.metric_name, task.k) == ("topk", "ranked", "map@5", 5)
    assert competition.classes == ["new_whale", "w_1287fbc", "w_7554f44", "w_98baff9", "w_e15442c"]
    assert competition.id_column == "Image" and competition.layout.label_column == "Id"
    assert competition.y.tolist() == [0, 4, 0, 1, 3, 0, 4, 2] and competition.train_ids == images
    assert task.describe() == ("topk: the top 5 of 5 labels in Id, map@5, labels from train.csv Image/Id, "
                               "images in train/")
    assert any("--catch-all new_whale" in n for n in competition.notes)
    catch_all = read_competition(root, settings=TaskSettings(catch_all="new_whale")).task
    assert catch_all.describe() == ("topk: the top 5 of 5 labels in Id, new_whale scored per fold, map@5, labels "
                                    "from train.csv Image/Id, images in train/")


def test_paddy_class_folders_named_by_a_labels_csv(tmp_path):
    # train_images/<label>/<image_id> and train.csv image_id,label,variety,age naming them (ids with ".jpg")
    root = tmp_path / "paddy-disease-classification"
    rows = []
    for k, label in enumerate(["blast", "normal", "blast", "hispa", "normal", "hispa"]):
        write_images(root / "train_images" / label, [f"1100{k}.jpg"])
        rows.append([f"1100{k}.jpg", label, "ADT45", 45])
    write_csv(root / "train.csv", ["image_id", "label", "variety", "age"], rows)
    write_images(root / "test_images", ["200001.jpg"])
    write_csv(root / "sample_submission.csv", ["image_id", "label"], [["200001.jpg", ""]])
    competition = read_competition(root)
    assert (competition.task.kind, competition.task.form) == ("multiclass", "label")
    assert competition.train_ids == [r[0] for r in rows] and competition.layout.label_column == "label"
    assert competition.train_paths[3] == root / "train_images" / "hispa" / "11003.jpg"
    assert competition.classes == ["blast", "hispa", "normal"] and competition.y.tolist() == [0, 2, 0, 1, 2, 1]
    assert any("train_images/ has sub-folders (blast, ...)" in n for n in competition.notes)


def test_hotel_id_sub_folders_that_are_not_the_labels(tmp_path):
    # train_images/<chain>/<image>: the target is train.csv's hotel_id, the sample ranks 5 hotels
    root = tmp_path / "hotel-id-2021-fgvc8"
    rows = []
    for k in range(8):
        write_images(root / "train_images" / str(k % 2), [f"a{k}.jpg"])
        rows.append([f"a{k}.jpg", k % 2, 36363 + k % 4, "2018-04-07"])
    write_csv(root / "train.csv", ["image", "chain", "hotel_id", "timestamp"], rows)
    write_images(root / "test_images", ["b0.jpg"])
    write_csv(root / "sample_submission.csv", ["image", "hotel_id"], [["b0.jpg", "36363 36364 36365 36366 36367"]])
    competition = read_competition(root)
    task = competition.task
    assert (task.kind, task.k, task.classes) == ("topk", 5, ("36363", "36364", "36365", "36366"))
    assert competition.y.tolist() == [0, 1, 2, 3] * 2 and competition.layout.label_column == "hotel_id"


def write_herbarium_2020(root: Path, categories: list[int]) -> list[str]:
    """nybg2020/{train,test}/metadata.json and images/ sub-folders as herbarium-2020 ships them (a Latin-1
    category name: the file is not UTF-8), the sample Id,Predicted beside nybg2020/; the test ids."""
    train, test = root / "nybg2020" / "train", root / "nybg2020" / "test"
    images, annotations = [], []
    for k, category in enumerate(categories):
        name = f"images/{category // 100:03d}/{category % 100:02d}/{354100 + k}.jpg"
        write_images((train / name).parent, [Path(name).name])
        images.append({"id": 354100 + k, "file_name": name, "width": 8, "height": 8, "license": 0})
        annotations.append({"id": 354100 + k, "image_id": 354100 + k, "category_id": category, "region_id": 1})
    kinds = [{"id": c, "name": "Solidago canadensis L.", "family": "Asteraceae", "genus": "Cécropia"}
             for c in sorted(set(categories))]
    metadata = {"annotations": annotations, "categories": kinds, "images": images, "info": {}, "licenses": []}
    (train / "metadata.json").write_bytes(json.dumps(metadata, ensure_ascii=False).encode("latin-1"))
    test_ids = [str(k) for k in range(3)]
    for i in test_ids:
        write_images(test / "images" / "000", [f"{i}.jpg"])
    test_images = [{"id": i, "file_name": f"images/000/{i}.jpg", "width": 8, "height": 8} for i in test_ids]
    (test / "metadata.json").write_text(json.dumps({"images": test_images, "info": {}, "licenses": []}))
    write_csv(root / "sample_submission.csv", ["Id", "Predicted"], [[int(i), 0] for i in test_ids])
    return test_ids


def test_herbarium_2020_coco_json_one_folder_down(tmp_path):
    # nybg2020/train/metadata.json names each image (images/156/72/354106.jpg) and its category_id; the test
    # images sit in sub-folders named by nybg2020/test/metadata.json; the sample is beside nybg2020/
    root = tmp_path / "herbarium-2020-fgvc7"
    categories = [15504, 3, 15672, 3, 15504, 15672]
    test_ids = write_herbarium_2020(root, categories)
    config = resolve_config(RunConfig(data=str(root), competition="herbarium-2020-fgvc7"))
    competition = read_competition(root, layout_of(config), task_settings(config)[0])
    task = competition.task
    assert (task.kind, task.form, task.metric_name) == ("multiclass", "label", "macro_f1")
    assert competition.classes == ["3", "15504", "15672"] and competition.y.tolist() == [1, 0, 2, 0, 1, 2]
    train = root / "nybg2020" / "train"
    assert competition.train_ids == [str(354100 + k) for k in range(6)]
    assert competition.train_paths[2] == train / "images" / "156" / "72" / "354102.jpg"
    assert competition.test_ids == test_ids
    assert competition.test_paths == [root / "nybg2020" / "test" / "images" / "000" / f"{i}.jpg" for i in test_ids]
    assert task.describe() == ("multiclass: the label in Predicted (3 classes), macro_f1, labels from metadata.json "
                               "(images' category_id), images in nybg2020/train/")
    assert "train images read from nybg2020/train/, one folder down (--train-dir decides)" in competition.notes
    assert not any("not images kaggle_tl reads" in n for n in competition.notes)  # the JSONs are read
    assert competition.layout.train_dir == "nybg2020/train" and competition.layout.test_dir == "nybg2020/test"
    again = read_competition(root, competition.layout, task_settings(config)[0])  # the layout as recorded
    assert again.train_paths == competition.train_paths and again.test_paths == competition.test_paths


def test_herbarium_2021_coco_json_in_train_beside_images_sub_folders(tmp_path):
    # train/metadata.json with train/images/<cat>/<sub>/<id>.jpg, test/metadata.json with test/images/000/<k>.jpg:
    # train/ holds no image directly (nor one folder down), yet it is the train folder, not train/images/
    root = tmp_path / "herbarium-2021-fgvc8"
    write_herbarium_2020(tmp_path / "as-2020", [15504, 3, 15504, 3])
    (tmp_path / "as-2020" / "nybg2020").rename(root)
    (tmp_path / "as-2020" / "sample_submission.csv").rename(root / "sample_submission.csv")
    competition = read_competition(root)
    assert competition.layout.train_dir == "train" and competition.layout.test_dir == "test"
    assert competition.train_paths[1] == root / "train" / "images" / "000" / "03" / "354101.jpg"
    assert competition.test_paths[0] == root / "test" / "images" / "000" / "0.jpg"
    assert not any("folder down" in n or "holds no image" in n for n in competition.notes)


@pytest.mark.parametrize("down", ["", "herbarium-2022-fgvc9/"])
def test_herbarium_2022_json_beside_the_folders_and_a_bare_test_list(tmp_path, down):
    # train_metadata.json beside train_images/ (image_id, file_name relative to train_images/), test_metadata.json
    # a bare list; the class-like sub-folders 155/04/ are not read as the labels. down: all of it one folder down
    # (beside the sample), its JSONs beside the folders there
    root = tmp_path / "herbarium-2022-fgvc9"
    data = root / down
    images, annotations = [], []
    for k, category in enumerate([15504, 42, 15504, 42]):
        name = f"{category // 100:03d}/{category % 100:02d}/{category:05d}__{k:03d}.jpg"
        write_images((data / "train_images" / name).parent, [Path(name).name])
        images.append({"image_id": f"{category:05d}__{k:03d}", "file_name": name, "license": 0})
        annotations.append({"image_id": f"{category:05d}__{k:03d}", "category_id": category, "genus_id": 1})
    (data / "train_metadata.json").write_text(json.dumps({"annotations": annotations, "images": images}))
    write_images(data / "test_images" / "000", ["test-000000.jpg", "test-000001.jpg"])
    (data / "test_metadata.json").write_text(json.dumps([{"image_id": str(k), "file_name": f"000/test-00000{k}.jpg"}
                                                         for k in range(2)]))
    write_csv(root / "sample_submission.csv", ["Id", "Predicted"], [[0, 42], [1, 42]])
    competition = read_competition(root)
    assert competition.classes == ["42", "15504"] and competition.y.tolist() == [1, 0, 1, 0]
    assert competition.train_paths[1] == data / "train_images" / "000" / "42" / "00042__001.jpg"
    assert competition.test_paths == [data / "test_images" / "000" / f"test-00000{k}.jpg" for k in range(2)]
    assert competition.task.describe().endswith(f"labels from train_metadata.json (images' category_id), images in "
                                                f"{down}train_images/")


def test_iwildcam_2020_annotations_json_at_the_root(tmp_path):
    # train/<uuid>.jpg, test/<uuid>.jpg, iwildcam2020_train_annotations.json (two annotations of one image, one
    # image without any), iwildcam2020_test_information.json, a megadetector JSON that is not the labels
    root = tmp_path / "iwildcam-2020-fgvc7"
    ids = [f"8b31d3be-21bc-11ea-a13a-137349068a9{k}" for k in range(5)]
    write_images(root / "train", [f"{i}.jpg" for i in ids])
    annotations = [{"id": f"a{k}", "image_id": i, "category_id": c}
                   for k, (i, c) in enumerate(zip(ids, [0, 372, 0, 372]))]
    annotations.append({"id": "a9", "image_id": ids[0], "category_id": 0})  # the same category again: one label
    images = [{"id": i, "file_name": f"{i}.jpg", "location": 267} for i in ids]
    (root / "iwildcam2020_train_annotations.json").write_text(json.dumps({"annotations": annotations,
                                                                           "images": images, "categories": []}))
    (root / "iwildcam2020_megadetector_results.json").write_text(json.dumps({"images": []}))
    test_ids = ["9c3e1a2e-21bc-11ea-a13a-137349068a90", "9c3e1a2e-21bc-11ea-a13a-137349068a91"]
    write_images(root / "test", [f"{i}.jpg" for i in test_ids])
    (root / "iwildcam2020_test_information.json").write_text(json.dumps(
        {"images": [{"id": i, "file_name": f"{i}.jpg"} for i in test_ids], "categories": []}))
    write_csv(root / "sample_submission.csv", ["Id", "Category"], [[i, 0] for i in test_ids])
    competition = read_competition(root, settings=TaskSettings(metric="accuracy"))
    assert competition.train_ids == ids[:4] and competition.y.tolist() == [0, 1, 0, 1]
    assert competition.test_paths == [root / "test" / f"{i}.jpg" for i in test_ids]
    assert (f"iwildcam2020_train_annotations.json: 1 image(s) have no annotation, e.g. {ids[4]!r}: ignored"
            in competition.notes)


def _zip_folder(folder: Path, archive: Path, top: str = "") -> None:
    """``folder``'s files into ``archive`` (under ``top/`` when given), as Kaggle's zips hold them."""
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                out.write(path, f"{top}/{path.relative_to(folder).as_posix()}" if top else
                          path.relative_to(folder).as_posix())


def test_coco_json_inside_the_zip_and_beside_it(tmp_path):
    # herbarium-2021 zipped: train.zip holds train/metadata.json and train/images/...; iwildcam-2020 zipped: train.zip
    # and test.zip of the images, their JSONs beside the zips
    herbarium = tmp_path / "herbarium-2021-fgvc8"
    write_herbarium_2020(tmp_path / "as-2020", [15504, 3, 15504, 3])
    herbarium.mkdir()
    for split in ("train", "test"):
        _zip_folder(tmp_path / "as-2020" / "nybg2020" / split, herbarium / f"{split}.zip", top=split)
    (tmp_path / "as-2020" / "sample_submission.csv").rename(herbarium / "sample_submission.csv")
    competition = read_competition(herbarium)
    assert str(competition.train_paths[1]) == f"{herbarium / 'train.zip'}/train/images/000/03/354101.jpg"
    assert competition.y.tolist() == [1, 0, 1, 0] and competition.train_paths[1].read_bytes()
    assert [str(p) for p in competition.test_paths] == [f"{herbarium / 'test.zip'}/test/images/000/{k}.jpg"
                                                        for k in range(3)]
    assert competition.task.describe().endswith("labels from metadata.json (images' category_id), images in "
                                                "train.zip")
    assert not any("not images kaggle_tl reads" in n for n in competition.notes)

    iwildcam = tmp_path / "iwildcam-2020-fgvc7"
    ids = [f"8b31d3be-21bc-11ea-a13a-137349068a9{k}" for k in range(4)]
    write_images(tmp_path / "flat" / "train", [f"{i}.jpg" for i in ids])
    write_images(tmp_path / "flat" / "test", ["t0.jpg", "t1.jpg"])
    iwildcam.mkdir()
    for split in ("train", "test"):
        _zip_folder(tmp_path / "flat" / split, iwildcam / f"{split}.zip")
    (iwildcam / "iwildcam2020_train_annotations.json").write_text(json.dumps(
        {"images": [{"id": i, "file_name": f"{i}.jpg"} for i in ids],
         "annotations": [{"image_id": i, "category_id": c} for i, c in zip(ids, [0, 372, 0, 372])]}))
    (iwildcam / "iwildcam2020_test_information.json").write_text(json.dumps(
        {"images": [{"id": i, "file_name": f"{i}.jpg"} for i in ("t0", "t1")]}))
    write_csv(iwildcam / "sample_submission.csv", ["Id", "Category"], [["t1", 0], ["t0", 0]])
    competition = read_competition(iwildcam)
    assert competition.y.tolist() == [0, 1, 0, 1]
    assert [str(p) for p in competition.test_paths] == [f"{iwildcam / 'test.zip'}/{i}.jpg" for i in ("t1", "t0")]


def _tar_folder(folder: Path, archive: Path, compression: str = "") -> None:
    """``folder``'s files into a tar named ``archive``, names relative to ``folder`` (as MLE-bench writes them)."""
    with tarfile.open(archive, f"w:{compression}") as out:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                out.add(path, arcname=path.relative_to(folder).as_posix())


def write_inaturalist_2019(root: Path, categories: list[int], n_test: int = 3) -> None:
    """inaturalist-2019's public layout as MLE-bench prepares it: train2019.json / test2019.json whose file_names
    start with the tars' names (train_val2019/Plants/400/<hash>.jpg, test2019/<hash>.jpg) while the tars' members
    do not, plain tars named .tar.gz, val2019.json of images not shipped, kaggle_sample_submission.csv id,predicted."""
    unpacked = root.parent / f"{root.name}-unpacked"
    images, annotations = [], []
    for k, category in enumerate(categories):
        name = f"Plants/{category}/{k:032x}.jpg"
        write_images((unpacked / "train_val2019" / name).parent, [Path(name).name])
        images.append({"id": 100 + k, "file_name": f"train_val2019/{name}", "width": 8, "height": 8})
        annotations.append({"id": 100 + k, "image_id": 100 + k, "category_id": category})
    tests = [{"id": 900 + k, "file_name": f"test2019/{k + 500:032x}.jpg"} for k in range(n_test)]
    write_images(unpacked / "test2019", [Path(t["file_name"]).name for t in tests])
    root.mkdir(parents=True)
    (root / "train2019.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                     "categories": [], "info": {}, "licenses": []}))
    (root / "val2019.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "train_val2019/Plants/1/x.jpg"}],
                                                   "annotations": [{"image_id": 1, "category_id": 1}]}))
    (root / "test2019.json").write_text(json.dumps({"images": tests, "info": {}, "licenses": []}))
    for split in ("train_val2019", "test2019"):
        _tar_folder(unpacked / split, root / f"{split}.tar.gz")
    write_csv(root / "kaggle_sample_submission.csv", ["id", "predicted"], [[t["id"], 7] for t in tests])


def test_inaturalist_2019_plain_tars_and_file_names_from_the_root(tmp_path):
    root = tmp_path / "inaturalist-2019-fgvc6"
    write_inaturalist_2019(root, [400, 49, 400, 49])
    competition = read_competition(root, settings=TaskSettings(metric="error"))
    assert competition.train_ids == ["100", "101", "102", "103"] and competition.y.tolist() == [1, 0, 1, 0]
    assert str(competition.train_paths[1]) == f"{root / 'train_val2019.tar.gz'}/Plants/49/{1:032x}.jpg"
    assert read_image(competition.train_paths[1]).shape == (8, 8, 3)
    assert [str(p) for p in competition.test_paths] == [f"{root / 'test2019.tar.gz'}/{k + 500:032x}.jpg"
                                                        for k in range(3)]
    assert competition.task.describe().endswith("labels from train2019.json (images' category_id), images in "
                                                "train_val2019.tar.gz")
    assert ("train images read from train_val2019.tar.gz, the one entry named for train (--train-dir decides)"
            in competition.notes)
    # unpacked as the refusal of a compressed tar says: the folder wins, its file names read from the root as well
    for split in ("train_val2019", "test2019"):
        (tmp_path / "inaturalist-2019-fgvc6-unpacked" / split).rename(root / split)
    unpacked = read_competition(root, settings=TaskSettings(metric="error"))
    assert unpacked.train_paths[1] == root / "train_val2019" / "Plants" / "49" / f"{1:032x}.jpg"
    assert [p.read_bytes() for p in unpacked.train_paths] == [p.read_bytes() for p in competition.train_paths]


def test_a_compressed_tar_is_one_line_that_says_how_to_unpack_it(tmp_path):
    root = tmp_path / "inaturalist-2019-fgvc6"
    write_inaturalist_2019(root, [400, 49, 400, 49])
    _tar_folder(tmp_path / "inaturalist-2019-fgvc6-unpacked" / "train_val2019", root / "train_val2019.tar.gz", "gz")
    refused(root, r"train_val2019.tar.gz: a gzip-compressed tar, whose images cannot be "
                  r"read in place; unpack it once \(mkdir train_val2019 && tar xf "
                  r"train_val2019.tar.gz -C train_val2019\)")


def test_a_tar_member_that_is_a_link_is_never_read(tmp_path):
    # a symlink inside a tar naming a private file: not a member, so not an image of the competition
    root = tmp_path / "inaturalist-2019-fgvc6"
    write_inaturalist_2019(root, [400, 49, 400, 49])
    secret = tmp_path / "secret.jpg"
    write_images(tmp_path, [secret.name])
    with tarfile.open(root / "test2019.tar.gz", "a") as tar:
        link = tarfile.TarInfo(f"{3 + 500:032x}.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, str(secret)
        tar.addfile(link)
    (root / "test2019.json").write_text(json.dumps({"images": [
        {"id": 900 + k, "file_name": f"test2019/{k + 500:032x}.jpg"} for k in range(4)]}))
    write_csv(root / "kaggle_sample_submission.csv", ["id", "predicted"], [[900 + k, 7] for k in range(4)])
    refused(root, r"kaggle_sample_submission.csv: 1 id\(s\) have no image in "
                  r".*test2019.tar.gz, e.g. \['903'\]")


def write_cdiscount(root: Path, categories: list[int], n_test: int = 3) -> list[bytes]:
    """cdiscount's public layout as MLE-bench prepares it (bson.BSON.encode, one document per product): train.bson
    {_id, category_id, imgs: [{picture}]}, train_example.bson (its first products), test.bson without category_id,
    category_names.csv, sample_submission.csv _id,category_id. Returns the train products' first pictures."""
    import bson  # pymongo's, as MLE-bench's prepare.py writes these files

    root.mkdir(parents=True)
    firsts = []
    with open(root / "train.bson", "wb") as train:
        for k, category in enumerate(categories):
            pictures = [cv2.imencode(".jpg", np.full((8, 8, 3), 30 * v + k, np.uint8))[1].tobytes()
                        for v in range(1 + k % 2)]  # every second product: two pictures
            firsts.append(pictures[0])
            train.write(bson.BSON.encode({"_id": 10 + k, "imgs": [{"picture": p} for p in pictures],
                                          "category_id": category}))
    (root / "train_example.bson").write_bytes((root / "train.bson").read_bytes()[:2000])
    with open(root / "test.bson", "wb") as test:
        for k in range(n_test):
            picture = cv2.imencode(".jpg", np.full((8, 8, 3), 90 + k, np.uint8))[1].tobytes()
            test.write(bson.BSON.encode({"_id": 500 + k, "imgs": [{"picture": picture}]}))
    write_csv(root / "category_names.csv", ["category_id", "category_level1"], [[c, "MAISON"] for c in set(categories)])
    write_csv(root / "sample_submission.csv", ["_id", "category_id"], [[500 + k, 1000010653] for k in range(n_test)])
    return firsts


def test_cdiscount_products_in_bson_files(tmp_path):
    root = tmp_path / "cdiscount-image-classification-challenge"
    firsts = write_cdiscount(root, [1000010653, 1000004079, 1000010653, 1000004079])
    competition = read_competition(root)
    assert (competition.task.kind, competition.task.form) == ("multiclass", "label")
    assert competition.train_ids == ["10", "11", "12", "13"] and competition.y.tolist() == [1, 0, 1, 0]
    assert [p.read_bytes() for p in competition.train_paths] == firsts  # each product's first picture, in place
    assert str(competition.train_paths[0]) == f"{root / 'train.bson'}/10.jpg"
    assert read_image(competition.test_paths[2]).shape == (8, 8, 3)
    assert [p.name for p in competition.test_paths] == ["500.jpg", "501.jpg", "502.jpg"]
    assert competition.task.describe().endswith("labels from train.bson (its category_id), images in "
                                                "train.bson")
    assert "train.bson: 2 of its 4 products have more than one picture: the first is read" in competition.notes
    # a product written without its category_id is not a training image, and a note says so
    import bson

    with open(root / "train.bson", "ab") as train:
        train.write(bson.BSON.encode({"_id": 99, "imgs": [{"picture": firsts[0]}]}))
    competition = read_competition(root)
    assert competition.train_ids == ["10", "11", "12", "13"]
    assert "train.bson: 1 image(s) have no category_id, e.g. '99': not training images" in competition.notes


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:-7], r"train.bson: not a readable BSON file of products \(byte \d+: the file ends inside a "
                             r"document"),
    (lambda data: b"\xff\xff\xff\x7f" + data[4:], r"train.bson: not a readable BSON file of products \(byte 0: "
                                                  r"a document of 2147483647 bytes"),
    (lambda data: data[:4] + b"\x0b" + data[5:], r"train.bson: not a readable BSON file of products \(document 0 "
                                                 r"at byte 0: element '_id' has BSON type 0xb"),
    (lambda data: data + data[:int.from_bytes(data[:4], "little")],  # the first product written again
     r"train.bson: not a readable BSON file of products \(_id '10' names two products\)"),
])
def test_a_damaged_bson_file_is_one_line(tmp_path, damage, message):
    root = tmp_path / "cdiscount-image-classification-challenge"
    write_cdiscount(root, [1000010653, 1000004079, 1000010653, 1000004079])
    (root / "train.bson").write_bytes(damage((root / "train.bson").read_bytes()))
    refused(root, message)


def test_seti_npy_arrays_one_folder_down_in_train_and_test(tmp_path):
    # train/<id[0]>/<id>.npy (float16, 6 cadences x 273 x 256), test/ alike, train_labels.csv id,target, the sample
    # id,target; old_leaky_data/ beside them
    root = tmp_path / "seti-breakthrough-listen"
    rng = np.random.default_rng(0)
    ids = ["0000799a2b2c42d", "0a1b5f8e2c3d4e5", "1c2d3e4f5a6b7c8", "a0b1c2d3e4f5a6b"]
    test_ids = ["00034abb3629718", "b1c2d3e4f5a6b7c"]
    for split, names in (("train", ids), ("test", test_ids)):
        for name in names:
            (root / split / name[0]).mkdir(parents=True, exist_ok=True)
            np.save(root / split / name[0] / f"{name}.npy", rng.standard_normal((6, 273, 256)).astype(np.float16))
    write_csv(root / "train_labels.csv", ["id", "target"], [[i, k % 2] for k, i in enumerate(ids)])
    (root / "old_leaky_data").mkdir()
    write_csv(root / "old_leaky_data" / "train_labels_old.csv", ["id", "target"], [[ids[0], 1]])
    write_csv(root / "sample_submission.csv", ["id", "target"], [[i, 0.5] for i in test_ids])
    competition = read_competition(root, settings=TaskSettings(task="binary", metric="roc_auc"))
    assert competition.train_ids == ids and competition.y.tolist() == [0, 1, 0, 1]
    assert competition.train_paths[3] == root / "train" / "a" / f"{ids[3]}.npy"
    assert competition.test_paths == [root / "test" / i[0] / f"{i}.npy" for i in test_ids]
    assert "test/ has sub-folders (0, ...): the test images are read from them, as the sample's ids name them" \
        in competition.notes
    image = read_image(competition.test_paths[1])
    assert image.shape == (6 * 273, 256, 3) and image.dtype == np.uint8 and (image.min(), image.max()) == (0, 255)
    # the cadences stacked top to bottom, each channel the same grey
    cadences = np.load(competition.test_paths[1]).astype(np.float64)
    grey = (cadences - cadences.min()) * (255 / (cadences.max() - cadences.min()))
    assert np.array_equal(image[..., 0], np.round(grey.reshape(-1, 256)).astype(np.uint8))
    assert np.array_equal(image[..., 0], image[..., 2])


@pytest.mark.parametrize("array, message", [
    (np.zeros((2, 3, 8, 8)), r"an NPY array of shape \(2, 3, 8, 8\) is not an image"),
    (np.array([{"a": 1}], dtype=object), r"an NPY array of object is not an image"),
    (np.array(["ab", "cd"]), r"an NPY array of <U2 is not an image"),
    (np.full((4, 4), np.nan, np.float32), r"an NPY array holding NaN or infinite values"),
    (None, r"truncated NPY \(\d+ of \d+ bytes\)"),
])
def test_an_npy_file_that_is_no_image_is_a_bad_image(tmp_path, array, message):
    path = tmp_path / "x.npy"
    if array is None:
        np.save(path, np.zeros((16, 16), np.float32))
        path.write_bytes(path.read_bytes()[:-10])
    else:
        np.save(path, array, allow_pickle=True)
    with pytest.raises(ImageError, match=message):
        read_image(path)


def write_statoil(root: Path, labels: list[int], n_test: int = 3, side: int = 9) -> list[dict]:
    """statoil-iceberg's public layout as MLE-bench prepares it (py7zr): train.json.7z holding train.json, a list of
    {id, band_1, band_2 (side x side dB values), inc_angle (a number or "na"), is_iceberg}; test.json.7z without
    is_iceberg; sample_submission.csv.7z id,is_iceberg. Returns the train records."""
    import py7zr

    rng = np.random.default_rng(0)

    def record(k: int, iceberg: int | None) -> dict:
        bands = {f"band_{b}": (rng.normal(-20 + 5 * (iceberg or 0), 3, side * side)).round(4).tolist()
                 for b in (1, 2)}
        out = {"id": f"{k:08x}", **bands, "inc_angle": "na" if k == 1 else 39.5 + k}
        return out if iceberg is None else {**out, "is_iceberg": iceberg}

    train = [record(k, label) for k, label in enumerate(labels)]
    test = [record(1000 + k, None) for k in range(n_test)]
    root.mkdir(parents=True)
    plain = root.parent / f"{root.name}-plain"
    plain.mkdir()
    (plain / "train.json").write_text(json.dumps(train))
    (plain / "test.json").write_text(json.dumps(test))
    write_csv(plain / "sample_submission.csv", ["id", "is_iceberg"], [[r["id"], 0.5] for r in test])
    for name in ("train.json", "test.json", "sample_submission.csv"):
        with py7zr.SevenZipFile(root / f"{name}.7z", "w") as archive:
            archive.write(plain / name, arcname=name)
    return train


def test_statoil_records_of_band_arrays_in_7z_archives(tmp_path):
    root = tmp_path / "statoil-iceberg-classifier-challenge"
    train = write_statoil(root, [0, 1, 1, 0])
    competition = read_competition(root, settings=TaskSettings(task="binary", metric="log_loss"))
    assert competition.train_ids == [r["id"] for r in train] and competition.y.tolist() == [0, 1, 1, 0]
    assert competition.task.describe().endswith("labels from train.json.7z (its is_iceberg), images in "
                                                "train.json.7z")
    assert [p.name for p in competition.test_paths] == [f"{1000 + k:08x}.npy" for k in range(3)]
    assert "train.json.7z: its field(s) ['inc_angle'] are not used (only 'is_iceberg', the labels)" in \
        competition.notes
    # the image: band_1, band_2 and their mean as three channels, scaled from the record's minimum to its maximum
    image = read_image(competition.train_paths[2])
    bands = np.array([train[2]["band_1"], train[2]["band_2"]], np.float32).reshape(2, 9, 9)
    planes = np.concatenate([bands, bands.mean(axis=0, keepdims=True)]).transpose(1, 2, 0).astype(np.float64)
    expected = np.round((planes - planes.min()) * (255 / (planes.max() - planes.min()))).astype(np.uint8)
    assert image.shape == (9, 9, 3) and np.array_equal(image, expected)
    # unpacked: the plain JSON files read the same
    packed = [p.read_bytes() for p in competition.train_paths]
    for name in ("train.json", "test.json", "sample_submission.csv"):
        (root / f"{name}.7z").unlink()
        (tmp_path / f"{root.name}-plain" / name).rename(root / name)
    plain = read_competition(root, settings=TaskSettings(task="binary", metric="log_loss"))
    assert [p.read_bytes() for p in plain.train_paths] == packed


@pytest.mark.parametrize("damage, message", [
    (lambda records: records[2].pop("band_2"), r"train.json: record 2 \(id '00000002'\) lacks one of the bands"),
    (lambda records: records[1].update(band_1=records[1]["band_1"][:-1], band_2=records[1]["band_2"][:-1]),
     r"train.json: record 1 \(id '00000001'\): its bands \['band_1', 'band_2'\] are not H x H numbers"),
    (lambda records: records.clear(), r"train.json: not a JSON list of records, each with an 'id'"),
    (lambda records: records[3].update(id=records[0]["id"]),
     r"train.json: record 3 repeats the id '00000000' of a record before it"),
])
def test_records_that_are_no_images_are_one_line(tmp_path, damage, message):
    root = tmp_path / "statoil-iceberg-classifier-challenge"
    write_statoil(root, [0, 1, 1, 0])
    records = json.loads((tmp_path / f"{root.name}-plain" / "train.json").read_text())
    damage(records)
    (root / "train.json.7z").unlink()
    (root / "train.json").write_text(json.dumps(records))
    refused(root, message)


def test_a_7z_of_images_says_how_to_unpack_it(tmp_path):
    # invasive-species-monitoring: train.7z, test.7z, train_labels.csv.zip, sample_submission.csv.zip
    import py7zr

    root = tmp_path / "invasive-species-monitoring"
    write_images(tmp_path / "plain" / "train", ["1.jpg", "2.jpg"])
    root.mkdir()
    with py7zr.SevenZipFile(root / "train.7z", "w") as archive:
        archive.writeall(tmp_path / "plain" / "train", arcname="train")
    with zipfile.ZipFile(root / "train_labels.csv.zip", "w") as archive:
        archive.writestr("train_labels.csv", "name,invasive\n1,0\n2,1\n")
    refused(root, r"train.7z: a 7z archive of images, which kaggle_tl cannot read in place "
                  r".*unpack it once \(python -m py7zr x train.7z .\)")
    with py7zr.SevenZipFile(root / "train.7z") as archive:  # the command the line gives, as py7zr's own
        archive.extractall(root)
    assert sorted(p.name for p in (root / "train").iterdir()) == ["1.jpg", "2.jpg"]


def test_a_7z_archive_that_is_damaged_is_one_line(tmp_path):
    root = tmp_path / "statoil-iceberg-classifier-challenge"
    write_statoil(root, [0, 1, 1, 0])
    data = (root / "train.json.7z").read_bytes()
    (root / "train.json.7z").write_bytes(data[:len(data) // 2])
    with pytest.raises(KaggleTLError, match=r"train.json.7z: records is damaged or not the 7z archive its name says") \
            as exc_info:
        read_competition(root)
    one_line(exc_info)


def test_alaska2_class_folders_at_the_top_as_one_label_against_the_rest(tmp_path):
    # Cover/00001.jpg .. and the same names in JMiPOD/, JUNIWARD/, UERD/; Test/0001.jpg ..; sample Id,Label (Id with
    # its extension): Cover is 0, the three algorithms' folders 1
    root = tmp_path / "alaska2-image-steganalysis"
    names = ["00001.jpg", "00002.jpg"]
    for folder in ("Cover", "JMiPOD", "JUNIWARD", "UERD"):
        write_images(root / folder, names)
    write_images(root / "Test", ["0001.jpg", "0002.jpg", "0003.jpg"])
    write_csv(root / "sample_submission.csv", ["Id", "Label"], [[f"000{k}.jpg", 0] for k in (3, 1, 2)])
    competition = read_competition(root, settings=TaskSettings(task="binary", metric="weighted_auc",
                                                               negative="Cover"))
    assert competition.train_ids == [f"{folder}/{n[:-4]}" for folder in ("Cover", "JMiPOD", "JUNIWARD", "UERD")
                                     for n in names]
    assert competition.y.tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    assert competition.test_paths == [root / "Test" / f"000{k}.jpg" for k in (3, 1, 2)]
    assert (competition.task.kind, competition.task.form, competition.task.positive) == ("binary", "p_positive", "1")
    assert "labels as a binary task: Cover is 0, JMiPOD, JUNIWARD, UERD are 1" in competition.notes
    assert any(n.startswith("train images read from the class folders at the top (Cover/, JMiPOD/, JUNIWARD/, "
                            "UERD/;") for n in competition.notes)
    again = read_competition(root, competition.layout, TaskSettings(task="binary", metric="weighted_auc",
                                                                    negative="Cover"))
    assert again.train_paths == competition.train_paths and competition.layout.train_dir == "."
    with pytest.raises(KaggleTLError, match=r"the negative label 'Clean' is not one of the labels \['Cover', "
                                            r"'JMiPOD', 'JUNIWARD', 'UERD'\]") as exc_info:
        read_competition(root, settings=TaskSettings(task="binary", negative="Clean"))
    one_line(exc_info)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["images"][1].update(file_name="../../secret.jpg"),
     r"metadata.json: images\[1\].file_name '../../secret.jpg' is not a path inside the images folder"),
    (lambda m: m["images"][1].update(file_name="images/000/03/gone.jpg"),
     r"metadata.json: 1 id\(s\) have no image in .*nybg2020/train/, e.g. \['354101'\]"),
    (lambda m: m.pop("annotations"), r"metadata.json: no 'annotations' list: no labels for its images"),
    (lambda m: m["images"][2].update(id=m["images"][0]["id"]),
     r"metadata.json: images\[2\] repeats the id '354100' of an image before it"),
    (lambda m: m["annotations"][0].pop("category_id"), r"metadata.json: annotations\[0\] has no image_id and "
                                                        "category_id"),
])
def test_a_coco_json_that_does_not_hold_together_is_one_line(tmp_path, edit, message):
    root = tmp_path / "herbarium-2020-fgvc7"
    write_herbarium_2020(root, [15504, 3, 15504, 3])
    path = root / "nybg2020" / "train" / "metadata.json"
    metadata = json.loads(path.read_bytes().decode("latin-1"))
    edit(metadata)
    path.write_text(json.dumps(metadata))
    refused(root, message)


def test_a_test_image_the_test_json_names_but_is_missing_is_named_by_its_sample_id(tmp_path):
    root = tmp_path / "herbarium-2020-fgvc7"
    write_herbarium_2020(root, [15504, 3, 15504, 3])
    (root / "nybg2020" / "test" / "images" / "000" / "1.jpg").unlink()
    refused(root, r"sample_submission.csv: 1 id\(s\) have no image in .*nybg2020/test/, "
                  r"e.g. \['1'\]")


def test_a_coco_json_that_is_not_json_is_one_line(tmp_path):
    root = tmp_path / "herbarium-2020-fgvc7"
    write_herbarium_2020(root, [15504, 3, 15504, 3])
    path = root / "nybg2020" / "train" / "metadata.json"
    path.write_bytes(path.read_bytes()[:-40])
    refused(root, r"metadata.json: not valid JSON \(.* at line 1\)")


def test_a_sample_submission_named_otherwise_is_found(tmp_path):
    ids = write_simple(tmp_path)
    (tmp_path / "sample_submission.csv").rename(tmp_path / "sampleSubmission.csv")
    write_csv(tmp_path / "train.csv", ["id", "label"], [[i, k % 2] for k, i in enumerate(ids)])
    competition = read_competition(tmp_path)
    assert competition.layout.sample_submission == "sampleSubmission.csv" and competition.task.kind == "binary"


def test_a_given_labels_csv_is_read_even_when_its_ids_name_no_image(tmp_path):
    write_simple(tmp_path)
    for label in ("a", "b"):
        write_images(tmp_path / "train" / label, ["x.jpg", "y.jpg"])
    write_csv(tmp_path / "mine.csv", ["id", "label"], [["ghost", 1]])
    assert read_competition(tmp_path).layout.labels_csv == ""  # the class folders
    with pytest.raises(KaggleTLError, match=r"mine.csv: 1 id\(s\) have no image in .*train/, e.g. \['ghost'\]"):
        read_competition(tmp_path, Layout(labels_csv="mine.csv"))


# -- readings chosen where two were possible, and flags that decide -----------------------------
def write_simple(root: Path, n: int = 8) -> list[str]:
    ids = [f"im{k}" for k in range(n)]
    write_images(root / "train", [f"{i}.jpg" for i in ids])
    write_images(root / "test", ["t0.jpg"])
    write_csv(root / "sample_submission.csv", ["id", "label"], [["t0", 0.5]])
    return ids


def test_two_labels_csvs_naming_the_images_are_noted(tmp_path):
    ids = write_simple(tmp_path)
    write_csv(tmp_path / "train.csv", ["id", "label"], [[i, k % 2] for k, i in enumerate(ids)])
    write_csv(tmp_path / "labels.csv", ["id", "label"], [[i, "ab"[k % 2]] for k, i in enumerate(ids)])
    competition = read_competition(tmp_path)
    assert competition.layout.labels_csv == "train.csv" and competition.classes == ["0", "1"]
    assert ("train.csv and labels.csv both name training images: train.csv read as the labels (--labels-csv "
            "decides)") in competition.notes
    assert read_competition(tmp_path, Layout(labels_csv="labels.csv")).classes == ["a", "b"]


def test_a_labels_column_named_otherwise_than_the_sample_target_is_noted(tmp_path):
    ids = write_simple(tmp_path)
    write_csv(tmp_path / "train.csv", ["image", "is_red"], [[i, k % 2] for k, i in enumerate(ids)])
    competition = read_competition(tmp_path)
    assert (competition.layout.id_column, competition.layout.label_column) == ("image", "is_red")
    assert competition.id_column == "id" and competition.task.kind == "binary"
    assert "train.csv: its one label column 'is_red' read as the sample's 'label' (--label-column decides)" in \
        competition.notes
    assert "train.csv has no column 'id' (the sample's ids): its first column 'image' read as the ids" in \
        competition.notes


def test_train_and_train_images_both_there_is_noted(tmp_path):
    ids = write_simple(tmp_path)
    write_csv(tmp_path / "train.csv", ["id", "label"], [[i, k % 2] for k, i in enumerate(ids)])
    write_images(tmp_path / "train_images", ["other.jpg"])
    competition = read_competition(tmp_path)
    assert "train images read from train/, not train_images/ (--train-dir decides)" in competition.notes


# -- bad inputs: one line naming the file, row or column ---------------------------------------
def test_labels_csv_without_the_sample_columns(tmp_path):
    ids = write_simple(tmp_path)
    write_csv(tmp_path / "train.csv", ["id", "colour", "size"], [[i, "red", 1] for i in ids])
    with pytest.raises(KaggleTLError, match=r"train.csv: has none of the sample's target columns \['label'\]; its "
                                            r"columns are \['id', 'colour', 'size'\]: name the label column\(s\) "
                                            r"with --label-column") as exc:
        read_competition(tmp_path)
    one_line(exc)
    assert read_competition(tmp_path, Layout(label_column="colour")).layout.label_column == "colour"


def test_labels_of_mixed_types(tmp_path):
    ids = write_simple(tmp_path)
    write_csv(tmp_path / "train.csv", ["id", "label"], [[i, "cat" if k == 3 else k % 2] for k, i in enumerate(ids)])
    with pytest.raises(KaggleTLError, match=r"train.csv: labels of mixed types in 'label': numbers such as '0' and "
                                            r"text such as 'cat' \(row 5\)") as exc:
        read_competition(tmp_path)
    one_line(exc)


@pytest.mark.parametrize("cell, settings, message", [
    ("NaN", {}, r"train.csv: labels of mixed types in 'Pawpularity': numbers such as '63' and text such as 'NaN' "
                r"\(row 4\)"),
    ("high", {"task": "regression"}, r"train.csv: row 4 \(\w+\): Pawpularity 'high' is not a number"),
    ("", {}, r"train.csv: row 4 \(\w+\): no label in Pawpularity"),
])
def test_regression_target_that_is_not_a_number(tmp_path, cell, settings, message):
    write_petfinder(tmp_path, [63, 42, cell, 15, 72, 74, 22, 35])
    with pytest.raises(KaggleTLError, match=message) as exc:
        read_competition(tmp_path, settings=TaskSettings(**settings))
    one_line(exc)


def test_tag_string_with_an_unknown_tag(tmp_path):
    # tags in one cell, the sample one probability column per tag: a tag the sample lacks is named
    ids = [f"im{k}" for k in range(8)]
    write_images(tmp_path / "train", [f"{i}.jpg" for i in ids])
    write_images(tmp_path / "test", ["t0.jpg"])
    cells = ["clear primary", "haze", "primary", "clear", "haze primary", "cloudy", "clear haze", "primary"]
    write_csv(tmp_path / "train.csv", ["image_name", "tags"], list(zip(ids, cells)))
    write_csv(tmp_path / "sample_submission.csv", ["image_name", "clear", "haze", "primary"], [["t0", 0.5, 0.5, 0.5]])
    with pytest.raises(KaggleTLError, match=r"train.csv: row 7 \(im5\): tag 'cloudy' is not among the 3 tags") as exc:
        read_competition(tmp_path)
    one_line(exc)
    cells[5] = "clear"
    write_csv(tmp_path / "train.csv", ["image_name", "tags"], list(zip(ids, cells)))
    competition = read_competition(tmp_path)
    assert (competition.task.kind, competition.task.form) == ("multilabel", "tag_proba")
    assert competition.y[0].tolist() == [1, 0, 1]


def test_no_labels_anywhere_is_one_line(tmp_path):
    write_simple(tmp_path)
    with pytest.raises(KaggleTLError, match=r"no labels found: none of train.csv, train_labels.csv, labels.csv, no "
                                            r"COCO-style metadata.json, no class sub-folders of images in train/, no "
                                            r"file names <label>.<n>") as exc:
        read_competition(tmp_path)
    one_line(exc)
