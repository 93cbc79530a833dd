"""bench/qlora_gpu.py --tiny: the GPU benchmark's code path (random model built, saved, loaded
4-bit through lyricgen.llama.load, our step vs HF Trainer) on a tiny config on CPU; and
bench/llama_lora_cpu.py (finetune-llama's CPU recipe vs peft + Trainer) on a tiny model dir."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
torch.set_num_threads(1)

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"


def load_bench(name: str):
    """bench/NAME.py as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCH_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load_bench("qlora_gpu")


def test_tiny_bench_compares_both_runs_and_prints_one_json_line(bench, tmp_path, capsys):
    assert bench.main(["--tiny", "--steps", "3", "--warmup", "1", "--seq", "32",
                       "--model-dir", str(tmp_path / "model")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[-1])
    header = next(line for line in out if line.startswith("metric"))
    assert "lyricgen" in header and "HF Trainer" in header
    assert report["precision"].startswith("precision: cpu NF4 4-bit")
    ours, theirs = report["ours"], report["trainer"]
    assert ours["lora_params"] == theirs["lora_params"] > 0
    assert ours["tokens_per_s"] > 0 and theirs["tokens_per_s"] > 0
    assert 6.0 < ours["first_loss"] < 7.9 and 6.0 < theirs["first_loss"] < 7.9  # ~ln(1000)
    assert report["flops_per_token"] == bench.flops_per_token(bench.TINY,
                                                             ours["lora_params"], 32)


def test_flops_formula_at_the_8b_shape(bench):
    # Llama 3 8B has 8,030,261,248 parameters; minus the embedding (128256 x 4096) and the
    # 65 RMSNorm vectors, 7,504,658,432 take part in matmuls.
    frozen = 8_030_261_248 - 128256 * 4096 - 65 * 4096
    flops = bench.flops_per_token(bench.LLAMA3_8B, lora_params=1000, seq=256)
    assert flops == 4 * frozen + 6 * 1000 + 12 * 32 * 4096 * 256


def test_cpu_bench_runs_the_kinds_recipe_and_both_trainer_baselines(tmp_path, capsys,
                                                                     monkeypatch):
    from tiny_llama import build_tiny_llama

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the bench applies lyricgen.threads
    monkeypatch.setenv("MKL_NUM_THREADS", "1")

    model = build_tiny_llama(tmp_path, poems=60)
    assert load_bench("llama_lora_cpu").main([
        "--model", str(model), "--steps", "3", "--warmup", "1", "--rounds", "1", "--seq", "32",
        "--batch", "2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[-1])
    assert "lyricgen" in next(line for line in out if line.startswith("metric"))
    assert "recipe: LoRA dropout 0, gradient checkpointing off, eager attention" in \
        report["ours"]["setup"]
    assert report["trainer"]["setup"].startswith("fp32 weights; LoRA dropout 0.05")
    assert "bf16 autocast" in report["trainer_bf16"]["setup"]
    for name in ("ours", "trainer", "trainer_bf16"):
        assert report[name]["tokens_per_s"] > 0
        assert 5.0 < report[name]["first_loss"] < 8.0  # about ln(1000) for a fresh tiny model
    assert report["ratio_vs_trainer"] == pytest.approx(
        report["ours"]["tokens_per_s"] / report["trainer"]["tokens_per_s"], rel=0.01)
    assert report["threads"] == 1
