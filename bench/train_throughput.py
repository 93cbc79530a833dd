"""Training throughput of the train-rnn code path vs a bare PyTorch loop, side by side.

    python bench/train_throughput.py [--steps 150] [--repeats 2] [--threads 2] [--arch ...]

Both sides train the same shapes (the kind's default char recipe unless overridden) on the
same DISCO text with the same batch, the same truncated BPTT (hidden state carried and
detached), fused AdamW with the same betas, gradient clipping, locked dropout and the same
precision (bf16 autocast where the CPU has bf16 instructions). "ours" is
lyricgen.rnn.train.Trainer.fit() (exactly what `python -m lyricgen train-rnn` runs: schedule,
progress bar, metrics rows, the final checkpoint, metrics.json and the plot); "bare" is a
minimal hand-written loop.
Printed: tokens/s over the steps only (the median of per-interval speeds, same interval on
both sides) and over the whole call (fixed costs included), best of --repeats runs taken in
alternation (ours, bare, ours, bare...) so load from other processes hits both alike.
Goal: ours / bare >= 0.95.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lyricgen.rnn.config import TrainConfig
from lyricgen.rnn.train import Trainer, resolve_precision
from lyricgen.rnn.vocab import Vocab

DISCO = Path(__file__).resolve().parents[1].parent / "shared/corpora/disco"
INTERVAL = 10  # steps per speed sample, both sides


class BareLM(nn.Module):
    def __init__(self, arch: str, vocab: int, emb: int, hidden: int, layers: int,
                 dropout: float) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb)
        cell = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[arch]
        self.rnn = cell(emb, hidden, layers, batch_first=True,
                        dropout=dropout if layers > 1 else 0.0)
        self.dropout = dropout
        self.out = nn.Linear(hidden, vocab)

    def drop(self, x):  # locked dropout: one mask per sequence, as the kind's model
        if not self.training or self.dropout == 0:
            return x
        keep = 1 - self.dropout
        return x * x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(keep).div_(keep)

    def forward(self, x, h):
        y, h = self.rnn(self.drop(self.embedding(x)), h)
        return self.out(self.drop(y)), h


def bare_loop(config: TrainConfig, text: str, steps: int) -> tuple[float, float]:
    """(median interval tokens/s, whole-call tokens/s) of a minimal TBPTT loop."""
    start_call = time.perf_counter()
    vocab = Vocab.build(text, "char")
    ids = torch.tensor(vocab.encode(text))
    batch, seq = config.batch_size, config.seq_len
    span = (len(ids) - 1) // batch
    data = torch.stack([ids[b * span: b * span + span + 1] for b in range(batch)])
    torch.manual_seed(config.seed)
    model = BareLM(config.arch, len(vocab), config.embedding_dim, config.hidden_size,
                   config.num_layers, config.dropout)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=config.lr,
                                  betas=(0.9, config.adam_beta2), fused=True)
    precision = resolve_precision(config.precision, torch.device("cpu"))
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    hidden, position, speeds, losses = None, 0, [], []
    tick = time.perf_counter()
    for step in range(1, steps + 1):
        if position + seq > span:
            position, hidden = 0, None
        x, y = data[:, position:position + seq], data[:, position + 1:position + seq + 1]
        position += seq
        with autocast:
            logits, hidden = model(x, hidden)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
        hidden = tuple(h.detach() for h in hidden) if isinstance(hidden, tuple) else \
            hidden.detach()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        losses.append(loss.detach())
        if step % INTERVAL == 0:
            float(torch.stack(losses).mean())
            losses.clear()
            now = time.perf_counter()
            speeds.append(INTERVAL * batch * seq / (now - tick))
            tick = now
    return statistics.median(speeds), steps * batch * seq / (time.perf_counter() - start_call)


def our_loop(config: TrainConfig, steps: int) -> tuple[float, float]:
    """(median interval tokens/s from metrics.csv, whole-call tokens/s) of Trainer.fit()."""
    with tempfile.TemporaryDirectory() as out:
        run = dataclasses.replace(config, max_steps=steps, log_every=INTERVAL)
        start_call = time.perf_counter()
        metrics = Trainer(run, Path(out), progress_bar=True).fit().metrics
        whole = metrics["tokens_seen"] / (time.perf_counter() - start_call)
        rows = (Path(out) / "metrics.csv").read_text().splitlines()[2:]  # skip warm-up row
        speeds = [float(row.split(",")[4]) for row in rows if row.split(",")[4]]
    return statistics.median(speeds), whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chars", type=int, default=600_000, help="training text slice")
    parser.add_argument("--arch", default=None)
    parser.add_argument("--hidden-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seq-len", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    text = (DISCO / "train.txt").read_text(encoding="utf-8")[:args.chars]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        config = TrainConfig.from_params(dict(data=handle.name, valid_data=None, device="cpu",
                                              epochs=1000, checkpoint_every=0))
        overrides = {"arch": args.arch, "hidden_size": args.hidden_size,
                     "batch_size": args.batch_size, "seq_len": args.seq_len}
        config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v})
        ours, bare = [], []
        for _ in range(args.repeats):
            ours.append(our_loop(config, args.steps))
            bare.append(bare_loop(config, text, args.steps))
    best_ours = max(ours)
    best_bare = max(bare)
    print(f"\nshape: {config.arch} hidden {config.hidden_size} emb {config.embedding_dim} "
          f"layers {config.num_layers}, batch {config.batch_size} x seq {config.seq_len}, "
          f"{args.steps} steps, {args.threads} threads, best of {args.repeats}")
    print(f"{'':12}{'steps tok/s':>14}{'whole-call tok/s':>18}")
    print(f"{'ours':12}{best_ours[0]:>14,.0f}{best_ours[1]:>18,.0f}")
    print(f"{'bare':12}{best_bare[0]:>14,.0f}{best_bare[1]:>18,.0f}")
    print(f"{'ours/bare':12}{best_ours[0] / best_bare[0]:>14.3f}"
          f"{best_ours[1] / best_bare[1]:>18.3f}")
    print("all runs (steps tok/s): ours", [round(s) for s, _ in ours],
          "bare", [round(s) for s, _ in bare])


if __name__ == "__main__":
    main()
