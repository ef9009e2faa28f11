#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, in the background, for the launcher=slurm tests
# and for trying the SLURM recipe without a cluster (README, "SLURM").
#
#   bash scripts/slurm_local.sh          # install (apt-get) if needed, start; idempotent
#   bash scripts/slurm_local.sh stop     # stop slurmd, slurmctld, munged
#
# Debian's slurm-wlm 22.05 and munge, run as root without systemd: a munge key owned by munge
# (mode 400) and munged as user munge; slurm.conf naming this host as controller and only node
# with its real CPU count; no accounting database, so finished jobs are recorded by the job
# completion log (jobcomp/filetxt, SLURM_JOBCOMP below) and `scontrol show job` while they are
# still known. cgroup.conf must say CgroupPlugin=autodetect with IgnoreSystemd=yes: 22.05 has no
# "disabled" value and slurmd then refuses to start. Exit 3: the packages cannot be installed
# here (not root, no apt-get, no package source), which the tests report as their skip reason.
set -euo pipefail
STATE=${SLURM_LOCAL_STATE:-/var/lib/caprl-slurm}
JOBCOMP=$STATE/jobcomp.txt
CONF=/etc/slurm/slurm.conf

log() { echo "[slurm_local] $*" >&2; }
cannot() { log "cannot install SLURM here: $*"; exit 3; }

stop() {
  for d in slurmd slurmctld munged; do
    pid=$(pgrep -x "$d" || true)
    [ -n "$pid" ] && kill $pid && log "stopped $d ($pid)"
  done
  return 0
}

install() {
  command -v slurmctld >/dev/null && command -v munged >/dev/null && command -v sbatch >/dev/null && return 0
  [ "$(id -u)" = 0 ] || cannot "not root (apt-get and the daemons need root)"
  command -v apt-get >/dev/null || cannot "no apt-get (not a Debian-like system)"
  log "installing slurm-wlm and munge with apt-get (about a minute)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q slurm-wlm munge >/dev/null 2>&1; } \
    || cannot "apt-get install slurm-wlm munge failed"
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
JobCompType=jobcomp/filetxt
JobCompLoc=$JOBCOMP
# A short time limit must bite when it says: check limits often, no grace period.
OverTimeLimit=0
InactiveLimit=0
MinJobAge=600
SchedulerParameters=defer_batch
DefMemPerCPU=1024
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  cat > /etc/slurm/cgroup.conf.new <<EOF
CgroupPlugin=autodetect
IgnoreSystemd=yes
EOF
  # Daemons read their config once: restart them only when it changed.
  if ! cmp -s "$CONF.new" "$CONF" || ! cmp -s /etc/slurm/cgroup.conf.new /etc/slurm/cgroup.conf; then
    mv "$CONF.new" "$CONF" && mv /etc/slurm/cgroup.conf.new /etc/slurm/cgroup.conf
    stop
    sleep 1
  else
    rm -f "$CONF.new" /etc/slurm/cgroup.conf.new
  fi
}

start() {
  pgrep -x munged >/dev/null || runuser -u munge -- munged
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
  stop) stop ;;
  start) install; configure; start; echo "SLURM_JOBCOMP=$JOBCOMP" ;;
  *) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac
