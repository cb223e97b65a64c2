"""Linear heads: logistic regression (classes or tags), the linear SVM (Platt-scaled), ridge regression and the linear
SVR (values), each a transform and a linear model."""
from __future__ import annotations

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC
from sklearn.utils.validation import check_array, check_is_fitted

from kaggle_tl.errors import KaggleTLError
from kaggle_tl.heads.base import C_RULE, SEED_RULE, TRANSFORM_RULE, Head, check_response_y, register_head, response_rule
from kaggle_tl.heads.fold_path import fit_logreg_folds, fits_jointly
from kaggle_tl.heads.frozen import FrozenHead
from kaggle_tl.heads.ridge import ridge_fit
from kaggle_tl.heads.sigmoid import SigmoidRegression
from kaggle_tl.heads.softmax import SoftmaxRegression
from kaggle_tl.heads.svm import LinearSVM
from kaggle_tl.heads.svr import DELTA, EPSILON, LinearSVR
from kaggle_tl.heads.transforms import fitted_transform, freeze_transform, make_transform
from kaggle_tl.heads.tuning import (LOGREG_C_GRID, SVR_C_GRID, LinearSVMAutoC, LogisticRegressionAutoC,
                                    SigmoidRegressionAutoC, _choose_svr, choose_ridge_alpha)

# Defaults by measurement (CV log loss, paired differences: BENCHMARKS.md "Better features"):
LOGREG_C: float | str = "auto"


SVM_C: float | str = 0.001


LINEAR_TRANSFORM = "sqrt,standard"  # logreg, svm, ridge and svr


class _PipelineHead(Head):
    """A head whose fit() sets ``model_``: its ``transform`` (fitted on the rows given to fit only) and a
    classifier, one scikit-learn pipeline, so every CV fold fits both on its own training rows."""

    def _fit_pipeline(self, classifier, X, y):
        self._check_params()
        X, y = check_response_y(X, y, self.response)
        self.model_ = make_pipeline(make_transform(self.transform), classifier).fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def fitted_params(self) -> dict[str, float]:
        classifier = self.model_[-1]
        return {"C": float(classifier.C_)} if hasattr(classifier, "C_") else {}

    def predict_proba(self, X):
        """Class probabilities (proba); per-tag probabilities of a head fitted for tags."""
        check_is_fitted(self, "model_")
        return self.model_.predict_proba(check_array(X, dtype=np.float32))


@register_head("svm")
class SVMHead(_PipelineHead):
    """Linear SVM with Platt-scaled probabilities, on transformed features.

    kernel="linear" (default): LinearSVC's model solved by `LinearSVM`, inside
    CalibratedClassifierCV(method="sigmoid", cv=3) — memory linear in the rows, plus a features x
    features matrix. ``C = "auto"`` chooses C per fold on an inner split of its training rows
    (``tuning.LinearSVMAutoC``). kernel="rbf" (or another libsvm kernel): SVC(probability=True),
    whose internal 5-fold Platt scaling needs the O(n^2) kernel matrix: fine for a few thousand rows
    only; ``random_state`` seeds it. Class probabilities only (``responses``).
    """

    responses = ("proba",)
    _param_rules = {
        "C": C_RULE,
        "kernel": (str, lambda v: v in ("linear", "rbf", "poly", "sigmoid"), "one of linear, rbf, poly, sigmoid"),
        "calibration_folds": (int, lambda v: v >= 2, ">= 2"),
        "transform": TRANSFORM_RULE,
        "random_state": SEED_RULE,
        "response": response_rule(responses),
    }

    def __init__(self, C: float | str = SVM_C, kernel: str = "linear", calibration_folds: int = 3,
                 transform: str = LINEAR_TRANSFORM, random_state: int = 0, response: str = "proba"):
        self.C = C
        self.kernel = kernel
        self.calibration_folds = calibration_folds
        self.transform = transform
        self.random_state = random_state
        self.response = response

    def _check_params(self) -> None:
        super()._check_params()
        if self.C == "auto" and self.kernel != "linear":
            raise KaggleTLError(f'head_params.svm.C: "auto" is for kernel = "linear", got kernel {self.kernel!r}')

    def training_problem(self, min_class_rows: int) -> str | None:
        # Platt scaling fits on calibration_folds splits of a fold's training rows: each needs every class.
        if self.kernel == "linear" and min_class_rows < self.calibration_folds:
            return (f"head svm calibrates on {self.calibration_folds} splits of each fold's training rows, but a "
                    f"class has only {min_class_rows} training row(s) in some fold; lower "
                    f"head_params.svm.calibration_folds (>= 2), raise --folds, or use another head")
        return None

    def fit(self, X, y):
        if self.kernel != "linear":
            svm = SVC(C=self.C, kernel=self.kernel, probability=True, random_state=self.random_state)
        elif self.C == "auto":
            svm = LinearSVMAutoC(calibration_folds=self.calibration_folds, random_state=self.random_state)
        else:
            svm = CalibratedClassifierCV(LinearSVM(C=self.C), method="sigmoid", cv=self.calibration_folds)
        return self._fit_pipeline(svm, X, y)

    def freeze(self) -> FrozenHead | None:
        check_is_fitted(self, "model_")
        if self.kernel != "linear":
            return None  # a kernel SVM predicts from its support vectors: refitted, not cached
        classifier = self.model_[-1]
        calibrated = classifier.model_ if isinstance(classifier, LinearSVMAutoC) else classifier
        n_classes, linear = len(self.classes_), []
        for model in calibrated.calibrated_classifiers_:
            svm, sigmoids = model.estimator, model.calibrators
            # As _CalibratedClassifier pairs them: score column j with the sigmoid j and the class
            # position of the SVM's class j, shifted to the positive class when binary.
            positions = np.searchsorted(self.classes_, svm.classes_)[:len(sigmoids)] + (n_classes == 2)
            linear.append({"coef": svm.coef_.T, "intercept": svm.intercept_, "positions": positions,
                           "a": np.array([s.a_ for s in sigmoids]), "b": np.array([s.b_ for s in sigmoids])})
        return FrozenHead(self.classes_, freeze_transform(self.model_.steps[0][1]), "platt", linear)


