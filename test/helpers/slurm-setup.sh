#!/usr/bin/env bash
# A single-node Slurm for test/slurm.test.ts, set up by the test itself: munge (the machine's key, or a new
# one) and slurmctld + slurmd as root with a minimal slurm.conf in a private folder (the machine's
# /etc/slurm is not touched; clients find the conf through SLURM_CONF).
#
#   test/helpers/slurm-setup.sh start DIR   → prints SLURM_CONF=DIR/slurm.conf once the node takes jobs
#   test/helpers/slurm-setup.sh stop DIR    → stops the daemons this script started
#
# Exit status 2 with one line on stderr when Slurm cannot run here (not installed, not root, a daemon that
# does not start): the test skips with that reason. Debian 12: apt-get install slurm-wlm munge.
set -uo pipefail

action="${1:-}"
dir="${2:-}"
[ -n "$action" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 64; }
unavailable() { echo "slurm unavailable: $*" >&2; exit 2; }

stop_pidfile() {
  local file="$1"
  [ -f "$file" ] || return 0
  local pid
  pid="$(cat "$file" 2>/dev/null)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$file"
}

if [ "$action" = stop ]; then
  stop_pidfile "$dir/slurmd.pid"
  stop_pidfile "$dir/slurmctld.pid"
  # munged only if this script started it (it may be the machine's own).
  [ -f "$dir/munged.started" ] && { munged --stop >/dev/null 2>&1 || true; rm -f "$dir/munged.started"; }
  exit 0
fi
[ "$action" = start ] || { echo "usage: $0 start|stop DIR" >&2; exit 64; }

for command in slurmctld slurmd sbatch sinfo scontrol munged munge; do
  command -v "$command" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$command" >/dev/null 2>&1 \
    || unavailable "$command is not installed (Debian: apt-get install slurm-wlm munge)"
done
export PATH="$PATH:/usr/sbin:/sbin"
[ "$(id -u)" = 0 ] || unavailable "the daemons must start as root (running as $(id -un))"
mkdir -p "$dir/state" "$dir/spool" || unavailable "cannot create $dir"
host="$(hostname -s)"
getent hosts "$host" >/dev/null 2>&1 || unavailable "this machine's hostname $host does not resolve"

# munge: the machine's daemon if one answers, else ours (as the munge user, with the key made if missing).
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none || unavailable "cannot write /etc/munge/munge.key"
    chown munge:munge /etc/munge/munge.key 2>/dev/null; chmod 400 /etc/munge/munge.key
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null
  if id munge >/dev/null 2>&1 && command -v runuser >/dev/null; then
    runuser -u munge -- munged >"$dir/munged.out" 2>&1 || unavailable "munged did not start: $(tail -1 "$dir/munged.out")"
  else
    munged --force >"$dir/munged.out" 2>&1 || unavailable "munged did not start: $(tail -1 "$dir/munged.out")"
  fi
  touch "$dir/munged.started"
  for _ in $(seq 50); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 || unavailable "munge does not answer after starting munged"
fi

cpus="$(nproc)"
memory_mb="$(awk '/MemTotal/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)"
conf="$dir/slurm.conf"
cat >"$conf" <<CONF
ClusterName=rank1test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MaxArraySize=1001
NodeName=$host CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=rank1test Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$conf"

stop_pidfile "$dir/slurmd.pid"
stop_pidfile "$dir/slurmctld.pid"
slurmctld -f "$conf" -i >"$dir/slurmctld.out" 2>&1 || unavailable "slurmctld did not start: $(tail -1 "$dir/slurmctld.out") $(tail -1 "$dir/slurmctld.log" 2>/dev/null)"
slurmd -f "$conf" >"$dir/slurmd.out" 2>&1 || unavailable "slurmd did not start: $(tail -1 "$dir/slurmd.out") $(tail -1 "$dir/slurmd.log" 2>/dev/null)"
state=""
for _ in $(seq 150); do
  state="$(sinfo -h -n "$host" -o %t 2>/dev/null | head -1)"
  case "$state" in idle*|mix*|alloc*) break ;; down*|drain*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 ;; esac
  sleep 0.2
done
case "$state" in
  idle*|mix*|alloc*) echo "SLURM_CONF=$conf" ;;
  *) unavailable "the node $host is not taking jobs (state '${state:-none}'): $(tail -2 "$dir/slurmd.log" 2>/dev/null | tr '\n' ' ')" ;;
esac
