"""Keras applications as backbones (include_top=False, pooling="avg"), plus a user's own model.

Weights: "imagenet" uses Keras' own cache (~/.keras/models, or $KERAS_HOME/models) and downloads
there when missing; a weights file (``create_backbone`` finds it in a folder under the name Keras
gives it, the ``weights_file`` of each row below) loads it; None is random init.

Registering imports no TensorFlow: constructors are named, and Keras is imported when a model
is built or an image preprocessed. So resolving a config, planning a Dask run (the driver) and a
fully cached run never pay TensorFlow's import (4 s, ~600 MiB).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kaggle_tl.backbones import Preprocess, PretrainedCfg, register_backbone
from kaggle_tl.backbones.quiet import import_tensorflow
from kaggle_tl.errors import KaggleTLError, one_line

if TYPE_CHECKING:
    import keras


def keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def build_application(name: str, constructor: str, weights, input_size: int, filename: str):
    """``keras.applications.<constructor>`` without its classifier, average-pooled; ``weights`` already resolved."""
    import_tensorflow()
    import keras

    kwargs = dict(include_top=False, pooling="avg", input_shape=(input_size, input_size, 3))
    try:
        return getattr(keras.applications, constructor)(weights=weights, **kwargs)
    except Exception as exc:  # keras raises bare Exception on a failed download
        cached = keras_cache_dir() / filename
        if weights == "imagenet" and not cached.is_file():
            raise KaggleTLError(
                f"{cached}: imagenet weights for {name} are not cached and the download failed ({one_line(exc)}); "
                f"put {filename} in that folder or pass --weights FOLDER holding it, or use a backbone whose "
                f"weights come with pip and work offline: --backbones efficientnet_lite0 (or lite1, lite2)"
            ) from None
        source = weights if weights != "imagenet" else cached
        raise KaggleTLError(f"{source}: cannot load weights for {name} ({one_line(exc)})") from None


def _model_normalises(x: np.ndarray) -> np.ndarray:
    """No preprocessing: the model rescales [0, 255] RGB itself (its first layers)."""
    return x


def _keras_preprocess(module: str) -> Preprocess:
    """``keras.applications.<module>.preprocess_input``, looked up when first called."""
    def preprocess(x: np.ndarray) -> np.ndarray:
        import_tensorflow()
        import keras

        return getattr(keras.applications, module).preprocess_input(x)
    preprocess.__name__ = f"{module}_preprocess_input"
    return preprocess


_TF = _keras_preprocess("xception")  # RGB scaled to [-1, 1]
_CAFFE = _keras_preprocess("resnet50")  # RGB -> BGR, ImageNet mean subtracted, no scaling
_TORCH = _keras_preprocess("densenet")  # [0, 1], then ImageNet mean / std per channel

# name, keras.applications constructor, native px, pooled dim, min px, preprocess, include_top=False weights file,
# ImageNet top-1 % from the Keras applications table (keras.io/api/applications; MobileNetV3's
# from its docstring, which that table lacks).
_H5 = "_weights_tf_dim_ordering_tf_kernels_notop.h5"
APPLICATIONS = [
    ("xception", "Xception", 299, 2048, 71, _TF, "xception" + _H5, 79.0),
    ("vgg16", "VGG16", 224, 512, 32, _CAFFE, "vgg16" + _H5, 71.3),
    ("vgg19", "VGG19", 224, 512, 32, _CAFFE, "vgg19" + _H5, 71.3),
    ("resnet50", "ResNet50", 224, 2048, 32, _CAFFE, "resnet50" + _H5, 74.9),
    ("resnet101", "ResNet101", 224, 2048, 32, _CAFFE, "resnet101" + _H5, 76.4),
    ("resnet152", "ResNet152", 224, 2048, 32, _CAFFE, "resnet152" + _H5, 76.6),
    ("resnet50_v2", "ResNet50V2", 224, 2048, 32, _TF, "resnet50v2" + _H5, 76.0),
    ("resnet101_v2", "ResNet101V2", 224, 2048, 32, _TF, "resnet101v2" + _H5, 77.2),
    ("resnet152_v2", "ResNet152V2", 224, 2048, 32, _TF, "resnet152v2" + _H5, 78.0),
    ("inception_v3", "InceptionV3", 299, 2048, 75, _TF, "inception_v3" + _H5, 77.9),
    ("inception_resnet_v2", "InceptionResNetV2", 299, 1536, 75, _TF, "inception_resnet_v2" + _H5, 80.3),
    # MobileNet and MobileNetV2 imagenet weights exist per input size; Keras picks the nearest
    # at the native size, while a weights folder serves this (224 px) file at every size.
    ("mobilenet", "MobileNet", 224, 1024, 32, _TF, "mobilenet_1_0_224_tf_no_top.h5", 70.4),
    ("mobilenet_v2", "MobileNetV2", 224, 1280, 32, _TF,
     "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5", 71.3),
    ("mobilenet_v3_small", "MobileNetV3Small", 224, 576, 32, _model_normalises,
     "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5", 68.1),
    ("mobilenet_v3_large", "MobileNetV3Large", 224, 960, 32, _model_normalises,
     "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5", 75.6),
    ("densenet121", "DenseNet121", 224, 1024, 32, _TORCH, "densenet121" + _H5, 75.0),
    ("densenet169", "DenseNet169", 224, 1664, 32, _TORCH, "densenet169" + _H5, 76.2),
    ("densenet201", "DenseNet201", 224, 1920, 32, _TORCH, "densenet201" + _H5, 77.3),
    ("nasnet_mobile", "NASNetMobile", 224, 1056, 32, _TF, "nasnet_mobile_no_top.h5", 74.4),
    ("nasnet_large", "NASNetLarge", 331, 4032, 32, _TF, "nasnet_large_no_top.h5", 82.5),
    ("efficientnet_b0", "EfficientNetB0", 224, 1280, 32, _model_normalises, "efficientnetb0_notop.h5", 77.1),
    ("efficientnet_b1", "EfficientNetB1", 240, 1280, 32, _model_normalises, "efficientnetb1_notop.h5", 79.1),
    ("efficientnet_b2", "EfficientNetB2", 260, 1408, 32, _model_normalises, "efficientnetb2_notop.h5", 80.1),
    ("efficientnet_b3", "EfficientNetB3", 300, 1536, 32, _model_normalises, "efficientnetb3_notop.h5", 81.6),
    ("efficientnet_b4", "EfficientNetB4", 380, 1792, 32, _model_normalises, "efficientnetb4_notop.h5", 82.9),
    ("efficientnet_b5", "EfficientNetB5", 456, 2048, 32, _model_normalises, "efficientnetb5_notop.h5", 83.6),
    ("efficientnet_b6", "EfficientNetB6", 528, 2304, 32, _model_normalises, "efficientnetb6_notop.h5", 84.0),
    ("efficientnet_b7", "EfficientNetB7", 600, 2560, 32, _model_normalises, "efficientnetb7_notop.h5", 84.3),
    ("efficientnetv2_b0", "EfficientNetV2B0", 224, 1280, 32, _model_normalises, "efficientnetv2-b0_notop.h5", 78.7),
    ("efficientnetv2_b1", "EfficientNetV2B1", 240, 1280, 32, _model_normalises, "efficientnetv2-b1_notop.h5", 79.8),
    ("efficientnetv2_b2", "EfficientNetV2B2", 260, 1408, 32, _model_normalises, "efficientnetv2-b2_notop.h5", 80.5),
    ("efficientnetv2_b3", "EfficientNetV2B3", 300, 1536, 32, _model_normalises, "efficientnetv2-b3_notop.h5", 82.0),
    ("efficientnetv2_s", "EfficientNetV2S", 384, 1280, 32, _model_normalises, "efficientnetv2-s_notop.h5", 83.9),
    ("efficientnetv2_m", "EfficientNetV2M", 480, 1280, 32, _model_normalises, "efficientnetv2-m_notop.h5", 85.3),
    ("efficientnetv2_l", "EfficientNetV2L", 480, 1280, 32, _model_normalises, "efficientnetv2-l_notop.h5", 85.7),
    ("convnext_tiny", "ConvNeXtTiny", 224, 768, 32, _model_normalises, "convnext_tiny_notop.h5", 81.3),
    ("convnext_small", "ConvNeXtSmall", 224, 768, 32, _model_normalises, "convnext_small_notop.h5", 82.3),
    ("convnext_base", "ConvNeXtBase", 224, 1024, 32, _model_normalises, "convnext_base_notop.h5", 85.3),
    ("convnext_large", "ConvNeXtLarge", 224, 1536, 32, _model_normalises, "convnext_large_notop.h5", 86.3),
    ("convnext_xlarge", "ConvNeXtXLarge", 224, 2048, 32, _model_normalises, "convnext_xlarge_notop.h5", 86.7),
]


def locate_imagenet(name: str, constructor: str, input_size: int, filename: str) -> str:
    """The imagenet weights file in Keras' cache, downloaded there first (by building the model once) if missing."""
    cached = keras_cache_dir() / filename
    if not cached.is_file():
        import keras

        build_application(name, constructor, "imagenet", input_size, filename)
        keras.backend.clear_session()
    return str(cached)


def _register(name: str, constructor: str, input_size: int, dim: int, min_size: int, preprocess, filename: str,
              top1: float) -> None:
    locate = functools.partial(locate_imagenet, name, constructor, input_size, filename)

    @register_backbone(name, input_size=input_size, dim=dim, min_size=min_size,
                       pretrained=PretrainedCfg(preprocess, weights_file=filename, top1=top1, locate=locate))
    def build(weights, size):
        return build_application(name, constructor, weights, size, filename)
    build.__name__ = name


for _row in APPLICATIONS:
    _register(*_row)


def build_user_model(model_path: str | Path, layer: str | None) -> tuple[keras.Model, int, int]:
    """A saved Keras model (.keras/.h5) cut at ``layer`` (default: the last), spatial output pooled.

    Returns (model, input_size, dim). The model receives RGB floats in [0, 255]: a model that
    expects other scaling should carry its own Rescaling/Normalization layer.
    """
    import_tensorflow()
    import keras

    model_path = Path(model_path)
    try:
        model = keras.models.load_model(model_path, compile=False)
    except Exception as exc:
        raise KaggleTLError(f"{model_path}: cannot load Keras model ({one_line(exc)})") from None
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
