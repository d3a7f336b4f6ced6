#!/usr/bin/env bash
# Side-by-side comparison on one machine, in one run: hpcomm (`hpcomm
# bench`) against MPICH and Open MPI called from C — the reference, as HPC
# users measure MPI: benches/c-compare/osu.c, OSU's method, running the
# plan `hpcomm bench --plan` prints — and through rsmpi (`mpi-bench` of
# benches/mpi-compare, the same plan; what Rust users have today, rsmpi's
# overhead included), runs interleaved and repeated, medians reported with
# hpcomm's ratio to the better C figure and to the better rsmpi figure.
# Writes target/compare/FABRIC.md (the table), FABRIC.csv (the medians)
# and FABRIC-*.png (log-log plots, one line per implementation). The
# weather kernel has no C twin: it is compared through rsmpi only.
#
#   bash ci/compare.sh shm    # shared memory: hpcomm shm, MPICH's default (UCX), Open MPI's vader BTL
#   bash ci/compare.sh tcp    # TCP on loopback: hpcomm tcp, MPICH with UCX_TLS=tcp,self, Open MPI's tcp BTL
#   REPS=5 bash ci/compare.sh shm   # 3 repetitions by default
#   ONLY="latency mr bw" bash ci/compare.sh tcp   # some cases only; the
#                                     # table keeps the others' last figures
set -euo pipefail
cd "$(dirname "$0")/.."
fabric=${1:-shm}
case $fabric in shm | tcp) ;; *) echo "usage: $0 shm|tcp" >&2; exit 2 ;; esac
reps=${REPS:-3}
out=target/compare
raw=$out/raw-$fabric   # per fabric: a run of one leaves the other's figures
# A full run starts afresh; with ONLY, the other cases' raw files stay
# (each case's files are replaced as it runs).
[ -n "${ONLY:-}" ] || rm -rf "$raw"
mkdir -p "$raw"

# MPICH and Open MPI with their headers (rsmpi builds against them),
# libclang for rsmpi's bindgen, a font for the plots' text.
need=()
command -v mpicc.mpich >/dev/null || need+=(mpich libmpich-dev)
command -v mpicc.openmpi >/dev/null || need+=(openmpi-bin libopenmpi-dev)
# bindgen loads libclang itself (libclang.so.N), not libclang-cpp.
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need+=(libclang-dev)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
if [ "${#need[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y "${need[@]}"
fi
cargo build --release --bin hpcomm --example weather
# The C twin, once per MPI library (GCC's -Wstringop-overflow misreads
# MPI_STATUSES_IGNORE).
mkdir -p target/c-compare
rm -f target/c-compare/plan.*
for impl in mpich openmpi; do
    "mpicc.$impl" -O2 -Wall -Wno-stringop-overflow -o "target/c-compare/osu-$impl" benches/c-compare/osu.c
done
# One build of the rsmpi side per MPI library: rsmpi finds the library
# through the MPICC wrapper it is given.
for impl in mpich openmpi; do
    (cd benches/mpi-compare &&
        MPICC=mpicc.$impl CARGO_TARGET_DIR=../../target/mpi-compare/$impl cargo build --release --quiet)
done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 HYDRA_LAUNCHER=fork

run_one() { # impl ranks kind min max
    local hpcomm_flags=() mpich_flags=() ompi_flags=(--mca btl self,vader)
    if [ "$fabric" = tcp ]; then
        hpcomm_flags=(--transport tcp)
        mpich_flags=(-genv UCX_TLS tcp,self)
        ompi_flags=(--mca btl tcp,self --mca pml ob1)
    fi
    local args=("$3" --min-size "$4" --max-size "$5")
    local plan=target/c-compare/plan.$3.$4.$5
    if [ "$3" = weather ]; then
        # The weather kernel, --min-size cells per side, --max-size steps:
        # time per step (ms) as the value, the grid side as the size.
        local grid=(--nx "$4" --ny "$4" --steps "$5")
        case $1 in
        hpcomm) timeout 300 target/release/hpcomm run -n "$2" "${hpcomm_flags[@]}" -- target/release/examples/weather "${grid[@]}" --image none ;;
        mpich-rsmpi) timeout 300 mpirun.mpich -n "$2" "${mpich_flags[@]}" target/mpi-compare/mpich/release/mpi-weather "${grid[@]}" ;;
        openmpi-rsmpi) timeout 300 mpirun.openmpi --oversubscribe -n "$2" "${ompi_flags[@]}" target/mpi-compare/openmpi/release/mpi-weather "${grid[@]}" ;;
        *) return ;;
        esac 2>/dev/null | sed -n "s/.*cells, .* steps: \([0-9.]*\) ms per step.*/$4 \1/p"
        return
    fi
    [ -e "$plan" ] || target/release/hpcomm bench "${args[@]}" --plan >"$plan"
    case $1 in
    hpcomm) timeout 300 target/release/hpcomm run -n "$2" "${hpcomm_flags[@]}" -- target/release/hpcomm bench "${args[@]}" ;;
    mpich-c) timeout 300 mpirun.mpich -n "$2" "${mpich_flags[@]}" target/c-compare/osu-mpich "$3" "$plan" 64 ;;
    openmpi-c) timeout 300 mpirun.openmpi --oversubscribe -n "$2" "${ompi_flags[@]}" target/c-compare/osu-openmpi "$3" "$plan" 64 ;;
    mpich-rsmpi) timeout 300 mpirun.mpich -n "$2" "${mpich_flags[@]}" target/mpi-compare/mpich/release/mpi-bench "${args[@]}" ;;
    openmpi-rsmpi) timeout 300 mpirun.openmpi --oversubscribe -n "$2" "${ompi_flags[@]}" target/mpi-compare/openmpi/release/mpi-bench "${args[@]}" ;;
    esac 2>/dev/null | grep -v '^#'
}
impls=(hpcomm mpich-c openmpi-c mpich-rsmpi openmpi-rsmpi)

