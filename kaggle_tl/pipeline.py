"""run(config): competition -> features (cached) -> CV heads (cached) -> submission + run record.

Writes go in an order that never loses a run: the record is saved before the first head and
again after each step (predictions, submission, figures), so whatever fails later, everything
already computed is on the leaderboard.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from kaggle_tl import __version__
from kaggle_tl.backbones import BackboneRef, backbone_identity, is_user_model
from kaggle_tl.cache import FeatureCache, array_digest, atomic_write_bytes, cache_key
from kaggle_tl.competition import Competition, data_fingerprint, drop_undecodable, image_set_key, read_competition
from kaggle_tl.config import DEMO_DATA, RunConfig, resolve_config
from kaggle_tl.cv import cross_validate, make_folds
from kaggle_tl.engine import Engine
from kaggle_tl.errors import one_line
from kaggle_tl.features import BackboneBuilder, concat_views, extract_features, feature_key
from kaggle_tl.heads import create_head
from kaggle_tl.plots import plot_report
from kaggle_tl.runs import (ModelRecord, Predictions, RunRecord, claim_run_dir, ensure_writable, package_versions,
                            to_json)
from kaggle_tl.submission import build_submission, write_submission

log = logging.getLogger(__name__)
PREDICTIONS_CACHE = "predictions"  # under cache_dir: one .npz per (features, folds, head, parameters)
FIGURES_CACHE = "figures"  # under cache_dir: the PNGs drawn for one best model's predictions


def backbone_refs(config: RunConfig) -> list[BackboneRef]:
    """Each backbone's feature identity (backbones.backbone_identity): nothing is built for it."""
    return [backbone_identity(name, config.weights, config.image_size, config.resize) for name in config.backbones]


def features_for(competition: Competition, config: RunConfig, refs: list[BackboneRef],
                 engine: Engine | None = None) -> tuple:
    """{view: (N, sum of dims)} train and test features, and the image-set keys they are cached under."""
    cache = FeatureCache(config.cache_dir)
    build = BackboneBuilder(config.weights)  # picklable: each Dask worker builds a model once
    keys, out = {}, {}
    for split, paths in (("train", competition.train_paths), ("test", competition.test_paths)):
        keys[split] = image_set_key(paths)
        features = extract_features(paths, keys[split], refs, config.views, cache, build,
                                    batch_size=config.batch_size, threads=config.decode_threads, desc=split,
                                    engine=engine)
        out[split] = concat_views(features, [r.name for r in refs], config.views)
    return out["train"], out["test"], keys


def model_name(config: RunConfig, head_name: str) -> str:
    backbone_set = "user" if any(map(is_user_model, config.backbones)) else "+".join(config.backbones)
    return f"{backbone_set}__{head_name}"


def predictions_key(config: RunConfig, head_name: str, refs: list[BackboneRef], image_keys: dict[str, str],
                    competition: Competition, folds: np.ndarray) -> str:
    """What a head's predictions depend on: the exact features, rows, labels, folds, head and version."""
    return cache_key(features=[feature_key(image_keys[split], ref, view) for split in ("train", "test")
                               for ref in refs for view in config.views],
                     train_ids=array_digest(np.array(competition.train_ids, dtype=str)),
                     y=array_digest(competition.y), folds=array_digest(folds), head=head_name,
                     params=config.head_params[head_name], seed=config.seed, version=__version__)


