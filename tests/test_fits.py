"""The fits cache: each head's fold models as arrays, so new test images are predicted without refitting.

What a Kaggle code competition's hidden re-run needs: the training rows are those of the public
run, the test rows are new; only the test rows should be computed.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import make_competition
from kaggle_tl.cache.store import Cache
from kaggle_tl.config import RunConfig, resolve_config
from kaggle_tl.cv import fits_key, predictions_key
from kaggle_tl.data.competition import usable_competition
from kaggle_tl.heads.base import create_head
from kaggle_tl.heads.dense import DenseHead
from kaggle_tl.heads.frozen import FoldModels
from kaggle_tl.heads.linear import LogRegHead, SVMHead
from kaggle_tl.pipeline import backbone_refs, layout_of, run

HEADS = ("logreg", "dense", "svm")


def small_config(root: Path, comp: Path, cache: str = "cache", **changes) -> RunConfig:
    settings = dict(backbones=("mobilenet_v2",), weights="none", image_size=32, folds=2, heads=HEADS,
                    head_params={"dense": {"max_epochs": 3}})
    return RunConfig(data=str(comp), cache_dir=str(root / cache), runs_dir=str(root / "runs"),
                     submissions_dir=str(root / "subs"), **{**settings, **changes})


def replace_test_set(comp: Path, donor: Path) -> None:
    """``comp``'s test images and sample replaced by ``donor``'s, under other ids (the hidden test set)."""
    shutil.rmtree(comp / "test")
    shutil.copytree(donor / "test", comp / "test")
    renamed = {}
    for path in sorted((comp / "test").iterdir()):
        renamed[path.stem] = f"hidden_{path.stem}"
        path.rename(path.with_name(renamed[path.stem] + path.suffix))
    sample = pd.read_csv(donor / "sample_submission.csv", dtype=str)
    sample["id"] = sample["id"].map(renamed)
    sample.to_csv(comp / "sample_submission.csv", index=False)


def forbid_fits(monkeypatch) -> None:
    def no_fit(self, *args, **kwargs):
        raise AssertionError(f"head {self.name} refitted although its fold models are cached")

    for head in (LogRegHead, DenseHead, SVMHead):
        monkeypatch.setattr(head, "fit", no_fit)
    monkeypatch.setattr(LogRegHead, "fit_folds", no_fit)  # its folds fitted together


@pytest.fixture
def no_plots(monkeypatch):
    monkeypatch.setattr("kaggle_tl.pipeline.plot_model", lambda *args, **kwargs: {}, raising=False)


def test_a_head_change_redraws_its_figures_but_reads_the_tsne_of_the_same_features(tmp_path, monkeypatch):
    comp = make_competition(tmp_path / "comp", n_per_class=6, n_test=3)
    first = run(small_config(tmp_path, comp, heads=("logreg",), head_params={"logreg": {"C": 0.1}}))
    drawn = []
    monkeypatch.setattr("kaggle_tl.report.plots.TSNE", lambda **kw: drawn.append(kw) or pytest.fail("t-SNE redrawn"))
    second = run(small_config(tmp_path, comp, heads=("logreg",), head_params={"logreg": {"C": 0.2}}))
    (tsne_key,) = set(first.cache_entries["figures"]) & set(second.cache_entries["figures"])  # not the model's
    assert first.cache_entries["figures"][tsne_key] == "computed"
    assert second.cache_entries["figures"][tsne_key] == "cache"
    assert len(second.cache_entries["figures"]) == 2  # the model's figures drawn anew, the t-SNE read
    assert (second.plots_dir / "tsne.png").read_bytes() == (first.plots_dir / "tsne.png").read_bytes()
    assert (second.plots_dir / "confusion.png").is_file() and not drawn


@pytest.mark.parametrize("part", ["features", "view", "rows", "labels", "classes"])
def test_the_tsne_key_covers_each_part(tmp_path, part):
    from kaggle_tl.pipeline import tsne_key

    comp = make_competition(tmp_path / "comp", n_per_class=6, n_test=3)
    config = resolve_config(small_config(tmp_path, comp))
    competition = usable_competition(config.data, layout_of(config), config.folds, config.skip_bad_train_images)
    refs, keys = backbone_refs(config), {"train": "a", "test": "b"}
    base = tsne_key(config, refs, keys, competition)
    assert base == tsne_key(config, refs, {"train": "a", "test": "other test images"}, competition)
    if part == "features":
        changed = tsne_key(config, refs, {"train": "other images", "test": "b"}, competition)
    elif part == "view":
        changed = tsne_key(dataclasses.replace(config, views=("hflip", "original")), refs, keys, competition)
    elif part == "rows":
        changed = tsne_key(config, refs, keys, dataclasses.replace(competition, train_ids=competition.train_ids[::-1]))
    elif part == "labels":
        changed = tsne_key(config, refs, keys, dataclasses.replace(competition, y=competition.y[::-1]))
    else:
        task = dataclasses.replace(competition.task, classes=tuple(f"x{c}" for c in competition.task.classes))
        changed = tsne_key(config, refs, keys, dataclasses.replace(competition, task=task))
    assert changed != base


def test_new_test_images_are_predicted_by_the_cached_fold_models_as_a_cold_run_would(tmp_path, monkeypatch):
    comp = make_competition(tmp_path / "comp", n_per_class=6, n_test=3)
    config = small_config(tmp_path, comp)
    public = run(config)
    assert set(public.cache_entries["fits"].values()) == {"computed"} and len(public.cache_entries["fits"]) == 3

    replace_test_set(comp, make_competition(tmp_path / "donor", n_per_class=2, n_test=5, seed=5))
    with monkeypatch.context() as patch:
        forbid_fits(patch)
        hidden = run(config)
    assert hidden.test_ids[0].startswith("hidden_") and len(hidden.test_ids) == 5
    assert hidden.cache_entries["fits"] == {key: "cache" for key in public.cache_entries["fits"]}
    assert set(hidden.cache_entries["predictions"].values()) == {"computed"}
    assert all(hidden.timings[f"head_{h}_cached"] == 1.0 for h in HEADS)
    # The figures show the OOF predictions and training images: not redrawn for a new test set.
    (figures_key,) = hidden.cache_entries["figures"]
    assert hidden.cache_entries["figures"] == {figures_key: "cache"}  # its t-SNE inside: the entry alone is used
    assert figures_key in public.cache_entries["figures"] and set(public.cache_entries["figures"].values()) == {
        "computed"}
    assert {p.name for p in hidden.plots_dir.glob("*.png")} == {p.name for p in public.plots_dir.glob("*.png")} != set()

    cold = run(small_config(tmp_path, comp, cache="cold-cache"), new_run=True)  # everything computed again
    assert set(cold.cache_entries["fits"].values()) == {"computed"}
    for model in public.models:
        # The training side is the public run's; the test side equals fitting from scratch, bit for bit.
        assert np.array_equal(hidden.predictions(model.name).oof, public.predictions(model.name).oof)
        assert np.array_equal(hidden.predictions(model.name).test, cold.predictions(model.name).test)
        assert hidden.model(model.name).score == cold.model(model.name).score
        assert hidden.model(model.name).fitted == cold.model(model.name).fitted


@pytest.fixture(scope="module")
def key_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    config = resolve_config(small_config(root, make_competition(root / "comp", n_per_class=4, n_test=3)))
    competition = usable_competition(config.data, layout_of(config), config.folds, False)
    folds = competition.task.make_folds(competition.y, config.folds, config.seed)
    return config, backbone_refs(config), {"train": "train-images", "test": "test-images"}, competition, folds


def _changed(part: str, config, refs, image_keys, competition, folds, monkeypatch):
    """The fits key's inputs with one part changed."""
    if part == "train images":
        image_keys = {**image_keys, "train": "other"}
    elif part == "backbone stages":
        refs = backbone_refs(config.replace(stages=2))
    elif part == "views":
        config = config.replace(views=("original",))
    elif part == "train ids":
        competition = dataclasses.replace(competition, train_ids=[f"x{i}" for i in competition.train_ids])
    elif part == "labels":
        competition = dataclasses.replace(competition, y=np.roll(competition.y, 1))
    elif part == "classes":
        classes = (*competition.task.classes, "yellow")
        competition = dataclasses.replace(competition, task=dataclasses.replace(
            competition.task, classes=classes, target_columns=classes))
    elif part == "metric":  # the decision rules are tuned for it
        competition = dataclasses.replace(competition, task=dataclasses.replace(competition.task, metric_name="roc_auc"))
    elif part == "task":
        competition = dataclasses.replace(competition, task=dataclasses.replace(
            competition.task, kind="multilabel", metric_name="roc_auc"))
    elif part == "folds":
        folds = competition.task.make_folds(competition.y, config.folds, config.seed + 1)
    elif part == "seed":
        config = config.replace(seed=config.seed + 1)
    elif part == "head parameters":
        config = config.replace(head_params={**config.head_params, "logreg": {**config.head_params["logreg"],
                                                                             "transform": "standard"}})
    elif part == "version":
        monkeypatch.setattr("kaggle_tl.cv.__version__", "0.0.0-other")
    elif part == "head implementation":
        monkeypatch.setattr("kaggle_tl.cv.HEAD_VERSION", -1)
    return config, refs, image_keys, competition, folds


