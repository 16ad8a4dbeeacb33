"""Run an ids-edge ``.tflite`` model on a device: preprocess real rows, time inference, score it.

This file is standalone: it imports only the Python standard library, numpy and, when a model is
loaded, a TFLite runtime (``ai_edge_litert``, then ``tflite_runtime``, then ``tensorflow.lite``).
``ids-edge bundle`` copies it unchanged into device folders, and the host benchmark imports it,
so both measure latency and accuracy with the same code.

Command line, on the device::

    python3 runner.py --model model.tflite --rows rows.csv --out result.json \
        [--warmup 10] [--runs 200] [--threads 1] [--batch-size 1] [--delegate libedgetpu.so.1]

Preprocessing repeats ``ids_edge.preprocess`` operation for operation in float32 (sanitize,
standardize, quantize), so the device feeds the model the same int8 bytes as the host.

Latency follows TFLite's ``benchmark_model``: warm-up invocations, then timed invocations of
``Interpreter.invoke()`` alone, each timed with ``time.perf_counter_ns`` (a monotonic clock).
Under qemu user-mode emulation the result is marked ``"emulated": true`` and its timings are not
device latency.

Run from a bundle (``bundle.json`` beside this file), it first checks the SHA-256 of every file
that ``bundle.json`` lists and stops on a mismatch, and then compares the outputs' SHA-256 with
the one the host recorded (``outputs_match_expected`` in the result).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import hashlib
import json
import os
import pathlib
import platform
import re
import sys
import time

import numpy as np

try:
    import resource
except ImportError:  # Windows has no resource module.
    resource = None

RESULT_FORMAT = "ids-edge-device-result"
RESULT_FORMAT_VERSION = 1

MODEL_FORMAT = "ids-edge-model"
MODEL_FORMAT_VERSION = 1

RUNTIMES = ("ai-edge-litert", "tflite-runtime", "tensorflow")
"""TFLite runtime names in the order :func:`find_runtime` tries them."""

DEFAULT_LABEL_COLUMN = "label"
BUNDLE_FILE = "bundle.json"
BUNDLE_MODEL_FILE = "model.tflite"
BUNDLE_ROWS_FILE = "rows.csv"
EMULATION_ENV = "IDS_EDGE_EMULATED"
"""Environment variable that overrides emulation detection: ``1`` (emulated) or ``0`` (native)."""

_X86_MACHINES = ("x86_64", "amd64", "i386", "i686")
_ARM_MACHINES = ("aarch64", "arm64", "armv7l", "armv6l", "armv8l")
_QEMU_NAMES = {"aarch64": "qemu-aarch64", "arm64": "qemu-aarch64", "armv7l": "qemu-arm", "armv6l": "qemu-arm"}


class RunnerError(Exception):
    """Invalid input or environment on the device, reported as one line without a traceback."""

    exit_code = 2


class RuntimeNotFoundError(RunnerError):
    """No TFLite runtime or delegate library could be loaded."""

    exit_code = 3


@dataclasses.dataclass(frozen=True)
class RuntimeInfo:
    """A loaded TFLite runtime: package name, version, ``Interpreter`` class and ``load_delegate``."""

    name: str
    version: str
    interpreter_class: type
    load_delegate: object


@dataclasses.dataclass
class RowSet:
    """Raw features (float64, shape (rows, features)) and integer class indices, or None."""

    features: np.ndarray
    labels: np.ndarray | None


@dataclasses.dataclass
class LatencyStats:
    """Latency per flow (one input row) in microseconds, from timed ``invoke()`` calls.

    ``count`` is the number of timed invocations. Each invocation processes ``batch_size`` flows,
    and its time divided by ``batch_size`` is one sample. ``std_us`` is the population standard
    deviation, as ``benchmark_model`` reports it. ``first_us`` and ``warmup_mean_us`` are the first
    warm-up invocation and the warm-up mean, per flow (None without warm-up).
    """

    count: int
    warmup: int
    batch_size: int
    first_us: float | None
    warmup_mean_us: float | None
    mean_us: float
    std_us: float
    min_us: float
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    throughput_flows_per_s: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Runtime and interpreter.


def _load_runtime(name: str) -> RuntimeInfo:
    if name == "ai-edge-litert":
        import ai_edge_litert
        from ai_edge_litert import interpreter as module

        version = getattr(ai_edge_litert, "__version__", "unknown")
        return RuntimeInfo(name, version, module.Interpreter, module.load_delegate)
    if name == "tflite-runtime":
        import tflite_runtime
        from tflite_runtime import interpreter as module

        version = getattr(tflite_runtime, "__version__", "unknown")
        return RuntimeInfo(name, version, module.Interpreter, module.load_delegate)
    if name == "tensorflow":
        import tensorflow as tf

        return RuntimeInfo(name, tf.__version__, tf.lite.Interpreter, tf.lite.experimental.load_delegate)
    raise RunnerError(f"Invalid runtime {name!r}: choose one of {', '.join(RUNTIMES)}.")


def find_runtime(preferred: str | None = None) -> RuntimeInfo:
    """Import the first TFLite runtime that loads, in the order of :data:`RUNTIMES`.

    Parameters
    ----------
    preferred
        One name from :data:`RUNTIMES` to try alone, or None to try them in order.

    Raises
    ------
    RuntimeNotFoundError
        No runtime imports. The message lists each reason and the install commands.
    """
    names = RUNTIMES if preferred is None else (preferred,)
    reasons = []
    for name in names:
        try:
            return _load_runtime(name)
        except (ImportError, AttributeError) as error:
            reason = str(error) or type(error).__name__
            if "_ARRAY_API" in reason or "numpy.core.multiarray" in reason:
                reason += " (tflite-runtime 2.14 is built for numpy 1.x and fails under numpy 2)"
            reasons.append(f"{name}: {reason}")

    raise RuntimeNotFoundError(
        "No TFLite runtime could be loaded (" + "; ".join(reasons) + "). On 64-bit OS run "
        "'pip install numpy ai-edge-litert'; on 32-bit OS run 'pip install tflite-runtime \"numpy<2\"'."
    )


def load_interpreter(model_path, num_threads: int | None = None, delegate=None, runtime: RuntimeInfo | None = None):
    """Create an interpreter for a ``.tflite`` file and allocate its tensors.

    Parameters
    ----------
    model_path
        Path of the ``.tflite`` file.
    num_threads
        CPU threads for the interpreter, or None for the runtime's default.
    delegate
        None, a delegate object, or a delegate library name such as ``"libedgetpu.so.1"``, which
        is loaded with the runtime's ``load_delegate``.
    runtime
        A :class:`RuntimeInfo`, or None for :func:`find_runtime`'s choice.

    Raises
    ------
    RuntimeNotFoundError
        No runtime imports, or the delegate library cannot be loaded.
    RunnerError
        The file is missing or the runtime cannot load or allocate the model.
    """
    runtime = runtime or find_runtime()
    model_path = pathlib.Path(model_path)
    if not model_path.is_file():
        raise RunnerError(f"Model file {model_path} not found. Pass the .tflite file with --model.")

    delegates = None
    if isinstance(delegate, str):
        try:
            delegates = [runtime.load_delegate(delegate)]
        except (OSError, ValueError, RuntimeError) as error:
            raise RuntimeNotFoundError(
                f"Delegate library {delegate!r} could not be loaded ({error}). Install it (for the Coral "
                "Edge TPU: 'sudo apt-get install libedgetpu1-std') or run without --delegate."
            ) from None
    elif delegate is not None:
        delegates = [delegate]

    try:
        interpreter = runtime.interpreter_class(
            model_path=str(model_path), experimental_delegates=delegates, num_threads=num_threads
        )
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        hint = " The file is damaged or not a TFLite model: export it again with 'ids-edge export' and copy it again."
        if "edgetpu" in str(error).lower():
            hint = " This model was compiled for the Edge TPU: run it with --delegate libedgetpu.so.1."
        raise RunnerError(f"{runtime.name} {runtime.version} could not load {model_path}: {error}.{hint}") from None
    return interpreter


def _single_detail(details: list, kind: str) -> dict:
    if len(details) != 1:
        raise RunnerError(f"The model has {len(details)} {kind} tensors, but ids-edge models have exactly one. Pass an ids-edge export.")
    return details[0]


def input_detail(interpreter) -> dict:
    """Return the ``get_input_details()`` entry of the model's only input tensor."""
    return _single_detail(interpreter.get_input_details(), "input")


