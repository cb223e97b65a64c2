"""The leaderboard ranks every model of one data set's runs and writes safe CSV and Markdown."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from conftest import make_competition, make_run
from kaggle_tl.report.leaderboard import OPTIMISTIC_NOTE, leaderboard_table
from kaggle_tl.report.tables import escape_formula, to_markdown, write_table
from kaggle_tl.runs.compare import load_models
from kaggle_tl.runs.queries import list_runs, select_runs
from kaggle_tl.tasks import metrics


@pytest.fixture
def board_runs(tmp_path, competition):
    runs_dir = tmp_path / "runs"
    make_run(runs_dir, competition, "r1", {"xception__logreg": (["xception"], 0.5)}, minutes=1)
    make_run(runs_dir, competition, "r2", {"inception_v3__logreg": (["inception_v3"], 4.0),
                                           "inception_v3__dense": (["inception_v3"], 2.0)}, minutes=2)
    make_run(runs_dir, competition, "r3", {"xception__svm": (["xception"], 1.5)}, fingerprint="fp-b", minutes=0)
    return runs_dir


def selected(runs_dir, **selection):
    records, _ = list_runs(runs_dir)
    return load_models(select_runs(records, **selection)[0])[0]


def test_sorted_by_cv_logloss_within_one_data_set(board_runs):
    table = leaderboard_table(selected(board_runs, fingerprint="fp-a"))
    assert table["model"].tolist() == ["inception_v3__logreg", "inception_v3__dense", "xception__logreg"]
    assert table["rank"].tolist() == [1, 2, 3]
    assert table["cv_logloss"].is_monotonic_increasing
    assert set(table["run_id"]) == {"r1", "r2"}  # r3 is on other data
    row = table.iloc[0]
    assert (row["head"], row.backbones, row.views, row.folds, row.weights) == (
        "logreg", "inception_v3", "original+hflip", 5, "none (random)")
    assert row.date == "2024-05-01 12:02" and row.submission.endswith("r2_inception_v3__logreg.csv")


def test_standard_errors_and_paired_differences_against_the_best(board_runs):
    models = selected(board_runs, fingerprint="fp-a")
    table = leaderboard_table(models)
    by_name = {m.entry.name: m.predictions for m in models}
    best = by_name["inception_v3__logreg"]
    for row in table.itertuples():
        preds = by_name[row.model]
        losses = metrics.row_logloss(preds.y, preds.oof_mean)
        assert row.cv_logloss_se == pytest.approx(losses.std(ddof=1) / np.sqrt(len(losses)))
        diff = losses - metrics.row_logloss(best.y, best.oof_mean)
        assert row.diff_vs_best == pytest.approx(diff.mean(), abs=1e-12)
        assert row.diff_se == pytest.approx(diff.std(ddof=1) / np.sqrt(len(diff)), abs=1e-12)
    assert table["within_noise"].tolist() == ["best", "no", "no"]  # signals 4 vs 2 vs 0.5 on 30 rows


def test_a_close_second_is_within_noise_and_optimistic_models_are_marked(tmp_path, competition):
    runs_dir = tmp_path / "runs"
    make_run(runs_dir, competition, "r1", {"xception__logreg": (["xception"], 2.0)}, minutes=1)
    make_run(runs_dir, competition, "r2", {"xception__dense": (["xception"], 2.0)}, minutes=2, optimistic=True)
    table = leaderboard_table(selected(runs_dir))
    assert table["within_noise"].tolist() == ["best", "yes"]  # same signal, different noise draws
    assert table.set_index("model").loc["xception__dense", "note"] == OPTIMISTIC_NOTE
    assert table.set_index("model").loc["xception__logreg", "note"] == ""


def test_a_model_scored_on_other_rows_is_not_paired_with_the_best(tmp_path, competition):
    # As when one run left out an unreadable image: its rows differ, so no paired difference exists.
    runs_dir = tmp_path / "runs"
    make_run(runs_dir, competition, "r1", {"xception__logreg": (["xception"], 4.0)}, minutes=1)
    fewer = make_competition(tmp_path / "fewer", n_per_class=9)
    make_run(runs_dir, fewer, "r2", {"xception__svm": (["xception"], 1.0)}, minutes=2)
    make_run(runs_dir, competition, "r3", {"xception__dense": (["xception"], 1.0)}, minutes=3)
    table = leaderboard_table(selected(runs_dir)).set_index("model")
    assert table["within_noise"].to_dict() == {"xception__logreg": "best", "xception__svm": "other rows",
                                               "xception__dense": "no"}
    assert np.isnan(table.loc["xception__svm", "diff_vs_best"]) and table.loc["xception__dense", "diff_vs_best"] > 0


def test_default_selection_is_the_newest_runs_data(board_runs):
    records, notes = select_runs(list_runs(board_runs)[0])
    assert {r.run_id for r in records} == {"r1", "r2"}  # r3 is older, on fp-b
    assert "fp-b" in notes[0]


def test_per_view_rows_score_each_view(board_runs):
    models = selected(board_runs, fingerprint="fp-a")
    table = leaderboard_table(models, per_view=True)
    assert len(table) == 3 * 3  # each model: original, hflip and their average
    assert table["cv_logloss"].is_monotonic_increasing
    averaged = table[table["view"] == "original+hflip"].sort_values("model")
    plain = leaderboard_table(models).sort_values("model")
    assert averaged["cv_logloss"].tolist() == pytest.approx(plain["cv_logloss"].tolist())
    assert (table.loc[table["view"] != "original+hflip", "submission"] == "").all()


def test_csv_escapes_formula_cells_and_markdown_escapes_pipes(tmp_path, competition):
    runs_dir = tmp_path / "runs"
    make_run(runs_dir, competition, "r1", {"=HYPERLINK(1)__logreg": (["@evil", "-x"], 1.0)})
    table = leaderboard_table(selected(runs_dir))
    table.loc[0, "submission"] = "a|b.csv"
    csv_path, md_path = write_table(table, tmp_path / "out", "leaderboard")
    back = pd.read_csv(csv_path, dtype=str)
    assert back.loc[0, "model"] == "'=HYPERLINK(1)__logreg"
    assert back.loc[0, "backbones"] == "'@evil+-x"
    assert float(back.loc[0, "cv_logloss"]) == pytest.approx(table.loc[0, "cv_logloss"], rel=1e-5)  # numbers untouched
    markdown = md_path.read_text()
    assert markdown.splitlines()[0].startswith("| rank | metric | cv_score |")
    assert "a\\|b.csv" in markdown and "=HYPERLINK(1)__logreg" in markdown


@pytest.mark.parametrize("value, expected", [("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@A1", "'@A1"),
                                             ("\tx", "'\tx"), ("safe", "safe"), (-1.5, -1.5)])
def test_escape_formula(value, expected):
    assert escape_formula(value) == expected


def test_markdown_alignment_and_floats():
    text = to_markdown(pd.DataFrame({"name": ["a"], "loss": [0.123456]}))
    assert text.splitlines() == ["| name | loss |", "|---|---:|", "| a | 0.1235 |"]


def test_a_higher_is_better_metric_ranks_highest_first_with_bootstrapped_noise(tmp_path, competition):
    runs_dir = tmp_path / "runs"
    make_run(runs_dir, competition, "r1", {"xception__logreg": (["xception"], 0.2)}, minutes=1, metric="roc_auc")
    make_run(runs_dir, competition, "r2", {"inception_v3__logreg": (["inception_v3"], 1.5),
                                           "inception_v3__dense": (["inception_v3"], 0.8)}, minutes=2, metric="roc_auc")
    models = selected(runs_dir)
    table = leaderboard_table(models)
    assert table["metric"].unique().tolist() == ["roc_auc"] and table["greater_is_better"].all()
    assert table["cv_score"].is_monotonic_decreasing  # best (highest AUC) first
    assert table["model"].tolist() == ["inception_v3__logreg", "inception_v3__dense", "xception__logreg"]
    # ROC AUC is not a mean over rows: its standard error and the paired differences are bootstrapped.
    assert (table["cv_score_se"] > 0).all() and table.loc[0, "within_noise"] == "best"
    assert (table["diff_vs_best"][1:] < 0).all()  # worse models have a lower AUC than the best
    by_name = {m.entry.name: m for m in models}
    for row in table.itertuples():
        preds = by_name[row.model].predictions
        expected = roc_auc_score(preds.y, metrics.clip_proba(preds.oof_mean), multi_class="ovr")
        assert row.cv_score == pytest.approx(expected)


def test_runs_of_another_metric_are_never_ranked_with_the_newest(tmp_path, competition, capsys):
    from kaggle_tl.cli import main

    runs_dir = tmp_path / "runs"
    make_run(runs_dir, competition, "r1", {"xception__logreg": (["xception"], 0.5)}, minutes=1)
    make_run(runs_dir, competition, "r2", {"inception_v3__logreg": (["inception_v3"], 4.0)}, minutes=2,
             metric="roc_auc")
    assert main(["leaderboard", "--runs-dir", str(runs_dir), "--out", str(tmp_path / "board")]) == 0
    printed = capsys.readouterr()
    assert "1 run(s) of another task or metric left out (r1; e.g. multiclass scored by log_loss" in printed.err
    assert "scored by roc_auc" in printed.out
    assert pd.read_csv(tmp_path / "board" / "leaderboard.csv")["run_id"].tolist() == ["r2"]
