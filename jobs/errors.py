"""Errors that end in a one-line message and exit code 2 (bad input) or 1 (job failure)."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad user input: printed as ONE line `path:line: key: message`, exit code 2.

    `path` is the file the problem is in (manifest, profile, config); `line` is 1-based and may
    be None when unknown (then printed as `path: key: message`); `key` is a dotted key path such
    as `jobs.train.params.lr` (may be empty). Pitfall: keys come from the user's YAML and may
    hold newlines or other line breaks (U+2028...): path and key keep them escaped (`a\\nb`),
    the message has its whitespace runs collapsed to single spaces.
    """

    exit_code = 2

    def __init__(self, path: str | Path, line: int | None, key: str, message: str) -> None:
        self.path = _escaped(str(path))
        self.line = line
        self.key = _escaped(key)
        self.message = " ".join(str(message).split())  # always one line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


def _escaped(text: str) -> str:
    """`text` with each non-printable character (newline, tab, U+2028...) as its escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class UsageError(Exception):
    """Bad command-line use that is not tied to a file (unknown run id, job name...): exit 2."""

    exit_code = 2


class JobFailure(Exception):
    """A job or array task failed (exit code 1 from the CLI)."""

    exit_code = 1
