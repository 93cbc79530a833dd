"""The finetune-llama params: defaults mirror jobs/kinds.py FINETUNE_LLAMA (a test keeps them
in step). jobctl has already type-checked a config.json it wrote; this re-checks hand-written
ones and turns the raw dict into a frozen dataclass. Errors are one line: `params: KEY: ...`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from lyricgen.errors import LyricgenInputError

_INT_MIN = {"epochs": 1, "max_steps": 1, "batch_size": 1, "grad_accum": 1, "block_size": 2,
            "warmup_steps": 0, "lora_r": 1, "lora_alpha": 1, "eval_every": 1, "save_every": 1,
            "keep_checkpoints": 1, "seed": 0}
_FLOAT_RANGE = {"lr": (0.0, None), "max_grad_norm": (0.0, None), "dropout": (0.0, 0.99)}
_BOOLS = ("packing", "gradient_checkpointing", "merge", "load_in_4bit")
_CHOICES = {"dtype": ("auto", "float32", "bfloat16", "float16"),
            "device": ("auto", "cpu", "cuda")}
_NULLABLE = ("valid_path", "max_steps", "load_in_4bit")
# Params that do not change the training computation: a resumed run may differ in these.
RESUME_FREE = ("eval_every", "save_every", "keep_checkpoints", "merge")


@dataclass(frozen=True)
class FinetuneParams:
    model_path: Path
    data_path: Path
    valid_path: Path | None = None
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 4
    grad_accum: int = 4
    block_size: int = 512
    lr: float = 2e-4
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    dropout: float = 0.05
    lora_r: int = 16
    lora_alpha: int = 32
    target_modules: tuple[str, ...] = ("all-linear",)
    packing: bool = True
    load_in_4bit: bool | None = None
    dtype: str = "auto"
    eval_every: int = 100
    save_every: int = 100
    keep_checkpoints: int = 2
    gradient_checkpointing: bool = True
    seed: int = 42
    device: str = "auto"
    merge: bool = False

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> FinetuneParams:
        known = {f.name for f in fields(cls)}
        for key in params:
            if key not in known:
                raise LyricgenInputError(f"params: {key}: unknown parameter for finetune-llama")
        values = dict(params)
        for key in ("model_path", "data_path", "valid_path"):
            if values.get(key) is None and key != "valid_path":
                raise LyricgenInputError(f"params: {key}: required (a local path)")
            if values.get(key) is not None:
                values[key] = Path(_typed(key, values[key], str))
        if "target_modules" in values:
            modules = values["target_modules"]
            if not isinstance(modules, list | tuple) or not modules \
                    or not all(isinstance(m, str) and m for m in modules):
                raise LyricgenInputError("params: target_modules: must be a non-empty list of "
                                         "module names (or [all-linear])")
            values["target_modules"] = tuple(modules)
        for key, value in values.items():
            _check(key, value)
        return cls(**values)

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


def _typed(key: str, value: Any, kind: type) -> Any:
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise LyricgenInputError(f"params: {key}: expected {kind.__name__}, got {value!r}")
    return value


def _check(key: str, value: Any) -> None:
    if value is None and key in _NULLABLE:
        return
    if key in _INT_MIN:
        if _typed(key, value, int) < _INT_MIN[key]:
            raise LyricgenInputError(f"params: {key}: must be >= {_INT_MIN[key]}, got {value}")
    elif key in _FLOAT_RANGE:
        low, high = _FLOAT_RANGE[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < low \
                or (high is not None and value > high):
            raise LyricgenInputError(f"params: {key}: must be a number in [{low}, "
                                     f"{high if high is not None else 'inf'}], got {value!r}")
    elif key in _BOOLS:
        _typed(key, value, bool)
    elif key in _CHOICES and value not in _CHOICES[key]:
        raise LyricgenInputError(f"params: {key}: must be one of {', '.join(_CHOICES[key])}, "
                                 f"got {value!r}")
