#!/usr/bin/env bash
# Start-up time of a job — from the launcher's start to the end of the
# first barrier — over every launcher on this machine, for 2 to 256
# processes: the median of REPEATS runs each, the launchers alternated.
# Needs the packages .ci/run installs; starts a single-node Slurm
# (ci/slurm.sh) and leaves it running. Root (Slurm, Open MPI as root).
#
#   bash ci/startup.sh                 # sizes 2 4 8 … 256, 3 repeats
#   SIZES="2 16" REPEATS=5 bash ci/startup.sh
#
# Prints one line per run and a table of medians (ms). The program is
# `hpcomm startup`: every rank joins and passes one barrier; rank 0 prints
# when the barrier ended. Ranks use shm (one node) with 16 KiB rings, as
# when these figures were first taken (docs/performance.md).
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${SIZES:-"2 4 8 16 32 64 128 256"}
repeats=${REPEATS:-3}
cargo build --release --quiet --bin hpcomm
exe=${CARGO_TARGET_DIR:-$PWD/target}/release/hpcomm
bash ci/slurm.sh up >/dev/null
export HPCOMM_SHM_RING_BYTES=16384 HPCOMM_BOOTSTRAP_TIMEOUT=600
export HYDRA_LAUNCHER=fork OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
launchers=(hpcomm mpiexec srun-pmi2 srun-pmix mpirun)

start() {
    local launcher=$1 n=$2
    case $launcher in
    hpcomm) "$exe" run -n "$n" --timeout 600 -- "$exe" startup ;;
    mpiexec) mpiexec.hydra -n "$n" "$exe" startup ;;
    srun-pmi2) srun --mpi=pmi2 -O -n "$n" "$exe" startup ;;
    srun-pmix) srun --mpi=pmix -O -n "$n" "$exe" startup ;;
    mpirun) mpirun --oversubscribe -x HPCOMM_SHM_RING_BYTES -n "$n" "$exe" startup ;;
    esac
}

declare -A results
for n in $sizes; do
    for rep in $(seq "$repeats"); do
        for launcher in "${launchers[@]}"; do
            t0=$(date +%s%6N)
            if out=$(start "$launcher" "$n" 2>/tmp/hpcomm-startup.err); then
                end=$(sed -n 's/.*barrier_end_us=\([0-9]*\).*/\1/p' <<<"$out")
                ms=$(((end - t0) / 1000))
                echo "$launcher n=$n rep=$rep: ${ms} ms ($out)"
                results[$launcher,$n]+="$ms "
            else
                echo "$launcher n=$n rep=$rep: failed: $(tail -2 /tmp/hpcomm-startup.err)"
                results[$launcher,$n]+="fail "
            fi
        done
    done
done

median() { tr ' ' '\n' | grep -E '^[0-9]+$' | sort -n | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "-")}'; }
printf '\n| ranks |'
for launcher in "${launchers[@]}"; do printf ' %s |' "$launcher"; done
printf '\n|---|'
for _ in "${launchers[@]}"; do printf -- '---|'; done
echo
for n in $sizes; do
    printf '| %s |' "$n"
    for launcher in "${launchers[@]}"; do
        printf ' %s |' "$(echo "${results[$launcher,$n]:-}" | median)"
    done
    echo
done
