"""`jobctl`: validate, render, submit (SLURM) or run (local) manifests; watch and fix runs.

Exit codes: 0 ok, 1 a job failed (or, for `status`, the run has a failed job), 2 bad input
(one line `jobctl: error: ...` on stderr, never a traceback), 130 interrupted.

Profiles: the host Python defaults to this interpreter (`sys.executable`) when the profile
leaves `python: python3`; relative profile paths (runs_dir, cache_dir, image, bind sources)
are made absolute against the current directory, as manifests/profiles/README.md says.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from jobs.claims import claim_keys
from jobs.doctor import doctor_command
from jobs.errors import InputError, JobFailure, UsageError
from jobs.executors import (
    ACTIVE,
    FAILURES,
    RUNNING,
    JobState,
    TaskState,
    collect_status,
    full_selection,
    get_executor,
    task_log_path,
)
from jobs.executors.slurm import SlurmExecutor, compress_indices
from jobs.image import image_group
from jobs.kind_docs import kind_reference, kinds_overview
from jobs.manifest import load_pipeline
from jobs.plan import (
    config_document,
    create_run,
    refresh_cache_keys,
    render_pipeline,
    write_job_files,
)
from jobs.profiles import load_profile
from jobs.rerun import (
    apply_overrides,
    current_user,
    failed_selection,
    parse_overrides,
    record_resubmission,
)
from jobs.resources import format_bytes, format_duration
from jobs.runreport import REPORT_NAME, write_run_report
from jobs.spec import Pipeline, Profile
from jobs.state import RUN_ID, Run, find_run, resolve_runs_dir
from jobs.taskstatus import TaskUsage, archive_task_status
from jobs.validate import did_you_mean
from kindspec.registry import KINDS

DEFAULT_PYTHON = Profile.__dataclass_fields__["python"].default
RUNS_DIR_HELP = "runs directory (default: $JOBCTL_RUNS_DIR, the profile's runs_dir, ./runs)"
FIND_RUNS_HELP = "runs directory to look in (default: $JOBCTL_RUNS_DIR, else ./runs)"


class _Group(click.Group):
    """Turns jobctl's own errors into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (InputError, UsageError) as exc:
            click.echo(f"jobctl: error: {exc}", err=True)
            ctx.exit(2)
        except JobFailure as exc:
            click.echo(f"jobctl: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("jobctl: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """jobctl: YAML manifests -> SLURM or local batch jobs (lyricgen steps)."""


def main() -> None:
    cli.main(prog_name="jobctl")


cli.add_command(image_group)
cli.add_command(doctor_command)


def prepare_profile(profile: Profile, base: Path) -> Profile:
    """The profile with python defaulted to sys.executable and relative paths absolute."""
    def absolute(path: str | None) -> str | None:
        return None if path is None else str((base / path).absolute())

    def bind(spec: str) -> str:
        source, sep, rest = spec.partition(":")
        return f"{absolute(source)}{sep}{rest}"

    return dataclasses.replace(
        profile,
        python=sys.executable if profile.python == DEFAULT_PYTHON else profile.python,
        runs_dir=absolute(profile.runs_dir), cache_dir=absolute(profile.cache_dir),
        image=absolute(profile.image), binds=tuple(bind(b) for b in profile.binds))


def load(manifest: str, profile: str | None) -> tuple[Pipeline, dict[str, Profile]]:
    path = Path(manifest)
    if not path.is_file():
        raise UsageError(f"{manifest}: no such manifest file")
    pipeline = load_pipeline(path, profile=profile)
    names = dict.fromkeys(job.profile for job in pipeline.jobs)
    return pipeline, {name: prepare_profile(load_profile(name), Path.cwd()) for name in names}


def _runs_dir(option: str | None, profiles: dict[str, Profile]) -> Path:
    return resolve_runs_dir(option, next(iter(profiles.values()), None))


def _run_and_rest(runs_dir: Path, args: Sequence[str]) -> tuple[Run, list[str]]:
    """The first arg names the run when it is a run id or run dir; the rest are jobs."""
    if args and (RUN_ID.fullmatch(args[0]) or (Path(args[0]) / "run.json").is_file()):
        return find_run(runs_dir, args[0]), list(args[1:])
    return find_run(runs_dir, None), list(args)


def _check_jobs(record: dict[str, Any], names: Sequence[str]) -> None:
    for name in names:
        if name not in record["jobs"]:
            raise UsageError(f"run {record['run_id']} has no job {name!r} "
                             f"(jobs: {', '.join(record['order'])})")


@cli.command()
@click.argument("manifests", nargs=-1, required=True)
@click.option("--profile", help="profile name or .yaml path for every job")
def validate(manifests: tuple[str, ...], profile: str | None) -> None:
    """Check manifests (and their profiles) and summarise each job."""
    for manifest in manifests:
        pipeline, _ = load(manifest, profile)
        click.echo(f"{manifest}: ok, {len(pipeline.jobs)} job(s)")
        for job in pipeline.jobs:
            tasks = f"{len(job.tasks)} tasks (array)" if job.array else "1 task"
            needs = ", ".join(job.needs) or "-"
            click.echo(f"  {job.name:<16} kind={job.kind:<10} {tasks:<16} needs={needs:<16} "
                       f"profile={job.profile}")


@cli.command()
@click.argument("kind", required=False)
def kinds(kind: str | None) -> None:
    """List the job kinds, or one KIND's params with their defaults and ranges."""
    if kind is None:
        click.echo(kinds_overview())
        return
    if kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r} (kinds: {', '.join(KINDS)})"
                         f"{did_you_mean(kind, KINDS)}")
    click.echo(kind_reference(KINDS[kind]))


