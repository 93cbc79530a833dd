"""QLoRA training speed and memory at the Meta-Llama-3-8B shape: lyricgen vs plain peft + Trainer.

    PYTHONPATH=. python bench/qlora_gpu.py            # GPU: 8B shape, random weights
    PYTHONPATH=. python bench/qlora_gpu.py --tiny     # CPU: tiny config, same code (a smoke run)

No download: a LlamaForCausalLM with the 8B shape (hidden 4096, intermediate 14336, 32 layers,
32 heads, 8 KV heads, vocab 128256, rope theta 500000) is built with random bf16 weights on the
GPU, saved to --model-dir (16 GB; reused when already there), then loaded ONCE through
lyricgen.llama.load (NF4 4-bit, double quant, bf16 compute -- fp16 without bf16 support --,
prepare_model_for_kbit_training, non-reentrant gradient checkpointing). Both runs share that
4-bit base; each attaches a fresh LoRA (r 16, alpha 32, dropout 0.05, all-linear), trains
--steps steps of batch --batch x --seq random tokens with AdamW lr 2e-4, linear decay, clip 1.0:
- ours: lyricgen.llama.step.train_step, the step the finetune-llama kind runs;
- baseline: transformers.Trainer with the same settings (bf16/fp16 autocast, adamw_torch).
The first --warmup steps are not timed. Printed: a side-by-side table and one JSON line.

Model FLOPs per token (PaLM-style "model FLOPs": no recomputation counted; attention counted
non-causal): 4 * N_frozen + 6 * N_lora + 12 * layers * hidden * seq, where N_frozen counts the
weights used in matmuls (attention and MLP projections, lm_head; not the embedding lookup).
Frozen weights cost 2N forward + 2N backward (input gradients only: no weight gradients); the
LoRA weights cost the usual 6N; attention score/value matmuls have no weights, so their
backward is twice their forward. MFU = that x tokens/s / the GPU's dense bf16 peak
(H100 SXM / H200: 989 TFLOPS, H100 PCIe: 756; --peak-tflops overrides).

Imports only torch, transformers, peft, bitsandbytes, the standard library and lyricgen.llama
(load, step, data: torch only), so it runs from a checkout with PYTHONPATH=. and no install.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from lyricgen.llama.load import load_model, resolve_precision
from lyricgen.llama.step import train_step

LLAMA3_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                 rope_theta=500000.0, max_position_embeddings=8192, rms_norm_eps=1e-5)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=1000, rope_theta=500000.0,
            max_position_embeddings=1024, rms_norm_eps=1e-5)
PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0))
LORA = dict(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", bias="none",
            task_type="CAUSAL_LM")
LR = 2e-4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny config on CPU (smoke test)")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (8B: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating rounds of ours and the baseline; the last is reported")
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="where the random model is saved (default /tmp/qlora-bench-*)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="dense bf16 peak of the GPU for MFU (default: from its name)")
    args = parser.parse_args(argv)
    args.steps = args.steps or (6 if args.tiny else 20)
    if args.steps <= args.warmup:
        parser.error("--steps must exceed --warmup")
    name = "tiny" if args.tiny else "llama3-8b-shape"
    args.model_dir = args.model_dir or Path(f"/tmp/qlora-bench-{name}")
    return args


def build_random_model(shape: dict[str, Any], out: Path, device: str) -> float:
    """Save a random-weight bf16 LlamaForCausalLM of `shape` to `out` (once); seconds taken."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if (out / ".complete").exists():
        return 0.0
    started = time.perf_counter()
    config = LlamaConfig(**shape, bos_token_id=0, eos_token_id=1, tie_word_embeddings=False)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(str(out), max_shard_size="5GB")
    del model
    free_memory()
    (out / ".complete").write_text("ok\n", encoding="utf-8")
    return time.perf_counter() - started


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_batches(vocab: int, steps: int, batch: int, seq: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(42)
    ids = torch.randint(2, vocab, (steps, batch, seq), generator=generator)
    return [{"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x.clone()}
            for x in ids]


def flops_per_token(shape: dict[str, Any], lora_params: int, seq: int) -> float:
    d, layers = shape["hidden_size"], shape["num_hidden_layers"]
    kv = d // shape["num_attention_heads"] * shape["num_key_value_heads"]
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * shape["intermediate_size"]
    frozen = layers * per_layer + d * shape["vocab_size"]
    return 4.0 * frozen + 6.0 * lora_params + 12.0 * layers * d * seq


def run_ours(model: Any, precision: Any, data: list[dict[str, torch.Tensor]],
             warmup: int) -> dict[str, Any]:
    """lyricgen's step on a fresh LoRA; measurements, and the PeftModel under "peft_model"."""
    from peft import LoraConfig, get_peft_model
    device = torch.device(precision.device)
    torch.manual_seed(42)
    peft_model = get_peft_model(model, LoraConfig(**LORA))
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.dtype == torch.float16)

    def autocast() -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(device.type, dtype=precision.dtype, enabled=precision.autocast)

    losses, started = [], 0.0
    for number, batch in enumerate(data):
        if number == warmup:
            sync(device)
            started = time.perf_counter()
        moved = {k: v.to(device) for k, v in batch.items()}
        targets = int((moved["labels"][:, 1:] != -100).sum())
        loss_sum, _ = train_step(peft_model, [moved], scale=1.0 / targets, params=params,
                                 optimizer=optimizer, lr=LR * (1 - number / len(data)),
                                 scaler=scaler,
                                 autocast=autocast, max_grad_norm=1.0)
        losses.append(float(loss_sum) / targets)
    sync(device)
    return {"seconds": time.perf_counter() - started, "losses": losses,
            "lora_params": sum(p.numel() for p in params), "peft_model": peft_model}


def run_trainer(model: Any, precision: Any, data: list[dict[str, torch.Tensor]],
                warmup: int, workdir: Path) -> dict[str, Any]:
    """Plain peft + transformers.Trainer with the same settings on a fresh LoRA."""
    from peft import LoraConfig, get_peft_model
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    device = torch.device(precision.device)
    marks: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step in (warmup, len(data)):
                sync(device)
                marks[str(state.global_step)] = time.perf_counter()

    torch.manual_seed(42)
    peft_model = get_peft_model(model, LoraConfig(**LORA))
    args = TrainingArguments(
        output_dir=str(workdir), per_device_train_batch_size=data[0]["input_ids"].size(0),
        max_steps=len(data), learning_rate=LR, lr_scheduler_type="linear", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch", logging_steps=1,
        save_strategy="no", report_to="none", disable_tqdm=True, seed=42,
        use_cpu=device.type == "cpu", bf16=precision.dtype == torch.bfloat16,
        fp16=precision.dtype == torch.float16, gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False}, dataloader_num_workers=0)
    rows = [{k: v[i] for k, v in batch.items()} for batch in data
            for i in range(batch["input_ids"].size(0))]
    trainer = Trainer(model=peft_model, args=args, train_dataset=rows, callbacks=[Clock()])
    trainer.remove_callback(PrinterCallback)  # losses are read from log_history instead
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    del trainer
    return {"seconds": marks[str(len(data))] - marks[str(warmup)], "losses": losses,
            "lora_params": sum(p.numel() for p in peft_model.parameters() if p.requires_grad),
            "peft_model": peft_model}


