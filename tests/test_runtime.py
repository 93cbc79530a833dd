"""jobs.runtime: the host / apptainer command line of a job, built in one place."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from jobs.runtime import (
    BASE_CONTAINER_ENV,
    NODE_ENV,
    ScriptVariable,
    cache_env,
    container_binds,
    container_env_names,
    launch_env,
    lyricgen_argv,
    runtime_argv,
)
from jobs.spec import JobSpec, Profile, Resources, Task

PROJECT = Path("/srv/lyricgen")
JOB_DIR = PROJECT / "runs" / "r1" / "train"


def make_job(gpus: int = 0, nodes: int = 1, kind: str = "clean", **resources: int) -> JobSpec:
    return JobSpec(name="train", kind=kind, profile="p", needs=(),
                   resources=Resources(gpus=gpus, nodes=nodes, **resources),
                   tasks=(Task(0, {}),))


def ddp_job(gpus: int = 0, nodes: int = 1, processes: int = 2, cpus: int = 8) -> JobSpec:
    return make_job(gpus, nodes, "finetune-llama", processes_per_node=processes, cpus=cpus)


def apptainer(**kw: object) -> Profile:
    return Profile(name="cluster", runtime="apptainer", image="/images/lyricgen.sif", **kw)


def test_host_runtime_is_the_profile_python() -> None:
    profile = Profile(name="laptop", python="/opt/my venv/bin/python")
    assert runtime_argv(make_job(gpus=1), profile, PROJECT, JOB_DIR) == ["/opt/my venv/bin/python"]


def test_apptainer_gpu_command_line() -> None:
    profile = apptainer(binds=("/data:/data:ro",), cache_dir="/scratch/hf")
    assert runtime_argv(make_job(gpus=2), profile, PROJECT, JOB_DIR) == [
        "apptainer", "exec", "--nv", "--cleanenv", "--pwd", "/srv/lyricgen",
        "--bind", "/data:/data:ro", "--bind", "/srv/lyricgen:/srv/lyricgen:rw",
        "--bind", "/scratch/hf:/scratch/hf:rw", "/images/lyricgen.sif", "python3",
    ]


def test_apptainer_cpu_job_has_no_nv() -> None:
    argv = runtime_argv(make_job(gpus=0), apptainer(), PROJECT, JOB_DIR)
    assert "--nv" not in argv
    assert argv[:3] == ["apptainer", "exec", "--cleanenv"]


def test_binds_cover_run_dir_outside_project_and_drop_duplicates() -> None:
    profile = apptainer(binds=("/data", "/data", "/srv/lyricgen:/srv/lyricgen", "/x:/y:ro",
                               "/x:/y:ro"),
                        cache_dir="/srv/lyricgen/.cache")
    binds = container_binds(make_job(), profile, PROJECT, Path("/scratch/runs/r1/train"))
    assert binds == ["/data:/data:rw", "/srv/lyricgen:/srv/lyricgen:rw",
                     "/scratch/runs/r1:/scratch/runs/r1:rw", "/x:/y:ro"]


def param_job(kind: str, *tasks: dict[str, object]) -> JobSpec:
    return JobSpec(name="j", kind=kind, profile="p", needs=(), resources=Resources(),
                   tasks=tuple(Task(i, params) for i, params in enumerate(tasks)),
                   array=len(tasks) > 1)


def test_input_paths_are_bound_read_only_and_written_dirs_read_write() -> None:
    """The issue's cluster case: data under /scratch, outside every bound dir, is bound;
    inputs inside the project or run dir need no bind of their own."""
    job = param_job("train-rnn", {"data": "/scratch/corpus ñ 100% #1.txt",
                                  "valid_data": "/srv/lyricgen/runs/r1/clean/out/valid.txt"})
    assert container_binds(job, apptainer(), PROJECT, JOB_DIR) == [
        "/srv/lyricgen:/srv/lyricgen:rw",
        "/scratch/corpus ñ 100% #1.txt:/scratch/corpus ñ 100% #1.txt:ro"]
    clean = param_job("clean", {"input": "/data/in.jsonl", "outputs": "/export/clean"})
    assert container_binds(clean, apptainer(), PROJECT, JOB_DIR) == [
        "/srv/lyricgen:/srv/lyricgen:rw", "/export/clean:/export/clean:rw",
        "/data/in.jsonl:/data/in.jsonl:ro"]


def test_nested_binds_are_deduped_and_parents_mount_first() -> None:
    """Every task's paths count; a path inside a bound one is dropped unless it needs more
    access than the outer bind gives (a run dir inside a read-only input tree)."""
    job = param_job("train-rnn",
                    {"data": "/corpora/es/a.txt", "valid_data": "/corpora/es/b.txt"},
                    {"data": "/corpora/es", "valid_data": "/corpora/es/a.txt"},
                    {"data": "/corpora/es/sub/c.txt", "valid_data": None})
    assert container_binds(job, apptainer(binds=("/corpora:/corpora:ro",)), PROJECT,
                           Path("/corpora/es/runs/r1/j")) == [
        "/corpora:/corpora:ro", "/srv/lyricgen:/srv/lyricgen:rw",
        "/corpora/es/runs/r1:/corpora/es/runs/r1:rw"]
    assert container_binds(job, apptainer(), PROJECT, JOB_DIR) == [
        "/srv/lyricgen:/srv/lyricgen:rw", "/corpora/es:/corpora/es:ro"]


@pytest.mark.parametrize("project", ["/srv/a:b", "/srv/a,b", "/srv/a^b", "/srv/a\\",
                                     "relative/dir"])
def test_unbindable_paths_are_rejected(project: str) -> None:
    with pytest.raises(ValueError, match="project dir: cannot bind"):
        runtime_argv(make_job(), apptainer(), Path(project), Path("/scratch/r1/train"))


def test_an_unbindable_input_is_named_unless_a_bind_covers_it() -> None:
    job = param_job("train-rnn", {"data": "/scratch/a:b/corpus.txt"})
    with pytest.raises(ValueError, match=r"^params.data: cannot bind '/scratch/a:b/corpus"):
        container_binds(job, apptainer(), PROJECT, JOB_DIR)
    assert container_binds(job, apptainer(binds=("/scratch",)), PROJECT, JOB_DIR) == [
        "/scratch:/scratch:rw", "/srv/lyricgen:/srv/lyricgen:rw"]


def host_image(root: Path) -> Path:
    """A directory apptainer can exec: the host's bash with its libraries, at their paths,
    and the mount points apptainer needs."""
    for mount in ("dev", "proc", "sys", "tmp", "var/tmp", "etc", "root", "home"):
        (root / mount).mkdir(parents=True)
    bash = Path(shutil.which("bash") or "/bin/bash")
    ldd = subprocess.run(["ldd", str(bash)], capture_output=True, text=True, check=True)
    for path in [bash, *map(Path, re.findall(r"(/\S+) \(0x", ldd.stdout))]:
        target = root / path.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return root


@pytest.mark.skipif(shutil.which("apptainer") is None, reason="apptainer not installed")
def test_real_apptainer_takes_the_binds_and_refuses_what_runtime_refuses(tmp_path: Path) -> None:
    """The argv of runtime_argv under apptainer itself (--contain: /tmp and $HOME are not
    mounted, so the binds alone make the paths reachable): hostile names bind, the input is
    read-only, the run dir writable; each character _BIND_UNSAFE refuses breaks apptainer."""
    name = "ñ 100% #1 'q' \"dq\" $HOME a\\b"
    project, data = tmp_path / f"my lyrics {name}", tmp_path / f"scratch {name}" / "c.txt"
    job_dir = tmp_path / f"runs {name}" / "r1" / "train"
    for folder in (project, data.parent, job_dir):
        folder.mkdir(parents=True)
    data.write_text("hola\n", encoding="utf-8")
    image = host_image(tmp_path / "image")
    job = param_job("train-rnn", {"data": str(data)})
    argv = runtime_argv(job, apptainer(), project, job_dir)
    argv[argv.index("exec") + 1:argv.index("exec") + 1] = ["--contain"]
    argv[-2:] = [str(image), shutil.which("bash") or "/bin/bash", "-c",
                 'pwd; read -r l <"$1"; echo "$l"; : >"$2/ok"; : 2>/dev/null >>"$1" || echo ro',
                 "sh",
                 str(data), str(job_dir)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(project), "hola", "ro"]
    assert (job_dir / "ok").is_file()
    for bad in ("a:b", "a,b", "a^b", "a\\"):
        folder = tmp_path / bad
        folder.mkdir()
        (folder / "c.txt").write_text("hola\n", encoding="utf-8")
        with pytest.raises(ValueError, match="cannot bind"):
            container_binds(param_job("train-rnn", {"data": str(folder)}), apptainer(),
                            project, job_dir)
        naive = subprocess.run(["apptainer", "exec", "--contain", "--bind",
                                f"{folder}:{folder}:ro", str(image), "/bin/bash", "-c",
                                'read -r l <"$1"; echo "$l"', "sh", str(folder / "c.txt")],
                               capture_output=True, text=True, timeout=120, check=False)
        assert naive.returncode != 0 and naive.stdout != "hola\n", bad


def test_spaces_quotes_and_non_ascii_bind_verbatim() -> None:
    project = Path("/home/o'brien/my \"lyrics\" ñ 100% #1 $HOME a\\b")
    binds = container_binds(make_job(), apptainer(), project, project / "runs/r1/j")
    assert binds == [f"{project}:{project}:rw"]


def test_apptainer_needs_an_image_and_runtime_must_be_known() -> None:
    with pytest.raises(ValueError, match="needs an image"):
        runtime_argv(make_job(), Profile(name="x", runtime="apptainer"), PROJECT, JOB_DIR)
    with pytest.raises(ValueError, match="runtime must be one of"):
        runtime_argv(make_job(), Profile(name="x", runtime="docker"), PROJECT, JOB_DIR)


def test_lyricgen_argv_appends_module_kind_and_config() -> None:
    argv = lyricgen_argv(make_job(), Profile(name="laptop", python="py"), PROJECT, JOB_DIR)
    assert argv == ["py", "-m", "lyricgen", "clean", "--config",
                    "/srv/lyricgen/runs/r1/train/config.json"]


CONFIG = "/srv/lyricgen/runs/r1/train/config.json"
PROGRAM = ["-m", "lyricgen", "finetune-llama", "--config", CONFIG]
# finetune-llama checkpoints: torchrun forwards SIGUSR1 and waits the warning time (1 h limit).
SIGNALS = ["--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1", "--shutdown-timeout=300"]


def test_one_process_of_a_distributed_kind_runs_without_torchrun() -> None:
    argv = lyricgen_argv(ddp_job(gpus=1, processes=1), Profile(name="laptop", python="py"),
                         PROJECT, JOB_DIR)
    assert argv == ["py", *PROGRAM]


def test_single_node_processes_run_under_standalone_torchrun_of_the_runtime_python() -> None:
    argv = lyricgen_argv(ddp_job(), Profile(name="laptop", python="py"), PROJECT, JOB_DIR)
    assert argv == ["py", "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2",
                    *SIGNALS, "--standalone", *PROGRAM]
    gpu = lyricgen_argv(ddp_job(gpus=4, processes=4), apptainer(), PROJECT, JOB_DIR)
    assert gpu[:3] == ["apptainer", "exec", "--nv"]
    assert gpu[gpu.index("/images/lyricgen.sif"):] == [
        "/images/lyricgen.sif", "python3", "-m", "torch.distributed.run", "--nnodes=1",
        "--nproc-per-node=4", *SIGNALS, "--standalone", *PROGRAM]


def test_multi_node_runs_one_torchrun_per_node_through_srun() -> None:
    profile = apptainer(executor="slurm")
    argv = lyricgen_argv(ddp_job(gpus=4, nodes=2, processes=4, cpus=16), profile, PROJECT,
                         JOB_DIR)
    assert argv[:10] == ["srun", "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=16",
                         "--kill-on-bad-exit=1", *NODE_ENV, "apptainer"]
    assert "--nv" in argv
    assert argv[argv.index("python3"):] == [
        "python3", "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=4",
        *SIGNALS, "--rdzv-backend=c10d", ScriptVariable("--rdzv-id=", "SLURM_JOB_ID"),
        ScriptVariable("--rdzv-endpoint=", "RDZV_ENDPOINT"), *PROGRAM]


def test_multi_node_host_runtime_starts_torchrun_through_the_per_node_env() -> None:
    argv = lyricgen_argv(ddp_job(gpus=2, nodes=3, processes=2),
                         Profile(name="slurm", executor="slurm", python="py"), PROJECT, JOB_DIR)
    assert argv[5:13] == ["bash", "-c", 'node_env "$@"', "node-env", "py", "-m",
                          "torch.distributed.run", "--nnodes=3"]


def test_multi_node_is_refused_under_the_local_executor() -> None:
    with pytest.raises(ValueError, match="executor: local, which runs on this machine only"):
        lyricgen_argv(ddp_job(nodes=2), Profile(name="laptop"), PROJECT, JOB_DIR)


@pytest.mark.parametrize("resources", [{"nodes": 2}, {"processes_per_node": 2, "cpus": 2}])
def test_kinds_without_distributed_launch_are_refused_several_processes(resources) -> None:
    with pytest.raises(ValueError, match="kind clean runs as one process"):
        lyricgen_argv(make_job(**resources), Profile(name="p", executor="slurm"), PROJECT,
                      JOB_DIR)


def test_launch_env_shares_the_cpus_between_processes_of_a_node() -> None:
    laptop = Profile(name="laptop")
    assert launch_env(make_job(cpus=8), laptop) == {}
    assert launch_env(ddp_job(processes=1), laptop) == {}
    assert launch_env(ddp_job(processes=2, cpus=8), laptop) == {"OMP_NUM_THREADS": "4"}
    assert launch_env(ddp_job(processes=4, cpus=6, nodes=2), laptop) == {"OMP_NUM_THREADS": "1"}


def test_launch_env_points_the_collectives_at_the_profiles_interface() -> None:
    fabric = Profile(name="c", executor="slurm", network_interface="ib0")
    assert launch_env(ddp_job(processes=1, nodes=2), fabric) == {
        "GLOO_SOCKET_IFNAME": "ib0", "NCCL_SOCKET_IFNAME": "ib0"}
    assert launch_env(ddp_job(processes=2, cpus=8), fabric) == {"OMP_NUM_THREADS": "4"}


def test_container_env_names() -> None:
    assert container_env_names(Profile(name="laptop", env_passthrough=("HF_TOKEN",))) == ()
    profile = apptainer(env={"OMP_NUM_THREADS": "4"}, cache_dir="/scratch/hf",
                        env_passthrough=("GENIUS_ACCESS_TOKEN", "SLURM_JOB_ID"))
    assert container_env_names(profile) == (
        *BASE_CONTAINER_ENV, "OMP_NUM_THREADS", "HF_HOME", "TORCHINDUCTOR_CACHE_DIR",
        "XDG_CACHE_HOME", "MPLCONFIGDIR", "GENIUS_ACCESS_TOKEN")
    assert container_env_names(profile, ["OMP_NUM_THREADS", "EXTRA"])[-2:] == (
        "EXTRA", "GENIUS_ACCESS_TOKEN")
    with pytest.raises(ValueError, match="not a valid environment variable name"):
        container_env_names(apptainer(env_passthrough=("BAD-NAME",)))


def test_cache_env_puts_every_cache_under_cache_dir_unless_the_profile_sets_it() -> None:
    assert cache_env(apptainer()) == {}
    assert cache_env(apptainer(cache_dir="/scratch/hf", env={"MPLCONFIGDIR": "/tmp/mpl"})) == {
        "HF_HOME": "/scratch/hf", "TORCHINDUCTOR_CACHE_DIR": "/scratch/hf/torchinductor",
        "XDG_CACHE_HOME": "/scratch/hf/xdg"}
