"""How many CPU threads a step uses: never more than the cores it may run on.

`decide_threads(env, usable)` returns (threads, reason):
- asked = $OMP_NUM_THREADS (job.sh exports resources.cpus / processes per node), else
  $SLURM_CPUS_PER_TASK, else nothing;
- share = the cores this process may run on (`os.sched_getaffinity`: a cgroup or SLURM's
  task affinity narrows it) divided among the $LOCAL_WORLD_SIZE processes torchrun started
  on this node;
- threads = min(asked, share), or share when nothing was asked.

Why: OpenMP threads that outnumber the cores do not just share them, they wait on each other
at every parallel region (a descheduled thread stalls the whole region): measured here, the
default char LSTM trained with 2 threads on 2 cores that other processes kept busy ran 700
tokens/s, with 1 thread 16-22 k. Under SLURM the allocation decides through the same numbers.

`apply_threads()` sets OMP_NUM_THREADS / MKL_NUM_THREADS before torch is imported (torch reads
them once) and torch's own setting if it already is: `python -m lyricgen KIND` calls it first
and logs the reason; `applied()` gives it to the kinds for their metrics.json.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping


def decide_threads(env: Mapping[str, str], usable: int) -> tuple[int, str]:
    """(threads, a one-line reason) for `usable` cores and the environment `env`."""
    local = _positive(env.get("LOCAL_WORLD_SIZE")) or 1
    share = max(1, usable // local)
    where = (f"{usable} usable core(s)" if local == 1
             else f"{usable} usable core(s) / {local} processes on this node")
    for name in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        asked = _positive(env.get(name))
        if asked is not None:
            if asked > share:
                return share, f"{share} ({name}={asked} capped to the {where})"
            return asked, f"{asked} ({name}={asked}; {where})"
    return share, f"{share} (nothing asked: the {where})"


_applied: dict[str, int | str] = {}


def apply_threads() -> tuple[int, str]:
    """Decide for this process and apply it; returns (threads, reason)."""
    threads, reason = decide_threads(os.environ, len(os.sched_getaffinity(0)))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    _applied.update(threads=threads, reason=reason)
    return threads, reason


def applied() -> dict[str, int | str]:
    """{"threads": n, "reason": why} once apply_threads ran in this process, else {}."""
    return dict(_applied)


def _positive(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() and int(text) > 0 else None
