"""Data-parallel train-rnn (torchrun, gloo on CPU): the ranks split the global batch, the
validation shards add up, two processes train the model one process trains, a pause and a
SIGUSR1 that only one rank receives both resume identically, and `jobctl run` launches it.

The end-to-end tests start `python -m torch.distributed.run` on a tiny GRU (one thread per
process) and compare against a one-process run with the same global batch and no dropout."""

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
from test_rnn_cli import DISCO, REPO, write_config

from lyricgen.evaluate import score_ids
from lyricgen.rnn.checkpoint import load_checkpoint
from lyricgen.rnn.data import TbpttBatches
from lyricgen.rnn.metrics import MetricsCsv
from lyricgen.rnn.model import ModelConfig, RnnLM

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("SLURM_CPUS_PER_TASK", None)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"]
TINY = {"arch": "gru", "hidden_size": 32, "embedding_dim": 8, "batch_size": 8, "seq_len": 32,
        "dropout": 0.0, "epochs": 2, "eval_every": 20, "log_every": 1, "precision": "fp32"}


def test_ranks_split_the_streams_of_one_process():
    ids = torch.arange(1000)
    whole = TbpttBatches(ids, 8, 16, shuffle_seed=None)
    ranks = [TbpttBatches(ids, 8, 16, rank=r, world_size=2) for r in range(2)]
    assert all(part.n_windows == whole.n_windows for part in ranks)
    assert ranks[0].tokens_per_epoch == whole.tokens_per_epoch
    for window in (0, whole.n_windows - 1):
        for item in range(2):  # inputs, targets
            joined = torch.cat([part.window(window)[item] for part in ranks])
            assert torch.equal(joined, whole.window(window)[item])
    with pytest.raises(ValueError, match="does not split evenly over 3 processes"):
        TbpttBatches(ids, 8, 16, rank=0, world_size=3)


