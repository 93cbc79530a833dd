"""Submit job.sh files with sbatch and read job states back without accounting (no sacct).

Submission: `sbatch --parsable --kill-on-invalid-dep=yes --output=LOG --error=LOG
[--dependency=afterok:ID[:ID...]] [--array=LIST] JOB_DIR/job.sh` from the project dir (LOG:
jobs.render.sbatch_log_path, one argv word each). Only needs submitted in the same call
become dependencies (cached or already completed needs add none: SLURM treats an unknown id
as satisfied, so a stale id would be wrong anyway). `--array` is given only for a subset of an
array's tasks (resubmission of failed indices); otherwise the script's #SBATCH --array holds,
so a whole array (up to MaxArraySize tasks, throttle `%K` included) is ONE sbatch call.
Every sbatch gets `--comment=jobctl:RUN/JOB:HEX`, a token unique to that submission, and
the submission is written to run.json BEFORE sbatch runs (job id null), then its id right
after sbatch returns, with the resources the job.sh asks for. When sbatch fails, prints no
job id, or does not answer within COMMAND_TIMEOUT seconds (it may still have queued the
job: SLURM's `Socket timed out` errors do), the job is looked up by its token in SLURM's
queue (`scontrol -o show job`, field Comment): found, its id is recorded with a note that
`jobctl submit` prints, and submission goes on. Not found, the jobs already queued by the
same call are cancelled and UsageError carries sbatch's message; a submission that sbatch
rejected (non-zero exit) is removed from run.json, one whose answer was lost (garbage,
timeout) stays, so that `jobctl status` keeps looking for its token and never calls a job
that was queued after all "never submitted". A submission without an id takes the one its
token finds in the queue, else the one job.sh wrote into its status file.

The run report (jobs.runreport): `submit_report` queues one more job per submission, the
script RUN_DIR/_report/report.sh (jobs.render.render_report_script; `_report` cannot be a
job name), with `--dependency=afterany:` every job id just queued and
`--kill-on-invalid-dep=no`, so it runs once they have all ended, however they ended (a
failed, cancelled or dependency-cancelled job too), and writes RUN_DIR/report.html with the
Python that ran jobctl. It is recorded in run.json `report_jobs` (job id, dependency,
submitted), is no job of the run (`jobctl status` and `cancel` leave it alone) and logs to
RUN_DIR/_report/logs/. Why not write the report from `jobctl status`: status only reads.

State of a task, first that knows: its own status file when it recorded an end (COMPLETED,
FAILED, CANCELLED, PREEMPTED; but SLURM's TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED...
name the cause of a FAILED or CANCELLED better and win); SLURM's live view (`scontrol -o show
job`, which forgets finished jobs after MinJobAge; a job that requeued itself, status file
REQUEUED, is PENDING there again); the jobcomp/filetxt log named by JobCompLoc in
$SLURM_CONF (kept forever); a RUNNING status file (FAILED when it was written on this machine
by a process that is gone: job.sh was SIGKILLed); else UNKNOWN. Records submitted long
before our sbatch (ids reused after a cluster reset) are ignored.

A task that did not complete is then checked against slurmstepd's own lines in its log,
which name causes that SLURM's state may not: `Exceeded job memory limit` (memory enforced
by jobacct_gather OverMemoryKill: SLURM 22.05 then says FAILED, signal 9) and `oom-kill
event` (cgroup) -> OUT_OF_MEMORY; `DUE TO TIME LIMIT` -> TIMEOUT; `DUE TO PREEMPTION` ->
PREEMPTED; `DUE TO NODE FAILURE` -> NODE_FAIL. So a job killed for memory is never COMPLETED.
Its reason says how much it used when known: jobacct_gather's own measurement in the log
(`StepId=5.batch exceeded memory limit (434049024 > 104857600)`: SIGKILL leaves job.sh no
chance to record), else the peak job.sh recorded (a cgroup OOM kill spares the script).
A multi-node task that still reads FAILED names the node whose task failed first, from srun's
`srun: error: NODE: task N: WHAT` lines after job.sh's last `job.sh: rendezvous at` line (the
current attempt of a requeued job): `exit code 137 (SIGKILL); first failure: node n2 task 1
Killed (srun)`. With --kill-on-bad-exit srun stops the other nodes, whose own failures follow.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from jobs import PROJECT_DIR
from jobs.errors import UsageError
from jobs.executors import (
    ACTIVE,
    CANCELLED,
    COMPLETED,
    DEPENDENCY_FAILED,
    FAILED,
    NOT_STARTED,
    PENDING,
    PREEMPTED,
    RUNNING,
    UNKNOWN,
    Executor,
    TaskState,
    ended_state,
    exit_reason,
    latest_submissions,
    memory_reason,
    process_alive,
    read_log_tail,
    signal_name,
    task_log_path,
    with_requeues,
)
from jobs.render import render_report_script, sbatch_log_path
from jobs.state import Run, atomic_write_bytes
from jobs.taskstatus import TaskUsage, job_task_status

COMMAND_TIMEOUT = 60
REPORT_DIR = "_report"  # RUN_DIR/_report/: the report job's script and logs
STALE_SECONDS = 300
_FIELD = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:]*)=(.*?)(?=\s+[A-Za-z][A-Za-z0-9_/:]*=|\s*$)")
_ACTIVE_SLURM = {"PENDING": PENDING, "REQUEUED": PENDING, "CONFIGURING": PENDING,
                 "REQUEUE_HOLD": PENDING, "REQUEUE_FED": PENDING, "RESV_DEL_HOLD": PENDING,
                 "RUNNING": RUNNING, "COMPLETING": RUNNING, "SUSPENDED": RUNNING,
                 "STOPPED": RUNNING, "SIGNALING": RUNNING, "RESIZING": RUNNING,
                 "STAGE_OUT": RUNNING}
# PREEMPTED: job.sh could not requeue itself (jobs/render.py); REQUEUED is not an end: SLURM
# holds the job PENDING and runs it again.
_TERMINAL_STATUS = frozenset({COMPLETED, FAILED, CANCELLED, PREEMPTED})
# SLURM knows better than job.sh why it was stopped: a time limit also arrives as SIGTERM,
# an OOM kill as exit 137.
_SPECIFIC_ENDS = frozenset({"TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "DEADLINE",
                            "BOOT_FAIL"})
_END_REASONS = {"TIMEOUT": "time limit", "OUT_OF_MEMORY": "out of memory",
                "NODE_FAIL": "node failure", "PREEMPTED": "preempted", "DEADLINE": "deadline",
                "BOOT_FAIL": "node boot failure"}
# slurmstepd's lines in a job's log that name why it ended (22.05 and later wordings).
_LOG_CAUSES = (
    ("OUT_OF_MEMORY", re.compile(r"slurmstepd.*(exceeded (job|step) memory limit|"
                                 r"oom[-_]kill event)", re.I)),
    ("TIMEOUT", re.compile(r"slurmstepd.*CANCELLED AT \S+ DUE TO TIME LIMIT")),
    ("PREEMPTED", re.compile(r"slurmstepd.*CANCELLED AT \S+ DUE TO PREEMPTION")),
    ("NODE_FAIL", re.compile(r"slurmstepd.*CANCELLED AT \S+ DUE TO NODE FAIL")),
)
LOG_TAIL = 64 * 1024
# jobacct_gather's line when it kills a step over --mem: the bytes it measured, the limit.
_MEMORY_MEASURED = re.compile(r"slurmstepd.*exceeded memory limit \((\d+) > \d+\)", re.I)
# srun's line for a task that failed, and job.sh's line at the start of a multi-node attempt.
_SRUN_TASK_FAILED = re.compile(r"srun: error: (\S+): tasks? ([0-9,-]+): ([^\r\n]+)")
_ATTEMPT_START = "job.sh: rendezvous at "

SlurmRecords = tuple[dict[tuple[str, int], dict[str, str]], dict[str, dict[str, str]]]


def parse_record(line: str) -> dict[str, str]:
    """`Key=value Key=value ...` (scontrol -o, jobcomp lines) -> dict; values may be empty."""
    return {key: value for key, value in _FIELD.findall(line.strip())}


def parse_sbatch_id(output: str) -> str:
    """The job id from `sbatch --parsable` output (`ID` or `ID;CLUSTER`)."""
    text = output.strip().splitlines()[-1] if output.strip() else ""
    job_id = text.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise UsageError(f"sbatch printed {output.strip()!r}, not a job id")
    return job_id


def expand_indices(spec: str) -> list[int]:
    """SLURM array index list `0-3,7,9-11:2%4` -> [0, 1, 2, 3, 7, 9, 11]."""
    spec = spec.split("%", 1)[0]
    found: list[int] = []
    for part in filter(None, spec.split(",")):
        step = 1
        if ":" in part:
            part, step_text = part.split(":", 1)
            step = int(step_text)
        first, _, last = part.partition("-")
        found.extend(range(int(first), int(last or first) + 1, step))
    return found


def compress_indices(indices: Iterable[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> `0-2,5,7-8` (for --array)."""
    ordered = sorted(set(indices))
    parts: list[str] = []
    start = prev = None
    for index in ordered + [None]:
        if start is not None and (index is None or index != prev + 1):
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if index is not None and start is None:
            start = index
        prev = index
    return ",".join(parts)


