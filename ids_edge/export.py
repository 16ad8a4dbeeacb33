"""Convert a trained run to TFLite variants, evaluate them in the TFLite runtime, gate and write them.

A variant is one :class:`ExportOptions`: a quantization mode, the input/output type of an int8
model, and optionally magnitude pruning and quantization-aware training (QAT) before conversion.
Every variant is evaluated on the run's test split in the TFLite runtime and compared with the
float32 Keras model. A variant whose accuracy or macro-F1 drop exceeds the :class:`GateOptions`
limits is not written.

Where standardization happens:

- ``--quantize int8 --io int8``: the caller sanitizes and standardizes with the published
  parameters, then quantizes with the input tensor's scale and zero point (metadata
  ``preprocessing.location = "caller"``). Saturation at -128 and 127 is the input clamp.
- ``--quantize int8 --io float``: the graph takes raw float32 features (``location = "graph"``).
  Float32 ops at its start replace NaN with the training mean, clip to the training range,
  standardize and clamp to the calibrated input range. The int8 core runs after them.
  NOTE: the converter folds the division by ``scale`` into a multiplication by ``1 / scale``,
  which can differ from :meth:`Preprocessor.transform` in the last bit of a float32.
- ``none``, ``float16`` and ``dynamic``: float32 input, standardized by the caller
  (``location = "caller"``).

int8 calibration uses training rows drawn with equal counts per class. So that a few extreme rows
cannot set the input scale, the standardized calibration rows are clipped to the ``[q, 1 - q]``
quantiles of all their values pooled, with ``q = calibration_clip``. The input tensor has one
scale for all features, so the pooled range is the range that matters.
"""

import dataclasses
import gzip
import json
import logging
import pathlib
import time

import numpy as np

from ids_edge import compress, evaluate, metadata, runs, tflite_file, variant_report
from ids_edge._tf import import_tensorflow, quiet_native_stderr
from ids_edge.choices import IO_TYPES, QUANTIZE_MODES
from ids_edge.errors import GateError, IdsEdgeError
from ids_edge.model import MAX_SEED
from ids_edge.outputs import output_dir
from ids_edge.preprocess import dequantize, quantize
from ids_edge.runtime import find_runtime, make_interpreter
from ids_edge.train import as_model_input, predict_classes

logger = logging.getLogger(__name__)

GRAPH_PREPROCESSING_OPS = ["NOT_EQUAL", "SELECT_V2", "MAXIMUM", "MINIMUM", "SUB", "MUL", "DIV"]
"""Ops of the in-graph preprocessing, kept in float32 in an int8 model with float input. The
CNN itself converts to RESHAPE, CONV_2D, MAX_POOL_2D, FULLY_CONNECTED and SOFTMAX only."""


@dataclasses.dataclass
class ExportOptions:
    """Settings of one exported variant.

    ``representative_size`` is the number of training rows that calibrate int8 ranges, drawn
    with the same number of rows per class (all rows of a smaller class). ``calibration_clip``
    is the quantile fraction cut from each end of the pooled standardized calibration values
    (0 keeps the full range). ``prune`` is the target fraction of zero weights, or None.
    ``fine_tune_epochs`` and ``fine_tune_learning_rate`` apply to pruning and QAT.
    ``sparse_encoding`` stores the pruned weights of a float32 (``none``) model in TFLite's sparse
    format (``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``). benchmarks/COMPRESSION.md measures it:
    it shrinks the raw float32 file but makes int8 files larger at 50 % sparsity, and LiteRT's
    default XNNPACK delegate fails to prepare the sparse int8 FULLY_CONNECTED, so int8 rejects it.
    """

    quantize: str = "int8"
    io: str | None = None  # None: "int8" for int8 models; float models always have float I/O
    representative_size: int = 1000
    calibration_clip: float = 0.001
    prune: float | None = None
    prune_structure: str = "unstructured"
    qat: bool = False
    fine_tune_epochs: int = 3
    fine_tune_learning_rate: float = 0.0005
    sparse_encoding: bool = False
    seed: int = 0


@dataclasses.dataclass
class GateOptions:
    """Largest allowed drop against the Keras float32 model, in percentage points."""

    max_accuracy_drop: float = 1.0
    max_macro_f1_drop: float = 2.0
    max_class_f1_drop: float | None = None  # None: per-class F1 is not gated


@dataclasses.dataclass
class VariantResult:
    """One converted variant: its size, metrics, change against Keras and gate verdict."""

    name: str
    options: ExportOptions
    flatbuffer: bytes
    model_metadata: dict
    report: dict
    comparison: dict
    gate_failures: list
    sparsity: dict | None = None
    model_path: object = None  # set once written
    notices: list = dataclasses.field(default_factory=list)

    @property
    def accepted(self):
        return not self.gate_failures

    @property
    def size_bytes(self):
        return len(self.flatbuffer)

    @property
    def gzip_bytes(self):
        return len(gzip_bytes(self.flatbuffer))


