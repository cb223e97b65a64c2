#!/usr/bin/env python
"""Feature quality: 5-fold CV log loss / accuracy of backbone sets, resize policies and their ensemble.

For a competition folder, each resize policy and each backbone set ("a+b" concatenates features),
features are extracted with kaggle_tl (``backbone_identity`` + ``extract_features``, cached under
``--cache``), then the logreg head (``create_head("logreg")``) is scored by 5-fold CV exactly as a
run scores it (``kaggle_tl.cv.cross_validate``: one head per view, OOF probabilities averaged over
views, ``kaggle_tl.metrics.score``). "mean of sets" averages the sets' OOF
probabilities. s/img: extraction wall time per image (all views, model build included), summed
over a set's backbones (each backbone once for "mean of sets"), recorded when the features were
computed (a later run reads them from the cache and reuses that time).

    python benchmarks/quality.py --data data/cifar10-small --limit 2000
    python benchmarks/quality.py --data /tmp/demo --resize squash,crop,pad --logreg-c 0.2
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import _common as common

DEFAULT_SETS = ("efficientnet_lite0,efficientnet_lite1,efficientnet_lite2,"
                "efficientnet_lite0+efficientnet_lite1+efficientnet_lite2")


def parse_args(argv=None) -> argparse.Namespace:
    from kaggle_tl.images import DEFAULT_RESIZE

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="competition folder (Kaggle layout)")
    p.add_argument("--sets", default=DEFAULT_SETS, help="comma-separated backbone sets; '+' concatenates "
                                                        "(default: %(default)s)")
    p.add_argument("--resize", default=DEFAULT_RESIZE,
                   help="comma-separated resize policies: squash, crop, pad (default: kaggle_tl's, %(default)s)")
    p.add_argument("--views", default="original", help="comma-separated views (default: %(default)s)")
    p.add_argument("--weights", default="imagenet", help="imagenet | none | file | folder (default: %(default)s)")
    p.add_argument("--limit", type=int, help="use this many training images (classes balanced)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--logreg-c", type=float, default=0.005, help="the logreg head's C (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=4, help="decode threads")
    p.add_argument("--cache", default=str(common.BENCH_DIR / "quality-cache"), help="feature cache folder")
    p.add_argument("--json", help="also write the results to this JSON file")
    return p.parse_args(argv)


def extract(paths, image_key: str, ref, views, cache_dir: Path, weights: str, args) -> tuple[dict, float | None]:
    """{view: (N, dim)} for one backbone, and its extraction seconds per image (None if unknown)."""
    from kaggle_tl.cache import FeatureCache
    from kaggle_tl.features import BackboneBuilder, extract_features, feature_key

    timings_path = cache_dir / "quality-timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    key = "|".join(feature_key(image_key, ref, v) for v in views)
    built = []

    def build(refs):  # kaggle_tl's builder, noting that the features were computed now
        built.append(True)
        return BackboneBuilder(weights)(refs)

    start = time.perf_counter()
    features = extract_features(paths, image_key, [ref], views, FeatureCache(cache_dir), build,
                                batch_size=args.batch_size, threads=args.threads, desc=ref.name)
    if built:  # computed now (model build included: it is part of what a user waits for)
        timings[key] = (time.perf_counter() - start) / len(paths)
        timings_path.write_text(json.dumps(timings, indent=1))
    return {view: features[(ref.name, view)] for view in views}, timings.get(key)


def cv_proba(features_by_view: dict, y, folds, n_classes: int, c: float, seed: int):
    """View-averaged OOF probabilities of the logreg head, fitted as a run fits it."""
    import numpy as np

    from kaggle_tl.cv import cross_validate
    from kaggle_tl.heads import create_head

    train = {v: np.asarray(x) for v, x in features_by_view.items()}
    test = {v: x[:1] for v, x in train.items()}  # only the OOF rows are scored; one row keeps the shapes
    return cross_validate(create_head("logreg", random_state=seed, C=c), train, test, y, folds, n_classes).oof_mean


def scores(proba, y) -> dict[str, float]:
    from kaggle_tl.metrics import score

    result = score(y, proba)
    return {"cv_logloss": result["logloss"], "cv_accuracy": result["accuracy"]}


def main(argv=None) -> int:
    args = parse_args(argv)
    common.quiet_logs()
    import numpy as np

    from kaggle_tl.backbones import backbone_identity
    from kaggle_tl.competition import image_set_key, read_competition
    from kaggle_tl.config import RunConfig
    from kaggle_tl.cv import make_folds

    root = common.subset_competition(Path(args.data), args.limit, 1) if args.limit else Path(args.data)
    competition = read_competition(RunConfig(data=str(root)))
    paths, y = competition.train_paths, competition.y
    folds = make_folds(y, args.folds, args.seed)
    views = [v.strip() for v in args.views.split(",") if v.strip()]
    sets = [[b.strip() for b in s.split("+")] for s in args.sets.split(",") if s.strip()]
    cache_dir = Path(args.cache)
    cache_dir.mkdir(parents=True, exist_ok=True)
    image_key = image_set_key(paths)
    machine = {**common.machine_info(), **common.code_version()}
    print(common.describe_machine(machine))
    print(common.load_line())
    print(f"data: {root} ({len(paths)} training images, {competition.n_classes} classes); views {views}; "
          f"logreg C={args.logreg_c}; {args.folds}-fold CV, seed {args.seed}")

    rows = []
    for resize in [r.strip() for r in args.resize.split(",") if r.strip()]:
        per_backbone, oof = {}, []
        for name in dict.fromkeys(b for s in sets for b in s):
            ref = backbone_identity(name, args.weights, None, resize)
            per_backbone[name] = extract(paths, image_key, ref, views, cache_dir, args.weights, args)
            print(f"  {resize} {name}: features ready ({common.load_line()})", flush=True)
        for backbone_set in sets:
            by_view = {v: np.concatenate([per_backbone[b][0][v] for b in backbone_set], axis=1) for v in views}
            proba = cv_proba(by_view, y, folds, competition.n_classes, args.logreg_c, args.seed)
            oof.append(proba)
            times = [per_backbone[b][1] for b in backbone_set]
            rows.append({"resize": resize, "set": "+".join(backbone_set), **scores(proba, y),
                         "s_per_image": None if None in times else sum(times)})
        if len(sets) > 1:
            times = [t for _, t in per_backbone.values()]  # each backbone extracted once for all sets
            rows.append({"resize": resize, "set": "mean of sets", **scores(np.mean(oof, axis=0), y),
                         "s_per_image": None if None in times else sum(times)})
    print_markdown(rows, views)
    print(common.load_line())
    common.write_json(args.json, {"benchmark": "quality", "args": vars(args), "machine": machine, "rows": rows})
    return 0


def print_markdown(rows: list[dict], views: list[str]) -> None:
    print(f"\n| resize | backbones | CV log loss | CV accuracy | extraction s/img ({'+'.join(views)}) |")
    print("|---|---|---|---|---|")
    for r in rows:
        seconds = "?" if r["s_per_image"] is None else f"{r['s_per_image']:.4f}"
        print(f"| {r['resize']} | {r['set']} | {r['cv_logloss']:.4f} | {r['cv_accuracy']:.4f} | {seconds} |")


if __name__ == "__main__":
    sys.exit(main())
