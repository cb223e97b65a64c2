"""Logreg's folds solved together (heads.fold_path) against one fit a fold, and its L-BFGS against scipy's."""
import numpy as np
import pytest
from scipy.optimize import minimize

from kaggle_tl.cv import _fit_fold, fit_fold_models
from kaggle_tl.heads.lbfgs import lbfgs
from kaggle_tl.heads.linear import LogRegHead
from kaggle_tl.tasks.metrics import row_logloss


def _noisy_classes(n=240, d=30, n_classes=3, seed=0):
    """Overlapping classes, so the inner log loss has a minimum inside the C grid; skewed, signed columns."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    centres = rng.normal(size=(n_classes, d))
    X = centres[y] * 0.35 + rng.normal(size=(n, d))
    X[:, :5] = np.exp(X[:, :5])  # a few large-valued columns, as pooled CNN features have
    return X.astype(np.float32), y


def _folds(n, n_folds=4, seed=0):
    return np.random.default_rng(seed).permutation(np.arange(n) % n_folds)


def _trains(folds):
    return [np.flatnonzero(folds != k) for k in range(int(folds.max()) + 1)]


def _compare(head, X, y, folds, atol):
    """Joint and one-fit-a-fold models: the same classes, C within a grid step, probabilities within ``atol``,
    held-out log loss within 0.01."""
    joint = head.fit_folds(X, y, _trains(folds))
    for k, (model, chosen) in enumerate(joint):
        alone, alone_chosen = _fit_fold(head, X, y, folds, k, 1)
        rows = folds == k
        assert np.array_equal(model.classes_, alone.classes_)
        if head.C == "auto":
            assert abs(np.log10(chosen["C"] / alone_chosen["C"])) <= 0.5, (chosen, alone_chosen)
        else:
            assert chosen == alone_chosen == {}
        p_joint, p_alone = model.predict_response(X[rows]), alone.predict_response(X[rows])
        np.testing.assert_allclose(p_joint, p_alone, atol=atol)
        known = np.isin(y[rows], model.classes_)  # a class the fold's model never saw has no column
        target = np.searchsorted(model.classes_, y[rows][known])
        assert abs(row_logloss(target, p_joint[known]).mean() - row_logloss(target, p_alone[known]).mean()) < 0.01
    return joint


def test_auto_C_chooses_what_one_fit_a_fold_chooses():
    X, y = _noisy_classes()
    joint = _compare(LogRegHead(), X, y, _folds(len(y)), atol=0.02)
    cs = [chosen["C"] for _, chosen in joint]
    assert 1e-4 < min(cs) and max(cs) < 100  # inside the grid: the walk turned


@pytest.mark.parametrize("transform", ["sqrt,standard", "standard", "none", "sqrt", "l2,standard"])
def test_every_transform_of_fixed_steps_and_a_final_standard(transform):
    X, y = _noisy_classes(seed=1)
    head = LogRegHead(C=0.05, transform=transform)
    assert head.fits_folds_jointly()
    joint = _compare(head, X, y, _folds(len(y)), atol=0.01)
    if transform.endswith("standard"):  # the fold's own scaler, as StandardScaler fits it on its training rows
        alone, _ = _fit_fold(head, X, y, _folds(len(y)), 0, 1)
        i = len(transform.split(",")) - 1
        for part in ("mean", "scale"):
            np.testing.assert_allclose(joint[0][0].transform[f"step{i}_{part}"], alone.transform[f"step{i}_{part}"],
                                       rtol=1e-6, atol=1e-6)  # Z in float32: sums rounded


def test_two_classes_get_scikit_learns_doubled_penalty_as_one_fit_does():
    X, y = _noisy_classes(n_classes=2, seed=2)
    _compare(LogRegHead(), X, y, _folds(len(y)), atol=0.02)


def test_a_fold_without_a_class_and_a_constant_column():
    X, y = _noisy_classes(seed=3)
    X[:, 7] = 2.5  # constant: its scale is 1, as StandardScaler's
    folds = _folds(len(y))
    X[:, 9] = 0
    X[np.flatnonzero(folds == 0)[0], 9] = 3.0  # constant in fold 0's training rows only (a ReLU alive in one image)
    y = y.copy()
    y[np.flatnonzero(folds != 0)[:3]] = 3  # class 3 only outside fold 0: fold 0's model has it, the others not all
    y[np.flatnonzero(folds == 0)[:1]] = 4  # class 4 only inside fold 0: fold 0's model never sees it
    joint = _compare(LogRegHead(C=0.1), X, y, folds, atol=0.01)
    assert 4 not in joint[0][0].classes_ and 3 in joint[0][0].classes_
    assert joint[0][0].transform["step1_scale"][7] == 1 and joint[0][0].transform["step1_scale"][9] == 1
    assert joint[1][0].transform["step1_scale"][9] != 1


def _tags(n=240, d=30, n_tags=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Y = (X[:, :n_tags] * 0.8 + rng.normal(size=(n, n_tags)) > 0.3).astype(np.uint8)
    return np.exp(X * 0.5).astype(np.float32), Y


@pytest.mark.parametrize("C", ["auto", 0.05])
def test_tags_choose_and_fit_as_one_fit_a_fold(C):
    X, Y = _tags()
    folds = _folds(len(Y))
    Y[:, 3] = 0
    Y[np.flatnonzero(folds == 1)[:2], 3] = 1  # tag 3 seen only in fold 1: not solved where fold 1 is held out
    Y[:, 4] = 0  # never seen: its prior everywhere
    head = LogRegHead(C=C, response="tags")
    joint = head.fit_folds(X, Y, _trains(folds))
    for k, (model, chosen) in enumerate(joint):
        alone, alone_chosen = _fit_fold(head, X, Y, folds, k, 1)
        assert model.output == alone.output == "sigmoid" and np.array_equal(model.classes_, np.arange(5))
        if C == "auto":
            assert abs(np.log10(chosen["C"] / alone_chosen["C"])) <= 0.5, (chosen, alone_chosen)
        rows = folds == k
        np.testing.assert_allclose(model.predict_response(X[rows]), alone.predict_response(X[rows]), atol=0.02)
    np.testing.assert_array_equal(joint[1][0].linear[0]["coef"][:, 3], 0)  # one value only in its rows: not solved
    assert (joint[0][0].linear[0]["coef"][:, 3] != 0).any()


def test_a_fitted_transform_before_standard_fits_one_fold_at_a_time():
    head = LogRegHead(transform="sqrt,pca_whiten(8)")
    assert not head.fits_folds_jointly() and LogRegHead(response="tags").fits_folds_jointly()
    with pytest.raises(NotImplementedError):
        head.fit_folds(*_noisy_classes(), _trains(_folds(240)))
    X, y = _noisy_classes()
    folds = _folds(len(y))
    models = fit_fold_models(head, {"original": X}, y, folds)
    alone, _ = _fit_fold(head, X, y, folds, 2, 1)
    np.testing.assert_array_equal(models.models[0][2].predict_response(X), alone.predict_response(X))


def test_joint_fits_in_parallel_equal_serial_bit_for_bit():
    X, y = _noisy_classes()
    folds = _folds(len(y))
    views = {"original": X, "hflip": X[:, ::-1].copy()}
    serial = fit_fold_models(LogRegHead(), views, y, folds, n_jobs=1)
    parallel = fit_fold_models(LogRegHead(), views, y, folds, n_jobs=2)
    for v in range(2):
        for k in range(4):
            np.testing.assert_array_equal(serial.models[v][k].linear[0]["coef"],
                                          parallel.models[v][k].linear[0]["coef"])
    np.testing.assert_array_equal(serial.fitted["C"], parallel.fitted["C"])
    assert np.isfinite(serial.fitted["C"]).all()


def _drive(solver, fun):
    point = next(solver)
    while True:
        try:
            point = solver.send(fun(point))
        except StopIteration as done:
            return done.value


def test_lbfgs_reaches_scipys_minimum_of_a_logistic_loss_in_as_many_evaluations():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(300, 40)) * np.geomspace(1, 30, 40)  # ill-conditioned columns
    t = (A @ rng.normal(size=40) * 0.05 + rng.normal(size=300) > 0).astype(float)

    def fun(w):
        z = A @ w
        loss = np.logaddexp(0, z).mean() - (t * z).mean() + 0.5e-3 * w @ w
        return loss, A.T @ (1 / (1 + np.exp(-z)) - t) / len(t) + 1e-3 * w

    ours = _drive(lbfgs(np.zeros(40), tol=1e-10, gtol=1e-8), fun)
    theirs = minimize(fun, np.zeros(40), jac=True, method="L-BFGS-B",
                      options={"ftol": 1e-10, "gtol": 1e-8, "maxcor": 10, "maxiter": 1000})
    assert abs(ours.fun - theirs.fun) < 1e-8
    np.testing.assert_allclose(ours.x, theirs.x, atol=1e-3 * np.abs(theirs.x).max())
    assert ours.nfev <= 1.5 * theirs.nfev


def test_lbfgs_stops_at_max_iter_and_survives_an_overflowing_step():
    values = []

    def fun(w):  # nearly flat far left, so the quasi-Newton step overshoots into exp's overflow: backtracked
        values.append(np.exp(w[0]) - 2 * w[0] + w[1] ** 2)
        return float(values[-1]), np.array([np.exp(w[0]) - 2, 2 * w[1]])

    with np.errstate(over="ignore", invalid="ignore"):
        result = _drive(lbfgs(np.array([-100.0, 3.0]), tol=1e-14, gtol=1e-9), fun)
    assert not np.isfinite(values).all()
    assert abs(result.x[0] - np.log(2)) < 1e-4 and abs(result.x[1]) < 1e-4
    capped = _drive(lbfgs(np.array([5.0, 3.0]), tol=1e-12, gtol=1e-12, max_iter=2), fun)
    assert capped.nit == 2