@dataclasses.dataclass
class ExportSummary:
    """Every variant of one export, accepted or rejected, and the Keras reference metrics."""

    out_dir: object
    keras_report: dict
    variants: list
    gate: GateOptions
    runtime: str
    data_label: str = ""
    notices: list = dataclasses.field(default_factory=list)

    @property
    def accepted(self):
        return [variant for variant in self.variants if variant.accepted]

    @property
    def rejected(self):
        return [variant for variant in self.variants if not variant.accepted]

    def gate_message(self):
        """Describe the rejected variants in one line: each failed metric, its drop and its limit."""
        return "; ".join(f"{variant.name}: {', '.join(variant.gate_failures)}" for variant in self.rejected)


@dataclasses.dataclass
class ExportResult:
    """The written model, its metrics and their change against the Keras model."""

    model_path: object
    size_bytes: int
    report: dict
    keras_report: dict
    comparison: dict
    runtime: str


def sparsity_label(sparsity):
    """Format a sparsity fraction in percent with up to 2 decimals and ``p`` as the point: 0.555 -> ``55p5``.

    :func:`ids_edge.compress.check_sparsity` accepts only values from 0.0001 to 0.9999, so the
    label never reads 0 or 100.
    """
    text = f"{100 * sparsity:.2f}".rstrip("0").rstrip(".")
    return text.replace(".", "p")


def variant_name(options):
    """Name a variant by its options, e.g. ``int8``, ``int8_float_io`` or ``int8_pruned50_2of4_qat``.

    With ``--prune-structure 2:4`` the Dense layers are always at 0.5 sparsity and only the
    Conv1D layers reach the target, so a target other than 0.5 is named ``pruned2of4_convNN``.
    """
    name = options.quantize
    if options.quantize == "int8" and options.io == "float":
        name += "_float_io"
    if options.prune is not None:
        if options.prune_structure != "2:4":
            name += f"_pruned{sparsity_label(options.prune)}"
        elif options.prune == 0.5:
            name += "_pruned50_2of4"
        else:
            name += f"_pruned2of4_conv{sparsity_label(options.prune)}"
    if options.qat:
        name += "_qat"
    if options.sparse_encoding:
        name += "_sparse"
    return name


