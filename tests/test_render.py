"""jobs.render: golden job scripts, shellcheck, safety checks, and real runs with bash.

Regenerate the golden files after an intended template change with
`UPDATE_GOLDEN=1 pytest tests/test_render.py` and review the diff.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from jobs.render import render_report_script, render_script, sbatch_log_path
from jobs.runtime import BASE_CONTAINER_ENV
from jobs.spec import JobSpec, Profile, Resources, Task
from jobs.taskstatus import STATUS_KEYS

GOLDEN = Path(__file__).resolve().parent / "golden"
HOSTILE_ENV = {
    "QUOTES": "it's \"quoted\" \\ back",
    "SUBST": "$(touch pwned) `touch pwned2` ${HOME}",
    "LINES": "one\ntwo; echo three",
}


def job(name: str = "clean", *, tasks: int = 1, kind: str = "clean", **kw: object) -> JobSpec:
    resources = kw.pop("resources", Resources(cpus=1, mem="2G", time="00:30:00"))
    return JobSpec(name=name, kind=kind, profile="p", needs=(), resources=resources,
                   tasks=tuple(Task(i, {"seed": i}, {"seed": i}) for i in range(tasks)), **kw)


CLUSTER = Profile(name="cluster", executor="slurm", runtime="apptainer",
                  image="/shared/images/lyricgen.sif", binds=("/data/corpora:/data:ro",),
                  env={"TOKENIZERS_PARALLELISM": "false"},
                  env_passthrough=("GENIUS_ACCESS_TOKEN", "HF_TOKEN"),
                  modules=("apptainer/1.3", "cuda/12.4"), partition="gpu",
                  gpu_gres="gpu:titanrtx", sbatch={"account": "lab-nlp", "qos": "normal"},
                  cache_dir="/scratch/lab/hf-cache")


CASES: dict[str, tuple[JobSpec, Profile, Path, Path]] = {
    "single_host": (
        job(),
        Profile(name="laptop", python="/srv/lyricgen/.venv/bin/python"),
        Path("/srv/lyricgen/runs/20240101-000000-ab12/clean"), Path("/srv/lyricgen"),
    ),
    "matrix_array_throttle": (
        job("grid", tasks=6, array=True, throttle=2,
            resources=Resources(cpus=2, mem="8G", time="02:00:00")),
        Profile(name="slurm-host", executor="slurm", python="/opt/venv/bin/python",
                partition="short", env={"OMP_NUM_THREADS": "2"}),
        Path("/srv/lyricgen/runs/20240101-000000-ab12/grid"), Path("/srv/lyricgen"),
    ),
    "gpu_apptainer_cluster": (
        job("finetune", resources=Resources(gpus=2, cpus=8, mem="64G", time="12:00:00",
                                            partition="gpu-long", extra={"qos": "high"})),
        CLUSTER,
        Path("/scratch/lab/runs/20240101-000000-ab12/finetune"), Path("/home/ana/lyricgen"),
    ),
    "ddp_cpu_2proc_host": (
        job("finetune", kind="finetune-llama",
            resources=Resources(cpus=4, mem="8G", time="01:00:00", processes_per_node=2)),
        Profile(name="laptop", python="/srv/lyricgen/.venv/bin/python"),
        Path("/srv/lyricgen/runs/20240101-000000-ab12/finetune"), Path("/srv/lyricgen"),
    ),
    "ddp_4gpu_apptainer": (
        job("finetune", kind="finetune-llama",
            resources=Resources(gpus=4, cpus=16, mem="128G", time="24:00:00",
                                processes_per_node=4)),
        CLUSTER,
        Path("/scratch/lab/runs/20240101-000000-ab12/finetune"), Path("/home/ana/lyricgen"),
    ),
    "ddp_2node_4gpu_apptainer": (
        job("finetune", kind="finetune-llama",
            resources=Resources(gpus=4, cpus=16, mem="128G", time="24:00:00", nodes=2,
                                processes_per_node=4)),
        CLUSTER,
        Path("/scratch/lab/runs/20240101-000000-ab12/finetune"), Path("/home/ana/lyricgen"),
    ),
    "ddp_2node_cpu_interface": (
        job("train", kind="train-rnn",
            resources=Resources(cpus=4, mem="8G", time="04:00:00", nodes=2)),
        Profile(name="fabric", executor="slurm", python="/opt/venv/bin/python",
                network_interface="ib0"),
        Path("/srv/lyricgen/runs/20240101-000000-ab12/train"), Path("/srv/lyricgen"),
    ),
    "train_rnn_preemptible": (
        job("train", kind="train-rnn",
            resources=Resources(cpus=4, mem="8G", time="04:00:00", signal_seconds=600)),
        Profile(name="slurm-host", executor="slurm", python="/opt/venv/bin/python"),
        Path("/srv/lyricgen/runs/20240101-000000-ab12/train"), Path("/srv/lyricgen"),
    ),
    "hostile_values": (
        job("odd.name-1"),
        Profile(name="odd", python="/opt/my env/bin/python3", env=HOSTILE_ENV,
                modules=("tool with space",)),
        Path("/scratch/my runs/ñ 100% #1 'q' \"dq\" $USER a\\b/odd.name-1"),
        Path("/home/o'brien/my lyrics $HOME"),
    ),
    "apptainer_input_binds": (
        JobSpec(name="train", kind="train-rnn", profile="cluster", needs=(),
                resources=Resources(cpus=4, mem="8G", time="04:00:00"),
                tasks=(Task(0, {"data": "/scratch/lab/corpus ñ 100% #1.txt",
                                "valid_data": "/data/es/valid.txt"}),
                       Task(1, {"data": "/home/ana/my lyrics/runs/old/clean/out/train.txt",
                                "valid_data": "/home/ana/my lyrics/runs/r1/clean/out/v.txt"})),
                array=True),
        dataclasses.replace(CLUSTER, binds=("/data:/data:ro",), cache_dir=None),
        Path("/home/ana/my lyrics/runs/r1/train"), Path("/home/ana/lyricgen 'ñ' 100%"),
    ),
}


def render_case(name: str) -> str:
    spec, profile, job_dir, project_dir = CASES[name]
    return render_script(spec, profile, job_dir=job_dir, project_dir=project_dir)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    path = GOLDEN / f"{name}.sh"
    text = render_case(name)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    expected = path.read_text(encoding="utf-8") if path.exists() else ""
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True),
                                            text.splitlines(keepends=True),
                                            f"golden/{name}.sh", "rendered"))
        pytest.fail(f"rendered script differs from tests/golden/{name}.sh; if intended, "
                    f"regenerate with `UPDATE_GOLDEN=1 pytest tests/test_render.py`\n{diff}")


def test_every_golden_file_has_a_case() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.sh")) == sorted(CASES)


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck not installed (apt-get install shellcheck; CI has it)")
@pytest.mark.parametrize("name", sorted(CASES))
def test_shellcheck_clean(name: str, tmp_path: Path) -> None:
    rendered = tmp_path / f"{name}.sh"
    rendered.write_text(render_case(name), encoding="utf-8")
    for script in (rendered, GOLDEN / f"{name}.sh"):
        out = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", str(script)],
                             capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stdout + out.stderr


def test_report_script_runs_jobctl_report_with_the_profiles_options(tmp_path: Path) -> None:
    """The SLURM job that writes the run report (jobs/executors/slurm.py submit_report)."""
    run_dir = tmp_path / "my runs $HOME" / "20240101-000000-ab12"
    text = render_report_script(run_dir, Path("/srv/lyricgen"), "/srv/venv/bin/python", "gpu",
                                {"account": "lyrics"})
    header = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    assert header == ["#SBATCH --job-name=lyricgen-report", "#SBATCH --cpus-per-task=1",
                      "#SBATCH --mem=1G", "#SBATCH --time=00:15:00",
                      "#SBATCH --partition=gpu", "#SBATCH --account=lyrics"]
    assert text.splitlines()[-1] == ("exec /srv/venv/bin/python -m jobs.cli report "
                                     f"'{run_dir}'")
    if shutil.which("shellcheck"):
        script = tmp_path / "report.sh"
        script.write_text(text)
        out = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", str(script)],
                             capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stdout
    with pytest.raises(ValueError, match="one word"):
        render_report_script(run_dir, Path("/srv"), "python", None, {"qos": "a b"})


def test_multi_node_header_asks_one_task_per_node() -> None:
    header = [line for line in render_case("ddp_2node_4gpu_apptainer").splitlines()
              if line.startswith("#SBATCH")]
    assert {"#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --cpus-per-task=16",
            "#SBATCH --gres=gpu:titanrtx:4"} <= set(header)
    single = render_case("ddp_4gpu_apptainer")
    assert "--ntasks-per-node" not in single and "srun" not in single


def test_sbatch_header_and_no_params_in_script() -> None:
    text = render_case("gpu_apptainer_cluster")
    header = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH --gres=gpu:titanrtx:2" in header
    assert "#SBATCH --partition=gpu-long" in header
    assert "#SBATCH --qos=high" in header and "#SBATCH --qos=normal" not in header
    assert "#SBATCH --account=lab-nlp" in header
    assert not any(line.startswith("#SBATCH --array") for line in header)
    grid = render_case("matrix_array_throttle")
    assert "#SBATCH --array=0-5%2\n" in grid
    assert "seed" not in text and "seed" not in grid
    for name in CASES:  # paths reach sbatch on its command line only (sbatch_log_path)
        header = [line for line in render_case(name).splitlines() if line.startswith("#SBATCH")]
        assert not [line for line in header if "/" in line], name


@pytest.mark.parametrize(("job_dir", "array", "expected"), [
    ("/srv/runs/r1/clean", False, "/srv/runs/r1/clean/logs/slurm-%j.out"),
    ("/srv/my runs/ñ 100% #1 'q' \"dq\" $HOME/%j", True,
     "/srv/my runs/ñ 100%% #1 'q' \"dq\" $HOME/%%j/logs/slurm-%A_%a.out"),
])
def test_sbatch_log_path_escapes_slurm_patterns(job_dir: str, array: bool,
                                                expected: str) -> None:
    assert sbatch_log_path(Path(job_dir), array) == expected


def test_sbatch_log_path_refuses_a_backslash() -> None:
    with pytest.raises(ValueError, match="holds a backslash"):
        sbatch_log_path(Path("/srv/a\\b/clean"), False)


def test_token_forwarded_by_name_never_by_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENIUS_ACCESS_TOKEN", "s3cr3t-token-value")
    text = render_case("gpu_apptainer_cluster")
    assert "s3cr3t-token-value" not in text
    assert "GENIUS_ACCESS_TOKEN" in text and 'export "APPTAINERENV_${name}=${!name}"' in text


@pytest.mark.parametrize(("job_dir", "project_dir", "message"), [
    ("relative/runs/clean", "/srv", "job_dir must be absolute"),
    ("/srv/runs/clean", "srv", "project_dir must be absolute"),
    ("/srv/runs/a\nb/clean", "/srv", "job_dir '/srv/runs/a\\\\nb/clean' holds a line break"),
    ("/srv/runs/clean", "/srv/my\nlyrics", "project_dir .* holds a line break"),
    ("/srv/runs/\udcff/clean", "/srv", "not valid UTF-8"),
])
def test_unusable_paths_are_rejected_in_one_line(job_dir: str, project_dir: str,
                                                 message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        render_script(job(), Profile(name="p"), job_dir=Path(job_dir),
                      project_dir=Path(project_dir))
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(("spec", "profile", "message"), [
    (job(resources=Resources(extra={"array": "0-3"})), Profile(name="p"), "set by jobctl"),
    (job(), Profile(name="p", sbatch={"Bad_Key": "x"}), "long option name"),
    (job(resources=Resources(extra={"comment": "two words"})), Profile(name="p"), "one word"),
    (job(resources=Resources(mem="4G\n#SBATCH --x")), Profile(name="p"), "one word"),
    (job(), Profile(name="p", partition="gpu;rm"), "one word"),
    (job(), Profile(name="p", env={"1BAD": "x"}), "valid environment variable name"),
    (job(name="-x"), Profile(name="p"), "job name"),
    (job(kind="finetune-llama", resources=Resources(cpus=2, nodes=2)), Profile(name="p"),
     "executor: local"),
    (job(resources=Resources(cpus=2, processes_per_node=2)), Profile(name="p"),
     "kind clean runs as one process"),
    (job(resources=Resources(extra={"ntasks-per-node": "4"})), Profile(name="p"),
     "set by jobctl"),
])
def test_unrenderable_values_raise(spec: JobSpec, profile: Profile, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_script(spec, profile, job_dir=Path("/srv/runs/r1/x"), project_dir=Path("/srv"))


# --- running rendered scripts for real, with a fake python ---------------------------------

FAKE_PYTHON = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$FAKE_OUT/argv"
pwd > "$FAKE_OUT/cwd"
for name in QUOTES SUBST LINES OMP_NUM_THREADS PET_LOCAL_ADDR PET_RDZV_CONF \\
    GLOO_SOCKET_IFNAME NCCL_SOCKET_IFNAME; do
  printf '%s' "${!name-}" > "$FAKE_OUT/env.$name"
done
echo $$ > "$FAKE_OUT/pid"
if [[ -n "${FAKE_SLEEP:-}" ]]; then exec sleep "$FAKE_SLEEP"; fi
exit "${FAKE_EXIT:-0}"
"""


