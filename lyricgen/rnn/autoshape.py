"""train-rnn picks its model and batch shape for the machine it lands on (hidden_size and
batch_size left null, a `max_minutes` budget, char or bpe level).

1. Probe (`probe`): a few real training steps (forward, backward, fused AdamW, the run's
   precision) of each candidate shape on this device, on random tokens of the run's vocabulary
   size: tokens per second, over rounds of TIMED_STEPS steps until MIN_TIMED_S have passed (a
   GPU step takes milliseconds: one round of four once ranked the H200's shapes by noise).
   10-30 s on a 2-core CPU; cached per machine in $LYRICGEN_CACHE (default
   ~/.cache/lyricgen)/probe-<key>.json, the key naming the CPU (model and flags) or GPU,
   torch, threads, vocabulary size, window and candidates. Pitfall: other
   processes slow the probe as much as the run; a probe taken while the load average exceeds
   the usable cores is used for that run but not cached (delete the file to measure again).
2. Rule (`choose`, deterministic given the probe and the data size):
   - tokens a shape can use: what its measured speed buys in the budget, at most `epochs`
     passes over the training data (the run stops there), counted as *effective* tokens:
     repeated text teaches less, so epoch e > 1 is worth less than new text, by the
     data-constrained scaling law of Muennighoff et al. (2023, "Scaling Data-Constrained
     Language Models"): U unique tokens seen R extra times are worth
     U x (1 + R* x (1 - exp(-R / R*))) with R* = 15.4 (REPEAT_SCALE);
   - hidden size: the one whose effective tokens come closest to TOKENS_PER_PARAM per model
     parameter (log scale; the n-gram tables do not count: a token reads one row of each,
     RnnLM.compute_parameters). Fitted on 10-minute (GPU: 3-minute) DISCO char runs on four
     hardware classes (README "train-rnn picks its shape", effective tokens/parameter):
     bf16 on AVX512-BF16 cores, 384 at 26 beat 320 at 43 (1.833 vs 1.864 valid bpc) and
     512 at 10; fp32 on those cores, 384 at 17 beat 320 at 27 (1.872 vs 1.891); fp32 on AVX2
     cores, 384 at 16 beat 256 at 52 (1.894 vs 1.908); bf16 on an H200 in 3 minutes, 512 at
     21 (1.796) beat 384 at 35 (1.815) and 768 at 11 (1.816, overfitting: stopped early).
     Every target between 16 and 21 ranks these hidden sizes as measured: 20;
   - batch: per (hidden, precision), the smallest candidate batch that still buys those
     tokens in the budget, else the smallest within BATCH_SLACK of the fastest. A bigger batch
     learns less per token (batch 32 was 0.02-0.03 bpc behind batch 16 at every epoch of a
     10-minute CPU run; on the H200, 512 at batch 32 ended 0.008 behind batch 16 after more
     epochs), so it is taken only when the model needs its speed: on a GPU speed grows almost
     linearly with the batch, and a small corpus runs out at batch 16 already;
   - precision (when `precision: auto`): bf16/fp16 at the chosen shape only when it is at
     least LOW_PRECISION_GAIN times as fast as fp32, else fp32, the exact arithmetic. On an
     H200 at batch 16 both run at the speed of kernel launches: two fresh probes ranked them
     both ways (within 15 %), so "the faster" was a coin toss; on AVX512-BF16 cores bf16 is
     1.6x as fast and wins.
3. The choice and the probe's numbers go to the log and metrics.json (`auto_shape`); the
   checkpoint stores the resolved params, so evaluate, generate and resume never probe again.

At bpe level the rule counts characters, not tokens (`chars_per_token`): the text a shape reads
in the budget, what the char-level fit measured. Without a budget the recipe's shape is used
(DEFAULT_HIDDEN, DEFAULT_BATCH), and so at word level, where the parameters sit in the
embedding and the rule was not fitted. The rule was fitted on one-layer LSTMs; a GRU, an Elman
RNN or stacked layers are probed as the run builds them (their own speed and parameter count)
and judged by the same target.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lyricgen.io import atomic_write_json
from lyricgen.rnn.model import ModelConfig, RnnLM

DEFAULT_HIDDEN, DEFAULT_BATCH = 384, 16
TOKENS_PER_PARAM = 20.0  # effective training tokens per model parameter (module docstring)
REPEAT_SCALE = 15.4  # R*: repeats of the data beyond which more are worth little
BATCH_SLACK = 0.8  # short of the tokens, a bigger batch must be >= 1 / 0.8 times as fast
LOW_PRECISION_GAIN = 1.2  # bf16/fp16 must be this much faster than fp32 to be taken
BUDGET_EFFICIENCY = 0.92  # share of the wall clock that trains (validation, checkpoints)
CPU_HIDDEN, CPU_BATCH = (256, 384, 512), (16, 32)
GPU_HIDDEN, GPU_BATCH = (384, 512, 768, 1024), (16, 32, 64, 128, 256)
WARMUP_STEPS, TIMED_STEPS = 2, 4
MIN_TIMED_S = 0.25  # a GPU step takes milliseconds: time at least this long per shape


@dataclass(frozen=True)
class Shape:
    hidden: int
    batch: int
    precision: str


@dataclass(frozen=True)
class Measured:
    shape: Shape
    tokens_per_s: float
    parameters: int


@dataclass(frozen=True)
class Choice:
    shape: Shape
    reason: str
    table: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"hidden_size": self.shape.hidden, "batch_size": self.shape.batch,
                "precision": self.shape.precision, "reason": self.reason, "probe": self.table}


def candidates(device: torch.device, precisions: Iterable[str], world_size: int
               ) -> list[Shape]:
    """The shapes the probe measures on `device` (batches that split over the processes)."""
    hidden, batch = (GPU_HIDDEN, GPU_BATCH) if device.type == "cuda" else (CPU_HIDDEN, CPU_BATCH)
    return [Shape(h, b, p) for p in precisions for h in hidden for b in batch
            if b % world_size == 0]


def choose(measured: list[Measured], budget_s: float, world_size: int = 1, *,
           data_tokens: int, epochs: int, chars_per_token: float = 1.0) -> Choice:
    """The shape the rule above picks from probe results (tokens/s of one process) for a run
    of at most `epochs` passes over `data_tokens` training tokens of `chars_per_token`
    characters each (bpe level: the rule counts the text read, not the steps taken)."""
    cap = float(data_tokens * epochs)
    data_chars = data_tokens * chars_per_token

    def bought(m: Measured) -> float:
        return m.tokens_per_s * world_size * budget_s * BUDGET_EFFICIENCY

    def usable(m: Measured) -> float:
        return effective_tokens(min(bought(m), cap) * chars_per_token, data_chars)

    def distance(m: Measured) -> float:
        return abs(math.log(usable(m) / m.parameters / TOKENS_PER_PARAM))

    most = effective_tokens(cap * chars_per_token, data_chars)
    best_batch = [_batch_for(group, min(TOKENS_PER_PARAM * group[0].parameters, most), usable)
                  for group in _groups(measured)]
    by_hidden: dict[int, Measured] = {}
    for m in sorted(best_batch, key=_precision_score):
        by_hidden[m.shape.hidden] = m  # per hidden size, the precision that pays wins
    pick = min(by_hidden.values(), key=lambda m: (distance(m), -m.tokens_per_s))
    capped = f", capped at {epochs} epochs" if bought(pick) > cap else ""
    text = (f" ({min(bought(pick), cap) * chars_per_token / 1e6:.1f} M characters)"
            if chars_per_token != 1.0 else "")
    worth = (f", worth {usable(pick) / 1e6:.1f} M new ones"
             if min(bought(pick), cap) > data_tokens else "")
    reason = (f"hidden {pick.shape.hidden}, batch {pick.shape.batch}, {pick.shape.precision}: "
              f"{pick.tokens_per_s:,.0f} tokens/s x {world_size} process(es) buys "
              f"{bought(pick) / 1e6:.1f} M tokens in {budget_s / 60:g} min{capped}{text}"
              f"{worth} = {usable(pick) / pick.parameters:.0f} per parameter (target "
              f"{TOKENS_PER_PARAM:g})")
    table = [{**asdict(m.shape), "tokens_per_s": round(m.tokens_per_s, 1),
              "parameters": m.parameters,
              "tokens_per_parameter": round(usable(m) / m.parameters, 1)} for m in measured]
    return Choice(pick.shape, reason, table)


def _precision_score(m: Measured) -> tuple[float, bool]:
    """Speed, a low precision's divided by LOW_PRECISION_GAIN (module docstring); on a tie
    the low precision ranks higher (it reached the gain)."""
    low = m.shape.precision != "fp32"
    return m.tokens_per_s / (LOW_PRECISION_GAIN if low else 1.0), low


def effective_tokens(tokens: float, data_tokens: int) -> float:
    """What `tokens` read from `data_tokens` of unique text are worth as new text (module
    docstring): all of them for the first pass, less and less for each repeat."""
    if tokens <= data_tokens:
        return tokens
    repeats = tokens / data_tokens - 1.0
    return data_tokens * (1.0 + REPEAT_SCALE * (1.0 - math.exp(-repeats / REPEAT_SCALE)))


def _groups(measured: list[Measured]) -> list[list[Measured]]:
    """The probe results per (hidden, precision), each sorted by batch."""
    keys = sorted({(m.shape.hidden, m.shape.precision) for m in measured})
    return [sorted((m for m in measured if (m.shape.hidden, m.shape.precision) == key),
                   key=lambda m: m.shape.batch) for key in keys]


def _batch_for(group: list[Measured], wanted: float,
               usable: Callable[[Measured], float]) -> Measured:
    """The smallest batch whose usable tokens reach `wanted`, else the smallest within
    BATCH_SLACK of the fastest (`group` sorted by batch)."""
    enough = [m for m in group if usable(m) >= wanted]
    if enough:
        return enough[0]
    fastest = max(m.tokens_per_s for m in group)
    return next(m for m in group if m.tokens_per_s >= BATCH_SLACK * fastest)


def probe(shapes: list[Shape], model: ModelConfig, seq_len: int, device: torch.device,
          autocast: Callable[[str], Any]) -> list[Measured]:
    """Tokens/s of a few real training steps of each shape: the run's model (`model`: cell,
    layers, vocabulary, embedding, dropout; its hidden size replaced by each shape's) on
    windows of `seq_len`, cached per machine (module docstring). `autocast(precision)` is the
    context the trainer computes in."""
    key = _cache_key(shapes, model, seq_len, device)
    path = Path(os.environ.get("LYRICGEN_CACHE", Path.home() / ".cache" / "lyricgen")) / \
        f"probe-{key}.json"
    if path.is_file():
        cached = json.loads(path.read_text(encoding="utf-8"))
        return [Measured(Shape(**row["shape"]), row["tokens_per_s"], row["parameters"])
                for row in cached]
    busy = os.getloadavg()[0] > len(os.sched_getaffinity(0))
    results = [_measure(shape, dataclasses.replace(model, hidden_size=shape.hidden), seq_len,
                        device, autocast) for shape in shapes]
    if not (busy or os.getloadavg()[0] > len(os.sched_getaffinity(0))):
        atomic_write_json(path, [asdict(m) for m in results])
    return results


def _measure(shape: Shape, config: ModelConfig, seq_len: int, device: torch.device,
             autocast: Callable[[str], Any]) -> Measured:
    generator = torch.Generator().manual_seed(0)
    model = RnnLM(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3,
                                  fused=device.type in ("cpu", "cuda"))
    data = torch.randint(config.vocab_size, (shape.batch, seq_len + 1), generator=generator)
    inputs, targets = data[:, :-1].to(device), data[:, 1:].to(device)

    def step() -> None:
        with autocast(shape.precision):
            logits, _ = model(inputs)
            loss = F.cross_entropy(logits.reshape(-1, config.vocab_size).float(),
                                   targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(WARMUP_STEPS):
        step()
    _sync(device)
    started, steps, seconds = time.perf_counter(), 0, 0.0
    while seconds < MIN_TIMED_S:  # rounds of TIMED_STEPS, one GPU sync per round
        for _ in range(TIMED_STEPS):
            step()
        steps += TIMED_STEPS
        _sync(device)
        seconds = time.perf_counter() - started
    return Measured(shape, shape.batch * seq_len * steps / seconds, model.compute_parameters())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cache_key(shapes: list[Shape], model: ModelConfig, seq_len: int,
               device: torch.device) -> str:
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        cpu = cpu_info()
        hardware = json.dumps(cpu) if cpu else platform.processor()
    described = {k: v for k, v in model.to_dict().items() if k != "hidden_size"}
    text = json.dumps([hardware, torch.__version__, torch.get_num_threads(), described,
                       seq_len, [asdict(s) for s in shapes]], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cpu_info(fields: tuple[str, ...] = ("model name", "flags")) -> dict[str, str]:
    """`fields` of the first CPU in /proc/cpuinfo (two machines of one kind may differ:
    ml-stack notes); empty where the file cannot be read."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8").split("\n\n")[0]
    except OSError:
        return {}
    pairs = (line.split(":", 1) for line in info.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs if key.strip() in fields}
