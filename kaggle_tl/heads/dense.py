"""The dense head: dropout and one output layer (softmax, sigmoid or linear) trained by Adam in numpy, with
early stopping."""
from __future__ import annotations

import numpy as np
from scipy.special import expit
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.validation import check_array, check_is_fitted

from kaggle_tl.heads.base import SEED_RULE, TRANSFORM_RULE, Head, check_response_y, register_head, response_rule
from kaggle_tl.heads.frozen import FrozenHead
from kaggle_tl.heads.sigmoid import prior_logits
from kaggle_tl.heads.transforms import fitted_transform, freeze_transform
from kaggle_tl.heads.tuning import inner_split

DENSE_L2_GRID = (0.0, 1e-4, 1e-3, 1e-2)  # what l2 = "auto" tries


DENSE_TRANSFORM = "none"


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _mean_cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_proba = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_proba[np.arange(len(y)), y].mean())


def _mean_binary_cross_entropy(logits: np.ndarray, Y: np.ndarray) -> float:
    """Keras' binary_crossentropy from logits: the mean over tags and rows of log(1 + e^z) - y z."""
    return float((np.logaddexp(0, logits) - Y * logits).mean(dtype=np.float64))


def _mean_squared_error(outputs: np.ndarray, z: np.ndarray) -> float:
    return float(np.square(outputs - z, dtype=np.float64).mean())


