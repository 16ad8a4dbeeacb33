"""Benchmark exported ``.tflite`` models on the host CPU beside the float Keras model and a RandomForest.

One process run measures every variant on the run's test split:

- TFLite models: latency per flow for each thread count and batch size, measured the way
  TFLite's ``benchmark_model`` does it. Warm-up invocations come first, then timed
  ``Interpreter.invoke()`` calls on real rows with ``time.perf_counter_ns``, a monotonic clock.
  Also accuracy, file size raw and gzip, and the operators with their tensor types.
- The float Keras model, deployed as is with ``model.predict``: on one row, and on a batch of
  rows.
- A RandomForest (scikit-learn, seeded) trained here on the run's training split, as the classic
  machine-learning baseline. Its pickled size is measured through a temporary file.
- Peak resident memory of a separate Python process that loads only that one variant and runs
  it, so the numbers are not mixed with TensorFlow's own memory in this process.

``import_device_results`` adds the JSON files that ``ids_edge/runner.py`` writes on devices.
Results measured under emulation are kept apart and labelled as emulated, never as device latency.
"""

import dataclasses
import datetime
import gzip
import hashlib
import json
import logging
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from ids_edge import coral, evaluate, metadata, runner, runs
from ids_edge._tf import quiet_native_stderr
from ids_edge.choices import BENCH_TARGETS, IO_TYPES, QUANTIZE_MODES
from ids_edge.errors import IdsEdgeError, MissingRuntimeError
from ids_edge.outputs import output_dir
from ids_edge.runtime import RUNTIMES, find_runtime, load_problem

logger = logging.getLogger(__name__)

REPORT_FORMAT = "ids-edge-bench"
REPORT_FORMAT_VERSION = 1
REPORT_JSON = "bench.json"
REPORT_MARKDOWN = "bench.md"
LATENCY_PLOT = "latency.png"
ACCURACY_PLOT = "accuracy_vs_size.png"
CHILD_TIMEOUT_S = 600
PROGRESS_STEP = 100
"""Timed runs between progress bar updates, so that the bar adds no work between most invocations."""
BASELINE_MAX_WARMUP = 3
"""Most warm-up calls per Keras or RandomForest mode: ``min(warmup, 3)``, because each call takes milliseconds."""


@dataclasses.dataclass
class BenchOptions:
    """Benchmark settings.

    ``runs`` and ``warmup`` count ``invoke()`` calls per TFLite configuration; ``baseline_runs``
    counts ``predict`` calls per Keras or RandomForest mode, which take milliseconds each.
    ``baseline_batch_size`` is the number of rows of the batch ``predict`` call.
    ``allow_other_run`` accepts a ``run_dir`` other than the one in a model's ``export.json``;
    the report then marks those models.
    """

    warmup: int = 20
    runs: int = 1000
    threads: tuple = (1,)
    batch_sizes: tuple = (1,)
    keras: bool = True
    forest: bool = True
    baseline_runs: int = 30
    baseline_batch_size: int = 256
    forest_trees: int = 100
    seed: int = 0
    memory: bool = True
    target: str = "host"
    runtime: str | None = None
    progress: bool = False
    allow_other_run: bool = False


@dataclasses.dataclass
class BenchResult:
    """The report folder that :func:`bench_models` wrote, and its JSON content."""

    out_dir: pathlib.Path
    report: dict
    messages: list = dataclasses.field(default_factory=list)

    def summary_lines(self):
        """Return one line per variant with its headline figures."""
        lines = ["SYNTHETIC data: the metrics below are not CICIoMT2024 results."] if self.report.get("synthetic_data") else []
        for variant in self.report["variants"]:
            headline = headline_latency(variant)
            latency = f"p50 {headline['p50_us']:.1f} us/flow" if headline else "latency not measured"
            lines.append(
                f"{variant['name']}: macro F1 {variant['metrics']['macro']['f1']:.4f}, "
                f"{variant['size_bytes']} bytes, {latency}"
            )
        lines += [f"Note: {note}" for note in self.report.get("notes", []) + self.messages]
        lines.append(f"Report: {self.out_dir / REPORT_MARKDOWN}")
        return lines


# Options and inputs.


def check_options(options):
    """Raise :class:`IdsEdgeError` for an option value the benchmark cannot use."""
    if options.target not in BENCH_TARGETS:
        raise IdsEdgeError(
            f"Unknown --target {options.target!r}: bench measures on this machine ('host') and can add the "
            f"Coral Edge TPU readiness ('coral'). Choose one of {', '.join(BENCH_TARGETS)}; for a Raspberry Pi "
            "use 'ids-edge bundle --target rpi' and import its result with --import."
        )
    if options.runtime is not None and options.runtime not in RUNTIMES:
        raise IdsEdgeError(f"Invalid --runtime {options.runtime!r}: choose one of {', '.join(RUNTIMES)}.")
    bad_threads = [value for value in options.threads if value < 1] or [0]
    bad_batch_sizes = [value for value in options.batch_sizes if value < 1] or [0]
    checks = [
        (options.runs >= 1, f"--runs {options.runs}: use 1 or more"),
        (options.warmup >= 0, f"--warmup {options.warmup}: use 0 or more"),
        (options.baseline_runs >= 1, f"--baseline-runs {options.baseline_runs}: use 1 or more"),
        (options.baseline_batch_size >= 1, f"--baseline-batch-size {options.baseline_batch_size}: use 1 or more"),
        (options.forest_trees >= 1, f"--forest-trees {options.forest_trees}: use 1 or more"),
        (len(options.threads) > 0 and min(options.threads) >= 1, f"--threads {bad_threads[0]}: use 1 or more"),
        (len(options.batch_sizes) > 0 and min(options.batch_sizes) >= 1, f"--batch-size {bad_batch_sizes[0]}: use 1 or more"),
    ]
    for valid, message in checks:
        if not valid:
            raise IdsEdgeError(f"Invalid option {message}.")


