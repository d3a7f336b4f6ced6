#!/usr/bin/env bash
# Node-aware collectives across hosts: all-reduce, broadcast and barrier on
# HOSTS network-namespace hosts (ci/cluster.sh) × PER ranks, shm within a
# host and tcp between (`--transport auto`), with the automatic choice, the
# hierarchical algorithm forced and each flat algorithm forced; runs
# interleaved and repeated, medians reported. Root; writes
# target/hierarchical/HOSTSxPER.md.
#
#   bash ci/hierarchical.sh                 # 4 hosts × 2 ranks, 3 repetitions
#   HOSTS=2 PER=4 REPS=5 bash ci/hierarchical.sh
#   HPCOMM_NET_LATENCY_US=7 HPCOMM_NET_BANDWIDTH_GBS=3 bash ci/hierarchical.sh
#                                           # the automatic choice by these figures
set -euo pipefail
cd "$(dirname "$0")/.."
hosts=${HOSTS:-4}
per=${PER:-2}
reps=${REPS:-3}
ranks=$((hosts * per))
out=target/hierarchical
mkdir -p "$out/raw"
cargo build --release -p hpcomm-cli
hpcomm=$PWD/target/release/hpcomm
bash ci/cluster.sh up "$hosts"
trap 'bash ci/cluster.sh down' EXIT
list=$(seq -s, -f 'hpc%g' 1 "$hosts")
run() { # KIND VARIABLE ALGORITHM REP
    local kind=$1 var=$2 alg=$3 rep=$4
    env "$var=$alg" "$hpcomm" run --hosts "$list" --exec 'ip netns exec {host}' --bind 10.77.0.1 \
        --transport auto -n "$ranks" -- "$hpcomm" bench "$kind" --min-size 8 --max-size 1048576 \
        > "$out/raw/$kind-$alg-$rep"
}
declare -A algs=(
    [allreduce]="auto hierarchical recursive_doubling rabenseifner ring"
    [bcast]="auto hierarchical binomial scatter_allgather"
    [barrier]="auto hierarchical dissemination"
)
declare -A vars=([allreduce]=HPCOMM_ALLREDUCE [bcast]=HPCOMM_BCAST [barrier]=HPCOMM_BARRIER)
for rep in $(seq "$reps"); do
    for kind in allreduce bcast barrier; do
        for alg in ${algs[$kind]}; do
            run "$kind" "${vars[$kind]}" "$alg" "$rep"
        done
    done
done
python3 - "$out" "$hosts" "$per" "$reps" > "$out/${hosts}x$per.md" <<'PY'
import statistics, sys
out, hosts, per, reps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
algs = {
    "allreduce": ["auto", "hierarchical", "recursive_doubling", "rabenseifner", "ring"],
    "bcast": ["auto", "hierarchical", "binomial", "scatter_allgather"],
    "barrier": ["auto", "hierarchical", "dissemination"],
}
print(f"{hosts} hosts x {per} ranks (shm within, tcp between), µs, medians of {reps} interleaved runs")
for kind, names in algs.items():
    rows = {}
    for alg in names:
        for rep in range(1, reps + 1):
            for line in open(f"{out}/raw/{kind}-{alg}-{rep}"):
                if line.startswith("#") or not line.strip():
                    continue
                parts = line.split()
                size = int(parts[0]) if len(parts) > 1 else 0
                rows.setdefault(size, {}).setdefault(alg, []).append(float(parts[-1]))
    print(f"\n{kind}\n")
    print("| size | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for size in sorted(rows):
        cells = [f"{statistics.median(rows[size][a]):.1f}" if a in rows[size] else "" for a in names]
        print(f"| {size} | " + " | ".join(cells) + " |")
PY
cat "$out/${hosts}x$per.md"
