"""The command line that runs Python for a job: on the host or inside an Apptainer image,
as one process or under torchrun.

This module is the ONE place where a job's command line is built (`runtime_argv`,
`lyricgen_argv`); `jobs.render` only quotes and joins what it returns.

Distributed launch (kinds with `distributed=True`, world size nodes * processes_per_node > 1):
- one node: `<python> -m torch.distributed.run --nnodes=1 --nproc-per-node=P --standalone
  -m lyricgen ...`. The standalone rendezvous takes a free local port, so several such jobs
  can share a machine, and the script runs the same under sbatch and under plain bash.
- N nodes: `srun --nodes=N --ntasks-per-node=1 --cpus-per-task=C --kill-on-bad-exit=1
  bash -c 'node_env "$@"' node-env <python> -m torch.distributed.run --nnodes=N
  --nproc-per-node=P --rdzv-backend=c10d --rdzv-id="$SLURM_JOB_ID"
  --rdzv-endpoint="$RDZV_ENDPOINT" -m lyricgen ...`: one torchrun per node, meeting at the
  node that runs the batch script (the allocation's first). No host NAME is ever looked up:
  the job script (templates/sbatch.sh.j2) finds each node's ADDRESS with its `node_address`
  function (the profile's `network_interface`, else the node's NodeAddr in SLURM), sets
  RDZV_ENDPOINT to the batch node's address and a port derived from the job id, and refuses
  to run outside an sbatch allocation of N nodes; the two words with variables are
  `ScriptVariable`s. On every node `node_env` (exported by the script, so srun's bash has
  it) gives torchrun its per-node settings through torchrun's environment fallbacks:
  PET_LOCAL_ADDR (--local-addr: the address this node's agent advertises, also the workers'
  MASTER_ADDR when it is rank 0) and PET_RDZV_CONF=is_host=true|false (only the batch node
  serves the c10d store: torch's own guess compares the endpoint with what the host NAME
  resolves to), plus GLOO_SOCKET_IFNAME, the interface holding that address, unless set
  (gloo otherwise binds to what the host name resolves to, or loopback), then execs the
  command. Under apptainer it also forwards those and the node's own CUDA_VISIBLE_DEVICES
  (srun copies the batch node's APPTAINERENV_* to every node; --cleanenv drops the rest).
  srun gets --cpus-per-task again because srun does not inherit it from sbatch (SLURM >=
  22.05). A profile with `executor: local` cannot run such a job (ValueError).
Python is always `<runtime argv> -m torch.distributed.run` (not a `torchrun` on PATH), so the
host venv or the image's python runs it. For a kind that checkpoints, torchrun also gets
`--signals-to-handle=...,SIGUSR1` (by default it handles only TERM, INT, HUP and QUIT, and
SIGUSR1 would kill it and orphan its workers): it then forwards job.sh's SIGUSR1 (the
time-limit warning, see jobs.render) to every worker, and waits `--shutdown-timeout` seconds
(the warning time, at least torchrun's default 30) for their checkpoint before SIGKILL.

Apptainer contract:
- `--cleanenv` drops the host environment; only the names from `container_env_names` reach
  the container, forwarded BY NAME through `APPTAINERENV_<NAME>` variables that the job script
  exports at run time. No value (in particular no token) is ever written into the script or
  put on the command line, where `ps` would show it.
- Host paths are bound at the same path inside, because config.json holds absolute host
  paths. `container_binds` builds the whole list (module docstring of that function): the
  project directory, the run directory (`job_dir.parent`), the cache directory and every path
  a job's params write (kind registry: type "path" with writes=True) read-write; every path
  param the job reads (the data, a model, a need's output from a cached run) read-only; then
  the profile's own binds. Param values still never reach the script: only their paths do,
  as `--bind` words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from jobs.resources import warning_seconds
from jobs.spec import JobSpec, Profile
from kindspec.registry import KINDS

RUNTIMES = ("host", "apptainer")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Always forwarded into the container when set: GPU selection and the SLURM ids that
# lyricgen records in provenance.json.
BASE_CONTAINER_ENV = (
    "CUDA_VISIBLE_DEVICES",
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_CPUS_PER_TASK",
    "PYTHONUNBUFFERED",
)
# What apptainer's --bind parser (1.x, pkg/runtime/engine/apptainer/config/bind.go) cannot
# take in a path: ':' and ',' separate the fields and the binds, its tokenizer drops '^', and
# a trailing backslash reads as an escaped ':'. Spaces, quotes, '%', '#', '$', a backslash
# elsewhere and non-ASCII arrive intact (argv words, no shell between).
_BIND_UNSAFE = re.compile(r"[:,^]|\\$")
# Where the caches go, relative to the profile's cache_dir. The image's own defaults point
# under /cache (containers/lyricgen.def), which jobctl does not bind: every one of these must
# be exported, or a library that writes its cache would hit the read-only image.
CACHE_ENV_DIRS = {
    "HF_HOME": ".",
    "TORCHINDUCTOR_CACHE_DIR": "torchinductor",
    "XDG_CACHE_HOME": "xdg",
    "MPLCONFIGDIR": "matplotlib",
}


def runtime_argv(job: JobSpec, profile: Profile, project_dir: Path, job_dir: Path) -> list[str]:
    """The argv prefix that starts Python for `job`: `[profile.python]` on the host, or
    `apptainer exec [--nv] --cleanenv --pwd PROJECT --bind ... IMAGE python3`.

    Raises ValueError for an unknown runtime, an apptainer profile without image, or a path
    that cannot be bound (`container_binds`).
    """
    if profile.runtime == "host":
        return [profile.python]
    if profile.runtime != "apptainer":
        raise ValueError(f"profile {profile.name}: runtime must be one of {RUNTIMES}, "
                         f"not {profile.runtime!r}")
    if not profile.image:
        raise ValueError(f"profile {profile.name}: runtime apptainer needs an image (.sif path)")
    argv = ["apptainer", "exec"]
    if job.resources.gpus > 0:
        argv.append("--nv")
    argv += ["--cleanenv", "--pwd", str(project_dir)]
    for bind in container_binds(job, profile, project_dir, job_dir):
        argv += ["--bind", bind]
    return [*argv, profile.image, "python3"]


@dataclass(frozen=True)
class ScriptVariable:
    """An argv word finished at run time: the literal `prefix` followed by the value of the
    job script's variable `name` (rendered as `prefix"${name}"`, the prefix quoted)."""

    prefix: str
    name: str


