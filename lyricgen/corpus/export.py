"""Corpus file formats and splits: the `<|fin|>` marker text, JSONL records, train/valid/test.

Marker format (the same as ../shared/corpora/disco/*.txt): every song is its text, a blank
line, then the marker line; `parse_marker_corpus(format_marker_corpus(songs)) == songs` for
songs that are stripped, non-empty and contain no marker line.

Splits (`assign_splits`) rank songs by a seeded BLAKE2 hash of their text, so a song's split
depends only on the seed and the set of songs, never on input order; the first
round(n * test_fraction) songs of the ranking go to test, the next round(n * valid_fraction) to
valid (at least one each when the fraction is > 0 and there are >= 3 songs), the rest to train.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lyricgen.io import atomic_write_bytes, atomic_write_text

SPLITS = ("train", "valid", "test")


def format_marker_corpus(texts: Iterable[str], marker: str) -> str:
    """Each text followed by a blank line and the marker line."""
    return "".join(f"{text}\n\n{marker}\n" for text in texts)


def parse_marker_corpus(text: str, marker: str) -> list[tuple[int, str]]:
    """(first line number, song text) for each song; blank edges stripped, empty chunks skipped.

    Text after the last marker counts as one more song (a file missing its final marker).
    """
    songs: list[tuple[int, str]] = []
    chunk: list[str] = []
    start = 1
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip() == marker:
            body = "\n".join(chunk).strip("\n")
            if body.strip():
                songs.append((start, body))
            chunk, start = [], number + 1
        else:
            chunk.append(line)
    body = "\n".join(chunk).strip("\n")
    if body.strip():
        songs.append((start, body))
    return songs


def _split_sizes(count: int, valid_fraction: float, test_fraction: float) -> tuple[int, int]:
    def size(fraction: float) -> int:
        wanted = round(count * fraction)
        return max(wanted, 1) if fraction > 0 and count >= 3 else wanted

    n_test = size(test_fraction)
    n_valid = min(size(valid_fraction), max(count - n_test - 1, 0))
    return n_test, n_valid


def split_key(text: str, seed: int) -> bytes:
    """The seeded hash a song is ranked by."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16, key=str(seed).encode()).digest()


def assign_splits(texts: Sequence[str], valid_fraction: float, test_fraction: float,
                  seed: int) -> list[str]:
    """The split name ("train"/"valid"/"test") of each text, in input order.

    Texts must be distinct (deduplicate first): equal texts would get the same hash.
    """
    order = sorted(range(len(texts)), key=lambda i: (split_key(texts[i], seed), texts[i]))
    n_test, n_valid = _split_sizes(len(texts), valid_fraction, test_fraction)
    names = ["train"] * len(texts)
    for rank, index in enumerate(order[:n_test + n_valid]):
        names[index] = "test" if rank < n_test else "valid"
    return names


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    """Atomically write one JSON object per line (UTF-8, not ASCII-escaped)."""
    lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    return atomic_write_text(path, lines)


def copy_files(names: Iterable[str], source_dir: Path, dest_dir: Path) -> list[Path]:
    """Atomically copy each named file from source_dir into dest_dir (created if needed)."""
    return [atomic_write_bytes(dest_dir / name, (source_dir / name).read_bytes())
            for name in names]
