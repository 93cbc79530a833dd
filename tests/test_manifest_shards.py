"""Shardable kinds (generate-grid's `shards`) expand into array tasks; their job-level output
`dir` may be referenced by dependents while per-file outputs of an array job may not."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.errors import InputError
from jobs.manifest import bind_outputs, load_pipeline

PIPELINE = """\
jobs:
  - kind: generate-grid
    name: generate
    params:
      model: {model}
      prompts: ["Hola"]
      shards: {shards}
{extra}
  - kind: report
    name: report
    needs: [generate]
    params:
      grid: "{{{{ needs.generate.outputs.{output} }}}}"
"""


def _write(tmp_path: Path, shards: int, output: str = "dir", extra: str = "") -> Path:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "best.pt").write_bytes(b"")  # what the input check looks for
    path = tmp_path / "grid.yaml"
    path.write_text(PIPELINE.format(model=model, shards=shards, output=output, extra=extra))
    return path


def test_shards_become_identical_array_tasks(tmp_path: Path) -> None:
    pipeline = load_pipeline(_write(tmp_path, shards=3, extra="    throttle: 2"))
    job = pipeline.job("generate")
    assert job.array and job.throttle == 2
    assert [t.index for t in job.tasks] == [0, 1, 2]
    assert all(t.params == job.tasks[0].params for t in job.tasks)
    assert job.tasks[0].params["shards"] == 3


def test_one_shard_is_a_plain_job(tmp_path: Path) -> None:
    job = load_pipeline(_write(tmp_path, shards=1)).job("generate")
    assert not job.array and len(job.tasks) == 1


def test_job_level_output_of_array_binds_to_out_dir(tmp_path: Path) -> None:
    pipeline = load_pipeline(_write(tmp_path, shards=2))
    bound = bind_outputs(pipeline, lambda name: tmp_path / "runs" / name / "out")
    assert Path(bound.job("report").tasks[0].params["grid"]) == tmp_path / "runs/generate/out"


def test_file_output_of_array_is_refused_with_hint(tmp_path: Path) -> None:
    path = _write(tmp_path, shards=2, output="grid")
    with pytest.raises(InputError) as info:
        load_pipeline(path)
    message = str(info.value)
    assert message.startswith(f"{path}:13: jobs[1].params.grid: ")
    assert "use outputs.dir" in message and "\n" not in message


def test_shards_with_matrix_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, shards=2, extra="    matrix: {seed: [1, 2]}")
    with pytest.raises(InputError) as info:
        load_pipeline(path)
    assert str(info.value).startswith(f"{path}:7: jobs[0].params.shards: shards cannot be")
