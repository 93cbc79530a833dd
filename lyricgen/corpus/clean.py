"""The `clean` job kind: read a lyrics corpus, clean and deduplicate it, split and describe it.

Input (`input` param): a songs.jsonl from the scrape kind (one object per line with "lyrics"
or "text", optional "title", "artist"/"author", "id"), a .txt corpus in the `<|fin|>` marker
format, or a directory of .txt files (sorted by name; each file one song unless it holds
markers). A .txt without any marker line is read as ONE song only up to MAX_UNMARKED_CHARS
characters; a bigger one is an error (almost surely a corpus in another format).

Cleaning (lyricgen.corpus.textnorm) then drops, in this order: songs left empty, songs with
fewer than `min_lines` non-blank lines, exact duplicates of an earlier song's cleaned text, and
songs whose artist and title (both known) repeat an earlier song's, case-insensitively.

Outputs in ctx.out_dir (names fixed by kindspec/registry.py CLEAN.outputs): corpus.txt, train.txt,
valid.txt, test.txt (marker format), train/valid/test_lyrics.jsonl ("text" + known metadata),
stats.csv, stats.json, hist_words.png, hist_lines.png, cleaning_report.json, metrics.json.
Bad input raises LyricgenInputError with one line naming the file (and line for JSONL).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lyricgen.context import RunContext
from lyricgen.corpus.export import (
    SPLITS,
    assign_splits,
    copy_files,
    format_marker_corpus,
    parse_marker_corpus,
    write_jsonl,
)
from lyricgen.corpus.stats import write_stats
from lyricgen.corpus.textnorm import RULES, clean_lyrics
from lyricgen.errors import LyricgenInputError
from lyricgen.io import (
    MAX_UNMARKED_CHARS,
    atomic_write_json,
    atomic_write_text,
    has_marker_line,
    read_text_file,
)
from lyricgen.params import build_config

PROGRESS_MIN_SONGS = 500
DROP_REASONS = ("empty", "too_short", "duplicate_text", "duplicate_title")
EXPORTED = ("corpus.txt", "train.txt", "valid.txt", "test.txt", "train_lyrics.jsonl",
            "valid_lyrics.jsonl", "test_lyrics.jsonl", "stats.csv", "stats.json",
            "cleaning_report.json")


@dataclass(frozen=True)
class CleanParams:
    """The clean kind's params (kindspec.registry CLEAN: defaults and ranges there)."""

    input: Path
    outputs: Path | None
    valid_fraction: float
    test_fraction: float
    min_lines: int
    marker: str
    seed: int

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> CleanParams:
        """Validated params; LyricgenInputError "params: KEY: ..." for a bad or unknown key."""
        return build_config(cls, "clean", params)


@dataclass
class Song:
    text: str
    origin: str  # "path" or "path:line", for reports and errors
    title: str | None = None
    artist: str | None = None
    id: str | None = None


@dataclass
class CleaningReport:
    songs_read: int = 0
    removals: Counter[str] = field(default_factory=Counter)
    dropped: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self, input_path: Path, songs_kept: int) -> dict[str, Any]:
        reasons = Counter(entry["reason"] for entry in self.dropped)
        return {
            "input": str(input_path), "songs_read": self.songs_read, "songs_kept": songs_kept,
            "songs_dropped": {reason: reasons[reason] for reason in DROP_REASONS},
            "removals_by_rule": {rule: self.removals[rule] for rule in (*RULES, "marker_line")},
            "dropped": self.dropped,
        }


