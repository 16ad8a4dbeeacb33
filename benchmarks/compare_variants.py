"""Export every compression variant of one run and write the comparison behind benchmarks/COMPRESSION.md.

Usage:
    .venv/bin/python benchmarks/compare_variants.py --out WORK [--run RUN_DIR]
    .venv/bin/python benchmarks/compare_variants.py --out WORK --synthetic [--rows-per-file 150]

Without --run, the script trains a run first: on the bundled sample of real CICIoMT2024 rows, or
with --synthetic on a 19-class synthetic data set in the official file layout
(ids_edge.synthetic). Every number from --synthetic describes random data, not network traffic.

It writes into WORK:
  variants/        the export folder: every variant's model, metrics, comparison.md,
                   size_vs_macro_f1.png and export.json (default gate limits);
  clip/            int8 exported with each --calibration-clip value;
  sparsity.json    size and invoke time of pruned models converted with and without
                   tf.lite.Optimize.EXPERIMENTAL_SPARSITY;
  size_vs_macro_f1.png  every variant's size against its macro F1;
  report.md        all of it as Markdown, with the command and the machine.
Timings are host CPU timings of LiteRT on this machine, not device latency.
"""

import argparse
import json
import pathlib
import platform
import subprocess
import sys
import time

import numpy as np

import ids_edge  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from ids_edge import compress, data, runs, variant_report
from ids_edge.export import (
    ExportOptions,
    GateOptions,
    convert,
    export_variants,
    gzip_bytes,
    representative_rows,
    summary_payload,
)
from ids_edge.model import TrainingOptions
from ids_edge.synthetic import write_synthetic_dataset
from ids_edge.train import as_model_input, train_run

CLIP_VALUES = (0.0, 0.001, 0.01)
"""--calibration-clip values compared on the int8 variant."""


def variant_list(fine_tune_epochs):
    """Return every variant the comparison exports."""
    tune = {"fine_tune_epochs": fine_tune_epochs}
    return [
        ExportOptions("none"),
        ExportOptions("float16"),
        ExportOptions("dynamic"),
        ExportOptions("int8", io="int8"),
        ExportOptions("int8", io="float"),
        ExportOptions("int8", io="int8", qat=True, **tune),
        ExportOptions("int8", io="float", qat=True, **tune),
        ExportOptions("none", prune=0.5, **tune),
        ExportOptions("none", prune=0.8, **tune),
        ExportOptions("none", prune=0.8, sparse_encoding=True, **tune),
        ExportOptions("int8", prune=0.5, **tune),
        ExportOptions("int8", prune=0.8, **tune),
        ExportOptions("int8", prune=0.5, prune_structure="2:4", **tune),
        ExportOptions("int8", prune=0.5, qat=True, **tune),
    ]


def machine():
    """Describe the CPU from lscpu: model name and number of CPUs."""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return f"{platform.machine()} (lscpu not available)"
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    name = fields.get("Model name", "unknown").strip()
    cpus = fields.get("CPU(s)", "?").strip()
    return f"{name}, {cpus} CPUs ({platform.machine()}, Linux {platform.release()})"


