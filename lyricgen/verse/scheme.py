"""Rhyme schemes: parse one, annotate a text against it, judge candidate lines for generation.

Scheme strings (`parse_scheme`): letters are rhyme groups, spaces stanza breaks ("ABBA ABBA CDC
DCD" is the sonnet, "ABAB CDCD", "AABB"). Upper-case letters rhyme in the scheme's `rhyme`
kind (consonant by default, or assonant), lower-case letters always assonantly; "-" is a free
(unrhymed) line, so a romance is "-a-a-a-a". A letter is one group across the whole scheme (the
sonnet's second quatrain rhymes with the first). A group's first line SETS the rhyme (it has no
partner yet); a letter used once is a line without partner: it is not judged for rhyme.

Rules shared by `annotate` and `LineJudge`:
- a line's rhyme word is its last word (lyricgen.verse.rhyme.last_word); rhymes are
  lyricgen.verse.rhyme.rhyme_kind's, so the same word twice is never a rhyme.
- consonant rhyme is required where the kind is consonant; assonant where it is assonant, which
  a consonant rhyme also satisfies (it has the same vowels).
- a line with no word, or repeating an earlier line (same words, case and punctuation aside),
  is not usable: it never scores, for rhyme or meter, and it is no rhyme partner.
- meter: lyricgen.verse.meter's metrical syllables must equal the target exactly.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lyricgen.verse.meter import LineMeter, scan_words
from lyricgen.verse.rhyme import analyse_word, rhyme_kind, same_word_key, stanzas, words

RHYME_KINDS = ("consonant", "assonant")
FREE = "-"
MAX_SCHEME_LINES = 400  # generate-grid's scheme pattern allows at most 400 characters
_SYNTAX = "letters A-Z/a-z (rhyme groups), '-' (free line) and spaces (stanza breaks)"


@dataclass(frozen=True)
class SchemeLine:
    """One line of a scheme. `group`: the indices of every line of its letter, itself included
    (empty for a free line)."""

    index: int
    letter: str  # "A", "a" or "-"
    kind: str | None  # "consonant" | "assonant"; None for a free line
    stanza: int
    group: tuple[int, ...]

    @property
    def first(self) -> int | None:
        """The index of its group's first line, the one that sets the rhyme (None: free)."""
        return self.group[0] if self.group else None

    @property
    def rhymed(self) -> bool:
        """Whether the line has a rhyme partner in the scheme (a group of >= 2 lines)."""
        return len(self.group) >= 2


@dataclass(frozen=True)
class Scheme:
    """A parsed scheme; `text` is its canonical spelling (stanzas joined by one space)."""

    text: str
    lines: tuple[SchemeLine, ...]

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def stanza_sizes(self) -> tuple[int, ...]:
        return tuple(len(stanza) for stanza in self.text.split(" "))


def parse_scheme(text: str, rhyme: str = "consonant") -> Scheme:
    """The Scheme of `text` (syntax in the module docstring), upper-case letters rhyming in
    `rhyme`. ValueError with a one-line message for anything else: empty, other characters,
    more than MAX_SCHEME_LINES lines, an unknown `rhyme`. "A" and "a" are two groups. Every
    string generate-grid's `scheme` param accepts (kindspec.registry) parses."""
    if not isinstance(text, str):
        raise ValueError(f"scheme must be a string, got {type(text).__name__}")
    if rhyme not in RHYME_KINDS:
        raise ValueError(f"rhyme must be one of {', '.join(RHYME_KINDS)}, got {rhyme!r}")
    allowed = set(string.ascii_letters + FREE + " ")
    bad = sorted({ch for ch in text if ch not in allowed})
    if bad:
        raise ValueError(f"scheme {text!r} has {''.join(bad)!r}: use only {_SYNTAX}")
    stanza_texts = text.split()
    if not stanza_texts:
        raise ValueError(f"scheme is empty: use {_SYNTAX}, e.g. 'ABBA ABBA CDC DCD'")
    letters = [(letter, stanza) for stanza, block in enumerate(stanza_texts) for letter in block]
    if len(letters) > MAX_SCHEME_LINES:
        raise ValueError(f"scheme has {len(letters)} lines: at most {MAX_SCHEME_LINES}")
    groups: dict[str, list[int]] = {}
    for index, (letter, _) in enumerate(letters):
        if letter != FREE:
            groups.setdefault(letter, []).append(index)
    lines = tuple(
        SchemeLine(index=index, letter=letter, stanza=stanza,
                   kind=None if letter == FREE else rhyme if letter.isupper() else "assonant",
                   group=tuple(groups.get(letter, ())))
        for index, (letter, stanza) in enumerate(letters))
    return Scheme(text=" ".join(stanza_texts), lines=lines)


def _satisfies(kind: str, found: str | None) -> bool:
    """Whether a rhyme `found` between two words meets the required `kind`."""
    return found == "consonant" or (kind == "assonant" and found == "assonant")


@dataclass(frozen=True)
class _Line:
    """A text line as the rules see it: key is its lyricgen.verse.rhyme.line_key, word its
    last word."""

    text: str
    key: str
    word: str | None
    meter: LineMeter | None

    @classmethod
    def read(cls, line: str) -> _Line:
        tokens = words(line)  # once: the judge reads hundreds of candidates per line
        return cls(text=line, key=" ".join(tokens), word=tokens[-1] if tokens else None,
                   meter=scan_words(tokens))


