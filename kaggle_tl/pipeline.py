"""run(config): competition -> features (cached) -> CV heads (cached) -> submission + run record.

Each stage hands what it found to the next: the competition (read, its images scanned), the
backbones' feature identities, the feature plan (what the caches hold, what is left, how long it
will take), the features with the rows that could not be decoded, the folds, each head's
predictions, the submissions. Only this module, ``config.py`` and ``cli.py`` know RunConfig.

Writes go in an order that never loses a run: the record is saved before the first head and
again after each step (predictions, submission, figures), so whatever fails later, everything
already computed is on the leaderboard.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from kaggle_tl import __version__
from kaggle_tl.backbones import BackboneRef, backbone_spec
from kaggle_tl.backbones.runtimes import runtime_id
from kaggle_tl.cache.store import Cache, array_digest, cache_key
from kaggle_tl.config import DEMO_DATA, RunConfig, model_name, resolve_config, resolve_heads
from kaggle_tl.cv import fits_key, head_predictions, predictions_key
from kaggle_tl.data.archives import saved
from kaggle_tl.data.competition import Competition, Layout, read_competition
from kaggle_tl.data.digests import data_fingerprint, image_set_key
from kaggle_tl.engine import Engine, usable_cores
from kaggle_tl.errors import KaggleTLError, one_line
from kaggle_tl.features import (FEATURE_VERSION, BackboneBuilder, FeaturePlan, Features, check_memory, feature_key,
                                seconds_per_image)
from kaggle_tl.files import atomic_write_bytes, ensure_writable, temp_path
from kaggle_tl.heads.base import HEAD_VERSION, HEADS, create_head
from kaggle_tl.report.plots import FIGURES_VERSION, TSNE_FILE, plot_model
from kaggle_tl.runs.queries import list_runs
from kaggle_tl.runs.record import ModelRecord, Predictions, RunRecord, claim_run_dir, package_versions
from kaggle_tl.runs.submission import (SubmissionInfo, build_submission, check_submission_file, submission_folder,
                                       write_submission, write_submission_file)
from kaggle_tl.tasks.competitions import competition_label_column, competition_settings
from kaggle_tl.tasks.detect import TaskSettings
from kaggle_tl.tasks.evaluate import model_score
from kaggle_tl.tasks.metrics import best_index
from kaggle_tl.tasks.task import Task

log = logging.getLogger(__name__)
Report = Callable[[str], None]


def layout_of(config: RunConfig) -> Layout:
    """Where the competition keeps its parts as the user set them, the label column completed from --competition."""
    layout = Layout(**{f.name: getattr(config, f.name) for f in dataclasses.fields(Layout)})
    return dataclasses.replace(layout, label_column=competition_label_column(config.competition, layout.label_column))


def task_settings(config: RunConfig) -> tuple[TaskSettings, str | None]:
    """What the user fixed of the task, completed from --competition's known settings; a note for an unknown slug."""
    given = TaskSettings(task=config.task, metric=config.metric, top_k=config.top_k, catch_all=config.catch_all,
                         positive=config.positive_class)
    return competition_settings(config.competition, given)


def create_task_head(config: RunConfig, head_name: str, task: Task):
    """The head as the run fits it: its parameters, the run's seed, and the response the task needs from it."""
    response = task.response_of(HEADS.get(head_name).responses)
    return create_head(head_name, random_state=config.seed, response=response, **config.head_params[head_name])


def backbone_refs(config: RunConfig) -> list[BackboneRef]:
    """Each backbone's feature identity: nothing is built for a registered backbone."""
    runtime = runtime_id(config.runtime, config.precision)
    return [backbone_spec(name).identity(config.weights, config.image_size, config.resize, runtime, config.stages,
                                         config.stage_layers.get(name, ()))
            for name in config.backbones]


