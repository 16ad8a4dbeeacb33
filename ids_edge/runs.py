"""Run directories: what ``ids-edge train`` writes and ``export``, ``bench`` and ``firmware`` read.

A run directory contains ``run.json`` (format, task, schema, class and feature names, data source,
options, data report, versions), ``preprocessing.json``, ``model.keras`` (tf_keras), the training
history as CSV and JSON, and ``evaluation/`` with the Keras model's test metrics.
"""

import dataclasses
import hashlib
import json
import pathlib
import platform

import numpy as np

from ids_edge import __version__, data
from ids_edge.errors import IdsEdgeError
from ids_edge.preprocess import Preprocessor

RUN_FORMAT = "ids-edge-run"
RUN_FORMAT_VERSION = 1


@dataclasses.dataclass
class DataSource:
    """Origin of a run's data, so that ``export`` can load the same splits again."""

    kind: str  # "sample", "official" or "generic"
    path: str | None = None
    label_column: str | None = None
    test_fraction: float = 0.2

    def load(self, task, validation_fraction, seed, max_rows_per_class, path_override=None):
        """Load the dataset this source describes; ``path_override`` replaces a moved folder.

        ``task`` is ignored in generic mode, where the label column sets the classes.
        """
        path = path_override or self.path
        if self.kind == "sample":
            return data.load_sample(task, validation_fraction=validation_fraction, seed=seed)
        if self.kind == "official":
            return data.load_official(path, task, validation_fraction, seed, max_rows_per_class)
        return data.load_generic(path, self.label_column, validation_fraction, self.test_fraction, seed, max_rows_per_class)


def choose_data_source(data_dir=None, task=None, label_column=None, test_fraction=None):
    """Pick the data source and task from the ``train`` options.

    Without ``data_dir`` the bundled sample is used, for task 2 only. With ``label_column`` the
    folder is read in generic mode. Otherwise it is a CICIoMT2024 download, task 19 by default.

    Returns:
        ``(DataSource, task)``; ``task`` is None in generic mode, where the column sets the classes.

    Raises:
        IdsEdgeError: Options that do not go together.
    """
    if test_fraction is not None and label_column is None:
        raise IdsEdgeError("--test-fraction applies only with --label-column; CICIoMT2024 files bring their own test split.")

    if label_column is not None:
        if data_dir is None:
            raise IdsEdgeError("--label-column needs --data with the folder of your CSV files.")
        if task is not None:
            raise IdsEdgeError("--task applies to CICIoMT2024 files; with --label-column the classes come from the column.")
        fraction = 0.2 if test_fraction is None else test_fraction
        return DataSource("generic", str(pathlib.Path(data_dir).resolve()), label_column, fraction), None

    if data_dir is None:
        task = 2 if task is None else task
        if task != 2:
            raise IdsEdgeError(
                f"The bundled sample holds only Benign and ARP_Spoofing rows, so --task {task} cannot be trained on it. "
                "Use --task 2, or pass the full dataset with --data."
            )
        return DataSource("sample"), task

    return DataSource("official", str(pathlib.Path(data_dir).resolve())), 19 if task is None else task


