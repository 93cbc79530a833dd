"""LoRA training speed on CPU with real weights: finetune-llama's recipe vs plain peft + Trainer.

    make smollm2
    PYTHONPATH=. python bench/llama_lora_cpu.py --model models/smollm2-135m

The same model (SmolLM2-135M from `make smollm2`), the same data (DISCO sonnets, the corpus
embedded in lyricgen, packed in blocks of --seq tokens), the same LoRA (r 16, alpha 32,
all-linear), batch --batch, AdamW lr 2e-4 with linear decay, clip 1.0, and the threads this
process may use (lyricgen.threads), timed side by side in one process:
- lyricgen: the finetune-llama kind's CPU recipe with its defaults (lyricgen.llama.lora:
  bf16 weights and autocast where the cores have bf16 instructions, else fp32; no LoRA
  dropout, no gradient checkpointing, eager attention, fused AdamW) and its step
  (lyricgen.llama.step.train_step);
- HF Trainer: plain peft + transformers.Trainer as a user would write it on CPU (fp32, its
  default there; LoRA dropout 0.05; adamw_torch; no gradient checkpointing);
- HF Trainer bf16: the same with `bf16=True`, to show what bf16 alone buys (peft keeps its
  LoRA weights in fp32 and casts each layer's input to them).
Runs alternate over --rounds (ABCABC...) and the last round is reported, so no side profits
from a warm cache. The first --warmup steps of a run are not timed. Prints a side-by-side
table (tokens/s, seconds per step, first and last loss) and one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from lyricgen import threads  # noqa: E402
from lyricgen.llama.load import load_model, load_tokenizer, resolve_precision  # noqa: E402
from lyricgen.llama.lora import lora_model, optimizer, resolve_recipe  # noqa: E402
from lyricgen.llama.params import FinetuneParams  # noqa: E402
from lyricgen.llama.step import train_step  # noqa: E402
from lyricgen.verse.lexicon import EMBEDDED_VERSE  # noqa: E402

LR = 2e-4
LORA = dict(r=16, lora_alpha=32, target_modules="all-linear", bias="none",
            task_type="CAUSAL_LM")
TRAINER_DROPOUT = 0.05


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/smollm2-135m"),
                        help="a LLaMA model directory (make smollm2)")
    parser.add_argument("--steps", type=int, default=8, help="steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args(argv)
    if args.steps <= args.warmup:
        parser.error("--steps must exceed --warmup")
    return args


def disco_batches(tokenizer: Any, steps: int, batch: int, seq: int
                  ) -> list[dict[str, torch.Tensor]]:
    """`steps` batches of `batch` consecutive `seq`-token blocks of the embedded corpus."""
    text = EMBEDDED_VERSE.read_text(encoding="utf-8")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    needed = steps * batch * seq
    if len(ids) < needed:
        raise SystemExit(f"the corpus has {len(ids)} tokens, {needed} needed")
    blocks = torch.tensor(ids[:needed]).view(steps, batch, seq)
    return [{"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x.clone()}
            for x in blocks]


def run_ours(model_dir: Path, data: list[dict[str, torch.Tensor]],
             warmup: int) -> dict[str, Any]:
    """finetune-llama's defaults on CPU: its precision, recipe, LoRA, optimizer and step."""
    p = FinetuneParams.from_params({"model_path": str(model_dir),
                                    "data_path": str(EMBEDDED_VERSE),
                                    "block_size": data[0]["input_ids"].size(1), "device": "cpu"})
    precision = resolve_precision("cpu", p.load_in_4bit, p.dtype, cpu_auto_bf16=True)
    recipe = resolve_recipe(p, precision)
    base = load_model(model_dir, precision, training=True,
                      gradient_checkpointing=recipe.gradient_checkpointing,
                      attention=recipe.attention)
    model = lora_model(base, p, recipe, precision)
    params = [t for t in model.parameters() if t.requires_grad]
    adamw = optimizer(params, LR, "cpu")
    scaler = torch.amp.GradScaler("cpu", enabled=False)

    def autocast() -> contextlib.AbstractContextManager[Any]:
        return torch.autocast("cpu", dtype=precision.dtype, enabled=precision.autocast)

    losses, started = [], 0.0
    for number, batch in enumerate(data):
        if number == warmup:
            started = time.perf_counter()
        targets = int((batch["labels"][:, 1:] != -100).sum())
        loss_sum, _ = train_step(model, [batch], scale=1.0 / targets, params=params,
                                 optimizer=adamw, lr=LR * (1 - number / len(data)),
                                 scaler=scaler, autocast=autocast, max_grad_norm=1.0)
        losses.append(float(loss_sum) / targets)
    return {"seconds": time.perf_counter() - started, "losses": losses,
            "setup": f"{precision.describe()}; {recipe.describe()}; fused AdamW"}