@register_head("dense")
class DenseHead(Head):
    """Dropout -> Dense(softmax) trained with Adam; early stopping restores the best epoch.

    The model and training loop of a Keras ``Sequential([Dropout, Dense(softmax)])`` with
    ``Adam(learning_rate)``, sparse categorical cross-entropy, ``shuffle=True`` and
    ``EarlyStopping(patience, restore_best_weights=True)`` on the validation loss, written in numpy
    (float32): Keras' per-fit graph building and retracing cost 5-11 s a fit on demo-size data (busy
    2-core machine), far more than the training itself (~0.1 s here). It is also deterministic for a ``random_state`` (initial
    weights, inner split, shuffling and dropout masks all come from one ``np.random.Generator``).

    ``early_stopping="inner"`` (default) stops on ``validation_fraction`` of the rows given to
    ``fit`` (stratified), so nothing scored later was looked at. ``"fold"`` stops on
    ``fit(X, y, validation_data=(Xv, yv))``: the seed write-up's way, where those are the CV fold's
    held-out rows, which makes their score optimistic. ``uses_fold_for_early_stopping`` tells a
    caller whether to pass them; in "inner" mode they are ignored.

    Defaults chosen on the demo's Lite0 features (5-fold CV log loss): raw features 0.306 vs.
    standardised 0.415 (standardising blows up near-constant ReLU channels); and at least ~16
    Adam steps per epoch: batch 256 on 240 rows (one step an epoch) gave 0.589. So the batch is
    ``min(batch_size, max(32, n_rows // 16))``: large on big data, small enough on small data.

    Responses: ``"proba"`` as above; ``"tags"`` (y an (N, L) 0/1 matrix): one sigmoid output per tag,
    mean binary cross-entropy (also the early-stopping loss), output biases starting at each tag's
    smoothed log-odds (``sigmoid.prior_logits``), so a tag never seen in the training rows stays
    at ~0 instead of drifting from 0.5; ``"value"`` (y numbers): one linear output trained on the
    target standardised by the mean and std of the rows given to ``fit``, mean squared error (also
    the early-stopping loss, in standardised units), scaled back in ``predict_response`` and
    ``freeze``. The inner early-stopping split is stratified for classes, random for tags and values.
    """

    responses = ("proba", "tags", "value")

    _param_rules = {
        "dropout": (float, lambda v: 0 <= v < 1, "in [0, 1)"),
        "max_epochs": (int, lambda v: v >= 1, ">= 1"),
        "patience": (int, lambda v: v >= 1, ">= 1"),
        "batch_size": (int, lambda v: v >= 1, ">= 1"),
        "learning_rate": (float, lambda v: v > 0, "> 0"),
        "l2": ("auto", lambda v: v == "auto" or v >= 0, '>= 0 or "auto" (chosen on the early-stopping rows)'),
        "transform": TRANSFORM_RULE,
        "early_stopping": (str, lambda v: v in ("inner", "fold"), "'inner' or 'fold'"),
        "validation_fraction": (float, lambda v: 0 < v < 1, "in (0, 1)"),
        "random_state": SEED_RULE,
        "response": response_rule(responses),
    }

    def __init__(self, dropout: float = 0.5, max_epochs: int = 50, patience: int = 5, batch_size: int = 256,
                 learning_rate: float = 1e-3, l2: float | str = 0.0, transform: str = DENSE_TRANSFORM,
                 early_stopping: str = "inner", validation_fraction: float = 0.1, random_state: int = 0,
                 response: str = "proba"):
        self.dropout = dropout
        self.max_epochs = max_epochs
        self.patience = patience
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.l2 = l2
        self.transform = transform
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.response = response

    @property
    def uses_fold_for_early_stopping(self) -> bool:
        """True when ``fit`` stops on ``validation_data`` (the scored rows), so scores are optimistic."""
        return self.early_stopping == "fold"

    def fit(self, X, y, validation_data=None):
        """Train on (X, y); with early_stopping="fold", stop on ``validation_data=(Xv, yv)``."""
        self._check_params()
        X, y = check_response_y(X, y, self.response)
        self.transform_ = fitted_transform(self.transform, X)
        x_train, y_train = self.transform_.transform(X).astype(np.float32, copy=False), self._targets(y)
        rng = np.random.default_rng(self.random_state)
        val = self._fold_validation(validation_data) if self.uses_fold_for_early_stopping else None
        # No fold rows of a trained class (or "inner" mode): hold out part of the training rows.
        self.early_stopped_on_ = "fold" if val is not None else "inner"
        if val is None:
            train_rows, val_rows = inner_split(y_train, self.validation_fraction, self.random_state,
                                               stratify=self.response == "proba")
            val = (x_train[val_rows], y_train[val_rows])
            x_train, y_train = x_train[train_rows], y_train[train_rows]
        self.batch_size_ = min(self.batch_size, max(32, len(y_train) // 16))
        if self.l2 != "auto":
            self.l2_ = self.l2
            self._train(x_train, y_train, val, rng, self.l2_)
            return self
        # l2 = "auto": one training per value, each stopped early on the same validation rows (the
        # inner split, so never a scored row, unless early_stopping = "fold"), keeping the one with
        # the lowest validation loss: the fold's fits cost len(DENSE_L2_GRID) times as much.
        best = None
        for l2 in DENSE_L2_GRID:
            self._train(x_train, y_train, val, np.random.default_rng(self.random_state), l2)
            state = (min(self.validation_loss_), l2, self.coef_, self.intercept_, self.validation_loss_,
                     self.best_epoch_, self.n_epochs_)
            best = state if best is None or state[0] < best[0] else best
        _, self.l2_, self.coef_, self.intercept_, self.validation_loss_, self.best_epoch_, self.n_epochs_ = best
        return self

    def fitted_params(self) -> dict[str, float]:
        return {"l2": float(self.l2_)} if self.l2 == "auto" else {}

    def _targets(self, y: np.ndarray) -> np.ndarray:
        """What the output layer is trained on, set up from the rows given to ``fit``: class indices (proba),
        float32 0/1 tags, or the standardised value as one float32 column."""
        if self.response == "proba":
            self.encoder_ = LabelEncoder().fit(y)
            self.classes_ = self.encoder_.classes_
            return self.encoder_.transform(y)
        if self.response == "tags":
            self.classes_ = np.arange(y.shape[1])
            self.tag_prior_ = prior_logits(y)
            return y.astype(np.float32)
        self.y_mean_, std = float(y.mean()), float(y.std())
        self.y_scale_ = std if std > 0 else 1.0
        return self._standardised(y)

    def _standardised(self, y: np.ndarray) -> np.ndarray:
        return ((np.asarray(y, dtype=np.float64) - self.y_mean_) / self.y_scale_).astype(np.float32)[:, None]

    def _fold_validation(self, validation_data):
        """The given validation rows whose class was trained on (an unseen class has no output unit)."""
        if validation_data is None:
            return None
        xv, yv = validation_data
        xv, yv = check_array(xv, dtype=np.float32), np.asarray(yv)
        if self.response != "proba":  # every tag and value has its output
            target = yv.astype(np.float32) if self.response == "tags" else self._standardised(yv)
            return self.transform_.transform(xv).astype(np.float32, copy=False), target
        known = np.isin(yv, self.classes_)
        if not known.any():
            return None
        return self.transform_.transform(xv[known]).astype(np.float32, copy=False), self.encoder_.transform(yv[known])

    def _train(self, x: np.ndarray, y: np.ndarray, val: tuple[np.ndarray, np.ndarray], rng: np.random.Generator,
               l2: float):
        n_features, n_outputs = x.shape[1], (len(self.classes_) if self.response != "value" else 1)
        limit = np.sqrt(6.0 / (n_features + n_outputs))  # Keras' Dense default: Glorot uniform, zero bias
        params = [rng.uniform(-limit, limit, (n_features, n_outputs)).astype(np.float32),
                  np.zeros(n_outputs, np.float32)]
        if self.response == "tags":
            params[1][:] = self.tag_prior_
        adam = _Adam(params, self.learning_rate)
        best_loss, best_params, wait = np.inf, None, 0
        self.validation_loss_ = []
        for epoch in range(self.max_epochs):
            order = rng.permutation(len(y))
            for start in range(0, len(y), self.batch_size_):
                rows = order[start:start + self.batch_size_]
                # Fancy indexing, not np.take(out=) into a reused buffer: 0.27 against 0.70 ms a 225 x 3,104 batch
                # (Intel Xeon 6/167), the gather having been a third of a step.
                xb = x[rows]
                adam.step(self._gradients(xb, y[rows], params, rng, l2))
            loss = self._validation_loss(val[0] @ params[0] + params[1], val[1])
            self.validation_loss_.append(loss)
            # Keras' EarlyStopping: a strict improvement resets the wait; `patience` misses stop. Like
            # Keras, keep the first epoch's weights when none improves on infinity (a diverged loss).
            improved = loss < best_loss
            if improved or best_params is None:
                best_params, self.best_epoch_ = [p.copy() for p in params], epoch + 1
            if improved:
                best_loss, wait = loss, 0
            else:
                wait += 1
                if wait >= self.patience:
                    break
        self.n_epochs_ = len(self.validation_loss_)
        self.coef_, self.intercept_ = best_params

    def _validation_loss(self, outputs: np.ndarray, target: np.ndarray) -> float:
        if self.response == "tags":
            return _mean_binary_cross_entropy(outputs, target)
        if self.response == "value":
            return _mean_squared_error(outputs, target)
        return _mean_cross_entropy(outputs, target)

    def _gradients(self, xb: np.ndarray, yb: np.ndarray, params: list[np.ndarray], rng: np.random.Generator,
                   l2: float = 0.0):
        """Gradients of the batch's mean loss (+ L2) through a fresh dropout mask on ``xb``: cross-entropy
        (proba), binary cross-entropy (tags) or squared error (value)."""
        scale = np.float32(1 / (1 - self.dropout))
        if self.dropout:  # inverted dropout; the 1/keep scale is applied to the small logits and gradient
            xb *= _keep_mask(rng, xb.shape, self.dropout)  # in place: xb is the batch's own copy
        logits = (xb @ params[0]) * scale + params[1]
        if self.response == "tags":  # d/dz of log(1 + e^z) - y z
            dlogits = expit(logits) - yb
        elif self.response == "value":  # d/dz of (z - y)^2
            dlogits = 2 * (logits - yb)
        else:
            dlogits = _softmax(logits)
            dlogits[np.arange(len(yb)), yb] -= 1
        dlogits /= np.float32(len(yb))
        grad_w = (xb.T @ dlogits) * scale
        if l2:  # Keras' L2(l2) adds l2 * sum(w^2) to the loss
            grad_w += np.float32(2 * l2) * params[0]
        return grad_w, dlogits.sum(axis=0)

    def freeze(self) -> FrozenHead:
        check_is_fitted(self, "coef_")
        transform = freeze_transform(self.transform_)
        if self.response == "value":  # the standardised target's scale and mean folded into the output layer
            coef, intercept = self._value_layer()
            return FrozenHead(np.zeros(0), transform, "identity", [{"coef": coef, "intercept": intercept}])
        return FrozenHead(self.classes_, transform, "sigmoid" if self.response == "tags" else "softmax",
                          [{"coef": self.coef_, "intercept": self.intercept_}])

    def _value_layer(self) -> tuple[np.ndarray, np.ndarray]:
        """(coef (D, 1), intercept (1,)) in float64 that give the value itself, not its standardised form."""
        coef = self.coef_.astype(np.float64) * self.y_scale_
        return coef, self.intercept_.astype(np.float64) * self.y_scale_ + self.y_mean_

    def predict_proba(self, X):
        """Class probabilities (proba); per-tag probabilities of a head fitted for tags."""
        check_is_fitted(self, "coef_")
        if self.response == "value":
            raise ValueError("predict_proba: the dense head was fitted for response 'value'; use predict_response")
        X = self.transform_.transform(check_array(X, dtype=np.float32)).astype(np.float32, copy=False)
        scores = (X @ self.coef_ + self.intercept_).astype(np.float64)
        return expit(scores) if self.response == "tags" else _softmax(scores)

    def predict_response(self, X) -> np.ndarray:
        """(N, W) float64: class probabilities, per-tag probabilities, or (N, 1) values (in float64 throughout,
        as the frozen "identity" output computes them)."""
        if self.response != "value":
            return self.predict_proba(X)
        check_is_fitted(self, "coef_")
        coef, intercept = self._value_layer()
        return self.transform_.transform(check_array(X, dtype=np.float64)) @ coef + intercept


def _keep_mask(rng: np.random.Generator, shape: tuple[int, int], rate: float) -> np.ndarray:
    """Dropout's keep mask: each entry True with probability 1 - rate.

    Random numbers are most of a step's cost (float32 uniforms took longer than the two matrix
    products), so the default rate 0.5 takes one random bit an entry, other rates 16 bits
    (rate rounded to a multiple of 1/65536).
    """
    if rate == 0.5:
        bits = rng.integers(0, 256, (shape[0], (shape[1] + 7) // 8), dtype=np.uint8)
        return np.unpackbits(bits, axis=1, count=shape[1]).view(bool)
    return rng.integers(0, 65536, shape, dtype=np.uint16) >= round(rate * 65536)


class _Adam:
    """Keras' Adam update (beta_1=0.9, beta_2=0.999, epsilon=1e-7), in place on float32 arrays."""

    beta1, beta2, epsilon = np.float32(0.9), np.float32(0.999), np.float32(1e-7)

    def __init__(self, params: list[np.ndarray], learning_rate: float):
        self.params, self.learning_rate, self.iterations = params, learning_rate, 0
        self.moments = [np.zeros_like(p) for p in params]
        self.velocities = [np.zeros_like(p) for p in params]

    def step(self, grads) -> None:
        self.iterations += 1
        t = self.iterations
        alpha = np.float32(self.learning_rate * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t))
        for p, m, v, g in zip(self.params, self.moments, self.velocities, grads):
            m += (g - m) * (1 - self.beta1)
            v += (g * g - v) * (1 - self.beta2)
            p -= alpha * m / (np.sqrt(v) + self.epsilon)
