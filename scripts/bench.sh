#!/usr/bin/env bash
# imagefs benchmarks: builds imagefs (release), prepares deterministic benchmark
# images, installs the peers, measures imagefs and each peer side by side in one
# run, and prints one table of medians and ratios (imagefs / peer), also written
# to bench-results.md and bench-results.json. See scripts/BENCH.md.
#
#   scripts/bench.sh [--quick] [--workdir DIR] [--out FILE.md] [--runs N]
#                    [--no-install] [--no-build] [--cases 2,5,7,12]
#
# --cases runs only the listed cases (the import of case 1 always runs, untimed
# when case 1 is not listed; rows of other cases say "not run").
#
# Exit status: 0 when every case ran (or is marked n/a with its reason), whatever
# the timings; non-zero when the script or an imagefs command that must work fails.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=0
WORKDIR=/var/tmp/imagefs-bench
OUT="$REPO/bench-results.md"
RUNS_OVERRIDE=
INSTALL=1
BUILD=1
CASES=

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --workdir) WORKDIR=$2; shift ;;
        --workdir=*) WORKDIR=${1#*=} ;;
        --out) OUT=$2; shift ;;
        --out=*) OUT=${1#*=} ;;
        --runs) RUNS_OVERRIDE=$2; shift ;;
        --runs=*) RUNS_OVERRIDE=${1#*=} ;;
        --no-install) INSTALL=0 ;;
        --no-build) BUILD=0 ;;
        --cases) CASES=$2; shift ;;
        --cases=*) CASES=${1#*=} ;;
        -h | --help) usage; exit 0 ;;
        *) echo "bench.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

# want N: case N was asked for (every case without --cases).
want() { [ -z "$CASES" ] || [[ ",$CASES," == *",$1,"* ]]; }

# ------------------------------------------------------------------ profile
if [ "$QUICK" = 1 ]; then
    PROFILE=quick
    FILES=2000 DIRS=200 BIG=$((8 << 20)) RM_IMAGES=10
    TAG_REPOS=5 TAGS_PER_REPO=4 MANY_TAGS=20 PROMOTE=10 PEER_TAGS=10
    SCALE_TEAMS=10 SCALE_REPOS=200
    RUNS=1 COLD_RUNS=1 SLOW_RUNS=1
else
    PROFILE=full
    FILES=20000 DIRS=2000 BIG=$((1 << 30)) RM_IMAGES=100
    TAG_REPOS=50 TAGS_PER_REPO=20 MANY_TAGS=1000 PROMOTE=100 PEER_TAGS=100
    SCALE_TEAMS=100 SCALE_REPOS=10000
    RUNS=5 COLD_RUNS=3 SLOW_RUNS=3
fi
if [ -n "$RUNS_OVERRIDE" ]; then RUNS=$RUNS_OVERRIDE COLD_RUNS=$RUNS_OVERRIDE SLOW_RUNS=$RUNS_OVERRIDE; fi
# Bump when the meaning of the generated images changes; the generator's source is
# hashed into the key too.
GEN_VERSION=v1

T_START=$(date +%s)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
log() { printf '[bench %s +%ss] %s\n' "$(date +%T)" "$(($(date +%s) - T_START))" "$*" >&2; }
die() { echo "bench.sh: $*" >&2; exit 1; }

mkdir -p "$WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd -P)
RUN=$WORKDIR/run-$PROFILE          # scratch of this run (stores, bundles, mounts)
STORE=$RUN/store
MP=$RUN/mnt                        # imagefs mount
RMP=$RUN/mnt-ratarmount            # ratarmount mount
RESULTS=$RUN/results.tsv
TOOLS=$REPO/scripts/bench-tools
# Where cargo puts a package's binaries: asked of cargo, since CARGO_TARGET_DIR (or a
# .cargo/config.toml) may move target/ anywhere. `--no-deps` reads only the manifest.
target_dir() {
    cargo metadata --format-version 1 --no-deps --manifest-path "$1" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}
if command -v cargo >/dev/null; then
    REPO_TARGET=$(target_dir "$REPO/Cargo.toml") || die "cargo metadata failed for $REPO"
    TOOLS_TARGET=$(target_dir "$TOOLS/Cargo.toml") || die "cargo metadata failed for $TOOLS"
else
    # --no-build with binaries built elsewhere: cargo's default places.
    REPO_TARGET=${CARGO_TARGET_DIR:-$REPO/target}
    TOOLS_TARGET=${CARGO_TARGET_DIR:-$TOOLS/target}
fi
BT=$TOOLS_TARGET/release/bench-tools
# IMAGEFS_BENCH_BIN: another imagefs binary (e.g. bench-tools/fake-mount.sh to test this script)
IMAGEFS=${IMAGEFS_BENCH_BIN:-$REPO_TARGET/release/imagefs}
T_MOUNT=120                        # timeout (s) of any single command on a mount
T_SCALE=900                        # the same for case 12 (100,000 entries on a slow disk)

