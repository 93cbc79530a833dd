"""finetune-llama end to end on a tiny random LLaMA (tests/tiny_llama.py) and real DISCO verse:
the real CLI trains, resumes, merges and fails cleanly; the generator samples in batches; two
torchrun (gloo) processes match one process. CPU only, one thread per process."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from tiny_llama import build_tiny_llama, disco_texts

from lyricgen import schedule
from lyricgen.__main__ import main as lyricgen_main
from lyricgen.llama import finetune
from lyricgen.llama.load import resolve_precision

pytestmark = pytest.mark.slow
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
CPU_POLICY = resolve_precision("cpu", cpu_auto_bf16=True)  # bf16 where the cores have it


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lyrics")
    files = {}
    for split, count in (("train", 48), ("valid", 6)):
        path = files[split] = root / f"{split}_lyrics.jsonl"
        path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n"
                                for t in disco_texts(split, count)), encoding="utf-8")
    return files


def params_for(tiny: Path, data: dict[str, Path], **overrides) -> dict:
    params = {"model_path": str(tiny), "data_path": str(data["train"]),
              "valid_path": str(data["valid"]), "max_steps": 8, "batch_size": 2,
              "grad_accum": 2, "block_size": 64, "lr": 1e-2, "dropout": 0.1, "lora_r": 8,
              "lora_alpha": 16, "eval_every": 4, "save_every": 4, "keep_checkpoints": 10,
              "device": "cpu", "seed": 42}
    return {**params, **overrides}


def write_config(job_dir: Path, params: dict) -> Path:
    job_dir.mkdir(parents=True, exist_ok=True)
    config = {"schema": 1, "kind": "finetune-llama", "job": job_dir.name, "run_id": "test",
              "job_dir": str(job_dir), "out_dir": str(job_dir / "out"),
              "tasks": [{"index": 0, "params": params}]}
    path = job_dir / "config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=600, check=False)


def history(out: Path) -> list[dict]:
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))["history"]


@pytest.fixture(scope="module")
def trained(tiny, data, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One uninterrupted CLI run: 8 steps, checkpoints at 4 and 8, merged weights."""
    config = write_config(tmp_path_factory.mktemp("run") / "finetune",
                          params_for(tiny, data, merge=True))
    result = run_cli("-m", "lyricgen", "finetune-llama", "--config", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    return config.parent / "out", result


def valid_bpc_of(loss: float, tiny: Path, data: dict[str, Path]) -> float:
    """The valid bpc a mean token loss means: loss x scored targets / ln 2 / the characters of
    the scored text (every song's text + its marker-format end for what whole blocks hold)."""
    from lyricgen.llama.data import build_examples
    from lyricgen.llama.load import load_tokenizer

    examples = build_examples(data["valid"], load_tokenizer(tiny), 64, True)
    rows = torch.arange(len(examples))
    chars = examples.char_count(rows)
    texts = disco_texts("valid", 6)
    assert 0.9 * sum(len(t) + 10 for t in texts) < chars <= sum(len(t) + 10 for t in texts)
    return loss * examples.target_count(rows) / math.log(2) / chars


def test_finetune_writes_adapter_metrics_and_the_loss_falls(trained, tiny, data):
    out, result = trained
    assert result.stderr.count(CPU_POLICY.describe()) == 1
    assert result.stderr.count("recipe: LoRA dropout 0.1, gradient checkpointing off, eager "
                               "attention") == 1
    rows = history(out)
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.05
    assert [r["step"] for r in rows if r["valid_loss"] is not None] == [4, 8]
    assert rows[7]["valid_loss"] < rows[3]["valid_loss"]
    assert rows[7]["valid_ppl"] == pytest.approx(2.718281828 ** rows[7]["valid_loss"])
    assert rows[7]["valid_bpc"] == pytest.approx(valid_bpc_of(rows[7]["valid_loss"], tiny, data))
    summary = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert summary["final_valid_bpc"] == rows[7]["valid_bpc"]
    assert summary["precision"] == CPU_POLICY.describe()
    assert summary["stop_reason"] == "max_steps" and summary["threads"] == 1
    assert summary["tokens"] == 8 * 4 * 63
    lines = (out / "metrics.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("step,epoch,loss") and lines[0].endswith(",valid_bpc")
    assert len(lines) == 9
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json"):
        assert (out / "adapter" / name).is_file()
    training = json.loads((out / "adapter" / "training_config.json").read_text("utf-8"))
    assert training["params"]["lora_r"] == 8 and training["versions"]["peft"]
    assert json.loads((out / "provenance.json").read_text("utf-8"))["kind"] == "finetune-llama"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == \
        ["step-00000004", "step-00000008"]


def test_resume_reproduces_the_uninterrupted_losses(trained, tiny, data, tmp_path):
    """A run cut after step 4 (its newest checkpoint) resumes to the same losses and adapter."""
    out, _ = trained
    job = tmp_path / "resumed"
    shutil.copytree(out / "checkpoints" / "step-00000004",
                    job / "out" / "checkpoints" / "step-00000004")
    partial = job / "out" / "checkpoints" / ".step-00000008.tmp"  # a kill while saving step 8
    partial.mkdir()
    (partial / "adapter_config.json").write_text("{", encoding="utf-8")
    config = write_config(job, params_for(tiny, data, merge=False))
    result = run_cli("-m", "lyricgen", "finetune-llama", "--config", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stderr and "(step 4)" in result.stderr
    assert [r["loss"] for r in history(job / "out")] == [r["loss"] for r in history(out)]
    assert [r["valid_loss"] for r in history(job / "out")] == \
        [r["valid_loss"] for r in history(out)]
    ours = load_file(str(job / "out" / "adapter" / "adapter_model.safetensors"))
    theirs = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_resume_falls_back_to_the_newest_checkpoint_that_loads(trained, tiny, data, tmp_path):
    """A torn newest checkpoint (step 8) is set aside with one warning line; the run resumes
    from step 4 and ends with the uninterrupted run's losses."""
    out, _ = trained
    job = tmp_path / "torn"
    shutil.copytree(out / "checkpoints", job / "out" / "checkpoints")
    adapter = job / "out" / "checkpoints" / "step-00000008" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:100])
    config = write_config(job, params_for(tiny, data, merge=False))
    result = run_cli("-m", "lyricgen", "finetune-llama", "--config", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines()
                if line.startswith("finetune-llama: warning")]
    assert len(warnings) == 1 and warnings[0].startswith(
        f"finetune-llama: warning: {adapter.parent}: checkpoint does not load ")
    assert "(step 4)" in result.stderr
    assert [r["loss"] for r in history(job / "out")] == [r["loss"] for r in history(out)]
    names = sorted(p.name for p in (job / "out" / "checkpoints").iterdir())
    assert names[:2] == ["step-00000004", "step-00000008"] and len(names) == 3
    assert names[2].startswith("step-00000008.bad-")


def test_resume_with_other_training_params_is_refused(trained, tiny, data, tmp_path, capsys):
    out, _ = trained
    job = tmp_path / "changed"
    shutil.copytree(out / "checkpoints", job / "out" / "checkpoints")
    config = write_config(job, params_for(tiny, data, lr=5e-3))
    with pytest.raises(SystemExit) as exit_info:
        lyricgen_main(["finetune-llama", "--config", str(config)])
    assert exit_info.value.code == 2
    assert "checkpoint made with other settings (lr)" in capsys.readouterr().err


@pytest.fixture
def fake_clock(monkeypatch) -> list[float]:
    """lyricgen.schedule's clock reads a value that only each optimizer step advances, by
    10 s: budgeted runs become deterministic. Returns the one-element clock."""
    now = [1000.0]
    monkeypatch.setattr(schedule, "monotonic", lambda: now[0])
    step = finetune.FinetuneRun._step

    def ten_second_step(self, wrapped, index):
        result = step(self, wrapped, index)
        now[0] += 10.0
        return result

    monkeypatch.setattr(finetune.FinetuneRun, "_step", ten_second_step)
    return now


def test_max_minutes_stops_evaluates_saves_and_resumes_exactly(tiny, data, tmp_path, capsys,
                                                               fake_clock):
    """A 1-minute budget of 10-second steps: the LR decays with the clock and reaches 0 at
    the budget, the run stops after step 6 of 20 with a final evaluation and checkpoint; a run
    resumed from step 4 (elapsed 40 s) ends identically; a rerun finds the budget spent."""
    params = params_for(tiny, data, max_steps=20, max_minutes=1.0, eval_every=100,
                        save_every=4, merge=False)
    whole = write_config(tmp_path / "whole", params)
    lyricgen_main(["finetune-llama", "--config", str(whole)])
    out = tmp_path / "whole" / "out"
    rows = history(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["lr"] for r in rows] == pytest.approx([1e-2 * (1 - i / 6) for i in range(6)])
    assert [r["step"] for r in rows if r["valid_loss"] is not None] == [6]
    summary = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert summary["stop_reason"] == "max_minutes" and summary["steps"] == 6
    assert summary["total_steps"] == 20 and summary["elapsed_s"] == 60.0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == \
        ["step-00000004", "step-00000006"]
    assert "stopped after step 6 (max_minutes)" in capsys.readouterr().err
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))

    resumed = write_config(tmp_path / "resumed", params)
    shutil.copytree(out / "checkpoints" / "step-00000004",
                    tmp_path / "resumed" / "out" / "checkpoints" / "step-00000004")
    lyricgen_main(["finetune-llama", "--config", str(resumed)])
    assert "(step 4)" in capsys.readouterr().err
    assert history(tmp_path / "resumed" / "out") == rows
    again = load_file(str(tmp_path / "resumed" / "out" / "adapter" / "adapter_model.safetensors"))
    assert all(torch.equal(again[k], adapter[k]) for k in adapter)

    lyricgen_main(["finetune-llama", "--config", str(whole)])  # the budget is spent
    assert "stopped after step 6 (max_minutes)" in capsys.readouterr().err
    assert history(out) == rows