Word = str | ScriptVariable
# Run by srun on every node (module docstring): the script's exported node_env function
# sets the node's own torchrun and gloo settings, then execs "$@", the torchrun argv.
NODE_ENV = ["bash", "-c", 'node_env "$@"', "node-env"]
# Variables the multi-node script sets before its command runs (templates/sbatch.sh.j2).
RDZV_ENDPOINT = "RDZV_ENDPOINT"
# torchrun's default signals plus SIGUSR1 (module docstring); its default shutdown wait.
TORCHRUN_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
TORCHRUN_SHUTDOWN_TIMEOUT = 30


def lyricgen_argv(job: JobSpec, profile: Profile, project_dir: Path,
                  job_dir: Path) -> list[Word]:
    """The full command of one task except `--task N`, which the script appends from
    $SLURM_ARRAY_TASK_ID: `<runtime argv> -m lyricgen KIND --config JOB_DIR/config.json`,
    behind torchrun (and srun for several nodes) when the job is distributed (module
    docstring). Every word is a plain string except the multi-node rendezvous words.

    Raises ValueError for a world size > 1 of a kind without distributed launch, and for
    nodes > 1 under a profile with the local executor (one machine cannot span nodes).
    """
    res = job.resources
    program = ["-m", "lyricgen", job.kind, "--config", str(job_dir / "config.json")]
    python = runtime_argv(job, profile, project_dir, job_dir)
    if res.world_size == 1:
        return [*python, *program]
    _check_distributed(job, profile)
    torchrun = [*python, "-m", "torch.distributed.run", f"--nnodes={res.nodes}",
                f"--nproc-per-node={res.processes_per_node}", *_torchrun_signals(job)]
    if res.nodes == 1:
        return [*torchrun, "--standalone", *program]
    rendezvous = ["--rdzv-backend=c10d", ScriptVariable("--rdzv-id=", "SLURM_JOB_ID"),
                  ScriptVariable("--rdzv-endpoint=", RDZV_ENDPOINT)]
    return [*_srun(job), *torchrun, *rendezvous, *program]


