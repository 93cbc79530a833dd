"""jobs.doctor: driver/CUDA table, one verdict line per check, on this machine as it is and
with stand-in apptainer / nvidia-smi / sbatch / squeue / scontrol on PATH."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobs import doctor
from jobs.doctor import CHECKS, Doctor, describe_gpus, driver_verdict, parse_gpus, run_checks
from jobs.spec import Profile

LINE = re.compile(r"^\[(ok|warn|FAIL|skip)\] ([a-z-]+): \S.*$")
NAMES = [name for name, _ in CHECKS]


def check_lines(output: str) -> list[str]:
    """The verdict lines, after checking that there is exactly one per check, in order."""
    lines = [line for line in output.splitlines() if line.startswith("[")]
    assert [LINE.match(line).group(2) for line in lines] == NAMES, output  # type: ignore[union-attr]
    assert "Traceback" not in output
    return lines


def verdicts(lines: list[str]) -> dict[str, str]:
    return {LINE.match(line).group(2): line for line in lines}  # type: ignore[union-attr]


@pytest.mark.parametrize(("driver", "cuda", "status"), [
    ("570.26", "12.8", "ok"), ("580.159.04", "12.8", "ok"), ("580.65.06", "13.0", "ok"),
    ("550.54.14", "12.8", "warn"), ("525.60.13", "12.4", "warn"), ("525.60.12", "12.1", "FAIL"),
    ("470.82.01", "12.8", "FAIL"), ("560.35.03", "13.0", "FAIL"), ("535.104.05", "12.7", "warn"),
    ("garbage", "12.8", "warn"), ("570.26", "14.0", "warn"), ("570.26", "12", "warn")])
def test_driver_verdict(driver: str, cuda: str, status: str) -> None:
    assert driver_verdict(driver, cuda)[0] == status


def test_driver_verdict_messages() -> None:
    assert driver_verdict("550.54.14", "12.8") == (
        "warn", "driver 550.54.14 runs CUDA 12.8 only through minor-version compatibility "
        "(no PTX JIT for newer kernels; full support from 570.26)",
        "ask the admins for a newer NVIDIA driver (>= 570.26)")
    status, message, fix = driver_verdict("470.82.01", "12.8.1")
    assert message == ("driver 470.82.01 is too old for CUDA 12.8 (needs >= 570.26, or >= "
                       "525.60.13 with minor-version compatibility)")
    assert fix and "older CUDA" in fix


def test_parse_and_describe_gpus() -> None:
    text = "NVIDIA TITAN RTX, 550.54.14\nNVIDIA TITAN RTX, 550.54.14\n\nbad line\n"
    gpus = parse_gpus(text)
    assert gpus == [("NVIDIA TITAN RTX", "550.54.14")] * 2
    assert describe_gpus(gpus) == "2 GPUs: NVIDIA TITAN RTX x2, driver 550.54.14"
    assert describe_gpus([("A, B", "1.2")]) == "1 GPU: A, B, driver 1.2"


# --- this machine, as it is --------------------------------------------------------------

def test_laptop_profile_on_this_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GENIUS_ACCESS_TOKEN", raising=False)
    result = CliRunner().invoke(doctor.doctor_command, ["--profile", "laptop"])
    lines = verdicts(check_lines(result.output))
    for name in ("slurm", "apptainer", "image", "image-test"):
        assert lines[name].startswith(f"[skip] {name}: "), lines[name]
    assert lines["genius-token"] == (
        "[warn] genius-token: GENIUS_ACCESS_TOKEN is not set (only the scrape step needs it) "
        "(fix: export GENIUS_ACCESS_TOKEN=<your token> in the shell that runs jobctl)")
    assert lines["runs-dir"] == f"[ok] runs-dir: {tmp_path}/runs will be created (in writable " \
        f"{tmp_path})"
    assert result.exit_code == (1 if any(v.startswith("[FAIL]") for v in lines.values()) else 0)
    assert result.output.splitlines()[-1].startswith("jobctl doctor: ")


def test_cluster_profile_on_this_machine_fails_without_apptainer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no apptainer, whatever is installed
    result = CliRunner().invoke(doctor.doctor_command, ["--profile", "cluster"])
    lines = verdicts(check_lines(result.output))
    assert result.exit_code == 1
    assert lines["apptainer"] == (
        "[FAIL] apptainer: apptainer not found on PATH (fix: install Apptainer >= 1.2 (or load "
        "its module), or use the host runtime (profile laptop))")
    assert lines["image"] == (f"[FAIL] image: {tmp_path}/images/lyricgen.sif does not exist "
                              "(fix: jobctl image build --profile cluster)")
    assert lines["image-test"] == "[skip] image-test: needs apptainer and the image (see above)"
    assert lines["cache-dir"].startswith(f"[FAIL] cache-dir: {tmp_path}/.cache/huggingface does "
                                         "not exist, and apptainer cannot bind")


def test_unknown_profile_is_one_line_exit_2(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(doctor.doctor_command, ["--profile", "clustr"])
    assert result.exit_code == 2
    assert len(result.output.splitlines()) == 1
    assert result.output.startswith("jobctl: error: profile: clustr: no such profile")


# --- stand-in binaries ---------------------------------------------------------------------

FAKES = {
    "nvidia-smi": """\
