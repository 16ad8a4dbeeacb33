"""Tests of the standalone device runner against the real exported models and rows."""

import ast
import csv
import hashlib
import json
import shutil
import sys

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

import ids_edge  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from ids_edge import runner
from ids_edge.metadata import read_metadata
from ids_edge.preprocess import Preprocessor, quantize
from ids_edge.runtime import make_interpreter

RUNTIME_MODULES = {"ai_edge_litert", "tflite_runtime", "tensorflow"}


@pytest.fixture(scope="module")
def int8_metadata(int8_model):
    return read_metadata(int8_model)


@pytest.fixture(scope="module")
def int8_interpreter(int8_model):
    return runner.load_interpreter(int8_model, num_threads=1)


@pytest.fixture(scope="module")
def int8_predictions(int8_model, int8_metadata, int8_interpreter, sample_test_split):
    features, _, _ = sample_test_split
    inputs = runner.prepare_inputs(features, int8_metadata, runner.input_detail(int8_interpreter))
    return np.argmax(runner.predict(int8_interpreter, inputs), axis=1)


def write_rows(path, header, rows):
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def rows_csv(tmp_path, int8_metadata, sample_test_split):
    """The real test rows as a CSV file with a class-name label column, as bundles write them."""
    features, labels, class_names = sample_test_split
    header = list(int8_metadata["feature_names"]) + ["label"]
    rows = [[repr(float(v)) for v in row] + [class_names[label]] for row, label in zip(features, labels)]
    return write_rows(tmp_path / "rows.csv", header, rows)


# Standalone imports.


def test_runner_imports_only_stdlib_numpy_runtimes():
    tree = ast.parse(open(runner.__file__, encoding="utf-8").read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    allowed = set(sys.stdlib_module_names) | {"numpy", "__future__"} | RUNTIME_MODULES
    assert imported - allowed == set()


# Preprocessing.


def test_standardize_matches_preprocess(int8_metadata, sample_test_split):
    features, _, _ = sample_test_split
    expected = Preprocessor.from_dict(int8_metadata["preprocessing"]).transform(features)
    actual = runner.standardize(features, int8_metadata["preprocessing"])
    assert actual.dtype == np.float32
    assert actual.tobytes() == expected.tobytes()


def test_real_rows_contain_inf(sample_test_split):
    features, _, _ = sample_test_split
    assert np.isinf(features).any()


def test_quantized_inputs_match_preprocess(int8_metadata, int8_interpreter, sample_test_split):
    features, _, _ = sample_test_split
    detail = runner.input_detail(int8_interpreter)
    standardized = Preprocessor.from_dict(int8_metadata["preprocessing"]).transform(features)
    expected = quantize(standardized, *detail["quantization"])
    actual = runner.prepare_inputs(features, int8_metadata, detail)
    assert actual.dtype == np.int8
    assert actual.reshape(len(features), -1).tobytes() == expected.tobytes()


def test_float_inputs_are_standardized(float_model, sample_test_split):
    features, _, _ = sample_test_split
    metadata = read_metadata(float_model)
    detail = runner.input_detail(runner.load_interpreter(float_model))
    expected = Preprocessor.from_dict(metadata["preprocessing"]).transform(features)
    actual = runner.prepare_inputs(features, metadata, detail)
    assert actual.dtype == np.float32
    assert actual.reshape(len(features), -1).tobytes() == expected.tobytes()


def test_prepare_inputs_rejects_wrong_feature_count(int8_metadata, int8_interpreter, sample_test_split):
    features, _, _ = sample_test_split
    with pytest.raises(runner.RunnerError, match=r"does not hold 38 features"):
        runner.prepare_inputs(features[:, :38], int8_metadata, runner.input_detail(int8_interpreter))


# Inference.


def test_outputs_match_host_interpreter(int8_model, int8_metadata, int8_interpreter, sample_test_split):
    features, _, _ = sample_test_split
    reference = make_interpreter(int8_model.read_bytes(), num_threads=1)
    source = reference.get_input_details()[0]
    target = reference.get_output_details()[0]
    standardized = Preprocessor.from_dict(int8_metadata["preprocessing"]).transform(features)
    quantized = quantize(standardized, *source["quantization"])
    expected = []
    for row in quantized:
        reference.set_tensor(source["index"], row.reshape(source["shape"]))
        reference.invoke()
        expected.append(reference.get_tensor(target["index"])[0].copy())

    inputs = runner.prepare_inputs(features, int8_metadata, runner.input_detail(int8_interpreter))
    outputs = runner.predict(int8_interpreter, inputs)
    assert outputs.dtype == np.int8
    assert outputs.tobytes() == np.asarray(expected).tobytes()


def test_outputs_checksum_is_sha256_of_bytes():
    outputs = np.array([[1, -2], [3, -128]], dtype=np.int8)
    assert runner.outputs_sha256(outputs) == hashlib.sha256(bytes([1, 254, 3, 128])).hexdigest()


def test_static_batch_model_rejects_resize(int8_model):
    interpreter = runner.load_interpreter(int8_model)
    signature = list(runner.input_detail(interpreter)["shape_signature"])
    if signature[0] != 1:
        pytest.fail(f"the int8 fixture was expected to have a static batch of 1, not {signature}")
    with pytest.raises(runner.RunnerError, match=r"does not allow batch size 4: its input shape signature is \[1, 39, 1\]"):
        runner.set_batch_size(interpreter, 4)


def test_batch_size_below_one_rejected(int8_interpreter):
    with pytest.raises(runner.RunnerError, match=r"Invalid batch size 0"):
        runner.set_batch_size(int8_interpreter, 0)


@pytest.fixture(scope="module")
def dynamic_batch_model(tmp_path_factory, float_model):
    """A tiny float model with a dynamic batch dimension, and the float export's metadata."""
    from ids_edge._tf import import_tensorflow

    tf, tf_keras = import_tensorflow()
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
        [tf_keras.layers.Input((39, 1)), tf_keras.layers.Flatten(), tf_keras.layers.Dense(2, activation="softmax")]
    )
    path = tmp_path_factory.mktemp("dynamic") / "dynamic.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    shutil.copy(float_model.with_suffix(".json"), path.with_suffix(".json"))
    return path


