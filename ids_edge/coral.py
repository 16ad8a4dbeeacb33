"""Coral Edge TPU readiness: check a ``.tflite`` model against the Edge TPU's documented rules.

The readiness report needs no Coral hardware and no Coral software. It reads the flatbuffer and
checks, as Coral's "TensorFlow models on the Edge TPU" page describes:

- full-integer tensors: every activation int8 or uint8, weights int8 or uint8, biases int32;
- static shapes (no ``-1`` in any ``shape_signature``) and a batch of 1;
- at most 3 dimensions larger than 1, and those the innermost;
- every operator against :data:`EDGETPU_OPERATORS`, with the constraints that can be checked
  from the file.

The Edge TPU compiler maps operators in execution order until the first one it cannot map.
That operator and every one after it run on the CPU, and the report marks that point.

When ``edgetpu_compiler`` is on ``PATH`` it compiles the model and its summary goes into the
report. When ``libedgetpu.so.1`` loads, the compiled model is timed through the delegate. Each of
these steps reports that it was skipped, and why, when its tool is missing.
"""

import ctypes
import dataclasses
import logging
import pathlib
import re
import shutil
import struct
import subprocess
import tempfile

import numpy as np

from ids_edge.errors import IdsEdgeError
from ids_edge.tflite_file import load_schema

logger = logging.getLogger(__name__)

DOCS_URL = "https://coral.ai/docs/edgetpu/models-intro/#supported-operations"
COMPILER_DOCS_URL = "https://coral.ai/docs/edgetpu/compiler/"
DELEGATE_LIBRARY = "libedgetpu.so.1"
COMPILER_TIMEOUT_S = 180

# Operators the Edge TPU compiler can map, with the limitation Coral documents for each, keyed by
# TFLite builtin name. Source: the "Supported operations" table of
# https://coral.ai/docs/edgetpu/models-intro/#supported-operations, read through a stored copy of
# that table and through Axis's ARTPEC-7 list, whose chip is programmed with the Edge TPU compiler
# and which repeats the newer rows (https://developer.axis.com/computer-vision/on-device/system-on-chip/artpec-7/supported-ops/).
# NOTE: newer compilers may map operators missing here. An operator not in this table is
# reported as running on the CPU, and an edgetpu_compiler summary, when available, overrides it.
EDGETPU_OPERATORS = {
    "ADD": "",
    "AVERAGE_POOL_2D": "No fused activation function.",
    "CONCATENATION": (
        "No fused activation function. If any input is a compile-time constant tensor, there must be "
        "only 2 inputs, and this constant tensor must be all zeroes (effectively, a zero-padding op)."
    ),
    "CONV_2D": "Must use the same dilation in x and y dimensions.",
    "DEPTHWISE_CONV_2D": "Must use the same dilation in x and y dimensions.",
    "EXPAND_DIMS": "",
    "FULLY_CONNECTED": "Only the default format is supported for fully-connected weights. Output tensor is one-dimensional.",
    "L2_NORMALIZATION": "",
    "LOGISTIC": "",
    "LSTM": "Unidirectional LSTM only.",
    "MAXIMUM": "",
    "MAX_POOL_2D": "No fused activation function.",
    "MEAN": "No reduction in batch dimension. If a z-reduction, the z-dimension must be multiple of 4.",
    "MINIMUM": "",
    "MUL": "",
    "PACK": "No packing in batch dimension.",
    "PAD": "No padding in batch dimension.",
    "PRELU": "Alpha must be 1-dimensional (only the innermost dimension can be >1 size).",
    "QUANTIZE": "",
    "REDUCE_MAX": "Cannot operate on the batch dimension.",
    "REDUCE_MIN": "Cannot operate on the batch dimension.",
    "RELU": "",
    "RELU6": "",
    "RELU_N1_TO_1": "",
    "RESHAPE": "Certain reshapes might not be mapped for large tensor sizes.",
    "RESIZE_BILINEAR": (
        "Input/output is a 3-dimensional tensor. Depending on input/output size, this operation may not "
        "be mapped to the Edge TPU to avoid loss in precision."
    ),
    "RESIZE_NEAREST_NEIGHBOR": (
        "Input/output is a 3-dimensional tensor. Depending on input/output size, this operation may not "
        "be mapped to the Edge TPU to avoid loss in precision."
    ),
    "SLICE": "",
    "SOFTMAX": "Supports only 1-D input tensor with a max of 16,000 elements.",
    "SPACE_TO_DEPTH": "",
    "SPLIT": "",
    "SQUEEZE": (
        "Supported only when input tensor dimensions that have leading 1s (that is, no relayout needed). For "
        "example input tensor with [y][x][z] = 1,1,10 or 1,5,10 is ok. But [y][x][z] = 5,1,10 is not supported."
    ),
    "STRIDED_SLICE": (
        "Supported only when all strides are equal to 1 (that is, effectively a Stride op), and with "
        "ellipsis-axis-mask == 0, and new-axis-max == 0."
    ),
    "SUB": "",
    "TANH": "",
}

