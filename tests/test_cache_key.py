"""Cache-key rules not covered by the state tests: world size and big files."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from jobs import cache
from jobs.spec import JobSpec, Resources, Task


def _job(kind: str, resources: Resources, params: dict) -> JobSpec:
    return JobSpec(name="j", kind=kind, profile="laptop", needs=(), resources=resources,
                   tasks=(Task(index=0, params=params),))


def test_world_size_changes_the_key_of_distributed_kinds_only() -> None:
    one, two = Resources(processes_per_node=1, cpus=2), Resources(processes_per_node=2, cpus=2)
    llama = {"model_path": "/nonexistent/model", "data_path": "/nonexistent/data.jsonl"}
    assert (cache.job_cache_key(_job("finetune-llama", one, llama), {}, "c")
            != cache.job_cache_key(_job("finetune-llama", two, llama), {}, "c"))
    clean = {"input": "/nonexistent/songs.jsonl"}
    assert (cache.job_cache_key(_job("clean", one, clean), {}, "c")
            == cache.job_cache_key(_job("clean", dataclasses.replace(one, cpus=8), clean),
                                   {}, "c"))


def test_big_files_are_keyed_by_size_and_mtime_not_bytes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(cache, "BIG_FILE", 8)
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"0123456789")
    before = cache.path_digest(weights)
    stat = weights.stat()
    weights.write_bytes(b"9876543210")  # same size; restore the mtime: same key
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache.path_digest(weights) == before
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache.path_digest(weights) != before
    small = tmp_path / "small.txt"
    small.write_bytes(b"abc")
    first = cache.path_digest(small)
    small.write_bytes(b"abd")
    assert cache.path_digest(small) != first
