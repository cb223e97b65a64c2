"""Every row of the task table, end to end: a tiny competition in each real layout (the real file, folder and
column names; synthetic images whose content carries the answer), `pipeline.run` with nothing but the folder
and --competition, the submission parsed back and scored against the known test answers by scikit-learn.

Each test checks: the detected task and metric; the submission's cells in the sample's format; the
submission's score beats the constant prediction by a clear margin; the run's CV metric is that metric
computed here on its own OOF predictions (decided with the rules stored beside them).
"""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from conftest import write_dicom, write_image  # noqa: E402
from kaggle_tl.config import RunConfig
from kaggle_tl.ensemble.across_runs import ensemble_models
from kaggle_tl.pipeline import run
from kaggle_tl.runs.compare import load_models
from kaggle_tl.tasks.evaluate import decide_folds
from kaggle_tl.tasks.scoring import get_metric

COLOURS = {"red": (230, 30, 30), "green": (30, 200, 30), "blue": (40, 60, 230), "yellow": (230, 220, 30),
           "magenta": (220, 30, 220), "cyan": (30, 220, 220)}


def _squares(rng: np.random.Generator, colours: list[str], level: float = 0.2) -> np.ndarray:
    """A 48 x 48 image: a background of grey ``level`` (0..1) and one square of each colour named."""
    image = np.full((48, 48, 3), int(255 * level), np.uint8) + rng.integers(0, 20, (48, 48, 3), dtype=np.uint8)
    for colour in colours:
        y0, x0 = rng.integers(0, 28, 2)
        image[y0:y0 + 20, x0:x0 + 20] = COLOURS[colour]
    return image


def _run(tmp_path: Path, comp: Path, **settings) -> tuple:
    config = RunConfig(data=str(comp), backbones=("mobilenet_v2",), weights="none", image_size=48, stages=1,
                       views=("original",), folds=3, cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"),
                       submissions_dir=str(tmp_path / "subs"), **settings)
    lines: list[str] = []
    record = run(config, report=lines.append)
    return record, lines


def _submission(record, model: int = 0) -> pd.DataFrame:
    return pd.read_csv(record.models[model].submission, dtype=str, keep_default_na=False)


def _oof_metric_matches_the_record(record, metric) -> None:
    """The run's CV score equals ``metric`` (scikit-learn) on its OOF predictions, decided with the stored rules."""
    for entry in record.models:
        preds = record.predictions(entry.name)
        decided = decide_folds(record.task, preds.oof_mean, preds.folds, preds.decisions)
        assert entry.score.value == pytest.approx(metric(record.task.truth(preds.y), decided), rel=1e-9, abs=1e-12)


def _decided_labels(record, lines, target: str, metric: str, answers: dict, source: str, id_column: str) -> tuple:
    """A one-label run's checks: its task and one line (3 classes, ``source`` of the labels), the sample's ids in
    order, every cell one of the answers' labels; returns (the answers in submission order, the labels)."""
    assert (record.task.kind, record.task.metric_name, record.task.form) == ("multiclass", metric, "label")
    assert any(line.startswith(f"multiclass: the label in {target} (3 classes), {metric}, labels from {source}")
               for line in lines)
    sub = _submission(record)
    assert list(sub.columns) == [id_column, target] and sub[id_column].tolist() == list(answers)
    assert set(sub[target]) <= set(answers.values())
    return [answers[i] for i in sub[id_column]], sub[target]


def _binary_probabilities(record, lines, target: str, metric: str, answers: dict, id_column: str = "id") -> tuple:
    """The binary run's checks: its task and one line, the sample's ids in order, P(positive) strictly inside (0, 1);
    returns (the answers in submission order, the probabilities)."""
    assert (record.task.kind, record.task.metric_name, record.task.form) == ("binary", metric, "p_positive")
    assert any(line.startswith(f"binary: P({target} = 1), {metric}") for line in lines)
    sub = _submission(record)
    assert list(sub.columns) == [id_column, target] and sub[id_column].tolist() == list(answers)
    p = sub[target].astype(float)
    assert ((p > 0) & (p < 1)).all()
    return [answers[i] for i in sub[id_column]], p