SOFTMAX_MAX_ELEMENTS = 16000
QUANTIZED_TYPES = ("INT8", "UINT8")
WEIGHTED_OPERATORS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


@dataclasses.dataclass
class TensorEntry:
    """One tensor of the model's first subgraph."""

    index: int
    name: str
    dtype: str
    shape: list
    shape_signature: list
    constant: bool


@dataclasses.dataclass
class OperatorEntry:
    """One operator in execution order, with where the Edge TPU compiler would place it."""

    index: int
    name: str
    inputs: list
    outputs: list
    input_types: list
    output_types: list
    limitation: str = ""
    problems: list = dataclasses.field(default_factory=list)
    placement: str = ""


@dataclasses.dataclass
class ReadinessReport:
    """The result of :func:`check_readiness`; :meth:`to_dict` is its JSON form."""

    model: str
    ready: bool
    problems: list
    operators: list
    first_cpu_operator: int | None
    input: dict
    output: dict
    compiler: dict
    delegate: dict

    def to_dict(self):
        return {
            "model": self.model,
            "ready": self.ready,
            "problems": list(self.problems),
            "first_cpu_operator": self.first_cpu_operator,
            "operators": [dataclasses.asdict(op) for op in self.operators],
            "input": self.input,
            "output": self.output,
            "compiler": self.compiler,
            "delegate": self.delegate,
            "supported_operations_source": DOCS_URL,
        }


def report_from_dict(data):
    """Rebuild a :class:`ReadinessReport` from :meth:`ReadinessReport.to_dict` output."""
    return ReadinessReport(
        model=data["model"],
        ready=data["ready"],
        problems=list(data["problems"]),
        operators=[OperatorEntry(**op) for op in data["operators"]],
        first_cpu_operator=data["first_cpu_operator"],
        input=data["input"],
        output=data["output"],
        compiler=data["compiler"],
        delegate=data["delegate"],
    )


def _enum_names(enum_class):
    return {value: key for key, value in vars(enum_class).items() if not key.startswith("_")}