def output_detail(interpreter) -> dict:
    """Return the ``get_output_details()`` entry of the model's only output tensor."""
    return _single_detail(interpreter.get_output_details(), "output")


def set_batch_size(interpreter, batch_size: int) -> None:
    """Resize the input's first dimension to ``batch_size`` and allocate the tensors again.

    A model exported with a dynamic batch dimension (``shape_signature[0] == -1``) accepts any
    batch size. A static batch-1 model is resized too when every operator supports it, but
    converters often fold the batch of 1 into reshape operators, which then fail.

    Raises
    ------
    RunnerError
        ``batch_size`` is below 1, or the model does not allow it. The message names the input
        shape signature and the runtime's error.
    """
    if batch_size < 1:
        raise RunnerError(f"Invalid batch size {batch_size}: use 1 or more.")
    detail = input_detail(interpreter)
    if int(detail["shape"][0]) == batch_size:
        return

    signature = [int(v) for v in detail.get("shape_signature", detail["shape"])]
    shape = [batch_size] + [int(v) for v in detail["shape"][1:]]
    try:
        interpreter.resize_tensor_input(detail["index"], shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(detail["index"], np.zeros(shape, dtype=detail["dtype"]))
        interpreter.invoke()
    except (ValueError, RuntimeError) as error:
        raise RunnerError(
            f"The model does not allow batch size {batch_size}: its input shape signature is {signature} "
            f"and resizing to {shape} failed ({str(error).strip()}). ids-edge exports models with a static batch "
            "of 1: use --batch-size 1."
        ) from None

    rows = int(output_detail(interpreter)["shape"][0])
    if rows != batch_size:
        raise RunnerError(
            f"The model does not allow batch size {batch_size}: after resizing its input to {shape}, the output "
            f"still has {rows} rows. Use --batch-size 1."
        )


# Metadata and rows.


def metadata_path(model_path) -> pathlib.Path:
    """Return the path of the metadata JSON file beside ``model_path`` (same name, ``.json``)."""
    return pathlib.Path(model_path).with_suffix(".json")


def read_model_metadata(model_path, path=None) -> dict:
    """Read and check the ids-edge metadata of a model.

    Parameters
    ----------
    model_path
        Path of the ``.tflite`` file.
    path
        Path of the JSON file, or None for the file beside ``model_path``.

    Raises
    ------
    RunnerError
        The file is missing, not JSON, of another or newer format, or lacks a key the runner needs.
    """
    path = pathlib.Path(path) if path is not None else metadata_path(model_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunnerError(f"Metadata file {path} not found. Copy the .json file written beside the .tflite file.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunnerError(f"Metadata file {path} is not valid JSON ({error}).") from None

    if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
        raise RunnerError(
            f"{path} is not ids-edge model metadata (no \"format\": \"{MODEL_FORMAT}\"). Use the .json file that "
            "'ids-edge export' wrote beside the .tflite file, or export the model again."
        )
    version = data.get("format_version")
    if not isinstance(version, int) or version > MODEL_FORMAT_VERSION:
        raise RunnerError(
            f"{path} has metadata format_version {version!r}, but this runner reads versions up to "
            f"{MODEL_FORMAT_VERSION}. Bundle the model again with this ids-edge version."
        )

    for key in ("class_names", "feature_names", "preprocessing"):
        if key not in data:
            raise RunnerError(f"Metadata file {path} has no {key!r} key. Export the model again.")
    for key in ("class_names", "feature_names"):
        names = data[key]
        if not isinstance(names, list) or not names or not all(isinstance(name, str) and name for name in names):
            raise RunnerError(
                f"Metadata file {path}: {key!r} must be a non-empty list of name strings, not {names!r}. "
                "Export the model again."
            )
    preprocessing = data["preprocessing"]
    if not isinstance(preprocessing, dict):
        raise RunnerError(f"Metadata file {path}: 'preprocessing' must be a JSON object. Export the model again.")
    feature_count = len(data["feature_names"])
    for key in ("mean", "scale", "clip_min", "clip_max"):
        values = preprocessing.get(key)
        if not isinstance(values, list) or len(values) != feature_count:
            raise RunnerError(
                f"Metadata file {path}: preprocessing[{key!r}] must list {feature_count} values, one per feature. "
                "Export the model again."
            )
    return data


def _parse_number(text: str) -> float:
    text = text.strip()
    if not text:
        return float("nan")
    return float(text)


def _parse_label(text: str, class_names: list, path, line: int, column: str) -> int:
    text = text.strip()
    if text in class_names:
        return class_names.index(text)
    if re.fullmatch(r"\d+", text) and int(text) < len(class_names):
        return int(text)
    raise RunnerError(
        f"{path} line {line} column {column!r}: label {text!r} is neither a class name of the model "
        f"({', '.join(class_names)}) nor a class index below {len(class_names)}."
    )


def read_rows_csv(path, feature_names: list, class_names: list, label_column: str | None = DEFAULT_LABEL_COLUMN) -> RowSet:
    """Read raw feature rows, and their labels when present, from a CSV file with a header.

    Columns are matched by name, so extra columns and any column order are fine. Empty cells are
    NaN, and ``inf``, ``-inf`` and ``nan`` are parsed as Python's ``float`` parses them. Labels
    may be class names or class indices.

    Raises
    ------
    RunnerError
        The file is missing or empty, a feature column is missing (the first one is named), a row
        has the wrong number of cells, or a cell is not a number or not a known label.
    """
    path = pathlib.Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise RunnerError(f"Rows file {path} not found. Pass a CSV file with --rows.") from None
    except OSError as error:
        raise RunnerError(f"Rows file {path} cannot be read: {error.strerror}.") from None

    with handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        if not header:
            raise RunnerError(f"Rows file {path} is empty. It needs a header line with the feature names.")
        missing = [name for name in feature_names if name not in header]
        if missing:
            raise RunnerError(
                f"Rows file {path} has no column {missing[0]!r}, which the model needs "
                f"({len(missing)} of its {len(feature_names)} feature columns are missing). "
                "Use a CSV file with the model's feature_names as header."
            )
        positions = [header.index(name) for name in feature_names]
        label_position = header.index(label_column) if label_column and label_column in header else None

        features = []
        labels = []
        for record in reader:
            line = reader.line_num
            if not record or record == [""]:
                continue
            if len(record) != len(header):
                raise RunnerError(f"{path} line {line} has {len(record)} cells, but the header has {len(header)}.")
            row = []
            for name, position in zip(feature_names, positions):
                try:
                    row.append(_parse_number(record[position]))
                except ValueError:
                    raise RunnerError(
                        f"{path} line {line} column {name!r}: {record[position]!r} is not a number."
                    ) from None
            features.append(row)
            if label_position is not None:
                labels.append(_parse_label(record[label_position], class_names, path, line, label_column))

    if not features:
        raise RunnerError(f"Rows file {path} has a header but no rows.")
    values = np.asarray(features, dtype=np.float64).reshape(len(features), len(feature_names))
    return RowSet(values, np.asarray(labels, dtype=np.int64) if label_position is not None else None)


# Preprocessing: the same float32 operations as ids_edge.preprocess.


def _parameters(preprocessing: dict) -> tuple:
    return tuple(np.asarray(preprocessing[key], dtype=np.float32) for key in ("mean", "scale", "clip_min", "clip_max"))


def sanitize(features, preprocessing: dict) -> np.ndarray:
    """Clip raw features to the training range and replace NaN with the training mean (float32)."""
    mean, _, clip_min, clip_max = _parameters(preprocessing)
    values = np.asarray(features, dtype=np.float32)
    values = np.clip(values, clip_min, clip_max)
    return np.where(np.isnan(values), mean, values).astype(np.float32)


def standardize(features, preprocessing: dict) -> np.ndarray:
    """Sanitize, then return ``(x - mean) / scale`` in float32, shape (rows, features)."""
    mean, scale, _, _ = _parameters(preprocessing)
    values = sanitize(features, preprocessing)
    return ((values - mean) / scale).astype(np.float32)


def quantize(values, scale: float, zero_point: int) -> np.ndarray:
    """Quantize float32 values to int8: ``clip(rint(x / scale) + zero_point, -128, 127)``."""
    scaled = np.asarray(values, dtype=np.float32) / np.float32(scale)
    rounded = np.rint(scaled) + np.float32(zero_point)
    return np.clip(rounded, -128, 127).astype(np.int8)


def prepare_inputs(features, metadata: dict, detail: dict) -> np.ndarray:
    """Turn raw features into model inputs of shape (rows, *input shape without batch).

    With ``preprocessing.location == "graph"`` the model sanitizes and standardizes itself and
    gets raw float32 features. Otherwise the features are standardized here and, for an int8
    input, quantized with the input tensor's scale and zero point.

    Raises
    ------
    RunnerError
        The input tensor's size differs from the number of features, or its type is neither
        float32 nor int8.
    """
    features = np.asarray(features, dtype=np.float64)
    row_shape = tuple(int(v) for v in detail["shape"][1:])
    if int(np.prod(row_shape)) != features.shape[1]:
        raise RunnerError(
            f"The model input has shape {list(detail['shape'])}, which does not hold {features.shape[1]} features. "
            "The metadata JSON belongs to another model."
        )

    preprocessing = metadata["preprocessing"]
    dtype = np.dtype(detail["dtype"])
    if preprocessing.get("location") == "graph":
        values = np.asarray(features, dtype=np.float32)
    else:
        values = standardize(features, preprocessing)

    if dtype == np.float32:
        inputs = values
    elif dtype == np.int8:
        scale, zero_point = detail["quantization"]
        inputs = quantize(values, scale, zero_point)
    else:
        raise RunnerError(f"Unsupported model input type {dtype.name}: ids-edge models take float32 or int8.")
    return np.ascontiguousarray(inputs.reshape((features.shape[0],) + row_shape))


# Inference, latency and metrics.


def predict(interpreter, inputs: np.ndarray) -> np.ndarray:
    """Run every input row through the model and return the raw outputs, shape (rows, classes).

    Rows go through in batches of the interpreter's current batch size. The last batch is padded
    by repeating its final row, and the padded outputs are dropped. The output keeps the tensor's
    type, so an int8 model returns int8 values.
    """
    source = input_detail(interpreter)
    target = output_detail(interpreter)
    batch_size = int(source["shape"][0])
    outputs = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        rows = len(batch)
        if rows < batch_size:
            batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - rows, axis=0)])
        interpreter.set_tensor(source["index"], batch)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(target["index"]).reshape(batch_size, -1)[:rows].copy())
    return np.concatenate(outputs)


