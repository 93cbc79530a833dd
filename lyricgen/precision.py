"""The one precision policy of every model kind: which float dtype a model computes in.

`compute_dtype(requested, device_type, cpu_auto_bf16=...)`:
- `requested` is "auto" or a dtype in either spelling: float32/fp32, bfloat16/bf16,
  float16/fp16 (train-rnn's `precision` uses the short names, the LLaMA kinds' `dtype` the
  long ones). A named dtype is returned as it is; the caller decides what its device can run.
- auto on CUDA: bf16 where the GPU computes it (Ampere and newer), else fp16 (Turing, e.g.
  Titan RTX: fp16 needs a GradScaler for training).
- auto on CPU: bf16 when the caller allows it (`cpu_auto_bf16`) and the cores have bf16
  instructions (AVX512-BF16 or AMX: oneDNN's LSTM then runs ~1.5x faster at batch 16), else
  fp32 (emulated bf16 is slower than fp32). train-rnn and finetune-llama allow it (a LoRA
  step on SmolLM2-135M: less than half the CPU time of fp32); LLaMA inference stays fp32 on
  CPU.
"""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SHORT_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
_BY_NAME = {**DTYPES, **{short: DTYPES[long] for long, short in SHORT_NAMES.items()}}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX tiles)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def compute_dtype(requested: str, device_type: str, *, cpu_auto_bf16: bool) -> torch.dtype:
    """The dtype for `requested` on a `device_type` ("cuda", "cpu") device (see the module
    docstring); ValueError for a name that is not auto or a dtype above."""
    if requested != "auto":
        if requested not in _BY_NAME:
            raise ValueError(f"must be auto or one of {sorted(_BY_NAME)}, got {requested!r}")
        return _BY_NAME[requested]
    if device_type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_auto_bf16 and cpu_has_native_bf16() else torch.float32


def short_name(dtype: torch.dtype) -> str:
    """torch.bfloat16 -> "bf16" (fp32, bf16, fp16)."""
    return SHORT_NAMES[str(dtype).removeprefix("torch.")]
