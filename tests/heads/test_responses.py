"""Every head's responses: tags and values learned, frozen as they predict, cloned, refused when not its own."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_multilabel_classification, make_regression

from kaggle_tl.errors import KaggleTLError
from kaggle_tl.heads.base import create_head, list_heads
from kaggle_tl.heads.dense import DenseHead
from kaggle_tl.heads.frozen import FoldModels
from kaggle_tl.heads.linear import LogRegHead, RidgeHead, SVRHead
from kaggle_tl.heads.tuning import tags_logloss

# Small data: small batches and a higher rate give the dense head enough Adam steps.
DENSE = {"max_epochs": 60, "patience": 5, "batch_size": 16, "learning_rate": 1e-2}
CASES = [pytest.param(lambda: LogRegHead(response="tags"), "tags", id="logreg-tags"),
         pytest.param(lambda: LogRegHead(C=0.1, transform="l2,pca_whiten(8)", response="tags"), "tags",
                      id="logreg-tags-fixed-C"),
         pytest.param(lambda: DenseHead(response="tags", **DENSE), "tags", id="dense-tags"),
         pytest.param(lambda: DenseHead(response="value", l2="auto", transform="sqrt,standard", **DENSE), "value",
                      id="dense-value"),
         pytest.param(lambda: RidgeHead(), "value", id="ridge"),
         pytest.param(lambda: RidgeHead(alpha=10.0, transform="pca_whiten(20)"), "value", id="ridge-fixed-alpha"),
         pytest.param(lambda: SVRHead(), "value", id="svr"),
         pytest.param(lambda: SVRHead(C=0.1, epsilon=0.0, transform="pca_whiten(20)"), "value", id="svr-fixed-C")]


def tags_data(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(X (n, 20) float32 counts, Y (n, 4) uint8 tags): scikit-learn's multi-label generator."""
    X, Y = make_multilabel_classification(n, 20, n_classes=4, n_labels=2, random_state=seed)
    return X.astype(np.float32), Y.astype(np.uint8)


