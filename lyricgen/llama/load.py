"""Precision policy and offline loading of a local LLaMA-family model directory.

Precision (decided explicitly from `torch.cuda.is_available()` and the params, never from what
happens to import; the dtype by lyricgen.precision, shared with train-rnn;
`Precision.describe()` is the ONE line a step logs at start):
- CUDA, load_in_4bit unset or true: QLoRA -- NF4 4-bit weights, double quantization, compute in
  bf16, or fp16 where the GPU has no bf16 (`torch.cuda.is_bf16_supported()` False: Turing, e.g.
  Titan RTX). CUDA with load_in_4bit false: plain LoRA on bf16 (fp16) weights.
- CPU: fp32 weights (dtype "bfloat16" asks for bf16), or NF4 4-bit with compute in the same
  dtype when load_in_4bit is true (bitsandbytes 0.50 runs 4-bit on CPU, so tests exercise the
  real QLoRA path; that it works is no sign of a GPU). Training (`cpu_auto_bf16=True`, the
  finetune-llama kind) takes bf16 weights and autocast where the cores compute bf16 natively
  (lyricgen.precision): a LoRA step on SmolLM2-135M then costs less than half the CPU time of
  fp32 (bench/llama_lora_cpu.py). bf16 weights, not fp32 weights under bf16 autocast: autocast
  re-casts every frozen weight at every forward (not cached: they need no grad), which took
  a third of the bf16 step. Inference stays fp32 on CPU.

Loading is local-only: HF_HUB_OFFLINE=1 is set before transformers is imported and every
`from_pretrained` gets `local_files_only=True`. `check_model_dir` turns a Hub id or a missing
directory into a one-line LyricgenInputError before any heavy work.

Importing this module needs only torch (transformers, peft and bitsandbytes are imported inside
the functions), so bench/qlora_gpu.py can use it with PYTHONPATH=. and nothing else installed.
Pitfall: bitsandbytes logs a line about the optional `kernels` package at import; the logger is
silenced here (never install `kernels`: it downloads from the Hub).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kindspec.inputs import input_problem
from lyricgen.errors import LyricgenInputError
from lyricgen.precision import DTYPES, compute_dtype

os.environ["HF_HUB_OFFLINE"] = "1"
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)



@dataclass(frozen=True)
class Precision:
    """How a model is placed and computed: device ("cpu", "cuda:0"), whether its linear weights
    are NF4 4-bit, and `dtype` (weights that stay unquantized and the matmul compute dtype)."""

    device: str
    quantize_4bit: bool
    dtype: torch.dtype

    @property
    def device_type(self) -> str:
        return torch.device(self.device).type

    @property
    def autocast(self) -> bool:
        """Mixed precision is needed when compute is not fp32 (LoRA weights stay fp32)."""
        return self.dtype != torch.float32

    def describe(self) -> str:
        name = str(self.dtype).removeprefix("torch.")
        if self.quantize_4bit:
            return f"precision: {self.device} NF4 4-bit, double quant, compute {name}, LoRA fp32"
        return f"precision: {self.device} {name} weights, LoRA fp32" + (
            f", autocast {name}" if self.autocast else "")


def resolve_device(device: str, local_rank: int = 0) -> str:
    """"auto" -> "cuda:<local_rank>" when CUDA is available, else "cpu"; "cuda" without a GPU
    is a LyricgenInputError."""
    if device not in ("auto", "cpu", "cuda"):
        raise LyricgenInputError(f"params: device: must be auto, cpu or cuda, got {device!r}")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return "cpu"
    if not torch.cuda.is_available():
        raise LyricgenInputError("params: device: cuda asked but torch sees no CUDA device")
    return f"cuda:{local_rank}"


def resolve_precision(device: str, load_in_4bit: bool | None = None, dtype: str = "auto",
                      local_rank: int = 0, *, cpu_auto_bf16: bool = False) -> Precision:
    """The precision policy above. load_in_4bit None means 4-bit on CUDA, not on CPU; dtype
    "auto" means bf16 (fp16 without bf16 support) on CUDA, and on CPU bf16 when
    `cpu_auto_bf16` and the cores compute it natively, else fp32."""
    where = resolve_device(device, local_rank)
    cuda = where.startswith("cuda")
    quantize = cuda if load_in_4bit is None else bool(load_in_4bit)
    if dtype != "auto" and dtype not in DTYPES:
        raise LyricgenInputError(f"params: dtype: must be auto or one of {sorted(DTYPES)}, "
                                 f"got {dtype!r}")
    chosen = compute_dtype(dtype, "cuda" if cuda else "cpu", cpu_auto_bf16=cpu_auto_bf16)
    if quantize:
        require_bitsandbytes()
    return Precision(device=where, quantize_4bit=quantize, dtype=chosen)


def require_bitsandbytes() -> None:
    """LyricgenInputError (exit 2) when 4-bit is asked and bitsandbytes cannot be imported."""
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # ImportError, or a broken native library
        raise LyricgenInputError(
            f"params: load_in_4bit: 4-bit needs bitsandbytes, which cannot be imported "
            f"({type(exc).__name__}: {exc}); install it or set load_in_4bit: false") from exc


def check_model_dir(path: str | Path, key: str = "model_path") -> Path:
    """The model directory as a Path, or a one-line LyricgenInputError: a Hub id, a missing
    directory, or a directory without config.json (kindspec.inputs). Nothing is downloaded."""
    target = Path(path).expanduser().absolute()
    problem = input_problem("model_dir", target)
    if problem is not None:
        raise LyricgenInputError(f"params: {key}: {problem}")
    return target


def bnb_config(precision: Precision) -> Any:
    """BitsAndBytesConfig for NF4 4-bit with double quantization and `precision.dtype` compute."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=precision.dtype)