def head_predictions(head_name: str, config: RunConfig, competition: Competition, train_by_view: dict,
                     test_by_view: dict, folds: np.ndarray, key: str, n_jobs: int = 1) -> tuple[Predictions, bool]:
    """A head's fold x view predictions: from the prediction cache, or fitted ``n_jobs`` at a time (then cached)."""
    path = Path(config.cache_dir) / PREDICTIONS_CACHE / f"{head_name}-{key}.npz"
    if path.is_file():
        try:
            return Predictions.load(path), True
        except Exception as exc:  # noqa: BLE001 -- a damaged cache file is recomputed, never served
            log.warning("%s: %s; refitting", path, exc)
    head = create_head(head_name, random_state=config.seed, **config.head_params[head_name])
    preds = cross_validate(head, train_by_view, test_by_view, competition.y, folds, competition.n_classes,
                           n_jobs=n_jobs, blas_threads=1, desc=head_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    preds.save(path)
    return preds, False


def run(config: RunConfig) -> RunRecord:
    """Run the whole pipeline for ``config``; returns the run's record (models, scores, paths)."""
    started = time.perf_counter()
    config = resolve_config(config)
    if config.data == DEMO_DATA:
        from kaggle_tl.demo import ensure_demo_competition
        ensure_demo_competition(DEMO_DATA)
    for directory, what in ((config.cache_dir, "cache"), (config.runs_dir, "runs"),
                            (config.submissions_dir, "submissions")):
        ensure_writable(directory, what)
    competition = read_competition(config)
    refs = backbone_refs(config)

    with Engine(config.engine, config.address) as engine:  # connects to a cluster only if work needs one
        return _run(config, competition, refs, engine, started)


def _run(config: RunConfig, competition: Competition, refs: list[BackboneRef], engine: Engine,
         started: float) -> RunRecord:
    timings: dict[str, float] = {}
    t = time.perf_counter()
    train_by_view, test_by_view, image_keys = features_for(competition, config, refs, engine)
    competition, train_by_view = drop_undecodable(competition, train_by_view, test_by_view, config)
    timings["features_s"] = time.perf_counter() - t
    folds = make_folds(competition.y, config.folds, config.seed)

    run_dir = claim_run_dir(config.runs_dir)
    record = RunRecord(
        run_id=run_dir.name, config=config.to_dict(), competition=str(Path(config.data).resolve()),
        data_fingerprint=data_fingerprint(competition, image_keys["train"], image_keys["test"]),
        image_keys=image_keys, classes=competition.classes, id_column=competition.id_column,
        submission_columns=list(competition.sample_submission.columns), train_ids=competition.train_ids,
        test_ids=competition.test_ids, train_paths=[str(Path(p).resolve()) for p in competition.train_paths],
        backbones=[r.__dict__ for r in refs], random_weights=config.weights == "none",
        notes=list(competition.notes),
        skipped_images=list(competition.skipped_images),
        versions=package_versions(), timings=timings, run_dir=run_dir)
    record.save()

    keys, oof_by_head = {}, {}
    for head_name in config.heads:
        t = time.perf_counter()
        key = keys[head_name] = predictions_key(config, head_name, refs, image_keys, competition, folds)
        with engine.head_parallelism(config.head_jobs) as n_jobs:
            preds, cached = head_predictions(head_name, config, competition, train_by_view, test_by_view, folds, key,
                                             n_jobs)
        name = model_name(config, head_name)
        record.save_predictions(name, preds)
        oof_by_head[head_name] = preds.oof_mean
        scores = preds.score()
        head = create_head(head_name, **config.head_params[head_name])
        entry = ModelRecord(name=name, head=head_name, head_params=config.head_params[head_name],
                            backbones=list(config.backbones), cv_logloss=scores["logloss"],
                            cv_logloss_se=scores["logloss_se"], cv_accuracy=scores["accuracy"],
                            cv_accuracy_se=scores["accuracy_se"],
                            optimistic=bool(getattr(head, "uses_fold_for_early_stopping", False)))
        record.models.append(entry)
        timings[f"head_{head_name}_s"] = time.perf_counter() - t
        timings[f"head_{head_name}_cached"] = float(cached)
        record.save()
        entry.submission = str(write_model_submission(record, entry, preds, competition))
        record.save()

    t = time.perf_counter()
    best = min(record.models, key=lambda m: m.cv_logloss)
    try:
        record.plots = figures(record, oof_by_head[best.head], competition, train_by_view[config.views[0]],
                               Path(config.cache_dir) / FIGURES_CACHE / keys[best.head])
    except Exception as exc:  # noqa: BLE001 -- figures are optional; the run is already recorded
        log.warning("figures skipped: %s", one_line(exc))
        record.notes.append(f"figures skipped: {one_line(exc)}")
    timings["plots_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - started
    record.save()
    return record


def figures(record: RunRecord, oof: np.ndarray, competition: Competition, features: np.ndarray,
            cached: Path) -> dict[str, str]:
    """The best model's figures (its (N, C) view-averaged ``oof``) in the run's plots folder: drawn
    once per predictions, then copied.

    t-SNE and the image grid cost seconds that a re-run with cached predictions would otherwise
    spend redrawing identical pictures. ``cached`` is named by the best model's predictions key,
    which covers everything the figures show (labels, OOF predictions, train images, features).
    """
    if not cached.is_dir():
        drawing = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
        plot_report(drawing, competition.y, oof, competition.classes,
                    image_paths=competition.train_paths, features=features)
        try:
            os.replace(drawing, cached)
        except OSError:  # another run drew the same figures first: keep theirs
            shutil.rmtree(drawing, ignore_errors=True)
    record.plots_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for png in sorted(cached.glob("*.png")):
        shutil.copyfile(png, record.plots_dir / png.name)
        written[png.stem] = png.name
    return written


def write_model_submission(record: RunRecord, entry: ModelRecord, preds: Predictions,
                           competition: Competition) -> Path:
    """The model's view x fold averaged test predictions as a validated CSV, with a JSON note of its origin."""
    frame = build_submission(preds.test_mean, competition.test_ids, competition.classes,
                             competition.sample_submission, competition.id_column)
    config = record.config
    path = write_submission(frame, competition.sample_submission, config["submissions_dir"],
                            f"{record.run_id}_{entry.head}_{entry.cv_logloss:.4f}", competition.id_column)
    atomic_write_bytes(path.with_suffix(".json"), to_json({
        "run_id": record.run_id, "run_dir": str(record.run_dir.resolve()), "model": entry.name,
        "cv_logloss": entry.cv_logloss, "cv_accuracy": entry.cv_accuracy, "optimistic": entry.optimistic,
        "random_weights": record.random_weights}), overwrite=False)
    return path
