"""Bad input through the whole pipeline and the command line: handled, or stopped with one line.

One odd competition (odd file names and ids, every handled image kind, an unlabelled image, an
extra test image, a class with no training image, an image that passes the scan but cannot be
decoded) is run three times with one model build between them; the cheaper cases stop before a
model exists and use small competitions of their own.
"""
from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import make_competition  # noqa: E402
from kaggle_tl import cli, files
from kaggle_tl.cache import store as cache
from kaggle_tl.config import RunConfig
from kaggle_tl.errors import KaggleTLError
from kaggle_tl.pipeline import run
from kaggle_tl.runs.record import RECORD_FILE, Predictions, RunRecord
from kaggle_tl.runs.submission import build_submission, write_submission
from kaggle_tl.tasks.task import Task

SMALL = dict(backbones=("mobilenet_v2",), weights="none", image_size=32, views=("original",), folds=2, heads=("logreg",))
# Renamed train and test ids: spaces, non-ASCII, commas, quotes, a would-be spreadsheet formula.
TRAIN_RENAMES = {"tr000": "café 000", "tr001": 'a,b "c" 001', "tr002": "=HYPERLINK(002)"}
TEST_RENAMES = {"te000": "te,0", "te001": 'te "1"', "te002": "tést 2"}
CORRUPT = b"\xff\xd8\xff\xe0 not really \xff\xda entropy-coded garbage \xff\xd9"  # passes the scan


def encode(path: Path, array: np.ndarray) -> None:
    ok, data = cv2.imencode(path.suffix, array)
    assert ok
    path.write_bytes(data.tobytes())


