"""`scrape` kind: Genius lyrics (lyricsgenius) or local files -> `out/songs.jsonl`, resumably.

Outputs in ctx.out_dir:
- `songs.jsonl`: one record per song, appended (and fsynced) as it arrives:
  {"id", "title", "artist", "album", "url", "lyrics", "source"}; source is "genius" (also for
  lyricsgenius JSON exports) or "files" (.txt); album/url are null when unknown.
- `scrape_report.json`: counts (saved, skipped_existing, failed), the same per group (the
  artist name as given in params, or "files"), and every failure with its group and reason.
  A failed song is never saved, so a rerun tries it again.
- `metrics.json`: saved/skipped/failed counts, songs_total, HTTP requests (attempts, retries
  included), retries, seconds.
A run that ends with no song at all in songs.jsonl raises LyricgenInputError (exit 2).

Resume: ids already in songs.jsonl are skipped before any request for them (a truncated last
line from a killed run is cut off first), so a rerun never duplicates. `max_songs` counts the
artist's songs already in the file.

How Genius is used: lyricsgenius finds the artist (`search_artist(max_songs=0)`: its name
matching without downloading songs), lists songs (`artist_songs`, paged), filters non-songs
(its `_result_is_lyrics`), reads album data (`song`) and parses lyrics pages (`lyrics`). Its
`search_artist` with songs is not used: it keeps everything in memory until the end, so a kill
loses the work, and it fetches songs that are already saved. All HTTP goes through
`genius_http.RetryingAdapter` (retries, Retry-After, auth errors). A lyrics page that parses to
no lyrics (a throttled page served with 200) is fetched again with the same backoff and, when
retries run out, reported as failed, never saved empty.

Secrets: the token is read only from the environment variable named by `token_env`; it is
never written, logged or put in a message (failure reasons go through `redact`).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lyricgen.context import RunContext
from lyricgen.corpus.genius_files import file_records, song_files
from lyricgen.corpus.genius_http import (
    GeniusRequestError,
    HttpStats,
    RetryPolicy,
    make_genius,
    redact,
    wait,
)
from lyricgen.errors import LyricgenAuthError, LyricgenInputError
from lyricgen.io import append_jsonl, atomic_write_json, read_jsonl, remove_stale_temp_files
from lyricgen.params import build_config

SONGS_FILE = "songs.jsonl"
REPORT_FILE = "scrape_report.json"
METRICS_FILE = "metrics.json"
ARTIST_SONGS_PER_PAGE = 50


@dataclass(frozen=True)
class ScrapeParams:
    """The scrape kind's params (kindspec.registry SCRAPE: defaults, ranges, the token_env
    pattern and the source/artists/path combinations are checked there)."""

    source: str
    artists: tuple[str, ...]
    max_songs: int
    sort: str
    token_env: str
    path: Path | None
    max_retries: int
    backoff_seconds: float
    sleep_seconds: float
    timeout_seconds: float

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ScrapeParams:
        return build_config(cls, "scrape", params)


class SongStore:
    """songs.jsonl with the set of ids in it; `add` appends and fsyncs one record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            records = read_jsonl(path, repair=True)
        except ValueError as exc:
            raise LyricgenInputError(str(exc)) from exc
        self.ids = {record.get("id") for record in records}

    def __contains__(self, song_id: Any) -> bool:
        return song_id in self.ids

    def add(self, record: dict[str, Any]) -> None:
        append_jsonl(self.path, record)
        self.ids.add(record["id"])


@dataclass
class Report:
    """What happened per group (artist name or "files"), written to scrape_report.json."""

    source: str
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    failed: list[dict[str, Any]] = field(default_factory=list)

    def count(self, group: str, outcome: str) -> None:
        self.counts.setdefault(group, Counter())[outcome] += 1

    def fail(self, group: str, reason: str, **where: Any) -> None:
        self.count(group, "failed")
        self.failed.append({"group": group, **where, "reason": reason})

    def total(self, outcome: str) -> int:
        return sum(counter[outcome] for counter in self.counts.values())

    def totals(self) -> dict[str, int]:
        return {k: self.total(k) for k in ("saved", "skipped_existing", "failed")}

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "counts": self.totals(),
                "per_group": {g: dict(c) for g, c in self.counts.items()},
                "failed": self.failed}


def read_token(token_env: str) -> str:
    """The token from $token_env; LyricgenAuthError naming the variable if unset or empty."""
    token = os.environ.get(token_env, "").strip()
    if not token:
        raise LyricgenAuthError(f"scrape: environment variable {token_env} (params.token_env) "
                                "is not set or empty; export your Genius API token in it")
    return token


