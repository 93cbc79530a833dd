"""Bits per character and perplexity of a language model on a text (`lyricgen evaluate`).

Definitions (the same for char and word models, so they compare):
- The model is first fed the song-start context (marker + line break, what precedes every song
  in the data), then every token of the text is scored: nothing is skipped.
- bpc = total negative log-likelihood in bits / number of characters of the text (len(text),
  markers and line breaks included); perplexity = exp(mean NLL per token) of the model's own
  tokens (so char and word perplexities do not compare; bpc does).
- For speed the token stream is scored as `streams` contiguous chunks in one batch; each chunk
  first reads the `burn_in` tokens before it as unscored context, so a chunk start loses only
  context older than `burn_in` tokens (a fraction of a percent of the exact single-stream
  figure; set streams=1 for the exact figure).
- Word models map unknown words to `<unk>`, which makes their bpc optimistic on text with
  out-of-vocabulary words (`unk_rate` reports how often).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lyricgen.errors import LyricgenInputError

STREAMS = 32
BURN_IN = 256
WINDOW = 256


@dataclass(frozen=True)
class EvalResult:
    bpc: float
    perplexity: float
    nll_bits: float
    tokens: int
    chars: int
    unk_rate: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _chunks(full: list[int], start: int, streams: int, burn_in: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """inputs, targets, score mask [S, R] for scoring full[start:] in `streams` chunks."""
    count = len(full) - start
    size = math.ceil(count / max(1, min(streams, count)))
    rows = []
    for first in range(start, len(full), size):
        stop = min(first + size, len(full))
        begin = max(0, first - 1 - burn_in)
        rows.append((full[begin:stop - 1], full[begin + 1:stop], first - begin - 1))
    width = max(len(inputs) for inputs, _, _ in rows)
    inputs = torch.zeros(len(rows), width, dtype=torch.long)
    targets = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for row, (ins, outs, skip) in enumerate(rows):
        inputs[row, :len(ins)] = torch.tensor(ins)
        targets[row, :len(outs)] = torch.tensor(outs)
        mask[row, skip:len(outs)] = True
    return inputs, targets, mask


@torch.no_grad()
def score_ids(model: torch.nn.Module, ids: list[int], context: list[int], *,
              device: torch.device | str = "cpu", streams: int = STREAMS,
              burn_in: int = BURN_IN, window: int = WINDOW,
              shard: tuple[int, int] = (0, 1)) -> float:
    """Total NLL (nats) of `ids` given `context`; `model(tokens, hidden) -> (logits, hidden)`.

    `context` must be non-empty (it predicts the first id). The model's train/eval mode is
    restored afterwards. `shard=(index, count)` scores only chunks index, index + count, ...:
    the totals of the `count` shards add up to the whole text's (data-parallel validation).
    """
    if not ids or not context:
        raise ValueError("score_ids needs at least one id and one context id")
    index, count = shard
    inputs, targets, mask = (t[index::count].to(device)
                             for t in _chunks(context + ids, len(context), streams, burn_in))
    if inputs.size(0) == 0:  # more shards than chunks: this one scores nothing
        return 0.0
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    hidden = None
    for start in range(0, inputs.size(1), window):
        logits, hidden = model(inputs[:, start:start + window], hidden)
        nll = F.cross_entropy(logits.float().transpose(1, 2), targets[:, start:start + window],
                              reduction="none")
        total += nll[mask[:, start:start + window]].double().sum()
    model.train(was_training)
    return float(total)


def evaluate_text(model: torch.nn.Module, vocab: Any, text: str, *,
                  device: torch.device | str = "cpu", streams: int = STREAMS,
                  burn_in: int = BURN_IN) -> EvalResult:
    """bpc and perplexity of `text` (see the module doc); vocab is a lyricgen.rnn Vocab."""
    ids = vocab.encode(text)
    if not ids:
        raise ValueError("cannot evaluate an empty text")
    nll = score_ids(model, ids, vocab.song_start_ids, device=device, streams=streams,
                    burn_in=burn_in)
    return eval_result(nll, ids, text)


def eval_result(nll: float, ids: list[int], text: str) -> EvalResult:
    """The metrics of a total NLL (nats) that `score_ids` gave for `ids` = encode(`text`)."""
    return EvalResult(bpc=nll / math.log(2) / len(text), perplexity=math.exp(nll / len(ids)),
                      nll_bits=nll / math.log(2), tokens=len(ids), chars=len(text),
                      unk_rate=sum(1 for i in ids if i == 0) / len(ids))


def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, device: str = "auto"
                        ) -> dict[str, Any]:
    """`lyricgen evaluate`: a train-rnn out dir / checkpoint dir / .pt file on a text file."""
    from lyricgen.rnn.checkpoint import load_model
    from lyricgen.rnn.data import read_text
    from lyricgen.rnn.model import resolve_device

    text = read_text(data, "data")
    try:
        target = resolve_device(device)
    except ValueError as exc:
        raise LyricgenInputError(f"device: {exc}") from exc
    loaded = load_model(checkpoint, target)
    result = evaluate_text(loaded.model, loaded.vocab, text, device=target)
    return {"checkpoint": str(loaded.path), "data": str(data), "level": loaded.vocab.level,
            "arch": loaded.model.config.arch, "step": loaded.checkpoint["step"],
            **result.to_dict()}


def format_report(report: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(report, ensure_ascii=False)
    return (f"{report['checkpoint']} on {report['data']}: bpc {report['bpc']:.4f}, "
            f"perplexity {report['perplexity']:.3f} per {report['level']} token "
            f"({report['tokens']} tokens, {report['chars']} chars, "
            f"unk {100 * report['unk_rate']:.2f} %)")