def gzip_bytes(data):
    """Compress with gzip level 9 and a zero timestamp, so equal input gives equal output."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def representative_rows(labels, size, seed):
    """Pick up to ``size`` row indices with the same number per class (all rows of smaller classes).

    Equal shares keep rare attack classes in the calibration data, whose ranges would otherwise
    be set almost entirely by the largest classes. :func:`calibration_rows_note` explains a
    count that differs from ``size``.
    """
    if size < 1:
        raise IdsEdgeError(f"Invalid --representative-size {size}: use 1 or more rows.")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = max(1, size // len(classes))
    chosen = []
    for index in classes:
        rows = np.flatnonzero(labels == index)
        if len(rows) > per_class:
            rows = rng.choice(rows, size=per_class, replace=False)
        chosen.append(np.sort(rows))
    return np.concatenate(chosen)


def calibration_rows_note(labels, size, used):
    """Explain why ``used`` calibration rows differ from the ``size`` requested, or return "" when equal."""
    if used == size:
        return ""
    counts = np.bincount(np.asarray(labels))
    counts = counts[counts > 0]
    per_class = max(1, size // len(counts))
    reasons = []
    if size % len(counts) or size < len(counts):
        reasons.append(
            f"--representative-size {size} is split equally over {len(counts)} classes, {per_class} row(s) per class"
        )
    short = int(np.count_nonzero(counts < per_class))
    if short:
        reasons.append(
            f"{short} class(es) have fewer than {per_class} training rows, so all their rows are used "
            f"(the training split has {int(counts.sum())} rows)"
        )
    return f"calibrated on {used} training rows instead of the {size} requested: " + "; ".join(reasons) + "."


def calibration_clip_bounds(standardized, quantile):
    """Return ``(low, high)``: the ``quantile`` and ``1 - quantile`` points of all values pooled.

    Args:
        standardized: Standardized calibration rows, any shape, finite.
        quantile: Fraction cut from each end, in [0, 0.5); 0 returns the minimum and maximum.
    """
    if not 0 <= quantile < 0.5:
        raise IdsEdgeError(
            f"Invalid --calibration-clip {quantile}: use a fraction in [0, 0.5), e.g. 0.001 (0 keeps the full range)."
        )
    values = np.asarray(standardized, dtype=np.float64).ravel()
    low, high = np.quantile(values, [quantile, 1 - quantile], method="linear")
    return float(np.float32(low)), float(np.float32(high))


def _preprocessing_graph(tf, model, preprocessor, input_clamp):
    """Wrap ``model`` in a function of raw features that sanitizes, standardizes and clamps first."""
    mean = tf.constant(preprocessor.mean[:, np.newaxis])
    scale = tf.constant(preprocessor.scale[:, np.newaxis])
    clip_min = tf.constant(preprocessor.clip_min[:, np.newaxis])
    clip_max = tf.constant(preprocessor.clip_max[:, np.newaxis])

    def forward(features):
        values = tf.where(tf.math.is_nan(features), mean, features)
        values = tf.minimum(tf.maximum(values, clip_min), clip_max)
        standardized = (values - mean) / scale
        if input_clamp is not None:
            standardized = tf.clip_by_value(standardized, input_clamp[0], input_clamp[1])
        return model(standardized, training=False)

    return forward


def convert(model, options, calibration_inputs=None, preprocessor=None, input_clamp=None):
    """Convert a tf_keras model to a ``.tflite`` flatbuffer with a static batch of 1.

    Args:
        model: The trained model, input shape (features, 1); for ``options.qat`` the
            quantization-aware model from :func:`ids_edge.compress.quantization_aware_model`.
        options: :class:`ExportOptions`.
        calibration_inputs: float32 array of shape (rows, features, 1) for int8: standardized
            rows, or sanitized raw rows when ``preprocessor`` is given. QAT models need them only
            with ``preprocessor``, because the converter requires ranges for the float32 ops.
        preprocessor: Build sanitize and standardize into the graph, which then takes raw
            features (int8 with float input/output only).
        input_clamp: ``(low, high)`` bounds of the standardized input, built into the graph
            after standardization (with ``preprocessor`` only).

    Returns:
        The flatbuffer bytes.
    """
    tf, _ = import_tensorflow()
    feature_count = model.input_shape[1]
    signature = tf.TensorSpec([1, feature_count, 1], tf.float32, name="features")
    if preprocessor is not None:
        forward = _preprocessing_graph(tf, model, preprocessor, input_clamp)
    else:
        def forward(features):
            return model(features, training=False)
    concrete = tf.function(forward).get_concrete_function(signature)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)

    if options.sparse_encoding:
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    if options.quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif options.quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif options.quantize == "int8":
        return _convert_int8(tf, converter, options, calibration_inputs, feature_count, preprocessor is not None)
    return _run_converter(converter.convert, options)


def _convert_int8(tf, converter, options, calibration_inputs, feature_count, graph_preprocessing):
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if options.io == "int8":
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8

    if options.qat and not graph_preprocessing:
        # The fake-quantization nodes carry the ranges, so no calibration is needed.
        return _run_converter(converter.convert, options)

    inputs = _check_calibration(calibration_inputs, feature_count)

    def representative_dataset():
        for row in inputs:
            yield [row[np.newaxis]]

    converter.representative_dataset = representative_dataset
    if not graph_preprocessing:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return _run_converter(converter.convert, options)

    # Full-integer conversion would quantize the raw features with one scale for columns that
    # span 0..1 and 0..1e6. Selective quantization keeps the preprocessing ops in float32: the
    # converter only calibrates, then the MLIR quantizer skips the denylisted ops.
    # NOTE: mlir_quantize is TensorFlow's internal entry point (checked with TF 2.21); the public
    # tf.lite.experimental.QuantizationDebugger makes the same call but fails on QAT models.
    from tensorflow.lite.python import convert as lite_convert

    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.experimental_mlir_quantizer = True
    converter._experimental_calibrate_only = True

    def selective():
        calibrated = converter.convert()
        return lite_convert.mlir_quantize(calibrated, fully_quantize=False, denylisted_ops=GRAPH_PREPROCESSING_OPS)

    return _run_converter(selective, options)


def _run_converter(convert_function, options):
    try:
        with quiet_native_stderr():
            return convert_function()
    except Exception as error:  # The converter raises many types; report them as one failure.
        raise IdsEdgeError(f"TFLite conversion ({variant_name(options)}) failed: {error}") from None


def _check_calibration(inputs, feature_count):
    if inputs is None or len(inputs) == 0:
        raise IdsEdgeError("int8 quantization needs calibration rows, but the representative dataset is empty.")
    inputs = np.asarray(inputs)
    if inputs.ndim != 3 or inputs.shape[1:] != (feature_count, 1):
        raise IdsEdgeError(
            f"The representative dataset has shape {inputs.shape}, but the model takes (rows, {feature_count}, 1)."
        )
    if not np.issubdtype(inputs.dtype, np.floating):
        raise IdsEdgeError(f"The representative dataset has dtype {inputs.dtype}; it must be floating point.")
    if not np.isfinite(inputs).all():
        raise IdsEdgeError("The representative dataset contains inf or NaN; standardize it first.")
    return inputs.astype(np.float32)


def tensor_info(detail):
    """Describe an interpreter tensor detail as the metadata's ``input``/``output`` entry."""
    scale, zero_point = detail["quantization"]
    return {
        "name": detail["name"],
        "dtype": np.dtype(detail["dtype"]).name,
        "shape": [int(v) for v in detail["shape"]],
        "scale": float(scale),
        "zero_point": int(zero_point),
    }


