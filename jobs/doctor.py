"""`jobctl doctor [--profile P]`: can this machine run the profile's jobs?

Each check prints ONE line as soon as it is done:

    [ok|warn|FAIL|skip] NAME: VERDICT (fix: HINT)

Checks, in order: slurm (sbatch/squeue/scontrol found, `scontrol ping`), apptainer (on PATH,
its version), image (exists, its labels), image-test (`apptainer test [--nv]`), gpu (host
nvidia-smi, and inside the image with --nv), cuda-driver (host driver against the image's
CUDA build, or the host torch's), cache-dir and runs-dir (writable on the host and, when
apptainer and the image are there, inside the image with the directory bound), genius-token
(set or not: its value is never printed) and disk (free space in the runs and cache dirs).
A check that does not apply to the profile (SLURM for a local executor, apptainer for the
host runtime, ...) is `skip` with the reason.

Exit code 1 when any check FAILs, else 0; 2 for a bad profile. Every external command runs
through jobs.image.run_command with a timeout, and a check that breaks unexpectedly is one
FAIL line, never a traceback. Relative profile paths are relative to the current directory.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import click

from jobs.errors import JobFailure
from jobs.image import (
    CPU_CUDA,
    GIB,
    LABELS,
    MIN_BUILD_VERSION,
    VERSION_TIMEOUT_S,
    exec_argv,
    free_bytes,
    one_line_errors,
    parse_version,
    read_labels,
    run_command,
    test_argv,
    version_argv,
)
from jobs.profiles import load_profile
from jobs.runtime import container_env_names
from jobs.spec import Profile
from kindspec.registry import SCRAPE

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
SLURM_TIMEOUT_S = 20
NVIDIA_SMI_TIMEOUT_S = 30
EXEC_TIMEOUT_S = 120  # apptainer exec of a multi-GiB image on a cold network filesystem
TEST_TIMEOUT_S = 600  # the image's %test imports torch and runs a 4-bit matmul
TORCH_TIMEOUT_S = 120
RUNS_MIN_BYTES = 5 * GIB
CACHE_MIN_BYTES = 20 * GIB  # a 7B model's fp16 weights alone are about 13.5 GB
GPU_QUERY = ("nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader")
TOKEN_ENV = SCRAPE.params["token_env"].default
DEFAULT_PYTHON = next(f.default for f in dataclasses.fields(Profile) if f.name == "python")
# Minimum Linux x86_64 driver of each CUDA toolkit (NVIDIA's CUDA Toolkit release notes,
# "CUDA Toolkit and Corresponding Driver Versions", GA releases) and, per major version,
# the minimum driver for CUDA minor-version compatibility (runs, but without PTX JIT of
# kernels newer than the driver).
TOOLKIT_DRIVER = {
    "11.8": "520.61.05", "12.0": "525.60.13", "12.1": "530.30.02", "12.2": "535.54.03",
    "12.3": "545.23.06", "12.4": "550.54.14", "12.5": "555.42.02", "12.6": "560.28.03",
    "12.8": "570.26", "12.9": "575.51.03", "13.0": "580.65.06",
}
MINOR_COMPAT_DRIVER = {"11": "450.80.02", "12": "525.60.13", "13": "580.65.06"}
_BIND_UNSAFE = re.compile(r"[:,\s]")
_WRITE_PROBE = 'f=$(mktemp -p "$1") && rm -f "$f"'

Outcome = tuple[str, str, str | None]  # status, verdict, fix hint
Gpus = list[tuple[str, str]]  # (name, driver version) per GPU


@dataclass(frozen=True)
class Verdict:
    status: str
    name: str
    message: str
    fix: str | None = None

    def line(self) -> str:
        """`[status] name: message (fix: hint)`, always one line."""
        fix = f" (fix: {self.fix})" if self.fix else ""
        return " ".join(f"[{self.status}] {self.name}: {self.message}{fix}".split())


class Doctor:
    """The facts several checks share, each found once, on first use."""

    def __init__(self, profile: Profile, project_dir: Path) -> None:
        self.profile = profile
        self.project_dir = project_dir

    @property
    def container(self) -> bool:
        return self.profile.runtime == "apptainer"

    def path(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else self.project_dir / path

    @cached_property
    def apptainer(self) -> str | None:
        return shutil.which("apptainer")

    @cached_property
    def image(self) -> Path | None:
        return self.path(self.profile.image) if self.profile.image else None

    @cached_property
    def image_usable(self) -> bool:
        """apptainer is on PATH and the image exists: in-image checks can run."""
        return bool(self.apptainer and self.image and self.image.exists())

    @cached_property
    def labels(self) -> dict[str, str] | str:
        """The image's labels, or why they could not be read."""
        if not self.image_usable or self.image is None:
            return "needs apptainer and the image"
        try:
            return read_labels(self.image)
        except JobFailure as exc:
            return str(exc)

    @property
    def cpu_image(self) -> bool:
        """The profile's image holds a CPU torch (label org.lyricgen.cuda `none`)."""
        labels = self.labels
        return isinstance(labels, dict) and labels.get(LABELS["cuda"]) == CPU_CUDA

    @cached_property
    def host_gpus(self) -> Gpus | str | None:
        """GPUs that the host's nvidia-smi lists; None without nvidia-smi, or its error."""
        if shutil.which("nvidia-smi") is None:
            return None
        result = run_command(GPU_QUERY, NVIDIA_SMI_TIMEOUT_S)
        gpus = parse_gpus(result.stdout) if result.ok else []
        return gpus or f"`nvidia-smi` failed: {result.last_line()}"

    @property
    def python(self) -> str:
        """The host interpreter of jobs: this one when the profile keeps the default."""
        python = self.profile.python
        return sys.executable if python == DEFAULT_PYTHON else python


