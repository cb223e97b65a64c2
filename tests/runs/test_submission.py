"""Submission CSVs: exact ids whatever their characters, validated, atomic, never overwritten."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from kaggle_tl.errors import KaggleTLError
from kaggle_tl.runs.submission import (build_submission, read_sample_submission, score_submission, validate_submission,
                                       write_submission)
from kaggle_tl.tasks.detect import TaskSettings
from kaggle_tl.tasks.task import Task

# Commas, quotes, a newline-free but otherwise hostile mix, non-ASCII, and cells a spreadsheet
# would run as formulas: a submission must still carry them byte for byte.
ODD_IDS = ["a,b", 'say "hi"', "it's", "café", "日本", "=1+1", "+cmd", "-2", "@SUM(A1)", "NA", "00123", " pad "]
CLASSES = ["cat", "=dog", "café"]
TASK = Task("multiclass", "log_loss", id_column="id", target_columns=tuple(CLASSES), classes=tuple(CLASSES))


@pytest.fixture
def sample() -> pd.DataFrame:
    order = ODD_IDS[::-1]
    return pd.DataFrame({"id": order, **{c: 1 / 3 for c in CLASSES}})


@pytest.fixture
def frame(sample) -> pd.DataFrame:
    proba = np.random.default_rng(0).dirichlet(np.ones(3), size=len(ODD_IDS))
    return build_submission(TASK, proba, np.zeros(0), ODD_IDS, sample)


def test_ids_and_class_names_round_trip_exactly(frame, sample, tmp_path):
    path = write_submission(frame, sample, tmp_path, "sub", TASK)
    back = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert back["id"].tolist() == sample["id"].tolist()  # sample order, not escaped, not stripped
    assert list(back.columns) == ["id", *CLASSES]
    np.testing.assert_allclose(back[CLASSES].astype(float).to_numpy().sum(axis=1), 1.0, atol=1e-6)


def test_rows_follow_the_sample_not_the_prediction_order(frame, sample):
    assert frame["id"].tolist() == sample["id"].tolist()


def test_never_overwrites_and_leaves_no_temp_files(frame, sample, tmp_path):
    (tmp_path / "sub.csv").write_text("someone else's file")
    (tmp_path / "sub-1.json").write_text("a sidecar whose CSV was deleted")
    path = write_submission(frame, sample, tmp_path, "sub", TASK)
    assert path.name == "sub-2.csv"
    assert (tmp_path / "sub.csv").read_text() == "someone else's file"
    assert write_submission(frame, sample, tmp_path, "sub", TASK).name == "sub-3.csv"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub-1.json", "sub-2.csv", "sub-3.csv", "sub.csv"]


def test_unwritable_directory_is_one_clear_error(frame, sample, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(KaggleTLError, match=f"{blocker / 'subs'}: submissions folder is not writable"):
        write_submission(frame, sample, blocker / "subs", "sub", TASK)
    # The folder itself a file: named as one (it had read "too many submissions named sub").
    with pytest.raises(KaggleTLError, match=f"{blocker}: submissions folder is a file, not a folder"):
        write_submission(frame, sample, blocker, "sub", TASK)


@pytest.mark.parametrize("change, message", [
    (lambda f: f.iloc[1:], r"1 id\(s\) missing"),
    (lambda f: pd.concat([f, f.iloc[:1]]), "appears more than once"),
    (lambda f: f.assign(id=f["id"].where(f["id"] != "café", "cafe")), r"1 id\(s\) missing .*1 unexpected"),
    (lambda f: f[["id", "cat", "café", "=dog"]], "columns differ"),
    (lambda f: f.assign(cat=np.nan), "NaN"),
])
def test_validation_stops_a_wrong_submission(frame, sample, change, message):
    with pytest.raises(KaggleTLError, match=message):
        validate_submission(change(frame.copy()), sample, TASK)


# -- scoring and the sample: the header as written, never a column pandas invents -------------------
def graded_files(folder, submission_header: str, sample_header: str | None = None, labels_header: str = "id,label"):
    """labels.csv, submission.csv (and sample.csv) with the given header lines; rows fill every column."""
    def write(name: str, header: str, rows: list[list[str]]) -> None:
        width = header.count(",") + 1
        lines = [header] + [",".join((row + [""] * width)[:width]) for row in rows]
        (folder / name).write_text("\n".join(lines) + "\n")

    write("labels.csv", labels_header, [["a", "cat", "cat"], ["b", "dog", "dog"]])
    write("submission.csv", submission_header, [["a", "0.7", "0.2", "0.1"], ["b", "0.1", "0.8", "0.1"]])
    if sample_header:
        write("sample.csv", sample_header, [["a", "0.3", "0.3", "0.4"], ["b", "0.3", "0.3", "0.4"]])
    return [folder / "submission.csv", folder / "labels.csv"] + ([folder / "sample.csv"] if sample_header else [])


@pytest.mark.parametrize("headers, message", [
    (("id,cat,dog,fox,",), r"submission.csv: empty column name at position 5 of the header"),
    (("id,cat,dog,cat",), r"submission.csv: duplicated column 'cat' in the header \(positions 2 and 4\)"),
    (("id,cat,dog,fox", "id,cat,dog,fox,"), r"sample.csv: empty column name at position 5 of the header"),
    (("id,cat,dog,fox", "id,cat,dog,cat"), r"sample.csv: duplicated column 'cat' in the header"),
    (("id,cat,dog,fox", None, "id,label,label"), r"labels.csv: duplicated column 'label' in the header"),
], ids=["submission-trailing-comma", "submission-duplicate", "sample-trailing-comma", "sample-duplicate",
        "labels-duplicate"])
def test_score_refuses_headers_pandas_would_rename(tmp_path, headers, message):
    paths = graded_files(tmp_path, *headers)
    with pytest.raises(KaggleTLError, match=message) as exc:
        score_submission(*paths)
    assert "\n" not in str(exc.value)


def test_score_reads_a_sample_with_the_exact_header(tmp_path):
    scores = score_submission(*graded_files(tmp_path, "id,cat,dog,fox", "id,cat,dog,fox"))
    assert scores["rows"] == 2 and scores["classes"] == 3


def test_sample_submission_columns_are_the_header_exactly(tmp_path):
    path = tmp_path / "sample.csv"
    path.write_text('\ufeffid," cat","dog,fox"\n1,0.5,0.5\n')  # Excel's byte-order mark; quoted names
    assert list(read_sample_submission(path).columns) == ["id", " cat", "dog,fox"]
    path.write_text("id,cat,dog\n1,0.5,0.5,\n")  # pandas would make the ids the index
    with pytest.raises(KaggleTLError, match=r"sample.csv: line 2 has more fields than the 3 of the header"):
        read_sample_submission(path)


def test_unreadable_sample_is_one_line(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")  # tests run as root, whom chmod 000 does not stop

    (tmp_path / "sample.csv").write_text("id,a\n1,1\n")
    monkeypatch.setattr("kaggle_tl.data.csvs.open", denied, raising=False)
    with pytest.raises(KaggleTLError, match=r"sample.csv: cannot read the sample submission \(Permission denied\)$"):
        read_sample_submission(tmp_path / "sample.csv")


@pytest.mark.parametrize("metric, sklearn_metric", [
    ("accuracy", lambda t, p: skm.accuracy_score(t, p)),
    ("error", lambda t, p: 1 - skm.accuracy_score(t, p)),
    ("macro_f1", lambda t, p: skm.f1_score(t, p, average="macro")),
    ("micro_f1", lambda t, p: skm.f1_score(t, p, average="micro")),
])
def test_a_predicted_label_no_answer_holds_is_scored_wrong_as_the_grader_scores_it(tmp_path, metric, sklearn_metric):
    # inaturalist's id,predicted: category ids the test rows never have (two distinct ones) are wrong answers,
    # each its own class for macro F1, exactly as scikit-learn scores the raw labels
    truth = ["5", "5", "9", "9", "5", "9"]
    predicted = ["5", "7", "9", "1009", "5", "7"]
    pd.DataFrame({"id": range(6), "predicted": truth}).to_csv(tmp_path / "answers.csv", index=False)
    pd.DataFrame({"id": range(6), "predicted": predicted}).to_csv(tmp_path / "sub.csv", index=False)
    scores = score_submission(tmp_path / "sub.csv", tmp_path / "answers.csv", label_column="predicted",
                              settings=TaskSettings(metric=metric))
    assert scores["score"] == pytest.approx(sklearn_metric(truth, predicted), abs=1e-12)