def _logits(model, tokenizer) -> torch.Tensor:
    batch = tokenizer(["Amor constante más allá de la muerte", "En tanto que de rosa"],
                      return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


def test_adapter_merged_and_merge_command_give_base_plus_adapter_logits(trained, tiny, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lyricgen.llama.generate import LlamaGenerator

    out, _ = trained
    tokenizer = AutoTokenizer.from_pretrained(str(tiny), local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(str(tiny), local_files_only=True).eval()
    plain = _logits(base, tokenizer)
    expected = _logits(PeftModel.from_pretrained(base, str(out / "adapter")).eval(), tokenizer)
    assert (expected - plain).abs().max() > 1e-3  # the adapter learned something
    merged = AutoModelForCausalLM.from_pretrained(str(out / "merged"), local_files_only=True)
    torch.testing.assert_close(_logits(merged.eval(), tokenizer), expected, atol=1e-5, rtol=0)
    reloaded = LlamaGenerator.from_path(out / "adapter", device="cpu").model
    torch.testing.assert_close(_logits(reloaded, tokenizer), expected, atol=1e-5, rtol=0)
    lyricgen_main(["merge", "--base", str(tiny), "--adapter", str(out / "adapter"),
                   "--out", str(tmp_path / "merged")])
    again = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"), local_files_only=True)
    torch.testing.assert_close(_logits(again.eval(), tokenizer), expected, atol=1e-5, rtol=0)
    assert (tmp_path / "merged" / "tokenizer.json").is_file()


def test_generate_batches_rows_and_is_deterministic_for_a_seed(trained):
    from lyricgen.llama.generate import LlamaGenerator

    out, _ = trained
    gen = LlamaGenerator.from_path(out / "merged", device="cpu")
    assert gen.model_kind == "llama"
    prompts = ["Amor", "", "En el silencio de la noche oscura"]
    temps = [0.0, 0.9, 1.3]
    first = gen.generate(prompts, temps, max_tokens=12, top_p=0.95, seed=3)
    assert len(first) == 3 and all(isinstance(text, str) for text in first)
    assert gen.generate(prompts, temps, max_tokens=12, top_p=0.95, seed=3) == first
    other = gen.generate(prompts, temps, max_tokens=12, top_p=0.95, seed=4)
    assert other[0] == first[0] and other[1:] != first[1:]
    # Left padding: the greedy row is the same alone, in the batch and through HF generate.
    assert gen.generate(["Amor"], [0.0], max_tokens=12) == [first[0]]
    enc = gen.tokenizer(["Amor"], return_tensors="pt")
    ids = gen.model.generate(**enc, do_sample=False, max_new_tokens=12,
                             pad_token_id=gen.tokenizer.pad_token_id)
    hf_text = gen.tokenizer.decode(ids[0, enc["input_ids"].size(1):], skip_special_tokens=True)
    assert first[0] == hf_text
    assert gen.generate(prompts, temps, max_tokens=0) == ["", "", ""]
    with pytest.raises(ValueError, match="temperatures"):
        gen.generate(prompts, [1.0], max_tokens=4)


def test_qlora_4bit_on_cpu_trains_and_merges_into_unquantized_weights(tiny, data, tmp_path,
                                                                     capsys):
    """Also the unpacked path: one padded song per example (block 256 > every song here)."""
    config = write_config(tmp_path / "qlora", params_for(
        tiny, data, load_in_4bit=True, max_steps=3, grad_accum=1, merge=True, save_every=3,
        eval_every=3, packing=False, block_size=256))
    lyricgen_main(["finetune-llama", "--config", str(config)])
    out = tmp_path / "qlora" / "out"
    dtype = str(CPU_POLICY.dtype).removeprefix("torch.")
    assert f"precision: cpu NF4 4-bit, double quant, compute {dtype}, LoRA fp32" \
        in capsys.readouterr().err
    rows = history(out)
    assert len(rows) == 3 and all(0 < r["loss"] < 20 for r in rows)
    assert rows[-1]["tokens"] < 3 * 2 * 255  # songs (< 240 tokens) are padded; pads don't count
    with safe_open(str(out / "merged" / "model.safetensors"), "pt") as handle:
        dtypes = {handle.get_slice(k).get_dtype() for k in handle.keys()}
        names = list(handle.keys())
    assert dtypes == {"F32"} and not any("lora" in k or "absmax" in k for k in names)


@pytest.mark.parametrize("model_path", ["meta-llama/Meta-Llama-3-8B", "missing-model-dir"])
def test_hub_id_or_missing_model_dir_exits_2_with_one_line(tiny, data, tmp_path, model_path):
    path = model_path if "/" in model_path else str(tmp_path / model_path)
    config = write_config(tmp_path / "bad", params_for(tiny, data, model_path=path))
    result = run_cli("-m", "lyricgen", "finetune-llama", "--config", str(config))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("lyricgen: error: params: model_path:")
    assert ("Hub id" in lines[0]) == ("/" in model_path)
    assert not (tmp_path / "bad" / "out" / "checkpoints").exists()


def test_torchrun_two_gloo_processes_match_one_process(tiny, data, tmp_path):
    """2 ranks x batch 2 and 1 rank x batch 4 (2 micro-batches each: DDP's no_sync path)
    train on the same examples per step (in fp32: bf16 sums in another order differ more)."""
    common = {"dropout": 0.0, "max_steps": 4, "grad_accum": 2, "eval_every": 2,
              "save_every": 2, "dtype": "float32"}
    single = write_config(tmp_path / "single", params_for(tiny, data, batch_size=4, **common))
    lyricgen_main(["finetune-llama", "--config", str(single)])
    double = write_config(tmp_path / "ddp", params_for(tiny, data, batch_size=2, **common))
    result = run_cli("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                     "-m", "lyricgen", "finetune-llama", "--config", str(double))
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = history(tmp_path / "single" / "out"), history(tmp_path / "ddp" / "out")
    for key in ("loss", "grad_norm"):
        assert [r[key] for r in two] == pytest.approx([r[key] for r in one], rel=1e-5)
    evals = [[r["valid_loss"] for r in rows if r["valid_loss"] is not None] for rows in (one, two)]
    assert len(evals[0]) == 2 and evals[1] == pytest.approx(evals[0], rel=1e-5)
    summary = json.loads((tmp_path / "ddp" / "out" / "metrics.json").read_text("utf-8"))
    assert summary["world_size"] == 2 and summary["global_batch"] == 8
    a = load_file(str(tmp_path / "single" / "out" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "out" / "adapter" / "adapter_model.safetensors"))
    # Adam moves a weight by up to lr per step whatever the gradient's size, so a near-zero
    # gradient summed in another order may move it differently: allow 1 % of one step (lr 1e-2).
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-4, rtol=0)
    assert max(float(a[k].abs().max()) for k in a if "lora_B" in k) > 1e-3  # B starts at 0
