"""Measure the tensor arena a model needs in the TensorFlow Lite Micro (TFLM) Python interpreter.

The ``tflite-micro`` package's interpreter allocates through TFLM's ``RecordingMicroAllocator``.
Its ``print_allocations()`` writes ``[RecordingMicroAllocator] Arena allocation total N bytes``
to the process's standard error (file descriptor 2, from C++), and TFLM's interpreter README
calls that total the actual arena size. The Python API returns no number, so this module
captures file descriptor 2 and parses the line.
"""

import contextlib
import logging
import os
import re
import sys
import tempfile

import numpy as np

from ids_edge.errors import IdsEdgeError, MissingRuntimeError

logger = logging.getLogger(__name__)

TRIAL_ARENA_SIZES = (64 * 1024, 1024 * 1024, 16 * 1024 * 1024, 64 * 1024 * 1024)
"""Arena sizes in bytes tried in turn until TFLM can allocate the model's tensors."""

TOTAL_PATTERN = re.compile(r"Arena allocation total (\d+) bytes")
ARENA_TOO_SMALL_PATTERN = re.compile(r"Failed to (allocate|resize buffer)|missing: \d+")


def _runtime():
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError as error:
        raise MissingRuntimeError(
            f"The TensorFlow Lite Micro interpreter is needed to measure the tensor arena ({error}). "
            "Install it with 'pip install tflite-micro'."
        ) from None
    return runtime


def tflm_version():
    """Return the installed ``tflite-micro`` package version, or ``"unknown"``."""
    try:
        from tflite_micro.python.tflite_micro import _version
    except ImportError:
        return "unknown"
    return getattr(_version, "__version__", "unknown")


@contextlib.contextmanager
def captured_stderr_fd():
    """Redirect file descriptor 2 to a temporary file; yield a list that receives its text on exit.

    TFLM prints from C++ straight to file descriptor 2, which ``contextlib.redirect_stderr``
    cannot catch because it only swaps the Python object.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    captured = []
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


def run_tflm(model_data, arena_size, input_data=None):
    """Create a TFLM interpreter with ``arena_size`` bytes, run one inference and return the output.

    Args:
        model_data: The ``.tflite`` bytes.
        arena_size: Tensor arena in bytes.
        input_data: Input 0 with the model's input shape and dtype, or None for zeros.

    Returns:
        ``(output, log)``: output 0 as a NumPy array, or None when TFLM failed, and the text TFLM
        printed (its error messages, or the allocation report on success).
    """
    runtime = _runtime()
    output = None
    error_text = ""
    with captured_stderr_fd() as log:
        try:
            interpreter = runtime.Interpreter.from_bytes(bytes(model_data), arena_size=int(arena_size))
            details = interpreter.get_input_details(0)
            if input_data is None:
                input_data = np.zeros(details["shape"], dtype=details["dtype"])
            interpreter.set_input(np.asarray(input_data, dtype=details["dtype"]).reshape(details["shape"]), 0)
            interpreter.invoke()
            output = interpreter.get_output(0)
            interpreter.print_allocations()
        except (RuntimeError, ValueError) as error:
            error_text = f"{type(error).__name__}: {error}"
    return output, log[0] + error_text


def measure_arena(model_data, model_path):
    """Measure the bytes of tensor arena the model uses in TFLM, and check that exactly that suffices.

    Returns:
        The arena in bytes reported by TFLM's RecordingMicroAllocator after one inference.

    Raises:
        IdsEdgeError: TFLM cannot run the model (for example an operator it lacks), or does not
            run with the measured arena.
    """
    log = ""
    for trial_size in TRIAL_ARENA_SIZES:
        output, log = run_tflm(model_data, trial_size)
        if output is not None:
            break
        if not ARENA_TOO_SMALL_PATTERN.search(log):
            raise IdsEdgeError(
                f"TensorFlow Lite Micro {tflm_version()} cannot run {model_path}: {_last_lines(log)}. "
                "Export the model with builtin int8 operators that TFLite Micro supports."
            )
        logger.debug("TFLM arena of %d bytes is too small, trying a larger one", trial_size)
    else:
        raise IdsEdgeError(
            f"TensorFlow Lite Micro needs more than {TRIAL_ARENA_SIZES[-1]} bytes of tensor arena for "
            f"{model_path} ({_last_lines(log)}), which no gateway microcontroller has. Use a smaller model."
        )

    match = TOTAL_PATTERN.search(log)
    if match is None:
        raise IdsEdgeError(
            f"TensorFlow Lite Micro {tflm_version()} printed no 'Arena allocation total' line, so the "
            f"tensor arena of {model_path} cannot be measured. Install another tflite-micro version."
        )
    measured = int(match.group(1))

    output, check_log = run_tflm(model_data, measured)
    if output is None:
        raise IdsEdgeError(
            f"TensorFlow Lite Micro reported {measured} bytes of tensor arena for {model_path} but does "
            f"not run with that arena ({_last_lines(check_log)})."
        )
    logger.debug("TFLM %s arena for %s: %d bytes", tflm_version(), model_path, measured)
    return measured


def _last_lines(log, count=3):
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return " / ".join(lines[-count:]) or "no message"
