"""Per-row next-token sampling shared by the RNN and LLaMA generators.

`sample_next(logits[B, V], temperatures[B], top_k, top_p, generator) -> ids[B]` draws one token
per row of a batch in one call: each row has its own temperature, the top-k / top-p filters are
shared by the batch. A row whose temperature is 0 (or below) is decoded greedily (argmax of its
raw logits), whatever top_k / top_p say.

Pitfalls:
- `generator` must live on the same device as `logits` (torch.Generator(device=logits.device));
  one generator serves the whole batch, so row i's draw depends on the other rows: with a fixed
  seed the batch is reproducible, a single row taken alone is not the same draw.
- Filtering happens after temperature scaling (top-p on the tempered distribution), the usual
  order in Hugging Face's samplers.
- Logits may hold -inf (tokens banned by the caller, e.g. `<unk>`); every row must keep at least
  one finite logit.
"""

from __future__ import annotations

import torch

__all__ = ["filter_logits", "sample_next"]


def filter_logits(logits: torch.Tensor, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Return a copy of logits[B, V] with everything outside top-k / the top-p nucleus at -inf.

    top_k: keep the k largest logits per row (None or 0: no limit; ties at the k-th value are
    kept). top_p in (0, 1]: keep the smallest set of most likely tokens whose probability sums
    to at least top_p (the most likely token always stays). None or 1.0: no nucleus filter.
    """
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    out = logits.clone()
    if top_k and top_k < out.size(-1):
        kth = torch.topk(out, top_k, dim=-1).values[..., -1:]
        out = out.masked_fill(out < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(out, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits.float(), dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs
        drop_sorted = mass_before >= top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out = out.masked_fill(drop, float("-inf"))
    return out


def sample_next(logits: torch.Tensor, temperatures: torch.Tensor, top_k: int | None,
                top_p: float | None, generator: torch.Generator) -> torch.Tensor:
    """One token id per row: logits[B, V] (any float dtype), temperatures[B] -> LongTensor[B]."""
    if logits.dim() != 2 or temperatures.shape != logits.shape[:1]:
        raise ValueError(f"expected logits [B, V] and temperatures [B], got "
                         f"{tuple(logits.shape)} and {tuple(temperatures.shape)}")
    logits = logits.float()
    temps = temperatures.to(device=logits.device, dtype=torch.float32)
    greedy = temps <= 0
    choice = logits.argmax(dim=-1)
    if bool(greedy.all()):
        return choice
    safe = torch.where(greedy, torch.ones_like(temps), temps)
    scaled = filter_logits(logits / safe.unsqueeze(-1), top_k, top_p)
    probs = torch.softmax(scaled, dim=-1)
    drawn = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return torch.where(greedy, choice, drawn)