# --------------------------------------------------------------------------- multiclass, one label
def test_cassava_one_integer_label_scored_by_accuracy(tmp_path):
    rng = np.random.default_rng(0)
    comp = tmp_path / "cassava"
    (comp / "train_images").mkdir(parents=True)
    (comp / "test_images").mkdir()
    colours = ["red", "green", "blue"]
    rows = []
    for i in range(36):
        write_image(comp / "train_images" / f"{1000 + i}.jpg", _squares(rng, [colours[i % 3]]))
        rows.append((f"{1000 + i}.jpg", i % 3))
    pd.DataFrame(rows, columns=["image_id", "label"]).to_csv(comp / "train.csv", index=False)
    answers = {}
    for i in range(12):
        write_image(comp / "test_images" / f"{5000 + i}.jpg", _squares(rng, [colours[i % 3]]))
        answers[f"{5000 + i}.jpg"] = str(i % 3)
    pd.DataFrame({"image_id": list(answers), "label": 4}).to_csv(comp / "sample_submission.csv", index=False)

    record, lines = _run(tmp_path, comp, competition="cassava-leaf-disease-classification", heads=("logreg",))
    assert (record.task.kind, record.task.metric_name, record.task.form) == ("multiclass", "accuracy", "label")
    assert any(line.startswith("multiclass: the label in label") for line in lines)
    sub = _submission(record)
    assert list(sub.columns) == ["image_id", "label"] and set(sub["label"]) <= {"0", "1", "2"}
    accuracy = skm.accuracy_score([answers[i] for i in sub["image_id"]], sub["label"])
    assert accuracy >= 1 / 3 + 0.4
    _oof_metric_matches_the_record(record, skm.accuracy_score)


def test_herbarium_coco_json_labels_scored_by_macro_f1(tmp_path):
    # nybg2020/{train,test}/metadata.json (COCO: images + annotations), images in category sub-folders, the sample
    # Id,Predicted beside nybg2020/: the submission holds integer category ids for the test JSON's ids
    rng = np.random.default_rng(8)
    comp = tmp_path / "herbarium"
    colours = {15504: "red", 3: "green", 15672: "blue"}
    images, annotations = [], []
    for k in range(36):
        category = list(colours)[k % 3]
        name = f"images/{category // 100:03d}/{category % 100:02d}/{354100 + k}.jpg"
        (comp / "nybg2020" / "train" / name).parent.mkdir(parents=True, exist_ok=True)
        write_image(comp / "nybg2020" / "train" / name, _squares(rng, [colours[category]]))
        images.append({"id": 354100 + k, "file_name": name})
        annotations.append({"id": k, "image_id": 354100 + k, "category_id": category})
    (comp / "nybg2020" / "train" / "metadata.json").write_text(json.dumps({"annotations": annotations,
                                                                            "images": images}))
    answers, test_images = {}, []
    (comp / "nybg2020" / "test" / "images" / "000").mkdir(parents=True)
    for k in range(12):
        category = list(colours)[k % 3]
        write_image(comp / "nybg2020" / "test" / "images" / "000" / f"{k}.jpg", _squares(rng, [colours[category]]))
        test_images.append({"id": str(k), "file_name": f"images/000/{k}.jpg"})
        answers[str(k)] = str(category)
    (comp / "nybg2020" / "test" / "metadata.json").write_text(json.dumps({"images": test_images}))
    pd.DataFrame({"Id": list(answers), "Predicted": 0}).to_csv(comp / "sample_submission.csv", index=False)

    record, lines = _run(tmp_path, comp, competition="herbarium-2020-fgvc7", heads=("logreg",))
    truth, predicted = _decided_labels(record, lines, "Predicted", "macro_f1", answers, "metadata.json", "Id")
    macro_f1 = skm.f1_score(truth, predicted, average="macro")
    assert macro_f1 >= 1 / 3 + 0.4
    _oof_metric_matches_the_record(record, lambda t, p: skm.f1_score(t, p, average="macro"))


