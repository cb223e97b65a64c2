"""Every cache key and saved artifact against what determines it, and the bad inputs of the third round.

Each test builds its bad input itself and checks the behaviour a user betting a submission on the
result expects: a recomputation, a one-line refusal naming the file, row or setting, or a note.
"""
from __future__ import annotations

import collections
import io
import json
import os
import pickle
import shlex
import shutil
import struct
import sys
import threading
import types
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import make_competition, write_image
from kaggle_tl import cli
from kaggle_tl.backbones import create_backbone
from kaggle_tl.backbones.torch_pickle import load_state_dict
from kaggle_tl.config import RunConfig, resolve_config
from kaggle_tl.data.images import MAX_PIXELS, find_bad_images, resize_image
from kaggle_tl.errors import KaggleTLError
from kaggle_tl.pipeline import run
from kaggle_tl.runs.queries import list_runs
from kaggle_tl.runs.record import Predictions, RunRecord

SMALL = dict(backbones=("mobilenet_v2",), weights="none", image_size=32, views=("original",), folds=2,
             heads=("logreg",))


@pytest.fixture
def no_plots(monkeypatch):
    monkeypatch.setattr("kaggle_tl.pipeline.plot_model", lambda *args, **kwargs: {}, raising=False)


def small_config(tmp_path: Path, comp: Path, **changes) -> RunConfig:
    return RunConfig(data=str(comp), cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"),
                     submissions_dir=str(tmp_path / "subs"), **{**SMALL, **changes})


def cli_error(capsys, argv: list[str]) -> str:
    """The one error line of a command expected to fail with exit 2 (and no traceback)."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("kaggle-tl: error: ")]
    return line


# -- 1. a cache key or a saved artifact that misses part of what determines it -------------------------
def test_a_class_added_to_the_sample_refits_the_heads_and_the_leaderboard_still_works(tmp_path, no_plots, capsys):
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=3)
    config = small_config(tmp_path, comp)
    first = run(config)
    sample = pd.read_csv(comp / "sample_submission.csv", dtype={"id": str})
    sample["yellow"] = 0.0
    sample.to_csv(comp / "sample_submission.csv", index=False)
    second = run(config)
    assert second.timings["head_logreg_cached"] == 0.0  # the 3-class predictions are not served for 4
    assert second.predictions("mobilenet_v2__logreg").oof.shape[2] == 4 and first.run_id != second.run_id
    submission = pd.read_csv(second.models[0].submission)
    assert list(submission.columns) == ["id", "blue", "green", "red", "yellow"]
    assert cli.main(["leaderboard", "--runs-dir", config.runs_dir, "--out", str(tmp_path / "board")]) == 0


def test_a_renamed_class_redraws_the_figures(tmp_path):
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=3)
    config = small_config(tmp_path, comp)
    first = run(config)
    for csv in ("labels.csv", "sample_submission.csv"):
        text = (comp / csv).read_text()
        (comp / csv).write_text(text.replace("green", "verde"))
    record = run(config)
    figures = list((tmp_path / "cache" / "figures").iterdir())
    # The model's figures and its t-SNE per class naming: the old ones are not copied for the new names.
    assert set(record.cache_entries["figures"].values()) == {"computed"} and len(first.cache_entries["figures"]) == 2
    assert not set(record.cache_entries["figures"]) & set(first.cache_entries["figures"]) and len(figures) == 4
    assert "confusion" in record.plots


def test_weights_none_is_the_same_network_whatever_ran_before_and_in_any_thread():
    import keras

    def weights() -> list[np.ndarray]:
        return create_backbone("mobilenet_v2", "none", 32).model.get_weights()

    first = weights()
    keras.utils.set_random_seed(123)  # other random work in the process, as in a Dask worker
    np.random.default_rng(5).normal(size=100)
    keras.random.uniform((7,))
    in_thread = []
    worker = threading.Thread(target=lambda: in_thread.append(weights()))
    worker.start()
    worker.join()
    for got in (weights(), in_thread[0]):
        assert all(np.array_equal(a, b) for a, b in zip(first, got))


def test_ensemble_refuses_test_images_swapped_under_the_same_ids(tmp_path, no_plots, capsys):
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=3)
    config = small_config(tmp_path, comp)
    record = run(config)
    a, b = sorted((comp / "test").iterdir())[:2]
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)  # a stage-2 test set: same ids, other images
    line = cli_error(capsys, ["ensemble", "--runs", record.run_id, "--runs-dir", config.runs_dir,
                              "--submissions-dir", str(tmp_path / "ens-subs"), "--out", str(tmp_path / "ens")])
    assert f"the test images changed since run {record.run_id}" in line
    assert not (tmp_path / "ens-subs").exists()


# -- 2. tracebacks where one line is due -------------------------------------------------------------
def test_svm_with_too_few_images_per_class_for_its_calibration_stops_before_extraction(tmp_path, capsys, monkeypatch):
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=2)  # 2 folds: 2 training rows a class
    monkeypatch.setattr("kaggle_tl.backbones.create_backbone", lambda *a, **k: pytest.fail("a model was built"))
    line = cli_error(capsys, ["run", "--data", str(comp), "--backbones", "mobilenet_v2", "--weights", "none",
                              "--image-size", "32", "--folds", "2", "--heads", "svm",
                              "--cache-dir", str(tmp_path / "cache"), "--runs-dir", str(tmp_path / "runs")])
    assert "setting heads: head svm calibrates on 3 splits" in line and "calibration_folds" in line
    assert not (tmp_path / "cache" / "features").exists()


@pytest.mark.parametrize("compression", ["zip", "gz"])
def test_compressed_csvs_as_kaggle_ships_them(tmp_path, no_plots, compression, capsys):
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=3)
    for name in ("labels.csv", "sample_submission.csv"):
        path = comp / name
        if compression == "zip":
            with zipfile.ZipFile(f"{path}.zip", "w") as archive:
                archive.write(path, name)
        else:
            import gzip
            Path(f"{path}.gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    record = run(small_config(tmp_path, comp))
    assert len(record.train_ids) == 12 and len(record.test_ids) == 3
    # kaggle-tl score reads them too.
    labels = tmp_path / f"truth.csv.{compression}"
    truth = pd.DataFrame({"id": record.test_ids, "label": ["red"] * 3}).to_csv(index=False).encode()
    if compression == "zip":
        with zipfile.ZipFile(labels, "w") as archive:
            archive.writestr("truth.csv", truth)
    else:
        import gzip
        labels.write_bytes(gzip.compress(truth))
    assert cli.main(["score", record.models[0].submission, "--labels", str(labels)]) == 0
    damaged = tmp_path / "damaged.csv.zip"
    damaged.write_bytes(b"PK\x03\x04 not a zip")
    line = cli_error(capsys, ["score", record.models[0].submission, "--labels", str(damaged)])
    assert "damaged.csv.zip: labels is damaged or not the compressed CSV its name says" in line


def _png_declaring(width: int, height: int) -> bytes:
    """A small, valid-looking PNG whose header declares width x height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(12_000)))
            + chunk(b"IEND", b""))


