"""Read local lyrics files into songs.jsonl records (the `source: files` side of scrape).

Accepted under `root` (searched recursively, hidden files ignored, sorted by path):
- `*.txt`: one song per file; title = file stem, lyrics = the whole content, artist = the name
  of the sub-directory it is in (None at the top level); id = "file:<relative path>".
- `*.json`: lyricsgenius exports written by `save_lyrics()` of an Artist
  (`{"name", "songs": [...]}`) or of a Song (`{"title", "lyrics", ...}`), or by
  `Genius.save_artists()` (`{"artists": [...]}`); id = the Genius song id when present.

Every file must be UTF-8 text without NUL bytes: anything else is a `LyricgenInputError` naming
the file (one line).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lyricgen.errors import LyricgenInputError

SUFFIXES = (".txt", ".json")


def song_files(root: Path) -> list[Path]:
    """The .txt/.json files under root, sorted; an error if root is not a directory or empty."""
    if not root.is_dir():
        raise LyricgenInputError(f"{root}: path: not a directory")
    files = sorted(p for p in root.rglob("*")
                   if p.suffix.lower() in SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise LyricgenInputError(f"{root}: path: no .txt or .json lyrics files in it")
    return files


def read_utf8(path: Path) -> str:
    """The file's text (a leading BOM dropped); a one-line LyricgenInputError naming the file
    when it cannot be read, holds a NUL byte (a binary file: PNG, UTF-16...) or is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LyricgenInputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    nul = data.find(b"\0")
    if nul >= 0:
        raise LyricgenInputError(f"{path}: binary file (NUL byte at byte offset {nul}); "
                                 "expected UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LyricgenInputError(
            f"{path}: not valid UTF-8 (byte {exc.start}: {exc.reason}); re-save it as UTF-8"
        ) from exc


def file_records(path: Path, root: Path) -> Iterator[dict[str, Any]]:
    """The songs.jsonl records in one file (see the module docstring)."""
    relative = path.relative_to(root).as_posix()
    text = read_utf8(path)
    if path.suffix.lower() == ".txt":
        artist = path.parent.name if path.parent != root else None
        yield {"id": f"file:{relative}", "title": path.stem, "artist": artist, "album": None,
               "url": None, "lyrics": text, "source": "files"}
        return
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise LyricgenInputError(f"{path}: not valid JSON ({exc})") from exc
    for index, (song, artist) in enumerate(_export_songs(data, path)):
        yield _export_record(song, artist, f"file:{relative}#{index}")


def _export_songs(data: Any, path: Path) -> Iterator[tuple[dict[str, Any], str | None]]:
    """(song dict, artist name) pairs of a lyricsgenius Artist, Song or artists export."""
    if isinstance(data, dict) and isinstance(data.get("artists"), list):
        for artist in data["artists"]:
            yield from _export_songs(artist, path)
    elif isinstance(data, dict) and isinstance(data.get("songs"), list):
        for song in data["songs"]:
            if not isinstance(song, dict) or not isinstance(song.get("lyrics"), str):
                raise LyricgenInputError(f"{path}: songs: every song needs a 'lyrics' string")
            yield song, data.get("name")
    elif isinstance(data, dict) and isinstance(data.get("lyrics"), str):
        yield data, None
    else:
        raise LyricgenInputError(
            f"{path}: not a lyricsgenius export (expected an Artist with 'songs' or a Song "
            "with 'lyrics')")


def _export_record(song: dict[str, Any], artist: str | None, fallback_id: str
                   ) -> dict[str, Any]:
    primary = song.get("primary_artist")
    album = song.get("album")
    return {
        "id": song.get("id") or fallback_id,
        "title": song.get("title") or fallback_id,
        "artist": song.get("artist") or (primary or {}).get("name") or artist,
        "album": album.get("name") if isinstance(album, dict) else album,
        "url": song.get("url"),
        "lyrics": song["lyrics"],
        "source": "genius",
    }