def predict_tflite(model_content, features, runtime=None):
    """Run a ``.tflite`` model on float32 features of shape (rows, features).

    ``features`` are the input that the model's metadata specifies: standardized features for
    ``preprocessing.location == "caller"``, raw features (inf and NaN allowed) for ``"graph"``.
    Quantizes the input and dequantizes the output when the model's tensors are int8.

    Returns:
        ``(class_indices, outputs)``: outputs as the model returns them (int8 or float32).
    """
    interpreter = make_interpreter(model_content, runtime)
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    inputs = as_model_input(features)
    if input_detail["dtype"] == np.int8:
        inputs = quantize(inputs, *input_detail["quantization"])

    # The models are exported with a static batch of 1 (Edge TPU and TFLite Micro need static
    # shapes, and the Flatten's RESHAPE has batch 1 built in), so rows go through one at a time.
    outputs = np.empty((len(inputs), *output_detail["shape"][1:]), dtype=output_detail["dtype"])
    for row in range(len(inputs)):
        interpreter.set_tensor(input_detail["index"], inputs[row : row + 1])
        interpreter.invoke()
        outputs[row] = interpreter.get_tensor(output_detail["index"])[0]

    scores = outputs
    if output_detail["dtype"] == np.int8:
        scores = dequantize(outputs, *output_detail["quantization"])
    return np.argmax(scores, axis=1), outputs


def check_options(options):
    """Check one variant's options and fill in the default ``io``.

    Raises:
        IdsEdgeError: An unknown mode or I/O type, a combination that cannot be built, or a
            value out of range; the message names the option.
    """
    if options.quantize not in QUANTIZE_MODES:
        raise IdsEdgeError(f"Invalid --quantize {options.quantize!r}: choose one of {', '.join(QUANTIZE_MODES)}.")
    if options.io is None:
        options.io = "int8" if options.quantize == "int8" else "float"
    if options.io not in IO_TYPES:
        raise IdsEdgeError(f"Invalid --io {options.io!r}: choose one of {', '.join(IO_TYPES)}.")
    if options.io == "int8" and options.quantize != "int8":
        raise IdsEdgeError(
            f"--io int8 needs --quantize int8, but --quantize is {options.quantize}, which keeps float "
            "input and output. Drop --io or use --quantize int8."
        )
    if options.qat and options.quantize != "int8":
        raise IdsEdgeError(
            f"--qat trains for int8 inference, but --quantize is {options.quantize}. Use --quantize int8 with --qat."
        )
    if options.representative_size < 1:
        raise IdsEdgeError(f"Invalid --representative-size {options.representative_size}: use 1 or more rows.")
    if isinstance(options.seed, bool) or not isinstance(options.seed, int) or not 0 <= options.seed <= MAX_SEED:
        raise IdsEdgeError(f"Invalid option --seed {options.seed}: use an integer from 0 to {MAX_SEED}.")
    calibration_clip_bounds(np.zeros(1), options.calibration_clip)
    if options.prune is not None:
        compress.check_sparsity(options.prune)
    elif options.prune_structure != "unstructured":
        raise IdsEdgeError(
            f"--prune-structure {options.prune_structure} sets how --prune zeroes weights, but --prune is not given. "
            "Add --prune, e.g. --prune 0.5, or drop --prune-structure."
        )
    if options.sparse_encoding and options.prune is None and options.quantize == "none":
        raise IdsEdgeError(
            "--sparse-encoding stores the zero weights of a pruned model in TFLite's sparse format, but --prune is "
            "not given, so there are no zero weights to leave out. Add --prune, e.g. --prune 0.8, or drop --sparse-encoding."
        )
    if options.sparse_encoding and (options.prune is None or options.quantize != "none"):
        raise IdsEdgeError(
            f"--sparse-encoding applies to pruned float32 models (--quantize none with --prune), but this variant "
            f"is {variant_name(options)}. For int8 it makes the file larger and LiteRT's XNNPACK delegate "
            "fails on it; drop --sparse-encoding."
        )
    if options.prune is not None or options.qat:
        compress.check_fine_tuning(options.fine_tune_epochs, options.fine_tune_learning_rate, options.prune_structure)


