"""Batched sampling from a trained RNN language model (`RnnGenerator`).

All rows of a call are generated together: one batched forward pass per step, each row with its
own prompt and temperature (lyricgen.sampling.sample_next). Prompts of different lengths are fed
in one packed pass, so each row's hidden state is taken right after its own last prompt token.
Every prompt is preceded by the song-start context (marker + line break), as songs are in the
training data, so an empty prompt starts a new song.

Output contract (shared with LlamaGenerator): `generate` returns one string per row, the
continuation only (the prompt is not repeated). With `stop_at_marker=True` a row ends when it
produces the song marker; the marker and the whitespace before it are not returned. A row that
reaches `max_tokens` (characters at char level, subwords at bpe level, words/punctuation/line
breaks at word level) is returned as is. At word level the continuation starts with the space
that detokenisation puts between the prompt and the first new word, so `prompt + output` reads
correctly. `<unk>` is never sampled.

Bpe level heals the prompt's last token: a prompt that stops inside a word or after a space
("Bajo la lu", "Quiero ") ends on a token the model rarely saw in that place (in the data
" luna" is one token, and a space comes with the word after it). The last prompt token is
taken back and the first new token must begin with its text, so the model itself completes it
(" luna", " lunas", ...; it counts as one of `max_tokens`); the continuation still starts right
after the prompt's text. Verse (`line_model`) reads prompts as they are: end them at a word.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lyricgen.rnn.checkpoint import load_model
from lyricgen.rnn.model import Hidden, RnnLM, resolve_device
from lyricgen.rnn.vocab import Vocab
from lyricgen.sampling import sample_next


class RnnGenerator:
    """Generator over a trained RnnLM; build it with `from_checkpoint`."""

    model_kind = "rnn"

    def __init__(self, model: RnnLM, vocab: Vocab, device: torch.device,
                 source: Path | None = None) -> None:
        self.model = model.eval()
        self.vocab = vocab
        self.device = device
        self.source = source
        self._lines: RnnLines | None = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> RnnGenerator:
        """Load from a train-rnn out dir, its checkpoint/ dir or a .pt file (best.pt first)."""
        target = resolve_device(device)
        loaded = load_model(path, target)
        return cls(loaded.model, loaded.vocab, target, loaded.path)

    @torch.inference_mode()
    def generate(self, prompts: list[str], temperatures: list[float], *, max_tokens: int,
                 top_k: int | None = None, top_p: float | None = None, seed: int = 42,
                 stop_at_marker: bool = True) -> list[str]:
        """One continuation per (prompt, temperature) row; see the module doc for the contract.
        Temperature 0 decodes that row greedily. Same seed and inputs give the same outputs."""
        if len(prompts) != len(temperatures) or not prompts:
            raise ValueError(f"need as many temperatures as prompts (>= 1), got "
                             f"{len(prompts)} prompts and {len(temperatures)} temperatures")
        if max_tokens < 0:
            raise ValueError("max_tokens must be >= 0")
        prompt_ids = [self.vocab.encode(prompt) for prompt in prompts]
        healed = [self._heal(ids) for ids in prompt_ids]
        logits, hidden = self._read_prompts([ids for ids, _ in healed])
        for row, (_, allowed) in enumerate(healed):
            if allowed is not None:
                logits[row, ~allowed] = float("-inf")
        temps = torch.tensor(temperatures, dtype=torch.float32, device=self.device)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        marker = self.vocab.marker_ids
        outputs: list[list[int]] = [[] for _ in prompts]
        done = [False] * len(prompts)
        for _ in range(max_tokens):
            logits[:, 0] = float("-inf")  # never emit <unk>
            chosen = sample_next(logits, temps, top_k, top_p, generator).tolist()
            for row, token in enumerate(chosen):
                if not done[row]:
                    outputs[row].append(token)
                    done[row] = stop_at_marker and outputs[row][-len(marker):] == marker
            if all(done):
                break
            step_logits, hidden = self.model(
                torch.tensor(chosen, device=self.device).unsqueeze(1), hidden)
            logits = step_logits[:, 0].float()
        return [self._continuation(read, out, stop_at_marker and finished, len(marker),
                                   head=self.vocab.decode(ids))
                for ids, (read, _), out, finished
                in zip(prompt_ids, healed, outputs, done, strict=True)]

    def _heal(self, ids: list[int]) -> tuple[list[int], torch.Tensor | None]:
        """(ids the model reads, mask of the allowed first tokens or None): at bpe level the
        last prompt token is taken back when longer tokens begin with its text (module doc)."""
        if self.vocab.level != "bpe" or not ids:
            return ids, None
        last = self.vocab.itos[ids[-1]]
        allowed = torch.tensor([token.startswith(last) for token in self.vocab.itos],
                               device=self.device)
        allowed[0] = False
        if int(allowed.sum()) < 2:
            return ids, None
        return ids[:-1], allowed

    def _read_prompts(self, prompt_ids: list[list[int]]) -> tuple[torch.Tensor, object]:
        """Run all prompts (after the song-start context) in one packed pass; returns each
        row's next-token logits [B, V] and the hidden state after its last prompt token."""
        rows = [self.vocab.song_start_ids + ids for ids in prompt_ids]
        lengths = torch.tensor([len(row) for row in rows])
        padded = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long)
        for index, row in enumerate(rows):
            padded[index, :len(row)] = torch.tensor(row)
        logits, hidden = self.model(padded.to(self.device), None, lengths)
        last = logits[torch.arange(len(rows), device=logits.device), lengths.to(logits.device) - 1]
        return last.float(), hidden

    def line_model(self) -> RnnLines:
        """This generator as lyricgen.verse.compose's LineModel (one per generator)."""
        if self._lines is None:
            self._lines = RnnLines(self)
        return self._lines

    def _continuation(self, prompt: list[int], generated: list[int], strip_marker: bool,
                      marker_len: int, head: str | None = None) -> str:
        """The text `generated` adds after `head` (the prompt's text; by default `prompt`'s,
        longer when `_heal` took the prompt's last token back for `generated` to redo)."""
        if strip_marker:
            generated = generated[:-marker_len]
        head = self.vocab.decode(prompt) if head is None else head
        text = self.vocab.decode(prompt + generated)[len(head):]
        return text.rstrip() if strip_marker else text


