"""Resource accounting: jobs/accounting.py (the peak-memory parent of a task's command), the
usage job.sh writes into the status file, lyricgen's GPU peak file, and TaskUsage reading old
and new status files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jobs.accounting import job_cgroup_peak
from jobs.render import render_script
from jobs.spec import JobSpec, Profile, Resources, Task
from jobs.taskstatus import STATUS_KEYS, TaskUsage, task_attempts
from lyricgen import gpu_usage

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "jobs" / "accounting.py"
MIB = 1 << 20
HOLD_96_MIB = "b = bytearray(96 << 20); b[::4096] = b'x' * len(b[::4096])"  # resident pages


# --- the job's cgroup ----------------------------------------------------------------------

V2 = "0::/system.slice/slurmstepd.scope/job_77/step_batch/user/task_0\n"
V1 = ("12:memory:/slurm/uid_0/job_77/step_batch\n"
      "3:cpu,cpuacct:/slurm/uid_0/job_77/step_batch\n0::/\n")


def cgroup_file(root: Path, relative: str, name: str, value: int) -> None:
    (root / relative).mkdir(parents=True)
    (root / relative / name).write_text(f"{value}\n")


def test_confined_v2_job_reads_the_job_level_memory_peak(tmp_path: Path) -> None:
    cgroup_file(tmp_path, "system.slice/slurmstepd.scope/job_77", "memory.peak", 5 * MIB)
    assert job_cgroup_peak(V2, "77", tmp_path) == (5 * MIB, "cgroup-v2")


def test_confined_v1_job_reads_max_usage(tmp_path: Path) -> None:
    cgroup_file(tmp_path, "memory/slurm/uid_0/job_77", "memory.max_usage_in_bytes", 7 * MIB)
    assert job_cgroup_peak(V1, "77", tmp_path) == (7 * MIB, "cgroup-v1")


@pytest.mark.parametrize(("text", "job_id"), [
    (V2, "78"),  # another job's cgroup: not ours
    (V2, None),  # not under SLURM
    (V2, "local-123"),  # the local executor's id
    ("0::/user.slice/user-0.slice/session-3.scope\n", "77"),  # not confined
    ("12:memory:/process_api/82bc\n0::/\n", "77"),
])
def test_unconfined_or_foreign_cgroups_give_nothing(tmp_path: Path, text: str,
                                                    job_id: str | None) -> None:
    cgroup_file(tmp_path, "system.slice/slurmstepd.scope/job_77", "memory.peak", MIB)
    assert job_cgroup_peak(text, job_id, tmp_path) is None


def test_a_confined_job_without_the_file_gives_nothing(tmp_path: Path) -> None:
    """memory.peak is Linux 5.19+: an older kernel falls back to rusage."""
    (tmp_path / "system.slice/slurmstepd.scope/job_77").mkdir(parents=True)
    assert job_cgroup_peak(V2, "77", tmp_path) is None


# --- the wrapper around a command ----------------------------------------------------------

def wrapped(usage: Path, code: str, **kwargs: object) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "SLURM_JOB_ID"}
    return subprocess.Popen([sys.executable, "-I", "-S", str(SCRIPT), str(usage), "--",
                             sys.executable, "-c", textwrap.dedent(code)],
                            stdout=subprocess.PIPE, text=True, env=env, **kwargs)


def read_usage(path: Path) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in path.read_text().splitlines())


def test_peak_of_the_process_tree_and_exit_code(tmp_path: Path) -> None:
    """The grandchild's 96 MiB count: wait4 reports the largest process of the tree."""
    usage = tmp_path / "usage"
    proc = wrapped(usage, f"""
        import subprocess, sys
        subprocess.run([sys.executable, "-c", {HOLD_96_MIB!r}], check=True)
        sys.exit(3)
        """)
    assert proc.wait(timeout=60) == 3
    found = read_usage(usage)
    assert found["peak_rss_source"] == "rusage"
    assert 96 * MIB <= int(found["peak_rss_bytes"]) < 1024 * MIB


def test_a_signal_that_kills_the_command_exits_128_plus_n(tmp_path: Path) -> None:
    proc = wrapped(tmp_path / "usage", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert proc.wait(timeout=60) == 128 + signal.SIGKILL
    assert (tmp_path / "usage").is_file()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_term_and_usr1_reach_the_command(tmp_path: Path, sig: int) -> None:
    """job.sh signals its child, which is this wrapper: the command must get the signal (a
    checkpointing kind saves and exits 75 on it)."""
    proc = wrapped(tmp_path / "usage", """
        import signal, sys
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(75))
        signal.signal(signal.SIGUSR1, lambda *a: sys.exit(76))
        print("ready", flush=True)
        signal.pause()
        """)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == (75 if sig == signal.SIGTERM else 76)
    assert read_usage(tmp_path / "usage")["peak_rss_source"] == "rusage"


def test_a_command_that_cannot_start_exits_127(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "u"), "--",
                             str(tmp_path / "missing")], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 127 and "cannot start" in result.stderr


# --- job.sh records it ---------------------------------------------------------------------