def parse_gpus(text: str) -> Gpus:
    """(name, driver) pairs from `nvidia-smi --query-gpu=name,driver_version
    --format=csv,noheader` output, one GPU per line."""
    gpus = []
    for line in text.splitlines():
        name, sep, driver = line.strip().rpartition(",")
        if sep and name.strip() and driver.strip():
            gpus.append((name.strip(), driver.strip()))
    return gpus


def describe_gpus(gpus: Gpus) -> str:
    """`2 GPUs: NVIDIA TITAN RTX x2, driver 550.54.14`."""
    names = ", ".join(name if count == 1 else f"{name} x{count}"
                      for name, count in Counter(name for name, _ in gpus).items())
    drivers = ", ".join(dict.fromkeys(driver for _, driver in gpus))
    return f"{len(gpus)} GPU{'s' if len(gpus) > 1 else ''}: {names}, driver {drivers}"


def driver_verdict(driver: str, cuda: str) -> Outcome:
    """Whether NVIDIA driver `driver` (e.g. 550.54.14) can run CUDA `cuda` (e.g. 12.8):
    ok from the toolkit's own minimum, warn between that and the minor-version-compatibility
    floor (or for a CUDA version outside the tables), FAIL below the floor."""
    have = _numbers(driver)
    parts = cuda.split(".")
    release = ".".join(parts[:2])
    floor = MINOR_COMPAT_DRIVER.get(parts[0])
    if not have or floor is None or len(parts) < 2:
        return WARN, f"cannot judge driver {driver!r} against CUDA {cuda!r}", \
            "compare them with NVIDIA's CUDA Toolkit release notes"
    full = TOOLKIT_DRIVER.get(release)
    newer = "ask the admins for a newer NVIDIA driver"
    if have < _numbers(floor):
        return FAIL, (f"driver {driver} is too old for CUDA {release} (needs >= {full or floor}"
                      f", or >= {floor} with minor-version compatibility)"), \
            f"{newer}, or build the image for an older CUDA (containers/README.md)"
    if full is None:
        return WARN, (f"driver {driver} >= {floor} runs CUDA {parts[0]}.x through minor-"
                      f"version compatibility; CUDA {release} is not in the driver table"), None
    if have < _numbers(full):
        return WARN, (f"driver {driver} runs CUDA {release} only through minor-version "
                      f"compatibility (no PTX JIT for newer kernels; full support from {full})"), \
            f"{newer} (>= {full})"
    return OK, f"driver {driver} supports CUDA {release} (needs >= {full})", None


CHECKS: list[tuple[str, Callable[[Doctor], Outcome]]] = []


def check(name: str) -> Callable[[Callable[[Doctor], Outcome]], Callable[[Doctor], Outcome]]:
    """Register a check; CHECKS keeps the order of definition."""
    def register(func: Callable[[Doctor], Outcome]) -> Callable[[Doctor], Outcome]:
        CHECKS.append((name, func))
        return func

    return register


