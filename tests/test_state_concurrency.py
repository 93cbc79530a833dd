"""Concurrent use of one project: run ids claimed by exclusive mkdir, and 20 `jobctl submit`
processes started together against the same runs dir and cache index."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import state
from jobs.state import RUN_ID, claim_run_dir

JOBCTL = Path(sys.executable).parent / "jobctl"
SUBMITS = 20
PIPELINE = """\
jobs:
  - {{kind: clean, name: a, params: {{input: empty.txt, seed: {seed}}}}}
  - {{kind: clean, name: b, needs: [a], params: {{input: "{{{{ needs.a.outputs.corpus }}}}"}}}}
"""
RUN_KEYS = {"schema", "run_id", "created", "executor", "dry_run", "manifest", "profiles",
            "git_commit", "code_version", "versions", "order", "jobs"}


def test_a_lost_run_id_is_drawn_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process creates the dir between our check and our mkdir: we draw again."""
    ids = iter(["20260101-000000-aaaa", "20260101-000000-aaaa", "20260101-000000-bbbb"])
    monkeypatch.setattr(state, "new_run_id", lambda: next(ids))
    prepared: list[str] = []

    def prepare(run_dir: Path) -> str:
        prepared.append(run_dir.name)
        if len(prepared) == 1:
            run_dir.mkdir(parents=True)  # the other process wins the race
        return run_dir.name

    run_dir, result = claim_run_dir(tmp_path / "runs", prepare)
    assert run_dir.name == result == "20260101-000000-bbbb" and run_dir.is_dir()
    assert prepared == ["20260101-000000-aaaa", "20260101-000000-bbbb"]


def test_concurrent_submits_write_complete_records(tmp_path: Path, fake_profile: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    manifests = []
    for seed in range(SUBMITS):
        path = tmp_path / f"m{seed}.yaml"
        path.write_text(f"profile: {fake_profile}\n" + PIPELINE.format(seed=seed))
        manifests.append(path)
    procs = [subprocess.Popen([str(JOBCTL), "submit", str(path)], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for path in manifests]
    results = [(proc.wait(timeout=300), proc.stderr.read()) for proc in procs]
    for proc in procs:
        proc.stdout.close()
        proc.stderr.close()
    assert all(code == 0 for code, _ in results), results

    runs_dir = tmp_path / "runs"
    records = [json.loads(path.read_text()) for path in sorted(runs_dir.glob("*/run.json"))]
    assert len(records) == SUBMITS
    assert len({r["run_id"] for r in records}) == SUBMITS
    seeds = set()
    for record in records:
        assert RUN_KEYS <= set(record) and RUN_ID.fullmatch(record["run_id"])
        assert record["order"] == ["a", "b"]
        for job in record["jobs"].values():
            assert [s["tasks"] for s in job["submissions"]] == [[0]]
            assert Path(job["job_dir"]).parent.name == record["run_id"]
        seeds.add(record["jobs"]["a"]["spec"]["tasks"][0]["params"]["seed"])
    assert seeds == set(range(SUBMITS))
    index = json.loads((runs_dir / ".cache.json").read_text())
    assert len(index) == 2 * SUBMITS  # no read-modify-write lost an entry
    assert {entry["run"] for entry in index.values()} == {r["run_id"] for r in records}
    assert not list(runs_dir.rglob("*.tmp"))