def _signature(tensor):
    if tensor.ShapeSignatureLength() == 0:
        return [int(v) for v in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []
    return [int(v) for v in tensor.ShapeSignatureAsNumpy()]


def read_tflite_bytes(model_path):
    """Read a ``.tflite`` file and check the ``TFL3`` file identifier at byte 4.

    ``ids-edge bench`` and ``ids-edge coral`` both read models through this check, so random
    bytes and non-model files get the same message.

    Raises:
        IdsEdgeError: The file is missing, a folder, unreadable, or has no TFLite identifier.
    """
    model_path = pathlib.Path(model_path)
    if model_path.is_dir():
        raise IdsEdgeError(f"Model path {model_path} is a folder. Pass the .tflite file inside it that 'ids-edge export' wrote.")
    try:
        data = model_path.read_bytes()
    except FileNotFoundError:
        raise IdsEdgeError(f"Model file {model_path} not found. Pass the .tflite file that 'ids-edge export' wrote.") from None
    except OSError as error:
        raise IdsEdgeError(f"Model file {model_path} cannot be read: {error.strerror}.") from None
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise IdsEdgeError(
            f"{model_path} is not a TFLite model ({len(data)} bytes, no 'TFL3' identifier at byte 4). "
            "Pass a .tflite file written by 'ids-edge export'."
        )
    return data


def read_flatbuffer(model_path):
    """Read a ``.tflite`` file's first subgraph: tensors, operators and builtin options.

    Returns:
        ``(schema, model, tensors, operators, graph_inputs, graph_outputs)``: the schema module,
        the flatbuffer ``Model``, a list of :class:`TensorEntry`, a list of
        ``(OperatorEntry, flatbuffer Operator)`` pairs, and the subgraph's input and output
        tensor indices.

    Raises:
        IdsEdgeError: The file is missing, truncated or not a TFLite flatbuffer.
    """
    model_path = pathlib.Path(model_path)
    data = read_tflite_bytes(model_path)

    schema = load_schema()
    try:
        model = schema.Model.GetRootAs(data, 0)
        if model.SubgraphsLength() < 1:
            raise IdsEdgeError(f"{model_path} has no subgraph. Export the model again.")
        subgraph = model.Subgraphs(0)
        type_names = _enum_names(schema.TensorType)
        op_names = _enum_names(schema.BuiltinOperator)

        tensors = []
        for i in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(i)
            buffer = model.Buffers(tensor.Buffer()) if tensor.Buffer() < model.BuffersLength() else None
            constant = buffer is not None and (buffer.DataLength() > 0 or buffer.Offset() > 1)
            tensors.append(
                TensorEntry(
                    index=i,
                    name=(tensor.Name() or b"").decode("utf-8", "replace"),
                    dtype=type_names.get(tensor.Type(), str(tensor.Type())),
                    shape=[int(v) for v in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else [],
                    shape_signature=_signature(tensor),
                    constant=constant,
                )
            )

        operators = []
        for i in range(subgraph.OperatorsLength()):
            operator = subgraph.Operators(i)
            code = model.OperatorCodes(operator.OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = op_names.get(builtin, f"BUILTIN_{builtin}")
            if name == "CUSTOM":
                name = "CUSTOM:" + (code.CustomCode() or b"").decode("utf-8", "replace")
            inputs = [int(v) for v in operator.InputsAsNumpy()] if operator.InputsLength() else []
            outputs = [int(v) for v in operator.OutputsAsNumpy()] if operator.OutputsLength() else []
            entry = OperatorEntry(
                index=i,
                name=name,
                inputs=inputs,
                outputs=outputs,
                input_types=[tensors[t].dtype if t >= 0 else "none" for t in inputs],
                output_types=[tensors[t].dtype for t in outputs],
            )
            operators.append((entry, operator))
        graph_inputs = [int(v) for v in subgraph.InputsAsNumpy()]
        graph_outputs = [int(v) for v in subgraph.OutputsAsNumpy()]
    except (IndexError, ValueError, TypeError, struct.error, UnicodeDecodeError):
        # A truncated or overwritten flatbuffer makes the generated accessors read past the end of
        # the buffer or decode garbage offsets (TypeError: "bad number ... for type uint32").
        raise IdsEdgeError(
            f"{model_path} is a damaged TFLite file: its {len(data)} bytes do not hold valid model tables, "
            "as in a truncated or overwritten copy. Export it again with 'ids-edge export', or copy it again."
        ) from None
    return schema, model, tensors, operators, graph_inputs, graph_outputs


def _options(schema, operator, options_class):
    table = operator.BuiltinOptions()
    if table is None:
        return None
    options = options_class()
    options.Init(table.Bytes, table.Pos)
    return options


def _short_name(name):
    # The converter joins fused TensorFlow names with ';'; the first one identifies the tensor.
    return name.split(";")[0]


def _operator_problems(schema, entry, operator, tensors):
    """List why one operator cannot be mapped, checking its documented limitation where possible."""
    problems = []
    if entry.name not in EDGETPU_OPERATORS:
        problems.append(f"{entry.name} is not in the Edge TPU's supported operations")
        return problems

    not_quantized = {}
    for position, tensor_index in enumerate(entry.inputs + entry.outputs):
        if tensor_index < 0:
            continue
        tensor = tensors[tensor_index]
        is_bias = entry.name in WEIGHTED_OPERATORS and position == 2 and tensor_index in entry.inputs[2:3]
        if is_bias:
            if tensor.dtype != "INT32":
                problems.append(f"bias tensor {tensor_index} is {tensor.dtype}, not INT32")
            continue
        if tensor.constant and tensor.dtype == "INT32":
            continue  # Shape and axis parameters, such as RESHAPE's new shape.
        if entry.name == "QUANTIZE" and position == 0 and tensor.dtype == "FLOAT32":
            continue  # The input QUANTIZE of a float-I/O model takes float32 by design.
        if tensor.dtype not in QUANTIZED_TYPES:
            not_quantized.setdefault(tensor.dtype, []).append(str(tensor_index))
    for dtype, indices in not_quantized.items():
        problems.append(f"tensors {', '.join(indices)} are {dtype}, not INT8/UINT8")

    activation = schema.ActivationFunctionType.NONE
    if entry.name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        options = _options(schema, operator, schema.Pool2DOptions)
        if options is not None and options.FusedActivationFunction() != activation:
            problems.append("pooling has a fused activation function")
    elif entry.name == "CONCATENATION":
        options = _options(schema, operator, schema.ConcatenationOptions)
        if options is not None and options.FusedActivationFunction() != activation:
            problems.append("concatenation has a fused activation function")
    elif entry.name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        options_class = schema.Conv2DOptions if entry.name == "CONV_2D" else schema.DepthwiseConv2DOptions
        options = _options(schema, operator, options_class)
        if options is not None and options.DilationHFactor() != options.DilationWFactor():
            problems.append(f"dilation differs in y ({options.DilationHFactor()}) and x ({options.DilationWFactor()})")
    elif entry.name == "FULLY_CONNECTED":
        options = _options(schema, operator, schema.FullyConnectedOptions)
        if options is not None and options.WeightsFormat() != schema.FullyConnectedOptionsWeightsFormat.DEFAULT:
            problems.append("fully-connected weights are not in the default format")
        output_shape = tensors[entry.outputs[0]].shape
        if sum(1 for size in output_shape if size > 1) > 1:
            problems.append(f"output shape {output_shape} is not one-dimensional")
    elif entry.name == "SOFTMAX":
        input_shape = tensors[entry.inputs[0]].shape
        if sum(1 for size in input_shape if size > 1) > 1:
            problems.append(f"input shape {input_shape} is not one-dimensional")
        if int(np.prod(input_shape)) > SOFTMAX_MAX_ELEMENTS:
            problems.append(f"input has {int(np.prod(input_shape))} elements, more than {SOFTMAX_MAX_ELEMENTS}")
    return problems


def _model_problems(tensors, graph_inputs, operators):
    problems = []
    for index in graph_inputs:
        tensor = tensors[index]
        if not tensor.shape or tensor.shape[0] != 1:
            problems.append(f"input {tensor.name!r} has batch size {tensor.shape[:1]}, but the Edge TPU needs 1")

    dynamic = [t for t in tensors if -1 in t.shape_signature]
    if dynamic:
        names = ", ".join(f"{_short_name(t.name)!r} {t.shape_signature}" for t in dynamic[:3])
        problems.append(
            f"{len(dynamic)} tensors have dynamic shapes (-1 in shape_signature: {names}); the Edge TPU "
            "compiler needs static shapes. Export with a fixed batch of 1"
        )

    produced = {index for entry, _ in operators for index in entry.outputs} | set(graph_inputs)
    float_activations = [t for t in tensors if t.index in produced and t.dtype not in QUANTIZED_TYPES]
    if float_activations:
        names = ", ".join(f"{_short_name(t.name)!r} ({t.dtype})" for t in float_activations[:3])
        quantized_core = any(t.index in produced and t.dtype in QUANTIZED_TYPES for t in tensors)
        fix = (
            "Export with 'ids-edge export --quantize int8 --io int8', so that the caller preprocesses and the "
            "whole graph is integer"
            if quantized_core
            else "Export with 'ids-edge export --quantize int8'"
        )
        problems.append(
            f"{len(float_activations)} activation tensors are not INT8/UINT8 ({names}); the Edge TPU runs only "
            f"full-integer models. {fix}"
        )

    too_deep = [
        t for t in tensors if t.index in produced and len(t.shape) > 3 and any(size > 1 for size in t.shape[:-3])
    ]
    if too_deep:
        names = ", ".join(f"{_short_name(t.name)!r} {t.shape}" for t in too_deep[:3])
        problems.append(f"activation tensors with a size above 1 outside the 3 innermost dimensions: {names}")
    return problems


def analyze_model(model_path):
    """Check a model against the Edge TPU rules without any Coral tool.

    Returns:
        A :class:`ReadinessReport` whose ``compiler`` and ``delegate`` entries have status "not run".

    Raises:
        IdsEdgeError: The file is missing or not a TFLite model.
    """
    schema, model, tensors, operators, graph_inputs, graph_outputs = read_flatbuffer(model_path)
    problems = []
    if model.SubgraphsLength() > 1:
        problems.append(f"the model has {model.SubgraphsLength()} subgraphs; the Edge TPU compiler maps only one")
    problems += _model_problems(tensors, graph_inputs, operators)

    first_cpu = None
    entries = []
    for entry, operator in operators:
        entry.limitation = EDGETPU_OPERATORS.get(entry.name, "")
        entry.problems = _operator_problems(schema, entry, operator, tensors)
        if first_cpu is None and entry.problems:
            first_cpu = entry.index
        if first_cpu is None:
            entry.placement = "Edge TPU"
        elif entry.index == first_cpu:
            entry.placement = "CPU (cannot be mapped)"
        else:
            entry.placement = "CPU (after the first unmapped operator)"
        entries.append(entry)

    if first_cpu is not None:
        first = entries[first_cpu]
        problems.append(
            f"operator {first.index} ({first.name}) cannot be mapped ({'; '.join(first.problems)}), so it and the "
            f"{len(entries) - first_cpu - 1} operators after it run on the CPU"
        )

    def describe(index):
        tensor = tensors[index]
        return {"name": tensor.name, "dtype": tensor.dtype, "shape": tensor.shape, "shape_signature": tensor.shape_signature}

    not_run = {"status": "not run"}
    return ReadinessReport(
        model=str(model_path),
        ready=not problems,
        problems=problems,
        operators=entries,
        first_cpu_operator=first_cpu,
        input=describe(graph_inputs[0]) if graph_inputs else {},
        output=describe(graph_outputs[0]) if graph_outputs else {},
        compiler=dict(not_run),
        delegate=dict(not_run),
    )


_SIZE_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3}
_SIZE_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMG]?i?B)\s*$")
_SUMMARY_KEYS = {
    "Edge TPU Compiler version": ("compiler_version", str),
    "Input model": ("input_model", str),
    "Input size": ("input_size_bytes", "size"),
    "Output model": ("output_model", str),
    "Output size": ("output_size_bytes", "size"),
    "On-chip memory available for caching model parameters": ("on_chip_available_bytes", "size"),
    "On-chip memory used for caching model parameters": ("on_chip_used_bytes", "size"),
    "On-chip memory remaining for caching model parameters": ("on_chip_remaining_bytes", "size"),
    "Off-chip memory used for streaming uncached model parameters": ("off_chip_streamed_bytes", "size"),
    "Number of Edge TPU subgraphs": ("edgetpu_subgraphs", int),
    "Total number of operations": ("total_operations", int),
    "Operation log": ("operation_log", str),
    "Number of operations that will run on Edge TPU": ("operations_on_edgetpu", int),
    "Number of operations that will run on CPU": ("operations_on_cpu", int),
}
_OPERATOR_ROW = re.compile(r"^([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$")


