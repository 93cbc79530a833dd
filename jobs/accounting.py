"""Run one command, pass the job's signals on to it, and record its peak memory.

job.sh (templates/_status.sh.j2) starts lyricgen through this script when the node has a
`python3`:

    python3 -I -S PROJECT/jobs/accounting.py USAGE_FILE -- COMMAND [ARG...]

and copies USAGE_FILE into the task's status file (jobs/taskstatus.py) when the command has
ended. Bash cannot read its children's peak memory (getrusage RUSAGE_CHILDREN.ru_maxrss), so
this small parent does; wall and CPU time job.sh measures itself. Standard library only, run
as a script (not `-m jobs...`): any Python 3.8+ on the node will do, inside or outside the
job's own environment or image.

USAGE_FILE, written atomically after the command ended, holds two lines:

    peak_rss_bytes 1234567168
    peak_rss_source rusage

- "cgroup-v2" / "cgroup-v1": when SLURM confines the job (this process's cgroup path has a
  `job_<SLURM_JOB_ID>` component), that job cgroup's memory.peak (v2, Linux 5.19+) or
  memory.max_usage_in_bytes (v1): the whole job on this node, page cache included, which is
  what SLURM enforces --mem against.
- "rusage": otherwise, ru_maxrss of the command as wait4 reports it: the largest resident set
  of any ONE process of its tree that was waited for. Parallel workers (torchrun) are not
  summed, so a multi-process task used more than it says.

Exit status: the command's, or 128+N when signal N killed it (as a shell reports it); 127
when it cannot be started. TERM, HUP, USR1 and USR2 are passed on to the command (job.sh
forwards TERM on a cancellation and USR1 before a time limit to its child, which is this
process); INT and QUIT keep the disposition job.sh gave them. A signal that arrives before
the command started is delivered to it as soon as it has. SIGKILL ends this process and the
record with it (and SLURM's enforcement kills the whole job that way).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
CGROUP_ROOT = Path("/sys/fs/cgroup")
PEAK_FILES = {"cgroup-v2": "memory.peak", "cgroup-v1": "memory.max_usage_in_bytes"}


def job_cgroup_peak(proc_cgroup: str, job_id: str | None,
                    root: Path = CGROUP_ROOT) -> tuple[int, str] | None:
    """(bytes, source) from the memory cgroup of SLURM job `job_id`, given the text of
    /proc/self/cgroup; None when the job is not confined (no `job_<id>` component: a local
    run, or SLURM without task/cgroup) or the file cannot be read. The v1 memory controller
    wins over v2 on a hybrid host (SLURM uses one or the other)."""
    if not job_id or not job_id.isdigit():
        return None
    found: dict[str, Path] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        components = path.strip("/").split("/")
        if f"job_{job_id}" not in components:
            continue
        job_path = "/".join(components[:components.index(f"job_{job_id}") + 1])
        if hierarchy == "0" and not controllers:
            found["cgroup-v2"] = root / job_path
        elif "memory" in controllers.split(","):
            found["cgroup-v1"] = root / "memory" / job_path
    for source in ("cgroup-v1", "cgroup-v2"):
        if source in found:
            try:
                return int((found[source] / PEAK_FILES[source]).read_text().split()[0]), source
            except (OSError, ValueError, IndexError):
                continue
    return None


def peak_memory(maxrss_kib: int, job_id: str | None) -> tuple[int, str]:
    """The job cgroup's peak when confined, else ru_maxrss (KiB on Linux) in bytes."""
    try:
        proc_cgroup = Path("/proc/self/cgroup").read_text()
    except OSError:
        proc_cgroup = ""
    return job_cgroup_peak(proc_cgroup, job_id) or (maxrss_kib * 1024, "rusage")


def write_usage(path: Path, peak: tuple[int, str]) -> None:
    """USAGE_FILE (module docstring), replaced atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(f"peak_rss_bytes {peak[0]}\npeak_rss_source {peak[1]}\n")
    os.replace(tmp, path)


def exit_status(wait_status: int) -> int:
    """A shell's view of a wait status: the exit code, or 128+N for signal N."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def run(usage_file: Path, argv: list[str]) -> int:
    """Start `argv`, forward FORWARDED signals to it, wait, write usage_file; the exit
    status (module docstring)."""
    child: list[int] = []
    pending: list[int] = []

    def forward(signum: int, frame: object) -> None:
        if not child:
            pending.append(signum)
            return
        try:
            os.kill(child[0], signum)
        except ProcessLookupError:  # it has just been reaped
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    try:
        child.append(os.posix_spawnp(argv[0], argv, os.environ))
    except OSError as exc:
        print(f"accounting.py: cannot start {argv[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    for signum in pending:
        os.kill(child[0], signum)
    _, status, rusage = os.wait4(child[0], 0)
    for sig in FORWARDED:  # from here on nothing is left to forward to
        signal.signal(sig, signal.SIG_IGN)
    write_usage(usage_file, peak_memory(rusage.ru_maxrss, os.environ.get("SLURM_JOB_ID")))
    return exit_status(status)


def main(args: list[str]) -> int:
    if len(args) < 3 or args[1] != "--":
        print("usage: accounting.py USAGE_FILE -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    return run(Path(args[0]), args[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
