#!/bin/sh
# Writes the seed corpora (fuzz/corpus/<target>/) from imagefs::sample.
# Usage: fuzz/seed.sh   (from anywhere; needs only the stable toolchain)
set -eu
cd "$(dirname "$0")"
cargo run --quiet --release -p imagefs-fuzz-seed -- corpus
for target in layer_index image_json archive reference gzip_index; do
    printf '%s: %s seeds, %s bytes\n' "$target" \
        "$(ls corpus/$target | wc -l)" "$(cat corpus/$target/* | wc -c)"
done