@cli.command()
@click.argument("manifest")
@click.option("--profile", help="profile name or .yaml path for every job")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="write DIR/<job>/job.sh and config.json instead of printing them")
def render(manifest: str, profile: str | None, out_dir: str | None) -> None:
    """Render job.sh and config.json only (dry run).

    Without --out both are printed, as if the run dir were runs/RUN-ID."""
    pipeline, profiles = load(manifest, profile)
    base = Path(out_dir).absolute() if out_dir else Path("runs/RUN-ID").absolute()
    for job, job_dir, script in render_pipeline(pipeline, profiles, base):
        if out_dir:
            click.echo(f"{job.name}: {write_job_files(job, script, 'render', job_dir)}")
            continue
        config = json.dumps(config_document(job, "render", job_dir), indent=2)
        click.echo(f"### {job_dir / 'job.sh'}\n{script}\n### {job_dir / 'config.json'}\n"
                   f"{config}\n")


def _announce(run: Run) -> dict[str, Any]:
    record = run.read()
    click.echo(f"run {run.id}: {run.dir}")
    for name in record["order"]:
        job = record["jobs"][name]
        if job["skipped"]:
            origin = job["cached_from"]
            click.echo(f"  {name:<16} skipped: cached from {origin['run']}/{origin['job']} "
                       f"({origin['out_dir']})")
        elif job.get("resumed_from"):
            origin = job["resumed_from"]
            click.echo(f"  {name:<16} resumes from the checkpoint of {origin['run']}/"
                       f"{origin['job']}, which did not complete (--force starts fresh)")
    return record


@cli.command()
@click.argument("manifest")
@click.option("--profile", help="profile name or .yaml path for every job")
@click.option("--force", is_flag=True, help="run every job, even if a cached result exists")
@click.option("--dry-run", is_flag=True, help="write the run dir, print what would run, stop")
@click.option("--parallel", default=1, show_default=True, type=click.IntRange(1),
              help="tasks run at once (profiles with executor: local)")