def test_inaturalist_plain_tars_scored_by_top_1_error(tmp_path):
    # train_val2019.tar.gz / test2019.tar.gz (plain tars whatever the name says), train2019.json / test2019.json whose
    # file_names start with the tars' names, kaggle_sample_submission.csv id,predicted: integer category ids,
    # scored by top-1 error (lower is better)
    rng = np.random.default_rng(9)
    comp, unpacked = tmp_path / "inaturalist", tmp_path / "unpacked"
    colours = {400: "red", 49: "green", 1009: "blue"}
    images, annotations = [], []
    for k in range(36):
        category = list(colours)[k % 3]
        name = f"Plants/{category}/{k:032x}.jpg"
        (unpacked / "train_val2019" / name).parent.mkdir(parents=True, exist_ok=True)
        write_image(unpacked / "train_val2019" / name, _squares(rng, [colours[category]]))
        images.append({"id": 100 + k, "file_name": f"train_val2019/{name}"})
        annotations.append({"id": 100 + k, "image_id": 100 + k, "category_id": category})
    answers, tests = {}, []
    (unpacked / "test2019").mkdir()
    for k in range(12):
        category = list(colours)[k % 3]
        write_image(unpacked / "test2019" / f"{k + 500:032x}.jpg", _squares(rng, [colours[category]]))
        tests.append({"id": 900 + k, "file_name": f"test2019/{k + 500:032x}.jpg"})
        answers[str(900 + k)] = str(category)
    comp.mkdir()
    (comp / "train2019.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    (comp / "test2019.json").write_text(json.dumps({"images": tests}))
    for split in ("train_val2019", "test2019"):
        with tarfile.open(comp / f"{split}.tar.gz", "w") as tar:
            for path in sorted((unpacked / split).rglob("*.jpg")):
                tar.add(path, arcname=path.relative_to(unpacked / split).as_posix())
    pd.DataFrame({"id": list(answers), "predicted": 7}).to_csv(comp / "kaggle_sample_submission.csv", index=False)

    record, lines = _run(tmp_path, comp, competition="inaturalist-2019-fgvc6", heads=("logreg",))
    assert not record.models[0].score.greater_is_better
    truth, predicted = _decided_labels(record, lines, "predicted", "error", answers, "train2019.json", "id")
    error = 1 - skm.accuracy_score(truth, predicted)
    assert error <= 2 / 3 - 0.4
    _oof_metric_matches_the_record(record, lambda t, p: 1 - skm.accuracy_score(t, p))


def test_cdiscount_products_in_bson_scored_by_accuracy(tmp_path):
    # train.bson / test.bson as MLE-bench writes them (pymongo's bson): one document per product, its category and
    # 1-2 pictures; the submission _id,category_id holds integer category ids for test.bson's products
    import bson

    rng = np.random.default_rng(10)
    comp = tmp_path / "cdiscount"
    comp.mkdir()
    colours = {1000010653: "red", 1000004079: "green", 1000015309: "blue"}

    def pictures(colour: str, n: int) -> list[dict]:
        return [{"picture": cv2.imencode(".jpg", _squares(rng, [colour]))[1].tobytes()} for _ in range(n)]

    with open(comp / "train.bson", "wb") as train:
        for k in range(36):
            category = list(colours)[k % 3]
            train.write(bson.BSON.encode({"_id": k, "imgs": pictures(colours[category], 1 + k % 2),
                                          "category_id": category}))
    answers = {}
    with open(comp / "test.bson", "wb") as test:
        for k in range(12):
            category = list(colours)[k % 3]
            test.write(bson.BSON.encode({"_id": 100 + k, "imgs": pictures(colours[category], 1)}))
            answers[str(100 + k)] = str(category)
    pd.DataFrame({"category_id": list(colours), "category_level1": "X"}).to_csv(comp / "category_names.csv",
                                                                                index=False)
    pd.DataFrame({"_id": list(answers), "category_id": 1000010653}).to_csv(comp / "sample_submission.csv", index=False)

    record, lines = _run(tmp_path, comp, competition="cdiscount-image-classification-challenge", heads=("logreg",))
    truth, predicted = _decided_labels(record, lines, "category_id", "accuracy", answers, "train.bson", "_id")
    accuracy = skm.accuracy_score(truth, predicted)
    assert accuracy >= 1 / 3 + 0.4
    _oof_metric_matches_the_record(record, skm.accuracy_score)


# --------------------------------------------------------------------------- multiclass, probabilities
def test_dog_breed_probability_columns_scored_by_log_loss(tmp_path):
    rng = np.random.default_rng(1)
    comp = tmp_path / "dog-breed"
    (comp / "train").mkdir(parents=True)
    (comp / "test").mkdir()
    breeds = ["afghan_hound", "beagle", "collie"]
    colour_of = dict(zip(breeds, ["red", "green", "blue"]))
    rows = []
    for i in range(36):
        write_image(comp / "train" / f"d{i:03d}.jpg", _squares(rng, [colour_of[breeds[i % 3]]]))
        rows.append((f"d{i:03d}", breeds[i % 3]))
    pd.DataFrame(rows, columns=["id", "breed"]).to_csv(comp / "labels.csv", index=False)
    answers = {}
    for i in range(12):
        write_image(comp / "test" / f"t{i:03d}.jpg", _squares(rng, [colour_of[breeds[i % 3]]]))
        answers[f"t{i:03d}"] = i % 3
    pd.DataFrame({"id": list(answers), **{b: 1 / 3 for b in breeds}}).to_csv(comp / "sample_submission.csv",
                                                                              index=False)
    record, _ = _run(tmp_path, comp, competition="dog-breed-identification", heads=("logreg",))
    assert (record.task.kind, record.task.metric_name, record.task.form) == ("multiclass", "log_loss", "proba")
    sub = _submission(record)
    proba = sub[breeds].astype(float).to_numpy()
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-6)
    assert skm.log_loss([answers[i] for i in sub["id"]], proba, labels=[0, 1, 2]) < np.log(3) - 0.4
    _oof_metric_matches_the_record(record, lambda y, p: skm.log_loss(y, p, labels=[0, 1, 2]))


