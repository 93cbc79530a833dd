"""Next-token NLL of a LLaMA model over a whole text, by sliding windows (`lyricgen evaluate`).

The text (the clean step's marker format) is cut into songs (lyricgen.corpus.export
.parse_marker_corpus) and encoded as finetune-llama trains: each song with the tokenizer's
special tokens (BOS when it adds one) and an EOS (lyricgen.llama.data.encode_songs), all
concatenated into one stream. Position 0 is context, never scored: the first song's BOS, or,
for a tokenizer that adds none (SmolLM2), an EOS put in front -- what precedes every other song
in the stream, as the song-start context does for the RNN. Every later position is scored
exactly once, BOS and EOS tokens included: they are how a LLaMA spends bits on song boundaries,
where an RNN spends them on the marker characters.

Windows: at most `window` tokens are fed at once (position ids restart at 0 in each). The first
window scores its every position; each later one starts `window - stride` tokens before the
first position it scores and scores the next `stride` tokens, so every scored token sees at
least `window - stride` tokens of context (all of them near the start), at most `window - 1`.
This is the LLaMA counterpart of the RNN evaluation's burn-in; it costs window/stride forward
passes per token. Windows of equal shape run as one batch, and logits are computed only for
the scored positions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lyricgen.llama.data import encode_songs

WINDOW = 1024
STRIDE = 512
BATCH = 4


@dataclass(frozen=True)
class TokenStream:
    """Token ids (ids[0] is the unscored context) and the characters each stands for."""

    ids: list[int]
    chars: list[int]

    @property
    def scored_chars(self) -> int:
        return sum(self.chars[1:])


def song_stream(songs: list[str], tokenizer: Any) -> TokenStream:
    """The songs as one stream in finetune-llama's format, with its context token first."""
    encoded = encode_songs(songs, tokenizer)
    ids = [token for seq in encoded.ids for token in seq]
    chars = [count for seq in encoded.chars for count in seq]
    if tokenizer.bos_token_id is None or ids[0] != tokenizer.bos_token_id:
        ids, chars = [tokenizer.eos_token_id, *ids], [0, *chars]
    return TokenStream(ids, chars)


def window_plan(total: int, window: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """(begin, end, first) per window over positions 0..total-1: the window feeds ids[begin:
    end - 1] and scores positions first..end-1; together they score 1..total-1 once each."""
    if not 0 < stride < window:
        raise ValueError(f"need 0 < stride < window, got stride {stride}, window {window}")
    context = window - stride
    first = 1
    while first < total:
        begin = max(0, first - context)
        end = min(begin + window, total)
        yield begin, end, first
        first = end


@torch.no_grad()
def stream_nll(model: Any, ids: list[int], *, window: int = WINDOW, stride: int = STRIDE,
               batch_size: int = BATCH, device: str | torch.device = "cpu",
               progress: bool = False) -> float:
    """Total NLL (nats, fp64 sum of fp32 cross-entropies) of ids[1:] given what precedes each,
    by the windows of `window_plan`."""
    from tqdm import tqdm

    plan = list(window_plan(len(ids), window, stride))
    tokens = torch.tensor(ids, dtype=torch.long)
    total = torch.zeros((), dtype=torch.float64)
    bar = tqdm(total=len(ids) - 1, desc="evaluate", unit="tok", disable=not progress)
    for group in _same_shape_batches(plan, batch_size):
        inputs = torch.stack([tokens[b:e - 1] for b, e, _ in group]).to(device)
        keep = group[0][1] - group[0][2]
        targets = torch.stack([tokens[e - keep:e] for _, e, _ in group]).to(device)
        logits = model(input_ids=inputs, logits_to_keep=keep).logits
        nll = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                              reduction="sum")
        total += nll.double().cpu()
        bar.update(keep * len(group))
    bar.close()
    return float(total)


def _same_shape_batches(plan: list[tuple[int, int, int]], batch_size: int
                        ) -> Iterator[list[tuple[int, int, int]]]:
    """Consecutive windows with the same input length and scored count, batch_size at most."""
    group: list[tuple[int, int, int]] = []
    for item in plan:
        shape = (item[1] - item[0], item[1] - item[2])
        if group and (len(group) == batch_size
                      or (group[0][1] - group[0][0], group[0][1] - group[0][2]) != shape):
            yield group
            group = []
        group.append(item)
    if group:
        yield group