def value_data(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(X (n, 20) float32, y (n,) float64): a linear target of 8 features plus noise, away from 0 (the
    intercept matters) and of scale ~100 (float32 rounding would show)."""
    X, y = make_regression(n, 20, n_informative=8, noise=10.0, random_state=seed)
    return X.astype(np.float32), y + 500.0


def data(response: str):
    return tags_data() if response == "tags" else value_data()


@pytest.mark.parametrize("make, response", CASES)
def test_head_learns_its_response_better_than_the_constant(make, response):
    X, y = data(response)
    head = make().fit(X[:200], y[:200])
    out = head.predict_response(X[200:])
    assert out.dtype == np.float64
    if response == "tags":
        assert out.shape == (100, 4) and ((0 <= out) & (out <= 1)).all()
        prior = np.tile(y[:200].mean(axis=0), (100, 1))
        assert tags_logloss(y[200:], out) < tags_logloss(y[200:], prior) - 0.05
        np.testing.assert_array_equal(head.predict(X[200:]), out >= 0.5)
    else:
        assert out.shape == (100, 1)
        assert np.sqrt(np.mean((out[:, 0] - y[200:]) ** 2)) < 0.7 * y[200:].std()
        np.testing.assert_array_equal(head.predict(X[200:]), out[:, 0])


@pytest.mark.parametrize("make, response", CASES)
def test_frozen_head_predicts_as_the_fitted_one_also_read_back_from_a_fits_file(make, response, tmp_path):
    X, y = data(response)
    head = make().fit(X[:200], y[:200])
    frozen = head.freeze()
    assert frozen.response == response and frozen.output == {"tags": "sigmoid", "value": "identity"}[response]
    live = head.predict_response(X[200:])
    np.testing.assert_allclose(frozen.predict_response(X[200:]), live, rtol=0, atol=1e-6)
    path = tmp_path / "fits.npz"
    path.write_bytes(FoldModels(["original"], [[frozen]], {"C": np.ones((1, 1))}).to_bytes())
    loaded = FoldModels.load(path, FoldModels.max_bytes(1, 1, X.shape[1], 4)).models[0][0]
    assert loaded.output == frozen.output and np.array_equal(loaded.classes_, frozen.classes_)
    np.testing.assert_array_equal(loaded.predict_response(X[200:]), frozen.predict_response(X[200:]))


@pytest.mark.parametrize("make, response", CASES)
def test_head_clones_with_its_response_and_unfitted(make, response):
    head = make()
    assert head.get_params()["response"] == response
    copy = clone(head)
    assert copy.get_params() == head.get_params() and not hasattr(copy, "coef_") and not hasattr(copy, "model_")
    X, y = data(response)
    np.testing.assert_array_equal(copy.fit(X, y).predict_response(X[:5]), make().fit(X, y).predict_response(X[:5]))


def test_each_head_says_what_it_can_output_and_defaults_to_the_first():
    responses = {name: create_head(name).responses for name in list_heads()}
    assert responses == {"dense": ("proba", "tags", "value"), "logreg": ("proba", "tags"), "ridge": ("value",),
                         "svm": ("proba",), "svr": ("value",)}
    for name in list_heads():
        assert create_head(name).response == responses[name][0]


def test_the_caller_sets_the_response_on_a_clone():
    X, Y = tags_data()
    head = clone(create_head("logreg", C=1.0)).set_params(response="tags").fit(X, Y)
    assert head.predict_response(X).shape == (300, 4) and list(head.classes_) == [0, 1, 2, 3]


@pytest.mark.parametrize("name, response, allowed", [("svm", "tags", "proba"), ("logreg", "value", "proba, tags"),
                                                     ("ridge", "proba", "value"), ("svr", "tags", "value"),
                                                     ("dense", "labels", "proba, tags, value")])
def test_a_response_a_head_cannot_give_is_refused_in_one_line(name, response, allowed):
    message = rf"^head_params\.{name}\.response: must be one of {allowed}, got '{response}'$"
    with pytest.raises(KaggleTLError, match=message):
        create_head(name, response=response)
    X, y = value_data(40)
    with pytest.raises(KaggleTLError, match=message):  # set on a clone, as the caller does: refused by fit
        clone(create_head(name)).set_params(response=response).fit(X, y)


@pytest.mark.parametrize("make", [lambda: LogRegHead(response="tags"), lambda: LogRegHead(C=1.0, response="tags"),
                                  lambda: DenseHead(response="tags", **DENSE)],
                         ids=["logreg", "logreg-fixed-C", "dense"])
def test_a_tag_of_one_value_in_the_training_rows_predicts_that_value(make):
    X, Y = tags_data()
    Y[:, 1], Y[:, 2] = 0, 1  # never / always present
    head = make().fit(X, Y)
    out = head.predict_response(X)
    assert out[:, 1].max() < 0.01 and out[:, 2].min() > 0.99
    assert np.isfinite(out).all() and tags_logloss(Y[:, [0, 3]], out[:, [0, 3]]) < 0.5
    np.testing.assert_allclose(head.freeze().predict_response(X), out, rtol=0, atol=1e-6)


def test_a_tag_present_only_in_the_inner_validation_rows_does_not_break_the_c_choice():
    X, Y = tags_data()
    Y[:, 1] = 0
    Y[7, 1] = 1  # one positive row: in the inner fit rows or the inner validation rows, never both
    head = LogRegHead(response="tags").fit(X, Y)
    assert np.isfinite(head.fitted_params()["C"]) and np.isfinite(head.predict_response(X)).all()


def test_dense_value_is_trained_standardised_and_predicts_in_the_targets_units():
    X, y = value_data()
    head = DenseHead(response="value", dropout=0.0, transform="standard", **DENSE).fit(X[:200], y[:200])
    assert head.y_mean_ == pytest.approx(y[:200].mean()) and head.y_scale_ == pytest.approx(y[:200].std())
    assert min(head.validation_loss_) < 0.2  # mean squared error of the standardised target
    moved = DenseHead(response="value", dropout=0.0, transform="standard", **DENSE).fit(X[:200], 3 * y[:200] - 7)
    np.testing.assert_allclose(moved.predict_response(X[200:]), 3 * head.predict_response(X[200:]) - 7, rtol=1e-5)


@pytest.mark.parametrize("response", ["tags", "value"])
def test_dense_fold_early_stopping_stops_on_the_given_rows_of_any_response(response):
    X, y = data(response)
    head = DenseHead(response=response, early_stopping="fold", **DENSE)
    head.fit(X[:200], y[:200], validation_data=(X[200:], y[200:]))
    assert head.early_stopped_on_ == "fold"
    loss = head._validation_loss(head.transform_.transform(X[200:]) @ head.coef_ + head.intercept_,
                                 y[200:].astype(np.float32) if response == "tags" else head._standardised(y[200:]))
    assert loss == pytest.approx(min(head.validation_loss_), rel=1e-6)  # the best epoch's loss on those rows
