"""The resolved, validated job specification: the single data model shared by manifest
loading (jobs.manifest), rendering (jobs.render), state (jobs.state) and executors.

Everything here is plain data (frozen dataclasses, JSON-serialisable through `to_dict`).
Params are already type-checked and defaulted by the kind registry. Params may still hold
*output references*: strings exactly of the form `{{ needs.JOB.outputs.NAME }}`
(kindspec.schema `OUTPUT_REF`), which `jobs.manifest.bind_outputs` replaces by absolute paths
once the run directory is known. Any other text, Jinja-looking or not, is kept verbatim:
values only ever reach the job through config.json, never through shell or template text.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Source:
    """Where a spec came from, for error messages: manifest path and 1-based line."""

    path: str
    line: int | None = None


@dataclass(frozen=True)
class Resources:
    """What a job asks the scheduler for. `extra` holds validated free-form sbatch options
    (long option name without dashes -> value, e.g. {"account": "lab", "qos": "normal"}).

    gpus, cpus and mem are per node. `processes_per_node` > 1 or `nodes` > 1 make a
    distributed job (kindspec Kind.distributed): torchrun starts that many processes on each
    node, world size nodes * processes_per_node. jobs.resources resolves its default (gpus
    for a distributed kind with GPUs, else 1), so a loaded spec always holds the real count.

    `signal_seconds`: how long before the time limit SLURM sends the job's script SIGUSR1
    (`--signal=B:USR1@N`), for kinds that checkpoint (Kind.checkpoints): the job saves a
    checkpoint and requeues itself. None: automatic (jobs.resources.warning_seconds: 300 s,
    at most a tenth of the time limit); 0: no warning signal.
    """

    gpus: int = 0
    cpus: int = 1
    mem: str = "4G"
    time: str = "01:00:00"
    nodes: int = 1
    partition: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    processes_per_node: int = 1
    signal_seconds: int | None = None

    @property
    def world_size(self) -> int:
        """Processes of the whole job: nodes * processes_per_node."""
        return self.nodes * self.processes_per_node


@dataclass(frozen=True)
class Task:
    """One unit of work: a plain job has exactly one Task (index 0); a matrix job has one
    Task per cartesian-product cell, which become SLURM array task ids 0..n-1."""

    index: int
    params: dict[str, Any]
    matrix: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobSpec:
    name: str
    kind: str
    profile: str
    needs: tuple[str, ...]
    resources: Resources
    tasks: tuple[Task, ...]
    array: bool = False  # True when the job came from a matrix (rendered with --array)
    throttle: int | None = None  # max simultaneously running array tasks (%N)
    source: Source = Source("<memory>")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Profile:
    """Where and how jobs run (manifests/profiles/NAME.yaml). See that folder's README."""

    name: str
    executor: str = "local"  # local | slurm
    runtime: str = "host"  # host | apptainer
    python: str = "python3"  # host interpreter; `jobctl` fills in its own sys.executable
    image: str | None = None  # .sif path for runtime apptainer
    image_def: str | None = None  # definition `jobctl image build` builds `image` from
    binds: tuple[str, ...] = ()  # "src[:dst[:opts]]" apptainer binds
    env: dict[str, str] = field(default_factory=dict)  # exported in the script (values quoted)
    env_passthrough: tuple[str, ...] = ()  # names allowed through `apptainer --cleanenv`
    modules: tuple[str, ...] = ()  # `module load X` lines
    partition: str | None = None
    gpu_gres: str = "gpu"  # --gres=<gpu_gres>:<n>, e.g. "gpu:titanrtx"
    sbatch: dict[str, str] = field(default_factory=dict)  # account, qos, ... for every job
    runs_dir: str | None = None  # default: ./runs
    cache_dir: str | None = None  # HF_HOME and friends, bound into the container
    network_interface: str | None = None  # multi-node jobs meet at this interface's address
    source: Source = Source("<memory>")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Pipeline:
    """A loaded manifest: its jobs in a dependency (topological) order."""

    source: str
    text: str  # the manifest text as read, copied into run.json
    jobs: tuple[JobSpec, ...]

    def job(self, name: str) -> JobSpec:
        for job in self.jobs:
            if job.name == name:
                return job
        raise KeyError(name)
