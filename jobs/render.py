"""Render a job's bash script (templates/sbatch.sh.j2) from its spec and profile.

`render_script` is a pure function: no clock, no environment, no I/O besides reading the
template, so the same spec always gives the same text (golden files in tests/golden/). The
script works under `sbatch` and under plain `bash job.sh` (the local executor sets
SLURM_ARRAY_TASK_ID for array tasks). It runs
`<runtime argv> -m lyricgen KIND --config JOB_DIR/config.json --task $TASK` from the project
dir, with TASK = $SLURM_ARRAY_TASK_ID (default 0) for arrays and 0 for single jobs; a
distributed job runs it behind torchrun (and srun for several nodes; see jobs/runtime.py).
Parameter values never appear in the script: they live only in config.json, except that
under apptainer the paths a job reads or writes are also bound, each `--bind` one quoted
word (jobs.runtime.container_binds).

A multi-node job's script runs only inside an sbatch allocation of its node count: under
plain bash it records FAILED with exit code 2 and says why before starting anything. Inside
one it finds the batch node's address (`node_address`: the profile's network_interface, else
the node's NodeAddr; a node name is never looked up), logs `job.sh: rendezvous at ADDR:PORT
(node NODE) for nodes LIST` and starts srun; a node without an address fails the job with one
line `job.sh: node NODE: no address for the torch rendezvous: ...` (exit 1). The exported
shell functions node_address and node_env run again on every node (jobs/runtime.py).

Paths never appear on #SBATCH lines (SLURM does not shell-parse them): the log file is given
on the sbatch command line, one argv word each for `--output` and `--error`
(`sbatch_log_path`: `JOB_DIR/logs/slurm-%j.out`, or `logs/slurm-%A_%a.out` for arrays). The
caller must create `JOB_DIR/logs/` (SLURM opens the log before the script starts) and write
`JOB_DIR/config.json`. In job.sh itself every path is one quoted shell word, so any character
works there except a line break (refused: SLURM's one-line job records could not hold it).

Status file: job.sh writes `JOB_DIR/status/<TASK>.json` at start (RUNNING) and at exit
(COMPLETED, FAILED, CANCELLED, ...); its schema and the meaning of each state are in
jobs/taskstatus.py, which hands the keys to the template. With the end it records what the
task used (wall, CPU, peak memory, GPU peak): the command runs under
`python3 -I -S PROJECT/jobs/accounting.py` when the node has a python3 (otherwise directly,
and the peak memory stays unknown).

Preemption and time limits (kinds that checkpoint): the header adds `--requeue`,
`--open-mode=append` (a requeued job appends to its log instead of truncating it) and, unless
resources.signal_seconds is 0, `--signal=B:USR1@N` (jobs.resources.warning_seconds): SLURM
sends SIGUSR1 to the batch shell only, N seconds before the time limit (`scancel
--signal=USR1 --batch ID` does the same by hand). The script forwards it to lyricgen (under
torchrun to torchrun, which jobs.runtime starts with --signals-to-handle including SIGUSR1,
so it forwards it to every worker and waits up to --shutdown-timeout for them; across nodes
to srun, which forwards it to each node's torchrun and exits with their code), which saves
a checkpoint and exits 75 (lyricgen.preempt). Then, by lyricgen's exit code: 0 (it finished
in time) COMPLETED, 2 (bad input) FAILED, anything else is a preemption: 75 means a
checkpoint was saved at the signal, others (torchrun exits 1 after forwarding a signal; a
process signalled while loading dies of SIGUSR1, 138) that the rerun resumes from the newest
periodic checkpoint. A preempted script runs `scontrol requeue $SLURM_JOB_ID` (an array
task's own id) when SLURM_JOB_ID is a number, and records REQUEUED (SLURM starts the job
again from the top of job.sh after its requeue delay, about 2 minutes, and it resumes from
the checkpoint); otherwise (local executor, or the requeue failed) it records PREEMPTED with
the reason and exits with lyricgen's code, and `jobctl resubmit --failed` resumes it. Exit
75 without a signal to the script (lyricgen signalled directly) is handled the same way.
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from jobs.resources import time_limit_seconds, warning_seconds
from jobs.runtime import (
    ENV_NAME,
    RDZV_ENDPOINT,
    ScriptVariable,
    Word,
    cache_env,
    container_env_names,
    launch_env,
    lyricgen_argv,
)
from jobs.spec import SAFE_NAME, JobSpec, Profile
from jobs.taskstatus import PEAK_SOURCES, STATUS_KEYS, STATUS_SCHEMA
from kindspec.registry import KINDS
from kindspec.schema import Kind

TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "templates"
TEMPLATE = "sbatch.sh.j2"
REPORT_TEMPLATE = "run_report.sh.j2"
REPORT_MEM, REPORT_TIME = "1G", "00:15:00"  # the report job's (jobs.runreport)
# Options the renderer sets itself; a profile or job `extra` may not override them.
RESERVED_SBATCH = frozenset({
    "job-name", "output", "error", "cpus-per-task", "mem", "time", "nodes", "partition",
    "gres", "array", "chdir", "export", "dependency", "parsable", "wrap", "ntasks",
    "ntasks-per-node", "signal", "requeue", "no-requeue", "open-mode",
})
SBATCH_KEY = re.compile(r"^[a-z][a-z0-9-]*$")
# #SBATCH lines are not shell-parsed: values must be single plain words.
SBATCH_VALUE = re.compile(r"^[A-Za-z0-9_.,:+=/@%-]+$")
SLURM_LOG = {False: "slurm-%j.out", True: "slurm-%A_%a.out"}  # by job.array
# Run by job.sh around the command, from the project dir (its docstring says why).
ACCOUNTING_SCRIPT = Path("jobs") / "accounting.py"


def render_script(job: JobSpec, profile: Profile, *, job_dir: Path, project_dir: Path) -> str:
    """The job script for `job` under `profile`; `job_dir` (runs/RUN/JOB) and `project_dir`
    (the checkout, the script's working directory) must be absolute.

    Raises ValueError with a one-line message for values that cannot be rendered safely:
    a relative job_dir or project_dir, or one with a newline or that is not UTF-8, a bad job
    name, env name, sbatch option or bind path, or a reserved sbatch option.
    """
    _check_paths(job_dir, project_dir)
    if not SAFE_NAME.match(job.name):
        raise ValueError(f"job name {job.name!r} must match {SAFE_NAME.pattern}")
    job_env = launch_env(job, profile)
    env = {**cache_env(profile), **job_env, **profile.env}
    kind = KINDS.get(job.kind)
    _check_signal(job, kind)
    for name in env:
        if not ENV_NAME.match(name):
            raise ValueError(f"profile {profile.name}: env: {name!r} is not a valid "
                             "environment variable name")
    return _environment().get_template(TEMPLATE).render(
        job=job,
        job_dir=str(job_dir),
        project_dir=str(project_dir),
        sbatch=sbatch_options(job, profile),
        env=env,
        container_env=container_env_names(profile, job_env),
        modules=profile.modules,
        argv=lyricgen_argv(job, profile, project_dir, job_dir),
        rdzv_endpoint=RDZV_ENDPOINT,
        network_interface=profile.network_interface,
        apptainer=profile.runtime == "apptainer",
        status_schema=STATUS_SCHEMA,
        status_keys=STATUS_KEYS,
        peak_sources=PEAK_SOURCES,
        accounting=str(project_dir / ACCOUNTING_SCRIPT),
        checkpoints=kind.checkpoints if kind else False,
        signal_seconds=warning_seconds(job.resources, kind),
    )


def sbatch_options(job: JobSpec, profile: Profile) -> list[tuple[str, str]]:
    """(option, value) pairs for the #SBATCH lines other than name and logs: resources
    (ntasks-per-node=1 for several nodes), partition (job's, else profile's), gres, array,
    then profile.sbatch updated by job.resources.extra. Raises ValueError for reserved or
    unsafe options."""
    res = job.resources
    options = [("cpus-per-task", str(res.cpus)), ("mem", res.mem), ("time", res.time),
               ("nodes", str(res.nodes))]
    if res.nodes > 1:  # one srun task (a torchrun) per node; cpus, mem and gres are per node
        options.append(("ntasks-per-node", "1"))
    partition = res.partition or profile.partition
    if partition:
        options.append(("partition", partition))
    if res.gpus > 0:
        options.append(("gres", f"{profile.gpu_gres}:{res.gpus}"))
    if job.array:
        throttle = f"%{job.throttle}" if job.throttle else ""
        options.append(("array", f"0-{len(job.tasks) - 1}{throttle}"))
    free = {**profile.sbatch, **res.extra}
    for key in free:
        if key in RESERVED_SBATCH:
            raise ValueError(f"job {job.name}: sbatch option {key!r} is set by jobctl itself; "
                             "use resources or the profile's fields instead")
        if not SBATCH_KEY.match(key):
            raise ValueError(f"job {job.name}: {key!r} is not an sbatch long option name")
    options += [(key, str(value)) for key, value in free.items()]
    for key, value in options:
        if not SBATCH_VALUE.match(value):
            raise ValueError(f"job {job.name}: sbatch option {key}={value!r} must be one word "
                             f"matching {SBATCH_VALUE.pattern}")
    return options


def render_report_script(run_dir: Path, project_dir: Path, python: str,
                         partition: str | None, sbatch: Mapping[str, Any]) -> str:
    """The script of the SLURM job that writes a run's report (templates/run_report.sh.j2):
    1 CPU, REPORT_MEM, REPORT_TIME, a profile's `partition` and `sbatch` options (account,
    qos...), then `python -m jobs.cli report RUN_DIR` from the project dir. ValueError for
    what render_script refuses too (relative or unsafe paths, unsafe sbatch values)."""
    _check_paths(run_dir, project_dir)
    options = [("cpus-per-task", "1"), ("mem", REPORT_MEM), ("time", REPORT_TIME)]
    if partition:
        options.append(("partition", partition))
    options += [(key, str(value)) for key, value in sbatch.items()]
    for key, value in options:  # the profile's options were checked when it was loaded
        if not SBATCH_VALUE.match(value):
            raise ValueError(f"report job: sbatch option {key}={value!r} must be one word "
                             f"matching {SBATCH_VALUE.pattern}")
    return _environment().get_template(REPORT_TEMPLATE).render(
        run_id=run_dir.name, sbatch=options, project_dir=str(project_dir),
        argv=[python, "-m", "jobs.cli", "report", str(run_dir)])


def _check_signal(job: JobSpec, kind: Kind | None) -> None:
    """A warning signal at or beyond the time limit (an explicit signal_seconds, then a
    shorter `jobctl resubmit --time`) would make SLURM signal the job as it starts."""
    seconds, limit = warning_seconds(job.resources, kind), time_limit_seconds(job.resources.time)
    if seconds >= limit:
        raise ValueError(f"job {job.name}: resources.signal_seconds={seconds} must be less "
                         f"than the time limit ({job.resources.time} = {limit} s)")


def sbatch_log_path(job_dir: Path, array: bool) -> str:
    """The value of sbatch's --output and --error for a job: JOB_DIR/logs/slurm-%j.out
    (slurm-%A_%a.out for an array), every '%' of JOB_DIR written '%%'.

    SLURM expands %j, %A, %a, %x... anywhere in the path and reads '%%' as '%' (22.05,
    tested). A backslash anywhere switches that off: slurmd then drops every backslash and
    expands nothing, so no log path with the job id can name a directory holding one, and
    ValueError says so. Give the value as its own argv word: no quoting is needed.
    """
    text = str(job_dir)
    if "\\" in text:
        raise ValueError(f"job directory {text!r} holds a backslash, which SLURM cannot take "
                         "in a log path (it turns off %j and drops the backslash): choose a "
                         "runs_dir without one for SLURM (jobctl run works with it)")
    return f"{text.replace('%', '%%')}/logs/{SLURM_LOG[array]}"


def _check_paths(job_dir: Path, project_dir: Path) -> None:
    for label, path in (("job_dir", job_dir), ("project_dir", project_dir)):
        text = str(path)
        if not Path(path).is_absolute():
            raise ValueError(f"{label} must be absolute, got {text!r}")
        if "\n" in text or "\r" in text:
            raise ValueError(f"{label} {text!r} holds a line break, which SLURM's one-line "
                             "job records (scontrol -o, jobcomp) cannot hold: rename it")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{label} {text!r} is not valid UTF-8: rename it") from None


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = shlex.quote
    env.filters["word"] = _shell_word
    env.filters["sc2016"] = _sc2016_directive
    return env


def _shell_word(word: Word) -> str:
    """A quoted argv word: a string verbatim (shlex.quote), a ScriptVariable as its quoted
    prefix followed by "${NAME}", which the shell expands when the command runs. A word
    with a comma is single-quoted although the shell would not need it: in an array,
    shellcheck takes a bare comma for a mistaken separator (SC2054)."""
    if isinstance(word, ScriptVariable):
        if not ENV_NAME.match(word.name):
            raise ValueError(f"{word.name!r} is not a shell variable name")
        return f'{shlex.quote(word.prefix)}"${{{word.name}}}"'
    quoted = shlex.quote(word)
    return f"'{word}'" if quoted == word and "," in word else quoted


def _sc2016_directive(value: str | list[Word]) -> str:
    """A shellcheck directive line when a value (or any literal of a list) holds `$` or a
    backtick, else "". Put before a command that single-quotes such a value on purpose:
    shellcheck would flag it (SC2016, "expressions don't expand in single quotes")."""
    words = [value] if isinstance(value, str) else value
    values = [w.prefix if isinstance(w, ScriptVariable) else w for w in words]
    if any("$" in item or "`" in item for item in values):
        return "# shellcheck disable=SC2016  # single-quoted on purpose: a literal value\n"
    return ""
