"""Measure the tensor arena a model needs in the TensorFlow Lite Micro (TFLM) Python interpreter.

The ``tflite-micro`` package's interpreter allocates through TFLM's ``RecordingMicroAllocator``.
Its ``print_allocations()`` writes ``[RecordingMicroAllocator] Arena allocation total N bytes``
to standard error, and the Python API returns no number, so this module parses that line.

That total is not always enough. It is the persistent (tail) section plus the planned
activation (head) section after preparation. A kernel's ``Prepare`` also keeps temporary
``TfLiteTensor`` structs above the head (FULLY_CONNECTED keeps four while it computes its
quantization data), and TFLM frees them before it prints the total. In TFLM's
``single_arena_buffer_allocator.cc``, ``AllocatePersistentBuffer`` checks the new tail only
against the head, not against those temporary allocations. So in an arena between the reported
total and the real peak, a persistent allocation silently overwrites a live temporary tensor.
TFLM then fails a check (seen: ``kernel_util.cc:516 false was not true`` in FULLY_CONNECTED's
Prepare), crashes with SIGSEGV, or could compute a wrong output. With tflite-micro
0.dev20261023 this happened for the ids-edge CNN with fewer than 24 features, whose activations
are small.

So :func:`measure_arena` runs every trial in a child process (``tflm_probe.py``), compares each
output with the output of a large arena, and searches upward from the reported total for the
smallest arena that gives the same output.
"""

import logging
import pathlib
import re
import signal
import subprocess
import sys
import tempfile

import numpy as np

from ids_edge.errors import IdsEdgeError, MissingRuntimeError

logger = logging.getLogger(__name__)

TRIAL_ARENA_SIZES = (64 * 1024, 1024 * 1024, 16 * 1024 * 1024, 64 * 1024 * 1024)
"""Arena sizes in bytes tried in turn until TFLM runs the model."""

SEARCH_GROWTH = 1.25
"""Factor by which the arena grows while it searches for an arena that runs the model."""

SEARCH_RESOLUTION = 16
"""Bytes to which the arena search is exact, TFLM's arena alignment."""

PROBE_SCRIPT = pathlib.Path(__file__).with_name("tflm_probe.py")
"""Script that runs one TFLM inference in a child process."""

PROBE_TIMEOUT_SECONDS = 300
"""Maximum time of one TFLM trial in seconds."""

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


def run_tflm(model_data, arena_size, input_data=None):
    """Run one TFLM inference with ``arena_size`` bytes of arena in a child process.

    A crash of TFLM, such as SIGSEGV from a too small arena, ends only the child process.

    Args:
        model_data: The ``.tflite`` bytes.
        arena_size: Tensor arena in bytes.
        input_data: Input 0, reshaped to the model's input shape, or None for the fixed
            pseudo-random input of :func:`firmware_bridge.tflm_probe.probe_input`.

    Returns:
        ``(output, log)``: output 0 as a NumPy array, or None when TFLM failed or crashed, and
        the text TFLM printed (its error messages, or the allocation report on success).

    Raises:
        MissingRuntimeError: The ``tflite-micro`` package is not installed.
    """
    _runtime()
    arena_size = int(arena_size)

    with tempfile.TemporaryDirectory(prefix="ids-edge-tflm-") as folder:
        folder = pathlib.Path(folder)
        model_path = folder / "model.tflite"
        model_path.write_bytes(bytes(model_data))
        input_argument = "-"
        if input_data is not None:
            input_argument = str(folder / "input.npy")
            np.save(input_argument, np.asarray(input_data))
        output_path = folder / "output.npy"

        command = [sys.executable, str(PROBE_SCRIPT), str(model_path), str(arena_size), input_argument, str(output_path)]
        try:
            completed = subprocess.run(command, capture_output=True, timeout=PROBE_TIMEOUT_SECONDS, check=False)
        except subprocess.TimeoutExpired:
            return None, f"TFLM did not finish within {PROBE_TIMEOUT_SECONDS} s with an arena of {arena_size} bytes"

        log = completed.stderr.decode("utf-8", "replace")
        if completed.returncode < 0:
            return None, f"{log}\nTFLM crashed with {_signal_name(-completed.returncode)} with an arena of {arena_size} bytes"
        if completed.returncode != 0 or not output_path.exists():
            return None, log
        return np.load(output_path), log


