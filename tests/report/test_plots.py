"""Each plot writes a non-empty PNG that matplotlib can read back; a run draws the figures its task allows."""
from pathlib import Path

import cv2
import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from conftest import write_image
from kaggle_tl.config import RunConfig
from kaggle_tl.pipeline import run
from kaggle_tl.report.plots import (plot_confident_errors, plot_confusion_matrix, plot_model, plot_report,
                                    plot_strategy_comparison, plot_tsne)
from kaggle_tl.runs.record import Predictions
from kaggle_tl.tasks.task import Task

N_ROWS, N_CLASSES = 120, 12
CLASS_NAMES = [f"class_{k}" for k in range(N_CLASSES)]


@pytest.fixture(scope="module")
def labelled():
    """Labels, mostly-right probabilities, and features that cluster by class."""
    rng = np.random.default_rng(0)
    y = np.arange(N_ROWS) % N_CLASSES
    proba = rng.dirichlet(np.ones(N_CLASSES), N_ROWS) + 2.0 * np.eye(N_CLASSES)[y] * (rng.random(N_ROWS) < 0.7)[:, None]
    proba /= proba.sum(axis=1, keepdims=True)
    features = rng.normal(size=(N_ROWS, 64)) + 4.0 * np.eye(N_CLASSES, 64)[y]
    return y, proba, features


def _image_loader(i: int) -> np.ndarray:
    """A small RGB image whose colour depends on the row."""
    return np.full((32, 32, 3), (i * 37) % 256, dtype=np.uint8)


def _plot_calls(labelled, tmp_path):
    y, proba, features = labelled
    table = pd.DataFrame(
        {
            "strategy": ["stacking", "greedy", "weighted", "mean"],  # best first, as compare_strategies sorts
            "metric": "log_loss", "greater_is_better": False,
            "cv_score": [0.29, 0.31, 0.32, 0.40],
            "cv_score_se": [0.014, 0.010, 0.011, 0.009],
            "description": ["", "", "", ""],
        }
    )
    return {
        "strategies": lambda path: plot_strategy_comparison(table, path),
        "confusion": lambda path: plot_confusion_matrix(y, proba.argmax(axis=1), CLASS_NAMES, path),
        "tsne": lambda path: plot_tsne(features, y, CLASS_NAMES, path, max_points=100),
        "errors": lambda path: plot_confident_errors(_image_loader, y, proba, CLASS_NAMES, path, n=9),
        "no_errors": lambda path: plot_confident_errors(_image_loader, y, np.eye(N_CLASSES)[y], CLASS_NAMES, path),
    }


@pytest.mark.parametrize("plot", ["strategies", "confusion", "tsne", "errors", "no_errors"])
def test_plot_writes_readable_png(labelled, tmp_path, plot):
    path = tmp_path / "figures" / f"{plot}.png"
    assert _plot_calls(labelled, tmp_path)[plot](path) == path
    assert path.stat().st_size > 1000
    pixels = matplotlib.image.imread(path)
    height, width, channels = pixels.shape
    assert 200 <= height <= 4000 and 300 <= width <= 4000
    assert channels in (3, 4)
    assert pixels[..., :3].std() > 0.01  # not a blank canvas


def test_plot_report_draws_what_it_can_and_skips_what_fails(labelled, tmp_path, caplog):
    y, proba, features = labelled
    table = pd.DataFrame({"strategy": ["greedy", "mean"], "metric": "accuracy", "greater_is_better": True,
                          "cv_score": [0.9, 0.8], "cv_score_se": [0.01, 0.02]})
    missing_images = [str(tmp_path / f"gone{i}.png") for i in range(len(y))]
    written = plot_report(tmp_path / "report", y, proba, CLASS_NAMES, image_paths=missing_images,
                          strategy_table=table)
    assert set(written) == {"strategies", "confusion"}  # errors.png needs images that no longer exist
    assert all(path.stat().st_size > 1000 for path in written.values())
    assert "could not draw errors.png" in caplog.text


@pytest.mark.parametrize("case, reason", [
    ("zeros", "features are the same in all"),  # a user model whose layer outputs zeros: a segfault before
    ("constant", "features are the same in all"),
    ("nan", "NaN or infinite values in 1 row"),
    ("one-class", "needs at least 2 rows of 2 classes"),
    ("one-row", "needs at least 2 rows of 2 classes"),
])
def test_plot_report_skips_a_tsne_it_cannot_draw_and_keeps_the_rest(labelled, tmp_path, caplog, case, reason):
    y, proba, features = labelled
    features = {"zeros": np.zeros_like(features), "constant": np.full_like(features, 0.7),
                "nan": np.where(np.arange(len(y))[:, None] == 5, np.nan, features),
                "one-class": features, "one-row": features[:1]}[case]
    y = {"one-class": np.zeros_like(y), "one-row": y[:1]}.get(case, y)
    proba = proba[:len(y)]
    written = plot_report(tmp_path / "report", y, proba, CLASS_NAMES, features=features)
    assert set(written) == {"confusion"}
    warnings = [r.getMessage() for r in caplog.records if "tsne.png" in r.getMessage()]
    assert len(warnings) == 1 and reason in warnings[0] and "\n" not in warnings[0]