@check("slurm")
def check_slurm(doc: Doctor) -> Outcome:
    if doc.profile.executor != "slurm":
        return SKIP, f"executor {doc.profile.executor}: jobs run with bash on this machine", None
    missing = [name for name in ("sbatch", "squeue", "scontrol") if shutil.which(name) is None]
    if missing:
        return FAIL, f"{', '.join(missing)} not found on PATH", \
            "run jobctl on the cluster's login node (or load its SLURM module)"
    ping = run_command(["scontrol", "ping"], SLURM_TIMEOUT_S)
    lines = [line.strip() for line in ping.stdout.splitlines() if line.strip()]
    if ping.ok and lines and all(re.search(r"\bUP\b", line) for line in lines):
        return OK, f"sbatch, squeue found; {'; '.join(lines)}", None
    return FAIL, f"scontrol ping: {ping.last_line()}", \
        "check that slurmctld runs and SLURM_CONF names its slurm.conf (locally: make slurm-up)"


@check("apptainer")
def check_apptainer(doc: Doctor) -> Outcome:
    if not doc.container:
        return SKIP, f"runtime {doc.profile.runtime} (profile {doc.profile.name}): jobs run " \
            "with the host Python, no container", None
    if doc.apptainer is None:
        return FAIL, "apptainer not found on PATH", \
            "install Apptainer >= 1.2 (or load its module), or use the host runtime " \
            "(profile laptop)"
    result = run_command(version_argv(), VERSION_TIMEOUT_S)
    version = parse_version(result.stdout) if result.ok else None
    if version is None:
        return FAIL, f"`apptainer version` failed: {result.last_line()}", \
            "reinstall Apptainer >= 1.2"
    text = result.stdout.strip().splitlines()[0]
    if version < MIN_BUILD_VERSION:
        return WARN, f"apptainer {text} runs the image but cannot build it (needs >= 1.2)", \
            "build the image where Apptainer >= 1.2 is installed"
    return OK, f"apptainer {text} ({doc.apptainer})", None


@check("image")
def check_image(doc: Doctor) -> Outcome:
    if not doc.container:
        return SKIP, "runtime host: no image needed", None
    if doc.image is None:
        return FAIL, f"profile {doc.profile.name} names no image", "set image: in the profile"
    build = f"jobctl image build --profile {doc.profile.name}"
    if not doc.image.exists():
        return FAIL, f"{doc.image} does not exist", build
    if doc.apptainer is None:
        return WARN, f"{doc.image} exists; its labels need apptainer (see apptainer)", None
    labels = doc.labels
    if isinstance(labels, str):
        return FAIL, labels, f"{build} --force"
    if not any(name.startswith("org.lyricgen.") for name in labels):
        return WARN, f"{doc.image} has no org.lyricgen.* labels: not built from " \
            "containers/lyricgen.def", f"{build} --force"
    def label(key: str) -> str:
        return labels.get(LABELS[key], "unknown")

    cuda = label("cuda")
    torch = f"CPU torch {label('torch')}" if cuda == CPU_CUDA else f"CUDA {cuda}"
    return OK, (f"{doc.image}: lyricgen {label('version')}, commit {label('commit')[:12]}, "
                f"built {label('built')}, {torch}"), None


@check("image-test")
def check_image_test(doc: Doctor) -> Outcome:
    if not doc.container:
        return SKIP, "runtime host: no image to test", None
    if not doc.image_usable or doc.image is None:
        return SKIP, "needs apptainer and the image (see above)", None
    nv = isinstance(doc.host_gpus, list)
    argv = test_argv(doc.image, nv=nv)
    result = run_command(argv, TEST_TIMEOUT_S)
    if result.ok:  # its verdict is the last line it printed (libraries log to stderr)
        printed = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        return OK, f"`{' '.join(argv[:-1])}` passed: " \
            f"{printed[-1] if printed else result.last_line()}", None
    return FAIL, f"`{' '.join(argv[:-1])}` failed: {result.last_line()}", \
        f"run `{' '.join(argv)}` to see its output; rebuild with jobctl image build --force"