@click.option("--runs-dir", help=RUNS_DIR_HELP)
def submit(manifest: str, profile: str | None, force: bool, dry_run: bool, parallel: int,
           runs_dir: str | None) -> None:
    """Submit a manifest with its profile's executor.

    `executor: slurm`: sbatch, with dependencies and arrays; `executor: local`: bash on this
    machine, like `jobctl run`."""
    pipeline, profiles = load(manifest, profile)
    executors = sorted({p.executor for p in profiles.values()})
    if len(executors) > 1:
        raise UsageError(f"{manifest}: its jobs use profiles with different executors "
                         f"({', '.join(executors)}); pass --profile or split the manifest")
    run = create_run(pipeline, profiles, _runs_dir(runs_dir, profiles), executor=executors[0],
                     force=force, dry_run=dry_run)
    record = _announce(run)
    selection = full_selection(record)
    if not selection:
        click.echo("nothing to submit: every job is cached (use --force to rerun)")
    elif dry_run:
        _print_plan(record, selection)
    elif record["executor"] == "local":
        _run_local(run, selection, parallel)
    else:
        _submit_slurm(run, selection)


def _submit_slurm(run: Run, selection: dict[str, list[int]]) -> None:
    """sbatch the selected tasks, then the job that writes the run report after them."""
    executor = SlurmExecutor()
    executor.submit(run, selection)
    _print_submissions(run.read(), selection)
    try:
        entry = executor.submit_report(run, selection, sys.executable)
    except UsageError as exc:
        click.echo(f"jobctl: warning: the run report job was not queued ({exc}); write the "
                   f"report by hand when the run has ended: jobctl report {run.id}", err=True)
        return
    if entry is not None:
        click.echo(f"  run report: {run.dir / REPORT_NAME}, written by SLURM job "
                   f"{entry['job_id']} once these jobs have ended")
        if entry.get("note"):
            click.echo(f"jobctl: warning: run report job: {entry['note']}", err=True)


def _print_plan(record: dict[str, Any], selection: dict[str, list[int]]) -> None:
    """What submit would start, as shell commands (paths quoted), needs shown as <job>."""
    for name, tasks in selection.items():
        job = record["jobs"][name]
        if record["executor"] == "local":
            after = ", ".join(n for n in job["needs"] if n in selection)
            line = f"bash {shlex.quote(job['job_dir'] + '/job.sh')}" + (
                f" (after {after})" if after else "")
        else:
            needs = [f"<{n}>" for n in job["needs"] if n in selection]
            line = shlex.join(SlurmExecutor.sbatch_argv(job, tasks, needs))
        click.echo(f"  {name:<16} {line}")


def _print_submissions(record: dict[str, Any], selection: dict[str, list[int]]) -> None:
    for name in selection:
        submission = record["jobs"][name]["submissions"][-1]
        deps = submission.get("dependency")
        after = f" (afterok {':'.join(deps)})" if deps else ""
        tasks = submission["tasks"]
        array = f" tasks {compress_indices(tasks)}" if record["jobs"][name]["array"] else ""
        click.echo(f"  {name:<16} submitted as {submission['job_id']}{array}{after}")
        if submission.get("note"):
            click.echo(f"jobctl: warning: {name}: {submission['note']}", err=True)


@cli.command("run")
@click.argument("manifest")
@click.option("--profile", help="profile name or .yaml path for every job")
@click.option("--force", is_flag=True, help="run every job, even if a cached result exists")
@click.option("--parallel", default=1, show_default=True, type=click.IntRange(1),
              help="tasks run at once")
@click.option("--runs-dir", help=RUNS_DIR_HELP)
def run_command(manifest: str, profile: str | None, force: bool, parallel: int,
                runs_dir: str | None) -> None:
    """Run a manifest on this machine (bash), whatever the profile's executor.

    The job.sh scripts are the ones `submit` would hand to sbatch."""
    pipeline, profiles = load(manifest, profile)
    for job in pipeline.jobs:
        if job.resources.nodes > 1:
            raise UsageError(f"{manifest}: job {job.name} asks for {job.resources.nodes} nodes "
                             "but `jobctl run` uses this machine only: `jobctl submit` it with "
                             "a SLURM profile, or set resources.nodes: 1")
    run = create_run(pipeline, profiles, _runs_dir(runs_dir, profiles), executor="local",
                     force=force)
    selection = full_selection(_announce(run))
    if not selection:
        click.echo("nothing to run: every job is cached (use --force to rerun)")
        return
    _run_local(run, selection, parallel)


