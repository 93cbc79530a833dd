"""Preemption end to end: a real train-rnn job (small GRU, a slice of the real DISCO corpus)
gets SIGUSR1 mid-training, as SLURM sends it before a time limit, and ends exactly like an
uninterrupted run of the same manifest.

* SLURM (`jobctl submit` on the local cluster): `scancel --signal=USR1 --batch` reaches
  job.sh's trap only (like `--signal=B:USR1@N`); lyricgen saves a checkpoint and exits 75;
  job.sh runs `scontrol requeue`; the job runs again from the top of job.sh, resumes from the
  checkpoint and completes: `jobctl status` says COMPLETED, "requeued 1x". SLURM holds a
  requeued job for about 2 minutes before it may start again (the credential lifetime,
  AuthInfo cred_expire, default 120 s); the test lifts that hold with
  `scontrol update StartTime=now` instead of waiting (a few seconds after the requeue: in the
  same second slurmd would refuse the launch and the job would FAIL).
* local (`jobctl run`): SIGUSR1 to job.sh records PREEMPTED (exit 75) and
  `jobctl resubmit --failed` resumes it to the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
DISCO = REPO.parent / "shared/corpora/disco"
JOBCTL = Path(sys.executable).parent / "jobctl"
WAIT = 300.0  # the shared cluster may be busy; a limit on waiting, not a timing check
MANIFEST = """\
kind: train-rnn
name: train
resources: {cpus: 1, mem: 1G, time: "00:10:00"}
params: {data: train.txt, valid_data: valid.txt, arch: gru, hidden_size: 64, embedding_dim: 16,
         batch_size: 16, seq_len: 64, epochs: 5, warmup_steps: 5, checkpoint_every: 10,
         log_every: 1, seed: 42, device: cpu}
"""


def jobctl(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(JOBCTL), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, check=False)


def status(cwd: Path, runs: str) -> dict:
    result = jobctl(cwd, "status", "--json", "--runs-dir", runs)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)["jobs"][0]


def wait_for(what: str, check, limit: float = WAIT) -> object:
    """check()'s first true value, polled every 0.2 s; fails after `limit` seconds."""
    deadline = time.monotonic() + limit
    while not (found := check()):
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.2)
    return found


def task_status(job: dict) -> dict:
    path = Path(job["job_dir"]) / "status/0.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def training(out: Path) -> tuple[list[str], dict, dict[str, torch.Tensor]]:
    """(per-step train losses from metrics.csv, metrics.json final+best, final weights)."""
    rows = (out / "metrics.csv").read_text(encoding="utf-8").splitlines()[1:]
    losses = [row.split(",")[2] for row in rows if row.split(",")[2]]
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    weights = torch.load(out / "checkpoint/last.pt", weights_only=True)["model_state"]
    return losses, {"final": metrics["final"], "best": metrics["best"]}, weights


