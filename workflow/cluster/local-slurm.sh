#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, from Debian's slurm-wlm and munge, for the `cluster` tests and for
# trying workflow/profiles/slurm without a site: local-slurm.sh up | down | status.
#   up      write slurm.conf for this node's CPUs and memory under $MEDREPRO_SLURM_DIR (default /tmp/medrepro-slurm),
#           start munged, slurmctld and slurmd (idempotent: running daemons are left alone)
#   down    stop exactly the daemons `up` started (their pid files), nothing else
#   status  the daemons' state and `sinfo`
# Accounting: no slurmdbd; finished jobs go to a job-completion text file, which `sacct --completion` reads.
# Needs root (the daemons run as root here) and: apt-get install slurm-wlm munge
set -euo pipefail
DIR=${MEDREPRO_SLURM_DIR:-/tmp/medrepro-slurm}
CONF=$DIR/etc/slurm.conf
export SLURM_CONF=$CONF

need() { command -v "$1" >/dev/null || { echo "local-slurm: $1 not found (apt-get install slurm-wlm munge)" >&2; exit 1; }; }
running() { [[ -f $DIR/run/$1.pid ]] && kill -0 "$(cat "$DIR/run/$1.pid")" 2>/dev/null; }

write_conf() {
  local node cpus mem
  node=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))  # MB, 1 GB left to the system
  mkdir -p "$DIR"/{etc,run,log,state,spool,munge}
  cat > "$CONF" <<CONF
ClusterName=medrepro
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CryptoType=crypto/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=600
KillWait=5
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
JobAcctGatherType=jobacct_gather/none
NodeName=$node CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=main Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
}

up() {
  need slurmctld; need slurmd; need munged
  [[ -f $CONF ]] || write_conf
  # job steps (srun inside a batch job) read the default location, not $SLURM_CONF: link it there unless a site
  # config already lives there
  if [[ ! -e /etc/slurm/slurm.conf ]]; then mkdir -p /etc/slurm && ln -s "$CONF" /etc/slurm/slurm.conf; fi
  if ! running munged; then
    [[ -f $DIR/munge/munge.key ]] || { dd if=/dev/urandom bs=1 count=1024 of="$DIR/munge/munge.key" 2>/dev/null; chmod 400 "$DIR/munge/munge.key"; }
    munged --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" --pid-file="$DIR/run/munged.pid" \
      --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munge.seed" --force
  fi
  export MUNGE_SOCKET=$DIR/munge/munge.socket
  running slurmctld || slurmctld -f "$CONF"
  running slurmd || slurmd -f "$CONF"
  for _ in $(seq 30); do
    sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)' && { echo "local-slurm: up ($CONF)"; return 0; }
    sleep 1
  done
  echo "local-slurm: the node did not become idle; see $DIR/log/" >&2
  exit 1
}

down() {
  for d in slurmd slurmctld munged; do
    if running "$d"; then kill "$(cat "$DIR/run/$d.pid")"; fi
  done
  if [[ -L /etc/slurm/slurm.conf && $(readlink /etc/slurm/slurm.conf) == "$CONF" ]]; then rm /etc/slurm/slurm.conf; fi
  echo "local-slurm: down"
}

status() {
  for d in munged slurmctld slurmd; do
    if running "$d"; then echo "$d: running (pid $(cat "$DIR/run/$d.pid"))"; else echo "$d: stopped"; fi
  done
  running slurmctld && sinfo || true
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