@pytest.mark.parametrize("part", ["train images", "backbone stages", "views", "train ids", "labels", "classes",
                                  "metric", "task", "folds", "seed", "head parameters", "version", "head implementation"])
def test_every_part_of_what_a_fit_depends_on_changes_its_key(key_inputs, part, monkeypatch):
    config, refs, image_keys, competition, folds = key_inputs
    base = fits_key(config, "logreg", refs, image_keys, competition, folds)
    config, refs, image_keys, competition, folds = _changed(part, config, refs, image_keys, competition, folds,
                                                            monkeypatch)
    assert fits_key(config, "logreg", refs, image_keys, competition, folds) != base


def test_the_test_images_change_the_predictions_key_but_not_the_fits_key(key_inputs):
    config, refs, image_keys, competition, folds = key_inputs
    other = {**image_keys, "test": "hidden-images"}
    assert fits_key(config, "logreg", refs, other, competition, folds) == fits_key(config, "logreg", refs, image_keys,
                                                                                   competition, folds)
    fits = fits_key(config, "logreg", refs, image_keys, competition, folds)
    assert (predictions_key(fits, config, refs, other, competition.side)
            != predictions_key(fits, config, refs, image_keys, competition.side))
    assert fits_key(config, "dense", refs, image_keys, competition, folds) != fits


