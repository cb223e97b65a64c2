"""Matplotlib figures for a run: strategy comparison, confusion matrix, t-SNE, confident errors, residuals of
values, per-tag F1.

Each function takes data and an output path, writes one PNG there and returns the path.
Figures are built with `matplotlib.figure.Figure` on the Agg canvas rather than `pyplot`, so
nothing is registered in pyplot's global figure list (no leaks in long runs, no GUI backend
needed, and the caller's own pyplot state is untouched).
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix, precision_recall_fscore_support
from threadpoolctl import threadpool_limits

from kaggle_tl.data.images import read_image
from kaggle_tl.errors import one_line
from kaggle_tl.runs.record import Predictions
from kaggle_tl.tasks.decisions import apply_threshold
from kaggle_tl.tasks.evaluate import decide_folds
from kaggle_tl.tasks.task import Task

logger = logging.getLogger(__name__)

DPI = 110

__all__ = ["plot_confident_errors", "plot_confusion_matrix", "plot_model", "plot_report", "plot_residuals",
           "plot_strategy_comparison", "plot_tag_f1", "plot_tsne", "tag_f1_table"]
# What a model's figures are: a new figure, or one drawn from other data, changes it, so the figure folders
# cached under the old key are redrawn once (2: residuals, per-tag F1, grades confused as decided).
FIGURES_VERSION = 2
TSNE_FILE = "tsne.png"
MAX_TAGS_DRAWN = 40  # per-tag F1 bars: the worst and best halves of this many; the CSV beside holds every tag


def _new_figure(width: float, height: float) -> Figure:
    """A figure attached to the Agg canvas, independent of pyplot."""
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | os.PathLike) -> Path:
    """Write the figure as PNG (creating the folder) and release its artists."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", bbox_inches="tight")
    figure.clear()
    logger.info("wrote %s", path)
    return path


