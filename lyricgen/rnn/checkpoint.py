"""The `checkpoint/` directory a train-rnn job writes, and how to load it.

Layout (inside the job's out dir):
```
checkpoint/
  last.pt     full training state after the latest checkpointed step (resume point)
  previous.pt the last.pt before it (the fallback when last.pt does not load)
  best.pt     the same format, saved at the best validation so far (absent without valid data)
  vocab.json  the vocabulary (Vocab.to_dict), also embedded in every .pt
  model.json  {"model_config": ..., "params": ...}, also embedded in every .pt
```
Each .pt is a self-describing dict (load with `torch.load(path, weights_only=True)`):
`format` ("lyricgen-rnn/1"), `model_config` (ModelConfig fields), `vocab` (Vocab dict),
`model_state`, `optimizer_state`, `scaler_state` (None unless fp16), `step` (optimizer steps
done), `epoch`, `window` (the next TBPTT window of that epoch: the position in the data),
`hidden` (the carried hidden state, CPU tensors, or None at an epoch start), `rng` (torch CPU
and CUDA RNG states), `best` ({"step", "bpc", "ppl"} or None), `bad_evals`,
`last_val_step`, `last_val`, `elapsed` (training seconds so far), `tokens_seen`, `stop_reason`
(None while training can go on), `data_sha256` (of the training text), `params` (the
resolved job params), `world_size` (processes that trained it) and `rng_ranks` (every
process's RNG states, None for one process; `rng` is rank 0's). With several processes
`hidden` holds all their streams, in rank order.

Files are written atomically (lyricgen.io: temp file in the same directory, fsync, rename):
a kill leaves the previous complete file, and a failed write (disk full, I/O error) is one
LyricgenWriteError naming the file, with no partial file left. Before last.pt is replaced,
the version it replaces becomes previous.pt (a hard link, no copy), so a resume can fall back
to it (`load_resume_point`). A generator loads best.pt when present, else last.pt.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lyricgen.checkpoints import newest_loadable
from lyricgen.errors import LyricgenInputError
from lyricgen.io import atomic_write_bytes, atomic_write_json, keep_previous
from lyricgen.rnn.model import ModelConfig, RnnLM
from lyricgen.rnn.vocab import Vocab

FORMAT = "lyricgen-rnn/1"
CHECKPOINT_DIR = "checkpoint"
LAST = "last.pt"
PREVIOUS = "previous.pt"
BEST = "best.pt"


def save_checkpoint(payload: dict[str, Any], path: Path, previous: Path | None = None) -> Path:
    """torch.save `payload` to `path` atomically; with `previous`, the file `path` held until
    now is kept there. LyricgenWriteError naming the file when it cannot be written."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    if previous is not None:
        keep_previous(path, previous)
    return atomic_write_bytes(path, buffer.getbuffer())


def load_resume_point(directory: Path, *, main: bool) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of `directory` that loads, last.pt else previous.pt, with its
    payload (lyricgen.checkpoints: a warning line per file that does not load); None when
    there is neither."""
    candidates = [directory / name for name in (LAST, PREVIOUS) if (directory / name).is_file()]
    return newest_loadable(candidates, load_checkpoint, kind="train-rnn", main=main)


def write_sidecars(directory: Path, vocab: Vocab, config: ModelConfig,
                   params: dict[str, Any]) -> None:
    """vocab.json and model.json beside the .pt files (readable without torch)."""
    atomic_write_json(directory / "vocab.json", vocab.to_dict())
    atomic_write_json(directory / "model.json",
                      {"format": FORMAT, "model_config": config.to_dict(), "params": params})


def resolve_checkpoint(path: str | Path) -> Path:
    """A .pt file from: a .pt path, a checkpoint/ dir, or a train-rnn out dir (best.pt first)."""
    path = Path(path)
    if path.is_file():
        return path
    for directory in (path / CHECKPOINT_DIR, path):
        for name in (BEST, LAST):
            if (directory / name).is_file():
                return directory / name
    raise LyricgenInputError(f"{path}: checkpoint: no best.pt or last.pt here or in "
                             f"{CHECKPOINT_DIR}/ (give a train-rnn out dir, its checkpoint/ "
                             "dir or a .pt file)")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """Read and check one .pt file (weights_only: no code from the file is run)."""
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise LyricgenInputError(f"{path}: checkpoint: not a readable torch checkpoint "
                                 f"({type(exc).__name__}: {first_line[:120]})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise LyricgenInputError(f"{path}: checkpoint: not a {FORMAT} checkpoint")
    return payload


@dataclass
class LoadedModel:
    model: RnnLM
    vocab: Vocab
    checkpoint: dict[str, Any]
    path: Path


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Resolve `path` (see resolve_checkpoint), build the model in eval mode on `device`."""
    resolved = resolve_checkpoint(path)
    payload = load_checkpoint(resolved)
    model = RnnLM(ModelConfig(**payload["model_config"]))
    model.load_state_dict(payload["model_state"])
    model.to(device).eval()
    return LoadedModel(model, Vocab.from_dict(payload["vocab"]), payload, resolved)
