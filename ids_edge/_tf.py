"""Import TensorFlow with Keras 2 (``tf_keras``), as TensorFlow Model Optimization requires."""

import contextlib
import logging
import os
import sys

from ids_edge.errors import IdsEdgeError


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what native code writes to file descriptor 2 inside the block, unless -vv is on.

    TensorFlow, its converter and LiteRT print start-up lines from C++ (absl, oneDNN, XNNPACK)
    that Python logging cannot filter. Python exceptions are unaffected: they are raised, not printed.
    """
    if logging.getLogger("ids_edge").isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow():
    """Import TensorFlow and ``tf_keras`` and check that Keras 2 is the active Keras.

    Returns:
        The ``(tensorflow, tf_keras)`` module pair.

    Raises:
        IdsEdgeError: TensorFlow was imported with Keras 3 before ids-edge could select Keras 2.
    """
    if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise IdsEdgeError(
            "TensorFlow was imported before ids-edge with Keras 3 active. "
            "Set TF_USE_LEGACY_KERAS=1 before importing TensorFlow, or import ids_edge first."
        )
    os.environ["TF_USE_LEGACY_KERAS"] = "1"

    with quiet_native_stderr():
        import tensorflow as tf
        import tf_keras

    return tf, tf_keras