def pil_jpeg(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def rename_ids(folder: Path, renames: dict[str, str], csv: Path) -> None:
    for path in list(folder.iterdir()):
        if path.stem in renames:
            path.rename(folder / f"{renames[path.stem]}{path.suffix}")
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    frame["id"] = frame["id"].replace(renames)
    frame.to_csv(csv, index=False)


def make_odd_competition(root: Path) -> Path:
    comp = make_competition(root, n_per_class=4, n_test=3)
    train, test = comp / "train", comp / "test"
    rng = np.random.default_rng(3)
    colour = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    encode(train / "tr003.png", np.dstack([colour, np.full((40, 50), 9, np.uint8)]))  # RGBA
    (train / "tr004.jpg").write_bytes(pil_jpeg(Image.new("CMYK", (50, 40), (0, 200, 200, 0))))
    exif_image = Image.fromarray(colour)
    exif = exif_image.getexif()
    exif[0x0112] = 6
    (train / "tr005.jpg").write_bytes(pil_jpeg(exif_image, exif=exif.tobytes()))
    encode(train / "tr006.png", colour.astype(np.uint16) * 257)  # 16-bit
    encode(train / "tr007.jpg", colour[..., 0])  # grayscale
    encode(train / "tr008.jpg", colour[:1, :1])  # 1 x 1
    (train / "tr009.png").unlink()
    (train / "tr009.jpg").write_bytes(CORRUPT)
    encode(train / "stray.png", colour)  # no row in labels.csv
    encode(test / "te001.png", colour.astype(np.uint16) * 257)
    encode(test / "unlisted.png", colour)  # not in sample_submission.csv
    rename_ids(train, TRAIN_RENAMES, comp / "labels.csv")
    rename_ids(test, TEST_RENAMES, comp / "sample_submission.csv")
    sample = pd.read_csv(comp / "sample_submission.csv", dtype=str, keep_default_na=False)
    sample["yellow"] = "0"  # a class with no training image
    sample.to_csv(comp / "sample_submission.csv", index=False)
    return comp


@pytest.fixture
def no_plots(monkeypatch):
    monkeypatch.setattr("kaggle_tl.pipeline.plot_model", lambda *args, **kwargs: {}, raising=False)


def forbid_model_builds(monkeypatch) -> None:
    def no_model(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr("kaggle_tl.backbones.create_backbone", no_model)


@pytest.fixture(scope="module")
def odd_runs(tmp_path_factory):
    """One model build for four runs on the odd competition, which also has a zero-byte image:

    1. --skip-bad-train-images: builds, extracts, leaves out the zero-byte and the undecodable image;
    2. default: stops at the scan (zero-byte image), before any model;
    3. the zero-byte image and its label removed, default: the image list is run 1's, so every
       feature comes from the cache, and the undecodable image stops the run;
    4. the same with --skip-bad-train-images: finishes, still from the cache.
    """
    root = tmp_path_factory.mktemp("odd")
    comp = make_odd_competition(root / "comp")
    (comp / "train" / "tr010.jpg").write_bytes(b"")
    config = RunConfig(data=str(comp), cache_dir=str(root / "cache"), runs_dir=str(root / "runs"),
                       submissions_dir=str(root / "subs"), **SMALL)
    out = {"comp": comp}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("kaggle_tl.pipeline.plot_model", lambda *args, **kwargs: {}, raising=False)
        out["skipped_both"] = run(config.replace(skip_bad_train_images=True))
        forbid_model_builds(patch)  # from here on, a model build raises AssertionError
        with pytest.raises(KaggleTLError) as stopped:
            run(config)
        out["scan_stop"] = str(stopped.value)
        (comp / "train" / "tr010.jpg").unlink()
        labels = pd.read_csv(comp / "labels.csv", dtype=str, keep_default_na=False)
        labels[labels["id"] != "tr010"].to_csv(comp / "labels.csv", index=False)
        with pytest.raises(KaggleTLError) as stopped:
            run(config)
        out["decode_stop"] = str(stopped.value)
        # The data of run 1 once its zero-byte image was left out, so the same run: new_run computes one anew.
        out["identical"] = run(config.replace(skip_bad_train_images=True))
        out["skipped_cached"] = run(config.replace(skip_bad_train_images=True), new_run=True)
    return out


def record(result) -> RunRecord:
    return RunRecord.load(result.run_dir)  # what is on disk, not the object run() returned


def test_scan_failures_and_decode_failures_are_skipped_and_recorded(odd_runs):
    rec = record(odd_runs["skipped_both"])
    assert len(rec.train_ids) == 10
    skipped = {s["id"]: s["problem"] for s in rec.skipped_images}
    assert skipped == {"tr010": "empty file (0 bytes)", "tr009": "not a decodable image"}  # as the decoder said
    notes = " | ".join(rec.notes)
    for expected in ("1 unusable training image(s) left out", "stray", "not in sample_submission.csv: ignored",
                     "['yellow'] have no training image"):
        assert expected in notes, expected


def test_scan_stops_the_default_run_before_any_model(odd_runs):
    message = odd_runs["scan_stop"]
    assert message.startswith("1 unusable image(s) (1 in train/") and "tr010.jpg: empty file (0 bytes)" in message
    assert "\n" not in message and "--skip-bad-train-images" in message


def test_undecodable_image_stops_the_default_run_after_extraction(odd_runs):
    message = odd_runs["decode_stop"]  # no model was built: the features of run 1 were reused
    assert message.startswith("1 unusable image(s) (1 in train/") and "tr009.jpg: could not be decoded" in message


def test_skipping_again_computes_nothing(odd_runs):
    rec = record(odd_runs["skipped_cached"])
    assert len(rec.train_ids) == 10 and [s["id"] for s in rec.skipped_images] == ["tr009"]
    assert rec.skipped_images[0]["problem"] == "could not be decoded (no finite features in the cache)"
    assert rec.image_keys == record(odd_runs["skipped_both"]).image_keys


def test_the_same_settings_on_the_same_data_are_the_same_run(odd_runs):
    assert odd_runs["identical"].run_id == odd_runs["skipped_both"].run_id


def test_odd_ids_round_trip_into_the_submission(odd_runs):
    sample = pd.read_csv(odd_runs["comp"] / "sample_submission.csv", dtype=str, keep_default_na=False)
    assert set(TEST_RENAMES.values()) <= set(sample["id"])
    for result in (odd_runs["skipped_both"], odd_runs["skipped_cached"]):
        submission = pd.read_csv(result.models[0].submission, dtype=str, keep_default_na=False)
        assert submission["id"].tolist() == sample["id"].tolist()  # te,0 / te "1" / tést 2, exactly
        assert list(submission.columns) == list(sample.columns)
        values = submission.drop(columns="id").astype(float).to_numpy()
        np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-6)


def test_runs_never_share_or_overwrite_outputs(odd_runs):
    results = [odd_runs["skipped_both"], odd_runs["skipped_cached"]]
    assert results[0].run_dir != results[1].run_dir
    submissions = [Path(r.models[0].submission) for r in results]
    assert submissions[0] != submissions[1] and all(p.with_suffix(".json").is_file() for p in submissions)
    for folder in (results[0].run_dir.parent, submissions[0].parent):
        assert not [p for p in folder.rglob(".*") if p.is_file()]  # no temp file left behind
    assert all((r.run_dir / RECORD_FILE).is_file() for r in results)


# -- stops before any model exists ----------------------------------------------------------------
@pytest.fixture
def small(tmp_path, monkeypatch, no_plots):
    forbid_model_builds(monkeypatch)
    comp = make_competition(tmp_path / "comp", n_per_class=3, n_test=2)
    config = RunConfig(data=str(comp), cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"),
                       submissions_dir=str(tmp_path / "subs"), **SMALL)
    return comp, config


def test_bad_train_images_stop_before_any_model_call(small):
    comp, config = small
    (comp / "train" / "tr001.jpg").write_bytes(b"")
    (comp / "train" / "tr002.jpg").write_text("text")
    with pytest.raises(KaggleTLError, match=r"2 unusable image\(s\) \(2 in train/.*tr001.jpg: empty file.*"
                                            r"tr002.jpg: not an image"):
        run(config)
    assert not list(Path(config.cache_dir).iterdir())


def test_bad_test_image_stops_even_when_skipping(small):
    comp, config = small
    data = (comp / "test" / "te000.jpg").read_bytes()
    (comp / "test" / "te000.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(KaggleTLError, match=r"1 in test/.*te000.jpg: truncated JPEG.*every test image"):
        run(config.replace(skip_bad_train_images=True))


@pytest.mark.parametrize("folder", ["cache_dir", "runs_dir", "submissions_dir"])
def test_unwritable_output_folder_stops_before_any_work(small, tmp_path, folder):
    comp, config = small
    blocker = tmp_path / "plain_file"  # running as root, chmod cannot make a folder unwritable
    blocker.write_text("x")
    with pytest.raises(KaggleTLError, match="folder is not writable"):
        run(config.replace(**{folder: str(blocker / "sub")}))
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


# -- the command line: exit 2, one line, no traceback -------------------------------------------
def cli_run(capsys, comp: Path, tmp_path: Path, *flags: str) -> tuple[int, str]:
    argv = ["run", "--data", str(comp), "--backbones", "mobilenet_v2", "--image-size", "32", "--no-flips",
            "--folds", "2", "--heads", "logreg", "--cache-dir", str(tmp_path / "cache"),
            "--runs-dir", str(tmp_path / "runs"), "--submissions-dir", str(tmp_path / "subs"), *flags]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("kaggle-tl: error:")]
    assert len(errors) == 1, err
    return code, errors[0]


@pytest.fixture(scope="module")
def weights_comp(tmp_path_factory):
    return make_competition(tmp_path_factory.mktemp("weights") / "comp", n_per_class=2, n_test=2)


MOBILENET_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


@pytest.mark.parametrize("case", ["nonexistent", "folder-without-file", "garbage-file", "garbage-in-folder"])
def test_missing_or_unreadable_weights(case, weights_comp, tmp_path, capsys):
    folder = tmp_path / "weights"
    folder.mkdir()
    if case.startswith("garbage"):
        (folder / MOBILENET_FILE).write_bytes(b"this is not an HDF5 file" * 100)
    weights = {"nonexistent": "/nonexistent", "folder-without-file": str(folder),
               "garbage-file": str(folder / MOBILENET_FILE), "garbage-in-folder": str(folder)}[case]
    code, line = cli_run(capsys, weights_comp, tmp_path, "--weights", weights)
    assert code == 2
    expected = {"nonexistent": "/nonexistent: weights file not found",
                "folder-without-file": f"weights file not found for mobilenet_v2 in this folder (expected the file name "
                                       f"{MOBILENET_FILE})",
                "garbage-file": f"{MOBILENET_FILE}: cannot load weights for mobilenet_v2",
                "garbage-in-folder": f"{MOBILENET_FILE}: cannot load weights for mobilenet_v2"}[case]
    assert expected in line


@pytest.mark.parametrize("case", ["duplicate-id", "missing-column", "zero-byte-test-image", "sample-trailing-comma",
                                  "two-label-columns", "gif-test-image", "zero-filled-webp", "unreadable-test-folder"])
def test_cli_reports_bad_input_on_one_line(case, tmp_path, capsys, monkeypatch):
    comp = make_competition(tmp_path / "comp", n_per_class=2, n_test=2)
    labels = pd.read_csv(comp / "labels.csv", dtype=str)
    if case == "duplicate-id":
        pd.concat([labels, labels.iloc[:1]]).to_csv(comp / "labels.csv", index=False)
    elif case == "missing-column":  # the ids and nothing else: no column holds the labels
        labels[["id"]].to_csv(comp / "labels.csv", index=False)
    elif case == "zero-byte-test-image":
        (comp / "test" / "te001.png").write_bytes(b"")
    elif case == "sample-trailing-comma":
        lines = (comp / "sample_submission.csv").read_text().splitlines()
        (comp / "sample_submission.csv").write_text("\n".join(line + "," for line in lines) + "\n")
    elif case == "two-label-columns":
        pd.concat([labels, labels["label"]], axis=1).to_csv(comp / "labels.csv", index=False)  # id,label,label
    elif case == "gif-test-image":
        (comp / "test" / "te001.png").unlink()
        (comp / "test" / "te001.gif").write_bytes(b"GIF89a" + bytes(30))
    elif case == "zero-filled-webp":
        data = cv2.imencode(".webp", np.full((64, 64, 3), 90, np.uint8))[1].tobytes()
        (comp / "test" / "te001.png").unlink()
        (comp / "test" / "te001.webp").write_bytes(data[:len(data) // 2] + bytes(len(data) - len(data) // 2))
    else:
        real_scandir = os.scandir  # tests run as root, whom chmod 000 does not stop
        monkeypatch.setattr("kaggle_tl.data.folders.os.scandir", lambda path: (
            _raise(PermissionError(13, "Permission denied")) if Path(path).name == "test" else real_scandir(path)))
    code, line = cli_run(capsys, comp, tmp_path, "--weights", "none")
    assert code == 2
    assert {"duplicate-id": "labels.csv: duplicate id 'tr000' at row 8",
            "missing-column": "labels.csv: has none of the sample's target columns ['blue', 'green', 'red']; its "
                              "columns are ['id']",
            "zero-byte-test-image": "te001.png: empty file (0 bytes)",
            "sample-trailing-comma": "sample_submission.csv: empty column name at position 5 of the header",
            "two-label-columns": "labels.csv: duplicated column 'label' in the header (positions 2 and 3)",
            "gif-test-image": "te001.gif: GIF is not supported; convert to PNG/JPEG",
            "zero-filled-webp": "te001.webp: zero-filled WebP",
            "unreadable-test-folder": "test: cannot list the folder (Permission denied)"}[case] in line


def _raise(exc: Exception):
    raise exc


# -- a full disk, and the umask -------------------------------------------------------------------
def fill_disk(monkeypatch, error: int = errno.ENOSPC, room: int = 100) -> None:
    """Make kaggle_tl's temporary files fill up after ``room`` bytes, writes raising ``error`` as the kernel does."""
    class FullDiskFile(io.FileIO):
        def write(self, data) -> int:
            if self.tell() + len(data) > room:
                super().write(bytes(data)[: max(0, room - self.tell())])
                raise OSError(error, os.strerror(error))
            return super().write(data)

    monkeypatch.setattr("kaggle_tl.files.os.fdopen", lambda fd, mode="rb", **kwargs: FullDiskFile(fd, "w"))


@pytest.mark.parametrize("error, what", [(errno.ENOSPC, "no space left on device"),
                                         (errno.EDQUOT, "disk quota exceeded")])
@pytest.mark.parametrize("writer", ["bytes", "predictions"])
def test_full_disk_is_one_line_naming_the_folder_and_leaves_no_temp_file(tmp_path, monkeypatch, error, what, writer):
    fill_disk(monkeypatch, error)
    folder = tmp_path / "runs" / "r1"
    with pytest.raises(KaggleTLError, match=rf"runs/r1: {what} while writing (record.json|predictions.npz)$") as exc:
        if writer == "bytes":
            files.atomic_write_bytes(folder / "record.json", b"{}" * 1000)
        else:  # how a run stores a model's predictions (RunRecord.save_predictions)
            preds = Predictions(["original"], np.full((1, 4, 2), 0.5), np.full((1, 2, 3, 2), 0.5),
                                np.array([0, 1, 0, 1]), np.array([0, 1, 1, 0]))
            files.atomic_write_bytes(folder / "predictions.npz", preds.to_bytes())
    assert "\n" not in str(exc.value)
    assert list(folder.iterdir()) == []  # neither the file nor its temporary


def test_full_disk_while_saving_an_array_leaves_no_temp_file(tmp_path, monkeypatch):
    # The OSError goes on to the caller (FeatureEntry.write_chunk), whose one line says a re-run resumes.
    fill_disk(monkeypatch)
    with pytest.raises(OSError) as exc:
        files.atomic_save_npy(tmp_path / "chunk.npy", np.zeros((100, 10)))
    assert exc.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []


def test_submission_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
    fill_disk(monkeypatch, room=10)
    sample = pd.DataFrame({"id": ["a", "b"], "x": [0.5, 0.5], "y": [0.5, 0.5]})
    task = Task("multiclass", "log_loss", id_column="id", target_columns=("x", "y"), classes=("x", "y"))
    frame = build_submission(task, np.full((2, 2), 0.5), np.zeros(0), ["a", "b"], sample)
    with pytest.raises(KaggleTLError, match=r"subs: no space left on device while writing sub.csv$"):
        write_submission(frame, sample, tmp_path / "subs", "sub", task)
    assert list((tmp_path / "subs").iterdir()) == []


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        files.atomic_write_bytes(tmp_path / "record.json", b"{}")
        files.atomic_save_npy(tmp_path / "chunk.npy", np.zeros(3))
        files.atomic_write_bytes(tmp_path / "sub.csv", b"id\n", overwrite=False)
        entry = cache.Cache(tmp_path / "cache").features("key", 4, 2, 4)
        entry.write_chunk(0, np.ones((4, 2), np.float32))
        entry.finalize()
    finally:
        os.umask(old)
    written = [*tmp_path.glob("*.*"), *entry.folder.iterdir()]
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in written} == \
        {"record.json": mode, "chunk.npy": mode, "sub.csv": mode, "features.npy": mode, "meta.json": mode}
