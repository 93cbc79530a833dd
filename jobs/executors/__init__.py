"""Executors hand a run's job.sh files to SLURM (`slurm`) or to bash on this machine
(`local`), and read back the state of every job and array task.

Both share this interface:

* `submit(run, selection) -> bool` starts the selected tasks ({job: [task, ...]}, jobs in
  run order; a job waits for those of its needs that are selected too, and needs outside the
  selection must already be complete). SLURM returns once everything is queued; local returns
  when everything has finished. Returns False when a task failed (local) or nothing could be
  queued.
* `task_states(run, record) -> {job: [TaskState, ...]}` for the jobs that ran in this run.
* `cancel(run, record, jobs) -> [what was cancelled]`.

`collect_status` adds what neither executor knows alone: skipped (cached) jobs, dependents of
failed jobs that never ran (CANCELLED, "dependency failed", never PENDING forever), who
cancelled a task when `jobctl cancel` did (run.json `cancellations`), and one state and one
summary reason per job. It only reads (`jobctl status` writes nothing): the local executor
indexes the jobs it completed in the cache, and the cache finds SLURM's by scanning runs.

Reasons (TaskState.reason, one short phrase; `status --json` also gives `signal`):
"exit code N", "exit code 137 (SIGKILL)" when a child died of a signal (128+N), "signal 9
(SIGKILL)" when SLURM saw the script itself killed, "signal TERM" when job.sh recorded the
signal that cancelled it, "cancelled by USER (jobctl cancel)", "cancelled before it started",
"dependency failed (JOB, ...)", "out of memory (--mem=SIZE)" or, when the use is known,
"out of memory: used 414M of --mem=100M", "time limit (LIMIT)", "preempted", "node failure",
or where a task waits: "waiting for needs", SLURM's own reason. Any other task that did not
complete although its recorded peak memory reached its --mem says so too ("exit code 137
(SIGKILL); used 4.1G of --mem=4G").

Resources: every task carries what its status file says it used (TaskState.usage,
jobs.taskstatus.TaskUsage: wall, CPU, peak memory, GPU peak) and the memory it asked for
(TaskState.mem, the --mem of its latest submission).
"""

from __future__ import annotations

import os
import signal
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from jobs.errors import UsageError
from jobs.resources import format_bytes, mem_bytes
from jobs.state import Run
from jobs.taskstatus import TaskUsage, job_task_status

PENDING = "PENDING"
RUNNING = "RUNNING"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
SKIPPED = "SKIPPED"
UNKNOWN = "UNKNOWN"
# job.sh's own state for a preempted task of a kind that checkpoints (jobs/render.py): it
# saved a checkpoint but could not be requeued (local executor): `jobctl resubmit --failed`
# resumes it. One that requeued itself records REQUEUED, and SLURM shows it PENDING.
PREEMPTED = "PREEMPTED"
ACTIVE = frozenset({PENDING, RUNNING})
# SLURM end states other than COMPLETED keep their own names (TIMEOUT says more than FAILED).
FAILURES = frozenset({FAILED, CANCELLED, "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
                      "DEADLINE", "PREEMPTED"})
