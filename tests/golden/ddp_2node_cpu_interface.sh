#!/usr/bin/env bash
#SBATCH --job-name=lyricgen-train
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --time=04:00:00
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@300
#
# jobctl script for job train (kind train-rnn, 1 task(s)),
# rendered by jobs/render.py. Runs under sbatch or plain bash; parameters live in config.json
# (apptainer binds name their paths). Status: $JOB_DIR/status/$TASK.json (format:
# jobs/render.py docstring). Logs: sbatch --output/--error on jobctl's command line.
set -euo pipefail

export PYTHONUNBUFFERED=1
export GLOO_SOCKET_IFNAME=ib0
export NCCL_SOCKET_IFNAME=ib0

JOB_DIR=/srv/lyricgen/runs/20240101-000000-ab12/train
TASK=0

STATUS_DIR="$JOB_DIR/status"
mkdir -p "$STATUS_DIR"
printf -v STARTED '%(%s)T' -1
CHILD=""
FINAL=0

json_int() {  # the argument if it is a non-negative integer, else null
  if [[ "$1" =~ ^[0-9]+$ ]]; then printf '%s' "$1"; else printf 'null'; fi
}

json_text() {  # the argument as a JSON string of safe characters only (others dropped), or null
  local text="${1//$'\n'/ }"
  text="${text//[^A-Za-z0-9 ._:,;()=+-]/}"
  if [[ -n "$text" ]]; then printf '"%s"' "$text"; else printf 'null'; fi
}

# write_status STATE EXIT_CODE SIGNAL [REASON]: atomically replace status/$TASK.json. One
# local variable per key of the schema (jobs/taskstatus.py) holds that key's JSON value.
# shellcheck disable=SC2034  # the values are read through ${!key}
write_status() {
  local schema=2 task="$TASK" state="\"$1\"" exit_code signal=null reason requeues \
    host=null slurm_job_id slurm_array_job_id pid="$$" started="$STARTED" finished=null
  local key json="" tmp="$STATUS_DIR/.$TASK.json.$$"
  exit_code=$(json_int "$2")
  if [[ -n "$3" ]]; then signal="\"$3\""; fi
  reason=$(json_text "${4:-}")
  requeues=$(json_int "${SLURM_RESTART_COUNT:-0}")
  if [[ "${HOSTNAME:-}" =~ ^[A-Za-z0-9._-]+$ ]]; then host="\"$HOSTNAME\""; fi
  slurm_job_id=$(json_int "${SLURM_JOB_ID:-}")
  slurm_array_job_id=$(json_int "${SLURM_ARRAY_JOB_ID:-}")
  if [[ "$1" != RUNNING ]]; then printf -v finished '%(%s)T' -1; fi
  for key in schema task state exit_code signal reason requeues host slurm_job_id slurm_array_job_id pid started finished; do
    json+="${json:+, }\"$key\": ${!key}"
  done
  printf '%s\n' "{$json}" >"$tmp"
  mv -f "$tmp" "$STATUS_DIR/$TASK.json"
}

on_exit() {
  local code=$?
  if (( FINAL == 0 )); then
    if (( code == EX_PREEMPTED )); then
      preempted "$code" "" "lyricgen stopped on a signal and saved a checkpoint"
    fi
    if (( code == 0 )); then write_status COMPLETED 0 ""; else write_status FAILED "$code" ""; fi
  fi
}

on_signal() {  # SIGNAL_NAME: stop lyricgen, record CANCELLED, exit 128+N
  local code
  trap '' TERM INT USR1
  code=$((128 + $(kill -l "$1")))
  if [[ -n "$CHILD" ]]; then
    kill -TERM "$CHILD" 2>/dev/null || true
    wait "$CHILD" || true
  fi
  write_status CANCELLED "$code" "$1"
  FINAL=1
  exit "$code"
}

# Preemption (kind train-rnn checkpoints): lyricgen saves a checkpoint and exits 75 on
# SIGUSR1; the job then requeues itself and resumes from that checkpoint.
EX_PREEMPTED=75

# preempted EXIT_CODE SIGNAL WHY: under SLURM `scontrol requeue` this job (status REQUEUED),
# else record PREEMPTED; exit EXIT_CODE. Signals are ignored from here on: SLURM sends
# SIGTERM to the whole job as soon as it accepts the requeue.
preempted() {
  local said
  trap '' TERM INT USR1
  FINAL=1
  if [[ "${SLURM_JOB_ID:-}" =~ ^[0-9]+$ ]]; then
    if said=$(scontrol requeue "$SLURM_JOB_ID" 2>&1); then
      write_status REQUEUED "$1" "$2" "$3; requeued (scontrol requeue)"
    else
      write_status PREEMPTED "$1" "$2" "$3; scontrol requeue failed: $said; jobctl resubmit --failed resumes it"
    fi
  else
    write_status PREEMPTED "$1" "$2" "$3; not under SLURM, so not requeued: jobctl resubmit --failed resumes it"
  fi
  exit "$1"
}