# ------------------------------------------------------------------ cleanup
IMAGEFS_MOUNTED=0
RAT_MOUNTED=0
is_mounted() { awk -v mp="$1" '$2 == mp { found = 1 } END { exit !found }' /proc/self/mounts; }
cleanup() {
    local rc=$?
    set +e
    for mp in "$MP" "$RMP" "$RUN/mnt10" "$RUN/mnt13"; do
        if is_mounted "$mp"; then
            log "cleanup: unmounting $mp"
            if [ "$mp" != "$RMP" ]; then
                timeout 30 "$IMAGEFS" unmount "$mp" >/dev/null 2>&1
            else
                timeout 30 ratarmount -u "$mp" >/dev/null 2>&1
            fi
            is_mounted "$mp" && timeout 10 fusermount3 -u "$mp" >/dev/null 2>&1
            is_mounted "$mp" && timeout 10 fusermount -u "$mp" >/dev/null 2>&1
            is_mounted "$mp" && umount -l "$mp"
        fi
    done
    for pid in ${STARTED_PIDS:-}; do
        kill -0 "$pid" 2>/dev/null && kill "$pid" 2>/dev/null
    done
    [ "$rc" = 0 ] || log "FAILED (exit $rc)"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
STARTED_PIDS=

# ------------------------------------------------------------------ results
# results.tsv lines (tab separated):
#   row  KEY CASE LABEL PEER UNIT BYTES TARGET_KIND TARGET_VALUE TARGET_TEXT
#   val  KEY SIDE samples (ns for time units, plain numbers otherwise)
#   na   KEY SIDE reason
#   note KEY text
mkdir -p "$RUN"
: >"$RESULTS"
tsv() { local IFS=$'\t'; printf '%s\n' "$*" >>"$RESULTS"; }
row() { tsv row "$@"; }
put() { local key=$1 side=$2; shift 2; tsv val "$key" "$side" "$*"; }
na() { tsv na "$1" "$2" "$3"; }
note() { tsv note "$1" "$2"; }

# ------------------------------------------------------------------ timing
CAN_DROP=0
if [ -w /proc/sys/vm/drop_caches ] && (echo 1 >/proc/sys/vm/drop_caches) 2>/dev/null; then CAN_DROP=1; fi
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
NO_DROP="cannot drop the page cache (needs root)"

T=0
# timed CMD...: runs CMD (its stdout discarded), sets T to the wall time in ns.
timed() {
    local t0 t1
    t0=$(date +%s%N)
    "$@" >/dev/null
    t1=$(date +%s%N)
    T=$((t1 - t0))
}
# bench KEY SIDE RUNS WARMUP PREP BODY...: WARMUP untimed runs of BODY, then RUNS
# times PREP (untimed, "-" for none) and BODY (timed); records the samples.
bench() {
    local key=$1 side=$2 runs=$3 warmup=$4 prep=$5 i samples=""
    shift 5
    for ((i = 0; i < warmup; i++)); do "$@" >/dev/null; done
    for ((i = 0; i < runs; i++)); do
        [ "$prep" = - ] || $prep
        timed "$@"
        samples="$samples $T"
    done
    put "$key" "$side" $samples
}
# Paired variant: peer and imagefs runs alternate (PEER_PREP PEER_FN, then
# IMAGEFS_PREP IMAGEFS_FN, RUNS times), so that drift on a shared machine (dirty
# pages written back, page cache filling up, other tenants) weighs on both sides
# alike instead of on whichever side runs last.
bench_pair() {
    local key=$1 runs=$2 peer_prep=$3 peer_fn=$4 imagefs_prep=$5 imagefs_fn=$6 i
    local peer="" imagefs=""
    for ((i = 0; i < runs; i++)); do
        $peer_prep
        timed "$peer_fn"
        peer="$peer $T"
        $imagefs_prep
        timed "$imagefs_fn"
        imagefs="$imagefs $T"
    done
    put "$key" peer $peer
    put "$key" imagefs $imagefs
}
# Cold variant: PREP runs, then the page cache is dropped.
cold_prep() { [ "$COLD_PREP" = - ] || $COLD_PREP; drop_caches; }
bench_cold() {
    local key=$1 side=$2 runs=$3 prep=$4
    shift 4
    if [ "$CAN_DROP" = 0 ]; then na "$key" "$side" "$NO_DROP"; return; fi
    COLD_PREP=$prep
    bench "$key" "$side" "$runs" 0 cold_prep "$@"
}

# ------------------------------------------------------------------ build
machine_line() {
    local cpu cores ram kernel disk dev
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    cores=$(nproc)
    ram=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    kernel=$(uname -r)
    dev=$(df --output=source "$WORKDIR" | tail -1)
    disk="$dev $(df --output=fstype "$WORKDIR" | tail -1 | tr -d ' ') $(df -h --output=size "$WORKDIR" | tail -1 | tr -d ' ')"
    local base=${dev#/dev/}; base=${base%%[0-9]*}
    if [ -r "/sys/block/$base/queue/rotational" ]; then
        if [ "$(cat "/sys/block/$base/queue/rotational")" = 1 ]; then disk="$disk, rotational"; else disk="$disk, non-rotational"; fi
    fi
    echo "CPU: $cpu, $cores cores; RAM: $ram; kernel $kernel; disk: $disk (workdir $WORKDIR)"
}

if [ "$BUILD" = 1 ]; then
    log "building imagefs (release)"
    (cd "$REPO" && cargo build --release --bin imagefs)
    log "building scripts/bench-tools (release)"
    cargo build --release --manifest-path "$TOOLS/Cargo.toml"
fi
[ -x "$IMAGEFS" ] || die "no $IMAGEFS (run without --no-build)"
[ -x "$BT" ] || die "no $BT (run without --no-build)"
"$IMAGEFS" --version >/dev/null

# ------------------------------------------------------------------ peers
# Each peer is installed from its usual place; one that cannot be installed makes
# its rows say so (never silently skipped).
declare -A PEER_MISSING=()
APT_UPDATED=0
apt_install() {
    [ "$INSTALL" = 1 ] || return 1
    command -v apt-get >/dev/null || return 1
    if [ "$APT_UPDATED" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || return 1
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}
need_tool() { # TOOL DEBIAN-PACKAGE
    command -v "$1" >/dev/null && return 0
    log "installing $2 (Debian) for $1"
    if apt_install "$2" && command -v "$1" >/dev/null; then return 0; fi
    PEER_MISSING[$1]="$1 not installed (apt-get install $2 failed)"
    return 0
}
need_tool skopeo skopeo
need_tool umoci umoci
need_tool fusermount3 fuse3
if ! command -v ratarmount >/dev/null; then
    log "installing ratarmount (PyPI)"
    if [ "$INSTALL" = 1 ]; then
        python3 -m pip install -q ratarmount >&2 || true
        hash -r
    fi
    command -v ratarmount >/dev/null || PEER_MISSING[ratarmount]="ratarmount not installed (pip install ratarmount failed)"
fi
command -v python3 >/dev/null || die "python3 is needed to write the results"
have() { [ -z "${PEER_MISSING[$1]:-}" ]; }
missing() { echo "${PEER_MISSING[$1]}"; }

# ------------------------------------------------------------------ images
KEY=$(cat "$TOOLS/Cargo.toml" "$TOOLS/src/main.rs" | sha256sum | cut -c1-12)
GEN=$WORKDIR/gen-$GEN_VERSION-$KEY-$PROFILE
if [ ! -f "$GEN/gen.env" ]; then
    log "generating benchmark images into $GEN (cached for later runs)"
    rm -rf "$GEN.tmp"
    "$BT" gen "$GEN.tmp" --files "$FILES" --dirs "$DIRS" --big "$BIG" --rm-images "$RM_IMAGES"
    mv "$GEN.tmp" "$GEN"
else
    log "using cached benchmark images $GEN"
fi
# shellcheck disable=SC1091
. "$GEN/gen.env"
L=$GEN/layout
LR=$GEN/layout-rm
LB=$L/blobs/sha256
LAYERS=("$LB/$L_BASE" "$LB/$L_MODIFY" "$LB/$L_RANDOM" "$LB/$L_TEXT")
LAYERS_BYTES=$((L_BASE_SIZE + L_MODIFY_SIZE + L_RANDOM_SIZE + L_TEXT_SIZE))

# Fresh scratch (but keep results.tsv just created).
if awk -v p="$RUN/" 'index($2, p) == 1 { found = 1 } END { exit !found }' /proc/self/mounts; then
    die "something under $RUN is still mounted from an earlier run; unmount it first"
fi
find "$RUN" -mindepth 1 -maxdepth 1 ! -name results.tsv -exec rm -rf {} +
mkdir -p "$MP" "$RMP"

ifs() { "$IMAGEFS" --store "$STORE" "$@"; }
# A private copy of a layout for tools that change it: blobs hard-linked (they are
# never modified, only added or unlinked), index.json copied.
layout_copy() {
    rm -rf "$2"
    cp -rl "$1" "$2"
    rm "$2/index.json"
    cp "$1/index.json" "$2/index.json"
}

# ------------------------------------------------------------------ the rows
# Defined up front so that the table keeps the case order whatever runs first.
GIB=$(awk -v b="$BIG" 'BEGIN { printf "%g %s", (b >= 1073741824 ? b / 1073741824 : b / 1048576), (b >= 1073741824 ? "GiB" : "MiB") }')
row 1.import.skopeo 1 "import distro+big (tar.gz), warm source" "skopeo copy oci: -> fresh oci:" s 0 ratio_le 0.5 "≥2x faster"
row 1.import.floor 1 "import distro+big vs decompressing its 4 layers once" "flate2/zlib-rs gunzip (bench-tools)" s 0 ratio_le 1.2 "≤1.2x floor"
row 1.import.gzip 1 "import distro+big vs decompressing its 4 layers once" "gzip -dc" s 0 none "" ""
row 1.reimport.time 1 "re-import of the same images" "first import" s 0 none "" ""
row 1.reimport.bytes 1 "re-import: blob bytes written (report / blobs/ growth)" "" bytes 0 imagefs_eq 0 "0 bytes"
row 2.blob.warm 2 "read the $GIB random layer blob, warm: layers/002/blob" "cat of the blob file in the store" MB/s "$L_RANDOM_SIZE" ratio_ge 0.95 "≥0.95 of disk"
row 2.blob.cold 2 "read the $GIB random layer blob, cold: layers/002/blob" "cat of the blob file in the store" MB/s "$L_RANDOM_SIZE" ratio_ge 0.95 "≥0.95 of disk"
row 2.blob.first 2 "same, first open after mount (imagefs hashes the blob once), cold" "cat of the blob file in the store, cold" MB/s "$L_RANDOM_SIZE" none "" ""
row 3.first.umoci 3 "first look, cold: mount + find rootfs | wc -l" "umoci unpack + find" s 0 ratio_le 0.25 "≤1/4 of umoci"
row 3.first.ratarmount 3 "first look, cold: mount + find rootfs | wc -l" "ratarmount (union of the layers) + find" s 0 ratio_le 0.3333 "≥3x faster"
row 4.meta.warm 4 "find rootfs -printf '%s %m\\n', warm ($FILES-file tree)" "same on the unpacked tree (umoci)" s 0 ratio_le 1.5 "≤1.5x disk"
row 5.cat.warm 5 "cat every file of rootfs, warm" "same on the unpacked tree" MB/s 0 ratio_ge 0.95 "≥0.95 of disk"
row 5.big.random 5 "read rootfs/big/random.bin ($GIB), warm" "same on the unpacked tree" MB/s "$BIG" ratio_ge 0.95 "≥0.95 of disk"
row 5.big.text 5 "read rootfs/big/text.txt ($GIB), warm" "same on the unpacked tree" MB/s "$BIG" ratio_ge 0.95 "≥0.95 of disk"
row 6.grep.cold.rat 6 "grep -rl NEEDLE rootfs, cold" "ratarmount + grep" s 0 none "" ""
row 6.grep.cold.disk 6 "grep -rl NEEDLE rootfs, cold" "unpacked tree" s 0 none "" ""
row 6.grep.warm.rat 6 "grep -rl NEEDLE rootfs, warm" "ratarmount + grep" s 0 none "" ""
row 6.grep.warm.disk 6 "grep -rl NEEDLE rootfs, warm" "unpacked tree" s 0 none "" ""
row 7.tag.cli 7 "imagefs tag (CLI), per tag" "umoci tag, per tag" ms 0 none "" ""
row 7.ls.cold 7 "ls -l tags/ of a repository with $MANY_TAGS tags, first after mount" "ls -l of $MANY_TAGS symlinks on disk" s 0 none "" ""
row 7.ls.warm 7 "ls -l tags/ of a repository with $MANY_TAGS tags, warm" "ls -l of $MANY_TAGS symlinks on disk" s 0 none "" ""
row 7.rm.mount 7 "rm tags/<t> with cleanup (mount), per tag" "umoci rm + umoci gc, per tag" ms 0 imagefs_le 20 "<20 ms each"
row 7.rm.cli 7 "imagefs rm <ref> with cleanup (CLI), per tag" "umoci rm + umoci gc, per tag" ms 0 imagefs_le 20 "<20 ms each"
row 7.ln.mount 7 "ln -s promotion bench/distro -> prod/distro (mount), per tag" "skopeo copy oci: -> oci: (blobs present), per tag" ms 0 none "" ""
row 7.ln.cli 7 "imagefs tag promotion (CLI), per tag" "skopeo copy oci: -> oci: (blobs present), per tag" ms 0 none "" ""
row 8.rss.cases 8 "daemon peak RSS (VmHWM) after cases 3-6" "ratarmount's peak RSS after case 3 and 6" MiB 0 none "" ""
row 8.rss.tags 8 "daemon peak RSS with $((MANY_TAGS + TAG_REPOS * TAGS_PER_REPO)) tags mounted, all listed" "" MiB 0 none "" ""
row 8.store 8 "store size on disk (du blobs/) vs sum of image sizes" "sum of image sizes (imagefs ls --json)" bytes 0 none "" ""
row 8.store.all 8 "whole store on disk (blobs, db, cache) vs sum of image sizes" "sum of image sizes (imagefs ls --json)" bytes 0 none "" ""
row 9.pull.skopeo 9 "imagefs pull distro+big from docker-registry on loopback" "skopeo copy docker:// -> oci: + imagefs import" s 0 ratio_le 0.6 "≤0.6 of skopeo+import"
row 9.pull.import 9 "imagefs pull distro+big from docker-registry on loopback" "imagefs import of the same images from a local layout" s 0 ratio_le 1.1 "≤1.1 of a local import"
row 9.pull.shared 9 "imagefs pull big after distro (shared base): bytes fetched" "big's size" bytes 0 none "" ""
row 9.push.skopeo 9 "imagefs push distro+big into an empty registry" "skopeo copy oci: -> docker://" s 0 ratio_le 1.0 "≤1.0 of skopeo"
row 10.copy 10 "skopeo copy oci:SRC:big -> oci:MOUNT/b10/big:x (fresh store)" "skopeo copy into a plain directory" s 0 ratio_le 1.3 "≤1.3x plain"
row 10.shared.bytes 10 "then distro's sibling big (shares base+modify): bytes written to blobs/" "bytes of big's blobs distro lacks" bytes 0 ratio_le 1.0 "new layers only"
row 10.unpack 10 "umoci unpack --image MOUNT/b10/distro:x" "umoci unpack from the plain layout" s 0 ratio_le 1.2 "≤1.2x plain"
row 11.zran.import 11 "import distro+big, building the seekable index of gzip layers" "same, IMAGEFS_BENCH_NO_CHECKPOINTS=1 (no index)" s 0 ratio_le 1.1 "≤1.1x"
row 11.zran.size 11 "seekable indexes (cache/layers/*/index/*.zran) vs the 4 gzip layers" "gzip layer bytes" bytes 0 ratio_le 0.04 "≤4% of the layers"
row 11.zran.read4k 11 "random 4 KiB read of the $GIB text layer's tar through the index (local blob)" "gunzip from the layer's start to the same offset" ms 0 none "" ""
row 11.zran.read1m 11 "random 1 MiB read of the $GIB text layer's tar through the index (local blob)" "gunzip from the layer's start to the same offset" ms 0 none "" ""
SCALE_TAGS=$((SCALE_REPOS * 10))
row 12.scale.mount 12 "scale ($SCALE_TAGS tags, $SCALE_REPOS repos): imagefs mount until it answers" "" ms 0 imagefs_le 1000 "<1 s"
row 12.scale.ls1.first 12 "scale: ls -l tags/ of one repository, first after mount" "same on the disk tree, cold" ms 0 imagefs_le 50 "<50 ms"
row 12.scale.ls1.warm 12 "scale: ls -l tags/ of one repository, warm" "same on the disk tree, warm" ms 0 imagefs_le 50 "<50 ms"
row 12.scale.find 12 "scale: find MOUNT/scale -maxdepth 3 -name tags, first after mount" "same tree of dirs and symlinks on disk, cold" s 0 ratio_le 1.5 "≤1.5x cold disk"
row 12.scale.lsall.cold 12 "scale: ls -l MOUNT/scale/*/*/tags (every tag), first after mount" "same on the disk tree, cold" s 0 ratio_le 1.5 "≤1.5x cold disk"
row 12.scale.lsall.warm 12 "scale: ls -l MOUNT/scale/*/*/tags (every tag), warm" "same on the disk tree, warm" s 0 ratio_le 3 "≤3x warm disk"
row 12.scale.cli.ls 12 "scale: imagefs ls (everything)" "" s 0 imagefs_le 1 "<1 s"
row 12.scale.cli.ls1 12 "scale: imagefs ls REGISTRY/REPOSITORY (one repository)" "" ms 0 imagefs_le 50 "<50 ms"
row 12.scale.df 12 "scale: imagefs df" "" s 0 imagefs_le 0.5 "<0.5 s"
row 12.scale.rss 12 "scale: daemon RSS after listing every repository's tags" "" MiB 0 imagefs_le 100 "<100 MB"
row 12.scale.rm 12 "scale: imagefs rm of one tag" "" ms 0 imagefs_le 20 "<20 ms"
row 12.scale.tag 12 "scale: imagefs tag of one tag" "" ms 0 imagefs_le 20 "<20 ms"

row 13.lazy.first 13 "pull --lazy big + mount + first cat rootfs/etc/os-release (index artifact)" "imagefs pull big + mount + the same cat" s 0 ratio_le 0.02 "≤0.02 of a full pull"
row 13.lazy.umoci 13 "pull --lazy big + mount + first cat rootfs/etc/os-release (index artifact)" "skopeo copy docker:// -> oci: + umoci unpack + cat" s 0 none "" ""
row 13.lazy.bytes 13 "bytes fetched for that first cat (pull --lazy included)" "big's size (manifest, config, layers)" bytes 0 ratio_le 0.01 "≤1% of the image"
row 13.lazy.find 13 "find rootfs right after pull --lazy: bytes fetched" "" bytes 0 imagefs_eq 0 "0 bytes"
row 13.lazy.grep 13 "pull --lazy big + mount + grep -rl NEEDLE rootfs (worst case)" "imagefs pull big + mount + the same grep" s 0 ratio_le 1.3 "≤1.3x"

# ------------------------------------------------------------------ mount support
# mount/unmount and rootfs/ are being built: detect them, mark rows n/a otherwise.
MOUNT_OK=0 ROOTFS_OK=0 BLOB_OK=0 MOUNT_WHY="n/a (not built): imagefs has no mount command"
if "$IMAGEFS" mount --help >/dev/null 2>&1; then MOUNT_OK=1; MOUNT_WHY=; fi
DAEMON_PID=
daemon_pid() {
    local p exe
    for p in /proc/[0-9]*; do
        exe=$(readlink "$p/exe" 2>/dev/null) || continue
        [ "$exe" = "$(readlink -f "$IMAGEFS")" ] || continue
        if tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -qx -- "$MP"; then
            echo "${p#/proc/}"
            return 0
        fi
    done
    return 1
}
mount_imagefs() {
    timeout "$T_MOUNT" "$IMAGEFS" --store "$STORE" mount "$MP" >/dev/null
    is_mounted "$MP" || die "imagefs mount returned but $MP is not mounted"
    IMAGEFS_MOUNTED=1
    DAEMON_PID=$(daemon_pid) || DAEMON_PID=
    [ -z "$DAEMON_PID" ] || STARTED_PIDS="$STARTED_PIDS $DAEMON_PID"
}
unmount_imagefs() {
    is_mounted "$MP" || return 0
    timeout "$T_MOUNT" "$IMAGEFS" unmount "$MP" >/dev/null
    local i
    for ((i = 0; i < 100; i++)); do
        if [ -z "$DAEMON_PID" ] || ! kill -0 "$DAEMON_PID" 2>/dev/null; then break; fi
        sleep 0.1
    done
    is_mounted "$MP" && die "imagefs unmount returned but $MP is still mounted"
    IMAGEFS_MOUNTED=0
    DAEMON_PID=
}
remount() { unmount_imagefs; mount_imagefs; }
vmhwm_mib() { awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
mount_na() { # KEY [what]: marks the imagefs side n/a for the missing mount feature
    local why=$MOUNT_WHY
    if [ -z "$why" ]; then
        case "${2:-rootfs}" in
            rootfs) why="n/a (not built): no rootfs/ in the mount" ;;
            blob) why="n/a (not built): no layers/NNN/blob in the mount" ;;
            write) why="n/a (not built): $3" ;;
        esac
    fi
    na "$1" imagefs "$why"
}
R=$MP/bench/distro/tags/1/rootfs       # distro rootfs through imagefs
RB=$MP/bench/big/tags/1/rootfs         # big rootfs through imagefs
BLOB=$MP/bench/big/tags/1/layers/002/blob

# ================================================================== case 1: import
log "case 1: import (warm source)"
cat "$L"/blobs/sha256/* >/dev/null
import_all() {
    ifs import "$L:distro" bench/distro:1 --json >"$RUN/import-distro.json"
    ifs import "$L:big" bench/big:1 --json >"$RUN/import-big.json"
}
store_reset() { rm -rf "$STORE"; }
if want 1; then
bench 1.import.skopeo imagefs "$SLOW_RUNS" 0 store_reset import_all
for k in 1.import.floor 1.import.gzip; do put "$k" imagefs $(awk '$1 == "val" && $2 == "1.import.skopeo" && $3 == "imagefs" { $1 = $2 = $3 = ""; print }' "$RESULTS"); done
FIRST_IMPORT=$(awk '$1 == "val" && $2 == "1.import.skopeo" && $3 == "imagefs" { $1 = $2 = $3 = ""; print }' "$RESULTS")
[ "$(python3 -c 'import json,sys; print(sum(json.load(open(f))["blobs_written"] for f in sys.argv[1:]) > 0)' "$RUN"/import-*.json)" = True ] ||
    die "the first import wrote no blobs"
if have skopeo; then
    skopeo_reset() { rm -rf "$RUN/skopeo-dst"; }
    skopeo_all() {
        skopeo copy -q "oci:$L:distro" "oci:$RUN/skopeo-dst:distro"
        skopeo copy -q "oci:$L:big" "oci:$RUN/skopeo-dst:big"
    }
    bench 1.import.skopeo peer "$SLOW_RUNS" 0 skopeo_reset skopeo_all
    rm -rf "$RUN/skopeo-dst"
else
    na 1.import.skopeo peer "$(missing skopeo)"
fi
floor() { "$BT" gunzip "${LAYERS[@]}"; }
bench 1.import.floor peer "$SLOW_RUNS" 0 - floor
[ "$(floor)" -gt "$BIG" ] || die "bench-tools gunzip: too few bytes"
gzip_all() { local f; for f in "${LAYERS[@]}"; do gzip -dc "$f"; done; }
bench 1.import.gzip peer "$SLOW_RUNS" 0 - gzip_all
note 1.import.floor "layers: $LAYERS_BYTES bytes compressed; floor is single-threaded decompression only (imagefs also hashes, writes and fsyncs)"

du_blobs() { du -sb "$STORE/blobs" | cut -f1; }
BLOBS_BEFORE=$(du_blobs)
REIMPORT_BYTES=
reimport() {
    import_all
    REIMPORT_BYTES="$REIMPORT_BYTES $(python3 -c 'import json,sys; print(sum(json.load(open(f))["bytes_written"] for f in sys.argv[1:]))' "$RUN"/import-*.json)"
}
bench 1.reimport.time imagefs "$RUNS" 0 - reimport
put 1.reimport.time peer $FIRST_IMPORT
put 1.reimport.bytes imagefs $REIMPORT_BYTES
GROWTH=$(($(du_blobs) - BLOBS_BEFORE))
note 1.reimport.bytes "import --json bytes_written per run:$REIMPORT_BYTES; blobs/ grew by $GROWTH bytes over all re-imports"
[ "$GROWTH" = 0 ] || note 1.reimport.bytes "blobs/ GREW by $GROWTH bytes"
else
    store_reset
    import_all
fi

# Unpacked trees on disk (the references of cases 4-6): umoci unpack, as root.
if have umoci && want 5; then
    log "umoci unpack big (reference tree for case 5)"
    timeout 1200 umoci unpack --image "$L:big" "$RUN/bundle-big" >/dev/null
fi

# ================================================================== case 3: first look
log "case 3: first look, cold"
IMAGEFS_COUNT= UMOCI_COUNT= RAT_COUNT=
count_tree() { timeout "$T_MOUNT" find "$1" | wc -l; }
if have umoci && ! want 3; then
    if want 4 || want 5 || want 6; then umoci unpack --image "$L:distro" "$RUN/bundle-distro" >/dev/null; fi
    D=$RUN/bundle-distro/rootfs
    DB=$RUN/bundle-big/rootfs
elif have umoci; then
    umoci_reset() { rm -rf "$RUN/bundle-distro"; }
    umoci_first() {
        umoci unpack --image "$L:distro" "$RUN/bundle-distro"
        UMOCI_COUNT=$(count_tree "$RUN/bundle-distro/rootfs")
    }
    bench_cold 3.first.umoci peer "$COLD_RUNS" umoci_reset umoci_first
    [ -n "$UMOCI_COUNT" ] || umoci_first
    UMOCI_COUNT=$(count_tree "$RUN/bundle-distro/rootfs")
    note 3.first.umoci "umoci's rootfs has $UMOCI_COUNT entries"
    D=$RUN/bundle-distro/rootfs
    DB=$RUN/bundle-big/rootfs
else
    na 3.first.umoci peer "$(missing umoci)"
    D= DB=
fi
RAT_IDX=$RUN/ratarmount-index
mount_rat() {
    timeout "$T_MOUNT" ratarmount --index-folders "$RAT_IDX" "$LB/$L_BASE" "$LB/$L_MODIFY" "$RMP" >/dev/null 2>&1
    is_mounted "$RMP" || die "ratarmount returned but $RMP is not mounted"
    RAT_MOUNTED=1
}
unmount_rat() {
    is_mounted "$RMP" || return 0
    timeout "$T_MOUNT" ratarmount -u "$RMP" >/dev/null 2>&1 || fusermount3 -u "$RMP"
    RAT_MOUNTED=0
}
rat_pid() { # the ratarmount process serving $RMP
    local p
    for p in /proc/[0-9]*; do
        if tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -qx -- "$RMP" &&
            tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -q ratarmount; then
            echo "${p#/proc/}"
            return 0
        fi
    done
    return 1
}
RAT_HWM=
if ! want 3; then
    :
elif have ratarmount; then
    rat_reset() { unmount_rat; rm -rf "$RAT_IDX"; mkdir -p "$RAT_IDX"; }
    rat_first() {
        mount_rat
        RAT_COUNT=$(count_tree "$RMP")
    }
    bench_cold 3.first.ratarmount peer "$COLD_RUNS" rat_reset rat_first
    is_mounted "$RMP" || rat_first
    note 3.first.ratarmount "ratarmount's union has $RAT_COUNT entries (it does not apply OCI whiteouts)"
else
    na 3.first.ratarmount peer "$(missing ratarmount)"
fi

if [ "$MOUNT_OK" = 1 ]; then
    log "imagefs mount"
    mount_imagefs
    timeout "$T_MOUNT" test -d "$R" && ROOTFS_OK=1
    timeout "$T_MOUNT" test -f "$BLOB" && BLOB_OK=1
    [ -n "$DAEMON_PID" ] || log "warning: cannot find the mount daemon's pid (case 8 RSS will be n/a)"
fi
if [ "$ROOTFS_OK" = 1 ] && want 3; then
    imagefs_reset() { unmount_imagefs; rm -rf "$STORE/cache"; }
    imagefs_first() {
        mount_imagefs
        IMAGEFS_COUNT=$(count_tree "$R")
    }
    bench_cold 3.first.umoci imagefs "$COLD_RUNS" imagefs_reset imagefs_first
    is_mounted "$MP" || imagefs_first
    [ -n "$IMAGEFS_COUNT" ] || IMAGEFS_COUNT=$(count_tree "$R")
    put 3.first.ratarmount imagefs $(awk '$1 == "val" && $2 == "3.first.umoci" && $3 == "imagefs" { $1 = $2 = $3 = ""; print }' "$RESULTS")
    note 3.first.umoci "imagefs rootfs has $IMAGEFS_COUNT entries"
    [ -z "$UMOCI_COUNT" ] || [ "$IMAGEFS_COUNT" = "$UMOCI_COUNT" ] ||
        note 3.first.umoci "ENTRY COUNTS DIFFER: imagefs $IMAGEFS_COUNT, umoci $UMOCI_COUNT"
    [ "$CAN_DROP" = 1 ] || { na 3.first.ratarmount imagefs "$NO_DROP"; }
elif [ "$ROOTFS_OK" != 1 ]; then
    mount_na 3.first.umoci
    mount_na 3.first.ratarmount
fi

# ================================================================== case 4: warm metadata
if want 4; then
log "case 4: warm metadata"
meta() { timeout "$T_MOUNT" find "$1" -printf '%s %m\n'; }
if [ -n "$D" ]; then bench 4.meta.warm peer "$RUNS" 1 - meta "$D"; else na 4.meta.warm peer "$(missing umoci)"; fi
if [ "$ROOTFS_OK" = 1 ]; then
    bench 4.meta.warm imagefs "$RUNS" 1 - meta "$R"
    if [ -n "$D" ]; then
        # Not timed: does rootfs/ hold exactly umoci's tree (names, sizes, modes, owners, link targets)?
        # Directory sizes are the host filesystem's block accounting, not image data: left out.
        tree() { (cd "$1" && timeout "$T_MOUNT" find . \( -type d -printf '%p %y - %m %U %G %l\n' \) -o -printf '%p %y %s %m %U %G %l\n' | LC_ALL=C sort); }
        if diff <(tree "$R") <(tree "$D") >"$RUN/tree.diff"; then
            note 4.meta.warm "rootfs/ equals umoci's tree (path, type, size of non-directories, mode, uid, gid, link target)"
        else
            note 4.meta.warm "ROOTFS DIFFERS from umoci's tree: $(grep -c '^[<>]' "$RUN/tree.diff") lines, see $RUN/tree.diff"
        fi
    fi
else
    mount_na 4.meta.warm
fi
fi

# ================================================================== case 5: warm content
if want 5; then
log "case 5: warm content"
cat_all() { (cd "$1" && timeout "$T_MOUNT" find . -type f -print0 | xargs -0 cat) >/dev/null; }
cat_one() { timeout "$T_MOUNT" cat "$1" >/dev/null; }
if [ -n "$D" ]; then
    CAT_BYTES=$(find "$D" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
    sed -i "s|^row\t5.cat.warm\t\(.*\)\tMB/s\t0\t|row\t5.cat.warm\t\1\tMB/s\t$CAT_BYTES\t|" "$RESULTS"
    bench 5.cat.warm peer "$RUNS" 1 - cat_all "$D"
    bench 5.big.random peer "$RUNS" 1 - cat_one "$DB/big/random.bin"
    bench 5.big.text peer "$RUNS" 1 - cat_one "$DB/big/text.txt"
else
    for k in 5.cat.warm 5.big.random 5.big.text; do na $k peer "$(missing umoci)"; done
fi
if [ "$ROOTFS_OK" = 1 ]; then
    bench 5.cat.warm imagefs "$RUNS" 1 - cat_all "$R"
    bench 5.big.random imagefs "$RUNS" 1 - cat_one "$RB/big/random.bin"
    bench 5.big.text imagefs "$RUNS" 1 - cat_one "$RB/big/text.txt"
    for f in random.bin text.txt; do
        [ "$(stat -c %s "$RB/big/$f")" = "$BIG" ] || die "rootfs/big/$f has the wrong size"
    done
else
    for k in 5.cat.warm 5.big.random 5.big.text; do mount_na $k; done
fi
fi

# ================================================================== case 6: grep
if want 6; then
log "case 6: grep"
grep_tree() {
    local n
    n=$(timeout "$T_MOUNT" grep -rl -- "$NEEDLE" "$1" | wc -l)
    [ "$n" -gt 0 ] || die "grep found no $NEEDLE under $1"
    echo "$n"
}
if [ "$ROOTFS_OK" = 1 ]; then
    bench_cold 6.grep.cold.rat imagefs "$COLD_RUNS" remount grep_tree "$R"
    bench 6.grep.warm.rat imagefs "$RUNS" 1 - grep_tree "$R"
    for k in cold warm; do
        put 6.grep.$k.disk imagefs $(awk -v k=6.grep.$k.rat '$1 == "val" && $2 == k && $3 == "imagefs" { $1 = $2 = $3 = ""; print }' "$RESULTS")
    done
    note 6.grep.cold.rat "imagefs cold: page cache dropped and the daemon remounted; its cache/ (unpacked data) is kept, as after a first look"
    note 6.grep.warm.rat "imagefs finds $(grep_tree "$R") files holding the needle"
    IMAGEFS_HWM=
    [ -z "$DAEMON_PID" ] || IMAGEFS_HWM=$(vmhwm_mib "$DAEMON_PID")
else
    for k in cold.rat cold.disk warm.rat warm.disk; do mount_na 6.grep.$k; done
fi
if have ratarmount; then
    rat_remount() { unmount_rat; mount_rat; }
    bench_cold 6.grep.cold.rat peer "$COLD_RUNS" rat_remount grep_tree "$RMP"
    bench 6.grep.warm.rat peer "$RUNS" 1 - grep_tree "$RMP"
    note 6.grep.warm.rat "ratarmount finds $(grep_tree "$RMP") files (whiteouts not applied); its index is kept when cold"
    RAT_HWM=$(vmhwm_mib "$(rat_pid)") || RAT_HWM=
else
    na 6.grep.cold.rat peer "$(missing ratarmount)"
    na 6.grep.warm.rat peer "$(missing ratarmount)"
fi
if [ -n "$D" ]; then
    bench_cold 6.grep.cold.disk peer "$COLD_RUNS" - grep_tree "$D"
    bench 6.grep.warm.disk peer "$RUNS" 1 - grep_tree "$D"
    note 6.grep.warm.disk "the unpacked tree has $(grep_tree "$D") files holding the needle"
else
    na 6.grep.cold.disk peer "$(missing umoci)"
    na 6.grep.warm.disk peer "$(missing umoci)"
fi
unmount_rat
fi

# ================================================================== case 8a: RSS after 3-6
if want 8; then
if [ "$ROOTFS_OK" = 1 ] && [ -n "${IMAGEFS_HWM:-}" ]; then
    put 8.rss.cases imagefs "$IMAGEFS_HWM"
elif [ "$ROOTFS_OK" = 1 ]; then
    na 8.rss.cases imagefs "daemon pid not found"
else
    mount_na 8.rss.cases
fi
if [ -n "$RAT_HWM" ]; then put 8.rss.cases peer "$RAT_HWM"; else na 8.rss.cases peer "${PEER_MISSING[ratarmount]:-ratarmount pid not found}"; fi
fi

# ================================================================== case 2: layer blob
if want 2; then
log "case 2: layer blob read"
DISK_BLOB=$STORE/blobs/sha256/$L_RANDOM
[ -f "$DISK_BLOB" ] || die "the store has no blob $L_RANDOM"
bench 2.blob.warm peer "$RUNS" 1 - cat_one "$DISK_BLOB"
bench_cold 2.blob.cold peer "$COLD_RUNS" - cat_one "$DISK_BLOB"
bench_cold 2.blob.first peer "$COLD_RUNS" - cat_one "$DISK_BLOB"
if [ "$BLOB_OK" = 1 ]; then
    [ "$(stat -c %s "$BLOB")" = "$L_RANDOM_SIZE" ] || die "layers/002/blob has the wrong size"
    bench 2.blob.warm imagefs "$RUNS" 1 - cat_one "$BLOB"
    bench_cold 2.blob.cold imagefs "$COLD_RUNS" - cat_one "$BLOB"
    bench_cold 2.blob.first imagefs "$COLD_RUNS" remount cat_one "$BLOB"
    [ "$(sha256sum <"$BLOB" | cut -c1-64)" = "$L_RANDOM" ] || die "layers/002/blob does not hash to its digest"
else
    mount_na 2.blob.warm blob
    mount_na 2.blob.cold blob
    mount_na 2.blob.first blob
fi
fi

# ================================================================== case 7: tags at scale
if want 7 || want 8; then
log "case 7: tags at scale"
unmount_imagefs
tag_samples=""
for ((i = 0; i < MANY_TAGS; i++)); do
    timed ifs tag bench/distro:1 "bench/many:t$(printf %04d "$i")"
    tag_samples="$tag_samples $T"
done
for ((r = 0; r < TAG_REPOS; r++)); do
    for ((t = 0; t < TAGS_PER_REPO; t++)); do
        src=bench/distro:1
        [ $((t % 2)) = 0 ] || src=bench/big:1
        timed ifs tag "$src" "bench/r$(printf %02d "$r"):t$(printf %03d "$t")"
        tag_samples="$tag_samples $T"
    done
done
put 7.tag.cli imagefs $tag_samples
n=$(ifs ls --json | python3 -c 'import json,sys; print(sum(1 for r in json.load(sys.stdin) if r["registry"] == "bench" and r["repository"] == "many" and r["tag"]))')
[ "$n" = "$MANY_TAGS" ] || die "imagefs ls shows $n tags in bench/many, expected $MANY_TAGS"
if have umoci; then
    layout_copy "$L" "$RUN/umoci-tags"
    bench_umoci_tag() {
        local i samples=""
        for ((i = 0; i < PEER_TAGS; i++)); do
            timed umoci tag --image "$RUN/umoci-tags:distro" "t$(printf %04d "$i")"
            samples="$samples $T"
        done
        put 7.tag.cli peer $samples
    }
    bench_umoci_tag
    rm -rf "$RUN/umoci-tags"
else
    na 7.tag.cli peer "$(missing umoci)"
fi

# ls -l of many symlinks on disk (peer of ls -l tags/).
LNDIR=$RUN/symlinks
mkdir -p "$LNDIR"
for ((i = 0; i < MANY_TAGS; i++)); do ln -s "../manifests/sha256:$M_DISTRO" "$LNDIR/t$(printf %04d "$i")"; done
lsl() { timeout "$T_MOUNT" ls -l "$1"; }
bench_cold 7.ls.cold peer "$COLD_RUNS" - lsl "$LNDIR"
bench 7.ls.warm peer "$RUNS" 1 - lsl "$LNDIR"
if [ "$MOUNT_OK" = 1 ]; then
    bench_cold 7.ls.cold imagefs "$COLD_RUNS" remount lsl "$MP/bench/many/tags"
    is_mounted "$MP" || mount_imagefs
    bench 7.ls.warm imagefs "$RUNS" 1 - lsl "$MP/bench/many/tags"
    n=$(lsl "$MP/bench/many/tags" | grep -c -- '->')
    [ "$n" = "$MANY_TAGS" ] || die "ls -l $MP/bench/many/tags shows $n links, expected $MANY_TAGS"
    # Case 8b: peak RSS with every tag listed.
    if [ -n "$DAEMON_PID" ]; then
        for ((r = 0; r < TAG_REPOS; r++)); do lsl "$MP/bench/r$(printf %02d "$r")/tags" >/dev/null; done
        timeout "$T_MOUNT" ls -lL "$MP/bench/many/tags/" >/dev/null
        put 8.rss.tags imagefs "$(vmhwm_mib "$DAEMON_PID")"
    else
        na 8.rss.tags imagefs "daemon pid not found"
    fi
    unmount_imagefs
else
    mount_na 7.ls.cold
    mount_na 7.ls.warm
    mount_na 8.rss.tags
fi
na 8.rss.tags peer "no peer"

# rm with cleanup: RM_IMAGES images, each with its own manifest, config and layer.
import_rm() {
    local i
    for ((i = 0; i < RM_IMAGES; i++)); do
        ifs import "$LR:rm$(printf %03d "$i")" "bench/rm:$(printf %03d "$i")" >/dev/null
    done
}
rm_layer_gone() { # I: the unique layer of rm image I is gone from blobs/
    local m layer
    m=$(python3 -c 'import json,sys; print([d["digest"] for d in json.load(open(sys.argv[1]))["manifests"]][int(sys.argv[2])])' "$LR/index.json" "$1")
    layer=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["layers"][0]["digest"])' "$LR/blobs/sha256/${m#sha256:}")
    [ ! -e "$STORE/blobs/sha256/${layer#sha256:}" ] && [ ! -e "$STORE/blobs/sha256/${m#sha256:}" ]
}
log "case 7: rm with cleanup (CLI)"
import_rm
samples=""
for ((i = 0; i < RM_IMAGES; i++)); do
    timed ifs rm "bench/rm:$(printf %03d "$i")"
    samples="$samples $T"
done
put 7.rm.cli imagefs $samples
rm_layer_gone 0 || die "imagefs rm bench/rm:000 left its blobs behind"
rm_layer_gone $((RM_IMAGES - 1)) || die "imagefs rm left blobs behind"
if [ "$MOUNT_OK" = 1 ]; then
    log "case 7: rm with cleanup (mount)"
    import_rm
    mount_imagefs
    timeout "$T_MOUNT" ls "$MP/bench/rm/tags" >/dev/null
    samples=""
    RM_FAILED=
    for ((i = 0; i < RM_IMAGES; i++)); do
        t0=$(date +%s%N)
        if ! timeout "$T_MOUNT" rm "$MP/bench/rm/tags/$(printf %03d "$i")" 2>"$RUN/rm.err"; then
            RM_FAILED=$(head -1 "$RUN/rm.err"); break
        fi
        t1=$(date +%s%N)
        samples="$samples $((t1 - t0))"
    done
    if [ -n "$RM_FAILED" ] && [ "$i" = 0 ]; then
        mount_na 7.rm.mount write "rm tags/<t> fails: $RM_FAILED"
        for ((i = 0; i < RM_IMAGES; i++)); do ifs rm "bench/rm:$(printf %03d "$i")" >/dev/null 2>&1 || true; done
    elif [ -n "$RM_FAILED" ]; then
        die "rm tags/$(printf %03d "$i") failed after $i successful ones: $RM_FAILED"
    else
        put 7.rm.mount imagefs $samples
        rm_layer_gone 0 || die "rm tags/000 in the mount left its blobs behind"
    fi
    unmount_imagefs
else
    mount_na 7.rm.mount
fi
if have umoci; then
    layout_copy "$LR" "$RUN/umoci-rm"
    samples=""
    for ((i = 0; i < RM_IMAGES; i++)); do
        t0=$(date +%s%N)
        umoci rm --image "$RUN/umoci-rm:rm$(printf %03d "$i")"
        umoci gc --layout "$RUN/umoci-rm"
        t1=$(date +%s%N)
        samples="$samples $((t1 - t0))"
    done
    put 7.rm.cli peer $samples
    put 7.rm.mount peer $samples
    rm -rf "$RUN/umoci-rm"
else
    na 7.rm.cli peer "$(missing umoci)"
    na 7.rm.mount peer "$(missing umoci)"
fi

# ln -s promotion (mount) and imagefs tag promotion (CLI) to another registry.
log "case 7: promotion"
ifs tag bench/distro:1 prod/distro:seed >/dev/null
samples=""
for ((i = 0; i < PROMOTE; i++)); do
    timed ifs tag bench/distro:1 "prod/cli:p$(printf %03d "$i")"
    samples="$samples $T"
done
put 7.ln.cli imagefs $samples
if [ "$MOUNT_OK" = 1 ]; then
    mount_imagefs
    samples=""
    LN_FAILED=
    for ((i = 0; i < PROMOTE; i++)); do
        t0=$(date +%s%N)
        if ! timeout "$T_MOUNT" ln -s ../../../bench/distro/tags/1 "$MP/prod/distro/tags/p$(printf %03d "$i")" 2>"$RUN/ln.err"; then
            LN_FAILED=$(head -1 "$RUN/ln.err"); break
        fi
        t1=$(date +%s%N)
        samples="$samples $((t1 - t0))"
    done
    if [ -n "$LN_FAILED" ] && [ "$i" = 0 ]; then
        mount_na 7.ln.mount write "ln -s fails: $LN_FAILED"
    elif [ -n "$LN_FAILED" ]; then
        die "ln -s tags/p$(printf %03d "$i") failed after $i successful ones: $LN_FAILED"
    else
        put 7.ln.mount imagefs $samples
        ifs inspect prod/distro:p000 >/dev/null || die "ln -s promotion did not create prod/distro:p000"
    fi
    unmount_imagefs
else
    mount_na 7.ln.mount
fi
if have skopeo; then
    rm -rf "$RUN/promoted"
    skopeo copy -q "oci:$L:distro" "oci:$RUN/promoted:seed" >/dev/null
    samples=""
    for ((i = 0; i < PROMOTE; i++)); do
        timed skopeo copy -q "oci:$L:distro" "oci:$RUN/promoted:p$(printf %03d "$i")"
        samples="$samples $T"
    done
    put 7.ln.cli peer $samples
    put 7.ln.mount peer $samples
    rm -rf "$RUN/promoted"
else
    na 7.ln.cli peer "$(missing skopeo)"
    na 7.ln.mount peer "$(missing skopeo)"
fi
fi

# ================================================================== case 8c: dedupe
if want 8; then
log "case 8: store size"
ifs ls --json >"$RUN/ls.json"
IMAGES_BYTES=$(python3 -c 'import json,sys; print(sum(r.get("size") or 0 for r in json.load(open(sys.argv[1]))))' "$RUN/ls.json")
TAGS=$(python3 -c 'import json,sys; print(sum(1 for r in json.load(open(sys.argv[1])) if r.get("size")))' "$RUN/ls.json")
put 8.store imagefs "$(du -sb "$STORE/blobs" | cut -f1)"
put 8.store peer "$IMAGES_BYTES"
put 8.store.all imagefs "$(du -sb "$STORE" | cut -f1)"
put 8.store.all peer "$IMAGES_BYTES"
ifs df --json >"$RUN/df.json"
note 8.store "dedupe: the images' sum is $(python3 -c 'import sys; print("%.0f" % (int(sys.argv[1]) / max(1, int(sys.argv[2]))))' "$IMAGES_BYTES" "$(du -sb "$STORE/blobs" | cut -f1)")x the blobs on disk"
note 8.store "$TAGS tags; df --json: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("stored_bytes %d, logical_bytes %d, cache_bytes %d" % (d["stored_bytes"], d["logical_bytes"], d["cache_bytes"]))' "$RUN/df.json")"
fi

# ================================================================== case 10: OCI layout
if want 10; then
# Every repository of the mount is an OCI image layout (SPEC 7): skopeo writes into
# it and umoci reads from it, against the same tools on a plain directory. A store
# of its own (blobs the main store has would be skipped, not written).
log "case 10: OCI layout through the mount"
S10=$RUN/store10 MP10=$RUN/mnt10 P10=$RUN/plain10 U10=$RUN/unpack10
unmount10() {
    is_mounted "$MP10" || return 0
    timeout "$T_MOUNT" "$IMAGEFS" unmount "$MP10" >/dev/null
}
fresh10() { # an empty store mounted at MP10, with repositories b10/big and b10/distro
    unmount10
    rm -rf "$S10"
    mkdir -p "$MP10"
    timeout "$T_MOUNT" "$IMAGEFS" --store "$S10" mount "$MP10" >/dev/null
    is_mounted "$MP10" || die "imagefs mount of $S10 returned but $MP10 is not mounted"
    mkdir -p "$MP10/b10/big" "$MP10/b10/distro"
    sync
}
# Every run starts with the disk quiet (sync, untimed, on both sides): skopeo and
# umoci never fsync, so without it each run's writeback lands in the next one's time.
fresh_plain10() { rm -rf "$P10"; sync; }
fresh_unpack10() { rm -rf "$U10"; sync; }
copy10() { timeout "$T_MOUNT" skopeo copy -q "oci:$L:$1" "oci:$2:x"; }
unpack10() { timeout "$T_MOUNT" umoci unpack --image "$1" "$U10"; }
if [ "$MOUNT_OK" = 0 ]; then
    mount_na 10.copy
    mount_na 10.shared.bytes
    mount_na 10.unpack
elif ! have skopeo; then
    for k in 10.copy 10.shared.bytes 10.unpack; do na "$k" imagefs "$(missing skopeo)"; na "$k" peer "$(missing skopeo)"; done
else
    cat "$L"/blobs/sha256/* >/dev/null
    copy_plain10() { copy10 big "$P10"; }
    copy_mount10() { copy10 big "$MP10/b10/big"; }
    bench_pair 10.copy "$SLOW_RUNS" fresh_plain10 copy_plain10 fresh10 copy_mount10
    [ "$(readlink "$MP10/b10/big/tags/x")" = "../manifests/sha256:$M_BIG" ] ||
        die "skopeo copy into the mount did not tag b10/big:x with $M_BIG"
    # The sibling: distro first, then big, which shares its base and modify layers.
    fresh10
    copy10 distro "$MP10/b10/distro" || die "skopeo copy distro into the mount failed"
    before=$(du -sb "$S10/blobs" | cut -f1)
    copy10 big "$MP10/b10/big" || die "skopeo copy big into the mount failed"
    after=$(du -sb "$S10/blobs" | cut -f1)
    put 10.shared.bytes imagefs $((after - before))
    put 10.shared.bytes peer "$(python3 - "$L" <<'PY'
import json, sys
layout = sys.argv[1]
def blob(d): return open(f"{layout}/blobs/sha256/{d.split(':')[1]}", "rb").read()
def reach(name):
    top = next(m for m in json.load(open(f"{layout}/index.json"))["manifests"]
               if m["annotations"]["org.opencontainers.image.ref.name"] == name)
    manifest = json.loads(blob(top["digest"]))
    return {(d["digest"], d["size"]) for d in [top, manifest["config"], *manifest["layers"]]}
print(sum(size for _, size in reach("big") - reach("distro")))
PY
)"
    note 10.shared.bytes "du -sb of the store's blobs/ before and after the second copy"
    if have umoci; then
        unpack_plain10() { unpack10 "$L:distro"; }
        unpack_mount10() { unpack10 "$MP10/b10/distro:x"; }
        bench_pair 10.unpack "$RUNS" fresh_unpack10 unpack_plain10 fresh_unpack10 unpack_mount10
        rm -rf "$U10"
    else
        na 10.unpack imagefs "$(missing umoci)"
        na 10.unpack peer "$(missing umoci)"
    fi
    "$IMAGEFS" --store "$S10" fsck >"$RUN/fsck10.out" || die "imagefs fsck of the case 10 store failed: $(tail -3 "$RUN/fsck10.out")"
    unmount10
    rm -rf "$S10" "$P10"
fi
fi
# ================================================================== case 11: seekable index
if want 11; then
# The seekable index of gzip layers (src/layer/zran): what building it costs the
# import, its size, and what it buys: a random read of a layer's stream without
# decompressing from the start. Self-contained: its own stores under $RUN.
log "case 11: seekable index"
ZSTORE=$RUN/store-zran
zran_import() {
    "$IMAGEFS" --store "$ZSTORE" import "$L:distro" bench/distro:1 >/dev/null &&
        "$IMAGEFS" --store "$ZSTORE" import "$L:big" bench/big:1 >/dev/null
}
zran_import_without() { IMAGEFS_BENCH_NO_CHECKPOINTS=1 zran_import; }
with="" without=""
for ((i = 0; i < SLOW_RUNS; i++)); do # alternated, so that drift hits both sides
    rm -rf "$ZSTORE"; timed zran_import_without; without="$without $T"
    rm -rf "$ZSTORE"; timed zran_import; with="$with $T"
done
put 11.zran.import imagefs $with
put 11.zran.import peer $without
ZRAN_BYTES=0
for layer in "$L_BASE" "$L_MODIFY" "$L_RANDOM" "$L_TEXT"; do
    f=$ZSTORE/cache/layers/$layer/index/$layer.zran
    [ -f "$f" ] || die "import wrote no seekable index for gzip layer $layer"
    ZRAN_BYTES=$((ZRAN_BYTES + $(stat -c %s "$f")))
done
put 11.zran.size imagefs "$ZRAN_BYTES"
put 11.zran.size peer "$LAYERS_BYTES"
note 11.zran.size "per layer: $(for layer in "$L_BASE" "$L_MODIFY" "$L_RANDOM" "$L_TEXT"; do
    printf '%s %.2f%%; ' "${layer:0:12}" "$(python3 -c 'import sys; print(100 * int(sys.argv[1]) / int(sys.argv[2]))' \
        "$(stat -c %s "$ZSTORE/cache/layers/$layer/index/$layer.zran")" "$(stat -c %s "$LB/$layer")")"
done)"
for size_key in 4096:11.zran.read4k 1048576:11.zran.read1m; do
    size=${size_key%%:*} key=${size_key#*:}
    "$BT" zran-read "$ZSTORE/cache/layers/$L_TEXT/index/$L_TEXT.zran" "$LB/$L_TEXT" "$size" \
        "$((RUNS * 20))" "$SLOW_RUNS" >"$RUN/zran-read.out" || die "bench-tools zran-read failed"
    put "$key" imagefs $(awk '$1 == "index" { $1 = ""; print }' "$RUN/zran-read.out")
    put "$key" peer $(awk '$1 == "start" { $1 = ""; print }' "$RUN/zran-read.out")
done
note 11.zran.read4k "reads at $((RUNS * 20)) deterministic random offsets, one compressed range fetched per read (pread of the blob); the peer decompresses the layer with flate2 from its start to the same offsets ($SLOW_RUNS of them)"
rm -rf "$ZSTORE"
fi

log "fsck"
ifs fsck >"$RUN/fsck.out" || die "imagefs fsck failed after the benchmark: $(tail -3 "$RUN/fsck.out")"
# ================================================================== case 12: scale
# A store of SCALE_REPOS repositories (scale/teamNN/rNNNN) with 10 tags each over
# two images, made through the bulk path (`imagefs tag --destinations-from`, one
# transaction), and the same tree made as directories and symlinks on disk.
if want 12 && [ "$MOUNT_OK" = 1 ]; then
    log "case 12: scale ($SCALE_TAGS tags over $SCALE_REPOS repositories)"
    unmount_imagefs
    SSTORE=$RUN/scale-store
    SDISK=$RUN/scale-disk
    rm -rf "$SSTORE" "$SDISK"
    sfs() { "$IMAGEFS" --store "$SSTORE" "$@"; }
    sfs import "$LR:rm000" seed/a:1 >/dev/null
    sfs import "$LR:rm001" seed/b:1 >/dev/null
    MA=$(sfs inspect --json seed/a:1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"])')
    MB=$(sfs inspect --json seed/b:1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"])')
    python3 - "$RUN" "$SCALE_TEAMS" "$SCALE_REPOS" "$SDISK" "$MA" "$MB" <<'PY'
import os, sys
run, teams, repos, disk, ma, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
per_team = repos // teams
with open(f"{run}/scale-a.txt", "w") as a, open(f"{run}/scale-b.txt", "w") as b:
    for r in range(repos):
        repo = f"scale/team{r // per_team:02d}/r{r:04d}"
        base = f"{disk}/{repo}"
        os.makedirs(f"{base}/tags")
        for m in (ma, mb):
            os.makedirs(f"{base}/manifests/{m}")
        for t in range(10):
            (a if t % 2 == 0 else b).write(f"{repo}:t{t}\n")
            os.symlink(f"../manifests/{ma if t % 2 == 0 else mb}", f"{base}/tags/t{t}")
PY
    t0=$(date +%s%N)
    sfs tag seed/a:1 --destinations-from "$RUN/scale-a.txt" >/dev/null
    sfs tag seed/b:1 --destinations-from "$RUN/scale-b.txt" >/dev/null
    t1=$(date +%s%N)
    note 12.scale.mount "store built with the bulk path in $(((t1 - t0) / 1000000)) ms; disk tree: $SDISK"
    sfs fsck >"$RUN/scale-fsck.out" || die "fsck of the scale store failed: $(tail -3 "$RUN/scale-fsck.out")"
    n=$(sfs ls --json | python3 -c 'import json,sys; print(sum(1 for r in json.load(sys.stdin) if r["registry"] == "scale" and r["tag"]))')
    [ "$n" = "$SCALE_TAGS" ] || die "the scale store lists $n tags, expected $SCALE_TAGS"
    SMP=$MP
    smount() {
        local t0 t1
        t0=$(date +%s%N)
        timeout "$T_SCALE" "$IMAGEFS" --store "$SSTORE" mount "$SMP" >/dev/null
        timeout "$T_SCALE" stat "$SMP/scale" >/dev/null
        t1=$(date +%s%N)
        MOUNT_NS=$((t1 - t0))
        is_mounted "$SMP" || die "imagefs mount of the scale store failed"
        IMAGEFS_MOUNTED=1
        DAEMON_PID=$(daemon_pid) || DAEMON_PID=
        [ -z "$DAEMON_PID" ] || STARTED_PIDS="$STARTED_PIDS $DAEMON_PID"
    }
    sremount() { unmount_imagefs; smount; }
    stats() { getfattr -n user.imagefs.stats --only-values "$SMP" 2>/dev/null | tr '\n' ' '; }
    stat_of() { getfattr -n user.imagefs.stats --only-values "$SMP" 2>/dev/null | awk -F= -v k="$1" '$1 == k { print $2 }'; }
    ONE=scale/team$(printf %02d $((SCALE_TEAMS / 2)))/r$(printf %04d $((SCALE_REPOS / 2 + SCALE_REPOS / SCALE_TEAMS / 2)))
    [ -d "$SDISK/$ONE" ] || ONE=$(cd "$SDISK" && find scale -mindepth 2 -maxdepth 2 | sort | sed -n "$((SCALE_REPOS / 2))p")
    samples=""
    for ((i = 0; i < RUNS; i++)); do sremount; samples="$samples $MOUNT_NS"; done
    put 12.scale.mount imagefs $samples
    na 12.scale.mount peer "no peer"
    lsl() { timeout "$T_SCALE" ls -l "$1"; }
    bench_cold 12.scale.ls1.first imagefs "$COLD_RUNS" sremount lsl "$SMP/$ONE/tags"
    bench_cold 12.scale.ls1.first peer "$COLD_RUNS" - lsl "$SDISK/$ONE/tags"
    bench 12.scale.ls1.warm imagefs "$RUNS" 1 - lsl "$SMP/$ONE/tags"
    bench 12.scale.ls1.warm peer "$RUNS" 1 - lsl "$SDISK/$ONE/tags"
    sfind() { timeout "$T_SCALE" find "$1/scale" -maxdepth 3 -name tags | wc -l; }
    bench_cold 12.scale.find imagefs "$COLD_RUNS" sremount sfind "$SMP"
    bench_cold 12.scale.find peer "$COLD_RUNS" - sfind "$SDISK"
    [ "$(sfind "$SMP")" = "$SCALE_REPOS" ] || die "find in the scale mount found $(sfind "$SMP") tags directories"
    lsall() { (cd "$1" && timeout "$T_SCALE" ls -l scale/*/*/tags) | wc -l; }
    # Counted walk: FUSE requests and SQL statements per entry on a first walk.
    sremount
    S0=$(stats)
    sfind "$SMP" >/dev/null
    S1=$(stats)
    lsall "$SMP" >/dev/null
    S2=$(stats)
    note 12.scale.find "daemon counters before: $S0"
    note 12.scale.find "after find ($SCALE_REPOS repositories + $SCALE_TEAMS teams): $S1"
    note 12.scale.lsall.cold "after ls -l of every tag ($SCALE_TAGS): $S2"
    [ -z "$DAEMON_PID" ] || put 12.scale.rss imagefs "$(awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$DAEMON_PID/status")"
    [ -n "$DAEMON_PID" ] || na 12.scale.rss imagefs "daemon pid not found"
    na 12.scale.rss peer "no peer"
    bench_cold 12.scale.lsall.cold imagefs "$COLD_RUNS" sremount lsall "$SMP"
    bench_cold 12.scale.lsall.cold peer "$COLD_RUNS" - lsall "$SDISK"
    bench 12.scale.lsall.warm imagefs "$RUNS" 1 - lsall "$SMP"
    bench 12.scale.lsall.warm peer "$RUNS" 1 - lsall "$SDISK"
    [ "$(lsall "$SMP")" = "$(lsall "$SDISK")" ] || note 12.scale.lsall.warm "LINE COUNTS DIFFER between the mount and the disk tree"
    unmount_imagefs
    bench 12.scale.cli.ls imagefs "$RUNS" 1 - sfs ls
    bench 12.scale.cli.ls1 imagefs "$RUNS" 1 - sfs ls "$ONE"
    bench 12.scale.df imagefs "$RUNS" 1 - sfs df
    for k in cli.ls cli.ls1 df; do na 12.scale.$k peer "no peer"; done
    samples_rm="" samples_tag=""
    for ((i = 0; i < RUNS; i++)); do
        timed sfs rm "$ONE:t0"; samples_rm="$samples_rm $T"
        timed sfs tag seed/a:1 "$ONE:t0"; samples_tag="$samples_tag $T"
    done
    put 12.scale.rm imagefs $samples_rm
    put 12.scale.tag imagefs $samples_tag
    na 12.scale.rm peer "no peer"
    na 12.scale.tag peer "no peer"
    rm -rf "$SDISK"