def dataset_fingerprint(dataset):
    """Return a SHA-256 over every split's features and labels, to detect changed data."""
    digest = hashlib.sha256()
    for split in (dataset.train, dataset.validation, dataset.test):
        digest.update(np.ascontiguousarray(split.features, dtype=np.float64).tobytes())
        digest.update(np.ascontiguousarray(split.labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


def package_versions():
    """Return the versions of Python and of the packages that shape a model."""
    from importlib import metadata as importlib_metadata

    versions = {"python": platform.python_version(), "ids_edge": __version__}
    for package in ("tensorflow", "tf_keras", "tensorflow-model-optimization", "numpy", "ai-edge-litert"):
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            versions[package] = None
    return versions


@dataclasses.dataclass
class Run:
    """A loaded run directory."""

    path: pathlib.Path
    info: dict
    preprocessor: Preprocessor

    @property
    def class_names(self):
        return list(self.info["class_names"])

    @property
    def feature_names(self):
        return list(self.info["feature_names"])

    @property
    def task(self):
        return self.info["task"]

    @property
    def data_label(self):
        """The note that every report of this run carries: "" for real data."""
        from ids_edge.synthetic import data_label

        return data_label({"synthetic": self.info.get("synthetic_data", False)})

    def load_model(self):
        """Load the trained tf_keras model and check its input and output sizes against run.json.

        Raises:
            IdsEdgeError: The model cannot be loaded, or its feature or class count differs from
                run.json's, as when a model.keras of another run was copied in.
        """
        from ids_edge._tf import import_tensorflow

        _, keras = import_tensorflow()
        model_path = self.path / "model.keras"
        try:
            model = keras.models.load_model(model_path, compile=False)
        except (OSError, ValueError) as error:
            raise IdsEdgeError(f"Could not load the model {model_path}: {error}. Train the run again.") from None

        outputs = model.output_shape[-1]
        features = model.input_shape[1] if len(model.input_shape) > 1 else None
        checks = (
            (outputs, len(self.class_names), "outputs", "classes"),
            (features, len(self.feature_names), "input features", "features"),
        )
        for found, expected, model_unit, run_unit in checks:
            if found != expected:
                raise IdsEdgeError(
                    f"The model {model_path} has {found} {model_unit}, but {self.path / 'run.json'} lists {expected} "
                    f"{run_unit}. The model.keras belongs to another run; train the run again with 'ids-edge train'."
                )
        return model

    def load_dataset(self, data_path=None):
        """Load the run's data splits again and check that they are the ones it was trained on.

        Raises:
            IdsEdgeError: The data is no longer where it was, or it has changed since training.
        """
        source = DataSource(**self.info["data_source"])
        options = self.info["training_options"]
        if source.kind != "sample" and data_path is None and not pathlib.Path(source.path).is_dir():
            raise IdsEdgeError(
                f"The run's data folder {source.path} is not found. Pass its new location with --data."
            )
        dataset = source.load(
            self.task, options["validation_fraction"], options["seed"], options["max_rows_per_class"], data_path
        )
        if dataset_fingerprint(dataset) != self.info["data_fingerprint"]:
            raise IdsEdgeError(
                f"The data at {data_path or source.path or 'the bundled sample'} differs from the data run "
                f"{self.path} was trained on (fingerprint mismatch). Point --data at the original files or train again."
            )
        return dataset


def load_run(run_dir):
    """Read and check a run directory written by ``ids-edge train``.

    Raises:
        IdsEdgeError: The folder is missing, is not a run directory, or has a newer format.
    """
    run_dir = pathlib.Path(run_dir)
    info_path = run_dir / "run.json"
    if not run_dir.exists():
        raise IdsEdgeError(f"Run directory {run_dir} not found. Create one with 'ids-edge train --out {run_dir}'.")
    if not info_path.is_file():
        raise IdsEdgeError(f"{run_dir} is not an ids-edge run directory (no run.json). Create one with 'ids-edge train'.")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        preprocessing = json.loads((run_dir / "preprocessing.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IdsEdgeError(f"Could not read run directory {run_dir}: {error}. Train the run again.") from None

    if info.get("format") != RUN_FORMAT:
        raise IdsEdgeError(
            f"{info_path} is not an ids-edge run file (format {info.get('format')!r}). "
            "Train the run again with 'ids-edge train'."
        )
    version = info.get("format_version")
    if not isinstance(version, int) or version > RUN_FORMAT_VERSION:
        raise IdsEdgeError(
            f"{run_dir} has run format version {version!r}, but this ids-edge reads versions up to "
            f"{RUN_FORMAT_VERSION}. Upgrade ids-edge or train the run again."
        )
    return Run(run_dir, info, _check_preprocessing(preprocessing, info, run_dir))


def _check_preprocessing(preprocessing, info, run_dir):
    path = run_dir / "preprocessing.json"
    expected = len(info.get("feature_names", []))
    keys = ("feature_names", "mean", "scale", "clip_min", "clip_max")
    for key in keys:
        values = preprocessing.get(key) if isinstance(preprocessing, dict) else None
        if not isinstance(values, list) or len(values) != expected:
            raise IdsEdgeError(
                f"{path}: {key!r} must be a list of {expected} values, one per feature in run.json. "
                "The file was edited or damaged; train the run again."
            )
    if preprocessing["feature_names"] != info["feature_names"]:
        raise IdsEdgeError(f"{path}: the feature names differ from run.json's. Train the run again.")
    try:
        return Preprocessor.from_dict(preprocessing)
    except (TypeError, ValueError):
        raise IdsEdgeError(f"{path} contains values that are not numbers. Train the run again.") from None
