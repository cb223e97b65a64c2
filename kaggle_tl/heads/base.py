"""The heads' contract and registry: scikit-learn estimators on pooled features (the heads: dense.py, linear.py).

Adding a head is one decorated class::

    @register_head("logreg")
    class LogRegHead(Head):
        _param_rules = {"C": (float, lambda c: c > 0, "> 0"), ...}

    head = create_head("logreg", C=0.2, random_state=seed)

``__init__`` stores parameters; ``fit(X, y)`` sets ``classes_``; ``predict_proba(X)`` returns
columns in ``classes_`` order. So heads work with ``clone``, ``cross_val_predict``, pickling and
joblib workers; each is deterministic for a given ``random_state``. ``freeze()`` returns the
fitted head as arrays (``frozen.FrozenHead``), what the fits cache keeps, or None if it cannot.

What a head outputs is its ``response``, one of the class attribute ``responses`` (a subset of
``RESPONSES``); the task picks it, the caller sets it (``set_params(response=...)``), and ``fit``
and ``predict_response`` follow it:

- ``"proba"``: y (N,) class labels; (N, classes) probabilities in ``classes_`` order;
- ``"tags"``: y (N, L) 0/1 matrix; (N, L) per-tag probabilities (``classes_`` = tag indices);
- ``"value"``: y (N,) numbers; (N, 1) predicted values (no ``classes_``; a frozen one's are empty).
"""
from __future__ import annotations

import numbers
from typing import Any, Callable

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_X_y

from kaggle_tl.errors import KaggleTLError
from kaggle_tl.heads.frozen import FrozenHead
from kaggle_tl.heads.transforms import make_transform
from kaggle_tl.registry import Registry

# A parameter's rule: its type, a test of its value, and how the test reads in an error message.
Rule = tuple[Any, Callable[[Any], bool], str]


def _valid_transform(spec: str) -> bool:
    try:
        make_transform(spec)
    except KaggleTLError:
        return False
    return True


_TYPE_TESTS: dict[type, tuple[Callable[[Any], bool], str]] = {
    # bool is an int in Python, but True as a C or an epoch count is a mistake in the config.
    float: (lambda v: isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)), "a number"),
    int: (lambda v: isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)), "an integer"),
    bool: (lambda v: isinstance(v, (bool, np.bool_)), "true or false"),
    str: (lambda v: isinstance(v, str), "a string"),
}
SEED_RULE: Rule = (int, lambda v: v >= 0, ">= 0")
_TYPE_TESTS["auto"] = (lambda v: v == "auto" or _TYPE_TESTS[float][0](v), 'a number or "auto"')
C_RULE: Rule = ("auto", lambda v: v == "auto" or v > 0, '> 0 or "auto" (chosen per fold on an inner split)')
TRANSFORM_RULE: Rule = (str, _valid_transform, "a transform such as sqrt,standard (steps: sqrt, l2, standard, "
                                                "pca_whiten(n); or none)")
RESPONSES = ("proba", "tags", "value")


def response_rule(responses: tuple[str, ...]) -> Rule:
    """The rule of a head's ``response`` parameter: one of the head's ``responses``."""
    return (str, lambda v: v in responses, f"one of {', '.join(responses)}")


HEADS: Registry[type[Head]] = Registry("head")
# Bump when a head's numbers change for the same parameters (a solver, a default step), so the fits
# and predictions caches never serve another implementation's (2: logreg's float32 L-BFGS, pca_whiten
# at most rows - 1 components; 3: ridge refitted at its alpha by a Cholesky solve; 4: ridge's alpha path
# from a float32 decomposition; 5: of X X^T where the rows are fewer than the columns; 6: the decision
# rules' inner fits take the fold model's chosen C / alpha / l2; 7: logreg's C path stops after one worse C, its
# inner solves at a relative change of 1e-5; 8: so does the C path of logreg for tags; 9: logreg for classes solves
# every fold of a view together, by its own L-BFGS, heads.fold_path; 10: so does logreg for tags, and so are
# logreg's inner fits for the decision rules).
HEAD_VERSION = 10


def register_head(name: str) -> Callable[[type[Head]], type[Head]]:
    """Class decorator that makes a head available to `create_head` under ``name``."""

    def decorate(cls: type[Head]) -> type[Head]:
        cls.name = name
        return HEADS.register(name, cls)

    return decorate