def index_records(records: Iterable[dict[str, str]]) -> SlurmRecords:
    """(by (array job id, task), by job id of non-array records) for lookups."""
    by_task: dict[tuple[str, int], dict[str, str]] = {}
    by_job: dict[str, dict[str, str]] = {}
    for record in records:
        array_id = record.get("ArrayJobId")
        if array_id and record.get("ArrayTaskId", "N/A") not in ("N/A", ""):
            for task in expand_indices(record["ArrayTaskId"]):
                by_task[(array_id, task)] = record
        elif record.get("JobId"):
            by_job[record["JobId"]] = record
    return by_task, by_job


def jobcomp_path(conf: Path | None = None) -> Path | None:
    """JobCompLoc from slurm.conf when JobCompType is jobcomp/filetxt, else None."""
    conf = conf or Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf"))
    try:
        lines = conf.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    settings = {}
    for line in lines:
        key, sep, value = line.split("#", 1)[0].strip().partition("=")
        if sep:
            settings[key.strip().lower()] = value.strip()
    if settings.get("jobcomptype") != "jobcomp/filetxt" or not settings.get("jobcomploc"):
        return None
    return Path(settings["jobcomploc"])


def _epoch(text: str | None) -> float | None:
    try:
        return datetime.strptime(text or "", "%Y-%m-%dT%H:%M:%S").timestamp()
    except ValueError:
        return None


