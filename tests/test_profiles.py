"""jobs.profiles: the shipped profiles, the search order and strict validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.errors import InputError
from jobs.profiles import REPO_PROFILES, default_search_dirs, load_profile

REPO = Path(__file__).resolve().parents[1]


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_repo_profiles_folder_is_the_checkouts() -> None:
    assert REPO_PROFILES == REPO / "manifests/profiles"
    assert default_search_dirs()[-1] == REPO_PROFILES


def test_laptop_profile() -> None:
    profile = load_profile("laptop", search_dirs=[REPO_PROFILES])
    assert (profile.name, profile.executor, profile.runtime) == ("laptop", "local", "host")
    assert profile.image is None
    assert profile.source.path == str(REPO_PROFILES / "laptop.yaml")


def test_cluster_profile() -> None:
    profile = load_profile("cluster", search_dirs=[REPO_PROFILES])
    assert (profile.executor, profile.runtime) == ("slurm", "apptainer")
    assert profile.image == "images/lyricgen.sif"  # kept relative, as written
    assert (profile.partition, profile.gpu_gres) == ("gpu", "gpu:titanrtx")
    assert {"HF_HOME", "GENIUS_ACCESS_TOKEN", "CUDA_VISIBLE_DEVICES"} <= set(
        profile.env_passthrough)
    assert profile.modules == () and profile.sbatch == {}
    assert "GENIUS_ACCESS_TOKEN" not in profile.env


def test_search_order_prefers_the_working_directory(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_profile("laptop").source.path == str(REPO_PROFILES / "laptop.yaml")
    _write(tmp_path / "manifests/profiles", "laptop.yaml", "executor: slurm\n")
    assert load_profile("laptop").executor == "slurm"
    _write(tmp_path / "profiles", "laptop.yaml", "runtime: apptainer\nimage: x.sif\n")
    profile = load_profile("laptop")
    assert (profile.runtime, profile.executor) == ("apptainer", "local")
    assert profile.source.path == "profiles/laptop.yaml"


def test_path_to_a_yaml_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "mine.yml", "executor: slurm\nsbatch: {account: lab, qos: 3}\n")
    profile = load_profile(str(path))
    assert (profile.name, profile.executor, profile.sbatch) == (
        "mine", "slurm", {"account": "lab", "qos": "3"})


def test_unknown_profile_name_suggests_a_close_one() -> None:
    with pytest.raises(InputError) as info:
        load_profile("cluter", search_dirs=[REPO_PROFILES])
    text = str(info.value)
    assert text.startswith("profile: cluter: no such profile")
    assert "did you mean 'cluster'?" in text and "\n" not in text


def test_missing_profile_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read file"):
        load_profile(str(tmp_path / "gone.yaml"))


@pytest.mark.parametrize("text, line, key, fragment", [
    ("executor: slurm\nexeuctor: local\n", 2, "exeuctor", "did you mean 'executor'?"),
    ("executor: pbs\n", 1, "executor", "expected one of local, slurm, got 'pbs'"),
    ("runtime: docker\n", 1, "runtime", "expected one of host, apptainer"),
    ("executor: slurm\nruntime: apptainer\n", 2, "image", "runtime apptainer needs image:"),
    ("runtime: apptainer\nimage: /scratch/$USER/x.sif\n", 2, "image", "not shell-expanded"),
    ("runs_dir: ~/runs\n", 1, "runs_dir", "not shell-expanded"),
    ("binds:\n  - /a:/b\n  - /c,/d\n", 3, "binds[1]", "one bind"),
    ("binds: ['/a:/b:rx']\n", 1, "binds[0]", "one bind"),
    ("env:\n  HF_TOKEN: abc\n", 2, "env.HF_TOKEN", "secrets never go in a profile"),
    ("env:\n  BAD-NAME: x\n", 2, "env.BAD-NAME", "expected an environment variable name"),
    ("env:\n  HOME_DIR: $SCRATCH\n", 2, "env.HOME_DIR", "not shell-expanded"),
    ("env_passthrough: [HF_HOME, 'HF HOME']\n", 1, "env_passthrough[1]",
     "expected an environment variable name, got 'HF HOME'"),
    ("modules:\n  - 'cuda; rm -rf /'\n", 2, "modules[0]", "expected a module name"),
    ("sbatch:\n  account: lab\n  output: x.log\n", 3, "sbatch.output", "jobctl sets --output"),
    ("sbatch:\n  comment: \"a\\nb\"\n", 2, "sbatch.comment", "control characters"),
    ("gpu_gres: gpu titan\n", 1, "gpu_gres", "expected a gres name"),
    ("partition: 3\n", 1, "partition", "expected a partition name, got 3"),
    ("network_interface: '-x'\n", 1, "network_interface", "expected a network interface name"),
    ("network_interface: eth 0\n", 1, "network_interface", "expected a network interface"),
    ("network_interface: abcdefghijklmnop\n", 1, "network_interface", "interface name like"),
    ("python: ''\n", 1, "python", "expected an interpreter"),
    ("executor: slurm\nexecutor: local\n", 2, "", "duplicate key 'executor'"),
    ("image: !!python/object/apply:os.getcwd []\n", 1, "", "is not allowed"),
    ("- executor\n", 1, "", "expected a mapping of profile keys"),
])
def test_bad_profiles_are_one_line_errors(tmp_path: Path, text: str, line: int, key: str,
                                          fragment: str) -> None:
    path = _write(tmp_path, "bad.yaml", text)
    with pytest.raises(InputError) as info:
        load_profile(str(path))
    err = info.value
    assert str(err).startswith(f"{path}:{line}: "), str(err)
    assert err.key == key and fragment in err.message, str(err)
    assert "\n" not in str(err)


def test_valid_values_are_kept_as_written(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.yaml", "runtime: apptainer\nimage: img/x.sif\n"
                                      "binds: [data, '/scratch/x:/data:ro']\n"
                                      "env: {OMP_NUM_THREADS: 4, LANG: C.UTF-8}\n"
                                      "modules: [apptainer/1.3]\ncache_dir: .cache/hf\n"
                                      "partition: gpu,gpu-long\nnetwork_interface: ib0.8001\n")
    profile = load_profile(str(path))
    assert profile.network_interface == "ib0.8001"
    assert profile.binds == ("data", "/scratch/x:/data:ro")
    assert profile.env == {"OMP_NUM_THREADS": "4", "LANG": "C.UTF-8"}
    assert (profile.image, profile.cache_dir) == ("img/x.sif", ".cache/hf")
    assert profile.modules == ("apptainer/1.3",) and profile.partition == "gpu,gpu-long"


@pytest.mark.parametrize(("name", "executor"), [("container-cpu", "local"),
                                                ("container-cpu-slurm", "slurm")])
def test_container_cpu_profiles_name_the_cpu_image_and_its_def(name: str, executor: str) -> None:
    from jobs.image import CPU_DEF, CPU_IMAGE

    profile = load_profile(name, search_dirs=[REPO_PROFILES])
    assert (profile.executor, profile.runtime) == (executor, "apptainer")
    assert Path(profile.image or "") == CPU_IMAGE
    assert REPO / (profile.image_def or "") == CPU_DEF
    assert profile.cache_dir  # bound as the writable cache (the image is read-only)
