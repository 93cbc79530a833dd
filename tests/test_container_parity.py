"""Host == container: the demo-style pipeline (clean -> train-rnn -> generate-grid -> report)
run by `jobctl run` with the host venv and inside the CPU image (runtime apptainer) gives the
same outputs; submitted to the local SLURM with the apptainer runtime it completes, with the
same outputs again.

"The same" is BITWISE, no tolerance: every checkpoint tensor (weights, AdamW moments, RNG
state, the bf16 hidden state) is torch.equal, every generated text, metric and report byte
equal. Host and image run the very same torch wheel (2.13.0+cpu), on this CPU, with one
thread (resources.cpus: 1 -> SLURM_CPUS_PER_TASK=1 -> torch.set_num_threads(1)) and the same
seeds; train-rnn's bf16 autocast (precision auto, on a CPU with avx512_bf16) runs the same
oneDNN kernels. The Python patch release differs (the host's 3.11.x, Debian 12's 3.11.2);
no output depends on it, and the provenance shows which interpreter ran each side.

Left out of the comparison, each for its reason:
- WALL_CLOCK keys and columns (elapsed, seconds, tokens/s): measurements of time;
- the run directory's absolute path, different for every run: replaced by <RUN>, and the
  generate-grid `fingerprint`, a hash of params that hold such paths;
- provenance.json except its params and package versions: it records where and when;
- PNG plots: matplotlib drawings of the numbers compared above.

The pipeline is small (an LSTM of 64 units, 40 optimizer steps: a step budget, so both sides
stop at the same point; 8 generated cells in 2 array tasks) and uses its own manifest.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
JOBCTL = Path(sys.executable).parent / "jobctl"
CORPUS = REPO / "lyricgen" / "data" / "sample" / "songs.jsonl"
RUN_TIMEOUT_S = 900
WALL_CLOCK = frozenset({"elapsed", "elapsed_s", "seconds", "tokens_per_s",
                        "tokens_per_s_median"})
RUN_SPECIFIC = frozenset({"fingerprint"})

MANIFEST = f"""\
name: parity
jobs:
  - kind: clean
    name: clean
    resources: {{cpus: 1, mem: 2G, time: "00:10:00"}}
    params: {{input: {CORPUS}, valid_fraction: 0.1, test_fraction: 0.05}}
  - kind: train-rnn
    name: train
    needs: [clean]
    resources: {{cpus: 1, mem: 2G, time: "00:10:00"}}
    params:
      data: "{{{{ needs.clean.outputs.train }}}}"
      valid_data: "{{{{ needs.clean.outputs.valid }}}}"
      arch: lstm
      hidden_size: 64
      embedding_dim: 16
      batch_size: 8
      seq_len: 32
      max_steps: 40
      eval_every: 20
      checkpoint_every: 20
      log_every: 10
      warmup_steps: 5
      device: cpu
  - kind: generate-grid
    name: generate
    needs: [train]
    resources: {{cpus: 1, mem: 2G, time: "00:10:00"}}
    params:
      model: "{{{{ needs.train.outputs.checkpoint }}}}"
      prompts: ["Bajo la luna", "Mi corazón"]
      temperatures: [0.7, 1.0]
      samples: 2
      max_tokens: 60
      shards: 2
      batch_size: 4
      device: cpu
  - kind: report
    name: report
    needs: [generate]
    resources: {{cpus: 1, mem: 2G, time: "00:05:00"}}
    params: {{grid: "{{{{ needs.generate.outputs.dir }}}}"}}
