"""Linear heads: logistic regression and the linear SVM (Platt-scaled), each a transform and a classifier."""
from __future__ import annotations

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y

from kaggle_tl.errors import KaggleTLError
from kaggle_tl.heads.base import C_RULE, SEED_RULE, TRANSFORM_RULE, Head, register_head
from kaggle_tl.heads.frozen import FrozenHead
from kaggle_tl.heads.softmax import SoftmaxRegression
from kaggle_tl.heads.svm import LinearSVM
from kaggle_tl.heads.transforms import freeze_transform, make_transform
from kaggle_tl.heads.tuning import LinearSVMAutoC, LogisticRegressionAutoC

# Defaults by measurement (CV log loss, paired differences: BENCHMARKS.md "Better features"):
LOGREG_C: float | str = "auto"


SVM_C: float | str = 0.001


LINEAR_TRANSFORM = "sqrt,standard"  # logreg and svm


class _PipelineHead(Head):
    """A head whose fit() sets ``model_``: its ``transform`` (fitted on the rows given to fit only) and a
    classifier, one scikit-learn pipeline, so every CV fold fits both on its own training rows."""

    def _fit_pipeline(self, classifier, X, y):
        self._check_params()
        X, y = check_X_y(X, y, dtype=np.float32)
        self.model_ = make_pipeline(make_transform(self.transform), classifier).fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def fitted_params(self) -> dict[str, float]:
        classifier = self.model_[-1]
        return {"C": float(classifier.C_)} if hasattr(classifier, "C_") else {}

    def predict_proba(self, X):
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
    only; ``random_state`` seeds it.
    """

    _param_rules = {
        "C": C_RULE,
        "kernel": (str, lambda v: v in ("linear", "rbf", "poly", "sigmoid"), "one of linear, rbf, poly, sigmoid"),
        "calibration_folds": (int, lambda v: v >= 2, ">= 2"),
        "transform": TRANSFORM_RULE,
        "random_state": SEED_RULE,
    }

    def __init__(self, C: float | str = SVM_C, kernel: str = "linear", calibration_folds: int = 3,
                 transform: str = LINEAR_TRANSFORM, random_state: int = 0):
        self.C = C
        self.kernel = kernel
        self.calibration_folds = calibration_folds
        self.transform = transform
        self.random_state = random_state

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
    refits on all of them; the chosen C of every fold and view is in the run record.
    """

    _param_rules = {
        "C": C_RULE,
        "max_iter": (int, lambda v: v >= 1, ">= 1"),
        "transform": TRANSFORM_RULE,
        "random_state": SEED_RULE,
    }

    def __init__(self, C: float | str = LOGREG_C, max_iter: int = 1000, transform: str = LINEAR_TRANSFORM,
                 random_state: int = 0):
        self.C = C
        self.max_iter = max_iter
        self.transform = transform
        self.random_state = random_state

    def fit(self, X, y):
        if self.C == "auto":
            classifier = LogisticRegressionAutoC(max_iter=self.max_iter, random_state=self.random_state)
        else:
            classifier = SoftmaxRegression(C=self.C, max_iter=self.max_iter)
        return self._fit_pipeline(classifier, X, y)

    def freeze(self) -> FrozenHead:
        check_is_fitted(self, "model_")
        classifier = self.model_[-1]
        model = classifier.model_ if isinstance(classifier, LogisticRegressionAutoC) else classifier
        return FrozenHead(self.classes_, freeze_transform(self.model_.steps[0][1]), "softmax",
                          [{"coef": model.coef_.T, "intercept": model.intercept_}])
