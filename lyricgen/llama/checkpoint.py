"""Resumable training state under `out/checkpoints/step-NNNNNNNN/`.

A checkpoint holds the LoRA adapter (peft's adapter_model.safetensors + adapter_config.json)
and state.pt: optimizer, LR scheduler, grad scaler, the finished optimizer step, the metrics
history so far and `meta` (the params that shape the run, to refuse resuming a different run).
Nothing else is needed to continue bit-for-bit, because the training loop derives data order
and dropout randomness from (seed, epoch, step, rank), never from carried RNG state.

A checkpoint is written into a hidden temp directory, then published (lyricgen.io.publish_dir:
files fsynced, renamed into place), so a kill leaves either no checkpoint or a complete one;
only the newest `keep` stay, never fewer than MIN_KEEP, so that a newest checkpoint that does
not load has an older one to fall back to (`load_newest`, lyricgen.checkpoints). A write that
fails (disk full, I/O error) is one LyricgenWriteError naming the checkpoint: its temp
directory is removed and the older checkpoints are kept. Every rank reads the checkpoint (the
run directory must be on a shared file system); only rank 0 writes.
"""

from __future__ import annotations

import io
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from lyricgen.checkpoints import newest_loadable
from lyricgen.errors import LyricgenInputError, LyricgenWriteError
from lyricgen.io import atomic_write_bytes, publish_dir

_STEP_DIR = re.compile(r"^step-(\d{8})$")
ADAPTER_FILE = "adapter_model.safetensors"
MIN_KEEP = 2


def step_dirs(root: Path) -> list[Path]:
    """Complete checkpoint directories, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: p.name)


def remove_partial(root: Path) -> None:
    """Delete `.step-N.tmp` directories left by a save that was killed (rank 0, before
    training: a later save of the same step would replace it, but a stop checkpoint's step
    may never be saved again)."""
    for path in root.glob(".step-*.tmp"):
        shutil.rmtree(path, ignore_errors=True)


def latest(root: Path) -> Path | None:
    dirs = step_dirs(root)
    return dirs[-1] if dirs else None


def save(root: Path, step: int, model: Any, state: dict[str, Any], keep: int) -> Path:
    """Write checkpoint `step` atomically (rank 0 only) and prune all but the newest
    max(keep, MIN_KEEP); LyricgenWriteError when it cannot be written."""
    from safetensors import SafetensorError

    final = root / f"step-{step:08d}"
    tmp = root / f".step-{step:08d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        model.save_pretrained(str(tmp))
        buffer = io.BytesIO()
        torch.save({**state, "step": step}, buffer)
        atomic_write_bytes(tmp / "state.pt", buffer.getbuffer())
    except (OSError, LyricgenWriteError, SafetensorError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        cause = exc.__cause__ if isinstance(exc, LyricgenWriteError) else exc
        reason = getattr(cause, "strerror", None) or str(cause).strip().splitlines()[0]
        raise LyricgenWriteError(f"{final}: cannot write checkpoint ({reason}); nothing partial "
                                 "was left and the older checkpoints are intact") from exc
    publish_dir(tmp, final)
    for old in step_dirs(root)[:-max(keep, MIN_KEEP)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(path: Path, model: Any) -> dict[str, Any]:
    """Put the checkpoint's adapter weights into `model` (a PeftModel); return state.pt.
    LyricgenInputError naming the checkpoint when a file is missing or does not load, before
    `model` is touched; ValueError when the adapter does not fit the model."""
    from peft import set_peft_model_state_dict
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        weights = load_file(str(path / ADAPTER_FILE))
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError,
            SafetensorError) as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise LyricgenInputError(f"{path}: checkpoint does not load ({type(exc).__name__}: "
                                 f"{first_line[:120]})") from exc
    result = set_peft_model_state_dict(model, weights)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"{path}: adapter does not fit the model: {unexpected[:3]}")
    return state


def load_newest(root: Path, model: Any, *, main: bool) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads, with its state.pt (see lyricgen.checkpoints); None
    when there is none."""
    return newest_loadable(list(reversed(step_dirs(root))), lambda path: load(path, model),
                           kind="finetune-llama", main=main)
