"""Recurrent language models (Elman RNN, LSTM, GRU) over token ids, batch first.

`RnnLM(config)(tokens[B, T], hidden=None, lengths=None) -> (logits[B, T, V], hidden)`.
`hidden` is a Tensor[num_layers, B, H] (a (h, c) tuple for LSTM), followed in a tuple by the
recent tokens [N-1, B] when the model has n-gram tables (below); None means zeros. Every part
has the rows in dim 1, so rows are selected, concatenated and split the same way. With
`lengths` (LongTensor[B], right-padded rows) the rows are packed, so the returned hidden is each
row's state after its own last real token and padded positions never touch it; their logits
are zeros.

Weight tying shares the embedding matrix with the output layer; when hidden_size differs from
embedding_dim a linear projection hidden -> embedding_dim sits before the output layer.
Dropout on the embeddings and on the top layer's outputs is locked (variational, as in
AWD-LSTM): one mask per sequence and feature, shared by every time step of a window. It
regularises a recurrent model at least as well as per-element dropout, and on CPU it is much
cheaper: drawing a [B, T, H] Bernoulli mask took ~10 % of a training step, a [B, 1, H] one costs
nothing. Between stacked layers torch's own (per-element) `dropout=` applies.

N-gram input embeddings (`ngram_order` N > 1): the input at position t is the token's
embedding plus, for n = 2..N, a row of order n's table chosen by hashing the n tokens ending at
t (tokens t-n+1..t) into `ngram_buckets` rows (hashed n-gram embeddings, as fastText's
subword buckets). The tables are lookups, nearly free per token, and hand the recurrence the
local spelling it would otherwise spend steps and updates on (on DISCO a char model of the
same speed learns far faster; README). The last N-1 tokens then travel in the hidden state
(`recent`, [N-1, B], oldest first; id 0 before the first token), so a text cut into calls
gives the same logits as one call. The tables start at zero: the model starts as a plain one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

ARCHS = ("rnn", "lstm", "gru")
Hidden = torch.Tensor | tuple[torch.Tensor, ...]
HASH_PRIME, HASH_MOD = 1_000_003, 2_147_483_647  # polynomial hash of an n-gram's token ids
_RNN_CLASSES: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    vocab_size: int
    embedding_dim: int
    hidden_size: int
    num_layers: int = 1
    dropout: float = 0.0
    tie_weights: bool = False
    ngram_order: int = 1  # 1: no n-gram tables (checkpoints written before they existed)
    ngram_buckets: int = 8192

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.ngram_order < 1 or self.ngram_buckets < 1:
            raise ValueError("ngram_order and ngram_buckets must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LockedDropout(nn.Module):
    """Dropout with one mask per (sequence, feature), broadcast over time: x is [B, T, D]."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty(x.size(0), 1, x.size(2), dtype=x.dtype, device=x.device)
        return x * mask.bernoulli_(keep).div_(keep)


class RnnLM(nn.Module):
    """Embedding [+ n-gram embeddings] -> dropout -> stacked RNN/LSTM/GRU -> dropout ->
    [projection] -> logits."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim)
        self.ngrams = nn.ModuleList(nn.Embedding(config.ngram_buckets, config.embedding_dim)
                                    for _ in range(config.ngram_order - 1))
        self.drop = LockedDropout(config.dropout)
        self.rnn = _RNN_CLASSES[config.arch](
            config.embedding_dim, config.hidden_size, config.num_layers, batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0)
        needs_projection = config.tie_weights and config.hidden_size != config.embedding_dim
        self.projection = (nn.Linear(config.hidden_size, config.embedding_dim)
                           if needs_projection else None)
        out_features = config.embedding_dim if config.tie_weights else config.hidden_size
        self.decoder = nn.Linear(out_features, config.vocab_size)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        for table in self.ngrams:
            nn.init.zeros_(table.weight)
        nn.init.zeros_(self.decoder.bias)
        if config.tie_weights:
            self.decoder.weight = self.embedding.weight

    def forward(self, tokens: torch.Tensor, hidden: Hidden | None = None,
                lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, Hidden]:
        cell, recent = self._split_hidden(hidden, tokens)
        history = None if recent is None else torch.cat([recent.t(), tokens], dim=1)
        embedded = self.drop(self._embed(tokens, history))
        if lengths is None:
            output, cell = self.rnn(embedded, cell)
        else:
            packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True,
                                          enforce_sorted=False)
            output, cell = self.rnn(packed, cell)
            output, _ = pad_packed_sequence(output, batch_first=True,
                                            total_length=tokens.size(1))
        output = self.drop(output)
        if self.projection is not None:
            output = self.projection(output)
        if history is None:
            return self.decoder(output), cell
        parts = cell if isinstance(cell, tuple) else (cell,)
        return self.decoder(output), (*parts, _last_tokens(history, len(self.ngrams), lengths))

    def _split_hidden(self, hidden: Hidden | None, tokens: torch.Tensor
                      ) -> tuple[Hidden | None, torch.Tensor | None]:
        """(the recurrent cell's state or None, recent tokens [N-1, B] or None without
        n-gram tables)."""
        if not self.ngrams:
            return hidden, None
        if hidden is None:
            return None, tokens.new_zeros(len(self.ngrams), tokens.size(0))
        assert isinstance(hidden, tuple)
        *cell, recent = hidden
        return (tuple(cell) if len(cell) > 1 else cell[0]), recent

    def _embed(self, tokens: torch.Tensor, history: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings plus each order's hashed n-gram embedding (module doc);
        `history` [B, N-1 + T] is the recent tokens followed by `tokens` (None: no tables)."""
        embedded = self.embedding(tokens)
        if history is None:
            return embedded
        length, code = tokens.size(1), tokens
        for back, table in enumerate(self.ngrams, start=1):  # order back + 1
            start = len(self.ngrams) - back
            code = (code * HASH_PRIME + history[:, start:start + length] + 1) % HASH_MOD
            embedded = embedded + table(code % self.config.ngram_buckets)
        return embedded

    def compute_parameters(self) -> int:
        """Parameters a token's step multiplies through: all but the n-gram tables (each
        token reads one row of each)."""
        return count_parameters(self) - sum(table.weight.numel() for table in self.ngrams)


def _last_tokens(history: torch.Tensor, keep: int, lengths: torch.Tensor | None
                 ) -> torch.Tensor:
    """The `keep` latest tokens [keep, B] of `history` [B, keep + T] (each row up to its
    length)."""
    if lengths is None:
        return history[:, -keep:].t().contiguous()
    ends = lengths.to(history.device)[:, None] + torch.arange(keep, device=history.device)
    return history.gather(1, ends).t().contiguous()


def detach_hidden(hidden: Hidden | None) -> Hidden | None:
    """Cut the graph at a window boundary (truncated BPTT) keeping the values."""
    if hidden is None:
        return None
    if isinstance(hidden, tuple):
        return tuple(h.detach() for h in hidden)  # type: ignore[return-value]
    return hidden.detach()


def hidden_to(hidden: Hidden | None, device: torch.device | str) -> Hidden | None:
    if hidden is None:
        return None
    if isinstance(hidden, tuple):
        return tuple(h.to(device) for h in hidden)  # type: ignore[return-value]
    return hidden.to(device)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def resolve_device(name: str = "auto") -> torch.device:
    """auto: CUDA when available, else CPU. Asking for cuda without one is a ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda requested but torch sees no CUDA device")
    return torch.device(name)
