"""Heads honour the scikit-learn estimator contract and learn a separable task."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import accuracy_score

from kaggle_tl.heads import DenseHead, LogRegHead, SVMHead, make_head


def blobs(n_per_class=40, n_classes=3, dim=32, seed=0, spread=0.6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) * 3
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = (centres[y] + rng.normal(scale=spread, size=(len(y), dim))).astype(np.float32)
    order = rng.permutation(len(y))
    return X[order], y[order]


# Small data: small batches and a higher rate give the dense head enough Adam steps.
HEADS = [pytest.param(lambda: DenseHead(max_epochs=60, patience=5, batch_size=16, learning_rate=1e-2), id="dense"),
         pytest.param(lambda: SVMHead(), id="svm"),
         pytest.param(lambda: LogRegHead(), id="logreg")]


@pytest.mark.parametrize("make", HEADS)
def test_head_learns_and_returns_probabilities_in_classes_order(make):
    X, y = blobs()
    labels = np.array(["cat", "dog", "eel"])[y]  # string labels: columns must follow classes_
    head = make().fit(X[:90], labels[:90])
    assert list(head.classes_) == ["cat", "dog", "eel"]
    proba = head.predict_proba(X[90:])
    assert proba.shape == (30, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert accuracy_score(labels[90:], head.classes_[proba.argmax(axis=1)]) >= 0.95
    assert accuracy_score(labels[90:], head.predict(X[90:])) >= 0.95


@pytest.mark.parametrize("make", HEADS)
def test_head_clones_with_its_parameters_and_unfitted(make):
    head = make()
    copy = clone(head)
    assert copy.get_params() == head.get_params()
    assert not hasattr(copy, "classes_")


def test_dense_head_stops_early_on_the_given_validation_rows():
    X, y = blobs(n_per_class=30)
    rng = np.random.default_rng(1)
    noise_labels = rng.permutation(y)  # validation labels unrelated to X: val loss rises at once
    head = DenseHead(max_epochs=40, patience=2, batch_size=16, learning_rate=1e-2).fit(X[:60], y[:60], validation_data=(X[60:], noise_labels[60:]))
    assert head.n_epochs_ < 40
    assert head.best_epoch_ <= head.n_epochs_ - 2


def test_make_head_passes_seed_and_epochs():
    head = make_head("dense", seed=7, max_epochs=3)
    assert isinstance(head, DenseHead) and head.random_state == 7 and head.max_epochs == 3
    assert make_head("logreg", seed=7).random_state == 7


def test_dense_head_falls_back_to_an_inner_split_when_no_validation_class_was_trained_on():
    X, y = blobs(n_per_class=20)
    head = DenseHead(max_epochs=3).fit(X[y < 2], y[y < 2], validation_data=(X[y == 2], y[y == 2]))
    assert head.n_epochs_ >= 1 and list(head.classes_) == [0, 1]


def test_make_head_passes_regularisation():
    assert make_head("logreg", logreg_c=0.2).C == 0.2
    assert make_head("svm", svm_c=0.5).C == 0.5