"""


def write_setup(folder: Path, executor: str, image: Path | None) -> tuple[Path, Path]:
    """(manifest, profile) in `folder`; the apptainer runtime when `image` is given."""
    folder.mkdir(parents=True)
    manifest = folder / "parity.yaml"
    manifest.write_text(MANIFEST, encoding="utf-8")
    lines = [f"executor: {executor}", f"runs_dir: {folder / 'runs'}"]
    if image is not None:
        lines += ["runtime: apptainer", f"image: {image}", f"cache_dir: {folder / 'cache'}"]
    profile = folder / "profile.yaml"
    profile.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest, profile


def jobctl(*args: str, timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """jobctl from the repository root: the project directory that apptainer binds and
    runs in (--pwd), so the image runs this checkout's lyricgen."""
    return subprocess.run([str(JOBCTL), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)


def the_run(folder: Path) -> Path:
    """The one run directory under folder/runs (beside jobctl's cache files)."""
    [run] = [path for path in (folder / "runs").iterdir()
             if path.is_dir() and not path.name.startswith(".")]  # not .claims/
    return run


def run_locally(folder: Path, image: Path | None) -> Path:
    """Run the pipeline with the local executor; returns its run directory."""
    manifest, profile = write_setup(folder, "local", image)
    result = jobctl("run", "--profile", str(profile), str(manifest))
    assert result.returncode == 0, result.stdout + result.stderr
    return the_run(folder)


@pytest.fixture(scope="module")
def host_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_locally(tmp_path_factory.mktemp("parity") / "host", None)


def normalize(value: Any, run: Path) -> Any:
    """`value` without WALL_CLOCK / RUN_SPECIFIC keys, with the run dir written <RUN>."""
    if isinstance(value, dict):
        return {key: normalize(item, run) for key, item in value.items()
                if key not in WALL_CLOCK | RUN_SPECIFIC}
    if isinstance(value, list | tuple):
        return [normalize(item, run) for item in value]
    if isinstance(value, str):
        return value.replace(str(run), "<RUN>")
    return value


def load(path: Path, run: Path) -> Any:
    """An output file as comparable data (module docstring)."""
    if path.suffix == ".pt":
        data = torch.load(path, map_location="cpu", weights_only=True)
    elif path.name == "provenance.json":
        record = json.loads(path.read_text(encoding="utf-8"))
        versions = {k: v for k, v in record["versions"].items() if k != "python"}
        data = {"params": record["params"], "versions": versions}
    elif path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
    elif path.suffix == ".jsonl":
        data = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    elif path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            data = list(csv.DictReader(handle))
    else:
        data = path.read_text(encoding="utf-8")
    return normalize(data, run)


def differences(a: Any, b: Any, where: str) -> list[str]:
    """Every place where `a` and `b` differ; tensors must be equal bit for bit."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        same = (torch.is_tensor(a) and torch.is_tensor(b) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
        return [] if same else [f"{where}: tensors differ"]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(a.keys() ^ b.keys())} in one only"]
        return [d for key in a for d in differences(a[key], b[key], f"{where}.{key}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {str(a)[:80]!r} != {str(b)[:80]!r}"]


def outputs(run: Path) -> dict[str, Path]:
    """Every output file of the run but the plots, by its path in the run."""
    return {str(path.relative_to(run)): path for path in sorted(run.glob("*/out/**/*"))
            if path.is_file() and path.suffix != ".png"}


def assert_same_outputs(a: Path, b: Path) -> None:
    files_a, files_b = outputs(a), outputs(b)
    assert files_a.keys() == files_b.keys()
    assert "train/out/checkpoint/last.pt" in files_a and "report/out/report.html" in files_a
    found = [d for name in files_a
             for d in differences(load(files_a[name], a), load(files_b[name], b), name)]
    assert found == [], "\n".join(found)


def interpreter(run: Path) -> str:
    """The Python version that ran the train job (from its provenance)."""
    provenance = json.loads((run / "train/out/provenance.json").read_text(encoding="utf-8"))
    return provenance["versions"]["python"]


def assert_ran_in_image(run: Path, image: Path) -> None:
    script = (run / "train" / "job.sh").read_text(encoding="utf-8")
    assert "apptainer" in script and "--cleanenv" in script and str(image) in script
    labels = subprocess.run(["apptainer", "inspect", "--labels", "--json", str(image)],
                            capture_output=True, text=True, timeout=120, check=True).stdout
    python = json.loads(labels)["data"]["attributes"]["labels"]["org.lyricgen.python"]
    assert interpreter(run) == python


@pytest.mark.slow
def test_host_and_container_runs_give_the_same_outputs(host_run: Path, cpu_image: Path,
                                                       tmp_path: Path) -> None:
    container_run = run_locally(tmp_path / "container", cpu_image)
    assert_ran_in_image(container_run, cpu_image)
    assert interpreter(host_run) == ".".join(map(str, sys.version_info[:3]))
    metrics = json.loads((host_run / "train/out/metrics.json").read_text(encoding="utf-8"))
    assert metrics["stop_reason"] == "max_steps" and metrics["final"]["step"] == 40
    assert metrics["threads"] == 1
    assert_same_outputs(host_run, container_run)


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_with_the_apptainer_runtime_completes_with_the_same_outputs(
        host_run: Path, cpu_image: Path, slurm_cluster: object, tmp_path: Path) -> None:
    manifest, profile = write_setup(tmp_path / "slurm", "slurm", cpu_image)
    submitted = jobctl("submit", "--profile", str(profile), str(manifest))
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:  # poll the run's state (a wait, not a timing check)
        status = jobctl("status", "--json", "--runs-dir", str(tmp_path / "slurm" / "runs"),
                        timeout=120)
        report = json.loads(status.stdout)
        states = {job["name"]: job["state"] for job in report["jobs"]}
        if not any(state in ("PENDING", "RUNNING") for state in states.values()):
            break
        assert time.monotonic() < deadline, f"still waiting: {states}"
        time.sleep(1)
    assert set(states.values()) == {"COMPLETED"}, states
    slurm_run = the_run(tmp_path / "slurm")
    provenance = json.loads((slurm_run / "train/out/provenance.json").read_text("utf-8"))
    assert str(provenance["slurm_job_id"]).isdigit()  # sbatch's id, not the local executor's
    assert_ran_in_image(slurm_run, cpu_image)
    assert_same_outputs(host_run, slurm_run)


def test_the_comparison_catches_one_bit_and_ignores_only_what_it_says(tmp_path: Path) -> None:
    """The checks above can fail: one ulp in a tensor, a dtype, a missing key, a text."""
    run = tmp_path / "run"
    weights = torch.linspace(0, 1, 5)
    nudged = weights.clone()
    nudged[2] = torch.nextafter(nudged[2], torch.tensor(2.0))
    assert differences(weights, weights.clone(), "w") == []
    assert differences(weights, nudged, "w") == ["w: tensors differ"]
    assert differences(weights, weights.bfloat16(), "w") == ["w: tensors differ"]
    assert differences({"a": 1}, {"b": 1}, "m") == ["m: keys ['a', 'b'] in one only"]
    assert differences(["la luna"], ["la lune"], "t") == ["t[0]: 'la luna' != 'la lune'"]
    record = {"elapsed_s": 5.1, "fingerprint": "ab12", "val_bpc": 4.4,
              "data": f"{run}/clean/out/train.txt", "rows": [{"tokens_per_s": 9, "step": 10}]}
    assert normalize(record, run) == {"val_bpc": 4.4, "data": "<RUN>/clean/out/train.txt",
                                      "rows": [{"step": 10}]}
