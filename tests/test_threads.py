"""Threads never outnumber the cores a step may use (lyricgen.threads), whatever is asked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lyricgen.threads import decide_threads


@pytest.mark.parametrize(("env", "usable", "threads", "fragment"), [
    ({"OMP_NUM_THREADS": "4"}, 2, 2, "OMP_NUM_THREADS=4 capped to the 2 usable core(s)"),
    ({"OMP_NUM_THREADS": "2"}, 8, 2, "OMP_NUM_THREADS=2; 8 usable core(s)"),
    ({"SLURM_CPUS_PER_TASK": "8"}, 16, 8, "SLURM_CPUS_PER_TASK=8"),
    ({"OMP_NUM_THREADS": "1", "SLURM_CPUS_PER_TASK": "8"}, 16, 1, "OMP_NUM_THREADS=1"),
    ({}, 6, 6, "nothing asked: the 6 usable core(s)"),
    ({"LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "4"}, 2, 1,
     "capped to the 2 usable core(s) / 2 processes"),
    ({"OMP_NUM_THREADS": "zero"}, 3, 3, "nothing asked"),
])
def test_threads_are_the_asked_count_capped_to_the_usable_cores(env, usable, threads, fragment):
    got, reason = decide_threads(env, usable)
    assert got == threads and fragment in reason


def test_a_step_asking_for_more_threads_than_cores_gets_the_cores(tmp_path: Path) -> None:
    """The real CLI: a clean step told OMP_NUM_THREADS=64 runs with the usable cores, says so
    on stdout (the job log) and records it in provenance.json."""
    (tmp_path / "songs.txt").write_text("Una canción\ncon dos versos\n\n<|fin|>\n", "utf-8")
    config = {"schema": 1, "kind": "clean", "job": "clean", "run_id": "t",
              "job_dir": str(tmp_path), "out_dir": str(tmp_path / "out"),
              "tasks": [{"index": 0, "params": {"input": str(tmp_path / "songs.txt")}}]}
    (tmp_path / "config.json").write_text(json.dumps(config), "utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "64"}
    done = subprocess.run([sys.executable, "-m", "lyricgen", "clean", "--config",
                           str(tmp_path / "config.json")], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    cores = len(os.sched_getaffinity(0))
    assert f"threads {cores} (OMP_NUM_THREADS=64 capped to the {cores} usable" in done.stdout
    record = json.loads((tmp_path / "out" / "provenance.json").read_text("utf-8"))
    assert record["threads"]["threads"] == cores
