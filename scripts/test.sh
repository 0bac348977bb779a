#!/usr/bin/env bash
# Usage: scripts/test.sh [--install-only] [CARGO TEST ARGS...]
# The one test command: installs everything the test suite needs (Debian packages
# with apt-get, pjdfstest 0.2.2 with cargo), then runs `cargo test --release
# --locked` with any arguments given. Without the tools a test that needs one
# prints `skipped: ...` (and fails under CI=true), so this is how a fresh machine
# runs every test. Installing needs root (tests that mount need it too);
# IMAGEFS_SKIP_INSTALL=1 runs the tests with what is installed, --install-only
# installs and stops (.ci/run prints the versions in between).
set -euo pipefail

cd "$(dirname "$0")/.."

INSTALL_ONLY=0
if [ "${1:-}" = --install-only ]; then
    INSTALL_ONLY=1
    shift
fi

# What the tests use: skopeo, umoci and oci-image-tool as reference tools, fuse3
# (fusermount3), attr (getfattr/setfattr), docker-registry, apache2-utils
# (htpasswd), buildah and openssl for the registry tests, pigz for multi-member
# gzip, and the build essentials.
PACKAGES=(
    skopeo umoci oci-image-tool fuse3 attr docker-registry apache2-utils buildah
    openssl pigz build-essential pkg-config ca-certificates kmod
)
PJDFSTEST_VERSION=0.2.2

if [ "${IMAGEFS_SKIP_INSTALL:-0}" != 1 ]; then
    missing=()
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$package")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        if [ "$(id -u)" != 0 ]; then
            echo "scripts/test.sh: installing ${missing[*]} needs root; run as root (sudo" \
                "scripts/test.sh), install them yourself, or set IMAGEFS_SKIP_INSTALL=1 to run" \
                "without them (tests that need them are then skipped)" >&2
            exit 1
        fi
        echo "== packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi

    # The rustup toolchain's cargo, when this shell has not loaded it yet.
    if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
    command -v cargo >/dev/null || {
        echo "scripts/test.sh: cargo not found (install Rust with rustup)" >&2
        exit 1
    }
    export PATH="$HOME/.cargo/bin:$PATH"
    if ! pjdfstest -V 2>/dev/null | grep -q "pjdfstest $PJDFSTEST_VERSION"; then
        echo "== pjdfstest $PJDFSTEST_VERSION (for tests/conformance.rs)"
        cargo install pjdfstest --version "$PJDFSTEST_VERSION" --locked --quiet
    fi
fi

[ "$INSTALL_ONLY" = 1 ] && exit 0

echo "== cargo test --release --locked $*"
exec cargo test --release --locked "$@"