def peak_tflops(override: float | None, device: torch.device) -> float | None:
    if override is not None or device.type != "cuda":
        return override
    name = torch.cuda.get_device_name(device)
    return next((value for key, value in PEAK_TFLOPS if key in name), None)


def summarize(result: dict[str, Any], timed_steps: int, tokens: int, flops_tok: float,
              peak: float | None, peak_bytes: int | None) -> dict[str, Any]:
    per_second = tokens / result["seconds"]
    achieved = flops_tok * per_second
    return {"tokens_per_s": round(per_second, 1), "step_s": result["seconds"] / timed_steps,
            "tflops": achieved / 1e12,
            "mfu": achieved / (peak * 1e12) if peak else None,
            "peak_mem_gib": peak_bytes / 2**30 if peak_bytes is not None else None,
            "first_loss": result["losses"][0], "last_loss": result["losses"][-1],
            "lora_params": result["lora_params"]}


def measure(run: Any, device: torch.device) -> tuple[dict[str, Any], int | None]:
    free_memory()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = run()
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return result, peak


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shape = TINY if args.tiny else LLAMA3_8B
    precision = resolve_precision("cpu" if args.tiny else "cuda", load_in_4bit=True)
    device = torch.device(precision.device)
    print(precision.describe(), file=sys.stderr, flush=True)
    build_s = build_random_model(shape, args.model_dir, precision.device)
    started = time.perf_counter()
    model = load_model(args.model_dir, precision, training=True, gradient_checkpointing=True)
    load_s = time.perf_counter() - started
    base_bytes = torch.cuda.memory_allocated(device) if device.type == "cuda" else None
    data = random_batches(shape["vocab_size"], args.steps, args.batch, args.seq)
    for _ in range(args.rounds):  # alternate (ABAB...): the last round is reported, so
        # neither side profits from running second (allocator and kernel caches warm)
        ours, ours_peak = measure(
            lambda m=model: run_ours(m, precision, data, args.warmup), device)
        model = ours.pop("peft_model").unload()  # the shared 4-bit base, without LoRA layers
        base, base_peak = measure(
            lambda m=model: run_trainer(m, precision, data, args.warmup,
                                        args.model_dir / "trainer"),
            device)
        model = base.pop("peft_model").unload()
    timed = args.steps - args.warmup
    tokens = timed * args.batch * args.seq
    flops_tok = flops_per_token(shape, ours["lora_params"], args.seq)
    peak = peak_tflops(args.peak_tflops, device)
    rows = {"ours": summarize(ours, timed, tokens, flops_tok, peak, ours_peak),
            "trainer": summarize(base, timed, tokens, flops_tok, peak, base_peak)}
    report = {
        "bench": "qlora_gpu", "model": "tiny" if args.tiny else "llama3-8b-shape",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": precision.describe(), "seq": args.seq, "batch": args.batch,
        "steps": args.steps, "timed_steps": timed,
        "build_s": round(build_s, 1), "load_s": round(load_s, 1),
        "base_mem_gib": base_bytes / 2**30 if base_bytes is not None else None,
        "flops_per_token": flops_tok, "peak_tflops": peak,
        "flops_formula": "4*N_frozen + 6*N_lora + 12*layers*hidden*seq", **rows,
        "ratio_tokens_per_s": rows["ours"]["tokens_per_s"] / rows["trainer"]["tokens_per_s"],
    }
    print_table(report)
    print(json.dumps(report))
    return 0


def print_table(report: dict[str, Any]) -> None:
    def fmt(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    keys = ("tokens_per_s", "step_s", "tflops", "mfu", "peak_mem_gib", "first_loss",
            "last_loss", "lora_params")
    print(f"{report['model']} on {report['device']}: {report['precision']}; batch "
          f"{report['batch']} x seq {report['seq']}, {report['timed_steps']} timed steps "
          f"(build {report['build_s']} s, 4-bit load {report['load_s']} s)")
    print(f"{'metric':<14}{'lyricgen':>14}{'HF Trainer':>14}{'ratio':>9}")
    for key in keys:
        ours, theirs = report["ours"][key], report["trainer"][key]
        ratio = ours / theirs if isinstance(ours, int | float) and theirs else None
        print(f"{key:<14}{fmt(ours):>14}{fmt(theirs):>14}{fmt(ratio):>9}")


if __name__ == "__main__":
    sys.exit(main())