def slurm_task_state(record: Mapping[str, str], task: int, job_id: str) -> TaskState:
    """TaskState from a scontrol/jobcomp record. A job that never started (no node) has no
    exit code; `ExitCode=N:S` gives N, and signal S (`signal 9 (SIGKILL)`) when S > 0;
    TIMEOUT, OUT_OF_MEMORY, NODE_FAIL... say so ("time limit", "out of memory", ...); a
    requeued job (Restarts=N) adds `requeued Nx`."""
    raw = record.get("JobState", UNKNOWN).split()[0].rstrip("+")
    state = _ACTIVE_SLURM.get(raw, raw)
    started = record.get("NodeList", "") not in ("", "(null)", "None assigned")
    code, signal_no = None, 0
    exit_text = record.get("ExitCode", "")
    if started and state not in (PENDING, RUNNING) and re.fullmatch(r"\d+:\d+", exit_text):
        code, signal_no = (int(x) for x in exit_text.split(":"))
    reason = _reason(state, record.get("Reason", ""))
    sig = signal_name(signal_no) if signal_no else None
    if sig:
        reason = f"signal {signal_no} (SIG{sig})"
    elif state == FAILED and code:
        reason = exit_reason(code)
    elif state == CANCELLED and not started and reason is None:
        reason = NOT_STARTED
    reason = with_requeues(_END_REASONS.get(state, reason), _int(record.get("Restarts")))
    return TaskState(task, state, code, reason, job_id, sig)


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def _reason(state: str, raw: str) -> str | None:
    """SLURM's Reason field, kept only where it still explains the state: why a job waits,
    or that its dependency can never be satisfied."""
    if raw == "DependencyNeverSatisfied":
        return DEPENDENCY_FAILED
    if state != PENDING or raw in ("", "None"):
        return None
    return "waiting for needs" if raw == "Dependency" else raw


