"""One LoRA optimizer step over micro-batches, shared by the finetune-llama kind and
bench/qlora_gpu.py (so the benchmark times the code the kind runs). Needs only torch
(and lyricgen.llama.data's constant).

The loss is the SUM of next-token cross-entropies (fp32) of every micro-batch, multiplied by
`scale` before backward: the caller passes world_size / (targets of the whole step over all
ranks), which turns DDP's gradient averaging into an exact per-token mean of the global batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from lyricgen.llama.data import IGNORE_INDEX


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy in fp32 (positions labelled -100 are ignored)."""
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.size(-1)),
                           labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")


def train_step(model: Any, batches: Sequence[dict[str, torch.Tensor]], *, scale: float,
               params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer, lr: float,
               scaler: torch.amp.GradScaler,
               autocast: Callable[[], contextlib.AbstractContextManager[Any]],
               max_grad_norm: float,
               no_sync: Callable[[], contextlib.AbstractContextManager[Any]] | None = None
               ) -> tuple[torch.Tensor, float]:
    """Forward/backward every micro-batch (gradient sync only on the last when `no_sync` is
    DDP's), clip, step the optimizer at learning rate `lr` and the scaler. Returns (this rank's
    loss sum as a float64 CPU tensor, gradient norm before clipping)."""
    loss_sum = torch.zeros((), dtype=torch.float64)
    for number, batch in enumerate(batches):
        last = number == len(batches) - 1
        sync = contextlib.nullcontext() if last or no_sync is None else no_sync()
        with sync:
            with autocast():
                logits = model(input_ids=batch["input_ids"],
                               attention_mask=batch["attention_mask"]).logits
            loss = token_loss_sum(logits, batch["labels"])
            scaler.scale(loss * scale).backward()
        loss_sum += loss.detach().double().cpu()
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    for group in optimizer.param_groups:
        group["lr"] = lr
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, float(grad_norm)
