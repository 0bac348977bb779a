#!/usr/bin/env bash
# Usage: scripts/check.sh
# What must be clean before every commit: formatting, clippy with warnings as
# errors, and the tests (same command as CI), then no leftover test mounts.
set -euo pipefail

cd "$(dirname "$0")/.."
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --release --locked
scripts/leftover-mounts.sh