if [ -n "$IN_CONTAINER" ] && [ -n "$FAKE_NO_GPU_INSIDE" ]; then
  echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver" >&2
  exit 9
fi
printf 'NVIDIA TITAN RTX, %s\\nNVIDIA TITAN RTX, %s\\n' "$FAKE_DRIVER" "$FAKE_DRIVER"
""",
    "apptainer": """\
echo "$*" >> "$FAKE_LOG"
case "$1" in
  version) echo 1.3.4 ;;
  inspect)
    printf '{"data": {"attributes": {"labels": {"org.lyricgen.version": "0.1.0", '
    printf '"org.lyricgen.git-commit": "0123456789abcdef0123", "org.lyricgen.cuda": "%s", ' \\
      "$FAKE_CUDA"
    printf '"org.lyricgen.torch": "%s", ' "$FAKE_TORCH"
    printf '"org.lyricgen.build-date": "2026-01-02T03:04:05Z"}}}}\\n' ;;
  test)
    echo "lyricgen 0.1.0 | torch 2.13.0+cu128 (CUDA 12.8)"
    if [ -n "$FAKE_TEST_FAIL" ]; then echo "FAIL: 4-bit NF4 matmul is wrong" >&2; exit 1; fi
    echo "ok: 4-bit NF4 matmul on NVIDIA TITAN RTX (sm_75), max abs error 1.2e-03" ;;
  exec)  # run the command after the image on the host, as the container would
    shift
    while [ "$#" -gt 0 ]; do
      case "$1" in *.sif) shift; break ;; esac
      shift
    done
    IN_CONTAINER=1 exec "$@" ;;
esac
""",
    "scontrol": """\
if [ -n "$FAKE_SLURM_DOWN" ]; then
  echo "Slurmctld(primary) at ctl is DOWN"; exit 1
