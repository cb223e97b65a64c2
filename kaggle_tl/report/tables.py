"""Tables as files (CSV and Markdown, every column) and as terminal text (the columns a person decides on).

A terminal line is at most ``TERMINAL_WIDTH`` columns: the leaderboard and the ensemble table
are wide (paths, descriptions, a dozen numbers), so the terminal shows a chosen few, long text
cut with an ellipsis, and the full table goes to the files.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from kaggle_tl.files import atomic_write_bytes

TERMINAL_WIDTH = 120
# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Column:
    """One terminal column: its header, how a row becomes its text, and whether it gives way when too wide."""

    header: str
    text: Callable[[Any], str]
    flexible: bool = False  # cut to share the width left by the others
    align: str = ">"  # ">" numbers, "<" text


def plus_minus(value: float, se: float) -> str:
    if pd.isna(value):
        return ""
    return f"{value:.4f}±{se:.4f}" if not pd.isna(se) else f"{value:.4f}"


def cut(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:max(0, width - 1)] + "…"


def terminal_text(table: pd.DataFrame, columns: list[Column], width: int = TERMINAL_WIDTH) -> str:
    """``table`` as aligned text no line of which is wider than ``width``."""
    cells = [[" ".join(column.text(row).split()) for row in table.itertuples(index=False)] for column in columns]
    natural = [max([len(c.header), *map(len, texts)]) for c, texts in zip(columns, cells)]
    gaps = 2 * (len(columns) - 1)
    fixed = sum(w for c, w in zip(columns, natural) if not c.flexible)
    room = width - gaps - fixed
    widths = list(natural)
    # The narrowest flexible column first takes its width or a fair share; what it leaves goes to the others.
    remaining = sorted((i for i, c in enumerate(columns) if c.flexible), key=lambda i: natural[i])
    while remaining:
        i = remaining.pop(0)
        widths[i] = max(min(8, natural[i]), min(natural[i], room // (len(remaining) + 1)))
        room -= widths[i]
    lines = ["  ".join(f"{cut(c.header, w):{c.align}{w}}" for c, w in zip(columns, widths)).rstrip()]
    for r in range(len(table)):
        lines.append("  ".join(f"{cut(cells[k][r], w):{c.align}{w}}"
                               for k, (c, w) in enumerate(zip(columns, widths))).rstrip())
    return "\n".join(line[:width] for line in lines)


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