def measure_arena(model_data, model_path):
    """Find the smallest tensor arena in bytes with which TFLM runs the model correctly.

    Runs the model with the first of :data:`TRIAL_ARENA_SIZES` that works and takes its output
    as the reference. Then it tries the total that TFLM's RecordingMicroAllocator reported. If
    that fails or gives another output, it searches upward to :data:`SEARCH_RESOLUTION` bytes
    for the smallest arena that gives the reference output (see the module docstring for why).

    Returns:
        The reported total when it suffices, or else the smallest arena found, in bytes.

    Raises:
        IdsEdgeError: TFLM cannot run the model even with the largest trial arena (for example
            an operator it lacks), or needs more than that arena.
        MissingRuntimeError: The ``tflite-micro`` package is not installed.
    """
    reference, log, known_good = _run_trial_sizes(model_data, model_path)

    match = TOTAL_PATTERN.search(log)
    if match is None:
        raise IdsEdgeError(
            f"TensorFlow Lite Micro {tflm_version()} printed no 'Arena allocation total' line, so the "
            f"tensor arena of {model_path} cannot be measured. Install another tflite-micro version."
        )
    reported = int(match.group(1))

    if _runs_correctly(model_data, reported, reference):
        logger.debug("TFLM %s arena for %s: %d bytes", tflm_version(), model_path, reported)
        return reported

    needed = _search_arena(model_data, reference, _align_up(reported), known_good)
    logger.info(
        "TFLM %s reported %d bytes of tensor arena for %s, but the model needs %d bytes, because the "
        "report leaves out temporary allocations made while TFLM prepares the kernels",
        tflm_version(),
        reported,
        model_path,
        needed,
    )
    return needed


def _run_trial_sizes(model_data, model_path):
    """Return ``(output, log, arena_size)`` of the first trial arena size that runs the model.

    A too small arena can make TFLM fail with messages that do not mention memory, or crash, so
    every failure moves on to the next size. Only the failure of the largest size is reported.
    """
    log = ""
    for trial_size in TRIAL_ARENA_SIZES:
        output, log = run_tflm(model_data, trial_size)
        if output is not None:
            return output, log, trial_size
        logger.debug("TFLM failed with an arena of %d bytes, trying a larger one: %s", trial_size, _last_lines(log))

    if ARENA_TOO_SMALL_PATTERN.search(log):
        raise IdsEdgeError(
            f"TensorFlow Lite Micro needs more than {TRIAL_ARENA_SIZES[-1]} bytes of tensor arena for "
            f"{model_path} ({_last_lines(log)}), which no gateway microcontroller has. Use a smaller model."
        )
    raise IdsEdgeError(
        f"TensorFlow Lite Micro {tflm_version()} cannot run {model_path} even with {TRIAL_ARENA_SIZES[-1]} "
        f"bytes of tensor arena: {_last_lines(log)}. Export the model with builtin int8 operators that "
        "TFLite Micro supports."
    )


def _search_arena(model_data, reference, failing, working):
    """Search ``(failing, working]`` for the smallest arena in bytes that runs the model correctly.

    Grows the arena by :data:`SEARCH_GROWTH` until it works, then bisects to a multiple of
    :data:`SEARCH_RESOLUTION`. ``working`` must run the model correctly. The search assumes that
    every larger arena also works, because a larger arena only moves the tail further away from
    the temporary allocations.
    """
    while True:
        candidate = _align_up(failing * SEARCH_GROWTH)
        if candidate >= working:
            break
        if _runs_correctly(model_data, candidate, reference):
            working = candidate
            break
        failing = candidate

    while working - failing > SEARCH_RESOLUTION:
        middle = _align_up((failing + working) // 2)
        if middle >= working:
            break
        if _runs_correctly(model_data, middle, reference):
            working = middle
        else:
            failing = middle
    return working


def _runs_correctly(model_data, arena_size, reference):
    output, log = run_tflm(model_data, arena_size)
    if output is None:
        logger.debug("TFLM failed with an arena of %d bytes: %s", arena_size, _last_lines(log))
        return False
    if not np.array_equal(output, reference):
        logger.debug("TFLM gave another output with an arena of %d bytes, so that arena is too small", arena_size)
        return False
    return True


def _align_up(size):
    return -(-int(size) // SEARCH_RESOLUTION) * SEARCH_RESOLUTION


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_lines(log, count=3):
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return " / ".join(lines[-count:]) or "no message"