def run_trainer(model_dir: Path, data: list[dict[str, torch.Tensor]], warmup: int,
                bf16: bool) -> dict[str, Any]:
    """Plain peft + transformers.Trainer on CPU (fp32 weights; bf16 autocast if `bf16`)."""
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    marks: dict[int, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            marks[state.global_step] = time.perf_counter()

    base = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True,
                                                dtype=torch.float32)
    torch.manual_seed(42)
    model = get_peft_model(base, LoraConfig(**LORA, lora_dropout=TRAINER_DROPOUT))
    rows = [{k: v[i] for k, v in batch.items()} for batch in data
            for i in range(batch["input_ids"].size(0))]
    with tempfile.TemporaryDirectory() as workdir:
        args = TrainingArguments(
            output_dir=workdir, per_device_train_batch_size=data[0]["input_ids"].size(0),
            max_steps=len(data), learning_rate=LR, lr_scheduler_type="linear",
            warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch",
            logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
            seed=42, use_cpu=True, bf16=bf16, dataloader_num_workers=0)
        trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=[Clock()])
        trainer.remove_callback(PrinterCallback)  # losses are read from log_history instead
        trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    return {"seconds": marks[len(data)] - marks[warmup], "losses": losses,
            "setup": f"fp32 weights{', bf16 autocast' if bf16 else ''}; LoRA dropout "
                     f"{TRAINER_DROPOUT}; adamw_torch"}


def summarize(result: dict[str, Any], timed_steps: int, tokens: int) -> dict[str, Any]:
    return {"tokens_per_s": round(tokens / result["seconds"], 1),
            "step_s": round(result["seconds"] / timed_steps, 3),
            "first_loss": round(result["losses"][0], 4),
            "last_loss": round(result["losses"][-1], 4), "setup": result["setup"]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _, threads_reason = threads.apply_threads()
    tokenizer = load_tokenizer(args.model)
    data = disco_batches(tokenizer, args.steps, args.batch, args.seq)
    runs = {"ours": lambda: run_ours(args.model, data, args.warmup),
            "trainer": lambda: run_trainer(args.model, data, args.warmup, bf16=False),
            "trainer_bf16": lambda: run_trainer(args.model, data, args.warmup, bf16=True)}
    results: dict[str, dict[str, Any]] = {}
    for _ in range(args.rounds):
        for name, run in runs.items():
            gc.collect()
            results[name] = run()
            print(f"{name}: {results[name]['seconds']:.1f} s", file=sys.stderr, flush=True)
    timed = args.steps - args.warmup
    tokens = timed * args.batch * args.seq
    rows = {name: summarize(result, timed, tokens) for name, result in results.items()}
    report = {"bench": "llama_lora_cpu", "model": str(args.model), "seq": args.seq,
              "batch": args.batch, "steps": args.steps, "timed_steps": timed,
              "threads": torch.get_num_threads(), "threads_reason": threads_reason,
              **rows,
              "ratio_vs_trainer": round(rows["ours"]["tokens_per_s"]
                                        / rows["trainer"]["tokens_per_s"], 2),
              "ratio_vs_trainer_bf16": round(rows["ours"]["tokens_per_s"]
                                             / rows["trainer_bf16"]["tokens_per_s"], 2)}
    print_table(report)
    print(json.dumps(report))
    return 0


def print_table(report: dict[str, Any]) -> None:
    print(f"{report['model']}: batch {report['batch']} x seq {report['seq']}, "
          f"{report['timed_steps']} timed steps, {report['threads']} threads")
    names = ("ours", "trainer", "trainer_bf16")
    print(f"{'metric':<14}{'lyricgen':>12}{'HF Trainer':>12}{'Trainer bf16':>14}")
    for key in ("tokens_per_s", "step_s", "first_loss", "last_loss"):
        print(f"{key:<14}" + "".join(f"{report[n][key]:>{w}}" for n, w in
                                     zip(names, (12, 12, 14), strict=True)))
    for name in names:
        print(f"  {name}: {report[name]['setup']}")
    print(f"lyricgen / HF Trainer: {report['ratio_vs_trainer']}x; "
          f"lyricgen / Trainer bf16: {report['ratio_vs_trainer_bf16']}x")


if __name__ == "__main__":
    sys.exit(main())
