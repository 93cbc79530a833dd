"""`jobctl image build|info`: the Apptainer images that job steps run in.

Two definitions (containers/README.md explains them): containers/lyricgen.def, the GPU image
for clusters (the default), and containers/lyricgen-cpu.def (`--cpu`, or a profile's
`image_def`), the CPU image with the host venv's packages. They are built by the
`apptainer` command, called through argv lists (never a shell, never spython: it hard-codes
`singularity` and exits the interpreter on errors). The argv builders (`build_argv`,
`inspect_argv`, `test_argv`, `exec_argv`) are pure functions; `run_command` runs one with a
timeout and never raises for a missing program or a timeout (jobs.doctor uses both).

`build`:
- passes the build args VERSION (pyproject.toml), GIT_COMMIT (`git rev-parse HEAD`, with
  `-dirty` when tracked files changed; `unknown` outside git or before the first commit) and
  BUILD_DATE (UTC, ISO 8601), which the def turns into labels; they need apptainer >= 1.2.
- runs apptainer in the def's project root (the parent of containers/), because the def's
  %files paths are relative to the directory apptainer runs in.
- builds with --fakeroot unless told --no-fakeroot: apptainer does so by itself for other
  users, and root's plain build needs every capability, which container sandboxes withhold
  (its %post then fails with "Requesting capability set ..."); root needs an /etc/subuid
  range (scripts/install-apptainer.sh adds one).
- build inputs: CA bundles (--ca-bundle, default $PIP_CERT) and local wheel directories
  (--find-links, default $PIP_FIND_LINKS), so that the image's pip trusts and finds what the
  host's does, are copied (wheels hard-linked when possible) into a temporary directory that
  apptainer binds read-only at /mnt during the build, where containers/post.sh looks for
  them (ca/, wheels/); none of it stays in the image, none of it is in the def.
- --compression zstd packs the .sif with `mksquashfs -comp zstd -Xcompression-level 3`
  instead of apptainer's gzip (level 9): measured here 29 s instead of 389 s for the CPU
  image's 1.8 GiB, 2 % larger; running it needs a kernel >= 4.14 (or a squashfuse with
  zstd), so the portable gzip stays the default.
- writes a temporary sibling of the output and renames it into place only after apptainer,
  the def's %test included, succeeded: a failed or interrupted build never leaves a partial
  image under the final name. An existing output is replaced only with --force.
- refuses to start when the output's or APPTAINER_TMPDIR's filesystem has less free space
  than IMAGE_BYTES / SANDBOX_BYTES / BUILD_TMP_BYTES (estimates, see their comment), and
  notes when the image or apptainer's layer cache would land in $HOME (small quotas on
  clusters: use scratch).

Errors end in one line and an exit code (as in jobs.cli): `jobctl: error: ...` exit 2 for
bad input or a missing apptainer, `jobctl: ...` exit 1 when apptainer itself fails, 130 when
interrupted. Never a traceback.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from jobs.errors import InputError, JobFailure, UsageError
from jobs.profiles import load_profile
from kindspec import provenance

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DEF = REPO_ROOT / "containers" / "lyricgen.def"
CPU_DEF = REPO_ROOT / "containers" / "lyricgen-cpu.def"
DEFAULT_IMAGE = Path("images/lyricgen.sif")
CPU_IMAGE = Path("images/lyricgen-cpu.sif")
BUILD_INPUTS_AT = "/mnt"  # where containers/post.sh reads ca/ and wheels/
COMPRESSION = {"gzip": None, "zstd": "-comp zstd -Xcompression-level 3"}  # mksquashfs args
MISSING_APPTAINER = ("apptainer not found on PATH; install it or use the host runtime "
                     "(profile laptop)")
MIN_BUILD_VERSION = (1, 2)  # --build-arg and %arguments
GIB = 1024**3
BUILD_TIMEOUT_S = 4 * 3600
INSPECT_TIMEOUT_S = 60
VERSION_TIMEOUT_S = 20
# Label names: ours come from the def's %labels and %post; the last two apptainer adds.
LABELS = {
    "version": "org.lyricgen.version",
    "commit": "org.lyricgen.git-commit",
    "built": "org.lyricgen.build-date",
    "cuda": "org.lyricgen.cuda",
    "torch": "org.lyricgen.torch",
    "python": "org.lyricgen.python",
    "base": "org.label-schema.usage.singularity.deffile.from",
    "apptainer": "org.label-schema.usage.apptainer.version",
}
CPU_CUDA = "none"  # org.lyricgen.cuda of an image whose torch is a CPU build (post.sh)
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True)
class BuildSizes:
    """Free space a build needs: for the .sif (plus headroom), for an unpacked --sandbox
    directory, and in APPTAINER_TMPDIR (root file system + pip's downloads)."""

    image: int
    sandbox: int
    tmp: int


# CUDA 12.8 torch + nvidia-* wheels + bitsandbytes (about 6-7 GiB installed): estimates, the
# GPU image has not been built anywhere yet.
GPU_SIZES = BuildSizes(image=8 * GIB, sandbox=16 * GIB, tmp=20 * GIB)
# The CPU image's build measured 0.53 GiB of .sif, a 1.75 GiB root file system and 2.3 GiB
# at most in the build directory (containers/README.md); about twice that, for headroom.
CPU_SIZES = BuildSizes(image=1 * GIB, sandbox=4 * GIB, tmp=5 * GIB)
SIZES = {DEFAULT_DEF.name: GPU_SIZES, CPU_DEF.name: CPU_SIZES}  # other defs: GPU_SIZES


@dataclass(frozen=True)
class CommandResult:
    """What `run_command` saw. returncode is None when the program could not start or was
    killed at its timeout; `error` then says which."""

    argv: tuple[str, ...]
    returncode: int | None
    stdout: str = ""
    stderr: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def last_line(self) -> str:
        """The error, else the last non-empty line of stderr, else of stdout: for one-line
        verdicts."""
        if self.error:
            return self.error
        for text in (self.stderr, self.stdout):
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if lines:
                return lines[-1]
        return f"exit code {self.returncode}, no output"


def run_command(argv: Sequence[str], timeout: float, *, cwd: Path | None = None) -> CommandResult:
    """Run argv (no shell, stdin closed) and capture its output. On timeout the whole
    process group it started is killed. Never raises for a missing program or a timeout."""
    try:
        proc = subprocess.Popen(list(argv), cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                errors="replace", start_new_session=True)
    except OSError as exc:
        return CommandResult(tuple(argv), None, error=f"cannot run {argv[0]}: {exc.strerror}")
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        out, err = _drain(proc)
        return CommandResult(tuple(argv), None, out, err,
                             f"`{shlex.join(argv[:2])}` timed out after {timeout:g} s")
    except BaseException:
        _signal_group(proc, signal.SIGKILL)
        raise
    return CommandResult(tuple(argv), proc.returncode, out, err)


def build_argv(def_file: Path, target: Path, build_args: Mapping[str, str], *,
               sandbox: bool = False, fakeroot: bool = False, binds: Iterable[str] = (),
               compression: str = "gzip") -> list[str]:
    """`apptainer build [--fakeroot] [--sandbox | --mksquashfs-args ARGS] [--bind B ...]
    --build-arg K=V ... TARGET DEF` (ARGS from COMPRESSION)."""
    argv = ["apptainer", "build"]
    if fakeroot:
        argv.append("--fakeroot")
    if sandbox:
        argv.append("--sandbox")
    elif COMPRESSION[compression]:
        argv += ["--mksquashfs-args", COMPRESSION[compression]]
    for bind in binds:
        argv += ["--bind", bind]
    for name, value in build_args.items():
        argv += ["--build-arg", f"{name}={value}"]
    return [*argv, str(target), str(def_file)]


def inspect_argv(image: Path) -> list[str]:
    """`apptainer inspect --labels --json IMAGE` (labels as JSON, see `parse_labels`)."""
    return ["apptainer", "inspect", "--labels", "--json", str(image)]


def test_argv(image: Path, *, nv: bool) -> list[str]:
    """`apptainer test [--nv] IMAGE`: runs the def's %test (its GPU part only with --nv)."""
    return ["apptainer", "test", *(["--nv"] if nv else []), str(image)]


def exec_argv(image: Path, command: Sequence[str], *, nv: bool = False,
              binds: Iterable[str] = ()) -> list[str]:
    """`apptainer exec [--nv] --cleanenv [--bind B ...] IMAGE COMMAND...`."""
    argv = ["apptainer", "exec", *(["--nv"] if nv else []), "--cleanenv"]
    for bind in binds:
        argv += ["--bind", bind]
    return [*argv, str(image), *command]


def version_argv() -> list[str]:
    return ["apptainer", "version"]


def parse_version(text: str) -> tuple[int, ...] | None:
    """(major, minor[, patch]) from `apptainer version` output such as `1.3.4-1.el9`."""
    match = _VERSION.search(text)
    if match is None:
        return None
    return tuple(int(part) for part in match.groups() if part is not None)


def parse_labels(text: str) -> dict[str, str]:
    """The labels from `apptainer inspect --labels --json` output:
    {"data": {"attributes": {"labels": {NAME: VALUE}}}}. ValueError for anything else."""
    try:
        labels = json.loads(text)["data"]["attributes"]["labels"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"unexpected `apptainer inspect` output ({exc})") from exc
    if not isinstance(labels, dict):
        raise ValueError("unexpected `apptainer inspect` output (labels is not a mapping)")
    return {str(name): str(value) for name, value in labels.items()}


def require_apptainer() -> str:
    """The apptainer executable on PATH; UsageError (exit 2, MISSING_APPTAINER) if none."""
    path = shutil.which("apptainer")
    if path is None:
        raise UsageError(MISSING_APPTAINER)
    return path


def read_labels(image: Path) -> dict[str, str]:
    """The image's labels; JobFailure with apptainer's last line when inspect fails."""
    result = run_command(inspect_argv(image), INSPECT_TIMEOUT_S)
    if not result.ok:
        raise JobFailure(f"apptainer inspect {image} failed: {result.last_line()}")
    try:
        return parse_labels(result.stdout)
    except ValueError as exc:
        raise JobFailure(f"apptainer inspect {image}: {exc}") from exc


def info_lines(image: Path, labels: Mapping[str, str], size: int | None) -> list[str]:
    """What `jobctl image info` prints: path and size, then version, commit, build date,
    CUDA / torch / Python, base image and the apptainer version that built it."""
    def label(key: str) -> str:
        return labels.get(LABELS[key], "unknown")

    where = "sandbox directory" if size is None else f"{size / GIB:.1f} GiB"
    lines = [
        f"image:     {image} ({where})",
        f"version:   {label('version')}",
        f"commit:    {label('commit')}",
        f"built:     {label('built')}",
        f"cuda:      {label('cuda')} (torch {label('torch')}, python {label('python')})",
        f"base:      {label('base')}",
        f"apptainer: {label('apptainer')}",
    ]
    if not any(name.startswith("org.lyricgen.") for name in labels):
        lines.append("note: no org.lyricgen.* labels: not built from containers/lyricgen.def")
    return lines


def default_image(profile: str | None, fallback: Path = DEFAULT_IMAGE) -> Path:
    """The profile's image when it names one, else `fallback` (relative paths are relative
    to the current directory, as in profiles)."""
    if profile:
        image = load_profile(profile).image
        if image:
            return Path(image)
    return fallback


def choose_def(def_file: Path | None, cpu: bool, profile: str | None) -> Path:
    """The definition to build: --def, else --cpu's, else the profile's image_def, else the
    GPU def. UsageError for --def together with --cpu."""
    if def_file is not None and cpu:
        raise UsageError("--cpu builds containers/lyricgen-cpu.def: give --cpu or --def, "
                         "not both")
    if def_file is not None:
        return def_file
    if cpu:
        return CPU_DEF
    image_def = load_profile(profile).image_def if profile else None
    return Path(image_def) if image_def else DEFAULT_DEF


def project_version(pyproject: Path) -> str:
    """[project] version from pyproject.toml; InputError when it cannot be read."""
    try:
        version = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]
    except OSError as exc:
        raise InputError(pyproject, None, "", f"cannot read: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise InputError(pyproject, None, "project.version", f"not found ({exc})") from exc
    return str(version)


def git_commit(project_dir: Path) -> str:
    """HEAD's commit, `-dirty` appended when tracked files differ; `unknown` without git."""
    return provenance.git_commit(project_dir, mark_dirty=True) or "unknown"


def build_args(project_dir: Path, now: dt.datetime | None = None) -> dict[str, str]:
    """The def's %arguments: VERSION, GIT_COMMIT and BUILD_DATE (UTC, ISO 8601)."""
    when = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return {"VERSION": project_version(project_dir / "pyproject.toml"),
            "GIT_COMMIT": git_commit(project_dir),
            "BUILD_DATE": when.strftime("%Y-%m-%dT%H:%M:%SZ")}


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds `path` (or its nearest existing parent)."""
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def build_tmp_dir(env: Mapping[str, str]) -> Path:
    """Where apptainer unpacks a build: APPTAINER_TMPDIR, else TMPDIR, else /tmp."""
    return Path(env.get("APPTAINER_TMPDIR") or env.get("TMPDIR") or "/tmp")


def space_problems(out: Path, tmp: Path, sizes: BuildSizes, *, sandbox: bool) -> list[str]:
    """One message per filesystem with less free space than the build needs."""
    needs = [(out.parent, sizes.sandbox if sandbox else sizes.image, "the image"),
             (tmp, sizes.tmp, "apptainer's build directory (APPTAINER_TMPDIR)")]
    problems = []
    for folder, need, what in needs:
        free = free_bytes(folder)
        if free < need:
            problems.append(f"{what}: {free / GIB:.1f} GiB free in {folder}, the build needs "
                            f"about {need / GIB:.0f} GiB")
    return problems


def home_notes(out: Path, env: Mapping[str, str]) -> list[str]:
    """Notes for an output or apptainer layer cache inside $HOME (quotas on clusters)."""
    home = Path(env.get("HOME") or Path.home()).absolute()
    cache = Path(env.get("APPTAINER_CACHEDIR") or home / ".apptainer" / "cache").absolute()
    notes = []
    if out.absolute().is_relative_to(home):
        notes.append(f"note: {out} is in your home directory, which often has a small quota "
                     "on clusters; consider --out on a scratch filesystem")
    if cache.is_relative_to(home):
        notes.append(f"note: apptainer caches the base image layers (several GiB) in {cache}; "
                     "on clusters set APPTAINER_CACHEDIR and APPTAINER_TMPDIR to scratch")
    return notes


def stage_build_inputs(folder: Path, ca_bundles: Sequence[Path],
                       find_links: Sequence[str]) -> list[str]:
    """Copy the CA bundles to folder/ca/ and the wheels of each local find-links directory
    to folder/wheels/ (hard links when possible; the first directory wins for a file name,
    as for pip). Returns notes for find-links entries that are URLs, which only pip itself
    can follow. UsageError for a missing bundle or directory."""
    notes = []
    for index, bundle in enumerate(ca_bundles):
        if not bundle.is_file():
            raise UsageError(f"--ca-bundle {bundle}: no such file")
        (folder / "ca").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle, folder / "ca" / f"{index}-{bundle.name}")
    for entry in find_links:
        if "://" in entry and not entry.startswith("file://"):
            notes.append(f"note: --find-links {entry} is not a local directory; the "
                         "image's pip does not get it")
            continue
        source = Path(entry.removeprefix("file://"))
        if not source.is_dir():
            raise UsageError(f"--find-links {source}: no such directory")
        (folder / "wheels").mkdir(parents=True, exist_ok=True)
        for wheel in sorted(source.glob("*.whl")):
            _link_or_copy(wheel, folder / "wheels" / wheel.name)
    return notes


def temp_target(out: Path) -> Path:
    """The sibling apptainer writes before the rename: `.NAME.building-PID`."""
    return out.with_name(f".{out.name}.building-{os.getpid()}")


def build_image(def_file: Path, out: Path, *, sandbox: bool = False, fakeroot: bool = False,
                force: bool = False, ca_bundles: Sequence[Path] = (),
                find_links: Sequence[str] = (), compression: str = "gzip",
                echo: Callable[[str], None] = click.echo) -> Path:
    """Build `def_file` into `out` (see the module docstring); returns the absolute output.
    UsageError for bad input or too little space, JobFailure when apptainer fails."""
    require_apptainer()
    version = run_command(version_argv(), VERSION_TIMEOUT_S)
    found = parse_version(version.stdout) if version.ok else None
    if found is None or found < MIN_BUILD_VERSION:
        raise UsageError(f"apptainer >= 1.2 is needed to build (build args); `apptainer "
                         f"version` says: {version.last_line()}")
    def_file = def_file.absolute()
    if not def_file.is_file():
        raise UsageError(f"{def_file}: no such definition file")
    out = out.absolute()
    if out.exists() and not force:
        raise UsageError(f"{out} already exists; pass --force to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {out.parent}: {exc.strerror}") from exc
    tmp = build_tmp_dir(os.environ)
    problems = space_problems(out, tmp, SIZES.get(def_file.name, GPU_SIZES), sandbox=sandbox)
    if problems:
        raise UsageError("; ".join(problems) + " (build on a scratch filesystem with --out "
                         "and set APPTAINER_TMPDIR and APPTAINER_CACHEDIR there)")
    for note in home_notes(out, os.environ):
        echo(note)
    project = def_file.parent.parent
    temp = temp_target(out)
    tmp.mkdir(parents=True, exist_ok=True)
    inputs = Path(tempfile.mkdtemp(prefix="lyricgen-build-inputs-", dir=tmp))
    try:
        for note in stage_build_inputs(inputs, ca_bundles, find_links):
            echo(note)
        inputs.chmod(0o755)  # readable by the build's (fake) root
        binds = [f"{inputs}:{BUILD_INPUTS_AT}:ro"] if any(inputs.iterdir()) else []
        argv = build_argv(def_file, temp, build_args(project), sandbox=sandbox,
                          fakeroot=fakeroot, binds=binds, compression=compression)
        echo(f"jobctl: in {project}: {shlex.join(argv)}")
        code = _run_streaming(argv, project, BUILD_TIMEOUT_S)
        if code != 0:
            raise JobFailure(f"apptainer build failed with exit code {code} (its output is "
                             f"above); {out} is unchanged")
        _install(temp, out)
    finally:
        _remove(temp)
        _remove(inputs)
    return out


def one_line_errors(func: _F) -> _F:
    """Turn jobctl's errors into one line on stderr and an exit code (2 bad input, 1
    failure or an OSError, 130 interrupted), so a command behaves the same inside or
    outside `jobctl`."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (InputError, UsageError) as exc:
            _exit(f"jobctl: error: {exc}", 2)
        except JobFailure as exc:
            _exit(f"jobctl: {exc}", 1)
        except OSError as exc:  # a file system refusal (permissions, full disk, ...)
            _exit(f"jobctl: error: {exc}", 1)
        except KeyboardInterrupt:
            _exit("jobctl: interrupted", 130)

    return wrapper  # type: ignore[return-value]


