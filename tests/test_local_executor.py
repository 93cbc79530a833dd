"""The local executor runs the rendered job.sh files with bash, in dependency order."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from jobs import plan
from jobs.cli import load
from jobs.executors import collect_status, full_selection, process_alive
from jobs.executors.local import LocalExecutor
from jobs.state import Run
from jobs.taskstatus import write_task_status

WAIT = 60.0


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def make_run(tmp_path: Path, profile: Path, manifest: str, inputs: dict[str, str]) -> Run:
    for name, text in inputs.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "pipeline.yaml").write_text(manifest)
    pipeline, profiles = load(str(tmp_path / "pipeline.yaml"), str(profile))
    return plan.create_run(pipeline, profiles, tmp_path / "runs", executor="local", force=True)


def fake_record(run: Run, job: str, task: int | None = None) -> dict | None:
    out = run.dir / job / "out"
    path = (out / str(task) if task is not None else out) / "fake.json"
    return json.loads(path.read_text()) if path.exists() else None


def states(run: Run) -> dict[str, list[tuple[str, str | None]]]:
    return {job.name: [(t.state, t.reason) for t in job.tasks] for job in collect_status(run)}


CHAIN = """\
jobs:
  - {kind: clean, name: a, params: {input: a.txt}}
  - {kind: clean, name: b, needs: [a], params: {input: "{{ needs.a.outputs.corpus }}"}}
  - {kind: clean, name: c, needs: [b], params: {input: "{{ needs.b.outputs.train }}"}}
  - {kind: clean, name: lone, params: {input: lone.txt}}