def check_gate(gate):
    """Check the gate limits (percentage points, 0 or more; ``max_class_f1_drop`` may be None)."""
    limits = [("--max-accuracy-drop", gate.max_accuracy_drop), ("--max-macro-f1-drop", gate.max_macro_f1_drop)]
    if gate.max_class_f1_drop is not None:
        limits.append(("--max-class-f1-drop", gate.max_class_f1_drop))
    for option, value in limits:
        if not value >= 0:
            raise IdsEdgeError(f"Invalid {option} {value}: use a drop in percentage points, 0 or more, e.g. 1.0.")


def gate_failures(comparison, gate):
    """List the gate limits a variant exceeds, each with the metric, the measured drop and the limit."""
    failures = []
    checks = (
        ("accuracy", -comparison["accuracy_change_pp"], gate.max_accuracy_drop, "--max-accuracy-drop"),
        ("macro F1", -comparison["macro_f1_change_pp"], gate.max_macro_f1_drop, "--max-macro-f1-drop"),
    )
    for metric, drop, limit, option in checks:
        if drop > limit:
            failures.append(f"{metric} dropped {drop:.2f} pp against Keras float32 (limit {option} {limit:.2f} pp)")
    if gate.max_class_f1_drop is not None:
        for class_name, change in comparison.get("per_class_f1_change_pp", {}).items():
            if -change > gate.max_class_f1_drop:
                failures.append(
                    f"F1 of class {class_name} dropped {-change:.2f} pp against Keras float32 "
                    f"(limit --max-class-f1-drop {gate.max_class_f1_drop:.2f} pp)"
                )
    return failures


def gate_advice(variants):
    """Suggest what to change for the rejected ``variants``, based on the options they used."""
    advice = ["raise the limit that failed"]
    pruned = sorted({variant.options.prune for variant in variants if variant.options.prune is not None})
    if pruned:
        advice.append(f"use a smaller --prune than {', '.join(str(value) for value in pruned)} or more --fine-tune-epochs")
    if any(variant.options.quantize == "int8" and not variant.options.qat for variant in variants):
        advice.append("add --qat for the int8 variants")
    if any(variant.options.quantize in ("float16", "dynamic") for variant in variants):
        advice.append("use --quantize none or int8 instead of float16/dynamic")
    if any(variant.options.quantize == "int8" for variant in variants):
        advice.append("calibrate on more rows with --representative-size")
    return ", or ".join(advice)


class _Models:
    """The run's data and models, with pruned and quantization-aware models made once per setting."""

    def __init__(self, run, dataset):
        _, keras = import_tensorflow()
        self.run = run
        self.dataset = dataset
        self.model = run.load_model()
        self.x_train = as_model_input(run.preprocessor.transform(dataset.train.features))
        self.y_train = keras.utils.to_categorical(dataset.train.labels, len(run.class_names))
        self.batch_size = int(run.info["training_options"].get("batch_size", 32))
        self._pruned = {}
        self._aware = {}

    def calibration(self, options):
        """Return the calibration rows (standardized, clipped) and the clip bounds."""
        rows = representative_rows(self.dataset.train.labels, options.representative_size, options.seed)
        standardized = as_model_input(self.run.preprocessor.transform(self.dataset.train.features[rows]))
        low, high = calibration_clip_bounds(standardized, options.calibration_clip)
        return rows, np.clip(standardized, low, high), (low, high)

    def pruned(self, options):
        """Return the pruned model for ``options`` (the trained model without ``prune``)."""
        if options.prune is None:
            return self.model
        key = (options.prune, options.prune_structure, options.fine_tune_epochs, options.fine_tune_learning_rate, options.seed)
        if key not in self._pruned:
            self._pruned[key] = compress.prune_model(
                self.model, self.x_train, self.y_train, options.prune, options.prune_structure,
                options.fine_tune_epochs, self.batch_size, options.fine_tune_learning_rate, options.seed,
            )
        return self._pruned[key]

    def aware(self, options, clamp):
        """Return the quantization-aware model, fine-tuned on training inputs clamped to ``clamp``."""
        key = (options.prune, options.prune_structure, options.fine_tune_epochs, options.fine_tune_learning_rate,
               options.seed, clamp)
        if key not in self._aware:
            self._aware[key] = compress.quantization_aware_model(
                self.pruned(options), np.clip(self.x_train, *clamp), self.y_train, options.fine_tune_epochs,
                self.batch_size, options.fine_tune_learning_rate, options.seed, preserve_sparsity=options.prune is not None,
            )
        return self._aware[key]