def plot_strategy_comparison(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Each ensemble strategy's CV score (the competition's metric) with ±1 standard-error bars, best on top.

    The axis spans the data, not zero to the largest: strategies often differ by 0.002-0.05, which
    bars drawn from zero would hide. ``table`` is sorted best first (Score columns).
    """
    table = table.iloc[::-1]  # drawn bottom-up: the best on top
    figure = _new_figure(8, 1.2 + 0.45 * len(table))
    ax = figure.subplots()
    value, se = table["cv_score"].to_numpy(dtype=float), table["cv_score_se"].fillna(0).to_numpy(dtype=float)
    positions = np.arange(len(table))
    colours = ["tab:green" if i == len(table) - 1 else "tab:blue" for i in positions]
    ax.errorbar(value, positions, xerr=se, fmt="none", ecolor="0.4", capsize=3, zorder=1)
    ax.scatter(value, positions, c=colours, s=36, zorder=2)
    ax.set_yticks(positions, table["strategy"])
    low, high = float((value - se).min()), float((value + se).max())
    pad = max(high - low, 1e-3) * 0.08
    ax.set_xlim(low - pad, high + (high - low + 2 * pad) * 0.45)  # room right of the points for the labels
    for i, (v, error) in enumerate(zip(value, se)):
        ax.annotate(f"{v:.4f} ± {error:.4f}", (v + error, i), xytext=(6, 0), textcoords="offset points",
                    va="center", fontsize=8)
    metric, higher = str(table["metric"].iloc[0]), bool(table["greater_is_better"].iloc[0])
    ax.set_xlabel(f"CV {metric}, ±1 standard error ({'higher' if higher else 'lower'} is better)")
    ax.set_title("Ensemble strategies (nested CV)")
    ax.grid(axis="x", alpha=0.3)
    return _save(figure, path)


def plot_confusion_matrix(
    y: np.ndarray, predicted: np.ndarray, class_names: Sequence[str], path: str | os.PathLike
) -> Path:
    """Row-normalised confusion matrix of the (N,) ``predicted`` labels (each row: where a true class went)."""
    n_classes = len(class_names)
    matrix = confusion_matrix(y, predicted, labels=np.arange(n_classes), normalize="true")
    size = max(6.0, 0.55 * n_classes + 2.5)
    figure = _new_figure(size, size)
    ax = figure.subplots()
    display = ConfusionMatrixDisplay(matrix, display_labels=list(class_names))
    # Beyond ~25 classes the cell text is unreadable; the colours still show the structure.
    display.plot(
        ax=ax,
        cmap="Blues",
        values_format=".2f",
        include_values=n_classes <= 25,
        xticks_rotation=45 if n_classes > 6 else "horizontal",
        colorbar=False,
        text_kw={"fontsize": 9 if n_classes <= 10 else 7},
    )
    # A colorbar sized to the matrix, not to the whole figure height.
    figure.colorbar(display.im_, ax=ax, fraction=0.046, pad=0.04)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.set_title(f"Confusion matrix (normalised by true class, accuracy {np.mean(predicted == y):.3f})")
    return _save(figure, path)


def plot_tsne(
    features: np.ndarray,
    y: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    max_points: int = 2000,
    seed: int = 0,
) -> Path:
    """2-D t-SNE of the features (after PCA to 50 dims), coloured by label, on at most max_points rows.

    Raises ValueError, before t-SNE runs, for input it cannot embed: NaN or infinite values, fewer
    than 2 rows or classes, or features that are the same in every row (scikit-learn's t-SNE
    crashes the process on those, with a segmentation fault no caller could catch).
    """
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(features), size=min(max_points, len(features)), replace=False))
    X, labels = np.asarray(features[rows], dtype=np.float64), np.asarray(y)[rows]
    X = _embeddable(X, labels).astype(np.float32)
    n_components = min(50, X.shape[0], X.shape[1])
    if X.shape[1] > n_components:
        # t-SNE's neighbour search is much faster in 50 dims, and PCA drops mostly noise.
        X = PCA(n_components=n_components, random_state=seed).fit_transform(X)
    perplexity = min(30.0, (len(X) - 1) / 3)  # TSNE requires perplexity < n_samples
    # One OpenMP thread: on a loaded 2-core machine t-SNE took 10.1 s with the default pool and
    # 1.8 s with one thread (oversubscription, as for the heads).
    with threadpool_limits(limits=1):
        embedding = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(X)

    n_classes = len(class_names)
    colours = _class_colours(n_classes)
    figure = _new_figure(9, 7)
    ax = figure.subplots()
    for k in np.unique(labels):
        points = embedding[labels == k]
        ax.scatter(points[:, 0], points[:, 1], s=8, alpha=0.7, color=colours[k], label=str(class_names[k]))
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), markerscale=2, fontsize=8,
              ncol=1 if n_classes <= 25 else 2, frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE of features ({len(X)} points)")
    return _save(figure, path)


def _embeddable(X: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``X`` shifted and scaled into [0, 1], or ValueError saying why t-SNE cannot run.

    The scaling leaves t-SNE's result unchanged up to rounding (its neighbour bandwidths are
    searched per point, and its PCA initialisation is rescaled) but keeps tiny features (1e-30)
    from underflowing to the constant input that crashes it.
    """
    if not np.isfinite(X).all():
        raise ValueError(f"features have NaN or infinite values in {int((~np.isfinite(X).any(axis=1)).sum())} row(s)")
    if len(X) < 2 or len(np.unique(labels)) < 2:
        raise ValueError(f"needs at least 2 rows of 2 classes; got {len(X)} row(s) of {len(np.unique(labels))}")
    # Spread measured between rows, not around a mean, whose rounding would make equal rows differ.
    low = X.min(axis=0)
    spread = (X.max(axis=0) - low).max()
    if not spread > 0:
        raise ValueError(f"features are the same in all {len(X)} rows (a constant layer?)")
    return (X - low) / spread


def _class_colours(n_classes: int) -> list[tuple[float, float, float, float]]:
    """One distinct colour per class: qualitative maps up to 20 classes, a continuous one beyond."""
    if n_classes <= 20:
        cmap = colormaps["tab10" if n_classes <= 10 else "tab20"]
        return [cmap(i) for i in range(n_classes)]
    return [colormaps["turbo"](x) for x in np.linspace(0, 1, n_classes)]


def _short(name: str, width: int = 26) -> str:
    """Shorten a class name so neighbouring subplot titles do not overlap."""
    name = str(name)
    return name if len(name) <= width else name[: width - 1] + "…"


def plot_confident_errors(
    image_loader: Callable[[int], np.ndarray],
    y: np.ndarray,
    proba: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    n: int = 16,
    predicted: np.ndarray | None = None,
) -> Path:
    """Grid of the n most confidently wrong rows; image_loader(i) returns row i's RGB uint8 image.

    ``predicted``: each row's label as the submission decides it (grades cut from the expected
    grade), when that is not the most probable class.
    """
    predicted = np.argmax(proba, axis=1) if predicted is None else np.asarray(predicted)
    confidence = proba[np.arange(len(proba)), predicted]
    wrong = np.flatnonzero(predicted != y)
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:n]

    n_cols = max(1, math.ceil(math.sqrt(len(worst))))
    n_rows = max(1, math.ceil(len(worst) / n_cols))
    figure = _new_figure(3.4 * n_cols, 3.4 * n_rows)
    axes = figure.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    if len(worst) == 0:
        axes[0].text(0.5, 0.5, "no misclassified rows", ha="center", va="center", fontsize=14)
    for ax, i in zip(axes, worst):
        ax.imshow(image_loader(int(i)))
        true_name, predicted_name = _short(class_names[y[i]]), _short(class_names[predicted[i]])
        ax.set_title(f"true: {true_name}\npred: {predicted_name} (p={confidence[i]:.2f})", fontsize=8)
    figure.suptitle(f"Most confident errors ({len(wrong)} wrong of {len(y)})")
    return _save(figure, path)


