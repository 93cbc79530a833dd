"""A character bigram LM behind lyricgen.verse.compose's LineModel protocol, for tests.

Counted (add-one) from a real text in a fraction of a second, deterministic, and fast enough
to compose many poems: its line bodies are pseudo-Spanish, its last words come from the
lexicon, so every rule of compose (meter, rhyme, stanzas, repeats) can be checked on it.
"""

from __future__ import annotations

import torch


class BigramLines:
    """A character bigram LM (add-one counts of a text) behind the LineModel protocol."""

    def __init__(self, text: str) -> None:
        self.itos = sorted(set(text) | {"\n", " "})
        self.stoi = {c: i for i, c in enumerate(self.itos)}
        ids = torch.tensor([self.stoi[c] for c in text])
        counts = torch.ones(len(self.itos), len(self.itos))
        counts.index_put_((ids[:-1], ids[1:]), torch.ones(len(ids) - 1), accumulate=True)
        self.table = counts.log()
        self.device = torch.device("cpu")
        self.prompts: list[str] = []

    def pieces(self) -> list[str]:
        return list(self.itos)

    def banned_ids(self) -> list[int]:
        return [self.stoi[c] for c in "<|>" if c in self.stoi]

    def encode_ending(self, text: str) -> list[int] | None:
        return [self.stoi[c] for c in text] if all(c in self.stoi for c in text) else None

    def start(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        self.prompts = prompts
        state = torch.tensor([self.stoi[(p or "\n")[-1]] for p in prompts])
        return state, self.table[state]

    def advance(self, state: torch.Tensor, tokens: torch.Tensor, active: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inactive rows keep their state and get zero logits, as the protocol allows (the
        RNN backend does the same): compose must not rely on them."""
        state = torch.where(active, tokens, state)
        return state, torch.where(active[:, None], self.table[state], 0.0)

    def select(self, state: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return state[rows]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.itos[i] for i in ids)

    def continuation(self, row: int, ids: list[int]) -> str:
        return self.decode(ids).rstrip()
