"""Ensemble strategies on synthetic prediction sets where the right answer is known."""
import numpy as np
import pytest
from scipy.special import softmax
from sklearn.metrics import log_loss

from conftest import class_task  # noqa: E402
from kaggle_tl.config import RunConfig
from kaggle_tl.ensemble.across_runs import concat_vs_average
from kaggle_tl.ensemble.strategies import Mean, compare_strategies, create_strategy, list_strategies, nested_cv_predict
from kaggle_tl.errors import KaggleTLError
from kaggle_tl.runs.compare import RunModel
from kaggle_tl.runs.record import ModelRecord, Predictions, RunRecord
from kaggle_tl.tasks.evaluate import score_prediction
from kaggle_tl.tasks.metrics import Score, row_logloss

N_ROWS, N_TEST, N_CLASSES, N_FOLDS = 600, 50, 4, 5
SELECTING = ["best_single", "weighted", "greedy"]
TASK = class_task(N_CLASSES)


def _logloss(y, proba):
    return float(row_logloss(y, proba).mean())
FITTED = ["weighted", "greedy", "stacking"]


def _good_model(rng: np.random.Generator, y: np.ndarray) -> np.ndarray:
    """Probabilities peaked at the true class, with independent logit noise."""
    logits = rng.normal(0.0, 1.5, size=(len(y), N_CLASSES)) + 2.0 * np.eye(N_CLASSES)[y]
    return softmax(logits, axis=1)