elif want 12; then
    for k in mount ls1.first ls1.warm find lsall.cold lsall.warm cli.ls cli.ls1 df rss rm tag; do mount_na 12.scale.$k; done
fi

# docker-registry (distribution 2.8.2) on 127.0.0.1 in the workdir, with a config
# of its own and an emptied environment (it reads any REGISTRY_* variable as
# config); stopped by the cleanup (STARTED_PIDS). Cases 9 and 13.
REG_PID=
reg_start() { # DATA-DIR: a registry on a free port, empty when DATA-DIR is
    local data=$1 i
    REG_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    REG=127.0.0.1:$REG_PORT
    mkdir -p "$data"
    cat >"$RUN/registry.yml" <<REGCONFIG
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $data
  delete:
    enabled: true
http:
  addr: $REG
REGCONFIG
    env -i "$(command -v docker-registry)" serve "$RUN/registry.yml" >>"$RUN/registry.log" 2>&1 &
    REG_PID=$!
    STARTED_PIDS="$STARTED_PIDS $REG_PID"
    for ((i = 0; i < 100; i++)); do
        python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "http://$REG/v2/" 2>/dev/null && return 0
        sleep 0.1
    done
    die "docker-registry did not start: $(tail -3 "$RUN/registry.log")"
}
reg_stop() {
    [ -n "$REG_PID" ] || return 0
    kill "$REG_PID" 2>/dev/null
    wait "$REG_PID" 2>/dev/null || true
    REG_PID=
}

