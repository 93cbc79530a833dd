"""End to end through the real CLI: `python -m lyricgen train-rnn` then `evaluate`, a SIGKILL
in the middle of training and the resumption, and bad input (exit 2, one line)."""

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

REPO = Path(__file__).resolve().parents[1]
DISCO = REPO.parent / "shared/corpora/disco"
ENV = {**os.environ, "SLURM_CPUS_PER_TASK": "1", "PYTHONUNBUFFERED": "1"}
pytestmark = pytest.mark.slow


def write_config(tmp_path: Path, **params) -> Path:
    train, valid = tmp_path / "train.txt", tmp_path / "valid.txt"
    train.write_text((DISCO / "train.txt").read_text(encoding="utf-8")[:12000], encoding="utf-8")
    valid.write_text((DISCO / "valid.txt").read_text(encoding="utf-8")[:2000], encoding="utf-8")
    resolved = {"data": str(train), "valid_data": str(valid), "arch": "gru", "level": "char",
                "epochs": 1, "hidden_size": 32, "embedding_dim": 8, "batch_size": 8,
                "seq_len": 32, "warmup_steps": 5, "device": "cpu", **params}
    config = {"schema": 1, "kind": "train-rnn", "job": "train", "run_id": "test",
              "job_dir": str(tmp_path), "out_dir": str(tmp_path / "out"),
              "tasks": [{"index": 0, "params": resolved, "matrix": {}}]}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def lyricgen(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lyricgen", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300, **kwargs)


@pytest.mark.parametrize("level", ["word", "bpe"])
def test_train_then_evaluate_through_the_cli(tmp_path, level):
    config = write_config(tmp_path, level=level, arch="lstm", min_count=1, vocab_size=200)
    done = lyricgen("train-rnn", "--config", str(config))
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    for name in ("metrics.json", "metrics.csv", "curves.png", "provenance.json",
                 "checkpoint/best.pt", "checkpoint/last.pt", "checkpoint/vocab.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["threads"] == 1 and metrics["stop_reason"] == "epochs"
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["train_rnn"]["best"] == metrics["best"]
    report = lyricgen("evaluate", "--checkpoint", str(out), "--data",
                      str(tmp_path / "valid.txt"), "--json")
    assert report.returncode == 0, report.stderr
    figures = json.loads(report.stdout)
    assert figures["level"] == level and figures["chars"] == 2000
    assert figures["bpc"] == pytest.approx(metrics["best"]["bpc"], rel=1e-6)


def test_bad_input_exits_2_with_one_line(tmp_path):
    config = write_config(tmp_path, hiden_size=3)
    done = lyricgen("train-rnn", "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "hiden_size" in done.stderr
    done = lyricgen("evaluate", "--checkpoint", str(tmp_path), "--data", str(config))
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_sigkill_then_restart_resumes_from_the_checkpoint(tmp_path):
    config = write_config(tmp_path, epochs=4, checkpoint_every=5, batch_size=4, seq_len=16,
                          hidden_size=24)
    last = tmp_path / "out/checkpoint/last.pt"
    process = subprocess.Popen([sys.executable, "-m", "lyricgen", "train-rnn", "--config",
                                str(config)], cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "training ended before it could be killed"
    killed_at = torch.load(last, weights_only=True)  # never a truncated file
    assert killed_at["step"] >= 5 and killed_at["stop_reason"] is None
    done = lyricgen("train-rnn", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert f"at step {killed_at['step']} " in done.stderr
    final = torch.load(last, weights_only=True)
    metrics = json.loads((tmp_path / "out/metrics.json").read_text())
    assert final["step"] == metrics["final"]["step"] == 4 * metrics["windows_per_epoch"]
    assert final["stop_reason"] == "epochs"
    assert not list(last.parent.glob(".*.tmp"))
