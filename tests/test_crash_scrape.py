"""scrape killed with SIGKILL while it appends songs (source: files over a large generated
directory, through the real CLI), then run again: every song is in songs.jsonl exactly once,
every line is valid JSON, and nothing half-written is left in the out dir."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SONGS = 1200


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """SONGS small .txt songs in 40 artist folders, and the scrape job's config.json."""
    root = tmp_path / "lyrics"
    for index in range(SONGS):
        folder = root / f"artista-{index % 40:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"canción {index:05d}.txt").write_text(
            f"verso {index} del corazón\nestribillo «{index}»\n", encoding="utf-8")
    job = tmp_path / "scrape"
    job.mkdir()
    path = job / "config.json"
    path.write_text(json.dumps({
        "schema": 1, "kind": "scrape", "job": "scrape", "run_id": "t", "job_dir": str(job),
        "out_dir": str(job / "out"),
        "tasks": [{"index": 0, "params": {"source": "files", "path": str(root)}}]}),
        encoding="utf-8")
    return path


def scrape(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "lyricgen", "scrape", "--config", str(config)],
                            cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkill_mid_import_then_rerun_saves_every_song_exactly_once(config: Path) -> None:
    songs = config.parent / "out/songs.jsonl"
    first = scrape(config)
    deadline = time.monotonic() + 120
    while (not songs.exists() or songs.stat().st_size == 0) and first.poll() is None:
        assert time.monotonic() < deadline, "no song saved within 120 s"
        time.sleep(0.005)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL, "the import ended before it could be killed"
    saved_before = songs.read_bytes().count(b"\n")  # complete lines; a torn last one is cut
    assert 0 < saved_before < SONGS

    second = scrape(config)
    _, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr.decode()[-2000:]
    lines = songs.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]  # every line is one complete JSON object
    ids = [record["id"] for record in records]
    assert len(ids) == len(set(ids)) == SONGS
    assert set(ids) == {f"file:artista-{i % 40:02d}/canción {i:05d}.txt" for i in range(SONGS)}
    report = json.loads((config.parent / "out/scrape_report.json").read_text(encoding="utf-8"))
    assert report["counts"] == {"saved": SONGS - saved_before, "skipped_existing": saved_before,
                                "failed": 0}
    assert not [p.name for p in (config.parent / "out").iterdir() if p.name.startswith(".")]
