"""run(config): competition -> features (cached) -> CV heads -> scores -> submission + run record."""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kaggle_tl.backbones import create_backbone, get_backbone_spec, is_user_model, weights_identity
from kaggle_tl.cache import FeatureCache, atomic_write_bytes
from kaggle_tl.competition import Competition, data_fingerprint, drop_undecodable, image_set_key, read_competition
from kaggle_tl.config import DEMO_DATA, RunConfig
from kaggle_tl.cv import fold_predictions, make_folds, score_table
from kaggle_tl.features import BackboneRef, concat_views, extract_features
from kaggle_tl.heads import make_head
from kaggle_tl.plots import plot_report
from kaggle_tl.runs import (ensure_writable, new_run_id, package_versions, save_model_predictions, to_json,
                            write_record)
from kaggle_tl.submission import build_submission, write_submission

log = logging.getLogger(__name__)
RANDOM_WEIGHTS_WARNING = "weights=none: random backbone weights, these scores say nothing about pretrained features"


@dataclass
class ModelResult:
    name: str  # "<backbones>__<head>"
    head: str
    scores: pd.DataFrame
    cv_logloss: float
    cv_accuracy: float
    submission: Path


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    config: RunConfig
    models: list[ModelResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    plots: dict[str, Path] = field(default_factory=dict)  # name -> PNG under runs/<id>/plots/


def backbone_refs(config: RunConfig) -> list[BackboneRef]:
    """Identify each backbone's features without building it (so a cached run builds nothing)."""
    refs = []
    for name in config.backbones:
        if is_user_model(name):
            backbone = create_backbone(name)  # input size and dim come from the saved model itself
            refs.append(BackboneRef(name, backbone.weights_id, backbone.input_size, backbone.dim))
            continue
        spec = get_backbone_spec(name)
        size = config.image_size or spec.input_size
        weights = None if config.weights in ("none", None) else config.weights
        refs.append(BackboneRef(name, weights_identity(weights), size, spec.dim))
    return refs


def features_for(competition: Competition, config: RunConfig, refs: list[BackboneRef]) -> tuple:
    cache = FeatureCache(config.cache_dir)
    built: dict = {}

    def build(needed: list[BackboneRef]) -> dict:
        for ref in needed:
            if ref.name not in built:
                log.info("building %s (weights=%s, %d px)", ref.name, config.weights, ref.input_size)
                if ref.weights_id == "none":  # one cache key for every random init: make it the same init
                    import keras
                    keras.utils.set_random_seed(0)
                built[ref.name] = create_backbone(ref.name, config.weights, ref.input_size)
        return built

    keys = {}
    out = {}
    for split, paths in (("train", competition.train_paths), ("test", competition.test_paths)):
        keys[split] = image_set_key(paths)
        features = extract_features(paths, keys[split], refs, config.views, cache, build,
                                    batch_size=config.batch_size, threads=config.decode_threads, desc=split)
        out[split] = concat_views(features, [r.name for r in refs], config.views)
    return out["train"], out["test"], keys


def _model_name(config: RunConfig, head_name: str) -> str:
    backbone_set = "user" if any(map(is_user_model, config.backbones)) else "+".join(config.backbones)
    return f"{backbone_set}__{head_name}"


def fit_model(head_name: str, config: RunConfig, competition: Competition, train_by_view: dict,
              test_by_view: dict, folds: np.ndarray, run_dir: Path, versions: dict) -> tuple[ModelResult, np.ndarray]:
    """One head over folds x views -> scores, stored predictions and a written submission."""
    head = make_head(head_name, seed=config.seed, max_epochs=config.max_epochs, logreg_c=config.logreg_c,
                     svm_c=config.svm_c)
    preds = fold_predictions(head, train_by_view, test_by_view, competition.y, folds, competition.n_classes)
    scores = score_table(preds, competition.y, folds)
    overall = scores[(scores.fold == "all")].iloc[-1]  # the view average when flips are on
    model_name = _model_name(config, head_name)
    save_model_predictions(run_dir, model_name, preds.oof, preds.test, preds.views)
    scores.to_csv(run_dir / "models" / model_name / "scores.csv", index=False)
    frame = build_submission(preds.test_mean, competition.test_ids, competition.classes,
                             competition.sample_submission, competition.id_column)
    run_id = run_dir.name
    path = write_submission(frame, competition.sample_submission, config.submissions_dir,
                            f"{run_id}_{head_name}_{overall.logloss:.4f}", competition.id_column)
    atomic_write_bytes(path.with_suffix(".json"), to_json({
        "run_id": run_id, "model": model_name, "config": config.to_dict(), "seed": config.seed,
        "versions": versions, "cv_logloss": overall.logloss, "cv_accuracy": overall.accuracy,
        "random_weights": config.weights == "none", "scores": scores.to_dict(orient="records")}), overwrite=False)
    model = ModelResult(model_name, head_name, scores, float(overall.logloss), float(overall.accuracy), path)
    return model, preds.oof_mean


def run(config: RunConfig) -> RunResult:
    """Run the whole pipeline for ``config``; returns scores and the paths written."""
    started = time.perf_counter()
    if config.data is None:
        from kaggle_tl.demo import ensure_demo_competition
        ensure_demo_competition(DEMO_DATA)
        config = config.replace(data=DEMO_DATA)
    for directory, what in ((config.cache_dir, "cache"), (config.runs_dir, "runs"),
                            (config.submissions_dir, "submissions")):
        ensure_writable(directory, what)
    competition = read_competition(config)
    refs = backbone_refs(config)
    run_id = new_run_id()
    run_dir = Path(config.runs_dir) / run_id
    result = RunResult(run_id, run_dir, config)

    t = time.perf_counter()
    train_by_view, test_by_view, image_keys = features_for(competition, config, refs)
    competition, train_by_view = drop_undecodable(competition, train_by_view, test_by_view, config)
    result.timings["features_s"] = time.perf_counter() - t
    fingerprint = data_fingerprint(competition, image_keys["train"], image_keys["test"])
    folds = make_folds(competition.y, config.folds, config.seed)
    run_dir.mkdir(parents=True, exist_ok=False)
    np.save(run_dir / "folds.npy", folds)
    np.save(run_dir / "y.npy", competition.y)

    versions = package_versions()
    oof_by_model = {}
    for head_name in config.heads:
        t = time.perf_counter()
        model, oof_by_model[_model_name(config, head_name)] = fit_model(
            head_name, config, competition, train_by_view, test_by_view, folds, run_dir, versions)
        result.timings[f"head_{head_name}_s"] = time.perf_counter() - t
        result.models.append(model)

    t = time.perf_counter()
    best = min(result.models, key=lambda m: m.cv_logloss)
    result.plots = plot_report(run_dir / "plots", competition.y, oof_by_model[best.name], competition.classes,
                               image_paths=[str(p) for p in competition.train_paths],
                               features=train_by_view[config.views[0]])
    result.timings["plots_s"] = time.perf_counter() - t
    result.timings["total_s"] = time.perf_counter() - started
    record = run_record(result, competition, refs, fingerprint, image_keys, versions, best.name)
    atomic_write_bytes(run_dir / "config.json", to_json(config.to_dict()))
    write_record(run_dir, record)
    return result


def run_record(result: RunResult, competition: Competition, refs: list[BackboneRef], fingerprint: str,
               image_keys: dict, versions: dict, best_model: str) -> dict:
    """Everything the leaderboard, ensembles, scoring and figures need later, without the images."""
    config, run_id = result.config, result.run_id
    return {
        "run_id": run_id, "created": dt.datetime.now().isoformat(timespec="seconds"),
        "config": config.to_dict(), "competition": str(Path(config.data).resolve()),
        "data_fingerprint": fingerprint, "image_keys": image_keys,
        "n_train": len(competition.train_ids), "n_test": len(competition.test_ids),
        "classes": competition.classes, "views": list(config.views), "backbones": [r.__dict__ for r in refs],
        "random_weights": config.weights == "none",
        "warning": RANDOM_WEIGHTS_WARNING if config.weights == "none" else None,
        "notes": competition.notes, "skipped_images": competition.skipped_images,
        "versions": versions, "timings": result.timings,
        "models": [{"name": m.name, "head": m.head, "backbones": list(config.backbones), "views": list(config.views),
                    "cv_logloss": m.cv_logloss, "cv_accuracy": m.cv_accuracy,
                    "submission": str(m.submission)} for m in result.models],
        "id_column": competition.id_column, "submission_columns": list(competition.sample_submission.columns),
        "test_ids": competition.test_ids, "train_ids": competition.train_ids,
        "train_paths": [str(Path(p).resolve()) for p in competition.train_paths],
        "plots": {name: str(path) for name, path in result.plots.items()}, "best_model": best_model,
    }
