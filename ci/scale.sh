#!/usr/bin/env bash
# Start-up and memory at scale on this machine (issue 16): for each size,
# the wall time of
#   - `hpcomm run -n N -- ring --laps 1` over shm and over tcp (a token and
#     a 1 MiB block once around the ring: start-up, wire-up and a lap), and
#   - `hpcomm run -n N -- hpcomm startup` over shm and over tcp: the time
#     from launch to the end of the first barrier (rank 0 prints when it
#     ended), then a checked ring and all_reduce,
#   - MPICH's `mpiexec` and Open MPI's `mpirun` of a C program that calls
#     MPI_Init, MPI_Barrier and MPI_Finalize (up to MPI_MAX ranks),
# the contenders alternated, REPEATS runs each, medians reported; and, from
# the startup runs, the peak /dev/shm use (sampled every 20 ms) and the
# resident memory of the ranks (VmHWM: rank 0's and the largest).
#
#   bash ci/scale.sh                              # 8 … 512 ranks, 3 repeats
#   SIZES="256 512" REPEATS=1 MPI_MAX=0 bash ci/scale.sh
#
# RING_MAX (default 512) skips the ring runs above it: at 512 ranks on 2
# cores the tcp ring takes minutes, idle ranks waking every 200 µs.
#
# Needs mpich, openmpi-bin, libmpich-dev and libopenmpi-dev (.ci/run
# installs the runtimes; the -dev packages give mpicc). Root for Open MPI.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${SIZES:-"8 32 64 128 256 512"}
repeats=${REPEATS:-3}
mpi_max=${MPI_MAX:-128}
ring_max=${RING_MAX:-512}
cargo build --release --quiet --bin hpcomm --example ring
target=${CARGO_TARGET_DIR:-$PWD/target}/release
exe=$target/hpcomm
ring=$target/examples/ring
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/init.c" <<'C'
#include <mpi.h>
int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Finalize();
    return 0;
}
C
have_mpich=0 have_ompi=0
if command -v mpicc.mpich >/dev/null; then mpicc.mpich -O2 -o "$work/init-mpich" "$work/init.c" && have_mpich=1; fi
if command -v mpicc.openmpi >/dev/null; then mpicc.openmpi -O2 -o "$work/init-ompi" "$work/init.c" && have_ompi=1; fi
export HPCOMM_BOOTSTRAP_TIMEOUT=600 HYDRA_LAUNCHER=fork
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

now() { date +%s.%N; }
# Runs "$@" and prints its wall time in seconds, or "fail".
timed() {
    local t0 t1
    t0=$(now)
    if "$@" >"$work/out" 2>"$work/err"; then
        t1=$(now)
        echo "$t1 - $t0" | bc -l | xargs printf '%.2f'
    else
        echo fail
        tail -3 "$work/err" >&2
    fi
}
median() { grep -v fail | sort -g | awk '{v[NR]=$1} END {if (NR==0) print "—"; else print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }

declare -A results
contenders=(ring-shm ring-tcp startup-shm startup-tcp mpich ompi)
for n in $sizes; do
    for rep in $(seq "$repeats"); do
        for c in "${contenders[@]}"; do
            case $c in
            ring-shm | ring-tcp)
                t=—
                if [ "$n" -le "$ring_max" ]; then
                    t=$(timed "$exe" run -n "$n" --transport "${c#ring-}" --timeout 1200 -- "$ring" --laps 1)
                fi ;;
            startup-shm | startup-tcp)
                transport=${c#startup-}
                base=$(df --output=used /dev/shm | tail -1)
                (while :; do df --output=used /dev/shm | tail -1; sleep 0.02; done) >"$work/shm" &
                sampler=$!
                t0=$(date +%s%6N)
                wall=$(timed "$exe" run -n "$n" --transport "$transport" --timeout 900 -- "$exe" startup)
                kill "$sampler"; wait "$sampler" 2>/dev/null || true
                end=$(sed -n 's/.*barrier_end_us=\([0-9]*\).*/\1/p' "$work/out")
                t=fail
                if [ "$wall" != fail ] && [ -n "$end" ]; then
                    t=$(echo "($end - $t0) / 1000000" | bc -l | xargs printf '%.2f')
                fi
                peak=$(sort -n "$work/shm" | tail -1)
                line=$(grep '^checked' "$work/out" || echo "checked none")
                echo "  $c n=$n: /dev/shm peak $(( (peak - base) / 1024 )) MiB; $line"
                results[$c-shm-$n]+="$(( (peak - base) / 1024 )) "
                results[$c-rss-$n]+="$(echo "$line" | sed -n 's/.*largest_peak_kib=\([0-9]*\).*/\1/p') "
                ;;
            mpich)
                t=—
                if [ "$have_mpich" = 1 ] && [ "$n" -le "$mpi_max" ]; then t=$(timed mpiexec.mpich -n "$n" "$work/init-mpich"); fi ;;
            ompi)
                t=—
                if [ "$have_ompi" = 1 ] && [ "$n" -le "$mpi_max" ]; then t=$(timed mpirun.openmpi --oversubscribe -n "$n" "$work/init-ompi"); fi ;;
            esac
            echo "run $rep n=$n $c: $t s"
            [ "$t" != — ] && results[$c-$n]+="$t "
        done
    done
done

echo
echo "| ranks | hpcomm ring shm | hpcomm ring tcp | hpcomm to first barrier shm | hpcomm to first barrier tcp | MPICH init+barrier+finalize | Open MPI init+barrier+finalize | /dev/shm peak (shm) | largest rank VmHWM shm / tcp |"
echo "|---|---|---|---|---|---|---|---|---|"
for n in $sizes; do
    row="| $n"
    for c in "${contenders[@]}"; do
        m=$(echo "${results[$c-$n]:-}" | tr ' ' '\n' | grep . | median || true)
        row+=" | ${m:-—} s"
    done
    shm=$(echo "${results[startup-shm-shm-$n]:-}" | tr ' ' '\n' | grep . | median || true)
    rss_shm=$(echo "${results[startup-shm-rss-$n]:-}" | tr ' ' '\n' | grep . | median || true)
    rss_tcp=$(echo "${results[startup-tcp-rss-$n]:-}" | tr ' ' '\n' | grep . | median || true)
    row+=" | ${shm} MiB | ${rss_shm} / ${rss_tcp} KiB |"
    echo "$row"
done