def load_tokenizer(path: str | Path, padding_side: str = "right") -> Any:
    """The local tokenizer; a missing pad token becomes EOS (LLaMA 3 has none), so padding must
    always be marked by the attention mask, never by comparing ids with pad_token_id."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tokenizer.eos_token_id is None:
        raise LyricgenInputError(f"{path}: tokenizer has no eos_token; set one in its config")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_model(path: str | Path, precision: Precision, *, training: bool = False,
               gradient_checkpointing: bool = False, attention: str | None = None) -> Any:
    """AutoModelForCausalLM from a local directory, placed and (maybe) quantized per `precision`;
    `attention` is transformers' attn_implementation ("sdpa", "eager"; None: its default).

    With training=True the model is made ready for LoRA: 4-bit goes through peft's
    prepare_model_for_kbit_training (fp32 norms/embeddings, input grads); gradient checkpointing
    always uses the non-reentrant implementation; the KV cache is turned off.
    """
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": precision.dtype,
                              "device_map": {"": precision.device}}
    if attention is not None:
        kwargs["attn_implementation"] = attention
    if precision.quantize_4bit:
        kwargs["quantization_config"] = bnb_config(precision)
    model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    if not training:
        model.eval()
        return model
    checkpointing = {"use_reentrant": False}
    if precision.quantize_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs=checkpointing)
    elif gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpointing)
    model.config.use_cache = False
    return model


def adapter_base(adapter_dir: Path) -> str:
    """The base model path recorded in adapter_config.json (base_model_name_or_path)."""
    config_path = adapter_dir / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise LyricgenInputError(f"{config_path}: no such file (not a LoRA adapter dir)") from exc
    except ValueError as exc:
        raise LyricgenInputError(f"{config_path}: not valid JSON ({exc})") from exc
    base = config.get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise LyricgenInputError(f"{config_path}: base_model_name_or_path: missing")
    return base


def tokenizer_dir(adapter_dir: Path, base_dir: Path) -> Path:
    """The adapter's own tokenizer copy when it saved one (finetune-llama does), else the
    base's."""
    return adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_dir


def is_adapter_dir(path: str | Path) -> bool:
    """Whether `path` holds a LoRA adapter (peft's adapter_config.json)."""
    return (Path(path) / "adapter_config.json").is_file()


def load_for_inference(path: str | Path, device: str = "auto", *,
                       base: str | Path | None = None, load_in_4bit: bool = False,
                       padding_side: str = "right") -> tuple[Any, Any, Precision]:
    """(model in eval mode, tokenizer, precision) from a model dir, or from an adapter dir
    (adapter_config.json) on its base: `base`, else the adapter's base_model_name_or_path. An
    adapter on an unquantized base is merged in memory (faster); on a 4-bit base it stays a
    PeftModel. The adapter's own tokenizer copy is used when it has one."""
    path = Path(path)
    adapter = is_adapter_dir(path)
    if adapter:
        base_dir = check_model_dir(base if base is not None else adapter_base(path), "base")
    else:
        base_dir = check_model_dir(path, "model")
    precision = resolve_precision(device, load_in_4bit)
    model = load_model(base_dir, precision)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(path))
        if not precision.quantize_4bit:
            model = model.merge_and_unload()
    tokenizer = load_tokenizer(tokenizer_dir(path, base_dir) if adapter else base_dir,
                               padding_side=padding_side)
    model.eval()
    return model, tokenizer, precision
