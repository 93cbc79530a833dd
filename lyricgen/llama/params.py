"""FinetuneParams: the resolved params of a finetune-llama job.

The fields are the finetune-llama params of kindspec.registry (FINETUNE_LLAMA; defaults and
ranges there, `jobctl kinds finetune-llama` prints them); `from_params` resolves and checks them
there, exactly as `jobctl validate` does. Errors are one line: `params: KEY: ...`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lyricgen.params import build_config

# Params that do not change the training computation: a resumed run may differ in these.
RESUME_FREE = ("eval_every", "save_every", "keep_checkpoints", "merge")


@dataclass(frozen=True)
class FinetuneParams:
    model_path: Path
    data_path: Path
    valid_path: Path | None
    epochs: int
    max_steps: int | None
    max_minutes: float | None
    batch_size: int
    grad_accum: int
    block_size: int
    lr: float
    warmup_steps: int
    max_grad_norm: float
    dropout: float | None
    lora_r: int
    lora_alpha: int
    target_modules: tuple[str, ...]
    packing: bool
    load_in_4bit: bool | None
    dtype: str
    eval_every: int
    save_every: int
    keep_checkpoints: int
    gradient_checkpointing: bool | None
    seed: int
    device: str
    merge: bool

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> FinetuneParams:
        return build_config(cls, "finetune-llama", params)

    def peft_targets(self) -> str | list[str]:
        """peft's target_modules: the string "all-linear" or a list of module names."""
        if self.target_modules == ("all-linear",):
            return "all-linear"
        return list(self.target_modules)

    def resume_key(self) -> dict[str, Any]:
        """The params a checkpoint must share with this run to be resumed, JSON-friendly."""
        data = {k: v for k, v in asdict(self).items() if k not in RESUME_FREE}
        return {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
                for k, v in data.items()}

    def as_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
                for k, v in asdict(self).items()}