def recipe(config: RunConfig, refs: list[BackboneRef], head_name: str, fitted: dict | None = None) -> str:
    """The model's settings in short, beyond its name: what two models that look alike differ in.

    The head's changed parameters come first: the terminal cuts a long recipe at its end.
    """
    parts = ["+".join(f"{r.input_size}px" for r in refs), config.resize]
    if config.stages != RunConfig.stages or config.stage_layers:
        parts.append("stages " + "+".join(str(len(r.outputs)) for r in refs))
    if tuple(config.views) != ("original", "hflip"):
        parts.append("views " + "+".join(config.views))
    if config.weights != "imagenet":
        parts.append(f"weights {Path(config.weights).name}")
    if config.precision != "fp32":  # OpenVINO fp32 and TensorFlow differ in the last bits only
        parts.append(f"{config.runtime} {config.precision}")
    defaults = {k: v for k, v in create_head(head_name).get_params().items() if k != "random_state"}
    changed = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
               for k, v in config.head_params[head_name].items() if defaults.get(k) != v]
    # What the fits chose (C = "auto"): the median over folds and views.
    changed += [f"{k}~{np.nanmedian(v):.2g}" for k, v in (fitted or {}).items()]
    return " ".join([head_name, *changed]) + " | " + " ".join(parts)


def run(config: RunConfig, *, new_run: bool = False, report: Report = log.info) -> RunRecord:
    """Run the whole pipeline for ``config``; returns the run's record (models, scores, paths).

    A run whose settings, data and kaggle_tl version are those of a finished run is that run:
    its record is returned and nothing is recomputed or written again (``new_run`` forces a new
    one). ``report`` receives the lines a user should see (the CLI prints them).
    """
    started = time.perf_counter()
    config = resolve_config(config)
    if config.data == str(Path(DEMO_DATA).absolute()):
        from kaggle_tl.data.demo import ensure_demo_competition
        ensure_demo_competition(config.data)
    check_outputs(config)
    for directory, what in ((config.cache_dir, "cache"), (config.runs_dir, "runs"),
                            (config.submissions_dir, "submissions")):
        ensure_writable(directory, what)
    if config.submission_file:
        check_submission_file(config.submission_file)
    cache = Cache(config.cache_dir, config.cache_from)
    refs = backbone_refs(config)

    settings, unknown_slug = task_settings(config)
    competition = read_competition(config.data, layout_of(config), settings)
    if unknown_slug:
        competition.notes.append(unknown_slug)
        report(f"note: {unknown_slug}")
    report(competition.task.describe())  # what was decided, before any image is read
    config = resolve_heads(config, competition.task)
    competition = competition.with_usable_images(*competition.scan_images(), config.skip_bad_train_images,
                                                 config.folds)
    problem = competition.task.fold_problem(competition.y, config.folds)
    if problem:
        raise KaggleTLError(f"{competition.root}: {problem}")
    folds = competition.task.make_folds(competition.y, config.folds, config.seed)
    _check_heads_can_fit(config, competition, folds)
    image_keys = {"train": image_set_key(competition.train_paths), "test": image_set_key(competition.test_paths)}
    fingerprint = data_fingerprint(competition, image_keys["train"], image_keys["test"])  # side features included
    competition = _side_features(config, competition, report)
    if not new_run:
        same = identical_run(config, fingerprint, refs)
        if same is not None:
            report(f"identical to run {same.run_id} ({same.run_dir}): same settings, data and kaggle_tl version; "
                   "nothing recomputed (--new-run forces a new run)")
            if config.submission_file:
                _write_chosen_submission(config, same, competition)
            return same

    inputs = Inputs(competition, refs, image_keys, fingerprint, folds)
    with Engine(config.engine, config.address) as engine:  # connects to a cluster only if work needs one
        return _run(config, inputs, cache, engine, report, started)


@dataclass
class Inputs:
    """What reading the competition found, handed to the stages after it."""

    competition: Competition
    refs: list[BackboneRef]
    image_keys: dict[str, str]  # split -> image_set_key of its images
    fingerprint: str  # data_fingerprint: labels, ids and images together
    folds: np.ndarray  # (N,) outer fold of each training row


def _side_features(config: RunConfig, competition: Competition, report: Report) -> Competition:
    """The competition as the heads see it: its side features (data.tabular) kept and announced, or left out
    (--no-tabular), which a note says."""
    side = competition.side
    if side is None:
        return competition
    if config.tabular:
        report(side.describe())
        return dataclasses.replace(competition, notes=[*competition.notes, side.describe()])
    note = f"side features left out (--no-tabular): {len(side.columns)} numeric column(s) of {side.sources[0]}"
    report(note)
    return dataclasses.replace(competition, side=None, notes=[*competition.notes, note])


