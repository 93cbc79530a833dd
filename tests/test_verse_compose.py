"""lyricgen.verse.compose: rhyme scheme and meter enforced line by line, for any LineModel.

The model here is a character bigram LM counted from real verse (DISCO valid): a LineModel
in a few lines, fast and deterministic, whose bodies are pseudo-Spanish. The generate-grid
end-to-end tests (tests/test_grid.py) run the real RNN and LLaMA backends.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bigram_lines import BigramLines

from lyricgen.verse.compose import VersePlan, compose
from lyricgen.verse.lexicon import RhymeLexicon
from lyricgen.verse.meter import scan_words, word_sound
from lyricgen.verse.rhyme import rhyme_kind, same_word_key, stanzas, words
from lyricgen.verse.scheme import annotate, parse_scheme

SONNET = "ABBA ABBA CDC DCD"


@pytest.fixture(scope="module")
def model(disco_dir: Path) -> BigramLines:
    return BigramLines((disco_dir / "valid.txt").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def lexicon(disco_dir: Path) -> RhymeLexicon:
    return RhymeLexicon.load((disco_dir / "valid.txt",))


def _poems(model, lexicon, scheme=SONNET, syllables=11, candidates=16, prompts=None,
           temperatures=None, seed=7, rhyme="consonant"):
    prompts = prompts or ["Bajo la luna", "", "Amor\nque"]
    temperatures = temperatures or [1.0] * len(prompts)
    plan = VersePlan(parse_scheme(scheme, rhyme), syllables, candidates, lexicon)
    texts, stats = compose(model, prompts, temperatures, plan, max_line_tokens=120, seed=seed)
    return prompts, texts, stats, plan


@pytest.fixture(scope="module")
def sonnets(model, lexicon):
    """Three sonnets (11 syllables, 16 candidates), shared by the tests that only read them."""
    return _poems(model, lexicon)


def test_every_line_that_finished_rhymes_and_scans(sonnets) -> None:
    prompts, texts, stats, plan = sonnets
    assert stats.lines == 3 * 14 and stats.forced <= 3  # a bigram body rarely fails 16 times
    followed = on_meter = 0
    for prompt, text in zip(prompts, texts, strict=True):
        verse = annotate(prompt.rsplit("\n", 1)[-1] + text, plan.scheme, 11)
        assert verse["counts"]["text_lines"] == 14
        followed += verse["counts"]["following"]
        on_meter += verse["counts"]["on_meter"]
    assert followed >= 3 * 14 - 2 * stats.forced  # a forced line can cost its partner too
    assert on_meter >= 3 * 14 - stats.forced


def test_stanzas_end_words_and_lines_are_as_the_scheme_asks(sonnets) -> None:
    prompts, texts, _, _ = sonnets
    for prompt, text in zip(prompts, texts, strict=True):
        blocks = stanzas(prompt.rsplit("\n", 1)[-1] + text)
        assert [len(b) for b in blocks] == [4, 4, 3, 3]
        lines = [line for block in blocks for line in block]
        ends = [same_word_key(words(line)[-1]) for line in lines]
        assert len(set(ends)) == len(ends)  # the same word twice is no rhyme
        assert len({" ".join(words(line)) for line in lines}) == len(lines)
        first = words(lines[0])[-1]
        assert rhyme_kind(first, words(lines[3])[-1]) == "consonant"  # A ... A
        assert rhyme_kind(first, words(lines[4])[-1]) == "consonant"  # the 2nd quatrain too


def test_first_line_continues_the_prompt(sonnets) -> None:
    _, texts, _, plan = sonnets
    verse = annotate("Bajo la luna" + texts[0], plan.scheme, 11)
    assert verse["lines"][0]["text"].startswith("Bajo la luna ")
    assert not texts[1].startswith("\n")  # an empty prompt starts the first line
    assert verse["lines"][0]["syllables"] == 11


def test_same_seed_same_poems_other_seed_other_poems(model, lexicon) -> None:
    def poems(seed: int) -> list[str]:
        return _poems(model, lexicon, scheme="ABAB", candidates=4, seed=seed)[1]

    assert poems(3) == poems(3)
    assert poems(3) != poems(4)


def test_romance_assonance_and_octosyllables(model, lexicon) -> None:
    prompts, texts, stats, plan = _poems(model, lexicon, scheme="-a-a-a-a", syllables=8)
    for prompt, text in zip(prompts, texts, strict=True):
        verse = annotate(prompt.rsplit("\n", 1)[-1] + text, plan.scheme, 8)
        assert verse["counts"]["following"] >= 4 - 2 * stats.forced
        assert verse["counts"]["on_meter"] >= 8 - stats.forced


def test_free_length_lines_still_rhyme(model, lexicon) -> None:
    prompts, texts, stats, plan = _poems(model, lexicon, scheme="AABB", syllables=None)
    lengths = set()
    for prompt, text in zip(prompts, texts, strict=True):
        verse = annotate(prompt.rsplit("\n", 1)[-1] + text, plan.scheme, None)
        assert verse["counts"]["following"] >= 4 - 2 * stats.forced
        lengths |= {line["syllables"] for line in verse["lines"]}
    assert len(lengths) > 2  # candidates aim at several lengths


def test_greedy_rows(model, lexicon) -> None:
    _, texts, _, _ = _poems(model, lexicon, prompts=["Mi alma", "Mi alma"],
                            temperatures=[0.0, 0.0], scheme="AA", candidates=4)
    assert texts[0] == texts[1] and len(stanzas(texts[0])[0]) == 2


def test_a_last_word_adds_its_span_to_the_prefix(lexicon, disco_dir: Path) -> None:
    """The decomposition compose relies on: metrical(prefix + w) = prefix syllables (minus
    its synalephas) + span(w) - synalepha between them, on real lines."""
    lines = (disco_dir / "valid.txt").read_text(encoding="utf-8").splitlines()[:1500]
    checked = 0
    for line in lines:
        found = words(line)
        if len(found) < 3 or found[-1] not in lexicon.entries or found[-2] == "y":
            continue
        prefix, last = scan_words(found[:-1]), lexicon.entries[found[-1]]
        joined = word_sound(found[-2]).closes_with_vowel and last.opens_with_vowel
        total = prefix.phonological - prefix.synalephas + last.span - joined
        assert total == scan_words(found).metrical, line
        checked += 1
    assert checked > 400


def test_each_line_starts_from_where_the_last_one_ended(sonnets, model) -> None:
    """A kept line's continuation comes from the model state AND logits after its line break
    (a finished candidate's logits once were lost: lines then began with any character)."""
    _, texts, _, _ = sonnets
    newline = model.stoi["\n"]
    starts = [line[0] for text in texts for line in text.split("\n")[1:] if line]
    assert len(starts) >= 30
    assert all(model.table[newline, model.stoi[c]] > 0 for c in starts), starts
