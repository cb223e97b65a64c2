"""Feature transforms fitted on a fold's training rows: scikit-learn transformers from a string spec.

A spec chains steps left to right, comma-separated::

    make_transform("sqrt,standard")          # signed square root, then standardise
    make_transform("sqrt,pca_whiten(256)")   # signed square root, then PCA-whiten to 256 dims
    make_transform("none")                   # "passthrough": nothing

Steps: ``sqrt`` (signed power normalisation sign(x) * sqrt(|x|)), ``l2`` (each row scaled to unit
L2 norm), ``standard`` (StandardScaler), ``pca_whiten(n)`` (PCA to at most n components, whitened).
The result is a ``Pipeline`` (or ``"passthrough"``), so a head chains it with ``make_pipeline``
and every CV fold fits it on that fold's training rows only, like the classifier after it.

``freeze_transform`` turns a fitted one into plain arrays and ``apply_frozen_transform`` applies
those: how a fitted head is cached (``frozen.py``) without pickling scikit-learn objects.
"""
from __future__ import annotations

import logging
import re

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, Normalizer, StandardScaler
from sklearn.utils.validation import check_array, check_is_fitted

from kaggle_tl.errors import KaggleTLError

STEPS = ("sqrt", "l2", "standard", "pca_whiten(n)")
log = logging.getLogger(__name__)
_NOTED: set[str] = set()


def _note_once(message: str) -> None:
    """Say it once per process: every fold and view fits the transform again."""
    if message not in _NOTED:
        _NOTED.add(message)
        log.info(message)
NONE_SPECS = ("", "none", "passthrough")


def signed_sqrt(X: np.ndarray) -> np.ndarray:
    """sign(x) * sqrt(|x|): power normalisation, which damps the few large activations of a pooled CNN feature."""
    X = np.asarray(X)
    return np.sign(X) * np.sqrt(np.abs(X))


class PCAWhiten(TransformerMixin, BaseEstimator):
    """PCA to ``n_components`` (at most the rows it is fitted on minus one, and its columns), whitened.

    Clamping lets one spec serve a 240-row demo fold and a 40,000-row one. Centred rows span at
    most rows - 1 directions: a further component has no variance, and whitening it would
    multiply an unseen row's part along it by ~1e5.
    """

    def __init__(self, n_components: int = 256, random_state: int = 0):
        self.n_components = n_components
        self.random_state = random_state

    def fit(self, X, y=None):
        X = check_array(X, dtype=(np.float64, np.float32))
        self.n_components_ = max(1, min(self.n_components, X.shape[0] - 1, X.shape[1]))
        if self.n_components_ < self.n_components:
            _note_once(f"transform pca_whiten({self.n_components}): {self.n_components_} components on "
                       f"{X.shape[0]} rows x {X.shape[1]} columns (at most rows - 1 and the columns)")
        self.pca_ = PCA(self.n_components_, whiten=True, random_state=self.random_state).fit(X)
        return self

    def transform(self, X):
        check_is_fitted(self, "pca_")
        return self.pca_.transform(check_array(X, dtype=(np.float64, np.float32)))


def freeze_transform(fitted) -> dict[str, np.ndarray]:
    """A fitted transform (``make_transform``'s Pipeline, ``"passthrough"`` or an identity) as arrays.

    ``steps`` names the steps in order; ``step<i>_<name>`` holds step i's fitted state.
    """
    steps = [step for _, step in fitted.steps] if isinstance(fitted, Pipeline) else []
    arrays: dict[str, np.ndarray] = {}
    names = []
    for step in steps:
        i = len(names)
        if isinstance(step, FunctionTransformer) and step.func is signed_sqrt:
            names.append("sqrt")
        elif isinstance(step, Normalizer) and step.norm == "l2":
            names.append("l2")
        elif isinstance(step, StandardScaler):
            names.append("standard")
            arrays[f"step{i}_mean"], arrays[f"step{i}_scale"] = step.mean_, step.scale_
        elif isinstance(step, PCAWhiten):
            names.append("pca_whiten")
            pca = step.pca_
            # PCA.transform's whitening: divide by sqrt(explained variance), clipped at its eps.
            scale = np.sqrt(pca.explained_variance_)
            arrays[f"step{i}_mean"], arrays[f"step{i}_components"] = pca.mean_, pca.components_
            arrays[f"step{i}_scale"] = np.maximum(scale, np.finfo(scale.dtype).eps)
        elif not (isinstance(step, FunctionTransformer) and step.func is None) and step != "passthrough":
            raise TypeError(f"cannot freeze transform step {step!r}")
    arrays["steps"] = np.array(names, dtype="<U16")
    return arrays


