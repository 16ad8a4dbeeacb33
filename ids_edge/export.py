"""Convert a trained run to TFLite, evaluate the result in the TFLite runtime and write it out."""

import dataclasses
import logging
import time

import numpy as np

from ids_edge import evaluate, metadata, runs
from ids_edge._tf import import_tensorflow, quiet_native_stderr
from ids_edge.choices import IO_TYPES, QUANTIZE_MODES
from ids_edge.errors import IdsEdgeError
from ids_edge.outputs import output_dir
from ids_edge.preprocess import dequantize, quantize
from ids_edge.runtime import find_runtime, make_interpreter
from ids_edge.train import as_model_input, predict_classes

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class ExportOptions:
    """Export settings.

    ``representative_size`` is the number of training rows used to calibrate int8 ranges,
    drawn with the same number of rows per class (all rows of a smaller class).
    """

    quantize: str = "int8"
    io: str | None = None  # None: "int8" for int8 models; float models always have float I/O
    representative_size: int = 1000
    seed: int = 0


@dataclasses.dataclass
class ExportResult:
    """The written model, its metrics and their change against the Keras model."""

    model_path: object
    size_bytes: int
    report: dict
    keras_report: dict
    comparison: dict
    runtime: str


def variant_name(options):
    """Name a variant by its options, e.g. ``int8`` or ``int8_float_io``."""
    name = options.quantize
    if options.quantize == "int8" and options.io == "float":
        name += "_float_io"
    return name


def representative_rows(labels, size, seed):
    """Pick up to ``size`` row indices with the same number per class (all rows of smaller classes).

    Equal shares keep rare attack classes in the calibration data, whose ranges would otherwise
    be set almost entirely by the largest classes.
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


def convert(model, options, calibration_inputs=None):
    """Convert a tf_keras model with a static batch of 1 to a ``.tflite`` flatbuffer.

    Args:
        model: The trained model, input shape (features, 1).
        options: :class:`ExportOptions`.
        calibration_inputs: float32 array of shape (rows, features, 1), standardized, for int8.

    Returns:
        The flatbuffer bytes.
    """
    tf, _ = import_tensorflow()
    feature_count = model.input_shape[1]
    signature = tf.TensorSpec([1, feature_count, 1], tf.float32, name="features")
    concrete = tf.function(lambda features: model(features, training=False)).get_concrete_function(signature)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)

    if options.quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif options.quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif options.quantize == "int8":
        inputs = _check_calibration(calibration_inputs, feature_count)

        def representative_dataset():
            for row in inputs:
                yield [row[np.newaxis]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if options.io == "int8":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8

    try:
        with quiet_native_stderr():
            return converter.convert()
    except Exception as error:  # The converter raises many types; report them as one failure.
        raise IdsEdgeError(f"TFLite conversion ({options.quantize}) failed: {error}") from None


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


def predict_tflite(model_content, standardized, runtime=None):
    """Run a ``.tflite`` model on standardized float32 features of shape (rows, features).

    Quantizes the input and dequantizes the output when the model's tensors are int8.

    Returns:
        ``(class_indices, outputs)``: outputs as the model returns them (int8 or float32).
    """
    interpreter = make_interpreter(model_content, runtime)
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    inputs = as_model_input(standardized)
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


def export_run(run_dir, out_dir, options, data_path=None):
    """Export a run as a ``.tflite`` model, evaluate it on the test split and write the results.

    Writes ``model_VARIANT.tflite``, ``model_VARIANT.json`` (metadata, see
    :mod:`ids_edge.metadata`), ``model_VARIANT_metrics.{json,md}``, its confusion matrix as CSV
    and PNG, and ``export.json``; ``out_dir`` is replaced only when everything succeeds.

    Raises:
        IdsEdgeError: Invalid options, an unreadable run directory, data that changed since
            training, or a failed conversion.
    """
    _check_options(options)
    started = time.monotonic()
    run = runs.load_run(run_dir)
    dataset = run.load_dataset(data_path)
    model = run.load_model()
    preprocessor = run.preprocessor

    x_test = preprocessor.transform(dataset.test.features)
    keras_pred = predict_classes(model, as_model_input(x_test))
    keras_report = evaluate.classification_report(dataset.test.labels, keras_pred, run.class_names)

    calibration = None
    if options.quantize == "int8":
        rows = representative_rows(dataset.train.labels, options.representative_size, options.seed)
        calibration = as_model_input(preprocessor.transform(dataset.train.features[rows]))
        logger.info("Calibrating int8 ranges on %d training rows", len(rows))
    flatbuffer = convert(model, options, calibration)

    runtime = find_runtime()
    tflite_pred, _ = predict_tflite(flatbuffer, x_test, runtime)
    report = evaluate.classification_report(dataset.test.labels, tflite_pred, run.class_names)
    comparison = evaluate.compare_reports(report, keras_report, tflite_pred, keras_pred)

    name = variant_name(options)
    interpreter = make_interpreter(flatbuffer, runtime)
    model_metadata = {
        "format": metadata.FORMAT,
        "format_version": metadata.FORMAT_VERSION,
        "task": run.task,
        "class_names": run.class_names,
        "feature_names": run.feature_names,
        "schema": run.info["schema"],
        "preprocessing": {**preprocessor.to_dict(), "location": "caller"},
        "quantize": options.quantize,
        "io": options.io,
        "input": tensor_info(interpreter.get_input_details()[0]),
        "output": tensor_info(interpreter.get_output_details()[0]),
        "options": {"training": run.info["training_options"], "export": dataclasses.asdict(options)},
        "versions": runs.package_versions(),
    }

    with output_dir(out_dir) as folder:
        model_path = folder / f"model_{name}.tflite"
        model_path.write_bytes(flatbuffer)
        metadata.write_json_atomic(metadata.metadata_path(model_path), model_metadata)
        title = f"{name} TFLite model ({runtime.name} {runtime.version}), test split"
        evaluate.write_evaluation(folder, f"model_{name}", report, title, comparison)
        metadata.write_json_atomic(
            folder / "export.json",
            {
                "run_dir": str(run.path.resolve()),
                "variants": {
                    name: {
                        "model": model_path.name,
                        "size_bytes": len(flatbuffer),
                        "metrics": report,
                        "keras_metrics": keras_report,
                        "change_against_keras": comparison,
                        "runtime": f"{runtime.name} {runtime.version}",
                    }
                },
            },
        )

    final_path = out_dir / model_path.name
    logger.info("Exported %s (%d bytes) in %.1f s", final_path, len(flatbuffer), time.monotonic() - started)
    return ExportResult(final_path, len(flatbuffer), report, keras_report, comparison, f"{runtime.name} {runtime.version}")


def _check_options(options):
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
