#!/usr/bin/env bash
#SBATCH --job-name=lyricgen-finetune
#SBATCH --cpus-per-task=16
#SBATCH --mem=128G
#SBATCH --time=24:00:00
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --partition=gpu
#SBATCH --gres=gpu:titanrtx:4
#SBATCH --account=lab-nlp
#SBATCH --qos=normal
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@300
#
# jobctl script for job finetune (kind finetune-llama, 1 task(s)),
# rendered by jobs/render.py. Runs under sbatch or plain bash; parameters live in config.json
# (apptainer binds name their paths). Status: $JOB_DIR/status/$TASK.json (format:
# jobs/render.py docstring). Logs: sbatch --output/--error on jobctl's command line.
set -euo pipefail

export PYTHONUNBUFFERED=1
export HF_HOME=/scratch/lab/hf-cache
export TORCHINDUCTOR_CACHE_DIR=/scratch/lab/hf-cache/torchinductor
export XDG_CACHE_HOME=/scratch/lab/hf-cache/xdg
export MPLCONFIGDIR=/scratch/lab/hf-cache/matplotlib
export OMP_NUM_THREADS=4
export TOKENIZERS_PARALLELISM=false
# Forwarded by name through apptainer --cleanenv, only when set.
for name in CUDA_VISIBLE_DEVICES SLURM_JOB_ID SLURM_ARRAY_JOB_ID SLURM_ARRAY_TASK_ID SLURM_CPUS_PER_TASK PYTHONUNBUFFERED TOKENIZERS_PARALLELISM HF_HOME TORCHINDUCTOR_CACHE_DIR XDG_CACHE_HOME MPLCONFIGDIR OMP_NUM_THREADS GENIUS_ACCESS_TOKEN HF_TOKEN; do
  if [[ -n "${!name+set}" ]]; then
    export "APPTAINERENV_${name}=${!name}"
  fi
done
set +u  # module scripts often read unset variables
module load apptainer/1.3
module load cuda/12.4
set -u

JOB_DIR=/scratch/lab/runs/20240101-000000-ab12/finetune
TASK=0

STATUS_DIR="$JOB_DIR/status"
mkdir -p "$STATUS_DIR"
# A requeued attempt's own record moves to status/history/ first (jobs/taskstatus.py).
if [[ -f "$STATUS_DIR/$TASK.json" && "$(<"$STATUS_DIR/$TASK.json")" == *'"state": "REQUEUED"'* ]]; then
  attempt=1
  while [[ -e "$STATUS_DIR/history/$TASK.$attempt.json" ]]; do attempt=$((attempt + 1)); done
  mkdir -p "$STATUS_DIR/history"
  mv -f "$STATUS_DIR/$TASK.json" "$STATUS_DIR/history/$TASK.$attempt.json"
fi
now_us() {  # microseconds since the epoch (bash 5's EPOCHREALTIME; whole seconds before)
  local now="${EPOCHREALTIME:-}"
  if [[ -n "$now" ]]; then printf '%s' "${now//[!0-9]/}"; else printf '%(%s)T000000' -1; fi
}
printf -v STARTED '%(%s)T' -1
STARTED_US=$(now_us)
CHILD=""
FINAL=0

# Resources used (jobs/taskstatus.py): bash `times` gives the CPU time of the waited-for
# process tree; jobs/accounting.py, when the node has a python3, runs the command and records
# its peak memory in USAGE_FILE; lyricgen writes each process's CUDA peak to
# $LYRICGEN_GPU_PEAK_FILE.<rank> (lyricgen/gpu_usage.py).
USAGE_FILE="$STATUS_DIR/.usage.$TASK"
export LYRICGEN_GPU_PEAK_FILE="$STATUS_DIR/.gpu-peak.$TASK"
export APPTAINERENV_LYRICGEN_GPU_PEAK_FILE="$LYRICGEN_GPU_PEAK_FILE"
rm -f "$USAGE_FILE" "$LYRICGEN_GPU_PEAK_FILE".*
ACCOUNTING_SCRIPT=/home/ana/lyricgen/jobs/accounting.py
ACCOUNTING=()
if PYTHON3=$(command -v python3) && [[ -f "$ACCOUNTING_SCRIPT" ]]; then
  ACCOUNTING=("$PYTHON3" -I -S "$ACCOUNTING_SCRIPT" "$USAGE_FILE" --)
fi