# --------------------------------------------------------------------------- binary
def test_aerial_cactus_binary_probability_scored_by_roc_auc(tmp_path):
    rng = np.random.default_rng(2)
    comp = tmp_path / "cactus"
    (comp / "train").mkdir(parents=True)
    (comp / "test").mkdir()
    rows = []
    for i in range(40):
        write_image(comp / "train" / f"{i:04x}abc.jpg", _squares(rng, ["green"] if i % 2 else ["red"]))
        rows.append((f"{i:04x}abc.jpg", i % 2))
    pd.DataFrame(rows, columns=["id", "has_cactus"]).to_csv(comp / "train.csv", index=False)
    answers = {}
    for i in range(14):
        write_image(comp / "test" / f"{i:04x}fff.jpg", _squares(rng, ["green"] if i % 2 else ["red"]))
        answers[f"{i:04x}fff.jpg"] = i % 2
    pd.DataFrame({"id": list(answers), "has_cactus": 0.5}).to_csv(comp / "sample_submission.csv", index=False)

    record, lines = _run(tmp_path, comp, competition="aerial-cactus-identification", heads=("logreg",))
    truth, p = _binary_probabilities(record, lines, "has_cactus", "roc_auc", answers)
    assert skm.roc_auc_score(truth, p) > 0.9
    _oof_metric_matches_the_record(record, skm.roc_auc_score)


def test_seti_npy_cadences_one_folder_down_scored_by_roc_auc(tmp_path):
    # train/<id[0]>/<id>.npy and test/<id[0]>/<id>.npy (float16, 6 cadences x 273 x 256 as seti ships them),
    # train_labels.csv id,target: a signal in the "on" cadences (0, 2, 4) is the positive class
    rng = np.random.default_rng(11)
    comp = tmp_path / "seti"

    def cadences(signal: bool) -> np.ndarray:
        snippet = rng.standard_normal((6, 273, 256)).astype(np.float32)
        for k in ((0, 2, 4) if signal else (1, 3, 5)):
            snippet[k, :, 100:160] += 6.0  # a bright band: on the "on" cadences for a signal, else the "off"
        return snippet.astype(np.float16)

    def save(split: str, name: str, signal: bool) -> None:
        (comp / split / name[0]).mkdir(parents=True, exist_ok=True)
        np.save(comp / split / name[0] / f"{name}.npy", cadences(signal))

    rows = []
    for i in range(40):
        name = f"{i % 16:x}{i:014x}"
        save("train", name, bool(i % 2))
        rows.append((name, i % 2))
    pd.DataFrame(rows, columns=["id", "target"]).to_csv(comp / "train_labels.csv", index=False)
    answers = {}
    for i in range(14):
        name = f"f{i:014x}"
        save("test", name, bool(i % 2))
        answers[name] = i % 2
    pd.DataFrame({"id": list(answers), "target": 0.5}).to_csv(comp / "sample_submission.csv", index=False)

    record, lines = _run(tmp_path, comp, competition="seti-breakthrough-listen", heads=("logreg",))
    truth, p = _binary_probabilities(record, lines, "target", "roc_auc", answers)
    assert skm.roc_auc_score(truth, p) > 0.9
    _oof_metric_matches_the_record(record, skm.roc_auc_score)


def test_brain_tumor_scan_folders_of_dicom_series_scored_by_roc_auc(tmp_path, caplog):
    # train/<BraTS21ID>/{FLAIR,T1w,T1wCE,T2w}/Image-<n>.dcm (one folder of DICOM series a patient, as
    # rsna-miccai-brain-tumor-radiogenomic-classification ships them; test/ alike), train_labels.csv
    # BraTS21ID,MGMT_value with the ids' leading zeros; the sample BraTS21ID,MGMT_value = 0.5
    rng = np.random.default_rng(13)
    comp = tmp_path / "brain"

    def scan(folder: Path, positive: bool) -> None:
        for series in ("FLAIR", "T1w", "T1wCE", "T2w"):
            for k in range(1, 4):
                pixels = rng.integers(0, 200, (24, 24)).astype(np.uint16)
                if positive and series in ("FLAIR", "T2w"):
                    pixels[6:18, 6:18] += 800  # a bright lesion, on the FLAIR and T2 sequences
                write_dicom(folder / series / f"Image-{k}.dcm", pixels)

    ids = [f"{i:05d}" for i in range(0, 80, 2)]
    for k, i in enumerate(ids):
        scan(comp / "train" / i, bool(k % 2))
    pd.DataFrame({"BraTS21ID": ids, "MGMT_value": [k % 2 for k in range(len(ids))]}).to_csv(
        comp / "train_labels.csv", index=False)
    answers = {f"{i:05d}": k % 2 for k, i in enumerate(range(1, 28, 2))}
    for i, positive in answers.items():
        scan(comp / "test" / i, bool(positive))
    pd.DataFrame({"BraTS21ID": list(answers), "MGMT_value": 0.5}).to_csv(comp / "sample_submission.csv", index=False)

    record, lines = _run(tmp_path, comp, competition="rsna-miccai-brain-tumor-radiogenomic-classification",
                         heads=("logreg",))
    truth, p = _binary_probabilities(record, lines, "MGMT_value", "roc_auc", answers, id_column="BraTS21ID")
    assert "train/ holds scan folders (00000/, ...) of DICOM series" in caplog.text
    assert "test/ holds scan folders (00001/, ...) of DICOM series" in caplog.text
    assert skm.roc_auc_score(truth, p) > 0.9
    _oof_metric_matches_the_record(record, skm.roc_auc_score)


