#!/usr/bin/env bash
# The long fuzz run: each target fed HPCOMM_FUZZ_CASES random and mutated
# inputs (default 1,000,000), in release mode. `cargo test` runs the same
# targets with 10,000 each. Prints, per target, the test result, the wall
# time and the peak resident memory; exits non-zero on any failure.
#   bash ci/fuzz.sh [CASES] [SEED]
# Targets:
#   engine  frames from a raw peer: header decoding, envelope and context
#           checks, the protocol engine (runtime/tests/hostile_frames.rs)
#   tcp     byte streams into the tcp connection reader (transport)
#   ring    records and indices of a shm ring, into its reader (transport)
#   kvs     request lines into the key-value server (runtime's bootstrap)
#   launcher  PMI-1 lines, PMI-2 frames and process mappings from a launcher
set -euo pipefail
cd "$(dirname "$0")/.."
export HPCOMM_FUZZ_CASES="${1:-1000000}"
export HPCOMM_FUZZ_SEED="${2:-$(date +%s)}"
echo "fuzz: $HPCOMM_FUZZ_CASES cases per target, seed $HPCOMM_FUZZ_SEED"
targets=(
    "engine|-p hpcomm-runtime --test hostile_frames|random_and_mutated_frames_never_crash_a_rank"
    "tcp|-p hpcomm-transport --lib|tcp::tests::random_streams_never_crash_the_reader"
    "ring|-p hpcomm-transport --lib|shm::ring::tests::random_rings_never_crash_the_reader"
    "kvs|-p hpcomm-runtime --lib|bootstrap::kvs_server::tests::random_requests_never_crash_the_server"
    "launcher|-p hpcomm-runtime --lib|bootstrap::replay_tests::random_launcher_bytes_never_crash_the_parsers"
)
failed=0
for target in "${targets[@]}"; do
    IFS='|' read -r name selection test <<<"$target"
    # The test binary itself runs under `time`, so that the peak memory is
    # the target's, not cargo's.
    # shellcheck disable=SC2086
    bin=$(cargo test --release $selection --no-run 2>&1 | grep -oE '[^ (]*release/deps/[A-Za-z0-9_-]+' | tail -1)
    log=$(mktemp)
    status=0
    /usr/bin/time -v "$bin" "$test" --exact >"$log" 2>&1 || status=$?
    result=$(grep -E "^test result" "$log" | head -1)
    wall=$(grep -E "Elapsed \(wall" "$log" | awk '{print $NF}')
    rss=$(grep -E "Maximum resident" "$log" | awk '{print $NF}')
    echo "$name: ${result:-no result} (wall $wall, peak $rss KiB)"
    if [ "$status" -ne 0 ]; then
        failed=1
        grep -E "panicked|watchdog" "$log" || tail -20 "$log"
    fi
    rm -f "$log"
done
exit "$failed"
