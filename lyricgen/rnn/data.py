"""Truncated-BPTT batching: each token is processed once per epoch, in order.

The id stream (N tokens) is cut into `batch_size` contiguous streams of L = (N - 1) // B
predictions each: stream b holds ids[b*L : b*L + L + 1] (inputs are its first L ids, targets its
last L). Window w takes columns [w*seq_len, w*seq_len + seq_len) of every stream (the last
window may be shorter); the trainer carries the hidden state from window w to w + 1 (detached),
so every position 1..B*L of the stream is a target exactly once per epoch and sees the whole
stream before it as context. The (N - 1) - B*L < B tail tokens are never targets.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from lyricgen.errors import LyricgenInputError
from lyricgen.io import MAX_UNMARKED_CHARS, has_marker_line, read_text_file


class TbpttBatches:
    """Windows over `ids` for truncated BPTT; `window(i)` -> (inputs[B, T], targets[B, T])."""

    def __init__(self, ids: torch.Tensor, batch_size: int, seq_len: int) -> None:
        if ids.dim() != 1:
            raise ValueError("ids must be a 1-D tensor")
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.stream_len = (ids.numel() - 1) // batch_size
        if self.stream_len < 1:
            raise ValueError(f"{ids.numel()} tokens are too few for batch_size {batch_size}")
        span = self.stream_len
        self.streams = torch.stack([ids[b * span: b * span + span + 1]
                                    for b in range(batch_size)])
        self.n_windows = math.ceil(span / seq_len)

    @property
    def tokens_per_epoch(self) -> int:
        return self.batch_size * self.stream_len

    def window(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = index * self.seq_len
        stop = min(start + self.seq_len, self.stream_len)
        return self.streams[:, start:stop], self.streams[:, start + 1:stop + 1]

    def to(self, device: torch.device | str) -> TbpttBatches:
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
