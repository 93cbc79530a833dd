"""Recurrent language models (Elman RNN, LSTM, GRU) over token ids, batch first.

`RnnLM(config)(tokens[B, T], hidden=None, lengths=None) -> (logits[B, T, V], hidden)`.
`hidden` is a Tensor[num_layers, B, H] (a (h, c) tuple for LSTM); None means zeros. With
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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

ARCHS = ("rnn", "lstm", "gru")
Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
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

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")

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
    """Embedding -> dropout -> stacked RNN/LSTM/GRU -> dropout -> [projection] -> logits."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim)
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
        nn.init.zeros_(self.decoder.bias)
        if config.tie_weights:
            self.decoder.weight = self.embedding.weight

    def forward(self, tokens: torch.Tensor, hidden: Hidden | None = None,
                lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, Hidden]:
        embedded = self.drop(self.embedding(tokens))
        if lengths is None:
            output, hidden = self.rnn(embedded, hidden)
        else:
            packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True,
                                          enforce_sorted=False)
            output, hidden = self.rnn(packed, hidden)
            output, _ = pad_packed_sequence(output, batch_first=True,
                                            total_length=tokens.size(1))
        output = self.drop(output)
        if self.projection is not None:
            output = self.projection(output)
        return self.decoder(output), hidden


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
