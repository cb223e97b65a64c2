"""RunConfig: every knob of a run in one frozen, type-checked dataclass, resolved in one place.

``resolve_config`` turns what a user wrote (flags, TOML, or Python) into the complete config a
run uses and saves: the demo folder and its backbone when no data is given, the mission's
backbones otherwise, every head's full parameter set, and the Kaggle notebook's folders when
running inside one. The CLI and ``kaggle_tl.run`` both call it, so ``python run_all.py`` and
``kaggle_tl.run(RunConfig())`` do the same thing. Only ``cli.py``, this module and ``pipeline.py``
know RunConfig: lower modules receive the values they use.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kaggle_tl.backbones.runtimes import PRECISIONS, RUNTIMES
from kaggle_tl.data.competition import Layout
from kaggle_tl.data.images import DEFAULT_RESIZE, RESIZE_POLICIES, VIEW_TRANSFORMS
from kaggle_tl.engine import ENGINES
from kaggle_tl.errors import KaggleTLError, did_you_mean
from kaggle_tl.kaggle import check_competition_slug

VIEWS = tuple(VIEW_TRANSFORMS)

MISSION_BACKBONES = ("xception", "inception_v3")
# The embedded default main job: offline, pretrained, finishes in minutes on 2 CPU cores.
DEMO_DATA = "data/demo"
DEMO_BACKBONES = ("efficientnet_lite0",)
SEED_RANGE = (0, 2**32 - 1)  # what numpy's and scikit-learn's seeding accepts
POOLINGS = ("avg", "gem")

# Inside a Kaggle notebook (Kaggle sets this variable) only /kaggle/working is writable, and the
# grader reads /kaggle/working/submission.csv.
KAGGLE_ENV = "KAGGLE_KERNEL_RUN_TYPE"
KAGGLE_WORKING = "/kaggle/working"

# Settings that say where files go or how fast work runs, never what a run computes: two runs
# that differ only in these are the same run (pipeline's "identical to run X").
OPERATIONAL = ("cache_dir", "cache_from", "runs_dir", "submissions_dir", "submission_file", "batch_size",
               "decode_threads", "head_jobs", "engine", "address", "time_limit", "competition", "submit_model")
# Settings holding paths: in a TOML file they are read relative to the file's folder.
PATH_SETTINGS = ("data", "cache_dir", "cache_from", "runs_dir", "submissions_dir", "submission_file")


@dataclass(frozen=True)
class RunConfig:
    """Defaults are the mission (Xception + InceptionV3 at 299 px, flips, 5 folds) and the measured recipe:
    the last 3 stages' pooled features, logreg (C chosen per fold) and dense heads (BENCHMARKS.md)."""

    data: str | None = None  # competition folder; None: the embedded demo (data/demo)
    train_dir: str = Layout.train_dir  # the folder's layout (competition.Layout's defaults)
    test_dir: str = Layout.test_dir
    labels_csv: str = Layout.labels_csv
    sample_submission: str = Layout.sample_submission
    id_column: str = Layout.id_column
    label_column: str = Layout.label_column
    task: str = ""  # multiclass | binary | ordinal | regression | multilabel | topk; "": read from the labels
    metric: str = ""  # the competition's metric (tasks.scoring); "": the usual one for the task and sample
    top_k: int = 0  # topk: labels a cell holds; 0: as many as the sample's cells
    catch_all: str = ""  # topk: the label meaning "none of the known ones" (new_whale), scored per fold
    positive_class: str = ""  # binary: the class a P(positive) cell is the probability of; "": the second

    backbones: tuple[str, ...] | None = None  # None: xception + inception_v3 (the demo: efficientnet_lite0)
    image_size: int | None = None  # None: each backbone's native size (299 for the mission pair)
    weights: str = "imagenet"  # imagenet | none | path to a weights file or folder
    views: tuple[str, ...] = ("original", "hflip")  # test-time augmentation views, each its own features
    resize: str = DEFAULT_RESIZE  # pad | squash | crop: how an image becomes the backbone's square input
    stages: int = 3  # pooled outputs of each backbone's last K resolution stages, concatenated (1: the last only)
    stage_layers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # backbone -> its stages' layers, by name
    runtime: str | None = None  # tensorflow | openvino: what runs the backbones; None: openvino when installed
    precision: str = "fp32"  # fp32 | bf16 (openvino on a CPU with native bf16)
    heads: tuple[str, ...] | None = None  # None: the task's heads (tasks.task.DEFAULT_HEADS)
    head_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # head name -> parameters
    folds: int = 5
    seed: int = 42
    skip_bad_train_images: bool = False
    tabular: bool = True  # side features: the numeric columns of the labels CSV and test.csv join the images'

    head_jobs: int = 0  # parallel fold x view fits, 1 BLAS thread each; 0: by the fits' size (pipeline.head_jobs)
    batch_size: int = 32
    decode_threads: int = 4
    engine: str = "local"  # local | dask
    address: str | None = None  # dask scheduler; None with engine dask: a LocalCluster on this machine
    time_limit: float | None = None  # minutes: stop before extraction when the estimate is longer

    cache_dir: str = "cache"
    cache_from: tuple[str, ...] = ()  # read-only caches (a Kaggle dataset of an earlier run's cache)
    runs_dir: str = "runs"
    submissions_dir: str = "submissions"
    submission_file: str | None = None  # also write the chosen model's submission exactly here
    submit_model: str | None = None  # which model submission_file gets; None: the best CV log loss
    competition: str | None = None  # the Kaggle competition's slug, for the upload command

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(RunConfig)
        for f in fields(self):
            object.__setattr__(self, f.name, _checked(f.name, getattr(self, f.name), hints[f.name]))
        self._check_values()

    def _check_values(self) -> None:
        def bad(name: str, why: str) -> KaggleTLError:
            return KaggleTLError(f"setting {name}: {why}, got {getattr(self, name)!r}")

        if self.backbones is not None:
            if not self.backbones:
                raise bad("backbones", "at least one backbone is needed")
            if len(set(self.backbones)) != len(self.backbones):
                raise bad("backbones", "each backbone once (its features would be duplicated)")
        if self.stages < 1:
            raise bad("stages", "must be at least 1 (1: the last layer's pooled features only)")
        unknown = sorted(set(self.stage_layers) - set(self.backbones or ()))
        if self.backbones is not None and unknown:
            raise bad("stage_layers", f"names {unknown[0]!r}, which is not among backbones")
        if self.image_size is not None and self.image_size < 1:
            raise bad("image_size", "must be a positive number of pixels")
        unknown = [v for v in self.views if v not in VIEWS]
        if unknown or not self.views or len(set(self.views)) != len(self.views):
            raise bad("views", f"must be distinct names from {', '.join(VIEWS)}"
                               f"{did_you_mean(unknown[0], VIEWS) if unknown else ''}")
        for name, choices in (("resize", RESIZE_POLICIES), ("engine", ENGINES), ("runtime", RUNTIMES),
                              ("precision", PRECISIONS)):
            if name == "runtime" and self.runtime is None:
                continue
            if getattr(self, name) not in choices:
                raise bad(name, f"must be one of {', '.join(choices)}{did_you_mean(getattr(self, name), choices)}")
        if self.heads is not None and (not self.heads or len(set(self.heads)) != len(self.heads)):
            raise bad("heads", "must name at least one head, each once")
        if self.folds < 2:
            raise bad("folds", "must be at least 2")
        if not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            raise bad("seed", f"must be in [{SEED_RANGE[0]}, {SEED_RANGE[1]}]")
        for name in ("batch_size", "decode_threads"):
            if getattr(self, name) < 1:
                raise bad(name, "must be at least 1")
        if self.head_jobs < 0:
            raise bad("head_jobs", "must be at least 1, or 0 to choose by the size of the fits")
        if self.competition is not None:
            check_competition_slug(self.competition, "setting competition:")
        for backbone, layers in self.stage_layers.items():
            if len(set(layers)) != len(layers):
                raise bad("stage_layers", f"names a layer of {backbone} twice")
        if self.time_limit is not None and not self.time_limit > 0:
            raise bad("time_limit", "must be a positive number of minutes")
        if self.time_limit is not None and self.engine != "local":
            raise bad("time_limit", "is estimated with engine = local only")
        if self.address is not None:
            if self.engine != "dask":
                raise bad("address", "is only used with engine = dask")
            check_address(self.address)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for name, value in out.items():
            if isinstance(value, tuple):
                out[name] = list(value)
        return out

    def to_toml(self, leave_out: tuple[str, ...] = ()) -> str:
        """The settings (but ``leave_out`` and those left None) as a TOML file ``from_toml`` reads back."""
        values = {k: v for k, v in self.to_dict().items() if v is not None and k not in leave_out}
        tables = {k: values.pop(k) for k in list(values) if isinstance(values[k], dict)}
        lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in values.items()]
        for name, table in tables.items():
            if table and all(isinstance(entries, dict) for entries in table.values()):  # head -> its parameters
                for sub, entries in table.items():
                    lines += ["", f"[{_toml_key(name)}.{_toml_key(sub)}]",
                              *(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in entries.items())]
            elif table:  # backbone -> its stage layers
                lines += ["", f"[{_toml_key(name)}]", *(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items())]
        return "\n".join(lines) + "\n"

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def result_settings(self) -> dict[str, Any]:
        """The settings that decide what a run computes (every one but OPERATIONAL)."""
        return {k: v for k, v in self.to_dict().items() if k not in OPERATIONAL}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "RunConfig":
        """From TOML or flag values; ``flips = false`` is shorthand for ``views = ["original"]``."""
        try:
            return cls(**_views_from_flips(values, [f.name for f in fields(cls)]))
        except KaggleTLError as exc:
            raise KaggleTLError(f"{source}: {exc}") from None

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> "RunConfig":
        """The file's settings, flags (``overrides``) on top; relative paths in the file are read from its folder."""
        path = Path(path).absolute()
        values = read_toml(path)
        for name in PATH_SETTINGS:
            if name in values:
                values[name] = _relative_to(values[name], path.parent)
        if isinstance(values.get("weights"), str) and values["weights"] not in ("imagenet", "none"):
            values["weights"] = str(_relative_to(values["weights"], path.parent))
        if "head_params" in overrides and "head_params" in values:  # flags refine the file's head parameters
            merged = {h: dict(p) for h, p in _checked("head_params", values["head_params"],
                                                       dict[str, dict[str, Any]]).items()}
            for head, params in overrides.pop("head_params").items():
                merged.setdefault(head, {}).update(params)
            values["head_params"] = merged
        if "flips" in overrides:
            values.pop("views", None)  # --flips/--no-flips on the command line wins over the file's views
        values.update(overrides)
        return cls.from_dict(values, source=str(path))


