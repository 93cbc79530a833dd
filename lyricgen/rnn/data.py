"""Truncated-BPTT batching: each token is processed once per epoch, in order.

The epoch's id stream (N tokens) is cut into `batch_size` contiguous streams of
L = (N - 1) // B predictions each: stream b holds ids[b*L : b*L + L + 1] (inputs are its first
L ids, targets its last L). Window w takes columns [w*seq_len, w*seq_len + seq_len) of every
stream (the last window may be shorter); the trainer carries the hidden state from window w to
w + 1 (detached), so every position 1..B*L of the stream is a target exactly once per epoch and
sees the whole stream before it as context. The (N - 1) - B*L < B tail tokens are never targets.

Data-parallel training (several processes, lyricgen.dist) splits the B streams: process r of
W holds streams [r*B/W, (r+1)*B/W), so W processes together see exactly the batches one process
would, and `batch_size` means the same model whatever the process count (B % W must be 0).

With `shuffle_seed` the stream is rebuilt for every epoch from the songs in a new order (a
permutation drawn from (seed, epoch), so a resumed run sees the same order): the model meets
every song once per epoch but with different neighbours and window boundaries, which
regularises a multi-epoch run on a small corpus. Without it the stream is the file's order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lyricgen.errors import LyricgenInputError
from lyricgen.io import MAX_UNMARKED_CHARS, has_marker_line, read_text_file


def split_songs(text: str, marker: str) -> list[str]:
    """`text` cut after every marker line (the line and its newline stay with the song before
    it); "".join(result) == text. A text without marker lines is one piece."""
    pieces = re.split(rf"(?<=^{re.escape(marker)}\n)", text, flags=re.MULTILINE)
    return [piece for piece in pieces if piece]


class TbpttBatches:
    """Windows over the epoch's stream; `window(i)` -> (inputs[B, T], targets[B, T]).

    `pieces` is the whole id stream (a 1-D tensor) or its songs (1-D tensors, concatenated in
    file order, or in a per-epoch order with `shuffle_seed`). Call `set_epoch(e)` when epoch e
    starts; the stream length, and so `n_windows`, is the same for every epoch. With
    `world_size` > 1 the windows hold only this `rank`'s batch_size / world_size streams.
    """

    def __init__(self, pieces: torch.Tensor | Sequence[torch.Tensor], batch_size: int,
                 seq_len: int, *, shuffle_seed: int | None = None, rank: int = 0,
                 world_size: int = 1) -> None:
        self.pieces = [pieces] if isinstance(pieces, torch.Tensor) else list(pieces)
        if any(piece.dim() != 1 for piece in self.pieces):
            raise ValueError("ids must be 1-D tensors")
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} does not split evenly over "
                             f"{world_size} processes")
        self.batch_size = batch_size
        self.rows = range(rank * batch_size // world_size, (rank + 1) * batch_size // world_size)
        self.seq_len = seq_len
        self.shuffle_seed = shuffle_seed
        self.device: torch.device | str = "cpu"
        self.stream_len = (sum(piece.numel() for piece in self.pieces) - 1) // batch_size
        if self.stream_len < 1:
            raise ValueError(f"{sum(p.numel() for p in self.pieces)} tokens are too few for "
                             f"batch_size {batch_size}")
        self.n_windows = math.ceil(self.stream_len / seq_len)
        self.set_epoch(0)

    @property
    def tokens_per_epoch(self) -> int:
        return self.batch_size * self.stream_len

    def set_epoch(self, epoch: int) -> None:
        """Build the streams of `epoch` (the file order, or the epoch's song permutation)."""
        order = (range(len(self.pieces)) if self.shuffle_seed is None else
                 np.random.default_rng([self.shuffle_seed, epoch]).permutation(len(self.pieces)))
        ids = torch.cat([self.pieces[index] for index in order])
        span = self.stream_len
        self.streams = torch.stack([ids[b * span: b * span + span + 1]
                                    for b in self.rows]).to(self.device)

    def window(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = index * self.seq_len
        stop = min(start + self.seq_len, self.stream_len)
        return self.streams[:, start:stop], self.streams[:, start + 1:stop + 1]

    def to(self, device: torch.device | str) -> TbpttBatches:
        self.device = device
        self.streams = self.streams.to(device)
        return self


def read_text(path: str | Path, key: str, marker: str = "<|fin|>") -> str:
    """A UTF-8 corpus file's text; one-line LyricgenInputError (naming path and key) when it
    is missing, empty, binary, not UTF-8, or longer than one song without any marker line."""
    text = read_text_file(Path(path), key)
    if len(text) > MAX_UNMARKED_CHARS and not has_marker_line(text, marker):
        raise LyricgenInputError(
            f"{path}: {key}: no {marker} marker line (songs end with a blank line and "
            f"{marker}, as the clean kind writes them; see its train.txt)")
    return text
