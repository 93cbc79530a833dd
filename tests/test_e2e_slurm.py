"""End to end against the real local SLURM cluster (`make slurm-up`, $SLURM_CONF set):
`jobctl submit`, `status --json`, `cancel` and `resubmit --failed` as a user runs them; and
scripts/slurm-local.sh itself (a second throwaway cluster in a tmp dir).

Skipped with the reason when no cluster answers (see conftest.slurm_cluster) or the SLURM
and munge programs are missing.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm-local.sh"
JOBCTL = Path(sys.executable).parent / "jobctl"
DONE_WAIT = 240.0
ACTIVE = ("PENDING", "RUNNING")

PIPELINE = """\
profile: slurm-host.yaml
jobs:
  - kind: clean
    name: clean
    params: {input: small.txt}
  - kind: clean
    name: grid
    needs: [clean]
    params: {input: "{{ needs.clean.outputs.corpus }}", min_lines: 1}
    matrix: {seed: [1, 2]}
  - kind: clean
    name: broken
    matrix: {input: [small.txt, empty.txt]}
  - kind: clean
    name: after
    needs: [broken]
    params: {input: small.txt, seed: 7}
"""


def jobctl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(JOBCTL), *args, "--runs-dir", str(cwd / "runs")], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def status(cwd: Path) -> tuple[int, dict]:
    result = jobctl("status", "--json", cwd=cwd)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def states(report: dict) -> dict[str, list[str]]:
    return {job["name"]: [t["state"] for t in job["tasks"]] for job in report["jobs"]}


def wait_until(cwd: Path, done: callable) -> tuple[int, dict]:
    """Poll `jobctl status --json` until done(report) holds (a wait, not a timing check)."""
    deadline = time.monotonic() + DONE_WAIT
    while True:
        code, report = status(cwd)
        if done(report):
            return code, report
        assert time.monotonic() < deadline, f"still waiting: {states(report)}"
        time.sleep(0.5)


def settled(report: dict) -> bool:
    return not any(job["state"] in ACTIVE for job in report["jobs"])


@pytest.mark.slurm
def test_pipeline_failure_dependents_and_resubmit(slurm_cluster: object, small_corpus: Path,
                                                  tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "slurm-host.yaml").write_text("executor: slurm\nruntime: host\n")
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    submitted = jobctl("submit", "pipeline.yaml", cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    assert submitted.stdout.count("submitted as") == 4

    code, report = wait_until(tmp_path, settled)
    assert code == 1
    assert states(report) == {"clean": ["COMPLETED"], "grid": ["COMPLETED"] * 2,
                              "broken": ["COMPLETED", "FAILED"], "after": ["CANCELLED"]}
    jobs = {job["name"]: job for job in report["jobs"]}
    assert jobs["broken"]["tasks"][1]["exit_code"] == 2
    assert jobs["after"]["tasks"][0]["reason"].startswith("dependency failed")
    for task in (0, 1):
        assert (Path(jobs["grid"]["out_dir"]) / str(task) / "train.txt").is_file()
    grid_config = json.loads((Path(jobs["grid"]["job_dir"]) / "config.json").read_text())
    assert grid_config["tasks"][0]["params"]["input"] == str(
        Path(jobs["clean"]["out_dir"]) / "corpus.txt")
    broken_dir = Path(jobs["broken"]["job_dir"])
    kept = (broken_dir / "status" / "0.json").read_text()
    first_id = jobs["broken"]["tasks"][0]["job_id"].split("_")[0]
    log = jobctl("logs", "broken:1", cwd=tmp_path)
    assert "empty file" in log.stdout

    (tmp_path / "empty.txt").write_text(small_corpus.read_text(encoding="utf-8"),
                                        encoding="utf-8")
    again = jobctl("resubmit", "--failed", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "resubmitting broken[1], after[0]" in again.stdout
    record = json.loads((Path(report["run_dir"]) / "run.json").read_text())
    broken_sub = record["jobs"]["broken"]["submissions"][-1]
    after_sub = record["jobs"]["after"]["submissions"][-1]
    assert "--array=1" in broken_sub["argv"] and broken_sub["tasks"] == [1]
    assert after_sub["dependency"] == [broken_sub["job_id"]] != [first_id]

    code, report = wait_until(tmp_path, settled)
    assert code == 0, states(report)
    assert all(set(s) == {"COMPLETED"} for s in states(report).values())
    assert (broken_dir / "status" / "0.json").read_text() == kept
    broken = next(job for job in report["jobs"] if job["name"] == "broken")
    assert broken["tasks"][1]["job_id"] == f"{broken_sub['job_id']}_1"

    cached = jobctl("submit", "pipeline.yaml", cwd=tmp_path)
    assert cached.returncode == 0 and "nothing to submit: every job is cached" in cached.stdout


CANCEL = """\
jobs:
  - {kind: clean, name: slow, params: {input: slow.txt}}
  - {kind: clean, name: later, needs: [slow], params: {input: fast.txt}}