def _run_local(run: Run, selection: dict[str, list[int]], parallel: int) -> None:
    ok = get_executor("local", parallel=parallel).submit(run, selection)
    states = collect_status(run)
    _print_states(run, states, header=False)
    _write_report(run)
    if not ok:
        raise JobFailure(_failure_summary(states))


def _write_report(run: Run) -> None:
    """The run report at the end of a local run; a failure to write it is a warning, never
    the run's failure (`jobctl report` writes it again)."""
    try:
        path = write_run_report(run)
    except OSError as exc:
        click.echo(f"jobctl: warning: run report not written: {exc}", err=True)
        return
    click.echo(f"run report: {path}")


def _failure_summary(states: Sequence[JobState]) -> str:
    failed = [f"{s.name} ({s.state.lower()})" for s in states if s.state in FAILURES]
    return f"{len(failed)} job(s) did not complete: {', '.join(failed)}"


def _print_states(run: Run, states: Sequence[JobState], header: bool = True) -> None:
    """One row per job (task `-`; for an array, `all` with the count per state, the span
    from the first start to the last end and the largest peak) and one per array task.
    ELAPSED: wall time (so far, for a running task); PEAK/MEM: peak resident memory of the
    task (jobs/taskstatus.py) / the --mem it asked for."""
    if header:
        click.echo(f"run {run.id}: {run.dir}")
    click.echo(f"  {'JOB':<16} {'TASK':>4}  {'STATE':<13} {'EXIT':>4}  {'JOB ID':<12} "
               f"{'ELAPSED':>9}  {'PEAK/MEM':<11} REASON")
    now = time.time()
    for job in states:
        if len(job.tasks) > 1:
            _print_row(job.name, "all", job.state, None, None, _job_usage(job, now),
                       job.reason)
        for task in job.tasks:
            label = str(task.task) if len(job.tasks) > 1 else "-"
            _print_row(job.name, label, task.state, task.exit_code, task.job_id,
                       _task_usage(task, now), task.reason)


def _task_usage(task: TaskState, now: float) -> tuple[float | None, int | None, str | None]:
    """(elapsed, peak bytes, --mem) of one task for the table."""
    usage = task.usage or TaskUsage()
    return (usage.elapsed(now if task.state == RUNNING else None), usage.peak_rss_bytes,
            task.mem)


def _job_usage(job: JobState, now: float) -> tuple[float | None, int | None, str | None]:
    """(span from the first start to the last end, largest peak, --mem) of an array."""
    usages = [(t.usage, t.state) for t in job.tasks if t.usage and t.usage.started]
    starts = [u.started for u, _ in usages]
    ends = [u.started + (u.elapsed(now if s == RUNNING else None) or 0) for u, s in usages]
    peaks = [u.peak_rss_bytes for u, _ in usages if u.peak_rss_bytes is not None]
    return ((max(ends) - min(starts)) if starts else None, max(peaks) if peaks else None,
            job.tasks[0].mem if job.tasks else None)


def _print_row(name: str, label: str, state: str, code: int | None, job_id: str | None,
               usage: tuple[float | None, int | None, str | None], reason: str | None) -> None:
    exit_text = "-" if code is None else str(code)
    elapsed, peak, mem = usage
    elapsed_text = "-" if elapsed is None else format_duration(elapsed)
    memory = f"{'-' if peak is None else format_bytes(peak)}/{mem or '-'}"
    click.echo(f"  {name:<16} {label:>4}  {state:<13} {exit_text:>4}  {job_id or '-':<12} "
               f"{elapsed_text:>9}  {memory:<11} {reason or ''}".rstrip())


