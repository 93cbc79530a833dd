"""Atomic, durable file writes: write to a temp file in the same directory, fsync, rename,
fsync the directory. Every file lyricgen writes goes through here (directories through
`publish_dir`).

A reader never sees a half-written file, and a crash leaves either the old or the new content.
A write that fails (disk full, quota, I/O error: any OSError) raises LyricgenWriteError, one
line naming the file (exit 1 from `python -m lyricgen`), after removing its temp file: the
file keeps its previous content. A failed append (`append_jsonl`, metrics.csv rows) raises it
too; there the last line may be torn (read_jsonl(..., repair=True) drops it).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lyricgen.errors import LyricgenInputError, LyricgenWriteError


def _read_umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


_FILE_MODE = 0o666 & ~_read_umask()  # read once at import: os.umask is process-global


def write_error(path: Path, exc: OSError) -> LyricgenWriteError:
    """The one-line error for a failed atomic write of `path`."""
    return LyricgenWriteError(f"{path}: cannot write ({_reason(exc)}); nothing partial was "
                              "left and its previous version, if any, is intact")


def append_error(path: Path, exc: OSError) -> LyricgenWriteError:
    """The one-line error for a failed append to `path` (its last line may be torn)."""
    return LyricgenWriteError(f"{path}: cannot append ({_reason(exc)})")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> Path:
    """Write `data` to `path` atomically and durably (see the module docstring)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; outputs are shared files
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from exc
        raise
    return path


def keep_previous(path: Path, previous: Path) -> None:
    """Make `previous` hold what `path` holds now (a hard link, or a copy where the file
    system has none), replacing it atomically; nothing when `path` does not exist. Call it
    before replacing `path` to keep the version it replaces. LyricgenWriteError on failure."""
    if not path.is_file():
        return
    tmp = previous.with_name(f".{previous.name}.{secrets.token_hex(4)}.tmp")
    try:
        os.link(path, tmp)
    except OSError:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise write_error(previous, exc) from exc
        atomic_write_bytes(previous, data)
        return
    try:
        os.replace(tmp, previous)
        _fsync_dir(previous.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(previous, exc) from exc


def publish_dir(tmp: Path, final: Path) -> Path:
    """Move a fully written directory `tmp` to `final`, replacing an older one: readers see the
    old or the new directory, except for the instant between the two renames (the old one is
    kept as `.NAME.old` until the new one is in place). Files get the usual shared mode
    (`share_files`). LyricgenWriteError (naming `final`)
    when the files cannot be synced or moved; `tmp` is then removed and an older `final` kept."""
    old = final.with_name(f".{final.name}.old")
    share_files(tmp)
    try:
        _fsync_tree(tmp)
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not final.exists():
            os.replace(old, final)
        raise write_error(final, exc) from exc
    shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (the new directory entry)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False, default=str)
    return atomic_write_text(path, text + "\n")


def share_files(root: str | Path) -> None:
    """Give every file under `root` the mode an ordinary write would (0666 minus the umask):
    libraries that write through temp files (safetensors) leave 0600, unreadable to the group
    sharing a run directory."""
    for path in Path(root).rglob("*"):
        if path.is_file():
            os.chmod(path, _FILE_MODE)


def sha256_file(path: str | Path, progress: bool = False) -> str:
    """Hex sha256 of a file, read in 8 MiB chunks (a tqdm bar on stderr with progress=True)."""
    from tqdm import tqdm

    digest = hashlib.sha256()
    with open(path, "rb") as handle, tqdm(total=os.path.getsize(path), unit="B",
                                          unit_scale=True, desc="sha256",
                                          disable=not progress) as bar:
        while chunk := handle.read(8 << 20):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync, so a record that was reported saved survives a kill.

    A crash can leave at most a partial LAST line; `read_jsonl(..., repair=True)` drops it.
    """
    line = json.dumps(record, ensure_ascii=False) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise append_error(Path(path), exc) from exc


def read_jsonl(path: str | Path, repair: bool = False) -> list[dict[str, Any]]:
    """Read a JSONL file. With repair=True a truncated last line (from a kill mid-append) is
    cut off the file atomically; any other bad line raises ValueError naming file:line."""
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    records: list[dict[str, Any]] = []
    good_bytes = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            good_bytes += len(line) + 1
            continue
        try:
            records.append(json.loads(line.decode("utf-8")))
            good_bytes += len(line) + 1
        except (ValueError, UnicodeDecodeError) as exc:
            last = number == len(lines) or (number == len(lines) - 1 and not lines[-1])
            if repair and last:
                atomic_write_bytes(path, raw[:good_bytes])
                break
            raise ValueError(f"{path}:{number}: invalid JSON line ({exc})") from exc
    return records


def remove_stale_temp_files(directory: str | Path) -> list[Path]:
    """Delete the temp files (`.NAME.XXXXXXXX.tmp`) that atomic writes in `directory` left
    behind when their process was killed (SIGKILL, OOM killer, node failure): the target
    files themselves are always complete, but these partial copies would stay forever.
    Call it when a job starts, before anything writes there (never while another process
    may be writing). Only files directly in `directory` are removed; returns them."""
    removed = []
    for path in Path(directory).glob(".*.tmp"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


MAX_UNMARKED_CHARS = 10_000  # a text without any song marker is one song at most this long


def read_text_file(path: Path, key: str | None = None) -> str:
    """UTF-8 text of a file (BOM dropped); one-line LyricgenInputError naming the file (and
    `key`, the param it came from) for missing, unreadable, empty, binary (NUL bytes) and
    non-UTF-8 files -- the last with line and byte offset."""
    where = f"{path}: {key}:" if key else f"{path}:"
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise LyricgenInputError(f"{where} file not found") from exc
    except IsADirectoryError as exc:
        raise LyricgenInputError(f"{where} is a directory, expected a text file") from exc
    except OSError as exc:
        raise LyricgenInputError(f"{where} cannot read ({exc.strerror})") from exc
    if not data.strip():
        raise LyricgenInputError(f"{where} empty file")
    nul = data.find(b"\0")
    if nul >= 0:
        raise LyricgenInputError(f"{where} binary file (NUL byte at byte offset {nul})")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        prefix = f"{path}:{line}: {key}:" if key else f"{path}:{line}:"
        raise LyricgenInputError(f"{prefix} not UTF-8 (byte 0x{data[exc.start]:02x} at "
                                 f"byte offset {exc.start})") from exc


def has_marker_line(text: str, marker: str) -> bool:
    return any(line.strip() == marker for line in text.split("\n"))
