"""Spanish nuclei, stress and rhyme on hand-checked words, and the rhyme detector on real
sonnets (DISCO, read from ../shared)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lyricgen.verse.rhyme import analyse_word, last_word, line_key, rhyme_kind, stanzas, words


@pytest.mark.parametrize(("word", "nuclei", "stressed", "rhyme"), [
    ("canción", ("a", "ió"), 1, "on"),
    ("corazón", ("o", "a", "ó"), 2, "on"),
    ("árbol", ("á", "o"), 0, "arbol"),
    ("camino", ("a", "i", "o"), 1, "ino"),
    ("ciudad", ("iu", "a"), 1, "ad"),
    ("mar", ("a",), 0, "ar"),
    ("día", ("í", "a"), 0, "ia"),          # hiatus by accent
    ("país", ("a", "í"), 1, "is"),
    ("creer", ("e", "e"), 1, "er"),        # two strong vowels: hiatus
    ("buey", ("uey",), 0, "ei"),           # triphthong, final y is a vowel
    ("estoy", ("e", "oy"), 1, "oi"),       # final y counts as a consonant for stress
    ("guerra", ("e", "a"), 0, "erra"),     # silent u of gue
    ("pingüino", ("i", "üi", "o"), 1, "ino"),
    ("cuida", ("ui", "a"), 0, "ida"),      # two weak vowels: the second carries stress
    ("ahora", ("a", "o", "a"), 1, "ora"),  # h separates, and is silent in the key
    ("Pájaro", ("á", "a", "o"), 0, "ajaro"),
])
def test_nuclei_stress_and_rhyme_part(word: str, nuclei: tuple[str, ...], stressed: int,
                                      rhyme: str) -> None:
    result = analyse_word(word)
    assert result is not None
    assert (result.nuclei, result.stressed, result.consonant_key) == (nuclei, stressed, rhyme)


def test_word_without_vowel_has_no_rhyme() -> None:
    assert analyse_word("sr") is None
    assert rhyme_kind("sr", "mar") is None


@pytest.mark.parametrize(("a", "b", "kind"), [
    ("corazón", "canción", "consonant"),
    ("camino", "destino", "consonant"),
    ("luna", "cuna", "consonant"),
    ("tierra", "guerra", "consonant"),
    ("lava", "traba", "consonant"),        # b/v sound the same
    ("raya", "calla", "consonant"),        # yeísmo (default)
    ("estoy", "voy", "consonant"),
    ("boca", "sola", "assonant"),
    ("amor", "corazón", "assonant"),
    ("gracia", "casa", "assonant"),        # post-tonic glide ignored
    ("lápiz", "tarde", "assonant"),        # unstressed final i counts as e
    ("pájaro", "campo", "assonant"),       # proparoxytone: penultimate vowel ignored
    ("vez", "después", "assonant"),        # no seseo by default
    ("camino", "casa", None),
    ("amor", "amor", None),                # identical words: repetition, not rhyme
    ("corazon", "corazón", None),
])
def test_rhyme_kind(a: str, b: str, kind: str | None) -> None:
    assert rhyme_kind(a, b) == kind


def test_rhyme_options() -> None:
    assert rhyme_kind("raya", "calla", yeismo=False) == "assonant"
    assert rhyme_kind("vez", "después", seseo=True) == "consonant"


def test_line_helpers() -> None:
    assert words("¡Ay, Señor!  ¿dónde_estás? 3") == ["ay", "señor", "dónde", "estás"]
    assert last_word("la luna, la cuna...") == "cuna"
    assert last_word("¡...!") is None
    assert line_key("  La LUNA,  la cuna ") == line_key("la luna la cuna")


def test_word_analysis_is_cached() -> None:
    assert analyse_word("corazón") is analyse_word("corazón")


def _quatrain_endings(disco_dir: Path) -> list[list[str]]:
    poems = [json.loads(line)
             for line in (disco_dir / "valid.jsonl").read_text("utf-8").splitlines()]
    quatrains = []
    for poem in poems:
        for block in stanzas(poem["text"]):
            endings = [words(line)[-1] for line in block if words(line)]
            if len(endings) == 4:
                quatrains.append(endings)
    return quatrains


def test_rhyme_on_real_sonnets(disco_dir: Path) -> None:
    """Sonnet quatrains rhyme ABBA or ABAB in consonant rhyme; random line pairs rarely do."""
    quatrains = _quatrain_endings(disco_dir)
    assert len(quatrains) > 300

    def rhymes(a: str, b: str) -> bool:
        return rhyme_kind(a, b) == "consonant"

    detected = sum(
        (rhymes(q[0], q[3]) and rhymes(q[1], q[2])) or (rhymes(q[0], q[2]) and rhymes(q[1], q[3]))
        for q in quatrains)
    assert detected / len(quatrains) > 0.95
    endings = [word for q in quatrains for word in q]
    rng = random.Random(42)
    random_pairs = [rhyme_kind(rng.choice(endings), rng.choice(endings)) for _ in range(2000)]
    assert random_pairs.count("consonant") / len(random_pairs) < 0.05
