#!/usr/bin/env bash
# Overlap of non-blocking reductions with computation, OSU's method
# (osu_iallreduce, osu_ireduce): `hpcomm bench iallreduce|ireduce` against
# MPICH and Open MPI called from C (benches/c-compare/osu.c, the same plan),
# over shared memory on this machine, runs interleaved and repeated,
# medians reported. Writes target/overlap/RANKS.md.
#
#   bash ci/overlap.sh          # 2 ranks, 3 repetitions
#   RANKS=4 REPS=5 bash ci/overlap.sh
#
# Columns per implementation: pure communication time (µs) and overlap (%):
# the share of that time hidden behind as much computation (no
# communication calls during it, OSU's default).
set -euo pipefail
cd "$(dirname "$0")/.."
ranks=${RANKS:-2}
reps=${REPS:-3}
out=target/overlap
mkdir -p "$out/raw"
need=()
command -v mpicc.mpich >/dev/null || need+=(mpich libmpich-dev)
command -v mpicc.openmpi >/dev/null || need+=(openmpi-bin libopenmpi-dev)
if [ "${#need[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y "${need[@]}"
fi
cargo build --release -p hpcomm-cli
hpcomm=target/release/hpcomm
for impl in mpich openmpi; do
    "mpicc.$impl" -O2 -Wall -Wno-stringop-overflow -o "$out/osu-$impl" benches/c-compare/osu.c
done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 HYDRA_LAUNCHER=fork
for kind in iallreduce ireduce; do
    "$hpcomm" bench "$kind" --plan --min-size 8 --max-size 1048576 > "$out/plan-$kind"
    for rep in $(seq "$reps"); do
        "$hpcomm" run -n "$ranks" -- "$hpcomm" bench "$kind" --min-size 8 --max-size 1048576 \
            > "$out/raw/$kind-hpcomm-$rep"
        mpiexec.mpich -n "$ranks" "$out/osu-mpich" "$kind" "$out/plan-$kind" 64 \
            > "$out/raw/$kind-mpich-$rep"
        mpirun.openmpi --oversubscribe -n "$ranks" --mca btl self,vader \
            "$out/osu-openmpi" "$kind" "$out/plan-$kind" 64 > "$out/raw/$kind-openmpi-$rep"
    done
done
python3 - "$out" "$ranks" "$reps" > "$out/$ranks.md" <<'PY'
import statistics, sys
out, ranks, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
impls = ["hpcomm", "mpich", "openmpi"]
print(f"Overlap on {ranks} ranks over shared memory, medians of {reps} interleaved runs")
for kind in ["iallreduce", "ireduce"]:
    rows = {}
    for impl in impls:
        for rep in range(1, reps + 1):
            for line in open(f"{out}/raw/{kind}-{impl}-{rep}"):
                if line.startswith("#") or not line.strip():
                    continue
                size, overall, compute, pure, overlap = line.split()
                rows.setdefault(int(size), {}).setdefault(impl, []).append((float(pure), float(overlap)))
    print(f"\n{kind}: pure communication (µs) / overlap (%)\n")
    print("| size | " + " | ".join(impls) + " |")
    print("|---:|" + "---:|" * len(impls))
    for size in sorted(rows):
        cells = []
        for impl in impls:
            runs = rows[size][impl]
            pure = statistics.median(r[0] for r in runs)
            overlap = statistics.median(r[1] for r in runs)
            cells.append(f"{pure:.2f} / {overlap:.0f}")
        print(f"| {size} | " + " | ".join(cells) + " |")
PY
cat "$out/$ranks.md"
