"""Generate firmware sources for an exported int8 ``.tflite`` model: ``ids-edge firmware``."""

import dataclasses
import hashlib
import json
import logging
import math
import pathlib

import numpy as np

import ids_edge
from ids_edge.errors import IdsEdgeError
from ids_edge.metadata import metadata_path, read_metadata
from ids_edge.outputs import output_dir
from ids_edge.preprocess import Preprocessor

from firmware_bridge import c_sources
from firmware_bridge.arena import measure_arena, tflm_version
from firmware_bridge.flatbuffer import read_model_info
from firmware_bridge.identifiers import sanitize_identifier

logger = logging.getLogger(__name__)

DEFAULT_ARENA_MARGIN = 0.25
"""Fraction added to the measured tensor arena (0.25 = 25 %).

The measurement uses TFLite Micro's reference kernels on a 64-bit host. Optimized kernels such
as CMSIS-NN request scratch buffers that the reference kernels do not, and other TFLite Micro
versions plan memory differently. 32-bit targets have smaller pointer-holding structs, which
works the other way. The margin is an estimate, not a measurement on a device.
"""

MANIFEST_NAME = "firmware.json"
"""File in the output folder that lists what was generated (also marks the folder as ids-edge output)."""

ARENA_ALIGNMENT = 16
"""Bytes that the tensor arena size is rounded up to, TFLite Micro's arena alignment."""


@dataclasses.dataclass
class FirmwareResult:
    """The generated files and the tensor arena they declare."""

    out_dir: pathlib.Path
    files: list
    prefix: str
    arena_size: int
    measured_arena_bytes: int
    arena_margin: float
    operators: list
    model_path: pathlib.Path
    requested_name: str | None = None

    def summary_lines(self):
        """Return the lines ``ids-edge firmware`` prints."""
        lines = []
        if self.requested_name is not None and self.requested_name != self.prefix:
            lines.append(
                f"Note: --name {self.requested_name!r} is not a valid C identifier, so the prefix is {self.prefix!r}."
            )
        lines.append(f"Wrote {len(self.files)} files to {self.out_dir} (prefix {self.prefix}):")
        for path in self.files:
            lines.append(f"  {path.name} ({path.stat().st_size} bytes)")
        lines.append(
            f"Tensor arena: {self.arena_size} bytes = {self.measured_arena_bytes} bytes measured in the "
            f"TFLite Micro Python interpreter on this host + {self.arena_margin:.0%} margin, rounded up to "
            f"{ARENA_ALIGNMENT} bytes. Check on the device with MicroInterpreter::arena_used_bytes()."
        )
        lines.append(f"Operators ({len(self.operators)}): {', '.join(self.operators)}.")
        lines.append("Compile the C files without -ffast-math, so that preprocessing matches ids-edge bit for bit.")
        return lines


