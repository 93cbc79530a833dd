#!/usr/bin/env bash
# A throwaway SLURM 22.05 cluster on this machine, without systemd: one slurmctld and one
# slurmd per node (n1, n2, ...), all on this host, so that multi-node jobs (srun across
# nodes, torchrun rendezvous) really run here.
#
# Usage: scripts/slurm-local.sh up|down|status [DIR]      (DIR defaults to ./.slurm)
#
#   up      create DIR (munge key, slurm.conf, cgroup.conf, state/spool/log dirs), start
#           munged, slurmctld and one slurmd per node, wait until every node is idle in
#           `sinfo`. Idempotent: an already running cluster is left alone.
#   down    cancel every job, wait for them to end, `scontrol shutdown`, stop munged, every
#           slurmd and leftover slurmstepd processes of this cluster by PID. Idempotent.
#   status  show the daemons and `sinfo`; exit 0 when the cluster is up, 3 when it is not.
#
# stdout carries only `export SLURM_CONF=DIR/etc/slurm.conf`, so that
#   eval "$(scripts/slurm-local.sh up)"
# configures the current shell; progress and errors go to stderr.
#
# Environment: SLURM_LOCAL_NODES (number of nodes, default 2), SLURM_LOCAL_TIMEOUT (seconds
# to wait for start/stop, default 60), SLURM_LOCAL_CPUS (CPUs each node advertises, default
# 8), SLURM_LOCAL_PORT (first port tried for slurmctld; each slurmd takes the next free one;
# default 6817).
#
# The nodes share this host: every node line has NodeAddr=127.0.0.1 and its own slurmd port,
# and per-node files come from %n (SlurmdSpoolDir, pid and log files). Their NAMES resolve
# nowhere, as on clusters where NodeName is not a DNS name: jobs must reach a node by its
# NodeAddr (jobctl's multi-node script does). Each node advertises 1/NODES of this host's
# memory, so that the cluster never promises more than there is.
# The packages are NOT installed here: munge slurmctld slurmd slurm-client (Debian 12).
#
# Memory is enforced without cgroups: memory is a consumable resource (CR_Core_Memory, 1 GiB
# per CPU when a job gives no --mem) and jobacct_gather/linux polls every task each second;
# with OverMemoryKill a step over its --mem is SIGKILLed (SLURM 22.05 then reports FAILED,
# signal 9, and slurmstepd writes "Exceeded job memory limit" into the job's log).
set -euo pipefail
umask 022

NODES=${SLURM_LOCAL_NODES:-2}
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-60}
CPUS=${SLURM_LOCAL_CPUS:-8}
FIRST_PORT=${SLURM_LOCAL_PORT:-6817}
REQUIRED=(munged mungekey munge unmunge slurmctld slurmd sinfo scontrol squeue scancel sbatch)

log() { printf 'slurm-local: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  printf 'usage: %s up|down|status [DIR]\n' "$0" >&2
  exit 2
}