def parse_size(text):
    """Convert a compiler size such as ``80.00KiB`` or ``0.00B`` to bytes (an int)."""
    match = _SIZE_PATTERN.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    return int(round(float(match.group(1)) * _SIZE_UNITS[match.group(2)]))


def parse_compiler_output(text):
    """Parse the summary that ``edgetpu_compiler`` prints (and its ``.log`` operator table).

    The summary has ``Key: value`` lines (compiler version, sizes, on-chip and off-chip memory,
    subgraph and operator counts) and, with ``-s`` or in the log file, an
    ``Operator  Count  Status`` table.

    Returns:
        A dict with the keys of :data:`_SUMMARY_KEYS` that were found (sizes in bytes),
        ``compiled`` (the success line was seen), ``compile_time_ms``, and ``operators``: a list
        of ``{"operator", "count", "status", "mapped"}``. When the two operation counts are
        missing they are summed from the operator table.
    """
    summary = {"compiled": False, "operators": []}
    in_table = False
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line:
            continue
        match = re.match(r"Model compiled successfully in (\d+(?:\.\d+)?) ms", line)
        if match:
            summary["compiled"] = True
            summary["compile_time_ms"] = float(match.group(1))
            continue
        if re.match(r"Operator\s+Count\s+Status", line):
            in_table = True
            continue
        if in_table:
            row = _OPERATOR_ROW.match(line)
            if row:
                status = row.group(3)
                summary["operators"].append(
                    {"operator": row.group(1), "count": int(row.group(2)), "status": status, "mapped": status == "Mapped to Edge TPU"}
                )
                continue
        version = re.match(r"Edge TPU Compiler version (\S+)", line)
        if version:
            summary["compiler_version"] = version.group(1)
            continue
        key, separator, value = line.partition(":")
        if not separator or key.strip() not in _SUMMARY_KEYS:
            continue
        field, kind = _SUMMARY_KEYS[key.strip()]
        value = value.strip()
        try:
            summary[field] = parse_size(value) if kind == "size" else kind(value)
        except ValueError:
            summary[field] = value

    if summary["operators"]:
        if "operations_on_edgetpu" not in summary:
            summary["operations_on_edgetpu"] = sum(row["count"] for row in summary["operators"] if row["mapped"])
        if "operations_on_cpu" not in summary:
            summary["operations_on_cpu"] = sum(row["count"] for row in summary["operators"] if not row["mapped"])
    return summary


