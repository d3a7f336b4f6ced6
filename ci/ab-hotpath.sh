#!/usr/bin/env bash
# Side-by-side check of the hot path: 8-byte one-way latency and 8-byte
# message rate over shm on 2 ranks, for two builds of `hpcomm`, alternating
# A and B ROUNDS times (default 7) and printing every figure and the
# medians. Build the baseline in a worktree first, for example:
#   git worktree add /tmp/base <commit> && (cd /tmp/base && cargo build --release --bin hpcomm)
#   cargo build --release --bin hpcomm
#   bash ci/ab-hotpath.sh /tmp/base/target/release/hpcomm target/release/hpcomm
set -euo pipefail
a="$1"
b="$2"
rounds="${3:-7}"
measure() { # BINARY KIND -> the 8-byte figure
    "$1" run -n 2 -- "$1" bench "$2" --min-size 8 --max-size 8 --json |
        sed -n 's/.*"size":8,"value":\([0-9.e+-]*\).*/\1/p'
}
median() { sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
declare -A got
for round in $(seq 1 "$rounds"); do
    for side in A B; do
        bin=$a
        [ "$side" = B ] && bin=$b
        lat=$(measure "$bin" latency)
        mr=$(measure "$bin" mr)
        got[$side-lat]+="$lat "
        got[$side-mr]+="$mr "
        printf 'round %d %s: latency %.4f us, message rate %.0f /s\n' "$round" "$side" "$lat" "$mr"
    done
done
for side in A B; do
    lat=$(echo "${got[$side-lat]}" | tr ' ' '\n' | grep . | median)
    mr=$(echo "${got[$side-mr]}" | tr ' ' '\n' | grep . | median)
    printf 'median %s: latency %.4f us, message rate %.0f /s\n' "$side" "$lat" "$mr"
done
