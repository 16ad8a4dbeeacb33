"""Import TensorFlow with Keras 2 (``tf_keras``), as TensorFlow Model Optimization requires."""

import os
import sys

from ids_edge.errors import IdsEdgeError


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

    import tensorflow as tf
    import tf_keras

    return tf, tf_keras
