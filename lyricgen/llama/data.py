"""Songs (the clean step's *_lyrics.jsonl, key "text") -> fixed-length causal-LM examples.

Every song is tokenized with the tokenizer's own special tokens (LLaMA 3 prepends BOS) and ends
with EOS, so the model learns where a song stops. Then either
- packing on: all songs are concatenated and cut into `block_size` blocks (the tail shorter
  than a block is dropped); every position is a real token, or
- packing off: one song per example, truncated to `block_size` or right-padded; the attention
  mask is 0 on padding and labels are -100 there.
Labels are the input ids (the model shifts them): `Examples.labels` marks ignored positions.
Pitfall: the pad id may equal EOS (LLaMA 3 has no pad token), so padding is only ever known
from the attention mask.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lyricgen.errors import LyricgenInputError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Examples:
    """N examples of `block_size` tokens: input_ids, attention_mask, labels (all [N, L])."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.size(0)

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[index], "attention_mask": self.attention_mask[index],
                "labels": self.labels[index]}

    def target_count(self, index: torch.Tensor) -> int:
        """How many next-token targets the examples at `index` hold (the loss denominator)."""
        return int((self.labels[index][:, 1:] != IGNORE_INDEX).sum())


def read_texts(path: str | Path, key: str = "text") -> list[str]:
    """The non-empty `key` strings of a JSONL file, one record per line; a bad line is a
    one-line LyricgenInputError naming file:line and key."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError as exc:
        raise LyricgenInputError(f"{path}: no such file") from exc
    except UnicodeDecodeError as exc:
        raise LyricgenInputError(f"{path}: not UTF-8 ({exc.reason})") from exc
    texts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record: Any = json.loads(line)
        except ValueError as exc:
            raise LyricgenInputError(f"{path}:{number}: invalid JSON ({exc.msg})") from exc
        value = record.get(key) if isinstance(record, dict) else None
        if not isinstance(value, str):
            raise LyricgenInputError(f"{path}:{number}: {key}: missing or not a string")
        if value.strip():
            texts.append(value)
    if not texts:
        raise LyricgenInputError(f"{path}: no songs (no non-empty {key!r} values)")
    return texts


def encode_songs(texts: list[str], tokenizer: Any) -> list[list[int]]:
    """Token ids per song, with the tokenizer's special tokens (BOS) and EOS appended."""
    eos = tokenizer.eos_token_id
    encoded = tokenizer(texts, add_special_tokens=True)["input_ids"]
    return [ids if ids and ids[-1] == eos else [*ids, eos] for ids in encoded]


def pack(sequences: list[list[int]], block_size: int) -> Examples:
    """Concatenate and cut into full blocks; at least one block is required."""
    flat = [token for seq in sequences for token in seq]
    blocks = len(flat) // block_size
    if blocks == 0:
        raise LyricgenInputError(f"only {len(flat)} tokens, fewer than block_size {block_size}")
    ids = torch.tensor(flat[: blocks * block_size], dtype=torch.long).view(blocks, block_size)
    return Examples(ids, torch.ones_like(ids), ids.clone())


def pad_truncate(sequences: list[list[int]], block_size: int, pad_id: int) -> Examples:
    """One example per sequence: truncated to block_size, right-padded, -100 labels on pads."""
    ids = torch.full((len(sequences), block_size), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(sequences):
        seq = seq[:block_size]
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return Examples(ids, mask, ids.masked_fill(mask == 0, IGNORE_INDEX))


def build_examples(path: str | Path, tokenizer: Any, block_size: int, packing: bool) -> Examples:
    """Read, tokenize and pack (or pad) one split file."""
    sequences = encode_songs(read_texts(path), tokenizer)
    try:
        if packing:
            return pack(sequences, block_size)
        return pad_truncate(sequences, block_size, tokenizer.pad_token_id)
    except LyricgenInputError as exc:
        raise LyricgenInputError(f"{path}: {exc}") from exc


@dataclass(frozen=True)
class Schedule:
    """Which examples each optimizer step, micro-batch and rank sees; a pure function of the
    seed, so a resumed run and runs on different world sizes see the same data.

    Epoch e visits examples in `torch.randperm(n)` order seeded with seed + e. A step takes the
    next `global_batch = batch_size * grad_accum * world_size` of them (an epoch's tail that
    fills no whole step is skipped); micro-batch m of rank r is the slice number
    m * world_size + r of `batch_size` examples. So 2 ranks x batch b and 1 rank x batch 2b
    train on exactly the same examples per step.
    """

    examples: int
    batch_size: int
    grad_accum: int
    world_size: int
    seed: int
    epochs: int
    max_steps: int | None = None

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.grad_accum * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return self.examples // self.global_batch

    @property
    def total_steps(self) -> int:
        return self.max_steps if self.max_steps else self.epochs * self.steps_per_epoch

    def order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.examples, generator=generator)

    def step_indices(self, step: int) -> torch.Tensor:
        """All examples of 0-based optimizer step `step`, over every rank and micro-batch."""
        epoch, position = divmod(step, self.steps_per_epoch)
        start = position * self.global_batch
        return self.order(epoch)[start:start + self.global_batch]

    def micro_batches(self, step: int, rank: int) -> list[torch.Tensor]:
        chunks = self.step_indices(step).split(self.batch_size)
        return [chunks[m * self.world_size + rank] for m in range(self.grad_accum)]
