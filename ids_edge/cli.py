"""The ``ids-edge`` command line: thin click commands over the library functions."""

import logging
import pathlib
import signal
import sys

import click

from ids_edge.choices import IO_TYPES, QUANTIZE_MODES, TARGETS, TASKS
from ids_edge.compress import PRUNE_STRUCTURES
from ids_edge.errors import IdsEdgeError

logger = logging.getLogger("ids_edge")

TASK_CHOICE = click.Choice([str(task) for task in TASKS])
PATH = click.Path(path_type=pathlib.Path)


class IdsEdgeGroup(click.Group):
    """A click group that prints user errors as one ``Error: ...`` line with their exit code.

    Covers :class:`IdsEdgeError` and click's usage errors in a command's options (exit code 2).
    """

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except IdsEdgeError as error:
            click.echo(f"Error: {error}", err=True)
            ctx.exit(error.exit_code)
        except click.UsageError as error:
            command = f"ids-edge {error.ctx.info_name}" if error.ctx is not None and error.ctx is not ctx else "ids-edge"
            click.echo(f"Error: {error.format_message()} Run '{command} --help' for the options.", err=True)
            ctx.exit(error.exit_code)


@click.group(cls=IdsEdgeGroup)
@click.version_option(package_name="ids-edge")
@click.option("-v", "--verbose", count=True, help="Log progress (-v) or every step (-vv) to stderr.")
def main(verbose):
    """Train, compress, export and benchmark CICIoMT2024 intrusion detectors for edge gateways."""
    # SIGTERM becomes SystemExit, so output folders being written are cleaned up as on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    levels = {0: logging.WARNING, 1: logging.INFO}
    level = levels.get(verbose, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


@main.command()
@click.option("--data", "data_dir", type=PATH, help="CICIoMT2024 folder (train/ and test/, or the CSV files). Default: the bundled sample.")
@click.option("--task", type=TASK_CHOICE, help="Number of classes. Default: 19 with --data, 2 for the bundled sample.")
@click.option("--label-column", help="Generic mode: read any CSV files, taking the class from this column.")
@click.option("--test-fraction", type=float, help="Generic mode without train/ and test/ folders: test share, stratified. Default: 0.2.")
@click.option("--out", "out_dir", type=PATH, required=True, help="Run directory to write.")
@click.option("--epochs", type=int, default=10, show_default=True, help="Maximum training epochs.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Rows per training step.")
@click.option("--learning-rate", type=float, default=0.001, show_default=True, help="Adam learning rate.")
@click.option("--patience", type=int, default=3, show_default=True, help="Epochs without a lower validation loss before early stopping.")
@click.option("--validation-fraction", type=float, default=0.2, show_default=True, help="Share of each training class held out for validation.")
@click.option("--max-rows-per-class", type=int, help="Keep at most this many random rows per class in each split.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of data splits, initial weights and shuffling.")
def train(data_dir, task, label_column, test_fraction, out_dir, epochs, batch_size, learning_rate, patience,
          validation_fraction, max_rows_per_class, seed):
    """Train the 1D-CNN and write a run directory with its test metrics."""
    from ids_edge import data, evaluate, runs, synthetic
    from ids_edge.model import TrainingOptions
    from ids_edge.outputs import check_output_dir
    from ids_edge.train import train_run

    options = TrainingOptions(epochs, batch_size, learning_rate, patience, validation_fraction, seed, max_rows_per_class)
    options.validate()
    check_output_dir(out_dir, marker="run.json")
    source, task = runs.choose_data_source(data_dir, None if task is None else int(task), label_column, test_fraction)

    if source.kind == "sample":
        click.echo("No --data given: training on the bundled sample of 851 real CICIoMT2024 rows (Benign and ARP_Spoofing only).")
    dataset = source.load(task, validation_fraction, seed, max_rows_per_class)

    for line in data.describe_report(dataset.report):
        click.echo(line)
    result = train_run(dataset, source, options, out_dir, progress=logger.level <= logging.INFO)
    epochs = "epoch" if result.epochs_run == 1 else "epochs"
    click.echo(f"Trained {result.epochs_run} {epochs} (best: epoch {result.best_epoch}) in {result.seconds:.1f} s.")
    click.echo(evaluate.format_summary(result.test_report, "Keras float32" + synthetic.data_label(dataset.report)))
    click.echo(f"Run directory: {out_dir}")


@main.command()
@click.argument("run_dir", type=PATH)
@click.option("--quantize", type=click.Choice(QUANTIZE_MODES), multiple=True, default=["int8"], show_default=True,
              help="Quantization mode; repeat it to export several variants into one folder.")
@click.option("--io", type=click.Choice(IO_TYPES), multiple=True,
              help="Input/output tensor type of the int8 variants; repeat it for both. Default: int8. "
                   "With float, sanitize and standardize are built into the graph.")
@click.option("--all-variants", is_flag=True, help="Export every quantization mode, and int8 with both --io types.")
@click.option("--representative-size", type=int, default=1000, show_default=True, help="Training rows that calibrate int8 ranges, equal per class.")
@click.option("--calibration-clip", type=float, default=0.001, show_default=True,
              help="Fraction of the standardized calibration values cut at each end before int8 ranges are set (0: full range).")
@click.option("--prune", type=float, help="Target sparsity (fraction of zero weights, between 0 and 1) of magnitude pruning before conversion.")
@click.option("--prune-structure", type=click.Choice(PRUNE_STRUCTURES), default="unstructured", show_default=True,
              help="2:4 zeroes 2 of every 4 consecutive weights of the Dense layers, so they are at exactly 0.5 sparsity "
                   "whatever --prune is; the Conv1D layers are pruned unstructured to --prune. Such variants are named "
                   "pruned50_2of4 for --prune 0.5 and pruned2of4_convNN otherwise. Needs --prune.")
@click.option("--sparse-encoding", is_flag=True,
              help="Store the pruned weights of the float32 (--quantize none) variant in TFLite's sparse format; needs --prune.")
@click.option("--qat", is_flag=True, help="Also export each int8 variant after quantization-aware fine-tuning, next to its post-training version.")
@click.option("--fine-tune-epochs", type=int, default=3, show_default=True, help="Fine-tuning epochs of pruning and QAT.")
@click.option("--fine-tune-learning-rate", type=float, default=0.0005, show_default=True, help="Adam learning rate of pruning and QAT fine-tuning.")
@click.option("--max-accuracy-drop", type=float, default=1.0, show_default=True, help="Largest accepted accuracy drop against Keras float32, in percentage points.")
@click.option("--max-macro-f1-drop", type=float, default=2.0, show_default=True, help="Largest accepted macro-F1 drop against Keras float32, in percentage points.")
@click.option("--max-class-f1-drop", type=float,
              help="Largest accepted F1 drop of any single class against Keras float32, in percentage points. Default: not checked.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of calibration sampling and fine-tuning.")
@click.option("--data", "data_dir", type=PATH, help="New location of the run's data folder, if it moved.")
@click.option("--out", "out_dir", type=PATH, required=True, help="Folder for the .tflite models and their reports.")
def export(run_dir, quantize, io, all_variants, representative_size, calibration_clip, prune, prune_structure, sparse_encoding, qat,
           fine_tune_epochs, fine_tune_learning_rate, max_accuracy_drop, max_macro_f1_drop, max_class_f1_drop, seed, data_dir,
           out_dir):
    """Export RUN_DIR as .tflite variants, evaluate them in the TFLite runtime and gate their accuracy loss."""
    from click.core import ParameterSource

    from ids_edge import compress, evaluate
    from ids_edge.errors import GateError
    from ids_edge.export import GateOptions, export_variants, gate_advice, variant_options

    context = click.get_current_context()
    given = {name: context.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)
             for name in ("quantize", "fine_tune_epochs", "fine_tune_learning_rate")}
    for name in ("fine_tune_epochs", "fine_tune_learning_rate"):
        option = "--" + name.replace("_", "-")
        if given[name] and prune is None and not qat:
            raise IdsEdgeError(
                f"{option} sets the fine-tuning of pruning and QAT, but neither --prune nor --qat is given. "
                f"Add --prune or --qat, or drop {option}."
            )
    if all_variants and not given["quantize"]:
        quantize = ()
    variants = variant_options(
        quantize, io, all_variants, qat, representative_size=representative_size, calibration_clip=calibration_clip,
        prune=prune, prune_structure=prune_structure, sparse_encoding=sparse_encoding, fine_tune_epochs=fine_tune_epochs,
        fine_tune_learning_rate=fine_tune_learning_rate, seed=seed,
    )
    gate = GateOptions(max_accuracy_drop, max_macro_f1_drop, max_class_f1_drop)
    summary = export_variants(run_dir, out_dir, variants, gate, data_dir)

    label = summary.data_label
    click.echo(evaluate.format_summary(summary.keras_report, "Keras float32" + label))
    for variant in summary.variants:
        change = variant.comparison
        status = f"wrote {variant.model_path}" if variant.accepted else "rejected, not written"
        click.echo(f"{variant.name}: {variant.size_bytes} bytes ({variant.gzip_bytes} gzip-compressed), {status}")
        click.echo("  " + evaluate.format_summary(variant.report, f"TFLite {variant.name} ({summary.runtime}){label}"))
        click.echo(
            f"  Change against Keras{label}: accuracy {change['accuracy_change_pp']:+.2f} pp, macro F1 "
            f"{change['macro_f1_change_pp']:+.2f} pp, same class on {100 * change['agreement']:.2f}% of rows"
        )
        calibration = variant.model_metadata.get("calibration")
        if calibration:
            click.echo(f"  Calibration: {calibration['rows']} training rows (--representative-size {calibration['requested_rows']})")
        if variant.sparsity:
            layers = ", ".join(f"{name} {entry['sparsity']:.3f}" for name, entry in variant.sparsity.items())
            click.echo(f"  Sparsity per layer: {layers}; overall {compress.overall_sparsity(variant.sparsity):.3f}")
    for notice in summary.notices:
        click.echo(f"Note: {notice}")
    click.echo(f"Comparison: {out_dir / 'comparison.md'}")
    if summary.rejected:
        raise GateError(
            f"The accuracy gate rejected {len(summary.rejected)} variant(s), which were not written: {summary.gate_message()}. "
            f"To export them, {gate_advice(summary.rejected)}."
        )