def test_batch_predictions_match_batch_one(dynamic_batch_model, sample_test_split):
    features, _, _ = sample_test_split
    metadata = runner.read_model_metadata(dynamic_batch_model)
    single = runner.load_interpreter(dynamic_batch_model)
    inputs = runner.prepare_inputs(features, metadata, runner.input_detail(single))
    batched = runner.load_interpreter(dynamic_batch_model)
    runner.set_batch_size(batched, 7)
    assert runner.predict(batched, inputs).tobytes() == runner.predict(single, inputs).tobytes()


def test_latency_reports_batch_size(dynamic_batch_model, sample_test_split):
    features, _, _ = sample_test_split
    metadata = runner.read_model_metadata(dynamic_batch_model)
    interpreter = runner.load_interpreter(dynamic_batch_model)
    runner.set_batch_size(interpreter, 4)
    inputs = runner.prepare_inputs(features, metadata, runner.input_detail(interpreter))
    stats = runner.measure_latency(interpreter, inputs, warmup=2, runs=5)
    assert stats.batch_size == 4
    assert stats.count == 5


def test_latency_statistics_are_ordered(int8_interpreter, int8_metadata, sample_test_split):
    features, _, _ = sample_test_split
    inputs = runner.prepare_inputs(features, int8_metadata, runner.input_detail(int8_interpreter))
    stats = runner.measure_latency(int8_interpreter, inputs, warmup=3, runs=50)
    assert stats.count == 50
    assert 0 < stats.min_us <= stats.p50_us <= stats.p90_us <= stats.p99_us <= stats.max_us
    assert stats.min_us <= stats.mean_us <= stats.max_us
    assert stats.throughput_flows_per_s == pytest.approx(1e6 / stats.mean_us)
    assert stats.first_us > 0
    assert stats.warmup_mean_us > 0


def test_latency_without_warmup(int8_interpreter, int8_metadata, sample_test_split):
    features, _, _ = sample_test_split
    inputs = runner.prepare_inputs(features, int8_metadata, runner.input_detail(int8_interpreter))
    stats = runner.measure_latency(int8_interpreter, inputs, warmup=0, runs=3)
    assert stats.first_us is None
    assert stats.warmup_mean_us is None


