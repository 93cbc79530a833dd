"""One run at a time per job cache key: a run claims the keys of the jobs it will compute.

Two runs of the same job (same cache key: same kind, params, inputs, needs and code) at
once would train the same model twice, and a resumed one would copy a checkpoint that is
still being written. So `jobctl run`, `submit` and `resubmit` claim the key of every job
they are about to compute or resume, before anything starts, and a claim held by another
live run stops them with one line naming that run (UsageError, exit 2).

Claims: `RUNS/.claims/<cache key>.json` = {"run", "job", "pid", "host", "since"}: the run
and job that hold the key, and the jobctl process that claimed it. Claims are made and
checked under one file lock (`RUNS/.claims/.lock`, an flock: the kernel drops it when its
process dies), all of a run's keys or none. A claim is never released: it simply stops
counting once its holder is not live, and the next claimer takes it over. The holder is
live while
- its run.json is not written yet, or its job has no submission yet: while the jobctl
  process that claimed it is alive (same host; but not when that is the process claiming
  now, which made a new run instead), or for UNSUBMITTED_GRACE seconds when it claimed
  from another host (where its pid cannot be checked);
- after a submission: while any task of its job is PENDING or RUNNING as the run's
  executor reports it (`jobctl status`'s view: SLURM's queue, or the local status files
  and processes; a job.sh that outlived its killed `jobctl run` keeps the claim).
A dry run, a cached job, a completed, failed or cancelled one holds nothing.

Pitfall: the liveness check runs the executor's status query (scontrol for SLURM) under
the lock, so a slow controller delays other claimers on the same runs dir.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from jobs.errors import UsageError
from jobs.executors import ACTIVE, get_executor, process_alive
from jobs.state import RUN_SCHEMA, Run, atomic_write_json, read_json

CLAIMS_DIR = ".claims"
UNSUBMITTED_GRACE = 600.0


@dataclass(frozen=True)
class Claim:
    """Who holds a cache key: run and job, and the jobctl process that claimed it."""

    run: str
    job: str
    pid: int
    host: str
    since: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def claim_keys(runs_dir: Path, run_id: str, keys: Mapping[str, str]) -> None:
    """Claim `keys` ({job name: cache key}) for run `run_id`: all of them, or none and a
    UsageError naming the live run that holds one. A key this run held before (a
    resubmission) is claimed again."""
    if not keys:
        return
    directory = runs_dir / CLAIMS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory / ".lock")):
        for name, key in keys.items():
            holder = read_claim(directory / f"{key}.json")
            if holder is not None and holder.run != run_id and holder_alive(runs_dir, key,
                                                                             holder):
                raise UsageError(
                    f"job {name} is already being computed by run {holder.run} (job "
                    f"{holder.job}, same cache key; claimed by pid {holder.pid} on "
                    f"{holder.host}): wait for it (jobctl status {holder.run}) or cancel it "
                    f"(jobctl cancel {holder.run} {holder.job}), then run again")
        now = time.time()
        for name, key in keys.items():
            claim = Claim(run=run_id, job=name, pid=os.getpid(), host=socket.gethostname(),
                          since=now)
            atomic_write_json(directory / f"{key}.json", claim.to_dict())


def read_claim(path: Path) -> Claim | None:
    """The claim in `path`; None when missing or unreadable (a torn file claims nothing)."""
    data = read_json(path)
    try:
        return Claim(**data) if isinstance(data, dict) else None
    except TypeError:
        return None


def holder_alive(runs_dir: Path, key: str, claim: Claim) -> bool:
    """Whether the claim's run is still computing its job (see the module docstring)."""
    run = Run(runs_dir / claim.run)
    record = read_json(run.record_path)
    if not isinstance(record, dict) or record.get("schema") != RUN_SCHEMA:
        return _claimer_alive(claim)  # between the claim and run.json
    job = record.get("jobs", {}).get(claim.job)
    if record.get("dry_run") or not job or job.get("cache_key") != key or not job["job_dir"]:
        return False
    if not job.get("submissions"):
        return _claimer_alive(claim)
    states = get_executor(record["executor"]).task_states(run, record).get(claim.job, [])
    return any(state.state in ACTIVE for state in states)


def _claimer_alive(claim: Claim) -> bool:
    """Whether the process that claimed an unsubmitted job may still submit it. This very
    process may not: it made a new run instead (a process submits its runs one by one)."""
    if claim.host == socket.gethostname():
        return claim.pid != os.getpid() and process_alive(claim.pid)
    return time.time() - claim.since < UNSUBMITTED_GRACE