def _torchrun_signals(job: JobSpec) -> list[str]:
    """torchrun options that forward SIGUSR1 to the workers of a kind that checkpoints."""
    kind = KINDS.get(job.kind)
    if kind is None or not kind.checkpoints:
        return []
    wait = max(TORCHRUN_SHUTDOWN_TIMEOUT, warning_seconds(job.resources, kind))
    return [f"--signals-to-handle={TORCHRUN_SIGNALS}", f"--shutdown-timeout={wait}"]


def _check_distributed(job: JobSpec, profile: Profile) -> None:
    res = job.resources
    kind = KINDS.get(job.kind)
    if kind is None or not kind.distributed:
        raise ValueError(f"job {job.name}: kind {job.kind} runs as one process; nodes="
                         f"{res.nodes} processes_per_node={res.processes_per_node} needs a "
                         "kind launched with torchrun")
    if res.nodes > 1 and profile.executor == "local":
        raise ValueError(f"job {job.name}: nodes={res.nodes} needs SLURM, but profile "
                         f"{profile.name} has executor: local, which runs on this machine "
                         "only; use a profile with executor: slurm or nodes: 1")


def _srun(job: JobSpec) -> list[str]:
    """srun starting one task per node, each through the per-node `node_env`."""
    res = job.resources
    return ["srun", f"--nodes={res.nodes}", "--ntasks-per-node=1",
            f"--cpus-per-task={res.cpus}", "--kill-on-bad-exit=1", *NODE_ENV]


