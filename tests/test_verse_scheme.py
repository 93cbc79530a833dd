"""Rhyme schemes: parsing and its errors, annotating texts (a real sonnet, missing, extra,
repeated and empty lines), and the candidate judge of the generation controller."""

from __future__ import annotations

import json

import pytest

from lyricgen.verse.scheme import (
    MAX_SCHEME_LINES,
    LineJudge,
    Verdict,
    annotate,
    parse_scheme,
)

SONNET = "ABBA ABBA CDC DCD"
# DISCO train.txt (CC BY 4.0, a public-domain poem), its second sonnet: ABBA ABBA CDE CED.
ENTENDIMIENTO = """¿Qué es esto Entendimiento? ¿Qué revuelta
te hace disparar de tu carrera,
que aquello do menor razón se espera
te vas desatinando a rienda suelta?

Solías tú correr, parar, dar vuelta,
movido de la mano más certera
de la razón, llevando por bandera
la vela que el sentido al viento suelta

Desesperado de mi luz avara,
que, cuando más pensaba ir atinando,
muy más sin tino y ciego me llevaba,

sentí, sin sentir cómo, otra tan clara
que aquella que primero me guiaba
me va tiniebla oscura remedando

<|fin|>
"""


def test_sonnet_scheme() -> None:
    scheme = parse_scheme(SONNET)
    assert len(scheme) == 14 and scheme.text == SONNET
    assert scheme.stanza_sizes == (4, 4, 3, 3)
    a_line, c_line = scheme.lines[4], scheme.lines[12]
    assert (a_line.letter, a_line.kind, a_line.stanza, a_line.group) == \
        ("A", "consonant", 1, (0, 3, 4, 7))
    assert (c_line.letter, c_line.stanza, c_line.group, c_line.first) == ("C", 3, (8, 10, 12), 8)
    assert [line.first for line in scheme.lines[:4]] == [0, 1, 1, 0]
    assert all(line.rhymed for line in scheme.lines)


def test_romance_free_lines_and_cases() -> None:
    romance = parse_scheme("-a-a  -a-a")
    assert romance.text == "-a-a -a-a" and romance.stanza_sizes == (4, 4)
    free, rhymed = romance.lines[0], romance.lines[1]
    assert (free.kind, free.group, free.first, free.rhymed) == (None, (), None, False)
    assert (rhymed.kind, rhymed.group) == ("assonant", (1, 3, 5, 7))
    mixed = parse_scheme("AbAb", rhyme="assonant")
    assert [line.kind for line in mixed.lines] == ["assonant"] * 4
    assert [line.kind for line in parse_scheme("AbAb").lines] == ["consonant", "assonant"] * 2


def test_a_letter_used_once_has_no_partner() -> None:
    lines = parse_scheme("ABA").lines
    assert (lines[1].first, lines[1].rhymed) == (1, False)


@pytest.mark.parametrize(("text", "rhyme", "message"), [
    ("", "consonant", "scheme is empty"),
    ("   ", "consonant", "scheme is empty"),
    ("AB1A", "consonant", "has '1'"),
    ("ABBA\nABBA", "consonant", "has '\\n'"),
    ("ABÑA", "consonant", "has 'Ñ'"),
    ("A" * (MAX_SCHEME_LINES + 1), "consonant", f"{MAX_SCHEME_LINES + 1} lines"),
    ("ABBA", "slant", "rhyme must be one of consonant, assonant"),
    (None, "consonant", "must be a string"),
])
def test_bad_schemes(text: str, rhyme: str, message: str) -> None:
    with pytest.raises(ValueError, match="^[^\n]+$") as error:
        parse_scheme(text, rhyme=rhyme)
    assert message in str(error.value)


def test_a_letter_in_both_cases_is_two_groups() -> None:
    lines = parse_scheme("AaAa").lines
    assert [(line.kind, line.group) for line in lines] == [
        ("consonant", (0, 2)), ("assonant", (1, 3)), ("consonant", (0, 2)), ("assonant", (1, 3))]