@check("gpu")
def check_gpu(doc: Doctor) -> Outcome:
    host = doc.host_gpus
    if host is None:
        if doc.cpu_image:
            return SKIP, "no NVIDIA GPU on this node, and the image's torch is a CPU build", None
        if doc.container:
            return WARN, "no nvidia-smi on this node, so no GPU to check here", \
                "run doctor on a GPU node: srun --gres=gpu:1 jobctl doctor " \
                f"--profile {doc.profile.name}"
        return SKIP, "no NVIDIA GPU on this host (nvidia-smi not found): jobs run on the CPU", \
            None
    if isinstance(host, str):
        return FAIL, f"host: {host}", "check the NVIDIA driver with nvidia-smi"
    if not doc.container:
        return OK, f"host: {describe_gpus(host)}", None
    if not doc.image_usable or doc.image is None:
        return SKIP, f"host: {describe_gpus(host)}; not checked inside the image (needs " \
            "apptainer and the image)", None
    result = run_command(exec_argv(doc.image, GPU_QUERY, nv=True), EXEC_TIMEOUT_S)
    inside = parse_gpus(result.stdout) if result.ok else []
    if not inside:
        return FAIL, f"no GPU inside the image with --nv: {result.last_line()}", \
            f"try `apptainer exec --nv {doc.image} nvidia-smi`; apptainer must find the " \
            "driver libraries (nvliblist.conf)"
    return OK, f"inside the image with --nv: {describe_gpus(inside)}", None


@check("cuda-driver")
def check_cuda_driver(doc: Doctor) -> Outcome:
    host = doc.host_gpus
    if not isinstance(host, list):
        return SKIP, "no NVIDIA driver readable on this node (see gpu)", None
    driver = host[0][1]
    if doc.container:
        labels = doc.labels
        if isinstance(labels, str):
            return SKIP, "the image's CUDA version is unknown (see image)", None
        cuda = labels.get(LABELS["cuda"])
        if not cuda:
            return WARN, "the image has no org.lyricgen.cuda label", \
                f"jobctl image build --profile {doc.profile.name} --force"
        if cuda == CPU_CUDA:
            return WARN, f"{describe_gpus(host)}, but the image's torch is a CPU build: jobs " \
                "run on the CPU", "use a profile with the GPU image (e.g. cluster) for GPU jobs"
        source = "the image's torch"
    else:
        result = run_command([doc.python, "-c", "import torch; print(torch.version.cuda)"],
                             TORCH_TIMEOUT_S)
        if not result.ok:
            return WARN, f"cannot read torch's CUDA version with {doc.python}: " \
                f"{result.last_line()}", None
        cuda = result.stdout.strip()
        if cuda in ("", "None"):
            return WARN, f"a GPU is here but {doc.python}'s torch is a CPU build", \
                "install a CUDA build of torch, or use the apptainer image"
        source = f"{doc.python}'s torch"
    status, message, fix = driver_verdict(driver, cuda)
    return status, f"{message} [{source}: CUDA {cuda}]", fix


@check("cache-dir")
def check_cache_dir(doc: Doctor) -> Outcome:
    if doc.profile.cache_dir is None:
        if doc.container:
            return WARN, "no cache_dir: inside the image HF_HOME and the other caches default " \
                "to /cache, which jobctl does not bind (read-only)", "set cache_dir: in the profile"
        return SKIP, "no cache_dir in the profile: libraries use their defaults (~/.cache)", None
    return _writable(doc, doc.path(doc.profile.cache_dir), bound=doc.container)


@check("runs-dir")
def check_runs_dir(doc: Doctor) -> Outcome:
    return _writable(doc, doc.path(doc.profile.runs_dir or "runs"), bound=False)


@check("genius-token")
def check_genius_token(doc: Doctor) -> Outcome:
    value = os.environ.get(TOKEN_ENV)
    export = f"export {TOKEN_ENV}=<your token> in the shell that runs jobctl"
    if value is None:
        return WARN, f"{TOKEN_ENV} is not set (only the scrape step needs it)", export
    if not value.strip():
        return WARN, f"{TOKEN_ENV} is set but empty", export
    if doc.container and TOKEN_ENV not in container_env_names(doc.profile):
        return WARN, f"{TOKEN_ENV} is set, but --cleanenv keeps it out of the container", \
            f"add {TOKEN_ENV} to the profile's env_passthrough"
    return OK, f"{TOKEN_ENV} is set (value not shown)", None


