#!/usr/bin/env bash
# A single-node Slurm cluster on localhost (Debian's slurm-wlm and munge), everything inside one folder, for
# slurm_cluster_test and for trying `cab-sweep --emit slurm` by hand:
#   tests/sweep/local_slurm.sh start DIR   installs slurm-wlm and munge when missing (as root, apt-get), writes
#                                          DIR/slurm.conf, starts munged, slurmctld and slurmd, waits for the
#                                          node; prints SLURM_CONF=DIR/slurm.conf (export it for sbatch, squeue)
#   tests/sweep/local_slurm.sh stop DIR    cancels the cluster's jobs, stops its daemons
# Exit code 77, with the reason on stderr: Slurm cannot run on this machine (not root, no Slurm and no apt-get,
# the packages cannot be installed, or the daemons do not come up).
set -uo pipefail

cmd=${1:-}
D=${2:-}
[ -n "$cmd" ] && [ -n "$D" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
D=$(mkdir -p "$D" && cd "$D" && pwd)
CONF="$D/slurm.conf"

skip() { echo "local Slurm unavailable: $*" >&2; exit 77; }
say() { echo "local_slurm: $*" >&2; }

# The pid in a pid file, if that process is alive.
alive() { local p; p=$(cat "$1" 2>/dev/null) && [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"; }

stop_pidfile() {  # SIGTERM, then SIGKILL after 10 s
  local p i
  p=$(alive "$1") || return 0
  kill "$p" 2>/dev/null
  for i in $(seq 100); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$p" 2>/dev/null
}

stop() {
  if [ -f "$CONF" ] && alive "$D/slurmctld.pid" >/dev/null; then
    local jobs i
    jobs=$(SLURM_CONF=$CONF squeue -h -o %A 2>/dev/null | sort -u)
    [ -n "$jobs" ] && SLURM_CONF=$CONF scancel $jobs 2>/dev/null
    for i in $(seq 200); do
      [ -z "$(SLURM_CONF=$CONF squeue -h -o %A 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
  stop_pidfile "$D/slurmd.pid"
  stop_pidfile "$D/slurmctld.pid"
  # Job steps can outlive slurmd: slurmstepd and the jobs' processes carry this cluster's SLURM_CONF in their
  # environment (a user's shell may too, but it has no SLURM_JOB_ID).
  local p env
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = "$$" ] && continue
    env=$({ tr '\0' '\n' <"/proc/$p/environ"; } 2>/dev/null) || continue
    grep -qxF "SLURM_CONF=$CONF" <<<"$env" || continue
    if [ "$(cat "/proc/$p/comm" 2>/dev/null)" = slurmstepd ] || grep -q '^SLURM_JOB_ID=' <<<"$env"; then
      kill -9 "$p" 2>/dev/null
    fi
  done
  stop_pidfile "$D/munged.pid"
}

install() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null &&
    command -v munged >/dev/null && return 0
  [ "$(id -u)" -eq 0 ] || skip "slurm-wlm and munge are not installed, and installing them needs root"
  command -v apt-get >/dev/null || skip "slurm-wlm and munge are not installed, and there is no apt-get"
  say "installing slurm-wlm and munge (apt-get)"
  local log
  log=$(mktemp)
  if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      slurm-wlm munge; } >"$log" 2>&1; then
    local tail
    tail=$(tail -n 5 "$log" | tr '\n' ' ')
    rm -f "$log"
    skip "apt-get install slurm-wlm munge failed: $tail"
  fi
  rm -f "$log"
}

start() {
  install
  [ "$(id -u)" -eq 0 ] || skip "slurmd must run as root to start jobs (this is uid $(id -u))"
  stop  # a cluster left in DIR by an earlier run
  mkdir -p "$D/state" "$D/spool" "$D/log"
  head -c 1024 /dev/urandom >"$D/munge.key" && chmod 400 "$D/munge.key"
  munged --force --socket="$D/munge.sock" --key-file="$D/munge.key" --pid-file="$D/munged.pid" \
    --log-file="$D/log/munged.log" --seed-file="$D/munged.seed" ||
    skip "munged does not start: $(tail -n 3 "$D/log/munged.log" 2>/dev/null | tr '\n' ' ')"
  local node ports
  node=$(slurmd -C 2>/dev/null | head -n 1 | sed 's/^NodeName=[^ ]*//')
  [ -n "$node" ] || skip "slurmd -C cannot describe this machine"
  ports=$((20000 + ($$ % 10000) * 2))  # away from the default 6817/6818 and from a concurrent cluster
  cat >"$CONF" <<EOF
ClusterName=cabtest
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$ports
SlurmdPort=$((ports + 1))
AuthType=auth/munge
AuthInfo=socket=$D/munge.sock
CredType=cred/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
KillWait=10
MinJobAge=600
NodeName=localhost NodeAddr=127.0.0.1 $node State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  SLURM_CONF=$CONF slurmctld -i >>"$D/log/start.log" 2>&1 ||
    { stop; skip "slurmctld does not start: $(tail -n 3 "$D/log/slurmctld.log" 2>/dev/null | tr '\n' ' ')"; }
  SLURM_CONF=$CONF slurmd -N localhost >>"$D/log/start.log" 2>&1 ||
    { stop; skip "slurmd does not start: $(tail -n 3 "$D/log/slurmd.log" 2>/dev/null | tr '\n' ' ')"; }
  local i state=""
  for i in $(seq 300); do
    state=$(SLURM_CONF=$CONF sinfo -h -n localhost -o %t 2>/dev/null)
    [ "$state" = "idle" ] && { echo "SLURM_CONF=$CONF"; return 0; }
    sleep 0.1
  done
  local why
  why="the node stays '${state:-unknown}': $(tail -n 3 "$D/log/slurmd.log" 2>/dev/null | tr '\n' ' ')"
  stop
  skip "$why"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
