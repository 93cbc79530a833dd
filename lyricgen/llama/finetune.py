"""finetune-llama kind: LoRA / QLoRA fine-tuning of a LOCAL LLaMA-family model on songs.

Inputs: params (lyricgen/llama/params.py, the schema in kindspec/registry.py); data
from the clean step's train_lyrics.jsonl / valid_lyrics.jsonl (lyricgen/llama/data.py).
Outputs in out/: adapter/ (LoRA weights, adapter_config.json, tokenizer, training_config.json
with resolved params, precision and versions), merged/ when merge: true (full weights merged
into an unquantized reload of the base, lyricgen/llama/merge.py), checkpoints/step-N/,
metrics.csv, metrics.json and loss.png. The precision policy (lyricgen/llama/load.py: bf16 on
CUDA and on CPUs with bf16 instructions) and the device-dependent recipe (lyricgen/llama/lora.py:
dropout, gradient checkpointing, attention kernel) are logged as one line each at start.

Schedule and budget (lyricgen.schedule, shared with train-rnn): linear warmup over
warmup_steps, then linear decay to 0 following the steps (epochs or max_steps) or, with
`max_minutes`, the wall clock (loading included), whichever is further along. When the budget is
spent the run stops after the current step, evaluates, saves a checkpoint and writes the adapter
(stop_reason "max_minutes" in metrics.json); run again, it finds the budget spent and only
rewrites its outputs. The elapsed time is part of the checkpoint, so a resumed budgeted run
goes on with the clock where it stopped.

Why a short custom loop and not HF Trainer: resuming must reproduce the uninterrupted run's
losses exactly, and a data-parallel run must train on the same examples as a single process.
Here both hold by construction -- data order is a pure function of (seed, epoch), dropout
noise is reseeded from (seed, step, rank) at every step, the learning rate is a function of
(step, elapsed time), the loss of a step is the token sum over every micro-batch of every rank
divided by the step's global target count -- so a checkpoint needs only adapter, optimizer and
scaler state and the elapsed seconds, and 2 ranks x batch b equal 1 rank x batch 2b up to
float summation order. (With max_minutes the rate follows the clock, so two runs are as equal
as their step times.) With Trainer the same guarantees
depend on accelerate's sampler seeding, RNG-state files per rank, batch skipping on resume and
per-device loss averaging, which are harder to see and to test. The step itself is
lyricgen/llama/step.py (bench/qlora_gpu.py times it against HF Trainer). DDP is plain torch
DistributedDataParallel (gloo on CPU, nccl on CUDA; lyricgen/dist.py); only rank 0
writes files.

Launch: `python -m lyricgen finetune-llama --config config.json` for one process;
`torchrun --nproc_per_node=N -m lyricgen finetune-llama --config config.json` for N.
Resuming is automatic: an existing out/checkpoints/step-N/ made with the same training
params (params.resume_key) and world size is continued; a different one is an input error.

Preemption (lyricgen.preempt): SIGUSR1 or SIGTERM during the loop (torchrun forwards them to
every worker when job.sh starts it with --signals-to-handle) stops training after the current
step on every rank (the ranks agree on the flag and the clock each step, so they stop at the
same step),
saves checkpoints/step-N/ and raises Preempted (exit 75); adapter/ is written only by a run
that finishes.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from kindspec.provenance import package_versions
from lyricgen import dist, threads
from lyricgen.context import RunContext
from lyricgen.errors import LyricgenInputError
from lyricgen.io import atomic_write_json, publish_dir, remove_stale_temp_files
from lyricgen.llama import checkpoint, metrics
from lyricgen.llama.data import Examples, Schedule, build_examples, read_texts
from lyricgen.llama.load import (
    Precision,
    load_model,
    load_tokenizer,
    resolve_precision,
)
from lyricgen.llama.lora import lora_model, optimizer, resolve_recipe
from lyricgen.llama.params import FinetuneParams
from lyricgen.llama.step import token_loss_sum, train_step
from lyricgen.preempt import Preempted, StopSignals
from lyricgen.schedule import LrSchedule, RunClock

PREEMPTED = "preempted"


def run(params: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Validate everything cheap first (exit 2 before any model is loaded), then train."""
    p = FinetuneParams.from_params(params)
    for key in ("data_path", "valid_path"):
        if getattr(p, key) is not None:
            try:
                read_texts(getattr(p, key))
            except LyricgenInputError as exc:
                raise LyricgenInputError(f"params: {key}: {exc}") from exc
    info = dist.env_info()
    precision = resolve_precision(p.device, p.load_in_4bit, p.dtype, info.local_rank,
                                  cpu_auto_bf16=True)
    dist.init(info, precision.device_type)
    try:
        return FinetuneRun(p, ctx, info, precision).train()
    finally:
        dist.shutdown(info)