def check_outputs(config: RunConfig) -> None:
    """One line, before anything is written, for an output inside the competition folder or a read-only
    cache layer: kaggle_tl reads those and never writes there (a submission file had overwritten labels.csv)."""
    inputs = [("the competition folder", Path(config.data).resolve())]
    inputs += [("the read-only cache (--cache-from)", Path(layer).resolve()) for layer in config.cache_from]
    outputs = {"cache_dir": config.cache_dir, "runs_dir": config.runs_dir, "submissions_dir": config.submissions_dir,
               "submission_file": config.submission_file}
    for name, path in outputs.items():
        if path is None:
            continue
        resolved = Path(path).resolve()
        for what, folder in inputs:
            if resolved == folder or folder in resolved.parents:
                raise KaggleTLError(f"setting {name}: {path} is inside {what} {folder}; kaggle_tl never writes "
                                    "there: choose a folder outside it")


def implementation_versions() -> dict[str, str]:
    """What changes a run's numbers inside one kaggle_tl version: its feature and head implementations."""
    return {"kaggle-tl": __version__, "kaggle-tl features": str(FEATURE_VERSION), "kaggle-tl heads": str(HEAD_VERSION)}


def identical_run(config: RunConfig, fingerprint: str, refs: list[BackboneRef]) -> RunRecord | None:
    """The newest finished run of these settings on this data, with these backbones' weights (by content),
    by this version of kaggle_tl (and of its feature and head implementations), whose promised files are
    all there and whose results came from no cache layer this run lacks; None if there is none."""
    records, _ = list_runs(config.runs_dir)
    wanted, versions = config.result_settings(), implementation_versions()
    backbones = [r.to_dict() for r in refs]  # weights ids carry the file's sha256: a re-saved model is another
    for record in reversed(records):
        if (record.data_fingerprint == fingerprint and record.config.result_settings() == wanted
                and record.backbones == backbones
                and all(record.versions.get(name) == value for name, value in versions.items())
                and {m.head for m in record.models} == set(config.heads)):
            problem = _unkept_promise(record, config)
            if problem is None:
                return record
            log.warning("run %s has these settings, but %s: computed again", record.run_id, problem)
    return None


def _unkept_promise(record: RunRecord, config: RunConfig) -> str | None:
    """What of ``record`` is missing for this run to be it: a file it names, or a cache layer it read from."""
    promised = [record.predictions_path(m.name) for m in record.models]
    promised += [Path(m.submission) for m in record.models if m.submission]
    promised += [record.plots_dir / name for name in record.plots.values()]
    missing = next((path for path in promised if not path.is_file()), None)
    if missing is not None:
        return f"its file {missing} is missing"
    layers = {os.path.abspath(layer) for layer in config.cache_from if Path(layer).is_dir()}  # as Cache names them
    for kind, entries in record.cache_entries.items():
        for source in entries.values():
            if source not in ("computed", "cache") and source not in layers:
                return f"its {kind} came from the cache layer {source}, which this run does not read"
    return None


def _check_heads_can_fit(config: RunConfig, competition: Competition, folds: np.ndarray) -> None:
    """One line now, before extraction, for a head the data is too small for (SVM calibration, say)."""
    y = competition.y
    for name in config.heads:
        head = create_task_head(config, name, competition.task)
        if head.response != "proba":
            continue
        counts = [np.bincount(y[folds != k], minlength=int(y.max()) + 1) for k in range(config.folds)]
        present = np.bincount(y) > 0
        smallest = int(min(c[present].min() for c in counts))
        problem = head.training_problem(smallest)
        if problem:
            raise KaggleTLError(f"setting heads: {problem}")


def _extract(config: RunConfig, inputs: Inputs, cache: Cache, engine: Engine, report: Report) -> dict[str, Features]:
    """Every split's features of every backbone and view: from the caches, else computed (and cached)."""
    # Picklable: each Dask worker builds a model once.
    build = BackboneBuilder(config.weights, config.runtime, config.precision, str(cache.root), tuple(config.cache_from))
    competition, image_keys = inputs.competition, inputs.image_keys
    splits = {"train": (competition.train_paths, image_keys["train"]),
              "test": (competition.test_paths, image_keys["test"])}
    with FeaturePlan(cache, splits, inputs.refs, config.views, info={"data": competition.root.name}) as plan:
        _announce(plan, config, build, report)
        return plan.extract(build, config.batch_size, config.decode_threads, engine)


