"""Where a backbone's Keras model runs: TensorFlow, or OpenVINO (fp32 or bf16) from the same model.

``compile_backbone`` turns a Keras model and its preprocessing into one callable, uint8 RGB batch
-> list of (N, d) float32 arrays (one per model output), whatever the runtime. For OpenVINO the
model is converted once to an IR (``model.xml`` + ``model.bin``, the Keras graph with float32
weights) in a folder the caller chooses, and later processes read it from there. The folder also
holds ``checksums.json``: its name (the cache key it was converted for) and the files' sha256. A
folder whose files are missing, truncated or altered, that names another key, or whose model has
other outputs is named on one line and converted again (into the writable folder: a read-only
layer's is never written), never used. Preprocessing runs in numpy for both runtimes, so OpenVINO
is fed exactly what TensorFlow is.

Nothing here imports TensorFlow until a TensorFlow model is converted or run; ``check_runtime``
never does.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from importlib import metadata
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from kaggle_tl.errors import KaggleTLError, one_line
from kaggle_tl.files import atomic_write_bytes, disk_errors_as_one_line, temp_path

log = logging.getLogger(__name__)

RUNTIMES = ("tensorflow", "openvino")
PRECISIONS = ("fp32", "bf16")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 features giving OpenVINO native bfloat16 (named in errors)
IR_NAME = "model.xml"  # in ir_dir, beside model.bin
IR_FILES = (IR_NAME, "model.bin")
IR_STAMP = "checksums.json"  # in ir_dir: {"key": the folder's name, "sha256": {file: digest}}

Features = Callable[[np.ndarray], "list[np.ndarray]"]


def default_runtime() -> str:
    """OpenVINO where it is installed and no NVIDIA GPU is visible, else TensorFlow.

    OpenVINO fp32 gives TensorFlow's features (relative difference ~3e-6) 2-2.5x faster on the
    CPUs measured (BENCHMARKS.md); on an NVIDIA GPU, TensorFlow's CUDA build is the fast path.
    Asked without importing either.
    """
    if importlib.util.find_spec("openvino") is None:
        return "tensorflow"
    gpu = Path("/proc/driver/nvidia/gpus").is_dir() and os.environ.get("CUDA_VISIBLE_DEVICES", "x") not in ("", "-1")
    return "tensorflow" if gpu else "openvino"


def check_runtime(runtime: str, precision: str) -> None:
    """Raise a one-line KaggleTLError unless ``runtime`` can run at ``precision`` here."""
    if runtime not in RUNTIMES:
        raise KaggleTLError(f"runtime: unknown {runtime!r}; choose from {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise KaggleTLError(f"precision: unknown {precision!r}; choose from {', '.join(PRECISIONS)}")
    if runtime == "tensorflow":
        if precision != "fp32":
            raise KaggleTLError(f"precision {precision} needs OpenVINO: use --runtime openvino "
                                f"(TensorFlow runs fp32 only)")
        return
    _import_openvino()
    if precision == "bf16" and not _cpu_has_bf16():
        raise KaggleTLError(f"precision bf16: this CPU ({_cpu_model()}) has no native bfloat16 "
                            f"({' or '.join(BF16_CPU_FLAGS)} missing); use --precision fp32")


def runtime_id(runtime: str, precision: str) -> str:
    """What a feature cache key records of the runtime: it changes whenever the numbers can.

    TensorFlow's is its bare name, as cache keys made before runtimes existed did not record a
    TensorFlow version; OpenVINO's names its version, as a new release may fuse kernels differently.
    """
    check_runtime(runtime, precision)
    if runtime == "tensorflow":
        return "tensorflow"
    return f"openvino-{metadata.version('openvino')}-{precision}"


def compile_backbone(model, input_size: int, preprocess: Callable[[np.ndarray], np.ndarray], runtime: str,
                     precision: str, ir_dir: Path | None, threads: int | None = None,
                     ir_layers: Sequence[Path] = ()) -> Features:
    """A callable: (N, S, S, 3) uint8 RGB -> list of (N, d_i) float32 arrays, one per model output.

    Parameters
    ----------
    model : Keras model mapping ``preprocess``-ed float32 NHWC images to pooled (N, d) outputs.
    preprocess : float32 RGB in [0, 255] -> model input; may work in place (it is given a copy).
    ir_dir : OpenVINO only: the folder holding (or to receive) the converted model. It must be
        keyed by everything the converted graph depends on (backbone, weights, size, outputs,
        OpenVINO version). None converts in memory and saves nothing.
    threads : OpenVINO only: its inference threads (default: every core).
    ir_layers : OpenVINO only: read-only folders of the same converted model (the ``--cache-from``
        layers'), read when ``ir_dir`` holds none that verifies, never written.
    """
    check_runtime(runtime, precision)
    if runtime == "tensorflow":
        return _tensorflow_features(model, preprocess)
    return _openvino_features(model, input_size, preprocess, precision, ir_dir, threads, ir_layers)


IR_FORMAT = 1  # bump when the conversion changes (the graph converted, its inputs or outputs)


def ir_key_parts() -> dict[str, str]:
    """What a converted model depends on besides the backbone's identity: the converter's and its inputs' versions."""
    return {"format": str(IR_FORMAT), **{name: metadata.version(name) for name in ("openvino", "tensorflow", "keras")}}


def _tensorflow_features(model, preprocess) -> Features:
    def features(images: np.ndarray) -> list[np.ndarray]:
        # preprocess_input works in place on float arrays: hand it a copy so the caller's batch
        # (from which the other views are made) is never touched.
        x = preprocess(images.astype(np.float32, copy=True))
        return _as_list(model.predict_on_batch(x), len(images))
    return features


def _as_list(outputs, n: int) -> list[np.ndarray]:
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [np.asarray(o, dtype=np.float32).reshape(n, -1) for o in outputs]


# -- OpenVINO -----------------------------------------------------------------------------------
def _import_openvino():
    try:
        import openvino
    except ImportError:
        raise KaggleTLError('runtime openvino: OpenVINO is not installed; pip install "kaggle-tl[openvino]"') from None
    return openvino


def _cpu_has_bf16() -> bool:
    # OpenVINO's own answer, not /proc/cpuinfo: it is what decides whether bf16 runs natively,
    # on any OS and architecture; asked for bf16 without it, OpenVINO silently runs fp32.
    return "BF16" in _import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        return platform.processor() or "unknown"


def _openvino_features(model, input_size: int, preprocess, precision: str, ir_dir: Path | None,
                       threads: int | None, ir_layers: Sequence[Path] = ()) -> Features:
    ov = _import_openvino()
    core = ov.Core()
    graph = _read_or_convert(core, model, input_size, ir_dir, ir_layers)
    config = {
        # Explicit always: on CPUs with bfloat16 OpenVINO's default *is* bf16, which would change
        # the features without the cache key saying so.
        "INFERENCE_PRECISION_HINT": "f32" if precision == "fp32" else "bf16",
        # One single-threaded stream per core, each fed a part of the batch: no per-layer barrier
        # across cores, so decode threads taking a core slow it less; 10-20% less CPU per image
        # than one 2-thread stream on 2 cores (benchmarks/runtimes.py).
        "PERFORMANCE_HINT": "THROUGHPUT",
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    compiled = core.compile_model(graph, "CPU", config)
    got, want = compiled.get_property("INFERENCE_PRECISION_HINT"), ov.Type.f32 if precision == "fp32" else ov.Type.bf16
    if got != want:  # not expected (check_runtime refuses bf16 where OpenVINO lacks it), but never silently
        raise KaggleTLError(f"precision {precision}: OpenVINO compiled the model as {got.get_type_name()}, "
                            f"not {want.get_type_name()}; use --runtime tensorflow")
    return _BatchRunner(ov, compiled, preprocess)


SUB_BATCH = 8  # images per inference request, at most: a batch of 32 runs as 4 (activations stay in cache)


class _BatchRunner:
    """Runs a batch as sub-batches on the compiled model's streams; outputs in the batch's order.

    OpenVINO's CPU results do not depend on the batch size, the split or the thread count
    (bit-identical, measured for EfficientNet-Lite0 fp32 and bf16), so splitting changes no number.
    Not thread-safe: one batch at a time, as feature extraction calls it.
    """

    def __init__(self, ov, compiled, preprocess):
        self.preprocess = preprocess
        self.n_outputs = len(compiled.outputs)
        self.queue = ov.AsyncInferQueue(compiled, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.queue.set_callback(self._done)
        self.parts: dict[int, list[np.ndarray]] = {}

    def _done(self, request, start: int) -> None:
        # Copied here: the request's output buffers are reused by its next sub-batch.
        self.parts[start] = [request.get_output_tensor(i).data.copy() for i in range(self.n_outputs)]

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        # In numpy on a copy, exactly as for TensorFlow (preprocess_input works in place). Folded
        # into the graph instead (uint8 input, PrePostProcessor), the same features came out
        # (bit-identical for Lite0) but no faster: within +-6% CPU per image, either way by run.
        x = self.preprocess(images.astype(np.float32, copy=True))
        self.parts.clear()
        # At least one part per request (stream), so that every core has work.
        n_parts = min(len(x), max(len(self.queue), -(-len(x) // SUB_BATCH)))
        for part in np.array_split(np.arange(len(x)), n_parts):
            start, stop = int(part[0]), int(part[-1]) + 1
            # share_inputs: OpenVINO reads x's memory in place, alive until wait_all returns.
            self.queue.start_async({0: x[start:stop]}, userdata=start, share_inputs=True)
        self.queue.wait_all()
        parts = [self.parts[start] for start in sorted(self.parts)]
        return [np.concatenate([p[i] for p in parts]).reshape(len(images), -1) for i in range(self.n_outputs)]


def _read_or_convert(core, model, input_size: int, ir_dir: Path | None, ir_layers: Sequence[Path] = ()):
    """The model's OpenVINO graph: read from the first of ``ir_dir`` and ``ir_layers`` that verifies, else
    converted (and saved in ``ir_dir``, replacing a damaged one there; a layer's is left as it is)."""
    import openvino as ov

    damaged = []
    for folder in ([Path(ir_dir)] if ir_dir is not None else []) + [Path(f) for f in ir_layers]:
        if not folder.exists():
            continue
        problem = _ir_problem(folder)
        if problem is None:
            try:
                graph = core.read_model(folder / IR_NAME)
            except RuntimeError as exc:  # what OpenVINO raises on a file it cannot parse
                problem = f"unreadable by OpenVINO ({one_line(exc)[:200]})"
            else:
                problem = _outputs_problem(graph, model)
                if problem is None:
                    for other, why in damaged:
                        log.warning("damaged converted model %s: %s; reading %s instead", other, why, folder)
                    return graph
        damaged.append((folder, problem))
    for folder, problem in damaged:
        log.warning("damaged converted model %s: %s; converting again%s", folder, problem,
                    f" into {ir_dir}" if ir_dir is not None else " (in memory)")
    graph = convert_keras(model, input_size)
    if ir_dir is not None:
        if any(folder == Path(ir_dir) for folder, _ in damaged):
            _discard(Path(ir_dir))
        _save_atomically(ov, graph, Path(ir_dir))
    return graph


def _ir_problem(ir_dir: Path) -> str | None:
    """Why the converted model in ``ir_dir`` is not provably the one converted for it (its checksums.json)."""
    try:
        stamp = json.loads((ir_dir / IR_STAMP).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no {IR_STAMP} (converted by an older kaggle_tl, or not by kaggle_tl)"
    except (OSError, ValueError) as exc:
        return f"{IR_STAMP} unreadable ({type(exc).__name__}: {exc})"
    if not isinstance(stamp, dict) or not isinstance(stamp.get("sha256"), dict):
        return f"{IR_STAMP} holds no checksums"
    if stamp.get("key") != ir_dir.name:
        return f"converted for key {stamp.get('key')}, asked for {ir_dir.name}"
    for name in IR_FILES:
        try:
            digest = _sha256(ir_dir / name)
        except FileNotFoundError:
            return f"{name} missing"
        except OSError as exc:
            return f"{name} unreadable ({exc.strerror or exc})"
        if digest != stamp["sha256"].get(name):
            return f"{name} does not match its checksum (truncated or altered)"
    return None


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _discard(ir_dir: Path) -> None:
    """Move a damaged converted model out of the way (a temporary name first, so a kill leaves no half folder)."""
    aside = temp_path(ir_dir)
    try:
        os.replace(ir_dir, aside)
    except OSError:  # another process moved or replaced it first
        return
    shutil.rmtree(aside, ignore_errors=True)


def convert_keras(model, input_size: int):
    """A Keras model -> an OpenVINO graph with a dynamic batch, in memory.

    Through a tf.function, not a SavedModel: exporting one fails on the EfficientNet-Lite port's
    layer names, which start with "_" as the PyTorch modules' do.
    """
    import openvino as ov
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, input_size, input_size, 3], tf.float32)])
    def forward(images):
        out = model(images, training=False)
        # A list even for one output: OpenVINO then numbers the outputs in the model's order.
        return list(out) if isinstance(out, (list, tuple)) else [out]

    log.info("converting %s (%d px, %d output(s)) to OpenVINO", model.name, input_size, len(model.outputs))
    return ov.convert_model(forward)


def _save_atomically(ov, graph, ir_dir: Path) -> None:
    """Write the IR and its checksums to a temporary folder beside ``ir_dir``, then rename it into place.

    Another process converting the same model at the same time may win the rename: its IR is
    the same graph, so ours is dropped. A killed conversion's folder carries its process id, for
    ``files.remove_stale_temps``.
    """
    tmp = temp_path(ir_dir)
    try:
        with disk_errors_as_one_line(ir_dir / IR_NAME):
            tmp.mkdir(parents=True)  # mode from the umask (not mkdtemp's 0700): a shared cache stays readable
            ov.save_model(graph, tmp / IR_NAME, compress_to_fp16=False)  # fp16 weights would change the numbers
            stamp = {"key": ir_dir.name, "sha256": {name: _sha256(tmp / name) for name in IR_FILES}}
            atomic_write_bytes(tmp / IR_STAMP, json.dumps(stamp, indent=1).encode())
        try:
            os.replace(tmp, ir_dir)  # replaces an empty ir_dir; fails on a full one (a winner's)
        except OSError:
            if not (ir_dir / IR_NAME).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _outputs_problem(graph, model) -> str | None:
    # The caller's key names the IR; a cheap guard against a key that forgot something (outputs).
    want = [o.shape[-1] for o in model.outputs]
    have = [d.get_length() if d.is_static else None for d in (o.get_partial_shape()[-1] for o in graph.outputs)]
    return None if want == have else f"a model with output sizes {have}, not {want}"
