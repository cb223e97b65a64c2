"""Multi-level features: stage discovery, the stage table, and the multi-output model."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from kaggle_tl.backbones import backbone_spec, create_backbone, list_backbones
from kaggle_tl.backbones.stages import (describe_stages, match_plan, multi_level_model, published_stages, stage_layers,
                                        stage_plan)
from kaggle_tl.errors import KaggleTLError

# Small and different: no-SE inverted residuals; squeeze-excite and Keras ops (hard-sigmoid's `x + 3`);
# residual adds that are operations, not layers (ConvNeXt's `x + y`), inside nested Sequentials.
SMALL = ["efficientnet_lite0", "mobilenet_v3_small", "convnext_tiny"]


def _fresh(name: str, size: int | None = None):
    import keras

    keras.backend.clear_session()  # the table's names are a fresh session's (auto-named layers count up)
    spec = backbone_spec(name)
    return create_backbone(name, weights=None, input_size=size or spec.min_size)


def _images(size: int, n: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _final_layer(model) -> str:
    """The layer whose output the model's global average pooling reads (found here by type, not by stages.py)."""
    import keras

    (pool,) = [layer for layer in model.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)
               and len(layer.output.shape) == 2]  # squeeze-excite pools keep their dims: not these
    return pool.input._keras_history.operation.name


@pytest.mark.parametrize("name", SMALL)
def test_stages_of_a_backbone(name):
    backbone = _fresh(name)
    model = backbone.model
    table = published_stages()[name]
    assert describe_stages(model) == table  # the generated table is what discovery finds
    n = len(table)
    assert n >= 4
    for k in range(1, n + 1):
        layers = stage_layers(model, k)
        assert len(set(layers)) == k and layers == [layer for layer, _ in table[-k:]]
        assert layers[-1] == _final_layer(model)
    assert stage_plan(name, 2) == table[-2:]
    with pytest.raises(KaggleTLError, match=f"stages must be 1 to {n}"):
        stage_layers(model, n + 1)

    x = backbone.preprocess(_images(backbone.input_size).astype(np.float32))
    today = model.predict_on_batch(x)
    assert multi_level_model(model, stage_layers(model, 1)) is model  # K=1: today's model, so today's features
    layers = stage_layers(model, n)
    import keras

    stage_model = multi_level_model(model, layers)
    first_op = {op.name: op for op in model.operations}[layers[0]]  # an operation, not always a layer
    # One model, one trace: the stage outputs and the first stage's unpooled activations.
    outputs = keras.Model(model.inputs, stage_model.outputs + [first_op.output])
    *pooled, first = outputs.predict_on_batch(x)
    assert [p.shape for p in pooled] == [(3, dim) for _, dim in table]
    assert sum(p.shape[1] for p in pooled) == sum(dim for _, dim in table)
    np.testing.assert_array_equal(pooled[-1], today)  # the last output is today's tensor itself
    np.testing.assert_allclose(pooled[0], first.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


def test_stage_names_do_not_depend_on_input_size():
    small, native = _fresh("efficientnet_lite0", 32), _fresh("efficientnet_lite0", 224)
    assert describe_stages(small.model) == describe_stages(native.model) == published_stages()["efficientnet_lite0"]


def test_a_later_build_matches_the_plan_by_position():
    # Keras numbers auto-named layers per session: a second MobileNetV3 has other names, same stages.
    first = _fresh("mobilenet_v3_small").model
    second = create_backbone("mobilenet_v3_small", weights=None, input_size=32).model
    plan = stage_plan("mobilenet_v3_small", 3)
    assert match_plan(first, plan) == [layer for layer, _ in plan]
    live = match_plan(second, plan)
    assert live != [layer for layer, _ in plan] and live == stage_layers(second, 3)
    with pytest.raises(KaggleTLError, match="do not match the planned"):
        match_plan(second, stage_plan("efficientnet_lite0", 3))


def test_table_covers_every_backbone_without_tensorflow():
    code = ("import sys; from kaggle_tl.backbones.stages import stage_plan, published_stages; "
            "print(len(published_stages()), stage_plan('efficientnet_lite0', 2)); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == str(len(list_backbones()))
    table = published_stages()
    assert sorted(table) == list_backbones()
    for name, stages in table.items():
        assert stages[-1][1] == backbone_spec(name).dim, name  # the last stage is today's pooled feature
        assert len({layer for layer, _ in stages}) == len(stages) >= 4, name


def test_stage_plan_errors():
    with pytest.raises(KaggleTLError, match="no stage table entry for backbone 'nope'"):
        stage_plan("nope", 1)
    with pytest.raises(KaggleTLError, match="stages must be 1 to 6, got 0"):
        stage_plan("efficientnet_lite0", 0)


def test_multi_level_model_errors():
    model = _fresh("efficientnet_lite0").model
    with pytest.raises(KaggleTLError, match="no layer named 'missing'"):
        multi_level_model(model, ["missing"])
    with pytest.raises(KaggleTLError, match="has output shape"):
        multi_level_model(model, ["avg_pool"])


def _user_models():
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", name="c2")(x)
    x = keras.layers.ReLU(name="r2")(x)
    skip = x
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c3")(x)
    x = keras.layers.Add(name="merge")([x, skip])  # a residual: c3 is inside it, merge is the trunk
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c4")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    functional = keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))
    sequential = keras.Sequential([keras.Input((32, 32, 3)),
                                   keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="s1"),
                                   keras.layers.Conv2D(8, 3, activation="relu", name="s2"),
                                   keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="s3")])
    # Level 1 (half size): the functional model's trunk ends in the residual merge (c3 is inside
    # it); the sequential's in its last activation. The input's level has no activation: no stage.
    return {"functional.keras": (functional, [("merge", 8), ("c4", 16)]),
            "sequential.keras": (sequential, [("s2", 8), ("s3", 16)])}


@pytest.mark.parametrize("filename", ["functional.keras", "sequential.keras"])
def test_user_model_stages(tmp_path, filename):
    import keras

    keras.backend.clear_session()
    model, expected = _user_models()[filename]
    model.save(tmp_path / filename)
    # The user model path: cut at the last layer (or, for a Sequential, at its last layer by name:
    # a Sequential's .output is undefined in Keras 3, which the default cut reads), then pooled.
    cut = ":s3" if filename.startswith("sequential") else ""
    backbone = create_backbone(str(tmp_path / filename) + cut)
    assert describe_stages(backbone.model) == expected
    layers = stage_layers(backbone.model, len(expected))
    x = _images(32).astype(np.float32)
    pooled = multi_level_model(backbone.model, layers).predict_on_batch(x)
    assert [p.shape[1] for p in pooled[:-1]] == [dim for _, dim in expected[:-1]]
    np.testing.assert_array_equal(pooled[-1], backbone.model.predict_on_batch(x))
