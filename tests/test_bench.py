"""Tests of the host benchmark: one small real run of every variant, its report, and its errors."""

import csv
import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from ids_edge import bench, runner, runtime
from ids_edge.cli import main
from ids_edge.errors import IdsEdgeError, MissingRuntimeError

FAST = dict(warmup=3, runs=40, baseline_runs=3, baseline_batch_size=32, forest_trees=10)


@pytest.fixture(scope="module")
def bench_result(tmp_path_factory, int8_model, float_model):
    """One benchmark of int8, float32 TFLite, Keras and RandomForest, with a batch size to skip."""
    out = tmp_path_factory.mktemp("bench") / "report"
    options = bench.BenchOptions(batch_sizes=(1, 4), memory=True, target="coral", **FAST)
    return bench.bench_models([int8_model, float_model], out, options)


@pytest.fixture
def model_copy(tmp_path, int8_model):
    """A copy of the int8 export folder that a test may damage."""
    folder = tmp_path / "copy"
    shutil.copytree(int8_model.parent, folder)
    return folder / int8_model.name


def write_device_result(tmp_path, model_path, sample_test_split, monkeypatch, emulated, name):
    """Run the device runner on this host and write its result, flagged emulated or not."""
    features, labels, class_names = sample_test_split
    model_metadata = runner.read_model_metadata(model_path)
    rows_path = tmp_path / f"{name}_rows.csv"
    with open(rows_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*model_metadata["feature_names"], "label"])
        for row, label in zip(features[:50], labels[:50]):
            writer.writerow([*(repr(float(v)) for v in row), class_names[label]])
    monkeypatch.setenv(runner.EMULATION_ENV, "1" if emulated else "0")
    result, _ = runner.run_benchmark(model_path, rows_path, warmup=2, runs=20, device_name=name)
    path = tmp_path / f"{name}.json"
    runner.write_json_atomic(path, result)
    return path


def test_bench_reports_all_variants(bench_result):
    names = [variant["name"] for variant in bench_result.report["variants"]]
    assert names == ["tflite_int8", "tflite_float32", "keras_float32", "random_forest"]


def test_bench_variant_figures(bench_result):
    for variant in bench_result.report["variants"]:
        headline = bench.headline_latency(variant)
        assert variant["size_bytes"] > 0, variant["name"]
        assert 0 < variant["gzip_bytes"], variant["name"]
        assert 0.0 <= variant["metrics"]["macro"]["f1"] <= 1.0, variant["name"]
        assert headline["min_us"] <= headline["p50_us"] <= headline["p90_us"] <= headline["p99_us"] <= headline["max_us"]
        assert headline["throughput_flows_per_s"] > 0, variant["name"]
        assert variant["memory"]["peak_rss_bytes"] > 0, variant["name"]


def test_bench_timed_run_counts(bench_result):
    int8, _, keras, forest = bench_result.report["variants"]
    assert bench.headline_latency(int8)["count"] == FAST["runs"]
    assert len(bench.headline_latency(int8)["samples_us"]) == FAST["runs"]
    assert bench.headline_latency(keras)["count"] == FAST["baseline_runs"]
    assert [r["batch_size"] for r in forest["latency"]] == [1, FAST["baseline_batch_size"]]


def test_bench_int8_accuracy_matches_export(bench_result, int8_model):
    export = json.loads((int8_model.parent / "export.json").read_text())
    exported = next(iter(export["variants"].values()))["metrics"]
    assert bench_result.report["variants"][0]["metrics"]["accuracy"] == exported["accuracy"]


def test_bench_skips_batch_of_static_model(bench_result):
    int8 = bench_result.report["variants"][0]
    skipped = [record for record in int8["latency"] if "skipped" in record]
    assert [record["batch_size"] for record in skipped] == [4]
    assert "does not allow batch size 4" in skipped[0]["skipped"]


