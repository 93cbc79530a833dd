"""Text normalisation and Genius page-junk removal for one song's lyrics.

`clean_lyrics(text)` returns the cleaned text and a Counter of what each rule removed:

- ``contributors``: the "123 Contributors[Translations...]Title Lyrics" line Genius puts first
  (anything after "Lyrics" on that line, e.g. a jammed "[Intro]", is kept for the next rules);
- ``title_line``: a first line "Song Title Lyrics" (only before the first lyric line);
- ``translations``: a "Translations" line and the language-name lines under it (top block only);
- ``section_header``: a whole line in square brackets with a letter in it ("[Coro]",
  "[Verso 1: X]"); "[...]" (an editorial gap) is not a header and stays. A header marks a
  stanza start, so one that directly follows a lyric line becomes the blank line between them;
- ``embed``: the "Embed"/"123Embed" suffix of the last line;
- ``might_also_like``: "You might also like" anywhere (Genius jams it into lyric lines);
- ``ticket_ad``: "See X LiveGet tickets as low as $NN";
- ``url``: http(s):// and www. links;
- ``blank_lines``: blank lines beyond one between stanzas, and leading/trailing ones.

Whitespace: Unicode NFC; CR/CRLF/U+2028 become newlines; tabs, NBSP and other Unicode spaces
become one space; zero-width and control characters go; lines are stripped. Counts are of
removals (a jammed line can count for several rules), not of input lines.
Pitfall: "Embed" is only stripped from the LAST line, and "Lyrics" titles only at the top, so a
lyric that happens to contain those words elsewhere is kept.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

RULES = ("contributors", "title_line", "translations", "section_header", "embed",
         "might_also_like", "ticket_ad", "url", "blank_lines")

_NEWLINES = re.compile(r"\r\n|[\r\u2028\u2029\x85]")
_INVISIBLE = re.compile(r"[\u200b\u200e\u200f\u2060\ufeff\x00-\x08\x0b-\x1f\x7f]")
_INLINE_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ticket_ad", re.compile(r"See [^\n]{0,80}? ?LiveGet tickets as low as \$\d+(?:[.,]\d+)?")),
    ("might_also_like", re.compile(r"You might also like")),
    ("url", re.compile(r"(?:https?://|\bwww\.)[^\s\]\)]+")),
)
_CONTRIBUTORS = re.compile(r"\A\s*\d[\d.,]*\s*[KkMm]?\s*Contributors?(?P<rest>[^\n]*)")
_TITLE_LINE = re.compile(r"^.{0,200}\S\s*Lyrics$")
_HEADER = re.compile(r"^\[[^\[\]]*[^\W\d_][^\[\]]*\]$")
_EMBED = re.compile(r"\d*\s*Embed$")
LANGUAGES = frozenset({
    "English", "Español", "Português", "Français", "Deutsch", "Italiano", "Türkçe", "Русский",
    "Polski", "Nederlands", "Svenska", "Dansk", "Norsk", "Suomi", "Română", "Magyar", "Čeština",
    "Slovenčina", "Ελληνικά", "Українська", "Srpski", "Hrvatski", "Català", "Galego", "Euskara",
    "日本語", "한국어", "简体中文", "繁體中文", "中文", "עברית", "العربية", "فارسی", "हिन्दी",
    "Bahasa Indonesia", "Tiếng Việt", "ไทย", "Azərbaycanca", "Filipino", "Tagalog",
})


def normalize_line(line: str) -> str:
    """One line: invisible characters removed, any whitespace run -> one space, stripped."""
    return " ".join(_INVISIBLE.sub("", line).split())


def _strip_contributors(text: str, counts: Counter[str]) -> str:
    match = _CONTRIBUTORS.match(text)
    if not match:
        return text
    counts["contributors"] += 1
    rest = match.group("rest")
    rest = rest.split("Lyrics", 1)[1] if "Lyrics" in rest else ""
    return rest + text[match.end():]


def _drop_top_junk(lines: list[str], counts: Counter[str]) -> list[str]:
    """Title line and Translations block, only before the first lyric line."""
    kept: list[str] = []
    in_translations = False
    for index, line in enumerate(lines):
        if not line or _HEADER.match(line):
            kept.append(line)
            continue
        if line == "Translations":
            counts["translations"] += 1
            in_translations = True
        elif in_translations and line in LANGUAGES:
            counts["translations"] += 1
        elif _TITLE_LINE.match(line) and not counts["title_line"] + counts["contributors"]:
            counts["title_line"] += 1
            in_translations = False
        else:
            return kept + lines[index:]
    return kept


def _strip_embed(lines: list[str], counts: Counter[str]) -> list[str]:
    for index in range(len(lines) - 1, -1, -1):
        if lines[index]:
            stripped, hits = _EMBED.subn("", lines[index])
            if hits:
                counts["embed"] += 1
                lines[index] = stripped.rstrip()
            break
    return lines


def _collapse_blank_lines(lines: list[str], counts: Counter[str]) -> str:
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
        else:
            counts["blank_lines"] += 1
    while out and not out[-1]:
        out.pop()
        counts["blank_lines"] += 1
    return "\n".join(out)


def _strip_inline_junk(text: str, counts: Counter[str]) -> list[str]:
    """Normalised lines with inline junk removed; a line junk empties is dropped, not blanked
    (so removing "You might also like" never invents a stanza break)."""
    lines: list[str] = []
    for raw in text.split("\n"):
        line = raw
        for rule, pattern in _INLINE_RULES:
            line, hits = pattern.subn("\n" if rule == "might_also_like" else "", line)
            counts[rule] += hits
        pieces = [normalize_line(piece) for piece in line.split("\n")]
        lines.extend(pieces if line == raw else [piece for piece in pieces if piece])
    return lines


def clean_lyrics(text: str) -> tuple[str, Counter[str]]:
    """Cleaned lyrics (stanzas separated by exactly one blank line) and removals per rule."""
    counts: Counter[str] = Counter()
    text = _NEWLINES.sub("\n", unicodedata.normalize("NFC", text))
    text = _strip_contributors(text, counts)
    lines = _strip_inline_junk(text, counts)
    lines = _strip_embed(_drop_top_junk(lines, counts), counts)
    kept: list[str] = []
    for line in lines:
        if not _HEADER.match(line):
            kept.append(line)
            continue
        counts["section_header"] += 1
        if kept and kept[-1]:
            kept.append("")  # a header starts a stanza, even where Genius lost the blank line
    cleaned = _collapse_blank_lines(kept, counts)
    return cleaned, +counts