def test_a_png_declaring_50000_by_50000_pixels_is_named_by_the_scan(tmp_path, no_plots):
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=3)
    bomb = comp / "train" / "tr001.jpg"
    bomb.unlink()
    (comp / "train" / "tr001.png").write_bytes(_png_declaring(50_000, 50_000))
    (problem,) = find_bad_images([comp / "train" / "tr001.png"]).values()
    assert problem.startswith("declares 50000 x 50000 pixels") and str(MAX_PIXELS // 10**6) in problem
    config = small_config(tmp_path, comp, folds=3)
    with pytest.raises(KaggleTLError, match=r"tr001.png: declares 50000 x 50000 pixels"):
        run(config)
    record = run(config.replace(skip_bad_train_images=True))
    assert [s["id"] for s in record.skipped_images] == ["tr001"]


def test_crop_of_a_1_by_200000_strip_allocates_nothing_large():
    strip = np.full((1, 200_000, 3), 200, np.uint8)
    for policy in ("crop", "pad", "squash"):
        assert resize_image(strip, 32, policy).shape == (32, 32, 3)
    image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    cropped = resize_image(image, 224, "crop")  # the centre 262 x 262 (0.875 of 300), then to 224
    expected = cv2.resize(image[19:281, 69:331], (224, 224), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(cropped, expected)


def test_an_image_size_that_cannot_fit_in_memory_stops_before_extraction(tmp_path, capsys, monkeypatch):
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=2)
    monkeypatch.setattr("kaggle_tl.backbones.create_backbone", lambda *a, **k: pytest.fail("a model was built"))
    line = cli_error(capsys, ["run", "--data", str(comp), "--backbones", "mobilenet_v2", "--weights", "none",
                              "--image-size", "5000", "--folds", "2", "--heads", "logreg",
                              "--cache-dir", str(tmp_path / "cache"), "--runs-dir", str(tmp_path / "runs")])
    assert "setting batch_size/image_size: extraction would need about" in line and "GiB are available" in line
    assert not (tmp_path / "cache" / "features").exists() or not any((tmp_path / "cache" / "features").iterdir())


def _crafted_pth(path: Path, shape: tuple, stride: tuple, numel: int, monkeypatch) -> None:
    """A legacy-format .pth holding one float tensor of ``shape``/``stride`` over a storage of ``numel``."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called when writing")
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    storage = type("FloatStorage", (), {"__module__": "torch"})
    torch.FloatStorage, torch._utils = storage, utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)

    class Marker:
        pass

    class Tensor:
        def __reduce__(self):
            return _rebuild_tensor_v2, (Marker, 0, shape, stride, False, collections.OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", storage, "0", "cpu", numel) if obj is Marker else None

    def dumps(obj) -> bytes:
        buffer = io.BytesIO()
        Pickler(buffer, protocol=2).dump(obj)
        return buffer.getvalue()

    header = b"".join(pickle.dumps(o, protocol=2) for o in
                      (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True, "protocol_version": 1001}))
    path.write_bytes(header + dumps({"w": Tensor()}) + dumps(["0"]) + struct.pack("<q", numel) + bytes(4 * numel))


@pytest.mark.parametrize("shape, stride", [((10**6, 10**6), (0, 0)), ((4000, 4000), (1, 0)), ((3, -1), (1, 1))])
def test_a_pth_tensor_that_does_not_fit_its_storage_is_refused(tmp_path, monkeypatch, shape, stride):
    path = tmp_path / "bomb.pth"
    _crafted_pth(path, shape, stride, 4, monkeypatch)
    assert path.stat().st_size < 400
    with pytest.raises(KaggleTLError, match=r"bomb.pth: corrupt weights file \(a tensor"):
        load_state_dict(path)
    _crafted_pth(path, (2, 2), (2, 1), 4, monkeypatch)  # the same file made right loads
    np.testing.assert_array_equal(load_state_dict(path)["w"], np.zeros((2, 2), np.float32))


@pytest.mark.parametrize("make, message", [
    (lambda d: d.mkdir(), "is a folder; --config takes a TOML file"),
    (lambda d: d.write_text("kaggle_tl = 5\n"), "kaggle_tl must be a table"),
    (lambda d: d.write_text('[kaggle_tl]\nfolds = 3\n[head_params.logreg]\nC = 1\n\n[x]\n'), "unknown setting 'x'"),
    (lambda d: d.write_text('folds = 2\n[kaggle_tl]\nfolds = 3\n'), "folds set both under [kaggle_tl] and at the top"),
    (lambda d: d.write_text('folds = 2\nhaeds = ["svm"]\n'), "unknown setting 'haeds' (did you mean heads?)"),
])
def test_bad_config_files_are_one_line(tmp_path, capsys, make, message):
    path = tmp_path / "run.toml"
    make(path)
    line = cli_error(capsys, ["run", "--config", str(path)])
    assert message in line and str(path) in line


def test_a_kaggle_tl_table_merges_with_top_level_tables_and_paths_are_the_files(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    path = folder / "run.toml"
    # The README's own layout: settings under [kaggle_tl], then [head_params.x] tables (top level in TOML);
    # saved with a byte-order mark, as Windows editors do.
    path.write_bytes("\ufeff".encode() + b'[kaggle_tl]\ndata = "../comp"\nfolds = 3\nheads = ["logreg"]\n'
                     b'cache_dir = "c"\n\n[head_params.logreg]\nC = 50\n')
    config = resolve_config(RunConfig.from_toml(path))
    assert config.folds == 3 and config.head_params["logreg"]["C"] == 50
    assert config.data == str(tmp_path / "comp") and config.cache_dir == str(folder / "c")


@pytest.mark.parametrize("argv, message", [
    (["--address", "tcp://host", "--engine", "dask"], "setting address: expected a scheduler address like"),
    (["--address", "not a url", "--engine", "dask"], "setting address: expected a scheduler address like"),
    (["--backbones", "mobilenet_v2,mobilenet_v2"], "setting backbones: each backbone once"),
    (["--heads", "logreg", "--head-param", "logreg.CC=1"], "unknown parameter 'CC' (did you mean C?)"),
    (["--views", "original,hflp"], "did you mean hflip?"),
    (["--time-limit", "10", "--engine", "dask"], "setting time_limit: is estimated with engine = local only"),
    (["--submit-model", "forest"], "setting submit_model: 'forest' names none of the heads"),
    (["--competition", "x; touch X #"], "setting competition: 'x; touch X #': expected the competition's slug"),
    (["--backbones", "xception", "--stage-layers", "xception=add_11,add_11"],
     "setting stage_layers: names a layer of xception twice"),
    (["--stage-layers", "xception=add_11", "--stage-layers", "xception=add_12"],
     "--stage-layers names xception twice; give its layers in one flag, comma-separated"),
    (["--backbones", "efficientnet_lite0", "--heads", "logreg", "--submit-model", "xception__logreg"],
     "setting submit_model: 'xception__logreg' is not a model of this run (backbones 'xception'); its logreg "
     "model is 'efficientnet_lite0__logreg'"),
])
def test_settings_are_checked_with_suggestions(capsys, argv, message):
    assert message in cli_error(capsys, ["run", "--data", "x", *argv])


def test_leaderboard_out_that_is_a_file_is_one_line(tmp_path, no_plots, capsys):
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=2)
    config = small_config(tmp_path, comp)
    run(config)
    blocker = tmp_path / "board.txt"
    blocker.write_text("x")
    line = cli_error(capsys, ["leaderboard", "--runs-dir", config.runs_dir, "--out", str(blocker)])
    assert f"{blocker}: output folder is a file, not a folder" in line


def test_a_runs_folder_turning_read_only_mid_run_is_one_line_and_keeps_what_was_computed(tmp_path, no_plots,
                                                                                          monkeypatch):
    import errno

    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=2)
    config = small_config(tmp_path, comp)
    real = os.replace

    def read_only_runs(src, dst, *args, **kwargs):
        if "runs" in Path(dst).parts and Path(dst).name == "predictions.npz":
            raise OSError(errno.EROFS, "Read-only file system")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr("kaggle_tl.files.os.replace", read_only_runs)
    with pytest.raises(KaggleTLError, match=r"read-only file system while writing predictions.npz$"):
        run(config)
    monkeypatch.undo()
    assert list((tmp_path / "cache" / "features").glob("*/features.npy"))  # the features are kept
    assert run(config).timings["features_s"] >= 0


# -- 3. one failure that stops later commands ---------------------------------------------------------
def test_a_diverged_head_is_named_and_the_runs_other_models_are_kept(tmp_path, no_plots, capsys):
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=2)
    config = small_config(tmp_path, comp, heads=("logreg", "dense"), head_params={"dense": {"l2": 1e300}})
    record = run(config)
    assert [m.head for m in record.models] == ["logreg"]
    (note,) = [n for n in record.notes if "diverged" in n]
    assert note.startswith("head dense (") and "l2=1e+300" in note and "other models are kept" in note
    assert cli.main(["leaderboard", "--runs-dir", config.runs_dir, "--out", str(tmp_path / "board")]) == 0
    assert cli.main(["ensemble", "--all", "--runs-dir", config.runs_dir, "--submit", "none",
                     "--out", str(tmp_path / "ens")]) == 0


def test_damaged_predictions_are_left_out_and_named_never_a_stop(tmp_path, no_plots, capsys):
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=2)
    config = small_config(tmp_path, comp, heads=("logreg", "dense"))
    record = run(config)
    path = record.predictions_path(record.models[0].name)
    path.write_bytes(path.read_bytes()[:300])  # truncated
    assert cli.main(["leaderboard", "--runs-dir", config.runs_dir, "--out", str(tmp_path / "board")]) == 0
    err = capsys.readouterr().err
    assert "left out:" in err and str(path) in err
    board = pd.read_csv(tmp_path / "board" / "leaderboard.csv")
    assert board["model"].tolist() == [record.models[1].name]
    assert cli.main(["ensemble", "--all", "--runs-dir", config.runs_dir, "--submit", "best",
                     "--submissions-dir", str(tmp_path / "subs2"), "--out", str(tmp_path / "ens")]) == 0


def test_ensemble_with_submit_none_needs_no_competition_folder(tmp_path, no_plots):
    import shutil

    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=2)
    config = small_config(tmp_path, comp)
    record = run(config)
    shutil.rmtree(comp)
    assert cli.main(["ensemble", "--runs", record.run_id, "--runs-dir", config.runs_dir, "--submit", "none",
                     "--strategies", "mean", "--out", str(tmp_path / "ens")]) == 0


# -- 4. silent surprises ------------------------------------------------------------------------------
def test_class_folders_note_loose_files_and_deeper_folders(tmp_path, no_plots):
    root = tmp_path / "comp"
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (root / "train" / label / "more").mkdir(parents=True)
        for i in range(3):
            write_image(root / "train" / label / f"{i}.png", rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
        write_image(root / "train" / label / "more" / "deep.png", rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
    write_image(root / "train" / "loose.png", rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
    (root / "test").mkdir()
    write_image(root / "test" / "t0.png", rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
    record = run(small_config(tmp_path, root, folds=3))
    notes = " | ".join(record.notes)
    assert "1 file(s) directly in train/ have no class folder: ignored, e.g. loose.png" in notes
    assert "2 folder(s) inside class folders (2 file(s)) are not read" in notes
    assert len(record.train_ids) == 6


def test_weights_holding_inf_are_named(tmp_path):
    import keras

    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv")(inputs))
    kernel, bias = model.get_layer("conv").get_weights()
    kernel[0, 0, 0, 0] = np.inf
    model.get_layer("conv").set_weights([kernel, bias])
    path = tmp_path / "mine.keras"
    model.save(path)
    with pytest.raises(KaggleTLError, match=r"mine.keras: weights of .*mine.keras hold NaN or infinite values"):
        create_backbone(str(path))


def test_a_user_model_refuses_another_image_size(tmp_path, capsys):
    import keras

    inputs = keras.Input((24, 24, 3))
    path = tmp_path / "mine.keras"
    keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs)).save(path)
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=2)
    line = cli_error(capsys, ["run", "--data", str(comp), "--backbones", str(path), "--image-size", "200",
                              "--cache-dir", str(tmp_path / "cache"), "--runs-dir", str(tmp_path / "runs")])
    assert "setting image_size: " in line and "takes 24 px images" in line


def test_head_jobs_is_capped_at_the_number_of_fits(tmp_path, no_plots):
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=2)
    record = run(small_config(tmp_path, comp, head_jobs=1000))
    assert "head_jobs 1000 capped at the 2 fits of a head" in record.notes


def test_stale_temporary_files_of_dead_processes_are_removed_by_the_next_run(tmp_path, no_plots):
    from kaggle_tl.files import _host

    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=2)
    config = small_config(tmp_path, comp)
    first = run(config)
    dead = 2**22 + 1  # above Linux's default pid_max: no such process
    folders = (tmp_path / "subs", tmp_path / "subs" / "comp", tmp_path / "runs", first.run_dir,
               tmp_path / "cache" / "predictions", tmp_path / "cache" / "figures")
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f".x.csv.{_host()}-{dead}-0123456789abcdef.tmp").write_text("left by a kill -9")
        (folder / f".y.csv.{_host()}-{os.getpid()}-0123456789abcdef.tmp").write_text("a live writer's")
    (tmp_path / "cache" / "figures" / f".k.{_host()}-{dead}-0123456789abcdef.tmp").mkdir()  # a figures draft
    run(config, new_run=True)
    for folder in folders:
        left = sorted(p.name for p in folder.glob(".*"))
        assert left == [f".y.csv.{_host()}-{os.getpid()}-0123456789abcdef.tmp"], folder


def test_offline_default_backbones_name_the_cause_and_leave_no_empty_cache_folders(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=2)
    line = cli_error(capsys, ["run", "--data", str(comp), "--backbones", "mobilenet_v2", "--image-size", "32",
                              "--folds", "2", "--heads", "logreg", "--cache-dir", str(tmp_path / "cache"),
                              "--runs-dir", str(tmp_path / "runs")])
    assert "imagenet weights for mobilenet_v2 are not cached and the download failed (" in line
    assert "--backbones efficientnet_lite0" in line
    assert not list((tmp_path / "cache").rglob("features/*"))  # no empty entry folders left


def test_a_hidden_test_file_is_said_to_be_ignored(tmp_path, capsys):
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=2)
    sample = pd.read_csv(comp / "sample_submission.csv", dtype={"id": str})
    victim = next((comp / "test").glob(f"{sample['id'][0]}.*"))
    victim.rename(victim.with_name("." + victim.name))
    sample.loc[0, "id"] = "." + sample["id"][0]
    sample.to_csv(comp / "sample_submission.csv", index=False)
    line = cli_error(capsys, ["run", "--data", str(comp), "--backbones", "mobilenet_v2", "--weights", "none",
                              "--image-size", "32", "--folds", "2", "--runs-dir", str(tmp_path / "runs")])
    assert "hidden files (starting with '.'), which kaggle_tl ignores" in line


def test_an_identical_run_is_reused_and_a_flag_forces_a_new_one(tmp_path, no_plots, capsys):
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=2)
    config = small_config(tmp_path, comp)
    first = run(config)
    again = run(config.replace(batch_size=8, head_jobs=2))  # only how fast: the same run
    assert again.run_id == first.run_id and len(list_runs(config.runs_dir)[0]) == 1
    assert len(list((tmp_path / "subs" / "comp").glob("*.csv"))) == 1
    forced = run(config, new_run=True)
    assert forced.run_id != first.run_id and len(list_runs(config.runs_dir)[0]) == 2
    other = run(config.replace(head_params={"logreg": {"C": 0.02}}))
    assert other.run_id not in (first.run_id, forced.run_id)
    assert RunRecord.load(other.run_dir).models[0].recipe.startswith("logreg C=0.02 | ")


@pytest.mark.parametrize("implementation", ["HEAD_VERSION", "FEATURE_VERSION"])
def test_a_run_by_another_head_or_feature_implementation_is_not_identical(tmp_path, no_plots, monkeypatch,
                                                                         implementation):
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=2)
    config = small_config(tmp_path, comp)
    first = run(config)
    assert run(config).run_id == first.run_id
    monkeypatch.setattr(f"kaggle_tl.pipeline.{implementation}", -1)
    assert run(config).run_id != first.run_id  # its numbers may differ: recomputed, never served


def test_a_stage_layer_that_is_the_final_stage_is_refused_not_doubled():
    from kaggle_tl.pipeline import backbone_refs

    config = resolve_config(RunConfig(data="x", backbones=("efficientnet_lite0",),
                                      stage_layers={"efficientnet_lite0": ("_blocks.15._bn1_relu6", "_bn1_relu6")}))
    with pytest.raises(KaggleTLError, match="'_bn1_relu6' is its final stage, whose pooled output is always included"):
        backbone_refs(config)
    ok = config.replace(stage_layers={"efficientnet_lite0": ("_blocks.15._bn1_relu6",)})
    assert [name for name, _ in backbone_refs(ok)[0].outputs] == ["_blocks.15._bn1_relu6", "pooled"]


@pytest.mark.parametrize("days", ["-1", "nan", "inf"])
def test_clean_refuses_an_age_that_would_select_everything(tmp_path, capsys, days):
    (tmp_path / "cache").mkdir()
    line = cli_error(capsys, ["clean", "--cache-dir", str(tmp_path / "cache"), "--older-than", days, "--yes"])
    assert f"--older-than {float(days)}: expected a number of days, 0 or more" in line


def test_the_printed_upload_command_is_shell_quoted(tmp_path, no_plots, capsys):
    comp = make_competition(tmp_path / "my comp", n_per_class=4, n_test=2)
    config = small_config(tmp_path, comp).replace(competition="dogs-vs-shapes", submissions_dir=str(tmp_path / "s s"))
    cli.print_run(run(config), config)
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("upload: ")]
    words = shlex.split(line.removeprefix("upload: "))
    assert words[:5] == ["kaggle", "competitions", "submit", "-c", "dogs-vs-shapes"]
    assert Path(words[6]).is_file() and words[7] == "-m" and " CV " in words[8]


def test_an_entry_declaring_more_bytes_than_the_run_can_hold_is_refused_before_anything_is_allocated(tmp_path):
    preds = Predictions(["original"], np.full((1, 6, 2), 0.5), np.full((1, 2, 3, 2), 0.5),
                        np.array([0, 0, 0, 1, 1, 1]), np.array([0, 1, 0, 1, 0, 1]))
    path = tmp_path / "predictions.npz"
    path.write_bytes(preds.to_bytes())
    limit = Predictions.max_bytes(1, 6, 2, 3, 2)
    assert Predictions.load(path, limit).oof.shape == (1, 6, 2)
    # The oof member's header altered to declare 10^12 x 6 x 2 floats; its few bytes of data left as they were.
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 6, 2)})
    members["oof.npy"] = header.getvalue() + preds.oof.tobytes()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(KaggleTLError, match=r"predictions damaged \(its arrays declare 48,000,000,000,\d{3} bytes; "
                                            r"an entry for this run holds at most"):
        Predictions.load(path, limit)


@pytest.fixture
def exported_run(tmp_path, no_plots):
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=2)
    config = small_config(tmp_path, comp)
    return run(config), config


def test_cache_export_copies_only_what_names_a_cache_entry(exported_run, tmp_path, capsys):
    record, config = exported_run
    for kind, key in (("../../outside", "0" * 20), ("fits", "../../../etc/passwd")):
        crafted = RunRecord.load(record.run_dir)
        crafted.cache_entries = {**crafted.cache_entries, kind: {key: "computed"}}
        crafted.save()
        line = cli_error(capsys, ["cache", "export", str(tmp_path / "out"), "--runs-dir", config.runs_dir,
                                  "--cache-dir", config.cache_dir])
        assert "which is no kaggle_tl cache entry" in line and "its record is damaged or was edited" in line
        assert not (tmp_path / "outside").exists() and not list((tmp_path / "out").rglob("*.npz"))


def test_cache_export_never_copies_a_link_nor_writes_into_a_file(exported_run, tmp_path, capsys):
    record, config = exported_run
    entry = next(p for p in (Path(config.cache_dir) / "features").iterdir() if p.is_dir())
    secret = tmp_path / "private.txt"
    secret.write_text("not for upload")
    (entry / "meta.json").unlink()
    (entry / "meta.json").symlink_to(secret)
    line = cli_error(capsys, ["cache", "export", str(tmp_path / "out"), "--runs-dir", config.runs_dir,
                              "--cache-dir", config.cache_dir])
    assert f"{entry / 'meta.json'} is a link; kaggle_tl never exports one" in line
    assert "not for upload" not in "".join(p.read_text(errors="ignore") for p in (tmp_path / "out").rglob("*")
                                           if p.is_file())
    (tmp_path / "a-file").write_text("x")
    line = cli_error(capsys, ["cache", "export", str(tmp_path / "a-file"), "--runs-dir", config.runs_dir,
                              "--cache-dir", config.cache_dir])
    assert "a-file: cache export folder is a file, not a folder" in line


def test_no_output_lands_in_the_competition_folder_or_a_read_only_layer(tmp_path, capsys):
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=2)
    labels = (comp / "labels.csv").read_bytes()
    layer = tmp_path / "layer"
    (layer / "features").mkdir(parents=True)
    common = ["run", "--data", str(comp), "--weights", "none", "--backbones", "efficientnet_lite0"]
    line = cli_error(capsys, [*common, "--submission-file", str(comp / "labels.csv")])
    assert f"setting submission_file: {comp / 'labels.csv'} is inside the competition folder" in line
    line = cli_error(capsys, [*common, "--cache-from", str(layer), "--cache-dir", str(layer / "mine")])
    assert f"setting cache_dir: {layer / 'mine'} is inside the read-only cache (--cache-from)" in line
    assert (comp / "labels.csv").read_bytes() == labels and not (layer / "mine").exists()


def test_an_identical_run_whose_promised_files_are_gone_is_computed_again(tmp_path, no_plots, caplog):
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=2)
    config = small_config(tmp_path, comp)
    first = run(config)
    Path(first.models[0].submission).unlink()
    again = run(config)
    assert again.run_id != first.run_id and Path(again.models[0].submission).is_file()
    assert f"run {first.run_id} has these settings, but its file" in caplog.text
    assert run(config).run_id == again.run_id  # complete again: reused


def test_an_identical_run_that_read_a_layer_this_run_lacks_is_not_reused(tmp_path, no_plots, caplog):
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=2)
    made = run(small_config(tmp_path / "a", comp))
    config = small_config(tmp_path, comp).replace(cache_from=(str(tmp_path / "a" / "cache"),))
    first = run(config)
    assert "cache" in str(first.cache_entries["features"])  # read from the layer
    without = config.replace(cache_from=())
    again = run(without)
    assert again.run_id not in (first.run_id, made.run_id)
    assert "came from the cache layer" in caplog.text


def test_a_resaved_weights_file_at_the_same_path_is_not_an_identical_run(tmp_path, no_plots):
    import keras

    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=2)
    weights = tmp_path / "mine.weights.h5"
    model = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3))
    model.save_weights(weights)
    config = small_config(tmp_path, comp).replace(weights=str(weights))
    first = run(config)
    model.set_weights([w * 0.5 for w in model.get_weights()])
    model.save_weights(weights)
    assert run(config).run_id != first.run_id


# -- figures entries: key-stamped, checksummed, never a link --------------------------------------------
@pytest.fixture
def figures_run(tmp_path):
    """A run with its figures drawn into the cache: (config, record, its figures entry's folder)."""
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=2)
    config = small_config(tmp_path / "a", comp)
    record = run(config)
    # The model's entry; the other is its t-SNE's (features and labels only), which a redraw of the model's reads.
    (key,) = [key for key in record.cache_entries["figures"]
              if (Path(config.cache_dir) / "figures" / key / "confusion.png").is_file()]
    return config, record, Path(config.cache_dir) / "figures" / key


def test_figures_from_the_cache_are_the_drawn_files_and_a_damaged_entry_is_redrawn(figures_run, caplog):
    config, first, entry = figures_run
    drawn = {p.name: p.read_bytes() for p in first.plots_dir.iterdir()}
    assert drawn and {p.name for p in entry.iterdir()} == {*drawn, "meta.json"}
    again = run(config, new_run=True)
    assert again.cache_entries["figures"] == {entry.name: "cache"}
    assert {p.name: p.read_bytes() for p in again.plots_dir.iterdir()} == drawn

    name = next(iter(drawn))
    (entry / name).write_bytes(b"not the figure")  # bit rot, or a figure edited in place
    redrawn = run(config, new_run=True)
    assert f"damaged entry {entry}: {name} is not what was drawn under key" in caplog.text
    assert redrawn.cache_entries["figures"][entry.name] == "computed"
    assert (redrawn.plots_dir / name).read_bytes() != b"not the figure" and (entry / name).read_bytes() != b"not the figure"


def test_figures_copied_under_another_key_or_without_one_are_redrawn(figures_run, caplog):
    config, first, entry = figures_run
    meta = json.loads((entry / "meta.json").read_text())
    meta["key"] = "0" * 20
    (entry / "meta.json").write_text(json.dumps(meta))
    record = run(config, new_run=True)
    assert f"damaged entry {entry}: made for key {'0' * 20}, asked for {entry.name}" in caplog.text
    assert record.cache_entries["figures"][entry.name] == "computed"
    (entry / "meta.json").unlink()  # an older kaggle_tl's figures folder
    record = run(config, new_run=True)
    assert "no stored key (meta.json missing" in caplog.text
    assert record.cache_entries["figures"][entry.name] == "computed"
    assert json.loads((entry / "meta.json").read_text())["key"] == entry.name


def test_a_link_or_an_unlisted_file_in_a_layers_figures_never_reaches_the_run(figures_run, tmp_path, caplog):
    config, first, entry = figures_run
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    name = next(p.name for p in entry.iterdir() if p.suffix == ".png")
    layered = config.replace(cache_dir=str(tmp_path / "b" / "cache"), runs_dir=str(tmp_path / "b" / "runs"),
                             cache_from=(config.cache_dir,))
    assert run(layered, new_run=True).cache_entries["figures"] == {entry.name: config.cache_dir}

    (entry / "extra.csv").write_text("private")  # not a file the figures were drawn as
    record = run(layered, new_run=True)
    assert f"damaged entry {entry}: holds files it does not list: extra.csv" in caplog.text
    assert not (record.plots_dir / "extra.csv").exists() and record.cache_entries["figures"][entry.name] == "computed"
    (entry / "extra.csv").unlink()
    shutil.rmtree(Path(layered.cache_dir) / "figures")

    (entry / name).unlink()
    (entry / name).symlink_to(secret)  # a figure linked to a private file
    record = run(layered, new_run=True)
    assert f"damaged entry {entry}: {name} is a link or unreadable" in caplog.text
    plots = list(record.plots_dir.iterdir())
    assert plots and not any(p.is_symlink() or p.read_bytes() == b"private" for p in plots)
    own = Path(layered.cache_dir) / "figures" / entry.name  # redrawn into the writable root, the layer untouched
    assert not any(p.is_symlink() for p in own.iterdir()) and (entry / name).is_symlink()


def test_a_figures_entry_that_is_a_link_is_replaced_not_followed(figures_run, tmp_path, caplog):
    config, first, entry = figures_run
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(entry, elsewhere)  # an intact entry, but reached through a link
    shutil.rmtree(entry)
    entry.symlink_to(elsewhere, target_is_directory=True)
    record = run(config, new_run=True)
    assert f"damaged entry {entry}: it is a link" in caplog.text
    assert record.cache_entries["figures"][entry.name] == "computed"
    assert entry.is_dir() and not entry.is_symlink() and elsewhere.is_dir()  # the link's target is not deleted
