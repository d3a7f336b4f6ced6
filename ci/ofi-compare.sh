#!/usr/bin/env bash
# The ofi backend beside libfabric's own fi_pingpong, on the same provider,
# in one run (issue 17): for each provider, ROUNDS rounds alternating
#   - fi_pingpong -e rdm -S 8 (one-way µs: its usec/xfer) and -S 4194304
#     (its MB/sec: bytes each way over the one-way time), and
#   - hpcomm run -n 2 --transport ofi -- hpcomm bench latency (8 B) and
#     bw (4 MiB, OSU's windowed bandwidth) with HPCOMM_OFI_PROVIDER set,
# then the medians. Both run two processes on this host.
#
#   bash ci/ofi-compare.sh                       # tcp;ofi_rxm and shm, 5 rounds
#   PROVIDERS="shm" ROUNDS=3 bash ci/ofi-compare.sh
#
# Needs libfabric1 and libfabric-bin (fi_pingpong).
set -euo pipefail
cd "$(dirname "$0")/.."
providers=${PROVIDERS:-"tcp;ofi_rxm shm"}
rounds=${ROUNDS:-5}
cargo build --release --quiet --bin hpcomm
exe=${CARGO_TARGET_DIR:-$PWD/target}/release/hpcomm
command -v fi_pingpong >/dev/null || { echo "ofi-compare: fi_pingpong not found (apt-get install libfabric-bin)" >&2; exit 1; }
port=47600

# fi_pingpong between two processes here; prints column $2 of its result.
pingpong() {
    local prov=$1 size=$2 col=$3 iters=$4
    port=$((port + 1))
    fi_pingpong -p "$prov" -e rdm -S "$size" -I "$iters" -B "$port" >/dev/null 2>&1 &
    local server=$!
    sleep 0.3
    fi_pingpong -p "$prov" -e rdm -S "$size" -I "$iters" -P "$port" 127.0.0.1 2>/dev/null |
        awk -v c="$col" '$1 ~ /^[0-9]+[kmg]?$/ {print $c}'
    wait "$server" 2>/dev/null || true
}

# hpcomm bench KIND at SIZE over ofi; prints the figure.
bench() {
    local prov=$1 kind=$2 size=$3
    HPCOMM_OFI_PROVIDER=$prov "$exe" run -n 2 --transport ofi --timeout 300 -- \
        "$exe" bench "$kind" --min-size "$size" --max-size "$size" |
        awk -v s="$size" '$1 == s {print $2}'
}

median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) print "—"; else print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }

for prov in $providers; do
    declare -a pp_lat=() pp_bw=() hp_lat=() hp_bw=()
    for r in $(seq "$rounds"); do
        pp_lat+=("$(pingpong "$prov" 8 7 20000)")
        hp_lat+=("$(bench "$prov" latency 8)")
        pp_bw+=("$(pingpong "$prov" 4194304 6 200)")
        hp_bw+=("$(bench "$prov" bw 4194304)")
        echo "$prov round $r: 8 B fi_pingpong ${pp_lat[-1]} µs, hpcomm ${hp_lat[-1]} µs; 4 MiB fi_pingpong ${pp_bw[-1]} MB/s, hpcomm ${hp_bw[-1]} MB/s"
    done
    echo "$prov medians: 8 B one-way fi_pingpong $(printf '%s\n' "${pp_lat[@]}" | median) µs, hpcomm $(printf '%s\n' "${hp_lat[@]}" | median) µs; 4 MiB fi_pingpong $(printf '%s\n' "${pp_bw[@]}" | median) MB/s, hpcomm bw $(printf '%s\n' "${hp_bw[@]}" | median) MB/s"
    unset pp_lat pp_bw hp_lat hp_bw
done
