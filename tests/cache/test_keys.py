"""Every cache entry carries the key it was written for, and its NaN rows are only undecodable images.

Each test writes real entries with the cache's own code, then tampers with them as a stranger's
--cache-from layer (or bit rot in the local cache) might: folders or files swapped, a stored key
edited or missing, NaN put into an array with its checksum made to match. The entry is named on
one line and recomputed (or passed over), and the result equals a clean computation.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import make_competition, random_pngs
from kaggle_tl.cache.store import Cache, array_digest, cache_key
from kaggle_tl.config import RunConfig
from kaggle_tl.features import BackboneRef, extract_features, feature_key

N_IMAGES, CHUNK, DIM = 12, 8, 6
REF = BackboneRef("fake", "none", 16, DIM)
VIEWS = ["original", "hflip"]


class FakeBackbone:
    """Deterministic pixel statistics; counts the images it sees."""

    def __init__(self):
        self.images_seen = 0

    def features(self, images: np.ndarray) -> np.ndarray:
        self.images_seen += len(images)
        x = images.astype(np.float32)
        return np.concatenate([x.mean(axis=(1, 2)), x[:, 0, 0, :]], axis=1)


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory) -> list[Path]:
    return random_pngs(tmp_path_factory.mktemp("images"), N_IMAGES)


def extract(paths, cache: Cache):
    backbone = FakeBackbone()
    out = extract_features(paths, "images-key", [REF], VIEWS, cache, lambda refs: {"fake": backbone},
                           batch_size=4, threads=2, chunk_rows=CHUNK)
    return {view: np.array(out.arrays["fake", view]) for view in VIEWS}, backbone, out


@pytest.fixture(scope="module")
def reference(image_paths, tmp_path_factory) -> dict[str, np.ndarray]:
    return extract(image_paths, Cache(tmp_path_factory.mktemp("reference")))[0]


def folder_of(cache_dir: Path, view: str) -> Path:
    return cache_dir / "features" / feature_key("images-key", REF, view)


def swap(a: Path, b: Path) -> None:
    a.rename(a.with_name("swapping"))
    b.rename(a)
    a.with_name("swapping").rename(b)


def edit_meta(folder: Path, change) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    change(meta)
    (folder / "meta.json").write_text(json.dumps(meta))


def put_nan(folder: Path, row: int, fix_checksum: bool = True, listed: bool = False) -> None:
    """NaN into one row of a complete entry, its checksum (and, with ``listed``, its undecodable rows) made to match."""
    array = np.load(folder / "features.npy")
    array[row] = np.nan
    np.save(folder / "features.npy", array)

    def change(meta):
        if fix_checksum:
            meta["sha1"] = array_digest(array)
        if listed:
            meta["bad_rows"][str(row)] = "not a decodable image"
    edit_meta(folder, change)


def assert_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    for view in VIEWS:
        np.testing.assert_array_equal(got[view], want[view])


# -- feature entries --------------------------------------------------------------------------------
def test_an_entry_stores_its_key_and_what_it_was_made_from(image_paths, tmp_path):
    extract(image_paths, Cache(tmp_path))
    key = feature_key("images-key", REF, "hflip")
    meta = json.loads((tmp_path / "features" / key / "meta.json").read_text())
    assert meta["key"] == key and cache_key(**meta["key_parts"]) == key
    assert meta["key_parts"]["view"] == "hflip" and meta["bad_rows"] == {}


def test_two_views_swapped_inside_a_layer_are_named_and_recomputed(reference, image_paths, tmp_path, caplog):
    layer = tmp_path / "layer"
    extract(image_paths, Cache(layer))
    original, hflip = folder_of(layer, "original"), folder_of(layer, "hflip")
    swap(original, hflip)  # each folder now holds the other view's features, intact
    got, backbone, out = extract(image_paths, Cache(tmp_path / "cache", read_only=[layer]))
    assert_equal(got, reference)
    assert backbone.images_seen == 2 * N_IMAGES and set(out.sources.values()) == {"computed"}
    for folder, view in ((original, "original"), (hflip, "hflip")):
        other = "hflip" if view == "original" else "original"
        assert (f"damaged entry {folder}: made for key {feature_key('images-key', REF, other)}, asked for "
                f"{folder.name} (they differ in view); recomputed") in caplog.text
        assert (folder / "features.npy").is_file()  # a read-only layer is left as it is


def test_two_views_swapped_in_the_local_cache_are_recomputed(reference, image_paths, tmp_path, caplog):
    extract(image_paths, Cache(tmp_path))
    swap(folder_of(tmp_path, "original"), folder_of(tmp_path, "hflip"))
    got, backbone, _ = extract(image_paths, Cache(tmp_path))
    assert_equal(got, reference)
    assert backbone.images_seen == 2 * N_IMAGES and caplog.text.count("damaged entry") == 2
    again, backbone, _ = extract(image_paths, Cache(tmp_path))  # recomputed under the right keys
    assert_equal(again, reference)
    assert backbone.images_seen == 0


@pytest.mark.parametrize("change, message", [
    (lambda meta: meta.update(key="0123456789abcdef0123"), "made for key 0123456789abcdef0123, asked for"),
    (lambda meta: meta["key_parts"].update(view="hflip"), "is not what its stored parts hash to (edited)"),
    (lambda meta: [meta.pop("key"), meta.pop("key_parts")], "no stored key (an older kaggle_tl's entry"),
    (lambda meta: meta.pop("bad_rows"), "no list of its undecodable images"),
], ids=["another-key", "edited-parts", "no-key", "no-bad-rows"])
def test_an_edited_or_missing_stored_key_is_recomputed(change, message, reference, image_paths, tmp_path, caplog):
    extract(image_paths, Cache(tmp_path))
    folder = folder_of(tmp_path, "original")
    edit_meta(folder, change)
    got, backbone, _ = extract(image_paths, Cache(tmp_path))
    assert_equal(got, reference)
    assert backbone.images_seen == N_IMAGES  # the one entry: its view is computed again
    (line,) = [r.getMessage() for r in caplog.records if "damaged entry" in r.getMessage()]
    assert line.startswith(f"damaged entry {folder}: ") and message in line and line.endswith("; recomputed")


@pytest.mark.parametrize("in_layer", [False, True])
def test_a_nan_row_in_a_cached_entry_is_the_entrys_not_the_images(in_layer, reference, image_paths, tmp_path,
                                                                 caplog):
    source = tmp_path / ("layer" if in_layer else "cache")
    extract(image_paths, Cache(source))
    folder = folder_of(source, "hflip")
    put_nan(folder, 3)  # a checksum that matches: only the rows it lists as undecodable can tell
    cache = Cache(tmp_path / "cache", read_only=[source] if in_layer else [])
    got, _, out = extract(image_paths, cache)
    assert_equal(got, reference)
    assert out.bad_rows == {}  # no image is blamed
    assert (f"damaged entry {folder}: row 3 NaN or infinite, which no undecodable image explains (they are the "
            "entry's damage, not the images'); recomputed") in caplog.text
    assert "could not be decoded" not in caplog.text


def test_a_nan_row_with_a_stale_checksum_is_recomputed(reference, image_paths, tmp_path, caplog):
    extract(image_paths, Cache(tmp_path))
    put_nan(folder_of(tmp_path, "original"), 5, fix_checksum=False)
    got, _, out = extract(image_paths, Cache(tmp_path))
    assert_equal(got, reference)
    assert out.bad_rows == {} and "checksum mismatch; recomputing" in caplog.text


def test_an_image_listed_as_undecodable_that_decodes_is_the_entrys_damage(reference, image_paths, tmp_path, caplog):
    layer = tmp_path / "layer"
    extract(image_paths, Cache(layer))
    folder = folder_of(layer, "original")
    put_nan(folder, 4, listed=True)  # NaN, listed, checksum matching: as a crafted layer would be
    got, _, out = extract(image_paths, Cache(tmp_path / "cache", read_only=[layer]))
    assert_equal(got, reference)
    assert out.bad_rows == {}
    assert (f"damaged entry {folder}: row 4 is NaN as an undecodable image, but {image_paths[4]} decodes; "
            "recomputed") in caplog.text


def test_an_undecodable_image_read_from_a_layer_is_the_images(image_paths, tmp_path, caplog):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 garbage \xff\xda more garbage \xff\xd9")  # passes the scan
    paths = [*image_paths[:2], broken, *image_paths[2:]]
    layer = tmp_path / "layer"
    first, _, out = extract(paths, Cache(layer))
    assert list(out.bad_rows) == [2]
    meta = json.loads((folder_of(layer, "original") / "meta.json").read_text())
    assert meta["bad_rows"] == {"2": "not a decodable image"}  # what the decoder said
    caplog.clear()
    got, backbone, out = extract(paths, Cache(tmp_path / "cache", read_only=[layer]))
    assert backbone.images_seen == 0 and list(out.bad_rows) == [2]  # read from the layer, still the image's
    assert "damaged entry" not in caplog.text
    assert_equal(got, first)


# -- predictions and fits: one .npz file and its <key>.json --------------------------------------------
def npz(value: float) -> bytes:
    from kaggle_tl.files import npz_bytes

    return npz_bytes({"oof": np.full((3, 2), value, np.float32)})


@pytest.fixture
def two_entries(tmp_path) -> tuple[Cache, str, str]:
    cache = Cache(tmp_path / "cache")
    c1, c2 = cache_key(head="logreg", C=0.01), cache_key(head="logreg", C=1.0)
    cache.write_file("fits", c1, npz(1.0))
    cache.write_file("fits", c2, npz(2.0))
    return cache, c1, c2


def test_a_file_entry_is_found_with_its_key(two_entries):
    cache, c1, c2 = two_entries
    path = cache.find_files("fits", c1)[0]
    stamp = json.loads(path.with_suffix(".json").read_text())
    assert stamp["key"] == c1 and stamp["key_parts"] == {"head": "logreg", "C": 0.01}
    assert cache.source(path) == "cache" and cache.find_files("fits", c2) == [cache.file_path("fits", c2)]


def test_a_file_entry_copied_under_another_key_is_not_used(two_entries, caplog):
    cache, c1, c2 = two_entries
    shutil.copyfile(cache.file_path("fits", c1), cache.file_path("fits", c2))  # a run with another C's fits
    assert cache.find_files("fits", c2) == []
    assert (f"damaged entry {cache.file_path('fits', c2)}: its content is not what was written under key {c2} "
            "(checksum mismatch: copied or swapped); not used") in caplog.text
    cache.write_file("fits", c2, npz(2.0))  # what the caller then does: recompute and write it again
    assert cache.find_files("fits", c2) == [cache.file_path("fits", c2)]


def test_file_entries_swapped_with_their_key_files_are_not_used(two_entries, caplog):
    cache, c1, c2 = two_entries
    for suffix in (".npz", ".json"):
        swap(cache.file_path("fits", c1).with_suffix(suffix), cache.file_path("fits", c2).with_suffix(suffix))
    assert cache.find_files("fits", c1) == [] and cache.find_files("fits", c2) == []
    assert (f"damaged entry {cache.file_path('fits', c1)}: made for key {c2}, asked for {c1} (they differ in C); "
            "not used") in caplog.text


@pytest.mark.parametrize("damage, message", [
    (lambda json_file: json_file.unlink(), "no stored key"),
    (lambda json_file: json_file.write_text("{half"), "is unreadable (JSONDecodeError"),
    (lambda json_file: json_file.write_text(json_file.read_text().replace('"key": "', '"key": "f')),
     "made for key f"),
], ids=["no-key-file", "unreadable", "edited-key"])
def test_a_file_entry_without_a_provable_key_is_not_used(damage, message, two_entries, caplog):
    cache, c1, _ = two_entries
    damage(cache.file_path("fits", c1).with_suffix(".json"))
    assert cache.find_files("fits", c1) == []
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"damaged entry {cache.file_path('fits', c1)}: ") and message in line


def test_a_layers_file_entry_is_checked_exported_with_its_key_and_removed_with_it(two_entries, tmp_path, caplog):
    cache, c1, c2 = two_entries
    layer = tmp_path / "layer"
    cache.export({"fits": [c1, c2]}, layer)
    assert sorted(p.name for p in (layer / "fits").iterdir()) == sorted([f"{c1}.json", f"{c1}.npz", f"{c2}.json",
                                                                         f"{c2}.npz"])
    reader = Cache(tmp_path / "fresh", read_only=[layer])
    assert reader.find_files("fits", c1) == [layer / "fits" / f"{c1}.npz"]
    assert reader.source(reader.find_files("fits", c1)[0]) == str(layer)
    shutil.copyfile(layer / "fits" / f"{c1}.npz", layer / "fits" / f"{c2}.npz")
    assert reader.find_files("fits", c2) == [] and "damaged entry" in caplog.text
    (entry,) = [e for e in cache.entries() if e.key == c1]
    assert entry.size > cache.file_path("fits", c1).stat().st_size  # the key file counts
    entry.remove()
    assert sorted(p.name for p in (cache.root / "fits").iterdir()) == [f"{c2}.json", f"{c2}.npz"]


def test_a_run_never_serves_another_runs_fits_copied_under_its_key(tmp_path, monkeypatch, caplog):
    # The case: fold models (and predictions) of a run with another C, copied under this run's keys.
    from kaggle_tl.pipeline import run

    monkeypatch.setattr("kaggle_tl.pipeline.plot_model", lambda *args, **kwargs: {}, raising=False)
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=3)
    config = RunConfig(data=str(comp), cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"),
                       submissions_dir=str(tmp_path / "subs"), backbones=("mobilenet_v2",), weights="none",
                       image_size=32, views=("original",), folds=2, heads=("logreg",))
    other = run(config.replace(head_params={"logreg": {"C": 0.001}}))
    mine = run(config.replace(head_params={"logreg": {"C": 10.0}}))
    assert other.models[0].score != mine.models[0].score
    cache = Cache(config.cache_dir)
    for kind in ("fits", "predictions"):
        (source,), (target,) = other.cache_entries[kind], mine.cache_entries[kind]
        for suffix in (".npz", ".json"):
            shutil.copyfile(cache.file_path(kind, source).with_suffix(suffix),
                            cache.file_path(kind, target).with_suffix(suffix))
    again = run(config.replace(head_params={"logreg": {"C": 10.0}}), new_run=True)
    assert again.models[0].score == mine.models[0].score  # refitted, not the other run's models
    assert again.cache_entries["predictions"] == {target: "computed"}
    (line,) = [r.getMessage() for r in caplog.records if "damaged entry" in r.getMessage() and "predictions" in
               r.getMessage()]
    assert line.startswith(f"damaged entry {cache.file_path('predictions', target)}: made for key {source}")
