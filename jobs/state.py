"""Run directories and their records: ids, run.json, job dirs, status files, atomic writes.

Layout (one run = one `jobctl submit`/`jobctl run`):

    RUNS/<run-id>/run.json            the run record (written by jobs.plan.create_run)
    RUNS/<run-id>/<job>/job.sh        exactly what was submitted (jobs.render)
    RUNS/<run-id>/<job>/config.json   lyricgen's input (format: lyricgen/context.py, schema 1)
    RUNS/<run-id>/<job>/logs/         slurm-%j.out, slurm-%A_%a.out or local-<task>.out
    RUNS/<run-id>/<job>/status/       <task>.json written by job.sh (format: jobs/taskstatus.py)
    RUNS/<run-id>/<job>/out/          the job's outputs (out/<task>/ for array tasks)
    RUNS/.cache.json                  cache index (jobs.cache)

Run ids are `YYYYmmdd-HHMMSS-<4 hex>` (local time), claimed by creating the directory
(`claim_run_dir`), so concurrent `jobctl submit`s never collide. The runs dir is, first
found: the `--runs-dir` option, $JOBCTL_RUNS_DIR, the profile's `runs_dir`, `./runs`.

Every file is written atomically (temp file in the same dir, fsync, rename); read-modify-write
of run.json happens under a file lock (`Run.update`), because the CLI, the local executor's
threads and a concurrent `jobctl status` may all touch it. A skipped (cached) job has no job
dir (`job_dir` null in its record): its `out_dir` is the earlier run's, which its dependents
read.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock

from jobs.errors import UsageError
from jobs.spec import Profile

RUN_SCHEMA = 1
T = TypeVar("T")
RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{4}$")


def new_run_id(now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"{stamp}-{secrets.token_hex(2)}"


def claim_run_dir(runs_dir: Path, prepare: Callable[[Path], T]) -> tuple[Path, T]:
    """Draw a new `runs_dir/<run-id>`, call `prepare(run_dir)` (which may raise, and must not
    write: it runs again when the id is lost), then create the directory with exist_ok=False.
    Two processes that draw the same id in the same second (jobctl submits started
    together) never share a run dir: the loser draws again. Returns (run_dir, prepared)."""
    while True:
        run_dir = runs_dir / new_run_id()
        if run_dir.exists():
            continue
        prepared = prepare(run_dir)
        try:
            run_dir.mkdir(parents=True)
        except FileExistsError:
            continue
        return run_dir, prepared


def resolve_runs_dir(option: str | Path | None, profile: Profile | None = None) -> Path:
    """The runs dir, absolute: option > $JOBCTL_RUNS_DIR > profile.runs_dir > ./runs."""
    for candidate in (option, os.environ.get("JOBCTL_RUNS_DIR"),
                      profile.runs_dir if profile else None):
        if candidate:
            return Path(candidate).absolute()
    return Path("runs").absolute()


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> Path:
    """Write `data` to `path` so that readers see the old or the new file, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: Path, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def read_json(path: Path) -> Any | None:
    """The parsed file, or None when it is missing or not valid JSON (a torn or foreign
    file is treated as absent, never as a crash)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class Run:
    """One run directory and its run.json record."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory).absolute()
        self.id = self.dir.name
        self.record_path = self.dir / "run.json"

    def read(self) -> dict[str, Any]:
        record = read_json(self.record_path)
        if not isinstance(record, dict) or record.get("schema") != RUN_SCHEMA:
            raise UsageError(f"{self.record_path}: not a jobctl run record")
        return record

    def update(self, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Apply `change` to run.json under the run's lock and write it back atomically."""
        with FileLock(str(self.dir / ".run.json.lock")):
            record = self.read()
            change(record)
            atomic_write_json(self.record_path, record)
        return record


def list_runs(runs_dir: Path) -> list[Run]:
    """Runs in `runs_dir`, oldest first (by creation time, then id)."""
    found = []
    for path in runs_dir.glob("*/run.json"):
        record = read_json(path)
        if isinstance(record, dict) and record.get("schema") == RUN_SCHEMA:
            found.append((float(record.get("created", 0)), path.parent.name, Run(path.parent)))
    return [run for _, _, run in sorted(found, key=lambda item: item[:2])]


def find_run(runs_dir: Path, run: str | None) -> Run:
    """The run named by id, unique id prefix or directory path; the latest when None."""
    if run and (Path(run) / "run.json").is_file():
        return Run(Path(run))
    runs = list_runs(runs_dir)
    if not runs:
        raise UsageError(f"no runs in {runs_dir}")
    if run is None:
        return runs[-1]
    matches = [r for r in runs if r.id == run] or [r for r in runs if r.id.startswith(run)]
    if len(matches) != 1:
        what = "no run" if not matches else f"{len(matches)} runs"
        raise UsageError(f"{what} matching {run!r} in {runs_dir}")
    return matches[0]
