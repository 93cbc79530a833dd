"""Turn a loaded pipeline into a run directory: cache decisions, bound outputs, job files.

`create_run` is what `jobctl submit`, `jobctl run` and `jobctl render` share; it submits
nothing. The executors (jobs.executors) take the Run it returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jobs import PROJECT_DIR, cache
from jobs.claims import claim_keys
from jobs.errors import InputError, UsageError
from jobs.manifest import bind_outputs
from jobs.render import render_script, sbatch_log_path
from jobs.resume import ResumePoint, find_resume_point, seed_out_dir
from jobs.runtime import param_paths
from jobs.spec import JobSpec, Pipeline, Profile, Resources, Source, Task
from jobs.state import RUN_SCHEMA, Run, atomic_write_bytes, atomic_write_json, claim_run_dir
from kindspec.provenance import git_commit, package_versions
from kindspec.registry import KINDS

CONFIG_SCHEMA = 1

def config_document(job: JobSpec, run_id: str, job_dir: Path) -> dict[str, Any]:
    """config.json for lyricgen (schema 1, see lyricgen/context.py `load_config`)."""
    return {
        "schema": CONFIG_SCHEMA, "kind": job.kind, "job": job.name, "run_id": run_id,
        "job_dir": str(job_dir), "out_dir": str(job_dir / "out"),
        "tasks": [{"index": t.index, "params": t.params, "matrix": t.matrix}
                  for t in job.tasks],
    }


def render_job(job: JobSpec, profile: Profile, job_dir: Path, *,
               executor: str | None = None) -> str:
    """job.sh text; InputError (pointing at the job in its manifest) if it cannot be rendered,
    or, for `executor` "slurm", if sbatch cannot name its log (jobs.render.sbatch_log_path)."""
    try:
        if executor == "slurm":
            sbatch_log_path(job_dir, job.array)
        return render_script(job, profile, job_dir=job_dir, project_dir=PROJECT_DIR)
    except ValueError as exc:
        raise InputError(job.source.path, job.source.line, f"jobs.{job.name}", str(exc)) from exc


def write_job_files(job: JobSpec, script: str, run_id: str, job_dir: Path) -> Path:
    """job.sh, config.json and the logs/, status/ and out/ dirs of one job; returns job.sh."""
    for sub in ("logs", "status", "out"):
        (job_dir / sub).mkdir(parents=True, exist_ok=True)
    atomic_write_json(job_dir / "config.json", config_document(job, run_id, job_dir))
    return atomic_write_bytes(job_dir / "job.sh", script.encode("utf-8"), mode=0o755)


def render_pipeline(pipeline: Pipeline, profiles: Mapping[str, Profile],
                    base_dir: Path) -> list[tuple[JobSpec, Path, str]]:
    """(bound job, job dir, job.sh text) for every job as if the run dir were `base_dir`
    (no cache lookups: every job is shown). Writes nothing."""
    bound = bind_outputs(pipeline, lambda name: base_dir / name / "out")
    return [(job, base_dir / job.name, render_job(job, profiles[job.profile], base_dir / job.name))
            for job in bound.jobs]


def create_run(pipeline: Pipeline, profiles: Mapping[str, Profile], runs_dir: Path, *,
               executor: str, force: bool = False, dry_run: bool = False) -> Run:
    """Make a new run dir for `pipeline`: decide which jobs are cached (skipped), bind output
    references, write every other job's files and run.json. Submits nothing.

    `pipeline` is as loaded (references unbound); `profiles` maps each job's profile name to
    its Profile. A checkpointing job that an earlier run left failed resumes from a copy of
    its out dir (jobs.resume; not in a dry run). With `force`, no job is skipped or resumed.
    Raises InputError for a job that cannot be rendered, before anything is written, and
    UsageError when another live run computes one of the jobs (jobs.claims; not checked in a
    dry run), leaving no run dir.

    run.json: schema, run_id, created, executor, dry_run, manifest {path, text}, profiles,
    git_commit, code_version, versions, order (job names, needs first) and jobs {name: {kind,
    profile, needs, tasks, array, cache_key, skipped, cached_from (CacheEntry dict or null),
    resumed_from (jobs.resume.ResumePoint dict or null: the out dir started as its copy),
    job_dir (null when skipped), out_dir, spec (bound JobSpec.to_dict), loaded_spec (as
    loaded, references unbound: what the cache key hashes), submissions: []}}.
    """
    index = cache.CacheIndex(runs_dir)
    code = cache.code_version(PROJECT_DIR)
    keys: dict[str, str] = {}
    hits: dict[str, cache.CacheEntry] = {}
    resumes: dict[str, ResumePoint] = {}
    for job in pipeline.jobs:
        keys[job.name] = cache.job_cache_key(job, {n: keys[n] for n in job.needs}, code)
        hit = None if force else index.lookup(keys[job.name])
        if hit is not None:
            hits[job.name] = hit
        elif not force and KINDS[job.kind].checkpoints:
            point = find_resume_point(runs_dir, keys[job.name])
            if point is not None:
                resumes[job.name] = point

    def prepare(run_dir: Path) -> tuple[Pipeline, dict[str, str], Callable[[str], Path]]:
        def out_dir_of(name: str) -> Path:
            return Path(hits[name].out_dir) if name in hits else run_dir / name / "out"

        bound = bind_outputs(pipeline, out_dir_of)
        scripts = {job.name: render_job(job, profiles[job.profile], run_dir / job.name,
                                        executor=executor)
                   for job in bound.jobs if job.name not in hits}
        return bound, scripts, out_dir_of

    # The run dir is created only after rendering, exclusively (concurrent submits).
    run_dir, (bound, scripts, out_dir_of) = claim_run_dir(runs_dir, prepare)
    if not dry_run:
        try:
            claim_keys(runs_dir, run_dir.name,
                       {job.name: keys[job.name] for job in pipeline.jobs if job.name not in hits})
        except UsageError:
            run_dir.rmdir()  # still empty
            raise
        _make_bound_dirs(bound, profiles, hits)
    jobs: dict[str, Any] = {}
    for job in bound.jobs:
        hit = hits.get(job.name)
        job_dir = None if hit else run_dir / job.name
        if job_dir is not None:
            write_job_files(job, scripts[job.name], run_dir.name, job_dir)
        resume = resumes.get(job.name) if not dry_run else None
        if resume is not None:
            seed_out_dir(resume, out_dir_of(job.name))
        jobs[job.name] = {
            "kind": job.kind, "profile": job.profile, "needs": list(job.needs),
            "tasks": len(job.tasks), "array": job.array, "cache_key": keys[job.name],
            "skipped": hit is not None, "cached_from": hit.to_dict() if hit else None,
            "resumed_from": resume.to_dict() if resume else None,
            "job_dir": str(job_dir) if job_dir else None, "out_dir": str(out_dir_of(job.name)),
            "spec": job.to_dict(), "loaded_spec": pipeline.job(job.name).to_dict(),
            "submissions": [],
        }
    atomic_write_json(run_dir / "run.json", {
        "schema": RUN_SCHEMA, "run_id": run_dir.name, "created": time.time(),
        "executor": executor, "dry_run": dry_run,
        "manifest": {"path": str(Path(pipeline.source).absolute()), "text": pipeline.text},
        "profiles": {name: profile.to_dict() for name, profile in profiles.items()},
        "git_commit": git_commit(PROJECT_DIR), "code_version": code,
        "versions": package_versions(), "order": [job.name for job in bound.jobs],
        "jobs": jobs,
    })
    return Run(run_dir)


def _make_bound_dirs(pipeline: Pipeline, profiles: Mapping[str, Profile],
                     skipped: Mapping[str, Any]) -> None:
    """Create what jobs.runtime.container_binds binds read-write and no job creates before
    apptainer starts (it refuses to bind a missing source): every profile's cache dir, and
    the directories that the `writes` params of jobs under an apptainer profile name."""
    for profile in profiles.values():
        if profile.cache_dir:
            _make_dir(profile.cache_dir, profile.source.path, None, "cache_dir")
    for job in pipeline.jobs:
        if profiles[job.profile].runtime == "apptainer" and job.name not in skipped:
            for name, path in param_paths(job)[1]:
                _make_dir(path, job.source.path, job.source.line, f"jobs.{job.name}.params.{name}")


def _make_dir(path: str, source: str, line: int | None, key: str) -> None:
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(source, line, key, f"cannot create directory {path!r}: "
                         f"{exc.strerror}") from exc


def spec_from_dict(data: Mapping[str, Any]) -> JobSpec:
    """The inverse of JobSpec.to_dict (for specs read back from run.json)."""
    return JobSpec(**{
        **data, "needs": tuple(data["needs"]), "resources": Resources(**data["resources"]),
        "tasks": tuple(Task(**task) for task in data["tasks"]), "source": Source(**data["source"]),
    })


def refresh_cache_keys(run: Run, names: Sequence[str]) -> None:
    """Recompute the cache keys of jobs about to run again (inputs or code may have changed
    since the run was created), so that the index never maps an old key to new outputs."""
    code = cache.code_version(PROJECT_DIR)

    def change(record: dict[str, Any]) -> None:
        for name in record["order"]:
            if name in names:
                job = record["jobs"][name]
                spec = spec_from_dict(job["loaded_spec"])
                needs = {n: record["jobs"][n]["cache_key"] for n in spec.needs}
                job["cache_key"] = cache.job_cache_key(spec, needs, code)

    run.update(change)