def read_tflite_file(model_path):
    """Read a ``.tflite`` file with the check that ``ids-edge coral`` uses too.

    Raises:
        IdsEdgeError: The file is missing, a folder, empty or not a TFLite model.
    """
    return coral.read_tflite_bytes(model_path)


def _metadata_mismatch(model_path, problem):
    return IdsEdgeError(
        f"The metadata {metadata.metadata_path(model_path)} does not match the model {model_path}: {problem}. "
        "Use the .json file that 'ids-edge export' wrote with this model, or export the model again."
    )


def _name_list(model_path, model_metadata, key):
    names = model_metadata.get(key)
    if key not in model_metadata:
        raise IdsEdgeError(
            f"Metadata file {metadata.metadata_path(model_path)} has no {key!r} key. Export the model again with "
            "'ids-edge export', which writes the complete metadata beside the .tflite file."
        )
    if not isinstance(names, list) or not names or not all(isinstance(name, str) and name for name in names):
        raise _metadata_mismatch(model_path, f"{key!r} must be a non-empty list of name strings, not {names!r}")
    return names


def check_metadata_matches_model(model_path, model_metadata):
    """Raise :class:`IdsEdgeError` when the metadata JSON contradicts the ``.tflite`` file.

    Compares the feature count with the input tensor's shape, the class count with the output
    tensor's shape, and ``quantize`` and ``io`` with the tensor types (int8 input and output only
    for ``quantize: int8, io: int8``; int8 tensors in every ``int8`` model and in no ``none`` or
    ``float16`` model).
    """
    features = _name_list(model_path, model_metadata, "feature_names")
    classes = _name_list(model_path, model_metadata, "class_names")
    _, _, tensors, _, graph_inputs, graph_outputs = coral.read_flatbuffer(model_path)
    if len(graph_inputs) != 1 or len(graph_outputs) != 1:
        raise IdsEdgeError(
            f"{model_path} has {len(graph_inputs)} input and {len(graph_outputs)} output tensors, but ids-edge models "
            "have one of each. Pass a model written by 'ids-edge export'."
        )
    source, target = tensors[graph_inputs[0]], tensors[graph_outputs[0]]

    input_values = int(np.prod(source.shape[1:])) if len(source.shape) > 1 else 0
    if input_values != len(features):
        raise _metadata_mismatch(
            model_path, f"it lists {len(features)} feature names, but the input tensor has shape {source.shape} ({input_values} features)"
        )
    output_values = int(np.prod(target.shape[1:])) if len(target.shape) > 1 else 0
    if output_values != len(classes):
        raise _metadata_mismatch(
            model_path, f"it lists {len(classes)} class names, but the output tensor has shape {target.shape} ({output_values} classes)"
        )

    quantize, io = model_metadata.get("quantize"), model_metadata.get("io")
    if quantize not in QUANTIZE_MODES:
        raise _metadata_mismatch(model_path, f"quantize is {quantize!r}, not one of {', '.join(QUANTIZE_MODES)}")
    if io is not None and io not in IO_TYPES:
        raise _metadata_mismatch(model_path, f"io is {io!r}, not one of {', '.join(IO_TYPES)}")
    expected = "INT8" if quantize == "int8" and io == "int8" else "FLOAT32"
    for role, tensor in (("input", source), ("output", target)):
        if tensor.dtype != expected:
            raise _metadata_mismatch(
                model_path, f"quantize={quantize!r} and io={io!r} give a {expected} {role}, but the {role} tensor is {tensor.dtype}"
            )
    has_int8 = any(tensor.dtype == "INT8" for tensor in tensors)
    if quantize == "int8" and not has_int8:
        raise _metadata_mismatch(model_path, "quantize is 'int8', but the model has no INT8 tensor")
    if quantize in ("none", "float16") and has_int8:
        raise _metadata_mismatch(model_path, f"quantize is {quantize!r}, but the model has INT8 tensors")