def frozen_fixed_then_standard(fixed: list[str], mean: np.ndarray | None = None,
                               scale: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``freeze_transform``'s arrays for steps fitted to nothing (``sqrt``, ``l2``), then, given its ``mean``
    and ``scale``, a standard step."""
    arrays: dict[str, np.ndarray] = {}
    names = list(fixed)
    if mean is not None:
        arrays[f"step{len(names)}_mean"], arrays[f"step{len(names)}_scale"] = mean, scale
        names.append("standard")
    arrays["steps"] = np.array(names, dtype="<U16")
    return arrays


def apply_frozen_transform(arrays: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    """What the fitted transform ``freeze_transform`` froze does to X, computed from its arrays (in X's dtype)."""
    dtype = X.dtype
    for i, name in enumerate(arrays["steps"]):
        if name == "sqrt":
            X = signed_sqrt(X)
        elif name == "l2":
            norms = np.linalg.norm(X, axis=1, keepdims=True)
            X = X / np.where(norms == 0, 1, norms)  # Normalizer leaves an all-zero row as it is
        elif name == "standard":
            X = (X - arrays[f"step{i}_mean"]) / arrays[f"step{i}_scale"]
        elif name == "pca_whiten":
            components = arrays[f"step{i}_components"]
            X = (X @ components.T - arrays[f"step{i}_mean"] @ components.T) / arrays[f"step{i}_scale"]
        else:
            raise KaggleTLError(f"frozen transform: unknown step {name!r}")
        X = X.astype(dtype, copy=False)
    return X


def _step(part: str, spec: str):
    """One step of a spec, or the one-line refusal naming it."""
    if part == "sqrt":
        return FunctionTransformer(signed_sqrt, feature_names_out="one-to-one")
    if part == "l2":
        return Normalizer(norm="l2")
    if part == "standard":
        return StandardScaler()
    match = re.fullmatch(r"pca_whiten\((\d+)\)", part)
    if match and int(match.group(1)) >= 1:
        return PCAWhiten(int(match.group(1)))
    if part.startswith("pca_whiten"):
        raise KaggleTLError(f"transform {spec!r}: {part!r} needs a whole number of components >= 1, "
                            f"e.g. pca_whiten(256)")
    raise KaggleTLError(f"transform {spec!r}: unknown step {part!r}; choose from {', '.join(STEPS)}, "
                        f"comma-separated, or none")


def make_transform(spec: str) -> Pipeline | str:
    """The transform a spec names: a Pipeline of its steps, or ``"passthrough"`` for none/empty."""
    if not isinstance(spec, str):
        raise KaggleTLError(f"transform: must be a string such as 'sqrt,standard', got {spec!r}")
    text = spec.strip().lower()
    if text in NONE_SPECS:
        return "passthrough"
    parts = [part.strip() for part in text.split(",")]
    if "" in parts:
        raise KaggleTLError(f"transform {spec!r}: an empty step (a stray comma)")
    return make_pipeline(*(_step(part, spec) for part in parts))


def fitted_transform(spec: str, X: np.ndarray):
    """``make_transform(spec)`` fitted on X (a fold's training rows); "none" as an identity transformer."""
    transform = make_transform(spec)
    return (FunctionTransformer() if transform == "passthrough" else transform).fit(X)