def median_invoke_microseconds(flatbuffer, default_delegates=True, runs_count=2000):
    """Time ``invoke`` on one zero input with LiteRT, single-threaded; return the median in microseconds.

    ``default_delegates=False`` runs the builtin kernels without XNNPACK. Returns the error
    message instead when the model cannot be prepared.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if default_delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interpreter = Interpreter(model_content=flatbuffer, num_threads=1, experimental_op_resolver_type=resolver)
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as error:
        return str(error).strip()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
    for _ in range(100):
        interpreter.invoke()
    times = np.empty(runs_count)
    for index in range(runs_count):
        started = time.perf_counter_ns()
        interpreter.invoke()
        times[index] = time.perf_counter_ns() - started
    return float(np.median(times) / 1000)


def measure_sparsity_encoding(run, dataset, fine_tune_epochs):
    """Convert pruned models with and without EXPERIMENTAL_SPARSITY; compare size and invoke time."""
    from ids_edge._tf import import_tensorflow

    tf, keras = import_tensorflow()
    model = run.load_model()
    x_train = as_model_input(run.preprocessor.transform(dataset.train.features))
    y_train = keras.utils.to_categorical(dataset.train.labels, len(run.class_names))
    rows = representative_rows(dataset.train.labels, 1000, 0)
    calibration = as_model_input(run.preprocessor.transform(dataset.train.features[rows]))
    batch_size = run.info["training_options"]["batch_size"]

    results = []
    for sparsity, structure in ((0.5, "unstructured"), (0.8, "unstructured"), (0.5, "2:4")):
        pruned = compress.prune_model(model, x_train, y_train, sparsity, structure, fine_tune_epochs, batch_size)
        for quantize in ("none", "int8"):
            options = ExportOptions(quantize, io="int8" if quantize == "int8" else "float")
            plain = convert(pruned, options, calibration)
            sparse = _convert_with_sparsity(tf, pruned, options, calibration)
            results.append(
                {
                    "sparsity": sparsity,
                    "structure": structure,
                    "quantize": quantize,
                    "size_bytes": len(plain),
                    "sparse_size_bytes": len(sparse),
                    "gzip_bytes": len(gzip_bytes(plain)),
                    "sparse_gzip_bytes": len(gzip_bytes(sparse)),
                    "invoke_us": median_invoke_microseconds(plain),
                    "sparse_invoke_us": median_invoke_microseconds(sparse),
                    "builtin_invoke_us": median_invoke_microseconds(plain, default_delegates=False),
                    "sparse_builtin_invoke_us": median_invoke_microseconds(sparse, default_delegates=False),
                }
            )
    return results


def _convert_with_sparsity(tf, model, options, calibration):
    feature_count = model.input_shape[1]
    signature = tf.TensorSpec([1, feature_count, 1], tf.float32, name="features")
    concrete = tf.function(lambda features: model(features, training=False)).get_concrete_function(signature)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    if options.quantize == "int8":
        converter.optimizations.append(tf.lite.Optimize.DEFAULT)
        converter.representative_dataset = lambda: ([row[np.newaxis]] for row in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def export_clip_study(run_dir, out_dir):
    """Export int8 once per --calibration-clip value; return input scale and metrics of each."""
    rows = []
    for clip in CLIP_VALUES:
        summary = export_variants(run_dir, out_dir / f"clip_{clip}", [ExportOptions("int8", calibration_clip=clip)],
                                  GateOptions(100.0, 100.0))
        variant = summary.variants[0]
        rows.append(
            {
                "calibration_clip": clip,
                "input_scale": variant.model_metadata["input"]["scale"],
                "clip_low": variant.model_metadata["calibration"]["clip_low"],
                "clip_high": variant.model_metadata["calibration"]["clip_high"],
                "accuracy_change_pp": variant.comparison["accuracy_change_pp"],
                "macro_f1_change_pp": variant.comparison["macro_f1_change_pp"],
                "agreement": variant.comparison["agreement"],
                "macro_f1": variant.report["macro"]["f1"],
            }
        )
    return rows


def train(args, work):
    """Train the run the comparison uses; return its folder and a description of its data."""
    if args.run:
        return pathlib.Path(args.run), f"the run {args.run}"
    options = TrainingOptions(epochs=args.epochs, seed=0)
    if args.synthetic:
        folder = write_synthetic_dataset(work / "synthetic_data", rows_per_file=args.rows_per_file, seed=0,
                                         separation=args.separation)
        dataset = data.load_official(folder, 19, options.validation_fraction, options.seed, None)
        source = runs.DataSource("official", str(folder.resolve()))
        described = (f"SYNTHETIC 19-class data (ids_edge.synthetic, {args.rows_per_file} rows per official file, "
                     f"separation {args.separation}, seed 0): random numbers, not network traffic")
    else:
        dataset = data.load_sample()
        source = runs.DataSource("sample")
        described = "the bundled sample of 851 real CICIoMT2024 rows (Benign and ARP_Spoofing, task 2)"
    run_dir = work / "run"
    train_run(dataset, source, options, run_dir)
    return run_dir, described


def _format_time(value):
    return f"{value:.1f}" if isinstance(value, float) else f"failed: {value.splitlines()[0]}"


def render(command, described, payload, clip_rows, sparsity_rows, seconds):
    label = "SYNTHETIC data: " if "SYNTHETIC" in described else ""
    lines = [
        f"Data: {described}.",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine()}; {payload['runtime']}; Python {platform.python_version()}. Took {seconds:.0f} s.",
        "",
        variant_report.comparison_markdown(payload, title=f"{label}variants against the Keras float32 model", level=3),
        f"### {label}int8 calibration clip",
        "",
        "| --calibration-clip | clamp of standardized input | int8 input scale | macro F1 % | accuracy change (pp) | "
        "macro F1 change (pp) | same class as Keras % |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in clip_rows:
        lines.append(
            f"| {row['calibration_clip']} | [{row['clip_low']:.3f}, {row['clip_high']:.3f}] | {row['input_scale']:.5f} | "
            f"{100 * row['macro_f1']:.2f} | {row['accuracy_change_pp']:+.2f} | {row['macro_f1_change_pp']:+.2f} | "
            f"{100 * row['agreement']:.2f} |"
        )
    lines += [
        "",
        f"### {label}EXPERIMENTAL_SPARSITY encoding of pruned models",
        "",
        "Median single-threaded `invoke` time of LiteRT on this host over 2000 runs, in microseconds (not device "
        "latency): with LiteRT's default XNNPACK delegate, and with the builtin kernels only.",
        "",
        "| pruning | mode | size (bytes) | with sparsity (bytes) | gzip | gzip with sparsity | invoke, XNNPACK | "
        "invoke with sparsity, XNNPACK | invoke, builtin | invoke with sparsity, builtin |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sparsity_rows:
        times = [_format_time(row[key]) for key in ("invoke_us", "sparse_invoke_us", "builtin_invoke_us", "sparse_builtin_invoke_us")]
        lines.append(
            f"| {row['sparsity']} {row['structure']} | {row['quantize']} | {row['size_bytes']} | {row['sparse_size_bytes']} | "
            f"{row['gzip_bytes']} | {row['sparse_gzip_bytes']} | " + " | ".join(times) + " |"
        )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, required=True, help="Work folder to write.")
    parser.add_argument("--run", help="Existing run directory; default: train one.")
    parser.add_argument("--synthetic", action="store_true", help="Train on 19-class SYNTHETIC data instead of the bundled sample.")
    parser.add_argument("--rows-per-file", type=int, default=150, help="Synthetic rows per official file name.")
    parser.add_argument("--separation", type=float, default=0.3, help="Synthetic class separation (smaller: more overlap).")
    parser.add_argument("--epochs", type=int, default=10, help="Training epochs when a run is trained.")
    parser.add_argument("--fine-tune-epochs", type=int, default=3, help="Fine-tuning epochs of pruning and QAT.")
    args = parser.parse_args()

    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    run_dir, described = train(args, args.out)
    run = runs.load_run(run_dir)
    dataset = run.load_dataset()

    summary = export_variants(run_dir, args.out / "variants", variant_list(args.fine_tune_epochs), GateOptions())
    payload = summary_payload(summary, run)
    clip_rows = export_clip_study(run_dir, args.out / "clip")
    sparsity_rows = measure_sparsity_encoding(run, dataset, args.fine_tune_epochs)
    (args.out / "sparsity.json").write_text(json.dumps(sparsity_rows, indent=2) + "\n")
    (args.out / "clip.json").write_text(json.dumps(clip_rows, indent=2) + "\n")

    command = "python benchmarks/compare_variants.py " + " ".join(sys.argv[1:])
    label = "SYNTHETIC data: " if args.synthetic else "Bundled real sample: "
    variant_report.plot_size_against_macro_f1(
        payload, args.out / "size_vs_macro_f1.png", title=f"{label}variant size against macro F1 (x: rejected by the gate)"
    )
    report = render(command, described, payload, clip_rows, sparsity_rows, time.monotonic() - started)
    (args.out / "report.md").write_text(report, encoding="utf-8")
    print(report)
    print(f"{len(summary.accepted)} of {len(summary.variants)} variants passed the default gate; folder: {args.out}")


if __name__ == "__main__":
    main()
