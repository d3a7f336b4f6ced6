#!/usr/bin/env bash
# A test cluster on one machine: N network namespaces ("hosts") hpc1..hpcN,
# each with its own address 10.77.0.(10+i)/24 on a bridge hpcbr0, whose own
# address 10.77.0.1 is where the launcher listens (root; iproute2).
#
#   bash ci/cluster.sh up 3     # hosts hpc1 hpc2 hpc3
#   target/release/hpcomm run --hosts hpc1,hpc2,hpc3 --exec 'ip netns exec {host}' \
#       --bind 10.77.0.1 --transport tcp -n 6 -- target/release/hpcomm selftest
#   bash ci/cluster.sh down
set -euo pipefail
bridge=hpcbr0

down() {
    # The root ends of the veth pairs first: deleting a namespace frees its
    # links only asynchronously, and an `up` right after must find the
    # names free.
    for link in $(ip -o link show | awk -F': ' '{print $2}' | grep -o '^hpcv[0-9]*'); do
        ip link delete "$link" 2>/dev/null || true
    done
    for ns in $(ip netns list | awk '/^hpc[0-9]+/ {print $1}'); do
        ip netns delete "$ns" 2>/dev/null || true
    done
    ip link delete "$bridge" 2>/dev/null || true
}

up() {
    local n=$1
    down
    ip link add "$bridge" type bridge
    ip addr add 10.77.0.1/24 dev "$bridge"
    ip link set "$bridge" up
    for i in $(seq 1 "$n"); do
        local ns=hpc$i
        ip netns add "$ns"
        ip link add "hpcv$i" type veth peer name eth0 netns "$ns"
        ip link set "hpcv$i" master "$bridge" up
        ip -n "$ns" addr add "10.77.0.$((10 + i))/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
        ip -n "$ns" route add default via 10.77.0.1
    done
}

case ${1:-} in
up) up "${2:?how many hosts}" ;;
down) down ;;
*)
    echo "usage: $0 up N | down" >&2
    exit 2
    ;;
esac
