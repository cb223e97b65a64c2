"""kaggle_tl: pretrained-CNN features -> CV heads -> honest scores -> Kaggle submissions.

The public API; everything is imported lazily so that `import kaggle_tl` stays cheap (no
TensorFlow until a backbone is built).
"""
import os

from kaggle_tl.errors import KaggleTLError

# TensorFlow turns oneDNN on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX; on AVX2 CPUs it
# runs Eigen's kernels, whose float32 results change with the thread count (a Dask worker's one
# thread and the local engine's two gave different features) and which are 1.6-1.7x slower
# (benchmarks/tf_kernels.py). TensorFlow reads this once, when it is imported, which is after this.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
__all__ = ["KaggleTLError", "RunConfig", "RunRecord", "Predictions", "__version__", "compare_strategies",
           "create_backbone", "create_head", "create_strategy", "list_backbones", "list_heads", "list_strategies",
           "resolve_config", "run"]

_LAZY = {
    "RunConfig": "kaggle_tl.config", "resolve_config": "kaggle_tl.config", "run": "kaggle_tl.pipeline",
    "RunRecord": "kaggle_tl.runs.record", "Predictions": "kaggle_tl.runs.record",
    "create_backbone": "kaggle_tl.backbones", "list_backbones": "kaggle_tl.backbones",
    "create_head": "kaggle_tl.heads.base", "list_heads": "kaggle_tl.heads.base",
    "create_strategy": "kaggle_tl.ensemble.strategies", "compare_strategies": "kaggle_tl.ensemble.strategies",
    "list_strategies": "kaggle_tl.ensemble.strategies",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kaggle_tl' has no attribute {name!r}")