DEPENDENCY_FAILED = "dependency failed"
NOT_STARTED = "cancelled before it started"
# Job state from its tasks' states: the first of these that any task has.
_JOB_STATE_ORDER = (RUNNING, PENDING, FAILED, "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                    "BOOT_FAIL", "DEADLINE", "PREEMPTED", CANCELLED, UNKNOWN, COMPLETED, SKIPPED)


# A task that ended this close to its --mem (or over it) may have failed for memory.
MEMORY_NOTE_SHARE = 0.95


@dataclass(frozen=True)
class TaskState:
    """One task: state, exit code (None when unknown), reason, scheduler job id, the signal
    that ended it (name without SIG: "TERM", "KILL"; None when it was not a signal), what its
    status file says it used, and the memory it asked for (module docstring)."""

    task: int
    state: str
    exit_code: int | None = None
    reason: str | None = None
    job_id: str | None = None
    signal: str | None = None
    usage: TaskUsage | None = None
    mem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class JobState:
    name: str
    kind: str
    state: str
    tasks: tuple[TaskState, ...]
    skipped: bool
    cached_from: dict[str, Any] | None
    job_dir: str | None
    out_dir: str
    reason: str | None = None  # the task's reason, or for arrays a count per state

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tasks": [t.to_dict() for t in self.tasks]}


class Executor(ABC):
    name: str

    @abstractmethod
    def submit(self, run: Run, selection: Mapping[str, Sequence[int]]) -> bool:
        """Start the selected tasks; see the module docstring."""

    @abstractmethod
    def task_states(self, run: Run, record: Mapping[str, Any]) -> dict[str, list[TaskState]]:
        """States of every task of every job that is not skipped."""

    @abstractmethod
    def cancel(self, run: Run, record: Mapping[str, Any], jobs: Sequence[str]) -> list[str]:
        """Cancel the active tasks of `jobs`; returns a description of each cancellation."""


def get_executor(name: str, *, parallel: int = 1) -> Executor:
    """The executor called `name` ("slurm" or "local"; `parallel` applies to local)."""
    if name == "slurm":
        from jobs.executors.slurm import SlurmExecutor
        return SlurmExecutor()
    if name == "local":
        from jobs.executors.local import LocalExecutor
        return LocalExecutor(parallel=parallel)
    raise UsageError(f"unknown executor {name!r} (slurm or local)")


def full_selection(record: Mapping[str, Any]) -> dict[str, list[int]]:
    """Every task of every job that is not skipped, in run order."""
    return {name: list(range(record["jobs"][name]["tasks"])) for name in record["order"]
            if not record["jobs"][name]["skipped"]}


def latest_submissions(job: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """task -> the last submission record that included it."""
    found: dict[int, dict[str, Any]] = {}
    for submission in job.get("submissions", []):
        for task in submission["tasks"]:
            found[task] = submission
    return found


def signal_name(number: int) -> str:
    """9 -> "KILL"; a number Python does not name -> "9"."""
    try:
        return signal.Signals(number).name.removeprefix("SIG")
    except ValueError:
        return str(number)


def exit_reason(code: int) -> str:
    """"exit code 3"; a shell's 128+N (a child killed by signal N) names the signal:
    "exit code 137 (SIGKILL)"."""
    if 128 < code <= 128 + 64:
        return f"exit code {code} (SIG{signal_name(code - 128)})"
    return f"exit code {code}"


def ended_state(status: Mapping[str, Any], task: int, job_id: str | None) -> TaskState:
    """TaskState from a status file that recorded an end (COMPLETED, FAILED, CANCELLED,
    PREEMPTED); without a recorded reason, the signal or the non-zero exit code is the
    reason. A task that SLURM requeued says how often (`requeued 1x`)."""
    code = status.get("exit_code")
    reason = status.get("reason") or None
    sig = status.get("signal") or None
    if not reason and sig:
        reason = f"signal {sig}"
    elif not reason and status["state"] == FAILED and code:
        reason = exit_reason(code)
    return TaskState(task, status["state"], code, with_requeues(reason, status.get("requeues")),
                     job_id, sig)


def memory_reason(mem: str, used: int | None) -> str:
    """Why an OUT_OF_MEMORY task ended: "out of memory (--mem=100M)", or with the memory
    it used when known: "out of memory: used 414M of --mem=100M"."""
    if used is None:
        return f"out of memory (--mem={mem})"
    return f"out of memory: used {format_bytes(used)} of --mem={mem}"


def with_requeues(reason: str | None, requeues: Any) -> str | None:
    """`reason; requeued Nx` when the task was requeued N > 0 times, else `reason`."""
    if not isinstance(requeues, int) or requeues <= 0:
        return reason
    note = f"requeued {requeues}x"
    return f"{reason}; {note}" if reason else note


def process_alive(pid: Any) -> bool:
    """Whether a process with this id exists here (a reused id counts as alive). A zombie
    does not: a job.sh whose jobctl was killed is reparented to PID 1, which in a container
    often never reaps it."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """State Z in /proc/PID/stat (Linux; elsewhere never)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def task_log_path(job: Mapping[str, Any], task: int) -> Path | None:
    """The log of the task's latest submission (logs/local-N.out, slurm-ID.out or
    slurm-ARRAYID_N.out), None when it was never submitted or its SLURM id is unknown."""
    submission = latest_submissions(job).get(task)
    if submission is None or not job.get("job_dir"):
        return None
    logs = Path(job["job_dir"]) / "logs"
    if submission["executor"] == "local":
        return logs / f"local-{task}.out"
    job_id = submission["job_id"]
    if job_id is None:
        return None
    return logs / (f"slurm-{job_id}_{task}.out" if job["array"] else f"slurm-{job_id}.out")


def read_log_tail(log: Path | None, max_bytes: int) -> str | None:
    """The last `max_bytes` bytes of a log as text (undecodable bytes replaced); None when
    there is no log or it cannot be read."""
    if log is None:
        return None
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, log.stat().st_size - max_bytes))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None


def job_state(states: Sequence[TaskState]) -> str:
    present = {t.state for t in states}
    for state in _JOB_STATE_ORDER:
        if state in present:
            return state
    return UNKNOWN


