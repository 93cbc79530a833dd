"""Run a run's job.sh files on this machine with bash, exactly as SLURM would run them.

Each task runs `bash JOB_DIR/job.sh` in its own session, with the environment SLURM would
give it: SLURM_JOB_ID (`local-<pid of jobctl>`), SLURM_CPUS_PER_TASK and, for array jobs,
SLURM_ARRAY_JOB_ID, SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT (other inherited SLURM_*
variables except SLURM_CONF are removed). Output goes to JOB_DIR/logs/local-<task>.out
(appended, so a rerun keeps the earlier attempt above it).

Order: a job's tasks start once every selected need has completed all its tasks; when a need
fails, its dependents (transitively) get CANCELLED status files with reason "dependency
failed" and never run. Up to `parallel` tasks run at once. Ctrl-C or SIGTERM to jobctl sends
SIGTERM to every running job.sh (which records CANCELLED; SIGKILL after KILL_WAIT seconds),
marks every waiting task CANCELLED and re-raises KeyboardInterrupt.

Before starting, every selected task gets a PENDING status file naming this process
(`runner_pid` in the run's submission record); `jobctl cancel` turns PENDING into CANCELLED,
which this runner honours, and a PENDING or RUNNING task whose process is gone is reported as
CANCELLED or FAILED instead of waiting forever. When the tasks have ended, every selected job
that completed is indexed in the cache (jobs.cache), so the next run of it is skipped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from jobs.cache import CacheIndex
from jobs.executors import (
    CANCELLED,
    COMPLETED,
    DEPENDENCY_FAILED,
    FAILED,
    PENDING,
    PREEMPTED,
    RUNNING,
    UNKNOWN,
    Executor,
    TaskState,
    ended_state,
    latest_submissions,
    process_alive,
)
from jobs.state import Run
from jobs.taskstatus import job_task_status, write_task_status

KILL_WAIT = 10.0
# PREEMPTED: job.sh of a kind that checkpoints got SIGUSR1 and saved a checkpoint (no SLURM
# to requeue it here; `jobctl resubmit --failed` resumes it).
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED, PREEMPTED})


def task_environment(job: Mapping[str, Any], task: int, local_id: str) -> dict[str, str]:
    """The environment of one local task (see the module docstring)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SLURM_") or k == "SLURM_CONF"}
    env["SLURM_JOB_ID"] = local_id
    env["SLURM_CPUS_PER_TASK"] = str(job["spec"]["resources"]["cpus"])
    if job["array"]:
        env["SLURM_ARRAY_JOB_ID"] = local_id
        env["SLURM_ARRAY_TASK_ID"] = str(task)
        env["SLURM_ARRAY_TASK_COUNT"] = str(job["tasks"])
    return env


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, parallel: int = 1) -> None:
        if parallel < 1:
            raise ValueError("parallel must be at least 1")
        self.parallel = parallel

    def submit(self, run: Run, selection: Mapping[str, Sequence[int]]) -> bool:
        """Run the selected tasks to the end; True when all of them completed."""
        submitted = time.time()

        def record_submission(record: dict[str, Any]) -> None:
            for name, tasks in selection.items():
                job = record["jobs"][name]
                job["submissions"].append({
                    "executor": self.name, "runner_pid": os.getpid(),
                    "host": socket.gethostname(), "tasks": list(tasks), "submitted": submitted,
                    "resources": job["spec"]["resources"]})

        record = run.update(record_submission)
        for name, tasks in selection.items():
            for task in tasks:
                write_task_status(Path(record["jobs"][name]["job_dir"]), task, PENDING,
                                  "waiting to start")
        ok = _Scheduler(record, selection, self.parallel).run()
        index = CacheIndex(run.dir.parent)
        for name in selection:
            index.remember(run.id, name, record["jobs"][name])
        return ok

    def task_states(self, run: Run, record: Mapping[str, Any]) -> dict[str, list[TaskState]]:
        host = socket.gethostname()
        states: dict[str, list[TaskState]] = {}
        for name in record["order"]:
            job = record["jobs"][name]
            if job["skipped"]:
                continue
            latest = latest_submissions(job)
            states[name] = [self._task_state(record, name, task, latest.get(task), host)
                            for task in range(job["tasks"])]
        return states

    @staticmethod
    def _task_state(record: Mapping[str, Any], name: str, task: int,
                    submission: Mapping[str, Any] | None, host: str) -> TaskState:
        if submission is None:
            return TaskState(task, UNKNOWN, reason="never submitted")
        job_id = f"local-{submission['runner_pid']}"
        status = job_task_status(record["jobs"][name], task)
        if status is None:
            return TaskState(task, UNKNOWN, reason="no status file", job_id=job_id)
        state, code, reason = status["state"], status.get("exit_code"), status.get("reason")
        if state in TERMINAL:
            return ended_state(status, task, job_id)
        here = submission.get("host") == host  # local tasks run where their runner ran
        if state == RUNNING and here and not process_alive(status.get("pid")):
            return TaskState(task, FAILED, None, "job.sh was killed before recording its end",
                             job_id)
        if state == PENDING and here and not process_alive(submission.get("runner_pid")):
            return TaskState(task, CANCELLED, None, "jobctl run was interrupted", job_id)
        return TaskState(task, state, code, reason, job_id)

    def cancel(self, run: Run, record: Mapping[str, Any], jobs: Sequence[str]) -> list[str]:
        """Mark waiting tasks of `jobs` CANCELLED, which the runner honours before starting
        them, then SIGTERM their running job.sh processes (on this host). In that order: a
        runner that sees a running task fail marks its waiting dependents "dependency
        failed" unless they are already CANCELLED."""
        states = self.task_states(run, record)
        waiting = [(name, s.task) for name in jobs for s in states.get(name, [])
                   if s.state == PENDING]
        for name, task in waiting:
            write_task_status(Path(record["jobs"][name]["job_dir"]), task, CANCELLED,
                              "cancelled by jobctl")
        done = []
        for name in jobs:
            for state in states.get(name, []):
                status = job_task_status(record["jobs"][name], state.task) or {}
                if state.state == RUNNING and process_alive(status.get("pid")):
                    os.kill(status["pid"], signal.SIGTERM)
                    done.append(f"{name}:{state.task} (pid {status['pid']})")
        return done + [f"{name}:{task}" for name, task in waiting]


