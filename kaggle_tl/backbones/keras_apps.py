"""Keras applications as backbones (include_top=False, pooling="avg"), plus a user's own model.

Weights: "imagenet" uses Keras' own cache (~/.keras/models, or $KERAS_HOME/models) and downloads
there when missing; a path to a weights file loads it; a path to a folder looks for the file under
the name Keras gives it (what a Kaggle dataset of Keras weights holds); None is random init.
"""
from __future__ import annotations

import os
from pathlib import Path

import keras

from kaggle_tl.backbones import register_backbone
from kaggle_tl.errors import KaggleTLError

apps = keras.applications


def keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def resolve_weights(name: str, weights, filename: str):
    """Turn the weights option into what keras.applications accepts, or fail with one line."""
    if weights is None:
        return None
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights)
    if path.is_dir():
        path = path / filename
        if not path.is_file():
            raise KaggleTLError(f"{path}: weights file for {name} not found in the weights folder "
                                f"(expected Keras' file name {filename})")
    elif not path.is_file():
        raise KaggleTLError(f"{path}: weights file not found (--weights takes imagenet, none, a file or a folder)")
    return str(path)


def build_application(name: str, constructor, weights, input_size: int, filename: str):
    resolved = resolve_weights(name, weights, filename)
    kwargs = dict(include_top=False, pooling="avg", input_shape=(input_size, input_size, 3))
    try:
        return constructor(weights=resolved, **kwargs)
    except KaggleTLError:
        raise
    except Exception as exc:  # keras raises bare Exception on a failed download
        cached = keras_cache_dir() / filename
        if resolved == "imagenet" and not cached.is_file():
            raise KaggleTLError(
                f"{cached}: imagenet weights for {name} are not cached and could not be downloaded "
                f"({type(exc).__name__}); put {filename} in that folder, or pass --weights FOLDER holding it"
            ) from None
        source = resolved if resolved != "imagenet" else cached
        raise KaggleTLError(f"{source}: cannot load weights for {name} ({str(exc).splitlines()[0][:200]})") from None


def _application(name: str, constructor, filename: str, input_size: int, dim: int, min_size: int, preprocess):
    @register_backbone(name, input_size=input_size, dim=dim, min_size=min_size, preprocess=preprocess)
    def build(weights, size):
        return build_application(name, constructor, weights, size, filename)
    build.__name__ = name
    return build


_application("xception", apps.Xception, "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
             299, 2048, 71, apps.xception.preprocess_input)
_application("inception_v3", apps.InceptionV3, "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
             299, 2048, 75, apps.inception_v3.preprocess_input)
_application("resnet50", apps.ResNet50, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
             224, 2048, 32, apps.resnet50.preprocess_input)
_application("mobilenet_v2", apps.MobileNetV2, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
             224, 1280, 32, apps.mobilenet_v2.preprocess_input)
_application("efficientnet_b0", apps.EfficientNetB0, "efficientnetb0_notop.h5",
             224, 1280, 32, apps.efficientnet.preprocess_input)


def build_user_model(model_path: str | Path, layer: str | None) -> tuple[keras.Model, int, int]:
    """A saved Keras model (.keras/.h5) cut at ``layer`` (default: the last), spatial output pooled.

    Returns (model, input_size, dim). The model receives RGB floats in [0, 255]: a model that
    expects other scaling should carry its own Rescaling/Normalization layer.
    """
    model_path = Path(model_path)
    try:
        model = keras.models.load_model(model_path, compile=False)
    except Exception as exc:
        raise KaggleTLError(f"{model_path}: cannot load Keras model ({str(exc).splitlines()[0][:200]})") from None
    try:
        output = model.get_layer(layer).output if layer else model.output
    except ValueError:
        names = [l.name for l in model.layers][-8:]
        raise KaggleTLError(f"{model_path}: no layer named {layer!r} (last layers: {names})") from None
    if len(output.shape) == 4:
        output = keras.layers.GlobalAveragePooling2D()(output)
    elif len(output.shape) != 2:
        raise KaggleTLError(f"{model_path}: layer {layer!r} has output shape {output.shape}; need (N, D) or (N, H, W, D)")
    height, width = model.input_shape[1:3]
    if height is None or height != width:
        raise KaggleTLError(f"{model_path}: input shape {model.input_shape} is not a fixed square image")
    return keras.Model(model.inputs, output), int(height), int(output.shape[-1])