def _build_variant(models, options, runtime, keras_pred, keras_report, gate):
    run, dataset = models.run, models.dataset
    preprocessor = run.preprocessor
    graph_preprocessing = options.quantize == "int8" and options.io == "float"
    base = models.pruned(options)
    sparsity = compress.layer_sparsity(base) if options.prune is not None else None

    notices = []
    calibration_info = None
    calibration = None
    clamp = None
    if options.quantize == "int8":
        rows, calibration, clamp = models.calibration(options)
        rows_note = calibration_rows_note(dataset.train.labels, options.representative_size, len(rows))
        if rows_note:
            notices.append(f"{variant_name(options)}: {rows_note}")
        calibration_info = {
            "rows": int(len(rows)),
            "requested_rows": options.representative_size,
            "clip_quantile": options.calibration_clip,
            "clip_low": clamp[0],
            "clip_high": clamp[1],
            "stratified_by_class": True,
        }
        if graph_preprocessing:
            calibration = as_model_input(preprocessor.sanitize(dataset.train.features[rows]))
        logger.info("Calibrating int8 ranges on %d training rows, clamped to [%.3f, %.3f]", len(rows), *clamp)

    model = models.aware(options, clamp) if options.qat else base
    flatbuffer = convert(
        model, options, None if options.qat and not graph_preprocessing else calibration,
        preprocessor if graph_preprocessing else None, clamp if graph_preprocessing else None,
    )
    if options.sparse_encoding:
        flatbuffer, options = _check_sparse_encoding(model, options, flatbuffer, notices)

    test_inputs = dataset.test.features if graph_preprocessing else preprocessor.transform(dataset.test.features)
    tflite_pred, _ = predict_tflite(flatbuffer, test_inputs, runtime)
    report = evaluate.classification_report(dataset.test.labels, tflite_pred, run.class_names)
    comparison = evaluate.compare_reports(report, keras_report, tflite_pred, keras_pred)

    interpreter = make_interpreter(flatbuffer, runtime)
    model_metadata = {
        "format": metadata.FORMAT,
        "format_version": metadata.FORMAT_VERSION,
        "variant": variant_name(options),
        "task": run.task,
        "class_names": run.class_names,
        "feature_names": run.feature_names,
        "schema": run.info["schema"],
        "preprocessing": {**preprocessor.to_dict(), "location": "graph" if graph_preprocessing else "caller"},
        "quantize": options.quantize,
        "io": options.io,
        "input": tensor_info(interpreter.get_input_details()[0]),
        "output": tensor_info(interpreter.get_output_details()[0]),
        "calibration": calibration_info,
        "pruning": None if sparsity is None else {
            "target_sparsity": options.prune,
            "structure": options.prune_structure,
            "overall_sparsity": compress.overall_sparsity(sparsity),
            "layers": sparsity,
            "tflite_weights": tflite_file.weight_sparsity(flatbuffer),
        },
        "qat": options.qat,
        "synthetic_data": bool(run.info.get("synthetic_data", False)),
        "options": {"training": run.info["training_options"], "export": dataclasses.asdict(options)},
        "versions": runs.package_versions(),
    }
    flatbuffer = tflite_file.embed_metadata(flatbuffer, model_metadata)
    return VariantResult(
        variant_name(options), options, flatbuffer, model_metadata, report, comparison,
        gate_failures(comparison, gate), sparsity, notices=notices,
    )


def _check_sparse_encoding(model, options, flatbuffer, notices):
    """Keep a sparse-encoded flatbuffer only when the converter used the sparse format and it is smaller.

    The converter leaves a weight tensor dense when too few of its values are zero, e.g. at
    ``--prune 0.1``; then there is no DENSIFY op. Such a variant is written as the dense model
    under the name without ``_sparse``, with ``sparse_encoding`` false.

    Returns:
        ``(flatbuffer, options)``: the flatbuffer and options to use for the variant.
    """
    dense_options = dataclasses.replace(options, sparse_encoding=False)
    dense = convert(model, dense_options)
    ops = {operator["op"] for operator in tflite_file.describe_model(flatbuffer)["operators"]}
    if "DENSIFY" in ops and len(flatbuffer) < len(dense):
        return flatbuffer, options
    reason = "it has no DENSIFY op" if "DENSIFY" not in ops else f"it is not smaller ({len(flatbuffer)} >= {len(dense)} bytes)"
    notices.append(
        f"{variant_name(options)}: the converter did not store the weights in the sparse format ({reason}; "
        f"--prune {options.prune} leaves too few zeros), so the dense model is written as "
        f"{variant_name(dense_options)} with sparse_encoding false."
    )
    return dense, dense_options