@pytest.fixture
def project(tmp_path: Path) -> dict[str, Path]:
    return make_project(tmp_path)


def make_project(tmp_path: Path) -> dict[str, Path]:
    """A project dir with a hostile name, a fake python, and a job dir for a 3-task array."""
    project_dir = tmp_path / "my proj's $HOME"
    project_dir.mkdir()
    fake = project_dir / "fake python"
    fake.write_text(FAKE_PYTHON, encoding="utf-8")
    fake.chmod(0o755)
    out = tmp_path / "fake-out"
    out.mkdir()
    return {"project": project_dir, "fake": fake, "out": out, "job_dir": tmp_path / "runs/r1/grid"}


def write_script(paths: dict[str, Path], *, array: bool = True) -> Path:
    spec = job("grid", tasks=3 if array else 1, array=array)
    profile = Profile(name="laptop", python=str(paths["fake"]), env=HOSTILE_ENV)
    text = render_script(spec, profile, job_dir=paths["job_dir"], project_dir=paths["project"])
    script = paths["job_dir"] / "job.sh"
    script.parent.mkdir(parents=True)
    script.write_text(text, encoding="utf-8")
    return script


def script_env(paths: dict[str, Path], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return {**env, "FAKE_OUT": str(paths["out"]), "HOSTNAME": "node-01.example", **extra}


def read_status(paths: dict[str, Path], task: int) -> dict:
    status = json.loads((paths["job_dir"] / "status" / f"{task}.json").read_text())
    assert tuple(status) == STATUS_KEYS  # job.sh writes the schema's keys, in its order
    return status


def run_bash(script: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def test_array_task_success(project: dict[str, Path]) -> None:
    script = write_script(project)
    result = run_bash(script, script_env(project, SLURM_ARRAY_TASK_ID="2", SLURM_JOB_ID="77",
                                         SLURM_ARRAY_JOB_ID="75"))
    assert result.returncode == 0, result.stderr
    argv = (project["out"] / "argv").read_text().splitlines()
    config = str(project["job_dir"] / "config.json")
    assert argv == ["-m", "lyricgen", "clean", "--config", config, "--task", "2"]
    assert (project["out"] / "cwd").read_text().strip() == str(project["project"])
    for name, value in HOSTILE_ENV.items():
        assert (project["out"] / f"env.{name}").read_text() == value
    assert not list(project["project"].glob("pwned*"))
    status = read_status(project, 2)
    assert status["state"] == "COMPLETED" and status["exit_code"] == 0
    assert (status["task"], status["slurm_job_id"], status["slurm_array_job_id"]) == (2, 77, 75)
    assert status["host"] == "node-01.example" and status["signal"] is None
    assert status["finished"] >= status["started"] > 0
    assert sorted(p.name for p in (project["job_dir"] / "status").iterdir()) == ["2.json"]


def test_failure_is_recorded_with_exit_code(project: dict[str, Path]) -> None:
    script = write_script(project)
    env = script_env(project, FAKE_EXIT="3", HOSTNAME='bad"host', SLURM_JOB_ID="12;x")
    result = run_bash(script, env)
    assert result.returncode == 3
    status = read_status(project, 0)
    assert (status["state"], status["exit_code"], status["task"]) == ("FAILED", 3, 0)
    assert status["host"] is None and status["slurm_job_id"] is None


def test_single_job_always_runs_task_zero(project: dict[str, Path]) -> None:
    script = write_script(project, array=False)
    assert run_bash(script, script_env(project, SLURM_ARRAY_TASK_ID="5")).returncode == 0
    assert (project["out"] / "argv").read_text().splitlines()[-2:] == ["--task", "0"]
    assert read_status(project, 0)["state"] == "COMPLETED"


def test_bad_task_id_stops_before_anything_runs(project: dict[str, Path]) -> None:
    script = write_script(project)
    result = run_bash(script, script_env(project, SLURM_ARRAY_TASK_ID="1; rm -rf x"))
    assert result.returncode == 2
    assert "SLURM_ARRAY_TASK_ID must be a task number" in result.stderr
    assert not (project["out"] / "argv").exists()
    assert not (project["job_dir"] / "status").exists()


def test_sigterm_stops_the_task_and_records_cancelled(project: dict[str, Path]) -> None:
    script = write_script(project)
    env = script_env(project, SLURM_ARRAY_TASK_ID="1", FAKE_SLEEP="120")
    proc = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    pid_file = project["out"] / "pid"
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline, "the fake python never started"
        time.sleep(0.05)
    assert read_status(project, 1)["state"] == "RUNNING"
    child = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    status = read_status(project, 1)
    assert (status["state"], status["signal"], status["exit_code"]) == ("CANCELLED", "TERM", 143)
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)



FAKE_APPTAINER = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$FAKE_OUT/argv"
env | grep '^APPTAINERENV_' | sort > "$FAKE_OUT/forwarded"
"""


def test_apptainer_forwards_set_variables_by_name(tmp_path: Path) -> None:
    bin_dir, out, project_dir = tmp_path / "bin", tmp_path / "out", tmp_path / "proj"
    for folder in (bin_dir, out, project_dir):
        folder.mkdir()
    (bin_dir / "apptainer").write_text(FAKE_APPTAINER, encoding="utf-8")
    (bin_dir / "apptainer").chmod(0o755)
    job_dir = tmp_path / "runs/r1/gen"
    job_dir.mkdir(parents=True)
    profile = Profile(name="cluster", runtime="apptainer", image="/images/l.sif",
                      env={"TOKENIZERS_PARALLELISM": "false"},
                      env_passthrough=("GENIUS_ACCESS_TOKEN", "HF_TOKEN"))
    script = job_dir / "job.sh"
    script.write_text(render_script(job("gen"), profile, job_dir=job_dir,
                                    project_dir=project_dir), encoding="utf-8")
    dropped = {*BASE_CONTAINER_ENV, "HF_TOKEN"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", FAKE_OUT=str(out), SLURM_JOB_ID="9",
               GENIUS_ACCESS_TOKEN="tok en'$x", NOT_LISTED="nope")
    result = run_bash(script, env)
    assert result.returncode == 0, result.stderr
    assert "tok en'$x" not in script.read_text()
    assert (out / "forwarded").read_text().splitlines() == [
        "APPTAINERENV_GENIUS_ACCESS_TOKEN=tok en'$x",
        f"APPTAINERENV_LYRICGEN_GPU_PEAK_FILE={job_dir}/status/.gpu-peak.0",
        "APPTAINERENV_PYTHONUNBUFFERED=1",
        "APPTAINERENV_SLURM_JOB_ID=9",
        "APPTAINERENV_TOKENIZERS_PARALLELISM=false",
    ]
    argv = (out / "argv").read_text().splitlines()
    assert argv[:3] == ["exec", "--cleanenv", "--pwd"]
    assert argv[-9:] == ["/images/l.sif", "python3", "-m", "lyricgen", "clean", "--config",
                         str(job_dir / "config.json"), "--task", "0"]
    assert json.loads((job_dir / "status/0.json").read_text())["state"] == "COMPLETED"


# --- distributed launch, run with bash and fake launchers -----------------------------------

def ddp_script(paths: dict[str, Path], executor: str, nodes: int = 1, **profile: object) -> Path:
    """job.sh of a 2-process-per-node finetune whose python is the fake one."""
    spec = job("finetune", kind="finetune-llama",
               resources=Resources(cpus=4, nodes=nodes, processes_per_node=2))
    profile = Profile(name="p", executor=executor, python=str(paths["fake"]), **profile)
    text = render_script(spec, profile, job_dir=paths["job_dir"], project_dir=paths["project"])
    script = paths["job_dir"] / "job.sh"
    script.parent.mkdir(parents=True)
    script.write_text(text, encoding="utf-8")
    return script


def test_single_node_script_runs_torchrun_with_the_cpus_shared(project: dict[str, Path]) -> None:
    result = run_bash(ddp_script(project, "local"), script_env(project))
    assert result.returncode == 0, result.stderr
    assert (project["out"] / "argv").read_text().splitlines() == [
        "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2",
        "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1", "--shutdown-timeout=300",
        "--standalone", "-m", "lyricgen", "finetune-llama", "--config",
        str(project["job_dir"] / "config.json"), "--task", "0"]
    assert (project["out"] / "env.OMP_NUM_THREADS").read_text() == "2"
    assert read_status(project, 0)["state"] == "COMPLETED"
