"""Read and rewrite ``.tflite`` flatbuffers: embedded ids-edge metadata, operators and tensor types.

The metadata is stored as UTF-8 JSON in a buffer of the flatbuffer's ``Model.metadata`` vector
under the name :data:`METADATA_NAME`, next to the entries the converter writes itself
(``min_runtime_version``, ``CONVERSION_METADATA``). Runtimes ignore metadata names they do not
know, so LiteRT and TFLite Micro load the model as before. No tflite-support package is needed:
the TFLite schema's generated Python module is taken from ai-edge-litert, tflite-micro or
TensorFlow, whichever is installed.
"""

import importlib
import json
import logging

from ids_edge.errors import IdsEdgeError, MissingRuntimeError

logger = logging.getLogger(__name__)

METADATA_NAME = "ids_edge_metadata"
"""Name of the flatbuffer metadata entry that contains the ids-edge JSON metadata."""

SCHEMA_MODULES = (
    "ai_edge_litert.schema_py_generated",
    "tflite_micro.tensorflow.lite.micro.python.schema_py_generated",
    "tensorflow.lite.python.schema_py_generated",
)
"""Modules that contain the generated TFLite schema classes, in the order they are tried."""

BUFFER_ALIGNMENT = 16
"""Alignment in bytes of each constant buffer, as the TFLite converter writes them."""


def load_schema():
    """Import the generated TFLite schema module from the first package that provides it.

    Raises:
        MissingRuntimeError: None of :data:`SCHEMA_MODULES` imports.
    """
    reasons = []
    for name in SCHEMA_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError as error:
            reasons.append(f"{name}: {error}")
    raise MissingRuntimeError(
        "No TFLite schema module could be imported (" + "; ".join(reasons) + "). "
        "Install one with 'pip install ai-edge-litert'."
    )


def _parse_model(flatbuffer, schema, source="the model"):
    data = bytes(flatbuffer)
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise IdsEdgeError(f"{source} is not a TFLite flatbuffer (no 'TFL3' identifier). Export it with 'ids-edge export'.")
    check_complete(data, schema, source)
    return schema.Model.GetRootAsModel(data, 0)


def check_complete(data, schema=None, source="the model"):
    """Read every table of a ``.tflite`` flatbuffer once, so that a truncated or damaged file fails here.

    The generated accessors read lazily and fail only when a field past the end of the bytes is
    touched, with struct.error, TypeError, IndexError or ValueError. Unpacking the whole model
    touches every field, and external buffers (``offset`` and ``size``) must lie inside the file.

    Raises:
        IdsEdgeError: The bytes end before the model's tables do, or a table is invalid.
    """
    schema = schema or load_schema()
    data = bytes(data)
    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
        complete = bool(model.subgraphs) and all(
            (buffer.offset or 0) <= 1 or buffer.offset + (buffer.size or 0) <= len(data) for buffer in model.buffers or []
        )
    except Exception:  # noqa: BLE001 (a damaged flatbuffer raises struct errors, TypeError, IndexError and others)
        complete = False
    if not complete:
        raise IdsEdgeError(f"{source} is truncated or not a valid TFLite file ({len(data)} bytes). Export it again.")


def embed_metadata(flatbuffer, metadata, name=METADATA_NAME):
    """Return a copy of ``flatbuffer`` with ``metadata`` (a JSON-ready dict) stored under ``name``.

    An existing entry of the same name is replaced. The JSON is written with sorted keys, so the
    same inputs give the same bytes.
    """
    schema = load_schema()
    model = schema.ModelT.InitFromObj(_parse_model(flatbuffer, schema))
    payload = json.dumps(metadata, sort_keys=True, separators=(",", ":")).encode("utf-8")

    model.metadata = [entry for entry in (model.metadata or []) if _decode(entry.name) != name]
    buffer = schema.BufferT()
    buffer.data = list(payload)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    return _pack(model, schema)