def test_a_batch_that_does_not_split_over_the_processes_is_refused(tmp_path, monkeypatch):
    from lyricgen.errors import LyricgenInputError
    from lyricgen.rnn.config import TrainConfig
    from lyricgen.rnn.train import Trainer

    for name, value in {"WORLD_SIZE": "3", "RANK": "0", "LOCAL_RANK": "0",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(name, value)
    config = write_config(tmp_path, **TINY)
    params = json.loads(config.read_text())["tasks"][0]["params"]
    with pytest.raises(LyricgenInputError, match="batch_size: 8 does not split evenly "
                                                 "over 3 processes"):
        Trainer(TrainConfig.from_params(params), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_validation_shards_add_up_to_the_whole_text():
    torch.manual_seed(0)
    model = RnnLM(ModelConfig("lstm", 20, 8, 16))
    ids = torch.randint(0, 20, (700,)).tolist()
    whole = score_ids(model, ids, [1], streams=5, burn_in=8, window=32)
    shards = [score_ids(model, ids, [1], streams=5, burn_in=8, window=32, shard=(i, 3))
              for i in range(3)]
    assert sum(shards) == pytest.approx(whole, rel=1e-9)
    assert score_ids(model, ids[:3], [1], streams=5, shard=(4, 5)) == 0.0  # no chunk left


def torchrun(config: Path, processes: int = 2, **kwargs) -> subprocess.Popen[str]:
    return subprocess.Popen([*TORCHRUN, f"--nproc-per-node={processes}", "-m", "lyricgen",
                             "train-rnn", "--config", str(config)], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    output, _ = process.communicate(timeout=300)
    return process.returncode, output


def single(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lyricgen", "train-rnn", "--config",
                           str(config)], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=300)


def losses(out: Path) -> list[float]:
    return [float(r["train_loss"]) for r in MetricsCsv(out / "metrics.csv").read()
            if r["train_loss"]]


def assert_same_training(a: Path, b: Path) -> None:
    """Same per-step losses, validations and final weights (float summation order aside)."""
    assert losses(b) == pytest.approx(losses(a), rel=1e-5)
    first, second = (load_checkpoint(out / "checkpoint/last.pt") for out in (a, b))
    assert first["step"] == second["step"] and second["stop_reason"] == "epochs"
    assert second["best"]["bpc"] == pytest.approx(first["best"]["bpc"], rel=1e-4)
    for name, tensor in first["model_state"].items():
        torch.testing.assert_close(second["model_state"][name], tensor, atol=2e-4, rtol=0)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("one")
    done = single(write_config(directory, **TINY))
    assert done.returncode == 0, done.stderr
    return directory / "out"


@pytest.mark.slow
def test_two_processes_pause_and_resume_like_one(one_process: Path, tmp_path: Path):
    paused = write_config(tmp_path, **TINY, max_steps=30)
    code, output = finish(torchrun(paused))
    assert code == 0, output
    out = tmp_path / "out"
    checkpoint = load_checkpoint(out / "checkpoint/last.pt")
    assert checkpoint["world_size"] == 2 and checkpoint["step"] == 30
    cell, recent = checkpoint["hidden"]  # a GRU's state, the 3 latest tokens (n-gram order 4)
    assert cell.shape == (1, 8, 32) and recent.shape == (3, 8)  # both ranks' streams, in order
    assert len(checkpoint["rng_ranks"]) == 2
    config = write_config(tmp_path, **TINY)
    refused = single(config)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "world_size: written by 2 process(es), this run has 1" in refused.stderr
    code, output = finish(torchrun(config))
    assert code == 0, output
    assert output.count("resuming from") == 1  # rank 0 only
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["threads"] == 1
    assert metrics["tokens_seen"] == 2 * metrics["tokens_per_epoch"]
    assert_same_training(one_process, out)


def worker_pids(launcher: int) -> dict[int, int]:
    """{rank: pid} of torchrun's worker processes (children with a RANK variable)."""
    found = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if f"\nPPid:\t{launcher}\n" not in status.read_text():
                continue
            environ = (status.parent / "environ").read_bytes().split(b"\0")
        except OSError:  # a process that just ended
            continue
        rank = [item for item in environ if item.startswith(b"RANK=")]
        if rank:
            found[int(rank[0][5:])] = int(status.parent.name)
    return found


@pytest.mark.slow
def test_a_signal_to_one_rank_stops_all_and_the_rerun_resumes(tmp_path: Path):
    params = {**TINY, "hidden_size": 128, "epochs": 4, "checkpoint_every": 10}
    (tmp_path / "one").mkdir()
    done = single(write_config(tmp_path / "one", **params))
    assert done.returncode == 0, done.stderr
    config = write_config(tmp_path, **params)
    last = tmp_path / "out/checkpoint/last.pt"
    process = torchrun(config)
    deadline = time.monotonic() + 120
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(worker_pids(process.pid)[1], signal.SIGUSR1)  # rank 0 never receives it
    code, output = finish(process)
    assert code != 0 and output.count("stopped by SIGUSR1 after step") == 2, output
    paused = load_checkpoint(last)
    assert paused["stop_reason"] == "preempted" and paused["step"] >= 10, output
    assert int(MetricsCsv(tmp_path / "out/metrics.csv").read()[-1]["step"]) == paused["step"]
    code, output = finish(torchrun(config))
    assert code == 0, output
    assert f"resuming from {last} at step {paused['step']} " in output
    assert_same_training(tmp_path / "one/out", tmp_path / "out")


MANIFEST = """\
name: ddp-rnn
jobs:
  - kind: train-rnn
    name: train
    resources: {cpus: 2, processes_per_node: 2, mem: 2G, time: "00:10:00"}
    params: @PARAMS@
"""


@pytest.mark.slow
def test_jobctl_run_launches_two_processes(one_process: Path, tmp_path: Path):
    for name, size in (("train.txt", 12000), ("valid.txt", 2000)):
        text = (DISCO / name).read_text(encoding="utf-8")[:size]
        (tmp_path / name).write_text(text, encoding="utf-8")
    params = {**TINY, "data": "train.txt", "valid_data": "valid.txt", "device": "cpu",
              "warmup_steps": 5}
    (tmp_path / "ddp.yaml").write_text(MANIFEST.replace("@PARAMS@", json.dumps(params)),
                                       encoding="utf-8")
    (tmp_path / "host.yaml").write_text("executor: local\nruntime: host\n", encoding="utf-8")
    jobctl = [str(Path(sys.executable).parent / "jobctl")]
    done = subprocess.run([*jobctl, "run", "ddp.yaml", "--profile", "host.yaml", "--runs-dir",
                           "runs"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = next((tmp_path / "runs").glob("*/train/out"))
    script = (out.parent / "job.sh").read_text(encoding="utf-8")
    assert "--nproc-per-node=2" in script and "OMP_NUM_THREADS=1" in script
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert (metrics["world_size"], metrics["threads"]) == (2, 1)
    assert_same_training(one_process, out)