def _toml_value(value: Any) -> str:
    """``value`` (a string, number, boolean or a list of them) as TOML writes it; JSON's spelling is not
    TOML's for inf, nan and control characters such as DEL."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return ("nan" if value != value else "inf" if value == math.inf else "-inf" if value == -math.inf
                else repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        escaped = "".join(f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F or c in '"\\' else c for c in value)
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise KaggleTLError(f"cannot write {value!r} ({type(value).__name__}) as a TOML setting")


def _toml_key(key: str) -> str:
    """A bare TOML key where it is one (letters, digits, _ and -), else a quoted one (``"my.h5"``)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def read_toml(path: Path) -> dict[str, Any]:
    """A config file's settings: top-level keys and a ``[kaggle_tl]`` table merged, or one line saying why not."""
    if path.is_dir():
        raise KaggleTLError(f"{path}: is a folder; --config takes a TOML file")
    try:
        # utf-8-sig: editors on Windows save a byte-order mark, which TOML itself does not allow.
        values = tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError:
        raise KaggleTLError(f"{path}: config file not found") from None
    except UnicodeDecodeError as exc:
        raise KaggleTLError(f"{path}: not UTF-8 text (byte {exc.start}); save the config as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise KaggleTLError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise KaggleTLError(f"{path}: cannot read the config ({exc.strerror or exc})") from None
    if "kaggle_tl" not in values:
        return values
    table = values.pop("kaggle_tl")
    if not isinstance(table, dict):
        raise KaggleTLError(f"{path}: kaggle_tl must be a table ([kaggle_tl] followed by settings), "
                            f"got {table!r}")
    # A [kaggle_tl] table followed by [head_params.x] tables puts those at the top level: merge them.
    both = sorted(set(table) & set(values))
    if both:
        raise KaggleTLError(f"{path}: {', '.join(both)} set both under [kaggle_tl] and at the top level; "
                            "keep one")
    return {**values, **table}


def _relative_to(value: Any, folder: Path) -> Any:
    """A path setting (or list of them) read relative to ``folder``; other values are left for the type check."""
    if isinstance(value, str) and value:
        return os.path.normpath(folder / Path(value).expanduser())
    if isinstance(value, list):
        return [_relative_to(v, folder) for v in value]
    return value


def check_address(address: str) -> str:
    """A Dask scheduler address with a host and a port (``tcp://host:8786`` or ``host:8786``), or one line."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None or parts.scheme not in ("tcp", "tls", "ucx", "inproc", "ws", "wss"):
        raise KaggleTLError(f"setting address: expected a scheduler address like tcp://host:8786, got {address!r}")
    return address


def _views_from_flips(values: dict[str, Any], known: list[str]) -> dict[str, Any]:
    """``values`` with the ``flips`` shorthand turned into ``views``; unknown settings refused."""
    values = dict(values)
    if "flips" in values:
        flips = _checked("flips", values.pop("flips"), bool)
        shorthand = ("original", "hflip") if flips else ("original",)
        if "views" in values and tuple(_checked("views", values["views"], tuple[str, ...])) != shorthand:
            raise KaggleTLError(f"flips = {str(flips).lower()} contradicts views = {values['views']!r}; "
                                "set one of them")
        values["views"] = shorthand
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise KaggleTLError(f"unknown setting {unknown[0]!r}{did_you_mean(unknown[0], known)}"
                            f"{f' (and {len(unknown) - 1} more)' if len(unknown) > 1 else ''}")
    return values


def _checked(name: str, value: Any, kind: Any) -> Any:
    """``value`` as the field's type, or one KaggleTLError line naming the setting and the value.

    Strict on purpose: TOML ``flips = "false"`` is a string, and a non-empty string is truthy,
    so accepting it would silently turn flips on.
    """
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (kind,) = [a for a in args if a is not type(None)]
        return _checked(name, value, kind)

    def refuse(expected: str) -> KaggleTLError:
        return KaggleTLError(f"setting {name}: expected {expected}, got {value!r} ({type(value).__name__})")

    if kind is bool:
        if not isinstance(value, bool):
            raise refuse("true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise refuse("an integer")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise refuse("a number")
        return float(value)
    if kind is str:
        if not isinstance(value, (str, os.PathLike)):
            raise refuse("a string")
        return str(value)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, os.PathLike)) for v in value):
            raise refuse("a list of names")
        return tuple(str(v) for v in value)
    if origin is dict:
        if args[1] is not dict[str, Any] and typing.get_origin(args[1]) is tuple:  # backbone -> layer names
            if not isinstance(value, dict):
                raise refuse("a table of backbone -> layer names, e.g. [stage_layers] xception = [\"add_11\"]")
            return {str(k): _checked(f"{name}.{k}", v, args[1]) for k, v in value.items()}
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise refuse("a table of head name -> parameters, e.g. [head_params.logreg] C = 0.2")
        return {str(k): dict(v) for k, v in value.items()}
    raise AssertionError(f"no check for {kind}")  # a new field type needs its check here


def in_kaggle_notebook() -> bool:
    return bool(os.environ.get(KAGGLE_ENV))


def model_name(config: RunConfig, head_name: str) -> str:
    """A run's model of one head: ``<backbone labels joined by +>__<head>``, as records and submissions name it."""
    from kaggle_tl.backbones import backbone_spec

    return f"{'+'.join(backbone_spec(b).label for b in config.backbones)}__{head_name}"


def resolve_config(config: RunConfig) -> RunConfig:
    """The complete config a run uses and saves; raises before any model is built if a setting is wrong.

    - no data: the embedded demo (``data/demo``) with EfficientNet-Lite0, unless backbones are given;
    - data but no backbones: the mission's Xception + InceptionV3;
    - the data folder as an absolute path (the record names it; a notebook re-runs from another folder);
    - in a Kaggle notebook, output folders left at their defaults go under /kaggle/working, and the
      chosen model's submission to /kaggle/working/submission.csv;
    - every head's parameters filled in from its defaults and checked;
    - the runtime: OpenVINO when installed (and no NVIDIA GPU), else TensorFlow;
    - each backbone checked (known name, image size not below its minimum), runtime and precision
      available on this machine.
    """
    from kaggle_tl.backbones import backbone_spec
    from kaggle_tl.backbones.runtimes import check_runtime, default_runtime

    changes: dict[str, Any] = {}
    if config.data is None:
        changes["data"] = DEMO_DATA
        if config.backbones is None:
            changes["backbones"] = DEMO_BACKBONES
    elif config.backbones is None:
        changes["backbones"] = MISSION_BACKBONES
    changes["data"] = str(Path(changes.get("data", config.data)).expanduser().absolute())
    if in_kaggle_notebook():
        defaults = RunConfig()
        for name in ("cache_dir", "runs_dir", "submissions_dir"):
            if getattr(config, name) == getattr(defaults, name):
                changes[name] = f"{KAGGLE_WORKING}/{getattr(defaults, name)}"
        if config.submission_file is None:
            changes["submission_file"] = f"{KAGGLE_WORKING}/submission.csv"
    if config.heads is not None:
        changes["head_params"] = _resolved_head_params(config, config.heads)
    if config.runtime is None:
        changes["runtime"] = default_runtime()
    resolved = config.replace(**changes)
    _check_submit_model(resolved)
    for name in resolved.backbones:
        backbone_spec(name).check_size(resolved.image_size)
    check_runtime(resolved.runtime, resolved.precision)
    return resolved


def _resolved_head_params(config: RunConfig, heads: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Every head's full parameter set, from its defaults and ``head_params``, checked."""
    from kaggle_tl.heads.base import create_head

    unused = sorted(set(config.head_params) - set(heads))
    if unused:
        raise KaggleTLError(f"setting head_params: parameters for {', '.join(unused)}, which is not among heads "
                            f"{', '.join(heads)}")
    params = {}
    for name in heads:
        head = create_head(name, random_state=config.seed, **config.head_params.get(name, {}))
        params[name] = {k: v for k, v in head.get_params().items() if k not in ("random_state", "response")}
    return params


def resolve_heads(config: RunConfig, task) -> RunConfig:
    """``config`` with its heads for ``task`` (a ``tasks.Task``): the given ones, each checked to give one of the
    task's responses, or the task's defaults; and every head's parameters filled in."""
    from kaggle_tl.heads.base import HEADS

    heads = config.heads or task.default_heads
    for name in heads:
        HEADS.get(name)  # an unknown head: one line naming the choices
        if task.response_of(HEADS.get(name).responses) is None:
            fit = [h for h in HEADS.names() if task.response_of(HEADS.get(h).responses)]
            raise KaggleTLError(f"setting heads: {name} cannot predict a {task.kind} task (it outputs "
                                f"{', '.join(HEADS.get(name).responses)}); heads that can: {', '.join(fit)}")
    resolved = config.replace(heads=tuple(heads), head_params=_resolved_head_params(config, tuple(heads)))
    _check_submit_model(resolved)
    return resolved


def _check_submit_model(resolved: RunConfig) -> None:
    """--submit-model names a head of the run, or a model "<backbones>__<head>" of it."""
    from kaggle_tl.heads.base import HEADS

    if resolved.submit_model is None:
        return
    heads = resolved.heads or tuple(HEADS.names())  # heads not given yet: the task's come from these
    prefix, named, head = resolved.submit_model.rpartition("__")
    if head not in heads:
        raise KaggleTLError(f"setting submit_model: {resolved.submit_model!r} names none of the heads "
                            f"{', '.join(heads)}{did_you_mean(head, heads)}")
    if named and resolved.submit_model.rpartition("__")[0] != model_name(resolved, head).rpartition("__")[0]:
        raise KaggleTLError(f"setting submit_model: {resolved.submit_model!r} is not a model of this run "
                            f"(backbones {prefix!r}); its {head} model is {model_name(resolved, head)!r}")

