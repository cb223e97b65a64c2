"""Local CV leaderboard: every model of every run on one data set, ranked by CV log loss.

Tables are written twice: CSV (cells a spreadsheet would run as a formula are escaped) and
Markdown (for a README or a discussion post).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd

from kaggle_tl.cache import atomic_write_bytes

COLUMNS = ["rank", "cv_logloss", "cv_accuracy", "run_id", "model", "backbones", "head", "views", "folds",
           "weights", "date", "submission"]
# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def leaderboard_table(records: list[dict[str, Any]], per_view: bool = False) -> pd.DataFrame:
    """One row per model of each run (per model and view with ``per_view``), best CV log loss first.

    A model's row scores its view-averaged OOF predictions, the ones its submission was built
    from; per-view rows come from the model's ``scores.csv`` and have no submission of their own.
    """
    rows = []
    for record in records:
        config = record.get("config", {})
        common = {
            "run_id": record["run_id"],
            "views": "+".join(record.get("views", [])),
            "folds": config.get("folds"),
            "weights": "none (random)" if record.get("random_weights") else _short_weights(config.get("weights")),
            "date": str(record.get("created", "")).replace("T", " ")[:16],
        }
        for model in record.get("models", []):
            base = {**common, "model": model["name"], "head": model["head"],
                    "backbones": "+".join(model.get("backbones") or config.get("backbones", []))}
            if not per_view:
                rows.append({**base, "cv_logloss": model["cv_logloss"], "cv_accuracy": model["cv_accuracy"],
                             "submission": model.get("submission", "")})
                continue
            scores = pd.read_csv(Path(record["run_dir"]) / "models" / model["name"] / "scores.csv", dtype={"fold": str})
            for row in scores[scores["fold"] == "all"].itertuples():
                averaged = row.view == base["views"]  # the view-average row, or the only view without flips
                rows.append({**base, "view": row.view, "cv_logloss": row.logloss, "cv_accuracy": row.accuracy,
                             "submission": model.get("submission", "") if averaged else ""})
    columns = COLUMNS[:6] + ["view"] + COLUMNS[6:] if per_view else COLUMNS
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