@main.command()
@click.argument("model_path", type=PATH)
@click.option("--json", "as_json", is_flag=True, help="Print the metadata, operators and tensors as JSON.")
def inspect(model_path, as_json):
    """Print the metadata embedded in MODEL_PATH (.tflite), its operators and tensor types."""
    import json

    from ids_edge.tflite_file import format_inspection, inspect_model

    info = inspect_model(model_path)
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    for line in format_inspection(info):
        click.echo(line)


@main.command()
@click.argument("model_path", type=PATH)
@click.option("--out", "out_dir", type=PATH, required=True, help="Folder for the generated C files.")
@click.option("--name", help="Prefix of the C identifiers and file names. Default: from the model's file name.")
def firmware(model_path, out_dir, name):
    """Generate C sources that embed MODEL_PATH in TFLite Micro gateway firmware."""
    from firmware_bridge import generate_firmware

    result = generate_firmware(model_path, out_dir, name)
    for line in result.summary_lines():
        click.echo(line)


@main.command()
@click.argument("model_path", type=PATH)
@click.option("--target", type=click.Choice(TARGETS), required=True, help="Device the bundle is for.")
@click.option("--out", "out_dir", type=PATH, required=True, help="Folder to write the bundle to.")
@click.option("--data", "data_dir", type=PATH, help="Run data folder, if it moved since training.")
def bundle(model_path, target, out_dir, data_dir):
    """Build a self-contained folder that benchmarks MODEL_PATH on a device."""
    from ids_edge.bundle import bundle_from_cli

    for line in bundle_from_cli(model_path, target, out_dir, data_dir):
        click.echo(line)