def generate_firmware(
    model_path: pathlib.Path,
    out_dir: pathlib.Path,
    name: str | None = None,
    arena_margin: float = DEFAULT_ARENA_MARGIN,
) -> FirmwareResult:
    """Write C sources that embed an int8 ``.tflite`` model in TFLite Micro firmware.

    Reads ``MODEL.json`` beside the model and writes, under ``out_dir``: ``PREFIX_model_data.{h,c}``
    (the flatbuffer as a 16-byte aligned array), ``PREFIX_config.h`` (features, classes,
    quantization, tensor arena), ``PREFIX_preprocess.{h,c}`` (raw features to int8 input, int8
    output to class and probability), ``PREFIX_op_resolver.h`` (C++ MicroMutableOpResolver) and
    ``firmware.json``. The folder is written beside ``out_dir`` and renamed at the end, so a
    failure leaves an existing ``out_dir`` as it was.

    Args:
        model_path: The ``.tflite`` file, with int8 input and output.
        out_dir: Folder to create, or to replace if it is empty or contains earlier ids-edge output.
        name: Prefix of C identifiers and file names; None takes the model's file name. Either is
            made a valid C identifier.
        arena_margin: Fraction added to the measured tensor arena (0.25 = 25 %).

    Returns:
        A :class:`FirmwareResult`.

    Raises:
        IdsEdgeError: The model or its metadata is missing or invalid, the model is not int8,
            or ``out_dir`` is a file or a non-empty folder that ids-edge did not write.
        MissingRuntimeError: The ``tflite-micro`` package is not installed.
    """
    model_path = pathlib.Path(model_path)
    out_dir = pathlib.Path(out_dir)
    if not isinstance(arena_margin, (int, float)) or not math.isfinite(arena_margin) or arena_margin < 0:
        raise IdsEdgeError(f"Invalid arena margin {arena_margin!r}: use a fraction of 0 or more, such as 0.25.")

    model_data = _read_model(model_path)
    metadata = read_metadata(model_path)
    _check_out_dir(out_dir, model_path)
    info = read_model_info(model_data, model_path)
    spec_fields = _check_model(model_path, metadata, info)

    measured = measure_arena(model_data, model_path)
    arena_size = _with_margin(measured, arena_margin)

    prefix = sanitize_identifier(name if name is not None else model_path.stem)
    if name is not None and prefix != name:
        logger.info("Prefix %r is not a valid C identifier, so the generated code uses %r", name, prefix)

    spec = c_sources.FirmwareSpec(
        prefix=prefix,
        model_file_name=model_path.name,
        model_sha256=hashlib.sha256(model_data).hexdigest(),
        model_data=model_data,
        operators=info.operators,
        arena_size=arena_size,
        measured_arena_bytes=measured,
        arena_margin=float(arena_margin),
        tflm_version=tflm_version(),
        ids_edge_version=ids_edge.__version__,
        **spec_fields,
    )
    texts = {
        spec.file_name("model_data.h"): c_sources.render_model_data_header(spec),
        spec.file_name("model_data.c"): c_sources.render_model_data_source(spec),
        spec.file_name("config.h"): c_sources.render_config_header(spec),
        spec.file_name("preprocess.h"): c_sources.render_preprocess_header(spec),
        spec.file_name("preprocess.c"): c_sources.render_preprocess_source(spec),
        spec.file_name("op_resolver.h"): c_sources.render_op_resolver_header(spec),
    }
    texts[MANIFEST_NAME] = _manifest(spec, list(texts)) + "\n"

    with output_dir(out_dir, marker="firmware.json") as temporary:
        for file_name, text in texts.items():
            (temporary / file_name).write_text(text, encoding="ascii", newline="\n")

    logger.info("Wrote firmware sources for %s to %s", model_path, out_dir)
    return FirmwareResult(
        out_dir=out_dir,
        files=[out_dir / file_name for file_name in texts],
        prefix=prefix,
        arena_size=arena_size,
        measured_arena_bytes=measured,
        arena_margin=float(arena_margin),
        operators=[operator.name for operator in info.operators],
        model_path=model_path,
        requested_name=name,
    )


def _read_model(model_path):
    if model_path.is_dir():
        raise IdsEdgeError(f"Model path {model_path} is a folder. Pass the .tflite file written by 'ids-edge export'.")
    try:
        return model_path.read_bytes()
    except FileNotFoundError:
        raise IdsEdgeError(f"Model file {model_path} not found. Pass the .tflite file written by 'ids-edge export'.") from None
    except OSError as error:
        raise IdsEdgeError(f"Failed to read model file {model_path}: {error.strerror}.") from None


def _check_out_dir(out_dir, model_path):
    """Raise IdsEdgeError if replacing ``out_dir`` could delete the model or other ids-edge output.

    :func:`ids_edge.outputs.output_dir` replaces any folder with an ids-edge marker file, which
    includes the export folder that contains the model itself.
    """
    resolved = out_dir.resolve()
    if resolved == model_path.resolve().parent or resolved in model_path.resolve().parents:
        raise IdsEdgeError(
            f"Output folder {out_dir} contains the model {model_path}, and writing it would replace the "
            "model. Choose another folder with --out."
        )
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST_NAME).exists():
        raise IdsEdgeError(
            f"Output folder {out_dir} is not empty and was not written by 'ids-edge firmware' (no "
            f"{MANIFEST_NAME}), so it is left alone. Choose a new or empty folder with --out."
        )


