#!/usr/bin/env python
"""Feature and head quality: kaggle_tl runs that differ in one lever, scored against each other row by row.

Every variant is one real run (``kaggle_tl.run``): the same competition, backbones, views and
folds, a shared feature cache (so a variant re-extracts only what it adds: another stage's
output, another resize), one head. Reported per variant: CV log loss and accuracy with their
standard errors, the paired log-loss difference (same rows, same folds) from the reference
variant and from the best one, each with its standard error, the head's fit time (all folds x
views, "cached" when a run read it from the cache), and what ``C = "auto"`` chose (median over
fits). A difference within 2 standard errors is noise.

    python benchmarks/quality.py --data ../shared/datasets/cifar10-small.tar.gz
    python benchmarks/quality.py --data ../shared/datasets/cifar10-small.tar.gz \\
        --backbones efficientnet_lite0+efficientnet_lite1+efficientnet_lite2 --variants before,stages2_c,stages2_auto
    python benchmarks/quality.py --variants before,stages2_auto,dense_before,dense_sqrt    # the embedded demo
    python benchmarks/quality.py --data /tmp/photos --variants stages3_auto,stages3_crop,stages3_squash \
        --reference stages3_auto      # real photos: benchmarks/photo_competition.py makes /tmp/photos
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import _common as common

# name -> (head, head parameters, other RunConfig settings). "before" is the previous round's
# default logreg (standardised features, C=0.005, the last stage only).
VARIANTS = {
    "before": ("logreg", {"transform": "standard", "C": 0.005}, {"stages": 1}),
    "sqrt_c": ("logreg", {"transform": "sqrt,standard", "C": 0.005}, {"stages": 1}),
    "sqrt_auto": ("logreg", {"transform": "sqrt,standard", "C": "auto"}, {"stages": 1}),
    "stages2_c": ("logreg", {"transform": "sqrt,standard", "C": 0.005}, {"stages": 2}),
    "stages2_auto": ("logreg", {"transform": "sqrt,standard", "C": "auto"}, {"stages": 2}),
    "stages3_c": ("logreg", {"transform": "sqrt,standard", "C": 0.005}, {"stages": 3}),
    "stages3_auto": ("logreg", {"transform": "sqrt,standard", "C": "auto"}, {"stages": 3}),
    "stages3_auto_280": ("logreg", {"transform": "sqrt,standard", "C": "auto"}, {"stages": 3, "image_size": 280}),
    "stages2_crop": ("logreg", {"transform": "sqrt,standard", "C": "auto"}, {"stages": 2, "resize": "crop"}),
    "stages3_crop": ("logreg", {"transform": "sqrt,standard", "C": "auto"}, {"stages": 3, "resize": "crop"}),
    "stages3_squash": ("logreg", {"transform": "sqrt,standard", "C": "auto"}, {"stages": 3, "resize": "squash"}),
    "svm_before": ("svm", {"transform": "standard", "C": 0.001}, {"stages": 1}),
    "svm_stages2": ("svm", {"transform": "sqrt,standard", "C": 0.001}, {"stages": 2}),
    "svm_stages2_auto": ("svm", {"transform": "sqrt,standard", "C": "auto"}, {"stages": 2}),
    "svm_stages3": ("svm", {"transform": "sqrt,standard", "C": 0.001}, {"stages": 3}),
    "dense_before": ("dense", {"transform": "none"}, {"stages": 1}),
    "dense_stages2": ("dense", {"transform": "none"}, {"stages": 2}),
    "dense_sqrt": ("dense", {"transform": "sqrt"}, {"stages": 2}),
    "dense_sqrt_std": ("dense", {"transform": "sqrt,standard"}, {"stages": 2}),
    "dense_stages3": ("dense", {"transform": "none"}, {"stages": 3}),
    "dense_stages3_l2auto": ("dense", {"transform": "none", "l2": "auto"}, {"stages": 3}),
    "dense_stages3_sqrt": ("dense", {"transform": "sqrt"}, {"stages": 3}),
    # the same models on OpenVINO's bf16 (opt-in: does it cost CV score?)
    "before_bf16": ("logreg", {"transform": "standard", "C": 0.005}, {"stages": 1, "precision": "bf16"}),
    "stages2_auto_bf16": ("logreg", {"transform": "sqrt,standard", "C": "auto"}, {"stages": 2, "precision": "bf16"}),
    "dense_sqrt_bf16": ("dense", {"transform": "sqrt"}, {"stages": 2, "precision": "bf16"}),
    "stages3_auto_bf16": ("logreg", {"transform": "sqrt,standard", "C": "auto"}, {"stages": 3, "precision": "bf16"}),
    "dense_stages3_sqrt_bf16": ("dense", {"transform": "sqrt"}, {"stages": 3, "precision": "bf16"}),
}
DEFAULT_VARIANTS = "stages3_auto,before,sqrt_c,sqrt_auto,stages2_c,stages2_auto,stages3_c,dense_before,dense_stages3"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="competition folder or .tar.gz archive (default: the embedded demo)")
    p.add_argument("--limit", type=int, help="use this many training images (classes balanced)")
    p.add_argument("--backbones", default="efficientnet_lite0",
                   help="one backbone set, '+' between backbones (default: %(default)s)")
    p.add_argument("--variants", default=DEFAULT_VARIANTS,
                   help=f"comma-separated, run in this order; from: {', '.join(VARIANTS)}")
    p.add_argument("--reference", default="before",
                   help="the variant the others are paired against (default: %(default)s); in fp32 a run with "
                        "more stages first lets the others read its features")
    p.add_argument("--runtime", help="tensorflow | openvino (default: kaggle_tl's)")
    p.add_argument("--views", default="original,hflip")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--cache", default=str(common.BENCH_DIR / "quality-cache"), help="feature cache folder")
    p.add_argument("--json", help="also write the results to this JSON file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    common.quiet_logs()
    import numpy as np

    import kaggle_tl
    from kaggle_tl.config import RunConfig
    from kaggle_tl.tasks.metrics import paired_difference, row_logloss

    unknown = [v for v in args.variants.split(",") + [args.reference] if v not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    data = str(common.REPO / "data" / "demo")
    if not args.data:
        from kaggle_tl.data.demo import ensure_demo_competition
        ensure_demo_competition(data)
    else:
        root = common.extract_archive(args.data) if args.data.endswith(".tar.gz") else Path(args.data)
        data = str(common.subset_competition(root, args.limit, None) if args.limit else root)
    machine = {**common.machine_info(), **common.code_version()}
    print(common.describe_machine(machine))
    print(common.load_line())
    work = Path(tempfile.mkdtemp(prefix="quality-"))
    rows, probas = [], {}
    try:
        for name in args.variants.split(","):
            head, params, settings = VARIANTS[name]
            config = RunConfig(data=data, backbones=tuple(args.backbones.split("+")), heads=(head,),
                               head_params={head: params}, views=tuple(args.views.split(",")), seed=args.seed,
                               runtime=args.runtime, cache_dir=args.cache,
                               runs_dir=str(work / "runs"), submissions_dir=str(work / "submissions"),
                               **settings)
            record = kaggle_tl.run(config, new_run=True, report=lambda *_: None)
            model = record.models[0]
            preds = record.predictions(model.name)
            probas[name] = (preds.y, preds.oof_mean)
            fitted = {k: float(np.nanmedian(v)) for k, v in preds.fitted.items()}
            rows.append({"variant": name, "head": head, "params": params, "settings": settings,
                         "logloss": model.score.logloss, "logloss_se": model.score.logloss_se,
                         "accuracy": model.score.accuracy, "accuracy_se": model.score.accuracy_se,
                         "head_s": None if record.timings.get(f"head_{head}_cached") else record.timings.get(f"head_{head}_s"),
                         "fitted": fitted,
                         "n_train": len(preds.y), "data": record.competition, "runtime": record.config.runtime,
                         "precision": record.config.precision})
            print(f"  {name}: log loss {model.score.logloss:.4f} ({common.load_line()})", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    y_ref, proba_ref = probas.get(args.reference, next(iter(probas.values())))
    best = min(rows, key=lambda r: r["logloss"])["variant"]
    for row in rows:
        y, proba = probas[row["variant"]]
        if not np.array_equal(y, y_ref):
            sys.exit(f"{row['variant']}: scored on other rows than {args.reference}")
        paired, to_best = paired_difference(y, proba, proba_ref), paired_difference(y, proba, probas[best][1])
        row.update(diff=paired["diff"], diff_se=paired["diff_se"], diff_best=to_best["diff"],
                   diff_best_se=to_best["diff_se"])
    print_markdown(rows, args)
    print(common.load_line())
    common.write_json(args.json, {"benchmark": "quality", "args": vars(args), "machine": machine, "rows": rows})
    if args.json:  # every variant's per-row log loss, for paired differences between any two of them
        np.savez_compressed(Path(args.json).with_suffix(".npz"), y=y_ref,
                            **{name: row_logloss(y, proba) for name, (y, proba) in probas.items()})
    return 0


def print_markdown(rows: list[dict], args: argparse.Namespace) -> None:
    print(f"\n{rows[0]['data']}: {rows[0]['n_train']} training images; {args.backbones}; views {args.views}; "
          f"runtime {rows[0]['runtime']}; 5-fold CV, seed {args.seed}")
    print(f"\n| variant | head | settings | CV log loss | CV accuracy | vs {args.reference} (paired) | vs the best "
          "| head fit s | chose |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        settings = ", ".join([f"{k}={v}" for k, v in r["params"].items()] + [f"{k}={v}" for k, v in r["settings"].items()])
        chose = ", ".join(f"{k}~{v:.3g}" for k, v in r["fitted"].items())
        head_s = "cached" if r["head_s"] is None else f"{r['head_s']:.1f}"
        print(f"| {r['variant']} | {r['head']} | {settings} | {r['logloss']:.4f} ± {r['logloss_se']:.4f} "
              f"| {r['accuracy']:.4f} | {r['diff']:+.4f} ± {r['diff_se']:.4f} "
              f"| {r['diff_best']:+.4f} ± {r['diff_best_se']:.4f} | {head_s} | {chose} |")


if __name__ == "__main__":
    sys.exit(main())