def export_variants(run_dir, out_dir, variants, gate=None, data_path=None):
    """Export several variants of one run into one folder, evaluated and gated against Keras.

    Writes, for each accepted variant, ``model_NAME.tflite`` (with the metadata embedded, see
    :mod:`ids_edge.tflite_file`), ``model_NAME.json`` (see :mod:`ids_edge.metadata`) and
    ``model_NAME_metrics.{json,md}`` with its confusion matrix as CSV and PNG; and for all
    variants ``comparison.md``, ``size_vs_macro_f1.png`` and ``export.json``. ``out_dir`` is
    replaced only when everything succeeds. Rejected variants appear in the comparison but get
    no model file.

    Returns:
        An :class:`ExportSummary`; its ``rejected`` list may be non-empty.

    Raises:
        GateError: Every variant exceeds a gate limit; nothing is written.
        IdsEdgeError: Invalid options, an unreadable run directory, data that changed since
            training, or a failed conversion.
    """
    out_dir = pathlib.Path(out_dir)
    gate = gate or GateOptions()
    check_gate(gate)
    if not variants:
        raise IdsEdgeError("No variant to export: give --quantize at least once, or --all-variants.")
    for options in variants:
        check_options(options)
    names = [variant_name(options) for options in variants]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise IdsEdgeError(f"Variant {duplicates[0]} is requested twice. Give each --quantize/--io combination once.")

    started = time.monotonic()
    run = runs.load_run(run_dir)
    dataset = run.load_dataset(data_path)
    models = _Models(run, dataset)
    x_test = run.preprocessor.transform(dataset.test.features)
    keras_pred = predict_classes(models.model, as_model_input(x_test))
    keras_report = evaluate.classification_report(dataset.test.labels, keras_pred, run.class_names)

    runtime = find_runtime()
    runtime_name = f"{runtime.name} {runtime.version}"
    results = []
    for options in variants:
        logger.info("Exporting variant %s", variant_name(options))
        variant = _build_variant(models, options, runtime, keras_pred, keras_report, gate)
        if variant.name in [result.name for result in results]:
            # Only a sparse-encoded variant that fell back to its dense form can repeat a name.
            variant.notices.append(f"{variant.name} is already exported without --sparse-encoding, so it is written once.")
            next(result for result in results if result.name == variant.name).notices += variant.notices
            continue
        results.append(variant)
    summary = ExportSummary(out_dir, keras_report, results, gate, runtime_name, run.data_label)
    summary.notices = [notice for variant in results for notice in variant.notices]
    if any(options.prune_structure == "2:4" and options.prune is not None for options in variants):
        summary.notices.insert(0, PRUNE_2OF4_NOTICE)

    if not summary.accepted:
        raise GateError(
            f"The accuracy gate rejected every variant, so nothing was written to {out_dir}: "
            f"{summary.gate_message()}. To export anyway, {gate_advice(summary.rejected)}."
        )

    replaced = previous_models(out_dir)
    with output_dir(out_dir, marker="export.json") as folder:
        for variant in summary.accepted:
            _write_variant(folder, variant, runtime_name, run.data_label)
        payload = summary_payload(summary, run)
        metadata.write_json_atomic(folder / "export.json", payload)
        title = "Exported variants against the Keras float32 model" + run.data_label
        (folder / "comparison.md").write_text(variant_report.comparison_markdown(payload, title), encoding="utf-8")
        variant_report.plot_size_against_macro_f1(
            payload, folder / "size_vs_macro_f1.png",
            "Variant size against macro F1 (x: rejected by the gate)" + run.data_label,
        )
    if replaced:
        summary.notices.append(f"Replaced the models of the previous export in {out_dir}: {', '.join(replaced)}.")

    for variant in summary.accepted:
        variant.model_path = out_dir / f"model_{variant.name}.tflite"
    logger.info("Exported %d of %d variants to %s in %.1f s", len(summary.accepted), len(results), out_dir,
                time.monotonic() - started)
    return summary


PRUNE_2OF4_NOTICE = (
    "--prune-structure 2:4 prunes the Dense layers to exactly 0.5 sparsity (2 of every 4 weights), whatever "
    "--prune is; --prune sets the target of the Conv1D layers only. So a 2:4 variant with a target other than 0.5 "
    "is named pruned2of4_convNN. Its overall sparsity is on its 'Sparsity per layer' line and in export.json."
)


def previous_models(out_dir):
    """List the model files that the ``export.json`` in ``out_dir`` names as written, or [] if there is none."""
    try:
        payload = json.loads((pathlib.Path(out_dir) / "export.json").read_text(encoding="utf-8"))
        variants = payload["variants"].values()
        return sorted(entry["model"] for entry in variants if isinstance(entry, dict) and entry.get("model"))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        return []


def _write_variant(folder, variant, runtime_name, data_label=""):
    model_path = folder / f"model_{variant.name}.tflite"
    model_path.write_bytes(variant.flatbuffer)
    metadata.write_json_atomic(metadata.metadata_path(model_path), variant.model_metadata)
    title = f"{variant.name} TFLite model ({runtime_name}), test split{data_label}"
    evaluate.write_evaluation(folder, f"model_{variant.name}", variant.report, title, variant.comparison)