class SlurmExecutor(Executor):
    name = "slurm"

    def submit(self, run: Run, selection: Mapping[str, Sequence[int]]) -> bool:
        record = run.read()
        new_ids: dict[str, str] = {}
        try:
            for name, tasks in selection.items():
                job = record["jobs"][name]
                deps = [new_ids[n] for n in job["needs"] if n in new_ids]
                new_ids[name] = self._submit_job(run, name, job, tasks, deps)
        except UsageError:
            if new_ids:
                _scancel(list(new_ids.values()))
            raise
        return bool(new_ids)

    def _submit_job(self, run: Run, name: str, job: Mapping[str, Any], tasks: Sequence[int],
                    deps: Sequence[str]) -> str:
        """sbatch one job, recorded before and after (see the module docstring); its id."""
        token = f"jobctl:{run.id}/{name}:{secrets.token_hex(4)}"
        argv = self.sbatch_argv(job, tasks, deps)
        argv.insert(1, f"--comment={token}")
        submission = {"executor": self.name, "job_id": None, "token": token,
                      "tasks": list(tasks), "dependency": list(deps), "argv": argv,
                      "submitted": time.time(), "resources": job["spec"]["resources"]}
        run.update(lambda r: r["jobs"][name]["submissions"].append(submission))
        try:
            job_id, note = queue(argv, token)
        except SbatchUnclear as exc:
            if exc.rejected:
                run.update(lambda r: _drop_submission(r["jobs"][name], token))
                raise
            raise UsageError(f"{exc}; SLURM lists no job with comment {token}, so it was "
                             f"probably not queued (if it shows up, `jobctl status "
                             f"{run.id}` reports it)") from exc
        run.update(lambda r: _set_submission_id(r["jobs"][name], token, job_id, note))
        return job_id

    @staticmethod
    def sbatch_argv(job: Mapping[str, Any], tasks: Sequence[int], deps: Sequence[str]) -> list[str]:
        """The sbatch command for a job's `tasks` (module docstring). The log path is one argv
        word per option, never shell- or #SBATCH-parsed (jobs.render.sbatch_log_path)."""
        try:
            log = sbatch_log_path(Path(job["job_dir"]), job["array"])
        except ValueError as exc:  # jobs.plan refuses such a run dir before creating it
            raise UsageError(str(exc)) from exc
        argv = ["sbatch", "--parsable", "--kill-on-invalid-dep=yes", f"--output={log}",
                f"--error={log}"]
        if deps:
            argv.append("--dependency=afterok:" + ":".join(deps))
        if job["array"] and sorted(tasks) != list(range(job["tasks"])):
            throttle = job["spec"].get("throttle")
            argv.append(f"--array={compress_indices(tasks)}" + (f"%{throttle}" if throttle else ""))
        return [*argv, str(Path(job["job_dir"]) / "job.sh")]

    def submit_report(self, run: Run, selection: Mapping[str, Sequence[int]],
                      python: str) -> dict[str, Any] | None:
        """Queue the report job behind the jobs `submit` has just queued for `selection`
        (module docstring); its record, or None when none of them has a SLURM id. Raises
        UsageError when sbatch refuses it or gives no id."""
        record = run.read()
        ids = list(dict.fromkeys(
            latest[task]["job_id"] for name, tasks in selection.items()
            for latest in [latest_submissions(record["jobs"][name])] for task in tasks
            if task in latest and latest[task].get("job_id")))
        if not ids:
            return None
        first = record["jobs"][record["order"][0]]["profile"]
        profile = record["profiles"][first]
        report_dir = run.dir / REPORT_DIR
        (report_dir / "logs").mkdir(parents=True, exist_ok=True)
        try:
            script = render_report_script(run.dir, PROJECT_DIR, python, profile.get("partition"),
                                          profile.get("sbatch") or {})
            log = sbatch_log_path(report_dir, False)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        path = atomic_write_bytes(report_dir / "report.sh", script.encode("utf-8"), mode=0o755)
        token = f"jobctl:{run.id}/{REPORT_DIR}:{secrets.token_hex(4)}"
        argv = ["sbatch", "--parsable", f"--comment={token}", "--kill-on-invalid-dep=no",
                f"--output={log}", f"--error={log}", "--dependency=afterany:" + ":".join(ids),
                str(path)]
        submitted = time.time()
        job_id, note = queue(argv, token)
        entry = {"job_id": job_id, "dependency": ids, "submitted": submitted, "argv": argv,
                 **({"note": note} if note else {})}
        run.update(lambda r: r.setdefault("report_jobs", []).append(entry))
        return entry

    def task_states(self, run: Run, record: Mapping[str, Any]) -> dict[str, list[TaskState]]:
        queue = _scontrol_records()
        live = index_records(queue)
        done = index_records(_jobcomp_records())
        comments = {r["Comment"]: r.get("ArrayJobId") or r.get("JobId") for r in queue
                    if r.get("Comment", "").startswith("jobctl:")}
        states: dict[str, list[TaskState]] = {}
        for name in record["order"]:
            job = record["jobs"][name]
            if job["skipped"]:
                continue
            latest = latest_submissions(job)
            states[name] = [self._task_state(job, task, latest.get(task), (live, done),
                                             comments) for task in range(job["tasks"])]
        return states

    @staticmethod
    def _task_state(job: Mapping[str, Any], task: int, submission: Mapping[str, Any] | None,
                    sources: tuple[SlurmRecords, SlurmRecords],
                    comments: Mapping[str, str]) -> TaskState:
        if submission is None:
            return TaskState(task, UNKNOWN, reason="never submitted")
        status = job_task_status(job, task)
        sub_id = submission_id(job, submission, status, comments)
        if sub_id is None:
            if status and status["state"] in _TERMINAL_STATUS:
                return ended_state(status, task, None)
            return TaskState(task, UNKNOWN, reason="sbatch gave no job id and SLURM lists no "
                             f"job with comment {submission.get('token')}")
        job_id = f"{sub_id}_{task}" if job["array"] else sub_id
        slurm = None
        for by_task, by_job in sources:
            found = by_task.get((sub_id, task)) or by_job.get(sub_id)
            if found and not _stale(found, submission):
                slurm = slurm_task_state(found, task, job_id)
                break
        state = _merged_state(task, job_id, status, slurm)
        used = None
        if state.state in (FAILED, CANCELLED) and state.reason != NOT_STARTED:
            state, used = _cause_from_log(state, read_log_tail(task_log_path(job, task), LOG_TAIL))
        if used is None and status:
            used = TaskUsage.from_status(status).peak_rss_bytes
        return _with_limits(state, submission.get("resources") or job["spec"]["resources"],
                            used)

    def cancel(self, run: Run, record: Mapping[str, Any], jobs: Sequence[str]) -> list[str]:
        """scancel the latest submission of each job that still has PENDING/RUNNING tasks."""
        states = self.task_states(run, record)
        ids: list[str] = []
        for name in jobs:
            for state in states.get(name, []):
                job_id = state.job_id.split("_")[0] if state.job_id else None
                if state.state in ACTIVE and job_id and job_id not in ids:
                    ids.append(job_id)
        if ids:
            _scancel(ids)
        return ids