@cli.command()
@click.argument("run", required=False)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--runs-dir", help=FIND_RUNS_HELP)
def status(run: str | None, as_json: bool, runs_dir: str | None) -> None:
    """Show the state of every job and task of a run.

    RUN defaults to the latest run. Exit code 1 when a job failed or was cancelled."""
    found = find_run(resolve_runs_dir(runs_dir), run)
    states = collect_status(found)
    record = found.read()
    page = found.dir / REPORT_NAME
    if as_json:
        click.echo(json.dumps({
            "run": found.id, "run_dir": str(found.dir), "executor": record["executor"],
            "dry_run": record["dry_run"], "report": str(page) if page.is_file() else None,
            "jobs": [s.to_dict() for s in states]}, indent=2))
    else:
        _print_states(found, states)
        if page.is_file():
            click.echo(f"run report: {page}")
        elif record.get("report_jobs"):
            click.echo(f"run report: {page}, once SLURM job "
                       f"{record['report_jobs'][-1]['job_id']} has written it")
    if any(s.state in FAILURES for s in states):
        raise JobFailure(_failure_summary(states))


@cli.command()
@click.argument("run", required=False)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help=f"write the page here (default: RUN_DIR/{REPORT_NAME})")
@click.option("--runs-dir", help=FIND_RUNS_HELP)
def report(run: str | None, out: Path | None, runs_dir: str | None) -> None:
    """Write the run report: one self-contained HTML page (no network; open it from disk).

    RUN defaults to the latest run. The page shows the DAG of jobs, a timeline of every task,
    each task's state, time, CPU and peak memory against what it asked, the end of the log
    of failed tasks, every training task side by side with the best marked and their
    learning curves, and the metrics and a few verses of every generation grid. `jobctl run`
    writes it at the end; after `jobctl submit` a SLURM job does, once the run's jobs have
    ended. Works on a run still going (it says so). Prints the page's path."""
    found = find_run(resolve_runs_dir(runs_dir), run)
    try:
        click.echo(write_run_report(found, out))
    except OSError as exc:
        raise UsageError(f"{exc.filename or out}: cannot write the report: "
                         f"{exc.strerror}") from exc


def _log_path(record: dict[str, Any], name: str, task: int) -> Path:
    path = task_log_path(record["jobs"][name], task)
    if path is None:
        raise UsageError(f"{name}:{task} has no log: it was never submitted, or sbatch gave "
                         "no job id (see jobctl status)")
    return path


def _parse_target(target: str, record: dict[str, Any]) -> tuple[str, list[int]]:
    name, _, task_text = target.partition(":")
    _check_jobs(record, [name])
    job = record["jobs"][name]
    if job["skipped"]:
        origin = job["cached_from"]
        raise UsageError(f"job {name!r} was skipped (cached): its logs are in run "
                         f"{origin['run']}, job {origin['job']}")
    count = job["tasks"]
    if not task_text:
        return name, list(range(count))
    if not task_text.isdigit() or int(task_text) >= count:
        raise UsageError(f"{target}: task must be a number from 0 to {count - 1}")
    return name, [int(task_text)]


@cli.command()
@click.argument("target", metavar="JOB[:TASK]")
@click.option("--run", "run_name", help="run id (default: the latest run)")
@click.option("-f", "--follow", is_flag=True, help="keep printing until the task ends")
@click.option("--runs-dir", help=FIND_RUNS_HELP)
def logs(target: str, run_name: str | None, follow: bool, runs_dir: str | None) -> None:
    """Print a job's log, or follow it with -f.

    Without :TASK, an array job's logs are printed one after the other."""
    found = find_run(resolve_runs_dir(runs_dir), run_name)
    record = found.read()
    name, tasks = _parse_target(target, record)
    if follow:
        if len(tasks) != 1:
            raise UsageError(f"--follow needs one task: {name}:N")
        _follow(found, name, tasks[0], _log_path(record, name, tasks[0]))
        return
    for task in tasks:
        path = _log_path(record, name, task)
        if len(tasks) > 1:
            click.echo(f"==> {path} <==")
        if not path.exists():
            click.echo(f"(no log yet: {path})", err=True)
            continue
        click.echo(path.read_text(encoding="utf-8", errors="replace"), nl=False)


def _follow(run: Run, name: str, task: int, path: Path) -> None:
    offset = 0
    while True:
        ended = next(s for s in collect_status(run) if s.name == name).tasks[task].state \
            not in ACTIVE
        if path.exists():
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            offset += len(chunk)
            click.echo(chunk.decode("utf-8", errors="replace"), nl=False)
        if ended:
            return
        time.sleep(1.0)


