"""Failure reporting end to end on the real local SLURM (scripts/slurm-local.sh enforces
--mem with jobacct_gather OverMemoryKill): out of memory, time limit, exit code of an array
task, a dependency that can never be satisfied; then `resubmit --failed` with --mem/--time.

One pipeline holds every failure so that they run side by side: the time limit (1 minute,
SLURM's smallest; the controller notices it within about 5 s) sets the pace: 70 to 85 s.
"""

from __future__ import annotations

import getpass
import json
import re
import subprocess
from pathlib import Path

import pytest
from test_e2e_slurm import jobctl, settled, states, wait_until

FAILURES = """\
profile: fake-slurm.yaml
jobs:
  - {kind: clean, name: hog, params: {input: hog.txt}, resources: {mem: 100M}}
  - {kind: clean, name: after-hog, needs: [hog], params: {input: ok.txt}}
  - {kind: clean, name: sleepy, params: {input: sleepy.txt}, resources: {time: "00:01:00"}}
  - {kind: clean, name: crash, params: {input: crash.txt}, matrix: {seed: [1, 2]}}
"""


@pytest.fixture
def memory_enforced(slurm_cluster: object) -> None:
    """Skip on a cluster that lets jobs exceed --mem (one started by an older
    scripts/slurm-local.sh: restart it with `down` then `up`)."""
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                            check=False).stdout
    if "OverMemoryKill" not in config:
        pytest.skip("this SLURM does not kill jobs over --mem (JobAcctGatherParams has no "
                    "OverMemoryKill): restart it with scripts/slurm-local.sh down, then up")


def by_name(report: dict) -> dict[str, dict]:
    return {job["name"]: job for job in report["jobs"]}


def scontrol_field(job_id: str, field: str) -> str:
    result = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True,
                            text=True, check=True)
    return next(w.split("=", 1)[1] for w in result.stdout.split() if w.startswith(f"{field}="))


@pytest.mark.slurm
def test_oom_timeout_exit_code_dependency_then_resubmit_with_more(
        memory_enforced: None, fake_python: Path, tmp_path: Path) -> None:
    (tmp_path / "fake-slurm.yaml").write_text(f"executor: slurm\npython: {fake_python}\n")
    (tmp_path / "failures.yaml").write_text(FAILURES)
    (tmp_path / "hog.txt").write_text("alloc 400\nsleep 8\n")  # polled each second
    (tmp_path / "ok.txt").write_text("")
    (tmp_path / "sleepy.txt").write_text("sleep 300\n")
    (tmp_path / "crash.txt").write_text("fail-seeds 2 3\n")
    submitted = jobctl("submit", "failures.yaml", cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr

    code, report = wait_until(tmp_path, settled)
    assert code == 1
    assert states(report) == {"hog": ["OUT_OF_MEMORY"], "after-hog": ["CANCELLED"],
                              "sleepy": ["TIMEOUT"], "crash": ["COMPLETED", "FAILED"]}
    jobs = by_name(report)
    hog = jobs["hog"]["tasks"][0]
    assert hog["signal"] == "KILL"  # the figure is jobacct_gather's, from the log
    assert re.fullmatch(r"out of memory: used \d+M of --mem=100M", hog["reason"])
    assert hog["mem"] == "100M"
    assert jobs["after-hog"]["reason"] == "dependency failed (hog)"
    assert jobs["sleepy"]["reason"] == "time limit (00:01:00)"
    crashed = jobs["crash"]["tasks"][1]
    assert (crashed["exit_code"], crashed["reason"]) == (3, "exit code 3")
    assert jobs["crash"]["state"] == "FAILED"
    assert jobs["crash"]["reason"] == "1 COMPLETED, 1 FAILED; task 1: exit code 3"
    table = jobctl("status", cwd=tmp_path).stdout
    assert "OUT_OF_MEMORY" in table and hog["reason"] in table
    assert "crash" in table and " all  FAILED" in table

    (tmp_path / "sleepy.txt").write_text("sleep 1\n")
    (tmp_path / "crash.txt").write_text("")
    again = jobctl("resubmit", "--failed", "--mem", "hog=1G", "--time", "sleepy=00:02:00",
                   cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "resubmitting hog[0], sleepy[0], crash[1], after-hog[0]" in again.stdout
    assert "hog: mem 100M -> 1G" in again.stdout
    assert "sleepy: time 00:01:00 -> 00:02:00" in again.stdout
    run_dir = Path(report["run_dir"])
    record = json.loads((run_dir / "run.json").read_text())
    hog_job, sleepy_job = record["jobs"]["hog"], record["jobs"]["sleepy"]
    assert "#SBATCH --mem=1G\n" in (run_dir / "hog" / "job.sh").read_text()
    assert "#SBATCH --mem=100M\n" in (run_dir / "hog" / "history" / "job.1.sh").read_text()
    assert "#SBATCH --time=00:02:00\n" in (run_dir / "sleepy" / "job.sh").read_text()
    assert hog_job["submissions"][-1]["resources"]["mem"] == "1G"
    assert scontrol_field(sleepy_job["submissions"][-1]["job_id"], "TimeLimit") == "00:02:00"
    after = record["jobs"]["after-hog"]["submissions"][-1]
    assert after["dependency"] == [hog_job["submissions"][-1]["job_id"]]
    assert after["dependency"] != [hog_job["submissions"][0]["job_id"]]
    resubmission = record["resubmissions"][-1]
    assert resubmission["by"] == getpass.getuser()
    assert resubmission["tasks"] == {"hog": [0], "after-hog": [0], "sleepy": [0], "crash": [1]}
    assert resubmission["overrides"] == {"hog": {"mem": {"from": "100M", "to": "1G"}},
                                         "sleepy": {"time": {"from": "00:01:00",
                                                             "to": "00:02:00"}}}

    code, report = wait_until(tmp_path, settled)
    assert code == 0, states(report)
    assert all(set(s) == {"COMPLETED"} for s in states(report).values())
