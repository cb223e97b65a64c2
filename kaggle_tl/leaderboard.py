"""Local CV leaderboard: every model of every run on one data set, ranked by CV log loss.

Beside each score, its standard error over rows; beside each model, its paired log-loss
difference from the best model on the same rows (metrics.versus_best) and whether that
difference is within noise (within 2 standard errors of zero). Tables are written twice: CSV
(cells a spreadsheet would run as a formula are escaped) and Markdown.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd

from kaggle_tl import metrics
from kaggle_tl.cache import atomic_write_bytes
from kaggle_tl.runs import RunModel

COLUMNS = ["rank", "cv_logloss", "logloss_se", "cv_accuracy", "accuracy_se", "diff_vs_best", "diff_se",
           "within_noise", "run_id", "model", "backbones", "head", "views", "folds", "weights", "note", "date",
           "submission"]
# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
OPTIMISTIC_NOTE = "optimistic: stopped early on the scored fold"


def leaderboard_table(models: list[RunModel], per_view: bool = False) -> pd.DataFrame:
    """One row per model (per model and view with ``per_view``), best CV log loss first.

    A model's row scores its view-averaged OOF predictions, the ones its submission was built
    from; per-view rows score each view alone and have no submission of their own. Paired
    differences are taken against the best row, on the rows both were scored on (runs that left
    out different unusable images have none).
    """
    rows, oof_by_row = [], []
    for model in models:
        run, entry, preds = model.run, model.entry, model.predictions
        base = {"run_id": run.run_id, "model": entry.name, "head": entry.head, "backbones": "+".join(entry.backbones),
                "views": "+".join(preds.views), "folds": run.config.get("folds"),
                "weights": "none (random)" if run.random_weights else _short_weights(run.config.get("weights")),
                "note": OPTIMISTIC_NOTE if entry.optimistic else "", "date": run.created.replace("T", " ")[:16]}
        columns = [("+".join(preds.views), preds.oof_mean, entry.submission)]
        if per_view and len(preds.views) > 1:
            columns = [(view, preds.oof[v], "") for v, view in enumerate(preds.views)] + columns
        for view, proba, submission in columns:
            scores = metrics.score(preds.y, proba)
            rows.append({**base, **({"view": view} if per_view else {}), "cv_logloss": scores["logloss"],
                         "logloss_se": scores["logloss_se"], "cv_accuracy": scores["accuracy"],
                         "accuracy_se": scores["accuracy_se"], "submission": submission})
            oof_by_row.append((tuple(run.train_ids), preds.y, proba))
    if rows:
        rows_of, y_of, proba_of = zip(*oof_by_row)
        for row, paired in zip(rows, metrics.versus_best([r["cv_logloss"] for r in rows], y_of, proba_of, rows_of)):
            row.update(paired)
    columns = COLUMNS[:11] + ["view"] + COLUMNS[11:] if per_view else COLUMNS
    table = pd.DataFrame(rows, columns=[c for c in columns if c != "rank"])
    table = table.sort_values(["cv_logloss", "date"], kind="stable", ignore_index=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table


def _short_weights(weights: str | None) -> str:
    """'imagenet', or a weights path shortened to its last component."""
    return Path(str(weights)).name if weights else ""


def escape_formula(value: Any) -> Any:
    """Prefix ' to a text cell a spreadsheet would otherwise evaluate (=, +, -, @, tab, CR)."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def to_markdown(table: pd.DataFrame, float_format: str = "{:.4f}") -> str:
    """A GitHub-flavoured Markdown table; '|' inside cells is escaped."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "" if pd.isna(value) else float_format.format(value)
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, table.columns)) + " |",
             "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(table[c]) else "---" for c in table.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_table(table: pd.DataFrame, folder: str | Path, stem: str) -> tuple[Path, Path]:
    """Write ``<folder>/<stem>.csv`` (formula-escaped text cells) and ``<stem>.md``; return both paths."""
    folder = Path(folder)
    escaped = table.copy()
    for column in escaped.columns:
        if not pd.api.types.is_numeric_dtype(escaped[column]):  # text: object or pandas' str dtype
            escaped[column] = escaped[column].map(escape_formula)
    buffer = io.StringIO()
    escaped.to_csv(buffer, index=False, float_format="%.6g")
    csv_path, md_path = folder / f"{stem}.csv", folder / f"{stem}.md"
    atomic_write_bytes(csv_path, buffer.getvalue().encode("utf-8"))
    atomic_write_bytes(md_path, to_markdown(table).encode("utf-8"))
    return csv_path, md_path
