"""`jobctl resubmit --failed`: which tasks run again, with which resources, and its record.

* `failed_selection`: the tasks of a settled run that did not complete (FAILED, CANCELLED,
  TIMEOUT, OUT_OF_MEMORY, ... or UNKNOWN), per job, skipped (cached) jobs excluded.
* `parse_overrides`: `--mem`/`--time` values `[JOB=]VALUE`, checked exactly like a manifest's
  `resources.mem` / `resources.time` (jobs.resources); a bare VALUE applies to every job being
  resubmitted, `JOB=VALUE` to that job only (it must be one of them).
* `apply_overrides`: the new resources go into run.json (`jobs.J.spec.resources`) and job.sh
  is rendered again from that spec and the run's recorded profile; the previous job.sh is
  kept as `JOB_DIR/history/job.N.sh` (N = 1, 2, ...). Only call it when no task of the job is
  pending or running (a local task reads job.sh when it starts).
* `record_resubmission`: appends `{at, by, tasks, overrides}` to run.json `resubmissions`
  (`overrides`: job -> key -> {"from": old, "to": new}). Each executor submission also records
  the resources its job.sh asked for (`submissions[-1].resources`).
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jobs.errors import UsageError
from jobs.executors import FAILURES, UNKNOWN, JobState
from jobs.plan import render_job, spec_from_dict
from jobs.resources import parse_resources
from jobs.spec import Profile, Source
from jobs.state import Run, atomic_write_bytes
from jobs.validate import Where
from jobs.yamlsafe import LineDict
from kindspec.registry import KINDS

Overrides = dict[str, dict[str, str]]  # job -> {"mem": "8G", "time": "02:00:00"}


def failed_selection(states: Sequence[JobState]) -> dict[str, list[int]]:
    """{job: [task, ...]} of every task that did not complete, in run order."""
    selection = {s.name: [t.task for t in s.tasks if t.state in FAILURES | {UNKNOWN}]
                 for s in states if not s.skipped}
    return {name: tasks for name, tasks in selection.items() if tasks}


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def parse_overrides(values: Mapping[str, Sequence[str]], kinds: Mapping[str, str]) -> Overrides:
    """{key: ["[JOB=]VALUE", ...]} (key "mem" or "time") -> {job: {key: checked value}};
    `kinds` maps each job being resubmitted to its kind. Raises InputError (`--mem: mem:
    expected a size ...`) or UsageError for a job that is not being resubmitted."""
    overrides: Overrides = {}
    for key, texts in values.items():
        for text in texts:
            name, sep, value = text.rpartition("=")
            targets = [name] if sep else list(kinds)
            if sep and name not in kinds:
                raise UsageError(f"--{key} {text}: job {name!r} has nothing to resubmit "
                                 f"(resubmitting: {', '.join(kinds)})")
            for target in targets:
                overrides.setdefault(target, {})[key] = _check_resource(key, value,
                                                                        kinds[target])
    return overrides


def _check_resource(key: str, value: str, kind: str) -> str:
    """`value` checked as the manifest's `resources.KEY` of a job of `kind` would be."""
    data = LineDict(0)
    data[key] = value
    return getattr(parse_resources(data, KINDS[kind], Where(f"--{key}"), 0), key)


def apply_overrides(run: Run, overrides: Overrides) -> Overrides:
    """Put the new resources into run.json and re-render those jobs' job.sh (see the module
    docstring). Returns job -> key -> {"from", "to"} for the record.

    Every script is rendered before anything is written, so an override that cannot render
    (say a time limit shorter than the job's warning signal) fails with nothing changed."""
    record = run.read()
    changes: dict[str, dict[str, Any]] = {}
    scripts: dict[Path, str] = {}
    for name, values in overrides.items():
        job = record["jobs"][name]
        resources = job["spec"]["resources"]
        changes[name] = {key: {"from": resources[key], "to": value}
                         for key, value in values.items()}
        spec = spec_from_dict({**job["spec"], "resources": {**resources, **values}})
        profile = profile_from_dict(record["profiles"][job["profile"]])
        scripts[Path(job["job_dir"])] = render_job(spec, profile, Path(job["job_dir"]))

    def change(record: dict[str, Any]) -> None:
        for name, values in overrides.items():
            record["jobs"][name]["spec"]["resources"].update(values)

    run.update(change)
    for job_dir, script in scripts.items():
        _replace_script(job_dir, script)
    return changes


def _replace_script(job_dir: Path, script: str) -> None:
    history = job_dir / "history"
    history.mkdir(exist_ok=True)
    attempt = len(list(history.glob("job.*.sh"))) + 1
    os.replace(job_dir / "job.sh", history / f"job.{attempt}.sh")
    atomic_write_bytes(job_dir / "job.sh", script.encode("utf-8"), mode=0o755)


def profile_from_dict(data: Mapping[str, Any]) -> Profile:
    """The inverse of Profile.to_dict (profiles as recorded in run.json)."""
    values = {key: tuple(value) if isinstance(value, list) else value
              for key, value in data.items()}
    values["source"] = Source(**data["source"])
    return Profile(**values)


def record_resubmission(run: Run, selection: Mapping[str, Sequence[int]],
                        changes: Mapping[str, Any]) -> None:
    entry = {"at": time.time(), "by": current_user(),
             "tasks": {name: list(tasks) for name, tasks in selection.items()},
             "overrides": dict(changes)}
    run.update(lambda record: record.setdefault("resubmissions", []).append(entry))
