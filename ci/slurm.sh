#!/usr/bin/env bash
# A single-node Slurm on this machine, for the tests that start hpcomm
# programs under srun (root; Debian's slurm-wlm and munge).
#
#   bash ci/slurm.sh up       # munged, slurmctld, slurmd; waits until the node is idle
#   srun --mpi=pmi2 -O -n 4 target/release/hpcomm selftest
#   bash ci/slurm.sh down
#
#   bash ci/cluster.sh up 2; bash ci/slurm.sh up-cluster 2
#                             # two Slurm nodes hpc1, hpc2: a slurmd in each
#                             # network-namespace host of ci/cluster.sh (with
#                             # a host name of its own), slurmctld on the bridge
#   srun --mpi=pmi2 -N 2 -n 4 target/release/hpcomm selftest
#
# The node line is what `slurmd -C` reports, so the configuration fits any
# machine. MpiDefault=none, as on AWS ParallelCluster: plain `srun` starts
# tasks without PMI, and `--mpi=pmi2` or `--mpi=pmix` asks for it.
set -euo pipefail
conf=/etc/slurm/slurm.conf
state=/var/spool/hpcomm-slurm

down() {
    pkill -x slurmstepd 2>/dev/null || true
    pkill -x slurmd 2>/dev/null || true
    pkill -x slurmctld 2>/dev/null || true
    for _ in $(seq 50); do
        pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || break
        sleep 0.1
    done
}

# Starts munged, once.
munge_up() {
    mkdir -p /etc/slurm "$state/ctld" /run/munge /var/log/munge /var/lib/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
    if ! pgrep -x munged >/dev/null; then
        if id munge >/dev/null 2>&1; then
            runuser -u munge -- munged
        else
            munged --force
        fi
    fi
}

# The configuration, with the controller at $1 and the node lines after it.
write_conf() {
    local controller=$1
    shift
    {
        cat <<CONF
ClusterName=hpcomm
SlurmctldHost=$controller
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d-%n
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd-%n.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
CONF
        printf '%s\n' "$@"
        echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE"
    } >"$conf"
}

# Waits until `sinfo` shows $1 idle nodes.
wait_idle() {
    for _ in $(seq 150); do
        if [ "$(sinfo -h -N -o '%t' 2>/dev/null | grep -cx 'idle')" -ge "$1" ]; then
            return 0
        fi
        sleep 0.2
    done
    echo "ci/slurm.sh: the nodes did not become idle:" >&2
    sinfo >&2 || true
    tail -20 "$state"/*.log >&2 || true
    exit 1
}

up() {
    down
    munge_up
    local node
    node=$(slurmd -C | head -1)
    write_conf "$(hostname -s)" "$node State=UNKNOWN"
    slurmctld
    slurmd
    wait_idle 1
}

# Two or more nodes in the namespace hosts hpc1… of ci/cluster.sh: each
# slurmd in its host's network namespace and a UTS namespace named after
# it; the controller on the bridge (10.77.0.1).
up_cluster() {
    local n=$1
    down
    munge_up
    local cpus
    cpus=$(slurmd -C | head -1 | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p')
    local lines=()
    for i in $(seq 1 "$n"); do
        lines+=("NodeName=hpc$i NodeAddr=10.77.0.$((10 + i)) CPUs=$cpus State=UNKNOWN")
    done
    write_conf "$(hostname -s)(10.77.0.1)" "${lines[@]}"
    slurmctld
    for i in $(seq 1 "$n"); do
        # nsenter, not `ip netns exec`, which remounts /sys without the
        # cgroup file systems slurmd looks for.
        mkdir -p "$state/d-hpc$i"
        unshare --uts sh -c "hostname hpc$i && exec nsenter --net=/run/netns/hpc$i slurmd"
    done
    wait_idle "$n"
}

case ${1:-} in
up) up ;;
up-cluster) up_cluster "${2:?how many nodes}" ;;
down) down ;;
*)
    echo "usage: $0 up | up-cluster N | down" >&2
    exit 2
    ;;
esac