def job_reason(tasks: Sequence[TaskState], state: str) -> str | None:
    """One task: its reason. An array: the count of tasks per state, most frequent first,
    then the reason of the first task in the job's state (`998 COMPLETED, 2 FAILED; task 7:
    exit code 3`)."""
    if len(tasks) == 1:
        return tasks[0].reason
    counts = ", ".join(f"{n} {s}" for s, n in Counter(t.state for t in tasks).most_common())
    first = next((t for t in tasks if t.state == state and t.reason), None)
    return f"{counts}; task {first.task}: {first.reason}" if first else counts


def collect_status(run: Run) -> list[JobState]:
    """Every job of the run with its tasks' states, in run order (see module docstring)."""
    record = run.read()
    raw = get_executor(record["executor"]).task_states(run, record)
    result: dict[str, JobState] = {}
    for name in record["order"]:
        job = record["jobs"][name]
        if job["skipped"]:
            reason = f"cached from {job['cached_from']['run']}/{job['cached_from']['job']}"
            tasks = [TaskState(i, SKIPPED, reason=reason) for i in range(job["tasks"])]
        else:
            failed_needs = [n for n in job["needs"] if result[n].state in FAILURES]
            canceller = _cancelled_by(record, name)
            tasks = [_with_usage(_after_failed_needs(_who_cancelled(t, job, canceller),
                                                     failed_needs), job)
                     for t in raw[name]]
        state = job_state(tasks)
        result[name] = JobState(name=name, kind=job["kind"], state=state, tasks=tuple(tasks),
                                skipped=job["skipped"], cached_from=job["cached_from"],
                                job_dir=job["job_dir"], out_dir=job["out_dir"],
                                reason=job_reason(tasks, state))
    return [result[name] for name in record["order"]]


def _cancelled_by(record: Mapping[str, Any], name: str) -> tuple[str, float] | None:
    """(user, time) of the latest `jobctl cancel` that named job `name`, if any."""
    found = [(c["by"], c["at"]) for c in record.get("cancellations", []) if name in c["jobs"]]
    return found[-1] if found else None


def _who_cancelled(task: TaskState, job: Mapping[str, Any],
                   canceller: tuple[str, float] | None) -> TaskState:
    """A CANCELLED task that `jobctl cancel` stopped (a cancellation of its job after its
    latest submission, not explained by a failed need) says who cancelled it."""
    if task.state != CANCELLED or canceller is None or (
            task.reason or "").startswith(DEPENDENCY_FAILED):
        return task
    submission = latest_submissions(job).get(task.task)
    if submission is None or submission["submitted"] > canceller[1]:
        return task
    return replace(task, reason=f"cancelled by {canceller[0]} (jobctl cancel)")


def _after_failed_needs(task: TaskState, failed_needs: Sequence[str]) -> TaskState:
    """A task that has not run, of a job whose need failed, is CANCELLED by that failure
    (SLURM cancels a PENDING one within seconds: kill_invalid_depend / --kill-on-invalid-dep).
    A task that ran (exit code known) or was cancelled for another reason keeps its state."""
    if not failed_needs or task.exit_code is not None:
        return task
    unexplained = task.reason is None or task.reason in (NOT_STARTED, DEPENDENCY_FAILED)
    if task.state in (UNKNOWN, PENDING) or (task.state == CANCELLED and unexplained):
        reason = f"{DEPENDENCY_FAILED} ({', '.join(failed_needs)})"
        return TaskState(task.task, CANCELLED, None, reason, task.job_id)
    return task


def asked_mem(job: Mapping[str, Any], task: int) -> str:
    """The --mem of the task's latest submission (a resubmission may change it), else the
    job's."""
    submission = latest_submissions(job).get(task) or {}
    return (submission.get("resources") or job["spec"]["resources"])["mem"]


def _with_usage(task: TaskState, job: Mapping[str, Any]) -> TaskState:
    """The task with its status file's usage and its --mem; a task that did not complete
    although its peak reached MEMORY_NOTE_SHARE of --mem says how much it used."""
    status = job_task_status(job, task.task)
    usage = TaskUsage.from_status(status) if status else None
    mem = asked_mem(job, task.task)
    reason = task.reason
    peak, asked = (usage.peak_rss_bytes if usage else None), mem_bytes(mem)
    if (task.state in FAILURES and task.state != "OUT_OF_MEMORY" and peak is not None
            and asked and peak >= MEMORY_NOTE_SHARE * asked):
        note = f"used {format_bytes(peak)} of --mem={mem}"
        reason = f"{reason}; {note}" if reason else note
    return replace(task, usage=usage, mem=mem, reason=reason)
