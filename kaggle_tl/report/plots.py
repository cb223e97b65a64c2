"""Matplotlib figures for a run: strategy comparison, confusion matrix, t-SNE, confident errors.

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
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix
from threadpoolctl import threadpool_limits

from kaggle_tl.data.images import read_image
from kaggle_tl.errors import one_line

logger = logging.getLogger(__name__)

DPI = 110

__all__ = ["plot_confident_errors", "plot_confusion_matrix", "plot_report", "plot_strategy_comparison", "plot_tsne"]


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
    y: np.ndarray, proba: np.ndarray, class_names: Sequence[str], path: str | os.PathLike
) -> Path:
    """Row-normalised confusion matrix of argmax predictions (each row: where a true class went)."""
    n_classes = len(class_names)
    matrix = confusion_matrix(y, np.argmax(proba, axis=1), labels=np.arange(n_classes), normalize="true")
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
    ax.set_title(f"Confusion matrix (normalised by true class, accuracy {np.mean(np.argmax(proba, 1) == y):.3f})")
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
) -> Path:
    """Grid of the n most confidently wrong rows; image_loader(i) returns row i's RGB uint8 image."""
    predicted = np.argmax(proba, axis=1)
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
    (N, D) ``features``; ``errors`` the train ``image_paths``. A figure that fails (an image
    deleted since the run, constant or NaN features, say) is logged on one line and skipped: the
    predictions it describes are already saved, and a missing picture must not cost them.
    """
    folder = Path(folder)
    jobs: dict[str, Callable[[Path], Path]] = {}
    if strategy_table is not None:
        jobs["strategies"] = lambda path: plot_strategy_comparison(strategy_table, path)
    jobs["confusion"] = lambda path: plot_confusion_matrix(y, proba, class_names, path)
    if features is not None:
        jobs["tsne"] = lambda path: plot_tsne(features, y, class_names, path, max_points=1000)
    if image_paths is not None:
        # Each tile is drawn about 370 px wide: a phone photo need not be decoded at full size.
        jobs["errors"] = lambda path: plot_confident_errors(lambda i: read_image(image_paths[i], min_side=400), y,
                                                            proba, class_names, path)
    written = {}
    for name, plot in jobs.items():
        try:
            written[name] = plot(folder / f"{name}.png")
        except Exception as exc:  # noqa: BLE001 -- see the docstring
            logger.warning("could not draw %s.png: %s", name, one_line(exc))
    return written
