"""Build a self-contained folder that runs an exported model on a Raspberry Pi or a Coral board.

A bundle contains the model and its metadata JSON, labelled rows as CSV, a copy of
:mod:`ids_edge.runner` (standalone: Python standard library, numpy and a TFLite runtime),
``run.sh``, ``README.txt`` with install commands, and ``bundle.json``. ``bundle.json`` records the
SHA-256 of the int8 outputs that this host's TFLite runtime produced for the bundled rows, so a
device run can be compared bit for bit.
"""

import dataclasses
import datetime
import gzip
import hashlib
import json
import logging
import os
import pathlib
import shutil
import subprocess
import tarfile
import tempfile

import numpy as np

from ids_edge import __version__, labels, metadata, runner
from ids_edge.choices import TARGETS
from ids_edge.errors import IdsEdgeError, MissingRuntimeError
from ids_edge.outputs import check_output_dir, output_dir

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = "ids-edge-bundle"
BUNDLE_FORMAT_VERSION = 1

MODEL_FILE = "model.tflite"
EDGETPU_MODEL_FILE = "model_edgetpu.tflite"
ROWS_FILE = "rows.csv"
LABEL_COLUMN = runner.DEFAULT_LABEL_COLUMN
EDGETPU_DELEGATE = "libedgetpu.so.1"
DEFAULT_MAX_ROWS = 1000
COMPILER_TIMEOUT_S = 180
LABEL_COLUMN_CANDIDATES = ("label", "Label")


@dataclasses.dataclass
class BundleResult:
    """A written bundle: its folder, optional archive, files and the steps that were skipped."""

    out_dir: pathlib.Path
    archive: pathlib.Path | None
    target: str
    files: list
    rows: int
    rows_source: str
    expected_outputs_sha256: str
    expected_outputs_runtime: str
    skipped: list

    def summary_lines(self):
        """Return the lines that ``ids-edge bundle`` prints."""
        lines = [f"Wrote the {self.target} bundle {self.out_dir} with {self.rows} rows ({self.rows_source})."]
        if self.archive is not None:
            lines.append(f"Archive for copying to the device: {self.archive}")
        lines.append(f"Expected outputs sha256 ({self.expected_outputs_runtime} on this host): {self.expected_outputs_sha256}")
        lines += [f"Skipped: {reason}" for reason in self.skipped]
        lines.append(
            "On the device, follow README.txt and run ./run.sh, then compare with: "
            "ids-edge bench MODEL --out REPORT --import result.json"
        )
        return lines


@dataclasses.dataclass
class _Rows:
    features: np.ndarray
    labels: np.ndarray
    source: str


# Rows.


def _label_indices(values, class_names, source):
    indices = []
    for position, value in enumerate(values):
        text = str(value).strip()
        if text in class_names:
            indices.append(class_names.index(text))
        elif text.isdigit() and int(text) < len(class_names):
            indices.append(int(text))
        else:
            raise IdsEdgeError(
                f"Row {position + 1} of {source} has label {text!r}, which is neither a class name of the model "
                f"({', '.join(class_names)}) nor a class index below {len(class_names)}. Use rows of the model's classes."
            )
    return np.asarray(indices, dtype=np.int64)


def _rows_from_frame(frame, feature_names, class_names, label_column, source, fixed_label=None):
    missing = [name for name in feature_names if name not in frame.columns]
    if missing:
        raise IdsEdgeError(
            f"Rows {source} have no column {missing[0]!r}, which the model needs ({len(missing)} of its "
            f"{len(feature_names)} feature columns are missing). Use rows with the model's feature_names as columns."
        )

    if fixed_label is not None:
        label_values = [fixed_label] * len(frame)
    else:
        candidates = (label_column,) if label_column else LABEL_COLUMN_CANDIDATES
        found = [name for name in candidates if name in frame.columns]
        if not found:
            raise IdsEdgeError(
                f"Rows {source} have no label column ({' or '.join(repr(c) for c in candidates)}). "
                "Add the class of each row in a 'label' column, or name the column with label_column."
            )
        label_values = frame[found[0]].tolist()

    try:
        features = frame[list(feature_names)].to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        bad = next(name for name in feature_names if frame[name].dtype == object)
        raise IdsEdgeError(f"Rows {source}: column {bad!r} contains text that is not a number. Fix or remove those rows.") from None
    return _Rows(features, _label_indices(label_values, class_names, source), source)


