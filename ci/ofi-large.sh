#!/usr/bin/env bash
# Large messages over ofi (issue 17): for each provider, ROUNDS rounds
# alternating `hpcomm bench bw` at 4 MiB with the read rendezvous (one
# fi_read per message) and streamed in frames of 64 KiB, 256 KiB and 1 MiB
# (HPCOMM_OFI_READS=0 HPCOMM_OFI_FRAME=F), two ranks on this host; then the
# medians. The registration cost itself is a criterion bench:
# cargo bench -p hpcomm-transport --bench ofi_register.
#
#   bash ci/ofi-large.sh                       # tcp;ofi_rxm and shm, 3 rounds
set -euo pipefail
cd "$(dirname "$0")/.."
providers=${PROVIDERS:-"tcp;ofi_rxm shm"}
rounds=${ROUNDS:-3}
cargo build --release --quiet --bin hpcomm
exe=${CARGO_TARGET_DIR:-$PWD/target}/release/hpcomm

bw() {
    env "$@" "$exe" run -n 2 --transport ofi --timeout 300 -- \
        "$exe" bench bw --min-size 4194304 --max-size 4194304 --iters 20 |
        awk '$1 == 4194304 {print $2}'
}
median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) print "—"; else print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }

frames="65536 262144 1048576"
for prov in $providers; do
    results=$(mktemp)
    for r in $(seq "$rounds"); do
        echo "reads $(bw HPCOMM_OFI_PROVIDER="$prov")" >>"$results"
        for f in $frames; do
            echo "$f $(bw HPCOMM_OFI_PROVIDER="$prov" HPCOMM_OFI_READS=0 HPCOMM_OFI_FRAME="$f")" >>"$results"
        done
        echo "$prov round $r: $(tail -n 4 "$results" | tr '\n' ' ')"
    done
    line="$prov medians (MB/s): reads $(awk '$1 == "reads" {print $2}' "$results" | median)"
    for f in $frames; do
        line="$line, frames of $f $(awk -v f="$f" '$1 == f {print $2}' "$results" | median)"
    done
    echo "$line"
    rm -f "$results"
done
