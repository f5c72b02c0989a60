#!/bin/bash
# A one-node SLURM on this machine, for `make test-slurm` (the preemption loop on a real SLURM).
#
#   eval "$(jobs/slurm_local.sh start)"   # installs Debian's slurm-wlm if missing, starts munged,
#                                         # slurmctld and slurmd; prints `export SLURM_CONF=...`
#   jobs/slurm_local.sh stop              # stops the daemons this script started
#
# Needs root (it runs the daemons and the jobs as root). Its own config and state live in
# $BERTPRE_SLURM_DIR (default /tmp/bertpre-slurm); /etc/slurm is left alone. Containers usually
# have no writable cgroup hierarchy, so nothing here uses cgroups: processes are tracked through
# the process tree (proctrack/linuxproc), tasks are not bound (task/none), no accounting.
set -euo pipefail

DIR=${BERTPRE_SLURM_DIR:-/tmp/bertpre-slurm}
CONF=$DIR/slurm.conf
NODE=$(hostname -s)

log() { echo "slurm_local: $*" >&2; }

install_slurm() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return
  [ "$(id -u)" = 0 ] || { log "SLURM is not installed and this is not root: apt-get install slurm-wlm munge"; exit 1; }
  log "installing slurm-wlm and munge from the distribution's packages"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge >&2
}

write_config() {
  mkdir -p "$DIR/ctld" "$DIR/slurmd" "$DIR/munge"
  cat > "$CONF" <<EOF
ClusterName=bertpre-local
SlurmctldHost=$NODE
SlurmctldPort=6917
SlurmdPort=6918
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/slurmd
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
# no cgroups (see the top of this file)
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
# finished jobs stay visible to scontrol (Restarts=, JobState=) for 10 minutes
MinJobAge=600
KillWait=10
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return  # a munged already answers
  [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key >&2
  chmod 600 /etc/munge/munge.key
  mkdir -p /run/munge && chmod 755 /run/munge
  # --force: run although the socket directory and key belong to root, not to a munge user
  munged --force --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
    --seed-file="$DIR/munge/munged.seed" >&2
}

wait_for_node() {
  for _ in $(seq 60); do
    state=$(SLURM_CONF=$CONF sinfo -h -n "$NODE" -o %t 2>/dev/null || true)
    case "$state" in idle*|mix*|alloc*) return ;; esac
    sleep 1
  done
  log "the node never became idle (state '${state:-none}'); see $DIR/slurmctld.log and $DIR/slurmd.log"
  exit 1
}

start() {
  install_slurm
  write_config
  start_munge
  pid_alive "$DIR/slurmctld.pid" || slurmctld -c -f "$CONF"  # -c: no state from an earlier start
  pid_alive "$DIR/slurmd.pid" || slurmd -f "$CONF" -N "$NODE"
  wait_for_node
  log "SLURM is up: node $NODE, partition local, logs in $DIR"
  echo "export SLURM_CONF=$CONF"
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_one() {
  local pidfile=$1
  pid_alive "$pidfile" || return 0
  local pid
  pid=$(cat "$pidfile")
  kill "$pid"
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
}

stop() {
  stop_one "$DIR/slurmd.pid"
  stop_one "$DIR/slurmctld.pid"
  stop_one "$DIR/munge/munged.pid"
  log "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