@click.group(name="image")
def image_group() -> None:
    """Build and inspect the lyricgen Apptainer image (containers/lyricgen.def)."""


@image_group.command(name="build")
@click.option("--cpu", is_flag=True,
              help="build the CPU image (containers/lyricgen-cpu.def -> images/lyricgen-cpu.sif)")
@click.option("--def", "def_file", type=click.Path(path_type=Path), default=None,
              help="definition file (default: --cpu's, else the profile's image_def, else "
                   "containers/lyricgen.def)")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="image to write (default: the profile's image, else images/lyricgen.sif, "
                   "images/lyricgen-cpu.sif with --cpu)")
@click.option("--profile", envvar="JOBCTL_PROFILE", default=None,
              help="profile whose image and image_def are the defaults ($JOBCTL_PROFILE)")
@click.option("--ca-bundle", "ca_bundles", multiple=True, envvar="PIP_CERT",
              type=click.Path(path_type=Path),
              help="CA bundle (PEM) the build's pip also trusts, e.g. a TLS proxy's; "
                   "repeatable (default: $PIP_CERT)")
@click.option("--find-links", "find_links", multiple=True, envvar="PIP_FIND_LINKS",
              help="directory of wheels the build's pip may use, e.g. a local torch wheel; "
                   "repeatable (default: $PIP_FIND_LINKS)")
