"""One run at a time per job cache key (jobs.claims): real `jobctl run` processes racing for
the same job, a killed run's claim, and the liveness rules with stand-ins."""

from __future__ import annotations

import json
import os
import queue
import re
import select
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from jobs import claims
from jobs.claims import Claim, claim_keys, read_claim
from jobs.errors import UsageError
from jobs.executors import TaskState
from jobs.state import RUN_SCHEMA, atomic_write_json

JOBCTL = Path(sys.executable).parent / "jobctl"
WAIT = 60.0


@pytest.fixture
def blocking_job(tmp_path: Path, fake_profile: Path) -> dict[str, Path]:
    """A one-job manifest whose task tells `started` when it runs, then waits on `go`."""
    fifos = {name: tmp_path / name for name in ("started", "go")}
    for fifo in fifos.values():
        os.mkfifo(fifo)
    (tmp_path / "directives.txt").write_text(f"notify {fifos['started']}\nwait {fifos['go']}\n")
    manifest = tmp_path / "pipeline.yaml"
    manifest.write_text(f"profile: {fake_profile}\njobs:\n"
                        "  - {kind: clean, name: prep, params: {input: directives.txt}}\n")
    return {"manifest": manifest, **fifos}


def read_fifo(path: Path) -> str:
    """What a writer puts into the FIFO; fails after WAIT seconds without one, and when the
    FIFO reports hang-up without data (a writer from an earlier task closed it late)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        ready, _, _ = select.select([fd], [], [], WAIT)
        assert ready, f"nobody wrote into {path}"
        data = os.read(fd, 100).decode()
        assert data, f"{path} hung up without data"
        return data
    finally:
        os.close(fd)


def wait_gone(pid: int) -> None:
    """Block until process `pid` (not a child of ours) has exited, so that the files it held
    open (a FIFO) are closed; fails after WAIT seconds."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        ready, _, _ = select.select([pidfd], [], [], WAIT)
        assert ready, f"process {pid} outlived SIGKILL"
    finally:
        os.close(pidfd)


def write_fifo(path: Path) -> None:
    """Release the task that reads `path` (opening a FIFO to write waits for its reader);
    fails after WAIT seconds without one."""
    writer = threading.Thread(target=path.write_text, args=("go\n",), daemon=True)
    writer.start()
    writer.join(WAIT)
    assert not writer.is_alive(), f"nobody read {path}"