def outputs_sha256(outputs: np.ndarray) -> str:
    """Return the SHA-256 of the outputs' C-order bytes, to compare runs bit for bit."""
    return hashlib.sha256(np.ascontiguousarray(outputs).tobytes()).hexdigest()


def measure_latency(interpreter, inputs: np.ndarray, warmup: int = 10, runs: int = 200) -> LatencyStats:
    """Time ``runs`` invocations after ``warmup`` untimed ones, as TFLite's benchmark_model does.

    Each invocation takes the next batch of real input rows (cycling through ``inputs``) at the
    interpreter's current batch size, set with :func:`set_batch_size`. Only ``invoke()`` is
    inside the timed region: ``set_tensor`` runs before the clock starts.

    Parameters
    ----------
    interpreter
        An allocated interpreter.
    inputs
        Prepared inputs from :func:`prepare_inputs`, shape (rows, ...).
    warmup, runs
        Untimed and timed invocations. ``runs`` must be at least 1.

    Returns
    -------
    LatencyStats
        Per-flow statistics in microseconds and throughput in flows per second.
    """
    if runs < 1 or warmup < 0:
        raise RunnerError(f"Invalid run counts: runs={runs}, warmup={warmup}. Use runs of 1 or more and warmup of 0 or more.")
    warmup_ns, elapsed_ns, batch_size = time_invocations(interpreter, inputs, warmup, runs)
    return latency_stats(elapsed_ns, batch_size, warmup_ns)


