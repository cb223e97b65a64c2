"""Every task on one data set: cifar10-small relabelled to each task's real layout, CV against a held-out split.

    python benchmarks/tasks.py                      # cifar10-small, efficientnet_lite0, every task
    python benchmarks/tasks.py --tasks multiclass,binary --n-train 2000

The 5,000 labelled images are split once (seeded) into 80% "train" and 20% "held out" whose labels
the run never sees. Each task gets its own competition folder (symlinks to the same images, so the
features are extracted once and read from the cache by every later task), in the layout and with
the column names of a real competition of that task:

| task | like | labels | sample cell | metric |
|---|---|---|---|---|
| multiclass (probabilities) | dog-breed-identification | labels.csv id,label | one probability per class | log loss |
| multiclass (label) | cassava-leaf-disease-classification | train.csv image_id,label (ints) | the label | accuracy |
| binary | aerial-cactus-identification | train.csv id,is_animal | P(animal) | ROC AUC |
| ordinal | aptos2019-blindness-detection | train.csv id_code,diagnosis 0-4 | the grade | QWK |
| regression | petfinder-pawpularity-score | train.csv Id,Pawpularity | the value | RMSE |
| multilabel | imet-2020-fgvc7 | train.csv id,attribute_ids | tags | micro F1 |
| topk | whale-categorization-playground | train.csv Image,Id | top 5 | MAP@5 |
| side | petfinder-pawpularity-score | train.csv Id,<12 flags>,Pawpularity; test.csv Id,<12 flags> | the value | RMSE |
| side_off | the same, run with --no-tabular | | | |

"side": the value is the regression's plus 20 x Near, one of 12 photo flags written in train.csv and
test.csv (as Pawpularity ships them); Near is drawn per image (a hash of its id), so no image shows it;
Eyes is 1 for animals 90% of the time (what the image shows), the other 10 are noise. "side_off" runs
the same folder without them: what the side features add, and what noise columns cost.

The relabellings are functions of the CIFAR class (grades and values group classes, tags are
properties such as "animal", "has wheels", "flies"), so every task is learnable from the same
features. Printed per task: the run's CV score ± se, the same metric computed on the held-out
rows from the run's submission (scikit-learn, independently), log loss where there are
probabilities, and the time of the heads (features come from the cache after the first task) and
of the whole run. The multiclass run is the reference for the "≤ 1.3x" target of issue 26.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, SMALL_ARCHIVE, describe_machine, extract_archive, load_line, machine_info  # noqa: E402

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
GRADE = {"airplane": 0, "automobile": 0, "ship": 1, "truck": 1, "bird": 2, "frog": 2, "cat": 3, "dog": 3,
         "deer": 4, "horse": 4}
VALUE = {c: 5.0 + 10.0 * i for i, c in enumerate(["automobile", "truck", "ship", "airplane", "frog", "bird", "cat",
                                                   "dog", "deer", "horse"])}
TAGS = {"airplane": ["vehicle", "flies"], "automobile": ["vehicle", "wheels"], "bird": ["animal", "flies"],
        "cat": ["animal", "legs", "pet"], "deer": ["animal", "legs"], "dog": ["animal", "legs", "pet"],
        "frog": ["animal", "legs"], "horse": ["animal", "legs"], "ship": ["vehicle", "floats"],
        "truck": ["vehicle", "wheels"]}
TASKS = ("multiclass", "label", "binary", "ordinal", "regression", "multilabel", "topk", "side", "side_off")
FLAGS = ["Subject Focus", "Eyes", "Face", "Near", "Action", "Accessory", "Group", "Collage", "Human", "Occlusion",
         "Info", "Blur"]


def _flags(ids: pd.Series, labels: pd.Series) -> pd.DataFrame:
    """Pawpularity's 12 photo flags of these images: Near from a hash of the id, Eyes from the class, 10 noise."""
    import zlib

    bits = np.array([[(zlib.crc32(f"{i}/{f}".encode()) >> 7) & 1 for f in FLAGS] for i in ids], dtype=int)
    animal = labels.map(lambda c: "animal" in TAGS[c]).to_numpy()
    wrong = np.array([zlib.crc32(f"{i}/wrong".encode()) % 10 == 0 for i in ids])  # 10% of the rows
    bits[:, FLAGS.index("Eyes")] = np.where(wrong, 1 - animal, animal)
    return pd.DataFrame(bits, columns=FLAGS)