def test_every_scheme_the_grid_accepts_parses() -> None:
    """generate-grid's `scheme` pattern (kindspec) and parse_scheme agree at the edges."""
    import re

    from kindspec.registry import GENERATE_GRID

    pattern = GENERATE_GRID.params["scheme"].pattern
    for text in ("A", "-", "a-A-", "ABBA ABBA CDC DCD", "A" * 400, "AB " * 133 + "A"):
        assert re.fullmatch(pattern, text) and parse_scheme(text)
    for text in ("A" * 401, "AB  AB", " AB", "AB ", "A1"):
        assert not re.fullmatch(pattern, text)


def test_real_sonnet_follows_its_scheme() -> None:
    result = annotate(ENTENDIMIENTO, parse_scheme("ABBA ABBA CDE CED"), 11)
    lines = result["lines"]
    assert [line["syllables"] for line in lines] == [11, 10] + [11] * 10 + [10, 11]
    assert result["counts"] == {"scheme_lines": 14, "text_lines": 14, "rhymed": 14,
                                "following": 14, "on_meter": 12}
    assert result["scheme_share"] == 1.0 and result["meter_share"] == pytest.approx(12 / 14)
    # line 8 ends on "suelta" like line 4: no rhyme between them, but with revuelta / vuelta
    assert (lines[7]["partner"], lines[7]["rhyme"], lines[7]["follows"]) == (0, "consonant", True)
    assert (lines[0]["partner"], lines[12]["partner"]) == (3, 10)
    assert lines[1]["on_meter"] is False and lines[1]["stress"] == "llana"
    assert json.loads(json.dumps(result)) == result


def test_the_same_text_judged_against_a_wrong_scheme() -> None:
    result = annotate(ENTENDIMIENTO, parse_scheme(SONNET), None)
    # the tercets rhyme CDE CED, read as CDC DCD: C = avara, llevaba, guiaba and D = atinando,
    # clara, remedando, so only avara and clara find no consonant rhyme in their group
    follows = [line["follows"] for line in result["lines"]]
    assert follows == [True] * 8 + [False, True, True, False, True, True]
    assert result["scheme_share"] == pytest.approx(12 / 14)
    assert result["meter_share"] is None and result["lines"][0]["on_meter"] is None


def test_missing_and_extra_lines() -> None:
    scheme = parse_scheme("AABB")
    short = annotate("Canto a la luna\nque duerme en la cuna\ny sobre el mar\n", scheme, 6)
    assert short["counts"]["text_lines"] == 3
    last = short["lines"][3]
    assert (last["text"], last["syllables"], last["follows"], last["on_meter"]) == \
        (None, None, False, False)
    assert short["lines"][2]["follows"] is False  # its partner is missing
    assert short["scheme_share"] == 0.5
    long = annotate("luna\ncuna\nmar\nazar\nflor\n", scheme, None)
    assert long["counts"]["text_lines"] == 4 and long["scheme_share"] == 1.0


def test_repeated_empty_and_same_word_lines_never_score() -> None:
    text = "Canto a la luna\ncanto a la LUNA!\n¡...!\ny canto al mar\nque canta al mar\n"
    result = annotate(text, parse_scheme("AA BBB"), 5)
    lines = result["lines"]
    # the repeat of line 1 neither scores nor partners it; "¡...!" is no line; mar / mar is
    # the same word
    assert [line["follows"] for line in lines] == [False] * 5
    assert [line["partner"] for line in lines] == [None, None, None, 4, 3]
    assert lines[3]["rhyme"] is None
    assert lines[1]["syllables"] == 5 and lines[1]["on_meter"] is False
    assert lines[2]["syllables"] is None
    # lines 1, 4 and 5: Can-to_a-la-lu-na, y-can-to_al-mar (4 + 1), que-can-ta_al-mar (4 + 1)
    assert result["counts"]["on_meter"] == 3


