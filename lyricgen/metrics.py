"""Text metrics for generated Spanish lyrics: length, distinct-n, repetition and rhyme.

All metrics describe ONE text (a generated continuation). Definitions:

- lines: non-blank lines, without marker lines such as `<|fin|>`; stanzas are blocks of lines
  separated by blank lines.
- words: maximal runs of letters (digits and `_` excluded), lowercased, marker lines excluded.
- chars / words / lines: counts (chars = characters of the text as given, newlines included).
- distinct_1, distinct_2: unique word n-grams / word n-grams in the text (None: no n-gram).
- repeated_line_rate: share of lines whose normalised text (lowercase words joined by one
  space) already appeared earlier in the text.
- repeated_4gram_rate: share of word 4-gram occurrences that repeat an earlier 4-gram of the
  text, i.e. 1 - distinct_4 (None: fewer than 4 words).
- rhyme_{consecutive,alternate}_{consonant,assonant,any}: over line pairs (i, i+1)
  ("consecutive", AABB) or (i, i+2) ("alternate", ABAB) inside one stanza, the share whose last
  words rhyme consonantly, assonantly only, or either way (any = consonant + assonant).
  None when the text has no such pair.

Rhyme (consonant / assonant, identical words never rhyme) is lyricgen.verse.rhyme's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from lyricgen.verse.rhyme import last_word, line_key, rhyme_kind, stanzas, words

METRIC_DEFINITIONS: dict[str, str] = {
    "chars": "characters of the continuation (newlines included)",
    "words": "words (runs of letters)",
    "lines": "non-blank lines, end-of-song marker lines excluded",
    "distinct_1": "unique words / words",
    "distinct_2": "unique word bigrams / word bigrams",
    "repeated_line_rate": "share of lines repeating an earlier line",
    "repeated_4gram_rate": "share of word 4-grams repeating an earlier 4-gram (1 - distinct-4)",
    "rhyme_consecutive_consonant": "share of consecutive line pairs (AABB) in consonant rhyme",
    "rhyme_consecutive_assonant": "share of consecutive line pairs in assonant-only rhyme",
    "rhyme_consecutive_any": "share of consecutive line pairs that rhyme either way",
    "rhyme_alternate_consonant": "share of alternate line pairs (ABAB) in consonant rhyme",
    "rhyme_alternate_assonant": "share of alternate line pairs in assonant-only rhyme",
    "rhyme_alternate_any": "share of alternate line pairs that rhyme either way",
    "scheme_share": "grids with a scheme: share of the scheme's rhymed lines that rhyme as it "
                    "asks with a line of their group (lyricgen.verse.scheme.annotate)",
    "meter_share": "grids with a scheme and syllables: share of the scheme's lines with exactly "
                   "that many metrical syllables",
}


def _rhyme_shares(blocks: list[list[str]], gap: int) -> dict[str, float | None]:
    counts = {"consonant": 0, "assonant": 0}
    pairs = 0
    for block in blocks:
        endings = [last_word(line) for line in block]
        for a, b in zip(endings, endings[gap:], strict=False):
            pairs += 1
            kind = rhyme_kind(a, b) if a and b else None
            if kind:
                counts[kind] += 1
    if not pairs:
        return {"consonant": None, "assonant": None, "any": None}
    return {"consonant": counts["consonant"] / pairs, "assonant": counts["assonant"] / pairs,
            "any": (counts["consonant"] + counts["assonant"]) / pairs}


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(tokens: Sequence[str], n: int) -> float | None:
    """Unique n-grams / n-grams; None when there is no n-gram."""
    grams = _ngrams(tokens, n)
    return len(set(grams)) / len(grams) if grams else None


def repeated_line_rate(lines: Iterable[str]) -> float | None:
    """Share of lines whose normalised words already appeared as an earlier line."""
    seen: set[str] = set()
    total = repeats = 0
    for line in lines:
        key = line_key(line)
        total += 1
        repeats += key in seen
        seen.add(key)
    return repeats / total if total else None


def text_metrics(text: str) -> dict[str, Any]:
    """Every metric of the module docstring for one text, as a flat dict (JSON-ready)."""
    blocks = stanzas(text)
    lines = [line for block in blocks for line in block]
    tokens = words("\n".join(lines))
    distinct_4 = distinct_n(tokens, 4)
    result: dict[str, Any] = {
        "chars": len(text),
        "words": len(tokens),
        "lines": len(lines),
        "distinct_1": distinct_n(tokens, 1),
        "distinct_2": distinct_n(tokens, 2),
        "repeated_line_rate": repeated_line_rate(lines),
        "repeated_4gram_rate": None if distinct_4 is None else 1.0 - distinct_4,
    }
    for name, gap in (("consecutive", 1), ("alternate", 2)):
        for kind, share in _rhyme_shares(blocks, gap).items():
            result[f"rhyme_{name}_{kind}"] = share
    result["scheme_share"] = result["meter_share"] = None  # generate-grid sets them (a scheme)
    return result


def mean_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Per-metric mean over rows, skipping None values (None when no row has a value)."""
    means: dict[str, float | None] = {}
    for name in METRIC_DEFINITIONS:
        values = [row[name] for row in rows if row.get(name) is not None]
        means[name] = math.fsum(values) / len(values) if values else None
    return means
