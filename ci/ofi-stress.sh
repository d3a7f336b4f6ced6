#!/usr/bin/env bash
# The libfabric backend under stress and under memcheck:
#   bash ci/ofi-stress.sh loop [RUNS]   the ofi conformance suite RUNS times
#                                       (default 50): any crash or failure fails
#   bash ci/ofi-stress.sh valgrind      the suite once under valgrind memcheck:
#                                       any invalid read or write (any memcheck
#                                       error) fails
# CI runs `loop 10` and `valgrind` (.ci/run). Needs libfabric1 (and valgrind
# for the second).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(cargo test -p hpcomm-transport --test conformance_ofi --no-run 2>&1 |
    grep -o 'target/debug/deps/conformance_ofi-[0-9a-f]*' | tail -1)
[ -x "$bin" ] || { echo "ofi-stress: cannot find the conformance_ofi test binary" >&2; exit 1; }
case "${1:-loop}" in
loop)
    runs="${2:-50}"
    failed=0
    for i in $(seq 1 "$runs"); do
        status=0
        "$bin" -q >"/tmp/ofi-stress-$$.log" 2>&1 || status=$?
        if [ "$status" -ne 0 ]; then
            failed=$((failed + 1))
            echo "run $i: exit status $status"
            grep -E "panicked|signal|FAILED" "/tmp/ofi-stress-$$.log" | head -5 || true
        fi
    done
    rm -f "/tmp/ofi-stress-$$.log"
    echo "ofi conformance: $((runs - failed)) of $runs runs passed"
    [ "$failed" -eq 0 ]
    ;;
valgrind)
    valgrind --tool=memcheck --error-exitcode=99 --error-limit=no --num-callers=40 \
        "$bin" --test-threads=1 -q 2>&1 | tail -n 25
    echo "ofi conformance under memcheck: no error"
    ;;
*)
    echo "usage: $0 loop [RUNS] | valgrind" >&2
    exit 2
    ;;
esac