def _run(config: RunConfig, inputs: Inputs, cache: Cache, engine: Engine, report: Report, started: float) -> RunRecord:
    timings: dict[str, float] = {}
    t = time.perf_counter()
    features = _extract(config, inputs, cache, engine, report)
    timings["features_s"] = time.perf_counter() - t
    competition, refs, image_keys, folds = inputs.competition, inputs.refs, inputs.image_keys, inputs.folds
    competition, train_rows = _usable_rows(competition, features, config)
    if train_rows is not None:
        folds = competition.task.make_folds(competition.y, config.folds, config.seed)
    names = [r.name for r in refs]
    train_by_view = features["train"].by_view(names, config.views, train_rows)
    test_by_view = features["test"].by_view(names, config.views)
    if competition.side is not None:  # the same columns after every view's image features
        train_by_view = {v: competition.side.join(X, "train") for v, X in train_by_view.items()}
        test_by_view = {v: competition.side.join(X, "test") for v, X in test_by_view.items()}

    run_dir = claim_run_dir(config.runs_dir)
    record = RunRecord(
        run_id=run_dir.name, config=config, data_fingerprint=inputs.fingerprint, image_keys=image_keys,
        task=competition.task, layout=dataclasses.asdict(competition.layout),
        submission_columns=list(competition.sample_submission.columns),
        train_ids=competition.train_ids, test_ids=competition.test_ids,
        train_paths=[saved(p) for p in competition.train_paths],  # str; data.archives.image_path reads them back
        test_paths=[saved(p) for p in competition.test_paths],
        backbones=[r.to_dict() for r in refs], notes=list(competition.notes),
        skipped_images=list(competition.skipped_images),
        cache_entries={"features": {k: v for split in features.values() for k, v in split.sources.items()}},
        versions=package_versions() | implementation_versions(), timings=timings, run_dir=run_dir)
    record.save()

    jobs, note = head_jobs(config, next(iter(train_by_view.values())).shape)
    if note:
        record.notes.append(note)
    keys, frames = {}, {}
    record.cache_entries.update(fits={}, predictions={})
    for head_name in config.heads:
        t = time.perf_counter()
        fits = fits_key(config, head_name, refs, image_keys, competition, folds)
        keys[head_name] = {"fits": fits, "predictions": predictions_key(fits, config, refs, image_keys,
                                                                                competition.side)}
        head = create_task_head(config, head_name, competition.task)
        with engine.head_parallelism(jobs) as n_jobs:
            preds, sources = head_predictions(head, competition, train_by_view, test_by_view, folds, keys[head_name],
                                              cache, config.seed, n_jobs)
        for kind, source in sources.items():
            record.cache_entries[kind][keys[head_name][kind]] = source
        timings[f"head_{head_name}_s"] = time.perf_counter() - t
        # Nothing refitted: the predictions, or the fold models that made them, came from a cache.
        timings[f"head_{head_name}_cached"] = float(any(source != "computed" for source in sources.values()))
        if not preds.is_finite():
            message = (f"head {head_name} ({head.describe_params()}) diverged: its predictions hold NaN or infinite "
                       "values; this model is left out, the run's other models are kept")
            log.warning(message)
            record.notes.append(message)
            record.save()
            continue
        name = model_name(config, head_name)
        _, sha1 = record.save_predictions(name, preds)
        entry = ModelRecord(name=name, head=head_name, head_params=config.head_params[head_name],
                            backbones=list(config.backbones), response=head.response,
                            score=model_score(competition.task, preds),
                            optimistic=head.uses_fold_for_early_stopping,
                            recipe=recipe(config, refs, head_name, preds.fitted), predictions_sha1=sha1,
                            fitted={k: v.tolist() for k, v in preds.fitted.items()})
        record.models.append(entry)
        record.save()
        path, frames[name] = write_model_submission(record, entry, preds, competition)
        entry.submission = str(path)
        record.save()
    if not record.models:
        raise KaggleTLError(f"run {record.run_id}: no head finished ({'; '.join(record.notes[-len(config.heads):])})")

    t = time.perf_counter()
    best = record.models[best_index([m.score for m in record.models])]
    try:
        # The figures show the OOF predictions and training images only: a new test set redraws nothing.
        figures_key = cache_key(fits=keys[best.head]["fits"], classes=competition.classes, figures=FIGURES_VERSION)
        tsne = tsne_key(config, refs, image_keys, competition)
        record.plots, sources = figures(record, best, competition, train_by_view[config.views[0]], cache,
                                        figures_key, tsne)
        record.cache_entries["figures"] = {key: source for key, source in zip((figures_key, tsne), sources) if source}
    except Exception as exc:  # noqa: BLE001 -- figures are optional; the run is already recorded
        log.warning("figures skipped: %s", one_line(exc))
        record.notes.append(f"figures skipped: {one_line(exc)}")
    timings["plots_s"] = time.perf_counter() - t
    if config.submission_file:
        path = _write_chosen_submission(config, record, competition, frames)
        record.notes.append(f"submission file {path}: {chosen_model(config, record).name}")
    timings["total_s"] = time.perf_counter() - started
    record.save()
    return record