def find_run_dir(model_paths, run_dir=None):
    """Return the run directory: ``run_dir``, or the ``run_dir`` of each model's ``export.json``.

    Raises:
        IdsEdgeError: No ``export.json`` names a run, or the models come from different runs.
    """
    if run_dir is not None:
        run_dir = pathlib.Path(run_dir)
        if not run_dir.exists():
            raise IdsEdgeError(f"Run directory {run_dir} (--run) not found. Pass the folder that 'ids-edge train --out' wrote.")
        return run_dir
    found = {}
    for model_path in model_paths:
        export_file = pathlib.Path(model_path).parent / "export.json"
        try:
            found[model_path] = json.loads(export_file.read_text(encoding="utf-8"))["run_dir"]
        except (OSError, ValueError, KeyError, TypeError):
            raise IdsEdgeError(
                f"Cannot find the run of {model_path}: {export_file} is missing or has no \"run_dir\". "
                "Pass the run directory with --run."
            ) from None
    distinct = sorted(set(found.values()))
    if len(distinct) > 1:
        raise IdsEdgeError(
            f"The models come from different runs ({', '.join(distinct)}), but one report compares models of one "
            "run. Bench each run separately, or pass --run to evaluate them all on one run's test split."
        )
    return pathlib.Path(distinct[0])


def models_of_other_runs(model_paths, run_dir):
    """Return ``(model_path, export_run_dir)`` for each model whose ``export.json`` names a run other than ``run_dir``.

    Models without a readable ``export.json`` are not listed: for them ``--run`` is the only source.
    """
    others = []
    for model_path in model_paths:
        export_file = pathlib.Path(model_path).parent / "export.json"
        try:
            named = json.loads(export_file.read_text(encoding="utf-8"))["run_dir"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(named, str) and pathlib.Path(named).resolve() != pathlib.Path(run_dir).resolve():
            others.append((str(model_path), named))
    return others


def check_model_matches_run(model_path, model_metadata, run):
    """Raise :class:`IdsEdgeError` when a model's features or classes differ from the run's data."""
    features = list(model_metadata.get("feature_names", []))
    if features != run.feature_names:
        position = next(
            (i for i, (a, b) in enumerate(zip(features, run.feature_names)) if a != b),
            min(len(features), len(run.feature_names)),
        )
        model_name = features[position] if position < len(features) else "(none)"
        run_name = run.feature_names[position] if position < len(run.feature_names) else "(none)"
        raise IdsEdgeError(
            f"Model {model_path} takes {len(features)} features, but run {run.path} has {len(run.feature_names)}; "
            f"they first differ at position {position} (model {model_name!r}, data {run_name!r}). "
            "Bench the model with the run it was exported from (--run)."
        )
    if list(model_metadata.get("class_names", [])) != run.class_names:
        raise IdsEdgeError(
            f"Model {model_path} predicts classes {model_metadata.get('class_names')}, but run {run.path} has "
            f"{run.class_names}. Bench the model with the run it was exported from (--run)."
        )


# Timing.


def summarize_latency(elapsed_ns, batch_size, warmup_ns=()):
    """Summarize per-call times as latency per flow, as a dict with the keys of ``runner.LatencyStats``.

    Returns:
        Microseconds per flow, plus ``count``, ``warmup``, ``batch_size`` and
        ``throughput_flows_per_s`` (flows per second over the timed calls).
    """
    return runner.latency_stats(elapsed_ns, batch_size, warmup_ns).to_dict()


def _progress(total, label, enabled):
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit="run", disable=not enabled, leave=False, file=sys.stderr)


def time_interpreter(interpreter, inputs, warmup, runs, label="", progress=False):
    """Time ``invoke()`` as :func:`ids_edge.runner.measure_latency` does, keeping every sample.

    Each call gets the next batch of real rows at the interpreter's batch size. ``set_tensor``
    runs before the clock starts, so only ``invoke()`` is timed.

    Returns:
        ``(warmup_ns, elapsed_ns, batch_size)``: int64 nanoseconds per warm-up call and per
        timed call, and flows per call.
    """
    with _progress(runs, label, progress) as bar:
        def update_bar(i):
            if (i + 1) % PROGRESS_STEP == 0:
                bar.update(PROGRESS_STEP)

        return runner.time_invocations(interpreter, inputs, warmup, runs, after_run=update_bar)


def time_calls(function, batches, warmup, runs, label="", progress=False):
    """Time ``function(batch)`` calls, cycling through ``batches``, after ``warmup`` timed warm-up calls.

    Returns:
        ``(warmup_ns, elapsed_ns)``: int64 nanoseconds per warm-up call and per timed call.
    """
    def timed(count, offset, bar=None):
        elapsed = np.empty(count, dtype=np.int64)
        for i in range(count):
            batch = batches[(offset + i) % len(batches)]
            start = time.perf_counter_ns()
            function(batch)
            elapsed[i] = time.perf_counter_ns() - start
            if bar is not None:
                bar.update(1)
        return elapsed

    warmup_ns = timed(warmup, 0)
    with _progress(runs, label, progress) as bar:
        elapsed_ns = timed(runs, warmup, bar)
    return warmup_ns, elapsed_ns