@pytest.fixture(scope="module")
def predictions():
    """y, folds, OOF and test predictions of two good models and one pure-noise model."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, N_CLASSES, N_ROWS)
    y_test = rng.integers(0, N_CLASSES, N_TEST)
    folds = rng.permutation(np.arange(N_ROWS) % N_FOLDS)
    oof = {
        "good": _good_model(rng, y),
        "good2": _good_model(rng, y),
        "noise": rng.dirichlet(np.ones(N_CLASSES), N_ROWS),
    }
    test = {
        "good": _good_model(rng, y_test),
        "good2": _good_model(rng, y_test),
        "noise": rng.dirichlet(np.ones(N_CLASSES), N_TEST),
    }
    return y, folds, oof, test


@pytest.fixture(scope="module")
def compared(predictions):
    """compare_strategies over all registered strategies, with test predictions."""
    y, folds, oof, test = predictions
    return compare_strategies(oof, y, folds, TASK, test=test)


@pytest.mark.parametrize("name", SELECTING)
def test_selection_drops_noise_model(predictions, name):
    y, _, oof, _ = predictions
    strategy = create_strategy(name).fit(list(oof.values()), y)
    assert strategy.weights_[list(oof).index("noise")] < 0.05
    assert strategy.weights_.sum() == pytest.approx(1.0)
    assert np.all(strategy.weights_ >= 0)


def test_mean_of_identical_models_equals_either(predictions):
    y, _, oof, _ = predictions
    good = oof["good"]
    np.testing.assert_allclose(Mean().fit([good, good]).combine([good, good]), good, rtol=1e-12)


@pytest.mark.parametrize("name", ["weighted", "greedy"])
def test_identical_models_keep_their_logloss(predictions, name):
    y, _, oof, _ = predictions
    good = oof["good"]
    combined = create_strategy(name).fit([good, good], y).combine([good, good])
    assert _logloss(y, combined) == pytest.approx(_logloss(y, good), rel=1e-6)


def test_averaging_independent_good_models_beats_each(predictions):
    y, _, oof, _ = predictions
    pair = [oof["good"], oof["good2"]]
    averaged = _logloss(y, Mean().fit(pair).combine(pair))
    assert averaged < min(_logloss(y, p) for p in pair)


@pytest.mark.parametrize("name", FITTED)
def test_nested_cv_is_not_better_than_in_sample_oracle(predictions, compared, name):
    y, _, oof, _ = predictions
    table, _, _, _ = compared
    probas = list(oof.values())
    oracle = create_strategy(name).fit(probas, y).combine(probas)
    nested_logloss = table.set_index("strategy").loc[name, "cv_logloss"]
    assert nested_logloss > _logloss(y, oracle)


def test_nested_cv_fits_never_see_held_out_rows(predictions):
    y, folds, oof, _ = predictions
    seen_row_counts = []

    class Spy(Mean):
        needs_fit = True

        def fit(self, probas, y=None):
            seen_row_counts.append(len(y))
            return super().fit(probas, y)

    nested_cv_predict(Spy(), list(oof.values()), y, folds)
    assert seen_row_counts == [N_ROWS - np.sum(folds == k) for k in range(N_FOLDS)]


def test_fitted_strategies_are_scored_by_nested_cv(predictions):
    """A stacker scored in-sample would look better than its nested CV score."""
    y, folds, oof, _ = predictions
    probas = list(oof.values())
    table, nested_oof, _, _ = compare_strategies(oof, y, folds, TASK, strategies=["stacking"])
    in_sample = create_strategy("stacking").fit(probas, y).combine(probas)
    assert not np.allclose(nested_oof["stacking"], in_sample)
    assert table.loc[0, "cv_logloss"] == pytest.approx(_logloss(y, nested_oof["stacking"]))


@pytest.mark.parametrize("name", list_strategies())
def test_predictions_are_normalised_with_right_shapes(compared, name):
    _, oof_by_strategy, test_by_strategy, _ = compared
    assert oof_by_strategy[name].shape == (N_ROWS, N_CLASSES)
    assert test_by_strategy[name].shape == (N_TEST, N_CLASSES)
    for proba in (oof_by_strategy[name], test_by_strategy[name]):
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-10)
        assert np.all(proba > 0)


def test_table_is_sorted_and_complete(compared):
    table, _, _, _ = compared
    assert list(table.columns) == ["strategy", *Score.COLUMNS, "description"]
    assert sorted(table["strategy"]) == list_strategies()
    assert table["cv_logloss"].is_monotonic_increasing and (table["cv_score"] == table["cv_logloss"]).all()
    assert table["description"].str.len().min() > 0


def test_no_test_gives_empty_test_predictions(predictions):
    y, folds, oof, _ = predictions
    _, _, test_by_strategy, _ = compare_strategies(oof, y, folds, TASK, strategies=["mean"])
    assert test_by_strategy == {}


def test_stacking_on_informative_model_beats_chance(predictions):
    y, folds, oof, _ = predictions
    table, _, _, _ = compare_strategies({"good": oof["good"], "noise": oof["noise"]}, y, folds,
                                        class_task(N_CLASSES, "accuracy"), strategies=["stacking"])
    assert table.loc[0, "cv_logloss"] < np.log(N_CLASSES) - 0.2
    assert table.loc[0, "metric"] == "accuracy" and table.loc[0, "cv_score"] > 1.0 / N_CLASSES + 0.2


def test_score_counts_classes_absent_from_y():
    y = np.array([0, 1, 1])
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.3, 0.2]])
    folds = np.array([0, 1, 0])
    logloss = score_prediction(class_task(3), y, proba, folds, np.zeros((3, 0)))
    accuracy = score_prediction(class_task(3, "accuracy"), y, proba, folds, np.zeros((3, 0)))
    assert logloss.value == logloss.logloss == pytest.approx(log_loss(y, proba, labels=[0, 1, 2]))
    assert accuracy.value == pytest.approx(2 / 3) and accuracy.logloss == logloss.logloss


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda oof, y, folds: {"y": y[:-1]}, "one entry per OOF row"),
        (lambda oof, y, folds: {"folds": np.zeros_like(folds)}, "two distinct"),
        (lambda oof, y, folds: {"oof": {**oof, "bad": oof["good"][:, :2]}}, "one shape"),
        (lambda oof, y, folds: {"oof": {}}, "no OOF predictions"),
    ],
)
def test_bad_inputs_raise_actionable_errors(predictions, change, message):
    y, folds, oof, _ = predictions
    inputs = {"oof": oof, "y": y, "folds": folds, "task": TASK}
    with pytest.raises(KaggleTLError, match=message):
        compare_strategies(**{**inputs, **change(oof, y, folds)})


def test_test_predictions_must_cover_the_same_models(predictions):
    y, folds, oof, test = predictions
    with pytest.raises(KaggleTLError, match="same models"):
        compare_strategies(oof, y, folds, TASK, test={"good": test["good"]})


def test_unknown_strategy_name():
    with pytest.raises(KaggleTLError, match="unknown ensemble strategy"):
        create_strategy("median")


# --------------------------------------------------------------------------- concat vs average pairing
def _model(run_id, backbones, head="dense", views=("original", "hflip"), weights="imagenet"):
    run = RunRecord(run_id=run_id, config=RunConfig(data="/c", weights=weights, resize="squash"),
                    data_fingerprint="f", image_keys={}, task=class_task(1), layout={}, submission_columns=["id", "c0"],
                    train_ids=["t"], test_ids=["u"], train_paths=[], test_paths=[], backbones=[])
    entry = ModelRecord(f"{'+'.join(backbones)}__{head}", head, {}, list(backbones), "proba",
                        Score("log_loss", 0.0, 0.0, False), False, "", "")
    ones = np.ones((len(views), 1, 1))
    return RunModel(run, entry, Predictions(list(views), ones, ones[:, None], np.zeros(1, int), np.zeros(1, int)))


def test_concat_pairs_with_newest_matching_single_backbone_models():
    models = [_model("r1", ["a"]), _model("r2", ["b"]), _model("r3", ["a"]), _model("r4", ["a", "b"]),
              _model("r5", ["a", "b"], head="svm"), _model("r6", ["b"], head="svm", weights="none")]
    (pair,) = concat_vs_average(models)  # the svm concat has no svm single on "a", and "b"'s has other weights
    concat, singles = pair
    assert concat.key == "r4/a+b__dense"
    assert [m.key for m in singles] == ["r3/a__dense", "r2/b__dense"]  # r3 is newer than r1


def test_no_pairs_without_single_backbone_models_on_the_same_views():
    models = [_model("r1", ["a"], views=("original",)), _model("r2", ["b"]), _model("r3", ["a", "b"])]
    assert concat_vs_average(models) == []
