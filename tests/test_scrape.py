"""Tests for the `scrape` kind (lyricgen.corpus.scrape), offline.

Genius is served by `responses` from tests/data/genius: search/multi, artists/{id},
artists/{id}/songs (two pages), songs/{id} JSON and song HTML pages with lyrics containers.
Unregistered URLs raise ConnectionError. Retry waits are recorded by patching
`genius_http.sleep`; nothing really sleeps.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from lyricsgenius.types import Artist, Song
from responses import matchers

from lyricgen.__main__ import main as lyricgen_main
from lyricgen.context import RunContext
from lyricgen.corpus import genius_http, scrape
from lyricgen.errors import LyricgenAuthError, LyricgenInputError
from lyricgen.io import read_jsonl

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests/data/genius"
TOKEN = "h4FAKEgeniusTOKEN-9qZ7xW2pL0vK"
API = "https://api.genius.com"
WEB = "https://genius.com"
ARTISTS = {"Luna Peñalver": ("luna", 1001), "Los Niños del Río": ("ninos", 1002)}
PAGES = {5001: "Luna-penalver-cancion-del-alba", 5004: "Luna-penalver-nina-de-agua",
         5006: "Luna-penalver-ultima-luz", 6001: "Los-ninos-del-rio-ano-nuevo-en-sevilla",
         6002: "Los-ninos-del-rio-pinguino-guero"}
CANCION_DEL_ALBA = (
    "[Verso 1]\nDespierta el día con su canción\nla niña sueña en el balcón\n"
    "¿Quién apagó la luz del corazón?\n\n[Estribillo]\n¡Ay, mañana! Ya llegó el alba\n"
    "canta la brisa sobre el agua\n\n[Verso 2]\nCamina lento por la estación\n"
    "pide perdón a la razón")


def fixture_json(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def page_url(song_id: int) -> str:
    return f"{WEB}/{PAGES[song_id]}-lyrics"


def song_url(song_id: int) -> str:
    return f"{API}/songs/{song_id}"


def add_song(rsps: responses.RequestsMock, song_id: int) -> None:
    auth = matchers.header_matcher({"authorization": f"Bearer {TOKEN}"})
    rsps.get(song_url(song_id), json=fixture_json(f"song_{song_id}.json"),
             match=[matchers.query_param_matcher({"text_format": "plain"}), auth])
    rsps.get(page_url(song_id), body=(DATA / f"page_{song_id}.html").read_text("utf-8"),
             content_type="text/html; charset=utf-8")


def add_artist(rsps: responses.RequestsMock, name: str) -> None:
    """search/multi, artists/{id} and the song listing pages (not the songs)."""
    key, artist_id = ARTISTS[name]
    auth = matchers.header_matcher({"authorization": f"Bearer {TOKEN}"})
    rsps.get(f"{WEB}/api/search/multi", json=fixture_json(f"search_{key}.json"),
             match=[matchers.query_param_matcher({"q": name, "per_page": 5, "page": 1})])
    rsps.get(f"{API}/artists/{artist_id}", json=fixture_json(f"artist_{artist_id}.json"),
             match=[matchers.query_param_matcher({"text_format": "plain"}), auth])
    for page in (1, 2):
        listing = DATA / f"artist_{artist_id}_songs_page{page}.json"
        if listing.exists():
            rsps.get(f"{API}/artists/{artist_id}/songs", json=fixture_json(listing.name),
                     match=[matchers.query_param_matcher(
                         {"sort": "popularity", "per_page": 50, "page": page}), auth])


def add_happy(rsps: responses.RequestsMock, skip: tuple[int, ...] = ()) -> None:
    for name in ARTISTS:
        add_artist(rsps, name)
    for song_id in (5001, 5004, 6001, 6002):
        if song_id not in skip:
            add_song(rsps, song_id)


def params(**overrides: Any) -> dict[str, Any]:
    base = {"source": "genius", "artists": list(ARTISTS), "max_songs": 2,
            "sort": "popularity", "token_env": "GENIUS_ACCESS_TOKEN", "max_retries": 3,
            "backoff_seconds": 1.0, "sleep_seconds": 0, "timeout_seconds": 5}
    return {**base, **overrides}


def calls_to(rsps: responses.RequestsMock, url: str) -> int:
    return sum(1 for call in rsps.calls if call.request.url.split("?")[0] == url)


@pytest.fixture(autouse=True)
def genius_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENIUS_ACCESS_TOKEN", TOKEN)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []
    monkeypatch.setattr(genius_http, "sleep", recorded.append)
    return recorded


@pytest.fixture
def rsps() -> Any:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    return RunContext(kind="scrape", out_dir=tmp_path / "out")


def songs(ctx: RunContext) -> list[dict[str, Any]]:
    return read_jsonl(ctx.out_dir / "songs.jsonl")


def report(ctx: RunContext) -> dict[str, Any]:
    return json.loads((ctx.out_dir / "scrape_report.json").read_text(encoding="utf-8"))


def metrics(ctx: RunContext) -> dict[str, Any]:
    return json.loads((ctx.out_dir / "metrics.json").read_text(encoding="utf-8"))


def test_two_artists_saved_with_metadata_and_counts(rsps, waits, ctx):
    add_happy(rsps)
    summary = scrape.run(params(), ctx)
    records = songs(ctx)
    assert [r["id"] for r in records] == [5001, 5004, 6001, 6002]
    assert records[0] == {
        "id": 5001, "title": "Canción del Alba", "artist": "Luna Peñalver", "album": "Mareas",
        "url": page_url(5001), "lyrics": CANCION_DEL_ALBA, "source": "genius"}
    assert records[3]["album"] is None
    assert records[2]["album"] == "Río Abajo"
    assert "3 Contributors" not in records[0]["lyrics"]  # data-exclude-from-selection child
    assert report(ctx)["counts"] == {"saved": 4, "skipped_existing": 0, "failed": 0}
    assert report(ctx)["per_group"]["Los Niños del Río"] == {"saved": 2}
    assert summary["scrape"]["songs_total"] == 4
    assert metrics(ctx)["requests"] == len(rsps.calls)
    assert metrics(ctx)["retries"] == 0 and waits == []
    # paging reached page 2; the tracklist, the feature and the unreleased demo were skipped
    assert calls_to(rsps, f"{API}/artists/1001/songs") == 2
    assert calls_to(rsps, f"{API}/songs/5002") + calls_to(rsps, f"{API}/songs/5003") == 0


def test_spanish_accents_kept_as_utf8_bytes(rsps, waits, ctx):
    add_happy(rsps)
    scrape.run(params(), ctx)
    for name in ("songs.jsonl", "scrape_report.json"):
        raw = (ctx.out_dir / name).read_bytes()
        assert b"\\u00" not in raw, name
    raw = (ctx.out_dir / "songs.jsonl").read_bytes()
    for word in ("Canción", "Peñalver", "¿Quién", "¡Ay", "Güero", "Año Nuevo"):
        assert word.encode("utf-8") in raw


def test_resume_repairs_truncated_line_and_never_duplicates(rsps, waits, ctx):
    add_happy(rsps)
    ctx.out_dir.mkdir(parents=True)
    first = {"id": 5001, "title": "Canción del Alba", "artist": "Luna Peñalver",
             "album": "Mareas", "url": page_url(5001), "lyrics": "ya guardada",
             "source": "genius"}
    partial = json.dumps(first, ensure_ascii=False) + "\n" + '{"id": 5004, "title": "Niñ'
    (ctx.out_dir / "songs.jsonl").write_text(partial, encoding="utf-8")

    scrape.run(params(), ctx)
    records = songs(ctx)
    assert [r["id"] for r in records] == [5001, 5004, 6001, 6002]
    assert records[0]["lyrics"] == "ya guardada"
    assert calls_to(rsps, page_url(5001)) == calls_to(rsps, song_url(5001)) == 0
    assert report(ctx)["counts"] == {"saved": 3, "skipped_existing": 1, "failed": 0}

    before = len(rsps.calls)
    scrape.run(params(), ctx)
    assert [r["id"] for r in songs(ctx)] == [5001, 5004, 6001, 6002]
    assert report(ctx)["counts"] == {"saved": 0, "skipped_existing": 4, "failed": 0}
    assert not [c for c in rsps.calls[before:] if "/songs/" in c.request.url
                or c.request.url.endswith("-lyrics")]


def _http_date(seconds_ahead: int) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_ahead), usegmt=True)


@pytest.mark.parametrize(("retry_after", "expected"), [
    ("7", 7.0), ("http-date-120", pytest.approx(120, abs=10)), (None, 1.0)],
    ids=["seconds", "http-date", "absent"])
def test_429_waits_retry_after_then_succeeds(rsps, waits, ctx, retry_after, expected):
    if retry_after == "http-date-120":  # computed now, not at collection time
        retry_after = _http_date(120)
    headers = {"Retry-After": retry_after} if retry_after else {}
    rsps.get(song_url(5001), status=429, headers=headers,
             json={"meta": {"status": 429, "message": "Too many requests"}})
    add_happy(rsps)
    scrape.run(params(), ctx)
    assert waits == [expected]
    assert calls_to(rsps, song_url(5001)) == 2
    assert len(songs(ctx)) == 4 and metrics(ctx)["retries"] == 1


@pytest.mark.parametrize("failure", [
    {"status": 500, "json": {"meta": {"status": 500, "message": "Internal error"}}},
    {"status": 503, "body": "<html><body>Service Unavailable</body></html>"},
    {"body": requests.exceptions.ReadTimeout("Read timed out. (read timeout=5)")},
    {"body": requests.exceptions.ConnectionError("Connection reset by peer")},
], ids=["500", "503", "timeout", "connection-error"])
def test_transient_failures_back_off_exponentially_then_succeed(rsps, waits, ctx, failure):
    rsps.get(f"{API}/artists/1002", **failure)
    rsps.get(f"{API}/artists/1002", **failure)
    add_happy(rsps)
    scrape.run(params(), ctx)
    assert waits == [1.0, 2.0]
    assert calls_to(rsps, f"{API}/artists/1002") == 3
    assert [r["id"] for r in songs(ctx)] == [5001, 5004, 6001, 6002]
    assert metrics(ctx)["retries"] == 2


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_token_stops_at_once(rsps, waits, ctx, status):
    rsps.get(f"{API}/artists/1001", status=status, json={
        "meta": {"status": status, "message": "This call requires an access_token."}})
    add_happy(rsps)
    with pytest.raises(LyricgenAuthError) as info:
        scrape.run(params(), ctx)
    message = str(info.value)
    assert "GENIUS_ACCESS_TOKEN" in message and str(status) in message
    assert TOKEN not in message and "\n" not in message
    assert calls_to(rsps, f"{API}/artists/1001") == 1 and waits == []
    assert len(rsps.calls) == 2  # the search, then the rejected call: nothing after it
    assert report(ctx)["counts"]["saved"] == 0


def test_sleep_seconds_pause_after_every_request(rsps, waits, ctx, monkeypatch):
    pauses: list[float] = []
    monkeypatch.setattr("lyricsgenius.api.base.time.sleep", pauses.append)
    add_happy(rsps)
    scrape.run(params(sleep_seconds=0.25), ctx)
    assert pauses == [0.25] * len(rsps.calls) and waits == []


def test_corrupt_middle_line_in_songs_jsonl_is_a_one_line_error(rsps, ctx):
    ctx.out_dir.mkdir(parents=True)
    text = '{"id": 1, "lyrics": "a"}\n{"id": 2, oops\n{"id": 3, "lyrics": "c"}\n'
    (ctx.out_dir / "songs.jsonl").write_text(text, encoding="utf-8")
    with pytest.raises(LyricgenInputError, match=r"songs.jsonl:2: ") as info:
        scrape.run(params(), ctx)
    assert "\n" not in str(info.value)
    assert (ctx.out_dir / "songs.jsonl").read_text(encoding="utf-8") == text
    assert len(rsps.calls) == 0


def test_missing_token_names_the_variable(monkeypatch, rsps, ctx):
    monkeypatch.setenv("MY_GENIUS", "  ")
    with pytest.raises(LyricgenAuthError, match="MY_GENIUS"):
        scrape.run(params(token_env="MY_GENIUS"), ctx)
    assert len(rsps.calls) == 0


def test_throttled_lyrics_page_is_retried_and_never_saved_empty(rsps, waits, ctx):
    rsps.get(page_url(5001), status=429, headers={"Retry-After": "3"},
             body=(DATA / "page_429.html").read_text("utf-8"), content_type="text/html")
    rsps.get(page_url(5001), body=(DATA / "page_throttled.html").read_text("utf-8"),
             content_type="text/html")
    add_happy(rsps)
    scrape.run(params(), ctx)
    assert waits == [3.0, 1.0]  # Retry-After of the 429, then backoff for the empty page
    assert calls_to(rsps, page_url(5001)) == 3
    assert songs(ctx)[0]["lyrics"] == CANCION_DEL_ALBA
    assert all(r["lyrics"].strip() for r in songs(ctx))


def test_exhausted_retries_report_the_song_as_failed_not_saved(rsps, waits, ctx):
    rsps.get(page_url(5001), body=(DATA / "page_throttled.html").read_text("utf-8"))
    rsps.get(page_url(5004), body=(DATA / "page_5004.html").read_text("utf-8"))
    rsps.get(song_url(5004), status=502, body="Bad Gateway")
    add_happy(rsps, skip=(5001, 5004))
    add_song(rsps, 5006)
    scrape.run(params(max_retries=2), ctx)
    assert [r["id"] for r in songs(ctx)] == [5006, 6001, 6002]
    failed = report(ctx)["failed"]
    assert [(f["id"], f["group"]) for f in failed] == [(5001, "Luna Peñalver"),
                                                        (5004, "Luna Peñalver")]
    assert "no lyrics" in failed[0]["reason"] and "HTTP 502" in failed[1]["reason"]
    assert report(ctx)["counts"] == {"saved": 3, "skipped_existing": 0, "failed": 2}
    assert calls_to(rsps, page_url(5001)) == 3 and calls_to(rsps, song_url(5004)) == 3
    assert waits == [1.0, 2.0, 1.0, 2.0]


def test_unknown_artist_is_reported_and_others_still_scraped(rsps, waits, ctx):
    add_happy(rsps)
    empty = fixture_json("search_ninos.json")
    for section in empty["response"]["sections"]:
        section["hits"] = []
    rsps.get(f"{WEB}/api/search/multi", json=empty,
             match=[matchers.query_param_matcher({"q": "Nadie", "per_page": 5, "page": 1})])
    scrape.run(params(artists=["Nadie", "Luna Peñalver"]), ctx)
    assert [r["id"] for r in songs(ctx)] == [5001, 5004]
    assert report(ctx)["failed"] == [{"group": "Nadie", "reason": "artist not found on Genius"}]


def test_token_never_reaches_files_logs_or_output(rsps, waits, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    rsps.get(song_url(6001), status=500, body="oops")
    rsps.get(page_url(5001), body=(DATA / "page_throttled.html").read_text("utf-8"))
    add_happy(rsps)
    config = write_config(tmp_path, params(max_retries=1))
    lyricgen_main(["scrape", "--config", str(config)])
    out_dir = tmp_path / "job/out"
    assert {p.name for p in out_dir.iterdir()} >= {
        "songs.jsonl", "scrape_report.json", "metrics.json", "provenance.json"}
    assert "retry" in caplog.text  # the logs were captured: the check below is not vacuous
    captured = capfd.readouterr()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in caplog.text + captured.out + captured.err

    rsps.reset()
    rsps.get(f"{API}/artists/1001", status=401, json={})
    add_happy(rsps)
    with pytest.raises(LyricgenAuthError) as info:
        scrape.run(params(), RunContext(kind="scrape", out_dir=tmp_path / "again"))
    assert TOKEN not in str(info.value)


def test_files_source_imports_txt_dir_and_resumes(tmp_path, ctx):
    lyrics_dir = tmp_path / "letras"
    (lyrics_dir / "Rocío Durán").mkdir(parents=True)
    (lyrics_dir / "Rocío Durán" / "Canción de Cuna.txt").write_text(
        "Duérmete, niño\nduérmete ya\n", encoding="utf-8")
    (lyrics_dir / "suelta.txt").write_text("Una línea\notra más\n", encoding="utf-8")
    (lyrics_dir / "vacía.txt").write_text("\n \n", encoding="utf-8")
    (lyrics_dir / "notas.md").write_text("no es letra", encoding="utf-8")

    scrape.run(params(source="files", path=str(lyrics_dir), artists=[]), ctx)
    records = songs(ctx)
    assert records == [
        {"id": "file:Rocío Durán/Canción de Cuna.txt", "title": "Canción de Cuna",
         "artist": "Rocío Durán", "album": None, "url": None,
         "lyrics": "Duérmete, niño\nduérmete ya\n", "source": "files"},
        {"id": "file:suelta.txt", "title": "suelta", "artist": None, "album": None,
         "url": None, "lyrics": "Una línea\notra más\n", "source": "files"}]
    assert report(ctx)["failed"][0]["reason"] == "empty lyrics"
    assert "Duérmete".encode() in (ctx.out_dir / "songs.jsonl").read_bytes()

    (lyrics_dir / "nueva.txt").write_text("Llegó después\n", encoding="utf-8")
    scrape.run(params(source="files", path=str(lyrics_dir), artists=[]), ctx)
    assert [r["title"] for r in songs(ctx)] == ["Canción de Cuna", "suelta", "nueva"]
    assert report(ctx)["counts"] == {"saved": 1, "skipped_existing": 2, "failed": 1}
    assert metrics(ctx)["requests"] == 0


def test_files_source_imports_lyricsgenius_json_exports(tmp_path, ctx):
    """Exports written by lyricsgenius itself (Artist.save_lyrics, Song.save_lyrics)."""
    artist = Artist(fixture_json("artist_1001.json")["response"]["artist"])
    for song_id, lyrics in ((5001, CANCION_DEL_ALBA), (5004, "Niña de agua, piel de sal")):
        artist.add_song(Song(lyrics, fixture_json(f"song_{song_id}.json")["response"]["song"]))
    exports = tmp_path / "exports"
    artist.save_lyrics(filename=str(exports / "luna"), overwrite=True)  # ensure_ascii=True
    single = Song("El pingüino güero no sabe nadar",
                  fixture_json("song_6002.json")["response"]["song"])
    single.save_lyrics(filename=str(exports / "pinguino"), overwrite=True, ensure_ascii=False)

    scrape.run(params(source="files", path=str(exports), artists=[]), ctx)
    records = songs(ctx)
    assert [(r["id"], r["artist"], r["album"]) for r in records] == [
        (5001, "Luna Peñalver", "Mareas"), (5004, "Luna Peñalver", "Mareas"),
        (6002, "Los Niños del Río", None)]
    assert records[0]["lyrics"] == CANCION_DEL_ALBA
    assert records[0]["url"] == page_url(5001) and records[0]["source"] == "genius"
    scrape.run(params(source="files", path=str(exports), artists=[]), ctx)
    assert len(songs(ctx)) == 3


def test_non_utf8_txt_is_a_one_line_error_naming_the_file(tmp_path, ctx):
    lyrics_dir = tmp_path / "letras"
    lyrics_dir.mkdir()
    (lyrics_dir / "latin1.txt").write_bytes("canción de invierno".encode("latin-1"))
    with pytest.raises(LyricgenInputError) as info:
        scrape.run(params(source="files", path=str(lyrics_dir), artists=[]), ctx)
    message = str(info.value)
    assert "latin1.txt" in message and "UTF-8" in message and "\n" not in message


@pytest.mark.parametrize(("bad", "expected"), [
    ({"source": "web"}, "source"),
    ({"source": "files", "path": None}, "path"),
    ({"artists": []}, "artists"),
    ({"token_env": "abc-123.def"}, "token_env"),
    ({"token_env": "a1b2c3tokenlike"}, "token_env"),
    ({"sort": "random"}, "sort"),
    ({"max_songs": "20"}, "max_songs"),
    ({"artist": ["x"]}, "artist: unknown param"),
])
def test_bad_params_are_one_line_errors(ctx, bad, expected):
    with pytest.raises(LyricgenInputError, match=expected) as info:
        scrape.run(params(**bad), ctx)
    assert "\n" not in str(info.value)
    assert "abc-123.def" not in str(info.value) and "tokenlike" not in str(info.value)


def write_config(tmp_path: Path, task_params: dict[str, Any]) -> Path:
    """A config.json in lyricgen.context's format (schema 1), written by hand."""
    job_dir = tmp_path / "job"
    job_dir.mkdir(exist_ok=True)
    config = {"schema": 1, "kind": "scrape", "job": "scrape", "run_id": "test-run",
              "job_dir": str(job_dir), "out_dir": str(job_dir / "out"),
              "tasks": [{"index": 0, "params": task_params, "matrix": {}}]}
    path = job_dir / "config.json"
    path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return path