def run(params: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Run the scrape kind (see the module docstring); returns a summary for provenance."""
    p = ScrapeParams.from_params(params)
    started = time.monotonic()
    remove_stale_temp_files(ctx.out_dir)  # left by a killed run's atomic writes
    store = SongStore(ctx.path(SONGS_FILE))
    report = Report(p.source)
    stats = HttpStats()
    try:
        if p.source == "files":
            import_files(p.path, store, report)
        else:
            scrape_genius(p, store, report, stats)
    finally:
        seconds = round(time.monotonic() - started, 3)
        atomic_write_json(ctx.out_dir / REPORT_FILE, report.to_dict())
        atomic_write_json(ctx.out_dir / METRICS_FILE, {
            **report.totals(), "songs_total": len(store.ids), "requests": stats.requests,
            "retries": stats.retries, "seconds": seconds})
    totals = report.totals()
    print(f"scrape: saved {totals['saved']}, skipped {totals['skipped_existing']} existing, "
          f"failed {totals['failed']} (see {REPORT_FILE})", file=sys.stderr)
    if not store.ids:
        raise LyricgenInputError(f"{store.path}: no songs saved; see {REPORT_FILE}")
    return {"scrape": {**totals, "songs_total": len(store.ids), "source": p.source}}


def import_files(root: Path, store: SongStore, report: Report) -> None:
    """Append the songs of every .txt/.json file under root that are not in the store yet.

    Every file is read and checked first: a bad one (not UTF-8, binary, broken JSON) stops
    the import before any song is appended and before the progress bar starts, so the error
    is the only line on stderr.
    """
    found = [(path, record) for path in song_files(root) for record in file_records(path, root)]
    for path, record in tqdm(found, desc=root.name, unit="song"):
        if record["id"] in store:
            report.count("files", "skipped_existing")
        elif not record["lyrics"].strip():
            report.fail("files", "empty lyrics", file=str(path), title=record["title"])
        else:
            store.add(record)
            report.count("files", "saved")


def scrape_genius(p: ScrapeParams, store: SongStore, report: Report, stats: HttpStats) -> None:
    GeniusScraper(p, store, report, stats, read_token(p.token_env)).run()


class GeniusScraper:
    """One Genius scrape: artists in order, songs appended to the store as they arrive."""

    def __init__(self, p: ScrapeParams, store: SongStore, report: Report, stats: HttpStats,
                 token: str) -> None:
        self.p, self.store, self.report, self.stats = p, store, report, stats
        self.token = token
        self.policy = RetryPolicy(p.max_retries, p.backoff_seconds)
        self.genius = make_genius(token, p.token_env, self.policy, stats, p.sleep_seconds,
                                  p.timeout_seconds)

    def run(self) -> None:
        for name in self.p.artists:
            try:
                self.scrape_artist(name)
            except GeniusRequestError as exc:
                self.report.fail(name, redact(str(exc), self.token))

    def scrape_artist(self, name: str) -> None:
        """Save up to max_songs songs of one artist (songs already stored count)."""
        artist = self.genius.search_artist(name, max_songs=0, get_full_info=False)
        if artist is None:
            self.report.fail(name, "artist not found on Genius")
            return
        artist_id = artist.to_dict()["id"]
        done = 0
        with tqdm(total=self.p.max_songs, desc=artist.name, unit="song") as bar:
            for info in self.artist_songs(artist_id):
                if done >= self.p.max_songs:
                    break
                if (info["primary_artist"]["id"] != artist_id
                        or not self.genius._result_is_lyrics(info)):
                    continue
                if self.save_song(name, info):
                    done += 1
                    bar.update()

    def save_song(self, name: str, info: dict[str, Any]) -> bool:
        """Store one listed song unless stored already; False if it failed."""
        if info["id"] in self.store:
            self.report.count(name, "skipped_existing")
            return True
        try:
            record = self.fetch_song(info)
        except GeniusRequestError as exc:
            self.report.fail(name, redact(str(exc), self.token), id=info["id"],
                             title=info["title"], url=info["url"])
            return False
        self.store.add(record)
        self.report.count(name, "saved")
        return True

    def artist_songs(self, artist_id: int) -> Iterator[dict[str, Any]]:
        """The artist's song entries, page after page."""
        page: int | None = 1
        while page:
            response = self.genius.artist_songs(artist_id, per_page=ARTIST_SONGS_PER_PAGE,
                                                page=page, sort=self.p.sort)
            yield from response["songs"]
            page = response.get("next_page")

    def fetch_song(self, info: dict[str, Any]) -> dict[str, Any]:
        """The songs.jsonl record of one listed song (lyrics page + song metadata)."""
        lyrics = self.fetch_lyrics(info["url"])
        album = self.genius.song(info["id"])["song"].get("album") or {}
        return {"id": info["id"], "title": info["title"],
                "artist": info["primary_artist"]["name"], "album": album.get("name"),
                "url": info["url"], "lyrics": lyrics, "source": "genius"}

    def fetch_lyrics(self, url: str) -> str:
        """Lyrics of a song page; a page without lyrics (throttled) is fetched again."""
        for attempt in range(self.policy.max_retries + 1):
            lyrics = self.genius.lyrics(song_url=url, remove_section_headers=False)
            if lyrics and lyrics.strip():
                return lyrics
            if attempt < self.policy.max_retries:
                self.stats.retries += 1
                wait(self.policy.delay(attempt))
        raise GeniusRequestError(f"no lyrics on {url} after {self.policy.max_retries + 1} "
                                 "attempts (throttled or empty page)")
