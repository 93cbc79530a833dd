"""Report this process's CUDA memory peak to the job script that started it.

job.sh exports LYRICGEN_GPU_PEAK_FILE (templates/_status.sh.j2); `python -m lyricgen KIND`
calls `record_gpu_peak()` when the kind returns or raises, and each process writes
`torch.cuda.max_memory_allocated` (bytes, the largest over the devices it used) to
`$LYRICGEN_GPU_PEAK_FILE.<RANK>` (RANK 0 outside torchrun), atomically. job.sh records the
largest of these files as the task's gpu_peak_bytes (jobs/taskstatus.py).

Nothing is written when the variable is unset, when torch was never imported or CUDA never
initialised (CPU work): no file means "no GPU used". Pitfalls: the figure counts tensors
only, not the CUDA context (some hundred MiB per process) nor the caching allocator's unused
reserve, so nvidia-smi shows more; a process killed by a signal (OOM killer, SIGKILL)
writes nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lyricgen.io import atomic_write_text

GPU_PEAK_ENV = "LYRICGEN_GPU_PEAK_FILE"


def cuda_peak_bytes() -> int | None:
    """The largest max_memory_allocated over this process's CUDA devices, or None when
    CUDA was not initialised (torch not even imported counts as not)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return None
    return max(torch.cuda.max_memory_allocated(device)
               for device in range(torch.cuda.device_count()))


def record_gpu_peak() -> Path | None:
    """Write the peak to $LYRICGEN_GPU_PEAK_FILE.<RANK> (module docstring); the path, or
    None when there is nothing to record or nowhere to record it."""
    base = os.environ.get(GPU_PEAK_ENV)
    peak = cuda_peak_bytes() if base else None
    if peak is None:
        return None
    rank = os.environ.get("RANK", "0")
    return atomic_write_text(Path(f"{base}.{rank if rank.isdigit() else 0}"), f"{peak}\n")