# Training rows x feature columns from which head_jobs = 0 fits on every core: below it, starting the
# worker processes costs more than the second core gives (BENCHMARKS.md, round 5: the demo at 0.9M
# cells and the ImageNet sample photos at 3.1M ran slower or barely faster in parallel; cifar10-small
# at 15.5M 1.6x faster for logreg, 1.2x for dense).
PARALLEL_FIT_CELLS = 4_000_000


def head_jobs(config: RunConfig, train_shape: tuple[int, int]) -> tuple[int, str | None]:
    """The fits a head runs at once (config.head_jobs, or by the size of the fits when 0), and a note when capped."""
    n_fits = config.folds * len(config.views)
    if config.head_jobs == 0:
        cores = usable_cores() if train_shape[0] * train_shape[1] >= PARALLEL_FIT_CELLS else 1
        return min(cores, n_fits), None
    if config.head_jobs > n_fits:
        return n_fits, f"head_jobs {config.head_jobs} capped at the {n_fits} fits of a head"
    return config.head_jobs, None


def _announce(plan: FeaturePlan, config: RunConfig, build: BackboneBuilder, report: Report) -> None:
    """Say how much extraction is left and how long it will take; stop now if over --time-limit or memory."""
    images, passes = plan.images_to_compute(), plan.passes()
    if not images:
        report("features: all from the caches")
        return
    check_memory(plan.refs_to_compute(), config.batch_size)
    counts = ", ".join(f"{plan.images_to_compute(name)} of {len(split.paths)} {name}"
                       for name, split in plan.splits.items())
    line = f"features: {images} image(s) to compute ({counts}), {passes} passes (images x views x backbones)"
    if config.engine != "local":
        report(f"{line}; no time estimate with engine {config.engine}")
        return
    sample = next(s.paths for s in plan.splits.values() if s.todo)[:3 * config.batch_size]
    per_image = seconds_per_image(build, plan.refs_to_compute(), config.views, sample, config.batch_size,
                                  config.decode_threads)
    minutes = per_image * images / 60
    duration = f"{minutes:.1f} min" if minutes >= 1 else f"{minutes * 60:.0f} s"
    report(f"{line}; estimated {duration} at {1 / per_image:.1f} images/s, measured here")
    if config.time_limit is not None and minutes > config.time_limit:
        raise KaggleTLError(f"setting time_limit: extraction is estimated at {minutes:.1f} min, over the "
                            f"{config.time_limit:g} min limit ({images} images, {passes} passes at "
                            f"{1 / per_image:.1f} images/s); nothing was computed")


def _usable_rows(competition: Competition, features: dict[str, Features],
                 config: RunConfig) -> tuple[Competition, np.ndarray | None]:
    """Apply the bad-image policy to images that passed the scan but failed to decode.

    A test image stops the run; a training image does too, unless skipping: then its rows are
    left out (the returned row indices are those kept). Everything extracted stays cached, so a
    re-run with the flag computes nothing.
    """
    bad_train, bad_test = features["train"].bad_rows, features["test"].bad_rows
    if not bad_train and not bad_test:
        return competition, None
    usable = competition.with_usable_images(bad_train, bad_test, config.skip_bad_train_images, config.folds)
    return usable, np.array([i for i in range(len(competition.train_ids)) if i not in bad_train], dtype=np.int64)


def tsne_key(config: RunConfig, refs: list[BackboneRef], image_keys: dict[str, str], competition: Competition) -> str:
    """What the t-SNE figure shows: the first view's training features (every stage of every backbone), their rows,
    labels and class names; no head: a re-run that changes only a head redraws the rest, not this."""
    return cache_key(features=[feature_key(image_keys["train"], ref, config.views[0], output)
                               for ref in refs for output, _ in ref.outputs],
                     train_ids=array_digest(np.array(competition.train_ids, dtype=str)),
                     y=array_digest(competition.y), classes=competition.classes, figures=FIGURES_VERSION, tsne=1)


