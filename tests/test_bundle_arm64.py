"""Run a bundle's runner.py on ARM under qemu-user and compare its int8 outputs with x86.

tests/arm64/prepare.sh builds two Debian 12 roots in <repository>/.cache/arm64 (or in
IDS_EDGE_ARM64_CACHE): arm64 with ai-edge-litert and numpy 2 (the 64-bit OS install), and armhf
with tflite-runtime 2.14.0 and Debian's numpy 1.24 (the 32-bit OS install). Each emulated run
must give the same int8 outputs, bit for bit, as the same runtime version on this x86 host.

When a root is missing, this module runs prepare.sh itself if it can (root user), and otherwise
skips with the reason. IDS_EDGE_REQUIRE_ARM64=1 turns that skip into a failure, for CI machines
that ran prepare.sh.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import ids_edge  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from ids_edge import bundle, runner
from ids_edge.metadata import read_metadata

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
PREPARE = REPO_ROOT / "tests" / "arm64" / "prepare.sh"
CACHE = pathlib.Path(os.environ.get("IDS_EDGE_ARM64_CACHE", REPO_ROOT / ".cache" / "arm64"))
SITE_PACKAGES = "opt/ids-edge/site-packages"
PYTHON = "usr/bin/python3.11"
ROOTS = {"arm64": CACHE / "root", "armhf": CACHE / "armhf" / "root"}
READY = {"arm64": CACHE / "ready", "armhf": CACHE / "armhf" / "ready"}
QEMU = {"arm64": "qemu-aarch64-static", "armhf": "qemu-arm-static"}
X86_TFLITE_RUNTIME = CACHE / "x86-tflite-runtime"


def _unavailable(reason):
    if os.environ.get("IDS_EDGE_REQUIRE_ARM64") == "1":
        pytest.fail(f"ARM check required (IDS_EDGE_REQUIRE_ARM64=1) but unavailable: {reason}")
    pytest.skip(f"ARM check skipped: {reason}")


def _prepared_root(part):
    """Return the root for ``part``, running prepare.sh first when it is missing and this user is root."""
    if not READY[part].is_file():
        if os.geteuid() != 0:
            _unavailable(f"{READY[part]} is missing and prepare.sh needs root (apt-get). Run: sudo {PREPARE} {CACHE}")
        completed = subprocess.run(
            ["sh", str(PREPARE), str(CACHE), part], capture_output=True, text=True, timeout=1800, check=False
        )
        if completed.returncode != 0:
            _unavailable(f"{PREPARE} failed (no network?): {completed.stderr.strip()[-600:]}")
    if shutil.which(QEMU[part]) is None:
        _unavailable(f"{QEMU[part]} is not on PATH. Run tests/arm64/prepare.sh, which installs qemu-user-static.")
    return ROOTS[part]


def _run_runner(prefix, environment, bundle_dir, work, extra=()):
    """Run the bundled runner.py with ``prefix`` (an interpreter command); return its result and outputs."""
    work.mkdir(parents=True, exist_ok=True)
    command = [
        *prefix, str(bundle_dir / "runner.py"),
        "--model", str(bundle_dir / "model.tflite"), "--rows", str(bundle_dir / "rows.csv"),
        "--out", str(work / "result.json"), "--outputs", str(work / "outputs.npy"),
        "--warmup", "2", "--runs", "20", *extra,
    ]
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work), **environment}
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads((work / "result.json").read_text()), np.load(work / "outputs.npy")


@pytest.fixture(scope="module")
def rpi_bundle(tmp_path_factory, int8_model):
    """The int8 model bundled with the real CICIoMT2024 test rows."""
    return bundle.make_bundle(int8_model, "rpi", tmp_path_factory.mktemp("arm") / "bundle")


# Raspberry Pi 4 and 5 cores. NOTE: with QEMU_CPU=max (qemu 7.2, every emulated extension) the
# int8 outputs of a small test model differed from x86 in most rows, so only named cores are used.
@pytest.fixture(scope="module", params=["cortex-a72", "cortex-a76"])
def arm64_run(request, rpi_bundle, tmp_path_factory):
    """Run the bundle on emulated aarch64 with ai-edge-litert."""
    root = _prepared_root("arm64")
    environment = {
        # qemu-user reads QEMU_LD_PREFIX like -L. The runner also counts it as a sign of emulation.
        "QEMU_LD_PREFIX": str(root),
        # prepare.sh's /proc/cpuinfo describes a Cortex-A72, and QEMU_CPU sets the emulated features.
        "QEMU_CPU": request.param,
        "PYTHONPATH": str(root / SITE_PACKAGES),
    }
    prefix = [QEMU["arm64"], str(root / PYTHON)]
    work = tmp_path_factory.mktemp(f"arm64-{request.param}")
    return _run_runner(prefix, environment, rpi_bundle.out_dir, work, ["--device-name", "qemu-aarch64"])


@pytest.fixture(scope="module")
def x86_outputs(int8_model, sample_test_split):
    """The int8 outputs of this host's ai-edge-litert for the real test rows."""
    features, _, _ = sample_test_split
    interpreter = runner.load_interpreter(int8_model, num_threads=1)
    inputs = runner.prepare_inputs(features, read_metadata(int8_model), runner.input_detail(interpreter))
    return runner.predict(interpreter, inputs)