@check("disk")
def check_disk(doc: Doctor) -> Outcome:
    places = [("runs", doc.path(doc.profile.runs_dir or "runs"), RUNS_MIN_BYTES)]
    if doc.profile.cache_dir is not None:
        places.append(("cache", doc.path(doc.profile.cache_dir), CACHE_MIN_BYTES))
    parts, low = [], []
    for label, path, minimum in places:
        free = free_bytes(path)
        parts.append(f"{label} {free / GIB:.1f} GiB free ({path})")
        if free < minimum:
            low.append(f"{label} below {minimum / GIB:.0f} GiB")
    if low:
        return WARN, f"{'; '.join(parts)}: {', '.join(low)}", \
            "free space, or point runs_dir / cache_dir at a larger filesystem"
    return OK, "; ".join(parts), None


def run_checks(doc: Doctor, echo: Callable[[str], None] = click.echo) -> list[Verdict]:
    """Run every check in order, echoing each line as soon as it is known."""
    verdicts = []
    for name, func in CHECKS:
        try:
            status, message, fix = func(doc)
            verdict = Verdict(status, name, message, fix)
        except Exception as exc:  # a check must never end the report with a traceback
            verdict = Verdict(FAIL, name, f"the check itself failed: {type(exc).__name__}: {exc}")
        echo(verdict.line())
        verdicts.append(verdict)
    return verdicts


@click.command(name="doctor")
@click.option("--profile", envvar="JOBCTL_PROFILE", default="laptop", show_default=True,
              help="profile to check ($JOBCTL_PROFILE)")
@one_line_errors
def doctor_command(profile: str) -> None:
    """Check that this machine can run the profile's jobs: one line per check."""
    loaded = load_profile(profile)
    click.echo(f"jobctl doctor: profile {loaded.name} (executor {loaded.executor}, runtime "
               f"{loaded.runtime}) in {Path.cwd()}")
    verdicts = run_checks(Doctor(loaded, Path.cwd()))
    counts = Counter(v.status for v in verdicts)
    click.echo("jobctl doctor: " + ", ".join(f"{counts[s]} {s}" for s in (OK, WARN, FAIL, SKIP)))
    if counts[FAIL]:
        click.get_current_context().exit(1)


def _writable(doc: Doctor, path: Path, *, bound: bool) -> Outcome:
    """Whether jobs can write in `path`: on the host (a probe file), and inside the image
    with `path` bound at the same place, as jobctl binds it, when apptainer and the image
    are there. A missing directory is fine when its nearest existing parent is writable,
    unless it is `bound` as it is (apptainer refuses to bind a missing source)."""
    if doc.container and _BIND_UNSAFE.search(str(path)):
        return FAIL, f"{path} cannot be bound into the container (':' ',' or whitespace)", \
            "choose a path without them in the profile"
    if bound and not path.exists():
        return FAIL, f"{path} does not exist, and apptainer cannot bind a missing directory", \
            f"mkdir -p {path}"
    if not path.exists():
        parent = path.parent
        while not parent.exists():
            parent = parent.parent
        if os.access(parent, os.W_OK | os.X_OK):
            return OK, f"{path} will be created (in writable {parent})", None
        return FAIL, f"{path} does not exist and {parent} is not writable", \
            "create it, or choose another path in the profile"
    problem = _probe_write(path)
    if problem:
        return FAIL, f"{path} is not writable: {problem}", \
            "fix its permissions, or choose another path in the profile"
    if not doc.container:
        return OK, f"{path} is writable", None
    if not doc.image_usable or doc.image is None:
        return OK, f"{path} is writable on the host (inside the image not checked: needs " \
            "apptainer and the image)", None
    argv = exec_argv(doc.image, ["sh", "-c", _WRITE_PROBE, "sh", str(path)],
                     binds=[f"{path}:{path}"])
    result = run_command(argv, EXEC_TIMEOUT_S)
    if result.ok:
        return OK, f"{path} is writable on the host and inside the image", None
    return FAIL, f"{path} is not writable inside the image: {result.last_line()}", \
        "check the bind (root-squashed NFS, or a path apptainer will not bind)"


def _probe_write(folder: Path) -> str | None:
    """None when a file can be created (and removed) in folder, else why not."""
    if not folder.is_dir():
        return "not a directory"
    try:
        handle, name = tempfile.mkstemp(prefix=".jobctl-doctor-", dir=folder)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(handle)
    os.unlink(name)
    return None


def _numbers(version: str) -> tuple[int, ...]:
    """(550, 54, 14) from "550.54.14"; () when it does not start with a number."""
    match = re.match(r"\d+(?:\.\d+)*", version.strip())
    return tuple(int(part) for part in match.group().split(".")) if match else ()
