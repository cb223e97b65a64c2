"""Models across runs: each run's models with their predictions, and whether they can be ranked or combined."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kaggle_tl.errors import KaggleTLError
from kaggle_tl.runs.queries import oldest_first
from kaggle_tl.runs.record import ModelRecord, Predictions, RunRecord


@dataclass
class RunModel:
    """One model of one run with its predictions: the unit the leaderboard and ensembles rank."""

    run: RunRecord
    entry: ModelRecord
    predictions: Predictions

    @property
    def key(self) -> str:
        """Unique across runs: ``<run_id>/<model name>``."""
        return f"{self.run.run_id}/{self.entry.name}"

    @property
    def settings(self) -> tuple:
        """What else must match for two models' features to be comparable (weights, size, runtime, views)."""
        config = self.run.config
        return (config.weights, config.image_size, config.resize, config.runtime, config.precision,
                tuple(self.predictions.views))


def load_models(records: list[RunRecord]) -> tuple[list[RunModel], list[str]]:
    """Every finished model of the given runs, predictions loaded; a line for each left out (damaged, replaced)."""
    models, problems = [], []
    for record in records:
        for entry in record.models:
            try:
                models.append(RunModel(record, entry, record.predictions(entry.name)))
            except KaggleTLError as exc:
                problems.append(f"left out: {exc}")
    return models, problems


def same_task_as_newest(models: list[RunModel]) -> tuple[list[RunModel], list[str]]:
    """The models whose run has the newest run's task (kind, classes, metric), and a note naming the rest:
    scores of two metrics, or of two readings of the labels, are never ranked together."""
    if not models:
        return [], []
    newest = oldest_first({m.run.run_id: m.run for m in models}.values())[-1]
    wanted = {k: v for k, v in newest.task.to_dict().items() if k != "source"}
    kept = [m for m in models if {k: v for k, v in m.run.task.to_dict().items() if k != "source"} == wanted]
    skipped = sorted({m.run.run_id for m in models} - {m.run.run_id for m in kept})
    if not skipped:
        return kept, []
    other = next(m.run.task for m in models if m.run.run_id == skipped[0])
    return kept, [f"{len(skipped)} run(s) of another task or metric left out ({', '.join(skipped[:5])}; e.g. "
                  f"{other.kind} scored by {other.metric_name}, while the newest run {newest.run_id} is "
                  f"{newest.task.kind} scored by {newest.task.metric_name})"]


def same_folds_as_newest(models: list[RunModel]) -> tuple[list[RunModel], list[str]]:
    """The models (of one data set) cross-validated on the newest run's labels and folds, and a note on the rest."""
    if not models:
        return [], []
    newest = oldest_first({m.run.run_id: m.run for m in models}.values())[-1]
    reference = next(m.predictions for m in models if m.run is newest)
    kept = [m for m in models if np.array_equal(m.predictions.y, reference.y)
            and np.array_equal(m.predictions.folds, reference.folds)]
    skipped = sorted({m.run.run_id for m in models} - {m.run.run_id for m in kept})
    notes = [f"{len(skipped)} run(s) on other folds left out ({', '.join(skipped[:5])}): "
             f"different --folds or --seed from run {newest.run_id}"] if skipped else []
    return kept, notes


def check_comparable(models: list[RunModel]) -> tuple[np.ndarray, np.ndarray]:
    """Raise unless every model has the same data and folds; return their shared (y, folds).

    Models from runs on different data cannot be combined at all; models cross-validated on
    different folds cannot be stacked or weighted honestly, because each row's OOF predictions
    would come from models that saw different rows.
    """
    if not models:
        raise KaggleTLError("no models to ensemble; pass --runs RUN_ID ... or --all")
    first = models[0]
    y, folds = first.predictions.y, first.predictions.folds
    for model in models[1:]:
        run, other = first.run, model.run
        pair = f"runs {run.run_id} and {other.run_id}"
        if other.data_fingerprint != run.data_fingerprint:
            raise KaggleTLError(f"{pair} are on different data (fingerprints {run.data_fingerprint} "
                                f"and {other.data_fingerprint}); ensemble runs of one data set only")
        for name in ("task", "test_ids", "train_ids"):
            if getattr(other, name) != getattr(run, name):
                raise KaggleTLError(f"{pair} have different {name}; ensemble runs of one data set only")
        if not np.array_equal(model.predictions.y, y):
            raise KaggleTLError(f"{pair} have different training labels; ensemble runs of one data set only")
        if not np.array_equal(model.predictions.folds, folds):
            raise KaggleTLError(f"{pair} were cross-validated on different folds (other --folds or --seed); "
                                "re-run one with the other's folds and seed to ensemble them")
    return y, folds