def test_latency_rejects_zero_runs(int8_interpreter, int8_metadata, sample_test_split):
    features, _, _ = sample_test_split
    inputs = runner.prepare_inputs(features, int8_metadata, runner.input_detail(int8_interpreter))
    with pytest.raises(runner.RunnerError, match=r"Invalid run counts: runs=0"):
        runner.measure_latency(int8_interpreter, inputs, warmup=0, runs=0)


# Metrics.


def test_metrics_match_sklearn(int8_predictions, sample_test_split):
    _, labels, class_names = sample_test_split
    computed = runner.classification_metrics(labels, int8_predictions, len(class_names))
    classes = list(range(len(class_names)))
    assert computed["accuracy"] == sk_metrics.accuracy_score(labels, int8_predictions)
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = sk_metrics.precision_recall_fscore_support(
            labels, int8_predictions, labels=classes, average=average, zero_division=0
        )
        assert computed[f"precision_{average}"] == pytest.approx(precision, rel=1e-12, abs=0)
        assert computed[f"recall_{average}"] == pytest.approx(recall, rel=1e-12, abs=0)
        assert computed[f"f1_{average}"] == pytest.approx(f1, rel=1e-12, abs=0)
    expected_matrix = sk_metrics.confusion_matrix(labels, int8_predictions, labels=classes)
    assert computed["confusion_matrix"] == expected_matrix.tolist()


def test_metrics_match_sklearn_with_absent_class():
    y_true = np.array([0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 1, 0, 1])
    computed = runner.classification_metrics(y_true, y_pred, 4)
    precision, recall, f1, support = sk_metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=[0, 1, 2, 3], zero_division=0
    )
    assert computed["per_class"]["precision"] == pytest.approx(precision.tolist(), rel=1e-12, abs=0)
    assert computed["per_class"]["recall"] == pytest.approx(recall.tolist(), rel=1e-12, abs=0)
    assert computed["per_class"]["f1"] == pytest.approx(f1.tolist(), rel=1e-12, abs=0)
    assert computed["per_class"]["support"] == support.tolist()
    assert computed["f1_macro"] == pytest.approx(
        sk_metrics.f1_score(y_true, y_pred, labels=[0, 1, 2, 3], average="macro", zero_division=0), rel=1e-12, abs=0
    )


def test_metrics_reject_label_out_of_range():
    with pytest.raises(runner.RunnerError, match=r"A predicted label is outside the class indices 0\.\.1"):
        runner.classification_metrics([0, 1], [0, 2], 2)


def test_metrics_reject_length_mismatch():
    with pytest.raises(runner.RunnerError, match=r"equally long, non-empty label arrays \(got 2 and 1\)"):
        runner.classification_metrics([0, 1], [0], 2)


# Rows and metadata files.


def test_read_rows_roundtrips_real_rows(rows_csv, int8_metadata, sample_test_split):
    features, labels, class_names = sample_test_split
    rows = runner.read_rows_csv(rows_csv, int8_metadata["feature_names"], class_names)
    assert rows.features.tobytes() == np.asarray(features, dtype=np.float64).tobytes()
    assert rows.labels.tolist() == list(labels)


def test_read_rows_names_first_missing_column(tmp_path, int8_metadata):
    names = int8_metadata["feature_names"]
    path = write_rows(tmp_path / "rows.csv", names[:3] + names[5:], [[0.0] * (len(names) - 2)])
    with pytest.raises(runner.RunnerError, match=rf"has no column '{names[3]}', which the model needs \(2 of its 39"):
        runner.read_rows_csv(path, names, ["Benign", "Attack"])


def test_read_rows_rejects_text_cell(tmp_path, int8_metadata):
    names = int8_metadata["feature_names"]
    path = write_rows(tmp_path / "rows.csv", names, [[0.0] * len(names), ["abc"] + [0.0] * (len(names) - 1)])
    with pytest.raises(runner.RunnerError, match=rf"line 3 column '{names[0]}': 'abc' is not a number"):
        runner.read_rows_csv(path, names, ["Benign", "Attack"])


def test_read_rows_rejects_short_row(tmp_path, int8_metadata):
    names = int8_metadata["feature_names"]
    path = write_rows(tmp_path / "rows.csv", names, [[0.0] * 5])
    with pytest.raises(runner.RunnerError, match=r"line 2 has 5 cells, but the header has 39"):
        runner.read_rows_csv(path, names, ["Benign", "Attack"])


