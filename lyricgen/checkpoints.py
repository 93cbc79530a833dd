"""Resuming from the newest checkpoint that loads (train-rnn and finetune-llama).

Both kinds keep at least two checkpoints (train-rnn: checkpoint/last.pt and previous.pt;
finetune-llama: the newest `keep_checkpoints` >= 2 of checkpoints/step-N/), so a newest one
that does not load (a torn copy, a corrupted file, a disk error) is not the end of the run:
`newest_loadable` tries the candidates newest first, says in one warning line on stderr why
each one that fails was skipped, and once one loads renames the newer ones that failed to
`NAME.bad-<unix time>` (kept for inspection, never tried again, so the next checkpoint
written is the newest). When none loads it raises LyricgenInputError and renames nothing.

Pitfall: under torch.distributed every rank calls it (each needs the state), but only the
main rank warns and renames; ranks that meet a renamed file fail to load it and fall back to
the same older checkpoint.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from lyricgen.errors import LyricgenInputError

T = TypeVar("T")


def newest_loadable(candidates: Sequence[Path], load: Callable[[Path], T], *, kind: str,
                    main: bool) -> tuple[Path, T] | None:
    """(path, load(path)) for the first of `candidates` (newest first) whose `load` does not
    raise LyricgenInputError; None without candidates (a fresh start)."""
    failed: list[Path] = []
    for path in candidates:
        try:
            loaded = load(path)
        except LyricgenInputError as exc:
            if main:
                print(f"{kind}: warning: {exc}; trying an older checkpoint", file=sys.stderr,
                      flush=True)
            failed.append(path)
            continue
        if main:
            stamp = int(time.time())
            for bad in failed:
                if bad.exists():
                    os.replace(bad, bad.with_name(f"{bad.name}.bad-{stamp}"))
        return path, loaded
    if failed:
        raise LyricgenInputError(
            f"{failed[0].parent}: checkpoint: none of {', '.join(p.name for p in failed)} "
            "loads; move them away to train from the start")
    return None
