#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine, then run it.
#
# 1. a virtual environment in .venv with ids-edge and its test extras;
# 2. the Debian arm64 root that the aarch64 bundle test runs under qemu-user-static
#    (tests/arm64/prepare.sh; needs root for apt-get, cached in .cache/arm64);
# 3. pytest, whose exit code is this script's (5, "no tests collected", counts as a failure).
#
# Extra arguments go to pytest, e.g. `bash tests/run.sh -k export`.
set -euo pipefail

cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'

# Cross compilers let the firmware tests build the generated C for 32-bit Arm and aarch64 and run
# it under qemu-user. Without them those builds are skipped, and the skip gives the reason.
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    missing=""
    for tool in aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu arm-linux-gnueabihf-gcc:gcc-arm-linux-gnueabihf; do
        command -v "${tool%%:*}" >/dev/null || missing="$missing ${tool#*:}"
    done
    if [ -n "$missing" ]; then
        (apt-get install -y -qq $missing || (apt-get update -qq && apt-get install -y -qq $missing)) >/dev/null ||
            echo "tests/run.sh: could not install$missing; the Arm firmware builds will be skipped." >&2
    fi
fi

if [ -f tests/arm64/prepare.sh ]; then
    if ! IDS_EDGE_PIP=".venv/bin/python -m pip" sh tests/arm64/prepare.sh; then
        echo "tests/run.sh: preparing the arm64 root failed; the aarch64 bundle test will report why it skipped." >&2
    fi
fi

status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "tests/run.sh: pytest collected no tests, which counts as a failure." >&2
fi
exit "$status"