def summary_payload(summary, run):
    """Return the JSON-ready content of ``export.json``: every variant with its metrics and verdict."""
    return {
        "run_dir": str(run.path.resolve()),
        "task": run.task,
        "class_names": run.class_names,
        "synthetic_data": bool(run.info.get("synthetic_data", False)),
        "runtime": summary.runtime,
        "gate": dataclasses.asdict(summary.gate),
        "keras_metrics": summary.keras_report,
        "variants": {
            variant.name: {
                "model": f"model_{variant.name}.tflite" if variant.accepted else None,
                "written": variant.accepted,
                "gate_failures": variant.gate_failures,
                "size_bytes": variant.size_bytes,
                "gzip_bytes": variant.gzip_bytes,
                "options": dataclasses.asdict(variant.options),
                "sparsity": variant.sparsity,
                "overall_sparsity": compress.overall_sparsity(variant.sparsity) if variant.sparsity else None,
                "calibration": variant.model_metadata["calibration"],
                "input": variant.model_metadata["input"],
                "output": variant.model_metadata["output"],
                "metrics": variant.report,
                "change_against_keras": variant.comparison,
                "runtime": summary.runtime,
            }
            for variant in summary.variants
        },
    }


def export_run(run_dir, out_dir, options, data_path=None, gate=None):
    """Export one variant of a run; see :func:`export_variants`.

    Raises:
        GateError: The variant exceeds a gate limit; nothing is written.
        IdsEdgeError: As :func:`export_variants`.
    """
    summary = export_variants(run_dir, out_dir, [options], gate, data_path)
    variant = summary.variants[0]
    return ExportResult(
        variant.model_path, variant.size_bytes, variant.report, summary.keras_report, variant.comparison, summary.runtime
    )


def variant_options(quantize_modes, io_types=(), all_variants=False, qat=False, **shared):
    """Build one :class:`ExportOptions` per requested variant.

    Args:
        quantize_modes: Modes from ``--quantize`` (repeatable).
        io_types: I/O types from ``--io`` (repeatable); they apply to int8 variants, whose
            default is ``int8``. Non-int8 variants always have float I/O.
        all_variants: Export every mode, and int8 with both I/O types.
        qat: Export each int8 variant twice: post-training quantized and after
            quantization-aware fine-tuning, so the report shows which loses less.
        **shared: ``sparse_encoding`` in it applies to the ``none`` variant only.
        **shared: Further :class:`ExportOptions` fields, the same for every variant.

    Raises:
        IdsEdgeError: ``--io int8`` or ``--qat`` without an int8 variant, or
            ``--sparse-encoding`` without the ``none`` variant.
    """
    modes = list(QUANTIZE_MODES) if all_variants else list(dict.fromkeys(quantize_modes))
    ios = list(IO_TYPES) if all_variants else list(dict.fromkeys(io_types))
    if all_variants and (quantize_modes or io_types):
        given = " ".join([f"--quantize {mode}" for mode in quantize_modes] + [f"--io {io}" for io in io_types])
        raise IdsEdgeError(
            f"--all-variants exports every --quantize mode and both --io types, so it conflicts with {given}. "
            "Drop --quantize and --io, or drop --all-variants."
        )
    if "int8" not in modes and qat:
        raise IdsEdgeError(
            f"--qat applies to int8 variants (quantization-aware training for int8 inference), but --quantize is "
            f"{', '.join(modes)}. Add --quantize int8, or drop --qat."
        )
    if "int8" not in modes and "int8" in ios:
        raise IdsEdgeError(
            f"--io int8 needs --quantize int8, but --quantize is {', '.join(modes)}, which keeps float "
            "input and output. Drop --io int8 or add --quantize int8."
        )
    if "int8" not in modes and "float" in ios:
        raise IdsEdgeError(
            f"--io float applies to int8 variants, but --quantize is {', '.join(modes)}, whose models always have "
            "float input and output. Drop --io float or add --quantize int8."
        )
    if shared.get("sparse_encoding") and "none" not in modes:
        raise IdsEdgeError("--sparse-encoding applies to the float32 variant only. Add --quantize none, or drop --sparse-encoding.")
    variants = []
    for mode in modes:
        if mode != "int8":
            sparse = shared.get("sparse_encoding") and mode == "none"
            variants.append(ExportOptions(quantize=mode, io="float", **{**shared, "sparse_encoding": bool(sparse)}))
            continue
        for io in ios or ["int8"]:
            variants.append(ExportOptions(quantize=mode, io=io, **{**shared, "sparse_encoding": False}))
            if qat:
                variants.append(ExportOptions(quantize=mode, io=io, qat=True, **{**shared, "sparse_encoding": False}))
    return variants
