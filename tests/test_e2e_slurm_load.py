"""Load on the real local SLURM: a sharded generate-grid is ONE throttled job array, handed
over in ONE sbatch call (counted by an `sbatch` wrapper first on PATH; the one other call
queues the run report's job), and every task ends COMPLETED. 200 tasks keep the test near
20 s on 2 cores; `bench/peer_slurm.py --tasks 1000` runs the full 1,000 (and Snakemake
beside it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

JOBCTL = Path(sys.executable).parent / "jobctl"
TASKS = 200
THROTTLE = 20
DONE_WAIT = 300.0
GRID = f"""\
kind: generate-grid
name: grid
profile: trivial-slurm.yaml
resources: {{cpus: 1, mem: 64M, time: "00:05:00"}}
throttle: {THROTTLE}
params: {{model: model.pt, prompts: [hola], shards: {TASKS}}}
"""
SBATCH_WRAPPER = """#!/bin/sh
echo "$*" >> {log}
exec {real} "$@"
"""


def counting_sbatch(bin_dir: Path, log: Path) -> dict[str, str]:
    """An environment whose `sbatch` logs each call's arguments to `log`, then runs SLURM's."""
    real = shutil.which("sbatch")
    assert real is not None
    bin_dir.mkdir()
    wrapper = bin_dir / "sbatch"
    wrapper.write_text(SBATCH_WRAPPER.format(log=log, real=real))
    wrapper.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def jobctl(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(JOBCTL), *args, "--runs-dir", str(cwd / "runs")], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slurm
def test_sharded_grid_is_one_throttled_array_in_one_sbatch(slurm_cluster: object,
                                                           tmp_path: Path) -> None:
    trivial = tmp_path / "trivial-python"
    trivial.write_text("#!/bin/sh\nexit 0\n")  # stands in for `python -m lyricgen ...`
    trivial.chmod(0o755)
    (tmp_path / "trivial-slurm.yaml").write_text(f"executor: slurm\npython: {trivial}\n")
    (tmp_path / "model.pt").write_bytes(b"")
    (tmp_path / "grid.yaml").write_text(GRID)
    log = tmp_path / "sbatch.log"
    env = counting_sbatch(tmp_path / "bin", log)

    submitted = jobctl("submit", "grid.yaml", cwd=tmp_path, env=env)
    assert submitted.returncode == 0, submitted.stderr
    call, report_call = log.read_text().splitlines()  # the grid, then the run report's job
    assert "--array" not in call  # the script's own #SBATCH --array line holds
    assert report_call.endswith("/_report/report.sh") and "--dependency=afterany:" in report_call
    (script,) = (tmp_path / "runs").glob("*/grid/job.sh")
    assert f"#SBATCH --array=0-{TASKS - 1}%{THROTTLE}\n" in script.read_text()
    assert f"tasks 0-{TASKS - 1}" in submitted.stdout
    array_id = submitted.stdout.split("submitted as ")[1].split()[0]
    shown = subprocess.run(["scontrol", "-o", "show", "job", array_id], capture_output=True,
                           text=True, check=True).stdout  # 200 tasks are not done yet
    assert f"ArrayTaskThrottle={THROTTLE} " in shown

    deadline = time.monotonic() + DONE_WAIT
    while True:
        report = json.loads(jobctl("status", "--json", cwd=tmp_path, env=env).stdout)
        (job,) = report["jobs"]
        if job["state"] not in ("PENDING", "RUNNING"):
            break
        assert time.monotonic() < deadline, job["reason"]
        time.sleep(1.0)
    assert job["state"] == "COMPLETED", job["reason"]
    assert job["reason"] == f"{TASKS} COMPLETED"
    assert [t["job_id"] for t in job["tasks"]] == [f"{array_id}_{i}" for i in range(TASKS)]
    assert len(log.read_text().splitlines()) == 2