# Absolute path of $1 without requiring it to exist.
abspath() {
  case $1 in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$PWD" "${1#./}" ;;
  esac
}

check_binaries() {
  local missing=() bin
  PATH=$PATH:/usr/sbin:/sbin
  for bin in "${REQUIRED[@]}"; do
    command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
  done
  if ((${#missing[@]})); then
    die "missing programs: ${missing[*]} (install the Debian packages: apt-get install -y" \
      "--no-install-recommends munge slurmctld slurmd slurm-client)"
  fi
}

set_paths() {
  DIR=$(abspath "$1")
  ETC=$DIR/etc
  CONF=$ETC/slurm.conf
  RUN=$DIR/run
  LOGDIR=$DIR/log
  MUNGE_DIR=$DIR/munge
  JOBCOMP=$LOGDIR/jobcomp.txt
}

# Is the daemon whose PID is in file $1 (named like the file up to its first dot: munged,
# slurmctld, slurmd.n1 for slurmd) alive? A stale pid file whose number now belongs to
# another program does not count.
pid_alive() {
  local pid name
  [[ -s $1 ]] || return 1
  pid=$(<"$1")
  name=$(basename "$1")
  name=${name%%.*}
  [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]
}

# Wait until "$@" succeeds or TIMEOUT seconds pass; returns the command's last status.
wait_for() {
  local deadline=$((SECONDS + TIMEOUT))
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

# The munge socket goes in DIR/run when every directory above it is world-executable
# (munged refuses otherwise; clients of other users must reach it) and the path fits a unix
# socket (108 bytes); else in a short directory under /tmp named after DIR.
choose_socket_dir() {
  local dir=$RUN parent ok=1
  parent=$dir
  while [[ $parent != / ]]; do
    parent=$(dirname "$parent")
    if [[ -e $parent ]] && [[ $(stat -c %A "$parent") != ?????????[xt] ]]; then
      ok=0
      break
    fi
  done
  if ((ok)) && ((${#dir} < 90)); then
    SOCKET_DIR=$dir
  else
    SOCKET_DIR=/tmp/slurm-local-$(printf '%s' "$DIR" | cksum | cut -d' ' -f1)
  fi
  SOCKET=$SOCKET_DIR/munge.socket
}

free_port() {
  local port=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    port=$((port + 1))
  done
  printf '%s\n' "$port"
}

# 90 % of this host's memory, shared out between the nodes (MiB each).
node_memory_mib() {
  awk -v nodes="$NODES" '/^MemTotal:/ {printf "%d\n", $2 / 1024 * 0.9 / nodes}' /proc/meminfo
}

node_names() {
  local i
  for ((i = 1; i <= NODES; i++)); do
    printf 'n%d\n' "$i"
  done
}

# One slurm.conf line per node, each slurmd on its own port (the next free after $1).
node_lines() {
  local port=$1 node memory
  memory=$(node_memory_mib)
  for node in $(node_names); do
    port=$(free_port $((port + 1)))
    printf 'NodeName=%s NodeAddr=127.0.0.1 NodeHostname=%s Port=%s CPUs=%s RealMemory=%s State=UNKNOWN\n' \
      "$node" "$node" "$port" "$CPUS" "$memory"
  done
}

write_config() {
  local ctld_port user node
  ctld_port=$(free_port "$FIRST_PORT")
  user=$(id -un)
  mkdir -p "$ETC" "$RUN" "$LOGDIR" "$DIR/state"
  for node in $(node_names); do
    mkdir -p "$DIR/spool/$node"
  done
  cat >"$CONF.tmp" <<EOF
# Generated by scripts/slurm-local.sh for a throwaway $NODES-node cluster in $DIR
ClusterName=local
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.%n.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherParams=OverMemoryKill
JobAcctGatherFrequency=task=1
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$JOBCOMP
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SlurmdParameters=config_overrides
SchedulerParameters=batch_sched_delay=0
DependencyParameters=kill_invalid_depend
MinJobAge=300
$(node_lines "$ctld_port")
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
  printf 'CgroupPlugin=cgroup/v1\nCgroupAutomount=no\n' >"$ETC/cgroup.conf"
}

start_munged() {
  if pid_alive "$RUN/munged.pid"; then
    return 0
  fi
  mkdir -p "$MUNGE_DIR" "$SOCKET_DIR"
  chmod 755 "$DIR" "$SOCKET_DIR"
  chmod 700 "$MUNGE_DIR"
  if [[ ! -s $MUNGE_DIR/munge.key ]]; then
    mungekey --create --keyfile="$MUNGE_DIR/munge.key"
  fi
  chmod 600 "$MUNGE_DIR/munge.key"
  log "starting munged (socket $SOCKET)"
  munged --socket="$SOCKET" --key-file="$MUNGE_DIR/munge.key" --pid-file="$RUN/munged.pid" \
    --log-file="$LOGDIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed" \
    --origin=127.0.0.1 --force
  wait_for munge_works || fail_with_logs "munged does not answer on $SOCKET"
}

munge_works() {
  munge -n -S "$SOCKET" 2>/dev/null | unmunge -S "$SOCKET" >/dev/null 2>&1
}

# The node names of the cluster as configured (the running one may differ from $NODES).
conf_nodes() {
  sed -n 's/^NodeName=\([^ ]*\) .*/\1/p' "$CONF" 2>/dev/null
}

# Every configured node answers and takes jobs.
nodes_idle() {
  local expected up
  expected=$(conf_nodes | wc -l)
  up=$(sinfo -h -N -o '%N %T' 2>/dev/null | grep -Ec ' (idle|mixed|allocated)$')
  ((expected > 0 && up == expected))
}

slurmd_pidfiles() {
  local node
  for node in $(conf_nodes); do
    printf '%s\n' "$RUN/slurmd.$node.pid"
  done
}

fail_with_logs() {
  local file
  log "error: $1"
  for file in "$LOGDIR"/munged.log "$LOGDIR"/slurmctld.log "$LOGDIR"/slurmd.*.log; do
    [[ -f $file ]] || continue
    log "--- last lines of $file"
    tail -n 15 "$file" >&2
  done
  exit 1
}

cmd_up() {
  export SLURM_CONF=$CONF
  mkdir -p "$DIR" "$RUN" "$LOGDIR"
  chmod 755 "$DIR"
  choose_socket_dir
  local node nodes
  if ! any_daemon_alive; then
    write_config
  fi
  start_munged
  if ! pid_alive "$RUN/slurmctld.pid"; then
    log "starting slurmctld"
    slurmctld -f "$CONF" || fail_with_logs "slurmctld did not start"
  fi
  for node in $(conf_nodes); do
    if ! pid_alive "$RUN/slurmd.$node.pid"; then
      log "starting slurmd -N $node"
      slurmd -f "$CONF" -N "$node" || fail_with_logs "slurmd -N $node did not start"
    fi
  done
  nodes=$(conf_nodes | tr '\n' ' ')
  wait_for nodes_idle || fail_with_logs "nodes ${nodes% } are not all idle after ${TIMEOUT}s:" \
    "$(sinfo -N 2>&1)"
  log "up: nodes ${nodes% } idle, $CPUS CPUs each, config $CONF"
  printf 'export SLURM_CONF=%q\n' "$CONF"
}

# Does slurmctld or any slurmd of this directory run? (Then its slurm.conf stays as it is.)
any_daemon_alive() {
  local file
  for file in "$RUN"/slurmctld.pid "$RUN"/slurmd.*.pid; do
    if pid_alive "$file"; then
      return 0
    fi
  done
  return 1
}

# PIDs of slurmstepd processes started by this cluster's slurmd (their environment carries
# our SLURM_CONF because slurmd is started with it exported).
our_stepds() {
  local proc pid
  for proc in /proc/[0-9]*; do
    pid=${proc#/proc/}
    [[ $(cat "$proc/comm" 2>/dev/null) == slurmstepd ]] || continue
    if tr '\0' '\n' 2>/dev/null <"$proc/environ" | grep -qxF "SLURM_CONF=$CONF"; then
      printf '%s\n' "$pid"
    fi
  done
}

no_active_jobs() {
  [[ -z $(squeue -h -t PD,R,CG,S,CF -o '%A' 2>/dev/null) ]]
}

stop_pidfile() {
  local file=$1 pid
  pid_alive "$file" || return 0
  pid=$(<"$file")
  kill -TERM "$pid" 2>/dev/null || true
  wait_for pid_gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
}

pid_gone() { ! kill -0 "$1" 2>/dev/null; }

cmd_down() {
  export SLURM_CONF=$CONF
  local stepds ids pid file
  if [[ -f $CONF ]] && pid_alive "$RUN/slurmctld.pid"; then
    ids=$(squeue -h -o '%A' 2>/dev/null | sort -u | tr '\n' ' ')
    if [[ -n ${ids// /} ]]; then
      log "cancelling jobs: $ids"
      # shellcheck disable=SC2086 # word splitting of the id list is intended
      scancel $ids 2>/dev/null || true
      wait_for no_active_jobs || log "jobs still active after ${TIMEOUT}s: killing their steps"
    fi
    stepds=$(our_stepds)
    log "scontrol shutdown"
    scontrol shutdown >/dev/null 2>&1 || true
  else
    stepds=$(our_stepds)
  fi
  stop_pidfile "$RUN/slurmctld.pid"
  for file in "$RUN"/slurmd.*.pid; do
    stop_pidfile "$file"
  done
  for pid in $stepds $(our_stepds); do
    log "killing leftover slurmstepd $pid"
    kill -KILL "$pid" 2>/dev/null || true
  done
  stop_pidfile "$RUN/munged.pid"
  choose_socket_dir
  if [[ $SOCKET_DIR != "$RUN" && -d $SOCKET_DIR ]]; then
    rm -f "$SOCKET_DIR"/munge.socket*
    rmdir --ignore-fail-on-non-empty "$SOCKET_DIR"
  fi
  log "down"
}

cmd_status() {
  export SLURM_CONF=$CONF
  local file name up=1
  for file in "$RUN/munged.pid" "$RUN/slurmctld.pid" $(slurmd_pidfiles); do
    name=$(basename "$file" .pid)
    if pid_alive "$file"; then
      log "$name running (pid $(<"$file"))"
    else
      log "$name not running"
      up=0
    fi
  done
  if ((up)) && nodes_idle; then
    sinfo >&2
    printf 'export SLURM_CONF=%q\n' "$CONF"
    return 0
  fi
  return 3
}

main() {
  (($# >= 1 && $# <= 2)) || usage
  local action=$1
  set_paths "${2:-./.slurm}"
  case $action in
    up) check_binaries; cmd_up ;;
    down) check_binaries; cmd_down ;;
    status) check_binaries; cmd_status ;;
    *) usage ;;
  esac
}

main "$@"
