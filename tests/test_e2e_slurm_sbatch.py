"""sbatch that queues the job but whose answer is lost, against the real local SLURM: a
stand-in `sbatch` first on PATH runs the real one, then prints garbage or hangs past
jobctl's timeout. jobctl finds the job by its --comment token and records it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs import plan
from jobs.cli import load
from jobs.executors import collect_status, full_selection
from jobs.executors import slurm as slurm_mod
from jobs.executors.slurm import SlurmExecutor
from jobs.state import Run

JOBCTL = Path(sys.executable).parent / "jobctl"
DONE_WAIT = 240.0
PIPELINE = """\
profile: fake-slurm.yaml
jobs:
  - {kind: clean, name: first, params: {input: first.txt}}
  - {kind: clean, name: second, needs: [first], params: {input: second.txt}}
"""
STAND_IN = """#!/usr/bin/env bash
{real} "$@" >/dev/null  # queued; the answer is lost
{then}
"""


@pytest.fixture
def project(slurm_cluster: object, fake_python: Path, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "first.txt").write_text("")
    (tmp_path / "second.txt").write_text("")
    (tmp_path / "fake-slurm.yaml").write_text(f"executor: slurm\npython: {fake_python}\n")
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def stand_in_sbatch(directory: Path, then: str) -> dict[str, str]:
    """PATH with a stand-in sbatch first that queues through the real one, then `then`."""
    real = shutil.which("sbatch")
    assert real is not None
    bin_dir = directory / "stand-in"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(STAND_IN.format(real=real, then=then))
    (bin_dir / "sbatch").chmod(0o755)
    return {"PATH": f"{bin_dir}:{Path(real).parent}:/usr/bin:/bin"}


def comment_of(job_id: str) -> str:
    shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True,
                           text=True, timeout=60, check=True).stdout
    return slurm_mod.parse_record(shown.splitlines()[0])["Comment"]


def wait_completed(run_dir: Path) -> dict[str, list[str]]:
    """Poll the run's status until nothing is pending or running (a wait, not a timing
    check)."""
    deadline = time.monotonic() + DONE_WAIT
    while True:
        states = {job.name: [t.state for t in job.tasks] for job in collect_status(Run(run_dir))}
        if not any(state in ("PENDING", "RUNNING") for s in states.values() for state in s):
            return states
        assert time.monotonic() < deadline, f"still waiting: {states}"
        time.sleep(0.5)


@pytest.mark.slurm
def test_garbage_from_sbatch_is_recovered_by_comment(project: Path) -> None:
    path = stand_in_sbatch(project, 'echo "sbatch: error: Socket timed out, maybe"')
    result = subprocess.run([str(JOBCTL), "submit", "pipeline.yaml"], cwd=project,
                            capture_output=True, text=True, timeout=300, check=False,
                            env={**os.environ, **path})
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.splitlines()  # first, second and the run report's job
    assert len(warnings) == 3 and all(line.startswith("jobctl: warning: ") and
                                      "found the job by its comment" in line
                                      for line in warnings), warnings
    run_dir = next((project / "runs").glob("*/run.json")).parent
    record = json.loads((run_dir / "run.json").read_text())
    first, second = (record["jobs"][n]["submissions"][0] for n in ("first", "second"))
    assert first["job_id"].isdigit() and comment_of(first["job_id"]) == first["token"]
    assert second["dependency"] == [first["job_id"]]
    assert f"submitted as {first['job_id']}" in result.stdout
    (report_job,) = record["report_jobs"]
    assert report_job["dependency"] == [first["job_id"], second["job_id"]]
    assert comment_of(report_job["job_id"]).startswith(f"jobctl:{run_dir.name}/_report:")
    assert wait_completed(run_dir) == {"first": ["COMPLETED"], "second": ["COMPLETED"]}


@pytest.mark.slurm
def test_sbatch_timeout_after_queueing_is_recovered(project: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in stand_in_sbatch(project, "exec sleep 60").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(slurm_mod, "COMMAND_TIMEOUT", 5)
    pipeline, profiles = load("pipeline.yaml", None)
    run = plan.create_run(pipeline, profiles, project / "runs", executor="slurm")
    assert SlurmExecutor().submit(run, full_selection(run.read()))
    submission = run.read()["jobs"]["first"]["submissions"][0]
    assert submission["note"].startswith("sbatch did not answer within 5s")
    assert comment_of(submission["job_id"]) == submission["token"]
    assert wait_completed(run.dir) == {"first": ["COMPLETED"], "second": ["COMPLETED"]}

