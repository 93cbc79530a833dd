"""Batched sampling from a LLaMA model: `LlamaGenerator.from_path(path).generate(...)`.

`path` is a merged model dir, a base model dir, or an adapter dir (adapter_config.json; its
base_model_name_or_path, or the explicit `base`, must be a local model dir). An adapter on an
unquantized base is merged in memory for speed; on a 4-bit base it stays a PeftModel.

`generate` runs ALL rows as one batch: prompts are LEFT-padded (position ids follow the
attention mask, so a row's continuation does not depend on how much padding it got), then one
token per step for every row with a KV cache, drawn by lyricgen.sampling.sample_next with the
row's own temperature (0 = greedy) and the shared top-k / top-p. A row stops at EOS (not
included in its text); the loop stops when every row has or after max_tokens.
Pitfall: one torch.Generator(seed) serves the batch, so a row's sample depends on the other
rows: the whole batch is reproducible for a fixed seed, a row taken alone is not the same draw.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from lyricgen.llama.load import load_for_inference
from lyricgen.sampling import sample_next


class LlamaGenerator:
    model_kind = "llama"

    def __init__(self, model: Any, tokenizer: Any, device: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self._lines: LlamaLines | None = None

    @classmethod
    def from_path(cls, path: str | Path, device: str = "auto", *, base: str | Path | None = None,
                  load_in_4bit: bool = False) -> LlamaGenerator:
        """Load a model dir or an adapter dir (with its base) for generation."""
        model, tokenizer, precision = load_for_inference(
            path, device, base=base, load_in_4bit=load_in_4bit, padding_side="left")
        return cls(model, tokenizer, precision.device)

    def _prompt_batch(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ids and mask; an empty prompt becomes BOS (EOS when there is none)."""
        tok = self.tokenizer
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        rows = [ids or [start] for ids in tok(prompts, add_special_tokens=True)["input_ids"]]
        width = max(len(ids) for ids in rows)
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(rows):
            ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq):] = 1
        return ids.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def generate(self, prompts: list[str], temperatures: list[float], *, max_tokens: int,
                 top_k: int | None = None, top_p: float | None = None,
                 seed: int = 42) -> list[str]:
        """One continuation (text after the prompt, without EOS) per prompt/temperature row."""
        if len(prompts) != len(temperatures):
            raise ValueError(f"{len(prompts)} prompts but {len(temperatures)} temperatures")
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
        if not prompts:
            return []
        ids, mask = self._prompt_batch(prompts)
        temps = torch.tensor(temperatures, dtype=torch.float32, device=self.device)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        eos = self.tokenizer.eos_token_id
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                         use_cache=True, logits_to_keep=1)
        position = positions[:, -1]
        done = torch.zeros(len(prompts), dtype=torch.bool, device=self.device)
        produced: list[torch.Tensor] = []
        for _ in range(max_tokens):
            token = sample_next(out.logits[:, -1, :], temps, top_k, top_p, generator)
            token = token.masked_fill(done, eos)
            produced.append(token)
            done |= token == eos
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            position = position + 1
            out = self.model(input_ids=token[:, None], attention_mask=mask,
                             position_ids=position[:, None], cache=out.cache,
                             use_cache=True)
        return self._decode(produced, len(prompts), eos)

    def line_model(self) -> LlamaLines:
        """This generator as lyricgen.verse.compose's LineModel (one per generator)."""
        if self._lines is None:
            self._lines = LlamaLines(self)
        return self._lines

    def _decode(self, produced: list[torch.Tensor], rows: int, eos: int) -> list[str]:
        if not produced:
            return [""] * rows
        tokens = torch.stack(produced, dim=1).tolist()
        texts = []
        for seq in tokens:
            seq = seq[: seq.index(eos)] if eos in seq else seq
            texts.append(self.tokenizer.decode(seq, skip_special_tokens=True))
        return texts



class LlamaLines:
    """lyricgen.verse.compose.LineModel over a LlamaGenerator. The state is (KV cache,
    attention mask, next position per row): a row that is not `active` in `advance` still
    gets a cache slot, masked out, and keeps its position, so its continuation is unchanged.
    Special tokens (EOS, BOS, padding) are never sampled inside a poem."""

    def __init__(self, generator: LlamaGenerator) -> None:
        self.generator = generator
        self.tokenizer = generator.tokenizer
        self.device = generator.device

    def pieces(self) -> list[str]:
        tok = self.tokenizer
        tokens = tok.convert_ids_to_tokens(list(range(len(tok))))
        return [tok.convert_tokens_to_string([t]) if t is not None else "" for t in tokens]

    def banned_ids(self) -> list[int]:
        return list(self.tokenizer.all_special_ids)

    def encode_ending(self, text: str) -> list[int] | None:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids or None

    @torch.no_grad()
    def start(self, prompts: list[str]) -> tuple[Any, torch.Tensor]:
        ids, mask = self.generator._prompt_batch(prompts)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.generator.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                   use_cache=True, logits_to_keep=1)
        return (out.cache, mask, positions[:, -1] + 1), out.logits[:, -1, :].float()

    @torch.no_grad()
    def advance(self, state: Any, tokens: torch.Tensor, active: torch.Tensor
                ) -> tuple[Any, torch.Tensor]:
        cache, mask, position = state
        mask = torch.cat([mask, active[:, None].to(mask.dtype)], dim=1)
        out = self.generator.model(input_ids=tokens[:, None], attention_mask=mask,
                                   position_ids=position[:, None], cache=cache, use_cache=True)
        return (out.cache, mask, position + active.long()), out.logits[:, -1, :].float()

    def select(self, state: Any, rows: torch.Tensor) -> Any:
        cache, mask, position = state
        chosen = copy.copy(cache)
        chosen.layers = [copy.copy(layer) for layer in cache.layers]
        chosen.batch_select_indices(rows)
        return chosen, mask[rows], position[rows]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def continuation(self, row: int, ids: list[int]) -> str:
        return self.decode(ids).rstrip()
