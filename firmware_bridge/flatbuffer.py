"""Read operators and input/output tensors from a ``.tflite`` flatbuffer.

Uses the ``tflite`` schema module that ships with the ``tflite-micro`` package, so the operator
list comes from the model itself rather than from a list written by hand.
"""

import dataclasses
import struct

import numpy as np

from ids_edge.errors import IdsEdgeError, MissingRuntimeError

FILE_IDENTIFIER = b"TFL3"
"""Bytes 4 to 8 of every TFLite flatbuffer (the schema's ``file_identifier``)."""

# TFLite Micro's MicroMutableOpResolver names most Add methods by CamelCasing the builtin name
# (CONV_2D -> AddConv2D). These builtins are spelled differently in TFLM's
# micro_mutable_op_resolver.h (checked against the 2025 version of that header).
RESOLVER_METHOD_EXCEPTIONS = {
    "BATCH_MATMUL": "AddBatchMatMul",
    "CUMSUM": "AddCumSum",
    "PADV2": "AddPadV2",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
}

TFLM_BUILTINS = frozenset(
    """
    ABS ADD ADD_N ARG_MAX ARG_MIN ASSIGN_VARIABLE AVERAGE_POOL_2D BATCH_MATMUL BATCH_TO_SPACE_ND
    BROADCAST_ARGS BROADCAST_TO CALL_ONCE CAST CEIL CONCATENATION CONV_2D COS CUMSUM
    DEPTH_TO_SPACE DEPTHWISE_CONV_2D DEQUANTIZE DIV EMBEDDING_LOOKUP ELU EQUAL EXP EXPAND_DIMS FILL
    FLOOR FLOOR_DIV FLOOR_MOD FULLY_CONNECTED GATHER GATHER_ND GREATER GREATER_EQUAL HARD_SWISH IF
    L2_NORMALIZATION L2_POOL_2D LEAKY_RELU LESS LESS_EQUAL LOG LOGICAL_AND LOGICAL_NOT LOGICAL_OR
    LOGISTIC LOG_SOFTMAX MAXIMUM MAX_POOL_2D MIRROR_PAD MEAN MINIMUM MUL NEG NOT_EQUAL PACK PAD
    PADV2 PRELU QUANTIZE READ_VARIABLE REDUCE_MAX REDUCE_MIN RELU RELU6 RESHAPE RESIZE_BILINEAR
    RESIZE_NEAREST_NEIGHBOR REVERSE_V2 ROUND RSQRT SELECT_V2 SHAPE SIN SLICE SOFTMAX
    SPACE_TO_BATCH_ND SPACE_TO_DEPTH SPLIT SPLIT_V SQUEEZE SQRT SQUARE SQUARED_DIFFERENCE
    STRIDED_SLICE SUB SUM SVDF TANH TRANSPOSE_CONV TRANSPOSE UNPACK UNIDIRECTIONAL_SEQUENCE_LSTM
    VAR_HANDLE WHILE ZEROS_LIKE
    """.split()
)
"""Builtin operators with an ``AddXxx()`` method in TFLM's MicroMutableOpResolver (2025 header)."""