def assert_same_training(out: Path, whole: Path) -> None:
    losses, metrics, weights = training(out)
    whole_losses, whole_metrics, whole_weights = training(whole)
    assert losses == whole_losses  # one row per step, each step exactly once
    assert metrics["final"]["step"] == whole_metrics["final"]["step"]
    for key in ("train_loss", "val_bpc", "val_ppl"):
        assert metrics["final"][key] == pytest.approx(whole_metrics["final"][key], abs=1e-6)
    assert metrics["best"] == pytest.approx(whole_metrics["best"], abs=1e-6)
    for name, tensor in whole_weights.items():
        assert torch.allclose(weights[name], tensor, atol=1e-6), name


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A working dir with the data, the manifest and slurm/local host profiles."""
    if not (DISCO / "train.txt").is_file():
        pytest.skip(f"corpus not found at {DISCO}")
    cwd = tmp_path_factory.mktemp("preempt")
    (cwd / "train.txt").write_text((DISCO / "train.txt").read_text("utf-8")[:40000], "utf-8")
    (cwd / "valid.txt").write_text((DISCO / "valid.txt").read_text("utf-8")[:3000], "utf-8")
    (cwd / "train.yaml").write_text(MANIFEST, encoding="utf-8")
    (cwd / "slurm.yaml").write_text("executor: slurm\nruntime: host\n", encoding="utf-8")
    (cwd / "local.yaml").write_text("executor: local\nruntime: host\n", encoding="utf-8")
    return cwd


@pytest.fixture(scope="module")
def uninterrupted(project: Path) -> Path:
    """The out dir of the same manifest run locally without interruption."""
    done = jobctl(project, "run", "train.yaml", "--profile", "local.yaml", "--runs-dir",
                  "runs-whole")
    assert done.returncode == 0, done.stderr
    return Path(status(project, "runs-whole")["out_dir"])


@pytest.mark.slurm
def test_slurm_job_requeues_itself_on_sigusr1_and_ends_like_an_uninterrupted_run(
        slurm_cluster, project, uninterrupted):
    submitted = jobctl(project, "submit", "train.yaml", "--profile", "slurm.yaml",
                       "--runs-dir", "runs-slurm")
    assert submitted.returncode == 0, submitted.stderr
    job = status(project, "runs-slurm")
    job_id, out = job["tasks"][0]["job_id"], Path(job["out_dir"])
    wait_for("a first checkpoint", lambda: (out / "checkpoint/last.pt").exists())
    requeued = usr1_until_requeued(job)
    assert (requeued["exit_code"], requeued["signal"]) == (75, "USR1")
    assert requeued["reason"] == "stopped by SIGUSR1, checkpoint saved; requeued (scontrol " \
                                 "requeue)"
    held = wait_for("SLURM to hold the requeued job", lambda: (
        (state := status(project, "runs-slurm"))["state"] == "PENDING" and state))
    assert "requeued 1x" in held["reason"], held
    release(requeued)

    done = wait_for("the job to end", lambda: (
        (state := status(project, "runs-slurm"))["state"] not in ("PENDING", "RUNNING")
        and state))
    task = done["tasks"][0]
    assert (done["state"], task["exit_code"], task["reason"]) == ("COMPLETED", 0, "requeued 1x")
    log = (Path(job["job_dir"]) / f"logs/slurm-{job_id}.out").read_text(encoding="utf-8")
    stopped = re.search(r"lyricgen: train-rnn: stopped by SIGUSR1 after step (\d+);", log)
    assert stopped, log[-3000:]  # both attempts are in the log (--open-mode=append)
    assert f"resuming from {out / 'checkpoint/last.pt'} at step {stopped[1]} " in log
    assert 10 <= int(stopped[1]) < uninterrupted_steps(uninterrupted)
    assert_same_training(out, uninterrupted)


def usr1_until_requeued(job: dict) -> dict:
    """`scancel --signal=USR1 --batch` the job's task 0 (what `--signal=B:USR1@N` sends),
    wait for job.sh to record its end, which must be REQUEUED; returns that status."""
    job_id = job["tasks"][0]["job_id"]
    signalled = subprocess.run(["scancel", "--signal=USR1", "--batch", job_id],
                               capture_output=True, text=True, timeout=60, check=False)
    assert signalled.returncode == 0, signalled.stderr
    requeued = wait_for("job.sh to record its end", lambda: (
        (found := task_status(job)).get("state") not in (None, "RUNNING") and found))
    assert requeued["state"] == "REQUEUED", f"the signal came too late: {requeued}"
    return requeued


def release(requeued: dict) -> None:
    """Lift SLURM's hold on a job that requeued itself (status file `requeued`) instead of
    waiting ~2 minutes. slurmd refuses to launch a job whose credential it revoked in the
    same second ("Job already killed, do not launch batch job"): lift it a few seconds after
    the requeue."""
    time.sleep(max(0.0, requeued["finished"] + 3 - time.time()))
    lift = subprocess.run(["scontrol", "update", f"JobId={requeued['slurm_job_id']}",
                           "StartTime=now"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert lift.returncode == 0, lift.stderr


def uninterrupted_steps(out: Path) -> int:
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))["final"]["step"]


def test_local_run_is_preempted_by_sigusr1_and_resubmit_resumes_it(project, uninterrupted):
    runs = project / "runs-local"
    shutil.rmtree(runs, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    running = subprocess.Popen([str(JOBCTL), "run", "train.yaml", "--profile", "local.yaml",
                                "--runs-dir", str(runs)], cwd=project, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status_file = wait_for("job.sh to start", lambda: next(runs.glob("*/train/status/0.json"),
                                                           None))
    out = status_file.parents[1] / "out"
    wait_for("a first checkpoint", lambda: (out / "checkpoint/last.pt").exists())
    script_pid = json.loads(status_file.read_text(encoding="utf-8"))["pid"]
    os.kill(script_pid, signal.SIGUSR1)  # as SLURM's --signal=B:USR1 would
    _, stderr = running.communicate(timeout=WAIT)
    assert running.returncode == 1, stderr
    job = status(project, str(runs))
    task = job["tasks"][0]
    assert (job["state"], task["exit_code"], task["signal"]) == ("PREEMPTED", 75, "USR1")
    assert task["reason"] == ("stopped by SIGUSR1, checkpoint saved; not under SLURM, so not "
                              "requeued: jobctl resubmit --failed resumes it")
    stopped = torch.load(out / "checkpoint/last.pt", weights_only=True)["step"]
    assert 10 <= stopped < uninterrupted_steps(uninterrupted)

    again = jobctl(project, "resubmit", "--failed", "--runs-dir", str(runs))
    assert again.returncode == 0, again.stderr
    assert "resubmitting train[0]" in again.stdout
    assert status(project, str(runs))["state"] == "COMPLETED"
    log = (status_file.parents[1] / "logs/local-0.out").read_text(encoding="utf-8")
    assert f"resuming from {out / 'checkpoint/last.pt'} at step {stopped} " in log
    assert_same_training(out, uninterrupted)


def test_local_run_killed_with_sigkill_then_the_same_command_resumes_it(
        project, uninterrupted, monkeypatch):
    """`kill -9` of `jobctl run`, job.sh and lyricgen in the middle of training, then the very
    same command: the new run starts from a copy of the killed job's out dir, resumes from its last
    checkpoint and ends like the uninterrupted run; the killed run is left as it was."""
    runs = project / "runs-kill"
    shutil.rmtree(runs, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    command = [str(JOBCTL), "run", "train.yaml", "--profile", "local.yaml", "--runs-dir",
               str(runs)]
    running = subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    status_file = wait_for("job.sh to start", lambda: next(runs.glob("*/train/status/0.json"),
                                                           None))
    killed_out = status_file.parents[1] / "out"
    wait_for("a first checkpoint", lambda: (killed_out / "checkpoint/last.pt").exists())
    script_pid = json.loads(status_file.read_text(encoding="utf-8"))["pid"]
    os.killpg(script_pid, signal.SIGKILL)  # job.sh's session: job.sh and lyricgen
    os.killpg(running.pid, signal.SIGKILL)  # and jobctl itself
    running.wait(timeout=WAIT)
    killed = status(project, str(runs))
    assert killed["state"] == "FAILED", f"training ended before it could be killed: {killed}"
    checkpoint_step = torch.load(killed_out / "checkpoint/last.pt", weights_only=True)["step"]
    killed_run = status_file.parents[2].name

    _resume_is_planned_unless_forced(project, runs, killed_run, monkeypatch)
    again = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True,
                           timeout=WAIT, check=False)
    assert again.returncode == 0, again.stderr
    assert f"train            resumes from the checkpoint of {killed_run}/train" in again.stdout
    job = status(project, str(runs))
    assert job["state"] == "COMPLETED" and job["out_dir"] != str(killed_out)
    out = Path(job["out_dir"])
    log = (Path(job["job_dir"]) / "logs/local-0.out").read_text(encoding="utf-8")
    assert f"resuming from {out / 'checkpoint/last.pt'} at step {checkpoint_step} " in log
    assert_same_training(out, uninterrupted)
    assert not (killed_out / "metrics.json").exists()  # the killed run's files are untouched
    assert jobctl(project, *command[1:]).stdout.strip().endswith("every job is cached "
                                                                 "(use --force to rerun)")


def _resume_is_planned_unless_forced(project: Path, runs: Path, killed_run: str,
                                     monkeypatch) -> None:
    """create_run on a copy of the runs dir: it seeds the out dir from the killed run, and
    with force it does not (the copy keeps the real runs dir free of unsubmitted runs)."""
    from jobs.cli import load
    from jobs.plan import create_run

    monkeypatch.chdir(project)
    pipeline, profiles = load("train.yaml", "local.yaml")
    scratch = project / "runs-kill-plans"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(runs, scratch)
    forced = create_run(pipeline, profiles, scratch, executor="local", force=True).read()
    assert forced["jobs"]["train"]["resumed_from"] is None
    assert not any(Path(forced["jobs"]["train"]["out_dir"]).iterdir())
    planned = create_run(pipeline, profiles, scratch, executor="local").read()
    assert planned["jobs"]["train"]["resumed_from"]["run"] == killed_run
    assert (Path(planned["jobs"]["train"]["out_dir"]) / "checkpoint/last.pt").is_file()
