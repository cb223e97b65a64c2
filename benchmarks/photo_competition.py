#!/usr/bin/env python
"""A competition of real, non-square photos: the 1,000 ImageNet sample photos in 4 coarse classes.

The photos are the public repository EliSchwartz/imagenet-sample-images (one photo per ImageNet
class, named ``n01440764_tench.JPEG``...), fetched by hand; nothing of them is committed. Sorted
by WordNet id they are in ImageNet class-index order, which groups them coarsely:
0-150 fish, birds, amphibians, reptiles, invertebrates; 151-268 dogs; 269-397 other animals;
398-999 objects, food, scenes, plants. Every photo is a training image (linked, not copied); the
test set is the first 10 photos again (only the CV score is read from this competition).

    python benchmarks/photo_competition.py --photos /path/to/imagenet-sample-images --out /tmp/photos
    python benchmarks/photo_competition.py --photos ... --out /tmp/photo_grades --grades   # APTOS-like grades

``--grades``: the coarse classes as grades 0-3 in that order, in aptos2019-blindness-detection's layout
(train.csv id_code,diagnosis; sample id_code,diagnosis), for the ordinal heads on real photos.
    python benchmarks/quality.py --data /tmp/photos --variants stages3_auto,stages3_crop,stages3_squash \\
        --reference stages3_auto
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

COARSE = ((150, "sea_birds_reptiles"), (268, "dogs"), (397, "other_animals"), (999, "objects_scenes"))


def coarse_class(index: int) -> str:
    return next(name for last, name in COARSE if index <= last)


def main(argv=None) -> int:
    import pandas as pd

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", required=True, help="folder of the 1,000 <wnid>_<name>.JPEG photos")
    p.add_argument("--out", required=True, help="the competition folder to write (created)")
    p.add_argument("--grades", action="store_true", help="the coarse classes as grades 0-3, APTOS's layout")
    args = p.parse_args(argv)
    photos = sorted(Path(args.photos).glob("n*.JPEG"))
    if len(photos) != 1000:
        sys.exit(f"{args.photos}: expected the 1,000 ImageNet sample photos (n<wnid>_<name>.JPEG), found {len(photos)}")
    out = Path(args.out)
    for split in ("train", "test"):
        (out / split).mkdir(parents=True, exist_ok=False)
    ids = [f"{i:04d}" for i in range(len(photos))]
    for image_id, photo in zip(ids, photos):
        (out / "train" / f"{image_id}.jpg").symlink_to(photo.resolve())
    for image_id, photo in zip(ids[:10], photos[:10]):
        (out / "test" / f"t{image_id}.jpg").symlink_to(photo.resolve())
    if args.grades:
        grade = {name: k for k, (_, name) in enumerate(COARSE)}
        pd.DataFrame({"id_code": ids, "diagnosis": [grade[coarse_class(i)] for i in range(len(ids))]}).to_csv(
            out / "train.csv", index=False)
        pd.DataFrame({"id_code": [f"t{i}" for i in ids[:10]], "diagnosis": 0}).to_csv(out / "sample_submission.csv",
                                                                                     index=False)
        print(f"{out}: {len(ids)} training photos in grades 0-{len(COARSE) - 1}, 10 test photos")
        return 0
    pd.DataFrame({"id": ids, "label": [coarse_class(i) for i in range(len(ids))]}).to_csv(out / "labels.csv", index=False)
    classes = sorted(name for _, name in COARSE)
    pd.DataFrame({"id": [f"t{i}" for i in ids[:10]], **{c: 0.25 for c in classes}}).to_csv(
        out / "sample_submission.csv", index=False)
    print(f"{out}: {len(ids)} training photos in {len(classes)} classes, 10 test photos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