def test_bench_lists_operators_with_types(bench_result):
    int8, float32 = bench_result.report["variants"][:2]
    conv = next(op for op in int8["operators"] if op["operator"] == "CONV_2D")
    assert conv["input_types"] == ["INT8", "INT8", "INT32"]
    assert "FLOAT32" in next(op for op in float32["operators"] if op["operator"] == "CONV_2D")["input_types"]


def test_bench_records_machine_and_runtime(bench_result):
    machine = bench_result.report["machine"]
    assert machine["tflite_runtime_used"].startswith("ai-edge-litert ")
    assert machine["logical_cpus"] >= 1
    assert machine["cpu_model"]


def test_bench_writes_report_files(bench_result):
    folder = bench_result.out_dir
    for name in ("bench.json", "bench.md"):
        assert (folder / name).is_file(), name
    for name in ("latency.png", "accuracy_vs_size.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_bench_markdown_side_by_side(bench_result):
    text = (bench_result.out_dir / "bench.md").read_text()
    for name in ("| tflite_int8 |", "| tflite_float32 |", "| keras_float32 |", "| random_forest |"):
        assert name in text, name
    assert "## Ratios measured in this run" in text
    assert "n/a (static batch 1)" in text


def test_bench_coral_target_adds_readiness(bench_result):
    int8, float32 = bench_result.report["variants"][:2]
    assert int8["coral"]["ready"] is True
    assert float32["coral"]["ready"] is False
    assert "Coral Edge TPU readiness: model_int8.tflite is ready" in (bench_result.out_dir / "bench.md").read_text()


def test_summarize_latency_statistics():
    stats = bench.summarize_latency(np.array([4000, 2000, 6000, 8000]), batch_size=2, warmup_ns=np.array([50000, 10000]))
    assert stats["count"] == 4
    assert stats["warmup"] == 2
    assert stats["first_us"] == 25.0
    assert stats["warmup_mean_us"] == 15.0
    assert stats["min_us"] == 1.0
    assert stats["max_us"] == 4.0
    assert stats["p50_us"] == 2.5
    assert stats["mean_us"] == 2.5
    assert stats["std_us"] == pytest.approx(np.std([2.0, 1.0, 3.0, 4.0]))
    assert stats["throughput_flows_per_s"] == pytest.approx(8 / 20e-6)


def test_summarize_latency_keys_match_runner():
    stats = bench.summarize_latency(np.array([1000, 2000]), batch_size=1)
    assert set(stats) == {field.name for field in dataclasses.fields(runner.LatencyStats)}
    assert stats["first_us"] is None


def test_bench_rejects_non_tflite_file(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_text("not a model")
    with pytest.raises(IdsEdgeError, match="is not a TFLite model"):
        bench.bench_models([path], tmp_path / "out", bench.BenchOptions(**FAST))


def test_bench_rejects_truncated_model(model_copy, tmp_path):
    model_copy.write_bytes(model_copy.read_bytes()[:3000])
    with pytest.raises(IdsEdgeError, match="is a damaged TFLite file: .*Export it again"):
        bench.bench_models([model_copy], tmp_path / "out", bench.BenchOptions(keras=False, forest=False, memory=False, **FAST))


def test_bench_rejects_mismatched_features(model_copy, tmp_path):
    metadata_path = model_copy.with_suffix(".json")
    model_metadata = json.loads(metadata_path.read_text())
    model_metadata["feature_names"][3] = "Not_A_Feature"
    metadata_path.write_text(json.dumps(model_metadata))
    with pytest.raises(IdsEdgeError, match="first differ at position 3 \\(model 'Not_A_Feature'"):
        bench.bench_models([model_copy], tmp_path / "out", bench.BenchOptions(**FAST))


def test_bench_rejects_missing_run(model_copy, tmp_path):
    (model_copy.parent / "export.json").unlink()
    with pytest.raises(IdsEdgeError, match="Pass the run directory with --run"):
        bench.bench_models([model_copy], tmp_path / "out", bench.BenchOptions(**FAST))


def test_bench_missing_runtime(int8_model, tmp_path):
    options = bench.BenchOptions(runtime="tflite-runtime", **FAST)
    with pytest.raises(MissingRuntimeError, match="No TFLite runtime could be loaded \\(tflite-runtime: "):
        bench.bench_models([int8_model], tmp_path / "out", options)


def test_bench_rejects_unknown_target(int8_model, tmp_path):
    with pytest.raises(IdsEdgeError, match="Unknown --target 'jetson'"):
        bench.bench_models([int8_model], tmp_path / "out", bench.BenchOptions(target="jetson", **FAST))


def test_bench_rejects_zero_runs(int8_model, tmp_path):
    with pytest.raises(IdsEdgeError, match="Invalid option --runs 0"):
        bench.bench_models([int8_model], tmp_path / "out", bench.BenchOptions(**{**FAST, "runs": 0}))


def test_cli_bench_unknown_target(int8_model, tmp_path):
    result = CliRunner().invoke(main, ["bench", str(int8_model), "--out", str(tmp_path / "out"), "--target", "jetson"])
    assert result.exit_code == 2
    assert "Error: Unknown --target 'jetson'" in result.output


def test_import_names_device_and_emulation(bench_result, int8_model, sample_test_split, tmp_path, monkeypatch):
    report_dir = tmp_path / "report"
    shutil.copytree(bench_result.out_dir, report_dir)
    emulated = write_device_result(tmp_path, int8_model, sample_test_split, monkeypatch, True, "qemu-rpi4")
    native = write_device_result(tmp_path, int8_model, sample_test_split, monkeypatch, False, "gateway-7")

    result = CliRunner().invoke(main, ["bench", "--import", str(emulated), "--import", str(native), "--out", str(report_dir)])
    text = (report_dir / "bench.md").read_text()
    emulated_section = text.split("## Emulated runs (not device latency)")[1]

    assert result.exit_code == 0, result.output
    assert [d["device"] for d in json.loads((report_dir / "bench.json").read_text())["devices"]] == ["qemu-rpi4", "gateway-7"]
    assert "qemu-rpi4" in emulated_section
    assert "gateway-7" not in emulated_section
    assert "gateway-7" in text.split("## Device results")[1]
    assert "(tflite_int8)" in emulated_section


def test_import_rejects_other_json(bench_result, tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(IdsEdgeError, match="is not an ids-edge device result"):
        bench.import_device_results(bench_result.out_dir, [path])


def test_import_needs_host_report(tmp_path):
    with pytest.raises(IdsEdgeError, match="Benchmark report .* not found"):
        bench.import_device_results(tmp_path, [tmp_path / "result.json"])


def test_runtime_survey_keeps_skip_reasons(monkeypatch):
    reason = "numpy.core.multiarray failed to import (tflite-runtime 2.14 is built for numpy 1.x and fails under numpy 2)"

    def fake_load_problem(name):
        return None if name == "ai-edge-litert" else reason

    monkeypatch.setattr(bench, "load_problem", fake_load_problem)
    chosen = runtime.Runtime("tensorflow", "2.21.0", object)
    skipped = bench.runtime_survey(chosen)
    assert list(skipped) == ["tflite-runtime"]
    assert "fails under numpy 2" in skipped["tflite-runtime"]
    assert "--runtime" not in skipped["tflite-runtime"]


def test_cli_bench_writes_report(int8_model, tmp_path):
    out = tmp_path / "out"
    arguments = ["bench", str(int8_model), "--out", str(out), "--runs", "20", "--warmup", "2", "--threads", "1",
                 "--threads", "2", "--no-keras", "--no-forest", "--no-memory"]
    result = CliRunner().invoke(main, arguments)
    report = json.loads((out / "bench.json").read_text())
    assert result.exit_code == 0, result.output
    assert "tflite_int8: macro F1" in result.output
    assert [record["threads"] for record in report["variants"][0]["latency"]] == [1, 2]


def test_import_rejects_missing_emulated_flag(bench_result, int8_model, sample_test_split, tmp_path, monkeypatch):
    path = write_device_result(tmp_path, int8_model, sample_test_split, monkeypatch, False, "gateway-8")
    result = json.loads(path.read_text())
    del result["emulated"]
    path.write_text(json.dumps(result))
    with pytest.raises(IdsEdgeError, match="has no 'emulated' key"):
        bench.import_device_results(bench_result.out_dir, [path])


NO_BASELINES = dict(keras=False, forest=False, memory=False, **FAST)


def edit_metadata(model_path, **changes):
    """Rewrite the metadata JSON beside ``model_path`` with ``changes`` applied."""
    path = model_path.with_suffix(".json")
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))
    return data


def test_bench_without_measured_latency_fails(int8_model, tmp_path):
    out = tmp_path / "report"
    bench.bench_models([int8_model], out, bench.BenchOptions(**NO_BASELINES))
    good = (out / "bench.json").read_text()
    options = bench.BenchOptions(**{**NO_BASELINES, "batch_sizes": (4,)})
    with pytest.raises(IdsEdgeError, match="No latency configuration of .* could be measured, so no report was written. Batch 4.*static batch of 1"):
        bench.bench_models([int8_model], out, options)
    assert (out / "bench.json").read_text() == good


def test_skip_note_names_static_batch(bench_result):
    skipped = [r for r in bench_result.report["variants"][0]["latency"] if "skipped" in r][0]["skipped"]
    assert "ids-edge exports models with a static batch of 1" in skipped
    assert "dynamic batch dimension" not in skipped


def test_bench_rejects_other_run(model_copy, tmp_path, sample_run):
    other = tmp_path / "other_run"
    shutil.copytree(sample_run, other)
    with pytest.raises(IdsEdgeError, match=f"exported from run {sample_run}.*but --run names run {other}"):
        bench.bench_models([model_copy], tmp_path / "out", bench.BenchOptions(**NO_BASELINES), run_dir=other)


def test_bench_other_run_allowed_is_marked(model_copy, tmp_path, sample_run):
    other = tmp_path / "other_run"
    shutil.copytree(sample_run, other)
    options = bench.BenchOptions(allow_other_run=True, **NO_BASELINES)
    result = bench.bench_models([model_copy], tmp_path / "out", options, run_dir=other)
    assert result.report["variants"][0]["export_run_dir"] == str(sample_run)
    assert "is evaluated on the test split of run" in (tmp_path / "out" / "bench.md").read_text()


def test_bench_missing_run_not_found(model_copy, tmp_path):
    with pytest.raises(IdsEdgeError, match="Run directory .*nonexist \\(--run\\) not found"):
        bench.bench_models([model_copy], tmp_path / "out", bench.BenchOptions(**NO_BASELINES), run_dir=tmp_path / "nonexist")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("cut_features", "does not match the model .*lists 30 feature names, but the input tensor has shape \\[1, 39, 1\\]"),
        ("string_features", "does not match the model .*'feature_names' must be a non-empty list of name strings, not 'abc'"),
        ("quantize_none", "does not match the model .*quantize='none' and io='int8' give a FLOAT32 input, but the input tensor is INT8"),
        ("extra_class", "does not match the model .*lists 3 class names, but the output tensor has shape \\[1, 2\\]"),
    ],
)
def test_bench_rejects_metadata_contradicting_model(model_copy, tmp_path, change, message):
    data = json.loads(model_copy.with_suffix(".json").read_text())
    changes = {
        "cut_features": {"feature_names": data["feature_names"][:30]},
        "string_features": {"feature_names": "abc"},
        "quantize_none": {"quantize": "none"},
        "extra_class": {"class_names": data["class_names"] + ["Other"]},
    }[change]
    edit_metadata(model_copy, **changes)
    with pytest.raises(IdsEdgeError, match=message):
        bench.bench_models([model_copy], tmp_path / "out", bench.BenchOptions(**NO_BASELINES))


