"""Feature entries per backbone, view and stage, keyed by everything that changes their numbers."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import make_competition
from kaggle_tl.backbones import backbone_spec
from kaggle_tl.backbones.runtimes import runtime_id
from kaggle_tl.cache.store import Cache
from kaggle_tl.config import RunConfig
from kaggle_tl.features import BackboneBuilder, extract_features, feature_key
from kaggle_tl.pipeline import run


def _refs(stages: int, runtime: str = "tensorflow", precision: str = "fp32"):
    return [backbone_spec("efficientnet_lite0").identity("imagenet", 64, "pad", runtime_id(runtime, precision),
                                                         stages)]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    comp = make_competition(tmp_path_factory.mktemp("features") / "comp", n_per_class=3, n_test=2)
    return sorted((comp / "train").iterdir())


def test_fewer_stages_are_read_from_an_extraction_with_more(images, tmp_path, monkeypatch):
    cache = Cache(tmp_path / "cache")
    build = BackboneBuilder("imagenet", "tensorflow", "fp32", str(tmp_path / "cache"))
    three = extract_features(images, "imgs", _refs(3), ["original"], cache, build)
    assert len(list((tmp_path / "cache" / "features").iterdir())) == 3  # one entry per stage
    monkeypatch.setattr("kaggle_tl.backbones.create_backbone", lambda *a, **k: pytest.fail("a model was built"))
    for k in (2, 1):
        fewer = extract_features(images, "imgs", _refs(k), ["original"], cache, build)
        got, full = fewer.arrays["efficientnet_lite0", "original"], three.arrays["efficientnet_lite0", "original"]
        assert got.shape[1] == sum(d for _, d in _refs(k)[0].outputs)
        np.testing.assert_array_equal(got, np.asarray(full)[:, -got.shape[1]:])  # the last k stages, bit for bit
        assert set(fewer.sources.values()) == {"cache"}


def test_one_stage_is_todays_pooled_feature_bit_for_bit(images):
    (ref,) = _refs(1)
    assert ref.outputs == (("pooled", 1280),) and ref.dim == 1280
    ours = BackboneBuilder("imagenet")([ref])["efficientnet_lite0"]
    from kaggle_tl.backbones import create_backbone

    plain = create_backbone("efficientnet_lite0", "imagenet", 64)
    batch = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    x = plain.preprocess(batch.astype(np.float32))
    np.testing.assert_array_equal(ours.features(batch), np.asarray(plain.model.predict_on_batch(x)))


def test_the_key_names_runtime_precision_and_in_bf16_the_graph():
    keys = {feature_key("imgs", ref, "original", "pooled") for ref in
            (_refs(1)[0], _refs(1, "openvino")[0], _refs(2, "openvino")[0])}
    assert len(keys) == 2  # fp32: the pooled output does not depend on the other outputs (shared)
    from kaggle_tl.backbones import runtimes

    if not runtimes._cpu_has_bf16():
        pytest.skip("this CPU has no native bf16")
    bf16 = {feature_key("imgs", _refs(k, "openvino", "bf16")[0], "original", "pooled") for k in (1, 2)}
    assert len(bf16) == 2 and not bf16 & keys  # bf16: other numbers, and another graph changes them


def test_switching_the_runtime_recomputes(tmp_path, monkeypatch):
    monkeypatch.setattr("kaggle_tl.pipeline.plot_model", lambda *args, **kwargs: {}, raising=False)
    comp = make_competition(tmp_path / "comp", n_per_class=3, n_test=2)
    config = RunConfig(data=str(comp), backbones=("efficientnet_lite0",), image_size=64, heads=("logreg",),
                       head_params={"logreg": {"C": 0.005}}, folds=3, views=("original",), runtime="tensorflow",
                       stages=1, cache_dir=str(tmp_path / "cache"),
                       runs_dir=str(tmp_path / "runs"), submissions_dir=str(tmp_path / "subs"))
    tf = run(config)
    ov = run(config.replace(runtime="openvino"))
    assert set(tf.cache_entries["features"].values()) == set(ov.cache_entries["features"].values()) == {"computed"}
    assert not set(tf.cache_entries["features"]) & set(ov.cache_entries["features"])
    assert [b["runtime"] for b in ov.backbones] == [runtime_id("openvino", "fp32")]
    entries = {e.info["runtime"] + e.info["split"]: np.load(e.path / "features.npy")
               for e in Cache(tmp_path / "cache").entries() if e.kind == "features"}
    for split in ("train", "test"):  # OpenVINO fp32 gives TensorFlow's features
        a, b = entries["tensorflow" + split], entries[runtime_id("openvino", "fp32") + split]
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())


def test_another_stage_count_refits_the_heads_and_changes_the_score(tmp_path, monkeypatch):
    # The prediction cache's key names every output a model's features hold, not only the pooled one.
    monkeypatch.setattr("kaggle_tl.pipeline.plot_model", lambda *args, **kwargs: {}, raising=False)
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=2)
    config = RunConfig(data=str(comp), backbones=("efficientnet_lite0",), image_size=64, heads=("logreg",),
                       head_params={"logreg": {"C": 0.005}}, folds=2, views=("original",), runtime="tensorflow",
                       cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"),
                       submissions_dir=str(tmp_path / "subs"))
    one, two = run(config), run(config.replace(stages=2))
    assert two.timings["head_logreg_cached"] == 0.0
    assert set(one.cache_entries["predictions"]).isdisjoint(two.cache_entries["predictions"])
    assert one.models[0].score.logloss != two.models[0].score.logloss
    again = run(config.replace(stages=2), new_run=True)
    assert again.timings["head_logreg_cached"] == 1.0 and again.models[0].score == two.models[0].score
