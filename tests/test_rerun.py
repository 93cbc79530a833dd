"""`jobctl resubmit --failed --mem/--time` and `jobctl cancel`'s record, on the local executor
(the fake interpreter of conftest); the SLURM side is in test_e2e_slurm_failures.py."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from jobs.cli import cli
from jobs.rerun import profile_from_dict
from jobs.spec import Profile, Source

JOBCTL = Path(sys.executable).parent / "jobctl"
WAIT = 60.0
PIPELINE = """\
jobs:
  - {kind: clean, name: prep, params: {input: prep.txt}}
  - {kind: clean, name: grid, needs: [prep], params: {input: grid.txt},
     matrix: {seed: [1, 2, 3]}, resources: {mem: 1G}}
  - {kind: clean, name: final, needs: [grid], params: {input: prep.txt}}
"""


@pytest.fixture
def manifest(tmp_path: Path, fake_profile: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JOBCTL_RUNS_DIR", raising=False)
    (tmp_path / "prep.txt").write_text("")
    (tmp_path / "grid.txt").write_text("fail-seeds 2 3 5\n")
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"profile: {fake_profile}\n{PIPELINE}")
    return path


def jobctl(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def report() -> dict:
    return json.loads(jobctl("status", "--json").stdout)


def test_resubmit_with_more_memory_and_time_rerenders_and_records(manifest: Path,
                                                                  tmp_path: Path) -> None:
    assert jobctl("run", str(manifest)).exit_code == 1
    before = report()
    grid = before["jobs"][1]
    assert [t["state"] for t in grid["tasks"]] == ["COMPLETED", "FAILED", "FAILED"]
    assert grid["reason"] == "2 FAILED, 1 COMPLETED; task 1: exit code 5"
    grid_dir, final_dir = Path(grid["job_dir"]), Path(before["jobs"][2]["job_dir"])
    first_script = (grid_dir / "job.sh").read_text()

    (tmp_path / "grid.txt").write_text("")
    again = jobctl("resubmit", "--failed", "--mem", "grid=3g", "--time", "00:20:00")
    assert again.exit_code == 0, again.output
    assert "resubmitting grid[1-2], final[0]" in again.stdout
    assert "grid: mem 1G -> 3G, time 00:30:00 -> 00:20:00" in again.stdout
    assert "final: time 00:30:00 -> 00:20:00" in again.stdout
    after = report()
    assert all(job["state"] == "COMPLETED" for job in after["jobs"])
    script = (grid_dir / "job.sh").read_text()
    assert "#SBATCH --mem=3G\n" in script and "#SBATCH --time=00:20:00\n" in script
    assert (grid_dir / "history" / "job.1.sh").read_text() == first_script
    assert "#SBATCH --mem=2G\n" in (final_dir / "job.sh").read_text()  # clean's default
    record = json.loads((Path(after["run_dir"]) / "run.json").read_text())
    assert record["jobs"]["grid"]["spec"]["resources"]["mem"] == "3G"
    assert record["jobs"]["grid"]["submissions"][-1]["resources"]["time"] == "00:20:00"
    assert record["jobs"]["grid"]["submissions"][0]["resources"]["mem"] == "1G"
    (entry,) = record["resubmissions"]
    assert entry["by"] == getpass.getuser() and entry["tasks"] == {"grid": [1, 2], "final": [0]}
    assert entry["overrides"]["grid"] == {"mem": {"from": "1G", "to": "3G"},
                                          "time": {"from": "00:30:00", "to": "00:20:00"}}


@pytest.mark.parametrize(("args", "message"), [
    (["--mem", "12"], "--mem: mem: expected a size with a unit like 512M"),
    (["--time", "grid=0"], "--time: time: the time limit must be more than zero"),
    (["--mem", "prep=4G"], "--mem prep=4G: job 'prep' has nothing to resubmit (resubmitting: "
                           "grid, final)"),
])
def test_bad_overrides_are_one_line_and_change_nothing(manifest: Path, args: list[str],
                                                       message: str) -> None:
    assert jobctl("run", str(manifest)).exit_code == 1
    run_dir = Path(report()["run_dir"])
    before = (run_dir / "run.json").read_text()
    result = jobctl("resubmit", "--failed", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith("jobctl: error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert (run_dir / "run.json").read_text() == before
    assert not (run_dir / "grid" / "history").exists()


def test_time_limit_below_the_warning_signal_changes_nothing(tmp_path: Path, fake_profile: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JOBCTL_RUNS_DIR", raising=False)
    (tmp_path / "data.txt").write_text("text\n")
    (tmp_path / "train.yaml").write_text(
        f"profile: {fake_profile}\njobs:\n  - {{kind: train-rnn, name: train, "
        "params: {data: data.txt}, resources: {time: '01:00:00', signal_seconds: 600}}\n")
    assert jobctl("run", "train.yaml").exit_code == 1  # the fake interpreter needs `input`
    run_dir = Path(report()["run_dir"])
    before = (run_dir / "run.json").read_text()
    result = jobctl("resubmit", "--failed", "--time", "00:05:00")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "signal_seconds" in result.stderr, result.stderr
    assert (run_dir / "run.json").read_text() == before
    assert not (run_dir / "train" / "history").exists()


def test_cancel_records_who_and_status_says_so(manifest: Path, tmp_path: Path) -> None:
    (tmp_path / "prep.txt").write_text("sleep 30\n")
    runner = subprocess.Popen([str(JOBCTL), "run", str(manifest)], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + WAIT
    while '"RUNNING"' not in "".join(p.read_text() for p in
                                     (tmp_path / "runs").glob("*/prep/status/0.json")):
        assert time.monotonic() < deadline and runner.poll() is None
        time.sleep(0.05)
    cancelled = jobctl("cancel", "prep", "grid")
    assert cancelled.exit_code == 0 and "cancelled prep:0" in cancelled.stdout
    assert runner.wait(timeout=WAIT) == 1
    jobs = {job["name"]: job for job in report()["jobs"]}
    by = f"cancelled by {getpass.getuser()} (jobctl cancel)"
    assert [(t["state"], t["reason"]) for t in jobs["prep"]["tasks"]] == [("CANCELLED", by)]
    assert jobs["prep"]["tasks"][0]["signal"] == "TERM"
    assert {t["reason"] for t in jobs["grid"]["tasks"]} == {by}
    assert jobs["final"]["reason"] == "dependency failed (grid)"
    record = json.loads((tmp_path / "runs").glob("*/run.json").__next__().read_text())
    assert record["cancellations"][0]["jobs"] == ["prep", "grid"]


def test_profile_round_trips_through_run_json() -> None:
    profile = Profile(name="p", executor="slurm", binds=("/a:/b",), env={"X": "1"},
                      env_passthrough=("HF_TOKEN",), modules=("cuda/12",), sbatch={"qos": "q"},
                      source=Source("/p.yaml", 1))
    assert profile_from_dict(json.loads(json.dumps(profile.to_dict()))) == profile