def run_compiler(model_path, work_dir, compiler=None):
    """Compile a model with ``edgetpu_compiler`` if it is installed.

    Returns:
        A dict: ``status`` is ``"skipped"`` (with ``reason``), ``"failed"`` (with ``output``)
        or ``"compiled"`` (with the parsed summary and ``compiled_model``, the output path).
    """
    compiler = compiler or shutil.which("edgetpu_compiler")
    if compiler is None:
        return {
            "status": "skipped",
            "reason": (
                "edgetpu_compiler is not on PATH. It ships only in Coral's own apt repository (package "
                f"edgetpu-compiler, x86-64 Linux), see {COMPILER_DOCS_URL}. The operator placement above is "
                "ids-edge's own check against the documented operator table, not the compiler's."
            ),
        }

    command = [compiler, "-s", "-o", str(work_dir), str(model_path)]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=COMPILER_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"edgetpu_compiler did not finish within {COMPILER_TIMEOUT_S} s"}
    except OSError as error:
        return {"status": "failed", "reason": f"edgetpu_compiler could not be started: {error.strerror}"}

    output = completed.stdout + completed.stderr
    summary = parse_compiler_output(output)
    log_path = pathlib.Path(work_dir) / (pathlib.Path(model_path).stem + "_edgetpu.log")
    if log_path.is_file() and not summary["operators"]:
        summary["operators"] = parse_compiler_output(log_path.read_text(encoding="utf-8", errors="replace"))["operators"]
    compiled_model = pathlib.Path(work_dir) / (pathlib.Path(model_path).stem + "_edgetpu.tflite")
    if completed.returncode != 0 or not summary["compiled"] or not compiled_model.is_file():
        return {"status": "failed", "exit_code": completed.returncode, "output": output.strip()[-2000:], "summary": summary}
    return {"status": "compiled", "summary": summary, "compiled_model": str(compiled_model), "command": " ".join(command)}


