"""Errors a kind raises for bad input: the CLI prints one line and exits 2."""

from __future__ import annotations


class LyricgenInputError(Exception):
    """Bad input data or params (missing file, empty corpus, non-UTF-8...).

    The message must be one line and name the file (and key/line when known).
    """

    exit_code = 2


class LyricgenAuthError(LyricgenInputError):
    """Credentials rejected (401/403) or missing: stop at once, never retry."""
