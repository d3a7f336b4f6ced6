#!/usr/bin/env bash
# A test cluster on one machine: N network namespaces ("hosts") hpc1..hpcN,
# each with its own address 10.77.0.(10+i)/24 on a bridge hpcbr0, whose own
# address 10.77.0.1 is where the launcher listens (root; iproute2). With a
# second NIC each host also has eth1, 10.78.0.(10+i)/24 on bridge hpcbr1 —
# two paths between any two hosts, as an instance with two EFA devices has.
# `limit` caps every host's NICs (tc tbf on their egress), so that a NIC,
# not the CPU, is what limits bandwidth.
#
#   bash ci/cluster.sh up 3     # hosts hpc1 hpc2 hpc3
#   bash ci/cluster.sh up 2 2   # hosts hpc1 hpc2, each with eth0 and eth1
#   bash ci/cluster.sh limit 1gbit
#   target/release/hpcomm run --hosts hpc1,hpc2,hpc3 --exec 'ip netns exec {host}' \
#       --bind 10.77.0.1 --transport tcp -n 6 -- target/release/hpcomm selftest
#   bash ci/cluster.sh down
set -euo pipefail
bridge=hpcbr0
bridge2=hpcbr1

down() {
    # The root ends of the veth pairs first: deleting a namespace frees its
    # links only asynchronously, and an `up` right after must find the
    # names free.
    for link in $(ip -o link show | awk -F': ' '{print $2}' | grep -o '^hpc[vw][0-9]*'); do
        ip link delete "$link" 2>/dev/null || true
    done
    for ns in $(ip netns list | awk '/^hpc[0-9]+/ {print $1}'); do
        ip netns delete "$ns" 2>/dev/null || true
    done
    ip link delete "$bridge" 2>/dev/null || true
    ip link delete "$bridge2" 2>/dev/null || true
}

up() {
    local n=$1 nics=${2:-1}
    down
    ip link add "$bridge" type bridge
    ip addr add 10.77.0.1/24 dev "$bridge"
    ip link set "$bridge" up
    if [ "$nics" -ge 2 ]; then
        ip link add "$bridge2" type bridge
        ip addr add 10.78.0.1/24 dev "$bridge2"
        ip link set "$bridge2" up
    fi
    for i in $(seq 1 "$n"); do
        local ns=hpc$i
        ip netns add "$ns"
        ip link add "hpcv$i" type veth peer name eth0 netns "$ns"
        ip link set "hpcv$i" master "$bridge" up
        ip -n "$ns" addr add "10.77.0.$((10 + i))/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
        ip -n "$ns" route add default via 10.77.0.1
        if [ "$nics" -ge 2 ]; then
            ip link add "hpcw$i" type veth peer name eth1 netns "$ns"
            ip link set "hpcw$i" master "$bridge2" up
            ip -n "$ns" addr add "10.78.0.$((10 + i))/24" dev eth1
            ip -n "$ns" link set eth1 up
        fi
    done
}

# Caps each host's NICs at RATE (tc's units: 1gbit, 500mbit) on egress.
limit() {
    local rate=$1
    for ns in $(ip netns list | awk '/^hpc[0-9]+/ {print $1}'); do
        for dev in eth0 eth1; do
            if ip -n "$ns" link show "$dev" >/dev/null 2>&1; then
                tc -n "$ns" qdisc replace dev "$dev" root tbf rate "$rate" burst 256kb latency 50ms
            fi
        done
    done
}

case ${1:-} in
up) up "${2:?how many hosts}" "${3:-1}" ;;
limit) limit "${2:?a rate, as 1gbit}" ;;
down) down ;;
*)
    echo "usage: $0 up N [NICS] | limit RATE | down" >&2
    exit 2
    ;;
esac
