"""`jobctl` commands through click's CliRunner, and the installed script as a subprocess for
exit codes, one-line errors and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from jobs.cli import cli

REPO = Path(__file__).resolve().parents[1]
JOBCTL = Path(sys.executable).parent / "jobctl"
WAIT = 60.0

PIPELINE = """\
jobs:
  - kind: clean
    name: prep
    params: {input: prep.txt}
  - kind: clean
    name: grid
    needs: [prep]
    params: {input: grid.txt}
    matrix: {seed: [1, 2, 3]}
  - kind: clean
    name: final
    needs: [prep, grid]
    params: {input: "{{ needs.prep.outputs.corpus }}"}
"""


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JOBCTL_RUNS_DIR", raising=False)
    monkeypatch.delenv("JOBCTL_PROFILE", raising=False)
    return tmp_path


@pytest.fixture
def manifest(tmp_path: Path, fake_profile: Path) -> Path:
    (tmp_path / "prep.txt").write_text("")
    (tmp_path / "grid.txt").write_text("")
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"profile: {fake_profile}\n{PIPELINE}")
    return path


def jobctl(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def status_json(*args: str) -> dict:
    return json.loads(jobctl("status", "--json", *args).stdout)


def task_states(report: dict) -> dict[str, list[str]]:
    return {job["name"]: [t["state"] for t in job["tasks"]] for job in report["jobs"]}


def test_validate_summarises_every_job(manifest: Path, fake_profile: Path) -> None:
    result = jobctl("validate", str(manifest))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{manifest}: ok, 3 job(s)"
    assert "grid" in lines[2] and "3 tasks (array)" in lines[2] and "needs=prep" in lines[2]
    assert lines[1].endswith(f"profile={fake_profile}")


def test_render_prints_or_writes_without_a_run(manifest: Path, tmp_path: Path) -> None:
    printed = jobctl("render", str(manifest))
    assert printed.exit_code == 0
    assert printed.stdout.count("#!/usr/bin/env bash") == 3
    assert '"kind": "clean"' in printed.stdout
    written = jobctl("render", str(manifest), "--out", "rendered")
    assert written.exit_code == 0
    config = json.loads((tmp_path / "rendered" / "final" / "config.json").read_text())
    assert config["tasks"][0]["params"]["input"] == str(
        tmp_path / "rendered" / "prep" / "out" / "corpus.txt")
    assert (tmp_path / "rendered" / "grid" / "job.sh").read_text().count("--array=0-2") == 1
    assert not (tmp_path / "runs").exists()


def test_run_then_cached_rerun_then_forced(manifest: Path) -> None:
    first = jobctl("run", str(manifest), "--parallel", "2")
    assert first.exit_code == 0, first.output
    report = status_json()
    assert task_states(report) == {"prep": ["COMPLETED"], "grid": ["COMPLETED"] * 3,
                                   "final": ["COMPLETED"]}
    second = jobctl("run", str(manifest))
    assert second.exit_code == 0
    assert second.stdout.count("skipped: cached from") == 3
    assert "nothing to run" in second.stdout
    cached = status_json()
    assert all(job["skipped"] and job["state"] == "SKIPPED" for job in cached["jobs"])
    assert cached["jobs"][0]["out_dir"] == report["jobs"][0]["out_dir"]
    forced = jobctl("run", str(manifest), "--force")
    assert forced.exit_code == 0 and "skipped" not in forced.stdout


def tree(directory: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in directory.rglob("*")}


def test_status_writes_nothing(manifest: Path, tmp_path: Path) -> None:
    """Not even the cache index: the local executor indexes what it completed, and the
    cache finds other completed jobs by scanning the runs."""
    (tmp_path / "grid.txt").write_text("fail-seeds 2 1\n")
    assert jobctl("run", str(manifest)).exit_code == 1
    (tmp_path / "runs" / ".cache.json").unlink()
    before = tree(tmp_path / "runs")
    assert jobctl("status").exit_code == 1
    assert status_json()["jobs"][0]["state"] == "COMPLETED"
    assert tree(tmp_path / "runs") == before
    again = jobctl("run", str(manifest))
    assert "prep             skipped: cached from" in again.stdout


def test_failed_task_then_resubmit_only_what_failed(manifest: Path, tmp_path: Path) -> None:
    (tmp_path / "grid.txt").write_text("fail-seeds 2 4\n")
    failed = jobctl("run", str(manifest))
    assert failed.exit_code == 1
    assert "2 job(s) did not complete: grid (failed), final (cancelled)" in failed.stderr
    report = status_json()
    assert task_states(report)["grid"] == ["COMPLETED", "FAILED", "COMPLETED"]
    assert report["jobs"][2]["tasks"][0]["reason"] == "dependency failed (grid)"
    assert jobctl("status").exit_code == 1
    grid_dir = Path(report["jobs"][1]["job_dir"])
    before = {task: (grid_dir / "status" / f"{task}.json").read_text() for task in (0, 2)}

    (tmp_path / "grid.txt").write_text("")
    again = jobctl("resubmit", "--failed")
    assert again.exit_code == 0, again.output
    assert "resubmitting grid[1], final[0]" in again.stdout
    assert all(s == ["COMPLETED"] * len(s) for s in task_states(status_json()).values())
    assert {t: (grid_dir / "status" / f"{t}.json").read_text() for t in (0, 2)} == before
    assert json.loads((grid_dir / "status" / "history" / "1.1.json").read_text())[
        "exit_code"] == 4
    assert sorted(p.name for p in (grid_dir / "status" / "history").iterdir()) == ["1.1.json"]
    assert "nothing to resubmit" in jobctl("resubmit", "--failed").stdout
    assert "nothing to run: every job is cached" in jobctl("run", str(manifest)).stdout


def test_submit_follows_the_profile_executor(manifest: Path, tmp_path: Path) -> None:
    planned = jobctl("submit", str(manifest), "--dry-run")
    assert planned.exit_code == 0
    assert f"bash {tmp_path}/runs/" in planned.stdout and "(after prep, grid)" in planned.stdout
    assert task_states(status_json())["grid"] == ["UNKNOWN"] * 3
    submitted = jobctl("submit", str(manifest))
    assert submitted.exit_code == 0, submitted.output
    report = status_json()
    assert report["executor"] == "local" and report["jobs"][2]["state"] == "COMPLETED"
    (tmp_path / "slurm.yaml").write_text("executor: slurm\n")
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text(manifest.read_text().replace("name: final", "name: final\n    profile: "
                                                  "slurm.yaml"))
    refused = jobctl("submit", str(mixed))
    assert refused.exit_code == 2 and "different executors (local, slurm)" in refused.stderr


def test_logs_and_cancel_and_user_errors(manifest: Path) -> None:
    assert jobctl("run", str(manifest)).exit_code == 0
    log = jobctl("logs", "grid:1")
    assert log.exit_code == 0 and "fake clean task 1 starts" in log.stdout
    assert jobctl("logs", "grid").stdout.count("==> ") == 3
    assert "nothing to cancel" in jobctl("cancel").stdout
    for args, message in ((["logs", "nope"], "has no job 'nope'"),
                          (["logs", "grid:7"], "task must be a number from 0 to 2"),
                          (["cancel", "nope"], "has no job 'nope'"),
                          (["resubmit"], "pass --failed"),
                          (["status", "19990101"], "no run matching"),
                          (["validate", "missing.yaml"], "no such manifest file")):
        result = jobctl(*args)
        assert result.exit_code == 2, args
        assert result.stderr.startswith("jobctl: error: ") and message in result.stderr
        assert result.stderr.count("\n") == 1


def test_real_clean_kind_runs_locally(small_corpus: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "clean.yaml"
    manifest.write_text(f"kind: clean\nname: corpus\nparams: {{input: {small_corpus}}}\n")
    result = jobctl("run", str(manifest))
    assert result.exit_code == 0, result.output
    out = Path(status_json()["jobs"][0]["out_dir"])
    assert "<|fin|>" in (out / "train.txt").read_text(encoding="utf-8")
    assert json.loads((out / "provenance.json").read_text())["kind"] == "clean"


def test_logs_follow_ends_with_the_task(manifest: Path, tmp_path: Path) -> None:
    (tmp_path / "prep.txt").write_text("sleep 1.5\n")
    runner = subprocess.Popen([str(JOBCTL), "run", str(manifest)], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + WAIT
    while not list((tmp_path / "runs").glob("*/prep/logs/local-0.out")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    followed = jobctl("logs", "prep", "-f")
    assert followed.exit_code == 0
    assert followed.stdout.startswith("fake clean task 0 starts")
    assert followed.stdout.endswith("fake done\n")
    assert runner.wait(timeout=WAIT) == 0


# --- the installed console script ----------------------------------------------------------

def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(JOBCTL), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=WAIT, check=False)


def test_script_user_errors_are_one_line_exit_2(tmp_path: Path, fake_profile: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"profile: {fake_profile}\njobs:\n  - kind: clean\n    params: {{inptu: x}}\n")
    for args in (["validate", str(bad)], ["run", str(bad)], ["status"],
                 ["validate", "missing.yaml"]):
        result = run_script(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("jobctl: error: ") and result.stderr.count("\n") == 1
        assert "Traceback" not in result.stderr
    message = run_script("validate", str(bad), cwd=tmp_path).stderr
    assert f"{bad}:4: jobs[0].params.inptu: unknown param" in message


def test_script_job_failure_exit_1(manifest: Path, tmp_path: Path) -> None:
    (tmp_path / "prep.txt").write_text("fail 9\n")
    result = run_script("run", str(manifest), cwd=tmp_path)
    assert result.returncode == 1
    assert "prep (failed)" in result.stderr and "Traceback" not in result.stderr


def test_script_ctrl_c_cancels_running_and_waiting(manifest: Path, tmp_path: Path) -> None:
    (tmp_path / "prep.txt").write_text("sleep 30\n")
    proc = subprocess.Popen([str(JOBCTL), "run", str(manifest)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + WAIT
    while '"RUNNING"' not in "".join(p.read_text() for p in
                                     (tmp_path / "runs").glob("*/prep/status/0.json")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=WAIT)
    assert proc.returncode == 130 and "jobctl: interrupted" in stderr
    report = status_json()
    assert task_states(report) == {"prep": ["CANCELLED"], "grid": ["CANCELLED"] * 3,
                                   "final": ["CANCELLED"]}
    assert report["jobs"][0]["tasks"][0]["reason"] == "signal TERM"
    assert report["jobs"][1]["tasks"][0]["reason"] == "jobctl run interrupted"


def test_kinds_lists_every_kind_and_one_kinds_params() -> None:
    from kindspec.registry import KINDS

    overview = CliRunner().invoke(cli, ["kinds"])
    assert overview.exit_code == 0
    assert [line.split()[0] for line in overview.stdout.splitlines()[:len(KINDS)]] == list(KINDS)
    reference = CliRunner().invoke(cli, ["kinds", "train-rnn"])
    assert reference.exit_code == 0
    text = reference.stdout
    for name in KINDS["train-rnn"].params:
        assert f"\n  {name} " in text
    assert "data              path; required" in text
    assert 'arch              str; default "lstm"; one of rnn, lstm, gru' in text
    assert "num_layers        int; default 1; range [1, 16]" in text
    assert "checkpoint: out/checkpoint" in text and "default resources: cpus=4" in text
    unknown = CliRunner().invoke(cli, ["kinds", "train_rnn"])
    assert unknown.exit_code == 2
    assert unknown.stderr.strip().endswith("did you mean 'train-rnn'?")


def test_run_refuses_multi_node_jobs_before_creating_a_run(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "t.jsonl").write_text("{}\n")
    (tmp_path / "m.yaml").write_text(
        "jobs:\n  - kind: finetune-llama\n    name: ft\n"
        "    params: {model_path: base, data_path: t.jsonl}\n"
        "    resources: {nodes: 2, gpus: 1}\n")
    profile = str(REPO / "manifests/profiles/slurm-host.yaml")
    result = CliRunner().invoke(cli, ["run", "m.yaml", "--profile", profile])
    assert result.exit_code == 2
    assert "job ft asks for 2 nodes but `jobctl run` uses this machine only" in result.stderr
    assert not (tmp_path / "runs").exists()
