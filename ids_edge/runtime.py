"""Find a TFLite interpreter: ai-edge-litert, then tflite-runtime, then TensorFlow's own."""

import dataclasses
import logging

from ids_edge.errors import MissingRuntimeError

logger = logging.getLogger(__name__)

RUNTIMES = ("ai-edge-litert", "tflite-runtime", "tensorflow")
"""Runtime names in the order they are tried."""


@dataclasses.dataclass(frozen=True)
class Runtime:
    """A loaded TFLite runtime: its package name, version and ``Interpreter`` class."""

    name: str
    version: str
    interpreter_class: type


def _load(name):
    if name == "ai-edge-litert":
        import ai_edge_litert
        from ai_edge_litert.interpreter import Interpreter

        return Runtime(name, getattr(ai_edge_litert, "__version__", "unknown"), Interpreter)
    if name == "tflite-runtime":
        import tflite_runtime
        from tflite_runtime.interpreter import Interpreter

        return Runtime(name, getattr(tflite_runtime, "__version__", "unknown"), Interpreter)

    from ids_edge._tf import import_tensorflow

    tf, _ = import_tensorflow()
    return Runtime(name, tf.__version__, tf.lite.Interpreter)


def _try_load(name):
    try:
        return _load(name), None
    except (ImportError, AttributeError) as error:
        reason = str(error) or type(error).__name__
        if "_ARRAY_API" in reason or "numpy.core.multiarray" in reason:
            reason += " (tflite-runtime 2.14 is built for numpy 1.x and fails under numpy 2)"
        return None, reason


def load_problem(name):
    """Return why runtime ``name`` cannot be loaded, or None when it loads."""
    return _try_load(name)[1]


def find_runtime(preferred=None):
    """Load the first TFLite runtime that imports.

    Args:
        preferred: One name from :data:`RUNTIMES` to use alone, or None to try them in order.

    Returns:
        The loaded :class:`Runtime`.

    Raises:
        MissingRuntimeError: No runtime imports. The message gives each reason, including
            tflite-runtime 2.14's failure under numpy 2 ("_ARRAY_API not found").
    """
    names = RUNTIMES if preferred is None else (preferred,)
    reasons = []
    for name in names:
        runtime, reason = _try_load(name)
        if runtime is None:
            logger.debug("Runtime %s skipped: %s", name, reason)
            reasons.append(f"{name}: {reason}")
            continue
        logger.debug("Using TFLite runtime %s %s", runtime.name, runtime.version)
        return runtime

    if preferred is not None:
        raise MissingRuntimeError(
            f"No TFLite runtime could be loaded ({reasons[0]}). Install {preferred}, or drop --runtime "
            "to use the first runtime that loads."
        )
    raise MissingRuntimeError(
        "No TFLite runtime could be loaded (" + "; ".join(reasons) + "). "
        "Install one with 'pip install ai-edge-litert', or on 32-bit Raspberry Pi OS "
        "'pip install tflite-runtime \"numpy<2\"'."
    )


def make_interpreter(model_content, runtime=None, num_threads=None):
    """Create and allocate an interpreter for a ``.tflite`` flatbuffer.

    Args:
        model_content: The model file's bytes.
        runtime: A :class:`Runtime`, or None for :func:`find_runtime`'s choice.
        num_threads: CPU threads for the interpreter, or None for the runtime's default.

    Returns:
        The interpreter with its tensors allocated.
    """
    from ids_edge._tf import quiet_native_stderr

    runtime = runtime or find_runtime()
    with quiet_native_stderr():
        interpreter = runtime.interpreter_class(model_content=bytes(model_content), num_threads=num_threads)
        interpreter.allocate_tensors()
    return interpreter