def run_cli(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**env, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "lyricgen", "scrape", "--config", str(config)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def test_cli_files_source(tmp_path):
    lyrics_dir = tmp_path / "letras"
    lyrics_dir.mkdir()
    (lyrics_dir / "mañana.txt").write_text("Mañana será otro día\n", encoding="utf-8")
    config = write_config(tmp_path, params(source="files", path=str(lyrics_dir), artists=[]))
    env = {k: v for k, v in os.environ.items() if k != "GENIUS_ACCESS_TOKEN"}
    result = run_cli(config, env)
    assert result.returncode == 0, result.stderr
    out_dir = tmp_path / "job/out"
    assert read_jsonl(out_dir / "songs.jsonl")[0]["title"] == "mañana"
    provenance = json.loads((out_dir / "provenance.json").read_text(encoding="utf-8"))
    assert provenance["scrape"]["saved"] == 1 and provenance["params"]["source"] == "files"
    assert json.loads((out_dir / "metrics.json").read_text())["saved"] == 1


def test_cli_missing_token_exits_2_with_one_line(tmp_path):
    config = write_config(tmp_path, params())
    env = {k: v for k, v in os.environ.items() if k != "GENIUS_ACCESS_TOKEN"}
    result = run_cli(config, env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "GENIUS_ACCESS_TOKEN" in lines[0] and "Traceback" not in result.stderr