@click.option("--sandbox", is_flag=True, help="write a writable directory, not a .sif")
@click.option("--compression", type=click.Choice(sorted(COMPRESSION)), default="gzip",
              show_default=True, help="of the .sif: zstd builds far faster, but needs a "
                                      "kernel >= 4.14 (or squashfuse with zstd) to run")
@click.option("--fakeroot/--no-fakeroot", default=True, show_default=True,
              help="build in a user namespace (root needs an /etc/subuid range)")
@click.option("--force", is_flag=True, help="replace an existing image")
@one_line_errors
def build_command(cpu: bool, def_file: Path | None, out: Path | None, profile: str | None,
                  ca_bundles: tuple[Path, ...], find_links: tuple[str, ...], sandbox: bool,
                  compression: str, fakeroot: bool, force: bool) -> None:
    """Build an image with `apptainer build` (needs apptainer >= 1.2 and network)."""
    chosen = choose_def(def_file, cpu, profile)
    target = out or default_image(profile, CPU_IMAGE if cpu else DEFAULT_IMAGE)
    built = build_image(chosen, target, sandbox=sandbox, fakeroot=fakeroot, force=force,
                        ca_bundles=ca_bundles, find_links=find_links, compression=compression)
    click.echo(f"jobctl: built {built}")
    for line in info_lines(built, read_labels(built), _size(built)):
        click.echo(line)


