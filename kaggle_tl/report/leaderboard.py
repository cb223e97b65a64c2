"""Local CV leaderboard: every model of every run on one data set and task, ranked by the competition's metric.

Beside each score, its standard error (over rows, or bootstrapped); beside each model, its paired
difference in the metric from the best model on the same rows (evaluate.versus_best) and whether that
difference is within noise (within 2 standard errors of zero), and its recipe (feature settings
and head parameters), so that two models that differ only in a parameter never look alike.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from kaggle_tl.report.tables import Column, plus_minus
from kaggle_tl.runs.compare import RunModel
from kaggle_tl.tasks.evaluate import decide_folds, score_prediction, versus_best
from kaggle_tl.tasks.metrics import Score

COLUMNS = ["rank", *Score.COLUMNS, "diff_vs_best", "diff_se", "within_noise", "run_id", "model", "recipe",
           "backbones", "head", "views", "folds", "weights", "note", "date", "submission"]
OPTIMISTIC_NOTE = "optimistic: stopped early on the scored fold"

# What the terminal shows (the files hold every column).
TERMINAL_COLUMNS = [
    Column("rank", lambda r: str(r.rank)),
    Column("model", lambda r: r.model, flexible=True, align="<"),
    Column("CV ± se", lambda r: plus_minus(r.cv_score, r.cv_score_se)),
    Column("log loss", lambda r: "" if r.cv_logloss != r.cv_logloss else f"{r.cv_logloss:.4f}"),
    Column("vs best ± se", lambda r: plus_minus(r.diff_vs_best, r.diff_se)),
    Column("noise", lambda r: str(r.within_noise), align="<"),
    Column("recipe", lambda r: r.recipe + (" [optimistic]" if r.note else ""), flexible=True, align="<"),
]


def leaderboard_table(models: list[RunModel], per_view: bool = False) -> pd.DataFrame:
    """One row per model (per model and view with ``per_view``) of one task, best by its metric first.

    A model's row scores its view-averaged OOF predictions, the ones its submission was built
    from; per-view rows score each view alone and have no submission of their own. Paired
    differences are taken against the best row, on the rows both were scored on (runs that left
    out different unusable images have none).
    """
    rows, oof_by_row, scores = [], [], []
    task = models[0].run.task if models else None
    for model in models:
        run, entry, preds = model.run, model.entry, model.predictions
        base = {"run_id": run.run_id, "model": entry.name, "recipe": entry.recipe, "head": entry.head,
                "backbones": "+".join(entry.backbones), "views": "+".join(preds.views), "folds": run.config.folds,
                "weights": "none (random)" if run.random_weights else _short_weights(run.config.weights),
                "note": OPTIMISTIC_NOTE if entry.optimistic else "", "date": run.created.replace("T", " ")[:16]}
        columns = [("+".join(preds.views), preds.oof_mean, entry.submission)]
        if per_view and len(preds.views) > 1:
            columns = [(view, preds.oof[v], "") for v, view in enumerate(preds.views)] + columns
        for view, prediction, submission in columns:
            score = (entry.score if prediction is columns[-1][1]
                     else score_prediction(task, preds.y, prediction, preds.folds, preds.decisions))
            rows.append({**base, **({"view": view} if per_view else {}), **score.columns(), "submission": submission})
            scores.append(score)
            oof_by_row.append((tuple(run.train_ids), preds.y,
                               decide_folds(task, prediction, preds.folds, preds.decisions)))
    if rows:
        rows_of, y_of, decided_of = zip(*oof_by_row)
        for row, paired in zip(rows, versus_best(task, scores, y_of, decided_of, rows_of)):
            row.update(paired)
    columns = COLUMNS[:12] + ["view"] + COLUMNS[12:] if per_view else COLUMNS
    table = pd.DataFrame(rows, columns=[c for c in columns if c != "rank"])
    table["rank_key"] = [s.rank_key for s in scores]
    table = table.sort_values(["rank_key", "date"], kind="stable", ignore_index=True).drop(columns="rank_key")
    table.insert(0, "rank", range(1, len(table) + 1))
    return table


def _short_weights(weights: str | None) -> str:
    """'imagenet', or a weights path shortened to its last component."""
    return Path(str(weights)).name if weights else ""
