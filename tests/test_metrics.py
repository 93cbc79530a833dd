"""Text metrics: distinct-n, repetition and the rhyme shares of a text (the rhyme analysis
itself is tested in test_verse_rhyme.py)."""

from __future__ import annotations

import pytest

from lyricgen.metrics import (
    METRIC_DEFINITIONS,
    distinct_n,
    mean_metrics,
    repeated_line_rate,
    text_metrics,
)
from lyricgen.verse.rhyme import stanzas, words


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
