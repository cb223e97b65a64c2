"""Ensembles across runs: saved models' predictions → strategies scored by nested CV → files.

The unit an ensemble combines is a *model*: one backbone set × head of one run, its OOF
predictions averaged over views (original + flip) and its test predictions averaged over views
and folds — exactly what that model's own CV score and submission use. Flip views are test-time
augmentation of one model, not independent models, so they are never weighted separately.

Everything is written under ``<runs>/ensembles/<ensemble-id>/``: ``ensemble.csv`` and
``ensemble.md`` (the table), ``ensemble.json`` (what was combined, scores, files), figures, and
one submission per chosen strategy in the submissions folder, validated like a run's.
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kaggle_tl import metrics
from kaggle_tl.cache import atomic_write_bytes
from kaggle_tl.ensemble import compare_strategies
from kaggle_tl.errors import KaggleTLError
from kaggle_tl.leaderboard import write_table
from kaggle_tl.plots import plot_report
from kaggle_tl.runs import (RunModel, RunRecord, check_comparable, claim_run_dir, ensure_writable, load_models,
                            oldest_first, package_versions, to_json)
from kaggle_tl.submission import build_submission, read_sample_submission, write_submission

TABLE_COLUMNS = ["section", "strategy", "cv_logloss", "cv_logloss_se", "cv_accuracy", "cv_accuracy_se",
                 "diff_vs_best", "diff_se", "within_noise", "description", "submission"]


@dataclass
class EnsembleResult:
    ensemble_id: str
    out_dir: Path
    table: pd.DataFrame  # TABLE_COLUMNS; strategies by CV log loss, then the concat_vs_average rows
    models: list[RunModel]
    tables: tuple[Path, Path]  # CSV, Markdown
    submissions: dict[str, Path] = field(default_factory=dict)
    plots: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def concat_vs_average(models: Sequence[RunModel]) -> list[tuple[RunModel, list[RunModel]]]:
    """(model on concatenated backbones, the single-backbone models it can be compared with) pairs.

    Single-backbone models qualify when they share the concatenated model's head, views, weights
    and image size; of several equal candidates, the newest run's is used (``models`` oldest first).
    """
    newest: dict[tuple, RunModel] = {}
    for model in models:
        newest[_comparison_key(model, tuple(model.entry.backbones))] = model
    pairs = []
    for model in newest.values():
        if len(model.entry.backbones) > 1:
            singles = [newest.get(_comparison_key(model, (name,))) for name in model.entry.backbones]
            if all(singles):
                pairs.append((model, singles))
    return pairs


def _comparison_key(model: RunModel, backbones: tuple[str, ...]) -> tuple:
    return backbones, model.entry.head, model.settings


def _concat_rows(pairs) -> tuple[list[dict], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Rows for each pair: the single-backbone models averaged, and the concatenated model alone.

    Neither learns anything from the OOF rows, so both are scored on all of them directly.
    """
    rows, oof, test = [], {}, {}
    for concat, singles in pairs:
        # Two pairs share names only when they differ in views or weights: the run id tells them apart.
        tag = f"@{concat.run.run_id}" if f"concat:{concat.entry.name}" in oof else ""
        average = (f"average:{','.join(concat.entry.backbones)}__{concat.entry.head}{tag}", singles,
                   "mean of the per-backbone models " + ", ".join(m.key for m in singles))
        alone = (f"concat:{concat.entry.name}{tag}", [concat],
                 f"one {concat.entry.head} head on the concatenated features: {concat.key}")
        for name, models, description in (average, alone):
            oof[name] = np.mean([m.predictions.oof_mean for m in models], axis=0)
            test[name] = np.mean([m.predictions.test_mean for m in models], axis=0)
            rows.append({"section": "concat_vs_average", "strategy": name, "description": description})
    return rows, oof, test


