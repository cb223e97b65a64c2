"""Keep TensorFlow's start-up chatter off a user's terminal unless they ask for it (``-v``).

TensorFlow prints its start-up lines (oneDNN notes, CUDA probing on a machine without a GPU)
from C++ before absl's logging is initialised, so TF_CPP_MIN_LOG_LEVEL cannot hide them: the
only way is to point file descriptor 2 elsewhere while TensorFlow is imported and its devices
are first listed. Python exceptions still propagate; the CLI prints them afterwards.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

verbose = False  # set by the CLI's -v


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
    if verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow() -> None:
    """Import Keras/TensorFlow and probe devices once, quietly unless verbose."""
    if "keras" in sys.modules and "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1" if verbose else "3")  # what is printed after start-up
    with stderr_silenced():
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices()