@register_head("logreg")
class LogRegHead(_PipelineHead):
    """Multinomial logistic regression (L2; ``softmax.SoftmaxRegression``, float32 L-BFGS) on transformed features.

    ``C = "auto"`` chooses C per fold on a stratified 20% of its training rows, along a log grid
    warm-started from strong to weak regularisation (``tuning.LogisticRegressionAutoC``), then
    refits on all of them; the chosen C of every fold and view is in the run record. In a CV run the folds of a
    view are solved together (``fit_folds``, ``fold_path``: the same per-fold choices, the products shared, ~1.9x
    faster on cifar10-small), unless the transform has a fitted step before a final ``standard`` (``pca_whiten``).

    ``response="tags"``: y is an (N, L) 0/1 matrix, and the model one L2 logistic regression per tag
    (``sigmoid.SigmoidRegression``, all tags one float32 L-BFGS solve); ``C = "auto"`` is one C for
    all tags, chosen on a random 20% by the mean per-tag log loss along the same grid
    (``tuning.SigmoidRegressionAutoC``).
    """

    responses = ("proba", "tags")
    _param_rules = {
        "C": C_RULE,
        "max_iter": (int, lambda v: v >= 1, ">= 1"),
        "transform": TRANSFORM_RULE,
        "random_state": SEED_RULE,
        "response": response_rule(responses),
    }

    def __init__(self, C: float | str = LOGREG_C, max_iter: int = 1000, transform: str = LINEAR_TRANSFORM,
                 random_state: int = 0, response: str = "proba"):
        self.C = C
        self.max_iter = max_iter
        self.transform = transform
        self.random_state = random_state
        self.response = response

    def fit(self, X, y):
        self._check_params()
        tags = self.response == "tags"
        if self.C == "auto":
            auto = SigmoidRegressionAutoC if tags else LogisticRegressionAutoC
            classifier = auto(max_iter=self.max_iter, random_state=self.random_state)
        else:
            classifier = (SigmoidRegression if tags else SoftmaxRegression)(C=self.C, max_iter=self.max_iter)
        return self._fit_pipeline(classifier, X, y)

    def fits_folds_jointly(self) -> bool:
        return fits_jointly(self.transform)

    def fit_folds(self, X, y, train_rows: list[np.ndarray],
                  chosen: list[dict[str, float]] | None = None) -> list[tuple[FrozenHead, dict[str, float]]]:
        """Every row set's fit solved together (``fold_path``): per set what ``fit`` on its rows gives (at the C
        ``chosen`` for it where given), within the solver's tolerance, for a transform of fixed steps and at most a
        final ``standard``."""
        self._check_params()
        if not self.fits_folds_jointly():
            raise NotImplementedError(f"logreg with transform {self.transform!r} fits its folds one by one")
        X, y = check_response_y(X, y, self.response)
        Cs = [c.get("C", self.C) for c in chosen] if chosen is not None else [self.C] * len(train_rows)
        return fit_logreg_folds(X, y, train_rows, Cs, LOGREG_C_GRID, self.transform, self.max_iter,
                                self.random_state, tags=self.response == "tags")

    def freeze(self) -> FrozenHead:
        check_is_fitted(self, "model_")
        classifier = self.model_[-1]
        auto = isinstance(classifier, (LogisticRegressionAutoC, SigmoidRegressionAutoC))
        model = classifier.model_ if auto else classifier
        return FrozenHead(self.classes_, freeze_transform(self.model_.steps[0][1]),
                          "sigmoid" if self.response == "tags" else "softmax",
                          [{"coef": model.coef_.T, "intercept": model.intercept_}])


