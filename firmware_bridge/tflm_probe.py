"""Run one TensorFlow Lite Micro (TFLM) inference in a child process of :mod:`firmware_bridge.arena`.

Usage: ``python tflm_probe.py MODEL.tflite ARENA_BYTES INPUT.npy|- OUTPUT.npy``

TFLM can corrupt its own arena and crash the process when the arena is slightly too small (see
:mod:`firmware_bridge.arena`), so each trial arena runs here, where a crash ends only this
process. With ``-`` as input, the input is :func:`probe_input`. Exit status 0 means that
``OUTPUT.npy`` was written and TFLM's allocation report is on standard error. Exit status 1
means that TFLM failed, and its messages are on standard error.

This file runs as a script and imports only NumPy and ``tflite-micro``, so a trial starts fast.
"""

import sys

import numpy as np

PROBE_INPUT_SEED = 0
"""Seed of the pseudo-random input, so that every trial of one model gets the same input."""


def probe_input(shape, dtype):
    """Return a fixed pseudo-random input over the dtype's whole range.

    A nonzero input makes a damaged weight, bias or requantization parameter change the output,
    which an all-zero input can hide.
    """
    generator = np.random.default_rng(PROBE_INPUT_SEED)
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        limits = np.iinfo(dtype)
        return generator.integers(limits.min, limits.max, size=shape, endpoint=True, dtype=dtype)
    return generator.standard_normal(size=shape).astype(dtype)


def main(argv):
    model_path, arena_size, input_path, output_path = argv
    from tflite_micro.python.tflite_micro import runtime

    with open(model_path, "rb") as model_file:
        model_data = model_file.read()

    try:
        interpreter = runtime.Interpreter.from_bytes(model_data, arena_size=int(arena_size))
        details = interpreter.get_input_details(0)
        if input_path == "-":
            input_data = probe_input(details["shape"], details["dtype"])
        else:
            input_data = np.load(input_path)
        interpreter.set_input(np.asarray(input_data, dtype=details["dtype"]).reshape(details["shape"]), 0)
        interpreter.invoke()
        output = interpreter.get_output(0)
        interpreter.print_allocations()
    except (RuntimeError, ValueError) as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 1

    np.save(output_path, output)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
