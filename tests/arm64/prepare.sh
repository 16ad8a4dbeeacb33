#!/bin/sh
# Prepare a Debian 12 (bookworm) arm64 root with Python 3.11, numpy and ai-edge-litert, so that
# tests/test_bundle_arm64.py can run a bundle's runner.py under qemu-aarch64-static.
#
# Usage: tests/arm64/prepare.sh [CACHE_DIR]    (default: <repository>/.cache/arm64)
#
# The script is idempotent: a finished root is marked by CACHE_DIR/ready and is reused, and a
# root left half-built by a failed run is removed and built again. It needs root (apt-get) and
# network access to the Debian mirror and PyPI. On success it prints the root's path.
#
# Steps:
# 1. apt-get install debootstrap and qemu-user-static when missing (apt-get update only when
#    the first install attempt fails, for example on stale package lists);
# 2. debootstrap --foreign --arch=arm64 --variant=minbase, with Python 3.11 and libstdc++ added.
#    The foreign first stage only downloads the added packages, and running the second stage
#    would need binfmt_misc, so every downloaded .deb is unpacked into the root instead;
# 3. pip download the aarch64 wheels of ai-edge-litert, numpy and their dependencies for
#    CPython 3.11 and unzip them into ROOT/opt/ids-edge/site-packages;
# 4. import numpy and the LiteRT interpreter under qemu as a check, then write CACHE_DIR/ready.
#
# Environment overrides: IDS_EDGE_DEBIAN_MIRROR, IDS_EDGE_PIP (a pip command),
# IDS_EDGE_LITERT_VERSION, IDS_EDGE_NUMPY_VERSION.

set -eu

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/../.." && pwd)
CACHE_DIR=${1:-$REPO_DIR/.cache/arm64}

SUITE=bookworm
PYTHON=python3.11
MIRROR=${IDS_EDGE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Same versions as the host venv, so both sides run the same LiteRT kernels.
LITERT_VERSION=${IDS_EDGE_LITERT_VERSION:-2.3.0}
NUMPY_VERSION=${IDS_EDGE_NUMPY_VERSION:-2.4.6}
INCLUDE=python3.11-minimal,libpython3.11-stdlib,libstdc++6,libgcc-s1,zlib1g,libexpat1,libffi8

ROOT=$CACHE_DIR/root
SITE_RELATIVE=opt/ids-edge/site-packages
STAMP=$CACHE_DIR/ready
STAMP_TEXT="suite=$SUITE python=$PYTHON ai-edge-litert=$LITERT_VERSION numpy=$NUMPY_VERSION"

log() {
    echo "prepare.sh: $*" >&2
}

fail() {
    echo "prepare.sh: error: $*" >&2
    exit 1
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_TEXT" ] && [ -x "$ROOT/usr/bin/$PYTHON" ]; then
    log "arm64 root already prepared ($STAMP_TEXT)"
    echo "$ROOT"
    exit 0
fi

# Step 1: host tools.
if ! command -v debootstrap >/dev/null 2>&1 || ! command -v qemu-aarch64-static >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || fail "debootstrap or qemu-user-static is missing and installing them needs root. Run: apt-get install debootstrap qemu-user-static"
    log "installing debootstrap and qemu-user-static"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap qemu-user-static >&2; then
        log "apt-get install failed; running apt-get update and trying again"
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap qemu-user-static >&2
    fi
fi
QEMU=$(command -v qemu-aarch64-static) || fail "qemu-aarch64-static not found after installing qemu-user-static"

# Step 2: the Debian root, built in a sibling folder and renamed when complete.
mkdir -p "$CACHE_DIR"
rm -f "$STAMP"
if [ ! -x "$ROOT/usr/bin/$PYTHON" ]; then
    PARTIAL=$CACHE_DIR/root.partial
    rm -rf "$PARTIAL" "$ROOT"
    log "debootstrap --foreign $SUITE arm64 into $PARTIAL"
    debootstrap --foreign --arch=arm64 --variant=minbase --include="$INCLUDE" \
        "$SUITE" "$PARTIAL" "$MIRROR" >&2

    log "unpacking downloaded packages"
    for deb in "$PARTIAL"/var/cache/apt/archives/*.deb; do
        # --keep-directory-symlink keeps the merged-/usr links (/lib -> usr/lib) that the first
        # stage created; a plain extraction would replace them with directories.
        dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$PARTIAL"
    done
    [ -x "$PARTIAL/usr/bin/$PYTHON" ] || fail "$PARTIAL/usr/bin/$PYTHON missing after unpacking the packages"
    mv "$PARTIAL" "$ROOT"
fi

# Step 3: aarch64 wheels.
if [ -n "${IDS_EDGE_PIP:-}" ]; then
    PIP=$IDS_EDGE_PIP
elif [ -x "$REPO_DIR/.venv/bin/pip" ]; then
    PIP=$REPO_DIR/.venv/bin/pip
else
    PIP="python3 -m pip"
fi
WHEELS=$CACHE_DIR/wheels-$LITERT_VERSION-$NUMPY_VERSION
if [ ! -f "$WHEELS/complete" ]; then
    rm -rf "$WHEELS"
    mkdir -p "$WHEELS"
    log "downloading aarch64 wheels with $PIP"
    # manylinux_2_27 covers the ai-edge-litert and numpy wheels. Bookworm's glibc is 2.36.
    $PIP download --disable-pip-version-check --only-binary=:all: \
        --platform manylinux_2_27_aarch64 --platform manylinux2014_aarch64 \
        --python-version 3.11 --implementation cp --abi cp311 \
        -d "$WHEELS" "ai-edge-litert==$LITERT_VERSION" "numpy==$NUMPY_VERSION" >&2
    touch "$WHEELS/complete"
fi

SITE=$ROOT/$SITE_RELATIVE
rm -rf "$SITE"
mkdir -p "$SITE"
for wheel in "$WHEELS"/*.whl; do
    unzip -q -o "$wheel" -d "$SITE"
done

# Step 4: check that the emulated Python imports the runtime, then mark the root as ready.
log "checking numpy and ai_edge_litert under $QEMU"
PYTHONPATH=$SITE "$QEMU" -L "$ROOT" "$ROOT/usr/bin/$PYTHON" -c \
    "import numpy, ai_edge_litert.interpreter, platform; print('aarch64 check:', platform.machine(), numpy.__version__)" >&2 \
    || fail "the arm64 Python could not import numpy and ai_edge_litert; see the output above"
echo "$STAMP_TEXT" > "$STAMP"
echo "$ROOT"
