"""Learning-rate schedule: linear warmup, then cosine / linear decay / constant.

The decay follows a progress fraction in [0, 1]: steps done / planned steps, or, when a
wall-clock budget is set, the larger of that and elapsed / budget, so a budgeted run reaches its
low learning rate exactly when the time runs out (at a fixed budget this is worth much more than
any other knob). The schedule is stateless: (step, progress) fully determine the rate, so a
checkpoint needs no scheduler state beyond step and elapsed time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LrSchedule:
    base_lr: float
    kind: str = "cosine"  # cosine | linear | constant
    warmup_steps: int = 0
    min_ratio: float = 0.0  # the final rate as a fraction of base_lr

    def lr(self, step: int, progress: float) -> float:
        """Rate for optimizer step `step` (0-based) at `progress` of the run."""
        warmup = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        progress = min(1.0, max(0.0, progress))
        if self.kind == "cosine":
            decay = 0.5 * (1.0 + math.cos(math.pi * progress))
        elif self.kind == "linear":
            decay = 1.0 - progress
        elif self.kind == "constant":
            return self.base_lr * warmup
        else:
            raise ValueError(f"unknown lr schedule {self.kind!r}")
        return self.base_lr * warmup * (self.min_ratio + (1.0 - self.min_ratio) * decay)


def progress(step: int, total_steps: int, elapsed: float, budget_seconds: float | None) -> float:
    """Fraction of the run done: by steps, or by wall clock when that is further along."""
    done = step / total_steps if total_steps > 0 else 1.0
    if budget_seconds:
        done = max(done, elapsed / budget_seconds)
    return min(1.0, done)