def launch_env(job: JobSpec, profile: Profile) -> dict[str, str]:
    """Variables the script exports for the launch: OMP_NUM_THREADS = cpus // processes per
    node (at least 1) when a node runs several processes, since torchrun would otherwise
    give each worker 1 thread and lyricgen cannot tell how many processes share the CPUs;
    for several nodes and a profile with `network_interface`, GLOO_SOCKET_IFNAME and
    NCCL_SOCKET_IFNAME naming it (the collectives then use the interface the rendezvous
    uses)."""
    res = job.resources
    env = {}
    if res.processes_per_node > 1:
        env["OMP_NUM_THREADS"] = str(max(1, res.cpus // res.processes_per_node))
    if res.nodes > 1 and profile.network_interface:
        env["GLOO_SOCKET_IFNAME"] = env["NCCL_SOCKET_IFNAME"] = profile.network_interface
    return env


@dataclass(frozen=True)
class _Bind:
    """One identity bind (host path = container path), and where it comes from (errors)."""

    path: PurePosixPath
    writable: bool
    origin: str

    def spec(self) -> str:
        return f"{self.path}:{self.path}:{'rw' if self.writable else 'ro'}"


def param_paths(job: JobSpec) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(read, written): the (param name, value) pairs of every task's path params, as the
    kind registry types them (`KINDS[kind].params[name].type == "path"`, split by `.writes`),
    in task and param order, duplicates dropped. None for a kind outside the registry.
    Values are what the spec holds: absolute paths, or output references before binding."""
    kind = KINDS.get(job.kind)
    found: tuple[dict[tuple[str, str], None], dict[tuple[str, str], None]] = ({}, {})
    for task in job.tasks:
        for name, value in task.params.items():
            param = kind.params.get(name) if kind else None
            if param is not None and param.type == "path" and isinstance(value, str):
                found[param.writes][(name, value)] = None
    return list(found[0]), list(found[1])


def container_binds(job: JobSpec, profile: Profile, project_dir: Path,
                    job_dir: Path) -> list[str]:
    """Every `--bind` value of the job's apptainer command, in mount order. Pure.

    Identity binds `P:P:rw` or `P:P:ro` (config.json names host paths): read-write the
    project dir, the run dir (`job_dir.parent`: this job's dir and the outputs of the run's
    other jobs), the cache dir and every path a `writes` param names (it must exist when the
    job starts: jobs.plan creates them); read-only every other path param of every task (the
    file or directory itself: a corpus under /scratch, a need's output in a cached run); the
    profile's identity binds (`src`, `src:src[:ro|rw]`) with their own mode. A path inside
    one already bound as permissively (or at the same place) is dropped, parents come before
    children (a later mount on a parent would hide a child's), and the profile's other binds
    (`src:dst[:opts]`) follow verbatim, duplicates dropped.

    Raises ValueError, one line naming the path and where it comes from, for a path to bind
    that is relative or that apptainer's --bind cannot express (`_BIND_UNSAFE`). A path only
    covered by another bind needs no check. Pitfall: a path that a param's file names (the
    base model in an adapter's adapter_config.json) is no param: bind it in the profile.
    """
    wanted = [_Bind(PurePosixPath(project_dir), True, "project dir"),
              _Bind(PurePosixPath(job_dir).parent, True, "run dir")]
    if profile.cache_dir is not None:
        wanted.append(_Bind(PurePosixPath(profile.cache_dir), True,
                            f"profile {profile.name}: cache_dir"))
    reads, writes = param_paths(job)
    wanted += [_Bind(PurePosixPath(path), True, f"params.{name}") for name, path in writes]
    wanted += [_Bind(PurePosixPath(path), False, f"params.{name}") for name, path in reads]
    others: list[str] = []
    for spec in profile.binds:
        source, _, rest = spec.partition(":")
        target, _, options = rest.partition(":")
        if target in ("", source):
            wanted.append(_Bind(PurePosixPath(source), options != "ro",
                                f"profile {profile.name}: binds"))
        elif spec not in others:
            others.append(spec)
    kept: list[_Bind] = []
    for bind in sorted(wanted, key=lambda b: (len(b.path.parts), not b.writable)):
        inner = next((k for k in reversed(kept)
                      if k.path == bind.path or k.path in bind.path.parents), None)
        if inner is None or (bind.writable and not inner.writable):
            _check_bindable(bind)
            kept.append(bind)
    return [bind.spec() for bind in kept] + others


def _check_bindable(bind: _Bind) -> None:
    text = str(bind.path)
    if not bind.path.is_absolute() or _BIND_UNSAFE.search(text):
        raise ValueError(f"{bind.origin}: cannot bind {text!r} into the container: apptainer "
                         "--bind needs an absolute path without ':', ',' or '^' and not "
                         "ending in '\\' (rename it, or bind a parent in the profile)")


def container_env_names(profile: Profile, job_env: Iterable[str] = ()) -> tuple[str, ...]:
    """Variable names the script forwards into the container when they are set (empty for
    the host runtime, which keeps the whole environment): the base names, the profile's
    exported env, the cache variables (`cache_env`), `job_env` (the job's `launch_env`
    names) and profile.env_passthrough.

    Raises ValueError for a name that is not a shell identifier.
    """
    if profile.runtime != "apptainer":
        return ()
    names = [*BASE_CONTAINER_ENV, *profile.env, *cache_env(profile), *job_env,
             *profile.env_passthrough]
    for name in names:
        if not ENV_NAME.match(name):
            raise ValueError(f"profile {profile.name}: {name!r} is not a valid environment "
                             "variable name")
    return tuple(dict.fromkeys(names))


def cache_env(profile: Profile) -> dict[str, str]:
    """The cache variables of CACHE_ENV_DIRS under the profile's cache dir (HF_HOME is the
    cache dir itself), except those the profile's env sets; empty without a cache dir."""
    if profile.cache_dir is None:
        return {}
    root = PurePosixPath(profile.cache_dir)
    return {name: str(root / sub) for name, sub in CACHE_ENV_DIRS.items()
            if name not in profile.env}
