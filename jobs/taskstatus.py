"""The status file of one task, `JOB_DIR/status/<TASK>.json`: its schema, defined here once.

Who writes it: job.sh (templates/_status.sh.j2, its `write_status`, which prints exactly
STATUS_KEYS in this order: jobs.render hands them to the template) at start and at exit, and
jobctl (`write_task_status`) for a task that job.sh did not or could not record: PENDING
before a local start, CANCELLED for dependency failures and cancellations, FAILED when bash
could not start. Who reads it: the executors (`jobctl status`), the cache (a job is complete
when every task's file says COMPLETED), the resume of killed runs and the run report
(jobs.runreport). The file is the script's own record, which outlives SLURM's memory of the
job. Replaced atomically (temp file + rename) every time. One JSON object, always with
exactly these keys:

    {"schema": 3, "task": 0, "state": "COMPLETED", "exit_code": 0, "signal": null,
     "reason": null, "requeues": 0, "host": "node01", "slurm_job_id": 1234,
     "slurm_array_job_id": null, "pid": 4242, "started": 1700000000, "finished": 1700000093,
     "wall_s": 92.871, "cpu_user_s": 170.02, "cpu_sys_s": 3.51,
     "peak_rss_bytes": 1234567168, "peak_rss_source": "rusage", "gpu_peak_bytes": null}

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
- Resources used (schema 3; null while RUNNING, in jobctl's files and where unknown), as
  job.sh measured this attempt: wall_s, the script's wall-clock seconds; cpu_user_s /
  cpu_sys_s, user and system CPU seconds of every process of the task that was waited for
  (bash `times`: lyricgen, torchrun and its workers); peak_rss_bytes, the peak resident
  memory, measured by jobs/accounting.py, with peak_rss_source saying how: "cgroup-v2" /
  "cgroup-v1" (the SLURM job's cgroup memory.peak / memory.max_usage_in_bytes: the whole job
  on this node, page cache included, what --mem is enforced against) or "rusage" (the
  largest resident set of any one process of the tree: a sum over parallel workers would be
  larger); gpu_peak_bytes, the largest `torch.cuda.max_memory_allocated` any process of the
  task reported (lyricgen.gpu_usage; null when no CUDA was used). A multi-node job measures
  the node its script runs on. Schema 2 files (no such keys) read as unknown (`TaskUsage`).

A script killed with SIGKILL (scancel after KillWait, node failure, SLURM's memory
enforcement) leaves state RUNNING and no usage: the executor must then trust SLURM or notice
the process is gone. A requeued script moves its own REQUEUED record to status/history/
before it starts again, as `archive_task_status` does before a resubmission, so every
attempt stays on record.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.state import atomic_write_json, read_json

STATUS_SCHEMA = 3
USAGE_KEYS = ("wall_s", "cpu_user_s", "cpu_sys_s", "peak_rss_bytes", "peak_rss_source",
              "gpu_peak_bytes")
STATUS_KEYS = ("schema", "task", "state", "exit_code", "signal", "reason", "requeues", "host",
               "slurm_job_id", "slurm_array_job_id", "pid", "started", "finished", *USAGE_KEYS)
# jobs/accounting.py's ways of measuring peak_rss_bytes (the template accepts only these).
PEAK_SOURCES = ("cgroup-v2", "cgroup-v1", "rusage")
HISTORY_DIR = "history"


@dataclass(frozen=True)
class TaskUsage:
    """What one attempt of a task used, from its status file (module docstring); None where
    the file does not say (still running, schema 2, a foreign value)."""

    started: int | None = None
    finished: int | None = None
    wall_s: float | None = None
    cpu_user_s: float | None = None
    cpu_sys_s: float | None = None
    peak_rss_bytes: int | None = None
    peak_rss_source: str | None = None
    gpu_peak_bytes: int | None = None

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> TaskUsage:
        def number(key: str) -> Any:
            value = status.get(key)
            ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
            return value if ok else None

        source = status.get("peak_rss_source")
        return cls(started=number("started"), finished=number("finished"),
                   wall_s=number("wall_s"), cpu_user_s=number("cpu_user_s"),
                   cpu_sys_s=number("cpu_sys_s"), peak_rss_bytes=number("peak_rss_bytes"),
                   peak_rss_source=source if source in PEAK_SOURCES else None,
                   gpu_peak_bytes=number("gpu_peak_bytes"))

    def elapsed(self, now: float | None = None) -> float | None:
        """Wall seconds of the attempt: wall_s, else finished - started (schema 2); for a
        task still running pass `now`: now - started."""
        if self.wall_s is not None:
            return self.wall_s
        if self.started is not None and self.finished is not None:
            return max(0, self.finished - self.started)
        if self.started is not None and now is not None:
            return max(0.0, now - self.started)
        return None

    @property
    def cpu_s(self) -> float | None:
        """User + system CPU seconds, None when either is unknown."""
        if self.cpu_user_s is None or self.cpu_sys_s is None:
            return None
        return self.cpu_user_s + self.cpu_sys_s


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
              "finished": None if state == "PENDING" else now,
              **dict.fromkeys(USAGE_KEYS)}
    atomic_write_json(status_path(job_dir, task), {key: values[key] for key in STATUS_KEYS})


def archive_task_status(job_dir: Path, task: int) -> None:
    """Move a task's status file to status/history/ before the task runs again, so that a
    stale FAILED never hides the new attempt."""
    current = status_path(job_dir, task)
    if not current.exists():
        return
    history = current.parent / HISTORY_DIR
    history.mkdir(parents=True, exist_ok=True)
    attempt = len(list(history.glob(f"{task}.*.json"))) + 1
    os.replace(current, history / f"{task}.{attempt}.json")


def task_attempts(job_dir: Path, task: int) -> list[dict[str, Any]]:
    """The task's earlier attempts, oldest first: the status files that
    `archive_task_status` (a resubmission) and job.sh (a SLURM requeue) moved to
    status/history/ (torn or foreign files are left out)."""
    history = Path(job_dir) / "status" / HISTORY_DIR
    numbered = []
    for path in history.glob(f"{task}.*.json"):
        attempt = path.name.split(".")[1]
        status = read_json(path)
        if attempt.isdigit() and isinstance(status, dict) and "state" in status:
            numbered.append((int(attempt), status))
    return [status for _, status in sorted(numbered, key=lambda item: item[0])]