def test_tsne_of_tiny_but_varied_features_is_drawn(labelled, tmp_path):
    y, _, features = labelled
    path = plot_tsne(features * 1e-30, y, CLASS_NAMES, tmp_path / "tsne.png", max_points=100)
    assert path.stat().st_size > 1000


def test_plot_report_draws_the_errors_from_image_files(labelled, tmp_path):
    y, proba, _ = labelled
    paths = []
    for i in range(len(y)):
        paths.append(tmp_path / f"img{i}.jpg")
        paths[-1].write_bytes(cv2.imencode(".jpg", _image_loader(i))[1].tobytes())
    written = plot_report(tmp_path / "report", y, proba, CLASS_NAMES, image_paths=paths)
    assert set(written) == {"confusion", "errors"} and written["errors"].stat().st_size > 1000


# --------------------------------------------------------------------------- a model's figures, by task
def _predictions(oof: np.ndarray, y: np.ndarray, decisions: np.ndarray | None = None, n_folds: int = 3) -> Predictions:
    folds = np.arange(len(y)) % n_folds
    return Predictions(views=["original"], oof=oof[None], test=np.zeros((1, n_folds, 2, oof.shape[1])), folds=folds,
                       y=y, decisions=decisions)


def _is_png(path: Path) -> bool:
    pixels = matplotlib.image.imread(path)
    return pixels.ndim == 3 and min(pixels.shape[:2]) >= 200 and pixels[..., :3].std() > 0.01


def test_a_grades_value_head_gets_the_confusion_of_its_decided_grades_and_residuals(tmp_path, caplog):
    task = Task("ordinal", "qwk", "id", ("grade",), classes=("0", "1", "2", "3"))
    rng = np.random.default_rng(0)
    y = np.arange(60) % 4
    signal = y + rng.normal(0, 0.4, len(y))
    cuts = np.array([[0.5, 1.5, 2.5], [0.4, 1.6, 2.5], [0.6, 1.5, 2.4], [0.5, 1.5, 2.5]])
    preds = _predictions(signal[:, None], y, cuts)
    written = plot_model(tmp_path, task, preds, "m: CV qwk 0.9", features=rng.normal(size=(60, 8)))
    assert set(written) == {"confusion", "residuals"} and all(_is_png(p) for p in written.values())
    assert "could not draw" not in caplog.text


def test_confusion_of_grades_counts_the_grades_the_cut_points_decide(tmp_path, monkeypatch):
    task = Task("ordinal", "qwk", "id", ("grade",), classes=("0", "1", "2"))
    y = np.array([0, 1, 2, 0, 1, 2])
    proba = np.array([[0.6, 0.4, 0.0], [0.5, 0.5, 0.0], [0.0, 0.4, 0.6]] * 2)  # expected grades 0.4, 0.5, 1.6
    cuts = np.array([[0.45, 1.5]] * 3)  # argmax would say 0, 0, 2; the cuts say 0, 1, 2
    drawn = {}
    monkeypatch.setattr("kaggle_tl.report.plots.plot_confusion_matrix",
                        lambda y, predicted, names, path: drawn.setdefault("predicted", predicted) is None or path)
    plot_model(tmp_path, task, _predictions(proba, y, cuts, n_folds=2), "m")
    np.testing.assert_array_equal(drawn["predicted"], [0, 1, 2, 0, 1, 2])


def test_more_tags_than_drawn_keep_every_tag_in_the_table(tmp_path):
    n_tags = 90
    task = Task("multilabel", "micro_f1", "id", ("tags",), classes=tuple(f"t{j}" for j in range(n_tags)))
    rng = np.random.default_rng(1)
    y = (rng.random((200, n_tags)) < 0.1).astype(np.uint8)
    proba = np.clip(y * rng.uniform(0.2, 1.0, n_tags) + rng.random(y.shape) * 0.5, 0, 1)
    written = plot_model(tmp_path, task, _predictions(proba, y, np.full((4, 1), 0.45)), "m: CV micro_f1 0.7")
    assert set(written) == {"tag_f1"} and _is_png(written["tag_f1"])
    table = pd.read_csv(tmp_path / "tag_f1_table.csv", dtype={"tag": str})
    assert sorted(table["tag"]) == sorted(task.classes) and table["f1"].is_monotonic_decreasing
    assert (table["support"] == pd.Series(y.sum(axis=0), index=task.classes)[table["tag"]].to_numpy()).all()


