"""Each plot writes a non-empty PNG that matplotlib can read back."""
import cv2
import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from kaggle_tl.report.plots import (plot_confident_errors, plot_confusion_matrix, plot_report, plot_strategy_comparison,
                                    plot_tsne)

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
        "confusion": lambda path: plot_confusion_matrix(y, proba, CLASS_NAMES, path),
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