@dataclasses.dataclass(frozen=True)
class Operator:
    """A builtin operator the model uses, with the resolver method that registers it."""

    name: str
    code: int
    version: int
    resolver_method: str
    known_to_tflm: bool


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """An input or output tensor of subgraph 0: numpy dtype name, shape and affine quantization."""

    name: str
    dtype: str
    shape: tuple
    scale: float
    zero_point: int


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the firmware generator needs from a flatbuffer."""

    operators: list
    inputs: list
    outputs: list


def _schema():
    try:
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated
    except ImportError as error:
        raise MissingRuntimeError(
            f"The tflite-micro package is needed to read the model's operators ({error}). "
            "Install it with 'pip install tflite-micro'."
        ) from None
    return schema_py_generated


def resolver_method(builtin_name):
    """Return the MicroMutableOpResolver method that registers a builtin, e.g. ``AddConv2D``."""
    if builtin_name in RESOLVER_METHOD_EXCEPTIONS:
        return RESOLVER_METHOD_EXCEPTIONS[builtin_name]
    words = []
    for word in builtin_name.split("_"):
        # "2D" keeps its capital D, as in AddConv2D; other words are capitalized ("ND" -> "Nd").
        words.append(word if word[:1].isdigit() else word.capitalize())
    return "Add" + "".join(words)


def _tensor_info(schema, subgraph, tensor_index):
    tensor = subgraph.Tensors(tensor_index)
    type_names = {value: name for name, value in vars(schema.TensorType).items() if not name.startswith("_")}
    dtype = type_names.get(tensor.Type(), f"type{tensor.Type()}").lower()

    scale = 0.0
    zero_point = 0
    quantization = tensor.Quantization()
    if quantization is not None and quantization.ScaleLength() > 0:
        if quantization.ScaleLength() != 1:
            raise IdsEdgeError(
                f"Tensor {tensor.Name().decode('utf-8', 'replace')!r} has per-channel quantization "
                f"({quantization.ScaleLength()} scales), but a model input or output needs one scale. "
                "Export the model again with ids-edge."
            )
        scale = float(np.float32(quantization.Scale(0)))
        zero_point = int(quantization.ZeroPoint(0)) if quantization.ZeroPointLength() else 0

    return TensorInfo(
        name=tensor.Name().decode("utf-8", "replace"),
        dtype=dtype,
        shape=tuple(int(size) for size in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else (),
        scale=scale,
        zero_point=zero_point,
    )


def read_model_info(model_data, model_path):
    """Parse the operators and the subgraph-0 inputs and outputs of a ``.tflite`` flatbuffer.

    Operators are those used by any subgraph's nodes, in the order of the model's operator-code
    table, with one entry per builtin even when the table lists several versions of it.

    Raises:
        IdsEdgeError: The bytes are not a TFLite flatbuffer, or the model uses a custom operator.
    """
    if len(model_data) < 8 or model_data[4:8] != FILE_IDENTIFIER:
        raise IdsEdgeError(
            f"{model_path} is not a TFLite model (no {FILE_IDENTIFIER.decode()} identifier at byte 4). "
            "Pass the .tflite file written by 'ids-edge export'."
        )

    schema = _schema()
    builtin_names = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    try:
        model = schema.Model.GetRootAsModel(model_data, 0)
        used_indices = set()
        for subgraph_index in range(model.SubgraphsLength()):
            subgraph = model.Subgraphs(subgraph_index)
            for operator_index in range(subgraph.OperatorsLength()):
                used_indices.add(subgraph.Operators(operator_index).OpcodeIndex())

        operators = []
        seen_codes = set()
        for code_index in sorted(used_indices):
            operator_code = model.OperatorCodes(code_index)
            # Older converters fill only the int8 deprecated_builtin_code field, and newer ones set it
            # to 127 for larger codes, so the larger of the two fields is the builtin code.
            code = max(operator_code.BuiltinCode(), operator_code.DeprecatedBuiltinCode())
            if code == schema.BuiltinOperator.CUSTOM:
                custom_name = (operator_code.CustomCode() or b"?").decode("utf-8", "replace")
                raise IdsEdgeError(
                    f"{model_path} uses the custom operator {custom_name!r}, which TFLite Micro can only "
                    "run with your own kernel, so ids-edge cannot generate its resolver. Export the model "
                    "with builtin operators only."
                )
            if code in seen_codes:
                continue
            seen_codes.add(code)
            name = builtin_names.get(code, f"BUILTIN_{code}")
            operators.append(
                Operator(
                    name=name,
                    code=code,
                    version=operator_code.Version(),
                    resolver_method=resolver_method(name),
                    known_to_tflm=name in TFLM_BUILTINS,
                )
            )

        main_graph = model.Subgraphs(0)
        inputs = [_tensor_info(schema, main_graph, main_graph.Inputs(i)) for i in range(main_graph.InputsLength())]
        outputs = [_tensor_info(schema, main_graph, main_graph.Outputs(i)) for i in range(main_graph.OutputsLength())]
    except (IndexError, TypeError, ValueError, AttributeError, struct.error) as error:
        # The flatbuffers reader raises these on offsets outside the buffer.
        raise IdsEdgeError(
            f"{model_path} is a damaged TFLite flatbuffer ({type(error).__name__}: {error}). Export the model again."
        ) from None

    return ModelInfo(operators=operators, inputs=inputs, outputs=outputs)
