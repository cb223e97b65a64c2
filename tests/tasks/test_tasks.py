"""The Task and the competition metrics: detection from real layouts' cells, metrics against
scikit-learn and hand-computed cases, tuned decisions, cells written and read back."""
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from kaggle_tl.errors import KaggleTLError
from kaggle_tl.tasks.detect import TaskSettings, detect_task
from kaggle_tl.tasks.scoring import get_metric, paired_difference, value_and_se
from kaggle_tl.tasks.task import Task


def _detect(column, cells, sample_columns, sample_cell, **settings):
    targets = pd.DataFrame({column: cells}, index=[f"i{j}" for j in range(len(cells))]).astype(str)
    sample = pd.DataFrame({"id": ["t0"], **{c: [sample_cell] for c in sample_columns}}).astype(str)
    return detect_task(targets, sample, TaskSettings(**settings))


@pytest.mark.parametrize("column, cells, sample_columns, sample_cell, settings, kind, form, metric", [
    ("has_cactus", [0, 1, 1, 0], ["has_cactus"], "0.5", {}, "binary", "p_positive", "roc_auc"),  # aerial cactus
    ("label", [0, 1, 2, 3, 4], ["label"], "0", {}, "multiclass", "label", "accuracy"),  # cassava
    ("diagnosis", [0, 1, 2, 3, 4], ["diagnosis"], "0", {"task": "ordinal"}, "ordinal", "label", "qwk"),  # aptos
    ("Pawpularity", list(range(1, 40)), ["Pawpularity"], "50", {}, "regression", "value", "rmse"),
    ("attribute_ids", ["13 51", "202", "51"], ["attribute_ids"], "0 1", {}, "multilabel", "tags", "micro_f1"),
    ("Id", ["new_whale", "w_1", "w_2"], ["Id"], "new_whale w_1 w_2 w_3 w_4", {"catch_all": "new_whale"},
     "topk", "ranked", "map@5"),
    ("label", ["cat", "dog", "cat"], ["label"], "0.5", {"metric": "log_loss"}, "binary", "p_positive", "log_loss"),
    ("breed", ["a", "b"], ["a", "b", "c"], "0.3", {}, "multiclass", "proba", "log_loss"),  # dog breed
    ("species", ["Black-grass", "Charlock", "Loose Silky-bent"], ["species"], "x", {"metric": "micro_f1"},
     "multiclass", "label", "micro_f1"),  # plant seedlings
])
def test_detects_each_kind(column, cells, sample_columns, sample_cell, settings, kind, form, metric):
    task, _ = _detect(column, cells, sample_columns, sample_cell, **settings)
    assert (task.kind, task.form, task.metric_name) == (kind, form, metric)
    assert Task.from_dict(task.to_dict()) == task


def test_one_hot_labels():
    targets = pd.DataFrame({"healthy": [1, 0, 0], "rust": [0, 1, 0], "scab": [0, 0, 1]}, index=["a", "b", "c"])
    sample = pd.DataFrame({"image_id": ["t"], "healthy": ["0.3"], "rust": ["0.3"], "scab": ["0.3"]})
    task, _ = detect_task(targets.astype(str), sample)
    assert (task.kind, task.form, task.metric_name) == ("multiclass", "proba", "roc_auc")
    assert task.encode(targets.astype(str), "x").tolist() == [0, 1, 2]
    targets.loc["a", "rust"] = 1  # two set on a row: tags
    task, _ = detect_task(targets.astype(str), sample)
    assert (task.kind, task.form) == ("multilabel", "tag_proba")


@pytest.mark.parametrize("column, cells, sample_cell, settings, match", [
    ("label", ["1", "cat", "2"], "0", {}, "mixed types"),
    ("tags", ["a b", "b"], "0", {"metric": "qwk"}, "qwk does not score a multilabel"),
    ("y", ["1.5", "oops", "2.5"], "0", {"task": "regression"}, "'oops' is not a number"),
    ("y", ["1.5", "", "2.5"], "0", {"task": "regression"}, "row 3 .* no label"),
])
def test_bad_targets_one_line(column, cells, sample_cell, settings, match):
    with pytest.raises(KaggleTLError, match=match):
        _detect(column, cells, [column], sample_cell, **settings)