# label ranks kind min max
if [ "$fabric" = shm ]; then
    cases=(
        "latency 2 latency 0 65536"
        "mr 2 mr 1 65536"
        "bw 2 bw 4096 4194304"
        "latency-4 4 latency 8 8"
        "mr-4 4 mr 8 8"
        "allreduce 2 allreduce 8 1048576"
        "allreduce-4 4 allreduce 8 8"
        "allreduce-4 4 allreduce 1048576 1048576"
        "allreduce-8 8 allreduce 8 8"
        "allreduce-8 8 allreduce 1048576 1048576"
        "reduce 2 reduce 8 1048576"
        "bcast 2 bcast 8 1048576"
        "barrier-4 4 barrier 0 0"
        "put-latency 2 put-latency 1 65536"
        "get-latency 2 get-latency 1 65536"
        "put-bw 2 put-bw 1 4194304"
        "get-bw 2 get-bw 1 4194304"
        "weather 2 weather 256 400"
        "weather 2 weather 1024 100"
        "weather-4 4 weather 256 400"
    )
else
    cases=(
        "latency 2 latency 0 65536"
        "mr 2 mr 1 4096"
        "bw 2 bw 4096 4194304"
        "allreduce 2 allreduce 8 1048576"
        "put-latency 2 put-latency 1 65536"
        "get-bw 2 get-bw 1 4194304"
        "weather 2 weather 256 400"
        "weather 2 weather 1024 100"
    )
fi
for rep in $(seq "$reps"); do
    for c in "${cases[@]}"; do
        read -r label ranks kind min max <<<"$c"
        # ONLY="latency bw": just those cases (the others' raw files stay).
        if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $label "* ]]; then
            continue
        fi
        # A rerun case drops its earlier figures (of any repetition).
        [ "$rep" != 1 ] || rm -f "$raw/$label".*."$min"
        for impl in "${impls[@]}"; do
            run_one "$impl" "$ranks" "$kind" "$min" "$max" >"$raw/$label.$impl.$rep.$min" || true
        done
    done
done

