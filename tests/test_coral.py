"""Tests of the Coral Edge TPU readiness report on real exported models."""

import ctypes.util
import json
import shutil
import stat

import numpy as np
import pytest
from click.testing import CliRunner

import ids_edge  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from ids_edge import coral
from ids_edge._tf import import_tensorflow
from ids_edge.cli import main
from ids_edge.errors import IdsEdgeError

# Written by hand after edgetpu_compiler summaries published in public write-ups (compiler
# versions 2.0 and 16). No compiler is installed here, so it was not captured from a real run.
HAND_WRITTEN_SUMMARY = """\
Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 41 ms.

Input model: model_int8_float_io.tflite
Input size: 81.55KiB
Output model: model_int8_float_io_edgetpu.tflite
Output size: 142.27KiB
On-chip memory used for caching model parameters: 80.25KiB
On-chip memory remaining for caching model parameters: 7.70MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 14
Operation log: model_int8_float_io_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 13
Number of operations that will run on CPU: 1

Operator                       Count      Status

QUANTIZE                       1          Mapped to Edge TPU
RESHAPE                        5          Mapped to Edge TPU
CONV_2D                        2          Mapped to Edge TPU
MAX_POOL_2D                    2          Mapped to Edge TPU
FULLY_CONNECTED                2          Mapped to Edge TPU
SOFTMAX                        1          Mapped to Edge TPU
DEQUANTIZE                     1          Operation is working on an unsupported data type
"""


@pytest.fixture(scope="module")
def dynamic_batch_model(tmp_path_factory):
    """A full-integer int8 CNN converted from a Keras model, so its batch signature is -1."""
    tf, keras = import_tensorflow()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.layers.Input(shape=(39, 1)),
            keras.layers.Conv1D(4, 3, activation="relu"),
            keras.layers.MaxPooling1D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    rows = np.random.default_rng(0).normal(size=(16, 39, 1)).astype(np.float32)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([row[np.newaxis]] for row in rows)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    path = tmp_path_factory.mktemp("coral") / "dynamic_batch.tflite"
    path.write_bytes(converter.convert())
    return path


def test_int8_model_is_ready(int8_model):
    report = coral.analyze_model(int8_model)
    assert report.ready is True
    assert report.problems == []
    assert report.first_cpu_operator is None
    assert {op.placement for op in report.operators} == {"Edge TPU"}


def test_int8_model_operators_are_mapped(int8_model):
    names = [op.name for op in coral.analyze_model(int8_model).operators]
    assert {"CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED", "SOFTMAX"} <= set(names)
    assert set(names) <= set(coral.EDGETPU_OPERATORS)


def test_float_model_is_not_ready(float_model):
    report = coral.analyze_model(float_model)
    assert report.ready is False
    assert any("activation tensors are not INT8/UINT8" in problem for problem in report.problems)
    assert report.first_cpu_operator == 0


def test_float_model_runs_all_on_cpu(float_model):
    operators = coral.analyze_model(float_model).operators
    assert operators[0].placement == "CPU (cannot be mapped)"
    assert {op.placement for op in operators[1:]} == {"CPU (after the first unmapped operator)"}
    assert any("is FLOAT32, not INT32" in problem for problem in operators[1].problems)


def test_dynamic_batch_model_is_not_ready(dynamic_batch_model):
    report = coral.analyze_model(dynamic_batch_model)
    assert report.input["shape_signature"][0] == -1
    assert report.ready is False
    assert any("dynamic shapes (-1 in shape_signature" in problem for problem in report.problems)


def test_parse_compiler_summary():
    summary = coral.parse_compiler_output(HAND_WRITTEN_SUMMARY)
    assert summary["compiled"] is True
    assert summary["compiler_version"] == "16.0.384591198"
    assert summary["compile_time_ms"] == 41.0
    assert summary["on_chip_used_bytes"] == round(80.25 * 1024)
    assert summary["on_chip_remaining_bytes"] == round(7.70 * 1024 * 1024)
    assert summary["off_chip_streamed_bytes"] == 0
    assert summary["total_operations"] == 14
    assert summary["operations_on_edgetpu"] == 13
    assert summary["operations_on_cpu"] == 1


