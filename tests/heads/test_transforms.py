"""Feature transforms: each step's values, spec errors, and fitting on a fold's training rows only."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import PredefinedSplit, StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline

from kaggle_tl.errors import KaggleTLError
from kaggle_tl.heads.transforms import make_transform

SPECS = ["sqrt", "l2", "standard", "pca_whiten(4)", "sqrt,standard", "sqrt,pca_whiten(6)", "l2,standard"]


def _features(n: int = 60, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = rng.gamma(2.0, 1.0, (n, d)) + y[:, None] * 0.5  # non-negative, like pooled ReLU features
    return X.astype(np.float32), y


def test_each_step_computes_its_definition():
    X, _ = _features()
    X[0, 0] = -4.0  # signed: sqrt keeps the sign
    np.testing.assert_allclose(make_transform("sqrt").fit_transform(X), np.sign(X) * np.sqrt(np.abs(X)), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(make_transform("l2").fit_transform(X), axis=1), 1.0, rtol=1e-5)
    standard = make_transform("standard").fit_transform(X)
    np.testing.assert_allclose(standard.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(standard.std(axis=0), 1.0, rtol=1e-4)
    whitened = make_transform("pca_whiten(4)").fit_transform(X)
    assert whitened.shape == (60, 4)
    np.testing.assert_allclose(np.cov(whitened, rowvar=False), np.eye(4), atol=1e-4)
    # Chained in order: sqrt first, then standardise what it gave.
    chained = make_transform("sqrt, standard").fit_transform(X)
    np.testing.assert_allclose(chained, make_transform("standard").fit_transform(
        make_transform("sqrt").fit_transform(X)), rtol=1e-5, atol=1e-6)


def test_pca_whiten_clamps_to_the_rows_it_is_fitted_on_minus_one_and_says_so(caplog):
    caplog.set_level(logging.INFO, logger="kaggle_tl")
    X, _ = _features(n=10, d=8)
    assert make_transform("pca_whiten(256)").fit_transform(X).shape == (10, 8)
    # 5 centred rows span 4 directions: a 5th component has no variance and would blow unseen rows up.
    fitted = make_transform("pca_whiten(256)").fit(X[:5])
    assert fitted.transform(X[:5]).shape == (5, 4)
    assert np.abs(fitted.transform(X[5:])).max() < 100
    assert "pca_whiten(256): 4 components on 5 rows x 8 columns (at most rows - 1 and the columns)" in caplog.text


@pytest.mark.parametrize("spec", ["", "none", "None", " passthrough "])
def test_no_transform_is_passthrough(spec):
    assert make_transform(spec) == "passthrough"


@pytest.mark.parametrize("spec, message", [
    ("sqrt,foo", r"transform 'sqrt,foo': unknown step 'foo'; choose from sqrt, l2, standard, pca_whiten\(n\)"),
    ("pca_whiten", r"'pca_whiten' needs a whole number of components >= 1"),
    ("pca_whiten(0)", r"'pca_whiten\(0\)' needs a whole number"),
    ("sqrt,pca_whiten(x)", r"'pca_whiten\(x\)' needs a whole number"),
    ("sqrt,,standard", "an empty step"),
])
def test_bad_spec_is_one_line_naming_the_part(spec, message):
    with pytest.raises(KaggleTLError, match=message) as error:
        make_transform(spec)
    assert "\n" not in str(error.value)


def test_not_a_string():
    with pytest.raises(KaggleTLError, match="must be a string"):
        make_transform(["sqrt"])


def _folds(y: np.ndarray) -> np.ndarray:
    """Each row's fold of 3 stratified folds."""
    folds = np.zeros(len(y), dtype=int)
    for k, (_, rows) in enumerate(StratifiedKFold(3, shuffle=True, random_state=0).split(y, y)):
        folds[rows] = k
    return folds


def _oof(head, X: np.ndarray, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """OOF probabilities of ``head`` over ``folds`` by scikit-learn's cross_val_predict (a clone fitted per fold)."""
    return cross_val_predict(head, X, y, cv=PredefinedSplit(folds), method="predict_proba")


@pytest.mark.parametrize("spec", SPECS)
def test_fitting_never_sees_the_scored_rows(spec):
    # A row's OOF prediction may depend on the fold's training rows and on the row itself, never on
    # the other rows it is scored with: change those wildly and it must not move. A transform
    # fitted on every row (mean, scale, components) would move it.
    X, y = _features()
    folds = _folds(y)
    head = make_pipeline(make_transform(spec), LogisticRegression(max_iter=2000))
    before = _oof(head, X, y, folds)
    fold0 = np.flatnonzero(folds == 0)
    watched, others = fold0[0], fold0[1:]
    changed = X.copy()
    changed[others] = changed[others] * 50 + 100
    after = _oof(head, changed, y, folds)
    np.testing.assert_allclose(after[watched], before[watched], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("spec", ["standard", "pca_whiten(4)"])
def test_the_leak_check_catches_a_transform_fitted_on_every_row(spec):
    # The control for the test above: the same check fails when the transform saw the scored rows.
    X, y = _features()
    folds = _folds(y)
    fold0 = np.flatnonzero(folds == 0)
    watched, others = fold0[0], fold0[1:]
    changed = X.copy()
    changed[others] = changed[others] * 50 + 100

    def leaky_oof(features):
        transformed = make_transform(spec).fit_transform(features)  # fitted once, on every row
        return _oof(LogisticRegression(max_iter=2000), transformed, y, folds)

    assert np.abs(leaky_oof(changed)[watched] - leaky_oof(X)[watched]).max() > 1e-3