def test_damaged_fold_models_are_named_refitted_and_never_used(tmp_path, caplog, no_plots):
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=3)
    config = small_config(tmp_path, comp, heads=("logreg",), head_params={})
    first = run(config)
    (key,) = first.cache_entries["fits"]
    path = Path(config.cache_dir) / "fits" / f"{key}.npz"
    intact = path.read_bytes()
    data = bytearray(intact)
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside an array
    path.write_bytes(bytes(data))
    for predictions in (Path(config.cache_dir) / "predictions").glob("*.npz"):
        predictions.unlink()  # else the predictions themselves are served
    with caplog.at_level(logging.WARNING):
        again = run(config, new_run=True)
    # The sidecar's checksum catches the flipped byte before the zip's CRC would.
    assert f"damaged entry {path}" in caplog.text and "checksum mismatch" in caplog.text
    assert again.cache_entries["fits"] == {key: "computed"} and again.timings["head_logreg_cached"] == 0.0
    assert path.read_bytes() == intact  # refitted to the same models, written over the damaged file
    assert np.array_equal(again.predictions(again.models[0].name).test, first.predictions(first.models[0].name).test)


def test_a_kernel_svm_has_no_array_form_so_it_is_refitted_and_its_predictions_alone_cached(tmp_path, no_plots):
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=3)
    config = small_config(tmp_path, comp, heads=("svm",), head_params={"svm": {"kernel": "rbf", "C": 1.0}})
    record = run(config)
    assert record.cache_entries["fits"] == {} and len(record.cache_entries["predictions"]) == 1
    assert not (Path(config.cache_dir) / "fits").exists()


# -- frozen heads predict as the fitted ones ------------------------------------------------------
@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("name, params", [
    ("logreg", {}), ("logreg", {"C": 0.1, "transform": "none"}), ("logreg", {"transform": "l2,pca_whiten(6)"}),
    ("dense", {}), ("dense", {"transform": "sqrt,standard", "l2": "auto", "max_epochs": 5}),
    ("svm", {}), ("svm", {"C": "auto", "transform": "pca_whiten(8)"}),
])
def test_a_frozen_head_predicts_as_the_fitted_one_and_reads_back_identical(name, params, n_classes, tmp_path):
    rng = np.random.default_rng(n_classes)
    y = np.arange(120) % n_classes
    X = (rng.gamma(2.0, 1.0, (120, 16)) + y[:, None] * 0.3).astype(np.float32)
    X_new = rng.gamma(2.0, 1.0, (40, 16)).astype(np.float32)
    head = create_head(name, **params).fit(X, y)
    frozen = head.freeze()
    np.testing.assert_allclose(frozen.predict_proba(X_new), head.predict_proba(X_new), rtol=0, atol=1e-6)
    assert np.array_equal(frozen.classes_, head.classes_)
    path = tmp_path / "fits.npz"
    path.write_bytes(FoldModels(["original"], [[frozen]], {"C": np.ones((1, 1))}).to_bytes())
    loaded = FoldModels.load(path, FoldModels.max_bytes(1, 1, X.shape[1], n_classes))
    assert np.array_equal(loaded.models[0][0].predict_proba(X_new), frozen.predict_proba(X_new))
    assert loaded.views == ["original"] and loaded.fitted["C"].tolist() == [[1.0]]


