"""A few LoRA steps on the real SmolLM2-135M (models/smollm2-135m, `make smollm2`) through the
real `python -m lyricgen finetune-llama` CLI: tiny blocks, two steps, one evaluation. Skipped
with the reason when the model has not been imported."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_llama import disco_texts

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SMOLLM2 = REPO / "models/smollm2-135m"


def test_two_lora_steps_on_smollm2_through_the_cli(tmp_path):
    if not (SMOLLM2 / "config.json").is_file():
        pytest.skip(f"{SMOLLM2} not imported (run `make smollm2`)")
    files = {}
    for split, count in (("train", 12), ("valid", 2)):
        files[split] = tmp_path / f"{split}_lyrics.jsonl"
        files[split].write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n"
                                        for t in disco_texts(split, count)), encoding="utf-8")
    params = {"model_path": str(SMOLLM2), "data_path": str(files["train"]),
              "valid_path": str(files["valid"]), "max_steps": 2, "batch_size": 2,
              "grad_accum": 1, "block_size": 32, "lora_r": 4, "lora_alpha": 8,
              "eval_every": 2, "save_every": 2, "gradient_checkpointing": False,
              "device": "cpu", "seed": 42}
    job = tmp_path / "job"
    config = {"schema": 1, "kind": "finetune-llama", "job": "real", "run_id": "test",
              "job_dir": str(job), "out_dir": str(job / "out"),
              "tasks": [{"index": 0, "params": params}]}
    job.mkdir()
    (job / "config.json").write_text(json.dumps(config), encoding="utf-8")
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "lyricgen", "finetune-llama", "--config",
                             str(job / "config.json")], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((job / "out/metrics.json").read_text(encoding="utf-8"))
    assert metrics["steps"] == 2 and metrics["tokens"] == 2 * 2 * 31
    assert all(math.isfinite(r["loss"]) for r in metrics["history"])
    assert 1.5 < metrics["final_valid_bpc"] < 4.0  # base SmolLM2 is about 2.5 on DISCO
    assert (job / "out/adapter/adapter_model.safetensors").is_file()