def _optional_str(record: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        if record.get(key) is not None:
            return str(record[key])
    return None


def _song_from_record(record: Any, where: str) -> Song:
    if not isinstance(record, dict):
        raise LyricgenInputError(f"{where}: expected a JSON object per line")
    key = "lyrics" if "lyrics" in record else "text"
    if key not in record:
        raise LyricgenInputError(f"{where}: lyrics: missing (need a 'lyrics' or 'text' key)")
    lyrics = record[key]
    if lyrics is not None and not isinstance(lyrics, str):
        raise LyricgenInputError(f"{where}: {key}: must be a string")
    return Song(lyrics or "", where, _optional_str(record, "title"),
                _optional_str(record, "artist", "author"), _optional_str(record, "id"))


def songs_from_jsonl(path: Path) -> list[Song]:
    songs = []
    for number, line in enumerate(read_text_file(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise LyricgenInputError(f"{path}:{number}: invalid JSON line ({exc})") from exc
        songs.append(_song_from_record(record, f"{path}:{number}"))
    return songs


def songs_from_marker_text(path: Path, marker: str) -> list[Song]:
    text = read_text_file(path)
    if not has_marker_line(text, marker):
        if len(text) > MAX_UNMARKED_CHARS:
            raise LyricgenInputError(
                f"{path}: no {marker} marker found (an unmarked file is one song only up to "
                f"{MAX_UNMARKED_CHARS} characters)")
        return [Song(text, str(path), title=path.stem)]
    return [Song(body, f"{path}:{line}") for line, body in parse_marker_corpus(text, marker)]


def read_songs(path: Path, marker: str) -> list[Song]:
    """All songs of a .jsonl, a marker .txt or a directory of .txt files."""
    if path.is_dir():
        files = sorted(p for p in path.glob("*.txt") if p.is_file())
        if not files:
            raise LyricgenInputError(f"{path}: no .txt files in directory")
        return [song for file in files for song in songs_from_marker_text(file, marker)]
    if not path.exists():
        raise LyricgenInputError(f"{path}: input not found")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return songs_from_jsonl(path)
    if path.suffix.lower() == ".txt":
        return songs_from_marker_text(path, marker)
    raise LyricgenInputError(f"{path}: unsupported input (expected .jsonl, .txt or a directory)")


def _drop_reason(text: str, song: Song, min_lines: int, seen_text: dict[str, str],
                 seen_title: dict[tuple[str, str], str]) -> tuple[str, str | None] | None:
    """(reason, origin of the earlier song) when the song must go; else None, and the song is
    recorded in seen_text/seen_title as kept."""
    lines = sum(1 for line in text.split("\n") if line)
    if lines == 0:
        return "empty", None
    if lines < min_lines:
        return "too_short", None
    if text in seen_text:
        return "duplicate_text", seen_text[text]
    if song.artist and song.title:
        key = (song.artist.casefold().strip(), song.title.casefold().strip())
        if key in seen_title:
            return "duplicate_title", seen_title[key]
        seen_title[key] = song.origin
    seen_text[text] = song.origin
    return None


def clean_songs(songs: list[Song], min_lines: int, marker: str
                ) -> tuple[list[Song], CleaningReport]:
    """Cleaned, deduplicated songs (first occurrence kept, input order) and the report."""
    report = CleaningReport(songs_read=len(songs))
    seen_text: dict[str, str] = {}
    seen_title: dict[tuple[str, str], str] = {}
    kept: list[Song] = []
    for song in tqdm(songs, desc="clean", unit="song", mininterval=1.0,
                     disable=len(songs) < PROGRESS_MIN_SONGS):
        lines = song.text.split("\n")
        without_marker = [line for line in lines if line.strip() != marker]
        report.removals["marker_line"] += len(lines) - len(without_marker)
        text, counts = clean_lyrics("\n".join(without_marker))
        report.removals.update(counts)
        dropped = _drop_reason(text, song, min_lines, seen_text, seen_title)
        if dropped:
            report.dropped.append({"origin": song.origin, "title": song.title,
                                   "artist": song.artist, "reason": dropped[0],
                                   "duplicate_of": dropped[1]})
        else:
            kept.append(Song(text, song.origin, song.title, song.artist, song.id))
    return kept, report


def _record(song: Song) -> dict[str, Any]:
    record = {"id": song.id, "title": song.title, "artist": song.artist, "text": song.text}
    return {key: value for key, value in record.items() if value is not None}


def write_corpus_files(out_dir: Path, songs: list[Song], splits: list[str], marker: str) -> None:
    """corpus.txt and per-split marker .txt and JSONL files."""
    atomic_write_text(out_dir / "corpus.txt", format_marker_corpus((s.text for s in songs),
                                                                   marker))
    for name in SPLITS:
        members = [song for song, split in zip(songs, splits, strict=True) if split == name]
        atomic_write_text(out_dir / f"{name}.txt",
                          format_marker_corpus((s.text for s in members), marker))
        write_jsonl(out_dir / f"{name}_lyrics.jsonl", (_record(s) for s in members))


def run(params: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """The `clean` kind: returns a summary (added to provenance.json)."""
    started = time.perf_counter()
    config = CleanParams.from_params(params)
    songs = read_songs(config.input, config.marker)
    kept, report = clean_songs(songs, config.min_lines, config.marker)
    report_json = report.to_json(config.input, len(kept))
    if not kept:
        raise LyricgenInputError(f"{config.input}: no songs left after cleaning "
                                 f"(dropped: {report_json['songs_dropped']})")
    splits = assign_splits([song.text for song in kept], config.valid_fraction,
                           config.test_fraction, config.seed)
    write_corpus_files(ctx.out_dir, kept, splits, config.marker)
    rows = [{"split": split, "origin": s.origin, "id": s.id, "title": s.title,
             "artist": s.artist, "text": s.text} for s, split in zip(kept, splits, strict=True)]
    stats = write_stats(ctx.out_dir, rows)
    atomic_write_json(ctx.out_dir / "cleaning_report.json", report_json)
    summary = {"songs_read": report.songs_read, "songs_kept": len(kept),
               "songs_dropped": report_json["songs_dropped"],
               "splits": {name: stats["splits"][name]["songs"] for name in SPLITS},
               "words": stats["totals"]["words"], "vocabulary_size": stats["vocabulary_size"]}
    atomic_write_json(ctx.out_dir / "metrics.json",
                      {**summary, "removals_by_rule": report_json["removals_by_rule"],
                       "seconds": round(time.perf_counter() - started, 3)})
    if config.outputs:
        copy_files(EXPORTED, ctx.out_dir, config.outputs)
    return {"clean": summary}
