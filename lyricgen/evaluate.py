"""Bits per character and perplexity of a language model on a text (`lyricgen evaluate`).

One scale for every model family: bpc = the total negative log-likelihood, in bits, that the
model's code spends on the text / len(text), the characters of the marker-format file (songs,
blank lines, `<|fin|>` marker lines and line breaks all counted). Every family is charged for
all of the file's information -- song texts and song boundaries -- each in its own encoding:

- char RNN (train-rnn checkpoint, level char): the model is first fed the song-start context
  (marker + line break, what precedes every song in the data), then every character of the
  text is scored, markers included.
- subword RNN (level bpe): the same, over the BPE tokens the training text taught
  (lyricgen.rnn.vocab); a token is the exact text it covers, so nothing is free, and a
  character the training text never had is one `<unk>` token charged its spelling as below.
  Scoring one tokenisation of the text is an upper bound on the model's probability of the
  text (other tokenisations of it also have some), so the figure is honest, if slightly high.
- word RNN (level word): the same, over word tokens (words, punctuation, line breaks, the marker
  as one token). Spaces are not tokens: they come back by rule (lyricgen.rnn.vocab; 99.3 % of
  DISCO lines round-trip), so they cost nothing. An unknown word is scored as `<unk>`, which
  hides which word it was; to keep bpc an honest upper bound every `<unk>` token is also charged
  the cost of spelling it out with a uniform code over the vocabulary's characters
  (`unk_spelling_bits`; the report says so in `unk_charge`, with `unk_bits` and `unk_rate`).
- LLaMA (a model dir with config.json, or an adapter dir with adapter_config.json whose base is
  a local model dir): the songs are encoded as finetune-llama trains on them (BOS when the
  tokenizer adds one, the song, EOS) and scored by sliding windows with context carried over
  (lyricgen.llama.score, --window/--stride); the EOS (and BOS) tokens stand for the blank line
  and marker line that end a song in the file, so the denominator is the same len(text) (for a
  file as the clean step writes it, where every song is stripped text + blank line + marker
  line; other whitespace around markers is normalised away and not counted). Byte-level
  tokenizers have no unknown tokens.

perplexity = exp(mean NLL per token) of the model's own tokens (so char, word and LLaMA
perplexities do not compare; bpc does); the `<unk>` spelling charge is not in it.

RNN scoring speed: the token stream is scored as `streams` contiguous chunks in one batch; each
chunk first reads the `burn_in` tokens before it as unscored context, so a chunk start loses
only context older than `burn_in` tokens (a fraction of a percent of the exact single-stream
figure; set streams=1 for the exact figure).
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


CODE_POINT_BITS = math.log2(0x110000)  # naming any Unicode character


@dataclass(frozen=True)
class EvalResult:
    """bpc includes `unk_bits` (the spelling charge of unknown tokens); nll_bits is the
    model's own NLL in bits; unk_rate the fraction of scored tokens that were `<unk>`."""

    bpc: float
    perplexity: float
    nll_bits: float
    tokens: int
    chars: int
    unk_rate: float
    unk_bits: float = 0.0

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


def unk_spelling_bits(vocab: Any, text: str) -> tuple[float, str]:
    """(bits, description) of spelling out every token of `text` that `vocab` maps to `<unk>`.

    The code: an alphabet of K = (characters occurring in the vocabulary's tokens) + 2 symbols
    (end of token, escape). An unknown token of n characters costs (n + 1) * log2(K) bits (its
    characters and the end symbol); each of its characters outside the alphabet costs
    log2(0x110000) bits more (the escape symbol, then the code point). This is a complete
    prefix code fixed before the text is seen, so model NLL + these bits is the length of a
    real encoding of the text: an upper bound, never an optimistic figure.
    """
    alphabet = {char for token in vocab.itos[1:] for char in token}
    size = len(alphabet) + 2
    unknown = [token for token in vocab.tokenize(text) if vocab.stoi.get(token, 0) == 0]
    total = sum((len(token) + 1) * math.log2(size)
                + sum(char not in alphabet for char in token) * CODE_POINT_BITS
                for token in unknown)
    return total, (f"uniform spelling: (characters + 1) x log2({size}) bits per <unk> token "
                   f"({len(alphabet)} vocabulary characters + end + escape), "
                   f"+{CODE_POINT_BITS:.2f} bits per character outside them")


def evaluate_text(model: torch.nn.Module, vocab: Any, text: str, *,
                  device: torch.device | str = "cpu", streams: int = STREAMS,
                  burn_in: int = BURN_IN) -> EvalResult:
    """bpc and perplexity of `text` (see the module doc); vocab is a lyricgen.rnn Vocab.
    Unknown tokens are charged their spelling (unk_spelling_bits)."""
    ids = vocab.encode(text)
    if not ids:
        raise ValueError("cannot evaluate an empty text")
    nll = score_ids(model, ids, vocab.song_start_ids, device=device, streams=streams,
                    burn_in=burn_in)
    return eval_result(nll, ids, text, unk_spelling_bits(vocab, text)[0])


def eval_result(nll: float, ids: list[int], text: str, unk_bits: float = 0.0) -> EvalResult:
    """The metrics of a total NLL (nats) that `score_ids` gave for `ids` = encode(`text`)."""
    return result_of(nll, tokens=len(ids), chars=len(text),
                     unknown=sum(1 for i in ids if i == 0), unk_bits=unk_bits)


