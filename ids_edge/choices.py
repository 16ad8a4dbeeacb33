"""Sets of choices, defined once for the command line, the library and the docs."""

TASKS = (2, 6, 19)
"""Classification tasks by number of classes."""

QUANTIZE_MODES = ("none", "float16", "dynamic", "int8")
"""``none`` keeps float32; ``dynamic`` quantizes weights only; ``int8`` is full-integer."""

IO_TYPES = ("int8", "float")
"""Input and output tensor types of an ``int8`` model."""

TARGETS = ("rpi", "coral")
"""Devices that ``ids-edge bundle`` prepares a folder for."""

BENCH_TARGETS = ("host", "coral")
"""Targets of ``ids-edge bench``: the host CPU alone, or the host CPU plus Coral Edge TPU readiness."""