on_warning() {  # SIGUSR1: forward it to lyricgen, wait for its checkpoint, then requeue
  local code=0
  trap '' USR1
  if [[ -z "$CHILD" ]]; then
    preempted "$EX_PREEMPTED" USR1 "SIGUSR1 before lyricgen started"
  fi
  kill -USR1 "$CHILD" 2>/dev/null || true
  wait "$CHILD" || code=$?
  case "$code" in
    0 | 2) exit "$code" ;;  # finished in time, or bad input (a rerun fails the same way)
    "$EX_PREEMPTED") preempted "$code" USR1 "stopped by SIGUSR1, checkpoint saved" ;;
    *) preempted "$code" USR1 "stopped by SIGUSR1 (exit code $code), resumes from its newest checkpoint" ;;
  esac
}

trap on_exit EXIT
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT
trap on_warning USR1
write_status RUNNING "" ""

# 2 nodes: srun starts one torchrun per node (jobs/runtime.py). They meet at this
# node (SLURM runs the batch script on the allocation's first node), at its ADDRESS: node
# names are never looked up, as they often do not resolve. Port 20000 + job id mod 10000 (no
# clash on a shared node unless two job ids differ by a multiple of 10000).
if [[ "${SLURM_JOB_NUM_NODES:-}" != 2 ]]; then
  echo "job.sh: job train needs an sbatch allocation of 2 nodes (jobctl submit with an executor: slurm profile); plain bash runs one machine only" >&2
  exit 2
fi

# node_address: the address other nodes reach this node at, on stdout: the first IPv4 (else
# global IPv6) address of interface ib0 (the profile's network_interface).
# Else one line on stderr, status 1.
node_address() {
  local listing found
  if ! listing=$(ip -o addr show dev ib0 2>&1); then
    echo "job.sh: node ${SLURMD_NODENAME:-?}: no address for the torch rendezvous: ip -o addr show dev ib0: ${listing//$'\n'/ }" >&2
    return 1
  fi
  found=$(awk '$3 == "inet" {sub(/\/.*/, "", $4); print $4; exit}' <<<"$listing")
  if [[ -z "$found" ]]; then
    found=$(awk '$3 == "inet6" && / scope global / {sub(/\/.*/, "", $4); print $4; exit}' <<<"$listing")
  fi
  if [[ -z "$found" ]]; then
    echo "job.sh: node ${SLURMD_NODENAME:-?}: no address for the torch rendezvous: interface ib0 (profile network_interface) has no IPv4 or global IPv6 address" >&2
    return 1
  fi
  printf '%s\n' "$found"
}

# address_interface ADDRESS: the name of the interface that holds ADDRESS, if any.
address_interface() {
  ip -o addr show 2>/dev/null | awk -v addr="$1" '{split($4, a, "/"); if (a[1] == addr) {sub(/@.*/, "", $2); print $2; found = 1; exit}} END {exit !found}'
}

# node_env COMMAND...: run by srun on every node: this node's torchrun settings (its
# --local-addr, and is_host true on this batch node only), gloo's interface unless set,
# then exec COMMAND.
node_env() {
  local addr iface is_host=false
  addr=$(node_address) || exit 1
  if [[ "${SLURMD_NODENAME:-}" == "$RDZV_NODE" ]]; then is_host=true; fi
  export PET_LOCAL_ADDR="$addr" PET_RDZV_CONF="is_host=$is_host"
  if [[ -z "${GLOO_SOCKET_IFNAME:-}" ]] && iface=$(address_interface "$addr"); then
    export GLOO_SOCKET_IFNAME="$iface"
  fi
  exec "$@"
}
export -f node_address address_interface node_env
export RDZV_NODE="${SLURMD_NODENAME:-}"
RDZV_HOST=$(node_address) || exit 1
if [[ "$RDZV_HOST" == *:* ]]; then RDZV_HOST="[$RDZV_HOST]"; fi
RDZV_PORT=$((20000 + SLURM_JOB_ID % 10000))
RDZV_ENDPOINT="$RDZV_HOST:$RDZV_PORT"
echo "job.sh: rendezvous at $RDZV_HOST:$RDZV_PORT (node $RDZV_NODE) for nodes ${SLURM_JOB_NODELIST:-?}" >&2

cd /srv/lyricgen
# shellcheck disable=SC2016  # single-quoted on purpose: a literal value
cmd=(
  srun
  --nodes=2
  --ntasks-per-node=1
  --cpus-per-task=4
  --kill-on-bad-exit=1
  bash
  -c
  'node_env "$@"'
  node-env
  /opt/venv/bin/python
  -m
  torch.distributed.run
  --nnodes=2
  --nproc-per-node=1
  '--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1'
  --shutdown-timeout=300
  --rdzv-backend=c10d
  --rdzv-id="${SLURM_JOB_ID}"
  --rdzv-endpoint="${RDZV_ENDPOINT}"
  -m
  lyricgen
  train-rnn
  --config
  /srv/lyricgen/runs/20240101-000000-ab12/train/config.json
)
# In the background so that the signal traps run while lyricgen works; `wait` returns its
# exit status, and set -e hands a failure to the EXIT trap.
"${cmd[@]}" --task "$TASK" &
CHILD=$!
wait "$CHILD"