def test_statoil_band_records_in_7z_scored_by_log_loss(tmp_path):
    # train.json.7z / test.json.7z / sample_submission.csv.7z as MLE-bench writes them (py7zr): records of two 30 x 30
    # radar bands; an iceberg's bright blob sits top left, a ship's bottom right
    import py7zr

    rng = np.random.default_rng(12)
    comp, plain = tmp_path / "statoil", tmp_path / "plain"
    comp.mkdir()
    plain.mkdir()

    def record(name: str, iceberg: int) -> dict:
        bands = rng.normal(-25, 2, (2, 30, 30))
        corner = slice(3, 13) if iceberg else slice(17, 27)
        bands[:, corner, corner] += 15
        return {"id": name, "band_1": bands[0].ravel().round(3).tolist(), "band_2": bands[1].ravel().round(3).tolist(),
                "inc_angle": 38.0 + rng.random()}

    train = [{**record(f"{k:08x}", k % 2), "is_iceberg": k % 2} for k in range(40)]
    answers = {f"t{k:07x}": k % 2 for k in range(14)}
    test = [record(name, label) for name, label in answers.items()]
    (plain / "train.json").write_text(json.dumps(train))
    (plain / "test.json").write_text(json.dumps(test))
    pd.DataFrame({"id": list(answers), "is_iceberg": 0.5}).to_csv(plain / "sample_submission.csv", index=False)
    for name in ("train.json", "test.json", "sample_submission.csv"):
        with py7zr.SevenZipFile(comp / f"{name}.7z", "w") as archive:
            archive.write(plain / name, arcname=name)

    record_, lines = _run(tmp_path, comp, competition="statoil-iceberg-classifier-challenge", heads=("logreg",))
    truth, p = _binary_probabilities(record_, lines, "is_iceberg", "log_loss", answers)
    assert any("labels from train.json.7z" in line for line in lines)
    assert skm.log_loss(truth, p) < 0.5 * np.log(2)
    _oof_metric_matches_the_record(record_, lambda t, q: skm.log_loss(t, np.clip(q, 1e-7, 1 - 1e-7)))


def _band_weighted_auc(y, p) -> float:
    """alaska2's weighted AUC by brute force: the ROC curve sampled on a fine grid of false-positive rates."""
    fpr, tpr, _ = skm.roc_curve(y, p)
    grid = np.linspace(0, 1, 200_001)
    curve = np.interp(grid, fpr, tpr)
    low = np.trapezoid(np.clip(curve, 0, 0.4), grid)
    high = np.trapezoid(np.clip(curve - 0.4, 0, 0.6), grid)
    return (2 * low + high) / 1.4


def test_alaska2_class_folders_at_the_top_scored_by_weighted_auc(tmp_path):
    # Cover/, JMiPOD/, JUNIWARD/, UERD/ holding the same file names, Test/, sample Id,Label (Id with .jpg): Cover is
    # negative, every algorithm's folder positive (here the "hidden" change is a visible colour, so it is learnable)
    rng = np.random.default_rng(13)
    comp = tmp_path / "alaska2"
    colour = {"Cover": "red", "JMiPOD": "green", "JUNIWARD": "green", "UERD": "blue"}
    for folder, square in colour.items():
        (comp / folder).mkdir(parents=True)
        for k in range(12):
            write_image(comp / folder / f"{k + 1:05d}.jpg", _squares(rng, [square]))
    (comp / "Test").mkdir()
    answers = {}
    for k in range(16):
        folder = list(colour)[k % 4]
        write_image(comp / "Test" / f"{k + 1:04d}.jpg", _squares(rng, [colour[folder]]))
        answers[f"{k + 1:04d}.jpg"] = int(folder != "Cover")
    pd.DataFrame({"Id": list(answers), "Label": 0}).to_csv(comp / "sample_submission.csv", index=False)

    record, lines = _run(tmp_path, comp, competition="alaska2-image-steganalysis", heads=("logreg",))
    truth, p = _binary_probabilities(record, lines, "Label", "weighted_auc", answers, id_column="Id")
    assert any("labels from the class folders" in line for line in lines)
    assert get_metric("weighted_auc")(truth, p) == pytest.approx(_band_weighted_auc(truth, p), abs=1e-4)
    assert _band_weighted_auc(truth, p) > 41 / 70 + 0.3  # a constant scores 41/70
    _oof_metric_matches_the_record(record, get_metric("weighted_auc"))  # itself checked by brute force above


