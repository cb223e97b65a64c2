"""Ridge in closed form: scikit-learn's Ridge at every alpha of one decomposition, alpha chosen on an inner split."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import is_regressor
from sklearn.datasets import make_regression
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold, cross_val_predict

from kaggle_tl.heads.linear import RidgeHead
from kaggle_tl.heads.ridge import ridge_fit, ridge_path
from kaggle_tl.heads.transforms import make_transform
from kaggle_tl.heads.tuning import RIDGE_ALPHA_GRID, choose_ridge_alpha, inner_split


def values(n: int, d: int, noise: float, informative: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_regression(n, d, n_informative=informative, noise=noise, random_state=seed)
    return X.astype(np.float32), y + 500.0


@pytest.mark.parametrize("n, d", [(120, 20), (40, 90)])  # more rows than columns (eigh of X^T X), and fewer (of X X^T)
def test_the_path_is_scikit_learns_ridge_at_every_alpha(n, d):
    X, y = values(n, d, noise=5.0)
    alphas = [1e-3, 0.1, 10.0, 1e3]
    coef, intercept = ridge_path(X, y, alphas)
    assert coef.shape == (d, 4) and intercept.shape == (4,)
    for j, alpha in enumerate(alphas):
        reference = Ridge(alpha=alpha, solver="svd").fit(X.astype(np.float64), y)
        np.testing.assert_allclose(coef[:, j], reference.coef_, rtol=1e-7, atol=1e-7)
        assert intercept[j] == pytest.approx(reference.intercept_, rel=1e-10)


@pytest.mark.parametrize("n, d", [(120, 20), (40, 90)])
def test_one_alpha_by_a_cholesky_solve_is_the_paths_fit(n, d):
    X, y = values(n, d, noise=5.0)
    for alpha in (1e-2, 1.0, 1e3):
        coef, intercept = ridge_fit(X, y, alpha)
        path_coef, path_intercept = ridge_path(X, y, [alpha])
        np.testing.assert_allclose(coef, path_coef[:, 0], rtol=1e-8, atol=1e-9)
        assert intercept == pytest.approx(float(path_intercept[0]), rel=1e-12)


@pytest.mark.parametrize("transform", ["sqrt,standard", "standard", "none"])
def test_head_at_a_fixed_alpha_predicts_as_scikit_learns_ridge_on_the_same_transformed_features(transform):
    X, y = values(200, 20, noise=10.0)
    head = RidgeHead(alpha=3.0, transform=transform).fit(X[:150], y[:150])
    fitted = make_transform(transform)
    fitted = None if fitted == "passthrough" else fitted.fit(X[:150].astype(np.float64))

    def features(rows):
        return X[rows].astype(np.float64) if fitted is None else fitted.transform(X[rows].astype(np.float64))

    reference = Ridge(alpha=3.0).fit(features(slice(0, 150)), y[:150])
    np.testing.assert_allclose(head.predict_response(X[150:])[:, 0], reference.predict(features(slice(150, 200))),
                               rtol=0, atol=1e-4)
    assert head.fitted_params() == {}  # only a chosen alpha is recorded


def test_the_inner_scores_are_scikit_learns_ridge_fits_on_the_inner_split():
    X, y = values(150, 30, noise=40.0)
    alpha, scores = choose_ridge_alpha(X, y, seed=2, refine=False)
    fit_rows, val_rows = inner_split(y, 0.2, 2, stratify=False)
    assert len(scores) == 17 and list(scores) == [a * len(fit_rows) for a in RIDGE_ALPHA_GRID]
    assert alpha == min(scores, key=scores.get)
    for a, mse in list(scores.items())[::4]:
        reference = Ridge(alpha=a).fit(X[fit_rows].astype(np.float64), y[fit_rows]).predict(X[val_rows])
        # The path's decomposition is float32 (ridge_path): exact to ~1e-7 of the trace, relative to alpha.
        assert mse == pytest.approx(np.mean((reference - y[val_rows]) ** 2), rel=1e-5)
    refined, _ = choose_ridge_alpha(X, y, seed=2)
    assert refined / alpha <= np.sqrt(10) and alpha / refined <= np.sqrt(10)  # between the best's grid neighbours


def test_the_choice_follows_the_data():
    # Many noisy features, few informative: strong shrinkage; clean linear data: barely any.
    noisy_alpha, _ = choose_ridge_alpha(*values(100, 80, noise=200.0, informative=2))
    clean_alpha, _ = choose_ridge_alpha(*values(300, 10, noise=1.0))
    assert noisy_alpha / 80 > 30 * clean_alpha / 240  # per inner fit row


def test_head_with_alpha_auto_records_the_alpha_its_transformed_rows_choose_and_refits_at_it():
    X, y = values(200, 20, noise=30.0)
    head = RidgeHead(random_state=4).fit(X, y)
    alpha = head.fitted_params()["alpha"]
    transformed = make_transform("sqrt,standard").fit_transform(X.astype(np.float64))
    assert alpha == pytest.approx(choose_ridge_alpha(transformed, y, seed=4)[0])
    np.testing.assert_allclose(head.predict_response(X), RidgeHead(alpha=alpha).fit(X, y).predict_response(X),
                               rtol=1e-10)


def test_head_is_a_scikit_learn_regressor():
    X, y = values(120, 10, noise=5.0)
    assert is_regressor(RidgeHead())
    oof = cross_val_predict(RidgeHead(transform="standard"), X, y, cv=KFold(3, shuffle=True, random_state=0))
    assert np.sqrt(np.mean((oof - y) ** 2)) < 10.0  # the noise is 5
    assert RidgeHead(transform="standard").fit(X, y).score(X, y) > 0.99  # R^2


def test_the_float32_path_chooses_the_float64_paths_alpha_and_falls_back_near_its_floor(monkeypatch):
    import kaggle_tl.heads.tuning as tuning
    X, y = values(400, 60, noise=40.0)
    exact_path = tuning.ridge_path
    precisions: list = []

    def recording(*args):
        precisions.append(args[-1])
        return exact_path(*args)

    monkeypatch.setattr(tuning, "ridge_path", recording)
    alpha, scores = choose_ridge_alpha(X, y, seed=1)
    assert precisions == [np.float32]  # this choice is far above the float32 floor
    monkeypatch.setattr(tuning, "ridge_path", lambda X, y, alphas, decomposition: exact_path(X, y, alphas))
    exact_alpha, exact_scores = choose_ridge_alpha(X, y, seed=1)
    assert alpha == pytest.approx(exact_alpha, rel=1e-4)
    np.testing.assert_allclose(list(scores.values()), list(exact_scores.values()), rtol=1e-4)
    precisions.clear()
    monkeypatch.setattr(tuning, "ridge_path", recording)
    choose_ridge_alpha(*values(300, 10, noise=0.01), grid=(1e-9, 1e-8, 1e-7))  # clean data: a tiny alpha
    assert precisions == [np.float32, np.float64]


@pytest.mark.parametrize("n, d", [(120, 20), (40, 90)])
def test_the_float32_decomposition_gives_the_float64_path_to_its_precision(n, d):
    X, y = values(n, d, noise=5.0)
    alphas = [1.0, 10.0, 1e3]
    coef32, intercept32 = ridge_path(X, y, alphas, np.float32)
    coef64, intercept64 = ridge_path(X, y, alphas)
    np.testing.assert_allclose(coef32, coef64, rtol=1e-3, atol=1e-4 * np.abs(coef64).max())
    np.testing.assert_allclose(intercept32, intercept64, rtol=1e-5)
