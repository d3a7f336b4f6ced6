#!/usr/bin/env bash
# Formatting, lints and packaging, as CI runs them. Run from anywhere in
# the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Every publishable crate packages (its manifest fields, README, licence
# files and include list); `cargo package --workspace` without
# --no-verify also builds each from its package, against the others'.
cargo package --workspace --no-verify --allow-dirty >/dev/null