FAKE = """#!/usr/bin/env bash
# stands in for `python -m lyricgen`: holds 64 MiB, reports two GPU peaks like two ranks
{python} -c "b = bytearray(64 << 20); b[::4096] = b'x' * len(b[::4096])"
echo 5000 > "$LYRICGEN_GPU_PEAK_FILE.0"
echo 7000 > "$LYRICGEN_GPU_PEAK_FILE.1"
exit "${{FAKE_EXIT:-0}}"
"""


def job_sh(tmp_path: Path) -> Path:
    """RUNS/r1/clean/job.sh of a clean job whose python is FAKE, rendered with this checkout
    as project dir (so that jobs/accounting.py is there)."""
    fake = tmp_path / "fakepython"
    fake.write_text(FAKE.format(python=sys.executable))
    fake.chmod(0o755)
    job_dir = tmp_path / "runs/r1/clean"
    spec = JobSpec(name="clean", kind="clean", profile="p", needs=(), resources=Resources(),
                   tasks=(Task(0, {}),))
    job_dir.mkdir(parents=True, exist_ok=True)
    script = job_dir / "job.sh"
    script.write_text(render_script(spec, Profile(name="p", python=str(fake)),
                                    job_dir=job_dir, project_dir=REPO))
    return script


def run_job_sh(script: Path, exit_code: int = 0) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    result = subprocess.run(["bash", str(script)], env={**env, "FAKE_EXIT": str(exit_code)},
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == exit_code, result.stderr
    return json.loads((script.parent / "status" / "0.json").read_text())


def test_job_sh_records_wall_cpu_peak_and_gpu_peak(tmp_path: Path) -> None:
    status = run_job_sh(job_sh(tmp_path))
    assert tuple(status) == STATUS_KEYS and status["schema"] == 3
    assert status["state"] == "COMPLETED"
    assert 0 < status["wall_s"] and status["finished"] - status["started"] <= status["wall_s"] + 1
    assert status["cpu_user_s"] + status["cpu_sys_s"] > 0  # a python started and ran
    assert status["peak_rss_source"] == "rusage" and status["peak_rss_bytes"] >= 64 * MIB
    assert status["gpu_peak_bytes"] == 7000  # the largest of the processes' files
    assert not list((tmp_path / "runs/r1/clean/status").glob(".*"))  # no scratch files left
    usage = TaskUsage.from_status(status)
    assert usage.cpu_s == pytest.approx(status["cpu_user_s"] + status["cpu_sys_s"])


def test_a_failed_task_records_its_usage_too(tmp_path: Path) -> None:
    status = run_job_sh(job_sh(tmp_path), exit_code=3)
    assert (status["state"], status["exit_code"]) == ("FAILED", 3)
    assert status["peak_rss_bytes"] >= 64 * MIB and status["wall_s"] > 0


def test_a_requeued_attempt_moves_to_history_before_the_next_starts(tmp_path: Path) -> None:
    script = job_sh(tmp_path)
    earlier = {"schema": 3, "task": 0, "state": "REQUEUED", "exit_code": 75, "started": 100,
               "finished": 160, "wall_s": 60.5}
    (script.parent / "status").mkdir()
    (script.parent / "status" / "0.json").write_text(json.dumps(earlier))
    assert run_job_sh(script)["state"] == "COMPLETED"
    assert task_attempts(script.parent, 0) == [earlier]


# --- reading usage -------------------------------------------------------------------------

def test_schema_2_files_and_foreign_values_read_as_unknown() -> None:
    old = {"schema": 2, "task": 0, "state": "COMPLETED", "started": 100, "finished": 160}
    usage = TaskUsage.from_status(old)
    assert (usage.wall_s, usage.peak_rss_bytes, usage.cpu_s) == (None, None, None)
    assert usage.elapsed() == 60  # finished - started
    odd = TaskUsage.from_status({**old, "wall_s": "fast", "peak_rss_bytes": True,
                                 "peak_rss_source": "guess", "cpu_user_s": -1})
    assert (odd.wall_s, odd.peak_rss_bytes, odd.peak_rss_source, odd.cpu_user_s) == (
        None, None, None, None)
    running = TaskUsage.from_status({"state": "RUNNING", "started": 100, "finished": None})
    assert running.elapsed() is None and running.elapsed(now=130.0) == 30.0


# --- lyricgen's GPU peak file --------------------------------------------------------------

def test_no_gpu_peak_file_without_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU work (torch imported, CUDA never initialised here) writes nothing."""
    import torch  # noqa: F401  (imported: the check must look at CUDA, not only at torch)

    monkeypatch.setenv(gpu_usage.GPU_PEAK_ENV, str(tmp_path / "gpu"))
    assert gpu_usage.record_gpu_peak() is None
    assert not list(tmp_path.iterdir())


def test_gpu_peak_file_per_rank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA calls are stood in for (no GPU here): the largest device peak, one file per
    rank, which job.sh reduces to the task's gpu_peak_bytes."""
    import torch

    peaks = {0: 3 << 30, 1: 5 << 30}
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: peaks[device])
    monkeypatch.setenv(gpu_usage.GPU_PEAK_ENV, str(tmp_path / "gpu"))
    monkeypatch.setenv("RANK", "3")
    assert gpu_usage.record_gpu_peak() == tmp_path / "gpu.3"
    assert (tmp_path / "gpu.3").read_text() == f"{5 << 30}\n"
    monkeypatch.delenv(gpu_usage.GPU_PEAK_ENV)
    assert gpu_usage.record_gpu_peak() is None