def _read_rows_file(path, feature_names, class_names, label_column, task):
    import pandas as pd

    path = pathlib.Path(path)
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise IdsEdgeError(f"Rows file {path} not found. Pass a CSV file with the model's feature columns and a label column.") from None
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise IdsEdgeError(f"Rows file {path} cannot be read as CSV: {error}.") from None
    frame.columns = [str(name).strip() for name in frame.columns]

    # An official CICIoMT2024 file carries its class in the file name, not in a column.
    fixed_label = None
    has_label = any(name in frame.columns for name in ((label_column,) if label_column else LABEL_COLUMN_CANDIDATES))
    if not has_label and task in labels.CLASS_NAMES and path.name.endswith(".pcap.csv"):
        name, _ = labels.parse_file_name(path.name)
        fixed_label = labels.task_label(name, task)
    return _rows_from_frame(frame, feature_names, class_names, label_column, str(path), fixed_label)


def _load_rows(rows, model_metadata, label_column):
    feature_names = list(model_metadata["feature_names"])
    class_names = list(model_metadata["class_names"])
    task = model_metadata.get("task")

    if rows is None:
        if model_metadata.get("schema") != "v39" or task not in labels.CLASS_NAMES:
            raise IdsEdgeError(
                "The bundled sample rows use the CICIoMT2024 v39 schema, but this model has schema "
                f"{model_metadata.get('schema')!r} and task {task!r}. Pass rows that match the model."
            )
        from ids_edge import data

        dataset = data.load_sample(task)
        if list(dataset.feature_names) != feature_names:
            raise IdsEdgeError("The bundled sample rows have other feature columns than the model. Pass rows that match the model.")
        sample_labels = [dataset.class_names[i] for i in dataset.test.labels]
        source = "real CICIoMT2024 test rows bundled with ids-edge (Benign and ARP_Spoofing only)"
        return _Rows(dataset.test.features, _label_indices(sample_labels, class_names, source), source)

    if isinstance(rows, tuple):
        return _rows_from_arrays(rows, feature_names, class_names)
    if isinstance(rows, (str, os.PathLike)):
        return _read_rows_file(rows, feature_names, class_names, label_column, task)
    if hasattr(rows, "columns") and hasattr(rows, "to_numpy"):
        return _rows_from_frame(rows, feature_names, class_names, label_column, "data frame")
    raise IdsEdgeError(
        f"Invalid rows {type(rows).__name__}: pass a CSV path, a pandas DataFrame, a (features, labels, "
        "class_names[, source]) tuple, or None for the bundled sample."
    )


def _rows_from_arrays(rows, feature_names, class_names):
    if len(rows) not in (3, 4):
        raise IdsEdgeError(f"Invalid rows tuple of {len(rows)} items: pass (features, labels, class_names[, source]).")
    features = np.asarray(rows[0], dtype=np.float64)
    indices = np.asarray(rows[1], dtype=np.int64)
    source = rows[3] if len(rows) == 4 else "rows passed as arrays"
    if features.ndim != 2 or features.shape[1] != len(feature_names) or len(indices) != len(features):
        raise IdsEdgeError(
            f"Rows {source} have shape {features.shape} with {len(indices)} labels, but the model needs "
            f"(rows, {len(feature_names)}) features and one label per row."
        )
    names = [rows[2][i] for i in indices]
    return _Rows(features, _label_indices(names, class_names, source), source)


def _sample_rows(rows, max_rows, seed):
    if len(rows.features) <= max_rows:
        return rows
    keep = np.sort(np.random.default_rng(seed).choice(len(rows.features), size=max_rows, replace=False))
    return _Rows(rows.features[keep], rows.labels[keep], rows.source)


