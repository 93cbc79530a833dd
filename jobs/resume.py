"""Running a manifest again resumes its killed or failed checkpointing jobs.

A job of a kind that checkpoints (`Kind.checkpoints`: train-rnn, finetune-llama) that is not
cached looks for the newest earlier run whose job with the same cache key settled without
completing (FAILED, CANCELLED, TIMEOUT, ... or UNKNOWN: `kill -9`, a crash, a time limit)
and left files in its out dir. The new job's out dir starts as a copy of that one, so the
step finds its checkpoint and resumes, exactly as `jobctl resubmit --failed` on the old run
would: the cache key covers the params, the input files' contents, the code and the world
size, so the checkpoint belongs to the same training. The old run is left as it was (copy,
not move: its logs and status keep describing what happened there). `--force` starts fresh.

Pitfall: a run whose job is still PENDING or RUNNING is never a resume point (two runs would
train the same model); neither is one whose status cannot be read.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jobs.errors import UsageError
from jobs.executors import ACTIVE, FAILURES, UNKNOWN, collect_status
from jobs.state import Run, list_runs, read_json

_UNFINISHED = FAILURES | {UNKNOWN}


@dataclass(frozen=True)
class ResumePoint:
    """The out dir of an earlier run's job that a new job continues from."""

    run: str
    job: str
    out_dir: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_resume_point(runs_dir: Path, cache_key: str) -> ResumePoint | None:
    """The newest settled, not completed job with `cache_key` that left outputs, or None."""
    for run in reversed(list_runs(runs_dir)):
        record = read_json(run.record_path) or {}
        for name, job in record.get("jobs", {}).items():
            if job.get("cache_key") != cache_key or not job.get("job_dir"):
                continue
            out_dir = Path(job["out_dir"])
            if out_dir.is_dir() and any(out_dir.iterdir()) and _settled_unfinished(run, name):
                return ResumePoint(run=run.id, job=name, out_dir=str(out_dir))
    return None


def _settled_unfinished(run: Run, name: str) -> bool:
    """Whether job `name` of `run` has a task that did not complete and none still active."""
    try:
        states = {s.name: s for s in collect_status(run)}
    except (UsageError, OSError, KeyError):
        return False
    tasks = {t.state for t in states[name].tasks} if name in states else set()
    return bool(tasks & _UNFINISHED) and not tasks & ACTIVE


def seed_out_dir(point: ResumePoint, out_dir: Path) -> None:
    """Copy the resume point's out dir into `out_dir` (new, or empty: write_job_files makes
    it). A copy, not hard links: metrics.csv is appended to in place."""
    shutil.copytree(point.out_dir, out_dir, symlinks=True, dirs_exist_ok=True)