def test_parse_summary_operator_table():
    operators = coral.parse_compiler_output(HAND_WRITTEN_SUMMARY)["operators"]
    assert [row["operator"] for row in operators][-1] == "DEQUANTIZE"
    assert operators[-1]["mapped"] is False
    assert operators[-1]["status"] == "Operation is working on an unsupported data type"
    assert sum(row["count"] for row in operators if row["mapped"]) == 13


def test_parse_summary_counts_from_table():
    # Without -s the compiler omits the two counts when every operator is mapped; the log has the table.
    text = HAND_WRITTEN_SUMMARY.replace("Number of operations that will run on Edge TPU: 13\n", "")
    text = text.replace("Number of operations that will run on CPU: 1\n", "")
    summary = coral.parse_compiler_output(text)
    assert summary["operations_on_edgetpu"] == 13
    assert summary["operations_on_cpu"] == 1


def test_parse_size_units():
    assert coral.parse_size("0.00B") == 0
    assert coral.parse_size("2.00KiB") == 2048
    assert coral.parse_size("1.50MiB") == 1572864
    with pytest.raises(ValueError):
        coral.parse_size("many")


def test_compiler_skipped_without_tool(int8_model, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    report = coral.check_readiness(int8_model)
    assert report.compiler["status"] == "skipped"
    assert "edgetpu_compiler is not on PATH" in report.compiler["reason"]


def test_delegate_skipped_without_libedgetpu(int8_model):
    report = coral.check_readiness(int8_model)
    if ctypes.util.find_library("edgetpu") is None:
        assert report.delegate["status"] == "skipped"
        assert "libedgetpu.so.1 could not be loaded" in report.delegate["reason"]
    else:
        assert report.delegate["status"] in ("skipped", "measured", "failed")


def write_stand_in_compiler(folder, summary):
    """Write a stand-in for edgetpu_compiler, not Coral's compiler: it prints ``summary`` and
    writes the output file where edgetpu_compiler would, to test how ids-edge runs and reads it."""
    (folder / "summary.txt").write_text(summary)
    script = folder / "edgetpu_compiler"
    script.write_text(
        "#!/bin/sh\n"
        f'cat "{folder / "summary.txt"}"\n'
        "# Called as: edgetpu_compiler -s -o OUT_DIR MODEL\n"
        'cp "$4" "$3/$(basename "$4" .tflite)_edgetpu.tflite"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_compiler_output_parsed_from_stand_in(int8_model, tmp_path):
    script = write_stand_in_compiler(tmp_path, HAND_WRITTEN_SUMMARY)
    work = tmp_path / "work"
    work.mkdir()
    result = coral.run_compiler(int8_model, work, compiler=str(script))
    assert result["status"] == "compiled"
    assert result["summary"]["operations_on_cpu"] == 1
    assert (work / "model_int8_edgetpu.tflite").is_file()


def test_compiler_cpu_operations_make_not_ready(int8_model, tmp_path, monkeypatch):
    write_stand_in_compiler(tmp_path, HAND_WRITTEN_SUMMARY)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    report = coral.check_readiness(int8_model)
    assert report.compiler["status"] == "compiled"
    assert report.ready is False
    assert "edgetpu_compiler left 1 operations on the CPU" in report.problems


def test_compiler_full_mapping_overrides_table(float_model, tmp_path, monkeypatch):
    summary = HAND_WRITTEN_SUMMARY.replace("run on Edge TPU: 13", "run on Edge TPU: 14")
    summary = summary.replace("run on CPU: 1", "run on CPU: 0")
    write_stand_in_compiler(tmp_path, summary)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    report = coral.check_readiness(float_model)
    assert report.ready is True
    assert all("edgetpu_compiler mapped every operator" in problem for problem in report.problems)


def test_damaged_model_is_rejected(int8_model, tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(int8_model.read_bytes()[:3000])
    with pytest.raises(IdsEdgeError, match="is a damaged TFLite file"):
        coral.analyze_model(path)


def test_non_tflite_file_is_rejected(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_text("hello")
    with pytest.raises(IdsEdgeError, match="is not a TFLite model"):
        coral.analyze_model(path)


def test_cli_coral_writes_report(int8_model, tmp_path):
    out = tmp_path / "coral"
    result = CliRunner().invoke(main, ["coral", str(int8_model), "--out", str(out), "--no-tools"])
    assert result.exit_code == 0, result.output
    assert "model_int8.tflite is ready" in result.output
    assert json.loads((out / "coral.json").read_text())["models"][0]["ready"] is True


def test_report_round_trips_through_dict(float_model):
    report = coral.analyze_model(float_model)
    again = coral.report_from_dict(json.loads(json.dumps(report.to_dict())))
    assert coral.format_markdown(again) == coral.format_markdown(report)


@pytest.fixture(scope="module")
def float_io_model(tmp_path_factory, sample_run):
    """An int8 export with float input and output, whose graph also sanitizes and standardizes."""
    from ids_edge.export import ExportOptions, export_run

    out = tmp_path_factory.mktemp("exports") / "int8_float_io"
    return export_run(sample_run, out, ExportOptions(quantize="int8", io="float")).model_path


def test_float_io_model_is_not_ready(float_io_model):
    report = coral.analyze_model(float_io_model)
    assert report.ready is False
    assert report.input["dtype"] == "FLOAT32"
    assert any("--io int8" in problem for problem in report.problems)


def test_float_io_model_cpu_from_first_float_op(float_io_model):
    operators = coral.analyze_model(float_io_model).operators
    first = operators[0]
    assert first.placement == "CPU (cannot be mapped)"
    assert any(op.name == "CONV_2D" and op.placement == "CPU (after the first unmapped operator)" for op in operators)


def test_markdown_shows_compiler_table(int8_model):
    report = coral.analyze_model(int8_model)
    report.compiler = {"status": "compiled", "summary": coral.parse_compiler_output(HAND_WRITTEN_SUMMARY)}
    text = "\n".join(coral.format_markdown(report))
    assert "13 operations on the Edge TPU, 1 on the CPU" in text
    assert "| DEQUANTIZE | 1 | Operation is working on an unsupported data type |" in text


def test_heading_names_static_check(int8_model):
    report = coral.check_readiness(int8_model, use_tools=False)
    heading = coral.format_markdown(report)[0]
    assert heading == "## Coral Edge TPU readiness: model_int8.tflite is ready by ids-edge's static check (edgetpu_compiler not run)"


@pytest.mark.parametrize("length", [8, 100, 3000, -100])
def test_truncated_model_message_is_plain(int8_model, tmp_path, length):
    path = tmp_path / "trunc.tflite"
    path.write_bytes(int8_model.read_bytes()[:length])
    result = CliRunner().invoke(main, ["coral", str(path), "--no-tools"])
    assert result.exit_code != 0
    assert "is a damaged TFLite file" in result.output
    assert "struct" not in result.output
    assert "Export it again" in result.output


def test_random_bytes_worded_like_bench(tmp_path):
    from ids_edge import bench

    path = tmp_path / "random.tflite"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(IdsEdgeError) as coral_error:
        coral.analyze_model(path)
    with pytest.raises(IdsEdgeError) as bench_error:
        bench.read_tflite_file(path)
    assert str(coral_error.value) == str(bench_error.value)


def test_overwritten_flatbuffer_rejected(int8_model, tmp_path):
    damaged = tmp_path / "model_int8.tflite"
    noise = np.random.default_rng(0).integers(0, 256, size=50000, dtype=np.uint8).tobytes()
    damaged.write_bytes(int8_model.read_bytes()[:8] + noise)
    shutil.copy(int8_model.with_suffix(".json"), damaged.with_suffix(".json"))

    with pytest.raises(IdsEdgeError, match="is a damaged TFLite file: its 50008 bytes do not hold valid model tables"):
        coral.check_readiness(damaged, use_tools=False)