def test_read_rows_rejects_unknown_label(tmp_path, int8_metadata):
    names = int8_metadata["feature_names"]
    path = write_rows(tmp_path / "rows.csv", names + ["label"], [[0.0] * len(names) + ["Recon"]])
    with pytest.raises(runner.RunnerError, match=r"line 2 column 'label': label 'Recon' is neither a class name"):
        runner.read_rows_csv(path, names, ["Benign", "Attack"])


def test_read_rows_empty_cell_is_nan(tmp_path, int8_metadata):
    names = int8_metadata["feature_names"]
    path = write_rows(tmp_path / "rows.csv", names, [[""] + [1.0] * (len(names) - 1)])
    rows = runner.read_rows_csv(path, names, ["Benign", "Attack"])
    assert np.isnan(rows.features[0, 0])
    assert rows.labels is None


def test_read_rows_rejects_empty_file(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("")
    with pytest.raises(runner.RunnerError, match=r"rows.csv is empty"):
        runner.read_rows_csv(path, ["a"], ["Benign", "Attack"])


def test_read_rows_rejects_header_only(tmp_path):
    path = write_rows(tmp_path / "rows.csv", ["a"], [])
    with pytest.raises(runner.RunnerError, match=r"has a header but no rows"):
        runner.read_rows_csv(path, ["a"], ["Benign", "Attack"])


def test_read_rows_missing_file(tmp_path):
    with pytest.raises(runner.RunnerError, match=r"Rows file .*absent.csv not found"):
        runner.read_rows_csv(tmp_path / "absent.csv", ["a"], ["Benign"])


def copy_model(int8_model, tmp_path):
    target = tmp_path / "model.tflite"
    shutil.copy(int8_model, target)
    shutil.copy(int8_model.with_suffix(".json"), target.with_suffix(".json"))
    return target


def test_metadata_missing(tmp_path, int8_model):
    target = tmp_path / "model.tflite"
    shutil.copy(int8_model, target)
    with pytest.raises(runner.RunnerError, match=r"Metadata file .*model.json not found"):
        runner.read_model_metadata(target)


def test_metadata_not_json(tmp_path, int8_model):
    target = copy_model(int8_model, tmp_path)
    target.with_suffix(".json").write_text("{")
    with pytest.raises(runner.RunnerError, match=r"model.json is not valid JSON"):
        runner.read_model_metadata(target)


def test_metadata_other_format(tmp_path, int8_model):
    target = copy_model(int8_model, tmp_path)
    target.with_suffix(".json").write_text('{"format": "other"}')
    with pytest.raises(runner.RunnerError, match=r"is not ids-edge model metadata"):
        runner.read_model_metadata(target)


def test_metadata_newer_version(tmp_path, int8_model):
    target = copy_model(int8_model, tmp_path)
    data = json.loads(target.with_suffix(".json").read_text())
    data["format_version"] = 99
    target.with_suffix(".json").write_text(json.dumps(data))
    with pytest.raises(runner.RunnerError, match=r"format_version 99, but this runner reads versions up to 1"):
        runner.read_model_metadata(target)


def test_metadata_missing_key(tmp_path, int8_model):
    target = copy_model(int8_model, tmp_path)
    data = json.loads(target.with_suffix(".json").read_text())
    del data["class_names"]
    target.with_suffix(".json").write_text(json.dumps(data))
    with pytest.raises(runner.RunnerError, match=r"has no 'class_names' key"):
        runner.read_model_metadata(target)


def test_metadata_short_preprocessing(tmp_path, int8_model):
    target = copy_model(int8_model, tmp_path)
    data = json.loads(target.with_suffix(".json").read_text())
    data["preprocessing"]["scale"] = data["preprocessing"]["scale"][:5]
    target.with_suffix(".json").write_text(json.dumps(data))
    with pytest.raises(runner.RunnerError, match=r"preprocessing\['scale'\] must list 39 values"):
        runner.read_model_metadata(target)


# Runtime and environment.


def test_missing_model_file(tmp_path):
    with pytest.raises(runner.RunnerError, match=r"Model file .*absent.tflite not found"):
        runner.load_interpreter(tmp_path / "absent.tflite")


def test_corrupt_model_file(tmp_path):
    path = tmp_path / "corrupt.tflite"
    path.write_bytes(b"not a flatbuffer")
    with pytest.raises(runner.RunnerError, match=r"could not load .*corrupt.tflite"):
        runner.load_interpreter(path)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # ai-edge-litert 2.3 Delegate.__del__ bug
def test_missing_delegate_library(int8_model):
    with pytest.raises(runner.RuntimeNotFoundError, match=r"Delegate library 'libids-edge-absent.so' could not be loaded"):
        runner.load_interpreter(int8_model, delegate="libids-edge-absent.so")


def test_missing_runtime_lists_install_commands(monkeypatch):
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    with pytest.raises(runner.RuntimeNotFoundError, match=r"tflite-runtime: .*pip install numpy ai-edge-litert"):
        runner.find_runtime("tflite-runtime")


def test_emulation_override(monkeypatch):
    monkeypatch.setenv(runner.EMULATION_ENV, "1")
    assert runner.detect_emulation() == (True, [f"{runner.EMULATION_ENV}=1"])


def test_emulation_override_native(monkeypatch):
    monkeypatch.setenv(runner.EMULATION_ENV, "0")
    assert runner.detect_emulation()[0] is False


def test_emulation_detected_from_cpuinfo(monkeypatch):
    monkeypatch.delenv(runner.EMULATION_ENV, raising=False)
    monkeypatch.delenv("QEMU_LD_PREFIX", raising=False)
    monkeypatch.setattr(runner.platform, "machine", lambda: "aarch64")
    fake_files = {"/proc/cpuinfo": "processor\t: 0\nvendor_id\t: AuthenticAMD\n"}
    monkeypatch.setattr(runner, "_read_text", lambda path: fake_files.get(path, ""))
    emulated, hints = runner.detect_emulation()
    assert emulated is True
    assert hints == ["/proc/cpuinfo describes an x86 CPU, but platform.machine() is aarch64"]


def test_emulation_not_detected_on_native_arm(monkeypatch):
    monkeypatch.delenv(runner.EMULATION_ENV, raising=False)
    monkeypatch.delenv("QEMU_LD_PREFIX", raising=False)
    monkeypatch.setattr(runner.platform, "machine", lambda: "aarch64")
    fake_files = {"/proc/cpuinfo": "processor\t: 0\nCPU implementer\t: 0x41\n"}
    monkeypatch.setattr(runner, "_read_text", lambda path: fake_files.get(path, ""))
    assert runner.detect_emulation() == (False, [])


def test_peak_rss_is_positive():
    peak, source = runner.peak_rss_bytes()
    assert peak > 0
    assert source == "/proc/self/status VmHWM"


def test_peak_rss_falls_back_to_getrusage(monkeypatch):
    monkeypatch.setattr(runner, "_read_text", lambda path: "")
    peak, source = runner.peak_rss_bytes()
    assert peak > 0
    assert source == "resource.getrusage ru_maxrss"


# Command line.


def test_main_writes_result(tmp_path, monkeypatch, int8_model, rows_csv, int8_predictions, sample_test_split):
    monkeypatch.setenv(runner.EMULATION_ENV, "0")
    out = tmp_path / "result.json"
    status = runner.main(
        ["--model", str(int8_model), "--rows", str(rows_csv), "--out", str(out), "--warmup", "2", "--runs", "20", "--device-name", "bench-host"]
    )
    result = json.loads(out.read_text())
    _, labels, class_names = sample_test_split
    assert status == 0
    assert result["device"] == "bench-host"
    assert result["emulated"] is False
    assert result["latency"]["is_device_latency"] is True
    assert result["latency"]["count"] == 20
    assert result["predictions"] == int8_predictions.tolist()
    assert result["metrics"]["accuracy"] == sk_metrics.accuracy_score(labels, int8_predictions)
    assert result["outputs"]["dtype"] == "int8"
    assert result["runtime"]["name"] in runner.RUNTIMES
    assert result["platform"]["numpy"] == np.__version__


def test_main_marks_emulated_timings(tmp_path, monkeypatch, int8_model, rows_csv):
    monkeypatch.setenv(runner.EMULATION_ENV, "1")
    out = tmp_path / "result.json"
    runner.main(["--model", str(int8_model), "--rows", str(rows_csv), "--out", str(out), "--warmup", "0", "--runs", "2"])
    result = json.loads(out.read_text())
    assert result["emulated"] is True
    assert result["latency"]["is_device_latency"] is False
    assert "not device latency" in result["latency"]["note"]


def test_main_saves_outputs(tmp_path, int8_model, rows_csv):
    npy = tmp_path / "outputs.npy"
    out = tmp_path / "result.json"
    runner.main(["--model", str(int8_model), "--rows", str(rows_csv), "--out", str(out), "--runs", "1", "--outputs", str(npy)])
    result = json.loads(out.read_text())
    assert runner.outputs_sha256(np.load(npy)) == result["outputs"]["sha256"]


def test_main_reports_error_without_traceback(tmp_path, capsys, int8_model):
    rows = write_rows(tmp_path / "rows.csv", ["x"], [[1.0]])
    out = tmp_path / "result.json"
    status = runner.main(["--model", str(int8_model), "--rows", str(rows), "--out", str(out)])
    error = capsys.readouterr().err
    assert status == 2
    assert error.startswith("error: Rows file ")
    assert "Traceback" not in error
    assert not out.exists()


def test_main_batch_error_names_shape(tmp_path, capsys, int8_model, rows_csv):
    status = runner.main(["--model", str(int8_model), "--rows", str(rows_csv), "--out", str(tmp_path / "r.json"), "--batch-size", "8"])
    assert status == 2
    assert "does not allow batch size 8" in capsys.readouterr().err


def test_metadata_empty_object_names_next_step(tmp_path, int8_model):
    target = copy_model(int8_model, tmp_path)
    target.with_suffix(".json").write_text("{}")
    with pytest.raises(runner.RunnerError, match=r"is not ids-edge model metadata .*or export the model again"):
        runner.read_model_metadata(target)


def test_metadata_feature_names_string(tmp_path, int8_model):
    target = copy_model(int8_model, tmp_path)
    data = json.loads(target.with_suffix(".json").read_text())
    data["feature_names"] = "abc"
    target.with_suffix(".json").write_text(json.dumps(data))
    with pytest.raises(runner.RunnerError, match=r"'feature_names' must be a non-empty list of name strings, not 'abc'"):
        runner.read_model_metadata(target)


def test_corrupt_model_names_next_step(tmp_path):
    path = tmp_path / "corrupt.tflite"
    path.write_bytes(b"not a flatbuffer")
    with pytest.raises(runner.RunnerError, match=r"export it again with 'ids-edge export'"):
        runner.load_interpreter(path)


def test_static_batch_message_names_static_export(int8_model):
    interpreter = runner.load_interpreter(int8_model, num_threads=1)
    with pytest.raises(runner.RunnerError, match=r"ids-edge exports models with a static batch of 1: use --batch-size 1"):
        runner.set_batch_size(interpreter, 4)


def fake_runtime(version):
    return runner.RuntimeInfo("ai-edge-litert", version, object, None)


def test_bundle_compare_match(tmp_path):
    manifest = {"expected_outputs_sha256": "a" * 64, "expected_outputs_runtime": "ai-edge-litert 2.3.0", "files": {}}
    record = runner.compare_with_bundle(
        tmp_path, manifest, tmp_path / "model.tflite", tmp_path / "rows.csv", None, "a" * 64, fake_runtime("2.3.0")
    )
    assert record["outputs_match_expected"] is True


def test_bundle_compare_other_runtime_explains(tmp_path):
    manifest = {"expected_outputs_sha256": "a" * 64, "expected_outputs_runtime": "ai-edge-litert 2.3.0", "files": {}}
    record = runner.compare_with_bundle(
        tmp_path, manifest, tmp_path / "model.tflite", tmp_path / "rows.csv", None, "b" * 64, fake_runtime("2.1.0")
    )
    assert record["outputs_match_expected"] is False
    assert "may legitimately differ by one quantization step" in record["note"]


def test_bundle_compare_skips_other_model(tmp_path):
    manifest = {"expected_outputs_sha256": "a" * 64, "expected_outputs_runtime": "ai-edge-litert 2.3.0", "files": {}}
    record = runner.compare_with_bundle(
        tmp_path, manifest, tmp_path / "model_edgetpu.tflite", tmp_path / "rows.csv", "libedgetpu.so.1", "b" * 64,
        fake_runtime("2.3.0"),
    )
    assert record["outputs_match_expected"] is None
