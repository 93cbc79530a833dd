"""The text-generator protocol shared by the RNN and LLaMA samplers, and loading by path.

`load_generator(path)` looks at what the path holds and imports the matching backend lazily
(so an RNN grid never imports transformers):

- RNN: a `.pt` file, a `checkpoint/` dir with best.pt/last.pt, or a train-rnn out dir holding
  one -> `lyricgen.rnn.sample.RnnGenerator.from_checkpoint`.
- LLaMA: a dir with `adapter_config.json` (base model + LoRA adapter) or a transformers
  `config.json` (a merged or plain model) -> `lyricgen.llama.generate.LlamaGenerator.from_path`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from kindspec.inputs import input_problem
from kindspec.inputs import model_kind_of as detect_model_kind
from lyricgen.errors import LyricgenInputError


@runtime_checkable
class TextGenerator(Protocol):
    """A loaded model that continues several prompts at once.

    `generate` returns one continuation (the prompt excluded) per row, all rows sampled
    together in one batched forward pass per step, each row with its own prompt and
    temperature (0 = greedy). `top_k` None or 0 and `top_p` None disable those filters. The
    same arguments and seed give the same texts; a row's text may depend on the other rows of
    the batch (they share one random generator), so callers that need reproducible cells keep
    batches fixed.
    """

    model_kind: str  # "rnn" or "llama"

    def generate(self, prompts: list[str], temperatures: list[float], *, max_tokens: int,
                 top_k: int | None = None, top_p: float | None = None,
                 seed: int = 42) -> list[str]: ...

    def line_model(self) -> Any:
        """The step-by-step view lyricgen.verse.compose drives (its LineModel protocol)."""
        ...


def model_kind_of(model_path: Path) -> str:
    """"rnn" or "llama" from the files at `model_path` (kindspec.inputs); LyricgenInputError
    when it holds neither."""
    kind = detect_model_kind(Path(model_path))
    if kind is None:
        raise LyricgenInputError(f"params: model: {input_problem('model', model_path)}")
    return kind


def load_generator(model_path: Path, device: str = "auto") -> TextGenerator:
    """The generator for `model_path` on `device` ("auto": CUDA when available, else CPU)."""
    if model_kind_of(model_path) == "rnn":
        from lyricgen.rnn.sample import RnnGenerator

        return RnnGenerator.from_checkpoint(model_path, device=device)
    from lyricgen.llama.generate import LlamaGenerator

    return LlamaGenerator.from_path(model_path, device=device)