def _latency_record(warmup_ns, elapsed_ns, batch_size, **fields):
    stats = summarize_latency(elapsed_ns, batch_size, warmup_ns)
    samples = (np.asarray(elapsed_ns, dtype=np.float64) / 1000.0 / batch_size).round(3).tolist()
    return {**fields, **stats, "samples_us": samples}


def headline_latency(variant):
    """Return the variant's first latency record of one flow per call, or None."""
    for record in variant.get("latency", []):
        if "p50_us" in record and record["batch_size"] == 1:
            return record
    return None


# Memory.

# Linux keeps a process's ru_maxrss across exec, so a child forked from this large process would
# report this process's peak. /proc/self/status (VmHWM, VmRSS) belongs to the new program alone.
_CHILD_PREFIX = """
import json, sys
import numpy as np

def memory_bytes(key):
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None

def report(baseline):
    print(json.dumps({"baseline_rss_bytes": baseline, "rss_bytes": memory_bytes("VmRSS"), "peak_rss_bytes": memory_bytes("VmHWM")}))
"""

_CHILD_TFLITE = _CHILD_PREFIX + """
from ids_edge import runner
runtime = runner.find_runtime(sys.argv[3] or None)
baseline = memory_bytes("VmRSS")
interpreter = runner.load_interpreter(sys.argv[1], int(sys.argv[2]), None, runtime)
detail = runner.input_detail(interpreter)
inputs = np.zeros(detail["shape"], dtype=detail["dtype"])
for _ in range(100):
    interpreter.set_tensor(detail["index"], inputs)
    interpreter.invoke()
report(baseline)
"""

_CHILD_KERAS = _CHILD_PREFIX + """
import ids_edge
from ids_edge._tf import import_tensorflow
tf, keras = import_tensorflow()
baseline = memory_bytes("VmRSS")
model = keras.models.load_model(sys.argv[1], compile=False)
model.predict(np.zeros((1, *model.input_shape[1:]), dtype=np.float32), verbose=0)
report(baseline)
"""

_CHILD_FOREST = _CHILD_PREFIX + """
import joblib
import sklearn.ensemble
baseline = memory_bytes("VmRSS")
forest = joblib.load(sys.argv[1])
forest.predict(np.zeros((1, forest.n_features_in_), dtype=np.float32))
report(baseline)
"""


def measure_child_memory(kind, path, *args):
    """Run one variant in a fresh Python process and return its resident memory (Linux only).

    ``peak_rss_bytes`` is the process's peak (VmHWM) after loading the model and running it,
    ``baseline_rss_bytes`` its resident memory after importing the libraries, and
    ``model_rss_bytes`` the growth of resident memory from loading and running the model.

    Returns:
        A dict with those keys, or with ``skipped`` and the reason when the process failed.
    """
    code = {"tflite": _CHILD_TFLITE, "keras": _CHILD_KERAS, "forest": _CHILD_FOREST}[kind]
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        completed = subprocess.run(
            [sys.executable, "-c", code, str(path), *[str(a) for a in args]],
            capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, env=environment, check=False,
        )
    except subprocess.TimeoutExpired:
        return {"skipped": f"the memory probe did not finish within {CHILD_TIMEOUT_S} s"}
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        tail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"skipped": f"the memory probe failed (exit {completed.returncode}: {tail[0]})"}
    result = json.loads(lines[-1])
    if result["peak_rss_bytes"] is None or result["baseline_rss_bytes"] is None:
        return {"skipped": "/proc/self/status is not readable on this platform, so resident memory is unknown"}
    result["model_rss_bytes"] = result.pop("rss_bytes") - result["baseline_rss_bytes"]
    result["method"] = "VmHWM and VmRSS of a separate Python process that loads only this variant and runs it"
    return result


# Machine description.


def _lscpu_model():
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        output = ""
    for line in output.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _os_name():
    try:
        for line in pathlib.Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}"


def _load_average():
    # The 1-minute load average shows whether other processes competed for the CPU while timing.
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine_info(runtime):
    """Describe this machine and the package versions that shape the numbers."""
    from importlib import metadata as importlib_metadata

    versions = {}
    for package in ("tensorflow", "tf_keras", "ai-edge-litert", "tflite-runtime", "numpy", "scikit-learn"):
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu_model": _lscpu_model(),
        "logical_cpus": os.cpu_count(),
        "machine": platform.machine(),
        "os": _os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tflite_runtime_used": f"{runtime.name} {runtime.version}",
        "versions": versions,
    }


def runtime_survey(chosen):
    """Say why each runtime tried before ``chosen`` was skipped (``find_runtime``'s reasons)."""
    skipped = {}
    for name in RUNTIMES:
        if name == chosen.name:
            break
        reason = load_problem(name)
        if reason is not None:
            skipped[name] = reason
    return skipped


# Variants.


