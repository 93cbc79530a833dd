"""Small shared helpers for strict validation of YAML data read by jobs.yamlsafe.

`Where` carries the file and the dotted key path (`jobs[2].params.lr`) of the value being
checked and builds the one-line `InputError`; the other helpers check shapes (mapping, list,
known keys) and plain strings that later reach scripts or sbatch options.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jobs.errors import InputError
from jobs.yamlsafe import LineDict, LineList
from kindspec.schema import describe, did_you_mean

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Where:
    """A position in a loaded file: its path and a dotted key path."""

    path: str
    key: str = ""

    def at(self, part: str | int) -> Where:
        """The child key: `params` + `lr` -> `params.lr`; `jobs` + 2 -> `jobs[2]`."""
        if isinstance(part, int):
            return Where(self.path, f"{self.key}[{part}]")
        return Where(self.path, f"{self.key}.{part}" if self.key else str(part))

    def error(self, line: int | None, message: str) -> InputError:
        return InputError(self.path, line, self.key, message)


def mapping(value: Any, where: Where, line: int, what: str = "a mapping") -> LineDict:
    """`value` when it is a mapping with string keys, else an error at `line`."""
    if not isinstance(value, LineDict):
        raise where.error(line, f"expected {what}, got {describe(value)}")
    for key in value:
        if not isinstance(key, str):
            raise where.error(value.line_of(key), f"keys must be strings, got {describe(key)}")
    return value


def sequence(value: Any, where: Where, line: int, what: str = "a list") -> LineList:
    """`value` when it is a list, else an error at `line`."""
    if not isinstance(value, LineList):
        raise where.error(line, f"expected {what}, got {describe(value)}")
    return value


def known_keys(data: LineDict, allowed: Iterable[str], where: Where, hint: str = "") -> None:
    """Error at the first key not in `allowed`, with a did-you-mean, else `hint` (which
    starts with "; ")."""
    allowed = set(allowed)
    for key in data:
        if key not in allowed:
            raise where.at(key).error(
                data.line_of(key),
                f"unknown key{did_you_mean(key, allowed) or hint} "
                f"(allowed: {', '.join(sorted(allowed))})")


def clean_string(value: Any, where: Where, line: int, pattern: re.Pattern[str] | None = None,
                 what: str = "a string") -> str:
    """A non-empty string without control characters (and matching `pattern` if given)."""
    if not isinstance(value, str) or not value:
        raise where.error(line, f"expected {what}, got {describe(value)}")
    if _CONTROL.search(value):
        raise where.error(line, f"control characters (newline, tab...) are not allowed: "
                                f"{describe(value)}")
    if pattern is not None and not pattern.fullmatch(value):
        raise where.error(line, f"expected {what}, got {describe(value)}")
    return value


def integer(value: Any, where: Where, line: int, minimum: int) -> int:
    """An int (YAML booleans are not ints) not below `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.error(line, f"expected an integer, got {describe(value)}")
    if value < minimum:
        raise where.error(line, f"must be >= {minimum}, got {value}")
    return value