def _pack(model, schema):
    """Serialize a ``ModelT`` with every constant buffer aligned to :data:`BUFFER_ALIGNMENT` bytes.

    The generated ``BufferT.Pack`` aligns data to one byte only. TFLite Micro reads int32 biases
    and float32 weights in place, which needs aligned data on some microcontrollers.
    """
    import flatbuffers

    model.buffers = [_AlignedBuffer.from_buffer(buffer, schema) for buffer in model.buffers]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


class _AlignedBuffer:
    """A stand-in for the schema's ``BufferT`` whose ``Pack`` aligns the data vector."""

    def __init__(self, data, offset, size, schema):
        self.data = data
        self.offset = offset
        self.size = size
        self.schema = schema

    @classmethod
    def from_buffer(cls, buffer, schema):
        data = None if buffer.data is None else bytes(bytearray(buffer.data))
        return cls(data, buffer.offset, buffer.size, schema)

    def Pack(self, builder):  # noqa: N802 (the name the generated ModelT.Pack calls)
        vector = None
        if self.data is not None:
            builder.StartVector(1, len(self.data), BUFFER_ALIGNMENT)
            builder.head = builder.head - len(self.data)
            builder.Bytes[builder.head : builder.head + len(self.data)] = self.data
            vector = builder.EndVector()
        self.schema.BufferStart(builder)
        if vector is not None:
            self.schema.BufferAddData(builder, vector)
        self.schema.BufferAddOffset(builder, self.offset)
        self.schema.BufferAddSize(builder, self.size)
        return self.schema.BufferEnd(builder)


def _decode(value):
    return value.decode("utf-8") if isinstance(value, bytes) else value