class RnnLines:
    """lyricgen.verse.compose.LineModel over an RnnGenerator: the state is the RNN's hidden
    state (h, or (h, c) for an LSTM, [layers, rows, hidden]; with n-gram tables the recent
    tokens [N-1, rows] after them: every part has the rows in dim 1). Word level: a word
    token's piece is " word" (detokenisation puts a space before it in a line); char and bpe
    level: a token's piece is its text. `<unk>` and the song marker are never sampled."""

    def __init__(self, generator: RnnGenerator) -> None:
        self.generator = generator
        self.vocab = generator.vocab
        self.device = generator.device
        self.prompt_ids: list[list[int]] = []

    def pieces(self) -> list[str]:
        if self.vocab.level != "word":  # a char or bpe token is the exact text it covers
            return list(self.vocab.itos)
        return [f" {t}" if t[:1].isalnum() and t != self.vocab.marker else t
                for t in self.vocab.itos]

    def banned_ids(self) -> list[int]:
        marker = self.vocab.marker_ids
        return [0, marker[0]] if self.vocab.level == "char" else [0, *marker]

    def encode_ending(self, text: str) -> list[int] | None:
        ids = self.vocab.encode(text.lstrip() if self.vocab.level == "word" else text)
        return ids if ids and 0 not in ids else None

    @torch.inference_mode()
    def start(self, prompts: list[str]) -> tuple[Hidden, torch.Tensor]:
        self.prompt_ids = [self.vocab.encode(prompt) for prompt in prompts]
        logits, hidden = self.generator._read_prompts(self.prompt_ids)
        return hidden, logits

    @torch.inference_mode()
    def advance(self, state: Hidden, tokens: torch.Tensor, active: torch.Tensor
                ) -> tuple[Hidden, torch.Tensor]:
        """Runs the model on the active rows only (finished candidates cost nothing); the
        inactive rows keep their state and get zero logits."""
        rows = active.nonzero()[:, 0]
        parts = state if isinstance(state, tuple) else (state,)
        out, new = self.generator.model(tokens[rows, None],
                                        self._pack([p.index_select(1, rows) for p in parts]))
        new_parts = new if isinstance(new, tuple) else (new,)
        merged = tuple(p.index_copy(1, rows, n) for p, n in zip(parts, new_parts, strict=True))
        logits = out.new_zeros(len(tokens), out.size(-1), dtype=torch.float32)
        logits[rows] = out[:, 0].float()
        return self._pack(list(merged)), logits

    @staticmethod
    def _pack(parts: list[torch.Tensor]) -> Hidden:
        return tuple(parts) if len(parts) > 1 else parts[0]  # type: ignore[return-value]

    def select(self, state: Hidden, rows: torch.Tensor) -> Hidden:
        if isinstance(state, tuple):
            return tuple(part.index_select(1, rows) for part in state)  # type: ignore[return-value]
        return state.index_select(1, rows)

    def decode(self, ids: list[int]) -> str:
        return self.vocab.decode(ids)

    def continuation(self, row: int, ids: list[int]) -> str:
        return self.generator._continuation(self.prompt_ids[row], ids, False, 0).rstrip()
