"""Backbone registry: name -> pretrained CNN that maps RGB images to pooled features.

Adding a backbone is one decorated builder function (see ``keras_apps.py``)::

    @register_backbone("inception_v3", input_size=299, dim=2048, min_size=75,
                       preprocess=keras.applications.inception_v3.preprocess_input)
    def inception_v3(weights, input_size):
        return keras.applications.InceptionV3(include_top=False, pooling="avg", weights=weights,
                                              input_shape=(input_size, input_size, 3))

The builder receives ``weights`` as ``"imagenet"``, ``None`` (random init) or a filesystem path
(a weights file, or a folder holding the files under their usual names), and returns a Keras model
mapping preprocessed float32 NHWC images to an (N, dim) array.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from kaggle_tl.errors import KaggleTLError

Builder = Callable[[object, int], object]
Preprocess = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    builder: Builder
    preprocess: Preprocess  # float32 RGB in [0, 255] -> model input; may work in place
    input_size: int  # native input size (pixels, square)
    dim: int  # pooled feature size
    min_size: int = 32  # smallest input the architecture accepts


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(name: str, *, input_size: int, dim: int, preprocess: Preprocess,
                      min_size: int = 32) -> Callable[[Builder], Builder]:
    def decorate(builder: Builder) -> Builder:
        _REGISTRY[name] = BackboneSpec(name, builder, preprocess, input_size, dim, min_size)
        return builder
    return decorate


def _load_builtin() -> None:
    # Imported lazily so that `import kaggle_tl` stays cheap (no TensorFlow import).
    from kaggle_tl.quiet import import_tensorflow

    import_tensorflow()
    from kaggle_tl.backbones import keras_apps  # noqa: F401
    try:
        from kaggle_tl.backbones import efficientnet_lite  # noqa: F401
    except ImportError as exc:  # pragma: no cover - only while the module is missing
        if "efficientnet_lite" not in str(exc):
            raise


def list_backbones() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_backbone_spec(name: str) -> BackboneSpec:
    _load_builtin()
    if name not in _REGISTRY:
        raise KaggleTLError(f"unknown backbone {name!r}; choose from: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


class Backbone:
    """A built backbone: ``features(images)`` turns uint8 RGB images into pooled features."""

    def __init__(self, spec: BackboneSpec, model, input_size: int, weights_id: str):
        self.spec = spec
        self.model = model
        self.input_size = input_size
        self.weights_id = weights_id  # what the cache key and the run record call these weights

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def dim(self) -> int:
        return self.spec.dim

    def features(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB at ``input_size`` -> (N, dim) float32 pooled features."""
        # preprocess_input works in place on float arrays: always hand it a fresh copy so the
        # caller's array (from which the flipped view is made) is never touched.
        x = self.spec.preprocess(images.astype(np.float32, copy=True))
        # predict_on_batch runs Keras' compiled predict step: 1.0-2.1x (median 1.47x) faster than
        # an eager model(x) call on 2 CPU cores (benchmarks/extract.py).
        out = self.model.predict_on_batch(x)
        return np.asarray(out, dtype=np.float32).reshape(len(images), -1)


def create_backbone(name: str, weights: object = "imagenet", input_size: int | None = None) -> Backbone:
    """Build a registered backbone. ``weights``: "imagenet", "none"/None, or a path."""
    if is_user_model(name):
        return _create_user_backbone(name)
    spec = get_backbone_spec(name)
    size = input_size or spec.input_size
    if size < spec.min_size:
        raise KaggleTLError(f"image size {size} is too small for {name}: it needs at least {spec.min_size} px")
    if weights in (None, "none"):
        weights = None
    model = spec.builder(weights, size)
    return Backbone(spec, model, size, weights_identity(weights))


def weights_identity(weights: object) -> str:
    """A stable string naming the weights, for cache keys and run records."""
    import hashlib
    import os

    if weights is None:
        return "none"
    if weights == "imagenet":
        return "imagenet"
    path = os.path.abspath(str(weights))
    if os.path.isfile(path):
        st = os.stat(path)
        return f"file:{os.path.basename(path)}:{st.st_size}:{hashlib.sha1(path.encode()).hexdigest()[:8]}"
    return f"dir:{path}"


USER_MODEL_SUFFIXES = (".keras", ".h5")


def is_user_model(name: str) -> bool:
    """``path/to/model.keras`` or ``path/to/model.keras:layer_name`` names a user's own CNN."""
    return name.split(":", 1)[0].lower().endswith(USER_MODEL_SUFFIXES)


def _create_user_backbone(name: str) -> Backbone:
    import os

    from kaggle_tl.backbones.keras_apps import build_user_model

    path, _, layer = name.partition(":")
    if not os.path.isfile(path):
        raise KaggleTLError(f"{path}: model file not found")
    model, size, dim = build_user_model(path, layer or None)
    spec = BackboneSpec(name, lambda w, s: model, lambda x: x, size, dim, size)
    return Backbone(spec, model, size, weights_identity(path))