def jobctl_run(manifest: Path, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen([str(JOBCTL), "run", str(manifest)], cwd=manifest.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def fake_records(runs: Path) -> list[Path]:
    return sorted(runs.glob("*/prep/out/fake.json"))


def test_two_runs_of_one_manifest_at_once_train_it_once(tmp_path: Path,
                                                        blocking_job: dict[str, Path]) -> None:
    procs = [jobctl_run(blocking_job["manifest"]) for _ in range(2)]
    ended: queue.Queue[subprocess.Popen[str]] = queue.Queue()
    for proc in procs:
        threading.Thread(target=lambda p=proc: (p.wait(), ended.put(p)), daemon=True).start()
    read_fifo(blocking_job["started"])  # one of them runs the job, which now waits on `go`
    loser = ended.get(timeout=WAIT)  # the other stops on its own
    winner = next(p for p in procs if p is not loser)
    lines = loser.stderr.read().splitlines()
    runs = sorted(p.parent.name for p in (tmp_path / "runs").glob("*/run.json"))
    assert loser.returncode == 2 and len(lines) == 1 and len(runs) == 1, (lines, runs)
    assert re.fullmatch(rf"jobctl: error: job prep is already being computed by run {runs[0]} "
                        r"\(job prep, same cache key; claimed by pid \d+ on \S+\): wait for "
                        rf"it \(jobctl status {runs[0]}\) or cancel it \(jobctl cancel "
                        rf"{runs[0]} prep\), then run again", lines[0])
    write_fifo(blocking_job["go"])
    assert winner.wait(timeout=WAIT) == 0, winner.stderr.read()
    assert [p.parents[2].name for p in fake_records(tmp_path / "runs")] == runs
    for proc in procs:
        proc.stdout.close()
        proc.stderr.close()


def kill_run(tmp_path: Path, blocking_job: dict[str, Path]) -> str:
    """Start the blocking job, then SIGKILL jobctl, job.sh and the task; returns the run id."""
    killed = jobctl_run(blocking_job["manifest"], start_new_session=True)
    task_pid = int(read_fifo(blocking_job["started"]))
    status_file = next((tmp_path / "runs").glob("*/prep/status/0.json"))
    os.killpg(json.loads(status_file.read_text())["pid"], signal.SIGKILL)  # job.sh's session
    os.killpg(killed.pid, signal.SIGKILL)  # and jobctl itself
    killed.communicate(timeout=WAIT)
    # The task held `started` open for writing: until it is gone, a new reader of the FIFO
    # sees its late close as a hang-up (EPOLLHUP) instead of waiting for the next task.
    wait_gone(task_pid)
    return status_file.parents[2].name


def test_a_killed_runs_claim_does_not_block(tmp_path: Path,
                                            blocking_job: dict[str, Path]) -> None:
    kill_run(tmp_path, blocking_job)
    for fifo in ("started", "go"):  # the next run's task goes straight through
        blocking_job[fifo].unlink()

    again = subprocess.run([str(JOBCTL), "run", str(blocking_job["manifest"])], cwd=tmp_path,
                           capture_output=True, text=True, timeout=WAIT, check=False)
    assert again.returncode == 0, again.stderr
    new_run = again.stdout.split()[1].rstrip(":")
    assert [p.parents[2].name for p in fake_records(tmp_path / "runs")] == [new_run]
    claim_files = list((tmp_path / "runs" / ".claims").glob("*.json"))
    assert [read_claim(p).run for p in claim_files] == [new_run]


def test_resubmit_of_a_failed_run_stops_while_another_run_computes_the_job(
        tmp_path: Path, blocking_job: dict[str, Path]) -> None:
    failed_run = kill_run(tmp_path, blocking_job)
    live = jobctl_run(blocking_job["manifest"])
    read_fifo(blocking_job["started"])
    live_run = next(p.parent.name for p in (tmp_path / "runs").glob("*/run.json")
                    if p.parent.name != failed_run)
    resubmit = subprocess.run([str(JOBCTL), "resubmit", "--failed", failed_run], cwd=tmp_path,
                              capture_output=True, text=True, timeout=WAIT, check=False)
    assert resubmit.returncode == 2
    assert f"job prep is already being computed by run {live_run}" in resubmit.stderr
    write_fifo(blocking_job["go"])
    assert live.wait(timeout=WAIT) == 0
    live.stdout.close()
    live.stderr.close()


def test_dry_runs_and_cached_jobs_claim_nothing(tmp_path: Path, fake_profile: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    manifest = tmp_path / "pipeline.yaml"
    manifest.write_text(f"profile: {fake_profile}\njobs:\n"
                        "  - {kind: clean, name: prep, params: {input: empty.txt}}\n")
    run = [str(JOBCTL), "submit", str(manifest)]
    dry = subprocess.run([*run, "--dry-run"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=WAIT, check=True)
    assert not (tmp_path / "runs" / ".claims").exists(), dry.stdout
    subprocess.run(run, cwd=tmp_path, capture_output=True, timeout=WAIT, check=True)
    before = (tmp_path / "runs" / ".claims").iterdir().__next__().read_text()
    cached = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=WAIT,
                            check=True)
    assert "nothing to submit" in cached.stdout
    assert (tmp_path / "runs" / ".claims").iterdir().__next__().read_text() == before


# --- liveness rules, with stand-in holders ---------------------------------------------------

def write_claim(runs: Path, key: str, run: str, pid: int, host: str = "",
                since: float = 0.0) -> None:
    claim = Claim(run=run, job="train", pid=pid, host=host or socket.gethostname(), since=since)
    atomic_write_json(runs / ".claims" / f"{key}.json", claim.to_dict())


def write_record(runs: Path, run: str, key: str, executor: str, submitted: bool) -> None:
    submissions = [{"executor": executor, "job_id": "7", "tasks": [0], "submitted": 0.0}]
    atomic_write_json(runs / run / "run.json", {
        "schema": RUN_SCHEMA, "run_id": run, "executor": executor, "dry_run": False,
        "order": ["train"], "jobs": {"train": {
            "cache_key": key, "job_dir": str(runs / run / "train"), "skipped": False,
            "tasks": 1, "array": False, "submissions": submissions if submitted else []}}})


def test_a_claim_lives_as_long_as_the_process_that_made_it(tmp_path: Path) -> None:
    """Before run.json (or before a submission), the claiming jobctl's process decides."""
    runs = tmp_path / "runs"
    holder = subprocess.Popen(["cat"], stdin=subprocess.PIPE)  # alive until its stdin closes
    write_claim(runs, "k1", "20260101-000000-aaaa", holder.pid)
    with pytest.raises(UsageError, match="computed by run 20260101-000000-aaaa"):
        claim_keys(runs, "20260101-000000-bbbb", {"train": "k1"})
    write_record(runs, "20260101-000000-aaaa", "k1", "local", submitted=False)
    with pytest.raises(UsageError, match="computed by run 20260101-000000-aaaa"):
        claim_keys(runs, "20260101-000000-bbbb", {"train": "k1"})
    holder.stdin.close()
    holder.wait(timeout=WAIT)
    claim_keys(runs, "20260101-000000-bbbb", {"train": "k1"})
    assert read_claim(runs / ".claims" / "k1.json").run == "20260101-000000-bbbb"


def test_a_claim_from_another_host_lives_for_the_grace_period(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    now = claims.time.time()
    write_claim(runs, "k1", "20260101-000000-aaaa", 1, host="elsewhere", since=now)
    with pytest.raises(UsageError):
        claim_keys(runs, "20260101-000000-bbbb", {"train": "k1"})
    write_claim(runs, "k1", "20260101-000000-aaaa", 1, host="elsewhere",
                since=now - claims.UNSUBMITTED_GRACE - 1)
    claim_keys(runs, "20260101-000000-bbbb", {"train": "k1"})


@pytest.mark.parametrize(("state", "held"), [("PENDING", True), ("RUNNING", True),
                                             ("COMPLETED", False), ("FAILED", False),
                                             ("UNKNOWN", False)])
def test_a_submitted_claim_lives_while_its_job_is_active(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        state: str, held: bool) -> None:
    """After a submission the executor's view decides (here a stand-in for SLURM's), not
    the process: `jobctl submit` has long exited while its job waits in the queue."""
    runs = tmp_path / "runs"

    class Executor:
        def task_states(self, run, record):  # noqa: ANN001, ANN201
            return {"train": [TaskState(0, state, job_id="7")]}

    monkeypatch.setattr(claims, "get_executor", lambda name: Executor())
    write_claim(runs, "k1", "20260101-000000-aaaa", 999_999_999)
    write_record(runs, "20260101-000000-aaaa", "k1", "slurm", submitted=True)
    if held:
        with pytest.raises(UsageError, match="computed by run 20260101-000000-aaaa"):
            claim_keys(runs, "20260101-000000-bbbb", {"train": "k1", "other": "k2"})
        assert not (runs / ".claims" / "k2.json").exists()  # all keys or none
    else:
        claim_keys(runs, "20260101-000000-bbbb", {"train": "k1", "other": "k2"})
        assert read_claim(runs / ".claims" / "k2.json").run == "20260101-000000-bbbb"


def test_a_run_reclaims_its_own_keys_and_torn_claims_claim_nothing(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    holder = subprocess.Popen(["cat"], stdin=subprocess.PIPE)
    write_claim(runs, "k1", "20260101-000000-aaaa", holder.pid)
    claim_keys(runs, "20260101-000000-aaaa", {"train": "k1"})  # resubmit of the same run
    (runs / ".claims" / "k2.json").write_text('{"run": ')
    claim_keys(runs, "20260101-000000-bbbb", {"train": "k2"})
    holder.stdin.close()
    holder.wait(timeout=WAIT)