def time_invocations(interpreter, inputs: np.ndarray, warmup: int, runs: int, after_run=None):
    """Time ``warmup`` and then ``runs`` calls of ``invoke()``, each on the next batch of ``inputs``.

    ``set_tensor`` runs before the clock starts, so only ``invoke()`` is timed, with the
    monotonic ``time.perf_counter_ns``. ``after_run(i)``, if given, is called after timed run ``i``,
    outside the timed region.

    Returns
    -------
    tuple
        ``(warmup_ns, elapsed_ns, batch_size)``: int64 nanoseconds per warm-up and per timed
        call, and the flows per call (the interpreter's batch size).
    """
    detail = input_detail(interpreter)
    index = detail["index"]
    batch_size = int(detail["shape"][0])

    batch_count = max(1, len(inputs) // batch_size)
    positions = np.arange(batch_count * batch_size) % len(inputs)
    batches = [np.ascontiguousarray(inputs[positions[i * batch_size : (i + 1) * batch_size]]) for i in range(batch_count)]

    warmup_ns = np.empty(warmup, dtype=np.int64)
    for i in range(warmup):
        interpreter.set_tensor(index, batches[i % batch_count])
        start = time.perf_counter_ns()
        interpreter.invoke()
        warmup_ns[i] = time.perf_counter_ns() - start

    elapsed_ns = np.empty(runs, dtype=np.int64)
    for i in range(runs):
        interpreter.set_tensor(index, batches[i % batch_count])
        start = time.perf_counter_ns()
        interpreter.invoke()
        elapsed_ns[i] = time.perf_counter_ns() - start
        if after_run is not None:
            after_run(i)
    return warmup_ns, elapsed_ns, batch_size


def latency_stats(elapsed_ns, batch_size: int, warmup_ns=()) -> LatencyStats:
    """Summarize per-call times in nanoseconds as per-flow latency in microseconds.

    Each call's time is divided by the flows in the call. The standard deviation is the
    population one and percentiles are linear. The first warm-up call and the warm-up mean are
    reported apart, and are None without warm-up.
    """
    per_flow_us = np.asarray(elapsed_ns, dtype=np.float64) / 1000.0 / batch_size
    warmup_us = np.asarray(warmup_ns, dtype=np.float64) / 1000.0 / batch_size
    total_s = float(np.sum(elapsed_ns)) / 1e9
    return LatencyStats(
        count=len(per_flow_us),
        warmup=len(warmup_us),
        batch_size=batch_size,
        first_us=float(warmup_us[0]) if len(warmup_us) else None,
        warmup_mean_us=float(warmup_us.mean()) if len(warmup_us) else None,
        mean_us=float(per_flow_us.mean()),
        std_us=float(per_flow_us.std()),
        min_us=float(per_flow_us.min()),
        p50_us=float(np.percentile(per_flow_us, 50)),
        p90_us=float(np.percentile(per_flow_us, 90)),
        p99_us=float(np.percentile(per_flow_us, 99)),
        max_us=float(per_flow_us.max()),
        throughput_flows_per_s=len(per_flow_us) * batch_size / total_s if total_s > 0 else float("inf"),
    )


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    # Zero denominators give 0, as scikit-learn's zero_division="warn" does (without the warning).
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    safe = np.where(denominator == 0, 1.0, denominator)
    return np.where(denominator == 0, 0.0, numerator / safe)


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    if weights.sum() == 0:
        return 0.0
    return float(np.average(values, weights=weights))


def classification_metrics(y_true, y_pred, n_classes: int) -> dict:
    """Compute accuracy, per-class and averaged precision, recall and F1, and the confusion matrix.

    Every class index below ``n_classes`` counts, including classes absent from both arrays, as
    scikit-learn does when given ``labels=range(n_classes)``. A zero denominator gives 0. F1 is
    ``2 tp / (2 tp + fp + fn)``. Fractions are in [0, 1].

    Returns
    -------
    dict
        ``accuracy``, ``precision_macro``, ``recall_macro``, ``f1_macro``, the same three with
        ``_weighted`` (weighted by support), ``per_class`` lists (``precision``, ``recall``,
        ``f1``, ``support``), ``confusion_matrix`` (rows are true classes, columns predicted) and
        ``rows``.
    """
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape or len(y_true) == 0:
        raise RunnerError(f"Metrics need equally long, non-empty label arrays (got {len(y_true)} and {len(y_pred)}).")
    for name, values in (("true", y_true), ("predicted", y_pred)):
        if values.min() < 0 or values.max() >= n_classes:
            raise RunnerError(f"A {name} label is outside the class indices 0..{n_classes - 1}.")

    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    true_positive = np.diag(confusion)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)

    precision = _divide(true_positive, predicted)
    recall = _divide(true_positive, support)
    f1 = _divide(2.0 * true_positive, support.astype(np.float64) + predicted)

    return {
        "rows": int(len(y_true)),
        "accuracy": float(true_positive.sum() / len(y_true)),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "precision_weighted": _weighted_mean(precision, support),
        "recall_weighted": _weighted_mean(recall, support),
        "f1_weighted": _weighted_mean(f1, support),
        "per_class": {
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "f1": f1.tolist(),
            "support": support.tolist(),
        },
        "confusion_matrix": confusion.tolist(),
    }


