#!/usr/bin/env bash
# Formatting and lints, as CI runs them. Run from anywhere in the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
