"""Tests of ids-edge bundle folders, built from the real exported models and test rows."""

import json
import os
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pandas as pd
import pytest

import ids_edge  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from ids_edge.outputs import MANIFEST_FILE
from ids_edge import bundle, runner
from ids_edge.data import SAMPLE_DATA_DIR
from ids_edge.errors import IdsEdgeError
from ids_edge.metadata import read_metadata

EXPECTED_FILES = ["README.txt", "bundle.json", "model.json", "model.tflite", "rows.csv", "run.sh", "runner.py"]


@pytest.fixture(scope="module")
def rpi_bundle(tmp_path_factory, int8_model):
    out = tmp_path_factory.mktemp("bundles") / "rpi"
    return bundle.make_bundle(int8_model, "rpi", out, archive=True)


def sample_frame(int8_model, sample_test_split):
    features, labels, class_names = sample_test_split
    frame = pd.DataFrame(features, columns=read_metadata(int8_model)["feature_names"])
    frame["label"] = [class_names[i] for i in labels]
    return frame


def test_bundle_lists_files(rpi_bundle):
    assert sorted(path.name for path in rpi_bundle.out_dir.iterdir() if path.name != MANIFEST_FILE) == EXPECTED_FILES
    assert sorted(rpi_bundle.files) == EXPECTED_FILES


def test_bundle_copies_runner_unchanged(rpi_bundle):
    assert (rpi_bundle.out_dir / "runner.py").read_bytes() == open(runner.__file__, "rb").read()


def test_bundle_rows_are_real_test_rows(rpi_bundle, int8_model, sample_test_split):
    features, labels, class_names = sample_test_split
    metadata = read_metadata(int8_model)
    rows = runner.read_rows_csv(rpi_bundle.out_dir / "rows.csv", metadata["feature_names"], class_names)
    assert rpi_bundle.rows == len(features)
    assert rows.features.tobytes() == np.asarray(features, dtype=np.float64).tobytes()
    assert rows.labels.tolist() == list(labels)


def test_bundle_readme_has_install_commands(rpi_bundle):
    readme = (rpi_bundle.out_dir / "README.txt").read_text()
    assert "pip install numpy ai-edge-litert" in readme
    assert 'pip install tflite-runtime "numpy<2"' in readme


def test_bundle_json_records_checksums(rpi_bundle):
    record = json.loads((rpi_bundle.out_dir / "bundle.json").read_text())
    assert record["target"] == "rpi"
    assert record["expected_outputs_sha256"] == rpi_bundle.expected_outputs_sha256
    assert record["files"]["runner.py"] == bundle._sha256(rpi_bundle.out_dir / "runner.py")