def _differing_rows(outputs, expected):
    if outputs.shape != expected.shape:
        return -1
    return int(np.any(outputs != expected, axis=1).sum())


def test_arm64_runs_on_aarch64(arm64_run):
    result, _ = arm64_run
    assert result["platform"]["machine"] == "aarch64"
    assert result["runtime"]["name"] == "ai-edge-litert"


def test_arm64_outputs_match_x86_bit_for_bit(arm64_run, x86_outputs):
    _, outputs = arm64_run
    differing = _differing_rows(outputs, x86_outputs)
    assert outputs.dtype == np.int8
    assert outputs.shape == x86_outputs.shape
    assert differing == 0, f"{differing} of {len(outputs)} rows differ between aarch64 and x86"


def test_arm64_checksum_matches_bundle(arm64_run, rpi_bundle):
    result, _ = arm64_run
    assert result["outputs"]["sha256"] == rpi_bundle.expected_outputs_sha256


def test_arm64_timings_marked_emulated(arm64_run):
    result, _ = arm64_run
    assert result["emulated"] is True
    assert result["latency"]["is_device_latency"] is False
    assert "not device latency" in result["latency"]["note"]


def test_arm64_emulation_seen_in_process_name(arm64_run):
    result, _ = arm64_run
    assert "the process name is qemu-aarch64-st" in result["emulation_hints"]


def test_arm64_metrics_match_x86(arm64_run, x86_outputs, sample_test_split):
    result, _ = arm64_run
    _, labels, class_names = sample_test_split
    expected = runner.classification_metrics(labels, np.argmax(x86_outputs, axis=1), len(class_names))
    assert result["metrics"] == expected


# 32-bit OS: tflite-runtime 2.14.0 with numpy 1.x. Raspberry Pi 2's core, and a 32-bit ARMv7 core
# with the same NEON and VFPv4 features as the AArch32 mode of later Raspberry Pi cores.
@pytest.fixture(scope="module", params=["cortex-a7", "cortex-a15"])
def armhf_run(request, rpi_bundle, tmp_path_factory):
    """Run the bundle on emulated armv7l with tflite-runtime and Debian's numpy."""
    root = _prepared_root("armhf")
    environment = {"QEMU_LD_PREFIX": str(root), "QEMU_CPU": request.param, "PYTHONPATH": str(root / SITE_PACKAGES)}
    prefix = [QEMU["armhf"], str(root / PYTHON)]
    work = tmp_path_factory.mktemp(f"armhf-{request.param}")
    return _run_runner(prefix, environment, rpi_bundle.out_dir, work, ["--device-name", "qemu-arm"])


@pytest.fixture(scope="module")
def x86_tflite_runtime_run(rpi_bundle, tmp_path_factory):
    """Run the bundle on this host with the same tflite-runtime version and numpy 1.x."""
    _prepared_root("armhf")
    environment = {"PYTHONPATH": str(X86_TFLITE_RUNTIME), runner.EMULATION_ENV: "0"}
    work = tmp_path_factory.mktemp("x86-tflite-runtime")
    return _run_runner([sys.executable], environment, rpi_bundle.out_dir, work, ["--runtime", "tflite-runtime"])


def test_armhf_runs_tflite_runtime_with_numpy1(armhf_run):
    result, _ = armhf_run
    assert result["platform"]["machine"] == "armv7l"
    assert result["platform"]["numpy"].startswith("1.")
    assert result["runtime"]["name"] == "tflite-runtime"
    assert result["runtime"]["version"] == "2.14.0"


def test_x86_reference_uses_same_runtime(x86_tflite_runtime_run):
    result, _ = x86_tflite_runtime_run
    assert result["platform"]["machine"] == "x86_64"
    assert result["runtime"]["name"] == "tflite-runtime"
    assert result["runtime"]["version"] == "2.14.0"


def test_armhf_outputs_match_x86_bit_for_bit(armhf_run, x86_tflite_runtime_run):
    _, outputs = armhf_run
    _, expected = x86_tflite_runtime_run
    differing = _differing_rows(outputs, expected)
    assert outputs.dtype == np.int8
    assert differing == 0, f"{differing} of {len(outputs)} rows differ between armv7l and x86 (tflite-runtime 2.14.0)"


def test_armhf_timings_marked_emulated(armhf_run):
    result, _ = armhf_run
    assert result["emulated"] is True
    assert result["latency"]["is_device_latency"] is False