# Environment.


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def detect_emulation() -> tuple[bool, list]:
    """Guess whether this process runs under qemu user-mode emulation.

    The environment variable ``IDS_EDGE_EMULATED`` (``1`` or ``0``) decides when set. Otherwise
    these hints count:

    - a process name (``/proc/self/comm``) starting with ``qemu-``, as when qemu-user is
      started directly;
    - an ARM ``platform.machine()`` with an x86 ``/proc/cpuinfo``, because qemu-user 7.2 passes
      the host's file through;
    - ``QEMU_LD_PREFIX`` or ``QEMU_CPU`` in the environment;
    - a binfmt_misc entry that runs this machine's binaries through qemu.

    Returns
    -------
    tuple
        ``(emulated, hints)``: the verdict and the hints that led to it.
    """
    override = os.environ.get(EMULATION_ENV, "").strip().lower()
    if override in ("1", "true", "yes"):
        return True, [f"{EMULATION_ENV}={override}"]
    if override in ("0", "false", "no"):
        return False, [f"{EMULATION_ENV}={override}"]

    hints = []
    comm = _read_text("/proc/self/comm").strip()
    if comm.startswith("qemu-"):
        hints.append(f"the process name is {comm}")
    machine = platform.machine().lower()
    cpuinfo = _read_text("/proc/cpuinfo")
    if machine in _ARM_MACHINES and re.search(r"^vendor_id\s*:\s*(GenuineIntel|AuthenticAMD)", cpuinfo, re.MULTILINE):
        hints.append(f"/proc/cpuinfo describes an x86 CPU, but platform.machine() is {machine}")
    if machine in _X86_MACHINES and re.search(r"^CPU implementer", cpuinfo, re.MULTILINE):
        hints.append(f"/proc/cpuinfo describes an ARM CPU, but platform.machine() is {machine}")
    for variable in ("QEMU_LD_PREFIX", "QEMU_CPU"):
        if os.environ.get(variable):
            hints.append(f"{variable} is set")
    entry = _QEMU_NAMES.get(machine)
    if entry and "enabled" in _read_text(f"/proc/sys/fs/binfmt_misc/{entry}").splitlines()[:1]:
        hints.append(f"binfmt_misc runs {machine} binaries through {entry}")
    return bool(hints), hints


