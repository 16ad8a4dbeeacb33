"""The ids-edge command line: the main job on the bundled sample and its user errors."""

import json
import shutil

import pytest
from click.testing import CliRunner

from ids_edge.cli import main


def run_cli(*arguments):
    return CliRunner().invoke(main, [str(argument) for argument in arguments])


def test_train_and_export_on_sample(tmp_path):
    run_dir = tmp_path / "run"
    trained = run_cli("train", "--out", run_dir, "--epochs", 3)
    assert trained.exit_code == 0, trained.output
    assert "bundled sample of 851 real CICIoMT2024 rows" in trained.output
    assert "Keras float32: accuracy" in trained.output
    assert (run_dir / "run.json").is_file()
    assert (run_dir / "evaluation" / "keras_confusion_matrix.png").is_file()

    exported = run_cli("export", run_dir, "--quantize", "int8", "--out", run_dir / "int8")
    assert exported.exit_code == 0, exported.output
    assert "Keras float32: accuracy" in exported.output
    assert "TFLite int8 (ai-edge-litert" in exported.output
    assert "Change against Keras: accuracy" in exported.output
    assert (run_dir / "int8" / "model_int8.tflite").is_file()


def test_run_files_record_preprocessing(sample_run):
    preprocessing = json.loads((sample_run / "preprocessing.json").read_text())
    info = json.loads((sample_run / "run.json").read_text())

    assert len(preprocessing["mean"]) == len(preprocessing["feature_names"]) == 39
    assert info["class_names"] == ["Benign", "Attack"]
    assert info["schema"] == "v39"
    assert info["task"] == 2
    assert not list(sample_run.glob("*.pkl"))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["train", "--task", "6", "--out", "{tmp}/run"], "The bundled sample holds only Benign and ARP_Spoofing rows, so --task 6"),
        (["train", "--data", "{tmp}/missing", "--out", "{tmp}/run"], "Data folder {tmp}/missing not found"),
        (["train", "--label-column", "Label", "--out", "{tmp}/run"], "--label-column needs --data"),
        (["train", "--epochs", "0", "--out", "{tmp}/run"], "Invalid option --epochs 0: use 1 or more"),
        (["train", "--max-rows-per-class", "1", "--out", "{tmp}/run"], "Invalid option --max-rows-per-class 1"),
        (["train", "--seed", "-5", "--out", "{tmp}/run"], "Invalid option --seed -5: use an integer from 0 to 4294967295"),
        (["train", "--learning-rate", "inf", "--out", "{tmp}/run"], "Invalid option --learning-rate inf: use a positive finite number"),
        (["train", "--validation-fraction", "1.5", "--out", "{tmp}/run"], "Invalid option --validation-fraction 1.5"),
        (["train", "--test-fraction", "0.3", "--out", "{tmp}/run"], "--test-fraction applies only with --label-column"),
        (["export", "{tmp}/missing", "--out", "{tmp}/out"], "Run directory {tmp}/missing not found"),
    ],
)
def test_user_errors_are_one_line(tmp_path, arguments, message):
    result = run_cli(*[argument.format(tmp=tmp_path) for argument in arguments])

    assert result.exit_code == 2
    assert f"Error: {message.format(tmp=tmp_path)}" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_newer_run_format_rejected(sample_run, tmp_path):
    run_dir = tmp_path / "future"
    shutil.copytree(sample_run, run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    info["format_version"] = 99
    (run_dir / "run.json").write_text(json.dumps(info))

    result = run_cli("export", run_dir, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "has run format version 99, but this ids-edge reads versions up to 1" in result.output


def test_out_path_is_a_file(tmp_path):
    target = tmp_path / "taken"
    target.write_text("keep me")

    result = run_cli("train", "--out", target, "--epochs", 1)
    assert result.exit_code == 2
    assert f"Error: Output path {target} is a file" in result.output
    assert target.read_text() == "keep me"


def test_bad_cell_reported_through_cli(tmp_path):
    from ids_edge.data import SAMPLE_DATA_DIR

    folder = tmp_path / "data"
    shutil.copytree(SAMPLE_DATA_DIR, folder)
    path = folder / "train" / "Benign_train.pcap.csv"
    lines = path.read_text().splitlines()
    cells = lines[2].split(",")
    cells[0] = "oops"
    lines[2] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")

    result = run_cli("train", "--data", folder, "--task", "2", "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert "Benign_train.pcap.csv, line 3, column 'Header_Length': value 'oops' is not a number" in result.output
    assert not (tmp_path / "run").exists()


def test_retrain_keeps_good_run_on_failure(sample_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(sample_run, run_dir)
    before = (run_dir / "run.json").read_text()

    result = run_cli("train", "--out", run_dir, "--batch-size", "0")
    assert result.exit_code == 2
    assert (run_dir / "run.json").read_text() == before


def test_export_into_run_dir_rejected(sample_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(sample_run, run_dir)

    result = run_cli("export", run_dir, "--out", run_dir)
    assert result.exit_code == 2
    assert f"Output folder {run_dir} is not empty and was not written by ids-edge as this kind of output (export.json is missing)" in result.output
    assert (run_dir / "model.keras").is_file()
    assert (run_dir / "run.json").is_file()


def test_train_out_checked_before_loading(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")

    result = run_cli("train", "--out", folder)
    assert result.exit_code == 2
    assert "Data:" not in result.output
    assert "(run.json is missing)" in result.output


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p.pop("mean"), "'mean' must be a list of 39 values"),
        (lambda p: p["scale"].pop(), "'scale' must be a list of 39 values"),
        (lambda p: p["feature_names"].reverse(), "the feature names differ from run.json's"),
    ],
)
def test_damaged_preprocessing_rejected(sample_run, tmp_path, edit, message):
    run_dir = tmp_path / "run"
    shutil.copytree(sample_run, run_dir)
    preprocessing = json.loads((run_dir / "preprocessing.json").read_text())
    edit(preprocessing)
    (run_dir / "preprocessing.json").write_text(json.dumps(preprocessing))

    result = run_cli("export", run_dir, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_data_path_is_a_file(tmp_path):
    path = tmp_path / "flows.csv"
    path.write_text("a,b\n1,2\n")
    result = run_cli("train", "--data", path, "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert f"--data {path} is a file, not a folder" in result.output


def test_out_under_a_file_rejected(tmp_path):
    blocker = tmp_path / "afile.txt"
    blocker.write_text("x")
    result = run_cli("train", "--out", blocker / "sub")
    assert result.exit_code == 2
    assert f"Cannot write {blocker / 'sub'}: {blocker} is a file, not a folder" in result.output


def test_empty_out_rejected(tmp_path):
    result = run_cli("train", "--out", "")
    assert result.exit_code == 2
    assert "Invalid output path: --out is empty" in result.output


def test_sigterm_removes_partial_output(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import os, signal, sys, time\n"
        "from ids_edge.cli import main\n"
        "from ids_edge.outputs import output_dir\n"
        "main.callback(verbose=0)\n"
        f"with output_dir({str(tmp_path / 'out')!r}, marker='run.json') as folder:\n"
        "    (folder / 'half').write_text('x')\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 128 + signal.SIGTERM

    assert not (tmp_path / "out").exists()
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".partial")]


def test_synthetic_data_labelled(tmp_path):
    from ids_edge import synthetic

    folder = synthetic.write_synthetic_dataset(tmp_path / "syn", rows_per_file=6)
    result = run_cli("train", "--data", folder, "--task", "6", "--epochs", 1, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC data, not CICIoMT2024 results" in result.output.splitlines()[0]
    assert "Keras float32 (SYNTHETIC data" in result.output

    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["synthetic_data"] is True
    assert "SYNTHETIC" in (tmp_path / "run" / "evaluation" / "keras_metrics.md").read_text().splitlines()[0]


def test_train_generic_label_column(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    folder = tmp_path / "captures"
    folder.mkdir()
    header = ",".join(f"f{i}" for i in range(12)) + ",kind"
    rows = [",".join(f"{v:.3f}" for v in rng.normal(i % 2, 1, 12)) + f",{'scan' if i % 2 else 'normal'}" for i in range(120)]
    (folder / "flows.csv").write_text(header + "\n" + "\n".join(rows) + "\n")

    result = run_cli("train", "--data", folder, "--label-column", "kind", "--epochs", 1, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["class_names"] == ["normal", "scan"]
    assert info["schema"] == "generic"
    assert info["data_source"]["kind"] == "generic"

    exported = run_cli("export", tmp_path / "run", "--out", tmp_path / "int8")
    assert exported.exit_code == 0, exported.output


def test_retrain_keeps_nested_outputs(sample_run, tmp_path):
    run_dir = tmp_path / "run"
    trained = run_cli("train", "--out", run_dir, "--epochs", 1)
    assert trained.exit_code == 0, trained.output
    (run_dir / "int8").mkdir()
    (run_dir / "int8" / "model_int8.tflite").write_bytes(b"keep")

    result = run_cli("train", "--out", run_dir, "--epochs", 1)
    assert result.exit_code == 2
    assert f"Output folder {run_dir} contains int8, which ids-edge did not write there" in result.output
    assert (run_dir / "int8" / "model_int8.tflite").read_bytes() == b"keep"


def test_export_keeps_user_file(sample_run, tmp_path):
    out = tmp_path / "int8"
    assert run_cli("export", sample_run, "--out", out).exit_code == 0
    (out / "my_notes.txt").write_text("notes")

    result = run_cli("export", sample_run, "--out", out)
    assert result.exit_code == 2
    assert "contains my_notes.txt, which ids-edge did not write there" in result.output
    assert (out / "my_notes.txt").read_text() == "notes"


def test_rerun_replaces_own_output(sample_run, tmp_path):
    out = tmp_path / "int8"
    assert run_cli("export", sample_run, "--out", out).exit_code == 0
    again = run_cli("export", sample_run, "--out", out)
    assert again.exit_code == 0, again.output
    assert (out / "model_int8.tflite").is_file()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["export", "run", "--quantize", "foo", "--out", "x"], "Error: Invalid value for '--quantize': 'foo' is not one of"),
        (["train", "--epochs", "abc", "--out", "x"], "Error: Invalid value for '--epochs': 'abc' is not a valid integer."),
        (["export"], "Error: Missing argument 'RUN_DIR'. Run 'ids-edge export --help' for the options."),
    ],
)
def test_usage_errors_are_one_line(arguments, message):
    result = run_cli(*arguments)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert result.output.startswith(message)


def test_unwritable_out_parent(tmp_path):
    # /proc accepts no new folders, even for root, so creating the temporary folder fails.
    result = run_cli("train", "--out", "/proc/ids-edge-run", "--epochs", 1)
    assert result.exit_code == 2
    assert "Error: Cannot write into /proc:" in result.output
    assert "Traceback" not in result.output