def test_dogs_vs_cats_labels_in_file_names_scored_by_log_loss(tmp_path):
    rng = np.random.default_rng(3)
    comp = tmp_path / "dogs-vs-cats"
    (comp / "train").mkdir(parents=True)
    (comp / "test").mkdir()
    for i in range(20):
        write_image(comp / "train" / f"cat.{i}.jpg", _squares(rng, ["red"]))
        write_image(comp / "train" / f"dog.{i}.jpg", _squares(rng, ["blue"]))
    answers = {}
    for i in range(1, 13):
        write_image(comp / "test" / f"{i}.jpg", _squares(rng, ["blue"] if i % 2 else ["red"]))
        answers[str(i)] = i % 2
    pd.DataFrame({"id": list(answers), "label": 0.5}).to_csv(comp / "sample_submission.csv", index=False)

    record, _ = _run(tmp_path, comp, competition="dogs-vs-cats-redux-kernels-edition", heads=("logreg",))
    assert (record.task.kind, record.task.metric_name, record.task.positive) == ("binary", "log_loss", "dog")
    sub = _submission(record)
    assert skm.log_loss([answers[i] for i in sub["id"]], sub["label"].astype(float)) < np.log(2) - 0.3


# --------------------------------------------------------------------------- ordinal
def test_aptos_grades_scored_by_qwk_with_cut_points_tuned_per_fold(tmp_path):
    rng = np.random.default_rng(4)
    comp = tmp_path / "aptos"
    (comp / "train_images").mkdir(parents=True)
    (comp / "test_images").mkdir()
    rows = []
    for i in range(50):
        grade = i % 5
        write_image(comp / "train_images" / f"a{i:03d}.png", _squares(rng, [], level=0.1 + 0.18 * grade))
        rows.append((f"a{i:03d}", grade))
    pd.DataFrame(rows, columns=["id_code", "diagnosis"]).to_csv(comp / "train.csv", index=False)
    answers = {}
    for i in range(15):
        write_image(comp / "test_images" / f"b{i:03d}.png", _squares(rng, [], level=0.1 + 0.18 * (i % 5)))
        answers[f"b{i:03d}"] = i % 5
    pd.DataFrame({"id_code": list(answers)}).to_csv(comp / "test.csv", index=False)
    pd.DataFrame({"id_code": list(answers), "diagnosis": 0}).to_csv(comp / "sample_submission.csv", index=False)

    record, _ = _run(tmp_path, comp, competition="aptos2019-blindness-detection", heads=("logreg", "ridge"))
    assert (record.task.kind, record.task.metric_name) == ("ordinal", "qwk")
    assert {m.response for m in record.models} == {"proba", "value"}  # both readings of a grade
    for model in range(2):
        sub = _submission(record, model)
        assert set(sub["diagnosis"]) <= {"0", "1", "2", "3", "4"}
        truth = [answers[i] for i in sub["id_code"]]
        assert skm.cohen_kappa_score(truth, sub["diagnosis"].astype(int), weights="quadratic") > 0.6
        preds = record.predictions(record.models[model].name)
        assert preds.decisions.shape == (4, 4)  # cut points per fold, and the test rows'
    _oof_metric_matches_the_record(record, lambda y, g: skm.cohen_kappa_score(y, g, weights="quadratic"))

    # Ensembles of a grades run: scored by QWK; the two readings (probabilities, a value) are not averaged.
    ensemble = ensemble_models(load_models([record])[0], out_root=tmp_path / "ens", submissions_dir=tmp_path / "subs")
    assert any("predicting another output" in note for note in ensemble.notes)
    table = ensemble.frame[ensemble.frame["section"] == "strategy"]
    assert set(table["metric"]) == {"qwk"} and table["cv_score"].is_monotonic_decreasing
    (path,) = ensemble.submissions.values()
    assert set(pd.read_csv(path, dtype=str)["diagnosis"]) <= {"0", "1", "2", "3", "4"}