def benchmark_delegate(compiled_model, warmup=10, runs=100):
    """Time a compiled model through ``libedgetpu.so.1`` when the library and a device are present.

    Returns:
        A dict: ``status`` ``"skipped"`` with ``reason``, or ``"measured"`` with ``latency``.
    """
    from ids_edge import runner

    try:
        # Loading the library first avoids the runtime's noisy half-built Delegate on failure.
        ctypes.CDLL(DELEGATE_LIBRARY)
        runtime = runner.find_runtime()
        delegate = runtime.load_delegate(DELEGATE_LIBRARY)
    except runner.RunnerError as error:
        return {"status": "skipped", "reason": str(error)}
    except (OSError, ValueError, RuntimeError) as error:
        return {
            "status": "skipped",
            "reason": (
                f"{DELEGATE_LIBRARY} could not be loaded ({str(error).strip()}): the Edge TPU runtime "
                "(libedgetpu1-std from Coral's apt repository) or an Edge TPU device is missing"
            ),
        }
    if compiled_model is None:
        return {
            "status": "skipped",
            "reason": f"{DELEGATE_LIBRARY} loaded, but no compiled model exists because edgetpu_compiler did not run",
        }

    try:
        interpreter = runner.load_interpreter(compiled_model, None, delegate, runtime)
        detail = runner.input_detail(interpreter)
        inputs = np.zeros([32, *detail["shape"][1:]], dtype=detail["dtype"])
        latency = runner.measure_latency(interpreter, inputs, warmup=warmup, runs=runs)
    except runner.RunnerError as error:
        return {"status": "failed", "reason": str(error)}
    return {
        "status": "measured",
        "runtime": f"{runtime.name} {runtime.version}",
        "latency": latency.to_dict(),
        "note": "Edge TPU latency per flow on zero-valued inputs of the model's input type.",
    }


