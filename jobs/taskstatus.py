"""The status file of one task, `JOB_DIR/status/<TASK>.json`: its schema, defined here once.

Who writes it: job.sh (templates/_status.sh.j2, its `write_status`, which prints exactly
STATUS_KEYS in this order: jobs.render hands them to the template) at start and at exit, and
jobctl (`write_task_status`) for a task that job.sh did not or could not record: PENDING
before a local start, CANCELLED for dependency failures and cancellations, FAILED when bash
could not start. Who reads it: the executors (`jobctl status`), the cache (a job is complete
when every task's file says COMPLETED) and the resume of killed runs. The file is the
script's own record, which outlives SLURM's memory of the job. Replaced atomically (temp
file + rename) every time. One JSON object, always with exactly these keys:

    {"schema": 2, "task": 0, "state": "RUNNING", "exit_code": null, "signal": null,
     "reason": null, "requeues": 0, "host": "node01", "slurm_job_id": 1234,
     "slurm_array_job_id": null, "pid": 4242, "started": 1700000000, "finished": null}

- state: RUNNING (written at start), COMPLETED (exit 0), FAILED (any other exit, including
  failures before lyricgen starts and a child killed by the kernel, e.g. 137 for OOM),
  CANCELLED (the script got SIGTERM, SIGINT, or SIGUSR1 for a kind that does not
  checkpoint: it sends SIGTERM to lyricgen, waits for it, and exits 128+signal number), and
  for kinds that checkpoint (kindspec Kind.checkpoints) REQUEUED or PREEMPTED (see
  jobs/render.py); jobctl's own files may also say PENDING.
- exit_code: the script's exit status (lyricgen's, or 128+N when cancelled); null while
  RUNNING. signal: "TERM", "INT" or "USR1" when a signal to the script ended it, else null.
- reason: one line of [A-Za-z0-9 ._:,;()=+-] saying why a preempted task stopped and what
  happens next; null otherwise (jobctl's files: why it wrote them). requeues:
  $SLURM_RESTART_COUNT (times SLURM requeued the job, by itself or by the script; 0 when
  unset), so a requeued task that completes says so.
- host: $HOSTNAME when it matches [A-Za-z0-9._-]+, else null. slurm_job_id /
  slurm_array_job_id: integers from $SLURM_JOB_ID / $SLURM_ARRAY_JOB_ID, null when unset
  (local runs). pid: the script's process id (null in jobctl's files). started / finished:
  integer Unix seconds; finished is null while RUNNING.
A script killed with SIGKILL (scancel after KillWait, node failure) leaves state RUNNING:
the executor must then trust SLURM or notice the process is gone.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobs.state import atomic_write_json, read_json

STATUS_SCHEMA = 2
STATUS_KEYS = ("schema", "task", "state", "exit_code", "signal", "reason", "requeues", "host",
               "slurm_job_id", "slurm_array_job_id", "pid", "started", "finished")


def status_path(job_dir: Path, task: int) -> Path:
    return Path(job_dir) / "status" / f"{task}.json"


def read_task_status(job_dir: Path, task: int) -> dict[str, Any] | None:
    """The task's status file, or None when it is missing, torn or has no state."""
    status = read_json(status_path(job_dir, task))
    return status if isinstance(status, dict) and "state" in status else None


def job_task_status(job: Mapping[str, Any], task: int) -> dict[str, Any] | None:
    """The status file of `task` of a job as run.json records it (None for a skipped job,
    which has no job dir)."""
    directory = job.get("job_dir")
    return None if directory is None else read_task_status(Path(directory), task)


def write_task_status(job_dir: Path, task: int, state: str, reason: str,
                      exit_code: int | None = None) -> None:
    """A status file for a task that job.sh did not (or could not) write itself (see the
    module docstring): same keys as job.sh's own."""
    now = int(time.time())
    values = {"schema": STATUS_SCHEMA, "task": task, "state": state, "exit_code": exit_code,
              "signal": None, "reason": reason, "requeues": 0, "host": socket.gethostname(),
              "slurm_job_id": None, "slurm_array_job_id": None, "pid": None, "started": None,
              "finished": None if state == "PENDING" else now}
    atomic_write_json(status_path(job_dir, task), {key: values[key] for key in STATUS_KEYS})


def archive_task_status(job_dir: Path, task: int) -> None:
    """Move a task's status file to status/history/ before the task runs again, so that a
    stale FAILED never hides the new attempt."""
    current = status_path(job_dir, task)
    if not current.exists():
        return
    history = current.parent / "history"
    history.mkdir(parents=True, exist_ok=True)
    attempt = len(list(history.glob(f"{task}.*.json"))) + 1
    os.replace(current, history / f"{task}.{attempt}.json")
