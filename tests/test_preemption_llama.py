"""finetune-llama stopped mid-training through the real CLI (tiny random LLaMA from
tests/tiny_llama.py, real DISCO verse), then run again: SIGUSR1 (the time-limit warning job.sh
forwards) saves a checkpoint and exits 75; SIGKILL leaves only complete checkpoints; the
final rerun's losses and adapter equal an uninterrupted run's. And torchrun, started with the
options jobctl gives it, forwards SIGUSR1 to every worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_llama import build_tiny_llama, disco_texts

pytestmark = pytest.mark.slow
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
STEPS, SAVE_EVERY = 12, 3


@pytest.fixture(scope="module")
def config_for(tmp_path_factory):
    """config_for(job_dir) writes the job's config.json: 12 steps, checkpoints every 3."""
    tiny = build_tiny_llama(tmp_path_factory.getbasetemp())
    data = tmp_path_factory.mktemp("lyrics")
    for split, count in (("train", 48), ("valid", 6)):
        (data / f"{split}.jsonl").write_text("".join(
            json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in disco_texts(split, count)),
            encoding="utf-8")
    params = {"model_path": str(tiny), "data_path": str(data / "train.jsonl"),
              "valid_path": str(data / "valid.jsonl"), "max_steps": STEPS, "batch_size": 2,
              "grad_accum": 2, "block_size": 64, "lr": 1e-2, "dropout": 0.1, "lora_r": 8,
              "lora_alpha": 16, "eval_every": 4, "save_every": SAVE_EVERY,
              "keep_checkpoints": 10, "device": "cpu", "seed": 42}

    def write(job_dir: Path) -> Path:
        job_dir.mkdir(parents=True, exist_ok=True)
        config = {"schema": 1, "kind": "finetune-llama", "job": job_dir.name, "run_id": "t",
                  "job_dir": str(job_dir), "out_dir": str(job_dir / "out"),
                  "tasks": [{"index": 0, "params": params}]}
        path = job_dir / "config.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        return path

    return write


def command(config: Path) -> list[str]:
    return [sys.executable, "-m", "lyricgen", "finetune-llama", "--config", str(config)]