"""


def test_jobs_start_after_their_needs_completed(tmp_path: Path, fake_profile: Path) -> None:
    run = make_run(tmp_path, fake_profile, CHAIN, {"a.txt": "sleep 0.3\n", "lone.txt": ""})
    assert LocalExecutor(parallel=3).submit(run, full_selection(run.read()))
    a, b, c = (fake_record(run, name) for name in "abc")
    assert b["started"] >= a["ended"] and c["started"] >= b["ended"]
    assert b["params"]["input"] == str(run.dir / "a" / "out" / "corpus.txt")
    assert (run.dir / "c" / "out" / "corpus.txt").read_text() == "output of c task 0\n"
    assert all(s == [("COMPLETED", None)] for s in states(run).values())
    assert "fake clean task 0 starts" in (run.dir / "a" / "logs" / "local-0.out").read_text()


def test_a_failure_cancels_dependents_only(tmp_path: Path, fake_profile: Path) -> None:
    run = make_run(tmp_path, fake_profile, CHAIN, {"a.txt": "fail 3\n", "lone.txt": ""})
    assert not LocalExecutor().submit(run, full_selection(run.read()))
    result = states(run)
    assert result["a"] == [("FAILED", "exit code 3")]
    assert result["b"] == [("CANCELLED", "dependency failed (a)")]
    assert result["c"] == [("CANCELLED", "dependency failed (b)")]
    assert result["lone"] == [("COMPLETED", None)]
    assert fake_record(run, "b") is None and fake_record(run, "c") is None
    assert not (run.dir / "b" / "logs" / "local-0.out").exists()


ARRAY = """\
kind: clean
name: grid
resources: {cpus: 2}
params: {input: grid.txt}
matrix: {seed: [1, 2, 3]}
"""


def test_array_tasks_get_slurm_variables(tmp_path: Path, fake_profile: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "999")
    monkeypatch.setenv("SLURM_NTASKS", "7")
    run = make_run(tmp_path, fake_profile, ARRAY, {"grid.txt": "fail-seeds 2 5\n"})
    assert not LocalExecutor().submit(run, full_selection(run.read()))
    for task in (0, 2):
        env = fake_record(run, "grid", task)["env"]
        assert env["SLURM_ARRAY_TASK_ID"] == str(task)
        assert env["SLURM_ARRAY_TASK_COUNT"] == "3"
        assert env["SLURM_CPUS_PER_TASK"] == "2"
        assert env["SLURM_JOB_ID"] == env["SLURM_ARRAY_JOB_ID"] == f"local-{os.getpid()}"
        assert "SLURM_NTASKS" not in env
    assert fake_record(run, "grid", 1)["params"]["seed"] == 2
    assert states(run)["grid"] == [("COMPLETED", None), ("FAILED", "exit code 5"),
                                   ("COMPLETED", None)]
    assert (run.dir / "grid" / "out" / "2" / "train.txt").is_file()
    assert not (run.dir / "grid" / "out" / "1" / "train.txt").exists()


def intervals(run: Run) -> list[tuple[float, float]]:
    found = [fake_record(run, "grid", task) for task in range(3)]
    return sorted((r["started"], r["ended"]) for r in found)


@pytest.mark.parametrize("parallel", [1, 3])
def test_parallel_option_bounds_concurrency(tmp_path: Path, fake_profile: Path,
                                            parallel: int) -> None:
    run = make_run(tmp_path, fake_profile, ARRAY, {"grid.txt": "sleep 0.5\n"})
    assert LocalExecutor(parallel=parallel).submit(run, full_selection(run.read()))
    spans = intervals(run)
    overlapping = max(start for start, _ in spans) < min(end for _, end in spans)
    sequential = all(later[0] >= earlier[1]
                     for earlier, later in zip(spans, spans[1:], strict=False))
    assert (overlapping, sequential) == ((False, True) if parallel == 1 else (True, False))


def wait_for_state(run: Run, job: str, state: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if states(run)[job][0][0] == state:
            return
        time.sleep(0.05)
    raise AssertionError(f"{job} never reached {state}: {states(run)}")


def test_cancel_stops_running_and_waiting_tasks(tmp_path: Path, fake_profile: Path) -> None:
    run = make_run(tmp_path, fake_profile, CHAIN, {"a.txt": "sleep 30\n", "lone.txt": ""})
    executor = LocalExecutor()
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(
        executor.submit(run, full_selection(run.read()))))
    worker.start()
    wait_for_state(run, "a", "RUNNING")
    cancelled = executor.cancel(run, run.read(), ["a", "b"])
    worker.join(WAIT)
    assert not worker.is_alive() and result == [False]
    assert any(item.startswith("a:0 (pid") for item in cancelled) and "b:0" in cancelled
    final = states(run)
    assert final["a"] == [("CANCELLED", "signal TERM")]
    assert final["b"] == [("CANCELLED", "cancelled by jobctl")]
    assert final["c"] == [("CANCELLED", "dependency failed (b)")]
    assert fake_record(run, "b") is None


def test_vanished_processes_are_not_reported_as_active(tmp_path: Path,
                                                       fake_profile: Path) -> None:
    run = make_run(tmp_path, fake_profile, CHAIN, {"a.txt": "", "lone.txt": ""})
    dead_pid = 2 ** 22 + 12345  # above the default pid_max: never a live process

    def record_dead_runner(record: dict) -> None:
        for job in record["jobs"].values():
            job["submissions"].append({"executor": "local", "runner_pid": dead_pid,
                                       "host": socket.gethostname(), "tasks": [0],
                                       "submitted": time.time()})

    run.update(record_dead_runner)
    write_task_status(run.dir / "b", 0, "PENDING", "waiting to start")
    status = json.loads((run.dir / "b" / "status" / "0.json").read_text())
    status.update(state="RUNNING", pid=dead_pid, reason=None)
    (run.dir / "a" / "status" / "0.json").write_text(json.dumps(status))
    result = states(run)
    assert result["a"] == [("FAILED", "job.sh was killed before recording its end")]
    assert result["b"] == [("CANCELLED", "jobctl run was interrupted")]
    assert result["c"] == [("CANCELLED", "dependency failed (b)")]
    assert result["lone"] == [("UNKNOWN", "no status file")]


def test_a_zombie_process_is_not_alive():
    """A job.sh orphaned by a killed jobctl may stay a zombie under a PID 1 that never reaps
    it; its task must still read as ended (FAILED), not RUNNING forever."""
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 30
    while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.01)
    assert not process_alive(child.pid)  # exited, not yet reaped
    child.wait()
    assert process_alive(os.getpid()) and not process_alive(child.pid)
