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

Characters per token (`Examples.chars`, for bits per character, lyricgen.evaluate): a token
counts the characters of the song text it completes -- how far it moves the highest end offset
the tokenizer reports (so a character split over byte-level tokens belongs to the token that
finishes it; special tokens count 0). The song's final EOS stands for the end of the song in
the clean step's marker .txt (its blank line and `<|fin|>` line, SONG_END_CHARS) plus any
trailing characters no offset covers. A song's counts therefore add up to exactly
len(text) + SONG_END_CHARS, the characters it takes in the .txt an RNN is scored on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lyricgen.corpus.export import format_marker_corpus
from lyricgen.errors import LyricgenInputError
from lyricgen.rnn.vocab import MARKER

IGNORE_INDEX = -100
SONG_END_CHARS = len(format_marker_corpus([""], MARKER))


@dataclass(frozen=True)
class Examples:
    """N examples of `block_size` tokens: input_ids, attention_mask, labels and chars (the
    characters each token stands for, see the module doc; 0 on padding), all [N, L]."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    chars: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.size(0)

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[index], "attention_mask": self.attention_mask[index],
                "labels": self.labels[index]}

    def target_count(self, index: torch.Tensor) -> int:
        """How many next-token targets the examples at `index` hold (the loss denominator)."""
        return int((self.labels[index][:, 1:] != IGNORE_INDEX).sum())

    def char_count(self, index: torch.Tensor) -> int:
        """Characters of the text those targets stand for (the bits-per-character
        denominator)."""
        scored = self.labels[index][:, 1:] != IGNORE_INDEX
        return int(self.chars[index][:, 1:][scored].sum())


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


@dataclass(frozen=True)
class EncodedSongs:
    """Token ids per song and, aligned with them, the characters each token stands for."""

    ids: list[list[int]]
    chars: list[list[int]]


def token_chars(offsets: list[tuple[int, int]], length: int) -> list[int]:
    """Characters per token from a tokenizer's (start, end) offsets into a text of `length`
    characters; the last token takes what no offset covers (see the module doc)."""
    counts, reached = [], 0
    for _, end in offsets:
        counts.append(max(0, end - reached))
        reached = max(reached, end)
    if counts:
        counts[-1] += length - reached
    return counts


def encode_songs(texts: list[str], tokenizer: Any) -> EncodedSongs:
    """Token ids per song, with the tokenizer's special tokens (BOS) and EOS appended, and the
    characters per token (EOS: SONG_END_CHARS plus uncovered trailing characters)."""
    eos = tokenizer.eos_token_id
    encoded = tokenizer(texts, add_special_tokens=True, return_offsets_mapping=True)
    all_ids, all_chars = [], []
    for text, ids, offsets in zip(texts, encoded["input_ids"], encoded["offset_mapping"],
                                  strict=True):
        ids, offsets = list(ids), [tuple(pair) for pair in offsets]
        if not ids or ids[-1] != eos:
            ids.append(eos)
            offsets.append((0, 0))
        all_ids.append(ids)
        all_chars.append(token_chars(offsets, len(text) + SONG_END_CHARS))
    return EncodedSongs(all_ids, all_chars)


def pack(songs: EncodedSongs, block_size: int) -> Examples:
    """Concatenate and cut into full blocks; at least one block is required."""
    flat = [token for seq in songs.ids for token in seq]
    blocks = len(flat) // block_size
    if blocks == 0:
        raise LyricgenInputError(f"only {len(flat)} tokens, fewer than block_size {block_size}")
    size = blocks * block_size
    ids = torch.tensor(flat[:size], dtype=torch.long).view(blocks, block_size)
    chars = torch.tensor([c for seq in songs.chars for c in seq][:size],
                         dtype=torch.int32).view(blocks, block_size)
    return Examples(ids, torch.ones_like(ids), ids.clone(), chars)


def pad_truncate(songs: EncodedSongs, block_size: int, pad_id: int) -> Examples:
    """One example per song: truncated to block_size, right-padded, -100 labels on pads."""
    ids = torch.full((len(songs.ids), block_size), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    chars = torch.zeros(ids.shape, dtype=torch.int32)
    for row, (seq, counts) in enumerate(zip(songs.ids, songs.chars, strict=True)):
        seq, counts = seq[:block_size], counts[:block_size]
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        chars[row, : len(seq)] = torch.tensor(counts, dtype=torch.int32)
        mask[row, : len(seq)] = 1
    return Examples(ids, mask, ids.masked_fill(mask == 0, IGNORE_INDEX), chars)


def build_examples(path: str | Path, tokenizer: Any, block_size: int, packing: bool) -> Examples:
    """Read, tokenize and pack (or pad) one split file."""
    songs = encode_songs(read_texts(path), tokenizer)
    try:
        if packing:
            return pack(songs, block_size)
        return pad_truncate(songs, block_size, tokenizer.pad_token_id)
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