def peak_rss_bytes() -> tuple[int | None, str]:
    """Return this process's peak resident set size in bytes and where the number comes from.

    On Linux it is ``VmHWM`` from ``/proc/self/status``, which starts afresh at ``execve``.
    ``resource.getrusage``'s ``ru_maxrss`` is the fallback: Linux keeps it across ``execve``, so
    a runner started from a large process (pytest with TensorFlow loaded) reports that process's
    peak instead. Under qemu user-mode emulation both include qemu's own memory.
    """
    match = re.search(r"^VmHWM:\s+(\d+) kB", _read_text("/proc/self/status"), re.MULTILINE)
    if match:
        return int(match.group(1)) * 1024, "/proc/self/status VmHWM"
    if resource is None:
        return None, "unavailable"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kibibytes, macOS bytes.
    return (int(peak) if sys.platform == "darwin" else int(peak) * 1024), "resource.getrusage ru_maxrss"


def platform_info() -> dict:
    """Return the machine, OS, Python and numpy versions of this process."""
    return {
        "machine": platform.machine(),
        "system": platform.system(),
        "release": platform.release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "numpy": np.__version__,
    }


def _file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# Bundle checks.


def read_bundle_manifest(folder) -> dict | None:
    """Return the parsed ``bundle.json`` in ``folder``, or None when there is none (not run from a bundle).

    Raises
    ------
    RunnerError
        ``bundle.json`` exists but is not valid JSON or lists no file checksums.
    """
    path = pathlib.Path(folder) / BUNDLE_FILE
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunnerError(f"{path} is not valid JSON ({error}). Copy the bundle folder from the host again.") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise RunnerError(f"{path} has no \"files\" checksums. Build the bundle again with 'ids-edge bundle'.")
    return manifest


def verify_bundle_files(folder, manifest: dict) -> None:
    """Check the SHA-256 of every file that ``bundle.json`` lists, before anything runs.

    Raises
    ------
    RunnerError
        A listed file is missing or its content changed since the host built the bundle.
    """
    folder = pathlib.Path(folder)
    for name, expected in sorted(manifest["files"].items()):
        path = folder / name
        if not path.is_file():
            raise RunnerError(f"{path} is missing, but {BUNDLE_FILE} lists it. Copy the whole bundle folder again.")
        actual = _file_sha256(path)
        if actual != expected:
            raise RunnerError(
                f"{path} has SHA-256 {actual}, but {BUNDLE_FILE} records {expected}: the file changed after the bundle "
                "was built. Copy the bundle folder from the host again, or build it again with 'ids-edge bundle'."
            )


