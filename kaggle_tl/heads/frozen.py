"""Fitted heads as plain arrays, and one head's fold x view models as one file: the fits cache's entries.

A Kaggle code competition re-runs the notebook on a hidden test set: the training rows, and so
every fold model, are those of the run before. Cached as arrays, the fold models only predict
the new test rows there instead of being fitted again. Arrays, not pickles: loading one from an
attached dataset runs no code from it (``allow_pickle=False``), and gives the same predictions
under another scikit-learn version.

A frozen head is: the fitted transform (``transforms.freeze_transform``), then one or more linear
models ``scores = X @ coef + intercept``, then its output:

- ``"softmax"``: one linear model, probabilities softmax(scores) (logreg, dense; logreg's binary
  model is the softmax of [0, z]);
- ``"platt"``: scikit-learn's CalibratedClassifierCV(method="sigmoid") over linear SVMs: per
  calibrated model, a sigmoid of each score column ``1 / (1 + exp(a * s + b))`` placed in its
  class column (``positions``), normalised; then the mean over the calibrated models;
- ``"sigmoid"``: one linear model, a probability per tag expit(scores) (tags: logreg, dense);
- ``"identity"``: one linear model of one column, the value itself (value: ridge, dense; a
  standardised target's mean and scale are folded into coef and intercept). Computed in float64,
  transform included: float32 keeps 7 digits, too few for a value of 1e4 or a cached model that
  must predict as the fitted one.

``classes_`` are the head's classes (proba), the tag indices 0..L-1 (tags) or empty (value).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import expit

from kaggle_tl.files import npz_bytes, read_npz
from kaggle_tl.heads.transforms import apply_frozen_transform

OUTPUTS = ("softmax", "platt", "sigmoid", "identity")
RESPONSE_OF = {"softmax": "proba", "platt": "proba", "sigmoid": "tags", "identity": "value"}


@dataclass
class FrozenHead:
    """A fitted head's predict_response as arrays; ``classes_`` as the head's."""

    classes_: np.ndarray
    transform: dict[str, np.ndarray]
    output: str
    linear: list[dict[str, np.ndarray]]  # each: coef (D, m), intercept (m,); platt also positions, a, b (m,)

    def __post_init__(self) -> None:
        # C order, as a loaded file has it: matrix products of another memory layout round differently,
        # and the cold run's predictions must equal those of a re-run from the cache bit for bit.
        self.transform = {name: np.ascontiguousarray(value) for name, value in self.transform.items()}
        self.linear = [{name: np.ascontiguousarray(value) for name, value in model.items()} for model in self.linear]

    @property
    def response(self) -> str:
        """What it predicts: "proba", "tags" or "value" (``base.RESPONSES``)."""
        return RESPONSE_OF[self.output]

    def predict_response(self, X: np.ndarray) -> np.ndarray:
        """(N, W) float64: class probabilities (softmax, platt), tag probabilities (sigmoid) or values (identity)."""
        if self.output == "identity":
            X = apply_frozen_transform(self.transform, np.asarray(X, dtype=np.float64))
            (model,) = self.linear
            return X @ model["coef"].astype(np.float64) + model["intercept"].astype(np.float64)
        if self.output == "sigmoid":
            X = apply_frozen_transform(self.transform, np.asarray(X, dtype=np.float32))
            (model,) = self.linear
            return expit((X @ model["coef"] + model["intercept"]).astype(np.float64))
        return self.predict_proba(X)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(N, classes) class probabilities of a softmax or platt output."""
        if self.output not in ("softmax", "platt"):
            raise ValueError(f"predict_proba: a frozen {self.output} output predicts {self.response}; "
                             f"use predict_response")
        X = apply_frozen_transform(self.transform, np.asarray(X, dtype=np.float32))
        if self.output == "softmax":
            (model,) = self.linear
            scores = (X @ model["coef"] + model["intercept"]).astype(np.float64)
            exp = np.exp(scores - scores.max(axis=1, keepdims=True))
            return exp / exp.sum(axis=1, keepdims=True)
        n_classes = len(self.classes_)
        mean = np.zeros((len(X), n_classes))
        for model in self.linear:  # CalibratedClassifierCV's _CalibratedClassifier.predict_proba, then the mean
            proba = np.zeros((len(X), n_classes))
            scores = X @ model["coef"] + model["intercept"]
            proba[:, model["positions"]] = expit(-(model["a"] * scores + model["b"]))
            if n_classes == 2:
                proba[:, 0] = 1.0 - proba[:, 1]
            else:
                total = proba.sum(axis=1, keepdims=True)
                proba = np.divide(proba, total, out=np.full_like(proba, 1 / n_classes), where=total != 0)
            proba[(1.0 < proba) & (proba <= 1.0 + 1e-5)] = 1.0
            mean += proba
        return mean / len(self.linear)

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        arrays = {f"{prefix}classes": np.asarray(self.classes_), f"{prefix}output": np.array(self.output)}
        arrays.update({f"{prefix}transform_{name}": value for name, value in self.transform.items()})
        for j, model in enumerate(self.linear):
            arrays.update({f"{prefix}linear{j}_{name}": np.asarray(value) for name, value in model.items()})
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> "FrozenHead":
        part = {name[len(prefix):]: value for name, value in arrays.items() if name.startswith(prefix)}
        output = str(part["output"])
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}")
        transform = {name[len("transform_"):]: value for name, value in part.items() if name.startswith("transform_")}
        linear: dict[int, dict[str, np.ndarray]] = {}
        for name, value in part.items():
            if name.startswith("linear"):
                index, _, key = name[len("linear"):].partition("_")
                linear.setdefault(int(index), {})[key] = value
        return cls(part["classes"], transform, output, [linear[j] for j in sorted(linear)])