def _file_sizes(data):
    return {
        "size_bytes": len(data),
        "gzip_bytes": len(gzip.compress(data, compresslevel=9, mtime=0)),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def _runner_call(function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except runner.RuntimeNotFoundError as error:
        raise MissingRuntimeError(str(error)) from None
    except runner.RunnerError as error:
        raise IdsEdgeError(str(error)) from None


def _operators(model_path):
    from ids_edge import coral

    operators = coral.read_flatbuffer(model_path)[3]
    return [
        {"index": entry.index, "operator": entry.name, "input_types": entry.input_types, "output_types": entry.output_types}
        for entry, _ in operators
    ]


def variant_name(model_path):
    """Name a TFLite variant by its export name, e.g. ``tflite_int8``; ``none`` becomes ``float32``."""
    name = pathlib.Path(model_path).stem.removeprefix("model_")
    return "tflite_" + ("float32" if name == "none" else name)


def bench_tflite(model_path, test_features, labels, class_names, runtime, options):
    """Measure one ``.tflite`` model: size, operators, accuracy, latency per configuration, memory."""
    model_path = pathlib.Path(model_path)
    data = read_tflite_file(model_path)
    model_metadata = metadata.read_metadata(model_path)
    name = variant_name(model_path)

    interpreter = _load_interpreter(model_path, options.threads[0], runtime)
    detail = runner.input_detail(interpreter)
    inputs = _runner_call(runner.prepare_inputs, test_features, model_metadata, detail)
    outputs = _runner_call(runner.predict, interpreter, inputs)
    report = evaluate.classification_report(labels, np.argmax(outputs, axis=1), class_names)

    latency = []
    for threads in options.threads:
        for batch_size in options.batch_sizes:
            timed = _load_interpreter(model_path, threads, runtime)
            if batch_size != 1:
                try:
                    with quiet_native_stderr():
                        runner.set_batch_size(timed, batch_size)
                except runner.RunnerError as error:
                    latency.append({"mode": "invoke", "threads": threads, "batch_size": batch_size, "skipped": str(error)})
                    logger.info("%s: batch %d skipped: %s", name, batch_size, error)
                    continue
            label = f"{name} t{threads} b{batch_size}"
            warmup_ns, elapsed_ns, flows = time_interpreter(timed, inputs, options.warmup, options.runs, label, options.progress)
            latency.append(_latency_record(warmup_ns, elapsed_ns, flows, mode="invoke", threads=threads))

    if not any("p50_us" in record for record in latency):
        reasons = " ".join(f"Batch {record['batch_size']}, {record['threads']} thread(s): {record['skipped']}" for record in latency)
        raise IdsEdgeError(f"No latency configuration of {model_path} could be measured, so no report was written. {reasons}")

    output_detail = runner.output_detail(interpreter)
    variant = {
        "name": name,
        "kind": "tflite",
        "engine": f"{runtime.name} {runtime.version} Interpreter.invoke()",
        "model_file": str(model_path.resolve()),
        **_file_sizes(data),
        "quantize": model_metadata.get("quantize"),
        "io": model_metadata.get("io"),
        "input": {"dtype": np.dtype(detail["dtype"]).name, "shape_signature": [int(v) for v in detail["shape_signature"]]},
        "output": {"dtype": np.dtype(output_detail["dtype"]).name, "shape": [int(v) for v in output_detail["shape"]]},
        "operators": _operators(model_path),
        "metrics": report,
        "latency": latency,
    }
    if options.memory:
        variant["memory"] = measure_child_memory("tflite", model_path, options.threads[0], options.runtime or "")
    if options.target == "coral":
        from ids_edge import coral

        variant["coral"] = coral.check_readiness(model_path).to_dict()
    return variant


def _baseline_latency(function, rows, options, name, mode, threads):
    """Time ``function`` on one row per call and on one batch per call, after ``min(warmup, 3)`` warm-up calls each."""
    single = [rows[i : i + 1] for i in range(min(len(rows), 64))]
    batch_size = min(options.baseline_batch_size, len(rows))
    batches = [rows[:batch_size]]
    warmup = min(options.warmup, BASELINE_MAX_WARMUP)
    one = time_calls(function, single, warmup, options.baseline_runs, f"{name} {mode} 1 row", options.progress)
    many = time_calls(function, batches, warmup, options.baseline_runs, f"{name} {mode} batch", options.progress)
    return [
        _latency_record(*one, 1, mode=mode, threads=threads),
        _latency_record(*many, batch_size, mode=mode, threads=threads),
    ]


def _load_interpreter(model_path, threads, runtime):
    # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." from C++ when it
    # builds the interpreter; quiet_native_stderr drops it unless -vv is on.
    with quiet_native_stderr():
        return _runner_call(runner.load_interpreter, model_path, threads, None, runtime)


def bench_keras(run, test_features, labels, options):
    """Measure the run's float Keras model with ``model.predict``, the way it runs without export."""
    from ids_edge.train import as_model_input

    model = run.load_model()
    inputs = as_model_input(run.preprocessor.transform(test_features))
    predictions = np.argmax(model.predict(inputs, batch_size=1024, verbose=0), axis=1)
    report = evaluate.classification_report(labels, predictions, run.class_names)
    model_file = run.path / "model.keras"

    def predict(batch):
        model.predict(batch, batch_size=len(batch), verbose=0)

    def call(batch):
        model(batch, training=False)

    from ids_edge._tf import import_tensorflow

    tf, keras = import_tensorflow()
    threads = keras_threads(tf)
    latency = _baseline_latency(predict, inputs, options, "keras", "predict", threads)
    latency += _baseline_latency(call, inputs, options, "keras", "call", threads)
    variant = {
        "name": "keras_float32",
        "kind": "keras",
        "engine": (
            f"tf_keras {keras.__version__} model.predict and model(x, training=False) (TensorFlow {tf.__version__}, "
            f"threads: {threads})"
        ),
        "model_file": str(model_file.resolve()),
        "size_of": "the .keras archive of the run",
        **_file_sizes(model_file.read_bytes()),
        "metrics": report,
        "latency": latency,
    }
    if options.memory:
        variant["memory"] = measure_child_memory("keras", model_file)
    return variant


def keras_threads(tf):
    """Describe TensorFlow's CPU thread settings, where 0 means TensorFlow picks the count itself."""
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    return (
        f"TensorFlow default (intra-op {intra or 'auto'}, inter-op {inter or 'auto'}; "
        f"{os.cpu_count()} logical CPUs)"
    )


def bench_forest(run, dataset, options):
    """Train a seeded RandomForest on the run's training split and measure it like the others."""
    import joblib
    import sklearn
    from sklearn.ensemble import RandomForestClassifier

    train = run.preprocessor.transform(dataset.train.features)
    test = run.preprocessor.transform(dataset.test.features)
    forest = RandomForestClassifier(n_estimators=options.forest_trees, random_state=options.seed, n_jobs=1)
    forest.fit(train, dataset.train.labels)
    report = evaluate.classification_report(dataset.test.labels, forest.predict(test), run.class_names)

    with tempfile.TemporaryDirectory(prefix="ids-edge-forest-") as folder:
        path = pathlib.Path(folder) / "forest.joblib"
        joblib.dump(forest, path)
        sizes = _file_sizes(path.read_bytes())
        memory = measure_child_memory("forest", path) if options.memory else None

    variant = {
        "name": "random_forest",
        "kind": "forest",
        "engine": (
            f"scikit-learn {sklearn.__version__} RandomForestClassifier({options.forest_trees} trees, "
            f"random_state={options.seed}, n_jobs=1).predict"
        ),
        "model_file": "(joblib pickle in a temporary file, measured and deleted)",
        "size_of": "the joblib pickle of the trained forest, written to a temporary file and deleted",
        **sizes,
        "metrics": report,
        "latency": _baseline_latency(forest.predict, test, options, "forest", "predict", 1),
    }
    if memory is not None:
        variant["memory"] = memory
    return variant


def _data_description(run, dataset):
    source = run.info["data_source"]
    if source["kind"] == "sample":
        origin = "the bundled sample of real CICIoMT2024 rows"
    elif source["kind"] == "official":
        origin = f"CICIoMT2024 files in {source['path']}"
    else:
        origin = f"CSV files in {source['path']} (generic mode, label column {source['label_column']!r})"
    return {
        "origin": origin + run.data_label,
        "test_rows": int(len(dataset.test.labels)),
        "train_rows": int(len(dataset.train.labels)),
        "classes": run.class_names,
        "task": run.task,
    }


def _make_names_unique(variants):
    # Two exports of the same kind from different folders would share a name; add the folder name.
    names = [variant["name"] for variant in variants]
    for variant in variants:
        if names.count(variant["name"]) > 1:
            variant["name"] += f" ({pathlib.Path(variant['model_file']).parent.name})"


def _build_report(run, dataset, runtime, options, variants, started):
    """Assemble the JSON-ready report: run, data, machine, options and the measured variants."""
    return {
        "format": REPORT_FORMAT,
        "format_version": REPORT_FORMAT_VERSION,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0].endswith("ids-edge") else None,
        "run_dir": str(run.path.resolve()),
        "synthetic_data": bool(run.info.get("synthetic_data", False)),
        "data": _data_description(run, dataset),
        "machine": machine_info(runtime),
        "runtimes_skipped": runtime_survey(runtime),
        "options": {key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(options).items()},
        "clock": (
            "time.perf_counter_ns (monotonic); TFLite: Interpreter.invoke() only; Keras: the model.predict call and "
            "the direct model(x, training=False) call; RandomForest: the predict call"
        ),
        "baseline_warmup": min(options.warmup, BASELINE_MAX_WARMUP),
        "variants": variants,
        "devices": [],
    }


def bench_models(model_paths, out_dir, options, run_dir=None, data_path=None, device_results=()):
    """Benchmark TFLite models beside the float Keras model and a RandomForest, and write the report.

    Args:
        model_paths: ``.tflite`` files exported from one run, each with its metadata JSON.
        out_dir: Report folder; replaced only when everything succeeds.
        options: :class:`BenchOptions`.
        run_dir: The run directory, or None to read it from the models' ``export.json``.
        data_path: New location of the run's data, if it moved.
        device_results: Paths of device result JSON files to add (see :func:`load_device_result`).

    Returns:
        A :class:`BenchResult`.

    Raises:
        IdsEdgeError: A missing or invalid model, models that do not match the run's data, an
            unknown target or invalid options. MissingRuntimeError: no TFLite runtime loads.
    """
    check_options(options)
    if not model_paths:
        raise IdsEdgeError("No model given. Pass one or more .tflite files, or --import with an existing --out report.")
    model_paths = [pathlib.Path(p) for p in model_paths]
    for model_path in model_paths:
        read_tflite_file(model_path)
        check_metadata_matches_model(model_path, metadata.read_metadata(model_path))
    run_dir = find_run_dir(model_paths, run_dir)
    other_runs = models_of_other_runs(model_paths, run_dir)
    if other_runs and not options.allow_other_run:
        model_path, named = other_runs[0]
        raise IdsEdgeError(
            f"Model {model_path} was exported from run {named} (its export.json), but --run names run {run_dir}. "
            f"Pass --run {named}, or add --allow-other-run to evaluate it on the test split of {run_dir}; the report "
            "then marks the model as evaluated on another run."
        )
    run = runs.load_run(run_dir)
    for model_path in model_paths:
        check_model_matches_run(model_path, metadata.read_metadata(model_path), run)
    runtime = find_runtime(options.runtime)
    devices = [load_device_result(path) for path in device_results]
    notes = _option_notes(options)
    for note in notes:
        logger.warning("%s", note)

    # Entering the output folder first rejects an unusable --out before minutes of measuring.
    with output_dir(out_dir, marker=REPORT_JSON) as folder:
        started = datetime.datetime.now(datetime.timezone.utc)
        load_at_start = _load_average()
        dataset = run.load_dataset(data_path)
        test_features, labels = dataset.test.features, dataset.test.labels
        logger.info("Benchmarking %d models on %d test rows with %s %s", len(model_paths), len(labels), runtime.name, runtime.version)

        variants = [bench_tflite(path, test_features, labels, run.class_names, runtime, options) for path in model_paths]
        for variant, model_path in zip(variants, model_paths):
            named = dict(other_runs).get(str(model_path))
            if named is not None:
                variant["export_run_dir"] = named
                notes.append(
                    f"{variant['name']} was exported from run {named} but is evaluated on the test split of run "
                    f"{run.path} (--allow-other-run)."
                )
        _make_names_unique(variants)
        if options.keras:
            variants.append(bench_keras(run, test_features, labels, options))
        if options.forest:
            variants.append(bench_forest(run, dataset, options))

        report = _build_report(run, dataset, runtime, options, variants, started)
        report["load_average_1min"] = {"start": load_at_start, "end": _load_average()}
        report["notes"] = notes
        for device in devices:
            attach_device_result(report, device)

        write_report_files(report, folder)
    return BenchResult(pathlib.Path(out_dir), report)


def _option_notes(options):
    """Return warnings about options that make the numbers hard to read, such as more threads than CPUs."""
    cpus = os.cpu_count()
    notes = []
    for threads in sorted(set(options.threads)):
        if cpus and threads > cpus:
            notes.append(
                f"--threads {threads} is more than the {cpus} logical CPUs of this machine, so those threads share "
                "CPUs and the latency is not that of parallel cores."
            )
    return notes


# Device results.


def load_device_result(path):
    """Read and check a result JSON file that ``ids_edge/runner.py`` wrote on a device.

    Raises:
        IdsEdgeError: The file is missing, not JSON, of another or newer format, or lacks a key.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        raise IdsEdgeError(
            f"Device result {path} is a folder, but --import expects a result.json file that runner.py wrote. "
            f"Pass the file, for example {path / 'result.json'}."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IdsEdgeError(f"Device result {path} not found. Copy result.json back from the device first.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IdsEdgeError(f"Device result {path} is not valid JSON ({error}).") from None
    if not isinstance(data, dict) or data.get("format") != runner.RESULT_FORMAT:
        raise IdsEdgeError(f"{path} is not an ids-edge device result (no \"format\": \"{runner.RESULT_FORMAT}\").")
    version = data.get("format_version")
    if not isinstance(version, int) or version > runner.RESULT_FORMAT_VERSION:
        raise IdsEdgeError(
            f"{path} has device result format_version {version!r}, but this ids-edge reads versions up to "
            f"{runner.RESULT_FORMAT_VERSION}. Upgrade ids-edge."
        )
    for key in ("device", "emulated", "latency", "model", "runtime", "platform"):
        if key not in data:
            raise IdsEdgeError(f"Device result {path} has no {key!r} key. Run the device benchmark again.")
    for key in ("latency", "model", "runtime", "platform"):
        if not isinstance(data[key], dict):
            raise IdsEdgeError(f"Device result {path}: {key!r} must be a JSON object. Run the device benchmark again.")
    if not isinstance(data["emulated"], bool):
        raise IdsEdgeError(f"Device result {path}: \"emulated\" must be true or false, not {data['emulated']!r}.")
    _check_device_values(path, data)
    data["source_file"] = str(path)
    return data


_LATENCY_KEYS = ("mean_us", "std_us", "min_us", "p50_us", "p90_us", "p99_us", "max_us", "throughput_flows_per_s")
_FRACTION_KEYS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted", "recall_weighted", "f1_weighted")


def _check_device_values(path, data):
    """Raise :class:`IdsEdgeError` naming the first field of a device result with a wrong type or range."""
    def fail(field, value, expected):
        raise IdsEdgeError(
            f"Device result {path}: {field} is {value!r}, but it must be {expected}. The file was edited or damaged; "
            "run the device benchmark again and copy its result.json unchanged."
        )

    def number(field, value, minimum=0.0, maximum=None, required=True):
        if value is None and not required:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            fail(field, value, "a finite number")
        if value < minimum or (maximum is not None and value > maximum):
            fail(field, value, f"between {minimum} and {maximum}" if maximum is not None else f"{minimum} or more")

    if not isinstance(data["device"], str) or not data["device"].strip():
        fail("device", data["device"], "a non-empty device name")
    latency = data["latency"]
    for key in _LATENCY_KEYS:
        number(f"latency.{key}", latency.get(key))
    for key in ("count", "batch_size"):
        value = latency.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            fail(f"latency.{key}", value, "an integer of 1 or more")
    metrics = data.get("metrics")
    if metrics is not None:
        if not isinstance(metrics, dict):
            fail("metrics", metrics, "a JSON object or null")
        for key in _FRACTION_KEYS:
            number(f"metrics.{key}", metrics.get(key), 0.0, 1.0, required=key in ("accuracy", "f1_macro"))
    number("peak_rss_bytes", data.get("peak_rss_bytes"), required=False)
    sha256 = data["model"].get("sha256")
    if not isinstance(sha256, str) or len(sha256) != 64:
        fail("model.sha256", sha256, "a 64-character SHA-256 hex digest")
    match = data.get("outputs_match_expected")
    if match is not None and not isinstance(match, bool):
        fail("outputs_match_expected", match, "true, false or null")


def _device_key(device):
    runtime = device["runtime"]
    return (
        device["device"], device["model"].get("sha256"), runtime.get("name"), runtime.get("version"),
        runtime.get("num_threads"), runtime.get("delegate"), device["latency"].get("batch_size"), device["emulated"],
    )


def attach_device_result(report, device):
    """Add a device result to a report, naming the host variant that ran the same model file.

    A result of the same device, model file (SHA-256), runtime, threads, delegate, batch size and
    emulation replaces the earlier one, so importing a file twice or a rerun adds no second row.

    Returns:
        ``"added"`` or ``"replaced"``.
    """
    sha256 = device["model"].get("sha256")
    match = next((v["name"] for v in report["variants"] if v.get("sha256") == sha256), None)
    device["host_variant"] = match
    devices = report.setdefault("devices", [])
    key = _device_key(device)
    for position, existing in enumerate(devices):
        if _device_key(existing) == key:
            devices[position] = device
            logger.info("Replaced the earlier result of %s for the same model and settings", device["device"])
            return "replaced"
    devices.append(device)
    return "added"


def import_device_results(out_dir, result_paths):
    """Add device results to the report in ``out_dir`` and write its files again.

    Each file is written to a temporary name and renamed, so a failure leaves the old report.

    Raises:
        IdsEdgeError: ``out_dir`` contains no bench report, or a result file is invalid.
    """
    if str(out_dir) in ("", "."):
        raise IdsEdgeError("Invalid --out: it is empty or the current folder. Name the report folder that 'ids-edge bench' wrote.")
    out_dir = pathlib.Path(out_dir)
    report_path = out_dir / REPORT_JSON
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IdsEdgeError(
            f"Benchmark report {report_path} not found. Run 'ids-edge bench MODEL.tflite --out "
            f"{out_dir}' first, or pass the models together with --import."
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IdsEdgeError(f"{report_path} is not valid JSON ({error}). Run 'ids-edge bench' again.") from None
    if report.get("format") != REPORT_FORMAT:
        raise IdsEdgeError(f"{report_path} is not an ids-edge benchmark report.")

    outcomes = [attach_device_result(report, load_device_result(path)) for path in result_paths]
    messages = []
    if "replaced" in outcomes:
        messages.append(
            f"{outcomes.count('replaced')} imported result(s) replaced an earlier result of the same device, model "
            "file and settings instead of adding a second row."
        )

    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        write_report_files(report, staging)
        for item in staging.iterdir():
            os.replace(item, out_dir / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BenchResult(out_dir, report, messages)


# Report files.


def write_report_files(report, folder):
    """Write ``bench.json``, ``bench.md`` and the two PNG plots into ``folder``."""
    from ids_edge import bench_report

    folder = pathlib.Path(folder)
    metadata.write_json_atomic(folder / REPORT_JSON, report)
    (folder / REPORT_MARKDOWN).write_text(bench_report.render_markdown(report), encoding="utf-8")
    bench_report.plot_latency(report, folder / LATENCY_PLOT)
    bench_report.plot_accuracy_vs_size(report, folder / ACCURACY_PLOT)