def read_embedded_metadata(flatbuffer, name=METADATA_NAME, source="the model"):
    """Return the JSON metadata stored under ``name`` in a ``.tflite`` flatbuffer, or None.

    Raises:
        IdsEdgeError: The bytes are not a TFLite flatbuffer, or the entry is not valid JSON.
    """
    schema = load_schema()
    model = _parse_model(flatbuffer, schema, source)
    for index in range(model.MetadataLength()):
        entry = model.Metadata(index)
        if _decode(entry.Name()) != name:
            continue
        payload = model.Buffers(entry.Buffer()).DataAsNumpy()
        try:
            return json.loads(bytes(payload).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise IdsEdgeError(f"The {name} metadata in {source} is not valid JSON ({error}). Export the model again.") from None
    return None


def describe_model(flatbuffer, source="the model"):
    """List a flatbuffer's operators, tensors and metadata entry names.

    Returns:
        A dict with ``operators``, ``tensors``, ``inputs``, ``outputs`` and ``metadata_names``.
        Each operator, in execution order, has ``op``, and ``inputs`` and ``outputs`` as tensor
        indices. Each tensor has ``name``, ``dtype`` (a TFLite type name such as ``INT8``),
        ``shape``, ``scale`` and ``zero_point`` lists and ``constant``. ``inputs`` and
        ``outputs`` are tensor indices. Only the first subgraph is described, because ids-edge
        models have one.
    """
    schema = load_schema()
    model = _parse_model(flatbuffer, schema, source)
    type_names = {value: key for key, value in vars(schema.TensorType).items() if not key.startswith("_")}
    op_names = {value: key for key, value in vars(schema.BuiltinOperator).items() if not key.startswith("_")}
    graph = model.Subgraphs(0)

    tensors = []
    for index in range(graph.TensorsLength()):
        tensor = graph.Tensors(index)
        quantization = tensor.Quantization()
        scale, zero_point = [], []
        if quantization is not None and quantization.ScaleLength():
            scale = [float(v) for v in quantization.ScaleAsNumpy()]
            zero_point = [int(v) for v in quantization.ZeroPointAsNumpy()]
        buffer = model.Buffers(tensor.Buffer())
        tensors.append(
            {
                "name": _decode(tensor.Name()),
                "dtype": type_names.get(tensor.Type(), str(tensor.Type())),
                "shape": [int(v) for v in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else [],
                "scale": scale,
                "zero_point": zero_point,
                "constant": bool(buffer is not None and buffer.DataLength() > 0),
            }
        )

    operators = []
    for index in range(graph.OperatorsLength()):
        operator = graph.Operators(index)
        code = model.OperatorCodes(operator.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = _decode(code.CustomCode()) if builtin == schema.BuiltinOperator.CUSTOM else op_names.get(builtin, str(builtin))
        operators.append(
            {
                "op": name,
                "inputs": [int(v) for v in operator.InputsAsNumpy() if v >= 0] if operator.InputsLength() else [],
                "outputs": [int(v) for v in operator.OutputsAsNumpy()] if operator.OutputsLength() else [],
            }
        )

    return {
        "operators": operators,
        "tensors": tensors,
        "inputs": [int(v) for v in graph.InputsAsNumpy()],
        "outputs": [int(v) for v in graph.OutputsAsNumpy()],
        "metadata_names": [_decode(model.Metadata(i).Name()) for i in range(model.MetadataLength())],
    }


def inspect_model(model_path):
    """Read a ``.tflite`` file's embedded metadata, operators and tensors.

    The metadata comes from the flatbuffer itself, so the JSON file beside the model is not
    needed. When that file exists and differs from the embedded copy, ``json_file_matches`` is
    false.

    Returns:
        ``{"path", "size_bytes", "metadata" (dict or None), "json_file_matches" (bool or None),
        **describe_model(...)}``.

    Raises:
        IdsEdgeError: The file is missing or is not a TFLite flatbuffer.
    """
    import pathlib

    from ids_edge.coral import read_tflite_bytes

    path = pathlib.Path(model_path)
    data = read_tflite_bytes(path)
    embedded = read_embedded_metadata(data, source=str(path))
    json_path = path.with_suffix(".json")
    matches = None
    if json_path.is_file() and embedded is not None:
        try:
            matches = json.loads(json_path.read_text(encoding="utf-8")) == embedded
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            matches = False
    return {
        "path": str(path),
        "size_bytes": len(data),
        "metadata": embedded,
        "json_file_matches": matches,
        **describe_model(data, str(path)),
    }


def _format_quantization(tensor):
    if not tensor["scale"]:
        return ""
    if len(tensor["scale"]) == 1:
        return f" scale {tensor['scale'][0]:.6g} zero point {tensor['zero_point'][0]}"
    return f" per-channel ({len(tensor['scale'])} scales)"


def _format_preprocessing(feature_names, preprocessing):
    """Format the per-feature values that the caller sanitizes and standardizes with, one row per feature."""
    columns = ("mean", "scale", "clip_min", "clip_max")
    width = max([len(name) for name in feature_names] + [len("feature")])
    lines = [
        "preprocessing (done by the caller: NaN becomes mean, clip to [clip_min, clip_max], then (x - mean) / scale):",
        f"  {'feature':<{width}} " + " ".join(f"{column:>12}" for column in columns),
    ]
    for index, name in enumerate(feature_names):
        cells = []
        for column in columns:
            values = preprocessing.get(column) or []
            cells.append(f"{values[index]:>12.6g}" if index < len(values) else f"{'missing':>12}")
        lines.append(f"  {name:<{width}} " + " ".join(cells))
    return lines


def format_inspection(info):
    """Format :func:`inspect_model`'s result as lines for a terminal."""
    lines = [f"{info['path']}: {info['size_bytes']} bytes, metadata entries: {', '.join(info['metadata_names'])}"]
    meta = info["metadata"]
    if meta is None:
        lines.append(f"No {METADATA_NAME} entry: this model was not exported by this version of ids-edge.")
    else:
        preprocessing = meta.get("preprocessing", {})
        versions = meta.get("versions", {})
        export_options = meta.get("options", {}).get("export", {})
        if meta.get("synthetic_data"):
            lines.append("SYNTHETIC: trained and evaluated on synthetic data; its metrics are not CICIoMT2024 results.")
        lines += [
            f"variant: {meta.get('variant')}, task: {meta.get('task')} classes, schema: {meta.get('schema')}",
            f"quantize: {meta.get('quantize')}, io: {meta.get('io')}, QAT: {meta.get('qat')}, "
            f"preprocessing location: {preprocessing.get('location')}",
            f"classes (output order): {', '.join(meta.get('class_names', []))}",
            f"features (input order, {len(meta.get('feature_names', []))}): {', '.join(meta.get('feature_names', []))}",
        ]
        if preprocessing.get("location") == "caller":
            lines += _format_preprocessing(meta.get("feature_names", []), preprocessing)
        for key in ("input", "output"):
            tensor = meta.get(key, {})
            lines.append(
                f"{key}: {tensor.get('name')} {tensor.get('dtype')} {tensor.get('shape')} "
                f"scale {tensor.get('scale')} zero point {tensor.get('zero_point')}"
            )
        if meta.get("calibration"):
            calibration = meta["calibration"]
            lines.append(
                f"calibration: {calibration['rows']} rows, clip quantile {calibration['clip_quantile']}, "
                f"standardized input clamped to [{calibration['clip_low']:.4g}, {calibration['clip_high']:.4g}]"
            )
        if meta.get("pruning"):
            pruning = meta["pruning"]
            layers = ", ".join(f"{name} {entry['sparsity']:.3f}" for name, entry in pruning["layers"].items())
            overall = pruning.get("overall_sparsity")
            overall = "" if overall is None else f", overall {overall:.3f}"
            lines.append(
                f"pruning: target {pruning['target_sparsity']} ({pruning['structure']}); sparsity per layer: {layers}{overall}"
            )
        lines.append("export options: " + ", ".join(f"{key}={value}" for key, value in sorted(export_options.items())))
        lines.append("versions: " + ", ".join(f"{key} {value}" for key, value in sorted(versions.items())))
        if info["json_file_matches"] is False:
            lines.append("WARNING: the JSON file beside the model differs from the embedded metadata.")

    lines.append(f"operators ({len(info['operators'])}):")
    tensors = info["tensors"]
    for index, operator in enumerate(info["operators"]):
        inputs = ", ".join(tensors[i]["dtype"] + ("(const)" if tensors[i]["constant"] else "") for i in operator["inputs"])
        outputs = ", ".join(tensors[i]["dtype"] for i in operator["outputs"])
        lines.append(f"  {index:2d} {operator['op']}: {inputs} -> {outputs}")
    lines.append(f"tensors ({len(tensors)}):")
    for index, tensor in enumerate(tensors):
        lines.append(f"  {index:2d} {tensor['dtype']} {tensor['shape']}{_format_quantization(tensor)} {tensor['name']}")
    return lines


WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
"""Operators whose second input is a weight tensor."""


def weight_sparsity(flatbuffer):
    """Measure the fraction of zero values in each constant weight tensor of the model.

    A weight counts as zero when its stored value is 0. That is exact for float32 and for
    symmetric int8 weights, whose zero point is 0 as TFLite's int8 scheme requires. Weights in
    TFLite's sparse format (``EXPERIMENTAL_SPARSITY``) are skipped, because only their non-zero
    blocks are stored.

    Returns:
        ``{tensor name: fraction}`` in operator order.
    """
    import numpy as np

    schema = load_schema()
    model = _parse_model(flatbuffer, schema)
    info = describe_model(flatbuffer)
    graph = model.Subgraphs(0)
    dtypes = {"FLOAT32": np.float32, "INT8": np.int8, "FLOAT16": np.float16}
    result = {}
    for operator in info["operators"]:
        if operator["op"] not in WEIGHT_OPS or len(operator["inputs"]) < 2:
            continue
        index = operator["inputs"][1]
        tensor = graph.Tensors(index)
        buffer = model.Buffers(tensor.Buffer())
        dtype = dtypes.get(info["tensors"][index]["dtype"])
        if dtype is None or buffer is None or buffer.DataLength() == 0 or tensor.Sparsity() is not None:
            continue
        values = np.frombuffer(bytes(buffer.DataAsNumpy()), dtype=dtype)
        result[info["tensors"][index]["name"]] = float(np.count_nonzero(values == 0) / values.size)
    return result
