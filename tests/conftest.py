"""Shared fixtures: one small run trained on the bundled real rows, and its exports."""

import pathlib

import pytest

import ids_edge  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from ids_edge import data, runs
from ids_edge.export import ExportOptions, export_run
from ids_edge.model import TrainingOptions
from ids_edge.train import train_run

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "ciciomt2024"


@pytest.fixture(scope="session")
def sample_dataset():
    return data.load_sample()


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory, sample_dataset):
    """A run directory trained on the bundled real CICIoMT2024 rows (2 classes, v39 schema)."""
    run_dir = tmp_path_factory.mktemp("runs") / "sample"
    train_run(sample_dataset, runs.DataSource("sample"), TrainingOptions(epochs=10, seed=0), run_dir)
    return run_dir


@pytest.fixture(scope="session")
def int8_export(tmp_path_factory, sample_run):
    out = tmp_path_factory.mktemp("exports") / "int8"
    return export_run(sample_run, out, ExportOptions(quantize="int8"))


@pytest.fixture(scope="session")
def int8_model(int8_export):
    """A full-integer .tflite (int8 input and output, batch 1) with its metadata JSON beside it."""
    return int8_export.model_path


@pytest.fixture(scope="session")
def float_model(tmp_path_factory, sample_run):
    """A float32 .tflite export of the same run, with its metadata JSON."""
    out = tmp_path_factory.mktemp("exports") / "float"
    return export_run(sample_run, out, ExportOptions(quantize="none")).model_path


@pytest.fixture(scope="session")
def sample_test_split(sample_dataset):
    """Raw real test features (float64, may contain inf), class indices and class names."""
    return sample_dataset.test.features, sample_dataset.test.labels, sample_dataset.class_names
