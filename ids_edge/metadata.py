"""Model metadata: the JSON file written beside every exported ``.tflite``.

``MODEL.tflite`` gets ``MODEL.json`` with these keys (``format_version`` 1):

- ``format``: always ``"ids-edge-model"``; ``format_version``: integer.
- ``task``: 2, 6 or 19 for CICIoMT2024, or the number of classes in generic mode.
- ``class_names``: output index -> label. ``feature_names``: input order.
- ``schema``: ``"v39"``, ``"v45"`` or ``"generic"``.
- ``preprocessing``: :meth:`ids_edge.preprocess.Preprocessor.to_dict` plus ``"location"``, which
  is ``"caller"`` when the caller must sanitize and standardize before quantizing, or ``"graph"``
  when the model does it (float input only).
- ``quantize``: one of :data:`ids_edge.choices.QUANTIZE_MODES`; ``io``: ``"int8"`` or ``"float"``.
- ``input`` and ``output``: ``name``, ``dtype`` (numpy name), ``shape``, ``scale`` and
  ``zero_point`` (0.0 and 0 for float tensors).
- ``options``: training and export options; ``versions``: package versions used.
- ``variant``: the variant's name, e.g. ``int8`` or ``int8_pruned50``; ``calibration``: rows
  used and requested, clip quantile and input clamp bounds of int8 calibration; ``pruning``:
  target, structure, per-layer and overall sparsity and the share of zero weights in the
  ``.tflite``; ``qat``: whether the variant was fine-tuned with quantization-aware training.
- ``synthetic_data``: true when the run was trained on synthetic data, whose metrics are not
  CICIoMT2024 results.

The same JSON is embedded in the ``.tflite`` file's metadata under the name
``ids_edge_metadata`` (see :mod:`ids_edge.tflite_file`), so ``ids-edge inspect`` works without
the file beside it.
"""

import json
import os
import pathlib

from ids_edge.errors import IdsEdgeError

FORMAT = "ids-edge-model"
FORMAT_VERSION = 1


def metadata_path(model_path):
    """Return the path of the JSON file beside ``model_path``."""
    return pathlib.Path(model_path).with_suffix(".json")


def read_metadata(model_path):
    """Read and check the metadata beside a ``.tflite`` file.

    Raises:
        IdsEdgeError: The JSON file is missing, unreadable, or of another or newer format.
    """
    path = metadata_path(model_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IdsEdgeError(
            f"Metadata file {path} not found. Export the model with 'ids-edge export', which "
            "writes it beside the .tflite file."
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IdsEdgeError(f"Metadata file {path} is not valid JSON ({error}). Export the model again.") from None

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise IdsEdgeError(
            f"{path} is not ids-edge model metadata (no \"format\": \"{FORMAT}\"). Export the model again "
            "with 'ids-edge export', which writes this file beside the .tflite file."
        )
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise IdsEdgeError(
            f"{path} has metadata format_version {version!r}, but this ids-edge reads versions up to "
            f"{FORMAT_VERSION}. Upgrade ids-edge or export the model again."
        )
    return data


def write_json_atomic(path, data):
    """Write JSON through a temporary file and a rename, so a reader never sees half a file."""
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)
