"""Learning-rate schedule and wall-clock budget of a training run (train-rnn, finetune-llama).

`LrSchedule`: linear warmup, then cosine / linear decay / constant. The decay follows a
progress fraction in [0, 1]: steps done / planned steps, or, when a wall-clock budget is set,
the larger of that and elapsed / budget, so a budgeted run reaches its low learning rate exactly
when the time runs out (at a fixed budget this is worth much more than any other knob). The
schedule is stateless: (step, progress) fully determine the rate, so a checkpoint needs no
scheduler state beyond step and elapsed time.

`RunClock`: the elapsed seconds of a run, counted from the first start of its first process
(data and model loading included); a resumed run carries on from the seconds its checkpoint
recorded. Under torchrun the processes agree on the clock and on stop signals
(`RunClock.agree`: one all-reduce of the maximum elapsed time and signal), so every process
takes the same learning rate and stops after the same step. Pitfall: with a budget the rate
follows the clock, so a budgeted run is reproducible only as far as its step times are; a
resumed run equals the uninterrupted one when the clock reads the same at every step (the tests
drive it with a fake clock through `monotonic`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from time import monotonic

import torch

from lyricgen import dist
from lyricgen.preempt import StopSignals

_SIGNAL_CODES = (None, "USR1", "TERM")  # StopSignals.received, ordered for a max-reduce


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


class RunClock:
    """Elapsed seconds and the stop signal every process agreed on (see the module doc).

    `now` and `signal` hold the values of the last `agree`; processes agree every
    `sync_every` steps (a gloo all-reduce costs ~0.5 ms, which matters to a millisecond step)
    and keep the agreed values in between. One process reads its own clock and signal at every
    call."""

    def __init__(self, info: dist.DistInfo, max_minutes: float | None, *,
                 sync_every: int = 1) -> None:
        self.info = info
        self.budget = max_minutes * 60.0 if max_minutes else None
        self.sync_every = sync_every
        self.started = monotonic()
        self.now = 0.0
        self.signal: str | None = None
        self._agreed_at: int | None = None

    def resume(self, elapsed: float) -> None:
        """Count the `elapsed` seconds of the run a checkpoint continues (this process's own
        setup time stays counted)."""
        self.started -= elapsed

    def elapsed(self) -> float:
        return monotonic() - self.started

    def agree(self, step: int, stop: StopSignals, device: torch.device | str = "cpu"
              ) -> str | None:
        """Set `now` (the maximum elapsed time over processes) and `signal` (the stop signal
        any process received, "TERM" over "USR1", or None) at optimizer step `step`; returns
        `signal`. `device`: where the all-reduce runs (the CUDA device under nccl)."""
        if not self.info.enabled:
            self.now, self.signal = self.elapsed(), stop.received
            return self.signal
        if self._agreed_at is not None and step - self._agreed_at < self.sync_every:
            return self.signal
        self._agreed_at = step
        flags = torch.tensor([self.elapsed(), _SIGNAL_CODES.index(stop.received)],
                             dtype=torch.float64, device=device)
        elapsed, code = dist.all_reduce(flags, self.info, "max").tolist()
        self.now, self.signal = elapsed, _SIGNAL_CODES[int(code)]
        return self.signal

    @property
    def spent(self) -> bool:
        """Whether the agreed time has reached the budget (False without one)."""
        return self.budget is not None and self.now >= self.budget

    def progress(self, step: int, total_steps: int) -> float:
        """`progress` at the agreed time."""
        return progress(step, total_steps, self.now, self.budget)