def test_bench_rejects_model_folder(int8_model, tmp_path):
    with pytest.raises(IdsEdgeError, match="is a folder. Pass the .tflite file inside it"):
        bench.bench_models([int8_model.parent], tmp_path / "out", bench.BenchOptions(**NO_BASELINES))


def test_cli_bench_threads_zero_names_value(int8_model, tmp_path):
    result = CliRunner().invoke(main, ["bench", str(int8_model), "--out", str(tmp_path / "out"), "--threads", "2", "--threads", "0"])
    assert "Error: Invalid option --threads 0: use 1 or more." in result.output


def test_bench_notes_threads_above_cpus(int8_model, tmp_path, monkeypatch):
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 1)
    result = bench.bench_models([int8_model], tmp_path / "out", bench.BenchOptions(**{**NO_BASELINES, "threads": (2,)}))
    assert "--threads 2 is more than the 1 logical CPUs" in result.report["notes"][0]


def test_bench_model_file_is_absolute(bench_result):
    for variant in bench_result.report["variants"][:3]:
        assert variant["model_file"].startswith("/"), variant["name"]


def test_keras_timed_with_predict_and_call(bench_result):
    keras = bench_result.report["variants"][2]
    assert [(r["mode"], r["batch_size"]) for r in keras["latency"]] == [("predict", 1), ("predict", 32), ("call", 1), ("call", 32)]


