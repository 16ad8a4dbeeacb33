#!/bin/sh
# Prepare Debian 12 (bookworm) ARM roots for tests/test_bundle_arm64.py, which runs a bundle's
# runner.py under qemu-user and compares its outputs with x86:
#
# - arm64 (64-bit OS): Python 3.11 with the aarch64 wheels of ai-edge-litert and numpy, in
#   CACHE_DIR/root (marked by CACHE_DIR/ready);
# - armhf (32-bit OS): Python 3.11 with Debian's numpy 1.24 and the armv7l wheel of
#   tflite-runtime 2.14.0, in CACHE_DIR/armhf/root (marked by CACHE_DIR/armhf/ready), plus the x86
#   tflite-runtime 2.14.0 with numpy<2 in CACHE_DIR/x86-tflite-runtime as the reference for the
#   same runtime version.
#
# Usage: tests/arm64/prepare.sh [CACHE_DIR [PARTS]]
#   CACHE_DIR defaults to <repository>/.cache/arm64; PARTS is "arm64 armhf" (default), or one of them.
#
# The script is idempotent: a finished part is reused, and a root left half-built by a failed run
# is removed and built again. It needs root (apt-get) and network access to the Debian mirror and
# PyPI. On success it prints the arm64 root's path when arm64 is among PARTS.
#
# Steps per root:
# 1. apt-get install debootstrap and qemu-user-static when missing (apt-get update only when
#    the first install attempt fails, for example on stale package lists);
# 2. debootstrap --foreign --variant=minbase with Python 3.11 added. The foreign first stage only
#    downloads the added packages, and running the second stage would need binfmt_misc, so every
#    downloaded .deb is unpacked into the root instead (no maintainer scripts run);
# 3. pip download the wheels for CPython 3.11 on that architecture and unzip them into
#    ROOT/opt/ids-edge/site-packages;
# 4. fix what the skipped maintainer scripts and qemu-user leave out (see the comments there);
# 5. import numpy and the runtime under qemu as a check, then write the ready file.
#
# Environment overrides: IDS_EDGE_DEBIAN_MIRROR, IDS_EDGE_PIP (a pip command),
# IDS_EDGE_LITERT_VERSION, IDS_EDGE_NUMPY_VERSION.

set -eu

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/../.." && pwd)
CACHE_DIR=${1:-$REPO_DIR/.cache/arm64}
PARTS=${2:-arm64 armhf}