@dataclass
class FoldModels:
    """A head's fitted model for every view x fold, what each fit chose (C = "auto", ...), and the task's
    decision rules tuned with them (``cv.fit_decisions``: (K + 1, P), P = 0 for rules without parameters).

    ``models[v][k]`` predicts like the head fitted on view v's rows outside fold k. A head that
    cannot be frozen (an RBF SVM) keeps its live models: then ``frozen`` is False, and the models
    are used for this run's predictions but not cached.
    """

    views: list[str]
    models: list[list]  # (V, K): FrozenHead, or a fitted estimator
    fitted: dict[str, np.ndarray] = field(default_factory=dict)  # (V, K) each
    # Fitted from the training rows only, like the models: a hidden re-run reuses them with the models.
    decisions: np.ndarray | None = None

    @property
    def frozen(self) -> bool:
        return all(isinstance(model, FrozenHead) for row in self.models for model in row)

    def to_bytes(self) -> bytes:
        """The fits cache entry's .npz bytes (arrays only)."""
        assert self.frozen, "live models are not cached"
        arrays = {"views": np.array(self.views), "n_folds": np.array(len(self.models[0]))}
        arrays.update({f"fitted_{name}": values for name, values in self.fitted.items()})
        if self.decisions is not None:
            arrays["decisions"] = np.asarray(self.decisions, dtype=np.float64)
        for v, row in enumerate(self.models):
            for k, model in enumerate(row):
                arrays.update(model.to_arrays(f"v{v}k{k}_"))
        return npz_bytes(arrays)

    @staticmethod
    def max_bytes(n_views: int, n_folds: int, n_features: int, n_classes: int) -> int:
        """The most a fits entry of these sizes holds: per fit, float64 coefficients of every class (Platt
        pairs included) and a transform of at most a features x features matrix (pca_whiten), doubled.
        ``n_classes``: the columns a fit predicts (classes, tags; a value's one column fits in any count)."""
        per_fit = 8 * (n_features * (n_features + 4 * n_classes + 4) + 16 * n_classes) + 4096
        return 2 * n_views * n_folds * per_fit + 65536

    @classmethod
    def load(cls, path: str | Path, max_bytes: int) -> "FoldModels":
        """The entry at ``path``; a damaged or unreadable one is one line (zip CRCs check every array)."""

        def build(arrays: dict[str, np.ndarray]) -> "FoldModels":
            views, n_folds = [str(v) for v in arrays["views"]], int(arrays["n_folds"])
            models = [[FrozenHead.from_arrays(arrays, f"v{v}k{k}_") for k in range(n_folds)] for v in range(len(views))]
            fitted = {name[len("fitted_"):]: values for name, values in arrays.items() if name.startswith("fitted_")}
            return cls(views, models, fitted, arrays.get("decisions"))

        return read_npz(Path(path), "fitted fold models", build, max_bytes)
