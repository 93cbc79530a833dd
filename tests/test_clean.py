"""The `clean` kind: cleaning rules, dedup, splits, outputs, stats, errors, CLI, real data."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kindspec.registry import CLEAN
from lyricgen.context import RunContext
from lyricgen.corpus import clean as clean_module
from lyricgen.corpus.clean import Song, clean_songs, read_songs, run
from lyricgen.corpus.export import assign_splits, format_marker_corpus, parse_marker_corpus
from lyricgen.corpus.stats import text_counts
from lyricgen.corpus.textnorm import clean_lyrics
from lyricgen.errors import LyricgenInputError

REPO = Path(__file__).resolve().parents[1]
DISCO = REPO.parent / "shared/corpora/disco"
SAMPLE = Path(clean_module.__file__).parents[1] / "data/sample/songs.jsonl"  # package data
MARKER = "<|fin|>"
JUNK = re.compile(r"Embed|Contributors|Lyrics|You might also like|tickets|https?://|www\.|\[|\t|"
                  r"\u00a0|Translations")


def clean(text: str) -> str:
    return clean_lyrics(text)[0]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                    encoding="utf-8")
    return path


def run_clean(tmp_path: Path, input_path: Path, **params) -> tuple[dict, Path]:
    out = tmp_path / "out"
    summary = run({"input": str(input_path), **params}, RunContext(kind="clean", out_dir=out))
    return summary, out


def error_of(call) -> str:
    with pytest.raises(LyricgenInputError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


# --- cleaning rules ---------------------------------------------------------------------------

def test_section_headers_go_and_start_a_stanza():
    text = "[Intro: Ana]\nuno\ndos\n[Coro]\ntres\ncuatro\n\n[Verso 2: Ana y Luis]\ncinco"
    assert clean(text) == "uno\ndos\n\ntres\ncuatro\n\ncinco"
    assert clean_lyrics(text)[1]["section_header"] == 3


def test_bracketed_non_header_lines_stay():
    assert clean("uno [eco]\n[...]\ndos") == "uno [eco]\n[...]\ndos"


def test_contributors_line_jammed_with_translations_title_and_header():
    text = "12 ContributorsTranslationsEnglishPortuguêsMi Canción Lyrics[Intro]\nuno\ndos"
    cleaned, counts = clean_lyrics(text)
    assert cleaned == "uno\ndos"
    assert counts["contributors"] == 1 and counts["section_header"] == 1


def test_title_line_only_at_the_top():
    assert clean("Mi Canción Lyrics\n[Coro]\nuno\nLyrics\nsin Lyrics") == \
        "uno\nLyrics\nsin Lyrics"


def test_translations_block_at_the_top():
    cleaned, counts = clean_lyrics("Translations\nEnglish\nEspañol\nLa Mar Lyrics\nuno\nEnglish")
    assert cleaned == "uno\nEnglish"
    assert counts["translations"] == 3 and counts["title_line"] == 1


def test_embed_suffix_only_on_the_last_line():
    assert clean("Embed uno\ndos Embed\ntres123Embed") == "Embed uno\ndos Embed\ntres"
    assert clean("uno\ndos\n\nEmbed\n") == "uno\ndos"


def test_you_might_also_like_even_when_jammed():
    text = "uno\ndosYou might also like[Coro]\ntres\nYou might also like\ncuatro"
    assert clean(text) == "uno\ndos\n\ntres\ncuatro"


def test_ticket_advert():
    text = "uno\ndosSee Trío Candela LiveGet tickets as low as $35\ntres"
    cleaned, counts = clean_lyrics(text)
    assert cleaned == "uno\ndos\ntres" and counts["ticket_ad"] == 1


def test_urls():
    text = "uno https://example.org/a?b=1 dos\nwww.example.com/x\ntres"
    cleaned, counts = clean_lyrics(text)
    assert cleaned == "uno dos\ntres" and counts["url"] == 2


def test_unicode_and_whitespace_normalisation():
    text = ("\n\n  cancio\u0301n\t\tdel\u00a0mar  \r\nsegunda\u200b línea   \r\n\r\n\r\n\n"
            "tercera\u2028cuarta\n\n\n")
    cleaned, counts = clean_lyrics(text)
    assert cleaned == "canción del mar\nsegunda línea\n\ntercera\ncuarta"
    assert counts["blank_lines"] == 7  # 2 leading, 2 extra between stanzas, 3 trailing


# --- songs: dedup and drops -------------------------------------------------------------------

def test_dedup_and_drops_are_counted():
    songs = [
        Song("uno\ndos", "a:1", "Canción", "Ana"),
        Song("uno  \r\ndos\n\n", "a:2", "Otra", "Luis"),        # same text after normalising
        Song("tres\ncuatro", "a:3", "CANCIÓN ", "ana"),          # same artist + title
        Song("[Instrumental]", "a:4", "Interludio", "Ana"),      # empty after cleaning
        Song("solo una", "a:5", "Corta", "Ana"),                 # too short
        Song("tres\ncuatro", "a:6"),                             # text seen? no: a:3 dropped
        Song("uno\n<|fin|>\ndos\ntres", "a:7"),                   # marker line inside lyrics
    ]
    kept, report = clean_songs(songs, min_lines=2, marker=MARKER)
    assert [s.origin for s in kept] == ["a:1", "a:6", "a:7"]
    assert kept[2].text == "uno\ndos\ntres"
    data = report.to_json(Path("a"), len(kept))
    assert data["songs_dropped"] == {"empty": 1, "too_short": 1, "duplicate_text": 1,
                                     "duplicate_title": 1}
    assert data["removals_by_rule"]["marker_line"] == 1
    assert {d["origin"]: d["duplicate_of"] for d in data["dropped"]}["a:2"] == "a:1"


# --- splits and the marker format -------------------------------------------------------------

def test_splits_are_deterministic_disjoint_and_complete():
    texts = [f"canción {i}\nverso {i * 7}" for i in range(400)]
    names = dict(zip(texts, assign_splits(texts, 0.1, 0.05, seed=42), strict=True))
    shuffled = texts[:]
    random.Random(7).shuffle(shuffled)
    assert dict(zip(shuffled, assign_splits(shuffled, 0.1, 0.05, seed=42), strict=True)) == names
    counts = pd.Series(names).value_counts().to_dict()
    assert counts == {"train": 340, "valid": 40, "test": 20}
    other = dict(zip(texts, assign_splits(texts, 0.1, 0.05, seed=43), strict=True))
    assert other != names


def test_small_corpora_still_get_valid_and_test_songs():
    assert sorted(assign_splits(["a", "b", "c"], 0.05, 0.05, seed=42)) == \
        ["test", "train", "valid"]
    assert assign_splits(["a", "b"], 0.05, 0.05, seed=42) == ["train", "train"]
    assert set(assign_splits(["a", "b", "c"], 0.0, 0.0, seed=42)) == {"train"}


_LINE = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1,
                max_size=12).map(str.strip).filter(lambda s: s and s != MARKER)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(_LINE, min_size=1, max_size=4).map("\n".join), max_size=5))
def test_marker_format_round_trips(texts):
    parsed = parse_marker_corpus(format_marker_corpus(texts, MARKER), MARKER)
    assert [body for _, body in parsed] == texts


# --- outputs and stats on a tiny corpus -------------------------------------------------------

TINY = [
    {"id": "1", "title": "Uno", "artist": "Ana", "lyrics": "a b c\nd e\n\nf"},
    {"id": "2", "title": "Dos", "artist": "Ana", "lyrics": "[Coro]\nhola hola\nadiós\n"},
    {"id": "3", "title": "Tres", "artist": "Luis", "lyrics": "sol\nluna\nmar\n\ncielo"},
    {"id": "4", "title": "Uno", "artist": "ANA", "lyrics": "otra\nversión"},
]


def test_outputs_are_complete_and_consistent(tmp_path):
    source = write_jsonl(tmp_path / "songs.jsonl", TINY)
    summary, out = run_clean(tmp_path, source, outputs=str(tmp_path / "export"))
    assert summary["clean"]["songs_kept"] == 3
    texts = ["a b c\nd e\n\nf", "hola hola\nadiós", "sol\nluna\nmar\n\ncielo"]
    corpus = (out / "corpus.txt").read_text(encoding="utf-8")
    assert corpus == format_marker_corpus(texts, MARKER)
    by_split = {name: [b for _, b in parse_marker_corpus(
        (out / f"{name}.txt").read_text(encoding="utf-8"), MARKER)]
        for name in ("train", "valid", "test")}
    assert sorted(sum(by_split.values(), [])) == sorted(texts)
    assert all(len(members) == 1 for members in by_split.values())
    for name, members in by_split.items():
        records = [json.loads(line) for line in
                   (out / f"{name}_lyrics.jsonl").read_text(encoding="utf-8").splitlines()]
        assert [r["text"] for r in records] == members
        assert all({"text", "title", "artist", "id"} <= r.keys() for r in records)
    for png in ("hist_words.png", "hist_lines.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG")
    report = json.loads((out / "cleaning_report.json").read_text())
    assert report["songs_dropped"]["duplicate_title"] == 1
    assert report["removals_by_rule"]["section_header"] == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["splits"] == {"train": 1, "valid": 1, "test": 1}
    for name in ("corpus.txt", "train_lyrics.jsonl", "stats.json", "cleaning_report.json"):
        assert (tmp_path / "export" / name).read_bytes() == (out / name).read_bytes()
    assert set(CLEAN.outputs.values()) <= {p.name for p in out.iterdir()}


def test_stats_match_hand_counts(tmp_path):
    source = write_jsonl(tmp_path / "songs.jsonl", TINY)
    _, out = run_clean(tmp_path, source)
    table = pd.read_csv(out / "stats.csv").set_index("title")
    assert table.loc["Uno", ["lines", "words", "characters", "stanzas"]].tolist() == [3, 6, 12, 2]
    assert table.loc["Dos", ["lines", "words", "characters", "stanzas"]].tolist() == [2, 3, 15, 1]
    assert table.loc["Tres", ["lines", "words", "characters", "stanzas"]].tolist() == \
        [4, 4, 19, 2]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["songs"] == 3
    assert stats["totals"] == {"lines": 9, "words": 13, "characters": 46, "stanzas": 5}
    assert stats["median"]["words"] == 4.0
    assert stats["mean"]["lines"] == 3.0
    # a b c d e f hola adiós sol luna mar cielo ("hola" twice)
    assert stats["vocabulary_size"] == 12
    assert sum(s["songs"] for s in stats["splits"].values()) == 3
    assert text_counts("uno dos\n\n\ntres") == {"lines": 2, "words": 3, "characters": 14,
                                                "stanzas": 2}


# --- inputs -----------------------------------------------------------------------------------

def test_directory_and_unmarked_text_inputs(tmp_path):
    folder = tmp_path / "songs"
    folder.mkdir()
    (folder / "b.txt").write_text("uno\ndos\n", encoding="utf-8")
    (folder / "a.txt").write_text("tres\ncuatro\n\n<|fin|>\ncinco\nseis\n\n<|fin|>\n",
                                  encoding="utf-8")
    (folder / "notes.md").write_text("ignored", encoding="utf-8")
    songs = read_songs(folder, MARKER)
    assert [s.text for s in songs] == ["tres\ncuatro", "cinco\nseis", "uno\ndos\n"]
    assert songs[2].title == "b"
    assert len(read_songs(folder / "b.txt", MARKER)) == 1


def test_sample_corpus_cleans_to_forty_songs_without_junk(tmp_path):
    summary, out = run_clean(tmp_path, SAMPLE)
    assert summary["clean"]["songs_read"] == 47
    assert summary["clean"]["songs_kept"] >= 40
    corpus = (out / "corpus.txt").read_text(encoding="utf-8")
    assert not JUNK.search(corpus.replace(MARKER, ""))
    assert "\n\n\n" not in corpus
    report = json.loads((out / "cleaning_report.json").read_text())
    assert all(report["songs_dropped"].values())
    assert all(report["removals_by_rule"][rule] for rule in
               ("contributors", "title_line", "translations", "section_header", "embed",
                "might_also_like", "ticket_ad", "url"))


def test_real_disco_valid_round_trips(tmp_path):
    source = DISCO / "valid.txt"
    summary, out = run_clean(tmp_path, source)
    assert summary["clean"]["songs_kept"] == 196
    assert (out / "corpus.txt").read_bytes() == source.read_bytes()
    stats = json.loads((out / "stats.json").read_text())
    assert stats["totals"]["words"] == 18300  # DISCO README's figure


def test_real_disco_jsonl_reads_text_and_author():
    songs = read_songs(DISCO / "valid.jsonl", MARKER)
    assert len(songs) == 196 and all(s.text and s.artist and s.title for s in songs)


# --- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "content", "expected"), [
    ("empty.txt", b"", "empty file"),
    ("blank.jsonl", b"\n  \n", "empty file"),
    ("binary.txt", b"uno\ndos\x00\x01", "NUL byte at byte offset 7"),
    ("latin1.txt", "uno\ncanción\n".encode("latin-1"),
     "latin1.txt:2: not UTF-8 (byte 0xf3 at byte offset 9)"),
    ("bad.jsonl", b'{"lyrics": "a\\nb"}\n{"lyrics": \n', "bad.jsonl:2: invalid JSON line"),
    ("list.jsonl", b'["a"]\n', "list.jsonl:1: expected a JSON object"),
    ("nolyrics.jsonl", b'{"title": "x"}\n', "nolyrics.jsonl:1: lyrics: missing"),
    ("number.jsonl", b'{"lyrics": 5}\n', "number.jsonl:1: lyrics: must be a string"),
    ("big.txt", ("verso largo de prueba\n" * 600).encode(), "no <|fin|> marker found"),
    ("songs.csv", b"a,b\n", "unsupported input"),
    ("short.jsonl", b'{"lyrics": "una sola"}\n', "no songs left after cleaning"),
])
def test_malformed_inputs_give_one_line_naming_the_file(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    message = error_of(lambda: run_clean(tmp_path, path))
    assert name in message and expected in message


def test_missing_input_and_empty_directory(tmp_path):
    assert "nope.jsonl: does not exist" in error_of(
        lambda: run_clean(tmp_path, tmp_path / "nope.jsonl"))
    (tmp_path / "empty").mkdir()
    assert "no .txt files" in error_of(lambda: run_clean(tmp_path, tmp_path / "empty"))


@pytest.mark.parametrize(("params", "expected"), [
    ({"valid_fraction": 0.9}, "params: valid_fraction:"),
    ({"min_lines": 0}, "params: min_lines:"),
    ({"seed": True}, "params: seed:"),
    ({"marker": " <|fin|>"}, "params: marker:"),
    ({"colour": "red"}, "params: colour: unknown"),
])
def test_bad_params(tmp_path, params, expected):
    source = write_jsonl(tmp_path / "songs.jsonl", TINY)
    assert expected in error_of(lambda: run_clean(tmp_path, source, **params))


# --- the real CLI -----------------------------------------------------------------------------

def cli(tmp_path: Path, input_path: Path) -> subprocess.CompletedProcess[str]:
    config = {"schema": 1, "kind": "clean", "job": "clean", "run_id": "test",
              "job_dir": str(tmp_path), "out_dir": str(tmp_path / "out"),
              "tasks": [{"index": 0, "params": {"input": str(input_path)}, "matrix": {}}]}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "lyricgen", "clean", "--config", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def test_cli_runs_the_sample(tmp_path):
    result = cli(tmp_path, SAMPLE)
    assert result.returncode == 0, result.stderr
    provenance = json.loads((tmp_path / "out/provenance.json").read_text())
    assert provenance["clean"]["songs_kept"] >= 40
    assert (tmp_path / "out/train_lyrics.jsonl").stat().st_size > 0


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"lyrics": "a\\nb"}\nnot json\n', encoding="utf-8")
    result = cli(tmp_path, bad)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"{bad}:2: invalid JSON line" in result.stderr
    assert not (tmp_path / "out/corpus.txt").exists()