def _side_value(ids: pd.Series, labels: pd.Series) -> np.ndarray:
    return labels.map(VALUE).to_numpy() + 20.0 * _flags(ids, labels)["Near"].to_numpy()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archive", default=str(SMALL_ARCHIVE))
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, from {', '.join(TASKS)}")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--n-train", type=int, default=None, help="labelled images used (default: all)")
    p.add_argument("--out", default=str(BENCH_DIR / "tasks"), help="competition folders, cache and runs")
    p.add_argument("--heads", help="comma-separated heads for every task (default: each task's own)")
    p.add_argument("--json", help="also write the results here")
    return p.parse_args(argv)


def _write_layout(task: str, root: Path, train: pd.DataFrame, held: pd.DataFrame, images: Path) -> tuple[str, dict]:
    """The competition folder of ``task`` (symlinked images) and the settings a user would pass; the slug."""
    if root.exists():
        return _SLUGS[task], {}
    folder = {"multiclass": "train", "label": "train_images", "binary": "train", "ordinal": "train_images",
              "regression": "train", "multilabel": "train", "topk": "train", "side": "train", "side_off": "train"}[task]
    test_folder = folder.replace("train", "test")
    (root / folder).mkdir(parents=True)
    (root / test_folder).mkdir()
    for frame, sub in ((train, folder), (held, test_folder)):
        for image_id in frame["id"]:
            (root / sub / f"{image_id}.jpg").symlink_to(images / f"{image_id}.jpg")
    ids, labels, held_ids = train["id"], train["label"], held["id"]
    if task == "multiclass":
        pd.DataFrame({"id": ids, "label": labels}).to_csv(root / "labels.csv", index=False)
        sample = pd.DataFrame({"id": held_ids, **{c: 0.1 for c in CLASSES}})
    elif task == "label":
        pd.DataFrame({"image_id": ids + ".jpg", "label": labels.map(CLASSES.index)}).to_csv(root / "train.csv",
                                                                                           index=False)
        sample = pd.DataFrame({"image_id": held_ids + ".jpg", "label": 0})
    elif task == "binary":
        animal = labels.map(lambda c: int("animal" in TAGS[c]))
        pd.DataFrame({"id": ids, "is_animal": animal}).to_csv(root / "train.csv", index=False)
        sample = pd.DataFrame({"id": held_ids, "is_animal": 0.5})
    elif task == "ordinal":
        pd.DataFrame({"id_code": ids, "diagnosis": labels.map(GRADE)}).to_csv(root / "train.csv", index=False)
        pd.DataFrame({"id_code": held_ids}).to_csv(root / "test.csv", index=False)
        sample = pd.DataFrame({"id_code": held_ids, "diagnosis": 0})
    elif task == "regression":
        pd.DataFrame({"Id": ids, "Pawpularity": labels.map(VALUE)}).to_csv(root / "train.csv", index=False)
        pd.DataFrame({"Id": held_ids}).to_csv(root / "test.csv", index=False)
        sample = pd.DataFrame({"Id": held_ids, "Pawpularity": 50.0})
    elif task in ("side", "side_off"):
        value = pd.DataFrame({"Pawpularity": _side_value(ids, labels)})
        pd.concat([pd.DataFrame({"Id": ids}), _flags(ids, labels), value], axis=1).to_csv(root / "train.csv", index=False)
        pd.concat([pd.DataFrame({"Id": held_ids}), _flags(held_ids, held["label"])], axis=1).to_csv(root / "test.csv",
                                                                                                 index=False)
        sample = pd.DataFrame({"Id": held_ids, "Pawpularity": 50.0})
    elif task == "multilabel":
        pd.DataFrame({"id": ids, "attribute_ids": labels.map(lambda c: " ".join(TAGS[c]))}).to_csv(
            root / "train.csv", index=False)
        sample = pd.DataFrame({"id": held_ids, "attribute_ids": "animal legs"})
    else:
        pd.DataFrame({"Image": ids + ".jpg", "Id": labels}).to_csv(root / "train.csv", index=False)
        sample = pd.DataFrame({"Image": held_ids + ".jpg", "Id": " ".join(CLASSES[:5])})
    sample.to_csv(root / "sample_submission.csv", index=False)
    return _SLUGS[task], {}


_SLUGS = {"multiclass": "dog-breed-identification", "label": "cassava-leaf-disease-classification",
          "binary": "aerial-cactus-identification", "ordinal": "aptos2019-blindness-detection",
          "regression": None, "multilabel": "imet-2020-fgvc7", "topk": None, "side": None, "side_off": None}
_SETTINGS = {"regression": {"task": "regression", "metric": "rmse"}, "topk": {"task": "topk", "metric": "map@5"},
             "side": {"task": "regression", "metric": "rmse"},
             "side_off": {"task": "regression", "metric": "rmse", "tabular": False}}