"""


@pytest.mark.slurm
def test_cancel_running_job_cancels_its_dependent(slurm_cluster: object, fake_python: Path,
                                                  tmp_path: Path) -> None:
    (tmp_path / "slow.txt").write_text("sleep 120\n")
    (tmp_path / "fast.txt").write_text("")
    (tmp_path / "fake-slurm.yaml").write_text(f"executor: slurm\npython: {fake_python}\n")
    (tmp_path / "cancel.yaml").write_text(f"profile: fake-slurm.yaml\n{CANCEL}")
    submitted = jobctl("submit", "cancel.yaml", cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    wait_until(tmp_path, lambda r: states(r)["slow"] == ["RUNNING"])

    cancelled = jobctl("cancel", "slow", cwd=tmp_path)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    code, report = wait_until(tmp_path, settled)
    assert code == 1
    assert states(report) == {"slow": ["CANCELLED"], "later": ["CANCELLED"]}
    # the report job (afterany) runs although both ended badly, and leaves the jobs alone
    assert "written by SLURM job" in submitted.stdout
    page = Path(report["run_dir"]) / "report.html"
    wait_until(tmp_path, lambda _: page.is_file())
    assert f"cancelled by {getpass.getuser()} (jobctl cancel)" in page.read_text()
    slow, later = report["jobs"]
    assert slow["tasks"][0]["reason"] == f"cancelled by {getpass.getuser()} (jobctl cancel)"
    assert slow["tasks"][0]["signal"] == "TERM"
    assert later["tasks"][0]["reason"].startswith("dependency failed")
    assert not (Path(later["out_dir"]) / "fake.json").exists()
    ids = [t["job_id"] for job in report["jobs"] for t in job["tasks"]]
    queue = subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-t", "PD,R,CG", "-o", "%i"],
                           capture_output=True, text=True, check=False)
    assert queue.stdout.strip() == ""


def script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=180, check=False, env=env)


@pytest.mark.slurm
def test_cluster_script_up_is_idempotent_and_down_cleans_up(tmp_path: Path) -> None:
    daemons = ("munged", "slurmctld", "slurmd")
    if not all(shutil.which(d, path=f"{os.environ['PATH']}:/usr/sbin") for d in daemons):
        pytest.skip("munge/SLURM daemons not installed")
    directory = tmp_path / "cluster"
    try:
        first = script("up", str(directory))
        assert first.returncode == 0, first.stderr
        conf = directory / "etc" / "slurm.conf"
        assert first.stdout == f"export SLURM_CONF={conf}\n"
        text = conf.read_text()
        assert "DependencyParameters=kill_invalid_depend" in text
        ports = re.findall(r"^NodeName=n[12] NodeAddr=127\.0\.0\.1 .*Port=(\d+)", text, re.M)
        assert len(set(ports)) == 2  # two nodes by default, each slurmd on its own port
        again = script("up", str(directory))
        assert again.returncode == 0 and "starting" not in again.stderr
        env = {**os.environ, "SLURM_CONF": str(conf)}
        nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True,
                               text=True, env=env, check=True).stdout.split("\n")
        assert sorted(line.split()[0] for line in nodes if line) == ["n1", "n2"]
        job = subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", "--wrap", "sleep 300"],
                             capture_output=True, text=True, env=env, check=True)
        assert job.stdout.strip().isdigit()
        assert script("status", str(directory)).returncode == 0
        pids = {path.name: path.read_text().strip()
                for path in (directory / "run").glob("*.pid")}
        assert sorted(pids) == ["munged.pid", "slurmctld.pid", "slurmd.n1.pid",
                                "slurmd.n2.pid"]
    finally:
        down = script("down", str(directory))
    assert down.returncode == 0, down.stderr
    assert script("status", str(directory)).returncode == 3
    assert script("down", str(directory)).returncode == 0
    assert all(running_program(pid) not in daemons for pid in pids.values())


def running_program(pid: str) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


@pytest.mark.parametrize("args", [[], ["start"], ["up", "a", "b"]])
def test_cluster_script_usage(args: list[str]) -> None:
    result = script(*args)
    assert result.returncode == 2 and result.stderr.startswith("usage: ")


def test_cluster_script_is_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed")
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout
