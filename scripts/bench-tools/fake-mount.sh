#!/usr/bin/env bash
# A stand-in for `imagefs` that exercises bench.sh's mount paths before the real
# mount exists (NOT a benchmark of anything):
#   IMAGEFS_BENCH_BIN=scripts/bench-tools/fake-mount.sh scripts/bench.sh --quick
# Every command goes to the real target/release/imagefs except `mount` and
# `unmount`, which build the SPEC's tree (tags/ symlinks, manifests/sha256:X/
# {manifest.json,layers/NNN/blob,rootfs/}) in a plain directory, with rootfs/ from
# `imagefs export` + `umoci unpack`, and bind-mount it read-only on MOUNTPOINT.
# Writes (rm, ln -s) therefore fail with EROFS, and no daemon pid is found.
set -euo pipefail
REAL=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/release/imagefs
args=("$@")
store= cmd= i=0
while [ $i -lt ${#args[@]} ]; do
    case "${args[$i]}" in
        --store) store=${args[$((i + 1))]}; i=$((i + 2)); continue ;;
        -*) ;;
        *) cmd=${args[$i]}; break ;;
    esac
    i=$((i + 1))
done
unmount_under() { # every mount below $1, deepest first
    awk -v p="$1/" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r m; do umount "$m"; done
}
case "$cmd" in
    mount)
        [ "${args[$((i + 1))]:-}" = --help ] && { echo "fake mount"; exit 0; }
        mp=${args[-1]}
        tree=$store.fake-tree
        unpacked=$store.fake-rootfs
        unmount_under "$tree"
        rm -rf "$tree"
        mkdir -p "$tree" "$unpacked"
        "$REAL" --store "$store" ls --json | python3 -c '
import json, sys
for r in json.load(sys.stdin):
    if r.get("tag"):
        print(r["registry"], r["repository"], r["tag"], r["digest"])' |
            while read -r reg repo tag digest; do
                r=$tree/$reg/$repo
                m=$r/manifests/$digest
                mkdir -p "$r/tags"
                ln -s "../manifests/$digest" "$r/tags/$tag"
                [ -d "$m" ] && continue
                mkdir -p "$m/layers"
                ln "$store/blobs/sha256/${digest#sha256:}" "$m/manifest.json"
                n=0
                for l in $(python3 -c 'import json,sys; print(" ".join(d["digest"] for d in json.load(open(sys.argv[1]))["layers"]))' "$m/manifest.json"); do
                    mkdir -p "$m/layers/$(printf %03d $n)"
                    ln "$store/blobs/sha256/${l#sha256:}" "$m/layers/$(printf %03d $n)/blob"
                    n=$((n + 1))
                done
                u=$unpacked/${digest#sha256:}
                if [ ! -d "$u/rootfs" ]; then
                    rm -rf "$u.layout" "$u"
                    "$REAL" --store "$store" export "$reg/$repo:$tag" "$u.layout" --format oci >/dev/null
                    name=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"])' "$u.layout/index.json")
                    umoci unpack --image "$u.layout:$name" "$u" >/dev/null
                    rm -rf "$u.layout"
                fi
                mkdir "$m/rootfs"
                mount --bind "$u/rootfs" "$m/rootfs"
            done
        echo "$tree" >"$mp.fake-tree"
        mount --rbind "$tree" "$mp"
        mount -o remount,ro,bind "$mp"
        ;;
    unmount)
        mp=${args[-1]}
        umount -R "$mp"
        [ ! -f "$mp.fake-tree" ] || unmount_under "$(cat "$mp.fake-tree")"
        ;;
    *) exec "$REAL" "$@" ;;
esac
