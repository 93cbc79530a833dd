"""The jobs and tasks of a run as the report shows them: state and reason (the same as
`jobctl status`, jobs.executors.collect_status), what each task used against what it asked,
every attempt on one clock (the timeline), each job's layer in the DAG of needs, and the log
tail of every task that did not complete."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.executors import (
    ACTIVE,
    FAILURES,
    SKIPPED,
    JobState,
    TaskState,
    collect_status,
    latest_submissions,
    read_log_tail,
    task_log_path,
)
from jobs.resources import mem_bytes
from jobs.state import Run
from jobs.taskstatus import TaskUsage, job_task_status, task_attempts

LOG_LINES = 40
LOG_BYTES = 16 * 1024


@dataclass(frozen=True)
class Attempt:
    """One run of a task's script: an earlier one (status/history/, requeued or resubmitted)
    or the current one; times in Unix seconds, None where unknown (not started, running)."""

    started: float | None
    finished: float | None
    state: str
    current: bool


@dataclass(frozen=True)
class TaskRow:
    name: str  # `job`, or `job[3]` for task 3 of an array
    job: str
    kind: str
    task: int
    label: str  # the task's matrix values ("arch=gru level=char"), "" for a single task
    state: str
    exit_code: int | None
    reason: str | None
    job_id: str | None
    host: str | None
    usage: TaskUsage | None
    mem: str | None  # --mem asked (latest submission)
    cpus: int | None  # asked
    queued: float | None  # when its latest submission was made
    attempts: tuple[Attempt, ...]
    log_tail: str | None  # last LOG_LINES lines, for a task that did not complete
    log_path: str | None

    @property
    def mem_bytes(self) -> int | None:
        return mem_bytes(self.mem) if self.mem else None

    @property
    def cpu_efficiency(self) -> float | None:
        """CPU seconds / (wall seconds x cpus asked): 1.0 keeps every asked core busy."""
        usage = self.usage
        if usage is None or usage.cpu_s is None or not usage.wall_s or not self.cpus:
            return None
        return usage.cpu_s / (usage.wall_s * self.cpus)


@dataclass(frozen=True)
class JobRow:
    name: str
    kind: str
    state: str
    reason: str | None
    needs: tuple[str, ...]
    tasks: int
    layer: int  # 0 for jobs without needs, else 1 + the deepest need's
    cached_from: str | None  # "RUN/JOB" of a skipped job
    out_dir: str


@dataclass(frozen=True)
class RunView:
    run_id: str
    run_dir: Path
    record: Mapping[str, Any]
    jobs: tuple[JobRow, ...]
    tasks: tuple[TaskRow, ...]
    start: float  # the clock of the timeline: run creation ...
    end: float  # ... to the last end (now while something is active)
    active: bool
    generated: float


def run_view(run: Run, now: float | None = None) -> RunView:
    """Everything the report shows about jobs and tasks (reads only)."""
    now = time.time() if now is None else now
    record = run.read()
    states = collect_status(run)
    layers = _layers(record)
    jobs = tuple(_job_row(record, state, layers[state.name]) for state in states)
    tasks = tuple(row for state in states for row in _task_rows(record, state))
    active = any(state.state in ACTIVE for state in states)
    times = [t for row in tasks for a in row.attempts for t in (a.started, a.finished) if t]
    start = min([float(record.get("created", now)), *times])
    end = now if active or not times else max(times)
    return RunView(run.id, run.dir, record, jobs, tasks, start, max(end, start + 1.0), active,
                   now)


def _layers(record: Mapping[str, Any]) -> dict[str, int]:
    """Longest path from a job without needs (run.json's order lists needs first)."""
    layers: dict[str, int] = {}
    for name in record["order"]:
        needs = record["jobs"][name]["needs"]
        layers[name] = 1 + max(layers[n] for n in needs) if needs else 0
    return layers


def _job_row(record: Mapping[str, Any], state: JobState, layer: int) -> JobRow:
    job = record["jobs"][state.name]
    origin = job.get("cached_from")
    return JobRow(state.name, state.kind, state.state, state.reason, tuple(job["needs"]),
                  job["tasks"], layer, f"{origin['run']}/{origin['job']}" if origin else None,
                  job["out_dir"])


def _task_rows(record: Mapping[str, Any], state: JobState) -> list[TaskRow]:
    job = record["jobs"][state.name]
    latest = latest_submissions(job)
    rows = []
    for task in state.tasks:
        submission = latest.get(task.task) or {}
        resources = submission.get("resources") or job["spec"]["resources"]
        matrix = job["spec"]["tasks"][task.task].get("matrix") or {}
        label = " ".join(f"{k}={v}" for k, v in matrix.items())
        if not label and job["tasks"] > 1:
            label = f"shard {task.task}"
        log = None if task.state == SKIPPED else task_log_path(job, task.task)
        rows.append(TaskRow(
            name=state.name if job["tasks"] == 1 else f"{state.name}[{task.task}]",
            job=state.name, kind=state.kind, task=task.task, label=label, state=task.state,
            exit_code=task.exit_code, reason=task.reason, job_id=task.job_id,
            host=_host(job, task.task), usage=task.usage, mem=task.mem or resources["mem"],
            cpus=resources.get("cpus"),
            queued=submission.get("submitted"), attempts=_attempts(job, task),
            log_tail=_log_tail(log) if task.state in FAILURES else None,
            log_path=str(log) if log else None))
    return rows


def _host(job: Mapping[str, Any], task: int) -> str | None:
    status = job_task_status(job, task) or {}
    return status.get("host") if isinstance(status.get("host"), str) else None


def _attempts(job: Mapping[str, Any], task: TaskState) -> tuple[Attempt, ...]:
    """Archived attempts (oldest first), then the current one."""
    if not job.get("job_dir"):
        return ()
    found = [_attempt(TaskUsage.from_status(status), str(status.get("state")), False)
             for status in task_attempts(Path(job["job_dir"]), task.task)]
    current = task.usage or TaskUsage()
    return (*found, _attempt(current, task.state, True))


def _attempt(usage: TaskUsage, state: str, current: bool) -> Attempt:
    return Attempt(usage.started, usage.finished, state, current)


def _log_tail(path: Path | None) -> str | None:
    """The last LOG_LINES lines (at most LOG_BYTES) of a log, None when there is none."""
    text = read_log_tail(path, LOG_BYTES)
    lines = text.splitlines()[-LOG_LINES:] if text else []
    return "\n".join(lines) if lines else None


def task_out_dir(record: Mapping[str, Any], job: str, task: int) -> Path:
    """Where lyricgen wrote a task's outputs: the job's out dir, `out/<task>/` for a job with
    several tasks (lyricgen.context)."""
    entry = record["jobs"][job]
    out = Path(entry["out_dir"])
    return out / str(task) if entry["tasks"] > 1 else out


def rows_of(view: RunView, kinds: Sequence[str]) -> list[TaskRow]:
    """The task rows of jobs of these kinds, in run order."""
    return [row for row in view.tasks if row.kind in kinds]