def _tamper_fits(models: FoldModels, change: str) -> None:
    model = models.models[0][1]
    if change == "permuted classes":
        model.classes_ = model.classes_[::-1].copy()
    elif change == "too few classes":
        model.classes_ = model.classes_[:-1].copy()
    elif change == "NaN coefficient":
        model.linear[0]["coef"][0, 0] = np.nan
    elif change == "zero scale":
        scale = next(name for name in model.transform if name.endswith("_scale"))
        model.transform[scale][0] = 0.0
    elif change == "coefficients of another width":
        model.linear[0]["coef"] = model.linear[0]["coef"][:, :-1].copy()
    elif change == "transform of another width":
        for name in [n for n in model.transform if n.startswith("step") and n != "steps"]:
            model.transform[name] = model.transform[name][..., :-1].copy()
    elif change == "a transform step dropped":
        model.transform["steps"] = model.transform["steps"][:1].copy()
    elif change == "fewer folds":
        models.models = [row[:-1] for row in models.models]
    elif change == "no decisions":
        models.decisions = models.decisions[:1]


def _first_run_entry(tmp_path: Path, kind: str):
    """A first run of logreg on 3 folds: its config, record, and its ``kind`` cache entry's key and path."""
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=3)
    config = small_config(tmp_path, comp, heads=("logreg",), head_params={}, folds=3)
    first = run(config)
    (key,) = first.cache_entries[kind]
    return config, first, key, Path(config.cache_dir) / kind / f"{key}.npz"


@pytest.mark.parametrize("change", ["permuted classes", "too few classes", "NaN coefficient", "zero scale",
                                    "coefficients of another width", "transform of another width",
                                    "a transform step dropped", "fewer folds",
                                    "no decisions"])
def test_a_fits_entry_that_does_not_fit_the_run_is_named_and_refitted(tmp_path, caplog, no_plots, change):
    # A crafted or stale entry with a consistent checksum (as a cache layer can hand one over): checked array by
    # array against the run before any of it is used.
    config, first, key, path = _first_run_entry(tmp_path, "fits")
    models = FoldModels.load(path, FoldModels.max_bytes(2, 3, first.backbones[0]["dim"], 3))
    _tamper_fits(models, change)
    Cache(config.cache_dir).write_file("fits", key, models.to_bytes())
    for predictions in (Path(config.cache_dir) / "predictions").glob("*"):
        predictions.unlink()
    with caplog.at_level(logging.WARNING):
        again = run(config, new_run=True)
    assert f"damaged entry {path}" in caplog.text
    assert again.cache_entries["fits"] == {key: "computed"} and again.timings["head_logreg_cached"] == 0.0
    name = first.models[0].name
    assert np.array_equal(again.predictions(name).test, first.predictions(name).test)
    assert again.models[0].score == first.models[0].score


@pytest.mark.parametrize("change", ["other targets", "other folds", "outside [0, 1]", "NaN", "other views"])
def test_a_predictions_entry_that_does_not_fit_the_run_is_named_and_not_served(tmp_path, caplog, no_plots, change):
    config, first, key, path = _first_run_entry(tmp_path, "predictions")
    preds = first.predictions(first.models[0].name)
    if change == "other targets":
        preds.y = preds.y[::-1].copy()
    elif change == "other folds":
        preds.folds = preds.folds[::-1].copy()
    elif change == "outside [0, 1]":
        preds.oof[0, 0, 0] = 1.5
    elif change == "NaN":
        preds.test[0, 0, 0, 0] = np.nan
    else:
        preds.views = ["hflip", "original"]
    Cache(config.cache_dir).write_file("predictions", key, preds.to_bytes())
    with caplog.at_level(logging.WARNING):
        again = run(config, new_run=True)
    assert str(path) in caplog.text and "refitting" in caplog.text  # named (NaN: already by Predictions.load)
    assert again.cache_entries["predictions"][key] == "computed"
    assert again.models[0].score == first.models[0].score  # from the fold models, as the first run's