@main.command()
@click.argument("model_paths", nargs=-1, type=PATH)
@click.option("--out", "out_dir", type=PATH, required=True, help="Report folder to write (or, with --import alone, to update).")
@click.option("--run", "run_dir", type=PATH, help="Run directory of the models. Default: \"run_dir\" in the export.json beside them.")
@click.option("--data", "data_dir", type=PATH, help="New location of the run's data folder, if it moved.")
@click.option("--target", default="host", show_default=True, help="host: this CPU. coral: also the Coral Edge TPU readiness of each model.")
@click.option("--runs", "timed_runs", type=int, default=1000, show_default=True, help="Timed invoke() calls per TFLite configuration.")
@click.option("--warmup", type=int, default=20, show_default=True, help="Warm-up invoke() calls before the timed ones, reported apart.")
@click.option("--threads", type=int, multiple=True, help="Interpreter CPU threads; repeat the option to compare. Default: 1.")
@click.option("--batch-size", "batch_sizes", type=int, multiple=True, help="Flows per invoke(); repeat to compare. Default: 1. Sizes above 1 need a resizable batch dimension.")
@click.option("--baseline-runs", type=int, default=30, show_default=True, help="Timed predict calls per Keras and RandomForest mode.")
@click.option("--baseline-batch-size", type=int, default=256, show_default=True, help="Rows of the batch predict call of Keras and the RandomForest.")
@click.option("--forest-trees", type=int, default=100, show_default=True, help="Trees of the RandomForest baseline.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the RandomForest.")
@click.option("--no-keras", is_flag=True, help="Skip the float Keras model.")
@click.option("--no-forest", is_flag=True, help="Skip the RandomForest baseline.")
@click.option("--no-memory", is_flag=True, help="Skip the memory probes (one Python process per variant).")
@click.option("--runtime", help="TFLite runtime: ai-edge-litert, tflite-runtime or tensorflow. Default: the first that loads.")
@click.option("--import", "imports", type=PATH, multiple=True, help="Device result JSON from runner.py; repeat for several.")
@click.option("--allow-other-run", is_flag=True,
              help="Accept a --run other than the one in a model's export.json; the report marks those models.")