SUITE=bookworm
PYTHON=python3.11
MIRROR=${IDS_EDGE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# The same versions as the host venv, so both sides run the same LiteRT kernels.
LITERT_VERSION=${IDS_EDGE_LITERT_VERSION:-2.3.0}
NUMPY_VERSION=${IDS_EDGE_NUMPY_VERSION:-2.4.6}
# tflite-runtime's last release. It is built for numpy 1.x, and PyPI has no armv7l numpy wheels,
# so the armhf root uses Debian's python3-numpy (1.24.2 in bookworm).
TFLITE_RUNTIME_VERSION=2.14.0
SITE_RELATIVE=opt/ids-edge/site-packages

log() {
    echo "prepare.sh: $*" >&2
}

fail() {
    echo "prepare.sh: error: $*" >&2
    exit 1
}

is_ready() {
    # is_ready STAMP TEXT: true when STAMP exists with exactly TEXT.
    [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]
}

install_host_tools() {
    if command -v debootstrap >/dev/null 2>&1 && command -v qemu-aarch64-static >/dev/null 2>&1 \
        && command -v qemu-arm-static >/dev/null 2>&1; then
        return
    fi
    [ "$(id -u)" = 0 ] || fail "debootstrap or qemu-user-static is missing and installing them needs root. Run: apt-get install debootstrap qemu-user-static"
    log "installing debootstrap and qemu-user-static"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap qemu-user-static >&2; then
        log "apt-get install failed; running apt-get update and trying again"
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap qemu-user-static >&2
    fi
}

pip_command() {
    if [ -n "${IDS_EDGE_PIP:-}" ]; then
        echo "$IDS_EDGE_PIP"
    elif [ -x "$REPO_DIR/.venv/bin/pip" ]; then
        echo "$REPO_DIR/.venv/bin/pip"
    else
        echo "python3 -m pip"
    fi
}

build_root() {
    # build_root ARCH INCLUDE ROOT: debootstrap into a sibling folder and rename it when complete.
    arch=$1
    include=$2
    root=$3
    if [ -x "$root/usr/bin/$PYTHON" ]; then
        return
    fi
    partial=$root.partial
    rm -rf "$partial" "$root"
    mkdir -p "$(dirname "$root")"
    log "debootstrap --foreign $SUITE $arch into $partial"
    debootstrap --foreign --arch="$arch" --variant=minbase --include="$include" "$SUITE" "$partial" "$MIRROR" >&2

    log "unpacking the downloaded $arch packages"
    for deb in "$partial"/var/cache/apt/archives/*.deb; do
        # --keep-directory-symlink keeps the merged-/usr links (/lib -> usr/lib) that the first
        # stage created. A plain extraction would replace them with directories.
        dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$partial"
    done
    rm -f "$partial"/var/cache/apt/archives/*.deb
    [ -x "$partial/usr/bin/$PYTHON" ] || fail "$partial/usr/bin/$PYTHON missing after unpacking the packages"
    mv "$partial" "$root"
}

install_wheels() {
    # install_wheels ROOT WHEEL_DIR PLATFORM... -- REQUIREMENT...: download once, unzip into the root.
    root=$1
    wheels=$2
    shift 2
    platforms=""
    while [ "$1" != "--" ]; do
        platforms="$platforms --platform $1"
        shift
    done
    shift
    if [ ! -f "$wheels/complete" ]; then
        rm -rf "$wheels"
        mkdir -p "$wheels"
        log "downloading wheels ($*) with $(pip_command)"
        # shellcheck disable=SC2086  # $platforms is a list of options.
        $(pip_command) download --disable-pip-version-check --only-binary=:all: $platforms \
            --python-version 3.11 --implementation cp --abi cp311 -d "$wheels" "$@" >&2
        touch "$wheels/complete"
    fi
    site=$root/$SITE_RELATIVE
    rm -rf "$site"
    mkdir -p "$site"
    for wheel in "$wheels"/*.whl; do
        unzip -q -o "$wheel" -d "$site"
    done
}

prepare_arm64() {
    root=$CACHE_DIR/root
    stamp=$CACHE_DIR/ready
    text="suite=$SUITE python=$PYTHON ai-edge-litert=$LITERT_VERSION numpy=$NUMPY_VERSION cpuinfo=cortex-a72"
    if is_ready "$stamp" "$text" && [ -x "$root/usr/bin/$PYTHON" ]; then
        log "arm64 root already prepared ($text)"
        return
    fi
    rm -f "$stamp"
    build_root arm64 python3.11-minimal,libpython3.11-stdlib,libstdc++6,libgcc-s1,zlib1g,libexpat1,libffi8 "$root"
    # manylinux_2_27 covers the ai-edge-litert and numpy wheels. Bookworm's glibc is 2.36.
    install_wheels "$root" "$CACHE_DIR/wheels-$LITERT_VERSION-$NUMPY_VERSION" manylinux_2_27_aarch64 manylinux2014_aarch64 -- \
        "ai-edge-litert==$LITERT_VERSION" "numpy==$NUMPY_VERSION"

    # qemu-user 7.2 passes the host's x86 /proc/cpuinfo through to the guest. The cpuinfo
    # library inside LiteRT (used by XNNPACK and ruy) finds no ARM core in it and crashes with a
    # segmentation fault while creating the interpreter. qemu looks up absolute paths under the -L
    # (QEMU_LD_PREFIX) root first, so an ARM cpuinfo at ROOT/proc/cpuinfo is what the guest reads.
    # It describes Cortex-A72 cores (Raspberry Pi 4), one per host CPU, because the guest reads the
    # host's /sys/devices/system/cpu. Run qemu with QEMU_CPU=cortex-a72 to match it.
    if [ -L "$root/proc" ]; then
        rm "$root/proc"
    fi
    mkdir -p "$root/proc"
    cpus=$(getconf _NPROCESSORS_CONF)
    : > "$root/proc/cpuinfo.partial"
    cpu=0
    while [ "$cpu" -lt "$cpus" ]; do
        printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' "$cpu" >> "$root/proc/cpuinfo.partial"
        cpu=$((cpu + 1))
    done
    mv "$root/proc/cpuinfo.partial" "$root/proc/cpuinfo"

    log "checking numpy and ai_edge_litert under qemu-aarch64-static"
    PYTHONPATH=$root/$SITE_RELATIVE QEMU_CPU=cortex-a72 qemu-aarch64-static -L "$root" "$root/usr/bin/$PYTHON" -c \
        "import numpy, ai_edge_litert.interpreter, platform; print('arm64 check:', platform.machine(), numpy.__version__)" >&2 \
        || fail "the arm64 Python could not import numpy and ai_edge_litert; see the output above"
    echo "$text" > "$stamp"
}

prepare_armhf() {
    root=$CACHE_DIR/armhf/root
    stamp=$CACHE_DIR/armhf/ready
    reference=$CACHE_DIR/x86-tflite-runtime
    text="suite=$SUITE python=$PYTHON tflite-runtime=$TFLITE_RUNTIME_VERSION numpy=debian"
    if is_ready "$stamp" "$text" && [ -x "$root/usr/bin/$PYTHON" ] && [ -f "$reference/complete" ]; then
        log "armhf root already prepared ($text)"
        return
    fi
    rm -f "$stamp"
    build_root armhf python3.11-minimal,libpython3.11-stdlib,python3-numpy,libblas3,liblapack3,libstdc++6 "$root"
    # The tflite-runtime wheel needs glibc 2.34, and its numpy dependency is Debian's package.
    install_wheels "$root" "$CACHE_DIR/armhf/wheels-$TFLITE_RUNTIME_VERSION" manylinux_2_34_armv7l -- \
        --no-deps "tflite-runtime==$TFLITE_RUNTIME_VERSION"

    # Debian's postinst scripts, which did not run, point libblas.so.3 and liblapack.so.3 at the
    # default implementation through update-alternatives. numpy fails to import without them.
    libs=$root/usr/lib/arm-linux-gnueabihf
    ln -sf blas/libblas.so.3 "$libs/libblas.so.3"
    ln -sf lapack/liblapack.so.3 "$libs/liblapack.so.3"

    # The x86 reference: the same tflite-runtime version with numpy 1.x, beside the host venv.
    if [ ! -f "$reference/complete" ]; then
        rm -rf "$reference"
        log "installing the x86 tflite-runtime $TFLITE_RUNTIME_VERSION reference into $reference"
        $(pip_command) install --disable-pip-version-check --no-warn-conflicts --only-binary=:all: --target "$reference" \
            "tflite-runtime==$TFLITE_RUNTIME_VERSION" "numpy<2" >&2
        touch "$reference/complete"
    fi

    log "checking numpy and tflite_runtime under qemu-arm-static"
    PYTHONPATH=$root/$SITE_RELATIVE QEMU_CPU=cortex-a7 qemu-arm-static -L "$root" "$root/usr/bin/$PYTHON" -c \
        "import numpy, tflite_runtime.interpreter, platform; print('armhf check:', platform.machine(), numpy.__version__)" >&2 \
        || fail "the armhf Python could not import numpy and tflite_runtime; see the output above"
    echo "$text" > "$stamp"
}

mkdir -p "$CACHE_DIR"
install_host_tools
for part in $PARTS; do
    case $part in
        arm64) prepare_arm64 ;;
        armhf) prepare_armhf ;;
        *) fail "invalid part '$part': use arm64, armhf or both" ;;
    esac
done
case " $PARTS " in
    *" arm64 "*) echo "$CACHE_DIR/root" ;;
esac
