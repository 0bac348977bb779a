#!/usr/bin/env bash
# Usage: scripts/leftover-mounts.sh [DIR]
# Fails (exit 1) and lists them if any FUSE mount is left at or below DIR
# (default: $IMAGEFS_TEST_TMP, else /tmp/imagefs-tests). Tests must unmount
# everything they mount, even when they fail.
set -euo pipefail

dir="${1:-${IMAGEFS_TEST_TMP:-/tmp/imagefs-tests}}"
dir="$(realpath -m "$dir")"

leftovers="$(awk -v dir="$dir" '$3 ~ /^fuse/ && (index($2, dir "/") == 1 || $2 == dir) { print $2 " (" $3 ")" }' /proc/mounts)"
if [ -n "$leftovers" ]; then
    echo "leftover FUSE mounts below $dir:" >&2
    echo "$leftovers" >&2
    echo "(clean up with: umount -l MOUNTPOINT)" >&2
    exit 1
fi
echo "no FUSE mounts left below $dir"
