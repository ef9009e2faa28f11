#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, in the background, for the launcher=slurm tests
# and for trying the SLURM recipe without a cluster (README, "SLURM").
#
#   bash scripts/slurm_local.sh          # install (apt-get) if needed, start; idempotent
#   bash scripts/slurm_local.sh stop     # stop slurmd, slurmctld, munged
#
# Debian's slurm-wlm 22.05 and munge, run as root without systemd: a munge key owned by munge
# (mode 400) and munged as user munge; slurm.conf naming this host as controller and only node
# with its real CPU count. cgroup.conf must say CgroupPlugin=autodetect with IgnoreSystemd=yes:
# 22.05 has no "disabled" value and slurmd then refuses to start.
# Accounting runs too (slurmdbd on a local MariaDB, root through its unix socket, no password):
# submitit learns that a job was cancelled or failed only from `sacct`; without it a sweep
# waits forever for a cancelled job's result. The job completion log (jobcomp/filetxt,
# SLURM_JOBCOMP below) keeps a plain-text line per finished job besides. Exit 3: the packages cannot be installed
# here (not root, no apt-get, no package source), which the tests report as their skip reason.
set -euo pipefail
STATE=${SLURM_LOCAL_STATE:-/var/lib/caprl-slurm}
JOBCOMP=$STATE/jobcomp.txt
CONF=/etc/slurm/slurm.conf

log() { echo "[slurm_local] $*" >&2; }
cannot() { log "cannot install SLURM here: $*"; exit 3; }

stop() {
  for d in slurmd slurmctld slurmdbd munged; do
    pid=$(pgrep -x "$d" || true)
    [ -n "$pid" ] || continue
    kill $pid
    # Wait for it to be gone: start() must not mistake an exiting daemon for a running one.
    for _ in $(seq 1 50); do pgrep -x "$d" >/dev/null || break; sleep 0.2; done
    log "stopped $d ($pid)"
  done
  return 0
}

install() {
  command -v slurmctld >/dev/null && command -v slurmdbd >/dev/null && command -v munged >/dev/null \
    && command -v mariadbd >/dev/null && return 0
  [ "$(id -u)" = 0 ] || cannot "not root (apt-get and the daemons need root)"
  command -v apt-get >/dev/null || cannot "no apt-get (not a Debian-like system)"
  local pkgs="slurm-wlm slurmdbd munge mariadb-server"
  log "installing $pkgs with apt-get (a minute or two)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q $pkgs >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $pkgs >/dev/null 2>&1; } \
    || cannot "apt-get install $pkgs failed"
}

configure() {
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d" /var/log/slurm /run/munge /var/log/munge /var/lib/munge
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
  chmod 700 /etc/munge && chmod 400 /etc/munge/munge.key
  cat > "$CONF.new" <<EOF
# Written by scripts/slurm_local.sh: a one-node cluster on $host.
ClusterName=caprl
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$JOBCOMP
# A short time limit must bite when it says (no grace period), a cancelled job must end soon
# (KillWait: SIGTERM to SIGKILL), and a job requeued on time-out (submitit's max_num_timeout)
# may start again after cred_expire seconds instead of the default 120.
OverTimeLimit=0
KillWait=5
AuthInfo=cred_expire=15
InactiveLimit=0
MinJobAge=600
SchedulerParameters=defer_batch
DefMemPerCPU=1024
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  cat > /etc/slurm/slurmdbd.conf.new <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
LogFile=/var/log/slurm/slurmdbd.log
PidFile=$STATE/slurmdbd.pid
EOF
  chmod 600 /etc/slurm/slurmdbd.conf.new
  cat > /etc/slurm/cgroup.conf.new <<EOF
CgroupPlugin=autodetect
IgnoreSystemd=yes
EOF
  # Daemons read their config once: restart them only when it changed.
  local changed=0 f
  for f in slurm.conf slurmdbd.conf cgroup.conf; do
    cmp -s "/etc/slurm/$f.new" "/etc/slurm/$f" || changed=1
  done
  if [ $changed = 1 ]; then
    for f in slurm.conf slurmdbd.conf cgroup.conf; do mv "/etc/slurm/$f.new" "/etc/slurm/$f"; done
    stop
  else
    rm -f /etc/slurm/*.conf.new
  fi
}

start() {
  pgrep -x munged >/dev/null || runuser -u munge -- munged
  if ! pgrep -x mariadbd >/dev/null; then
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    (mysqld_safe --user=mysql >/dev/null 2>&1 &)
  fi
  for _ in $(seq 1 60); do mysqladmin ping >/dev/null 2>&1 && break; sleep 1; done
  mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db" || { log "MariaDB did not start"; exit 1; }
  pgrep -x slurmdbd >/dev/null || slurmdbd
  for _ in $(seq 1 30); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 1; done
  sacctmgr -n list cluster format=cluster | grep -qw caprl || sacctmgr -i add cluster caprl >/dev/null
  pgrep -x slurmctld >/dev/null || slurmctld
  pgrep -x slurmd >/dev/null || slurmd
  for _ in $(seq 1 60); do
    if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
      log "up: $(sinfo -h -o '%P %D %t %c CPUs' | head -1); job records in $JOBCOMP"
      return 0
    fi
    # A node left down by an earlier stop comes back when asked.
    scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
    sleep 1
  done
  log "SLURM did not come up; see /var/log/slurm/slurmctld.log and slurmd.log"
  exit 1
}

case "${1:-start}" in
  stop) stop; if pgrep -x mariadbd >/dev/null; then mysqladmin shutdown; fi ;;
  start) install; configure; start; echo "SLURM_JOBCOMP=$JOBCOMP" ;;
  *) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac
