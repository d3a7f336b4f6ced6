#!/usr/bin/env bash
# Model-checks the shm ring's memory-ordering protocol with loom.
# Separate target directory: `--cfg loom` rebuilds everything.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}" \
    cargo test --release --target-dir target/loom -p hpcomm-transport --lib -- loom
