"""The Kaggle image competitions kaggle_tl knows by slug: their task, metric and decision settings.

``--competition SLUG`` fills in what a user would otherwise pass as ``--task``, ``--metric``,
``--top-k``, ``--catch-all`` or a value range; what the user sets keeps precedence, and the
folders, label files and columns are found in the folder as for any competition (but a label column that no
name there points to: ``LABEL_COLUMNS``). The metrics
are each competition's own grader (MLE-bench's ``grade.py``, docs/dev/competition-layouts.md);
an unknown slug is detected like a folder without one, with a note.
"""
from __future__ import annotations

import dataclasses

from kaggle_tl.tasks.detect import TaskSettings

KNOWN: dict[str, TaskSettings] = {
    # one probability column per class, log loss
    "dog-breed-identification": TaskSettings(task="multiclass", metric="log_loss"),
    "leaf-classification": TaskSettings(task="multiclass", metric="log_loss"),
    # one label a row
    "cassava-leaf-disease-classification": TaskSettings(task="multiclass", metric="accuracy"),
    "paddy-disease-classification": TaskSettings(task="multiclass", metric="accuracy"),
    "plant-seedlings-classification": TaskSettings(task="multiclass", metric="micro_f1"),
    "herbarium-2020-fgvc7": TaskSettings(task="multiclass", metric="macro_f1"),
    "herbarium-2021-fgvc8": TaskSettings(task="multiclass", metric="macro_f1"),
    "herbarium-2022-fgvc9": TaskSettings(task="multiclass", metric="macro_f1"),
    "iwildcam-2019-fgvc6": TaskSettings(task="multiclass", metric="macro_f1"),
    "iwildcam-2020-fgvc7": TaskSettings(task="multiclass", metric="accuracy"),
    "cdiscount-image-classification-challenge": TaskSettings(task="multiclass", metric="accuracy"),
    "inaturalist-2019-fgvc6": TaskSettings(task="multiclass", metric="error"),  # top-1 error, lower is better
    # binary: P(positive)
    "aerial-cactus-identification": TaskSettings(task="binary", metric="roc_auc"),
    "histopathologic-cancer-detection": TaskSettings(task="binary", metric="roc_auc"),
    "dogs-vs-cats-redux-kernels-edition": TaskSettings(task="binary", metric="log_loss", positive="dog"),
    "siim-isic-melanoma-classification": TaskSettings(task="binary", metric="roc_auc"),
    # train/<id>/{FLAIR,T1w,T1wCE,T2w}/*.dcm: scan folders (data.dicom)
    "rsna-miccai-brain-tumor-radiogenomic-classification": TaskSettings(task="binary", metric="roc_auc"),
    "invasive-species-monitoring": TaskSettings(task="binary", metric="roc_auc"),
    "seti-breakthrough-listen": TaskSettings(task="binary", metric="roc_auc"),  # .npy cadences: data.arrays
    "statoil-iceberg-classifier-challenge": TaskSettings(task="binary", metric="log_loss"),  # bands in train.json.7z
    # Cover/ against JMiPOD/, JUNIWARD/, UERD/ (class folders at the top), scored by its weighted AUC
    "alaska2-image-steganalysis": TaskSettings(task="binary", metric="weighted_auc", negative="Cover"),
    # grades
    "aptos2019-blindness-detection": TaskSettings(task="ordinal", metric="qwk"),
    # a value in range
    "petfinder-pawpularity-score": TaskSettings(task="regression", metric="rmse", value_range=(1.0, 100.0)),
    # tags
    "imet-2020-fgvc7": TaskSettings(task="multilabel", metric="micro_f1"),
    "plant-pathology-2021-fgvc8": TaskSettings(task="multilabel", metric="micro_f1"),
    "planet-understanding-the-amazon-from-space": TaskSettings(task="multilabel", metric="f2_samples"),
    "ranzcr-clip-catheter-line-classification": TaskSettings(task="multilabel", metric="roc_auc"),
    "plant-pathology-2020-fgvc7": TaskSettings(metric="roc_auc"),  # one-hot columns: classes, scored per column
    # the top k labels, best first
    "whale-categorization-playground": TaskSettings(task="topk", metric="map@5", top_k=5, catch_all="new_whale"),
    "hotel-id-2021-fgvc8": TaskSettings(task="topk", metric="map@5", top_k=5),
}

# Label columns that neither the sample nor the labels' own columns name (the sample's "Category" is train.csv's
# "category_id"): filled in for --competition SLUG where the user's --label-column is not given.
LABEL_COLUMNS: dict[str, str] = {
    "iwildcam-2019-fgvc6": "category_id",
}


def competition_label_column(slug: str | None, given: str) -> str:
    """``given`` (the user's --label-column), else the known competition's label column, else "" (found)."""
    return given or LABEL_COLUMNS.get(slug or "", "")


def competition_settings(slug: str | None, given: TaskSettings) -> tuple[TaskSettings, str | None]:
    """``given`` (the user's settings) completed from the known competition ``slug``, and a note when the slug is
    not one kaggle_tl knows (its task and metric are then read from the files)."""
    if not slug:
        return given, None
    known = KNOWN.get(slug)
    if known is None:
        return given, (f"competition {slug!r} is not one kaggle_tl knows (kaggle_tl.tasks.competitions): its task "
                       "and metric are read from its files; --task and --metric set them")
    filled = {f.name: getattr(given, f.name) or getattr(known, f.name) for f in dataclasses.fields(TaskSettings)}
    return TaskSettings(**filled), None