def _paw_competition(folder: Path, rng: np.random.Generator) -> Path:
    """Pawpularity's layout (train/<Id>.jpg, train.csv Id, ..., Pawpularity): the image's brightness is the value."""
    for split, n in (("train", 30), ("test", 6)):
        (folder / split).mkdir(parents=True)
        rows = []
        for i in range(n):
            value = int(rng.integers(1, 101))
            level = int(255 * (0.05 + 0.9 * value / 100))
            write_image(folder / split / f"{split}{i:05d}.jpg", np.full((40, 40, 3), level, np.uint8)
                        + rng.integers(0, 20, (40, 40, 3), dtype=np.uint8))
            rows.append((f"{split}{i:05d}", value))
        frame = pd.DataFrame(rows, columns=["Id", "Pawpularity"])
        frame.to_csv(folder / f"{split}.csv", index=False, columns=["Id", "Pawpularity"] if split == "train" else ["Id"])
        if split == "test":
            frame.assign(Pawpularity=50.0).to_csv(folder / "sample_submission.csv", index=False)
    return folder


def _imet_competition(folder: Path, rng: np.random.Generator) -> Path:
    """iMet's layout (train/<id>.png, train.csv id, attribute_ids "13 51"): each tag draws a square of its colour."""
    colours = {"13": (230, 30, 30), "51": (30, 200, 30), "202": (40, 60, 230)}
    for split, n in (("train", 45), ("test", 6)):
        (folder / split).mkdir(parents=True)
        rows = []
        for i in range(n):
            tags = [t for t in colours if rng.random() < 0.5] or [str(rng.choice(list(colours)))]
            image = np.full((40, 40, 3), 50, np.uint8)
            for tag in tags:
                y0, x0 = rng.integers(0, 24, 2)
                image[y0:y0 + 16, x0:x0 + 16] = colours[tag]
            write_image(folder / split / f"{split}{i:03d}.png", image)
            rows.append((f"{split}{i:03d}", " ".join(tags)))
        frame = pd.DataFrame(rows, columns=["id", "attribute_ids"])
        if split == "train":
            frame.to_csv(folder / "train.csv", index=False)
        else:
            frame.assign(attribute_ids="13 51 202").to_csv(folder / "sample_submission.csv", index=False)
    return folder


def _run(tmp_path: Path, comp: Path, competition: str, head: str):
    return run(RunConfig(data=str(comp), competition=competition, backbones=("mobilenet_v2",), weights="none",
                         image_size=32, stages=1, views=("original",), folds=3, heads=(head,),
                         cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"),
                         submissions_dir=str(tmp_path / "subs")))


def test_a_values_run_draws_the_residuals_of_its_best_model(tmp_path):
    comp = _paw_competition(tmp_path / "petfinder", np.random.default_rng(5))
    record = _run(tmp_path, comp, "petfinder-pawpularity-score", "ridge")
    assert record.task.kind == "regression" and not any("figures skipped" in n for n in record.notes)
    assert record.plots == {"residuals": "residuals.png"}
    assert _is_png(record.plots_dir / "residuals.png")


def test_a_tags_run_draws_per_tag_f1_at_the_thresholds_its_submission_used(tmp_path):
    comp = _imet_competition(tmp_path / "imet", np.random.default_rng(6))
    record = _run(tmp_path, comp, "imet-2020-fgvc7", "logreg")
    assert (record.task.kind, record.task.form) == ("multilabel", "tags")
    assert record.plots == {"tag_f1": "tag_f1.png", "tag_f1_table": "tag_f1_table.csv"}
    assert _is_png(record.plots_dir / "tag_f1.png")
    table = pd.read_csv(record.plots_dir / "tag_f1_table.csv", dtype={"tag": str}).set_index("tag")
    assert sorted(table.index) == sorted(record.task.classes)

    preds = record.predictions(record.models[0].name)
    decided = np.empty_like(preds.y)
    for k in range(3):  # each fold's OOF rows at that fold's threshold, as the CV score reads them
        rows = preds.folds == k
        proba = preds.oof_mean[rows]
        decided[rows] = proba >= preds.decisions[k, 0]
        empty = np.flatnonzero(~decided[rows].any(axis=1))
        decided[np.flatnonzero(rows)[empty], proba[empty].argmax(axis=1)] = 1  # a row's most probable tag at least
    for j, tag in enumerate(record.task.classes):
        assert table.loc[tag, "f1"] == pytest.approx(f1_score(preds.y[:, j], decided[:, j], zero_division=0))
        assert table.loc[tag, "support"] == preds.y[:, j].sum()