@image_group.command(name="info")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--profile", envvar="JOBCTL_PROFILE", default=None,
              help="profile whose image is shown when PATH is not given ($JOBCTL_PROFILE)")
@one_line_errors
def info_command(path: Path | None, profile: str | None) -> None:
    """Show an image's version, git commit, build date and CUDA build (from its labels)."""
    require_apptainer()
    image = path or default_image(profile)
    if not image.exists():
        raise UsageError(f"{image}: no such image (build it with `jobctl image build`)")
    for line in info_lines(image, read_labels(image), _size(image)):
        click.echo(line)


def _size(image: Path) -> int | None:
    return None if image.is_dir() else image.stat().st_size


def _exit(message: str, code: int) -> None:
    click.echo(message, err=True)
    click.get_current_context().exit(code)


def _signal_group(proc: subprocess.Popen[Any], sig: int) -> None:
    """Signal the process group `proc` leads (it was started with start_new_session)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _drain(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Whatever output is left after a kill; gives up after 5 s if a grandchild that left
    the group still holds the pipes."""
    try:
        return proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        return "", ""


def _run_streaming(argv: list[str], cwd: Path, timeout: float) -> int:
    """Run argv with its output on the terminal; on timeout or Ctrl-C stop its process
    group (TERM, then KILL after 10 s)."""
    proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(proc)
        raise JobFailure(f"apptainer build did not finish within {timeout / 3600:g} h; "
                         "stopped it") from None
    except BaseException:
        _stop(proc)
        raise


def _stop(proc: subprocess.Popen[Any]) -> None:
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()


def _install(temp: Path, out: Path) -> None:
    """Move the finished build to `out`: an atomic replace for a file; for a directory
    (sandbox) or a kind change, the old output is renamed aside and removed afterwards."""
    if temp.is_file() and not out.is_dir():
        os.replace(temp, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists() or out.is_symlink():
        os.rename(out, old)
    os.rename(temp, out)
    _remove(old)


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link `source` at `target` (same filesystem), else copy it; keeps an existing
    target."""
    if target.exists():
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