# --------------------------------------------------------------------------- regression
@pytest.mark.parametrize("head", ["ridge", "svr"])
def test_pawpularity_value_in_range_scored_by_rmse(tmp_path, head):
    rng = np.random.default_rng(5)
    comp = tmp_path / "petfinder"
    (comp / "train").mkdir(parents=True)
    (comp / "test").mkdir()
    flags = ["Subject Focus", "Eyes", "Face", "Near"]
    rows = []
    for i in range(45):
        value = int(rng.integers(1, 101))
        write_image(comp / "train" / f"{i:032x}.jpg", _squares(rng, [], level=0.05 + 0.9 * value / 100))
        rows.append((f"{i:032x}", *rng.integers(0, 2, len(flags)), value))
    train = pd.DataFrame(rows, columns=["Id", *flags, "Pawpularity"])
    train.to_csv(comp / "train.csv", index=False)
    answers = {}
    for i in range(15):
        value = int(rng.integers(1, 101))
        write_image(comp / "test" / f"{1000 + i:032x}.jpg", _squares(rng, [], level=0.05 + 0.9 * value / 100))
        answers[f"{1000 + i:032x}"] = value
    pd.DataFrame({"Id": list(answers), **{f: 0 for f in flags}}).to_csv(comp / "test.csv", index=False)
    pd.DataFrame({"Id": list(answers), "Pawpularity": 50.0}).to_csv(comp / "sample_submission.csv", index=False)

    record, _ = _run(tmp_path, comp, competition="petfinder-pawpularity-score", heads=(head,))
    assert (record.task.kind, record.task.metric_name, record.task.value_range) == ("regression", "rmse", (1, 100))
    sub = _submission(record)
    values = sub["Pawpularity"].astype(float)
    assert values.between(1, 100).all()
    truth = np.array([answers[i] for i in sub["Id"]], dtype=float)
    assert np.sqrt(np.mean((values - truth) ** 2)) < 0.6 * truth.std()  # the constant mean scores ~ its std
    _oof_metric_matches_the_record(record, lambda y, v: np.sqrt(skm.mean_squared_error(y, v)))


