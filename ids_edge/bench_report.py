"""Render a benchmark report (the dict that :mod:`ids_edge.bench` writes as ``bench.json``).

Produces the Markdown page and two PNG plots: the latency distribution per variant and the
accuracy (macro F1) against the size on disk.
"""

import pathlib

MIB = 1024 * 1024


def _headline(variant):
    for record in variant.get("latency", []):
        if "p50_us" in record and record["batch_size"] == 1:
            return record
    return None


def _batch_record(variant):
    for record in variant.get("latency", []):
        if "p50_us" in record and record["batch_size"] > 1:
            return record
    return None


def data_label(report):
    """Return the note that a report from synthetic data carries in every title: "" for real data."""
    from ids_edge.synthetic import data_label as label

    return label({"synthetic": report.get("synthetic_data", False)})


def _number(value, digits=1):
    return "n/a" if value is None else f"{value:,.{digits}f}"


def cell(value):
    """Return ``value`` as text for one Markdown table cell: ``|`` escaped and line breaks as spaces."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _threads(record):
    threads = record.get("threads")
    return "runtime default" if threads is None else str(threads)


def _memory_cell(variant):
    memory = variant.get("memory")
    if not memory:
        return "not measured"
    if "skipped" in memory:
        return "skipped"
    return f"{memory['peak_rss_bytes'] / MIB:.1f} ({memory['model_rss_bytes'] / MIB:+.1f})"


def _header(report):
    machine = report["machine"]
    data = report["data"]
    options = report["options"]
    versions = machine["versions"]
    kinds = {variant["kind"] for variant in report["variants"]}
    lines = [f"# ids-edge benchmark: host CPU{data_label(report)}", ""]
    if report.get("synthetic_data"):
        lines += [
            "**SYNTHETIC data:** the run was trained and evaluated on synthetic rows, so the accuracy and F1 figures "
            "below are not CICIoMT2024 results.",
            "",
        ]
    lines += [
        f"Measured from {report['started_at']} to {report['finished_at']} in one process run. The medians (p50) "
        "and ratios below come from this run only; the machine may be shared and noisy, so compare figures within "
        "one report rather than across reports.",
        "",
        f"- Run: `{report['run_dir']}`, task {data['task']} ({', '.join(data['classes'])}).",
        f"- Data: {data['test_rows']} test rows from {data['origin']}"
        + (f"; the RandomForest trains on its {data['train_rows']} training rows." if "forest" in kinds else "."),
        f"- Machine: {machine['cpu_model']}, {machine['logical_cpus']} logical CPUs, {machine['machine']}, "
        f"{machine['os']} (kernel {machine['kernel']}), Python {machine['python']}.",
        f"- TFLite runtime: {machine['tflite_runtime_used']}. TensorFlow {versions.get('tensorflow')}, tf_keras "
        f"{versions.get('tf_keras')}, numpy {versions.get('numpy')}, scikit-learn {versions.get('scikit-learn')}.",
    ]

    for name, reason in report.get("runtimes_skipped", {}).items():
        lines.append(f"- Runtime {name} skipped: {reason}")

    baseline_warmup = report.get("baseline_warmup", min(options["warmup"], 3))
    lines.append(
        f"- Timing: {report['clock']}. TFLite: {options['warmup']} warm-up and {options['runs']} timed invocations "
        f"per configuration; Keras and RandomForest: {baseline_warmup} warm-up and {options['baseline_runs']} timed "
        "calls per mode and flows per call."
    )
    if kinds & {"keras", "forest"}:
        lines.append(
            "- Size: the .tflite file for TFLite; the run's .keras archive for Keras; for the RandomForest, its joblib "
            "pickle, written to a temporary file, measured and deleted."
        )

    for note in report.get("notes", []):
        lines.append(f"- Note: {note}")

    load = report.get("load_average_1min") or {}
    if load.get("start") is not None:
        lines.append(
            f"- Load average (1 minute) of this machine: {load['start']} at the start, {load.get('end')} at the end, "
            f"on {machine['logical_cpus']} logical CPUs. A load near or above the CPU count means other processes "
            "competed for the CPU while timing."
        )

    if report.get("command"):
        lines.append(f"- Command: `{report['command']}`")
    lines.append("")
    return lines


def _side_by_side(report):
    lines = [
        "## Side by side",
        "",
        "Latency is per flow (one input row) in microseconds. \"1 flow per call\" is one `invoke()` or one "
        "`predict` call on one row; the batch column divides one call's time by its rows. Peak RSS is that of a "
        "separate Python process that loads only this variant and runs it, with the share added by loading and "
        "running the model in brackets.",
        "",
        "| variant | engine | size (bytes) | gzip (bytes) | accuracy | macro F1 | p50, 1 flow per call | p99, 1 flow per call "
        "| flows/s, 1 flow per call | p50 per flow in a batch call | peak RSS MiB (model) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in report["variants"]:
        one = _headline(variant)
        batch = _batch_record(variant)
        batch_cell = f"{batch['p50_us']:,.2f} ({batch['batch_size']} rows)" if batch else "n/a"
        if batch is None and variant["kind"] == "tflite":
            skipped = [r for r in variant["latency"] if "skipped" in r]
            batch_cell = "n/a (static batch 1)" if skipped else "not requested"
        metrics = variant["metrics"]
        lines.append(
            f"| {cell(variant['name'])} | {cell(variant['engine'])} | {variant['size_bytes']:,} | {variant['gzip_bytes']:,} | "
            f"{metrics['accuracy']:.4f} | {metrics['macro']['f1']:.4f} | {_number(one and one['p50_us'], 2)} | "
            f"{_number(one and one['p99_us'], 2)} | {_number(one and one['throughput_flows_per_s'], 0)} | {batch_cell} | "
            f"{_memory_cell(variant)} |"
        )
    lines.append("")
    return lines


def _one_flow_record(variant, mode):
    for record in variant.get("latency", []):
        if "p50_us" in record and record["batch_size"] == 1 and record["mode"] == mode:
            return record
    return None


def _reference_label(reference, mode, record):
    if reference["kind"] == "keras" and mode == "predict":
        return f"{reference['name']} model.predict (includes predict()'s per-call overhead; threads: {record['threads']})"
    if reference["kind"] == "keras":
        return f"{reference['name']} model(x, training=False) (threads: {record['threads']})"
    if reference["kind"] == "forest":
        return f"{reference['name']} predict ({_threads(record)} thread)"
    return f"{reference['name']} ({_threads(record)} thread{'s' if record.get('threads') != 1 else ''})"


def _ratio_line(candidate, reference, mode):
    one, reference_one = _headline(candidate), _one_flow_record(reference, mode)
    parts = [f"file {reference['size_bytes'] / candidate['size_bytes']:.1f}x smaller" if candidate["size_bytes"] <= reference["size_bytes"]
             else f"file {candidate['size_bytes'] / reference['size_bytes']:.1f}x larger"]
    if one and reference_one:
        speed = reference_one["p50_us"] / one["p50_us"]
        parts.append(f"p50 per flow {speed:.1f}x faster" if speed >= 1 else f"p50 per flow {1 / speed:.1f}x slower")
    change = 100 * (candidate["metrics"]["macro"]["f1"] - reference["metrics"]["macro"]["f1"])
    parts.append(f"macro F1 {change:+.2f} pp")
    threads = f" ({_threads(one)} thread{'s' if one and one.get('threads') != 1 else ''})" if one else ""
    label = _reference_label(reference, mode, reference_one) if reference_one else reference["name"]
    return f"- {candidate['name']}{threads} against {label}: " + ", ".join(parts) + "."


def _ratios(report):
    variants = report["variants"]
    by_kind = {}
    for variant in variants:
        by_kind.setdefault(variant["kind"], []).append(variant)
    references = []
    float_tflite = next((v for v in by_kind.get("tflite", []) if v.get("quantize") == "none"), None)
    if float_tflite:
        references.append(float_tflite)
    references += by_kind.get("keras", []) + by_kind.get("forest", [])
    lines = [
        "## Ratios measured in this run",
        "",
        "Ratios of p50 latency with one flow per call, and of file size. Keras is timed twice: with `model.predict`, "
        "as the model is deployed without export, whose time per call is mostly predict()'s own overhead on one row, "
        "and with a direct `model(x, training=False)` call. Keras runs on TensorFlow's default threads, TFLite on the "
        "thread count named beside it.",
        "",
    ]
    for candidate in by_kind.get("tflite", []):
        for reference in references:
            if reference is candidate:
                continue
            if reference["kind"] == "keras":
                modes = ("predict", "call")
            elif reference["kind"] == "tflite":
                modes = ("invoke",)
            else:
                modes = ("predict",)
            for mode in modes:
                lines.append(_ratio_line(candidate, reference, mode))
    lines.append("")
    return lines


def _latency_table(report):
    lines = [
        "## Latency per configuration (microseconds per flow)",
        "",
        "| variant | mode | threads | flows per call | first warm-up | warm-up mean | count | mean | std | min | p50 | p90 "
        "| p99 | max | flows/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    skipped = []
    for variant in report["variants"]:
        for record in variant["latency"]:
            threads = _threads(record)
            if "skipped" in record:
                skipped.append(f"- {variant['name']}, threads={threads}, batch {record['batch_size']}: skipped. {record['skipped']}")
                continue
            lines.append(
                f"| {cell(variant['name'])} | {record['mode']} | {cell(threads)} | {record['batch_size']} | "
                f"{_number(record.get('first_us'), 2)} | {_number(record.get('warmup_mean_us'), 2)} | {record['count']} | "
                f"{record['mean_us']:,.2f} | {record['std_us']:,.2f} | {record['min_us']:,.2f} | {record['p50_us']:,.2f} | "
                f"{record['p90_us']:,.2f} | {record['p99_us']:,.2f} | {record['max_us']:,.2f} | "
                f"{record['throughput_flows_per_s']:,.0f} |"
            )
    lines.append("")
    if skipped:
        lines += skipped + [""]
    return lines


def _operators(report):
    lines = ["## TFLite operators and tensor types", ""]
    for variant in report["variants"]:
        if variant["kind"] != "tflite":
            continue
        lines.append(
            f"`{variant['name']}`: input {variant['input']['dtype']} {variant['input']['shape_signature']}, output "
            f"{variant['output']['dtype']} {variant['output']['shape']}."
        )
        lines.append("")
        lines += ["| # | operator | input types | output types |", "|---|---|---|---|"]
        for op in variant["operators"]:
            lines.append(f"| {op['index']} | {op['operator']} | {', '.join(op['input_types'])} | {', '.join(op['output_types'])} |")
        lines.append("")
    return lines


def _memory_notes(report):
    notes = []
    for variant in report["variants"]:
        memory = variant.get("memory")
        if memory and "skipped" in memory:
            notes.append(f"- {variant['name']}: peak memory skipped, {memory['skipped']}")
    return (["## Memory probes that did not run", ""] + notes + [""]) if notes else []


def _device_rows(devices):
    rows = [
        "| device | model (host variant) | runtime | threads | flows per call | count | p50 | p90 | p99 | flows/s | accuracy "
        "| macro F1 | peak RSS MiB | outputs match bundle | result file |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for device in devices:
        latency = device["latency"]
        metrics = device.get("metrics") or {}
        peak = device.get("peak_rss_bytes")
        variant = device.get("host_variant") or "not benchmarked on the host"
        runtime = device["runtime"]
        rows.append(
            f"| {cell(device['device'])} ({cell(device['platform'].get('machine', '?'))}) | "
            f"{cell(device['model'].get('file'))} ({cell(variant)}) | "
            f"{cell(runtime.get('name'))} {cell(runtime.get('version'))} | {cell(runtime.get('num_threads'))} | "
            f"{latency.get('batch_size')} | {latency.get('count')} | {_number(latency.get('p50_us'), 2)} | "
            f"{_number(latency.get('p90_us'), 2)} | {_number(latency.get('p99_us'), 2)} | "
            f"{_number(latency.get('throughput_flows_per_s'), 0)} | {_number(metrics.get('accuracy'), 4)} | "
            f"{_number(metrics.get('f1_macro'), 4)} | {_number(peak / MIB if peak else None, 1)} | "
            f"{_match_cell(device)} | {cell(pathlib.Path(device.get('source_file', '')).name)} |"
        )
    return rows


def _match_cell(device):
    match = device.get("outputs_match_expected")
    if match is None:
        return "not checked"
    return "yes" if match else "no"


def _devices(report):
    devices = report.get("devices", [])
    measured = [d for d in devices if not d["emulated"]]
    emulated = [d for d in devices if d["emulated"]]
    lines = []
    if measured:
        lines += ["## Device results", "", "Measured on the named devices with `ids_edge/runner.py`; latency in "
                  "microseconds per flow.", ""]
        lines += _device_rows(measured) + [""]
    if emulated:
        lines += [
            "## Emulated runs (not device latency)",
            "",
            "These ran under CPU emulation (for example qemu user mode on this host). They check that the bundle works "
            "and that the outputs match; their timings measure the emulator and say nothing about the device's speed. "
            "Their peak RSS includes the emulator's own memory.",
            "",
        ]
        lines += _device_rows(emulated) + [""]
        for device in emulated:
            hints = "; ".join(device.get("emulation_hints", [])) or "flagged as emulated"
            lines.append(f"- {cell(device['device'])}: emulated ({hints}).")
        lines.append("")
    if devices:
        lines += [
            "\"outputs match bundle\" compares the SHA-256 of the device's raw outputs with the one the host recorded "
            "in bundle.json (\"not checked\" when the runner ran outside a bundle or on another model or rows file). "
            "A runtime version other than the host's may legitimately differ by one quantization step on some rows.",
            "",
        ]
    return lines


def _coral(report):
    from ids_edge import coral

    lines = []
    for variant in report["variants"]:
        readiness = variant.get("coral")
        if readiness is None:
            continue
        lines += coral.format_markdown(coral.report_from_dict(readiness))
    return lines


def render_markdown(report):
    """Render the whole report as one Markdown page."""
    lines = _header(report)
    lines += _side_by_side(report)
    lines += _ratios(report)
    lines += _latency_table(report)
    lines += _memory_notes(report)
    lines += _devices(report)
    lines += _coral(report)
    lines += _operators(report)
    lines += ["## Plots", "", "![Latency per flow](latency.png)", "", "![Macro F1 against size](accuracy_vs_size.png)", ""]
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_latency(report, path):
    """Plot each host measurement's per-flow latency distribution as a box plot (log scale)."""
    plt = _pyplot()
    labels, samples = [], []
    for variant in report["variants"]:
        for record in variant["latency"]:
            if record.get("samples_us"):
                threads = f", {record['threads']} thr" if isinstance(record.get("threads"), int) else ""
                labels.append(f"{variant['name']} ({record['mode']}, {record['batch_size']}/call{threads})")
                samples.append(record["samples_us"])
    figure, axes = plt.subplots(figsize=(9, 1.0 + 0.45 * max(1, len(labels))))
    if samples:
        style = {"showfliers": True, "flierprops": {"markersize": 2}}
        try:
            axes.boxplot(samples, orientation="horizontal", **style)
        except TypeError:  # Matplotlib before 3.10 has no orientation argument.
            axes.boxplot(samples, vert=False, **style)
        axes.set_yticks(range(1, len(labels) + 1), labels, fontsize=8)
        axes.set_xscale("log")
    axes.set_xlabel("latency per flow (microseconds, log scale)")
    axes.set_title(f"Host CPU latency per flow: {report['machine']['cpu_model']}{data_label(report)}", fontsize=9)
    axes.grid(axis="x", which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_accuracy_vs_size(report, path):
    """Plot macro F1 on the test split against the size on disk of each variant."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for variant in report["variants"]:
        size, f1 = variant["size_bytes"], variant["metrics"]["macro"]["f1"]
        axes.scatter([size], [f1], s=40)
        axes.annotate(variant["name"], (size, f1), textcoords="offset points", xytext=(5, 5), fontsize=8)
    axes.set_xscale("log")
    axes.margins(x=0.25, y=0.1)
    axes.set_xlabel("size on disk (bytes, log scale)")
    axes.set_ylabel("macro F1 on the test split")
    title = f"Macro F1 against size ({report['data']['test_rows']} test rows, {report['data']['origin']})"
    if report.get("synthetic_data") and data_label(report) not in title:
        title += data_label(report)
    axes.set_title(title, fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