def plot_residuals(truth: np.ndarray, predicted: np.ndarray, path: str | os.PathLike, title: str) -> Path:
    """Predicted against true values with the y = x line, and the residuals (predicted - true) against predicted.

    A fan in the right panel is variance growing with the value; a slope is shrinkage towards the
    mean, which a regularised head shows on weak features (high values under-, low ones over-predicted).
    """
    truth, predicted = np.asarray(truth, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    residuals = predicted - truth
    figure = _new_figure(12, 5.2)
    left, right = figure.subplots(1, 2)
    point_size = 10 if len(truth) <= 2000 else 3
    left.scatter(truth, predicted, s=point_size, alpha=0.5)
    low, high = float(min(truth.min(), predicted.min())), float(max(truth.max(), predicted.max()))
    left.plot([low, high], [low, high], color="tab:red", linewidth=1, label="y = x")
    left.set_xlabel("true value")
    left.set_ylabel("predicted (OOF)")
    left.legend(loc="upper left", frameon=False)
    right.scatter(predicted, residuals, s=point_size, alpha=0.5)
    right.axhline(0, color="tab:red", linewidth=1)
    right.set_xlabel("predicted (OOF)")
    right.set_ylabel("residual (predicted - true)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    rmse, bias = float(np.sqrt(np.mean(residuals ** 2))), float(residuals.mean())
    figure.suptitle(f"{title}\nRMSE {rmse:.4f}, mean residual {bias:+.4f}, {len(truth)} rows")
    return _save(figure, path)


def tag_f1_table(y: np.ndarray, decided: np.ndarray, tag_names: Sequence[str]) -> pd.DataFrame:
    """One row per tag, best F1 first (ties: more support first): support (true rows), predicted rows,
    precision, recall and F1 of the (N, L) 0/1 ``decided`` tags against the (N, L) ``y``."""
    y, decided = np.asarray(y), np.asarray(decided)
    precision, recall, f1, support = precision_recall_fscore_support(y, decided, average=None, zero_division=0)
    table = pd.DataFrame({"tag": [str(t) for t in tag_names], "support": support.astype(np.int64),
                          "predicted": decided.sum(axis=0).astype(np.int64), "precision": precision, "recall": recall,
                          "f1": f1})
    return table.sort_values(["f1", "support"], ascending=False, kind="stable").reset_index(drop=True)


def plot_tag_f1(table: pd.DataFrame, path: str | os.PathLike, title: str, max_tags: int = MAX_TAGS_DRAWN) -> Path:
    """Each tag's F1 as a bar labelled with its support, best on top; beyond ``max_tags`` tags only the best and
    worst halves are drawn (a catalogue of 3,000 tags as bars is unreadable), the gap between them marked.

    ``table`` is ``tag_f1_table``'s, sorted best first.
    """
    shown = table if len(table) <= max_tags else pd.concat([table.head(max_tags // 2), table.tail(max_tags // 2)])
    gap = len(table) - len(shown)
    labels = [f"{_short(tag)} (n={n})" for tag, n in zip(shown["tag"], shown["support"])]
    values = shown["f1"].to_numpy(dtype=float)
    positions = np.arange(len(shown))[::-1].astype(float)  # best on top
    if gap:
        positions[max_tags // 2:] -= 1  # a free row between the best and the worst halves
    figure = _new_figure(8, 1.4 + 0.28 * (len(shown) + bool(gap)))
    ax = figure.subplots()
    ax.barh(positions, values, color=colormaps["RdYlGn"](values), edgecolor="0.3", linewidth=0.4)
    ax.set_yticks(positions, labels, fontsize=8)
    if gap:
        ax.text(0.5, positions[max_tags // 2 - 1] - 1, f"... {gap} tags not drawn (all in the CSV) ...",
                ha="center", va="center", fontsize=8, color="0.35")
    for position, value in zip(positions, values):
        ax.annotate(f"{value:.2f}", (value, position), xytext=(3, 0), textcoords="offset points", va="center",
                    fontsize=7)
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("F1 of the tag on the OOF rows, at the decision the submission used")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _save(figure, path)


def plot_model(
    folder: str | os.PathLike,
    task: Task,
    preds: Predictions,
    title: str,
    image_paths: Sequence[str | os.PathLike] | None = None,
    features: np.ndarray | None = None,
    tsne_png: bytes | None = None,
) -> dict[str, Path]:
    """One model's figures from its view-averaged OOF predictions, those its task allows, as
    ``folder/<name>.png`` (and ``tag_f1_table.csv``); returns name -> path. ``title`` names the model and its score.
    ``tsne_png``: the t-SNE of these features and labels drawn before, written instead of drawn again.

    The one place that asks the Task which figures fit: a value gets ``residuals``; tags the
    per-tag F1 (``tag_f1``); classes and grades a ``confusion`` matrix of the labels the
    submission decides (grades cut from the expected grade or a value head's value, which also
    gets ``residuals`` against the true grade); class probabilities also ``tsne`` and ``errors``.
    Every decision is the one the CV score read: each fold's rows decided with that fold's rule.
    """
    y, oof = preds.y, preds.oof_mean
    decided = decide_folds(task, oof, preds.folds, preds.decisions)
    jobs: dict[str, Callable[[Path], Path]] = {}
    if task.kind == "regression":
        jobs["residuals"] = lambda path: plot_residuals(y, decided, path, title)
    elif task.kind == "multilabel":
        # Submitted probabilities have no decision: the tags are read at 0.5, the rule's untuned default.
        tags = decided if task.tuned_decision else apply_threshold(oof, np.array([0.5]))
        jobs["tag_f1"] = lambda path: _tag_f1_with_table(tag_f1_table(y, tags, task.classes), path, title)
    else:
        labels = decided if task.form == "label" else oof.argmax(axis=1)
        jobs["confusion"] = lambda path: plot_confusion_matrix(y, labels, task.classes, path)
        if oof.shape[1] == 1:
            jobs["residuals"] = lambda path: plot_residuals(task.grades[y], task.signal(oof), path,
                                                            f"{title} (grades cut from these values)")
        if task.class_probabilities(oof.shape[1]):
            jobs.update(_class_figures(y, oof, task.classes, image_paths, features, labels))
            if tsne_png is not None and "tsne" in jobs:
                jobs["tsne"] = lambda path: _write_png(path, tsne_png)
    return _draw(folder, jobs)


def _write_png(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _tag_f1_with_table(table: pd.DataFrame, path: Path, title: str) -> Path:
    """The per-tag F1 figure at ``path`` and every tag's row in the CSV beside it (``<name>_table.csv``)."""
    csv = path.with_name(f"{path.stem}_table.csv")
    csv.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv, index=False)
    return plot_tag_f1(table, path, title)


def _class_figures(y: np.ndarray, proba: np.ndarray, class_names: Sequence[str],
                   image_paths: Sequence[str | os.PathLike] | None, features: np.ndarray | None,
                   predicted: np.ndarray | None = None) -> dict[str, Callable[[Path], Path]]:
    """The figures of class probabilities that the given data allows: ``tsne`` (features), ``errors`` (images)."""
    jobs: dict[str, Callable[[Path], Path]] = {}
    if features is not None:
        jobs["tsne"] = lambda path: plot_tsne(features, y, class_names, path, max_points=1000)
    if image_paths is not None:
        # Each tile is drawn about 370 px wide: a phone photo need not be decoded at full size.
        jobs["errors"] = lambda path: plot_confident_errors(lambda i: read_image(image_paths[i], min_side=400), y,
                                                            proba, class_names, path, predicted=predicted)
    return jobs


def _draw(folder: str | os.PathLike, jobs: dict[str, Callable[[Path], Path]]) -> dict[str, Path]:
    """Run each job on ``folder/<name>.png``; one that fails (an image deleted since the run, constant or NaN
    features, say) is logged on one line and skipped: the predictions it describes are already saved, and a
    missing picture must not cost them."""
    written = {}
    for name, plot in jobs.items():
        try:
            written[name] = plot(Path(folder) / f"{name}.png")
        except Exception as exc:  # noqa: BLE001 -- see the docstring
            logger.warning("could not draw %s.png: %s", name, one_line(exc))
    return written


def plot_report(
    folder: str | os.PathLike,
    y: np.ndarray,
    proba: np.ndarray,
    class_names: Sequence[str],
    image_paths: Sequence[str | os.PathLike] | None = None,
    features: np.ndarray | None = None,
    strategy_table: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """The figures the given data allows, as ``folder/<name>.png``; returns name -> path.

    ``strategies`` needs ``strategy_table``; ``confusion`` the (N, C) OOF ``proba``; ``tsne`` the
    (N, D) ``features``; ``errors`` the train ``image_paths``. A figure that fails is logged and
    skipped (``_draw``). For class probabilities only: a run's model gets ``plot_model``.
    """
    jobs: dict[str, Callable[[Path], Path]] = {}
    if strategy_table is not None:
        jobs["strategies"] = lambda path: plot_strategy_comparison(strategy_table, path)
    jobs["confusion"] = lambda path: plot_confusion_matrix(y, np.argmax(proba, axis=1), class_names, path)
    jobs.update(_class_figures(y, proba, class_names, image_paths, features))
    return _draw(folder, jobs)
