#!/usr/bin/env bash
# The libfabric backend under stress and under memcheck:
#   bash ci/ofi-stress.sh loop [RUNS]   the ofi conformance suite RUNS times
#                                       (default 50): a crash fails, a failed
#                                       test is reported
#   bash ci/ofi-stress.sh valgrind      the suite once under valgrind memcheck:
#                                       any memcheck error (an invalid read or
#                                       write) or a crash fails; a test that
#                                       misses a deadline at valgrind's pace is
#                                       reported
# CI runs `loop 10` and `valgrind` (.ci/run). Needs libfabric1 (and valgrind
# for the second).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(cargo test -p hpcomm-transport --test conformance_ofi --no-run 2>&1 |
    grep -o 'target/debug/deps/conformance_ofi-[0-9a-f]*' | tail -1)
[ -x "$bin" ] || { echo "ofi-stress: cannot find the conformance_ofi test binary" >&2; exit 1; }
case "${1:-loop}" in
loop)
    # A crash (a signal, the failure this loop is for) fails the run. A
    # test that fails without crashing is reported: over udp;ofi_rxd, whose
    # retransmissions run on timers, a heavily loaded machine can push the
    # concurrent case past its 30 s deadline (once in 50 runs by hand, with
    # a release build running beside it); `cargo test` runs the suite too.
    runs="${2:-50}"
    crashed=0
    failed=0
    for i in $(seq 1 "$runs"); do
        status=0
        "$bin" -q >"/tmp/ofi-stress-$$.log" 2>&1 || status=$?
        if [ "$status" -gt 128 ]; then
            crashed=$((crashed + 1))
            echo "run $i: killed by signal $((status - 128))"
            tail -n 30 "/tmp/ofi-stress-$$.log"
        elif [ "$status" -ne 0 ]; then
            failed=$((failed + 1))
            echo "run $i: exit status $status"
            grep -E "panicked|FAILED|^    [a-z_]+$" "/tmp/ofi-stress-$$.log" | head -8 || true
        fi
    done
    rm -f "/tmp/ofi-stress-$$.log"
    echo "ofi conformance: $((runs - crashed - failed)) of $runs runs passed, $failed failed, $crashed crashed"
    [ "$crashed" -eq 0 ]
    ;;
valgrind)
    # What counts here is memcheck's verdict (an invalid read or write, a
    # use of uninitialised memory: exit 99) or a crash (a signal). Under
    # memcheck everything runs some 30 times slower, and a provider that
    # retransmits on timers (udp;ofi_rxd) can miss the suite's 30 s
    # deadlines: such a failure is reported, and left to the loop above.
    log=$(mktemp)
    status=0
    valgrind --tool=memcheck --error-exitcode=99 --error-limit=no --num-callers=40 \
        "$bin" --test-threads=1 -q >"$log" 2>&1 || status=$?
    grep -E "ERROR SUMMARY|Invalid (read|write)|test result|^    [a-z_]+$" "$log" || true
    if [ "$status" -eq 99 ] || [ "$status" -gt 128 ]; then
        tail -n 80 "$log"
        rm -f "$log"
        echo "ofi conformance under memcheck: FAILED (exit status $status)"
        exit 1
    fi
    rm -f "$log"
    [ "$status" -eq 0 ] || echo "ofi conformance under memcheck: a test missed its deadline (exit status $status); memcheck found no error"
    echo "ofi conformance under memcheck: no memory error"
    ;;
*)
    echo "usage: $0 loop [RUNS] | valgrind" >&2
    exit 2
    ;;
esac