# ================================================================== case 9: registry
if want 9; then
# Pull against skopeo + import and against a local import; push into an empty
# registry against skopeo.
log "case 9: registry"
need_tool docker-registry docker-registry
if ! have docker-registry; then
    for k in 9.pull.skopeo 9.pull.import 9.pull.shared 9.push.skopeo; do na "$k" imagefs "$(missing docker-registry)"; na "$k" peer "$(missing docker-registry)"; done
elif ! have skopeo; then
    for k in 9.pull.skopeo 9.pull.import 9.pull.shared 9.push.skopeo; do na "$k" imagefs "$(missing skopeo) (it fills the registry)"; na "$k" peer "$(missing skopeo)"; done
else
    reg_start "$RUN/registry-data"
    for image in distro big; do
        skopeo copy -q --dest-tls-verify=false "oci:$L:$image" "docker://$REG/bench/$image:1"
    done
    PULL_STORE=$RUN/pull-store
    pull_reset() { rm -rf "$PULL_STORE"; }
    pull_all() {
        local image
        for image in distro big; do
            "$IMAGEFS" --store "$PULL_STORE" pull "$REG/bench/$image:1" --json >"$RUN/pull-$image.json"
        done
    }
    bench 9.pull.skopeo imagefs "$SLOW_RUNS" 0 pull_reset pull_all
    put 9.pull.import imagefs $(awk '$1 == "val" && $2 == "9.pull.skopeo" && $3 == "imagefs" { $1 = $2 = $3 = ""; print }' "$RESULTS")
    skopeo_pull_reset() { rm -rf "$PULL_STORE" "$RUN/skopeo-pull"; }
    skopeo_pull_all() {
        local image
        for image in distro big; do
            skopeo copy -q --src-tls-verify=false "docker://$REG/bench/$image:1" "oci:$RUN/skopeo-pull:$image"
            "$IMAGEFS" --store "$PULL_STORE" import "$RUN/skopeo-pull:$image" "bench/$image:1" >/dev/null
        done
    }
    bench 9.pull.skopeo peer "$SLOW_RUNS" 0 skopeo_pull_reset skopeo_pull_all
    rm -rf "$RUN/skopeo-pull"
    IMPORT_STORE=$RUN/import-store
    local_reset() { rm -rf "$IMPORT_STORE"; }
    local_all() {
        "$IMAGEFS" --store "$IMPORT_STORE" import "$L:distro" bench/distro:1 >/dev/null
        "$IMAGEFS" --store "$IMPORT_STORE" import "$L:big" bench/big:1 >/dev/null
    }
    bench 9.pull.import peer "$SLOW_RUNS" 0 local_reset local_all
    # A second image sharing the base: what the pull of big fetches after distro.
    pull_reset
    "$IMAGEFS" --store "$PULL_STORE" pull "$REG/bench/distro:1" >/dev/null
    "$IMAGEFS" --store "$PULL_STORE" pull "$REG/bench/big:1" --json >"$RUN/pull-shared.json"
    put 9.pull.shared imagefs "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes_fetched"])' "$RUN/pull-shared.json")"
    put 9.pull.shared peer "$("$IMAGEFS" --store "$PULL_STORE" ls --json "$REG/bench/big" | python3 -c 'import json,sys; print(sum(r.get("size") or 0 for r in json.load(sys.stdin)))')"
    note 9.pull.shared "$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("blobs fetched %d, skipped %d" % (r["blobs_fetched"], r["blobs_skipped"]))' "$RUN/pull-shared.json")"
    pull_reset
    reg_stop
    # Push: each run into a new, empty registry, from the store of the local import.
    push_reset() { reg_stop; rm -rf "$RUN/registry-push"; reg_start "$RUN/registry-push"; }
    push_all() {
        "$IMAGEFS" --store "$IMPORT_STORE" push bench/distro:1 "$REG/bench/distro:1" >/dev/null
        "$IMAGEFS" --store "$IMPORT_STORE" push bench/big:1 "$REG/bench/big:1" >/dev/null
    }
    bench 9.push.skopeo imagefs "$SLOW_RUNS" 0 push_reset push_all
    skopeo_push_all() {
        local image
        for image in distro big; do
            skopeo copy -q --dest-tls-verify=false "oci:$L:$image" "docker://$REG/bench/$image:1"
        done
    }
    bench 9.push.skopeo peer "$SLOW_RUNS" 0 push_reset skopeo_push_all
    reg_stop
    rm -rf "$RUN/registry-data" "$RUN/registry-push" "$IMPORT_STORE"