def _read_lines(lines: Sequence[str]) -> tuple[list[_Line], set[int]]:
    """The lines read, and the indices of the usable ones (a word, no repeat of an earlier)."""
    read, usable, seen = [], set(), set()
    for index, text in enumerate(lines):
        line = _Line.read(text)
        if line.key and line.key not in seen:
            usable.add(index)
        seen.add(line.key)
        read.append(line)
    return read, usable


def annotate(text: str, scheme: Scheme, syllables: int | None) -> dict[str, Any]:
    """How `text` follows `scheme` (and `syllables` per line, when not None), JSON-ready.

    The text's lines (lyricgen.verse.rhyme.stanzas: non-blank, marker lines dropped; its own
    stanza breaks do not matter) map in order onto the scheme's lines; extra lines are ignored,
    missing ones never score. Per line ("lines"): letter, kind, text (None: missing),
    syllables and stress (None: no word with a vowel), partner (the group's first usable line;
    for that line, the next usable one of its group), rhyme (consonant | assonant | None, with
    the partner), follows (rhymes in the required kind with at least one other usable line of
    its group; None for free and unpartnered lines), on_meter (None without `syllables`).
    Totals: scheme_share = following / rhymed lines, meter_share = on meter / scheme lines (None
    when there is nothing to share), and the counts.
    """
    read, usable = _read_lines([line for block in stanzas(text) for line in block][:len(scheme)])
    records = []
    for spec in scheme.lines:
        line = read[spec.index] if spec.index < len(read) else None
        mine = spec.index in usable
        others = [j for j in spec.group if j != spec.index and j in usable] if mine else []
        partner = others[0] if others and spec.rhymed else None
        meter = line.meter if line is not None else None
        records.append({
            "letter": spec.letter, "kind": spec.kind,
            "text": None if line is None else line.text,
            "syllables": None if meter is None else meter.metrical,
            "stress": None if meter is None else meter.stress,
            "partner": partner,
            "rhyme": None if partner is None else rhyme_kind(line.word, read[partner].word),
            "follows": None if not spec.rhymed else any(
                _satisfies(spec.kind, rhyme_kind(line.word, read[j].word)) for j in others),
            "on_meter": None if syllables is None else (
                mine and meter is not None and meter.metrical == syllables),
        })
    rhymed = sum(record["follows"] is not None for record in records)
    following = sum(record["follows"] is True for record in records)
    on_meter = sum(record["on_meter"] is True for record in records)
    return {
        "scheme": scheme.text, "syllables": syllables, "lines": records,
        "counts": {"scheme_lines": len(scheme), "text_lines": len(read), "rhymed": rhymed,
                   "following": following, "on_meter": on_meter},
        "scheme_share": following / rhymed if rhymed else None,
        "meter_share": None if syllables is None else on_meter / len(scheme),
    }


@dataclass(frozen=True)
class Verdict:
    """A candidate line judged at one scheme position.

    rhyme: how its last word rhymes with the group's rhyme word (None: no target, no rhyme,
    the same word, or a word already used at a line end); follows: it meets the position's
    rhyme requirement (see LineJudge); syllables: metrical (None: no word with a vowel);
    valid: it has a word and repeats no earlier line.
    """

    last_word: str | None
    rhyme: str | None
    follows: bool
    syllables: int | None
    valid: bool


@dataclass(frozen=True)
class LineJudge:
    """Judges candidates for one scheme position; build it with `LineJudge.at` (or by hand).

    kind: the rhyme the position needs (None: free or unpartnered line); target: the rhyme word
    its group has so far (None: this line sets it); used_ends: `same_word_key`s of the last
    words of earlier lines; earlier: `line_key`s of earlier lines.
    A candidate follows when it is valid and: the position is free; or it sets the rhyme with
    a word that has a vowel and ends no earlier line; or its rhyme with the target satisfies
    `kind`. Ending on an earlier line's end word never rhymes: stricter than `annotate`, which
    judges pairs, so that generation does not lean on repeating end words.
    """

    kind: str | None
    target: str | None
    used_ends: frozenset[str]
    earlier: frozenset[str]

    @classmethod
    def at(cls, scheme: Scheme, chosen: Sequence[str]) -> LineJudge:
        """The judge for line len(chosen) of `scheme`, the lines before it being `chosen`."""
        position = len(chosen)
        if position >= len(scheme):
            raise ValueError(f"the scheme has {len(scheme)} lines, there is no line {position}")
        spec = scheme.lines[position]
        read, usable = _read_lines(chosen)
        setters = [read[j].word for j in spec.group if j in usable]
        return cls(kind=spec.kind if spec.rhymed else None,
                   target=setters[0] if setters else None,
                   used_ends=frozenset(same_word_key(line.word) for line in read if line.word),
                   earlier=frozenset(line.key for line in read))

    def __call__(self, line: str) -> Verdict:
        read = _Line.read(line)
        word, meter = read.word, read.meter
        valid = bool(read.key) and read.key not in self.earlier
        fresh = (word is not None and analyse_word(word) is not None
                 and same_word_key(word) not in self.used_ends)
        rhyme = rhyme_kind(word, self.target) if fresh and self.target is not None else None
        if self.kind is None:
            follows = valid
        elif self.target is None:
            follows = valid and fresh
        else:
            follows = valid and _satisfies(self.kind, rhyme)
        return Verdict(last_word=word, rhyme=rhyme, follows=follows,
                       syllables=None if meter is None else meter.metrical, valid=valid)