class _LinearValueHead(RegressorMixin, Head):
    """A head for values whose fit leaves ``transform_`` (float64), ``coef_`` (d,) and ``intercept_``."""

    def _fit_transform(self, X, y) -> tuple[np.ndarray, np.ndarray]:
        """The checked training rows, transformed in float64 by ``transform_`` fitted on them, and their values."""
        self._check_params()
        X, y = check_response_y(X, y, self.response)
        X = X.astype(np.float64)
        self.transform_ = fitted_transform(self.transform, X)
        return self.transform_.transform(X), y

    def predict_response(self, X) -> np.ndarray:
        """(N, 1) predicted values."""
        check_is_fitted(self, "coef_")
        X = self.transform_.transform(check_array(X, dtype=np.float64))
        return X @ self.coef_[:, None] + self.intercept_

    def freeze(self) -> FrozenHead:
        check_is_fitted(self, "coef_")
        return FrozenHead(np.zeros(0), freeze_transform(self.transform_), "identity",
                          [{"coef": self.coef_[:, None], "intercept": np.array([self.intercept_])}])


@register_head("ridge")
class RidgeHead(_LinearValueHead):
    """Ridge regression (scikit-learn's ``Ridge``, y centred, intercept unpenalised) on transformed features.

    ``alpha = "auto"`` chooses alpha per fold on a random 20% of its training rows, along
    ``tuning.RIDGE_ALPHA_GRID`` x the inner fit rows (1e-3 to 1e5 times them, 17 values), every
    alpha from one decomposition (``tuning.choose_ridge_alpha``), then refits on all of them at that
    alpha; the chosen alpha of every fold and view is in the run record. Values only: the
    transform and the fit run in float64 (see ``frozen.py``'s "identity").
    """

    responses = ("value",)
    _param_rules = {
        "alpha": ("auto", lambda v: v == "auto" or v > 0, '> 0 or "auto" (chosen per fold on an inner split)'),
        "transform": TRANSFORM_RULE,
        "random_state": SEED_RULE,
        "response": response_rule(responses),
    }

    def __init__(self, alpha: float | str = "auto", transform: str = LINEAR_TRANSFORM, random_state: int = 0,
                 response: str = "value"):
        self.alpha = alpha
        self.transform = transform
        self.random_state = random_state
        self.response = response

    def fit(self, X, y):
        X, y = self._fit_transform(X, y)
        if self.alpha == "auto":
            self.alpha_, self.inner_scores_ = choose_ridge_alpha(X, y, seed=self.random_state)
        else:
            self.alpha_ = float(self.alpha)
        self.coef_, self.intercept_ = ridge_fit(X, y, self.alpha_)
        return self

    def fitted_params(self) -> dict[str, float]:
        return {"alpha": float(self.alpha_)} if self.alpha == "auto" else {}


@register_head("svr")
class SVRHead(_LinearValueHead):
    """Linear support vector regression (``svr.LinearSVR``: the epsilon-insensitive loss with a quadratic join, on the
    standardised target, intercept unpenalised; float32 L-BFGS) on transformed features.

    Robust where ridge is not: a row's pull on the fit is bounded, so a few values far off what the features show
    move it little. ``C = "auto"`` chooses C per fold on a random 20% of its training rows, along
    ``tuning.SVR_C_GRID`` / the inner fit rows (1e-3 to 1e4, 15 values), warm-started from strong to weak
    regularisation and scored by the inner mean squared error (``tuning.choose_svr_C``), then refits on all of them
    at that C, warm-started from the inner fit; the chosen C of every fold and view is in the run record.
    ``epsilon`` is in units of y's standard deviation. Values only; the transform runs in float64 as ridge's, the
    solve in float32, the predictions in float64 (``frozen.py``'s "identity").
    """

    responses = ("value",)
    _param_rules = {
        "C": C_RULE,
        "epsilon": (float, lambda v: v >= 0, ">= 0 (in units of y's standard deviation)"),
        "transform": TRANSFORM_RULE,
        "random_state": SEED_RULE,
        "response": response_rule(responses),
    }

    def __init__(self, C: float | str = "auto", epsilon: float = EPSILON, transform: str = LINEAR_TRANSFORM,
                 random_state: int = 0, response: str = "value"):
        self.C = C
        self.epsilon = epsilon
        self.transform = transform
        self.random_state = random_state
        self.response = response

    def fit(self, X, y):
        X, y = self._fit_transform(X, y)
        X = np.ascontiguousarray(X, dtype=np.float32)
        start = None
        if self.C == "auto":
            self.C_, self.inner_scores_, inner = _choose_svr(X, y, SVR_C_GRID, self.random_state, 0.2, True,
                                                             self.epsilon, DELTA)
            start = inner.params_
        else:
            self.C_ = float(self.C)
        self.model_ = LinearSVR(C=self.C_, epsilon=self.epsilon).fit(X, y, start=start)
        self.coef_, self.intercept_ = self.model_.coef_, self.model_.intercept_
        return self

    def fitted_params(self) -> dict[str, float]:
        return {"C": float(self.C_)} if self.C == "auto" else {}