def test_assonant_groups_accept_consonant_rhyme() -> None:
    text = "Por el mar de Castilla\nla niña cantaba\nbajo el sol de la sierra\n" \
           "el agua que manaba\ny en la fuente del patio\nla casa\n"
    result = annotate(text, parse_scheme("-a-a-a"), None)
    rhymes = [(line["kind"], line["rhyme"], line["follows"]) for line in result["lines"]]
    assert rhymes == [(None, None, None), ("assonant", "consonant", True),
                      (None, None, None), ("assonant", "consonant", True),
                      (None, None, None), ("assonant", "assonant", True)]
    assert result["counts"]["rhymed"] == 3 and result["scheme_share"] == 1.0
    consonant = annotate("la niña cantaba\nla casa\n", parse_scheme("AA"), None)
    assert consonant["lines"][1]["rhyme"] == "assonant"
    assert consonant["scheme_share"] == 0.0


def test_a_free_scheme_has_no_scheme_share() -> None:
    result = annotate("uno\ndos\n", parse_scheme("--"), 2)
    assert result["scheme_share"] is None and result["counts"]["rhymed"] == 0
    assert [line["on_meter"] for line in result["lines"]] == [True, True]  # u-no, dos (1 + 1)


def test_judge_follows_the_scheme_line_by_line() -> None:
    scheme = parse_scheme("ABBA")
    first = LineJudge.at(scheme, [])
    assert (first.kind, first.target) == ("consonant", None)
    assert first("Canto a la luna") == Verdict(last_word="luna", rhyme=None, follows=True,
                                               syllables=5, valid=True)
    assert first("¡...!") == Verdict(last_word=None, rhyme=None, follows=False, syllables=None,
                                     valid=False)
    chosen = ["Canto a la luna", "y al amor"]
    third = LineJudge.at(scheme, chosen)
    assert third.target == "amor"
    assert third("que es mi dolor") == Verdict(last_word="dolor", rhyme="consonant",
                                               follows=True, syllables=5, valid=True)
    assert third("del corazón").rhyme == "assonant"
    assert not third("del corazón").follows  # consonant rhyme is required
    assert third("y al amor").valid is False  # a repeat of line 2
    assert third("por amor").rhyme is None  # the same word is no rhyme
    fourth = LineJudge.at(scheme, [*chosen, "que es mi dolor"])
    assert fourth.target == "luna"
    assert fourth("la cuna").follows
    used = LineJudge.at(parse_scheme("ABAA"), ["Canto a la luna", "y al amor", "bajo la cuna"])
    assert used.target == "luna" and used("ninguna").follows
    assert used("y en la cuna").rhyme is None  # an end word already used never rhymes
    assert not used("y en la cuna").follows


def test_judge_free_assonant_and_unset_positions() -> None:
    romance = parse_scheme("-a-a")
    assert LineJudge.at(romance, []).kind is None
    assert LineJudge.at(romance, [])("la mar").follows
    judge = LineJudge.at(romance, ["Por el mar de Castilla", "la niña cantaba", "y su voz"])
    assert judge("la casa") == Verdict(last_word="casa", rhyme="assonant", follows=True,
                                       syllables=3, valid=True)
    # a group whose first line was no line: the next one sets the rhyme
    unset = LineJudge.at(parse_scheme("AAA"), ["¡...!"])
    assert unset.target is None and unset("la luna").follows
    assert not unset("sr").follows  # a rhyme word needs a vowel
    lone = LineJudge.at(parse_scheme("ABA"), ["la luna"])
    assert lone.kind is None and lone("el mar").follows
    with pytest.raises(ValueError, match="no line 3"):
        LineJudge.at(parse_scheme("ABA"), ["a", "b", "c"])


def test_judge_built_by_hand() -> None:
    judge = LineJudge(kind="assonant", target="casa", used_ends=frozenset({"brasa"}),
                      earlier=frozenset())
    assert judge("la mañana clara").follows
    assert not judge("ardía la brasa").follows
    assert judge("ardía la brasa").rhyme is None