python3 - "$out" "$reps" "$fabric" <<'PY'
import statistics, sys, glob, os, platform, datetime
out, reps, fabric = sys.argv[1], int(sys.argv[2]), sys.argv[3]
titles = {
    "latency": ("One-way latency, 2 ranks (µs, lower is better)", "lower"),
    "mr": ("Message rate, 2 ranks, window 64 (messages/s, higher is better)", "higher"),
    "bw": ("Bandwidth, 2 ranks, window 64 (MB/s, higher is better)", "higher"),
    "latency-4": ("One-way latency, 4 ranks on the machine's cores: two pairs at once, pair 0 (µs)", "lower"),
    "mr-4": ("Message rate, 4 ranks: two pairs at once, pair 0 (messages/s)", "higher"),
    "allreduce": ("All-reduce (sum of f32), 2 ranks, average latency (µs)", "lower"),
    "allreduce-4": ("All-reduce (sum of f32), 4 ranks on 2 cores (µs)", "lower"),
    "allreduce-8": ("All-reduce (sum of f32), 8 ranks on 2 cores (µs)", "lower"),
    "reduce": ("Reduce (sum of f32) to rank 0, 2 ranks (µs)", "lower"),
    "bcast": ("Broadcast from rank 0, 2 ranks (µs)", "lower"),
    "barrier-4": ("Barrier, 4 ranks on 2 cores (µs)", "lower"),
    "put-latency": ("One-sided put and flush in a lock, 2 ranks (µs; rsmpi has no windows)", "lower"),
    "get-latency": ("One-sided get and flush in a lock, 2 ranks (µs)", "lower"),
    "put-bw": ("One-sided puts, window 64, then a flush, 2 ranks (MB/s)", "higher"),
    "get-bw": ("One-sided gets, window 64, then a flush, 2 ranks (MB/s)", "higher"),
    "weather": ("Weather kernel (examples/weather), 2 ranks: ms per step by grid side (lower is better)", "lower"),
    "weather-4": ("Weather kernel, 4 ranks on 2 cores: ms per step by grid side", "lower"),
}
def load(label, impl):
    rows = {}
    for f in glob.glob(f"{out}/raw-{fabric}/{label}.{impl}.*"):
        for line in open(f):
            parts = line.split()
            if len(parts) == 2:
                rows.setdefault(int(parts[0]), []).append(float(parts[1]))
    return {k: statistics.median(v) for k, v in rows.items()}
impls = ["hpcomm", "mpich-c", "openmpi-c", "mpich-rsmpi", "openmpi-rsmpi"]
lines = [f"Fabric: {fabric}. Machine: {platform.node()}, {os.cpu_count()} cores; {datetime.date.today()}; medians of {reps} interleaved runs.",
         "MPICH and Open MPI run the same plan from C (benches/c-compare/osu.c, the reference) and through rsmpi (benches/mpi-compare).",
         "Ratios > 1 mean hpcomm is better: against the better of the two C figures, and the better of the two rsmpi figures.", ""]
for label, (title, better) in titles.items():
    d = {i: load(label, i) for i in impls}
    h = d["hpcomm"]
    if not h:
        continue
    lines += [f"### {title}", "",
              "| size (B) | hpcomm | MPICH (C) | Open MPI (C) | MPICH (rsmpi) | Open MPI (rsmpi) | vs best C | vs best rsmpi |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for size in sorted(h):
        def ratio(a, b):
            vals = [x[size] for x in (d[a], d[b]) if size in x and x[size] > 0]
            if not vals or h[size] == 0:
                return "–"
            best = min(vals) if better == "lower" else max(vals)
            r = best / h[size] if better == "lower" else h[size] / best
            return f"{r:.2f}"
        fmt = (lambda v: f"{v:.2f}") if better == "lower" else (lambda v: f"{v:,.0f}")
        cell = lambda x: fmt(x[size]) if size in x else "–"
        lines.append(f"| {size} | " + " | ".join(cell(d[i]) for i in impls)
                     + f" | {ratio('mpich-c', 'openmpi-c')} | {ratio('mpich-rsmpi', 'openmpi-rsmpi')} |")
    lines.append("")
text = "\n".join(lines)
open(f"{out}/{fabric}.md", "w").write(text)
print(text)
with open(f"{out}/{fabric}.csv", "w") as csv:
    csv.write("case,implementation,size,value\n")
    for label in titles:
        for impl in impls:
            for size, value in sorted(load(label, impl).items()):
                csv.write(f"{label},{impl},{size},{value}\n")
PY
# With ONLY, the cases run may have no plot (the barrier, say).
target/mpi-compare/mpich/release/compare-plot --input "$out/$fabric.csv" --out "$out" --fabric "$fabric" ||
    [ -n "${ONLY:-}" ]