def _with_margin(measured, margin):
    """Return ``measured * (1 + margin)`` in bytes, rounded up to :data:`ARENA_ALIGNMENT`."""
    size = math.ceil(measured * (1.0 + margin))
    return -(-size // ARENA_ALIGNMENT) * ARENA_ALIGNMENT


def _check_model(model_path, metadata, info):
    """Check that the model is int8 and agrees with its metadata, and return the spec's data fields."""
    json_path = metadata_path(model_path)
    if len(info.inputs) != 1 or len(info.outputs) != 1:
        raise IdsEdgeError(
            f"{model_path} has {len(info.inputs)} inputs and {len(info.outputs)} outputs, but ids-edge "
            "firmware needs one of each. Pass a model written by 'ids-edge export'."
        )
    model_input = info.inputs[0]
    model_output = info.outputs[0]
    if model_input.dtype != "int8" or model_output.dtype != "int8":
        raise IdsEdgeError(
            f"{model_path} has {model_input.dtype} input and {model_output.dtype} output, but firmware "
            "generation needs a full-integer model with int8 input and output. Export it with "
            "'ids-edge export --quantize int8 --io int8'."
        )
    if not model_input.scale > 0 or not model_output.scale > 0:
        raise IdsEdgeError(f"{model_path} has int8 input or output without a quantization scale. Export the model again.")

    try:
        preprocessing = metadata["preprocessing"]
        location = preprocessing["location"]
        preprocessor = Preprocessor.from_dict(preprocessing)
        class_names = [str(label) for label in metadata["class_names"]]
        declared_input = metadata["input"]
        declared_output = metadata["output"]
    except (KeyError, TypeError, ValueError) as error:
        raise IdsEdgeError(
            f"{json_path} has a missing or invalid preprocessing, class_names, input or output entry "
            f"({type(error).__name__}: {error}). Export the model again."
        ) from None

    if location != "caller":
        raise IdsEdgeError(
            f"{json_path} has preprocessing location {location!r}, but an int8 model expects the caller to "
            "standardize (location \"caller\"). Export the model again."
        )
    _check_preprocessor(json_path, preprocessor)
    _check_declared(json_path, "input", declared_input, model_input)
    _check_declared(json_path, "output", declared_output, model_output)

    feature_count = len(preprocessor.feature_names)
    if int(np.prod(model_input.shape)) != feature_count:
        raise IdsEdgeError(
            f"{model_path} takes input of shape {list(model_input.shape)}, but {json_path} lists "
            f"{feature_count} features. The metadata belongs to another model: export again."
        )
    if int(np.prod(model_output.shape)) != len(class_names):
        raise IdsEdgeError(
            f"{model_path} has output of shape {list(model_output.shape)}, but {json_path} lists "
            f"{len(class_names)} classes. The metadata belongs to another model: export again."
        )

    return {
        "feature_names": preprocessor.feature_names,
        "mean": preprocessor.mean,
        "scale": preprocessor.scale,
        "clip_min": preprocessor.clip_min,
        "clip_max": preprocessor.clip_max,
        "class_names": class_names,
        "input": model_input,
        "output": model_output,
    }


def _check_preprocessor(json_path, preprocessor):
    count = len(preprocessor.feature_names)
    for field in ("mean", "scale", "clip_min", "clip_max"):
        values = getattr(preprocessor, field)
        if values.shape != (count,):
            raise IdsEdgeError(
                f"{json_path} has {values.size} preprocessing {field} values for {count} features. Export the model again."
            )
        if not np.isfinite(values).all():
            raise IdsEdgeError(f"{json_path} has a non-finite preprocessing {field} value. Export the model again.")
    if not (preprocessor.scale > 0).all():
        raise IdsEdgeError(f"{json_path} has a preprocessing scale of 0 or less. Export the model again.")
    if not (preprocessor.clip_min <= preprocessor.clip_max).all():
        raise IdsEdgeError(f"{json_path} has a clip_min above its clip_max. Export the model again.")


def _check_declared(json_path, role, declared, actual):
    """Raise IdsEdgeError unless the metadata's tensor entry matches the flatbuffer's tensor."""
    try:
        same = (
            declared["dtype"] == actual.dtype
            and np.float32(declared["scale"]) == np.float32(actual.scale)
            and int(declared["zero_point"]) == actual.zero_point
        )
    except (KeyError, TypeError, ValueError):
        same = False
    if not same:
        raise IdsEdgeError(
            f"{json_path} describes the {role} tensor as {_describe(declared)}, but the model has "
            f"dtype {actual.dtype}, scale {actual.scale!r}, zero point {actual.zero_point}. The metadata "
            "belongs to another model: export again."
        )


def _describe(declared):
    if not isinstance(declared, dict):
        return repr(declared)
    return f"dtype {declared.get('dtype')}, scale {declared.get('scale')!r}, zero point {declared.get('zero_point')}"


def _manifest(spec, file_names):
    return json.dumps(
        {
            "format": "ids-edge-firmware",
            "format_version": 1,
            "model": spec.model_file_name,
            "model_sha256": spec.model_sha256,
            "prefix": spec.prefix,
            "files": file_names,
            "operators": [operator.name for operator in spec.operators],
            "tensor_arena_size": spec.arena_size,
            "tensor_arena_measured_bytes": spec.measured_arena_bytes,
            "tensor_arena_margin": spec.arena_margin,
            "tflite_micro_version": spec.tflm_version,
            "ids_edge_version": spec.ids_edge_version,
        },
        indent=2,
    )
