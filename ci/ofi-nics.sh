#!/usr/bin/env bash
# The ofi backend over one NIC and over two (issue 17): two namespace hosts
# of ci/cluster.sh, each with eth0 and eth1, tcp;ofi_rxm standing in for
# EFA. For each NIC cap in RATES (tc tbf on every NIC; "none" for none),
# ROUNDS rounds alternating
#   - one NIC, the single-copy rendezvous (fi_read)   HPCOMM_OFI_NICS=eth0
#   - one NIC, the rendezvous streamed in frames       … HPCOMM_OFI_READS=0
#   - two NICs, frames of 16 KiB and more striped       HPCOMM_OFI_NICS=eth0,eth1
# of `hpcomm bench bw` at SIZE (ITERS windows of 64 messages) between one
# rank on each host, then the medians. Root (network namespaces, tc).
#
#   bash ci/ofi-nics.sh                          # RATES="1gbit none", 5 rounds
#   RATES=5gbit ROUNDS=3 SIZE=1048576 bash ci/ofi-nics.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rates=${RATES:-"1gbit none"}
rounds=${ROUNDS:-5}
size=${SIZE:-4194304}
iters=${ITERS:-4}
cargo build --release --quiet --bin hpcomm
exe=${CARGO_TARGET_DIR:-$PWD/target}/release/hpcomm
trap 'bash ci/cluster.sh down' EXIT

# hpcomm bench bw at SIZE between hpc1 and hpc2 with the settings given.
bw() {
    env HPCOMM_OFI_PROVIDER="tcp;ofi_rxm" "$@" "$exe" run --hosts hpc1,hpc2 \
        --exec 'ip netns exec {host}' --bind 10.77.0.1 --transport ofi -n 2 --timeout 300 -- \
        "$exe" bench bw --min-size "$size" --max-size "$size" --iters "$iters" |
        awk -v s="$size" '$1 == s {print $2}'
}

median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) print "—"; else print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }

for rate in $rates; do
    bash ci/cluster.sh up 2 2
    [ "$rate" = none ] || bash ci/cluster.sh limit "$rate"
    declare -a read1=() stream1=() two=()
    for r in $(seq "$rounds"); do
        read1+=("$(bw HPCOMM_OFI_NICS=eth0)")
        stream1+=("$(bw HPCOMM_OFI_NICS=eth0 HPCOMM_OFI_READS=0)")
        two+=("$(bw HPCOMM_OFI_NICS=eth0,eth1)")
        echo "cap $rate round $r: one NIC reading ${read1[-1]} MB/s, one NIC streaming ${stream1[-1]} MB/s, two NICs ${two[-1]} MB/s"
    done
    echo "cap $rate medians ($size B): one NIC reading $(printf '%s\n' "${read1[@]}" | median) MB/s, one NIC streaming $(printf '%s\n' "${stream1[@]}" | median) MB/s, two NICs $(printf '%s\n' "${two[@]}" | median) MB/s"
    unset read1 stream1 two
done