def _sample_submission(record: RunRecord) -> tuple[pd.DataFrame, list[str], str]:
    """(sample submission, test ids in prediction order, id column) of a run, without reading images.

    The competition's sample file must still describe what the run predicted: a class or an id
    added or removed since then means the run's predictions no longer fit the competition.
    """
    path = Path(record.competition) / record.config["sample_submission"]
    if not path.is_file():
        raise KaggleTLError(f"{path}: sample submission not found; restore the competition folder to write "
                            "submissions (or pass --submit none)")
    sample = read_sample_submission(path, record.id_column)
    if list(sample.columns) != record.submission_columns:
        raise KaggleTLError(f"{path}: the competition changed since run {record.run_id} (columns now "
                            f"{len(sample.columns)}, then {len(record.submission_columns)}); re-run it")
    if set(sample[record.id_column].astype(str)) != set(record.test_ids):
        raise KaggleTLError(f"{path}: the competition changed since run {record.run_id} (test ids differ from the "
                            "ones it predicted); re-run it")
    return sample, record.test_ids, record.id_column


def _chosen(submit: str, table: pd.DataFrame) -> list[str]:
    """Strategy names to write submissions for: best | all | none | comma-separated names."""
    if submit == "none":
        return []
    if submit == "best":
        return [table.loc[table["cv_logloss"].idxmin(), "strategy"]]
    if submit == "all":
        return table["strategy"].tolist()
    names = [n.strip() for n in submit.split(",") if n.strip()]
    unknown = [n for n in names if n not in set(table["strategy"])]
    if unknown or not names:
        raise KaggleTLError(f"--submit: unknown strategy {unknown}; choose best, all, none or names from "
                            f"{table['strategy'].tolist()}")
    return names


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", name)


def unique_runs(run_dirs: Iterable[str | Path]) -> list[RunRecord]:
    """Records of the given run folders, each run once, oldest first (so "newest wins" is well defined)."""
    records = {}
    for run_dir in run_dirs:
        record = RunRecord.load(run_dir)
        records.setdefault(record.run_id, record)
    return oldest_first(records.values())


def with_significance(rows: list[dict], y: np.ndarray, oof_by_row: dict[str, np.ndarray]) -> list[dict]:
    """Each row's scores (metrics.score) and its paired log-loss difference from the best row."""
    for row in rows:
        scores = metrics.score(y, oof_by_row[row["strategy"]])
        row.update(cv_logloss=scores["logloss"], cv_logloss_se=scores["logloss_se"],
                   cv_accuracy=scores["accuracy"], cv_accuracy_se=scores["accuracy_se"])
    probas = [oof_by_row[row["strategy"]] for row in rows]
    for row, paired in zip(rows, metrics.versus_best([r["cv_logloss"] for r in rows], [y] * len(rows), probas)):
        row.update(paired)
    return rows


def compare_models(models: Sequence[RunModel], y: np.ndarray, folds: np.ndarray,
                   strategies: Sequence[str] | None = None) -> tuple[pd.DataFrame, dict, dict, list[str]]:
    """Score every strategy, and concatenated vs averaged backbones, on the models' OOF predictions.

    Returns
    -------
    table : TABLE_COLUMNS; the strategies by CV log loss, then the concat_vs_average rows in pairs.
    oof_by_row, test_by_row : row name -> (N, C) honest OOF and (M, C) test probabilities.
    notes : what could not be compared, for the user.
    """
    oof = {m.key: m.predictions.oof_mean for m in models}
    test = {m.key: m.predictions.test_mean for m in models}
    table, oof_by_row, test_by_row = compare_strategies(oof, y, folds, test, strategies)
    rows = [{"section": "strategy", **row} for row in table.to_dict(orient="records")]
    pairs = concat_vs_average(models)
    concat_rows, concat_oof, concat_test = _concat_rows(pairs)
    oof_by_row.update(concat_oof)
    test_by_row.update(concat_test)
    with_significance(rows + concat_rows, y, oof_by_row)
    for row in rows + concat_rows:
        row["submission"] = ""
    rows.sort(key=lambda r: r["cv_logloss"])
    notes = []
    optimistic = [m.key for m in models if m.entry.optimistic]
    if optimistic:
        notes.append(f"{len(optimistic)} model(s) stopped early on the rows they are scored on (optimistic): "
                     f"{', '.join(optimistic)}; every row that weights them inherits that optimism. Re-run them with "
                     "the default early_stopping = \"inner\" to compare honestly")
    if not pairs and any(len(m.entry.backbones) > 1 for m in models):
        notes.append("concat_vs_average: no single-backbone models with the concatenated model's head, views, "
                     "weights and image size; run each backbone alone to compare")
    return pd.DataFrame(rows + concat_rows, columns=TABLE_COLUMNS), oof_by_row, test_by_row, notes


