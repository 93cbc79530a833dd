"""Errors a kind raises that the CLI turns into one line on stderr: bad input (exit 2), and
an output that could not be written (exit 1)."""

from __future__ import annotations


class LyricgenInputError(Exception):
    """Bad input data or params (missing file, empty corpus, non-UTF-8...).

    The message must be one line and name the file (and key/line when known).
    """

    exit_code = 2


class LyricgenAuthError(LyricgenInputError):
    """Credentials rejected (401/403) or missing: stop at once, never retry."""


class LyricgenWriteError(Exception):
    """An output could not be written (disk full, quota, I/O error): one line naming the file,
    exit 1. Raised by lyricgen.io's atomic writes, which leave no partial file and the
    previous version of the file as it was, so a rerun after freeing space resumes."""

    exit_code = 1