fi

fi

# ================================================================== case 13: lazy pull
# The big image pushed from the case-1 store with `imagefs push` (which attaches
# the index artifact) to a loopback registry. From nothing to the first
# `cat rootfs/etc/os-release`: pull --lazy + mount + cat against a full pull +
# mount + cat and against skopeo copy + umoci unpack + cat. Bytes are counted by
# scripts/count-proxy.py in front of the registry, in separate untimed runs.
if want 13; then
log "case 13: lazy pull"
need_tool docker-registry docker-registry
K13="13.lazy.first 13.lazy.umoci 13.lazy.bytes 13.lazy.find 13.lazy.grep"
if ! have docker-registry; then
    for k in $K13; do na "$k" imagefs "$(missing docker-registry)"; na "$k" peer "$(missing docker-registry)"; done
elif [ "$MOUNT_OK" = 0 ] || ! "$IMAGEFS" pull --help 2>/dev/null | grep -q -- --lazy; then
    for k in $K13; do
        na "$k" imagefs "n/a (not built): imagefs pull has no --lazy"
        na "$k" peer "n/a: the imagefs side is not built"
    done
else
    reg_start "$RUN/registry13"
    ifs push bench/big:1 "$REG/bench/big:1" >/dev/null
    S13=$RUN/store13
    MP13=$RUN/mnt13
    mkdir -p "$MP13"
    m13() { timeout "$T_MOUNT" "$IMAGEFS" --store "$S13" mount "$MP13" >/dev/null; }
    u13() { is_mounted "$MP13" && timeout "$T_MOUNT" "$IMAGEFS" unmount "$MP13" >/dev/null; return 0; }
    reset13() { u13; rm -rf "$S13"; }
    first_lazy() { # REGISTRY
        "$IMAGEFS" --store "$S13" pull --lazy "$1/bench/big:1" >/dev/null
        m13
        grep -q imagefs-bench "$MP13/$1/bench/big/tags/1/rootfs/etc/os-release"
    }
    first_full() {
        "$IMAGEFS" --store "$S13" pull "$REG/bench/big:1" >/dev/null
        m13
        grep -q imagefs-bench "$MP13/$REG/bench/big/tags/1/rootfs/etc/os-release"
    }
    bench 13.lazy.first imagefs "$SLOW_RUNS" 0 reset13 first_lazy "$REG"
    bench 13.lazy.first peer "$SLOW_RUNS" 0 reset13 first_full
    put 13.lazy.umoci imagefs $(awk '$1 == "val" && $2 == "13.lazy.first" && $3 == "imagefs" { $1 = $2 = $3 = ""; print }' "$RESULTS")
    if have skopeo && have umoci; then
        sk_reset() { reset13; rm -rf "$RUN/sk13" "$RUN/sk13-bundle"; }
        first_skopeo() {
            skopeo copy -q --src-tls-verify=false "docker://$REG/bench/big:1" "oci:$RUN/sk13:big"
            umoci unpack --image "$RUN/sk13:big" "$RUN/sk13-bundle" >/dev/null
            grep -q imagefs-bench "$RUN/sk13-bundle/rootfs/etc/os-release"
        }
        bench 13.lazy.umoci peer "$SLOW_RUNS" 0 sk_reset first_skopeo
        rm -rf "$RUN/sk13" "$RUN/sk13-bundle"
    else
        na 13.lazy.umoci peer "$(missing skopeo) or $(missing umoci)"
    fi
    # Bytes, through the counting proxy.
    python3 "$REPO/scripts/count-proxy.py" "$REG" "$RUN/proxy13.port" >>"$RUN/proxy13.log" 2>&1 &
    PROXY_PID=$!
    STARTED_PIDS="$STARTED_PIDS $PROXY_PID"
    for ((i = 0; i < 100; i++)); do [ -s "$RUN/proxy13.port" ] && break; sleep 0.1; done
    [ -s "$RUN/proxy13.port" ] || die "count-proxy did not start: $(tail -3 "$RUN/proxy13.log")"
    PX=127.0.0.1:$(cat "$RUN/proxy13.port")
    px_count() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen("http://%s/__count" % sys.argv[1], timeout=10).read().split()[0].decode())' "$PX"; }
    px_reset() { python3 -c 'import sys, urllib.request; urllib.request.urlopen(urllib.request.Request("http://%s/__reset" % sys.argv[1], data=b"", method="POST"), timeout=10)' "$PX"; }
    reset13
    px_reset
    first_lazy "$PX"
    put 13.lazy.bytes imagefs "$(px_count)"
    put 13.lazy.bytes peer "$("$IMAGEFS" --store "$S13" ls --json "$PX/bench/big" | python3 -c 'import json,sys; print(sum(r.get("size") or 0 for r in json.load(sys.stdin)))')"
    note 13.lazy.bytes "pull --lazy (manifest, config, index artifact) + the cat's ranges, as the registry sent them"
    reset13
    "$IMAGEFS" --store "$S13" pull --lazy "$PX/bench/big:1" >/dev/null
    m13
    px_reset
    find "$MP13/$PX/bench/big/tags/1/rootfs" | wc -l >"$RUN/find13.out"
    put 13.lazy.find imagefs "$(px_count)"
    note 13.lazy.find "find rootfs listed $(cat "$RUN/find13.out") paths"
    grep_lazy() {
        "$IMAGEFS" --store "$S13" pull --lazy "$REG/bench/big:1" >/dev/null
        m13
        [ "$(timeout "$T_MOUNT" grep -rl -- "$NEEDLE" "$MP13/$REG/bench/big/tags/1/rootfs" | wc -l)" -gt 0 ] || die "grep found no $NEEDLE in the lazy image"
    }
    grep_full() {
        "$IMAGEFS" --store "$S13" pull "$REG/bench/big:1" >/dev/null
        m13
        [ "$(timeout "$T_MOUNT" grep -rl -- "$NEEDLE" "$MP13/$REG/bench/big/tags/1/rootfs" | wc -l)" -gt 0 ] || die "grep found no $NEEDLE in the pulled image"
    }
    bench 13.lazy.grep imagefs "$SLOW_RUNS" 0 reset13 grep_lazy
    bench 13.lazy.grep peer "$SLOW_RUNS" 0 reset13 grep_full
    reset13
    kill "$PROXY_PID" 2>/dev/null
    reg_stop
    rm -rf "$RUN/registry13" "$S13"
fi
fi

# Rows of cases not asked for (--cases).
if [ -n "$CASES" ]; then
    while IFS=$'\t' read -r kind key case _; do
        [ "$kind" = row ] || continue
        want "$case" && continue
        na "$key" imagefs "not run (--cases $CASES)"
        na "$key" peer "not run (--cases $CASES)"
    done <"$RESULTS"
fi

# ================================================================== the table
log "writing $OUT"
JSON=${OUT%.md}.json
MODE=$PROFILE
[ "$QUICK" = 0 ] || MODE="quick (tiny inputs, one run each: timings mean nothing)"
python3 "$REPO/scripts/bench-report.py" "$RESULTS" "$OUT" "$JSON" \
    "$(machine_line)" "$(date -u '+%Y-%m-%d %H:%M UTC')" "$MODE" \
    "load average at start: $LOAD0; runs: $RUNS warm, $COLD_RUNS cold, $SLOW_RUNS import; files: $FILES in $DIRS dirs; big files: $BIG bytes; imagefs $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo '?')" \
    "$(($(date +%s) - T_START))"
cat "$OUT"
log "done in $(($(date +%s) - T_START)) s: $OUT, $JSON"