def submission_id(job: Mapping[str, Any], submission: Mapping[str, Any],
                  status: Mapping[str, Any] | None, comments: Mapping[str, str]) -> str | None:
    """The SLURM id of a submission: recorded, else found in the queue by its token, else
    the one job.sh wrote into the task's status file; None when nothing knows it."""
    if submission.get("job_id"):
        return submission["job_id"]
    if submission.get("token") in comments:
        return comments[submission["token"]]
    written = (status or {}).get("slurm_array_job_id" if job["array"] else "slurm_job_id")
    return str(written) if isinstance(written, int) else None


def _merged_state(task: int, job_id: str, status: Mapping[str, Any] | None,
                  slurm: TaskState | None) -> TaskState:
    """The status file's end, SLURM's view, or the status file's RUNNING, as the module
    docstring orders them."""
    if status and status["state"] in _TERMINAL_STATUS:
        own = ended_state(status, task, job_id)
        if own.state != COMPLETED and slurm and slurm.state in _SPECIFIC_ENDS:
            return replace(slurm, exit_code=own.exit_code, signal=slurm.signal or own.signal)
        return own
    if slurm:
        return slurm
    if status and status["state"] == RUNNING:
        if status.get("host") == socket.gethostname() and not process_alive(status.get("pid")):
            return TaskState(task, FAILED, None, "killed (SIGKILL?) before job.sh could record "
                             "its end", job_id)
        return TaskState(task, RUNNING, None, "SLURM has no record; per its status file",
                         job_id)
    return TaskState(task, UNKNOWN, None, "no record in SLURM, jobcomp or status files",
                     job_id)


def log_cause(text: str) -> str | None:
    """The SLURM state that slurmstepd's lines in a job log name (see module docstring)."""
    for state, pattern in _LOG_CAUSES:
        if pattern.search(text):
            return state
    return None


def first_failed_node(text: str) -> str | None:
    """`node n2 task 1 Killed (srun)` from srun's first task failure in the current attempt
    (see module docstring), None without one."""
    found = _SRUN_TASK_FAILED.search(text, max(0, text.rfind(_ATTEMPT_START)))
    return f"node {found[1]} task {found[2]} {found[3].strip()} (srun)" if found else None


