"""The rhyme lexicon: the words a constrained line may end on, grouped by rhyme and by length.

Built from verse text (by default the embedded DISCO train split, see lyricgen/data/verse):
every word (lowercased, letters only, at least 2 letters) that ENDS at least one line of the
text and occurs at least `min_count` times in all (so unstressed words such as "con", "de",
"mi", which poets do not put at a line's end, stay out, and so do one-off misspellings), with
what the generation controller needs to end a line on it without breaking rhyme or meter:

- `consonant_key` / `assonant_key` (lyricgen.verse.rhyme), to find a line's rhyme partners;
- `span`: the metrical syllables the word adds when it ENDS a line: its syllables + 1 - the
  syllables after its stress (aguda +1, esdrújula -1, lyricgen.verse.meter's rule);
- `opens_with_vowel`: synalepha with a previous word ending in a vowel takes one syllable off.

So a line prefix worth P metrical syllables before its last word (phonological syllables minus
synalephas) plus a last word w gives P + w.span - join syllables: `words_for(...)` returns the
words that make that sum exactly the target. Pitfall: the counts are on spelling, like the
meter module's, so they share its limits (no dialefa, no sinéresis).
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lyricgen.io import read_text_file
from lyricgen.verse.meter import word_sound
from lyricgen.verse.rhyme import analyse_word, last_word, same_word_key, words

EMBEDDED_VERSE = Path(__file__).resolve().parents[1] / "data" / "verse" / "disco-train.txt"
MIN_COUNT = 2


@dataclass(frozen=True)
class LexWord:
    word: str
    count: int  # lines of the text it ends
    same_key: str  # lyricgen.verse.rhyme.same_word_key: spellings of one word share it
    consonant_key: str
    assonant_key: str
    span: int  # metrical syllables it adds as a line's last word (stress rule included)
    opens_with_vowel: bool


@dataclass(frozen=True)
class RhymeLexicon:
    """Words by rhyme key. Build it with `from_texts` or `load` (cached per file set).
    Queries are memoised (`rhymes`, `setters` run for every line of every poem)."""

    entries: dict[str, LexWord]
    by_consonant: dict[str, tuple[str, ...]]
    by_assonant: dict[str, tuple[str, ...]]
    _memo: dict[tuple[str, ...], tuple[str, ...]] = field(default_factory=dict, compare=False,
                                                          repr=False)

    @classmethod
    def from_texts(cls, texts: Iterable[str], min_count: int = MIN_COUNT) -> RhymeLexicon:
        counts: Counter[str] = Counter()
        ends: Counter[str] = Counter()
        for text in texts:
            counts.update(words(text))
            ends.update(word for word in map(last_word, text.splitlines()) if word)
        entries = {}
        for word, count in ends.items():
            entry = _entry(word, count) if len(word) >= 2 and counts[word] >= min_count else None
            if entry is not None:
                entries[word] = entry
        return cls(entries, _index(entries, "consonant_key"), _index(entries, "assonant_key"))

    @classmethod
    def load(cls, paths: tuple[Path, ...] = (EMBEDDED_VERSE,)) -> RhymeLexicon:
        """The lexicon of these text files (a directory: its *.txt files), cached per process
        by path, size and modification time."""
        files = tuple(sorted(f for p in paths for f in (sorted(p.glob("*.txt")) if p.is_dir()
                                                        else [p])))
        stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
        return _load_cached(stamp)

    def rhymes(self, word: str, kind: str) -> tuple[str, ...]:
        """Lexicon words in `kind` rhyme with `word` (itself and its spellings excluded); a
        consonant rhyme also counts as assonant."""
        key = ("rhymes", word, kind)
        if key not in self._memo:
            analysis = analyse_word(word)
            found = () if analysis is None else (
                self.by_consonant.get(analysis.consonant_key, ()) if kind == "consonant"
                else self.by_assonant.get(analysis.assonant_key, ()))
            own = same_word_key(word)
            self._memo[key] = tuple(w for w in found if self.entries[w].same_key != own)
        return self._memo[key]

    def setters(self, kind: str, partners: int) -> tuple[str, ...]:
        """Words that can SET a rhyme group needing `partners` more lines: their class holds at
        least `partners` other words (distinct spellings)."""
        key = ("setters", kind, str(partners))
        if key not in self._memo:
            classes = self.by_consonant if kind == "consonant" else self.by_assonant
            self._memo[key] = tuple(
                w for members in classes.values()
                if len({self.entries[m].same_key for m in members}) > partners for w in members)
        return self._memo[key]


def _entry(word: str, count: int) -> LexWord | None:
    analysis, sound = analyse_word(word), word_sound(word)
    if analysis is None or sound is None:
        return None
    return LexWord(word=word, count=count, same_key=same_word_key(word),
                   consonant_key=analysis.consonant_key,
                   assonant_key=analysis.assonant_key,
                   span=sound.syllables + 1 - sound.after_stress,
                   opens_with_vowel=sound.opens_with_vowel)


def _index(entries: dict[str, LexWord], key: str) -> dict[str, tuple[str, ...]]:
    """Key -> words, most frequent first."""
    grouped: dict[str, list[LexWord]] = defaultdict(list)
    for entry in entries.values():
        grouped[getattr(entry, key)].append(entry)
    return {k: tuple(e.word for e in sorted(group, key=lambda e: (-e.count, e.word)))
            for k, group in grouped.items()}


@functools.lru_cache(maxsize=4)
def _load_cached(stamp: tuple[tuple[str, int, int], ...]) -> RhymeLexicon:
    return RhymeLexicon.from_texts(read_text_file(Path(path), "lexicon") for path, _, _ in stamp)