def dropout_seed(seed: int, step: int, rank: int) -> int:
    return seed * 1_000_003 + step * 1_009 + rank


class FinetuneRun:
    """One training run: model + LoRA, optimizer, schedule, resume, loop, outputs."""

    def __init__(self, p: FinetuneParams, ctx: RunContext, info: dist.DistInfo,
                 precision: Precision) -> None:
        self.p, self.ctx, self.info, self.precision = p, ctx, info, precision
        self.clock = RunClock(info, p.max_minutes)
        self.recipe = resolve_recipe(p, precision)
        self.device = torch.device(precision.device)
        self.stop_reason: str | None = None
        self.ckpt_root = ctx.out_dir / "checkpoints"
        self.history: list[dict[str, Any]] = []
        self.tokens = 0  # next-token targets trained on, over all ranks and steps
        self.tokens_at_start = 0

    def log(self, message: str) -> None:
        if self.info.is_main:
            print(message, file=sys.stderr, flush=True)

    def train(self) -> dict[str, Any]:
        p = self.p
        self.log(self.precision.describe())
        self.log(self.recipe.describe())
        self.tokenizer = load_tokenizer(p.model_path)
        self.train_data = build_examples(p.data_path, self.tokenizer, p.block_size, p.packing)
        self.valid_data = (build_examples(p.valid_path, self.tokenizer, p.block_size, p.packing)
                           if p.valid_path else None)
        self.schedule = Schedule(len(self.train_data), p.batch_size, p.grad_accum,
                                 self.info.world_size, p.seed, p.epochs, p.max_steps)
        if self.schedule.steps_per_epoch == 0:
            raise LyricgenInputError(
                f"{p.data_path}: {len(self.train_data)} examples, fewer than one step's global "
                f"batch (batch_size x grad_accum x world size = {self.schedule.global_batch})")
        self.model = self._lora_model()
        self._optimizer()
        start = self._resume()
        started = time.perf_counter()
        self.stop_reason = self._loop(start)
        if self.stop_reason == PREEMPTED:
            raise Preempted("finetune-llama", self.clock.signal or "?", self.history[-1]["step"]
                            if self.history else start, str(checkpoint.latest(self.ckpt_root)))
        seconds = time.perf_counter() - started
        return self._finish(start, seconds)

    def _lora_model(self) -> Any:
        base = load_model(self.p.model_path, self.precision, training=True,
                          gradient_checkpointing=self.recipe.gradient_checkpointing,
                          attention=self.recipe.attention)
        return lora_model(base, self.p, self.recipe, self.precision)

    def _optimizer(self) -> None:
        self.params = [t for t in self.model.parameters() if t.requires_grad]
        self.optimizer = optimizer(self.params, self.p.lr, self.precision.device_type)
        self.lr_schedule = LrSchedule(self.p.lr, "linear", self.p.warmup_steps)
        self.scaler = torch.amp.GradScaler(self.precision.device_type,
                                           enabled=self.precision.dtype == torch.float16)

    def _meta(self) -> dict[str, Any]:
        return {"params": self.p.resume_key(), "world_size": self.info.world_size}

    def _resume(self) -> int:
        """Load the newest checkpoint that loads (if any; one warning line per newer one that
        does not); returns the number of steps already done. Rank 0 first deletes what a
        killed run left half-written (temp files, checkpoint temp dirs); complete files are
        never touched."""
        if self.info.is_main:
            remove_stale_temp_files(self.ctx.out_dir)
            checkpoint.remove_partial(self.ckpt_root)
        dist.barrier(self.info)
        found = checkpoint.load_newest(self.ckpt_root, self.model, main=self.info.is_main)
        if found is None:
            return 0
        last, state = found
        if state["meta"] != self._meta():
            old, new = state["meta"], self._meta()
            diff = sorted(k for k in {**old["params"], **new["params"]}
                          if old["params"].get(k) != new["params"].get(k))
            if old["world_size"] != new["world_size"]:
                diff.append("world size")
            raise LyricgenInputError(
                f"{last}: checkpoint made with other settings ({', '.join(diff)}); delete "
                f"{self.ckpt_root} to start over or use a new output directory")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.clock.resume(float(state["elapsed"]))
        self.history = list(state["history"])
        self.tokens = self.tokens_at_start = int(state["tokens"])
        self.log(f"resumed from {last} (step {state['step']})")
        return int(state["step"])

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(self.precision.device_type, dtype=self.precision.dtype,
                              enabled=self.precision.autocast)

    def _loop(self, start: int) -> str:
        """Optimizer steps after `start` until a stop reason (`_stop_reason`), which it
        returns; a checkpoint every save_every steps and after the last step taken."""
        from torch.nn.parallel import DistributedDataParallel

        wrapped = self.model
        if self.info.enabled:
            ids = [self.info.local_rank] if self.device.type == "cuda" else None
            wrapped = DistributedDataParallel(self.model, device_ids=ids)
        bar = tqdm(total=None if self.clock.budget else self.schedule.total_steps,
                   initial=start, desc="finetune", unit="step", mininterval=1.0,
                   disable=not self.info.is_main, file=sys.stderr)
        step = start
        with StopSignals() as stop:
            reason = self._stop_reason(step, stop)
            while reason is None:
                step += 1
                loss, grad_norm, lr = self._step(wrapped, step - 1)
                reason = self._stop_reason(step, stop)
                final = reason is not None and reason != PREEMPTED
                self.history.append(self._record(step, loss, grad_norm, lr, final))
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                if reason is not None or step % self.p.save_every == 0:
                    self._save_checkpoint(step)
        bar.close()
        if reason != PREEMPTED:
            self.log(f"finetune-llama: stopped after step {step} ({reason})")
        else:
            self.log(f"finetune-llama: SIG{self.clock.signal} received: stopped after step "
                     f"{step} of {self.schedule.total_steps}, checkpoint saved")
        return reason

    def _stop_reason(self, step: int, stop: StopSignals) -> str | None:
        """Why training ends after `step`, or None: the planned steps are done ("max_steps"
        or "epochs"), the budget is spent ("max_minutes"), or a process got a stop signal
        ("preempted": only when nothing else ends the run). Every process agrees on the clock
        and the signal first, so all stop after the same step."""
        signal_name = self.clock.agree(step, stop, self.device)
        if step >= self.schedule.total_steps:
            return "max_steps" if self.p.max_steps else "epochs"
        if self.clock.spent:
            return "max_minutes"
        return PREEMPTED if signal_name else None

    def _record(self, step: int, loss: float, grad_norm: float, lr: float,
                final: bool) -> dict[str, Any]:
        """The history row of a finished step; valid loss every eval_every steps and after
        the `final` one."""
        record = {"step": step, "epoch": round(step / self.schedule.steps_per_epoch, 4),
                  "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens": self.tokens,
                  "valid_loss": None, "valid_ppl": None, "valid_bpc": None}
        if self.valid_data is not None and (step % self.p.eval_every == 0 or final):
            record["valid_loss"], record["valid_bpc"] = self._evaluate()
            record["valid_ppl"] = metrics.perplexity(record["valid_loss"])
        return record

    def _step(self, wrapped: Any, index: int) -> tuple[float, float, float]:
        """One optimizer step (0-based `index`): returns (mean loss per target, grad norm,
        learning rate)."""
        torch.manual_seed(dropout_seed(self.p.seed, index, self.info.rank))
        lr = self.lr_schedule.lr(index, self.clock.progress(index, self.schedule.total_steps))
        targets = self.train_data.target_count(self.schedule.step_indices(index))
        batches = [{k: v.to(self.device) for k, v in self.train_data.batch(rows).items()}
                   for rows in self.schedule.micro_batches(index, self.info.rank)]
        loss_sum, grad_norm = train_step(
            wrapped, batches, scale=self.info.world_size / targets, params=self.params,
            optimizer=self.optimizer, lr=lr, scaler=self.scaler, autocast=self._autocast,
            max_grad_norm=self.p.max_grad_norm,
            no_sync=wrapped.no_sync if self.info.enabled else None)
        self.tokens += targets
        total = dist.all_reduce(loss_sum, self.info)
        return float(total) / targets, grad_norm, lr

    @torch.no_grad()
    def _evaluate(self) -> tuple[float, float]:
        """(mean loss per target token, bits per character) over the whole valid split (sharded
        over ranks), from one pass. The characters are those the scored targets stand for
        (lyricgen.llama.data: a block's first token is context, not scored, and its characters
        are not counted), so this bpc is on the scale of `lyricgen evaluate`, with less context
        (each block_size block starts cold) and so somewhat higher."""
        data: Examples = self.valid_data  # type: ignore[assignment]
        self.model.eval()
        sums = torch.zeros(3, dtype=torch.float64)
        rows = torch.arange(self.info.rank, len(data), self.info.world_size)
        for chunk in rows.split(self.p.batch_size):
            batch = {k: v.to(self.device) for k, v in data.batch(chunk).items()}
            with self._autocast():
                logits = self.model(input_ids=batch["input_ids"],
                                    attention_mask=batch["attention_mask"]).logits
            sums[0] += float(token_loss_sum(logits, batch["labels"]))
            sums[1] += data.target_count(chunk)
            sums[2] += data.char_count(chunk)
        self.model.train()
        sums = dist.all_reduce(sums, self.info)
        return float(sums[0] / sums[1]), float(sums[0] / math.log(2) / sums[2])

    def _save_checkpoint(self, step: int) -> None:
        if self.info.is_main:
            state = {"optimizer": self.optimizer.state_dict(),
                     "scaler": self.scaler.state_dict(), "history": self.history,
                     "tokens": self.tokens, "elapsed": self.clock.elapsed(),
                     "meta": self._meta()}
            checkpoint.save(self.ckpt_root, step, self.model, state, self.p.keep_checkpoints)
            metrics.write_all(self.ctx.out_dir, self.history, self._summary())
        dist.barrier(self.info)

    def _summary(self) -> dict[str, Any]:
        evals = [r["valid_loss"] for r in self.history if r["valid_loss"] is not None]
        bpcs = [r.get("valid_bpc") for r in self.history if r["valid_loss"] is not None]
        last = self.history[-1] if self.history else {}
        return {"kind": "finetune-llama", "precision": self.precision.describe(),
                "recipe": self.recipe.describe(), "threads": torch.get_num_threads(),
                "threads_reason": threads.applied().get("reason", "set by the caller"),
                "world_size": self.info.world_size, "steps": last.get("step", 0),
                "stop_reason": self.stop_reason, "elapsed_s": round(self.clock.elapsed(), 3),
                "total_steps": self.schedule.total_steps,
                "global_batch": self.schedule.global_batch, "block_size": self.p.block_size,
                "train_examples": len(self.train_data), "tokens": self.tokens,
                "final_loss": last.get("loss"), "final_valid_loss": evals[-1] if evals else None,
                "final_valid_ppl": metrics.perplexity(evals[-1]) if evals else None,
                "final_valid_bpc": bpcs[-1] if bpcs else None,
                "best_valid_loss": min(evals) if evals else None}

    def _finish(self, start: int, seconds: float) -> dict[str, Any]:
        """Rank 0: adapter (+ tokenizer, training config), metrics, merged weights if asked."""
        summary = self._summary()
        trained = self.tokens - self.tokens_at_start
        summary.update(resumed_at_step=start, run_seconds=round(seconds, 3),
                       tokens_per_second=round(trained / seconds, 1) if trained else None)
        if self.device.type == "cuda":
            summary["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated(self.device)
        if self.info.is_main:
            adapter = self._save_adapter(summary)
            metrics.write_all(self.ctx.out_dir, self.history, summary)
            if self.p.merge:
                from lyricgen.llama.merge import merge_adapter

                del self.model, self.optimizer
                merge_adapter(adapter, self.ctx.out_dir / "merged", self.p.model_path)
        return {"finetune": summary}

    def _save_adapter(self, summary: dict[str, Any]) -> Path:
        final = self.ctx.out_dir / "adapter"
        tmp = final.with_name(".adapter.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(str(tmp))
        self.tokenizer.save_pretrained(str(tmp))
        atomic_write_json(tmp / "training_config.json", {
            "params": self.p.as_dict(), "precision": self.precision.describe(),
            "recipe": self.recipe.describe(), "world_size": self.info.world_size,
            "summary": summary, "versions": package_versions()})
        return publish_dir(tmp, final)