def ensemble_runs(run_dirs: Sequence[str | Path], strategies: Sequence[str] | None = None, submit: str = "best",
                  out_root: str | Path = "runs/ensembles", submissions_dir: str | Path = "submissions") -> EnsembleResult:
    """Combine every model of the given runs, score the strategies, write table, figures, submissions."""
    records = unique_runs(run_dirs)
    y, folds = check_comparable(records)
    models = load_models(records)
    if not models:
        raise KaggleTLError("the selected runs hold no models; finish a `kaggle-tl run` first")
    sample, test_ids, id_column = _sample_submission(records[-1])
    table, oof_by, test_by, notes = compare_models(models, y, folds, strategies)
    chosen = _chosen(submit, table)
    ensure_writable(out_root, "ensembles")
    ensure_writable(submissions_dir, "submissions")

    out_dir = claim_run_dir(out_root)
    ensemble_id = out_dir.name
    classes = records[-1].classes
    versions = package_versions()
    submissions = {}
    for name in chosen:
        row = table[table["strategy"] == name].iloc[0]
        frame = build_submission(test_by[name], test_ids, classes, sample, id_column)
        stem = f"ens-{ensemble_id}_{_file_safe(name)}_{row.cv_logloss:.4f}"
        path = write_submission(frame, sample, submissions_dir, stem, id_column)
        atomic_write_bytes(path.with_suffix(".json"), to_json({
            "ensemble_id": ensemble_id, "strategy": name, "description": row.description,
            "cv_logloss": row.cv_logloss, "cv_accuracy": row.cv_accuracy, "runs": [r.run_id for r in records],
            "models": [m.key for m in models], "data_fingerprint": records[0].data_fingerprint}),
            overwrite=False)
        submissions[name] = path
        table.loc[table["strategy"] == name, "submission"] = str(path)

    best = table.loc[table["cv_logloss"].idxmin(), "strategy"]
    plots = plot_report(out_dir, y, oof_by[best], classes, image_paths=records[-1].train_paths,
                        strategy_table=table[["strategy", "cv_logloss", "cv_accuracy"]])
    tables = write_table(table, out_dir, "ensemble")
    atomic_write_bytes(out_dir / "ensemble.json", to_json({
        "ensemble_id": ensemble_id, "created": dt.datetime.now().isoformat(timespec="seconds"),
        "data_fingerprint": records[0].data_fingerprint, "competition": records[-1].competition,
        "runs": [r.run_id for r in records],
        "unit": "model = backbone set x head of one run; OOF averaged over views, test over views and folds",
        "models": [{"key": m.key, "backbones": m.entry.backbones, "head": m.entry.head,
                    "views": m.predictions.views, "cv_logloss": m.entry.cv_logloss,
                    "cv_accuracy": m.entry.cv_accuracy} for m in models],
        "table": table.to_dict(orient="records"), "best": best,
        "submissions": {k: str(v) for k, v in submissions.items()},
        "plots": {k: str(v) for k, v in plots.items()}, "notes": notes, "versions": versions}))
    return EnsembleResult(ensemble_id, out_dir, table, models, tables, submissions, plots, notes)
