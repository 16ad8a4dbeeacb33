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

from ids_edge import evaluate, metadata, runner, runs
from ids_edge.choices import BENCH_TARGETS
from ids_edge.errors import IdsEdgeError, MissingRuntimeError
from ids_edge.outputs import output_dir
from ids_edge.runtime import RUNTIMES, find_runtime

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


@dataclasses.dataclass
class BenchOptions:
    """Benchmark settings.

    ``runs`` and ``warmup`` count ``invoke()`` calls per TFLite configuration; ``baseline_runs``
    counts ``predict`` calls per Keras or RandomForest mode, which take milliseconds each.
    ``baseline_batch_size`` is the number of rows of the batch ``predict`` call.
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


@dataclasses.dataclass
class BenchResult:
    """The report folder that :func:`bench_models` wrote, and its JSON content."""

    out_dir: pathlib.Path
    report: dict

    def summary_lines(self):
        """Return one line per variant with its headline figures."""
        lines = []
        for variant in self.report["variants"]:
            headline = headline_latency(variant)
            latency = f"p50 {headline['p50_us']:.1f} us/flow" if headline else "latency not measured"
            lines.append(
                f"{variant['name']}: macro F1 {variant['metrics']['macro']['f1']:.4f}, "
                f"{variant['size_bytes']} bytes, {latency}"
            )
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
    checks = [
        (options.runs >= 1, f"--runs {options.runs}: use 1 or more"),
        (options.warmup >= 0, f"--warmup {options.warmup}: use 0 or more"),
        (options.baseline_runs >= 1, f"--baseline-runs {options.baseline_runs}: use 1 or more"),
        (options.baseline_batch_size >= 1, f"--baseline-batch-size {options.baseline_batch_size}: use 1 or more"),
        (options.forest_trees >= 1, f"--forest-trees {options.forest_trees}: use 1 or more"),
        (len(options.threads) > 0 and min(options.threads) >= 1, f"--threads {list(options.threads)}: use 1 or more"),
        (len(options.batch_sizes) > 0 and min(options.batch_sizes) >= 1, f"--batch-size {list(options.batch_sizes)}: use 1 or more"),
    ]
    for valid, message in checks:
        if not valid:
            raise IdsEdgeError(f"Invalid option {message}.")


def read_tflite_file(model_path):
    """Read a ``.tflite`` file and check that it is a TFLite flatbuffer.

    Raises:
        IdsEdgeError: The file is missing, empty, truncated or not a TFLite model.
    """
    model_path = pathlib.Path(model_path)
    if not model_path.is_file():
        raise IdsEdgeError(f"Model file {model_path} not found. Pass the .tflite file that 'ids-edge export' wrote.")
    data = model_path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise IdsEdgeError(
            f"{model_path} is not a TFLite model ({len(data)} bytes, no 'TFL3' identifier at byte 4). "
            "Pass a .tflite file written by 'ids-edge export'."
        )
    return data


def find_run_dir(model_paths, run_dir=None):
    """Return the run directory: ``run_dir``, or the ``run_dir`` of each model's ``export.json``.

    Raises:
        IdsEdgeError: No ``export.json`` names a run, or the models come from different runs.
    """
    if run_dir is not None:
        return pathlib.Path(run_dir)
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
    """Summarize per-call times as latency per flow, with the keys of ``runner.LatencyStats``.

    Uses the definitions of :func:`ids_edge.runner.measure_latency`: one sample per call divided
    by the flows in the call, population standard deviation, linear percentiles, and the first
    warm-up call and the warm-up mean reported apart (None without warm-up).

    Returns:
        A dict of microseconds per flow, plus ``count``, ``warmup``, ``batch_size`` and
        ``throughput_flows_per_s`` (flows per second over the timed calls).
    """
    per_flow_us = np.asarray(elapsed_ns, dtype=np.float64) / 1000.0 / batch_size
    warmup_us = np.asarray(warmup_ns, dtype=np.float64) / 1000.0 / batch_size
    total_s = float(np.sum(elapsed_ns)) / 1e9
    return {
        "count": len(per_flow_us),
        "warmup": len(warmup_us),
        "batch_size": batch_size,
        "first_us": float(warmup_us[0]) if len(warmup_us) else None,
        "warmup_mean_us": float(warmup_us.mean()) if len(warmup_us) else None,
        "mean_us": float(per_flow_us.mean()),
        "std_us": float(per_flow_us.std()),
        "min_us": float(per_flow_us.min()),
        "p50_us": float(np.percentile(per_flow_us, 50)),
        "p90_us": float(np.percentile(per_flow_us, 90)),
        "p99_us": float(np.percentile(per_flow_us, 99)),
        "max_us": float(per_flow_us.max()),
        "throughput_flows_per_s": len(per_flow_us) * batch_size / total_s if total_s > 0 else float("inf"),
    }


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
    detail = runner.input_detail(interpreter)
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
    with _progress(runs, label, progress) as bar:
        for i in range(runs):
            interpreter.set_tensor(index, batches[i % batch_count])
            start = time.perf_counter_ns()
            interpreter.invoke()
            elapsed_ns[i] = time.perf_counter_ns() - start
            if (i + 1) % PROGRESS_STEP == 0:
                bar.update(PROGRESS_STEP)
    return warmup_ns, elapsed_ns, batch_size


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
        try:
            find_runtime(name)
        except MissingRuntimeError as error:
            skipped[name] = str(error)
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

    interpreter = _runner_call(runner.load_interpreter, model_path, options.threads[0], None, runtime)
    detail = runner.input_detail(interpreter)
    inputs = _runner_call(runner.prepare_inputs, test_features, model_metadata, detail)
    outputs = _runner_call(runner.predict, interpreter, inputs)
    report = evaluate.classification_report(labels, np.argmax(outputs, axis=1), class_names)

    latency = []
    for threads in options.threads:
        for batch_size in options.batch_sizes:
            timed = _runner_call(runner.load_interpreter, model_path, threads, None, runtime)
            if batch_size != 1:
                try:
                    runner.set_batch_size(timed, batch_size)
                except runner.RunnerError as error:
                    latency.append({"mode": "invoke", "threads": threads, "batch_size": batch_size, "skipped": str(error)})
                    logger.info("%s: batch %d skipped: %s", name, batch_size, error)
                    continue
            label = f"{name} t{threads} b{batch_size}"
            warmup_ns, elapsed_ns, flows = time_interpreter(timed, inputs, options.warmup, options.runs, label, options.progress)
            latency.append(_latency_record(warmup_ns, elapsed_ns, flows, mode="invoke", threads=threads))

    output_detail = runner.output_detail(interpreter)
    variant = {
        "name": name,
        "kind": "tflite",
        "engine": f"{runtime.name} {runtime.version} Interpreter.invoke()",
        "model_file": str(model_path),
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


def _baseline_latency(function, rows, options, name):
    """Time ``function`` on one row per call and on one batch per call."""
    single = [rows[i : i + 1] for i in range(min(len(rows), 64))]
    batch_size = min(options.baseline_batch_size, len(rows))
    batches = [rows[:batch_size]]
    warmup = min(options.warmup, 3)
    one = time_calls(function, single, warmup, options.baseline_runs, f"{name} 1 row", options.progress)
    many = time_calls(function, batches, warmup, options.baseline_runs, f"{name} batch", options.progress)
    return [
        _latency_record(*one, 1, mode="predict", threads=None),
        _latency_record(*many, batch_size, mode="predict", threads=None),
    ]


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

    from ids_edge._tf import import_tensorflow

    tf, keras = import_tensorflow()
    variant = {
        "name": "keras_float32",
        "kind": "keras",
        "engine": f"tf_keras {keras.__version__} model.predict (TensorFlow {tf.__version__}, its default threads)",
        "model_file": str(model_file),
        **_file_sizes(model_file.read_bytes()),
        "metrics": report,
        "latency": _baseline_latency(predict, inputs, options, "keras"),
    }
    if options.memory:
        variant["memory"] = measure_child_memory("keras", model_file)
    return variant


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
        **sizes,
        "metrics": report,
        "latency": _baseline_latency(forest.predict, test, options, "forest"),
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
        "origin": origin,
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
        "data": _data_description(run, dataset),
        "machine": machine_info(runtime),
        "runtimes_skipped": runtime_survey(runtime),
        "options": {key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(options).items()},
        "clock": "time.perf_counter_ns (monotonic); TFLite: Interpreter.invoke() only; Keras and RandomForest: the predict call",
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
    run = runs.load_run(find_run_dir(model_paths, run_dir))
    for model_path in model_paths:
        check_model_matches_run(model_path, metadata.read_metadata(model_path), run)
    runtime = find_runtime(options.runtime)
    devices = [load_device_result(path) for path in device_results]

    # Entering the output folder first rejects an unusable --out before minutes of measuring.
    with output_dir(out_dir, marker=REPORT_JSON) as folder:
        started = datetime.datetime.now(datetime.timezone.utc)
        load_at_start = _load_average()
        dataset = run.load_dataset(data_path)
        test_features, labels = dataset.test.features, dataset.test.labels
        logger.info("Benchmarking %d models on %d test rows with %s %s", len(model_paths), len(labels), runtime.name, runtime.version)

        variants = [bench_tflite(path, test_features, labels, run.class_names, runtime, options) for path in model_paths]
        _make_names_unique(variants)
        if options.keras:
            variants.append(bench_keras(run, test_features, labels, options))
        if options.forest:
            variants.append(bench_forest(run, dataset, options))

        report = _build_report(run, dataset, runtime, options, variants, started)
        report["load_average_1min"] = {"start": load_at_start, "end": _load_average()}
        for device in devices:
            attach_device_result(report, device)

        write_report_files(report, folder)
    return BenchResult(pathlib.Path(out_dir), report)


# Device results.


def load_device_result(path):
    """Read and check a result JSON file that ``ids_edge/runner.py`` wrote on a device.

    Raises:
        IdsEdgeError: The file is missing, not JSON, of another or newer format, or lacks a key.
    """
    path = pathlib.Path(path)
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
    data["source_file"] = str(path)
    return data


def attach_device_result(report, device):
    """Add a device result to a report, naming the host variant that ran the same model file."""
    sha256 = device["model"].get("sha256")
    match = next((v["name"] for v in report["variants"] if v.get("sha256") == sha256), None)
    device["host_variant"] = match
    report.setdefault("devices", []).append(device)


def import_device_results(out_dir, result_paths):
    """Add device results to the report in ``out_dir`` and write its files again.

    Each file is written to a temporary name and renamed, so a failure leaves the old report.

    Raises:
        IdsEdgeError: ``out_dir`` contains no bench report, or a result file is invalid.
    """
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

    for path in result_paths:
        attach_device_result(report, load_device_result(path))

    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        write_report_files(report, staging)
        for item in staging.iterdir():
            os.replace(item, out_dir / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BenchResult(out_dir, report)


# Report files.


def write_report_files(report, folder):
    """Write ``bench.json``, ``bench.md`` and the two PNG plots into ``folder``."""
    from ids_edge import bench_report

    folder = pathlib.Path(folder)
    metadata.write_json_atomic(folder / REPORT_JSON, report)
    (folder / REPORT_MARKDOWN).write_text(bench_report.render_markdown(report), encoding="utf-8")
    bench_report.plot_latency(report, folder / LATENCY_PLOT)
    bench_report.plot_accuracy_vs_size(report, folder / ACCURACY_PLOT)
