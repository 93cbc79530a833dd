"""Spanish metrical syllables of a verse line, on spelling alone.

`scan_line(line)` counts in three steps (every one built on lyricgen.verse.rhyme's nuclei):

1. phonological syllables: each word has as many syllables as vowel nuclei (diphthongs,
   triphthongs, hiatus, silent u and vowel y exactly as in rhyme.py). Words without a vowel
   ("d" of "d'aquel", "sr") count 0 and sound like a consonant.
2. synalepha: a word that ends in a vowel joins the next word when it starts with a vowel or
   h + vowel ("de_amor", "que_en", "la_historia"): one syllable less per joined boundary.
   Chains join too ("de_es-te_a", "fuer-za_a_an-dar": three vowels across two boundaries).
   The conjunction y alone is a vowel: it joins a vowel before it when a consonant follows
   ("vi-da_y-muer-te"), and when a vowel follows it is [j], the onset of that word's syllable,
   so it joins that word only ("dul-ce-y_a-le-gre", "y_el"). A final y after a vowel ("hoy",
   "rey", "muy") is a vowel for the word's own syllables and stress but never joins the next
   word: before a vowel it becomes that word's onset ("hoy es" = ho-yes, "muy alto" =
   mu-yal-to). h + i/u + vowel ("hierba", "hielo", "huevo", "huir", "hiato") and y + vowel
   ("ya", "yo") start with a consonant sound and block synalepha; a word ending in h ("oh",
   "ah") joins the word before it but not the one after (the pause of the interjection: on
   DISCO joining it too changes 0.1 point). Punctuation does not block synalepha: a comma, a
   full stop or a question mark between the words is ignored.
3. final stress rule: the verse's length is measured to its last stressed syllable + 1, so a
   last word that is aguda (stress on its last syllable, every monosyllable included) adds 1,
   llana adds 0, esdrújula subtracts 1 and sobresdrújula 2.

Known limits: synalepha is always applied, never dialefa (a poet's hiatus between words, as
before the aspirated h of Golden Age verse: "te / ha-ce"), and word-internal diéresis or
sinéresis is never chosen ("ru-i-na", "a-ún" stay as the spelling rules give). These licences
are the poet's choice, not the spelling's, and cost most of the misses: on DISCO's valid split
85.2 % of the lines count 11, 3.1 % count 10 and 2.4 % count 12 (one licence away), and 6.8 %
count 14 (alexandrine sonnets; compound verses are counted straight through, without the
hemistich rule). Blocking synalepha at . ; : ? ! would lower the 11s to 84.1 %, at any
punctuation to 79.8 %. Digits are not words and count nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from lyricgen.verse.rhyme import WORD_CACHE_SIZE, analyse_word, words

STRESS_NAMES = ("aguda", "llana", "esdrujula", "sobresdrujula")


@dataclass(frozen=True)
class LineMeter:
    """The scansion of one verse line.

    phonological: syllables of its words; synalephas: word boundaries joined;
    metrical: phonological - synalephas + final-stress adjustment;
    stress: of the last word (aguda | llana | esdrujula | sobresdrujula); last_word: lowercased.
    """

    phonological: int
    synalephas: int
    metrical: int
    stress: str
    last_word: str


@dataclass(frozen=True)
class WordSound:
    syllables: int
    opens_with_vowel: bool
    closes_with_vowel: bool
    after_stress: int  # syllables after the stressed one: 0 aguda, 1 llana, 2 esdrújula...


@lru_cache(maxsize=WORD_CACHE_SIZE)
def word_sound(word: str) -> WordSound | None:
    """How a word counts in a line: its syllables, whether it can join a previous word ending
    in a vowel (opens) or the next word (closes) by synalepha, and the syllables after its
    stress. None for a word without a vowel. `word` lowercase letters, as from `words`."""
    analysis = analyse_word(word)
    if analysis is None:
        return None
    word, first = analysis.word, analysis.nuclei[0]
    if word.startswith("h"):
        # h + a weak vowel gliding into another vowel is a consonant sound: hie-, hue-, hui-
        opens = word[1:].startswith(first) and not (len(first) > 1 and first[0] in "iu")
    else:
        opens = word.startswith(first)
    # a final y after a vowel ("hoy", "rey") is the consonant onset of a next vowel: ho-yes
    closes = word == "y" or (word.endswith(analysis.nuclei[-1]) and not word.endswith("y"))
    return WordSound(syllables=len(analysis.nuclei), opens_with_vowel=opens,
                      closes_with_vowel=closes,
                      after_stress=len(analysis.nuclei) - 1 - analysis.stressed)


def _joins(tokens: list[tuple[str, WordSound | None]], i: int) -> bool:
    """Whether word i joins word i - 1 by synalepha."""
    (_, left), (word, right) = tokens[i - 1], tokens[i]
    if left is None or right is None:
        return False
    if not (left.closes_with_vowel and right.opens_with_vowel):
        return False
    after = tokens[i + 1][1] if i + 1 < len(tokens) else None
    return not (word == "y" and after is not None and after.opens_with_vowel)


def scan_line(line: str) -> LineMeter | None:
    """The scansion of one verse line (rules in the module docstring); None when the line has no
    word with a vowel. Pass one line: newlines are treated as spaces."""
    return scan_words(words(line))


def scan_words(line_words: Sequence[str]) -> LineMeter | None:
    """`scan_line` for a line already split by lyricgen.verse.rhyme.words."""
    tokens = [(word, word_sound(word)) for word in line_words]
    voiced = [(word, sound) for word, sound in tokens if sound is not None]
    if not voiced:
        return None
    phonological = sum(sound.syllables for _, sound in voiced)
    synalephas = sum(_joins(tokens, i) for i in range(1, len(tokens)))
    word, last = voiced[-1]
    return LineMeter(phonological=phonological, synalephas=synalephas,
                     metrical=phonological - synalephas + 1 - last.after_stress,
                     stress=STRESS_NAMES[min(last.after_stress, 3)], last_word=word)


def metrical_syllables(line: str) -> int | None:
    """Metrical syllables of one verse line; None when it has no word with a vowel."""
    meter = scan_line(line)
    return None if meter is None else meter.metrical


def clear_caches() -> None:
    """Empty the per-word caches (this module's and rhyme.analyse_word's): for cold timings."""
    word_sound.cache_clear()
    analyse_word.cache_clear()
