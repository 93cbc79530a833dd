"""Stop a training loop cleanly when the scheduler asks, so that the job can be requeued.

SLURM sends SIGUSR1 some minutes before a job's time limit (job.sh asks for it with
`#SBATCH --signal=B:USR1@N` and forwards it to lyricgen; torchrun forwards it to every
worker), and SIGTERM when it cancels or preempts a job. Inside `StopSignals` both only set a
flag: the loop reads `StopSignals.received` after each optimizer step, saves a checkpoint (the
usual atomic one) and ends; the kind then raises `Preempted`, which `python -m lyricgen` turns
into one line on stderr and exit code 75 (`EXIT_PREEMPTED`, EX_TEMPFAIL: "stopped on request,
checkpoint saved, run me again"). job.sh requeues the job on that code (jobs/render.py), and
the requeued run resumes from the checkpoint exactly.

Pitfalls:
- Handlers are installed only around the training loop. Before it (data and model loading)
  the default actions apply: SIGTERM ends the process at once (nothing to save yet) and so
  does SIGUSR1 (job.sh then requeues anyway; the run resumes from its newest checkpoint).
- Python runs signal handlers in the main thread only: outside it `StopSignals` installs
  nothing and `received` stays None (training in a worker thread is not interruptible).
- Under torch.distributed every rank must stop at the same step, or the next collective
  hangs: a loop that runs on several ranks must agree on the flag (all-reduce) each step.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

EXIT_PREEMPTED = 75
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class Preempted(Exception):
    """A kind stopped on a signal after saving its checkpoint; exit code EXIT_PREEMPTED.

    The message is one line naming the signal, the step and the checkpoint."""

    exit_code = EXIT_PREEMPTED

    def __init__(self, kind: str, signal_name: str, step: int, checkpoint: str) -> None:
        super().__init__(f"{kind}: stopped by SIG{signal_name} after step {step}; checkpoint "
                         f"saved in {checkpoint}; run the job again to resume from it")
        self.signal_name = signal_name
        self.step = step


class StopSignals:
    """Context manager: while active, SIGUSR1 and SIGTERM set `received` ("USR1"/"TERM",
    the first one wins) instead of their default action; on exit the previous handlers
    are restored."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name.removeprefix("SIG")

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