def test_run_script_matches_expected_outputs(rpi_bundle, tmp_path):
    environment = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path / "result.json"), IDS_EDGE_EMULATED="0")
    environment.pop("PYTHONPATH", None)
    completed = subprocess.run(
        ["sh", str(rpi_bundle.out_dir / "run.sh"), "--runs", "5", "--warmup", "1", "--device-name", "host"],
        env=environment, capture_output=True, text=True, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["outputs"]["sha256"] == rpi_bundle.expected_outputs_sha256
    assert result["rows"]["count"] == rpi_bundle.rows


def test_float_bundle_matches_expected_outputs(tmp_path, monkeypatch, float_model):
    monkeypatch.setenv(runner.EMULATION_ENV, "0")
    made = bundle.make_bundle(float_model, "rpi", tmp_path / "float")
    result, outputs = runner.run_benchmark(made.out_dir / "model.tflite", made.out_dir / "rows.csv", warmup=1, runs=3)
    assert outputs.dtype == np.float32
    assert result["outputs"]["sha256"] == made.expected_outputs_sha256


def test_bundle_archive_holds_folder(rpi_bundle):
    with tarfile.open(rpi_bundle.archive) as archive:
        names = archive.getnames()
    assert "rpi/runner.py" in names
    assert "rpi/model.tflite" in names


def test_bundle_from_data_frame(tmp_path, int8_model, sample_test_split):
    result = bundle.make_bundle(int8_model, "rpi", tmp_path / "out", sample_frame(int8_model, sample_test_split), max_rows=40)
    assert result.rows == 40
    assert len((tmp_path / "out" / "rows.csv").read_text().splitlines()) == 41


def test_bundle_from_official_file(tmp_path, int8_model):
    result = bundle.make_bundle(int8_model, "rpi", tmp_path / "out", SAMPLE_DATA_DIR / "test" / "Benign_test.pcap.csv")
    rows = runner.read_rows_csv(tmp_path / "out" / "rows.csv", read_metadata(int8_model)["feature_names"], ["Benign", "Attack"])
    assert result.rows == 157
    assert set(rows.labels.tolist()) == {0}


def test_bundle_from_csv_with_label_column(tmp_path, int8_model, sample_test_split):
    path = tmp_path / "rows.csv"
    sample_frame(int8_model, sample_test_split).rename(columns={"label": "Label"}).to_csv(path, index=False)
    result = bundle.make_bundle(int8_model, "rpi", tmp_path / "out", path)
    assert result.rows == len(sample_test_split[0])


def test_coral_without_compiler_lists_skip(tmp_path, monkeypatch, int8_model):
    monkeypatch.setattr(bundle.shutil, "which", lambda name: None)
    result = bundle.make_bundle(int8_model, "coral", tmp_path / "coral", max_rows=20)
    assert len(result.skipped) == 1
    assert "edgetpu_compiler is not on PATH" in result.skipped[0]
    assert "edgetpu_compiler is not on PATH" in (tmp_path / "coral" / "README.txt").read_text()
    assert "--delegate" not in (tmp_path / "coral" / "run.sh").read_text()


def test_coral_with_compiler_uses_delegate(tmp_path, monkeypatch, int8_model):
    # A stand-in compiler that copies the model, to test the wiring without the real tool.
    tools = tmp_path / "bin"
    tools.mkdir()
    fake = tools / "edgetpu_compiler"
    fake.write_text('#!/bin/sh\nfor last; do :; done\nname=$(basename "$last" .tflite)\ncp "$last" "$3/${name}_edgetpu.tflite"\necho compiled\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    result = bundle.make_bundle(int8_model, "coral", tmp_path / "coral", max_rows=20)
    assert result.skipped == []
    assert (tmp_path / "coral" / "model_edgetpu.tflite").is_file()
    assert (tmp_path / "coral" / "model_edgetpu.json").is_file()
    assert "--model model_edgetpu.tflite --delegate libedgetpu.so.1" in (tmp_path / "coral" / "run.sh").read_text()


def test_coral_compiler_failure_reported(tmp_path, monkeypatch, int8_model):
    tools = tmp_path / "bin"
    tools.mkdir()
    fake = tools / "edgetpu_compiler"
    fake.write_text("#!/bin/sh\necho 'Model not quantized' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(IdsEdgeError, match=r"edgetpu_compiler failed on .*\(exit status 1\): Model not quantized"):
        bundle.make_bundle(int8_model, "coral", tmp_path / "coral", max_rows=20)
    assert not (tmp_path / "coral").exists()


# Invalid input.


def test_unknown_target(tmp_path, int8_model):
    with pytest.raises(IdsEdgeError, match=r"Invalid target 'esp32': choose one of rpi, coral"):
        bundle.make_bundle(int8_model, "esp32", tmp_path / "out")


def test_missing_model(tmp_path):
    with pytest.raises(IdsEdgeError, match=r"Model file .*absent.tflite not found"):
        bundle.make_bundle(tmp_path / "absent.tflite", "rpi", tmp_path / "out")


def test_missing_metadata(tmp_path, int8_model):
    shutil.copy(int8_model, tmp_path / "lonely.tflite")
    with pytest.raises(IdsEdgeError, match=r"Metadata file .*lonely.json not found"):
        bundle.make_bundle(tmp_path / "lonely.tflite", "rpi", tmp_path / "out")


def test_coral_rejects_float_model(tmp_path, float_model):
    with pytest.raises(IdsEdgeError, match=r"Target coral needs a full-integer model with int8 input and output"):
        bundle.make_bundle(float_model, "coral", tmp_path / "out")


def test_rows_missing_column_named(tmp_path, int8_model, sample_test_split):
    frame = sample_frame(int8_model, sample_test_split).drop(columns=["Rate", "IAT"])
    with pytest.raises(IdsEdgeError, match=r"Rows data frame have no column 'Rate', which the model needs \(2 of its 39"):
        bundle.make_bundle(int8_model, "rpi", tmp_path / "out", frame)


def test_rows_without_label_column(tmp_path, int8_model, sample_test_split):
    frame = sample_frame(int8_model, sample_test_split).drop(columns=["label"])
    with pytest.raises(IdsEdgeError, match=r"have no label column \('label' or 'Label'\)"):
        bundle.make_bundle(int8_model, "rpi", tmp_path / "out", frame)


def test_rows_with_unknown_label(tmp_path, int8_model, sample_test_split):
    frame = sample_frame(int8_model, sample_test_split)
    frame.loc[3, "label"] = "Recon"
    with pytest.raises(IdsEdgeError, match=r"Row 4 of data frame has label 'Recon', which is neither a class name"):
        bundle.make_bundle(int8_model, "rpi", tmp_path / "out", frame)


def test_rows_with_text_feature(tmp_path, int8_model, sample_test_split):
    frame = sample_frame(int8_model, sample_test_split)
    frame["Rate"] = frame["Rate"].astype(object)
    frame.loc[0, "Rate"] = "fast"
    with pytest.raises(IdsEdgeError, match=r"column 'Rate' contains text that is not a number"):
        bundle.make_bundle(int8_model, "rpi", tmp_path / "out", frame)


def test_rows_file_not_found(tmp_path, int8_model):
    with pytest.raises(IdsEdgeError, match=r"Rows file .*absent.csv not found"):
        bundle.make_bundle(int8_model, "rpi", tmp_path / "out", tmp_path / "absent.csv")


def test_rows_of_wrong_type(tmp_path, int8_model):
    with pytest.raises(IdsEdgeError, match=r"Invalid rows list: pass a CSV path, a pandas DataFrame, a \(features, labels"):
        bundle.make_bundle(int8_model, "rpi", tmp_path / "out", [[1.0]])


def test_max_rows_below_one(tmp_path, int8_model):
    with pytest.raises(IdsEdgeError, match=r"Invalid max_rows 0: bundle at least 1 row"):
        bundle.make_bundle(int8_model, "rpi", tmp_path / "out", max_rows=0)


def test_failed_bundle_keeps_previous(tmp_path, int8_model, sample_test_split):
    out = tmp_path / "out"
    bundle.make_bundle(int8_model, "rpi", out, max_rows=10)
    before = (out / "bundle.json").read_bytes()
    frame = sample_frame(int8_model, sample_test_split).drop(columns=["Rate"])
    with pytest.raises(IdsEdgeError):
        bundle.make_bundle(int8_model, "rpi", out, frame)
    assert (out / "bundle.json").read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]


def test_bundle_refuses_foreign_folder(tmp_path, int8_model):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(IdsEdgeError, match=r"is not empty and was not written by ids-edge"):
        bundle.make_bundle(int8_model, "rpi", out, max_rows=10)


def test_bundle_from_arrays(tmp_path, int8_model, sample_test_split):
    features, labels, class_names = sample_test_split
    result = bundle.make_bundle(int8_model, "rpi", tmp_path / "out", (features, labels, class_names, "real test split"))
    assert result.rows == len(features)
    assert result.rows_source == "real test split"


def test_bundle_rejects_wrong_array_shape(tmp_path, int8_model, sample_test_split):
    features, labels, class_names = sample_test_split
    with pytest.raises(IdsEdgeError, match=r"have shape \(456, 38\) with 456 labels, but the model needs \(rows, 39\)"):
        bundle.make_bundle(int8_model, "rpi", tmp_path / "out", (features[:, :38], labels, class_names))


def test_cli_bundle_uses_run_test_split(tmp_path, int8_model, sample_test_split):
    lines = bundle.bundle_from_cli(int8_model, "rpi", tmp_path / "out")
    assert lines[0] == (
        f"Wrote the rpi bundle {tmp_path / 'out'} with {len(sample_test_split[0])} rows "
        "(test split of the bundled sample of real CICIoMT2024 rows (Benign, ARP_Spoofing))."
    )
    assert (tmp_path / "out.tar.gz").is_file()


def test_run_rows_absent_without_export_json(tmp_path, int8_model):
    shutil.copy(int8_model, tmp_path / "model.tflite")
    assert bundle.run_test_rows(tmp_path / "model.tflite") is None


def test_run_rows_reject_broken_export_json(tmp_path, int8_model):
    shutil.copy(int8_model, tmp_path / "model.tflite")
    (tmp_path / "export.json").write_text("{}")
    with pytest.raises(IdsEdgeError, match=r"export.json is unreadable or has no \"run_dir\""):
        bundle.run_test_rows(tmp_path / "model.tflite")


def test_run_script_reports_outputs_match(rpi_bundle, tmp_path):
    environment = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path / "result.json"), IDS_EDGE_EMULATED="0")
    environment.pop("PYTHONPATH", None)
    completed = subprocess.run(
        ["sh", str(rpi_bundle.out_dir / "run.sh"), "--runs", "3", "--warmup", "1"],
        env=environment, capture_output=True, text=True, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads((tmp_path / "result.json").read_text())["outputs_match_expected"] is True
    assert "outputs match the bundle's expected sha256" in completed.stdout


def test_runner_rejects_changed_bundle_file(rpi_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(rpi_bundle.out_dir, copy)
    data = bytearray((copy / "model.tflite").read_bytes())
    data[-10] ^= 0xFF
    (copy / "model.tflite").write_bytes(bytes(data))
    environment = dict(os.environ, IDS_EDGE_EMULATED="0")
    environment.pop("PYTHONPATH", None)
    completed = subprocess.run(
        [sys.executable, str(copy / "runner.py"), "--model", str(copy / "model.tflite"), "--rows", str(copy / "rows.csv"),
         "--out", str(tmp_path / "result.json"), "--runs", "3"],
        env=environment, capture_output=True, text=True, check=False,
    )
    assert completed.returncode == 2
    assert "model.tflite has SHA-256" in completed.stderr
    assert "but bundle.json records" in completed.stderr


def test_coral_readme_covers_dev_board_and_usb(tmp_path, monkeypatch, int8_model):
    monkeypatch.setattr(bundle.shutil, "which", lambda name: None)
    bundle.make_bundle(int8_model, "coral", tmp_path / "coral", max_rows=20)
    readme = (tmp_path / "coral" / "README.txt").read_text()
    assert "Coral Dev Board (Mendel Linux)" in readme
    assert "sudo apt-get install python3-pycoral python3-tflite-runtime" in readme
    assert "Coral USB Accelerator on Debian or Raspberry Pi OS" in readme


def test_coral_skip_printed_once(tmp_path, monkeypatch, int8_model, caplog):
    monkeypatch.setattr(bundle.shutil, "which", lambda name: None)
    with caplog.at_level("WARNING", logger="ids_edge"):
        lines = bundle.make_bundle(int8_model, "coral", tmp_path / "coral", max_rows=20).summary_lines()
    assert sum(line.startswith("Skipped:") for line in lines) == 1
    assert not [record for record in caplog.records if "Skipped" in record.getMessage()]


def test_bundle_rejects_metadata_of_other_model(tmp_path, int8_model):
    folder = tmp_path / "model"
    shutil.copytree(int8_model.parent, folder)
    metadata_path = (folder / int8_model.name).with_suffix(".json")
    data = json.loads(metadata_path.read_text())
    data["feature_names"] = data["feature_names"][:30]
    metadata_path.write_text(json.dumps(data))
    with pytest.raises(IdsEdgeError, match="does not match the model .*lists 30 feature names"):
        bundle.make_bundle(folder / int8_model.name, "rpi", tmp_path / "out")


def test_run_script_comment_names_host_rows(rpi_bundle):
    assert "# Run the bundled model on rows.csv (labelled rows copied from the host" in (rpi_bundle.out_dir / "run.sh").read_text()


def test_foreign_archive_left_alone(int8_model, tmp_path):
    from ids_edge.bundle import bundle_from_cli

    archive = tmp_path / "out.tar.gz"
    archive.write_bytes(b"mine")
    with pytest.raises(IdsEdgeError, match="out.tar.gz exists and is not the archive of an earlier bundle"):
        bundle_from_cli(int8_model, "rpi", tmp_path / "out")
    assert archive.read_bytes() == b"mine"
    assert not (tmp_path / "out").exists()
