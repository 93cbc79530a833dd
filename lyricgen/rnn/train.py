"""The `train-rnn` kind: a char-, subword- (BPE) or word-level RNN/LSTM/GRU language model with
truncated BPTT (levels: lyricgen.rnn.vocab).

`run(params, ctx)` trains on `params["data"]` (songs separated by a blank line and the marker
line) and writes into ctx.out_dir: checkpoint/ (see lyricgen.rnn.checkpoint), metrics.csv,
metrics.json (final + best) and curves.png.

The model (lyricgen.rnn.model) reads each token's embedding plus hashed embeddings of the
2..`ngram_order`-grams ending at it (order 4, the default: 1.833 valid bpc on DISCO after 10
minutes on a 2-core fp32 CPU, against 1.876 for the plain input in the same bench run; README).

Training (lyricgen.rnn.data): each epoch processes every token once as `batch_size` contiguous
streams read in windows of `seq_len`; the hidden state is carried between windows (detached)
and reset at each epoch start. With `shuffle_songs` every epoch concatenates the songs in a
new seeded order. AdamW (weight decay on matrices only), gradient clipping,
warmup + cosine/linear decay following steps or, with `max_minutes`, the wall clock
(lyricgen.schedule). Validation (bits per character + perplexity, lyricgen.evaluate, so
a word model's unknown valid words are charged their spelling there too) runs after every
epoch and every `eval_every` steps; `patience` validations without a new best stop the run.
When `max_minutes` of wall clock (data loading and validations included) are spent the run
stops, validates and checkpoints. CUDA uses autocast (bf16 where supported, else fp16
with a GradScaler); CPU uses bf16 autocast where the cores have bf16 instructions, else fp32
(`precision` overrides either). Master weights, optimizer state and validation stay fp32.

Resumption: a run started again in an out dir that holds checkpoint/last.pt continues from
it (model, optimizer, scaler, RNG, carried hidden state, position in the data) and produces
the same per-step losses as an uninterrupted run. That identity holds for step-driven
schedules; with `max_minutes` the learning rate follows the clock, so a resumed run differs.
When last.pt does not load, one warning line says why and the run resumes from previous.pt,
the checkpoint before it (lyricgen.checkpoints).
Params other than max_steps, checkpoint_every, log_every and device must equal the
checkpoint's, or the run refuses to start (one error line).

Data parallelism (lyricgen.dist): under torchrun (WORLD_SIZE > 1) each process trains on its
batch_size / world_size of the streams (lyricgen.rnn.data), DistributedDataParallel averages the
gradients (gloo on CPU, nccl on CUDA), and validation scores a share of the valid text per
process. `batch_size` is the global batch, so W processes train the model one process would
(up to dropout masks and float summation order). The processes agree on the clock and on stop
signals every CLOCK_SYNC_STEPS steps (lyricgen.schedule.RunClock: one tiny all-reduce), so the
learning rate and the stop decision are the same everywhere. Only rank 0 writes files; a
checkpoint gathers every process's hidden state and RNG, and a run resumes only with the same
process count. It pays with several GPUs or many CPU cores; on 2 cores it does not
(bench/rnn_data_parallel.py: the gradient all-reduce over gloo costs about what the second
process gains).

Preemption (lyricgen.preempt): SIGUSR1 or SIGTERM during the loop stops it after the current
step with stop_reason "preempted": last.pt is saved (no extra validation, as for max_steps, so
the resumed run stays identical), outputs are written and `run` raises Preempted (exit 75).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from lyricgen import dist, threads
from lyricgen import precision as precision_policy
from lyricgen.errors import LyricgenInputError
from lyricgen.evaluate import EvalResult, eval_result, score_ids, unk_spelling_bits
from lyricgen.io import atomic_write_json, remove_stale_temp_files
from lyricgen.params import check_world_size
from lyricgen.plots import save_curves
from lyricgen.precision import compute_dtype, short_name
from lyricgen.preempt import Preempted, StopSignals
from lyricgen.rnn import autoshape
from lyricgen.rnn.autoshape import (
    CPU_BATCH,
    DEFAULT_BATCH,
    DEFAULT_HIDDEN,
    GPU_BATCH,
    candidates,
    choose,
    probe,
)
from lyricgen.rnn.checkpoint import (
    BEST,
    CHECKPOINT_DIR,
    FORMAT,
    LAST,
    PREVIOUS,
    load_resume_point,
    save_checkpoint,
    write_sidecars,
)
from lyricgen.rnn.config import RESUME_FREE, TrainConfig
from lyricgen.rnn.data import TbpttBatches, read_text, split_songs
from lyricgen.rnn.metrics import MetricsCsv
from lyricgen.rnn.model import (
    ModelConfig,
    RnnLM,
    count_parameters,
    detach_hidden,
    hidden_to,
    resolve_device,
)
from lyricgen.rnn.vocab import Vocab
from lyricgen.schedule import LrSchedule, RunClock

PREEMPTED = "preempted"
CLOCK_SYNC_STEPS = 8


@dataclass
class TrainState:
    """Everything besides model/optimizer/scaler that a checkpoint must restore."""

    step: int = 0
    epoch: int = 0
    window: int = 0
    hidden: Any = None
    best: dict[str, Any] | None = None
    bad_evals: int = 0
    last_val_step: int = -1
    last_val: dict[str, Any] | None = None
    elapsed: float = 0.0
    tokens_seen: int = 0
    stop_reason: str | None = None


@dataclass
class TrainResult:
    """What `Trainer.fit` returns: the losses of the steps this call ran, and metrics.json."""

    step_losses: list[float] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


def resolve_precision(name: str, device: torch.device) -> str:
    """"fp32", "bf16" or "fp16" for the `precision` param on `device` (auto: the policy of
    lyricgen.precision, bf16 on CPUs that compute it natively); fp16 needs CUDA, and bf16 on
    CPU needs bf16 instructions: without them oneDNN's LSTM refuses bf16 on AVX2-only cores
    (a RuntimeError at the first step) and emulates it slower than fp32 on AVX-512 ones."""
    if name == "fp16" and device.type != "cuda":
        raise LyricgenInputError("params: precision: fp16 needs a CUDA device (use bf16)")
    if name == "bf16" and device.type == "cpu" and not precision_policy.cpu_has_native_bf16():
        raise LyricgenInputError("params: precision: bf16 needs a CPU with bf16 instructions "
                                 "(avx512_bf16 or AMX) and this one has none: use auto or fp32")
    return short_name(compute_dtype(name, device.type, cpu_auto_bf16=True))


class Trainer:
    """One training run in `out_dir` (fresh, or resumed from out_dir/checkpoint/last.pt)."""

    def __init__(self, config: TrainConfig, out_dir: Path, *, progress_bar: bool = True) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / CHECKPOINT_DIR
        self.progress_bar = progress_bar
        self.resume_path: Path | None = None  # the checkpoint this run resumed from
        self.dist = dist.env_info()
        self.clock = RunClock(self.dist, config.max_minutes, sync_every=CLOCK_SYNC_STEPS)
        self.is_main = self.dist.is_main
        self.train_text = read_text(config.data, "data")
        self.data_sha256 = hashlib.sha256(self.train_text.encode("utf-8")).hexdigest()
        self.valid_text = (read_text(config.valid_data, "valid_data")
                           if config.valid_data else None)
        try:
            self.device = resolve_device(config.device)
        except ValueError as exc:
            raise LyricgenInputError(f"params: device: {exc}") from exc
        self.precision = resolve_precision(config.precision, self.device)
        check_world_size("train-rnn", config.to_dict(), self.dist.world_size)
        dist.init(self.dist, self.device.type)
        if self.dist.enabled and self.device.type == "cuda":  # one GPU per local rank
            self.device = torch.device("cuda", self.dist.local_rank)
        resume = self._load_resume_point()
        self.vocab = (Vocab.from_dict(resume["vocab"]) if resume else
                      Vocab.build(self.train_text, config.level, config.min_count,
                                  config.marker, config.lowercase, config.vocab_size))
        self.requested = config
        self.songs = [torch.tensor(ids, dtype=torch.long) for ids in
                      self.vocab.encode_all(split_songs(self.train_text, config.marker))]
        self.train_tokens = sum(song.numel() for song in self.songs)
        self.config = config = self._resolve_shape(resume)
        self.batches = self._make_batches()
        torch.manual_seed(config.seed)
        self.model_config = self._model_config(config.hidden_size)
        self.model = RnnLM(self.model_config).to(self.device)
        if self.dist.rank:  # same initial weights everywhere, own dropout masks
            torch.manual_seed(config.seed + 7919 * self.dist.rank)
        self.optimizer = self._make_optimizer()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.schedule = LrSchedule(config.lr, config.lr_schedule, config.warmup_steps,
                                   config.min_lr_ratio)
        self.total_steps = config.epochs * self.batches.n_windows
        self.state = TrainState()
        self.metrics = MetricsCsv(self.out_dir / "metrics.csv")
        self.valid_ids = self.vocab.encode(self.valid_text) if self.valid_text else []
        self.valid_unk_bits = (unk_spelling_bits(self.vocab, self.valid_text)[0]
                               if self.valid_text else 0.0)
        if resume:
            self._restore(resume)
            if self.is_main:
                print(f"train-rnn: resuming from {self.resume_path} at step "
                      f"{self.state.step} (epoch {self.state.epoch}, window "
                      f"{self.state.window})", file=sys.stderr)
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.metrics.truncate_after(self.state.step if resume else -1)
            write_sidecars(self.ckpt_dir, self.vocab, self.model_config, config.to_dict())

    # --- setup -------------------------------------------------------------------------------

    def _resolve_shape(self, resume: dict[str, Any] | None) -> TrainConfig:
        """The params with hidden_size / batch_size filled in: from the checkpoint when
        resuming, else by lyricgen.rnn.autoshape when left null under a budget (char or bpe
        level), else the recipe's shape. Sets self.auto_shape (None or what the probe chose)."""
        config, self.auto_shape = self.config, None
        if resume is not None:
            resolved = resume.get("resolved", resume["params"])
            self.auto_shape = resume.get("auto_shape")
            self.precision = resume.get("precision", self.precision)
            return dataclasses.replace(config, hidden_size=resolved["hidden_size"],
                                       batch_size=resolved["batch_size"])
        if config.hidden_size is not None and config.batch_size is not None:
            return config
        if config.max_minutes is None or config.level == "word":
            return dataclasses.replace(config, hidden_size=config.hidden_size or DEFAULT_HIDDEN,
                                       batch_size=config.batch_size or DEFAULT_BATCH)
        choice = self._probe_shape(config)
        self.auto_shape, self.precision = choice, choice["precision"]
        if self.is_main:
            print(f"train-rnn: auto shape: {choice['reason']}", file=sys.stderr, flush=True)
        return dataclasses.replace(config, hidden_size=choice["hidden_size"],
                                   batch_size=choice["batch_size"])

    def _probe_shape(self, config: TrainConfig) -> dict[str, Any]:
        """Rank 0 probes and chooses; every process takes its choice."""
        choice = None
        if self.is_main:
            precisions = [self.precision]
            if config.precision == "auto" and self.precision != "fp32":
                precisions.append("fp32")  # does the low precision really pay here?
            shapes = [shape for shape in candidates(self.device, precisions,
                                                    self.dist.world_size)
                      if config.hidden_size in (None, shape.hidden)
                      and config.batch_size in (None, shape.batch)]
            if config.hidden_size is not None and not shapes:  # an explicit unusual size
                shapes = [autoshape.Shape(config.hidden_size, b, p) for p in precisions
                          for b in (CPU_BATCH if self.device.type == "cpu" else GPU_BATCH)]
            measured = probe(shapes, self._model_config(DEFAULT_HIDDEN), config.seq_len,
                             self.device, self._autocast_for)
            choice = choose(measured, config.max_minutes * 60.0, self.dist.world_size,
                            data_tokens=self.train_tokens, epochs=config.epochs,
                            chars_per_token=len(self.train_text) / self.train_tokens
                            ).to_dict()
        return dist.all_gather_object(choice, self.dist)[0]

    def _model_config(self, hidden_size: int) -> ModelConfig:
        """The run's model (cell, layers, vocabulary, ...) at `hidden_size`."""
        config = self.config
        return ModelConfig(config.arch, len(self.vocab), config.embedding_dim, hidden_size,
                           config.num_layers, config.dropout, config.tie_weights,
                           config.ngram_order, config.ngram_buckets)

    def _load_resume_point(self) -> dict[str, Any] | None:
        if self.is_main:
            remove_stale_temp_files(self.ckpt_dir)  # a kill during a save leaves these
            remove_stale_temp_files(self.out_dir)  # metrics.json / .csv / curves.png temps
        found = load_resume_point(self.ckpt_dir, main=self.is_main)
        if found is None:
            return None
        path, payload = found
        self.resume_path = path
        old, new = payload["params"], self.config.to_dict()  # as asked, before any probe
        for key in sorted(set(old) | set(new)):
            if key not in RESUME_FREE and old.get(key) != new.get(key):
                raise LyricgenInputError(
                    f"{path}: {key}: checkpoint was trained with {old.get(key)!r}, params say "
                    f"{new.get(key)!r}; use a new out dir or the same params to resume")
        if payload["data_sha256"] != self.data_sha256:
            raise LyricgenInputError(f"{self.config.data}: data: the file changed since "
                                     f"{path} was written; use a new out dir to train on it")
        written_by = payload.get("world_size", 1)
        if written_by != self.dist.world_size:
            raise LyricgenInputError(
                f"{path}: world_size: written by {written_by} process(es), this run has "
                f"{self.dist.world_size}; resume with the same processes_per_node x nodes")
        return payload

    def _make_batches(self) -> TbpttBatches:
        config = self.config
        try:
            return TbpttBatches(self.songs, config.batch_size, config.seq_len,
                                shuffle_seed=config.seed if config.shuffle_songs else None,
                                rank=self.dist.rank, world_size=self.dist.world_size,
                                ).to(self.device)
        except ValueError as exc:
            raise LyricgenInputError(f"{self.config.data}: data: {exc}") from exc

    def _data_parallel(self, model: RnnLM) -> torch.nn.Module:
        """The module the training step calls: `model` itself, or DDP around it (a collective:
        rank 0's weights are broadcast). Keep it no longer than the loop: a DDP object that
        outlives destroy_process_group can abort the process at interpreter exit (gloo)."""
        if not self.dist.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = list(self.model.parameters())
        groups = [{"params": [p for p in params if p.dim() >= 2],
                   "weight_decay": self.config.weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        fused = self.device.type in ("cpu", "cuda")  # one kernel per step: ~3 % faster on CPU
        betas = (0.9, self.config.adam_beta2)
        return torch.optim.AdamW(groups, lr=self.config.lr, betas=betas, fused=fused)

    def _restore(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model_state"])
        self.optimizer.load_state_dict(payload["optimizer_state"])
        if payload["scaler_state"] and self.scaler.is_enabled():  # fp16 run resumed as fp16
            self.scaler.load_state_dict(payload["scaler_state"])
        rng = payload["rng_ranks"][self.dist.rank] if self.dist.enabled else payload["rng"]
        torch.set_rng_state(rng["torch"])
        if self.device.type == "cuda" and rng["cuda"] is not None:
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        state = TrainState(**{key: payload[key] for key in TrainState.__dataclass_fields__})
        state.hidden = hidden_to(_hidden_rows(state.hidden, self.batches.rows), self.device)
        self.state = state
        self.batches.set_epoch(state.epoch)
        self.clock.resume(state.elapsed)

    # --- checkpoints -------------------------------------------------------------------------

    def _payload(self) -> dict[str, Any]:
        """The checkpoint; every process must call it (it gathers their hidden states and RNG
        states), only rank 0's result is complete."""
        state = self.state
        rng = {"torch": torch.get_rng_state(),
               "cuda": (torch.cuda.get_rng_state(self.device)
                        if self.device.type == "cuda" else None)}
        gathered = dist.all_gather_object((hidden_to(state.hidden, "cpu"), rng), self.dist)
        return {
            "format": FORMAT, "model_config": self.model_config.to_dict(),
            "vocab": self.vocab.to_dict(), "params": self.requested.to_dict(),
            "resolved": self.config.to_dict(), "auto_shape": self.auto_shape,
            "precision": self.precision,
            "model_state": self.model.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "scaler_state": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": rng,
            **{key: getattr(state, key) for key in TrainState.__dataclass_fields__},
            "hidden": _cat_hidden([hidden for hidden, _ in gathered]),
            "elapsed": self.elapsed(), "data_sha256": self.data_sha256,
            "world_size": self.dist.world_size,
            "rng_ranks": [rank_rng for _, rank_rng in gathered] if self.dist.enabled else None,
        }

    def _save(self, *names: str) -> None:
        payload = self._payload()
        if not self.is_main:
            return
        for name in names:
            save_checkpoint(payload, self.ckpt_dir / name,
                            previous=self.ckpt_dir / PREVIOUS if name == LAST else None)

    # --- the loop ----------------------------------------------------------------------------

    @property
    def stop_signal(self) -> str | None:
        """"USR1" or "TERM" once a process received one (agreed over processes)."""
        return self.clock.signal

    def elapsed(self) -> float:
        return self.clock.elapsed()

    def _stop_reason(self, stop: StopSignals) -> str | None:
        """Why training ends now, or None; a signal counts only when nothing else ends it."""
        self.clock.agree(self.state.step, stop, self.device)
        config, state = self.config, self.state
        if state.epoch >= config.epochs:
            return "epochs"
        if self.valid_text and config.patience > 0 and state.bad_evals >= config.patience:
            return "early_stopping"
        if self.clock.spent:
            return "max_minutes"
        if config.max_steps is not None and state.step >= config.max_steps:
            return "max_steps"
        if self.stop_signal:
            return PREEMPTED
        return None

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return self._autocast_for(self.precision)

    def _autocast_for(self, precision: str) -> contextlib.AbstractContextManager[Any]:
        if precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=compute_dtype(
            precision, self.device.type, cpu_auto_bf16=True))

    def _train_step(self, forward: torch.nn.Module, inputs: torch.Tensor,
                    targets: torch.Tensor) -> torch.Tensor:
        """One optimizer step on one window through `forward` (the model or its DDP wrapper);
        returns the (detached) mean loss tensor."""
        state = self.state
        lr = self.schedule.lr(state.step, self.clock.progress(state.step, self.total_steps))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self._autocast():
            logits, hidden = forward(inputs, state.hidden)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(),
                                   targets.reshape(-1))
        state.hidden = detach_hidden(hidden)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        state.step += 1
        state.window += 1
        state.tokens_seen += targets.numel() * self.dist.world_size
        return loss.detach()

    def fit(self) -> TrainResult:
        """Train until epochs, early stopping, max_minutes, max_steps or a stop signal
        (SIGUSR1/SIGTERM: stop_reason "preempted"); write all outputs."""
        config, state = self.config, self.state
        result = TrainResult()
        pending: list[torch.Tensor] = []
        interval = _Interval(time.monotonic(), state.tokens_seen)
        bar = tqdm(total=None if self.clock.budget else self.total_steps, initial=state.step,
                   disable=not (self.progress_bar and self.is_main),
                   desc=f"train-rnn {config.arch}/{config.level}", unit="step",
                   mininterval=0.5 if sys.stderr.isatty() else 30.0)
        forward = self._data_parallel(self.model)
        try:  # a failed checkpoint write ends the bar's line before the error
            with StopSignals() as stop:
                while (reason := self._stop_reason(stop)) is None:
                    pending.append(self._train_step(forward, *self.batches.window(state.window)))
                    bar.update()
                    epoch_done = state.window == self.batches.n_windows
                    if epoch_done:
                        state.epoch, state.window, state.hidden = state.epoch + 1, 0, None
                        self.batches.set_epoch(state.epoch)
                    if state.step % config.log_every == 0 or epoch_done:
                        self._log_interval(pending, interval, result, bar)
                    if epoch_done or (config.eval_every and state.step % config.eval_every == 0):
                        self._validate_and_save()
                        interval = _Interval(time.monotonic(), state.tokens_seen)
                    elif config.checkpoint_every and state.step % config.checkpoint_every == 0:
                        self._save(LAST)
            del forward
            if pending:
                self._log_interval(pending, interval, result, bar)
        finally:
            bar.close()
        state.stop_reason = reason
        if reason not in ("max_steps", PREEMPTED) and state.last_val_step != state.step:
            self._validate_and_save()
        else:  # a pause: no extra validation, so a resumed run stays identical
            self._save(LAST)
        if self.is_main:
            result.metrics = self._write_outputs()
        dist.barrier(self.dist)  # nobody exits (torchrun would stop rank 0) before rank 0 wrote
        return result

    def _log_interval(self, pending: list[torch.Tensor], interval: _Interval,
                      result: TrainResult, bar: tqdm) -> None:
        mean_over_ranks = dist.all_reduce(torch.stack(pending).float(), self.dist)
        losses = (mean_over_ranks / self.dist.world_size).tolist()
        pending.clear()
        result.step_losses.extend(losses)
        now = time.monotonic()
        speed = (self.state.tokens_seen - interval.tokens) / max(now - interval.start, 1e-9)
        interval.start, interval.tokens = now, self.state.tokens_seen
        lr = self.optimizer.param_groups[0]["lr"]
        mean_loss = sum(losses) / len(losses)
        if not self.is_main:
            return
        self.metrics.append(step=self.state.step, epoch=self._epoch_position(),
                            train_loss=mean_loss, lr=lr, tokens_per_s=speed,
                            elapsed=self.elapsed())
        bar.set_postfix(loss=f"{mean_loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{speed:.0f}",
                        refresh=False)

    def _epoch_position(self) -> float:
        return self.state.epoch + self.state.window / self.batches.n_windows

    def _validate_and_save(self) -> None:
        """Validate (when there is valid data), track the best, write last.pt (+ best.pt)."""
        state = self.state
        state.last_val_step = state.step
        names = [LAST]
        if self.valid_text is not None:
            result = self._validate()
            state.last_val = {"step": state.step, "bpc": result.bpc, "ppl": result.perplexity}
            if state.best is None or result.bpc < state.best["bpc"]:
                state.best = dict(state.last_val)
                state.bad_evals = 0
                names.append(BEST)
            else:
                state.bad_evals += 1
            self._log_validation(result)
        self._save(*names)

    def _validate(self) -> EvalResult:
        """The valid text's metrics; each process scores its share of the text."""
        nll = score_ids(self.model, self.valid_ids, self.vocab.song_start_ids,
                        device=self.device, shard=(self.dist.rank, self.dist.world_size))
        total = dist.all_reduce(torch.tensor(nll, dtype=torch.float64, device=self.device),
                                    self.dist)
        return eval_result(float(total), self.valid_ids, self.valid_text or "",
                           self.valid_unk_bits)

    def _log_validation(self, result: EvalResult) -> None:
        if not self.is_main:
            return
        self.metrics.append(step=self.state.step, epoch=self._epoch_position(),
                            val_bpc=result.bpc, val_ppl=result.perplexity,
                            elapsed=self.elapsed())

    # --- outputs -----------------------------------------------------------------------------

    def _write_outputs(self) -> dict[str, Any]:
        state, rows = self.state, self.metrics.read()
        train_rows = [r for r in rows if r["train_loss"]]
        chars_per_token = len(self.train_text) / self.train_tokens
        final_loss = float(train_rows[-1]["train_loss"]) if train_rows else None
        speeds = [float(r["tokens_per_s"]) for r in train_rows if r["tokens_per_s"]]
        metrics = {
            "final": {"step": state.step, "epoch": self._epoch_position(),
                      "train_loss": final_loss,
                      "train_bpc": (final_loss / math.log(2) / chars_per_token
                                    if final_loss is not None else None),
                      "val_bpc": state.last_val["bpc"] if state.last_val else None,
                      "val_ppl": state.last_val["ppl"] if state.last_val else None},
            "best": state.best, "stop_reason": state.stop_reason,
            "elapsed_s": self.elapsed(), "tokens_seen": state.tokens_seen,
            "tokens_per_s_median": sorted(speeds)[len(speeds) // 2] if speeds else None,
            "tokens_per_epoch": self.batches.tokens_per_epoch,
            "windows_per_epoch": self.batches.n_windows,
            "vocab_size": len(self.vocab), "parameters": count_parameters(self.model),
            "device": str(self.device), "precision": self.precision,
            "threads": torch.get_num_threads(),
            "threads_reason": threads.applied().get("reason", "set by the caller"),
            "world_size": self.dist.world_size,
            "params": self.config.to_dict(), "auto_shape": self.auto_shape,
        }
        atomic_write_json(self.out_dir / "metrics.json", metrics)
        self._plot(rows)
        return metrics

    def _plot(self, rows: list[dict[str, str]]) -> None:
        def series(column: str) -> tuple[list[float], list[float]]:
            picked = [(float(r["step"]), float(r[column])) for r in rows if r[column]]
            return [x for x, _ in picked], [y for _, y in picked]

        save_curves(self.out_dir / "curves.png",
                    [("train loss (nats/token)", {"train": series("train_loss")}),
                     ("validation bits per character", {"valid": series("val_bpc")})],
                    title=f"train-rnn {self.config.arch} / {self.config.level}")


@dataclass
class _Interval:
    start: float
    tokens: int


def _hidden_rows(hidden: Any, rows: range) -> Any:
    """The carried hidden state of streams `rows` (this process's share of a checkpoint's)."""
    if hidden is None:
        return None
    if isinstance(hidden, tuple):
        return tuple(h[:, rows.start:rows.stop] for h in hidden)
    return hidden[:, rows.start:rows.stop]


def _cat_hidden(parts: list[Any]) -> Any:
    """Every process's hidden state (in rank order) as one state over all streams."""
    if parts[0] is None:
        return None
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(layer, dim=1) for layer in zip(*parts, strict=True))
    return torch.cat(parts, dim=1)


def run(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Kind entry point: train, write outputs into ctx.out_dir, return a provenance summary.
    Raises Preempted (exit 75) after saving last.pt when a stop signal ended training."""
    config = TrainConfig.from_params(params)
    trainer = Trainer(config, ctx.out_dir)
    try:
        metrics = trainer.fit().metrics
    finally:
        dist.shutdown(trainer.dist)
    if trainer.state.stop_reason == PREEMPTED:
        raise Preempted("train-rnn", trainer.stop_signal or "?", trainer.state.step,
                        str(trainer.ckpt_dir / LAST))
    if not trainer.is_main:
        return {}
    return {"train_rnn": {key: metrics[key] for key in
                          ("stop_reason", "best", "final", "device", "precision", "parameters",
                           "vocab_size")}}
