"""Text metrics: Spanish nuclei/stress/rhyme on hand-checked words, distinct-n, repetition,
and the rhyme detector on real sonnets (DISCO, read from ../shared)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lyricgen.metrics import (
    METRIC_DEFINITIONS,
    analyse_word,
    distinct_n,
    mean_metrics,
    repeated_line_rate,
    rhyme_kind,
    stanzas,
    text_metrics,
    words,
)

DISCO = Path(__file__).resolve().parents[1].parent / "shared/corpora/disco"


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


def test_distinct_and_repetition() -> None:
    tokens = words("La luna, la LUNA y el mar")
    assert tokens == ["la", "luna", "la", "luna", "y", "el", "mar"]
    assert distinct_n(tokens, 1) == pytest.approx(5 / 7)
    assert distinct_n(tokens, 2) == pytest.approx(5 / 6)  # "la luna" twice
    assert distinct_n(tokens[:1], 2) is None
    assert repeated_line_rate(["Te quiero", "te quiero!", "y nada más", "Te quiero"]) == 0.5
    assert repeated_line_rate([]) is None


def test_text_metrics_on_a_stanza() -> None:
    text = ("Canto a la luna\nque duerme en la cuna\n\nbajo el camino\nllora el destino\n"
            "y canta mi boca\n<|fin|>\n")
    metrics = text_metrics(text)
    assert set(metrics) == set(METRIC_DEFINITIONS)
    assert (metrics["lines"], metrics["words"]) == (5, 19)  # the <|fin|> marker is no word
    assert stanzas(text)[1] == ["bajo el camino", "llora el destino", "y canta mi boca"]
    # consecutive pairs: luna/cuna, camino/destino (consonant), destino/boca (none)
    assert metrics["rhyme_consecutive_consonant"] == pytest.approx(2 / 3)
    assert metrics["rhyme_consecutive_assonant"] == 0.0
    assert metrics["rhyme_consecutive_any"] == pytest.approx(2 / 3)
    # the only alternate pair inside a stanza: camino/boca
    assert metrics["rhyme_alternate_any"] == 0.0
    assert metrics["repeated_line_rate"] == 0.0
    assert metrics["repeated_4gram_rate"] == 0.0


def test_text_metrics_of_empty_text() -> None:
    metrics = text_metrics("")
    assert metrics["words"] == 0 and metrics["distinct_1"] is None
    assert metrics["rhyme_consecutive_any"] is None


def test_repetitive_text() -> None:
    metrics = text_metrics("la la la la la\nla la la la la\n")
    assert metrics["repeated_line_rate"] == 0.5
    assert metrics["repeated_4gram_rate"] == pytest.approx(1 - 1 / 7)
    assert metrics["rhyme_consecutive_any"] == 0.0


def test_mean_metrics_skips_missing_values() -> None:
    rows = [text_metrics("luna\ncuna\n"), text_metrics("")]
    means = mean_metrics(rows)
    assert means["words"] == 1.0
    assert means["rhyme_consecutive_consonant"] == 1.0  # the empty text has no pair


def _quatrain_endings() -> list[list[str]]:
    poems = [json.loads(line) for line in (DISCO / "valid.jsonl").read_text("utf-8").splitlines()]
    quatrains = []
    for poem in poems:
        for block in stanzas(poem["text"]):
            endings = [words(line)[-1] for line in block if words(line)]
            if len(endings) == 4:
                quatrains.append(endings)
    return quatrains


def test_rhyme_on_real_sonnets() -> None:
    """Sonnet quatrains rhyme ABBA or ABAB in consonant rhyme; random line pairs rarely do."""
    quatrains = _quatrain_endings()
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
