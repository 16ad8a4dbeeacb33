"""int8 export: tensor types, agreement with Keras on real rows, metadata and safe output."""

import json

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from click.testing import CliRunner

from ids_edge import metadata
from ids_edge.cli import main
from ids_edge.errors import IdsEdgeError
from ids_edge.export import ExportOptions, calibration_rows_note, export_run, predict_tflite, representative_rows

# Inputs that are shapes or biases, and so int32 in a full-integer model: (op name, input position).
INT32_INPUTS = {("RESHAPE", 1), ("EXPAND_DIMS", 1), ("CONV_2D", 2), ("FULLY_CONNECTED", 2)}


def op_tensor_types(model_path):
    interpreter = Interpreter(
        model_path=str(model_path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter.allocate_tensors()
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    for op in interpreter._get_ops_details():
        inputs = [np.dtype(tensors[i]["dtype"]) if i >= 0 else None for i in op["inputs"]]
        outputs = [np.dtype(tensors[i]["dtype"]) for i in op["outputs"]]
        yield op["op_name"], inputs, outputs


def test_int8_types_throughout(int8_model):
    ops = list(op_tensor_types(int8_model))
    assert {name for name, _, _ in ops} >= {"CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED", "SOFTMAX"}
    for name, inputs, outputs in ops:
        for position, dtype in enumerate(inputs):
            if dtype is None:
                continue
            expected = np.int32 if (name, position) in INT32_INPUTS else np.int8
            assert dtype == expected, f"{name} input {position} is {dtype}"
        for dtype in outputs:
            assert dtype == np.int8, f"{name} output is {dtype}"


def test_int8_io_and_static_batch(int8_model):
    interpreter = Interpreter(model_path=str(int8_model))
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]

    assert input_detail["dtype"] == np.int8
    assert output_detail["dtype"] == np.int8
    assert list(input_detail["shape_signature"]) == [1, 39, 1]


def test_int8_agrees_with_keras(int8_export):
    # The bundled real test rows: the int8 model must predict the Keras model's class on almost all.
    assert int8_export.comparison["agreement"] >= 0.97
    assert abs(int8_export.comparison["accuracy_change_pp"]) <= 3.0
    assert int8_export.report["rows"] == 456


def test_metadata_beside_model(int8_model):
    data = metadata.read_metadata(int8_model)

    assert data["class_names"] == ["Benign", "Attack"]
    assert len(data["feature_names"]) == 39
    assert data["input"]["dtype"] == "int8"
    assert data["input"]["scale"] > 0
    assert data["preprocessing"]["location"] == "caller"
    assert data["quantize"] == "int8"


def test_export_writes_reports(int8_model):
    folder = int8_model.parent
    for name in ("model_int8_metrics.json", "model_int8_metrics.md", "model_int8_confusion_matrix.csv",
                 "model_int8_confusion_matrix.png", "export.json"):
        assert (folder / name).is_file(), name
    payload = json.loads((folder / "model_int8_metrics.json").read_text())
    assert set(payload["change_against_keras"]) >= {"accuracy_change_pp", "macro_f1_change_pp", "agreement"}


def test_float_model_predicts_like_keras(float_model, sample_run, sample_test_split):
    from ids_edge.runs import load_run
    from ids_edge.train import as_model_input, predict_classes

    run = load_run(sample_run)
    features, _, _ = sample_test_split
    standardized = run.preprocessor.transform(features)
    tflite_pred, _ = predict_tflite(float_model.read_bytes(), standardized)
    keras_pred = predict_classes(run.load_model(), as_model_input(standardized))
    np.testing.assert_array_equal(tflite_pred, keras_pred)


def test_representative_rows_equal_per_class():
    labels = np.array([0] * 100 + [1] * 10)
    rows = representative_rows(labels, 40, seed=0)
    assert (labels[rows] == 0).sum() == 20
    assert (labels[rows] == 1).sum() == 10


def test_failed_export_keeps_previous_output(sample_run, tmp_path):
    out = tmp_path / "exported"
    export_run(sample_run, out, ExportOptions(quantize="none"))
    before = (out / "model_none.tflite").read_bytes()

    with pytest.raises(IdsEdgeError, match="Invalid --representative-size 0"):
        export_run(sample_run, out, ExportOptions(quantize="int8", representative_size=0))

    assert (out / "model_none.tflite").read_bytes() == before
    assert not list(tmp_path.glob(".exported.*"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (ExportOptions(quantize="int4"), "Invalid --quantize 'int4': choose one of none, float16, dynamic, int8"),
        (ExportOptions(quantize="none", io="int8"), "--io int8 needs --quantize int8"),
        (ExportOptions(quantize="int8", io="uint8"), "Invalid --io 'uint8'"),
    ],
)
def test_invalid_export_options(sample_run, tmp_path, options, message):
    with pytest.raises(IdsEdgeError, match=message):
        export_run(sample_run, tmp_path / "out", options)
    assert not (tmp_path / "out").exists()


def test_export_rejects_foreign_folder(sample_run, tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"jpeg")
    with pytest.raises(IdsEdgeError, match="not empty and was not written by ids-edge"):
        export_run(sample_run, out, ExportOptions(quantize="none"))
    assert (out / "holiday.jpg").read_bytes() == b"jpeg"


def _run_with_model(sample_run, tmp_path, features, classes):
    """Copy the sample run and replace its model.keras with an untrained one of other sizes."""
    import shutil

    from ids_edge._tf import import_tensorflow

    _, keras = import_tensorflow()
    run_dir = tmp_path / "run"
    shutil.copytree(sample_run, run_dir)
    model = keras.Sequential([keras.layers.Input((features, 1)), keras.layers.Flatten(), keras.layers.Dense(classes)])
    model.save(run_dir / "model.keras")
    return run_dir


@pytest.mark.parametrize(
    ("features", "classes", "message"),
    [
        (39, 19, r"has 19 outputs, but .*run.json lists 2 classes"),
        (45, 2, r"has 45 input features, but .*run.json lists 39 features"),
    ],
)
def test_model_of_other_run_rejected(sample_run, tmp_path, features, classes, message):
    run_dir = _run_with_model(sample_run, tmp_path, features, classes)
    with pytest.raises(IdsEdgeError, match=message):
        export_run(run_dir, tmp_path / "out", ExportOptions(quantize="none"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("seed", ["-1", "99999999999"])
def test_export_seed_out_of_range(sample_run, tmp_path, seed):
    result = CliRunner().invoke(main, ["export", str(sample_run), "--seed", seed, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert f"Error: Invalid option --seed {seed}: use an integer from 0 to 4294967295." in result.output


def test_foreign_run_format_names_next_step(sample_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(sample_run, run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "format": "other-tool"}))
    with pytest.raises(IdsEdgeError, match="format 'other-tool'.*Train the run again with 'ids-edge train'"):
        export_run(run_dir, tmp_path / "out", ExportOptions(quantize="none"))


def test_representative_rows_note():
    labels = np.array([0] * 156 + [1] * 156)
    assert calibration_rows_note(labels, 4, 4) == ""
    odd = calibration_rows_note(labels, 3, 2)
    assert "calibrated on 2 training rows instead of the 3 requested" in odd
    assert "split equally over 2 classes, 1 row(s) per class" in odd
    large = calibration_rows_note(labels, 100000, 312)
    assert "2 class(es) have fewer than 50000 training rows" in large


def test_cli_reports_calibration_rows_and_replaced_models(sample_run, tmp_path):
    out = tmp_path / "out"
    first = CliRunner().invoke(main, ["export", str(sample_run), "--quantize", "none", "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert "Replaced the models" not in first.output

    second = CliRunner().invoke(main, [
        "export", str(sample_run), "--representative-size", "3", "--max-accuracy-drop", "100", "--max-macro-f1-drop", "100",
        "--out", str(out),
    ])
    assert second.exit_code == 0, second.output
    assert "Calibration: 2 training rows (--representative-size 3)" in second.output
    assert "Note: int8: calibrated on 2 training rows instead of the 3 requested" in second.output
    assert f"Note: Replaced the models of the previous export in {out}: model_none.tflite." in second.output


@pytest.fixture(scope="module")
def synthetic_export(tmp_path_factory):
    """A 2-class run trained for 1 epoch on synthetic rows, exported as int8 through the command line."""
    from ids_edge import synthetic

    folder = tmp_path_factory.mktemp("synthetic")
    data_dir = synthetic.write_synthetic_dataset(folder / "data", rows_per_file=6)
    trained = CliRunner().invoke(main, ["train", "--data", str(data_dir), "--task", "2", "--epochs", "1", "--out", str(folder / "run")])
    assert trained.exit_code == 0, trained.output
    exported = CliRunner().invoke(main, [
        "export", str(folder / "run"), "--max-accuracy-drop", "100", "--max-macro-f1-drop", "100", "--out", str(folder / "export"),
    ])
    assert exported.exit_code == 0, exported.output
    return folder / "export", exported.output


def test_synthetic_export_console_labelled(synthetic_export):
    _, output = synthetic_export
    assert "Keras float32 (SYNTHETIC data, not CICIoMT2024 results)" in output
    assert "(SYNTHETIC data, not CICIoMT2024 results): accuracy" in output.split("int8:", 1)[1]


def test_synthetic_export_files_labelled(synthetic_export):
    folder, _ = synthetic_export
    assert "SYNTHETIC data" in (folder / "comparison.md").read_text().splitlines()[0]
    assert "SYNTHETIC data" in (folder / "model_int8_metrics.md").read_text().splitlines()[0]
    assert json.loads((folder / "export.json").read_text())["synthetic_data"] is True
    assert metadata.read_metadata(folder / "model_int8.tflite")["synthetic_data"] is True


def test_synthetic_export_inspect_line(synthetic_export):
    folder, _ = synthetic_export
    result = CliRunner().invoke(main, ["inspect", str(folder / "model_int8.tflite")])
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC: trained and evaluated on synthetic data" in result.output


def test_real_export_not_labelled_synthetic(int8_model):
    assert metadata.read_metadata(int8_model)["synthetic_data"] is False
    assert json.loads((int8_model.parent / "export.json").read_text())["synthetic_data"] is False


def test_class_without_test_rows_marked():
    from ids_edge import evaluate

    report = evaluate.classification_report(np.array([1, 1, 2]), np.array([1, 2, 2]), ["Benign", "Spoofing", "Recon"])
    markdown = evaluate.markdown_report(report, "title")
    assert "| Benign | n/a | n/a | n/a (no test rows) | 0 |" in markdown
    assert report["macro"]["f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)
