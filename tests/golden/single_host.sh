#!/usr/bin/env bash
#SBATCH --job-name=lyricgen-clean
#SBATCH --cpus-per-task=1
#SBATCH --mem=2G
#SBATCH --time=00:30:00
#SBATCH --nodes=1
#
# jobctl script for job clean (kind clean, 1 task(s)),
# rendered by jobs/render.py. Runs under sbatch or plain bash; parameters live in config.json
# (apptainer binds name their paths). Status: $JOB_DIR/status/$TASK.json (format:
# jobs/render.py docstring). Logs: sbatch --output/--error on jobctl's command line.
set -euo pipefail

export PYTHONUNBUFFERED=1

JOB_DIR=/srv/lyricgen/runs/20240101-000000-ab12/clean
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

trap on_exit EXIT
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT
trap 'on_signal USR1' USR1
write_status RUNNING "" ""

cd /srv/lyricgen
cmd=(
  /srv/lyricgen/.venv/bin/python
  -m
  lyricgen
  clean
  --config
  /srv/lyricgen/runs/20240101-000000-ab12/clean/config.json
)
# In the background so that the signal traps run while lyricgen works; `wait` returns its
# exit status, and set -e hands a failure to the EXIT trap.
"${cmd[@]}" --task "$TASK" &
CHILD=$!
wait "$CHILD"