def bench(model_paths, out_dir, run_dir, data_dir, target, timed_runs, warmup, threads, batch_sizes, baseline_runs,
          baseline_batch_size, forest_trees, seed, no_keras, no_forest, no_memory, runtime, imports, allow_other_run):
    """Benchmark MODEL_PATHS on this CPU beside the float Keras model and a RandomForest."""
    from ids_edge import bench as bench_module

    if not model_paths and imports:
        result = bench_module.import_device_results(out_dir, imports)
    else:
        options = bench_module.BenchOptions(
            warmup=warmup, runs=timed_runs, threads=tuple(threads) or (1,), batch_sizes=tuple(batch_sizes) or (1,),
            keras=not no_keras, forest=not no_forest, baseline_runs=baseline_runs, baseline_batch_size=baseline_batch_size,
            forest_trees=forest_trees, seed=seed, memory=not no_memory, target=target, runtime=runtime,
            progress=sys.stderr.isatty() or logger.level <= logging.INFO, allow_other_run=allow_other_run,
        )
        result = bench_module.bench_models(model_paths, out_dir, options, run_dir, data_dir, imports)
    for line in result.summary_lines():
        click.echo(line)


@main.command()
@click.argument("model_paths", nargs=-1, required=True, type=PATH)
@click.option("--out", "out_dir", type=PATH, help="Folder for coral.json and coral.md. Default: print the report only.")
@click.option("--no-tools", is_flag=True, help="Do not run edgetpu_compiler or the libedgetpu delegate, even when installed.")
def coral(model_paths, out_dir, no_tools):
    """Check whether MODEL_PATHS can run on a Coral Edge TPU, without the hardware."""
    from ids_edge import coral as coral_module

    for report in coral_module.write_readiness(model_paths, out_dir, use_tools=not no_tools):
        for line in coral_module.format_markdown(report):
            click.echo(line)


if __name__ == "__main__":
    main()
