"""Run state (jobs.state), cache keys and index (jobs.cache) and run creation (jobs.plan)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from jobs import cache, plan
from jobs.cli import load
from jobs.errors import InputError, UsageError
from jobs.spec import JobSpec, Profile, Resources, Task
from jobs.state import (
    RUN_ID,
    Run,
    atomic_write_bytes,
    atomic_write_json,
    find_run,
    new_run_id,
    read_json,
    resolve_runs_dir,
)
from jobs.taskstatus import archive_task_status, write_task_status
from lyricgen.context import load_config

REPO = Path(__file__).resolve().parents[1]

PIPELINE = """\
jobs:
  - kind: clean
    name: first
    params: {input: first.txt}
  - kind: clean
    name: second
    needs: [first]
    params: {input: "{{ needs.first.outputs.corpus }}", seed: SEED}
"""


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JOBCTL_RUNS_DIR", raising=False)
    return tmp_path


def write_pipeline(tmp_path: Path, seed: int = 1) -> Path:
    (tmp_path / "first.txt").write_text("some input\n")
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE.replace("SEED", str(seed)))
    return path


def complete(run: Run) -> None:
    """Mark every task of every job that ran as COMPLETED, as job.sh would."""
    record = run.read()
    for job in record["jobs"].values():
        if job["job_dir"]:
            for task in range(job["tasks"]):
                write_task_status(Path(job["job_dir"]), task, "COMPLETED", "", exit_code=0)


def create(tmp_path: Path, profile: Path, manifest: Path, force: bool = False) -> Run:
    pipeline, profiles = load(str(manifest), str(profile))
    return plan.create_run(pipeline, profiles, tmp_path / "runs", executor="local", force=force)


# --- ids, dirs, atomic writes ------------------------------------------------------------

def test_run_id_has_timestamp_and_hex_suffix() -> None:
    moment = time.mktime((2024, 5, 17, 13, 45, 9, 0, 0, -1))
    run_id = new_run_id(moment)
    assert RUN_ID.fullmatch(run_id)
    assert run_id.startswith("20240517-134509-")


def test_runs_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = Profile(name="p", runs_dir=str(tmp_path / "from-profile"))
    assert resolve_runs_dir(None) == tmp_path / "runs"
    assert resolve_runs_dir(None, profile) == tmp_path / "from-profile"
    monkeypatch.setenv("JOBCTL_RUNS_DIR", str(tmp_path / "from-env"))
    assert resolve_runs_dir(None, profile) == tmp_path / "from-env"
    assert resolve_runs_dir("opt", profile) == tmp_path / "opt"


def test_atomic_write_replaces_without_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "data.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2, "text": "canción"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": 2, "text": "canción"}
    assert [p.name for p in target.parent.iterdir()] == ["data.json"]


def test_failed_atomic_write_keeps_the_old_file(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "data.bin"
    atomic_write_bytes(target, b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]


def test_read_json_treats_torn_files_as_absent(tmp_path: Path) -> None:
    (tmp_path / "torn.json").write_text('{"state": "RUNN')
    assert read_json(tmp_path / "torn.json") is None
    assert read_json(tmp_path / "missing.json") is None


def test_run_update_serialises_concurrent_writers(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "20240101-000000-abcd"
    atomic_write_json(run_dir / "run.json", {"schema": 1, "count": 0})
    run = Run(run_dir)

    def bump(_: int) -> None:
        run.update(lambda record: record.update(count=record["count"] + 1))

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(bump, range(60)))
    assert run.read()["count"] == 60


def test_find_run_latest_prefix_and_errors(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for run_id, created in (("20240101-000000-aaaa", 1.0), ("20240102-000000-bbbb", 2.0),
                            ("20240102-000000-bbbc", 3.0)):
        atomic_write_json(runs / run_id / "run.json", {"schema": 1, "created": created})
    assert find_run(runs, None).id == "20240102-000000-bbbc"
    assert find_run(runs, "20240101").id == "20240101-000000-aaaa"
    assert find_run(runs, str(runs / "20240101-000000-aaaa")).id == "20240101-000000-aaaa"
    with pytest.raises(UsageError, match="2 runs matching"):
        find_run(runs, "20240102")
    with pytest.raises(UsageError, match="no run matching"):
        find_run(runs, "1999")
    with pytest.raises(UsageError, match="no runs in"):
        find_run(tmp_path / "empty", None)


def test_archive_task_status_keeps_every_attempt(tmp_path: Path) -> None:
    for attempt in (1, 2):
        write_task_status(tmp_path, 3, "FAILED", f"attempt {attempt}", exit_code=attempt)
        archive_task_status(tmp_path, 3)
    assert not (tmp_path / "status" / "3.json").exists()
    history = tmp_path / "status" / "history"
    assert [read_json(history / f"3.{n}.json")["exit_code"] for n in (1, 2)] == [1, 2]


# --- cache keys ----------------------------------------------------------------------------

def clean_job(params: dict, needs: tuple[str, ...] = ()) -> JobSpec:
    return JobSpec(name="j", kind="clean", profile="p", needs=needs, resources=Resources(),
                   tasks=(Task(0, params),))


def test_path_digest_tracks_contents_and_names(tmp_path: Path) -> None:
    folder = tmp_path / "songs"
    folder.mkdir()
    (folder / "a.txt").write_text("uno")
    first = cache.path_digest(folder)
    (folder / "a.txt").write_text("dos")
    second = cache.path_digest(folder)
    (folder / "a.txt").rename(folder / "b.txt")
    third = cache.path_digest(folder)
    assert len({first, second, third}) == 3
    assert cache.path_digest(folder / "b.txt") != third
    assert cache.path_digest(tmp_path / "nothing") != cache.path_digest(folder / "b.txt")


def test_cache_key_changes_with_params_inputs_needs_and_code(tmp_path: Path) -> None:
    data = tmp_path / "in.txt"
    data.write_text("v1")
    base = clean_job({"input": str(data), "seed": 1}, needs=("up",))
    key = cache.job_cache_key(base, {"up": "k1"}, "code1")
    assert key == cache.job_cache_key(base, {"up": "k1"}, "code1")
    assert key != cache.job_cache_key(clean_job({"input": str(data), "seed": 2}, ("up",)),
                                      {"up": "k1"}, "code1")
    assert key != cache.job_cache_key(base, {"up": "k2"}, "code1")
    assert key != cache.job_cache_key(base, {"up": "k1"}, "code2")
    data.write_text("v2")
    assert key != cache.job_cache_key(base, {"up": "k1"}, "code1")


def test_cache_key_ignores_written_paths_and_references(tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    job = clean_job({"input": "{{ needs.up.outputs.corpus }}", "outputs": str(exports)},
                    needs=("up",))
    before = cache.job_cache_key(job, {"up": "k"}, "c")
    exports.mkdir()
    (exports / "train.txt").write_text("written by the job itself")
    assert cache.job_cache_key(job, {"up": "k"}, "c") == before


def test_code_version_follows_sources(tmp_path: Path) -> None:
    for name in cache.CODE_DIRS:
        (tmp_path / name).mkdir()
        (tmp_path / name / "mod.py").write_text("x = 1\n")
    before = cache.code_version(tmp_path)
    (tmp_path / "lyricgen" / "__pycache__").mkdir()
    (tmp_path / "lyricgen" / "__pycache__" / "mod.pyc").write_bytes(b"\0")
    assert cache.code_version(tmp_path) == before
    (tmp_path / "templates" / "mod.py").write_text("x = 2\n")
    assert cache.code_version(tmp_path) != before


# --- create_run and skipping ------------------------------------------------------------------

def test_create_run_writes_job_files_and_record(tmp_path: Path, fake_profile: Path) -> None:
    manifest = write_pipeline(tmp_path)
    run = create(tmp_path, fake_profile, manifest)
    record = run.read()
    assert RUN_ID.fullmatch(run.id) and record["run_id"] == run.id
    assert record["order"] == ["first", "second"]
    assert record["manifest"]["text"] == manifest.read_text()
    assert record["versions"]["python"] and "click" in record["versions"]
    first, second = record["jobs"]["first"], record["jobs"]["second"]
    assert first["cache_key"] != second["cache_key"] and not first["skipped"]
    for sub in ("logs", "status", "out"):
        assert (run.dir / "first" / sub).is_dir()
    assert os.access(run.dir / "first" / "job.sh", os.X_OK)
    kind, params, ctx = load_config(run.dir / "second" / "config.json", 0)
    assert kind == "clean" and ctx.run_id == run.id and ctx.job_name == "second"
    assert params["input"] == str(run.dir / "first" / "out" / "corpus.txt")
    assert ctx.out_dir == run.dir / "second" / "out"
    assert second["spec"]["tasks"][0]["params"]["input"] == params["input"]


def test_completed_jobs_are_skipped_and_dependents_read_their_outputs(
        tmp_path: Path, fake_profile: Path) -> None:
    first_run = create(tmp_path, fake_profile, write_pipeline(tmp_path))
    complete(first_run)
    again = create(tmp_path, fake_profile, write_pipeline(tmp_path)).read()
    assert again["jobs"]["first"]["skipped"] and again["jobs"]["second"]["skipped"]
    assert again["jobs"]["first"]["cached_from"]["run"] == first_run.id
    assert again["jobs"]["first"]["job_dir"] is None

    changed = create(tmp_path, fake_profile, write_pipeline(tmp_path, seed=2))
    record = changed.read()
    assert record["jobs"]["first"]["skipped"] and not record["jobs"]["second"]["skipped"]
    _, params, _ = load_config(changed.dir / "second" / "config.json", 0)
    assert params["input"] == str(first_run.dir / "first" / "out" / "corpus.txt")
    assert not (changed.dir / "first").exists()


def test_force_changed_inputs_and_failures_prevent_skipping(tmp_path: Path,
                                                            fake_profile: Path) -> None:
    manifest = write_pipeline(tmp_path)
    complete(create(tmp_path, fake_profile, manifest))
    forced = create(tmp_path, fake_profile, manifest, force=True).read()
    assert not any(job["skipped"] for job in forced["jobs"].values())

    (tmp_path / "first.txt").write_text("other input\n")
    changed = create(tmp_path, fake_profile, manifest)
    assert not any(job["skipped"] for job in changed.read()["jobs"].values())
    write_task_status(changed.dir / "first", 0, "FAILED", "", exit_code=1)
    retry = create(tmp_path, fake_profile, manifest).read()
    assert not retry["jobs"]["first"]["skipped"]


def test_cache_index_is_verified_and_rebuilt(tmp_path: Path, fake_profile: Path) -> None:
    run = create(tmp_path, fake_profile, write_pipeline(tmp_path))
    complete(run)
    key = run.read()["jobs"]["first"]["cache_key"]
    index = cache.CacheIndex(tmp_path / "runs")
    (tmp_path / "runs" / ".cache.json").write_text("{broken")
    hit = index.lookup(key)
    assert hit is not None and hit.run == run.id and hit.job == "first"
    assert read_json(tmp_path / "runs" / ".cache.json")[key]["run"] == run.id
    write_task_status(run.dir / "first", 0, "FAILED", "", exit_code=1)
    assert index.lookup(key) is None


@pytest.mark.parametrize(("runs_dir", "executor", "message"), [
    ("bad\ndir", "local", "holds a line break"),
    ("bad\\dir", "slurm", "holds a backslash, which SLURM cannot take in a log path"),
])
def test_render_failure_writes_nothing(tmp_path: Path, fake_profile: Path, runs_dir: str,
                                       executor: str, message: str) -> None:
    manifest = write_pipeline(tmp_path)
    pipeline, profiles = load(str(manifest), str(fake_profile))
    with pytest.raises(InputError, match=f"jobs.first: .*{message}"):
        plan.create_run(pipeline, profiles, tmp_path / runs_dir, executor=executor)
    assert not (tmp_path / runs_dir).exists()


def test_jobs_package_never_imports_torch() -> None:
    code = ("import sys, jobs.cli, jobs.plan, jobs.executors.local, jobs.executors.slurm; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False).returncode == 0