def test_ratio_labels_predict_overhead(bench_result):
    text = (bench_result.out_dir / "bench.md").read_text()
    assert "tflite_int8 (1 thread) against keras_float32 model.predict (includes predict()'s per-call overhead; threads: TensorFlow default" in text
    assert "tflite_int8 (1 thread) against keras_float32 model(x, training=False)" in text


def test_forest_threads_match_engine(bench_result):
    forest = bench_result.report["variants"][3]
    assert "n_jobs=1" in forest["engine"]
    assert {record["threads"] for record in forest["latency"]} == {1}


def test_report_states_sizes_and_baseline_warmup(bench_result):
    text = (bench_result.out_dir / "bench.md").read_text()
    assert "Keras and RandomForest: 3 warm-up and 3 timed calls" in text
    assert "the run's .keras archive for Keras" in text


def test_report_omits_forest_rows_without_forest(int8_model, tmp_path):
    bench.bench_models([int8_model], tmp_path / "out", bench.BenchOptions(**NO_BASELINES))
    assert "RandomForest trains" not in (tmp_path / "out" / "bench.md").read_text()


def test_cli_bench_hides_xnnpack_line(int8_model, tmp_path):
    # A new process, because LiteRT prints the XNNPACK line once per process.
    arguments = [sys.executable, "-m", "ids_edge.cli", "bench", str(int8_model), "--out", str(tmp_path / "out"), "--runs", "5",
                 "--warmup", "1", "--no-keras", "--no-forest", "--no-memory"]
    completed = subprocess.run(arguments, capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
    assert "XNNPACK" not in completed.stderr


@pytest.fixture
def device_result(tmp_path, int8_model, sample_test_split, monkeypatch):
    return write_device_result(tmp_path, int8_model, sample_test_split, monkeypatch, False, "gateway-9")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (("latency", "p50_us"), "fast", "latency.p50_us is 'fast', but it must be a finite number"),
        (("metrics", "accuracy"), 1.5, "metrics.accuracy is 1.5, but it must be between 0.0 and 1.0"),
        (("latency", "count"), 0, "latency.count is 0, but it must be an integer of 1 or more"),
    ],
)
def test_import_rejects_bad_values(bench_result, device_result, field, value, message):
    data = json.loads(device_result.read_text())
    data[field[0]][field[1]] = value
    device_result.write_text(json.dumps(data))
    with pytest.raises(IdsEdgeError, match=message):
        bench.import_device_results(bench_result.out_dir, [device_result])