json_int() {  # the argument if it is a non-negative integer, else null
  if [[ "$1" =~ ^[0-9]+$ ]]; then printf '%s' "$1"; else printf 'null'; fi
}

json_text() {  # the argument as a JSON string of safe characters only (others dropped), or null
  local text="${1//$'\n'/ }"
  text="${text//[^A-Za-z0-9 ._:,;()=+-]/}"
  if [[ -n "$text" ]]; then printf '"%s"' "$text"; else printf 'null'; fi
}

json_seconds() {  # MILLISECONDS (a non-negative integer) as a JSON number of seconds
  printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000))
}

# usage_values: set the usage keys of write_status (its locals, by dynamic scope) for this
# attempt so far. Every command here must succeed: it runs in the EXIT trap under set -e.
usage_values() {
  local key value user="" sys="" part="^([0-9]+)m([0-9]+)[.,]([0-9]{3})s$"
  wall_s=$(json_seconds $(( ($(now_us) - STARTED_US) / 1000 )))
  times >"$STATUS_DIR/.times.$TASK" || true  # a builtin: $(times) would see a new subshell
  { read -r _ && read -r user sys; } <"$STATUS_DIR/.times.$TASK" || true
  rm -f "$STATUS_DIR/.times.$TASK"
  if [[ "$user" =~ $part ]]; then
    cpu_user_s=$(json_seconds $(( (10#${BASH_REMATCH[1]} * 60 + 10#${BASH_REMATCH[2]}) * 1000 + 10#${BASH_REMATCH[3]} )))
  fi
  if [[ "$sys" =~ $part ]]; then
    cpu_sys_s=$(json_seconds $(( (10#${BASH_REMATCH[1]} * 60 + 10#${BASH_REMATCH[2]}) * 1000 + 10#${BASH_REMATCH[3]} )))
  fi
  if [[ -f "$USAGE_FILE" ]]; then
    while read -r key value; do
      case "$key" in
        peak_rss_bytes) peak_rss_bytes=$(json_int "$value") ;;
        peak_rss_source)
          if [[ "$value" =~ ^(cgroup-v2|cgroup-v1|rusage)$ ]]; then peak_rss_source="\"$value\""; fi ;;
      esac
    done <"$USAGE_FILE" || true
  fi
  for key in "$LYRICGEN_GPU_PEAK_FILE".*; do
    value=""
    if [[ -f "$key" ]]; then read -r value <"$key" || true; fi
    if [[ "$value" =~ ^[0-9]+$ ]] && [[ "$gpu_peak_bytes" == null || "$value" -gt "$gpu_peak_bytes" ]]; then
      gpu_peak_bytes="$value"
    fi
  done
}

# write_status STATE EXIT_CODE SIGNAL [REASON]: atomically replace status/$TASK.json. One
# local variable per key of the schema (jobs/taskstatus.py) holds that key's JSON value.
# shellcheck disable=SC2034  # the values are read through ${!key}
write_status() {
  local schema=3 task="$TASK" state="\"$1\"" exit_code signal=null reason requeues \
    host=null slurm_job_id slurm_array_job_id pid="$$" started="$STARTED" finished=null \
    wall_s=null cpu_user_s=null cpu_sys_s=null peak_rss_bytes=null peak_rss_source=null \
    gpu_peak_bytes=null
  local key json="" tmp="$STATUS_DIR/.$TASK.json.$$"
  exit_code=$(json_int "$2")
  if [[ -n "$3" ]]; then signal="\"$3\""; fi
  reason=$(json_text "${4:-}")
  requeues=$(json_int "${SLURM_RESTART_COUNT:-0}")
  if [[ "${HOSTNAME:-}" =~ ^[A-Za-z0-9._-]+$ ]]; then host="\"$HOSTNAME\""; fi
  slurm_job_id=$(json_int "${SLURM_JOB_ID:-}")
  slurm_array_job_id=$(json_int "${SLURM_ARRAY_JOB_ID:-}")
  if [[ "$1" != RUNNING ]]; then
    printf -v finished '%(%s)T' -1
    usage_values
  fi
  for key in schema task state exit_code signal reason requeues host slurm_job_id slurm_array_job_id pid started finished wall_s cpu_user_s cpu_sys_s peak_rss_bytes peak_rss_source gpu_peak_bytes; do
    json+="${json:+, }\"$key\": ${!key}"
  done
  printf '%s\n' "{$json}" >"$tmp"
  mv -f "$tmp" "$STATUS_DIR/$TASK.json"
  if [[ "$1" != RUNNING ]]; then rm -f "$USAGE_FILE" "$LYRICGEN_GPU_PEAK_FILE".*; fi
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

# Preemption (kind finetune-llama checkpoints): lyricgen saves a checkpoint and exits 75 on
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
  echo "job.sh: job finetune needs an sbatch allocation of 2 nodes (jobctl submit with an executor: slurm profile); plain bash runs one machine only" >&2
  exit 2
fi

# node_address: the address other nodes reach this node at, on stdout: its NodeAddr in SLURM
# (scontrol show node), resolved when it is a name. Else one line on stderr, status 1.
node_address() {
  local record addr found
  if ! record=$(scontrol -o show node "${SLURMD_NODENAME:-}" 2>&1) ||
    [[ ! "$record" =~ (^|[[:space:]])NodeAddr=([^[:space:]]+) ]]; then
    echo "job.sh: node ${SLURMD_NODENAME:-?}: no address for the torch rendezvous: scontrol show node gave no NodeAddr (${record//$'\n'/ }); set network_interface in the profile" >&2
    return 1
  fi
  addr="${BASH_REMATCH[2]}"
  if [[ "$addr" =~ ^[0-9.]+$ || "$addr" == *:* ]]; then
    printf '%s\n' "$addr"
    return 0
  fi
  found=$(getent hosts "$addr" | awk 'NR == 1 {print $1}')
  if [[ -z "$found" ]]; then
    echo "job.sh: node ${SLURMD_NODENAME:-?}: no address for the torch rendezvous: its NodeAddr '$addr' (scontrol show node) does not resolve; set network_interface in the profile to use an interface's address" >&2
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
  # srun copied this batch node's APPTAINERENV_* here: forward this node's own values.
  for name in PET_LOCAL_ADDR PET_RDZV_CONF GLOO_SOCKET_IFNAME CUDA_VISIBLE_DEVICES; do
    if [[ -n "${!name+set}" ]]; then
      export "APPTAINERENV_${name}=${!name}"
    else
      unset "APPTAINERENV_${name}"
    fi
  done
  exec "$@"
}
export -f node_address address_interface node_env
export RDZV_NODE="${SLURMD_NODENAME:-}"
RDZV_HOST=$(node_address) || exit 1
if [[ "$RDZV_HOST" == *:* ]]; then RDZV_HOST="[$RDZV_HOST]"; fi
RDZV_PORT=$((20000 + SLURM_JOB_ID % 10000))
RDZV_ENDPOINT="$RDZV_HOST:$RDZV_PORT"
echo "job.sh: rendezvous at $RDZV_HOST:$RDZV_PORT (node $RDZV_NODE) for nodes ${SLURM_JOB_NODELIST:-?}" >&2

cd /home/ana/lyricgen
# shellcheck disable=SC2016  # single-quoted on purpose: a literal value
cmd=(
  srun
  --nodes=2
  --ntasks-per-node=1
  --cpus-per-task=16
  --kill-on-bad-exit=1
  bash
  -c
  'node_env "$@"'
  node-env
  apptainer
  exec
  --nv
  --cleanenv
  --pwd
  /home/ana/lyricgen
  --bind
  /home/ana/lyricgen:/home/ana/lyricgen:rw
  --bind
  /scratch/lab/hf-cache:/scratch/lab/hf-cache:rw
  --bind
  /scratch/lab/runs/20240101-000000-ab12:/scratch/lab/runs/20240101-000000-ab12:rw
  --bind
  /data/corpora:/data:ro
  /shared/images/lyricgen.sif
  python3
  -m
  torch.distributed.run
  --nnodes=2
  --nproc-per-node=4
  '--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1'
  --shutdown-timeout=300
  --rdzv-backend=c10d
  --rdzv-id="${SLURM_JOB_ID}"
  --rdzv-endpoint="${RDZV_ENDPOINT}"
  -m
  lyricgen
  finetune-llama
  --config
  /scratch/lab/runs/20240101-000000-ab12/finetune/config.json
)
# In the background so that the signal traps run while lyricgen works; `wait` returns its
# exit status, and set -e hands a failure to the EXIT trap.
"${ACCOUNTING[@]}" "${cmd[@]}" --task "$TASK" &
CHILD=$!
wait "$CHILD"