def write_rows_csv(path, rows, feature_names, class_names):
    """Write features and class-name labels as CSV; ``repr`` keeps every float64 exact."""
    lines = [",".join(_csv_field(name) for name in list(feature_names) + [LABEL_COLUMN])]
    for values, label in zip(rows.features, rows.labels):
        lines.append(",".join([repr(float(v)) for v in values] + [_csv_field(class_names[label])]))
    pathlib.Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _csv_field(text):
    text = str(text)
    if any(character in text for character in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


# Models.


def _check_model(model_path, target):
    model_path = pathlib.Path(model_path)
    if target not in TARGETS:
        raise IdsEdgeError(f"Invalid target {target!r}: choose one of {', '.join(TARGETS)}.")
    if not model_path.is_file():
        raise IdsEdgeError(f"Model file {model_path} not found. Export one with 'ids-edge export'.")
    from ids_edge.bench import check_metadata_matches_model, read_tflite_file
    from ids_edge.metadata import read_metadata

    model_metadata = read_metadata(model_path)

    read_tflite_file(model_path)
    check_metadata_matches_model(model_path, model_metadata)
    if target == "coral" and model_metadata.get("io") != "int8":
        raise IdsEdgeError(
            f"Target coral needs a full-integer model with int8 input and output, but {model_path} has "
            f"quantize={model_metadata.get('quantize')!r}, io={model_metadata.get('io')!r}. Export with "
            "--quantize int8 --io int8."
        )
    return model_path, model_metadata


def _host_outputs(model_path, rows, model_metadata):
    """Run the rows through this host's TFLite runtime, as the device runner will.

    Returns
    -------
    tuple
        ``(outputs, runtime)``: the raw outputs and the runtime's name and version.
    """
    from ids_edge._tf import quiet_native_stderr

    try:
        runtime = runner.find_runtime()
        # quiet_native_stderr drops LiteRT's "Created TensorFlow Lite XNNPACK delegate" line unless -vv is on.
        with quiet_native_stderr():
            interpreter = runner.load_interpreter(model_path, num_threads=1, runtime=runtime)
        inputs = runner.prepare_inputs(rows.features, model_metadata, runner.input_detail(interpreter))
    except runner.RuntimeNotFoundError as error:
        raise MissingRuntimeError(str(error)) from None
    except runner.RunnerError as error:
        raise IdsEdgeError(f"The model {model_path} cannot run on this host: {error}") from None
    return runner.predict(interpreter, inputs), f"{runtime.name} {runtime.version}"


def _compile_edgetpu(model_path, folder, skipped):
    compiler = shutil.which("edgetpu_compiler")
    if compiler is None:
        skipped.append(
            "Edge TPU compilation: edgetpu_compiler is not on PATH, so the bundle has only the CPU int8 model. "
            "Compile it on an x86-64 Debian or Ubuntu machine with 'edgetpu_compiler model.tflite' and put "
            f"the resulting {EDGETPU_MODEL_FILE} (with a copy of model.json named model_edgetpu.json) in the bundle."
        )
        return None

    with tempfile.TemporaryDirectory() as scratch:
        command = [compiler, "-s", "-o", scratch, str(model_path)]
        try:
            completed = subprocess.run(command, capture_output=True, text=True, timeout=COMPILER_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise IdsEdgeError(
                f"edgetpu_compiler did not finish within {COMPILER_TIMEOUT_S} s on {model_path}. "
                "Run it by hand to see where it stops."
            ) from None
        except OSError as error:
            raise IdsEdgeError(f"edgetpu_compiler ({compiler}) could not be started: {error.strerror}.") from None
        produced = pathlib.Path(scratch) / f"{pathlib.Path(model_path).stem}_edgetpu.tflite"
        if completed.returncode != 0 or not produced.is_file():
            raise IdsEdgeError(
                f"edgetpu_compiler failed on {model_path} (exit status {completed.returncode}): "
                f"{(completed.stderr or completed.stdout).strip()[-400:]}. The Edge TPU needs a full-integer int8 "
                "model whose operators it supports; see the compiler's message above."
            )
        shutil.copy(produced, folder / EDGETPU_MODEL_FILE)
        log = completed.stdout.strip()
    (folder / "edgetpu_compiler.log").write_text(log + "\n", encoding="utf-8")
    return EDGETPU_MODEL_FILE


# Text files.


def _run_script(target, edgetpu_model):
    lines = [
        "#!/bin/sh",
        f"# Run the bundled model on {ROWS_FILE} (labelled rows copied from the host, see README.txt) and write",
        "# result.json. runner.py first checks the file checksums in bundle.json. Options: python3 runner.py --help.",
        "set -eu",
        'cd "$(dirname "$0")"',
        'PYTHON=${PYTHON:-python3}',
    ]
    if target == "coral" and edgetpu_model:
        lines.append(
            f'exec "$PYTHON" runner.py --model {edgetpu_model} --delegate {EDGETPU_DELEGATE} '
            f'--rows {ROWS_FILE} --out "${{OUT:-result.json}}" "$@"'
        )
    else:
        lines.append(f'exec "$PYTHON" runner.py --model {MODEL_FILE} --rows {ROWS_FILE} --out "${{OUT:-result.json}}" "$@"')
    return "\n".join(lines) + "\n"


def _readme(target, model_metadata, rows, expected_sha256, host_runtime, edgetpu_model, skipped):
    device = "Raspberry Pi" if target == "rpi" else "Coral Dev Board or a computer with a Coral USB Accelerator"
    classes = ", ".join(model_metadata["class_names"])
    text = f"""ids-edge bundle for target {target} ({device})

Contents
  {MODEL_FILE}, model.json   model (quantize={model_metadata.get('quantize')}, io={model_metadata.get('io')}) and its metadata
  {ROWS_FILE}                 {len(rows.features)} labelled rows: {rows.source}
  runner.py                standalone runner: Python 3 standard library, numpy and a TFLite runtime
  run.sh                   runs runner.py on {ROWS_FILE} and writes result.json
  bundle.json              file checksums and the expected output checksum

Classes (output order): {classes}

Install, 64-bit OS (Raspberry Pi OS 64-bit, aarch64):
  python3 -m venv ~/ids-edge-venv
  ~/ids-edge-venv/bin/pip install numpy ai-edge-litert
  PYTHON=~/ids-edge-venv/bin/python3 ./run.sh
  ai-edge-litert 2.3.0 has aarch64 wheels for CPython 3.10 to 3.14 that need glibc 2.27 or newer.

Install, 32-bit OS (Raspberry Pi OS 32-bit, armv7l):
  python3 -m venv ~/ids-edge-venv
  ~/ids-edge-venv/bin/pip install tflite-runtime "numpy<2"
  PYTHON=~/ids-edge-venv/bin/python3 ./run.sh
  tflite-runtime 2.14.0, its last release, has armv7l wheels for CPython 3.8 to 3.11 that need
  glibc 2.34 or newer (Debian 12 "bookworm" has 2.36). It is built for numpy 1.x, hence "numpy<2".
  PyPI has no armv7l numpy wheels. If pip finds none (and would build numpy from source), install
  Debian's numpy 1.x first and let the venv see it:
    sudo apt-get install python3-numpy
    python3 -m venv --system-site-packages ~/ids-edge-venv
    ~/ids-edge-venv/bin/pip install tflite-runtime "numpy<2"

Run with other settings:
  ./run.sh --threads 4 --runs 1000 --warmup 50 --device-name pi5-lab
  The result is result.json (set OUT=path to change it). Latency is per flow in microseconds,
  measured around Interpreter.invoke() only. Copy result.json back to the host for the report.

Bit-for-bit check:
  The host that built this bundle ran {MODEL_FILE} on {ROWS_FILE} with {host_runtime} and got
  outputs sha256 {expected_sha256}.
  A CPU run with the same runtime version must give the same "outputs" -> "sha256" in result.json.
  Other TFLite versions can differ by a quantization step on some rows.
"""
    if target == "coral":
        text += f"""
Coral Edge TPU:
  Coral Dev Board (Mendel Linux): Mendel is set up with Coral's apt repository. Install Coral's
  Python library and TFLite runtime from it and run with the system Python (no venv needed):
    sudo apt-get update
    sudo apt-get install python3-pycoral python3-tflite-runtime
    ./run.sh
  Coral USB Accelerator on Debian or Raspberry Pi OS: add Coral's apt repository as Coral's
  "Get started with the USB Accelerator" page describes, then install the Edge TPU runtime:
    sudo apt-get install libedgetpu1-std
  and a TFLite runtime: python3-tflite-runtime from the same repository, or a venv as in the
  install sections above. Plug the accelerator in after installing libedgetpu1-std.
  run.sh loads the runtime with --delegate {EDGETPU_DELEGATE}{'' if edgetpu_model else ' once ' + EDGETPU_MODEL_FILE + ' is present'}.
  NOTE: libedgetpu is built against a specific TensorFlow Lite version; if loading the delegate
  fails with ai-edge-litert, use the tflite-runtime version that Coral's documentation names.
"""
        if not edgetpu_model:
            text += f"  Without {EDGETPU_MODEL_FILE}, run.sh runs the int8 model on the CPU.\n"
    if skipped:
        text += "\nSkipped while building this bundle:\n" + "".join(f"  - {reason}\n" for reason in skipped)
    return text


def _sha256(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def _write_archive(folder, archive):
    temporary = archive.with_name(f".{archive.name}.partial")
    # The gzip header stores a file name: give it the final one, not the temporary one.
    with open(temporary, "wb") as raw, gzip.GzipFile(filename=archive.name, mode="wb", fileobj=raw, mtime=0) as compressed:
        with tarfile.open(fileobj=compressed, mode="w") as tar:
            tar.add(folder, arcname=folder.name)
    os.replace(temporary, archive)


# Entry point.


def make_bundle(model_path, target, out, rows=None, *, max_rows=DEFAULT_MAX_ROWS, seed=0, label_column=None, archive=False):
    """Write a bundle folder for ``target`` at ``out`` (and ``out.tar.gz`` when ``archive``).

    Parameters
    ----------
    model_path
        An exported ``.tflite`` with its metadata JSON beside it.
    target
        One of :data:`ids_edge.choices.TARGETS`. ``coral`` needs an int8 model and adds the Edge
        TPU compilation when ``edgetpu_compiler`` is on PATH (otherwise the step is listed in
        ``BundleResult.skipped``).
    out
        Output folder. It is written as a temporary sibling and renamed when complete.
    rows
        One of:

        - a CSV path or pandas DataFrame with the model's feature columns and a label column
          (``label``, ``Label`` or ``label_column``);
        - a ``(features, labels, class_names[, source])`` tuple of raw float64 features in the
          model's feature order and class indices;
        - None for the real CICIoMT2024 test rows bundled with ids-edge.
 An official ``*_test.pcap.csv`` file without a label column gets
        its class from the file name.
    max_rows
        At most this many rows are bundled, drawn at random with ``seed`` and kept in file order.

    Raises
    ------
    IdsEdgeError
        Unknown target, missing model or metadata, rows without a model feature column (the first
        missing column is named), unknown labels, or a failed Edge TPU compilation.
    MissingRuntimeError
        No TFLite runtime on this host, which computes the expected output checksum.
    """
    model_path, model_metadata = _check_model(model_path, target)
    if max_rows < 1:
        raise IdsEdgeError(f"Invalid max_rows {max_rows}: bundle at least 1 row.")
    out = pathlib.Path(out)
    check_output_dir(out, marker="bundle.json")
    archive_path = out.with_name(out.name + ".tar.gz") if archive else None
    if archive_path is not None and archive_path.exists() and not (out / "bundle.json").is_file():
        raise IdsEdgeError(
            f"{archive_path} exists and is not the archive of an earlier bundle in {out}, so it is left alone. "
            "Move it, or choose another --out."
        )
    class_names = list(model_metadata["class_names"])
    loaded = _sample_rows(_load_rows(rows, model_metadata, label_column), max_rows, seed)

    host_outputs, host_runtime = _host_outputs(model_path, loaded, model_metadata)
    expected = runner.outputs_sha256(host_outputs)
    skipped = []
    out = pathlib.Path(out)
    with output_dir(out, marker="bundle.json") as folder:
        shutil.copy(model_path, folder / MODEL_FILE)
        shutil.copy(metadata.metadata_path(model_path), folder / "model.json")
        shutil.copy(runner.__file__, folder / "runner.py")
        write_rows_csv(folder / ROWS_FILE, loaded, model_metadata["feature_names"], class_names)

        edgetpu_model = None
        if target == "coral":
            edgetpu_model = _compile_edgetpu(model_path, folder, skipped)
            if edgetpu_model:
                shutil.copy(folder / "model.json", folder / "model_edgetpu.json")

        (folder / "run.sh").write_text(_run_script(target, edgetpu_model), encoding="utf-8")
        (folder / "run.sh").chmod(0o755)
        (folder / "README.txt").write_text(
            _readme(target, model_metadata, loaded, expected, host_runtime, edgetpu_model, skipped), encoding="utf-8"
        )

        files = sorted(path.name for path in folder.iterdir())
        metadata.write_json_atomic(
            folder / "bundle.json",
            {
                "format": BUNDLE_FORMAT,
                "format_version": BUNDLE_FORMAT_VERSION,
                "target": target,
                "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "ids_edge_version": __version__,
                "source_model": str(model_path),
                "rows": len(loaded.features),
                "rows_source": loaded.source,
                "expected_outputs_sha256": expected,
                "expected_outputs_runtime": host_runtime,
                "expected_outputs_note": f"{MODEL_FILE} on {ROWS_FILE}, run on the host CPU by the bundled runner",
                "files": {name: _sha256(folder / name) for name in files},
                "skipped": skipped,
            },
        )

    if archive_path is not None:
        _write_archive(out, archive_path)
    # The skipped steps are printed once, by BundleResult.summary_lines.
    for reason in skipped:
        logger.debug("Skipped: %s", reason)
    return BundleResult(
        out, archive_path, target, files + ["bundle.json"], len(loaded.features), loaded.source, expected, host_runtime, skipped
    )


def run_test_rows(model_path, data_path=None):
    """Return the test split of the run that ``model_path`` was exported from, or None.

    The run is the ``run_dir`` named by ``export.json`` beside the model. Without that file the
    caller falls back to the bundled sample rows.

    Returns
    -------
    tuple or None
        ``(features, labels, class_names, source)`` for :func:`make_bundle`.

    Raises
    ------
    IdsEdgeError
        ``export.json`` is unreadable, or the run's data moved or changed (see ``data_path``).
    """
    export_file = pathlib.Path(model_path).parent / "export.json"
    if not export_file.is_file():
        return None
    try:
        run_dir = json.loads(export_file.read_text(encoding="utf-8"))["run_dir"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise IdsEdgeError(f"{export_file} is unreadable or has no \"run_dir\". Export the model again.") from None

    from ids_edge import runs

    run = runs.load_run(run_dir)
    dataset = run.load_dataset(data_path)
    source = f"test split of the {dataset.report.get('source', 'run data')}"
    return dataset.test.features, dataset.test.labels, dataset.class_names, source


def bundle_from_cli(model_path, target, out, data_path=None, archive=True):
    """Build a bundle with the test rows of the model's run, for ``ids-edge bundle``.

    Uses the run named by ``export.json`` beside the model (``data_path`` replaces its data folder
    if it moved), or the bundled real sample rows when there is no ``export.json``.

    Returns
    -------
    list of str
        The summary lines to print.
    """
    result = make_bundle(model_path, target, out, run_test_rows(model_path, data_path), archive=archive)
    return result.summary_lines()
