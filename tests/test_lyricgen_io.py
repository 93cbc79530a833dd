"""lyricgen.io's atomic writes when the file system fails them (errors injected)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from lyricgen.errors import LyricgenWriteError
from lyricgen.io import append_jsonl, atomic_write_bytes, keep_previous, publish_dir
from lyricgen.rnn.metrics import MetricsCsv


def failing(monkeypatch: pytest.MonkeyPatch, name: str, error: int) -> None:
    """os.NAME raises OSError(error) from now on."""
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(os, name, fail)


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO, errno.EDQUOT])
def test_a_failed_write_names_the_file_and_keeps_the_old_content(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 error: int) -> None:
    target = atomic_write_bytes(tmp_path / "metrics.json", b"old")
    failing(monkeypatch, "fsync", error)
    with pytest.raises(LyricgenWriteError) as raised:
        atomic_write_bytes(target, b"new")
    assert str(raised.value).startswith(f"{target}: cannot write ({os.strerror(error)})")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_keep_previous_links_or_else_copies(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    last = atomic_write_bytes(tmp_path / "last.pt", b"one")
    keep_previous(last, tmp_path / "previous.pt")
    assert os.path.samefile(last, tmp_path / "previous.pt")  # a hard link, no copy
    atomic_write_bytes(last, b"two")
    failing(monkeypatch, "link", errno.EPERM)  # a file system without hard links
    keep_previous(last, tmp_path / "previous.pt")
    assert (tmp_path / "previous.pt").read_bytes() == b"two"
    keep_previous(tmp_path / "missing.pt", tmp_path / "previous.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "previous.pt"]


def test_publish_dir_keeps_the_old_directory_when_the_new_one_cannot_be_synced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    final = tmp_path / "adapter"
    final.mkdir()
    (final / "weights").write_text("old")
    tmp = tmp_path / ".adapter.tmp"
    tmp.mkdir()
    (tmp / "weights").write_text("new")
    failing(monkeypatch, "fsync", errno.EIO)
    with pytest.raises(LyricgenWriteError, match=rf"^{final}: cannot write"):
        publish_dir(tmp, final)
    assert (final / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_a_failed_append_is_one_line_naming_the_file(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    append_jsonl(tmp_path / "songs.jsonl", {"id": 1})
    failing(monkeypatch, "fsync", errno.ENOSPC)
    with pytest.raises(LyricgenWriteError, match=r"songs.jsonl: cannot append \(No space"):
        append_jsonl(tmp_path / "songs.jsonl", {"id": 2})
    (tmp_path / "metrics.csv").mkdir()  # opening it to append fails (EISDIR)
    with pytest.raises(LyricgenWriteError, match=r"metrics.csv: cannot append \(Is a dir"):
        MetricsCsv(tmp_path / "metrics.csv").append(step=1)