# --------------------------------------------------------------------------- multi-label
def test_imet_tag_strings_scored_by_micro_f1_with_a_threshold_tuned_per_fold(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    comp = tmp_path / "imet"
    (comp / "train").mkdir(parents=True)
    (comp / "test").mkdir()
    tag_colour = {"13": "red", "51": "green", "202": "blue"}

    def draw_tags() -> list[str]:
        tags = [t for t in tag_colour if rng.random() < 0.5]
        return tags or [str(rng.choice(list(tag_colour)))]

    rows = []
    for i in range(90):
        tags = draw_tags()
        write_image(comp / "train" / f"m{i:03d}.png", _squares(rng, [tag_colour[t] for t in tags]))
        rows.append((f"m{i:03d}", " ".join(tags)))
    pd.DataFrame(rows, columns=["id", "attribute_ids"]).to_csv(comp / "train.csv", index=False)
    pd.DataFrame({"attribute_id": list(tag_colour), "attribute_name": ["tag::red", "tag::green", "tag::blue"]}).to_csv(
        comp / "labels.csv", index=False)  # maps ids to names: not the labels
    answers = {}
    for i in range(24):
        tags = draw_tags()
        write_image(comp / "test" / f"n{i:03d}.png", _squares(rng, [tag_colour[t] for t in tags]))
        answers[f"n{i:03d}"] = set(tags)
    pd.DataFrame({"id": list(answers), "attribute_ids": "0 1 2"}).to_csv(comp / "sample_submission.csv", index=False)

    record, _ = _run(tmp_path, comp, competition="imet-2020-fgvc7", heads=("logreg",))
    assert (record.task.kind, record.task.metric_name, record.task.form) == ("multilabel", "micro_f1", "tags")
    sub = _submission(record)
    predicted = [set(cell.split()) for cell in sub["attribute_ids"]]
    assert all(p and p <= set(tag_colour) for p in predicted)
    tags = sorted(tag_colour)
    truth = np.array([[t in answers[i] for t in tags] for i in sub["id"]])
    guess = np.array([[t in p for t in tags] for p in predicted])
    assert skm.f1_score(truth, guess, average="micro") > 0.8
    preds = record.predictions(record.models[0].name)
    assert preds.decisions.shape == (4, 1)  # one threshold per fold, and the test rows'
    _oof_metric_matches_the_record(record, lambda y, t: skm.f1_score(y, t, average="micro", zero_division=0))

    # The hidden re-run of a code competition: new test images, nothing refitted, the thresholds reused.
    for path in (comp / "test").iterdir():
        path.unlink()
    hidden = [f"h{i:03d}" for i in range(5)]
    for image_id in hidden:
        write_image(comp / "test" / f"{image_id}.png", _squares(rng, ["red"]))
    pd.DataFrame({"id": hidden, "attribute_ids": "0 1 2"}).to_csv(comp / "sample_submission.csv", index=False)
    monkeypatch.setattr("kaggle_tl.heads.linear.LogRegHead.fit", lambda *a, **k: pytest.fail("refitted"))
    again, _ = _run(tmp_path, comp, competition="imet-2020-fgvc7", heads=("logreg",))
    assert set(again.cache_entries["fits"].values()) == {"cache"}
    np.testing.assert_array_equal(again.predictions(again.models[0].name).decisions, preds.decisions)
    assert _submission(again)["id"].tolist() == hidden


def test_plant_pathology_one_hot_columns_in_one_images_folder_scored_by_column_auc(tmp_path):
    rng = np.random.default_rng(7)
    comp = tmp_path / "plant-pathology"
    (comp / "images").mkdir(parents=True)
    columns = ["healthy", "multiple_diseases", "rust", "scab"]
    colours = ["green", "magenta", "red", "yellow"]
    rows = []
    for i in range(48):
        write_image(comp / "images" / f"Train_{i}.jpg", _squares(rng, [colours[i % 4]]))
        rows.append((f"Train_{i}", *np.eye(4, dtype=int)[i % 4]))
    pd.DataFrame(rows, columns=["image_id", *columns]).to_csv(comp / "train.csv", index=False)
    answers = {}
    for i in range(16):
        write_image(comp / "images" / f"Test_{i}.jpg", _squares(rng, [colours[i % 4]]))
        answers[f"Test_{i}"] = i % 4
    pd.DataFrame({"image_id": list(answers)}).to_csv(comp / "test.csv", index=False)
    pd.DataFrame({"image_id": list(answers), **{c: 0.25 for c in columns}}).to_csv(comp / "sample_submission.csv",
                                                                                  index=False)
    record, _ = _run(tmp_path, comp, competition="plant-pathology-2020-fgvc7", heads=("logreg",))
    assert record.task.metric_name == "roc_auc" and record.task.classes == tuple(columns)
    sub = _submission(record)
    proba = sub[columns].astype(float).to_numpy()
    truth = np.eye(4)[[answers[i] for i in sub["image_id"]]]
    assert np.mean([skm.roc_auc_score(truth[:, j], proba[:, j]) for j in range(4)]) > 0.9


# --------------------------------------------------------------------------- top-k
def test_whales_top_5_with_the_catch_all_scored_by_map_at_5(tmp_path):
    rng = np.random.default_rng(8)
    comp = tmp_path / "whales"
    (comp / "train").mkdir(parents=True)
    (comp / "test").mkdir()
    whales = {"new_whale": "red", "w_1": "green", "w_2": "blue", "w_3": "yellow", "w_4": "magenta", "w_5": "cyan"}
    names = list(whales)
    rows = []
    for i in range(48):
        name = names[i % 6]
        write_image(comp / "train" / f"{i:05x}.jpg", _squares(rng, [whales[name]]))
        rows.append((f"{i:05x}.jpg", name))
    pd.DataFrame(rows, columns=["Image", "Id"]).to_csv(comp / "train.csv", index=False)
    answers = {}
    for i in range(12):
        write_image(comp / "test" / f"{0xa0000 + i:05x}.jpg", _squares(rng, [whales[names[i % 6]]]))
        answers[f"{0xa0000 + i:05x}.jpg"] = names[i % 6]
    pd.DataFrame({"Image": list(answers), "Id": "new_whale w_1 w_2 w_3 w_4"}).to_csv(comp / "sample_submission.csv",
                                                                                   index=False)
    record, _ = _run(tmp_path, comp, competition="whale-categorization-playground", heads=("logreg",))
    assert (record.task.kind, record.task.metric_name, record.task.k, record.task.catch_all) == (
        "topk", "map@5", 5, "new_whale")
    sub = _submission(record)
    ranked = [cell.split() for cell in sub["Id"]]
    assert all(len(r) == 5 and len(set(r)) == 5 and set(r) <= set(whales) for r in ranked)
    # MAP@5 by hand: 1 / rank of the true whale within the top 5.
    average_precision = [1 / (r.index(answers[i]) + 1) if answers[i] in r else 0 for i, r in zip(sub["Image"], ranked)]
    assert np.mean(average_precision) > 0.8  # the constant "new_whale w_1 w_2 w_3 w_4" scores ~0.38