def compare_with_bundle(folder, manifest: dict, model_path, rows_path, delegate, outputs_sha: str, runtime: RuntimeInfo) -> dict:
    """Compare the outputs' SHA-256 with the one the host recorded in ``bundle.json``.

    The comparison applies only to the bundle's own CPU run: ``model.tflite`` on ``rows.csv``
    without a delegate. ``outputs_match_expected`` is None otherwise.
    """
    folder = pathlib.Path(folder).resolve()
    host_runtime = manifest.get("expected_outputs_runtime")
    record = {
        "expected_outputs_sha256": manifest.get("expected_outputs_sha256"),
        "expected_outputs_runtime": host_runtime,
        "runtime": f"{runtime.name} {runtime.version}",
    }
    same_run = (
        pathlib.Path(model_path).resolve() == folder / BUNDLE_MODEL_FILE
        and pathlib.Path(rows_path).resolve() == folder / BUNDLE_ROWS_FILE
        and delegate is None
    )
    if not same_run or not record["expected_outputs_sha256"]:
        record["outputs_match_expected"] = None
        record["note"] = (
            f"Not compared: the expected checksum covers {BUNDLE_MODEL_FILE} on {BUNDLE_ROWS_FILE} on the CPU, "
            "and this run used another model, rows file or a delegate."
        )
        return record

    record["outputs_match_expected"] = outputs_sha == record["expected_outputs_sha256"]
    if record["outputs_match_expected"]:
        record["note"] = "The outputs are bit for bit those of the host."
    elif host_runtime != record["runtime"]:
        record["note"] = (
            f"The outputs differ from the host's. The host used {host_runtime} and this run {record['runtime']}; "
            "another runtime version may legitimately differ by one quantization step on some rows."
        )
    else:
        record["note"] = (
            "The outputs differ from the host's with the same runtime version. Compare the numpy versions and "
            "the predictions with the host's to find the rows that differ."
        )
    return record


# Whole run.


def run_benchmark(
    model_path,
    rows_path,
    *,
    warmup: int = 10,
    runs: int = 200,
    num_threads: int | None = 1,
    batch_size: int = 1,
    delegate: str | None = None,
    device_name: str | None = None,
    label_column: str | None = DEFAULT_LABEL_COLUMN,
    runtime_name: str | None = None,
    metadata_file=None,
    bundle_dir=None,
) -> tuple[dict, np.ndarray]:
    """Load a model and rows, run every row, time inference and score the predictions.

    Predictions and their checksum always come from a batch-1 interpreter. With
    ``batch_size > 1`` a second interpreter is resized for the latency measurement only.
    ``bundle_dir`` is the bundle folder whose ``bundle.json`` is checked (see
    :func:`verify_bundle_files`), or None for the folder of this file when it contains one.

    Returns
    -------
    tuple
        ``(result, outputs)``: the JSON-ready result and the raw output array (rows, classes).
    """
    started_at = _utc_now()
    model_path = pathlib.Path(model_path)
    bundle_dir = pathlib.Path(bundle_dir) if bundle_dir is not None else pathlib.Path(__file__).resolve().parent
    manifest = read_bundle_manifest(bundle_dir)
    if manifest is not None:
        verify_bundle_files(bundle_dir, manifest)
    metadata = read_model_metadata(model_path, metadata_file)
    class_names = list(metadata["class_names"])
    rows = read_rows_csv(rows_path, metadata["feature_names"], class_names, label_column)
    runtime = find_runtime(runtime_name)

    init_start = time.perf_counter_ns()
    interpreter = load_interpreter(model_path, num_threads, delegate, runtime)
    init_us = (time.perf_counter_ns() - init_start) / 1000.0
    source = input_detail(interpreter)
    inputs = prepare_inputs(rows.features, metadata, source)
    set_batch_size(interpreter, 1)
    outputs = predict(interpreter, inputs)
    predictions = np.argmax(outputs, axis=1)

    if batch_size == 1:
        timed = interpreter
    else:
        timed = load_interpreter(model_path, num_threads, delegate, runtime)
        set_batch_size(timed, batch_size)
    latency = measure_latency(timed, inputs, warmup=warmup, runs=runs)

    emulated, hints = detect_emulation()
    latency_record = latency.to_dict()
    latency_record["init_us"] = init_us
    latency_record["clock"] = "time.perf_counter_ns (monotonic), Interpreter.invoke() only"
    latency_record["is_device_latency"] = not emulated
    if emulated:
        latency_record["note"] = (
            "Measured under emulation (" + "; ".join(hints) + "). These timings are not device latency."
        )

    target = output_detail(interpreter)
    result = {
        "format": RESULT_FORMAT,
        "format_version": RESULT_FORMAT_VERSION,
        "device": device_name or platform.node(),
        "emulated": emulated,
        "emulation_hints": hints,
        "started_at": started_at,
        "finished_at": _utc_now(),
        "model": {
            "file": model_path.name,
            "sha256": _file_sha256(model_path),
            "size_bytes": model_path.stat().st_size,
            "task": metadata.get("task"),
            "class_names": class_names,
            "quantize": metadata.get("quantize"),
            "io": metadata.get("io"),
            "input": {"dtype": np.dtype(source["dtype"]).name, "shape_signature": [int(v) for v in source.get("shape_signature", source["shape"])]},
        },
        "rows": {
            "file": pathlib.Path(rows_path).name,
            "sha256": _file_sha256(rows_path),
            "count": int(len(rows.features)),
            "labeled": rows.labels is not None,
        },
        "runtime": {
            "name": runtime.name,
            "version": runtime.version,
            "num_threads": num_threads,
            "delegate": delegate if isinstance(delegate, str) or delegate is None else type(delegate).__name__,
        },
        "platform": platform_info(),
        "latency": latency_record,
        "outputs": {
            "dtype": np.dtype(target["dtype"]).name,
            "shape": [int(v) for v in outputs.shape],
            "sha256": outputs_sha256(outputs),
            "scale": float(target["quantization"][0]),
            "zero_point": int(target["quantization"][1]),
        },
        "predictions": predictions.tolist(),
        "metrics": classification_metrics(rows.labels, predictions, len(class_names)) if rows.labels is not None else None,
    }
    if manifest is not None:
        result["bundle"] = compare_with_bundle(
            bundle_dir, manifest, model_path, rows_path, delegate, result["outputs"]["sha256"], runtime
        )
        result["outputs_match_expected"] = result["bundle"]["outputs_match_expected"]
    else:
        result["outputs_match_expected"] = None
    result["peak_rss_bytes"], result["peak_rss_source"] = peak_rss_bytes()
    return result, outputs