def figures(record: RunRecord, model: ModelRecord, competition: Competition, features: np.ndarray,
            cache: Cache, key: str, tsne_entry: str) -> tuple[dict[str, str], tuple[str, str | None]]:
    """The model's figures (those its task allows, from its view-averaged OOF predictions and the decisions
    stored beside them) in the run's plots folder, and where the entries ``key`` and ``tsne_entry`` came from
    (None: not used): drawn once per fold models into the cache entry ``key``, then copied from it.

    t-SNE and the image grid cost seconds that a re-run (or a hidden test set) would otherwise
    spend redrawing identical pictures. ``key`` is made of the model's fits key and the class
    names, which cover everything the figures show: OOF predictions and decisions, the score,
    training images and their features. The t-SNE shows features and labels only, so it has an entry of its own,
    ``tsne_entry`` (``tsne_key()``): a change of head parameters (a new ``key``) does not redraw it (4.1 of the 5.1 s
    of figures on cifar10-small's Lite0 features).
    """
    found = cache.read_figures(key)
    tsne_source = None
    if found is None:
        cached_tsne = cache.read_figures(tsne_entry)
        tsne_png = cached_tsne[0].get(TSNE_FILE) if cached_tsne else None
        drawing = temp_path(record.plots_dir)
        try:
            plot_model(drawing, competition.task, record.predictions(model.name),
                       f"{model.name}: CV {model.score.metric} {model.score.value:.4f}",
                       image_paths=competition.train_paths, features=features, tsne_png=tsne_png)
            drawn = {path.name: path.read_bytes() for path in sorted(drawing.iterdir())} if drawing.is_dir() else {}
        finally:
            shutil.rmtree(drawing, ignore_errors=True)
        if TSNE_FILE in drawn:
            if tsne_png is None:
                cache.write_figures(tsne_entry, {TSNE_FILE: drawn[TSNE_FILE]})
            tsne_source = "computed" if tsne_png is None else cache.source(cached_tsne[1])
        cache.write_figures(key, drawn)
        source = "computed"
    else:
        drawn, source = found[0], cache.source(found[1])
    record.plots_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, data in drawn.items():  # a CSV: a figure's full table
        atomic_write_bytes(record.plots_dir / name, data)
        written[Path(name).stem] = name
    return written, (source, tsne_source)


def write_model_submission(record: RunRecord, entry: ModelRecord, preds: Predictions,
                           competition: Competition):
    """The model's view x fold averaged test predictions as a validated CSV (in the competition's folder
    under the submissions folder), with a JSON note of its origin; returns the path and the frame."""
    frame = build_submission(competition.task, preds.test_mean, preds.test_decision, competition.test_ids,
                             competition.sample_submission)
    folder = submission_folder(record.config.submissions_dir, record.competition)
    path = write_submission(frame, competition.sample_submission, folder,
                            f"{record.run_id}_{entry.head}_{entry.score.value:.4f}", competition.task)
    SubmissionInfo(source="run", source_id=record.run_id, source_dir=str(record.run_dir.resolve()), model=entry.name,
                   score=entry.score, data_fingerprint=record.data_fingerprint, optimistic=entry.optimistic,
                   random_weights=record.random_weights, description=entry.recipe).save(path)
    return path, frame


def chosen_model(config: RunConfig, record: RunRecord) -> ModelRecord:
    """--submit-model's model, or the run's best by the competition's metric."""
    if config.submit_model:
        return record.model(config.submit_model.rpartition("__")[2])
    return record.models[best_index([m.score for m in record.models])]


def _write_chosen_submission(config: RunConfig, record: RunRecord, competition: Competition,
                             frames: dict | None = None) -> Path:
    """The chosen model's submission, also at exactly --submission-file (what Kaggle's grader reads)."""
    entry = chosen_model(config, record)
    if frames is not None and entry.name in frames:
        frame = frames[entry.name]
    else:
        preds = record.predictions(entry.name)
        frame = build_submission(record.task, preds.test_mean, preds.test_decision, record.test_ids,
                                 competition.sample_submission)
    return write_submission_file(frame, competition.sample_submission, config.submission_file, record.task)
