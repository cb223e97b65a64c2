"""Ensembles across runs: saved models' predictions → strategies scored by nested CV → files.

The unit an ensemble combines is a *model*: one backbone set × head of one run, its OOF
predictions averaged over views (original + flip) and its test predictions averaged over views
and folds — exactly what that model's own CV score and submission use. Flip views are test-time
augmentation of one model, not independent models, so they are never weighted separately.

Everything is written under ``<runs>/ensembles/<ensemble-id>/``: ``ensemble.csv`` and
``ensemble.md`` (the table), ``ensemble.json`` (``EnsembleRecord``: what was combined, scores,
files), figures, and one submission per chosen strategy in the submissions folder, validated
like a run's.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kaggle_tl.data.archives import image_path
from kaggle_tl.data.digests import image_set_key
from kaggle_tl.ensemble.strategies import compare_strategies, ensemble_decisions
from kaggle_tl.errors import KaggleTLError
from kaggle_tl.files import atomic_write_bytes, ensure_writable, read_json, to_json
from kaggle_tl.report.plots import plot_report
from kaggle_tl.report.tables import write_table
from kaggle_tl.runs.compare import RunModel, check_comparable
from kaggle_tl.runs.queries import oldest_first
from kaggle_tl.runs.record import RunRecord, claim_run_dir, package_versions
from kaggle_tl.runs.submission import (SubmissionInfo, build_submission, read_sample_submission, submission_folder,
                                       write_submission)
from kaggle_tl.tasks.evaluate import decide_folds, score_prediction, versus_best
from kaggle_tl.tasks.metrics import Score
from kaggle_tl.tasks.task import Task

TABLE_COLUMNS = ["section", "strategy", *Score.COLUMNS, "diff_vs_best", "diff_se", "within_noise",
                 "description", "submission"]
RECORD_FILE = "ensemble.json"


@dataclass
class EnsembleRecord:
    """What an ensemble combined and found: ``ensemble.json``, written and read here only."""

    ensemble_id: str
    data_fingerprint: str
    competition: str
    runs: list[str]
    models: list[dict[str, Any]]  # key, backbones, head, views, score of each model combined
    table: list[dict[str, Any]]  # TABLE_COLUMNS rows: strategies by CV log loss, then concat_vs_average
    best: str
    created: str = field(default_factory=lambda: dt.datetime.now().isoformat(timespec="seconds"))
    submissions: dict[str, str] = field(default_factory=dict)
    plots: dict[str, str] = field(default_factory=dict)
    tables: list[str] = field(default_factory=list)  # the CSV and Markdown files of the table
    notes: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    unit: str = "model = backbone set x head of one run; OOF averaged over views, test over views and folds"
    out_dir: Path = field(default=Path("."), repr=False, compare=False)  # where it lives; not saved

    @property
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.table, columns=TABLE_COLUMNS)

    def save(self) -> Path:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "out_dir"}
        path = self.out_dir / RECORD_FILE
        atomic_write_bytes(path, to_json(values))
        return path

    @classmethod
    def load(cls, out_dir: str | Path) -> "EnsembleRecord":
        path = Path(out_dir) / RECORD_FILE
        values = read_json(path, "ensemble record")
        try:
            record = cls(**values)
        except TypeError as exc:
            raise KaggleTLError(f"{path}: damaged ensemble record ({exc})") from None
        record.out_dir = path.parent
        return record


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


def _sample_submission(record: RunRecord) -> pd.DataFrame:
    """The competition's sample submission, checked to still describe what the run predicted.

    A class or an id added or removed since then, or test images replaced under the same ids (a
    stage-2 test set), means the run's test predictions no longer fit the competition.
    """
    path = Path(record.competition) / record.layout["sample_submission"]
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
    test_paths = [image_path(p) for p in record.test_paths]  # a file, or an image inside test.zip
    missing = [str(p) for p in test_paths if not p.is_file()]
    if missing:
        raise KaggleTLError(f"{missing[0]}: test image of run {record.run_id} missing ({len(missing)} in all); "
                            "restore the test images or pass --submit none")
    if image_set_key(test_paths) != record.image_keys["test"]:
        raise KaggleTLError(f"{Path(record.test_paths[0]).parent}: the test images changed since run {record.run_id} "
                            "(same ids, other content); its test predictions are for the old images: re-run it")
    return sample


def _chosen(submit: str, table: pd.DataFrame) -> list[str]:
    """Strategy names to write submissions for: best | all | none | comma-separated names."""
    if submit == "none":
        return []
    if submit == "best":
        return [table.iloc[0]["strategy"]]  # the table is sorted best first by the task's metric
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


def _one_response(models: Sequence[RunModel]) -> tuple[list[RunModel], list[str]]:
    """The models that predict the most common response (grades are read as class probabilities by some heads
    and as a value by others: those cannot be averaged), and a note naming the rest."""
    responses = [m.entry.response for m in models]
    kept = max(dict.fromkeys(responses), key=responses.count)
    left = [m.key for m in models if m.entry.response != kept]
    note = (f"{len(left)} model(s) predicting another output than {kept} left out of the ensemble "
            f"({', '.join(left[:5])}): ensemble them on their own with --runs")
    return [m for m in models if m.entry.response == kept], [note] if left else []


def compare_models(models: Sequence[RunModel], y: np.ndarray, folds: np.ndarray, task: Task,
                   strategies: Sequence[str] | None = None) -> tuple[pd.DataFrame, dict, dict, dict, list[str]]:
    """Score every strategy, and concatenated vs averaged backbones, on the models' OOF predictions.

    Returns
    -------
    table : TABLE_COLUMNS; the strategies best first by the task's metric, then the concat_vs_average rows in pairs.
    oof_by_row, test_by_row : row name -> (N, W) honest OOF and (M, W) test predictions.
    decisions_by_row : row name -> (K + 1, P) its decision rules.
    notes : what could not be compared, for the user.
    """
    notes: list[str] = []
    oof = {m.key: m.predictions.oof_mean for m in models}
    test = {m.key: m.predictions.test_mean for m in models}
    table, oof_by_row, test_by_row, decisions_by_row = compare_strategies(oof, y, folds, task, test, strategies)
    rows = [{"section": "strategy", **row} for row in table.to_dict(orient="records")]
    scores = [Score.from_columns(row) for row in rows]
    pairs = concat_vs_average(models)
    concat_rows, concat_oof, concat_test = _concat_rows(pairs)
    for row in concat_rows:
        decisions_by_row[row["strategy"]] = ensemble_decisions(task, y, concat_oof[row["strategy"]], folds)
        scores.append(score_prediction(task, y, concat_oof[row["strategy"]], folds, decisions_by_row[row["strategy"]]))
        row.update(scores[-1].columns())
    oof_by_row.update(concat_oof)
    test_by_row.update(concat_test)
    every = rows + concat_rows
    paired = versus_best(task, scores, [y] * len(every),
                         [decide_folds(task, oof_by_row[r["strategy"]], folds, decisions_by_row[r["strategy"]])
                          for r in every])
    for row, difference in zip(every, paired):
        row.update(difference, submission="")
    optimistic = [m.key for m in models if m.entry.optimistic]
    if optimistic:
        notes.append(f"{len(optimistic)} model(s) stopped early on the rows they are scored on (optimistic): "
                     f"{', '.join(optimistic)}; every row that weights them inherits that optimism. Re-run them with "
                     "the default early_stopping = \"inner\" to compare honestly")
    if not pairs and any(len(m.entry.backbones) > 1 for m in models):
        notes.append("concat_vs_average: no single-backbone models with the concatenated model's head, views, "
                     "weights and image size; run each backbone alone to compare")
    if task.tuned_decision:
        notes.append("each strategy's decision rule is tuned fold by fold on the other folds' OOF rows: those were "
                     "predicted by models that trained on the scored fold, so a strategy's score can be slightly "
                     "optimistic against a single model's (tuned on inner rows)")
    return pd.DataFrame(every, columns=TABLE_COLUMNS), oof_by_row, test_by_row, decisions_by_row, notes


def ensemble_models(models: Sequence[RunModel], strategies: Sequence[str] | None = None, submit: str = "best",
                    out_root: str | Path = "runs/ensembles",
                    submissions_dir: str | Path = "submissions") -> EnsembleRecord:
    """Combine the models (of one data set and folds), score the strategies, write table, figures, submissions."""
    if not models:
        raise KaggleTLError("the selected runs hold no usable models; finish a `kaggle-tl run` first")
    y, folds = check_comparable(list(models))
    records = oldest_first({m.run.run_id: m.run for m in models}.values())
    newest = records[-1]
    task = newest.task
    models, left_out = _one_response(models)
    table, oof_by, test_by, decisions_by, notes = compare_models(models, y, folds, task, strategies)
    notes = [*left_out, *notes]
    chosen = _chosen(submit, table)
    sample = _sample_submission(newest) if chosen else None  # --submit none needs no competition folder
    ensure_writable(out_root, "ensembles")
    if chosen:
        ensure_writable(submissions_dir, "submissions")
    out_dir = claim_run_dir(out_root)
    record = EnsembleRecord(
        ensemble_id=out_dir.name, data_fingerprint=newest.data_fingerprint, competition=newest.competition,
        runs=[r.run_id for r in records], best=table.iloc[0]["strategy"],
        models=[{"key": m.key, "backbones": m.entry.backbones, "head": m.entry.head, "recipe": m.entry.recipe,
                 "views": m.predictions.views, **m.entry.score.columns()} for m in models],
        table=[], notes=notes, versions=package_versions(), out_dir=out_dir)
    for name in chosen:
        row = table[table["strategy"] == name].iloc[0]
        frame = build_submission(task, test_by[name], decisions_by[name][-1], newest.test_ids, sample)
        stem = f"ens-{record.ensemble_id}_{_file_safe(name)}_{row.cv_score:.4f}"
        path = write_submission(frame, sample, submission_folder(submissions_dir, newest.competition), stem, task)
        SubmissionInfo(source="ensemble", source_id=record.ensemble_id, source_dir=str(out_dir.resolve()),
                       model=name, score=Score.from_columns(row), data_fingerprint=record.data_fingerprint,
                       optimistic=any(m.entry.optimistic for m in models), description=row.description,
                       models=[m.key for m in models]).save(path)
        record.submissions[name] = str(path)
        table.loc[table["strategy"] == name, "submission"] = str(path)
    if task.class_probabilities(oof_by[record.best].shape[1]):
        plots = plot_report(out_dir, y, oof_by[record.best], newest.classes,
                            image_paths=[image_path(p) for p in newest.train_paths],
                            strategy_table=table[table["section"] == "strategy"])
        record.plots = {k: str(v) for k, v in plots.items()}
    record.tables = [str(p) for p in write_table(table, out_dir, "ensemble")]
    record.table = table.to_dict(orient="records")
    record.save()
    return record
