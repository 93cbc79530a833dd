"""Cache keys and the cache index: a job whose work is unchanged since a completed run is
skipped, and its dependents read that run's outputs.

Key of a job = sha256 over: kind; every task's params and matrix cell *as loaded* (output
references `{{ needs.J.outputs.N }}` unbound: the bound path would name this run's dir, and
what it points to is covered by J's key); the contents of every file or directory named by
a `path` param that the job reads (files over 64 MiB by size and mtime, not bytes; kinds'
`Param.writes` paths are skipped, their contents are the job's own outputs); the keys of
its needs; the code version; and, for distributed kinds, the world size (it sets the
global batch).

Code version = sha256 of the lyricgen package version and every file under jobs/, kindspec/,
lyricgen/ and templates/ of the checkout (relative path + bytes, __pycache__ skipped). A git
commit alone would miss uncommitted edits; the commit is recorded in run.json for provenance
instead.

Index: RUNS/.cache.json maps key -> entry {run, job, job_dir, out_dir, tasks}. An entry is
trusted only after checking that every task's status file says COMPLETED and the out dir
exists; an index that is missing, stale or corrupt is rebuilt on demand by scanning the
run.json files, so it is only ever a shortcut.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from filelock import FileLock

from jobs.runtime import param_paths
from jobs.spec import JobSpec
from jobs.state import atomic_write_json, list_runs, read_json
from jobs.taskstatus import read_task_status
from kindspec.registry import KINDS
from kindspec.schema import OUTPUT_REF

CODE_DIRS = ("jobs", "kindspec", "lyricgen", "templates")
_CHUNK = 1 << 20
BIG_FILE = 64 << 20


@dataclass(frozen=True)
class CacheEntry:
    """Where a completed job's outputs are."""

    run: str
    job: str
    job_dir: str
    out_dir: str
    tasks: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def is_complete(self) -> bool:
        """Every task's status file says COMPLETED and the out dir still exists."""
        if not Path(self.out_dir).is_dir():
            return False
        return all((read_task_status(Path(self.job_dir), task) or {}).get("state") == "COMPLETED"
                   for task in range(self.tasks))


def _hash_file(digest: Any, path: Path) -> None:
    """Content hash; files over BIG_FILE bytes (model weights: GBs, read on every submit)
    are identified by size and modification time instead, like make and rsync do."""
    info = path.stat()
    digest.update(f"{info.st_size}\0".encode())
    if info.st_size > BIG_FILE:
        digest.update(f"mtime:{info.st_mtime_ns}\0".encode())
        return
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)


def _files(root: Path) -> Iterator[Path]:
    """Regular files under root, sorted by relative path, without __pycache__."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.relative_to(root).parts:
            yield path


def path_digest(path: Path) -> str:
    """sha256 of a file's bytes, of a directory's sorted (relative path, bytes) pairs, or of
    the marker `missing`."""
    digest = hashlib.sha256()
    if path.is_file():
        digest.update(b"file\0")
        _hash_file(digest, path)
    elif path.is_dir():
        digest.update(b"dir\0")
        for file in _files(path):
            digest.update(f"{file.relative_to(path).as_posix()}\0".encode())
            _hash_file(digest, file)
    else:
        digest.update(b"missing\0")
    return digest.hexdigest()


def code_version(project_dir: Path) -> str:
    """sha256 of the lyricgen version and the sources under CODE_DIRS."""
    digest = hashlib.sha256()
    try:
        digest.update(metadata.version("lyricgen").encode())
    except metadata.PackageNotFoundError:
        digest.update(b"lyricgen-not-installed")
    for name in CODE_DIRS:
        digest.update(f"\0{name}\0{path_digest(project_dir / name)}".encode())
    return digest.hexdigest()


def _input_paths(job: JobSpec) -> list[str]:
    """Paths read by the job: values of non-`writes` path params that are not references."""
    reads, _ = param_paths(job)
    return sorted({path for _, path in reads if not OUTPUT_REF.fullmatch(path)})


def job_cache_key(job: JobSpec, need_keys: Mapping[str, str], code: str) -> str:
    """The job's cache key (see the module docstring); `job` must be the unbound spec."""
    payload = {
        "kind": job.kind,
        "tasks": [{"params": t.params, "matrix": t.matrix} for t in job.tasks],
        "inputs": {path: path_digest(Path(path)) for path in _input_paths(job)},
        "needs": {name: need_keys[name] for name in sorted(job.needs)},
        "code": code,
    }
    if KINDS[job.kind].distributed:  # the world size sets the global batch, hence the result
        payload["world_size"] = job.resources.world_size
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CacheIndex:
    """RUNS/.cache.json: cache key -> CacheEntry of the latest completed job with that key."""

    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir = runs_dir
        self.path = runs_dir / ".cache.json"

    def lookup(self, key: str) -> CacheEntry | None:
        """A verified entry for `key`, from the index or else from a scan of the runs."""
        raw = self._read().get(key)
        if isinstance(raw, dict):
            try:
                entry = CacheEntry(**raw)
            except TypeError:
                entry = None
            if entry is not None and entry.is_complete():
                return entry
        for entry in self._scan(key):
            if entry.is_complete():
                self.record(key, entry)
                return entry
        return None

    def remember(self, run_id: str, name: str, job: Mapping[str, Any]) -> bool:
        """Index a job of run.json (`job` is its record) if it ran and completed."""
        if job.get("skipped") or not job.get("job_dir"):
            return False
        entry = CacheEntry(run=run_id, job=name, job_dir=job["job_dir"], out_dir=job["out_dir"],
                           tasks=int(job["tasks"]))
        if self._read().get(job["cache_key"]) == entry.to_dict() or not entry.is_complete():
            return False
        self.record(job["cache_key"], entry)
        return True

    def record(self, key: str, entry: CacheEntry) -> None:
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.runs_dir / ".cache.json.lock")):
            index = self._read()
            index[key] = entry.to_dict()
            atomic_write_json(self.path, index)

    def _read(self) -> dict[str, Any]:
        index = read_json(self.path)
        return index if isinstance(index, dict) else {}

    def _scan(self, key: str) -> Iterator[CacheEntry]:
        """Entries of jobs that ran (not skipped) with `key`, newest run first."""
        for run in reversed(list_runs(self.runs_dir)):
            record = read_json(run.record_path) or {}
            for name, job in record.get("jobs", {}).items():
                if job.get("cache_key") == key and job.get("job_dir"):
                    yield CacheEntry(run=run.id, job=name, job_dir=job["job_dir"],
                                     out_dir=job["out_dir"], tasks=int(job["tasks"]))
