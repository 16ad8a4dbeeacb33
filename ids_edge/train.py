"""Train the CNN on a dataset and write a run directory."""

import csv
import dataclasses
import logging
import time

import numpy as np

from ids_edge import evaluate, runs
from ids_edge._tf import import_tensorflow
from ids_edge.errors import IdsEdgeError
from ids_edge.metadata import write_json_atomic
from ids_edge.model import MIN_FEATURES, build_model
from ids_edge.outputs import output_dir
from ids_edge.preprocess import Preprocessor
from ids_edge.synthetic import data_label

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
    """Result of ``train_run``: the run folder, the epochs run and the Keras test metrics."""

    run_dir: object
    epochs_run: int
    best_epoch: int
    test_report: dict
    seconds: float


def as_model_input(features):
    """Reshape standardized features of shape (rows, features) to the model's (rows, features, 1)."""
    return np.asarray(features, dtype=np.float32)[..., np.newaxis]


def predict_classes(model, inputs, batch_size=1024):
    """Return the Keras model's class indices for model inputs of shape (rows, features, 1)."""
    probabilities = model.predict(inputs, batch_size=batch_size, verbose=0)
    return np.argmax(probabilities, axis=1)


def set_seed(seed):
    """Seed Python, numpy and TensorFlow, and make TensorFlow's kernels deterministic."""
    tf, keras = import_tensorflow()
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def train_run(dataset, source, options, out_dir, progress=False):
    """Train the CNN with ``options`` and write the run directory ``out_dir``.

    Args:
        dataset: The loaded :class:`ids_edge.data.Dataset`.
        source: The :class:`ids_edge.runs.DataSource` it came from.
        options: :class:`ids_edge.model.TrainingOptions`.
        out_dir: Run directory to write; replaced only when training succeeds.
        progress: Show Keras' per-epoch progress lines.

    Returns:
        A :class:`TrainResult`.

    Raises:
        IdsEdgeError: Invalid options, or too few features or rows to train on.
    """
    _check_options(options, dataset)
    tf, keras = import_tensorflow()
    started = time.monotonic()
    set_seed(options.seed)

    preprocessor = Preprocessor.fit(dataset.train.features, dataset.feature_names)
    class_count = len(dataset.class_names)
    x_train = as_model_input(preprocessor.transform(dataset.train.features))
    x_validation = as_model_input(preprocessor.transform(dataset.validation.features))
    x_test = as_model_input(preprocessor.transform(dataset.test.features))
    y_train = keras.utils.to_categorical(dataset.train.labels, class_count)
    y_validation = keras.utils.to_categorical(dataset.validation.labels, class_count)

    model = build_model(len(dataset.feature_names), class_count, options.learning_rate)
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=options.patience, restore_best_weights=True
    )
    logger.info("Training on %d rows, validating on %d, %d classes", len(x_train), len(x_validation), class_count)
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_validation, y_validation),
        epochs=options.epochs,
        batch_size=options.batch_size,
        callbacks=[early_stopping, keras.callbacks.TerminateOnNaN()],
        shuffle=True,
        verbose=2 if progress else 0,
    )
    if not np.isfinite(history.history["loss"]).all():
        raise IdsEdgeError(
            f"Training diverged: the loss became NaN or inf in epoch {len(history.history['loss'])}, so no run was "
            f"written. Lower --learning-rate (now {options.learning_rate}) and check the data for extreme values."
        )
    epochs_run = len(history.history["loss"])
    best_epoch = int(np.argmin(history.history["val_loss"])) + 1

    predictions = predict_classes(model, x_test)
    report = evaluate.classification_report(dataset.test.labels, predictions, dataset.class_names)

    with output_dir(out_dir, marker="run.json") as folder:
        model.save(folder / "model.keras")
        write_json_atomic(folder / "preprocessing.json", preprocessor.to_dict())
        _write_history(folder, history.history)
        (folder / "evaluation").mkdir()
        evaluate.write_evaluation(
            folder / "evaluation", "keras", report, f"Keras float32 model, test split{data_label(dataset.report)}"
        )
        write_json_atomic(
            folder / "run.json",
            {
                "format": runs.RUN_FORMAT,
                "format_version": runs.RUN_FORMAT_VERSION,
                "task": dataset.task,
                "schema": dataset.schema,
                "class_names": dataset.class_names,
                "feature_names": dataset.feature_names,
                "data_source": dataclasses.asdict(source),
                "data_report": dataset.report,
                "synthetic_data": bool(dataset.report.get("synthetic")),
                "data_fingerprint": runs.dataset_fingerprint(dataset),
                "training_options": dataclasses.asdict(options),
                "epochs_run": epochs_run,
                "best_epoch": best_epoch,
                "versions": runs.package_versions(),
            },
        )

    seconds = time.monotonic() - started
    logger.info("Trained %d epochs in %.1f s", epochs_run, seconds)
    return TrainResult(out_dir, epochs_run, best_epoch, report, seconds)


def _write_history(folder, history):
    write_json_atomic(folder / "history.json", {key: [float(v) for v in values] for key, values in history.items()})
    keys = sorted(history)
    with open(folder / "history.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *keys])
        for epoch in range(len(history[keys[0]])):
            writer.writerow([epoch + 1, *(f"{history[key][epoch]:.6g}" for key in keys)])


def _check_options(options, dataset):
    options.validate()
    if len(dataset.feature_names) < MIN_FEATURES:
        raise IdsEdgeError(
            f"The data has {len(dataset.feature_names)} feature columns, but the CNN needs at least "
            f"{MIN_FEATURES} (two convolutions and two poolings). Add feature columns."
        )
