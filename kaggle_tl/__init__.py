"""kaggle_tl: pretrained-CNN features -> CV heads -> honest scores -> Kaggle submissions."""
from kaggle_tl.errors import KaggleTLError

__version__ = "0.1.0"
__all__ = ["KaggleTLError", "__version__"]


def run(config):
    """Run the whole pipeline (see kaggle_tl.pipeline.run); imported lazily to keep import cheap."""
    from kaggle_tl.pipeline import run as _run

    return _run(config)