def check_readiness(model_path, use_tools=True):
    """Build the Edge TPU readiness report of a model, running the Coral tools that are installed.

    Args:
        model_path: Path of a ``.tflite`` file.
        use_tools: Also run ``edgetpu_compiler`` and the ``libedgetpu`` delegate when present.

    Returns:
        A :class:`ReadinessReport`.

    Raises:
        IdsEdgeError: The file is missing or not a TFLite model.
    """
    report = analyze_model(model_path)
    if not use_tools:
        report.compiler = {"status": "skipped", "reason": "Coral tools were not requested"}
        report.delegate = {"status": "skipped", "reason": "Coral tools were not requested"}
        return report

    with tempfile.TemporaryDirectory(prefix="ids-edge-coral-") as work_dir:
        report.compiler = run_compiler(model_path, work_dir)
        compiled = report.compiler.get("compiled_model") if report.compiler["status"] == "compiled" else None
        report.delegate = benchmark_delegate(compiled)
        if compiled is not None:
            report.compiler["compiled_model"] = pathlib.Path(compiled).name

    # The compiler's verdict overrides the table-based check in both directions.
    summary = report.compiler.get("summary")
    if report.compiler["status"] == "compiled" and summary:
        if summary.get("operations_on_cpu"):
            report.problems.append(f"edgetpu_compiler left {summary['operations_on_cpu']} operations on the CPU")
            report.ready = False
        elif report.problems:
            report.problems = [
                f"ids-edge's table-based check flagged this, but edgetpu_compiler mapped every operator: {problem}"
                for problem in report.problems
            ]
            report.ready = True
    return report