def test_import_rejects_folder(bench_result, int8_model):
    with pytest.raises(IdsEdgeError, match="is a folder, but --import expects a result.json file"):
        bench.import_device_results(bench_result.out_dir, [int8_model.parent])


def test_import_rejects_empty_out(device_result):
    with pytest.raises(IdsEdgeError, match="Invalid --out: it is empty"):
        bench.import_device_results("", [device_result])


def test_import_escapes_markdown_cells(bench_result, device_result, tmp_path):
    report_dir = tmp_path / "report"
    shutil.copytree(bench_result.out_dir, report_dir)
    data = json.loads(device_result.read_text())
    data["device"] = "pi|lab"
    device_result.write_text(json.dumps(data))
    bench.import_device_results(report_dir, [device_result])
    assert "| pi\\|lab (" in (report_dir / "bench.md").read_text()


def test_import_twice_keeps_one_row(bench_result, device_result, tmp_path):
    report_dir = tmp_path / "report"
    shutil.copytree(bench_result.out_dir, report_dir)
    bench.import_device_results(report_dir, [device_result])
    result = bench.import_device_results(report_dir, [device_result])
    assert [d["device"] for d in result.report["devices"]] == ["gateway-9"]
    assert "replaced an earlier result" in result.summary_lines()[-2]