def result_of(nll: float, *, tokens: int, chars: int, unknown: int, unk_bits: float = 0.0
              ) -> EvalResult:
    """EvalResult of a total NLL in nats over `tokens` scored tokens standing for `chars`
    characters, `unknown` of them `<unk>` (charged `unk_bits` more)."""
    nll_bits = nll / math.log(2)
    return EvalResult(bpc=(nll_bits + unk_bits) / chars, perplexity=math.exp(nll / tokens),
                      nll_bits=nll_bits, tokens=tokens, chars=chars,
                      unk_rate=unknown / tokens, unk_bits=unk_bits)


def evaluate_model(model_path: str | Path, data: str | Path, device: str = "auto", *,
                   window: int | None = None, stride: int | None = None,
                   base: str | Path | None = None) -> dict[str, Any]:
    """`lyricgen evaluate`: an RNN checkpoint, a LLaMA model dir or an adapter dir on a text
    file in the marker format; window/stride/base apply to LLaMA only."""
    from lyricgen.generation import model_kind_of
    from lyricgen.rnn.data import read_text

    text = read_text(data, "data")
    if model_kind_of(Path(model_path)) == "rnn":
        return evaluate_checkpoint(model_path, data, device, text=text)
    return evaluate_llama(model_path, data, text, device, window=window, stride=stride,
                          base=base)


def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, device: str = "auto",
                        text: str | None = None) -> dict[str, Any]:
    """A train-rnn out dir / checkpoint dir / .pt file on a text file (read unless `text`)."""
    from lyricgen.rnn.checkpoint import load_model
    from lyricgen.rnn.data import read_text
    from lyricgen.rnn.model import resolve_device

    if text is None:
        text = read_text(data, "data")
    try:
        target = resolve_device(device)
    except ValueError as exc:
        raise LyricgenInputError(f"device: {exc}") from exc
    loaded = load_model(checkpoint, target)
    result = evaluate_text(loaded.model, loaded.vocab, text, device=target)
    charge = (unk_spelling_bits(loaded.vocab, text)[1] if result.unk_bits
              else "none (no unknown tokens)")
    return {"family": "rnn", "model": str(loaded.path), "checkpoint": str(loaded.path),
            "data": str(data), "level": loaded.vocab.level, "arch": loaded.model.config.arch,
            "step": loaded.checkpoint["step"], **result.to_dict(), "unk_charge": charge}


def evaluate_llama(model_path: str | Path, data: str | Path, text: str, device: str = "auto", *,
                   window: int | None = None, stride: int | None = None,
                   base: str | Path | None = None) -> dict[str, Any]:
    """A LLaMA model dir or adapter dir on the marker-format `text` (lyricgen.llama.score).
    window defaults to min(1024, the model's max_position_embeddings), stride to window // 2."""
    from lyricgen.corpus.export import parse_marker_corpus
    from lyricgen.llama.load import adapter_base, is_adapter_dir, load_for_inference
    from lyricgen.llama.score import WINDOW, song_stream, stream_nll
    from lyricgen.rnn.vocab import MARKER

    songs = [body for _, body in parse_marker_corpus(text, MARKER)]
    if not songs:
        raise LyricgenInputError(f"{data}: data: no song text")
    model, tokenizer, precision = load_for_inference(model_path, device, base=base)
    longest = int(getattr(model.config, "max_position_embeddings", WINDOW))
    window = window or min(WINDOW, longest)
    stride = stride or window // 2
    if not 0 < stride < window <= longest:
        raise LyricgenInputError(f"window: need 0 < stride < window <= {longest} (the model's "
                                 f"max_position_embeddings), got stride {stride}, "
                                 f"window {window}")
    stream = song_stream(songs, tokenizer)
    nll = stream_nll(model, stream.ids, window=window, stride=stride, device=precision.device,
                     progress=True)
    unk = tokenizer.unk_token_id
    result = result_of(nll, tokens=len(stream.ids) - 1, chars=stream.scored_chars,
                       unknown=sum(1 for i in stream.ids[1:] if i == unk))
    adapter = is_adapter_dir(model_path)
    return {"family": "llama", "model": str(model_path),
            "base": str(base or adapter_base(Path(model_path))) if adapter else None,
            "data": str(data), "level": "llama", "window": window, "stride": stride,
            "songs": len(songs), "device": precision.device,
            "dtype": str(precision.dtype).removeprefix("torch."), **result.to_dict(),
            "unk_charge": "none (byte-level tokens, or no unknown tokens)" if not result.unk_rate
            else "none: unknown tokens are scored as the tokenizer's unk token"}


def format_report(report: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(report, ensure_ascii=False)
    charge = (f", {report['unk_bits'] / report['chars']:.4f} bpc of it the <unk> spelling "
              "charge" if report["unk_bits"] else "")
    return (f"{report['model']} on {report['data']}: bpc {report['bpc']:.4f}, "
            f"perplexity {report['perplexity']:.3f} per {report['level']} token "
            f"({report['tokens']} tokens, {report['chars']} chars, "
            f"unk {100 * report['unk_rate']:.2f} %{charge})")