class _Scheduler:
    """Dependency-ordered execution of the selected tasks on a thread pool."""

    def __init__(self, record: Mapping[str, Any], selection: Mapping[str, Sequence[int]],
                 parallel: int) -> None:
        self.record = record
        self.parallel = parallel
        self.waiting = {name: list(tasks) for name, tasks in selection.items()}
        self.unfinished = {name: len(tasks) for name, tasks in selection.items()}
        self.failed_jobs: set[str] = set()
        self.local_id = f"local-{os.getpid()}"
        self.procs: dict[tuple[str, int], subprocess.Popen[bytes]] = {}
        self.lock = threading.Lock()

    def job_dir(self, name: str) -> Path:
        return Path(self.record["jobs"][name]["job_dir"])

    def run(self) -> bool:
        previous = signal.getsignal(signal.SIGTERM)
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            with ThreadPoolExecutor(max_workers=self.parallel) as pool:
                try:
                    self._loop(pool)
                except KeyboardInterrupt:
                    self._interrupt()
                    raise
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)
        return not self.failed_jobs

    def _loop(self, pool: ThreadPoolExecutor) -> None:
        running: dict[Future[int], tuple[str, int]] = {}
        while True:
            for unit in self._ready(self.parallel - len(running)):
                running[pool.submit(self._execute, *unit)] = unit
            if not running:
                return
            finished, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in finished:
                self._finish(*running.pop(future), ok=future.result() == 0)

    def _ready(self, slots: int) -> list[tuple[str, int]]:
        """Up to `slots` (job, task) pairs whose selected needs have all completed; tasks that
        `jobctl cancel` marked CANCELLED meanwhile are finished as failures instead."""
        ready: list[tuple[str, int]] = []
        for name, tasks in self.waiting.items():
            needs = [n for n in self.record["jobs"][name]["needs"] if n in self.unfinished]
            if any(self.unfinished[n] for n in needs):
                continue
            while tasks and len(ready) < slots:
                task = tasks.pop(0)
                status = job_task_status(self.record["jobs"][name], task) or {}
                if status.get("state") == CANCELLED:
                    self._finish(name, task, ok=False)
                else:
                    ready.append((name, task))
        return ready

    def _execute(self, name: str, task: int) -> int:
        job_dir = self.job_dir(name)
        env = task_environment(self.record["jobs"][name], task, self.local_id)
        with open(job_dir / "logs" / f"local-{task}.out", "ab") as log:
            try:
                with self.lock:
                    proc = subprocess.Popen(
                        ["bash", str(job_dir / "job.sh")], cwd=job_dir, env=env,
                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                        start_new_session=True)
                    self.procs[(name, task)] = proc
            except OSError as exc:
                write_task_status(job_dir, task, FAILED, f"cannot start bash: {exc}", 127)
                return 127
            code = proc.wait()
        with self.lock:
            self.procs.pop((name, task), None)
        status = job_task_status(self.record["jobs"][name], task) or {}
        if status.get("state") not in TERMINAL:
            write_task_status(job_dir, task, FAILED if code else COMPLETED,
                              "job.sh ended without recording its status", exit_code=code)
        return code

    def _finish(self, name: str, task: int, ok: bool) -> None:
        self.unfinished[name] -= 1
        if not ok and name not in self.failed_jobs:
            self.failed_jobs.add(name)
            self._cancel_dependents(name)

    def _cancel_dependents(self, failed: str) -> None:
        for name, tasks in self.waiting.items():
            if failed not in self.record["jobs"][name]["needs"] or name in self.failed_jobs:
                continue
            for task in tasks:
                status = job_task_status(self.record["jobs"][name], task) or {}
                if status.get("state") != CANCELLED:  # keep `jobctl cancel`'s own record
                    write_task_status(self.job_dir(name), task, CANCELLED,
                                      f"{DEPENDENCY_FAILED} ({failed})")
                self.unfinished[name] -= 1
            tasks.clear()
            self.failed_jobs.add(name)
            self._cancel_dependents(name)

    def _interrupt(self) -> None:
        """Stop every running task (SIGTERM, then SIGKILL) and cancel the waiting ones."""
        for name, tasks in self.waiting.items():
            for task in tasks:
                write_task_status(self.job_dir(name), task, CANCELLED, "jobctl run interrupted")
                self.failed_jobs.add(name)
            tasks.clear()
        with self.lock:
            procs = dict(self.procs)
        for proc in procs.values():
            _signal_group(proc, signal.SIGTERM, whole_group=False)
        deadline = time.monotonic() + KILL_WAIT
        for (name, task), proc in procs.items():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL, whole_group=True)
                write_task_status(self.job_dir(name), task, CANCELLED,
                                  "killed after jobctl run was interrupted", 137)
        self.failed_jobs.update(name for name, _ in procs)


def _signal_group(proc: subprocess.Popen[bytes], sig: int, whole_group: bool) -> None:
    try:
        if whole_group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except ProcessLookupError:
        pass


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
