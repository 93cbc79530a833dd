"""The trainable LoRA model of finetune-llama and the device-dependent parts of its recipe.

`resolve_recipe(p, precision)` turns the params that may be null into values for the device:
- dropout: 0.05 on CUDA, 0 on CPU. peft draws a per-element Bernoulli mask for the input of
  every LoRA layer (7 per block on all-linear): on CPU those masks and products cost a SmolLM2
  step 10-40 %; with the few epochs a CPU run affords, dropout has little to regularize.
- gradient checkpointing: on CUDA (memory is the limit there), not on CPU (RAM rarely is, and
  recomputing the forward costs about a third more compute).
- attention: "eager" (matmul + softmax) on CPU for blocks up to EAGER_MAX_BLOCK tokens, where
  it is faster than torch's CPU flash-attention kernel in bf16 (its backward is the slow part);
  its [batch, heads, block, block] scores grow with the square of the block, so longer blocks
  keep "sdpa", as does CUDA.

`lora_model(base, p, recipe, precision)` wraps the base in a peft LoRA. Under autocast it turns
off peft's cast of each LoRA layer's input to the fp32 LoRA dtype (what
peft.helpers.disable_input_dtype_casting does): autocast casts the input back to bf16 for the
LoRA matmul anyway, so the cast was one copy of the activations per layer and one more in
backward. `optimizer(params, lr, device_type)` is AdamW, fused (one kernel for all tensors) on
CPU and CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lyricgen.llama.load import Precision
from lyricgen.llama.params import FinetuneParams

CUDA_DROPOUT = 0.05
EAGER_MAX_BLOCK = 1024


@dataclass(frozen=True)
class Recipe:
    dropout: float
    gradient_checkpointing: bool
    attention: str

    def describe(self) -> str:
        """One log line."""
        return (f"recipe: LoRA dropout {self.dropout:g}, gradient checkpointing "
                f"{'on' if self.gradient_checkpointing else 'off'}, {self.attention} attention")


def resolve_recipe(p: FinetuneParams, precision: Precision) -> Recipe:
    """The module doc's device defaults for the params left null."""
    cpu = precision.device_type == "cpu"
    dropout = p.dropout if p.dropout is not None else (0.0 if cpu else CUDA_DROPOUT)
    checkpointing = (p.gradient_checkpointing if p.gradient_checkpointing is not None
                     else not cpu)
    attention = "eager" if cpu and p.block_size <= EAGER_MAX_BLOCK else "sdpa"
    return Recipe(dropout, checkpointing, attention)


def lora_model(base: Any, p: FinetuneParams, recipe: Recipe, precision: Precision) -> Any:
    """`base` with fresh LoRA layers (seeded with p.seed), in train mode."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    torch.manual_seed(p.seed)
    config = LoraConfig(r=p.lora_r, lora_alpha=p.lora_alpha, lora_dropout=recipe.dropout,
                        target_modules=p.peft_targets(), bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(base, config)
    if precision.autocast:
        for module in model.modules():
            if isinstance(module, BaseTunerLayer):
                module.cast_input_dtype_enabled = False
    model.train()
    return model


def optimizer(params: list[torch.nn.Parameter], lr: float,
              device_type: str) -> torch.optim.Optimizer:
    """AdamW without weight decay (LoRA), fused where torch has the kernel."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0,
                             fused=device_type in ("cpu", "cuda"))