def write_json_atomic(path, data: dict) -> None:
    """Write JSON to a temporary sibling file, then rename it over ``path``."""
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def format_summary(result: dict) -> str:
    """Return a few human-readable lines about a result from :func:`run_benchmark`."""
    latency = result["latency"]
    lines = [
        f"device {result['device']} ({result['platform']['machine']}), {result['runtime']['name']} "
        f"{result['runtime']['version']}, {result['runtime']['num_threads']} thread(s)",
        f"latency per flow: mean {latency['mean_us']:.1f} us, p50 {latency['p50_us']:.1f} us, "
        f"p99 {latency['p99_us']:.1f} us over {latency['count']} runs of batch {latency['batch_size']}; "
        f"{latency['throughput_flows_per_s']:.0f} flows/s",
    ]
    if result["emulated"]:
        lines.append("EMULATED: these timings are not device latency.")
    if result["metrics"] is not None:
        metrics = result["metrics"]
        lines.append(
            f"accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['f1_macro']:.4f} on {metrics['rows']} rows"
        )
    lines.append(f"outputs sha256 {result['outputs']['sha256']}")
    bundle = result.get("bundle")
    if bundle is not None:
        match = {True: "yes", False: "NO", None: "not checked"}[bundle["outputs_match_expected"]]
        lines.append(f"outputs match the bundle's expected sha256 ({bundle['expected_outputs_runtime']}): {match}. {bundle['note']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Run an ids-edge .tflite model on labelled CSV rows: latency, accuracy and an output checksum."
    )
    parser.add_argument("--model", required=True, help="Path of the .tflite file; its .json metadata must sit beside it.")
    parser.add_argument("--rows", required=True, help="CSV file with the model's feature columns and an optional label column.")
    parser.add_argument("--out", required=True, help="Path of the result JSON file to write.")
    parser.add_argument("--metadata", help="Metadata JSON file, if not beside the model.")
    parser.add_argument("--warmup", type=int, default=10, help="Untimed invocations before timing (default: 10).")
    parser.add_argument("--runs", type=int, default=200, help="Timed invocations (default: 200).")
    parser.add_argument("--threads", type=int, default=1, help="Interpreter CPU threads (default: 1).")
    parser.add_argument("--batch-size", type=int, default=1, help="Rows per timed invocation (default: 1).")
    parser.add_argument("--delegate", help="Delegate library to load, for example libedgetpu.so.1 for a Coral Edge TPU.")
    parser.add_argument("--runtime", choices=RUNTIMES, help="TFLite runtime to use (default: the first that imports).")
    parser.add_argument("--label-column", default=DEFAULT_LABEL_COLUMN, help="Name of the label column (default: label).")
    parser.add_argument("--device-name", help="Device name stored in the result (default: the host name).")
    parser.add_argument("--outputs", help="Also save the raw output array to this .npy file.")
    return parser


def main(argv=None) -> int:
    """Run the command line; return the exit status (0, 2 for invalid input, 3 for a missing runtime)."""
    arguments = build_parser().parse_args(argv)
    try:
        result, outputs = run_benchmark(
            arguments.model,
            arguments.rows,
            warmup=arguments.warmup,
            runs=arguments.runs,
            num_threads=arguments.threads,
            batch_size=arguments.batch_size,
            delegate=arguments.delegate,
            device_name=arguments.device_name,
            label_column=arguments.label_column,
            runtime_name=arguments.runtime,
            metadata_file=arguments.metadata,
        )
        write_json_atomic(arguments.out, result)
        if arguments.outputs:
            with open(arguments.outputs, "wb") as handle:
                np.save(handle, outputs)
    except RunnerError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:
        print(f"error: cannot write {error.filename}: {error.strerror}.", file=sys.stderr)
        return 2

    print(format_summary(result))
    print(f"wrote {arguments.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