fi
echo "Slurmctld(primary) at ctl is UP"
""",
    "sbatch": "exit 0\n",
    "squeue": "exit 0\n",
}


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stand-ins first on PATH, a project dir with an image file and a cache dir; returns
    the apptainer call log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKES.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    project = tmp_path / "project"
    (project / "images").mkdir(parents=True)
    (project / "images" / "lyricgen.sif").write_bytes(b"\0")
    (project / "cache").mkdir()
    log = tmp_path / "apptainer.log"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("FAKE_DRIVER", "570.124.06")
    monkeypatch.setenv("FAKE_CUDA", "12.8")
    monkeypatch.setenv("FAKE_TORCH", "2.13.0+cu128")
    monkeypatch.setenv("GENIUS_ACCESS_TOKEN", "s3cret-token-value")
    monkeypatch.chdir(project)
    return log


def cluster(**changes: object) -> Profile:
    fields: dict[str, object] = {
        "executor": "slurm", "runtime": "apptainer", "image": "images/lyricgen.sif",
        "cache_dir": "cache", "runs_dir": "runs", "env_passthrough": ("GENIUS_ACCESS_TOKEN",)}
    return Profile(name="cluster", **{**fields, **changes})  # type: ignore[arg-type]


def run(profile: Profile) -> dict[str, str]:
    lines: list[str] = []
    run_checks(Doctor(profile, Path.cwd()), echo=lines.append)
    return verdicts(check_lines("\n".join(lines)))


def test_everything_ok_with_a_recent_driver(fakes: Path) -> None:
    lines = run(cluster())
    assert all(line.startswith("[ok] ") for line in lines.values()), lines
    assert lines["slurm"] == "[ok] slurm: sbatch, squeue found; Slurmctld(primary) at ctl is UP"
    assert lines["image"] == ("[ok] image: " + str(Path.cwd() / "images/lyricgen.sif") +
                              ": lyricgen 0.1.0, commit 0123456789ab, built "
                              "2026-01-02T03:04:05Z, CUDA 12.8")
    assert lines["image-test"] == ("[ok] image-test: `apptainer test --nv` passed: ok: 4-bit NF4 "
                                   "matmul on NVIDIA TITAN RTX (sm_75), max abs error 1.2e-03")
    assert lines["gpu"] == ("[ok] gpu: inside the image with --nv: 2 GPUs: NVIDIA TITAN RTX x2, "
                            "driver 570.124.06")
    assert lines["cuda-driver"] == ("[ok] cuda-driver: driver 570.124.06 supports CUDA 12.8 "
                                    "(needs >= 570.26) [the image's torch: CUDA 12.8]")
    cache = Path.cwd() / "cache"
    assert lines["cache-dir"] == f"[ok] cache-dir: {cache} is writable on the host and inside " \
        "the image"
    assert lines["genius-token"] == ("[ok] genius-token: GENIUS_ACCESS_TOKEN is set (value not "
                                     "shown)")
    calls = fakes.read_text()
    assert f"exec --cleanenv --bind {cache}:{cache} " in calls
    assert "exec --nv --cleanenv " in calls and "test --nv " in calls


@pytest.mark.parametrize(("driver", "status"), [
    ("570.124.06", "ok"), ("550.54.14", "warn"), ("470.82.01", "FAIL")])
def test_driver_against_image_cuda_through_the_cli(fakes: Path, monkeypatch: pytest.MonkeyPatch,
                                                   driver: str, status: str) -> None:
    monkeypatch.setenv("FAKE_DRIVER", driver)
    profile = Path.cwd() / "fake.yaml"
    profile.write_text("executor: slurm\nruntime: apptainer\nimage: images/lyricgen.sif\n"
                       "cache_dir: cache\nenv_passthrough: [GENIUS_ACCESS_TOKEN]\n")
    result = CliRunner().invoke(doctor.doctor_command, ["--profile", str(profile)])
    lines = verdicts(check_lines(result.output))
    assert lines["cuda-driver"].startswith(f"[{status}] cuda-driver: driver {driver} ")
    assert result.exit_code == (1 if status == "FAIL" else 0), result.output
    assert "s3cret-token-value" not in result.output


def test_failures_are_reported_one_line_each(fakes: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SLURM_DOWN", "1")
    monkeypatch.setenv("FAKE_TEST_FAIL", "1")
    monkeypatch.setenv("FAKE_NO_GPU_INSIDE", "1")
    monkeypatch.setenv("GENIUS_ACCESS_TOKEN", "")
    lines = run(cluster(env_passthrough=()))
    assert lines["slurm"].startswith("[FAIL] slurm: scontrol ping: Slurmctld(primary) at ctl is "
                                     "DOWN (fix: ")
    assert lines["image-test"].startswith("[FAIL] image-test: `apptainer test --nv` failed: "
                                          "FAIL: 4-bit NF4 matmul is wrong (fix: run ")
    assert lines["gpu"].startswith("[FAIL] gpu: no GPU inside the image with --nv: NVIDIA-SMI "
                                   "has failed")
    assert lines["genius-token"].startswith("[warn] genius-token: GENIUS_ACCESS_TOKEN is set but "
                                            "empty")


def test_a_cpu_image_on_a_gpu_node_is_a_warning(fakes: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_CUDA", "none")
    monkeypatch.setenv("FAKE_TORCH", "2.13.0+cpu")
    lines = run(cluster())
    assert lines["image"].endswith(", built 2026-01-02T03:04:05Z, CPU torch 2.13.0+cpu")
    assert lines["cuda-driver"] == (
        "[warn] cuda-driver: 2 GPUs: NVIDIA TITAN RTX x2, driver 570.124.06, but the image's "
        "torch is a CPU build: jobs run on the CPU (fix: use a profile with the GPU image (e.g. "
        "cluster) for GPU jobs)")


def test_token_outside_env_passthrough_and_unbindable_cache(fakes: Path, tmp_path: Path) -> None:
    lines = run(cluster(env_passthrough=(), cache_dir=str(tmp_path / "a,b")))
    assert lines["genius-token"] == (
        "[warn] genius-token: GENIUS_ACCESS_TOKEN is set, but --cleanenv keeps it out of the "
        "container (fix: add GENIUS_ACCESS_TOKEN to the profile's env_passthrough)")
    assert lines["cache-dir"].startswith(f"[FAIL] cache-dir: {tmp_path}/a,b cannot be bound")
    assert "s3cret" not in "".join(lines.values())


def test_missing_tools_and_no_gpu_on_the_node(fakes: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("sbatch", "nvidia-smi", "apptainer"):
        (tmp_path / "bin" / name).unlink()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # these checks run no shell tools
    lines = run(cluster(cache_dir=None))
    assert lines["slurm"].startswith("[FAIL] slurm: sbatch not found on PATH")
    assert lines["apptainer"].startswith("[FAIL] apptainer: apptainer not found on PATH")
    assert lines["image"].startswith("[warn] image: ")
    assert lines["gpu"].startswith("[warn] gpu: no nvidia-smi on this node")
    assert lines["cuda-driver"].startswith("[skip] cuda-driver: ")
    assert lines["cache-dir"].startswith("[warn] cache-dir: no cache_dir: inside the image")


@pytest.mark.parametrize(("torch_cuda", "verdict"), [
    ("12.8", "[ok] cuda-driver: driver 570.124.06 supports CUDA 12.8 (needs >= 570.26) "
             "[{python}'s torch: CUDA 12.8]"),
    ("None", "[warn] cuda-driver: a GPU is here but {python}'s torch is a CPU build (fix: "
             "install a CUDA build of torch, or use the apptainer image)")])
def test_host_runtime_compares_the_driver_with_the_host_torch(
        fakes: Path, tmp_path: Path, torch_cuda: str, verdict: str) -> None:
    python = tmp_path / "bin" / "python-with-torch"
    python.write_text(f"#!/bin/sh\necho {torch_cuda}\n")  # stands in for `python -c ...`
    python.chmod(0o755)
    lines = run(Profile(name="laptop", cache_dir="cache", python=str(python)))
    assert lines["gpu"] == "[ok] gpu: host: 2 GPUs: NVIDIA TITAN RTX x2, driver 570.124.06"
    assert lines["cuda-driver"] == verdict.format(python=python)
    assert lines["cache-dir"] == f"[ok] cache-dir: {Path.cwd() / 'cache'} is writable"


def test_slow_commands_time_out_and_broken_checks_do_not_traceback(
        fakes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bin" / "scontrol").write_text("#!/bin/sh\nsleep 30\n")
    monkeypatch.setattr(doctor, "SLURM_TIMEOUT_S", 0.5)

    def broken(doc: Doctor) -> doctor.Outcome:
        raise RuntimeError("boom")

    monkeypatch.setattr(doctor, "CHECKS", [(name, broken if name == "disk" else func)
                                           for name, func in CHECKS])
    lines = run(cluster())
    assert lines["slurm"].startswith("[FAIL] slurm: scontrol ping: `scontrol ping` timed out "
                                     "after 0.5 s")
    assert lines["disk"] == "[FAIL] disk: the check itself failed: RuntimeError: boom"


def test_container_cpu_profile_with_the_real_image(cpu_image: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The real CPU image: doctor reads its labels, runs its %test and writes into the
    bound cache directory inside it."""
    monkeypatch.chdir(tmp_path)
    profile = tmp_path / "container-cpu.yaml"
    profile.write_text(f"runtime: apptainer\nimage: {cpu_image}\ncache_dir: cache\n")
    (tmp_path / "cache").mkdir()
    result = CliRunner().invoke(doctor.doctor_command, ["--profile", str(profile)])
    lines = verdicts(check_lines(result.output))
    assert lines["apptainer"].startswith("[ok] apptainer: apptainer 1.")
    assert lines["image"].startswith(f"[ok] image: {cpu_image}: lyricgen 0.1.0, commit ")
    assert lines["image"].endswith(", CPU torch 2.13.0+cpu")
    assert lines["image-test"].startswith("[ok] image-test: `apptainer test` passed: ok: "
                                          "lyricgen 0.1.0 | torch 2.13.0+cpu (CPU) |")
    assert lines["cache-dir"] == (f"[ok] cache-dir: {tmp_path}/cache is writable on the host "
                                  "and inside the image")
    if shutil.which("nvidia-smi") is None:
        assert lines["gpu"] == ("[skip] gpu: no NVIDIA GPU on this node, and the image's torch "
                                "is a CPU build")
    assert result.exit_code == 0, result.output