def list_heads() -> list[str]:
    return HEADS.names()


def create_head(name: str, **params) -> Head:
    """Build a registered head by name, e.g. ``create_head("logreg", C=0.2, random_state=7)``.

    Unknown names, unknown parameters and out-of-range or mistyped values raise a one-line
    `KaggleTLError` naming ``head_params.<head>.<parameter>``, before any model is built.
    """
    HEADS.check_params(name, params, where=f"head_params.{name}")
    head = HEADS.get(name)(**params)
    head._check_params()
    return head


class Head(ClassifierMixin, BaseEstimator):
    """Base class: parameter rules checked by `create_head` and again by ``fit``."""

    name = "head"  # set by register_head; names the head in error messages
    responses: tuple[str, ...] = ("proba",)  # what it can output, from RESPONSES; the first is its default
    _param_rules: dict[str, Rule] = {}

    @property
    def uses_fold_for_early_stopping(self) -> bool:
        """True when ``fit`` wants ``validation_data=(the CV fold's held-out rows)``: scores then optimistic."""
        return False

    def training_problem(self, min_class_rows: int) -> str | None:
        """Why this head cannot be fitted when a class has only ``min_class_rows`` training rows, or None."""
        return None

    def describe_params(self) -> str:
        """Its parameters as a user sets them, for a message: 'l2=1e+300, dropout=0.5, ...' (the task sets the
        response)."""
        return ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if k not in ("random_state", "response"))

    def fitted_params(self) -> dict[str, float]:
        """What ``fit`` chose that a run records per fold and view (e.g. {"C": 0.0052} with C = "auto")."""
        return {}

    def freeze(self) -> FrozenHead | None:
        """The fitted head as arrays, predicting as it does; None for a head that has no such form."""
        return None

    def fits_folds_jointly(self) -> bool:
        """Whether ``fit_folds`` fits many row sets at once (faster than a fit each, the same models)."""
        return False

    def fit_folds(self, X, y, train_rows: list[np.ndarray],
                  chosen: list[dict[str, float]] | None = None) -> list[tuple[FrozenHead, dict[str, float]]]:
        """For each k: this head fitted on the rows ``train_rows[k]`` (a CV fold's training rows), with the
        parameters ``chosen[k]`` set where given (what a fold's fit chose, for its inner fits), frozen, and its
        ``fitted_params``; only where ``fits_folds_jointly``."""
        raise NotImplementedError(f"head {self.name} fits its folds one by one")

    def _check_params(self) -> None:
        for param, (kind, test, text) in self._param_rules.items():
            value = getattr(self, param)
            is_kind, kind_text = _TYPE_TESTS[kind]
            if not is_kind(value):
                raise KaggleTLError(f"head_params.{self.name}.{param}: must be {kind_text}, "
                                    f"got {value!r} ({type(value).__name__})")
            if not test(value):
                raise KaggleTLError(f"head_params.{self.name}.{param}: must be {text}, got {value!r}")

    def predict_response(self, X) -> np.ndarray:
        """(N, W) float64 predictions of the fitted ``response``; by default ``predict_proba`` (for a head fitted
        for tags, its per-tag probabilities)."""
        return np.asarray(self.predict_proba(X), dtype=np.float64)

    def predict(self, X):
        """The class (proba), the 0/1 tags at probability 0.5 (tags) or the value (value) of each row."""
        response = getattr(self, "response", "proba")
        if response == "tags":
            return (self.predict_response(X) >= 0.5).astype(np.uint8)
        if response == "value":
            return self.predict_response(X)[:, 0]
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def check_response_y(X, y, response: str) -> tuple[np.ndarray, np.ndarray]:
    """(X float32, y) validated for ``response``: y as class labels (proba), a uint8 0/1 matrix (tags) or
    float64 values (value)."""
    if response == "proba":
        return check_X_y(X, y, dtype=np.float32)
    if response == "tags":
        X, y = check_X_y(X, y, dtype=np.float32, multi_output=True)
        if y.ndim != 2 or not np.isin(y, (0, 1)).all():
            raise ValueError(f"response 'tags' needs y as an (N, L) 0/1 matrix, got shape {y.shape}")
        return X, y.astype(np.uint8)
    X, y = check_X_y(X, y, dtype=np.float32, y_numeric=True)
    return X, y.astype(np.float64)


