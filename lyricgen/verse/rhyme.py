"""Spanish rhyme on spelling: words, stanzas, syllable nuclei, stress and rhyme keys.

The usual Spanish metrical rules, applied to spelling (no dictionary):

- vowel nuclei: adjacent vowels form one syllable nucleus (diphthong or triphthong) unless two
  strong vowels (a, e, o) meet, or an accented í/ú meets a strong vowel (hiatus: "dí-a",
  "pa-ís"); two weak vowels always join ("ciu-dad"). The u of que/qui/gue/gui is silent, h
  separates vowels as in written syllabification, and y is a vowel when no vowel follows it.
- stress: a written accent wins; otherwise words ending in a vowel, n or s stress the
  penultimate nucleus, all others (final y included: "es-TOY") the last one. In the stressed
  nucleus the stressed vowel is the accented one, else the strong one, else the second weak one
  ("cui-da"). Every word gets a stress, unstressed monosyllables ("de", "la") included.
- rhyme part: the word from the stressed vowel to its end. Two words rhyme consonantly when
  their rhyme parts are equal after normalising: accents dropped, ü -> u, silent h dropped,
  v -> b (always: they sound the same), final vowel y -> i, and optionally yeísmo (ll -> y,
  on by default) and seseo (z and c before e/i -> s, off by default).
- assonance: equal vowels, counting only the stressed vowel and the last vowel after it (the
  rules for proparoxytones: "pá-ja-ro" ~ a-o), where a final unstressed i counts as e and u as
  o ("lá-piz" ~ a-e). An assonant rhyme here is one that is not also consonant.
- identical last words never count as rhyme: repeating a line is repetition, not rhyme.

Known limits: spelling decides everything, so a poet's diéresis/sinéresis ("sü-a-ve" vs
"sua-ve") and words whose stress the spelling rules get wrong (foreign names) are missed.
`analyse_word` is cached (it runs on many candidate lines per generation step).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

_WORD = re.compile(r"[^\W\d_]+")
_MARKER_LINE = re.compile(r"^\s*<\|[^|]*\|>\s*$")
_STRONG = frozenset("aeoáéó")
_ACCENTED = {"á": "a", "é": "e", "í": "i", "ó": "o", "ú": "u"}
_VOWEL_LETTERS = frozenset("aeiouáéíóúü")
_UNSTRESSED_FINAL = {"i": "e", "u": "o"}
WORD_CACHE_SIZE = 1 << 16  # distinct words kept by the lru caches


@dataclass(frozen=True)
class WordRhyme:
    """A word's syllable nuclei (as spelled), which one is stressed, and its rhyme keys."""

    word: str
    nuclei: tuple[str, ...]
    stressed: int  # index into nuclei
    consonant_key: str  # normalised rhyme part
    assonant_key: str  # stressed vowel + last vowel after it


def words(text: str) -> list[str]:
    """Lowercased words (runs of letters) of a text."""
    return [w.lower() for w in _WORD.findall(text)]


def _vowel_positions(word: str) -> list[int]:
    """Indices of letters that are pronounced as vowels (silent u and consonant y excluded)."""
    positions = []
    for i, ch in enumerate(word):
        nxt = word[i + 1] if i + 1 < len(word) else ""
        if ch == "u" and i > 0 and word[i - 1] in "qg" and nxt in ("e", "i", "é", "í"):
            continue
        if ch == "y" and (nxt in _VOWEL_LETTERS or nxt == "y"):
            continue
        if ch in _VOWEL_LETTERS or ch == "y":
            positions.append(i)
    return positions


def _is_strong(ch: str) -> bool:
    return ch in _STRONG or ch in ("í", "ú")


def _joins(nucleus: list[int], nxt: int, word: str) -> bool:
    """Whether the vowel at `nxt` belongs to the nucleus ending just before it."""
    prev, cur = word[nucleus[-1]], word[nxt]
    if nucleus[-1] + 1 != nxt:  # a consonant (h included) between them
        return False
    accented_weak = {"í", "ú"}
    if (prev in accented_weak and cur in _STRONG) or (cur in accented_weak and prev in _STRONG):
        return False  # hiatus by accent
    has_strong = any(word[p] in _STRONG or word[p] in accented_weak for p in nucleus)
    return not (has_strong and _is_strong(cur))