def test_unknown_tag_named():
    task, _ = _detect("tags", ["a b", "b c"], ["tags"], "a")
    with pytest.raises(KaggleTLError, match="row 3 .*tag 'zz'"):
        task.encode(pd.DataFrame({"tags": ["a", "zz"]}, index=["r1", "r2"]), "train.csv")


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    assert get_metric("roc_auc")(y, p) == pytest.approx(skm.roc_auc_score(y, p))
    grades, guess = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    assert get_metric("qwk")(grades, guess) == pytest.approx(skm.cohen_kappa_score(grades, guess, weights="quadratic"))
    values = rng.random(200)
    assert get_metric("rmse")(values, values + 0.1) == pytest.approx(0.1)
    tags, guess_tags = rng.random((200, 6)) > 0.5, rng.random((200, 6)) > 0.5
    assert get_metric("f2_samples")(tags, guess_tags) == pytest.approx(
        skm.fbeta_score(tags, guess_tags, beta=2, average="samples", zero_division=0))
    assert get_metric("micro_f1")(tags, guess_tags) == pytest.approx(skm.f1_score(tags, guess_tags, average="micro"))


def test_map_at_k_hand_computed():
    ranked = np.array([[3, 1, 2, 0, 4], [0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [1, 2, 3, 4, 0]])
    y = np.array([1, 0, 9, 0])  # hit at rank 2, rank 1, never, rank 5
    assert get_metric("map@5")(y, ranked) == pytest.approx((1 / 2 + 1 + 0 + 1 / 5) / 4)
    assert get_metric("map@1")(y, ranked) == pytest.approx(1 / 4)


def test_alaska_weighted_auc_hand_computed():
    # TPR 0-0.4 weighs 2, 0.4-1 weighs 1, normalised by 2 x 0.4 + 0.6 = 1.4
    weighted = get_metric("weighted_auc")
    assert (weighted.greater_is_better, weighted.mean_over_rows) == (True, False)
    assert weighted([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(1.0)
    assert weighted([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == pytest.approx(0.0)
    # no ranking: the diagonal, (2 x (0.4^2 / 2 + 0.4 x 0.6) + 0.6^2 / 2) / 1.4 = 41/70
    assert weighted([0, 1, 0, 1], [0.5] * 4) == pytest.approx(41 / 70)
    # ROC (0,0) (0,.5) (.5,.5) (.5,1) (1,1): the lower band full (0.4, x2), the upper 0.5 x 0.1 + 0.5 x 0.6
    assert weighted([0, 1, 0, 1], [0.1, 0.4, 0.5, 0.8]) == pytest.approx((2 * 0.4 + 0.35) / 1.4)
    assert skm.roc_auc_score([0, 1, 0, 1], [0.1, 0.4, 0.5, 0.8]) == 0.75  # the plain AUC, for contrast


def test_standard_errors_and_paired_differences():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = np.clip(y * 0.2 + rng.random(300) * 0.8, 0, 1)
    auc = get_metric("roc_auc")
    value, se = value_and_se(auc, y, p)
    assert value == pytest.approx(skm.roc_auc_score(y, p)) and 0.005 < se < 0.1
    assert value_and_se(auc, y, p) == (value, se)  # seeded
    assert paired_difference(auc, y, p, p) == (0.0, 0.0)
    accuracy = get_metric("accuracy")
    correct = (p > 0.5) == y
    assert value_and_se(accuracy, y, (p > 0.5).astype(int))[1] == pytest.approx(correct.std(ddof=1) / np.sqrt(300))


def test_cut_points_beat_rounding_on_their_rows():
    rng = np.random.default_rng(2)
    task = Task("ordinal", "qwk", "id_code", ("diagnosis",), classes=("0", "1", "2", "3", "4"))
    y = rng.integers(0, 5, 500)
    value = (y * 0.6 + rng.normal(0, 0.3, 500))[:, None]  # a value head that shrinks the grades
    cuts = task.fit_decision(y, value)
    assert task.metric(y, task.decide(value, cuts)) > task.metric(y, task.decide(value)) + 0.05


@pytest.mark.parametrize("task, prediction", [
    (Task("multiclass", "accuracy", "id", ("label",), classes=("0", "1", "2")), np.eye(3)[[2, 0, 1]]),
    (Task("multilabel", "micro_f1", "id", ("tags",), classes=("a", "b", "c")),
     np.array([[0.9, 0.8, 0.1], [0.1, 0.2, 0.3], [0.6, 0.1, 0.9]])),
    (Task("topk", "map@2", "Image", ("Id",), classes=("new_whale", "w1", "w2"), k=2, catch_all="new_whale"),
     np.array([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4], [0.2, 0.3, 0.5]])),
])
def test_cells_read_back(task, prediction):
    decided = task.decide(prediction)
    frame = pd.DataFrame({task.id_column: ["a", "b", "c"], **task.cells(decided)})
    parsed = pd.read_csv(pd.io.common.StringIO(frame.to_csv(index=False)), dtype=str, keep_default_na=False)
    np.testing.assert_array_equal(task.read_cells(parsed, "submission.csv"), decided)


@pytest.mark.parametrize("task, tuned, widths", [
    (Task("binary", "roc_auc", "id", ("has_cactus",), classes=("0", "1"), positive="1"), False, {"proba": 2}),
    (Task("ordinal", "qwk", "id_code", ("diagnosis",), classes=("0", "1", "2")), True, {"proba": 3, "value": 1}),
    (Task("multilabel", "micro_f1", "id", ("tags",), classes=("a", "b")), True, {"tags": 2}),
    (Task("topk", "map@5", "Image", ("Id",), classes=("new_whale", "w1"), k=5, catch_all="new_whale"), True,
     {"proba": 2}),
    (Task("regression", "rmse", "Id", ("Pawpularity",)), False, {"value": 1}),
])
def test_what_heads_output_and_whether_the_rule_is_tuned(task, tuned, widths):
    assert task.tuned_decision is tuned
    assert {r: task.width(r) for r in widths} == widths
    assert task.response_of(("proba", "value", "tags")) == next(iter(widths))
    assert task.response_of(("value",)) == ("value" if "value" in widths else None)


SEEDLINGS = ["Black-grass", "Charlock", "Cleavers", "Common Chickweed", "Common wheat", "Fat Hen", "Loose Silky-bent",
             "Maize", "Scentless Mayweed", "Shepherds Purse", "Small-flowered Cranesbill", "Sugar beet"]


def test_class_names_sharing_a_word_are_labels_not_tags_nor_a_ranking():
    # plant-seedlings: "Common Chickweed" and "Common wheat" share a word; the sample's cell "Sugar beet" is one label
    task, notes = _detect("species", SEEDLINGS, ["species"], "Sugar beet")
    assert (task.kind, task.form, task.n_classes) == ("multiclass", "label", 12) and notes == []


def test_tags_whose_words_are_cells_of_their_own_say_so():
    task, notes = _detect("labels", ["Maize", "Maize rust", "wheat"], ["labels"], "")
    assert (task.kind, task.classes) == ("multilabel", ("Maize", "rust", "wheat"))
    assert len(notes) == 1 and "read as tags" in notes[0] and "--task multiclass" in notes[0]


def test_integers_where_the_sample_submits_values_are_a_value():
    # petfinder: few distinct Pawpularity scores in a small train.csv, but the sample writes 64.06
    task, notes = _detect("Pawpularity", [3, 17, 50, 64, 99, 17], ["Pawpularity"], "64.06")
    assert (task.kind, task.form, task.value_range) == ("regression", "value", (3.0, 99.0))
    assert len(notes) == 1 and "as the sample submits values such as '64.06'" in notes[0]


def test_tag_cells_beside_one_sample_column_per_tag():
    task, _ = _detect("tags", ["a b", "b", "c a"], ["a", "b", "c"], "0.5")
    assert (task.kind, task.form, task.classes) == ("multilabel", "tag_proba", ("a", "b", "c"))
    assert task.encode(pd.DataFrame({"tags": ["a b", "c"]}, index=["r1", "r2"]), "x").tolist() == [[1, 1, 0], [0, 0, 1]]
    with pytest.raises(KaggleTLError, match=r"train.csv: row 2 \(r1\): tag 'zz' is not among the 3 tags"):
        task.encode(pd.DataFrame({"tags": ["a zz"]}, index=["r1"]), "train.csv")


def test_a_label_every_sample_cell_ranks_first_is_noted_as_a_catch_all():
    task, notes = _detect("Id", ["new_whale", "w_1", "w_2", "new_whale"], ["Id"], "new_whale w_1 w_2 w_3 w_4")
    assert (task.kind, task.k, task.catch_all) == ("topk", 5, "")
    assert len(notes) == 1 and "--catch-all new_whale" in notes[0]
    assert _detect("Id", ["new_whale", "w_1"], ["Id"], "new_whale w_1", catch_all="new_whale")[1] == []
