"""jobs.runtime: the host / apptainer command line of a job, built in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.runtime import (
    BASE_CONTAINER_ENV,
    cache_env,
    container_binds,
    container_env_names,
    lyricgen_argv,
    runtime_argv,
)
from jobs.spec import JobSpec, Profile, Resources, Task

PROJECT = Path("/srv/lyricgen")
JOB_DIR = PROJECT / "runs" / "r1" / "train"


def make_job(gpus: int = 0, nodes: int = 1) -> JobSpec:
    return JobSpec(name="train", kind="clean", profile="p", needs=(),
                   resources=Resources(gpus=gpus, nodes=nodes), tasks=(Task(0, {}),))


def apptainer(**kw: object) -> Profile:
    return Profile(name="cluster", runtime="apptainer", image="/images/lyricgen.sif", **kw)


def test_host_runtime_is_the_profile_python() -> None:
    profile = Profile(name="laptop", python="/opt/my venv/bin/python")
    assert runtime_argv(make_job(gpus=1), profile, PROJECT, JOB_DIR) == ["/opt/my venv/bin/python"]


def test_apptainer_gpu_command_line() -> None:
    profile = apptainer(binds=("/data:/data:ro",), cache_dir="/scratch/hf")
    assert runtime_argv(make_job(gpus=2), profile, PROJECT, JOB_DIR) == [
        "apptainer", "exec", "--nv", "--cleanenv", "--pwd", "/srv/lyricgen",
        "--bind", "/srv/lyricgen:/srv/lyricgen", "--bind", "/scratch/hf:/scratch/hf",
        "--bind", "/data:/data:ro", "/images/lyricgen.sif", "python3",
    ]


def test_apptainer_cpu_job_has_no_nv() -> None:
    argv = runtime_argv(make_job(gpus=0), apptainer(), PROJECT, JOB_DIR)
    assert "--nv" not in argv
    assert argv[:3] == ["apptainer", "exec", "--cleanenv"]


def test_binds_cover_run_dir_outside_project_and_drop_duplicates() -> None:
    profile = apptainer(binds=("/data", "/data", "/srv/lyricgen:/srv/lyricgen"),
                        cache_dir="/srv/lyricgen/.cache")
    binds = container_binds(profile, PROJECT, Path("/scratch/runs/r1/train"))
    assert binds == ["/srv/lyricgen:/srv/lyricgen", "/scratch/runs/r1:/scratch/runs/r1", "/data"]


@pytest.mark.parametrize("project", ["/srv/a:b", "/srv/a,b", "/srv/a b", "relative/dir"])
def test_unbindable_paths_are_rejected(project: str) -> None:
    with pytest.raises(ValueError, match="cannot bind"):
        runtime_argv(make_job(), apptainer(), Path(project), Path("/scratch/r1/train"))


def test_apptainer_needs_an_image_and_runtime_must_be_known() -> None:
    with pytest.raises(ValueError, match="needs an image"):
        runtime_argv(make_job(), Profile(name="x", runtime="apptainer"), PROJECT, JOB_DIR)
    with pytest.raises(ValueError, match="runtime must be one of"):
        runtime_argv(make_job(), Profile(name="x", runtime="docker"), PROJECT, JOB_DIR)


def test_lyricgen_argv_appends_module_kind_and_config() -> None:
    argv = lyricgen_argv(make_job(), Profile(name="laptop", python="py"), PROJECT, JOB_DIR)
    assert argv == ["py", "-m", "lyricgen", "clean", "--config",
                    "/srv/lyricgen/runs/r1/train/config.json"]


def test_multi_node_jobs_are_refused_until_a_launcher_exists() -> None:
    with pytest.raises(ValueError, match="multi-node launcher"):
        lyricgen_argv(make_job(nodes=2), Profile(name="laptop"), PROJECT, JOB_DIR)


def test_container_env_names() -> None:
    assert container_env_names(Profile(name="laptop", env_passthrough=("HF_TOKEN",))) == ()
    profile = apptainer(env={"OMP_NUM_THREADS": "4"}, cache_dir="/scratch/hf",
                        env_passthrough=("GENIUS_ACCESS_TOKEN", "SLURM_JOB_ID"))
    assert container_env_names(profile) == (
        *BASE_CONTAINER_ENV, "OMP_NUM_THREADS", "HF_HOME", "TORCHINDUCTOR_CACHE_DIR",
        "XDG_CACHE_HOME", "MPLCONFIGDIR", "GENIUS_ACCESS_TOKEN")
    with pytest.raises(ValueError, match="not a valid environment variable name"):
        container_env_names(apptainer(env_passthrough=("BAD-NAME",)))


def test_cache_env_puts_every_cache_under_cache_dir_unless_the_profile_sets_it() -> None:
    assert cache_env(apptainer()) == {}
    assert cache_env(apptainer(cache_dir="/scratch/hf", env={"MPLCONFIGDIR": "/tmp/mpl"})) == {
        "HF_HOME": "/scratch/hf", "TORCHINDUCTOR_CACHE_DIR": "/scratch/hf/torchinductor",
        "XDG_CACHE_HOME": "/scratch/hf/xdg"}
