#!/usr/bin/env bash
# Usage: scripts/pjdfstest.sh [OUTDIR]
#
# Runs pjdfstest (the Rust rewrite, crate `pjdfstest` 0.2.2) against an imagefs
# mount for the groups unlink, rename, symlink, mkdir and rmdir, in
#   reg   MP/docker.io/                               a registry directory
#   tags  MP/docker.io/library/sample-app/tags/       a repository's tags/
# and, as a baseline that shows the runner itself works here, in a plain
# directory on the host's /tmp.
#
# Two runners: the stock binary (`cargo install pjdfstest`), which cannot start
# inside imagefs (see docs/CONFORMANCE.md), and a copy built from the same crate
# source with scripts/pjdfstest-patch.py applied (working directories with valid
# lowercase names; PJDFSTEST_FLAT=1 for tags/). The tests are pjdfstest's own.
#
# Needs root and /dev/fuse. `cargo test --test conformance pjdfstest` runs this
# script and compares its summary with docs/CONFORMANCE.md. Writes OUTDIR (default target/pjdfstest) with one log
# per run and summary.tsv (runner, location, group, passed, failed, skipped), and
# prints the summary. Always unmounts; every run has a timeout. Exit status 0
# when every run finished (failures are expected: see docs/CONFORMANCE.md).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-$ROOT/target/pjdfstest}
CONF=$ROOT/scripts/pjdfstest.toml
VERSION=0.2.2
GROUPS_UNDER_TEST="unlink rename symlink mkdir rmdir"
RUN_TIMEOUT=${PJDFSTEST_TIMEOUT:-300}

mkdir -p "$OUT"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

# ---- the runners ----
if ! pjdfstest -V 2>/dev/null | grep -q "pjdfstest $VERSION"; then
    cargo install pjdfstest --version "$VERSION" --locked
fi
STOCK=$(command -v pjdfstest)

PATCHED_DIR=$ROOT/target/pjdfstest-patched
PATCHED=$PATCHED_DIR/target/release/pjdfstest
if [ ! -x "$PATCHED" ] || [ "$ROOT/scripts/pjdfstest-patch.py" -nt "$PATCHED" ]; then
    SRC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/pjdfstest-$VERSION | head -n1)
    [ -d "$SRC" ] || { echo "pjdfstest $VERSION source not in the cargo registry" >&2; exit 1; }
    rm -rf "$PATCHED_DIR/src"
    mkdir -p "$PATCHED_DIR"
    cp -r "$SRC" "$PATCHED_DIR/src"
    python3 "$ROOT/scripts/pjdfstest-patch.py" "$PATCHED_DIR/src/src/main.rs"
    cargo build --release --locked --manifest-path "$PATCHED_DIR/src/Cargo.toml" \
        --target-dir "$PATCHED_DIR/target"
fi

# ---- a store with the sample images, mounted ----
# IMAGEFS_BIN: an already built binary (the test suite passes its own).
if [ -n "${IMAGEFS_BIN:-}" ]; then
    IMAGEFS=$IMAGEFS_BIN
else
    cargo build --locked --bin imagefs
    IMAGEFS=$ROOT/target/debug/imagefs
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/imagefs-pjdfstest-XXXXXX")
MP=$WORK/demo/mnt
cleanup() {
    if mountpoint -q "$MP" 2>/dev/null; then
        timeout 20 "$IMAGEFS" unmount "$MP" || timeout 10 umount -l "$MP" || true
    fi
    mountpoint -q "$MP" 2>/dev/null || rm -rf "$WORK"
}
trap cleanup EXIT
timeout 120 "$IMAGEFS" demo "$WORK/demo" >"$OUT/demo.log" 2>&1
mountpoint -q "$MP"
BASELINE=$WORK/baseline
mkdir -p "$BASELINE"
# The runner switches to nobody/daemon for permission tests: they must reach it.
chmod 0755 "$WORK" "$WORK/demo" "$BASELINE"

declare -A LOCATIONS=(
    [reg]=$MP/docker.io
    [tags]=$MP/docker.io/library/sample-app/tags
    [baseline]=$BASELINE
)

printf 'runner\tlocation\tgroup\tpassed\tfailed\tskipped\tnote\n' >"$OUT/summary.tsv"
run() { # runner-name binary location group
    local name=$1 bin=$2 loc=$3 group=$4 dir=${LOCATIONS[$3]} log flat=
    log=$OUT/$name-$loc-$group.log
    [ "$name" = patched ] && [ "$loc" = tags ] && flat=1
    local envs=(env -u PJDFSTEST_FLAT)
    [ -z "$flat" ] || envs=(env PJDFSTEST_FLAT=1)
    set +e
    NO_COLOR=1 RUST_BACKTRACE=0 timeout -k 5 "$RUN_TIMEOUT" "${envs[@]}" \
        "$bin" -c "$CONF" -p "$dir" "$group::" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >"$log"
    local rc=${PIPESTATUS[0]}
    set -e
    # Result lines: "<group>::<case>   ok|FAILED|skipped" (names are module paths).
    local pass fail skip note=
    pass=$(grep -cE "^$group::\S+ +ok$" "$log" || true)
    fail=$(grep -cE "^$group::\S+ +FAILED$" "$log" || true)
    skip=$(grep -cE "^$group::\S+ +skipped$" "$log" || true)
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then note="timeout"; fi
    if [ $((pass + fail + skip)) -eq 0 ]; then
        note="runner did not start: $(grep -m1 -E '^Error' "$log" || tail -n1 "$log")"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$loc" "$group" "$pass" "$fail" "$skip" "$note" >>"$OUT/summary.tsv"
}

for group in $GROUPS_UNDER_TEST; do
    for loc in reg tags; do
        run stock "$STOCK" "$loc" "$group"
    done
    for loc in baseline reg tags; do
        run patched "$PATCHED" "$loc" "$group"
    done
done

# Everything the runs left behind in the mount (should be nothing).
find "$MP/docker.io" -maxdepth 1 -name 'pjd*' >"$OUT/leftovers.txt" 2>&1 || true
find "$MP/docker.io/library/sample-app/tags" >>"$OUT/leftovers.txt" 2>&1 || true
column -t -s $'\t' "$OUT/summary.tsv"
echo "logs: $OUT"
