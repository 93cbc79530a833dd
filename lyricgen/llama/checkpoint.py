"""Resumable training state under `out/checkpoints/step-NNNNNNNN/`.

A checkpoint holds the LoRA adapter (peft's adapter_model.safetensors + adapter_config.json)
and state.pt: optimizer, LR scheduler, grad scaler, the finished optimizer step, the metrics
history so far and `meta` (the params that shape the run, to refuse resuming a different run).
Nothing else is needed to continue bit-for-bit, because the training loop derives data order
and dropout randomness from (seed, epoch, step, rank), never from carried RNG state.

A checkpoint is written into a hidden temp directory, its files fsynced, then renamed into
place, so a kill leaves either no checkpoint or a complete one; only the newest `keep` stay.
Every rank reads the checkpoint (the run directory must be on a shared file system); only rank
0 writes.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from lyricgen.io import atomic_write_bytes, share_files

_STEP_DIR = re.compile(r"^step-(\d{8})$")
ADAPTER_FILE = "adapter_model.safetensors"


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


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def save(root: Path, step: int, model: Any, state: dict[str, Any], keep: int) -> Path:
    """Write checkpoint `step` atomically (rank 0 only) and prune all but the newest `keep`."""
    final = root / f"step-{step:08d}"
    tmp = root / f".step-{step:08d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp))
    buffer = io.BytesIO()
    torch.save({**state, "step": step}, buffer)
    atomic_write_bytes(tmp / "state.pt", buffer.getvalue())
    _fsync_tree(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in step_dirs(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(path: Path, model: Any) -> dict[str, Any]:
    """Put the checkpoint's adapter weights into `model` (a PeftModel); return state.pt."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(path / ADAPTER_FILE))
    result = set_peft_model_state_dict(model, weights)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"{path}: adapter does not fit the model: {unexpected[:3]}")
    return torch.load(path / "state.pt", map_location="cpu", weights_only=True)


def publish_dir(tmp: Path, final: Path) -> Path:
    """Move a fully written directory `tmp` to `final`, replacing an older one: readers see the
    old or the new directory, except for the instant between the two renames (the old one is
    kept as `.NAME.old` until the new one is in place). Files get the usual shared mode."""
    share_files(tmp)
    _fsync_tree(tmp)
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final
