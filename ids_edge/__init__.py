"""ids-edge: compile CICIoMT2024 intrusion-detection CNNs into int8 TFLite models for gateways.

TensorFlow Model Optimization 0.8 works only with Keras 2 (the ``tf_keras`` package), so the
package selects Keras 2 before anything imports TensorFlow. Import TensorFlow through
:func:`ids_edge._tf.import_tensorflow` to get the checked pair.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