def format_markdown(report, heading="##"):
    """Render a readiness report as Markdown lines."""
    verdict = "ready" if report.ready else "not ready"
    if report.compiler.get("status") == "compiled":
        basis = "by edgetpu_compiler"
    else:
        basis = "by ids-edge's static check (edgetpu_compiler not run)"
    lines = [f"{heading} Coral Edge TPU readiness: {pathlib.Path(report.model).name} is {verdict} {basis}", ""]
    lines.append(
        f"Input {report.input.get('dtype')} {report.input.get('shape_signature')}, output "
        f"{report.output.get('dtype')} {report.output.get('shape_signature')}. Rules: {DOCS_URL}"
    )
    lines.append("")
    if report.problems:
        lines += [f"- {problem}" for problem in report.problems]
        lines.append("")
    lines += ["| # | operator | input types | output types | placement | problems |", "|---|---|---|---|---|---|"]
    for op in report.operators:
        lines.append(
            f"| {op.index} | {op.name} | {', '.join(op.input_types)} | {', '.join(op.output_types)} | "
            f"{op.placement} | {'; '.join(op.problems)} |"
        )
    lines.append("")

    compiler = report.compiler
    if compiler["status"] == "compiled":
        summary = compiler["summary"]
        lines.append(
            f"- edgetpu_compiler {summary.get('compiler_version', '?')}: {summary.get('operations_on_edgetpu', '?')} "
            f"operations on the Edge TPU, {summary.get('operations_on_cpu', 0)} on the CPU; on-chip memory "
            f"{summary.get('on_chip_used_bytes', '?')} bytes, off-chip {summary.get('off_chip_streamed_bytes', '?')} bytes."
        )
        if summary.get("operators"):
            lines += ["", "| operator (compiler) | count | status |", "|---|---|---|"]
            lines += [f"| {row['operator']} | {row['count']} | {row['status']} |" for row in summary["operators"]]
            lines.append("")
    else:
        lines.append(f"- edgetpu_compiler {compiler['status']}: {compiler.get('reason') or compiler.get('output', '')}")

    delegate = report.delegate
    if delegate["status"] == "measured":
        latency = delegate["latency"]
        lines.append(f"- Edge TPU delegate: p50 {latency['p50_us']:.1f} us per flow over {latency['count']} runs.")
    else:
        lines.append(f"- Edge TPU delegate {delegate['status']}: {delegate.get('reason', '')}")
    lines.append("")
    return lines


def write_readiness(model_paths, out_dir=None, use_tools=True):
    """Check each model and, with ``out_dir``, write ``coral.json`` and ``coral.md`` there.

    Returns:
        The list of :class:`ReadinessReport`, one per model.

    Raises:
        IdsEdgeError: A model file is missing or not a TFLite model, or ``out_dir`` is unusable.
    """
    from ids_edge.metadata import write_json_atomic
    from ids_edge.outputs import output_dir

    if not model_paths:
        raise IdsEdgeError("No model given. Pass one or more .tflite files.")
    reports = [check_readiness(path, use_tools) for path in model_paths]
    if out_dir is not None:
        with output_dir(out_dir, marker="coral.json") as folder:
            write_json_atomic(folder / "coral.json", {"models": [report.to_dict() for report in reports]})
            lines = ["# Coral Edge TPU readiness", ""]
            for report in reports:
                lines += format_markdown(report)
            (folder / "coral.md").write_text("\n".join(lines), encoding="utf-8")
    return reports
