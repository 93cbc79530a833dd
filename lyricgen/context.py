"""RunContext: what a kind's `run(params, ctx)` knows about where it runs.

Built by `python -m lyricgen KIND --config config.json [--task N]` from the config file that
jobctl writes (see `load_config`). A kind writes everything under `ctx.out_dir`.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from lyricgen.errors import LyricgenInputError
from lyricgen.io import atomic_write_json

CONFIG_SCHEMA = 1
TRACKED_PACKAGES = ("lyricgen", "torch", "transformers", "peft", "bitsandbytes", "accelerate",
                    "tokenizers", "safetensors", "gguf", "lyricsgenius", "numpy", "pandas")


@dataclass
class RunContext:
    kind: str
    out_dir: Path
    job_dir: Path | None = None
    job_name: str = "local"
    run_id: str = "adhoc"
    task_index: int = 0
    task_count: int = 1
    matrix: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def path(self, name: str) -> Path:
        """A path inside out_dir (parents created)."""
        target = self.out_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target


def load_config(config_path: Path, task: int | None) -> tuple[str, dict[str, Any], RunContext]:
    """Read jobctl's config.json: returns (kind, params, ctx) for one task.

    Format (schema 1):
      {"schema": 1, "kind": "clean", "job": "clean", "run_id": "...",
       "job_dir": "/abs/runs/RUN/JOB", "out_dir": "/abs/runs/RUN/JOB/out",
       "tasks": [{"index": 0, "params": {...}, "matrix": {...}}, ...]}
    A job with several tasks (an array) gives task i the out dir `<out_dir>/<i>`.
    """
    try:
        config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise LyricgenInputError(f"{config_path}: config file not found") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise LyricgenInputError(f"{config_path}: not valid JSON ({exc})") from exc
    if config.get("schema") != CONFIG_SCHEMA:
        raise LyricgenInputError(f"{config_path}: schema: expected {CONFIG_SCHEMA}")
    tasks = config["tasks"]
    index = 0 if task is None else task
    if not 0 <= index < len(tasks):
        raise LyricgenInputError(f"{config_path}: task {index} out of range 0..{len(tasks) - 1}")
    entry = tasks[index]
    out_dir = Path(config["out_dir"])
    if len(tasks) > 1:
        out_dir = out_dir / str(index)
    ctx = RunContext(
        kind=config["kind"], out_dir=out_dir,
        job_dir=Path(config["job_dir"]) if config.get("job_dir") else None,
        job_name=config.get("job", "local"), run_id=config.get("run_id", "adhoc"),
        task_index=index, task_count=len(tasks), matrix=entry.get("matrix", {}),
    )
    return config["kind"], dict(entry["params"]), ctx


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent,
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_provenance(ctx: RunContext, params: dict[str, Any], extra: dict[str, Any] | None = None
                     ) -> Path:
    """provenance.json in out_dir: resolved params, versions, git commit, host, timing.

    Never put secrets in params: the scrape kind takes the NAME of its token variable.
    """
    record = {
        "kind": ctx.kind, "job": ctx.job_name, "run_id": ctx.run_id,
        "task_index": ctx.task_index, "task_count": ctx.task_count, "matrix": ctx.matrix,
        "params": params, "versions": package_versions(), "git_commit": git_commit(),
        "host": socket.gethostname(), "argv": sys.argv,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "started": ctx.started, "finished": time.time(),
    }
    if extra:
        record.update(extra)
    return atomic_write_json(ctx.out_dir / "provenance.json", record)
