#!/usr/bin/env bash
# Reproduce the host benchmark behind benchmarks/BENCH.md in one go:
#   1. train the CNN on the bundled sample of real CICIoMT2024 rows (seed 0);
#   2. export it as full-integer int8 and as float32 TFLite;
#   3. run `ids-edge bench` on both, beside the float Keras model and a RandomForest, with the
#      Coral Edge TPU readiness of each model.
#
# Usage: bash benchmarks/run_bench.sh [WORK_DIR]
# WORK_DIR (default: a new temporary folder) receives run/, int8/, float32/ and bench/; the
# report is WORK_DIR/bench/bench.md. Set IDS_EDGE to use another ids-edge command.
set -euo pipefail

cd "$(dirname "$0")/.."
ids_edge=${IDS_EDGE:-.venv/bin/ids-edge}
work=${1:-$(mktemp -d -t ids-edge-bench.XXXXXX)}
mkdir -p "$work"

"$ids_edge" train --out "$work/run" --seed 0
"$ids_edge" export "$work/run" --quantize int8 --out "$work/int8"
"$ids_edge" export "$work/run" --quantize none --out "$work/float32"
# A report from an earlier run of this script is replaced.
if [ -f "$work/bench/bench.json" ]; then
    rm -rf "$work/bench"
fi
"$ids_edge" bench "$work/int8/model_int8.tflite" "$work/float32/model_none.tflite" \
    --threads 1 --threads 2 --batch-size 1 --batch-size 32 \
    --runs 2000 --warmup 50 --baseline-runs 50 --target coral --out "$work/bench"

# 4. When tests/arm64/prepare.sh has built the arm64 root, run the bundled runner.py on emulated
#    aarch64 (qemu user mode, Cortex-A72 as in a Raspberry Pi 4) and import its result. The report
#    lists it under "Emulated runs": those timings measure qemu, not a Raspberry Pi.
arm64=.cache/arm64
if [ -f "$arm64/ready" ] && command -v qemu-aarch64-static >/dev/null; then
    "$ids_edge" bundle "$work/int8/model_int8.tflite" --target rpi --out "$work/bundle-rpi"
    env -i PATH="$PATH" HOME="$work" QEMU_LD_PREFIX="$PWD/$arm64/root" QEMU_CPU=cortex-a72 \
        PYTHONPATH="$PWD/$arm64/root/opt/ids-edge/site-packages" \
        qemu-aarch64-static "$arm64/root/usr/bin/python3.11" "$work/bundle-rpi/runner.py" \
        --model "$work/bundle-rpi/model.tflite" --rows "$work/bundle-rpi/rows.csv" \
        --out "$work/qemu-aarch64.json" --warmup 10 --runs 200 --device-name qemu-aarch64-cortex-a72
    "$ids_edge" bench --import "$work/qemu-aarch64.json" --out "$work/bench"
else
    echo "Skipped the emulated aarch64 run: $arm64/ready or qemu-aarch64-static is missing (run tests/arm64/prepare.sh)."
fi

echo "Report: $work/bench/bench.md"
