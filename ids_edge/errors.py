"""Exception types that the command line turns into one-line messages."""


class IdsEdgeError(Exception):
    """An error in the user's input or environment, reported without a traceback.

    The message names what failed, on which file, line, column or option value, and what to do.
    """

    exit_code = 2


class MissingRuntimeError(IdsEdgeError):
    """An optional runtime or tool (LiteRT, tflite-runtime, edgetpu_compiler) is not installed."""

    exit_code = 3


class GateError(IdsEdgeError):
    """An exported variant lost more accuracy than the user allows, so it was not written."""

    exit_code = 4