def test_import_shows_outputs_match_column(bench_result, device_result, tmp_path):
    report_dir = tmp_path / "report"
    shutil.copytree(bench_result.out_dir, report_dir)
    data = json.loads(device_result.read_text())
    data["outputs_match_expected"] = True
    device_result.write_text(json.dumps(data))
    bench.import_device_results(report_dir, [device_result])
    row = [line for line in (report_dir / "bench.md").read_text().splitlines() if line.startswith("| gateway-9")][0]
    assert "| yes |" in row


def test_bench_empty_metadata_names_next_step(model_copy, tmp_path):
    model_copy.with_suffix(".json").write_text("{}")
    with pytest.raises(IdsEdgeError, match="is not ids-edge model metadata .*Export the model again"):
        bench.bench_models([model_copy], tmp_path / "out", bench.BenchOptions(**NO_BASELINES))


@pytest.fixture(scope="module")
def synthetic_bench(tmp_path_factory):
    """A benchmark of an int8 export of a 2-class run trained for 1 epoch on synthetic rows."""
    from ids_edge import synthetic

    folder = tmp_path_factory.mktemp("synthetic_bench")
    data_dir = synthetic.write_synthetic_dataset(folder / "data", rows_per_file=6)
    runner_cli = CliRunner()
    trained = runner_cli.invoke(main, ["train", "--data", str(data_dir), "--task", "2", "--epochs", "1", "--out", str(folder / "run")])
    assert trained.exit_code == 0, trained.output
    exported = runner_cli.invoke(main, [
        "export", str(folder / "run"), "--max-accuracy-drop", "100", "--max-macro-f1-drop", "100", "--out", str(folder / "export"),
    ])
    assert exported.exit_code == 0, exported.output
    options = bench.BenchOptions(keras=False, forest=False, memory=False, **FAST)
    return bench.bench_models([folder / "export" / "model_int8.tflite"], folder / "report", options)


def test_bench_synthetic_report_labelled(synthetic_bench):
    assert synthetic_bench.report["synthetic_data"] is True
    assert json.loads((synthetic_bench.out_dir / "bench.json").read_text())["synthetic_data"] is True
    lines = (synthetic_bench.out_dir / "bench.md").read_text().splitlines()
    assert lines[0] == "# ids-edge benchmark: host CPU (SYNTHETIC data, not CICIoMT2024 results)"
    assert lines[2].startswith("**SYNTHETIC data:**")
    assert synthetic_bench.summary_lines()[0].startswith("SYNTHETIC data:")


def test_bench_synthetic_plot_titles(synthetic_bench, tmp_path, monkeypatch):
    import matplotlib.axes

    titles = []
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", lambda axes, title, **kwargs: titles.append(title))
    bench.write_report_files(synthetic_bench.report, tmp_path)
    assert len(titles) == 2
    for title in titles:
        assert "(SYNTHETIC data, not CICIoMT2024 results)" in title


def test_bench_real_report_not_synthetic(bench_result):
    assert bench_result.report["synthetic_data"] is False
    assert "SYNTHETIC" not in (bench_result.out_dir / "bench.md").read_text()
