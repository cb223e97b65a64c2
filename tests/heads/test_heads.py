"""Heads: the registry, the scikit-learn estimator contract, honest early stopping, determinism."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

# Small data: small batches and a higher rate give the dense head enough Adam steps.
from conftest import blobs  # noqa: E402
from kaggle_tl.errors import KaggleTLError
from kaggle_tl.heads.base import create_head, list_heads, register_head
from kaggle_tl.heads.dense import DenseHead, _Adam, _keep_mask
from kaggle_tl.heads.linear import LogRegHead, SVMHead
from kaggle_tl.heads.svm import LinearSVM

HEADS = [pytest.param(lambda: DenseHead(max_epochs=60, patience=5, batch_size=16, learning_rate=1e-2), id="dense"),
         pytest.param(lambda: SVMHead(), id="svm"),
         pytest.param(lambda: LogRegHead(), id="logreg")]


# -- registry -------------------------------------------------------------------------------------
def test_create_head_builds_each_registered_head_with_its_defaults():
    assert list_heads() == ["dense", "logreg", "ridge", "svm", "svr"]
    dense = create_head("dense", random_state=7)
    assert isinstance(dense, DenseHead) and dense.random_state == 7
    assert (dense.max_epochs, dense.dropout, dense.learning_rate, dense.patience) == (50, 0.5, 1e-3, 5)
    assert dense.early_stopping == "inner" and not dense.uses_fold_for_early_stopping
    assert create_head("dense", early_stopping="fold").uses_fold_for_early_stopping
    assert not create_head("svm").uses_fold_for_early_stopping and not create_head("logreg").uses_fold_for_early_stopping
    logreg, svm = create_head("logreg"), create_head("svm")
    assert isinstance(logreg, LogRegHead) and (logreg.C, logreg.transform) == ("auto", "sqrt,standard")
    assert isinstance(svm, SVMHead) and (svm.C, svm.transform) == (0.001, "sqrt,standard")
    assert dense.transform == "none"
    assert create_head("logreg", C=1).C == 1  # an int where a float is expected is fine


def test_register_head_adds_a_head_that_create_head_builds(monkeypatch):
    import kaggle_tl.heads.base as heads

    monkeypatch.setattr(heads.HEADS, "_entries", dict(heads.HEADS._entries))

    @register_head("tiny_logreg")
    class TinyLogReg(LogRegHead):
        pass

    assert "tiny_logreg" in list_heads()
    assert isinstance(create_head("tiny_logreg", C=0.5), TinyLogReg)


def test_unknown_head_is_refused_with_the_choices():
    with pytest.raises(KaggleTLError, match=r"unknown head 'mlp'; choose from: dense, logreg, ridge, svm, svr"):
        create_head("mlp")


def test_unknown_parameter_is_refused_naming_head_parameter_and_valid_ones():
    with pytest.raises(KaggleTLError, match=r"head_params\.logreg: unknown parameter 'c'; valid: C, max_iter, transform, random_state"):
        create_head("logreg", c=0.2)


@pytest.mark.parametrize("name, param, value, message", [
    ("logreg", "C", 0, r"head_params\.logreg\.C: must be > 0 or \"auto\" .*, got 0$"),
    ("svm", "C", -1.0, r"head_params\.svm\.C: must be > 0 or \"auto\" .*, got -1.0$"),
    ("logreg", "C", "0.2", r"head_params\.logreg\.C: must be a number or \"auto\", got '0.2' \(str\)$"),
    ("logreg", "transform", "sqrt,whiten", r"head_params\.logreg\.transform: must be a transform such as sqrt"),
    ("dense", "transform", 1, r"head_params\.dense\.transform: must be a string, got 1 \(int\)$"),
    ("dense", "max_epochs", 0, r"head_params\.dense\.max_epochs: must be >= 1, got 0$"),
    ("dense", "max_epochs", 2.5, r"head_params\.dense\.max_epochs: must be an integer, got 2.5 \(float\)$"),
    ("dense", "dropout", 1.0, r"head_params\.dense\.dropout: must be in \[0, 1\), got 1.0$"),
    ("dense", "patience", 0, r"head_params\.dense\.patience: must be >= 1"),
    ("dense", "batch_size", True, r"head_params\.dense\.batch_size: must be an integer, got True \(bool\)$"),
    ("dense", "learning_rate", 0.0, r"head_params\.dense\.learning_rate: must be > 0"),
    ("dense", "l2", -0.1, r"head_params\.dense\.l2: must be >= 0 or \"auto\" .*, got -0.1$"),
    ("dense", "early_stopping", "val", r"head_params\.dense\.early_stopping: must be 'inner' or 'fold', got 'val'$"),
])
def test_bad_parameter_values_are_refused_in_one_line(name, param, value, message):
    with pytest.raises(KaggleTLError, match=message):
        create_head(name, **{param: value})


def test_fit_refuses_bad_values_set_without_create_head():
    X, y = blobs(n_per_class=5)
    with pytest.raises(KaggleTLError, match=r"head_params\.dense\.dropout"):
        DenseHead(dropout=1.5).fit(X, y)


# -- the estimator contract ------------------------------------------------------------------------
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


@pytest.mark.parametrize("make", HEADS)
def test_same_random_state_gives_identical_predictions_also_pickled_and_in_worker_processes(make):
    X, y = blobs(spread=3.0)  # overlapping classes: probabilities far from 0/1 show any difference
    fitted = [make().fit(X[:90], y[:90]) for _ in range(2)]
    proba = fitted[0].predict_proba(X[90:])
    np.testing.assert_array_equal(proba, fitted[1].predict_proba(X[90:]))
    np.testing.assert_array_equal(proba, pickle.loads(pickle.dumps(fitted[0])).predict_proba(X[90:]))
    in_workers = Parallel(n_jobs=2)(delayed(lambda h: h.fit(X[:90], y[:90]).predict_proba(X[90:]))(clone(make()))
                                    for _ in range(2))
    for worker_proba in in_workers:
        np.testing.assert_array_equal(proba, worker_proba)


def test_dense_head_depends_on_its_random_state():
    X, y = blobs(spread=3.0)
    first, second = (DenseHead(random_state=seed).fit(X[:90], y[:90]).predict_proba(X[90:]) for seed in (0, 1))
    assert not np.allclose(first, second)


# -- early stopping ---------------------------------------------------------------------------------
def noisy_validation():
    X, y = blobs(n_per_class=60, dim=64, spread=2.0)
    noise_labels = np.random.default_rng(1).permutation(y)  # validation labels unrelated to X
    return X[:120], y[:120], X[120:], noise_labels[120:]


def test_inner_early_stopping_never_looks_at_validation_data():
    x_fit, y_fit, x_val, y_val = noisy_validation()
    alone = DenseHead(max_epochs=40, patience=3).fit(x_fit, y_fit)
    given = DenseHead(max_epochs=40, patience=3).fit(x_fit, y_fit, validation_data=(x_val, y_val))
    assert given.early_stopped_on_ == "inner"
    assert given.n_epochs_ == alone.n_epochs_
    np.testing.assert_array_equal(given.predict_proba(x_val), alone.predict_proba(x_val))


def test_fold_early_stopping_stops_on_the_given_rows():
    x_fit, y_fit, x_val, y_val = noisy_validation()
    fold = DenseHead(max_epochs=40, patience=3, early_stopping="fold").fit(x_fit, y_fit, validation_data=(x_val, y_val))
    inner = DenseHead(max_epochs=40, patience=3).fit(x_fit, y_fit)
    assert fold.early_stopped_on_ == "fold"
    # Learning the real classes soon raises the loss on permuted labels; on real labels it keeps falling.
    assert fold.best_epoch_ <= 5 and fold.n_epochs_ == fold.best_epoch_ + 3
    assert inner.best_epoch_ >= 20


def test_fold_early_stopping_drops_validation_rows_of_classes_not_trained_on():
    X, y = blobs(n_per_class=20)
    head = DenseHead(max_epochs=3, early_stopping="fold")
    head.fit(X[y < 2], y[y < 2], validation_data=(X[y == 2], y[y == 2]))
    assert head.early_stopped_on_ == "inner" and list(head.classes_) == [0, 1]  # nothing left to stop on
    head.fit(X[y < 2], y[y < 2], validation_data=(X, y))
    assert head.early_stopped_on_ == "fold" and head.n_epochs_ >= 1


def test_dense_batch_gives_small_data_enough_steps_and_big_data_the_set_batch():
    X, y = blobs(n_per_class=100)
    assert DenseHead(max_epochs=1).fit(X, y).batch_size_ == 32  # 270 training rows // 16 < 32
    big_X, big_y = np.tile(X, (20, 1)), np.tile(y, 20)
    assert DenseHead(max_epochs=1).fit(big_X, big_y).batch_size_ == 256


# -- the fast heads against the implementations they replace ---------------------------------------
def test_dense_head_matches_the_keras_model_it_replaces():
    keras = pytest.importorskip("keras")
    X, y = blobs(n_per_class=80, dim=64, spread=3.0, seed=3)
    fit, val, test = slice(0, 160), slice(160, 200), slice(200, 240)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dropout(0.5),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(X[fit], y[fit], validation_data=(X[val], y[val]), epochs=50, batch_size=32, verbose=0,
              callbacks=[keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True)])
    keras_proba = model.predict(X[test], verbose=0).astype(np.float64)
    keras_loss = log_loss(y[test], keras_proba / keras_proba.sum(axis=1, keepdims=True))
    head = DenseHead(early_stopping="fold").fit(X[fit], y[fit], validation_data=(X[val], y[val]))
    assert head.batch_size_ == 32
    assert log_loss(y[test], head.predict_proba(X[test])) == pytest.approx(keras_loss, abs=0.05)


@pytest.mark.parametrize("n_classes, dim", [(2, 16), (4, 16), (3, 200)])  # dim 200 > 150 rows: not preconditioned
def test_linear_svm_solves_the_model_of_liblinear(n_classes, dim):
    X, y = blobs(n_per_class=50, n_classes=n_classes, dim=dim, spread=4.0, seed=5)
    X = StandardScaler().fit_transform(X)
    ours = LinearSVM(C=0.01).fit(X, y)
    theirs = LinearSVC(C=0.01, dual=True, tol=1e-8, max_iter=100_000).fit(X, y)
    np.testing.assert_allclose(ours.decision_function(X), theirs.decision_function(X), atol=2e-3)


def test_svm_head_matches_the_calibrated_liblinear_head_it_replaces():
    X, y = blobs(n_per_class=100, dim=32, spread=4.0, seed=4)
    liblinear = make_pipeline(StandardScaler(), CalibratedClassifierCV(
        LinearSVC(C=0.001), method="sigmoid", cv=3)).fit(X[:200], y[:200])
    head = SVMHead(transform="standard").fit(X[:200], y[:200])
    np.testing.assert_allclose(head.predict_proba(X[200:]), liblinear.predict_proba(X[200:]), atol=1e-3)


def test_linear_svm_warns_when_it_runs_out_of_steps():
    X, y = blobs(n_per_class=30, spread=4.0)
    with pytest.warns(ConvergenceWarning, match="max_iter=1 "):
        LinearSVM(C=1.0, max_iter=1).fit(X, y)


def test_dense_gradients_apply_inverted_dropout_to_forward_and_backward_pass():
    rng = np.random.default_rng(0)
    xb, yb = rng.normal(size=(8, 5)).astype(np.float32), np.array([0, 1, 2, 0, 1, 2, 0, 1])
    params = [rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)]
    head = DenseHead(dropout=0.25)
    grad_w, grad_b = head._gradients(xb.copy(), yb, params, np.random.default_rng(1))
    dropped = xb * _keep_mask(np.random.default_rng(1), xb.shape, 0.25) / 0.75  # the same mask, by seed
    logits = dropped @ params[0] + params[1]
    dlogits = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True) - np.eye(3)[yb]) / len(yb)
    np.testing.assert_allclose(grad_w, dropped.T @ dlogits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_b, dlogits.sum(axis=0), rtol=1e-5, atol=1e-6)


def test_dense_adam_steps_match_keras_train_on_batch():
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    xb, yb = rng.normal(size=(16, 6)).astype(np.float32), rng.integers(0, 3, 16)
    params = [rng.normal(size=(6, 3)).astype(np.float32), np.zeros(3, np.float32)]
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.set_weights([p.copy() for p in params])
    head, adam = DenseHead(dropout=0.0), _Adam(params, 1e-3)
    for _ in range(3):  # more than one step: Adam's bias correction changes with the step count
        model.train_on_batch(xb, yb)
        adam.step(head._gradients(xb.copy(), yb, params, rng))
    for ours, theirs in zip(params, model.get_weights()):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_dense_l2_auto_picks_the_grid_value_with_the_lowest_inner_loss_and_never_looks_at_scored_rows():
    from kaggle_tl.heads.dense import DENSE_L2_GRID

    X, y = blobs(n_per_class=60, n_classes=3, dim=24, spread=1.5, seed=11)
    auto = DenseHead(l2="auto", max_epochs=30).fit(X, y)
    assert auto.fitted_params()["l2"] in DENSE_L2_GRID
    losses = {l2: min(DenseHead(l2=l2, max_epochs=30).fit(X, y).validation_loss_) for l2 in DENSE_L2_GRID}
    assert auto.l2_ == min(losses, key=losses.get)
    fixed = DenseHead(l2=auto.l2_, max_epochs=30).fit(X, y)  # the same fit as the chosen one, bit for bit
    np.testing.assert_array_equal(auto.coef_, fixed.coef_)
    # Honest: with inner early stopping, rows handed as validation_data (a CV fold's scored rows) change nothing.
    other = DenseHead(l2="auto", max_epochs=30).fit(X, y, validation_data=(X[::-1] * 5, y[::-1]))
    np.testing.assert_array_equal(other.coef_, auto.coef_)
    assert DenseHead(l2=0.001).fit(X, y).fitted_params() == {}