def _nuclei(word: str) -> list[list[int]]:
    nuclei: list[list[int]] = []
    for pos in _vowel_positions(word):
        if nuclei and _joins(nuclei[-1], pos, word):
            nuclei[-1].append(pos)
        else:
            nuclei.append([pos])
    return nuclei


def _stressed_index(word: str, nuclei: list[list[int]]) -> int:
    for index in range(len(nuclei) - 1, -1, -1):
        if any(word[p] in _ACCENTED for p in nuclei[index]):
            return index
    if len(nuclei) >= 2 and word[-1] in "aeiouns":
        return len(nuclei) - 2
    return len(nuclei) - 1


def _stressed_vowel(word: str, nucleus: list[int]) -> int:
    for pos in nucleus:
        if word[pos] in _ACCENTED:
            return pos
    for pos in nucleus:
        if word[pos] in _STRONG:
            return pos
    return nucleus[-1]


def _plain(text: str) -> str:
    """Accents and diaeresis removed, ñ kept."""
    return "".join(ch if ch == "ñ" else unicodedata.normalize("NFD", ch)[0] for ch in text)


def _consonant_key(part: str, yeismo: bool, seseo: bool) -> str:
    key = _plain(part)
    key = re.sub(r"(?<!c)h", "", key)
    key = key.replace("v", "b")
    key = re.sub(r"y$", "i", key)
    if yeismo:
        key = key.replace("ll", "y")
    if seseo:
        key = re.sub(r"c(?=[ei])", "s", key.replace("z", "s"))
    return key


def _nucleus_vowel(word: str, nucleus: list[int]) -> str:
    """The vowel that carries an unstressed nucleus in assonance: its strong vowel, else the
    last weak one."""
    strong = [p for p in nucleus if word[p] in _STRONG or word[p] in _ACCENTED]
    return word[strong[0] if strong else nucleus[-1]]


@lru_cache(maxsize=WORD_CACHE_SIZE)
def analyse_word(word: str, *, yeismo: bool = True, seseo: bool = False) -> WordRhyme | None:
    """Nuclei, stress and rhyme keys of one word; None when it has no vowel ("sr").

    `word` is taken lowercased; pass a single word (letters only), e.g. from `words()`.
    Cached: the result is a frozen dataclass shared between calls.
    """
    word = unicodedata.normalize("NFC", word.lower())
    nuclei = _nuclei(word)
    if not nuclei:
        return None
    stressed = _stressed_index(word, nuclei)
    start = _stressed_vowel(word, nuclei[stressed])
    vowels = [_plain(word[start])]
    if stressed < len(nuclei) - 1:
        last = _plain(_nucleus_vowel(word, nuclei[-1])).replace("y", "i")
        vowels.append(_UNSTRESSED_FINAL.get(last, last))
    return WordRhyme(
        word=word,
        nuclei=tuple(word[n[0]:n[-1] + 1] for n in nuclei),
        stressed=stressed,
        consonant_key=_consonant_key(word[start:], yeismo, seseo),
        assonant_key="".join(vowels).replace("y", "i"),
    )


def same_word_key(word: str) -> str:
    """What makes two spellings the same word for rhyme: lowercase, accents dropped."""
    return _plain(word.lower())


def rhyme_kind(a: str, b: str, *, yeismo: bool = True, seseo: bool = False) -> str | None:
    """"consonant", "assonant" (assonant only) or None for two words; the same word (equal
    `same_word_key`) -> None."""
    if same_word_key(a) == same_word_key(b):
        return None
    first = analyse_word(a, yeismo=yeismo, seseo=seseo)
    second = analyse_word(b, yeismo=yeismo, seseo=seseo)
    if first is None or second is None:
        return None
    if first.consonant_key == second.consonant_key:
        return "consonant"
    if first.assonant_key == second.assonant_key:
        return "assonant"
    return None


def stanzas(text: str) -> list[list[str]]:
    """Blocks of non-blank lines separated by blank lines; marker lines (<|fin|>) dropped."""
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if not line.strip():
            if blocks[-1]:
                blocks.append([])
        elif not _MARKER_LINE.match(line):
            blocks[-1].append(line.strip())
    return [block for block in blocks if block]


def last_word(line: str) -> str | None:
    """The last word of a line (lowercased), None when it has none."""
    found = words(line)
    return found[-1] if found else None


def line_key(line: str) -> str:
    """A line's lowercase words joined by one space: two lines with equal keys repeat."""
    return " ".join(words(line))
