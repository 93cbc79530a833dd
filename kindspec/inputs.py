"""What an input path param must point at, checked before any job starts.

`input_problem(kind_of_input, path)` returns None when `path` is usable, else a one-phrase
message (the caller prefixes file, line and key). Input kinds (Param.input):

- "file": a readable regular file;
- "dir": a readable directory;
- "file_or_dir": either;
- "model_dir": a local transformers model directory (a config.json with a model_type; a
  jobctl job dir has a config.json too). A Hub id such as
  `meta-llama/Meta-Llama-3-8B` is refused with a hint: nothing is ever downloaded;
- "model": what generate-grid and evaluate load (`model_kind_of`): a train-rnn out dir, its
  checkpoint/ dir or a .pt file, or a LLaMA dir (config.json, or adapter_config.json whose
  base_model_name_or_path is itself a local model dir);
- "grid": a generate-grid out dir (grid.json, or numbered shard dirs) or a grid.json file.

Pitfall: a check is a snapshot. A file can vanish between the check and the job's start; the
job's own reading still fails cleanly then (one line, exit 2), only later.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

RNN_CHECKPOINTS = ("best.pt", "last.pt")
INPUT_KINDS = ("file", "dir", "file_or_dir", "model_dir", "model", "grid")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_MODEL_EXPECTED = ("a train-rnn out dir, its checkpoint/ dir or a .pt file, or a LLaMA dir "
                   "with config.json or adapter_config.json")


def input_problem(kind: str, path: str | Path) -> str | None:
    """None when `path` (absolute) is a usable input of `kind`, else why not."""
    target = Path(path)
    if not target.exists():
        hint = _hub_hint(target) if kind in ("model_dir", "model") else ""
        return f"{path}: does not exist{hint}"
    if not os.access(target, os.R_OK):
        return f"{path}: not readable (permissions)"
    return _KIND_CHECKS[kind](target)


def _hub_hint(target: Path) -> str:
    """A hint when a missing path reads like a Hub id made absolute (`BASE/org/name`: BASE
    exists, `org` does not): nothing is downloaded, the user must fetch or import it."""
    hub = f"{target.parent.name}/{target.name}"
    if target.parent.exists() or not target.parent.parent.is_dir() or not _HUB_ID.match(hub):
        return ""
    return (f" ({hub!r} looks like a Hugging Face Hub id: models load from a local directory "
            f"only; download it first, e.g. `hf download {hub} --local-dir "
            f"models/{target.name}`, or import a GGUF with `lyricgen import-model`)")


def model_kind_of(path: Path) -> str | None:
    """"rnn" or "llama" from the files at `path`, or None when it holds neither."""
    path = Path(path)
    if path.is_file() and path.suffix == ".pt":
        return "rnn"
    if path.is_dir():
        for directory in (path / "checkpoint", path):
            if any((directory / name).is_file() for name in RNN_CHECKPOINTS):
                return "rnn"
        if (path / "adapter_config.json").is_file() or _model_dir(path) is None:
            return "llama"
    return None


def _file(target: Path) -> str | None:
    return None if target.is_file() else f"{target}: is a directory, expected a file"


def _dir(target: Path) -> str | None:
    if not target.is_dir():
        return f"{target}: is a file, expected a directory"
    if not os.access(target, os.X_OK):
        return f"{target}: directory cannot be entered (permissions)"
    return None


def _file_or_dir(target: Path) -> str | None:
    return None if target.is_file() else _dir(target)


def _model_dir(target: Path) -> str | None:
    problem = _dir(target)
    if problem is not None:
        return problem
    config = target / "config.json"
    if not config.is_file():
        return f"{target}: not a model directory (no config.json)"
    try:
        found = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{config}: not a readable transformers config ({exc})"
    if not isinstance(found, dict) or "model_type" not in found:  # e.g. a jobctl job dir
        return f"{target}: not a transformers model directory (config.json has no model_type)"
    return None


def _model(target: Path) -> str | None:
    if model_kind_of(target) is None:
        return f"{target}: is no model (expected {_MODEL_EXPECTED})"
    adapter = target / "adapter_config.json"
    if model_kind_of(target) == "llama" and adapter.is_file():
        return _adapter_base(adapter)
    return None


def _adapter_base(config_path: Path) -> str | None:
    """A LoRA adapter is usable only with its base model, a local model directory."""
    try:
        base = json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return f"{config_path}: not a readable adapter config (JSON)"
    if not isinstance(base, str) or not base:
        return f"{config_path}: base_model_name_or_path: missing"
    problem = input_problem("model_dir", base)
    return None if problem is None else f"the adapter's base model: {problem}"


def _grid(target: Path) -> str | None:
    if target.is_file():
        return None
    if (target / "grid.json").is_file() or any(
            (shard / "grid.json").is_file() for shard in target.iterdir() if shard.name.isdigit()):
        return None
    return f"{target}: no grid.json here or in numbered shard dirs (a generate-grid out dir?)"


_KIND_CHECKS = {"file": _file, "dir": _dir, "file_or_dir": _file_or_dir,
                "model_dir": _model_dir, "model": _model, "grid": _grid}
