"""Malformed corpora through the real CLI, `python -m lyricgen KIND --config config.json`.

For the clean kind's `input`, scrape's `source: files` directory and train-rnn's `data`:
exit code 2, exactly one stderr line (`lyricgen: error: ...`) naming the bad file, no
traceback, and nothing half-written in out/ (clean and train-rnn leave it empty; scrape leaves
only its complete JSON report and metrics, and no songs.jsonl).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MARKER = "<|fin|>"
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+k"
                       "cQAAAABJRU5ErkJggg==")  # a real 1x1 PNG image
VERSE = "la luna baila sobre el mar\ny el viento canta sin parar\n"
UNMARKED = "".join(f"verso {i} de una letra sin marcador\n" for i in range(400)).encode()


def run_kind(tmp_path: Path, kind: str, params: dict) -> subprocess.CompletedProcess[str]:
    """Write a config.json (lyricgen/context.py format) and run the kind's CLI on it."""
    job_dir = tmp_path / "job"
    job_dir.mkdir(exist_ok=True)
    config = {"schema": 1, "kind": kind, "job": kind, "run_id": "malformed",
              "job_dir": str(job_dir), "out_dir": str(job_dir / "out"),
              "tasks": [{"index": 0, "params": params, "matrix": {}}]}
    path = job_dir / "config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "GENIUS_ACCESS_TOKEN"}
    return subprocess.run([sys.executable, "-m", "lyricgen", kind, "--config", str(path)],
                          cwd=REPO, env=env, capture_output=True, text=True, errors="replace",
                          timeout=300, check=False)


def assert_bad_input(result: subprocess.CompletedProcess[str], named: Path, out_dir: Path,
                     complete: frozenset[str] = frozenset()) -> None:
    """Exit 2, one stderr line naming `named`, no traceback; out/ holds at most the files in
    `complete`, each a whole JSON document, and no temp file."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lyricgen: error: "), result.stderr
    assert str(named) in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    files = sorted(p for p in out_dir.rglob("*") if p.is_file()) if out_dir.exists() else []
    assert {p.relative_to(out_dir).as_posix() for p in files} <= complete, files
    for path in files:
        json.loads(path.read_text(encoding="utf-8"))


def utf16(text: str) -> bytes:
    """Text as a Windows editor may save it: UTF-16 with a BOM (NUL bytes throughout)."""
    return text.encode("utf-16")


# --- clean ------------------------------------------------------------------------------------

CLEAN_FILES = {
    "empty.txt": b"",
    "image.txt": PNG,
    "nuls.txt": VERSE.encode() + b"\x00\x00\x01" + VERSE.encode(),
    "utf16.txt": utf16(VERSE),
    "latin1.txt": "canción de la mañana\notra línea más\n".encode("latin-1"),
    "unmarked.txt": UNMARKED,
    "broken.jsonl": b'{"lyrics": "a\\nb"}\n{"lyrics": "c\\nd"}\n{"lyrics": "e\\n\n'
                    b'{"lyrics": "x"}\n',  # line 3 is cut short
    "nolyrics.jsonl": b'{"title": "sin letra", "artist": "nadie"}\n',
    "latin1.jsonl": '{"lyrics": "canción\\nsí"}\n'.encode("latin-1"),
}


@pytest.mark.parametrize("name", sorted(CLEAN_FILES))
def test_clean_malformed_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(CLEAN_FILES[name])
    result = run_kind(tmp_path, "clean", {"input": str(path)})
    assert_bad_input(result, path, tmp_path / "job/out")


def test_clean_directory_without_txt(tmp_path: Path) -> None:
    folder = tmp_path / "letras"
    folder.mkdir()
    (folder / "notas.md").write_text(VERSE, encoding="utf-8")
    (folder / "songs.jsonl").write_text('{"lyrics": "a\\nb"}\n', encoding="utf-8")
    result = run_kind(tmp_path, "clean", {"input": str(folder)})
    assert_bad_input(result, folder, tmp_path / "job/out")


def test_clean_directory_with_one_binary_txt_names_that_file(tmp_path: Path) -> None:
    folder = tmp_path / "letras"
    folder.mkdir()
    (folder / "a.txt").write_text(VERSE, encoding="utf-8")
    (folder / "b.txt").write_bytes(PNG)
    result = run_kind(tmp_path, "clean", {"input": str(folder)})
    assert_bad_input(result, folder / "b.txt", tmp_path / "job/out")


# --- scrape, source: files --------------------------------------------------------------------

SCRAPE_REPORTS = frozenset({"scrape_report.json", "metrics.json"})


@pytest.mark.parametrize(("name", "content"), [
    ("latin1.txt", "canción de cuna\n".encode("latin-1")),
    ("image.txt", PNG),
    ("utf16.txt", utf16(VERSE)),
])
def test_scrape_files_malformed_txt_imports_nothing(tmp_path: Path, name: str,
                                                    content: bytes) -> None:
    """A bad file next to a good one: one line naming it, and not even the good song is
    appended (every file is checked before the import starts)."""
    folder = tmp_path / "letras"
    folder.mkdir()
    (folder / "0-good.txt").write_text(VERSE, encoding="utf-8")
    (folder / name).write_bytes(content)
    result = run_kind(tmp_path, "scrape", {"source": "files", "path": str(folder)})
    assert_bad_input(result, folder / name, tmp_path / "job/out", SCRAPE_REPORTS)


# --- train-rnn --------------------------------------------------------------------------------

TINY_RNN = {"epochs": 1, "max_steps": 1, "hidden_size": 8, "embedding_dim": 4, "batch_size": 2,
            "seq_len": 8, "min_count": 1, "device": "cpu", "checkpoint_every": 0}
TRAIN_CASES = [
    pytest.param("empty.txt", b"", id="empty"),
    pytest.param("image.txt", PNG, id="png"),
    pytest.param("latin1.txt", "canción de la mañana\n".encode("latin-1"), id="latin1"),
    pytest.param("nuls.txt", VERSE.encode() + b"\x00\x00\x01" + VERSE.encode(), id="nuls"),
    pytest.param("unmarked.txt", UNMARKED, id="unmarked"),
]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("lyricgen.rnn.train") is None,
                    reason="the train-rnn kind (lyricgen/rnn/train.py) is not written yet")
@pytest.mark.parametrize(("name", "content"), TRAIN_CASES)
def test_train_rnn_malformed_data(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    result = run_kind(tmp_path, "train-rnn", {**TINY_RNN, "data": str(path)})
    assert_bad_input(result, path, tmp_path / "job/out")