def run_to_end(config: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command(config), cwd=REPO, env=ENV, capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def interrupt(config: Path, sig: signal.Signals, after_step: int) -> tuple[int, str]:
    """Start training, send `sig` once the checkpoint of `after_step` exists; returns the
    exit code and stderr."""
    saved = config.parent / "out/checkpoints" / f"step-{after_step:08d}"
    log = config.parent / "stderr.txt"
    with log.open("w") as stderr:
        process = subprocess.Popen(command(config), cwd=REPO, env=ENV,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 300
        while not saved.exists() and process.poll() is None:
            assert time.monotonic() < deadline, f"no checkpoint {after_step} within 300 s"
            time.sleep(0.02)
        process.send_signal(sig)
        code = process.wait(timeout=300)
    return code, log.read_text(encoding="utf-8")


def history(job_dir: Path) -> list[dict]:
    return json.loads((job_dir / "out/metrics.json").read_text(encoding="utf-8"))["history"]


def steps_saved(job_dir: Path) -> list[int]:
    root = job_dir / "out/checkpoints"
    return sorted(int(p.name.removeprefix("step-")) for p in root.glob("step-*"))


def adapter(job_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(job_dir / "out/adapter/adapter_model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(config_for, tmp_path_factory) -> Path:
    job = tmp_path_factory.mktemp("whole") / "finetune"
    run_to_end(config_for(job))
    return job


def assert_same_training(job: Path, whole: Path) -> None:
    ours, theirs = history(job), history(whole)
    assert [r["step"] for r in ours] == list(range(1, STEPS + 1))  # each step exactly once
    assert [r["loss"] for r in ours] == [r["loss"] for r in theirs]
    assert [r["valid_loss"] for r in ours] == [r["valid_loss"] for r in theirs]
    a, b = adapter(job), adapter(whole)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    leftovers = [p.name for p in (job / "out").rglob(".*") if p.name.endswith((".tmp", ".old"))]
    assert leftovers == []


def test_sigusr1_then_sigkill_then_a_rerun_ends_like_an_uninterrupted_run(
        config_for, uninterrupted, tmp_path):
    """SIGUSR1 after the first checkpoint: exit 75 with a checkpoint of the step in flight.
    The rerun resumes from it and is SIGKILLed after its next periodic checkpoint: only
    complete checkpoints remain. A third run resumes from the newest and finishes."""
    job = tmp_path / "finetune"
    config = config_for(job)
    code, stderr = interrupt(config, signal.SIGUSR1, after_step=SAVE_EVERY)
    assert code == 75, stderr[-3000:]
    stopped = steps_saved(job)[-1]
    assert SAVE_EVERY <= stopped < STEPS - SAVE_EVERY
    assert f"SIGUSR1 received: stopped after step {stopped} of {STEPS}" in stderr
    assert f"lyricgen: finetune-llama: stopped by SIGUSR1 after step {stopped}; " in stderr
    assert "Traceback" not in stderr
    state = torch.load(job / f"out/checkpoints/step-{stopped:08d}/state.pt", weights_only=True)
    assert state["step"] == stopped and len(state["history"]) == stopped
    assert not (job / "out/adapter").exists()  # only a finished run writes it

    next_save = (stopped // SAVE_EVERY + 1) * SAVE_EVERY
    code, stderr = interrupt(config, signal.SIGKILL, after_step=next_save)
    assert code == -signal.SIGKILL, "training ended before it could be killed"
    assert f"(step {stopped})" in stderr  # resumed from the SIGUSR1 checkpoint
    saved = steps_saved(job)
    assert saved[-1] >= next_save
    for step in saved:  # every visible checkpoint is complete and loads
        folder = job / f"out/checkpoints/step-{step:08d}"
        assert torch.load(folder / "state.pt", weights_only=True)["step"] == step
        assert load_file(str(folder / "adapter_model.safetensors"))

    resumed = run_to_end(config)
    assert f"(step {saved[-1]})" in resumed.stderr
    assert_same_training(job, uninterrupted)


WORKER = """\
import os, sys, time
from pathlib import Path
from lyricgen.preempt import EXIT_PREEMPTED, StopSignals

out, rank = Path(sys.argv[1]), os.environ["RANK"]
with StopSignals() as stop:
    (out / f"ready.{rank}").write_text("")
    while not stop.received:
        time.sleep(0.05)
(out / f"got.{rank}").write_text(stop.received)
sys.exit(EXIT_PREEMPTED)
"""


def test_torchrun_as_jobctl_starts_it_forwards_sigusr1_to_every_worker(tmp_path):
    """job.sh signals torchrun, not the workers: the options jobs.runtime adds must make
    torchrun pass SIGUSR1 on (by default it would die of it and orphan the workers)."""
    from jobs.runtime import lyricgen_argv
    from jobs.spec import JobSpec, Profile, Resources, Task

    job = JobSpec(name="ft", kind="finetune-llama", profile="p", needs=(), tasks=(Task(0, {}),),
                  resources=Resources(cpus=2, processes_per_node=2))
    argv = lyricgen_argv(job, Profile(name="p", python=sys.executable), REPO, tmp_path)
    options = [word for word in argv if str(word).startswith(("--signals-", "--shutdown-"))]
    assert len(options) == 2
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER, encoding="utf-8")
    torchrun = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2",
         *options, "--standalone", str(worker), str(tmp_path)],
        cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while len(list(tmp_path.glob("ready.*"))) < 2:
        assert time.monotonic() < deadline and torchrun.poll() is None, "workers never started"
        time.sleep(0.05)
    torchrun.send_signal(signal.SIGUSR1)
    _, stderr = torchrun.communicate(timeout=300)
    assert [(tmp_path / f"got.{rank}").read_text() for rank in (0, 1)] == ["USR1", "USR1"]
    assert torchrun.returncode == 1, stderr[-2000:]  # it always exits 1 after a signal