def _cause_from_log(state: TaskState, text: str | None) -> tuple[TaskState, int | None]:
    """A FAILED or CANCELLED task whose log tail names a more specific cause takes it, with
    the memory SLURM measured when it killed the task for memory (else None); a FAILED one
    still without such a cause adds the node that failed first, if any."""
    if text is None:
        return state, None
    cause = log_cause(text)
    if cause is not None:
        measured = _MEMORY_MEASURED.findall(text) if cause == "OUT_OF_MEMORY" else []
        used = max(int(value) for value in measured) if measured else None
        return replace(state, state=cause, reason=_END_REASONS[cause]), used
    node = first_failed_node(text) if state.state == FAILED else None
    if node is None:
        return state, None
    return replace(state, reason=f"{state.reason}; first failure: {node}" if state.reason
                   else f"first failure: {node}"), None


def _with_limits(state: TaskState, resources: Mapping[str, Any],
                 used: int | None = None) -> TaskState:
    """"out of memory" (with the memory `used`, when known) and "time limit" name the limit
    the task ran with."""
    if state.state == "OUT_OF_MEMORY":
        return replace(state, reason=memory_reason(resources["mem"], used))
    if state.state == "TIMEOUT":
        return replace(state, reason=f"time limit ({resources['time']})")
    return state


def _stale(found: Mapping[str, str], submission: Mapping[str, Any]) -> bool:
    submitted = _epoch(found.get("SubmitTime"))
    return submitted is not None and submitted < submission["submitted"] - STALE_SECONDS


class CommandTimeout(UsageError):
    """A SLURM command did not answer within COMMAND_TIMEOUT seconds (and was killed)."""


class SbatchUnclear(UsageError):
    """sbatch failed (`rejected`: it exited non-zero), printed no job id, or timed out: the
    job may be queued all the same."""

    def __init__(self, message: str, rejected: bool) -> None:
        super().__init__(message)
        self.rejected = rejected


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                              check=False, cwd=PROJECT_DIR)
    except FileNotFoundError as exc:
        raise UsageError(f"{argv[0]} not found: SLURM's client commands are not installed "
                         "(use `jobctl run` to execute locally)") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandTimeout(f"{argv[0]} did not answer within {COMMAND_TIMEOUT}s") from exc


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _sbatch(argv: list[str]) -> str:
    """The job id sbatch printed, or SbatchUnclear."""
    try:
        result = _run(argv)
    except CommandTimeout as exc:
        raise SbatchUnclear(f"{exc} for {argv[-1]}", rejected=False) from exc
    if result.returncode != 0:
        raise SbatchUnclear(f"sbatch failed for {argv[-1]}: "
                            f"{_one_line(result.stderr or result.stdout)}", rejected=True)
    try:
        return parse_sbatch_id(result.stdout)
    except UsageError as exc:
        raise SbatchUnclear(f"{exc} for {argv[-1]}", rejected=False) from exc


def queue(argv: list[str], token: str) -> tuple[str, str | None]:
    """Run sbatch `argv`, which carries `--comment=TOKEN`: (job id, None), or, when sbatch's
    answer was unclear but SLURM's queue holds a job with that comment, (its id, a note
    saying so). Raises the SbatchUnclear when no such job is queued."""
    try:
        return _sbatch(argv), None
    except SbatchUnclear as exc:
        found = job_by_comment(token)
        if found is None:
            raise
        return found, f"{exc}; found the job by its comment {token}"


def job_by_comment(token: str) -> str | None:
    """The id of the job in SLURM's queue whose comment is `token` (an array's own id)."""
    for record in _scontrol_records():
        if record.get("Comment") == token:
            return record.get("ArrayJobId") or record.get("JobId")
    return None


def _drop_submission(job: dict[str, Any], token: str) -> None:
    job["submissions"] = [s for s in job["submissions"] if s.get("token") != token]


def _set_submission_id(job: dict[str, Any], token: str, job_id: str, note: str | None) -> None:
    for submission in job["submissions"]:
        if submission.get("token") == token:
            submission["job_id"] = job_id
            if note:
                submission["note"] = note


def _scancel(ids: Sequence[str]) -> None:
    result = _run(["scancel", *ids])
    if result.returncode != 0:
        raise UsageError(f"scancel {' '.join(ids)} failed: {_one_line(result.stderr)}")


def _scontrol_records() -> list[dict[str, str]]:
    """All jobs the controller still knows; [] when it cannot be asked."""
    try:
        result = _run(["scontrol", "-o", "show", "job"])
    except UsageError:
        return []
    if result.returncode != 0:
        return []
    return [parse_record(line) for line in result.stdout.splitlines() if "JobId=" in line]


def _jobcomp_records() -> list[dict[str, str]]:
    path = jobcomp_path()
    if path is None:
        return []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [parse_record(line) for line in text.splitlines() if "JobId=" in line]
