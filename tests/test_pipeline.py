"""End to end on a tiny synthetic competition with random weights at 75 px, read back through the run contract."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import make_competition  # noqa: E402
from kaggle_tl.backbones import BACKBONES
from kaggle_tl.config import RunConfig
from kaggle_tl.errors import KaggleTLError
from kaggle_tl.heads.linear import LogRegHead, SVMHead
from kaggle_tl.pipeline import run
from kaggle_tl.runs.queries import list_runs
from kaggle_tl.runs.record import RunRecord
from kaggle_tl.runs.submission import SubmissionInfo


@pytest.fixture(scope="module")
def mission_run(tmp_path_factory):
    """Both mission backbones, flips, 5 folds, logreg + a short dense head: one run shared by the tests."""
    root = tmp_path_factory.mktemp("mission")
    comp = make_competition(root / "comp")
    config = RunConfig(data=str(comp), weights="none", image_size=75, heads=("logreg", "dense"),
                       head_params={"dense": {"max_epochs": 3}}, cache_dir=str(root / "cache"),
                       runs_dir=str(root / "runs"), submissions_dir=str(root / "subs"))
    return comp, config, run(config)


def test_features_are_the_last_3_stages_per_view_and_cached(mission_run):
    comp, config, record = mission_run
    metas = [json.loads(p.read_text()) for p in (record.run_dir.parents[1] / "cache").glob("features/*/meta.json")]
    # 2 backbones x 2 views x (train, test) x 3 stages, the last each backbone's 2048-d pooled output.
    assert len(metas) == 24 and {m["view"] for m in metas} == {"original", "hflip"}
    assert {m["shape"][1] for m in metas if m["output"] == "pooled"} == {2048}
    dims = {b: [d for _, d in BACKBONES.get(b).identity("none", 75, stages=3).outputs] for b in record.config.backbones}
    for backbone, stage_dims in dims.items():
        entries = [m for m in metas if m["backbone"] == backbone and m["view"] == "original" and m["split"] == "train"]
        assert sorted(m["shape"][1] for m in entries) == sorted(stage_dims)
    assert [b["dim"] for b in record.backbones] == [sum(d) for d in dims.values()]
    preds = record.predictions("xception+inception_v3__logreg")
    assert preds.oof.shape == (2, 30, 3) and preds.test.shape == (2, 5, 9, 3)


def test_the_record_on_disk_is_the_returned_one(mission_run):
    _, config, record = mission_run
    (listed,), problems = list_runs(config.runs_dir)
    assert problems == [] and listed == record
    assert listed.config.backbones == ("xception", "inception_v3")  # resolved: the mission's default
    assert listed.config.head_params["dense"]["max_epochs"] == 3 and listed.config == record.config
    assert listed.random_weights is True
    assert len(listed.train_ids) == 30 and len(listed.test_ids) == 9


def test_every_train_row_is_out_of_fold_exactly_once(mission_run):
    _, _, record = mission_run
    preds = record.predictions("xception+inception_v3__logreg")
    y, folds = preds.y, preds.folds
    assert sorted(np.bincount(folds)) == [6] * 5
    for k in range(5):  # stratified: each fold holds 2 of each of the 3 classes
        assert np.bincount(y[folds == k], minlength=3).tolist() == [2, 2, 2]
    oof = record.predictions("xception+inception_v3__logreg").oof
    np.testing.assert_allclose(oof.sum(axis=2), 1.0, atol=1e-5)  # every row filled by exactly one fold


def test_submission_matches_sample_and_rows_sum_to_one(mission_run):
    comp, _, record = mission_run
    sample = pd.read_csv(comp / "sample_submission.csv", dtype={"id": str})
    for model in record.models:
        sub = pd.read_csv(model.submission, dtype={"id": str})
        assert list(sub.columns) == list(sample.columns)
        assert sub["id"].tolist() == sample["id"].tolist()
        values = sub.drop(columns="id").to_numpy()
        np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-6)
        assert (values > 0).all() and (values < 1).all()
        expected = record.predictions(model.name).test_mean
        got = sub.set_index("id").loc[record.test_ids].to_numpy()
        np.testing.assert_allclose(got, expected / expected.sum(axis=1, keepdims=True), atol=1e-6)
        side = SubmissionInfo.load(model.submission)
        assert (side.source, side.source_id, side.model, side.random_weights) == ("run", record.run_id, model.name, True)
        assert side.score == model.score and side.data_fingerprint == record.data_fingerprint


def test_heads_learn_the_easy_task_and_honest_stopping_is_recorded(mission_run):
    # Random conv features still separate the dominant-colour classes; logreg must find it.
    _, _, record = mission_run
    logreg = record.model("xception+inception_v3__logreg")
    preds = record.predictions(logreg.name)
    assert (preds.oof_mean.argmax(axis=1) == preds.y).mean() >= 0.9 and logreg.score.logloss < np.log(3)
    assert logreg.score.metric == "log_loss" and logreg.score.value == logreg.score.logloss  # Dog Breed's metric
    assert 0 < logreg.score.logloss_se < logreg.score.logloss
    dense = record.model("xception+inception_v3__dense")
    assert dense.optimistic is False and dense.head_params["early_stopping"] == "inner"


def test_second_run_reads_features_and_predictions_from_the_cache(mission_run, monkeypatch):
    comp, config, first = mission_run

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built although every feature is cached")

    def no_fit(*args, **kwargs):
        raise AssertionError("a head was refitted although its predictions are cached")

    monkeypatch.setattr("kaggle_tl.backbones.create_backbone", no_model)
    monkeypatch.setattr(LogRegHead, "fit", no_fit)
    second = run(config.replace(heads=("logreg",), head_params={}))
    assert second.run_id != first.run_id and second.timings["head_logreg_cached"] == 1.0
    name = "xception+inception_v3__logreg"
    assert np.array_equal(second.predictions(name).oof, first.predictions(name).oof)
    assert second.model(name).score == first.model(name).score
    assert second.timings["features_s"] < first.timings["features_s"]


def test_a_changed_parameter_refits_only_that_head(mission_run, monkeypatch):
    comp, config, first = mission_run
    fitted = []
    original_fit = SVMHead.fit

    def counting_fit(self, X, y, **kwargs):
        fitted.append(self.C)
        return original_fit(self, X, y, **kwargs)

    monkeypatch.setattr(SVMHead, "fit", counting_fit)
    monkeypatch.setattr(LogRegHead, "fit", lambda *a, **k: (_ for _ in ()).throw(AssertionError("logreg refitted")))
    changed = run(config.replace(heads=("logreg", "svm"), head_params={"svm": {"C": 0.01}}))
    assert changed.timings["head_logreg_cached"] == 1.0 and changed.timings["head_svm_cached"] == 0.0
    assert fitted == [0.01] * 10  # 5 folds x 2 views


def test_a_failing_figure_never_loses_the_run(tmp_path, monkeypatch):
    comp = make_competition(tmp_path / "comp", n_per_class=5, n_test=3)

    def crash(*args, **kwargs):
        raise RuntimeError("figure trouble")

    monkeypatch.setattr("kaggle_tl.report.plots.plot_tsne", crash)
    record = run(RunConfig(data=str(comp), backbones=("mobilenet_v2",), weights="none", image_size=32,
                           heads=("logreg",), folds=2, views=("original",), cache_dir=str(tmp_path / "cache"),
                           runs_dir=str(tmp_path / "runs"), submissions_dir=str(tmp_path / "subs")))
    assert "tsne" not in record.plots and "confusion" in record.plots
    assert RunRecord.load(record.run_dir).models[0].submission.endswith(".csv")


def test_a_changed_image_is_never_served_stale_features(tmp_path):
    comp = make_competition(tmp_path / "comp", n_per_class=5, n_test=3)
    config = RunConfig(data=str(comp), backbones=("mobilenet_v2",), weights="none", image_size=32, stages=1,
                       heads=("logreg",), folds=2, views=("original",), cache_dir=str(tmp_path / "cache"),
                       runs_dir=str(tmp_path / "runs"), submissions_dir=str(tmp_path / "subs"))
    run(config)
    first = sorted(p.parent.name for p in (tmp_path / "cache").glob("features/*/meta.json"))
    victim = sorted((comp / "train").iterdir())[0]
    victim.write_bytes((comp / "train" / sorted(p.name for p in (comp / "train").iterdir())[-1]).read_bytes())
    run(config)
    second = sorted(p.parent.name for p in (tmp_path / "cache").glob("features/*/meta.json"))
    assert len(second) == len(first) + 1  # train features recomputed under a new key, test reused


def test_unknown_backbone_is_a_one_line_error(tmp_path):
    comp = make_competition(tmp_path / "comp", n_per_class=5, n_test=3)
    with pytest.raises(KaggleTLError, match="unknown backbone 'resnet5'"):
        run(RunConfig(data=str(comp), backbones=("resnet5",), weights="none", cache_dir=str(tmp_path / "c"),
                      runs_dir=str(tmp_path / "r"), submissions_dir=str(tmp_path / "s")))
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_head_jobs_zero_fits_on_every_core_only_when_the_fits_are_large(monkeypatch):
    from kaggle_tl import pipeline

    monkeypatch.setattr(pipeline, "usable_cores", lambda: 2)
    config = RunConfig(data="d", backbones=("efficientnet_lite0",))
    assert config.head_jobs == 0
    assert pipeline.head_jobs(config, (300, 3104)) == (1, None)  # the demo: worker start-up costs more
    assert pipeline.head_jobs(config, (5000, 3104)) == (2, None)  # cifar10-small
    assert pipeline.head_jobs(config.replace(head_jobs=1), (5000, 3104)) == (1, None)
    assert pipeline.head_jobs(config.replace(head_jobs=1000), (300, 3104)) == (
        10, "head_jobs 1000 capped at the 10 fits of a head")
