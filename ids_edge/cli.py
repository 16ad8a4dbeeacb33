"""The ``ids-edge`` command line: thin click commands over the library functions."""

import logging
import pathlib
import sys

import click

from ids_edge.choices import IO_TYPES, QUANTIZE_MODES, TARGETS, TASKS
from ids_edge.errors import IdsEdgeError

logger = logging.getLogger("ids_edge")

TASK_CHOICE = click.Choice([str(task) for task in TASKS])
PATH = click.Path(path_type=pathlib.Path)


class IdsEdgeGroup(click.Group):
    """A click group that turns :class:`IdsEdgeError` into ``Error: ...`` and its exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except IdsEdgeError as error:
            click.echo(f"Error: {error}", err=True)
            ctx.exit(error.exit_code)


@click.group(cls=IdsEdgeGroup)
@click.version_option(package_name="ids-edge")
@click.option("-v", "--verbose", count=True, help="Log progress (-v) or every step (-vv) to stderr.")
def main(verbose):
    """Train, compress, export and benchmark CICIoMT2024 intrusion detectors for edge gateways."""
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
@click.option("--test-fraction", type=float, default=0.2, show_default=True, help="Generic mode without train/ and test/ folders: test share, stratified.")
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
    from ids_edge import data, evaluate, runs
    from ids_edge.model import TrainingOptions
    from ids_edge.train import train_run

    if max_rows_per_class is not None and max_rows_per_class < 2:
        raise IdsEdgeError(f"Invalid --max-rows-per-class {max_rows_per_class}: use 2 or more.")
    options = TrainingOptions(epochs, batch_size, learning_rate, patience, validation_fraction, seed, max_rows_per_class)

    if label_column is not None:
        if data_dir is None:
            raise IdsEdgeError("--label-column needs --data with the folder of your CSV files.")
        if task is not None:
            raise IdsEdgeError("--task applies to CICIoMT2024 files; with --label-column the classes come from the column.")
        source = runs.DataSource("generic", str(data_dir.resolve()), label_column, test_fraction)
        dataset = data.load_generic(data_dir, label_column, validation_fraction, test_fraction, seed, max_rows_per_class)
    elif data_dir is None:
        task = int(task or 2)
        if task != 2:
            raise IdsEdgeError(
                f"The bundled sample holds only Benign and ARP_Spoofing rows, so --task {task} cannot be trained on it. "
                "Use --task 2, or pass the full dataset with --data."
            )
        click.echo("No --data given: training on the bundled sample of 851 real CICIoMT2024 rows (Benign and ARP_Spoofing only).")
        source = runs.DataSource("sample")
        dataset = data.load_sample(task, validation_fraction, seed)
    else:
        task = int(task or 19)
        source = runs.DataSource("official", str(data_dir.resolve()))
        dataset = data.load_official(data_dir, task, validation_fraction, seed, max_rows_per_class)

    for line in data.describe_report(dataset.report):
        click.echo(line)
    result = train_run(dataset, source, options, out_dir, progress=logger.level <= logging.INFO)
    click.echo(f"Trained {result.epochs_run} epochs (best: epoch {result.best_epoch}) in {result.seconds:.1f} s.")
    click.echo(evaluate.format_summary(result.test_report, "Keras float32"))
    click.echo(f"Run directory: {out_dir}")


@main.command()
@click.argument("run_dir", type=PATH)
@click.option("--quantize", type=click.Choice(QUANTIZE_MODES), default="int8", show_default=True, help="Quantization mode.")
@click.option("--io", type=click.Choice(IO_TYPES), help="Input/output tensor type of an int8 model. Default: int8.")
@click.option("--representative-size", type=int, default=1000, show_default=True, help="Training rows that calibrate int8 ranges, equal per class.")
@click.option("--data", "data_dir", type=PATH, help="New location of the run's data folder, if it moved.")
@click.option("--out", "out_dir", type=PATH, required=True, help="Folder for the .tflite model and its reports.")
def export(run_dir, quantize, io, representative_size, data_dir, out_dir):
    """Export RUN_DIR as a .tflite model and evaluate it in the TFLite runtime."""
    from ids_edge import evaluate
    from ids_edge.export import ExportOptions, export_run

    options = ExportOptions(quantize=quantize, io=io, representative_size=representative_size)
    result = export_run(run_dir, out_dir, options, data_dir)
    click.echo(f"Wrote {result.model_path} ({result.size_bytes} bytes)")
    click.echo(evaluate.format_summary(result.keras_report, "Keras float32"))
    click.echo(evaluate.format_summary(result.report, f"TFLite {quantize} ({result.runtime})"))
    change = result.comparison
    click.echo(
        f"Change against Keras: accuracy {change['accuracy_change_pp']:+.2f} pp, macro F1 "
        f"{change['macro_f1_change_pp']:+.2f} pp, same class on {100 * change['agreement']:.2f}% of rows"
    )


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


if __name__ == "__main__":
    main()
