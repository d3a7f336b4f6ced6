#!/usr/bin/env bash
# Two hpcomm builds side by side over ofi, with libfabric's fi_pingpong
# beside them (issue 17): ROUNDS rounds alternating fi_pingpong, build A and
# build B, 8 B one-way latency with ITERS iterations, on PROVIDER; then
# the medians.
#
#   git worktree add /tmp/old 1ea2460 && (cd /tmp/old && cargo build --release --bin hpcomm)
#   bash ci/ofi-ab.sh /tmp/old/target/release/hpcomm target/release/hpcomm 11
set -euo pipefail
a=${1:?build A} b=${2:?build B} rounds=${3:-11}
prov=${PROVIDER:-shm} iters=${ITERS:-100000}
port=48700

lat() {
    HPCOMM_OFI_PROVIDER=$prov "$1" run -n 2 --transport ofi --timeout 300 -- \
        "$1" bench latency --min-size 8 --max-size 8 --iters "$iters" | awk '$1 == 8 {print $2}'
}
pingpong() {
    port=$((port + 1))
    fi_pingpong -p "$prov" -e rdm -S 8 -I "$iters" -B "$port" >/dev/null 2>&1 &
    local server=$!
    sleep 0.3
    fi_pingpong -p "$prov" -e rdm -S 8 -I "$iters" -P "$port" 127.0.0.1 2>/dev/null |
        awk '$1 ~ /^[0-9]+$/ {print $7}'
    wait "$server" 2>/dev/null || true
}
median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) print "—"; else print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }

declare -a pp=() la=() lb=()
for r in $(seq "$rounds"); do
    pp+=("$(pingpong)")
    la+=("$(lat "$a")")
    lb+=("$(lat "$b")")
    echo "round $r: fi_pingpong ${pp[-1]} µs, A ${la[-1]} µs, B ${lb[-1]} µs"
done
echo "$prov 8 B one-way medians: fi_pingpong $(printf '%s\n' "${pp[@]}" | median) µs, A $(printf '%s\n' "${la[@]}" | median) µs, B $(printf '%s\n' "${lb[@]}" | median) µs"