@cli.command()
@click.argument("args", nargs=-1, metavar="[RUN] [JOB]...")
@click.option("--runs-dir", help=FIND_RUNS_HELP)
def cancel(args: tuple[str, ...], runs_dir: str | None) -> None:
    """Cancel pending and running jobs of a run.

    RUN defaults to the latest run; without JOBs, every job of the run. Who cancelled is
    recorded in run.json (`cancellations`) and shown by `jobctl status`."""
    found, names = _run_and_rest(resolve_runs_dir(runs_dir), args)
    record = found.read()
    _check_jobs(record, names)
    jobs = names or [n for n in record["order"] if not record["jobs"][n]["skipped"]]
    cancelled = get_executor(record["executor"]).cancel(found, record, jobs)
    if cancelled:
        entry = {"by": current_user(), "at": time.time(), "jobs": jobs, "what": cancelled}
        found.update(lambda r: r.setdefault("cancellations", []).append(entry))
    click.echo(f"run {found.id}: cancelled {', '.join(cancelled)}" if cancelled
               else f"run {found.id}: nothing to cancel")


@cli.command()
@click.argument("run", required=False)
@click.option("--failed", is_flag=True, help="rerun failed/cancelled jobs and array tasks "
              "and their dependents that did not complete")
@click.option("--mem", multiple=True, metavar="[JOB=]SIZE",
              help="memory for the rerun, like resources.mem (8G); JOB= limits it to one job")
@click.option("--time", "time_limit", multiple=True, metavar="[JOB=]LIMIT",
              help="time limit for the rerun, like resources.time (02:00:00); JOB= limits it "
                   "to one job")
@click.option("--parallel", default=1, show_default=True, type=click.IntRange(1),
              help="tasks run at once (local runs)")
@click.option("--runs-dir", help=FIND_RUNS_HELP)
def resubmit(run: str | None, failed: bool, mem: tuple[str, ...], time_limit: tuple[str, ...],
             parallel: int, runs_dir: str | None) -> None:
    """Rerun the failed jobs and tasks of a run.

    RUN defaults to the latest run. Failed and cancelled jobs, failed array tasks (only
    those indices) and their dependents that did not complete run again in the same run
    dir, with the same executor; dependents wait for the new job ids. --mem/--time change
    the resources of the rerun: job.sh is rendered again (the old one is kept in
    JOB_DIR/history/) and run.json records the resubmission."""
    if not failed:
        raise UsageError("resubmit reruns failed work only: pass --failed")
    found = find_run(resolve_runs_dir(runs_dir), run)
    states = collect_status(found)
    active = [s.name for s in states if s.state in ACTIVE]
    if active:
        raise UsageError(f"run {found.id} still has pending or running jobs "
                         f"({', '.join(active)}): wait for them or `jobctl cancel` them first")
    selection = failed_selection(states)
    if not selection:
        click.echo(f"run {found.id}: nothing to resubmit, every job completed")
        return
    overrides = parse_overrides({"mem": mem, "time": time_limit},
                                {s.name: s.kind for s in states if s.name in selection})
    refresh_cache_keys(found, list(selection))
    record = found.read()
    claim_keys(found.dir.parent, found.id,
               {name: record["jobs"][name]["cache_key"] for name in selection})
    changes = apply_overrides(found, overrides)
    record_resubmission(found, selection, changes)
    record = found.read()
    for name, tasks in selection.items():
        for task in tasks:
            archive_task_status(Path(record["jobs"][name]["job_dir"]), task)
    click.echo(f"run {found.id}: resubmitting " + ", ".join(
        f"{name}[{compress_indices(tasks)}]" for name, tasks in selection.items()))
    for name, keys in changes.items():
        click.echo(f"  {name}: " + ", ".join(f"{key} {c['from']} -> {c['to']}"
                                             for key, c in keys.items()))
    if record["executor"] == "local":
        _run_local(found, selection, parallel)
        return
    _submit_slurm(found, selection)


if __name__ == "__main__":  # `python -m jobs.cli`: how the report job runs jobctl
    main()
