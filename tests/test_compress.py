"""Compression: pruning, every int8 I/O form, QAT, the accuracy gate, embedded metadata, determinism."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from ids_edge import compress, runs, tflite_file
from ids_edge.cli import main
from ids_edge.errors import GateError, IdsEdgeError
from ids_edge.export import (
    ExportOptions,
    GateOptions,
    calibration_clip_bounds,
    convert,
    export_run,
    export_variants,
    gate_advice,
    gate_failures,
    predict_tflite,
    variant_name,
    variant_options,
)
from ids_edge.train import as_model_input, predict_classes

NO_GATE = GateOptions(max_accuracy_drop=100.0, max_macro_f1_drop=100.0)
FAST = {"fine_tune_epochs": 2}
CORE_OPS = {"CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED", "SOFTMAX", "RESHAPE"}
# Inputs that are biases or shapes, and so int32 in an integer core: (op name, input position).
INT32_INPUTS = {("RESHAPE", 1), ("CONV_2D", 2), ("FULLY_CONNECTED", 2)}


@pytest.fixture(scope="module")
def variants_export(tmp_path_factory, sample_run):
    """One export of the sample run with every form the tests inspect, without a gate."""
    out = tmp_path_factory.mktemp("compress") / "variants"
    variants = [
        ExportOptions("none"),
        ExportOptions("int8", io="int8"),
        ExportOptions("int8", io="float"),
        ExportOptions("int8", io="int8", qat=True, **FAST),
        ExportOptions("int8", io="float", qat=True, **FAST),
        ExportOptions("none", prune=0.5, **FAST),
        ExportOptions("none", prune=0.8, **FAST),
        ExportOptions("none", prune=0.8, sparse_encoding=True, **FAST),
        ExportOptions("int8", prune=0.5, prune_structure="2:4", **FAST),
        ExportOptions("int8", prune=0.8, prune_structure="2:4", **FAST),
        ExportOptions("int8", prune=0.5, qat=True, **FAST),
        ExportOptions("none", prune=0.1, sparse_encoding=True, **FAST),
    ]
    summary = export_variants(sample_run, out, variants, NO_GATE)
    return summary, {variant.name: variant for variant in summary.variants}


def op_types(model_path):
    """Yield (op name, input TFLite types, output TFLite types) for each operator."""
    info = tflite_file.describe_model(model_path.read_bytes())
    tensors = info["tensors"]
    for operator in info["operators"]:
        yield (
            operator["op"],
            [tensors[i]["dtype"] for i in operator["inputs"]],
            [tensors[i]["dtype"] for i in operator["outputs"]],
        )


def check_integer_core(model_path):
    ops = list(op_types(model_path))
    assert {name for name, _, _ in ops} >= {"CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED", "SOFTMAX"}
    for name, inputs, outputs in ops:
        if name not in CORE_OPS:
            continue
        for position, dtype in enumerate(inputs):
            expected = "INT32" if (name, position) in INT32_INPUTS else "INT8"
            assert dtype == expected, f"{name} input {position} is {dtype}"
        for dtype in outputs:
            assert dtype == "INT8", f"{name} output is {dtype}"
    return ops


# Pruning


def test_pruning_reaches_target_per_layer(variants_export):
    _, by_name = variants_export
    for target, name in ((0.5, "none_pruned50"), (0.8, "none_pruned80")):
        for layer, entry in by_name[name].sparsity.items():
            assert entry["sparsity"] >= target - 0.01, f"{name} {layer}: {entry['sparsity']:.3f}"
            assert entry["sparsity"] <= target + 0.01, f"{name} {layer}: {entry['sparsity']:.3f}"


def test_int8_weights_keep_sparsity(variants_export):
    # Zero weights must stay zero through quantization, and through QAT with the
    # prune-preserving scheme.
    _, by_name = variants_export
    for name in ("int8_pruned50_2of4", "int8_pruned50_qat"):
        weights = by_name[name].model_metadata["pruning"]["tflite_weights"]
        assert len(weights) == 4, name
        for tensor, fraction in weights.items():
            assert fraction >= 0.49, f"{name} {tensor}: {fraction:.3f}"


def test_two_of_four_on_dense_layers(variants_export):
    _, by_name = variants_export
    sparsity = by_name["int8_pruned50_2of4"].sparsity
    assert sparsity["dense"]["two_of_four"]
    assert sparsity["classes"]["two_of_four"]
    assert sparsity["conv2"]["sparsity"] >= 0.49


def test_two_of_four_dense_exact_conv_target(variants_export):
    _, by_name = variants_export
    variant = by_name["int8_pruned2of4_conv80"]
    assert variant.sparsity["dense"]["sparsity"] == 0.5
    assert variant.sparsity["classes"]["sparsity"] == 0.5
    assert abs(variant.sparsity["conv2"]["sparsity"] - 0.8) <= 0.01
    overall = variant.model_metadata["pruning"]["overall_sparsity"]
    assert 0.5 < overall < 0.6


def test_two_of_four_notice(variants_export):
    summary, _ = variants_export
    assert any("exactly 0.5 sparsity" in notice for notice in summary.notices)


def test_gzip_size_shrinks_with_sparsity(variants_export):
    _, by_name = variants_export
    dense, half, most = by_name["none"], by_name["none_pruned50"], by_name["none_pruned80"]
    assert half.gzip_bytes < 0.8 * dense.gzip_bytes
    assert most.gzip_bytes < 0.8 * half.gzip_bytes


def test_pruned_raw_size_unchanged(variants_export):
    # Zero weights are still stored, so only compression makes a pruned flatbuffer smaller.
    _, by_name = variants_export
    assert abs(by_name["none_pruned50"].size_bytes - by_name["none"].size_bytes) < 0.02 * by_name["none"].size_bytes


def test_sparse_encoding_shrinks_float_file(variants_export):
    _, by_name = variants_export
    assert by_name["none_pruned80_sparse"].size_bytes < 0.6 * by_name["none_pruned80"].size_bytes


def test_sparse_encoding_same_outputs(variants_export, sample_run, sample_test_split):
    _, by_name = variants_export
    features, _, _ = sample_test_split
    standardized = runs.load_run(sample_run).preprocessor.transform(features)
    _, dense_scores = predict_tflite(by_name["none_pruned80"].flatbuffer, standardized)
    _, sparse_scores = predict_tflite(by_name["none_pruned80_sparse"].flatbuffer, standardized)
    np.testing.assert_allclose(sparse_scores, dense_scores, atol=1e-5)


def test_sparse_encoding_falls_back_to_dense(variants_export):
    summary, by_name = variants_export
    assert "none_pruned10_sparse" not in by_name
    variant = by_name["none_pruned10"]
    assert variant.options.sparse_encoding is False
    assert variant.model_metadata["options"]["export"]["sparse_encoding"] is False
    assert "DENSIFY" not in {name for name, _, _ in op_types(variant.model_path)}
    assert any("did not store the weights in the sparse format" in notice for notice in summary.notices)


def test_sparse_encoding_needs_prune(sample_run, tmp_path):
    with pytest.raises(IdsEdgeError, match=r"--prune is not given.*Add --prune, e.g. --prune 0.8"):
        export_run(sample_run, tmp_path / "out", ExportOptions("none", sparse_encoding=True))


def test_sparse_encoding_rejected_for_int8(sample_run, tmp_path):
    options = ExportOptions("int8", prune=0.5, sparse_encoding=True)
    with pytest.raises(IdsEdgeError, match="--sparse-encoding applies to pruned float32 models"):
        export_run(sample_run, tmp_path / "out", options)


def test_prune_leaves_trained_model_unchanged(sample_run, sample_dataset):
    run = runs.load_run(sample_run)
    model = run.load_model()
    before = [weights.copy() for weights in model.get_weights()]
    x_train = as_model_input(run.preprocessor.transform(sample_dataset.train.features))
    y_train = np.eye(2, dtype=np.float32)[sample_dataset.train.labels]
    compress.prune_model(model, x_train, y_train, 0.5, epochs=1)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("sparsity", [0, 1, 1.5, -0.2])
def test_sparsity_outside_open_interval(sample_run, tmp_path, sparsity):
    with pytest.raises(IdsEdgeError, match=rf"Invalid --prune {sparsity}: .* strictly between 0 and 1"):
        export_run(sample_run, tmp_path / "out", ExportOptions("int8", prune=sparsity))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("sparsity", [0.999999, 1e-9])
def test_sparsity_that_names_round_to_edge(sparsity):
    with pytest.raises(IdsEdgeError, match=rf"Invalid --prune {sparsity}: use a sparsity from 0.0001 to 0.9999"):
        compress.check_sparsity(sparsity)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        (ExportOptions("none", prune=0.5), "none_pruned50"),
        (ExportOptions("none", prune=0.555), "none_pruned55p5"),
        (ExportOptions("none", prune=0.9999), "none_pruned99p99"),
        (ExportOptions("none", prune=0.0001), "none_pruned0p01"),
        (ExportOptions("int8", prune=0.5, prune_structure="2:4"), "int8_pruned50_2of4"),
        (ExportOptions("int8", prune=0.8, prune_structure="2:4"), "int8_pruned2of4_conv80"),
    ],
)
def test_variant_names_of_sparsity(options, name):
    assert variant_name(options) == name


def test_prune_structure_needs_prune(sample_run, tmp_path):
    with pytest.raises(IdsEdgeError, match="--prune-structure 2:4 sets how --prune zeroes weights, but --prune is not given"):
        export_run(sample_run, tmp_path / "out", ExportOptions("int8", prune_structure="2:4"))


def test_pruning_schedule_ends_on_update():
    end_step, frequency = compress.pruning_schedule_steps(rows=312, batch_size=32, epochs=3)
    assert end_step % frequency == 0
    assert end_step <= 30


# int8 tensor types, I/O forms and calibration


def test_int8_io_types_throughout(variants_export):
    _, by_name = variants_export
    path = by_name["int8"].model_path
    ops = check_integer_core(path)
    info = tflite_file.describe_model(path.read_bytes())
    assert info["tensors"][info["inputs"][0]]["dtype"] == "INT8"
    assert info["tensors"][info["outputs"][0]]["dtype"] == "INT8"
    assert {name for name, _, _ in ops} <= CORE_OPS


def test_float_io_has_integer_core(variants_export):
    _, by_name = variants_export
    path = by_name["int8_float_io"].model_path
    ops = check_integer_core(path)
    info = tflite_file.describe_model(path.read_bytes())
    assert info["tensors"][info["inputs"][0]]["dtype"] == "FLOAT32"
    assert info["tensors"][info["outputs"][0]]["dtype"] == "FLOAT32"
    assert [name for name, _, _ in ops].count("QUANTIZE") == 1
    assert ops[-1][0] == "DEQUANTIZE"


def test_float_io_preprocessing_in_graph(variants_export):
    _, by_name = variants_export
    variant = by_name["int8_float_io"]
    assert variant.model_metadata["preprocessing"]["location"] == "graph"
    ops = list(op_types(variant.model_path))
    first_quantize = [name for name, _, _ in ops].index("QUANTIZE")
    for name, inputs, outputs in ops[:first_quantize]:
        assert "INT8" not in inputs + outputs, f"{name} before QUANTIZE is not float"


def test_graph_sanitizes_nan_and_inf(variants_export, sample_run, sample_test_split):
    _, by_name = variants_export
    run = runs.load_run(sample_run)
    features, _, _ = sample_test_split
    raw = np.array(features[:3], dtype=np.float64)
    raw[0, 0] = np.nan
    raw[1, 3] = np.inf
    raw[2, 5] = -np.inf
    model = by_name["int8_float_io"].flatbuffer
    _, from_raw = predict_tflite(model, raw.astype(np.float32))
    _, from_sanitized = predict_tflite(model, run.preprocessor.sanitize(raw))
    np.testing.assert_array_equal(from_raw, from_sanitized)


def test_float_io_agrees_with_keras(variants_export):
    _, by_name = variants_export
    assert by_name["int8_float_io"].comparison["agreement"] >= 0.97


def test_caller_location_for_int8_io(variants_export):
    _, by_name = variants_export
    meta = by_name["int8"].model_metadata
    assert meta["preprocessing"]["location"] == "caller"
    assert meta["input"]["dtype"] == "int8"
    assert meta["calibration"]["stratified_by_class"]


def test_calibration_clip_limits_outlier(sample_run, sample_dataset):
    run = runs.load_run(sample_run)
    model = run.load_model()
    rows = as_model_input(run.preprocessor.transform(sample_dataset.train.features[:200]))
    rows[0, 0, 0] = 1000.0  # one extreme value, as heavy-tailed flow features produce
    options = ExportOptions("int8", io="int8")

    unclipped = _input_scale(convert(model, options, rows))
    low, high = calibration_clip_bounds(rows, 0.001)
    clipped = _input_scale(convert(model, options, np.clip(rows, low, high)))

    assert unclipped > 1000.0 / 256
    assert clipped < unclipped / 10


def _input_scale(flatbuffer):
    info = tflite_file.describe_model(flatbuffer)
    return info["tensors"][info["inputs"][0]]["scale"][0]


def test_calibration_clip_zero_keeps_range():
    values = np.array([-3.0, 0.0, 1.0, 50.0])
    assert calibration_clip_bounds(values, 0.0) == (-3.0, 50.0)


def test_calibration_clip_invalid_fraction():
    with pytest.raises(IdsEdgeError, match=r"Invalid --calibration-clip 0.5: use a fraction in \[0, 0.5\)"):
        calibration_clip_bounds(np.zeros(3), 0.5)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (np.zeros((4, 39), dtype=np.float32), r"has shape \(4, 39\), but the model takes \(rows, 39, 1\)"),
        (np.zeros((4, 38, 1), dtype=np.float32), r"has shape \(4, 38, 1\), but the model takes \(rows, 39, 1\)"),
        (np.zeros((4, 39, 1), dtype=np.int64), "has dtype int64; it must be floating point"),
        (np.full((4, 39, 1), np.inf, dtype=np.float32), "contains inf or NaN"),
        (np.zeros((0, 39, 1), dtype=np.float32), "representative dataset is empty"),
    ],
)
def test_representative_set_checked(sample_run, rows, message):
    model = runs.load_run(sample_run).load_model()
    with pytest.raises(IdsEdgeError, match=message):
        convert(model, ExportOptions("int8", io="int8"), rows)


def test_float64_calibration_cast_to_float32(sample_run, sample_dataset):
    run = runs.load_run(sample_run)
    rows = as_model_input(run.preprocessor.transform(sample_dataset.train.features[:50])).astype(np.float64)
    flatbuffer = convert(run.load_model(), ExportOptions("int8", io="int8"), rows)
    assert flatbuffer[4:8] == b"TFL3"


# QAT


def test_conv2d_form_equal_outputs(sample_run, sample_test_split):
    run = runs.load_run(sample_run)
    model = run.load_model()
    features, _, _ = sample_test_split
    inputs = as_model_input(run.preprocessor.transform(features))
    rewritten = compress.to_conv2d_form(model)
    assert [layer.__class__.__name__ for layer in rewritten.layers][:3] == ["Reshape", "Conv2D", "MaxPooling2D"]
    np.testing.assert_allclose(rewritten.predict(inputs, verbose=0), model.predict(inputs, verbose=0), atol=1e-6)


def test_qat_runs_on_conv1d_model(variants_export):
    _, by_name = variants_export
    variant = by_name["int8_qat"]
    check_integer_core(variant.model_path)
    assert variant.model_metadata["qat"] is True
    assert variant.comparison["agreement"] >= 0.9


def test_qat_float_io_keeps_preprocessing_float(variants_export):
    _, by_name = variants_export
    ops = list(op_types(by_name["int8_float_io_qat"].model_path))
    names = [name for name, _, _ in ops]
    assert names.index("QUANTIZE") > names.index("SUB")
    check_integer_core(by_name["int8_float_io_qat"].model_path)


def test_qat_with_float_variant_message():
    with pytest.raises(IdsEdgeError, match=r"--qat applies to int8 variants .* but --quantize is none. Add --quantize int8"):
        variant_options(["none"], qat=True)


def test_qat_needs_int8(sample_run, tmp_path):
    with pytest.raises(IdsEdgeError, match="--qat trains for int8 inference, but --quantize is float16"):
        export_run(sample_run, tmp_path / "out", ExportOptions("float16", qat=True))


# Accuracy gate


def test_gate_failures_name_metric_drop_and_limit():
    comparison = {"accuracy_change_pp": -1.5, "macro_f1_change_pp": -0.5}
    failures = gate_failures(comparison, GateOptions(max_accuracy_drop=1.0, max_macro_f1_drop=2.0))
    assert failures == ["accuracy dropped 1.50 pp against Keras float32 (limit --max-accuracy-drop 1.00 pp)"]


def test_gate_names_class_drop_and_limit():
    comparison = {
        "accuracy_change_pp": 0.0, "macro_f1_change_pp": -1.0,
        "per_class_f1_change_pp": {"Benign": 0.5, "Attack": -3.25},
    }
    failures = gate_failures(comparison, GateOptions(max_class_f1_drop=3.0))
    assert failures == ["F1 of class Attack dropped 3.25 pp against Keras float32 (limit --max-class-f1-drop 3.00 pp)"]


def test_gate_ignores_classes_by_default():
    comparison = {"accuracy_change_pp": 0.0, "macro_f1_change_pp": 0.0, "per_class_f1_change_pp": {"Attack": -50.0}}
    assert gate_failures(comparison, GateOptions()) == []


def test_negative_class_gate_limit(sample_run, tmp_path):
    with pytest.raises(IdsEdgeError, match="Invalid --max-class-f1-drop -2.0"):
        export_run(sample_run, tmp_path / "out", ExportOptions("none"), gate=GateOptions(max_class_f1_drop=-2.0))


def test_gate_advice_follows_options():
    class Variant:
        def __init__(self, options):
            self.options = options

    unpruned = gate_advice([Variant(ExportOptions("float16", io="float"))])
    assert "--prune" not in unpruned
    assert "instead of float16/dynamic" in unpruned
    pruned = gate_advice([Variant(ExportOptions("int8", prune=0.9))])
    assert "use a smaller --prune than 0.9" in pruned
    assert "add --qat" in pruned


def test_gate_passes_within_limits():
    comparison = {"accuracy_change_pp": -0.5, "macro_f1_change_pp": 1.0}
    assert gate_failures(comparison, GateOptions()) == []


def test_gate_rejects_lossy_variant(sample_run, tmp_path):
    out = tmp_path / "out"
    lossy = ExportOptions("none", prune=0.95, fine_tune_epochs=1, fine_tune_learning_rate=0.05)
    summary = export_variants(sample_run, out, [ExportOptions("none"), lossy], GateOptions(0.0, 0.0))
    assert [variant.name for variant in summary.rejected] == ["none_pruned95"]
    assert (out / "model_none.tflite").is_file()
    assert not (out / "model_none_pruned95.tflite").exists()
    payload = json.loads((out / "export.json").read_text())
    assert payload["variants"]["none_pruned95"]["written"] is False


def test_gate_rejecting_every_variant_writes_nothing(sample_run, tmp_path):
    out = tmp_path / "out"
    lossy = ExportOptions("none", prune=0.95, fine_tune_epochs=1, fine_tune_learning_rate=0.05)
    with pytest.raises(GateError, match=r"rejected every variant, so nothing was written .*none_pruned95: (accuracy|macro F1) dropped") as error:
        export_run(sample_run, out, lossy, gate=GateOptions(0.0, 0.0))
    assert "use a smaller --prune than 0.95" in str(error.value)
    assert "--qat" not in str(error.value)
    assert not out.exists()
    assert not list(tmp_path.glob(".out.*"))


def test_gate_error_exit_code():
    assert GateError("x").exit_code == 4


def test_negative_gate_limit(sample_run, tmp_path):
    with pytest.raises(IdsEdgeError, match="Invalid --max-macro-f1-drop -1.0"):
        export_run(sample_run, tmp_path / "out", ExportOptions("none"), gate=GateOptions(1.0, -1.0))


# Reports


def test_comparison_report_files(variants_export):
    summary, _ = variants_export
    folder = summary.out_dir
    markdown = (folder / "comparison.md").read_text()
    assert "| int8_qat |" in markdown
    assert "## F1 per class" in markdown
    assert (folder / "size_vs_macro_f1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    payload = json.loads((folder / "export.json").read_text())
    assert set(payload["variants"]["int8"]["change_against_keras"]) >= {
        "accuracy_change_pp", "macro_f1_change_pp", "weighted_f1_change_pp", "per_class_f1_change_pp", "agreement"
    }


# Metadata inside the flatbuffer


def test_embedded_metadata_matches_json(variants_export):
    _, by_name = variants_export
    path = by_name["int8"].model_path
    embedded = tflite_file.read_embedded_metadata(path.read_bytes())
    assert embedded == json.loads(path.with_suffix(".json").read_text())


def test_embedded_metadata_contents(variants_export):
    _, by_name = variants_export
    meta = tflite_file.read_embedded_metadata(by_name["int8"].model_path.read_bytes())
    assert meta["class_names"] == ["Benign", "Attack"]
    assert len(meta["feature_names"]) == 39
    assert set(meta["preprocessing"]) >= {"mean", "scale", "clip_min", "clip_max", "location"}
    assert meta["output"]["dtype"] == "int8"
    assert meta["versions"]["tensorflow-model-optimization"]
    assert meta["options"]["export"]["quantize"] == "int8"


def test_inspect_without_json_file(variants_export, tmp_path):
    _, by_name = variants_export
    lonely = tmp_path / "lonely.tflite"
    shutil.copy(by_name["int8"].model_path, lonely)
    result = CliRunner().invoke(main, ["inspect", str(lonely)])
    assert result.exit_code == 0, result.output
    assert "classes (output order): Benign, Attack" in result.output
    assert "preprocessing location: caller" in result.output
    assert "FULLY_CONNECTED: INT8, INT8(const), INT32(const) -> INT8" in result.output
    assert "SYNTHETIC" not in result.output


def test_inspect_prints_preprocessing_table(variants_export):
    _, by_name = variants_export
    meta = by_name["int8"].model_metadata
    result = CliRunner().invoke(main, ["inspect", str(by_name["int8"].model_path)])
    lines = result.output.splitlines()
    header = next(index for index, line in enumerate(lines) if line.startswith("preprocessing (done by the caller"))
    assert lines[header + 1].split() == ["feature", "mean", "scale", "clip_min", "clip_max"]
    first = lines[header + 2].split()
    assert first[0] == meta["feature_names"][0]
    assert float(first[1]) == pytest.approx(meta["preprocessing"]["mean"][0], rel=1e-5)
    assert len([line for line in lines[header + 2 :] if line.startswith("  ") and len(line.split()) == 5]) >= 39


def test_inspect_graph_model_has_no_table(variants_export):
    _, by_name = variants_export
    result = CliRunner().invoke(main, ["inspect", str(by_name["int8_float_io"].model_path)])
    assert "preprocessing (done by the caller" not in result.output


@pytest.mark.parametrize("damage", ["half", "random_tail"])
def test_inspect_truncated_model(variants_export, tmp_path, damage):
    _, by_name = variants_export
    data = by_name["int8"].model_path.read_bytes()
    if damage == "half":
        damaged = data[: len(data) // 2]
    else:
        damaged = data[:8] + np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    path = tmp_path / "damaged.tflite"
    path.write_bytes(damaged)
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 2, result.output
    assert f"Error: {path} is truncated or not a valid TFLite file ({len(damaged)} bytes). Export it again." in result.output
    assert "Traceback" not in result.output


def test_inspect_json_output(variants_export):
    _, by_name = variants_export
    result = CliRunner().invoke(main, ["inspect", "--json", str(by_name["int8_float_io"].model_path)])
    info = json.loads(result.output)
    assert info["metadata"]["preprocessing"]["location"] == "graph"
    assert info["json_file_matches"] is True


def test_inspect_rejects_non_tflite(tmp_path):
    path = tmp_path / "notes.tflite"
    path.write_bytes(b"hello world, not a model")
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 2
    assert "is not a TFLite model (24 bytes, no 'TFL3' identifier at byte 4)" in result.output


def test_embed_replaces_existing_entry(variants_export):
    _, by_name = variants_export
    updated = tflite_file.embed_metadata(by_name["int8"].flatbuffer, {"replaced": True})
    assert tflite_file.read_embedded_metadata(updated) == {"replaced": True}
    assert tflite_file.describe_model(updated)["metadata_names"].count(tflite_file.METADATA_NAME) == 1


def test_buffers_stay_aligned(variants_export):
    _, by_name = variants_export
    schema = tflite_file.load_schema()
    data = by_name["int8"].flatbuffer
    start = np.frombuffer(data, np.uint8).ctypes.data
    model = schema.Model.GetRootAsModel(data, 0)
    for index in range(model.BuffersLength()):
        buffer = model.Buffers(index)
        if buffer.DataLength():
            offset = buffer.DataAsNumpy().ctypes.data - start
            assert offset % tflite_file.BUFFER_ALIGNMENT == 0, f"buffer {index} at offset {offset}"


def test_runtimes_load_model_with_metadata(variants_export, sample_run, sample_test_split):
    from tflite_micro.python.tflite_micro import runtime as micro

    _, by_name = variants_export
    flatbuffer = by_name["int8"].flatbuffer
    run = runs.load_run(sample_run)
    features, _, _ = sample_test_split
    standardized = run.preprocessor.transform(features[:5])
    _, litert_outputs = predict_tflite(flatbuffer, standardized)

    interpreter = micro.Interpreter.from_bytes(flatbuffer)
    meta = by_name["int8"].model_metadata["input"]
    for row in range(5):
        scaled = np.rint(standardized[row] / np.float32(meta["scale"])) + meta["zero_point"]
        interpreter.set_input(np.clip(scaled, -128, 127).astype(np.int8).reshape(1, 39, 1), 0)
        interpreter.invoke()
        np.testing.assert_array_equal(interpreter.get_output(0)[0], litert_outputs[row])


def test_tflite_micro_runs_graph_preprocessing(variants_export, sample_test_split):
    from tflite_micro.python.tflite_micro import runtime as micro

    _, by_name = variants_export
    flatbuffer = by_name["int8_float_io"].flatbuffer
    features, _, _ = sample_test_split
    raw = np.array(features[:4], dtype=np.float32)
    raw[0, 3] = np.inf
    _, litert_outputs = predict_tflite(flatbuffer, raw)

    interpreter = micro.Interpreter.from_bytes(flatbuffer)
    for row in range(4):
        interpreter.set_input(raw[row].reshape(1, 39, 1), 0)
        interpreter.invoke()
        np.testing.assert_allclose(interpreter.get_output(0)[0], litert_outputs[row], atol=1e-6)


# Determinism


def test_two_exports_byte_identical(sample_run, tmp_path):
    variants = [ExportOptions("int8", io="float"), ExportOptions("int8", prune=0.5, qat=True, fine_tune_epochs=1)]
    first = export_variants(sample_run, tmp_path / "a", variants, NO_GATE)
    second = export_variants(sample_run, tmp_path / "b", variants, NO_GATE)
    for a, b in zip(first.variants, second.variants):
        assert a.model_path.read_bytes() == b.model_path.read_bytes(), a.name


# Bad run directories and command-line options


def _copy_run(sample_run, tmp_path, **changes):
    copy = tmp_path / "run"
    shutil.copytree(sample_run, copy)
    info = json.loads((copy / "run.json").read_text())
    info.update(changes)
    (copy / "run.json").write_text(json.dumps(info))
    return copy


def test_run_of_unknown_format(sample_run, tmp_path):
    run_dir = _copy_run(sample_run, tmp_path, format="something-else")
    with pytest.raises(IdsEdgeError, match="is not an ids-edge run file"):
        export_run(run_dir, tmp_path / "out", ExportOptions("int8"))
    assert not (tmp_path / "out").exists()


def test_run_of_newer_format(sample_run, tmp_path):
    run_dir = _copy_run(sample_run, tmp_path, format_version=99)
    with pytest.raises(IdsEdgeError, match="has run format version 99, but this ids-edge reads versions up to 1"):
        export_run(run_dir, tmp_path / "out", ExportOptions("int8"))
    assert not (tmp_path / "out").exists()


def test_variant_options_all():
    names = [(options.quantize, options.io, options.qat) for options in variant_options([], all_variants=True, qat=True)]
    assert names == [
        ("none", "float", False), ("float16", "float", False), ("dynamic", "float", False),
        ("int8", "int8", False), ("int8", "int8", True), ("int8", "float", False), ("int8", "float", True),
    ]


@pytest.mark.parametrize(
    ("modes", "ios", "given"), [(["int8"], [], "--quantize int8"), ([], ["float"], "--io float")]
)
def test_all_variants_conflicts(modes, ios, given):
    with pytest.raises(IdsEdgeError, match=f"--all-variants exports every --quantize mode .* conflicts with {given}. Drop"):
        variant_options(modes, ios, all_variants=True)


def test_variant_options_io_needs_int8():
    with pytest.raises(IdsEdgeError, match="--io int8 needs --quantize int8"):
        variant_options(["none"], ["int8"])


def test_cli_export_prints_each_variant(sample_run, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["export", str(sample_run), "--quantize", "int8", "--quantize", "float16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Keras float32: accuracy" in result.output
    assert "TFLite int8 (" in result.output
    assert "TFLite float16 (" in result.output
    assert (out / "model_float16.tflite").is_file()


def test_cli_gate_exit_code(sample_run, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "export", str(sample_run), "--quantize", "none", "--prune", "0.95", "--fine-tune-epochs", "1",
        "--fine-tune-learning-rate", "0.05", "--max-accuracy-drop", "0", "--max-macro-f1-drop", "0", "--out", str(out),
    ])
    assert result.exit_code == 4, result.output
    assert "rejected every variant" in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--all-variants", "--quantize", "int8"], "--all-variants exports every --quantize mode and both --io types, so it conflicts with --quantize int8"),
        (["--all-variants", "--io", "float"], "conflicts with --io float. Drop --quantize and --io, or drop --all-variants"),
        (["--prune-structure", "2:4"], "--prune-structure 2:4 sets how --prune zeroes weights, but --prune is not given"),
        (["--fine-tune-epochs", "5"], "--fine-tune-epochs sets the fine-tuning of pruning and QAT, but neither --prune nor --qat"),
        (["--fine-tune-learning-rate", "0.01"], "Add --prune or --qat, or drop --fine-tune-learning-rate"),
        (["--quantize", "none", "--sparse-encoding"], "but --prune is not given, so there are no zero weights to leave out. Add --prune"),
        (["--quantize", "none", "--qat"], "--qat applies to int8 variants"),
        (["--prune", "0.999999"], "Invalid --prune 0.999999: use a sparsity from 0.0001 to 0.9999"),
        (["--max-class-f1-drop", "-1"], "Invalid --max-class-f1-drop -1.0"),
    ],
)
def test_cli_export_option_errors(sample_run, tmp_path, arguments, message):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["export", str(sample_run), *arguments, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists()


def test_cli_all_variants_without_quantize(sample_run, tmp_path, monkeypatch):
    # --quantize has a default, which must not count as given next to --all-variants.
    from ids_edge import export

    requested = []

    def record(run_dir, out_dir, variants, gate, data_path):
        requested.extend(variants)
        raise IdsEdgeError("stopped before converting")

    monkeypatch.setattr(export, "export_variants", record)
    result = CliRunner().invoke(main, ["export", str(sample_run), "--all-variants", "--out", str(tmp_path / "out")])
    assert "stopped before converting" in result.output
    assert [variant_name(options) for options in requested] == ["none", "float16", "dynamic", "int8", "int8_float_io"]


def test_io_float_needs_int8():
    from ids_edge.errors import IdsEdgeError
    from ids_edge.export import variant_options

    with pytest.raises(IdsEdgeError, match="--io float applies to int8 variants, but --quantize is none"):
        variant_options(["none"], ["float"])