def _held_out_score(task: str, submission: pd.DataFrame, held: pd.DataFrame) -> tuple[str, float]:
    """The task's metric of the submission on the held-out rows, computed here with scikit-learn."""
    from sklearn import metrics as skm

    truth = held.set_index("id")["label"]
    ids = submission.iloc[:, 0].astype(str).str.removesuffix(".jpg")
    labels = truth.loc[ids].to_numpy()
    cells = submission.iloc[:, 1:]
    if task == "multiclass":
        proba = cells[CLASSES].astype(float).to_numpy()
        return "log_loss", skm.log_loss([CLASSES.index(c) for c in labels], proba, labels=range(10))
    if task == "label":
        return "accuracy", skm.accuracy_score([CLASSES.index(c) for c in labels], cells["label"].astype(int))
    if task == "binary":
        return "roc_auc", skm.roc_auc_score([int("animal" in TAGS[c]) for c in labels], cells["is_animal"].astype(float))
    if task == "ordinal":
        return "qwk", skm.cohen_kappa_score([GRADE[c] for c in labels], cells["diagnosis"].astype(int),
                                            weights="quadratic")
    if task == "regression":
        return "rmse", float(np.sqrt(skm.mean_squared_error([VALUE[c] for c in labels],
                                                            cells["Pawpularity"].astype(float))))
    if task in ("side", "side_off"):
        value = _side_value(pd.Series(ids.to_numpy()), pd.Series(labels))
        return "rmse", float(np.sqrt(skm.mean_squared_error(value, cells["Pawpularity"].astype(float))))
    if task == "multilabel":
        tags = sorted({t for ts in TAGS.values() for t in ts})
        true = np.array([[t in TAGS[c] for t in tags] for c in labels])
        guess = np.array([[t in cell.split() for t in tags] for cell in cells["attribute_ids"]])
        return "micro_f1", skm.f1_score(true, guess, average="micro")
    ranked = [cell.split() for cell in cells["Id"]]
    return "map@5", float(np.mean([1 / (r.index(c) + 1) if c in r[:5] else 0 for r, c in zip(ranked, labels)]))


def main(argv=None) -> int:
    args = parse_args(argv)
    from kaggle_tl.config import RunConfig
    from kaggle_tl.pipeline import run

    source = extract_archive(args.archive)
    labels = pd.read_csv(source / "labels.csv", dtype=str)
    if args.n_train:
        labels = labels.iloc[:args.n_train]
    rng = np.random.default_rng(0)
    held_mask = rng.random(len(labels)) < 0.2
    train, held = labels[~held_mask].reset_index(drop=True), labels[held_mask].reset_index(drop=True)
    out = Path(args.out) / f"n{len(labels)}"
    info = machine_info()
    print(describe_machine(info))
    results = []
    heads = {"heads": tuple(args.heads.split(","))} if args.heads else {}
    for task in args.tasks.split(","):
        slug, _ = _write_layout(task, out / task, train, held, source / "train")
        config = RunConfig(data=str(out / task), backbones=(args.backbone,), competition=slug,
                           cache_dir=str(out / "cache"), runs_dir=str(out / "runs"),
                           submissions_dir=str(out / "submissions"), **_SETTINGS.get(task, {}), **heads)
        load_before = load_line()
        started = time.perf_counter()
        record = run(config, new_run=True, report=lambda line: None)
        total = time.perf_counter() - started
        heads_s = sum(v for k, v in record.timings.items() if k.startswith("head_") and k.endswith("_s"))
        for entry in record.models:
            submission = pd.read_csv(entry.submission, dtype=str, keep_default_na=False)
            metric, held_value = _held_out_score(task, submission, held)
            results.append({"task": task, "kind": record.task.kind, "model": entry.head, "metric": metric,
                            "cv": entry.score.value, "cv_se": entry.score.se, "held_out": held_value,
                            "cv_logloss": entry.score.logloss, "head_s": record.timings[f"head_{entry.head}_s"],
                            "heads_s": heads_s, "features_s": record.timings["features_s"], "total_s": total,
                            "load": f"{load_before} -> {load_line()}"})
            row = results[-1]
            print(f"{task:<11} {entry.head:<7} {metric:<9} CV {row['cv']:.4f} ± {row['cv_se']:.4f}  held-out "
                  f"{held_value:.4f}  log loss {row['cv_logloss']:.4f}  head {row['head_s']:.1f} s  heads "
                  f"{heads_s:.1f} s  run {total:.1f} s  ({row['load']})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
