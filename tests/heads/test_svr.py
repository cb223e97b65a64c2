"""The linear SVR head: a smoothed epsilon-insensitive loss on the standardised target, float32 L-BFGS, C chosen on an
inner split by its mean squared error; robust to gross values where ridge is not."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import approx_fprime
from sklearn.base import clone, is_regressor
from sklearn.model_selection import KFold, cross_val_predict

from kaggle_tl.errors import KaggleTLError
from kaggle_tl.heads.base import create_head
from kaggle_tl.heads.linear import RidgeHead, SVRHead
from kaggle_tl.heads.svr import LinearSVR, _loss_and_gradient, huber_eps
from kaggle_tl.heads.transforms import make_transform
from kaggle_tl.heads.tuning import SVR_C_GRID, choose_svr_C, inner_split


def linear_data(n: int, d: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X (n, d) float32, y = X w + 40 + noise, w): all features informative, y of scale ~10."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(0, 3, d)
    return X, X.astype(np.float64) @ w + 40.0 + rng.normal(0, noise, n), w


def test_the_loss_is_zero_in_the_tube_quadratic_at_its_edge_and_linear_beyond():
    r = np.array([0.0, 0.05, -0.1, 0.15, -0.2, 1.0, -3.0])
    loss, slope = huber_eps(r, epsilon=0.1, delta=0.1)
    np.testing.assert_allclose(loss, [0, 0, 0, 0.05 ** 2 / 0.2, 0.05, 0.85, 2.85])
    np.testing.assert_allclose(slope, [0, 0, 0, 0.5, -1, 1, -1])


def test_the_gradient_is_the_objectives_by_finite_differences():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 7))  # float64: the products then are too, and differences resolve the gradient
    z = rng.standard_t(2, 60)
    params = rng.normal(0, 0.3, 8)
    # Residuals in the tube, on the quadratic join and beyond it all occur at these parameters.
    u = np.abs(z - X @ params[:-1] - params[-1]) - 0.1
    assert (u < 0).any() and ((0 < u) & (u < 0.3)).any() and (u > 0.3).any()
    for penalty in (0.0, 0.5):
        value, gradient = _loss_and_gradient(params, X, z, penalty, 0.1, 0.3)
        numeric = approx_fprime(params, lambda p: _loss_and_gradient(p, X, z, penalty, 0.1, 0.3)[0], 1e-7)
        np.testing.assert_allclose(gradient, numeric, rtol=1e-5, atol=1e-6)
    # In float32 (as a fit computes it) the same gradient to float32's precision.
    _, gradient32 = _loss_and_gradient(params, X.astype(np.float32), z, 0.5, 0.1, 0.3)
    np.testing.assert_allclose(gradient32, gradient, rtol=1e-4, atol=1e-6)


def test_on_clean_linear_data_with_a_vanishing_tube_the_fit_recovers_the_coefficients():
    X, y, w = linear_data(300, 12, noise=0.0)
    model = LinearSVR(C=1e6, epsilon=0.0, delta=1e-3, tol=1e-12).fit(X, y)
    np.testing.assert_allclose(model.coef_, w, rtol=0, atol=2e-3 * np.abs(w).max())
    assert model.intercept_ == pytest.approx(40.0, abs=1e-2)
    np.testing.assert_allclose(model.predict(X), y, atol=1e-2 * y.std())


def test_gross_values_move_ridge_and_barely_the_svr():
    X, y, w = linear_data(600, 10, noise=1.0, seed=1)
    train, test = slice(0, 400), slice(400, 600)
    gross = y.copy()
    rows = np.random.default_rng(2).choice(400, 20, replace=False)  # 5% of the training rows, one-sided
    gross[rows] += 30 * y.std()

    def fitted(head, target=gross):
        head = head.fit(X[train], target[train])
        rmse = float(np.sqrt(np.mean((head.predict_response(X[test])[:, 0] - y[test]) ** 2)))
        return head, rmse

    svr, svr_rmse = fitted(SVRHead(transform="none"))
    ridge, ridge_rmse = fitted(RidgeHead(transform="none"))
    assert svr_rmse < 0.25 * ridge_rmse and svr_rmse < 1.5  # the noise is 1 (the clean rows' floor)
    assert np.abs(svr.coef_ - w).max() < 0.5 * np.abs(ridge.coef_ - w).max()
    # On the clean target both are near the floor: the SVR's robustness costs it little there.
    assert fitted(SVRHead(transform="none"), y)[1] < 1.05 * fitted(RidgeHead(transform="none"), y)[1]


def test_the_choice_is_on_the_grid_and_scores_are_inner_mean_squared_errors():
    X, y, _ = linear_data(200, 30, noise=8.0)
    c, scores = choose_svr_C(X, y, seed=3, refine=False)
    fit_rows, val_rows = inner_split(y, 0.2, 3, stratify=False)
    grid = sorted(g / len(fit_rows) for g in SVR_C_GRID)
    assert list(scores) == grid[:len(scores)] and c == min(scores, key=scores.get)
    assert grid[0] <= c <= grid[-1]
    for cc in list(scores)[::3]:  # each score: a fit on the inner fit rows at that C, scored on the others
        model = LinearSVR(C=cc).fit(X[fit_rows], y[fit_rows])
        assert scores[cc] == pytest.approx(np.mean((model.predict(X[val_rows]) - y[val_rows]) ** 2), rel=1e-3)
    refined, _ = choose_svr_C(X, y, seed=3)
    assert c / np.sqrt(10) <= refined <= c * np.sqrt(10)  # between the best grid point's neighbours


def test_the_choice_follows_the_data():
    noisy_c, _ = choose_svr_C(*linear_data(200, 60, noise=60.0)[:2])  # mostly noise: strong regularisation
    clean_c, _ = choose_svr_C(*linear_data(200, 10, noise=0.1)[:2])  # nearly exact: barely any
    assert clean_c > 100 * noisy_c


def test_warm_started_path_scores_and_choice_equal_cold_fits():
    X, y, _ = linear_data(250, 40, noise=10.0, seed=4)
    c, scores = choose_svr_C(X, y, seed=0, refine=False)
    fit_rows, val_rows = inner_split(y, 0.2, 0, stratify=False)
    cold = {cc: float(np.mean((LinearSVR(C=cc).fit(X[fit_rows], y[fit_rows]).predict(X[val_rows])
                               - y[val_rows]) ** 2)) for cc in scores}
    np.testing.assert_allclose(list(scores.values()), list(cold.values()), rtol=2e-3)
    assert min(cold, key=cold.get) == c


def test_the_choice_never_sees_the_scored_rows():
    # A row's OOF prediction may depend on the fold's training rows and on itself, never on the rows it is scored
    # with: replace those by noise and it must not move.
    X, y, _ = linear_data(150, 20, noise=5.0, seed=5)
    folds = list(KFold(3, shuffle=True, random_state=0).split(X))
    head = SVRHead(transform="standard")

    def oof(features, target):
        return cross_val_predict(head, features, target, cv=folds)  # a clone fitted per fold

    watched, others = folds[0][1][0], folds[0][1][1:]
    noisy_X, noisy_y = X.copy(), y.copy()
    rng = np.random.default_rng(1)
    noisy_X[others] = rng.normal(0, 5, noisy_X[others].shape)
    noisy_y[others] = rng.normal(0, 100, len(others))
    np.testing.assert_allclose(oof(noisy_X, noisy_y)[watched], oof(X, y)[watched], rtol=1e-9)
    # The control: had the choice seen every row, that noise changes which C wins.
    assert choose_svr_C(noisy_X, noisy_y)[0] != choose_svr_C(X, y)[0]


def test_c_epsilon_and_delta_are_in_the_targets_units():
    X, y, _ = linear_data(200, 15, noise=3.0, seed=6)
    head = SVRHead(random_state=1).fit(X, y)
    scaled = SVRHead(random_state=1).fit(X, 1000 * y - 7)
    assert scaled.fitted_params()["C"] == pytest.approx(head.fitted_params()["C"], rel=1e-6)
    np.testing.assert_allclose(scaled.predict_response(X), 1000 * head.predict_response(X) - 7, rtol=1e-4,
                               atol=1e-3 * 1000 * y.std())


def test_head_with_c_auto_records_the_c_its_transformed_rows_choose_and_refits_at_it():
    X, y, _ = linear_data(200, 20, noise=5.0)
    head = SVRHead(random_state=4).fit(X, y)
    c = head.fitted_params()["C"]
    transformed = make_transform("sqrt,standard").fit_transform(X.astype(np.float64))
    assert c == pytest.approx(choose_svr_C(transformed, y, seed=4)[0], rel=1e-9)
    fixed = SVRHead(C=c).fit(X, y)
    assert fixed.fitted_params() == {}  # only a chosen C is recorded
    # The auto head's refit starts from the inner fit, the fixed one from zeros: the same minimum.
    np.testing.assert_allclose(head.predict_response(X), fixed.predict_response(X), rtol=0, atol=1e-2 * y.std())


def test_frozen_head_predicts_as_the_live_one():
    X, y, _ = linear_data(200, 20, noise=5.0)
    for head in (SVRHead().fit(X[:150], y[:150]), SVRHead(C=0.1, transform="pca_whiten(8)").fit(X[:150], y[:150])):
        frozen = head.freeze()
        assert frozen.output == "identity" and frozen.response == "value" and len(frozen.classes_) == 0
        np.testing.assert_allclose(frozen.predict_response(X[150:]), head.predict_response(X[150:]), rtol=1e-12)


def test_head_is_a_scikit_learn_regressor_and_a_constant_target_predicts_it():
    X, y, _ = linear_data(120, 8, noise=1.0)
    assert is_regressor(SVRHead())
    oof = cross_val_predict(SVRHead(transform="standard"), X, y, cv=KFold(3, shuffle=True, random_state=0))
    assert np.sqrt(np.mean((oof - y) ** 2)) < 2.0  # the noise is 1
    copy = clone(SVRHead(C=0.5))
    assert copy.get_params() == SVRHead(C=0.5).get_params() and not hasattr(copy, "coef_")
    np.testing.assert_allclose(SVRHead().fit(X, np.full(120, 3.5)).predict_response(X), 3.5)


@pytest.mark.parametrize("params, message", [({"C": 0}, r"head_params\.svr\.C: must be > 0 or \"auto\""),
                                             ({"epsilon": -0.1}, r"head_params\.svr\.epsilon: must be >= 0"),
                                             ({"response": "proba"}, r"head_params\.svr\.response: must be one of "
                                                                     r"value, got 'proba'")])
def test_bad_params_are_refused_in_one_line(params, message):
    with pytest.raises(KaggleTLError, match=message):
        create_head("svr", **params)
