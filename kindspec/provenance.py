"""What every output records about the code that made it: package versions and git commit.

Both read metadata or run `git` only: nothing heavy is imported (no torch), so jobctl can call
them too. `git_commit` is None outside a git checkout (an installed package, an image without
.git), never an error.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

TRACKED_PACKAGES = ("lyricgen", "torch", "transformers", "peft", "bitsandbytes", "accelerate",
                    "tokenizers", "safetensors", "gguf", "lyricsgenius", "numpy", "pandas",
                    "click", "PyYAML", "Jinja2", "filelock")


def package_versions() -> dict[str, str | None]:
    """Python and the tracked packages' versions (None when not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(directory: Path | None = None, *, mark_dirty: bool = False) -> str | None:
    """HEAD's commit of the checkout holding `directory` (default: this package's), with
    `-dirty` appended when `mark_dirty` and tracked files differ; None without git."""
    where = str(directory or Path(__file__).parent)
    head = _git(where, "rev-parse", "HEAD")
    if not head:
        return None
    if mark_dirty and _git(where, "status", "--porcelain", "--untracked-files=no"):
        return head + "-dirty"
    return head


def _git(directory: str, *args: str) -> str:
    try:
        result = subprocess.run(["git", "-C", directory, *args], capture_output=True, text=True,
                                timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""
